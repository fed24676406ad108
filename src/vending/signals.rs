//! The engine's lifecycle signals, raised where they happen. Each is a `tracing` event
//! with target `tokenvend::signals` and an `event` field naming the webhook event type, so
//! that the webhooks outbox has one place to hook into.

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
