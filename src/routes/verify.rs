//! `?verify=true` on `POST /tenants` and `PATCH /tenants/{id}`: the new credentials are
//! tried on edX before anything is stored. A refusal is `422` with the OAuth error code as
//! `upstream_error`; edX unreachable is `502`/`503`/`504` as on the token route; both are
//! audited (`tenant.verify_failed`) and change nothing else.

use serde::Deserialize;
use serde_json::json;

use crate::auth::Caller;
use crate::domain::Tenant;
use crate::error::{ApiError, Result, UpstreamFailure};
use crate::outbound::upstream::UpstreamError;
use crate::routes::audit_entry::audit;
use crate::state::AppState;
use crate::telemetry::RequestId;
use crate::vending::{VendError, VerifiedToken};

/// The query of a tenant write: `verify` is `true` or `false` (anything else is `400`).
#[derive(Debug, Default, Deserialize)]
pub struct WriteParams {
    #[serde(default)]
    pub verify: bool,
}

/// Fetches a token with `tenant`'s settings (not yet stored); a failure is audited as
/// `tenant.verify_failed` (`operation`: `create` or `update`) and answered.
pub async fn verify_credentials(
    state: &AppState,
    caller: &Caller,
    request_id: &RequestId,
    tenant: &Tenant,
    operation: &'static str,
) -> Result<VerifiedToken> {
    let error = match state.vendor.verify(tenant, caller.id()).await {
        Ok(verified) => return Ok(verified),
        // Refused before edX was asked: nothing new to record (a refusal by edX is
        // recorded once, and its cool-down keeps the next tries from reaching edX).
        Err(error @ (VendError::VerifyCoolingDown { .. } | VendError::CallerOverRate { .. })) => {
            return Err(error.into())
        }
        Err(error) => error,
    };
    let details = match &error {
        VendError::Upstream { cause, .. } => json!({
            "operation": operation,
            "upstream_error": match cause {
                UpstreamError::Rejected { code, .. } => Some(code.as_str()),
                _ => None,
            },
            "upstream_status": cause.http_status(),
            "failure": UpstreamFailure::new(cause, None).slug,
        }),
        other => json!({ "operation": operation, "failure": other.to_string() }),
    };
    let entry = audit(
        caller,
        request_id,
        "tenant.verify_failed",
        tenant.id.as_str(),
        details,
    );
    if let Err(store_error) = state.store.record_audit(&entry).await {
        tracing::warn!(tenant = %tenant.id, error = %store_error, "could not audit a verify failure");
    }
    tracing::info!(tenant = %tenant.id, %error, "credentials not verified; nothing stored");
    Err(match error {
        VendError::Upstream {
            cause: UpstreamError::Rejected { status, code },
            ..
        } => ApiError::CredentialsRefused { status, code },
        other => other.into(),
    })
}
