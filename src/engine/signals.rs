//! Log lines for lifecycle moments an operator watches for: each is a `tracing` warning
//! with target `tokenvend::signals` and an `event` field naming the matching webhook event
//! type. They are logs only; the webhook events themselves are raised through
//! `webhooks::Events` where the moment happens.

use chrono::{DateTime, Utc};

use crate::domain::{rfc3339, TenantId};

/// `token.credentials_rejected`: edX refused a tenant's client credentials (`code` is the
/// OAuth error code). `serving_previous_until` is set when the tenant's previous client
/// secret still works and is served until then (the safety net of a rotation).
pub fn credentials_rejected(
    tenant: &TenantId,
    code: &str,
    serving_previous_until: Option<DateTime<Utc>>,
) {
    tracing::warn!(
        target: "tokenvend::signals",
        event = "token.credentials_rejected",
        tenant = %tenant,
        upstream_error = code,
        serving_previous_until = serving_previous_until.map(rfc3339),
        "edX refused the client credentials"
    );
}
