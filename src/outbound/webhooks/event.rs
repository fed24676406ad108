//! The lifecycle events pushed to webhooks, and the JSON body each one is sent as:
//! `{"type", "timestamp", "data": {"tenant_id", …}}` with status fields only, never a
//! token or a secret.

use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};

use crate::domain::rfc3339;

/// The event types an endpoint can subscribe to (`*` subscribes to all of them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    /// A tenant's refresh failed after it had been healthy (once per failing spell).
    RefreshFailed,
    /// A failing tenant got a token again.
    Recovered,
    /// edX refused the tenant's credentials (`invalid_client`, `unauthorized_client`, a 401).
    CredentialsRejected,
    /// A failing tenant's held token expired: its callers now get errors.
    Expired,
    TenantCreated,
    TenantUpdated,
    TenantDeleted,
    /// Sent by `POST /webhooks/{id}/test` to that endpoint only.
    Test,
}

impl EventType {
    /// What `events` of `POST /webhooks` may name (`webhook.test` is not subscribed to:
    /// it goes to the endpoint it tests).
    pub const SUBSCRIBABLE: [EventType; 7] = [
        EventType::RefreshFailed,
        EventType::Recovered,
        EventType::CredentialsRejected,
        EventType::Expired,
        EventType::TenantCreated,
        EventType::TenantUpdated,
        EventType::TenantDeleted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventType::RefreshFailed => "token.refresh_failed",
            EventType::Recovered => "token.recovered",
            EventType::CredentialsRejected => "token.credentials_rejected",
            EventType::Expired => "token.expired",
            EventType::TenantCreated => "tenant.created",
            EventType::TenantUpdated => "tenant.updated",
            EventType::TenantDeleted => "tenant.deleted",
            EventType::Test => "webhook.test",
        }
    }

    pub fn parse_subscribable(raw: &str) -> Option<EventType> {
        Self::SUBSCRIBABLE.into_iter().find(|t| t.as_str() == raw)
    }
}

/// One event: its type and its `data` object.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub kind: EventType,
    pub data: Map<String, Value>,
}

impl Event {
    fn about_tenant(kind: EventType, tenant_id: &str, fields: Value) -> Self {
        let mut data = Map::new();
        data.insert("tenant_id".to_owned(), Value::from(tenant_id));
        if let Value::Object(fields) = fields {
            data.extend(fields);
        }
        Self { kind, data }
    }

    /// `token.refresh_failed`: the failure's HTTP status (if any) and message, the same
    /// as the token status's `last_error`.
    pub fn refresh_failed(tenant_id: &str, status: Option<u16>, message: &str) -> Self {
        Self::about_tenant(
            EventType::RefreshFailed,
            tenant_id,
            json!({ "state": "failing", "error": { "status": status, "message": message } }),
        )
    }

    /// `token.recovered`: the new token's expiry and fingerprint (never the token).
    pub fn recovered(tenant_id: &str, expires_at: DateTime<Utc>, fingerprint: &str) -> Self {
        Self::about_tenant(
            EventType::Recovered,
            tenant_id,
            json!({ "state": "valid", "expires_at": rfc3339(expires_at), "fingerprint": fingerprint }),
        )
    }

    /// `token.credentials_rejected`: edX's HTTP status and OAuth error code. Raise it
    /// wherever edX refuses a tenant's credentials (the engine does on a fetch).
    pub fn credentials_rejected(tenant_id: &str, status: u16, error: &str) -> Self {
        Self::about_tenant(
            EventType::CredentialsRejected,
            tenant_id,
            json!({ "status": status, "error": error }),
        )
    }

    /// `token.expired`: when the held token expired.
    pub fn expired(tenant_id: &str, expired_at: DateTime<Utc>) -> Self {
        Self::about_tenant(
            EventType::Expired,
            tenant_id,
            json!({ "state": "expired", "expired_at": rfc3339(expired_at) }),
        )
    }

    pub fn tenant_created(tenant_id: &str) -> Self {
        Self::about_tenant(EventType::TenantCreated, tenant_id, json!({}))
    }

    /// `tenant.updated`: the names of the changed fields (never their secret values).
    pub fn tenant_updated(tenant_id: &str, changed: &[&str]) -> Self {
        Self::about_tenant(
            EventType::TenantUpdated,
            tenant_id,
            json!({ "changed": changed }),
        )
    }

    pub fn tenant_deleted(tenant_id: &str) -> Self {
        Self::about_tenant(EventType::TenantDeleted, tenant_id, json!({}))
    }

    /// `webhook.test`: to the endpoint `webhook_id` only.
    pub fn test(webhook_id: &str) -> Self {
        let mut data = Map::new();
        data.insert("webhook_id".to_owned(), Value::from(webhook_id));
        Self {
            kind: EventType::Test,
            data,
        }
    }

    /// The body sent (and signed): `{"type", "timestamp", "data"}`.
    pub fn payload(&self, at: DateTime<Utc>) -> String {
        json!({
            "type": self.kind.as_str(),
            "timestamp": rfc3339(at),
            "data": self.data,
        })
        .to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_payload_has_the_type_the_timestamp_and_the_tenant() {
        let at = DateTime::parse_from_rfc3339("2026-12-01T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let body: Value = serde_json::from_str(
            &Event::credentials_rejected("acme", 401, "invalid_client").payload(at),
        )
        .unwrap();
        assert_eq!(
            body,
            json!({
                "type": "token.credentials_rejected",
                "timestamp": "2026-12-01T10:00:00Z",
                "data": { "tenant_id": "acme", "status": 401, "error": "invalid_client" },
            })
        );
    }

    #[test]
    fn only_lifecycle_events_can_be_subscribed_to() {
        for kind in EventType::SUBSCRIBABLE {
            assert_eq!(EventType::parse_subscribable(kind.as_str()), Some(kind));
        }
        assert_eq!(EventType::parse_subscribable("webhook.test"), None);
        assert_eq!(EventType::parse_subscribable("*"), None);
    }
}
