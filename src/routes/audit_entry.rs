//! The audit entry a change writes along with itself: who, what, which request.

use crate::auth::Caller;
use crate::store::AuditEntry;
use crate::telemetry::RequestId;

/// An audit entry for a change made by `caller` in the request `request_id`.
pub fn audit(
    caller: &Caller,
    request_id: &RequestId,
    action: &'static str,
    target: &str,
    details: serde_json::Value,
) -> AuditEntry {
    AuditEntry {
        actor: caller.id().to_owned(),
        action,
        target: target.to_owned(),
        request_id: request_id.0.clone(),
        details,
    }
}
