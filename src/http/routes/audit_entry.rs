//! Who makes a change, and in which request: the services' `Actor`, and the audit entry
//! of a change a handler records itself.

use crate::http::auth::Caller;
use crate::services::Actor;
use crate::store::AuditEntry;
use crate::telemetry::RequestId;

/// The actor of a change made by `caller` in the request `request_id`.
pub fn actor(caller: &Caller, request_id: &RequestId) -> Actor {
    Actor {
        id: caller.id().to_owned(),
        request_id: request_id.0.clone(),
    }
}

/// An audit entry for a change made by `caller` in the request `request_id`.
pub fn audit(
    caller: &Caller,
    request_id: &RequestId,
    action: &'static str,
    target: &str,
    details: serde_json::Value,
) -> AuditEntry {
    actor(caller, request_id).audit(action, target, details)
}
