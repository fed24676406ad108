//! A tenant to create (`POST /tenants`): every field parsed once, in the order callers
//! see their errors, beside `TenantPatch` for updates.

use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use url::Url;

use super::field_error::FieldError;
use super::outbound_url::{parse_api_base_url, UrlRules};
use super::tenant::{
    validate_client_id, validate_client_secret, validate_name, validate_scope, Tenant, TenantUid,
    TokenType,
};
use super::TenantId;
use crate::crypto::Sealed;

/// A `POST /tenants` body as sent: every field optional here, so that a missing one gets
/// the same clear `422` naming it as an invalid one.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantFields {
    pub id: Option<String>,
    pub name: Option<String>,
    pub client_id: Option<String>,
    pub client_secret: Option<SecretString>,
    pub token_url: Option<String>,
    pub scope: Option<String>,
    pub token_type: Option<String>,
    pub asymmetric_jwt: Option<bool>,
    pub jwks_url: Option<String>,
    pub api_base_url: Option<String>,
}

/// A tenant to create, every field valid; the client secret is still open (it is sealed
/// under the tenant's id when the tenant is built).
pub struct NewTenant {
    pub id: TenantId,
    pub name: String,
    pub client_id: String,
    pub client_secret: SecretString,
    pub token_url: Option<Url>,
    pub scope: Option<String>,
    pub token_type: TokenType,
    pub asymmetric_jwt: bool,
    pub jwks_url: Option<Url>,
    pub api_base_url: Option<Url>,
}

fn required<T>(value: Option<T>, field: &str) -> Result<T, FieldError> {
    value.ok_or_else(|| FieldError::new(field, "is required"))
}

fn field<T>(field: &str, result: Result<T, String>) -> Result<T, FieldError> {
    result.map_err(|message| FieldError::new(field, message))
}

impl NewTenant {
    /// Parses `fields`; the first invalid or missing field (in the order of the body's
    /// documentation) is the error. URLs follow the outbound `policy`.
    pub fn parse(fields: TenantFields, policy: impl UrlRules) -> Result<Self, FieldError> {
        let outbound_url = |name: &str, raw: Option<String>| {
            raw.map(|raw| field(name, policy.outbound_url(&raw)))
                .transpose()
        };
        let id = field("id", TenantId::parse(&required(fields.id, "id")?))?;
        let name = field("name", validate_name(&required(fields.name, "name")?))?;
        let client_id = required(fields.client_id, "client_id")?;
        field("client_id", validate_client_id(&client_id))?;
        let client_secret = required(fields.client_secret, "client_secret")?;
        field(
            "client_secret",
            validate_client_secret(client_secret.expose_secret()),
        )?;
        let token_url = outbound_url("token_url", fields.token_url)?;
        let scope = fields
            .scope
            .map(|s| field("scope", validate_scope(&s)))
            .transpose()?;
        let token_type = fields
            .token_type
            .map(|t| field("token_type", t.parse()))
            .transpose()?
            .unwrap_or_default();
        let jwks_url = outbound_url("jwks_url", fields.jwks_url)?;
        let api_base_url = fields
            .api_base_url
            .map(|raw| field("api_base_url", parse_api_base_url(&raw, policy)))
            .transpose()?;
        Ok(Self {
            id,
            name,
            client_id,
            client_secret,
            token_url,
            scope,
            token_type,
            asymmetric_jwt: fields.asymmetric_jwt.unwrap_or(false),
            jwks_url,
            api_base_url,
        })
    }

    /// The tenant to store: a new identity, version 1, created `now`; `seal` seals the
    /// client secret under the tenant's id.
    pub fn into_tenant(
        self,
        seal: impl FnOnce(&TenantId, &SecretString) -> Sealed,
        now: DateTime<Utc>,
    ) -> Tenant {
        Tenant {
            uid: TenantUid::generate(),
            secret: seal(&self.id, &self.client_secret),
            id: self.id,
            name: self.name,
            client_id: self.client_id,
            token_url: self.token_url,
            scope: self.scope,
            token_type: self.token_type,
            asymmetric_jwt: self.asymmetric_jwt,
            jwks_url: self.jwks_url,
            api_base_url: self.api_base_url,
            previous_secret: None,
            version: 1,
            credentials_version: 1,
            created_at: now,
            updated_at: now,
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::domain::outbound_url::HttpsToNames;

    fn parse(body: serde_json::Value) -> Result<NewTenant, FieldError> {
        let fields: TenantFields = serde_json::from_value(body).unwrap();
        NewTenant::parse(fields, HttpsToNames)
    }

    fn valid() -> serde_json::Value {
        json!({"id": "acme", "name": " Acme ", "client_id": "c", "client_secret": "s"})
    }

    #[test]
    fn a_minimal_tenant_gets_the_defaults() {
        let new = parse(valid()).unwrap();
        assert_eq!((new.id.as_str(), new.name.as_str()), ("acme", "Acme"));
        assert_eq!(new.token_type, TokenType::Jwt);
        assert!(!new.asymmetric_jwt);
        assert!(new.token_url.is_none() && new.api_base_url.is_none());
        let now = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let sealed = |id: &TenantId, s: &SecretString| Sealed {
            key_id: id.to_string(),
            bytes: s.expose_secret().as_bytes().to_vec(),
        };
        let tenant = new.into_tenant(sealed, now);
        assert_eq!((tenant.version, tenant.credentials_version), (1, 1));
        assert_eq!((tenant.created_at, tenant.updated_at), (now, now));
        assert_eq!(
            (tenant.secret.key_id.as_str(), &tenant.secret.bytes[..]),
            ("acme", &b"s"[..])
        );
    }

    #[test]
    fn the_first_missing_or_invalid_field_is_named() {
        for (change, field) in [
            (json!({"id": null}), "id"),
            (json!({"id": "Not An Id", "name": null}), "id"),
            (json!({"name": null}), "name"),
            (json!({"client_id": "has space"}), "client_id"),
            (json!({"client_secret": null}), "client_secret"),
            (json!({"client_secret": ""}), "client_secret"),
            (
                json!({"token_url": "http://lms.example.com/t"}),
                "token_url",
            ),
            (json!({"scope": " "}), "scope"),
            (json!({"token_type": "mac"}), "token_type"),
            (json!({"jwks_url": "https://127.0.0.1/jwks"}), "jwks_url"),
            (
                json!({"api_base_url": "https://a.example/?q=1"}),
                "api_base_url",
            ),
        ] {
            let mut body = valid();
            for (key, value) in change.as_object().unwrap() {
                body[key] = value.clone();
            }
            let error = parse(body).err().unwrap();
            assert_eq!(error.field, field, "{change}");
        }
    }
}
