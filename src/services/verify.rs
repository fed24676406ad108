//! `?verify=true` on a tenant write: the new credentials are tried on edX before anything
//! is stored. A refusal is `CredentialsRefused` with the OAuth error code; edX unreachable
//! is the fetch's own failure; both are audited (`tenant.verify_failed`) and change
//! nothing else.

use serde_json::json;

use super::change::{Actor, Result, ServiceError};
use crate::domain::Tenant;
use crate::engine::{VendError, Vendor, VerifiedToken};
use crate::outbound::upstream::failure::UpstreamFailure;
use crate::outbound::upstream::UpstreamError;
use crate::store::Store;

/// Fetches a token with `tenant`'s settings (not yet stored); a failure is audited as
/// `tenant.verify_failed` (`operation`: `create` or `update`) and returned.
pub(super) async fn verify_credentials(
    store: &Store,
    vendor: &Vendor,
    actor: &Actor,
    tenant: &Tenant,
    operation: &'static str,
) -> Result<VerifiedToken> {
    let error = match vendor.verify(tenant, &actor.id).await {
        Ok(verified) => return Ok(verified),
        // Refused before edX was asked: nothing new to record (a refusal by edX is
        // recorded once, and its cool-down keeps the next tries from reaching edX).
        Err(error @ (VendError::VerifyCoolingDown { .. } | VendError::CallerOverRate { .. })) => {
            return Err(ServiceError::Vend(error))
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
    let entry = actor.audit("tenant.verify_failed", tenant.id.as_str(), details);
    if let Err(store_error) = store.record_audit(&entry).await {
        tracing::warn!(tenant = %tenant.id, error = %store_error, "could not audit a verify failure");
    }
    tracing::info!(tenant = %tenant.id, %error, "credentials not verified; nothing stored");
    Err(match error {
        VendError::Upstream {
            cause: UpstreamError::Rejected { status, code },
            ..
        } => ServiceError::CredentialsRefused { status, code },
        other => ServiceError::Vend(other),
    })
}
