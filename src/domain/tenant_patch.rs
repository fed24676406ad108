//! The rules of a tenant update (a JSON merge patch): each field validated, what changed,
//! what a change means for held tokens, and where a stored secret may be sent.

use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use super::field_error::FieldError;
use super::outbound_url::{parse_api_base_url, UrlRules};
use super::patch::Patch;
use super::tenant::{
    validate_client_id, validate_client_secret, validate_name, validate_scope, Tenant, TokenType,
};
use crate::crypto::Sealed;

/// A `PATCH /tenants/{id}` body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantPatch {
    #[serde(default)]
    pub name: Patch<String>,
    #[serde(default)]
    pub client_id: Patch<String>,
    #[serde(default)]
    pub client_secret: Patch<SecretString>,
    #[serde(default)]
    pub token_url: Patch<String>,
    #[serde(default)]
    pub scope: Patch<String>,
    #[serde(default)]
    pub token_type: Patch<String>,
    #[serde(default)]
    pub asymmetric_jwt: Patch<bool>,
    #[serde(default)]
    pub jwks_url: Patch<String>,
    #[serde(default)]
    pub api_base_url: Patch<String>,
}

/// Fields whose change makes a held token stale (it was issued for other credentials).
pub const TOKEN_FIELDS: &[&str] = &[
    "client_id",
    "client_secret",
    "token_url",
    "scope",
    "token_type",
    "asymmetric_jwt",
];

/// Whether a change of these fields makes the held token stale.
pub fn drops_token(changed: &[&str]) -> bool {
    changed.iter().any(|f| TOKEN_FIELDS.contains(f))
}

fn field<T>(field: &str, result: Result<T, String>) -> Result<T, FieldError> {
    result.map_err(|message| FieldError::new(field, message))
}

impl Tenant {
    /// The tenant after `patch`, and the names of the fields that changed (none: nothing to
    /// write). `seal` seals a new client secret; `now` becomes `updated_at` when anything
    /// changed.
    pub fn patched(
        &self,
        patch: &TenantPatch,
        policy: impl UrlRules,
        seal: impl FnOnce(&SecretString) -> Sealed,
        now: DateTime<Utc>,
    ) -> Result<(Tenant, Vec<&'static str>), FieldError> {
        let current = self;
        let outbound_url = |name: &str, raw: &str| field(name, policy.outbound_url(raw));
        fn not_null<T: Clone>(name: &str, p: &Patch<T>) -> Result<Option<T>, FieldError> {
            match p {
                Patch::Absent => Ok(None),
                Patch::Null => Err(FieldError::new(name, "must not be null")),
                Patch::Value(v) => Ok(Some(v.clone())),
            }
        }
        fn nullable<T>(
            name: &str,
            p: &Patch<String>,
            check: impl FnOnce(&str) -> Result<T, FieldError>,
        ) -> Result<Option<Option<T>>, FieldError> {
            match p {
                Patch::Absent => Ok(None),
                Patch::Null => Ok(Some(None)),
                Patch::Value(v) => check(v).map(|v| Some(Some(v))).map_err(|mut e| {
                    e.field = name.to_owned();
                    e
                }),
            }
        }

        let mut next = current.clone();
        let mut changed = Vec::new();

        if let Some(name) = not_null("name", &patch.name)? {
            let name = field("name", validate_name(&name))?;
            if name != next.name {
                next.name = name;
                changed.push("name");
            }
        }
        if let Some(client_id) = not_null("client_id", &patch.client_id)? {
            field("client_id", validate_client_id(&client_id))?;
            if client_id != next.client_id {
                next.client_id = client_id;
                changed.push("client_id");
            }
        }
        if let Some(secret) = not_null("client_secret", &patch.client_secret)? {
            field(
                "client_secret",
                validate_client_secret(secret.expose_secret()),
            )?;
            next.secret = seal(&secret);
            changed.push("client_secret");
        }
        if let Some(url) = nullable("token_url", &patch.token_url, |raw| {
            outbound_url("token_url", raw)
        })? {
            if url != next.token_url {
                next.token_url = url;
                changed.push("token_url");
            }
        }
        if let Some(scope) = nullable("scope", &patch.scope, |s| field("scope", validate_scope(s)))?
        {
            if scope != next.scope {
                next.scope = scope;
                changed.push("scope");
            }
        }
        if let Some(raw) = not_null("token_type", &patch.token_type)? {
            let token_type: TokenType = field("token_type", raw.parse())?;
            if token_type != next.token_type {
                next.token_type = token_type;
                changed.push("token_type");
            }
        }
        if let Some(asymmetric) = not_null("asymmetric_jwt", &patch.asymmetric_jwt)? {
            if asymmetric != next.asymmetric_jwt {
                next.asymmetric_jwt = asymmetric;
                changed.push("asymmetric_jwt");
            }
        }
        if let Some(url) = nullable("jwks_url", &patch.jwks_url, |raw| {
            outbound_url("jwks_url", raw)
        })? {
            if url != next.jwks_url {
                next.jwks_url = url;
                changed.push("jwks_url");
            }
        }
        if let Some(url) = nullable("api_base_url", &patch.api_base_url, |raw| {
            field("api_base_url", parse_api_base_url(raw, policy))
        })? {
            if url != next.api_base_url {
                next.api_base_url = url;
                changed.push("api_base_url");
            }
        }
        if changed.iter().any(|f| TOKEN_FIELDS.contains(f)) {
            next.credentials_version = current.credentials_version + 1;
        }
        // A stored secret is never sent somewhere new: whoever moves the token endpoint must
        // also give the secret for it (otherwise a `tenants:write` key could post any
        // tenant's secret to a host of its choosing).
        // The same for the API base: the token goes there.
        for url_field in ["token_url", "api_base_url"] {
            if changed.contains(&url_field) && !changed.contains(&"client_secret") {
                return Err(FieldError::new(
                    "client_secret",
                    format!(
                        "is required in the same request when {url_field} changes (a stored \
                         secret or token is never sent to a new URL)"
                    ),
                ));
            }
        }
        if !changed.is_empty() {
            next.version = current.version + 1;
            next.updated_at = now;
        }
        Ok((next, changed))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::domain::outbound_url::HttpsToNames;
    use crate::domain::{TenantId, TenantUid};

    fn tenant() -> Tenant {
        let at = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        Tenant {
            uid: TenantUid::generate(),
            id: TenantId::parse("acme").unwrap(),
            name: "Acme".to_owned(),
            client_id: "client-acme".to_owned(),
            secret: Sealed {
                key_id: "k1".to_owned(),
                bytes: vec![1, 2, 3],
            },
            token_url: Some(
                "https://lms.example.com/oauth2/access_token"
                    .parse()
                    .unwrap(),
            ),
            scope: Some("read".to_owned()),
            token_type: TokenType::Jwt,
            asymmetric_jwt: false,
            jwks_url: None,
            api_base_url: None,
            previous_secret: None,
            version: 4,
            credentials_version: 2,
            created_at: at,
            updated_at: at,
        }
    }

    fn apply(patch: serde_json::Value) -> Result<(Tenant, Vec<&'static str>), FieldError> {
        let patch: TenantPatch = serde_json::from_value(patch).unwrap();
        let now = DateTime::from_timestamp(1_900_000_000, 0).unwrap();
        let seal = |s: &SecretString| Sealed {
            key_id: "k1".to_owned(),
            bytes: s.expose_secret().as_bytes().to_vec(),
        };
        tenant().patched(&patch, HttpsToNames, seal, now)
    }

    #[test]
    fn a_rename_changes_only_the_name_and_keeps_the_token() {
        let (next, changed) = apply(json!({"name": "  Acme Corp "})).unwrap();
        assert_eq!(changed, ["name"]);
        assert_eq!(next.name, "Acme Corp");
        assert_eq!((next.version, next.credentials_version), (5, 2));
        assert!(!drops_token(&changed));
        assert!(next.updated_at > tenant().updated_at);
    }

    #[test]
    fn a_patch_that_changes_nothing_writes_nothing() {
        for patch in [json!({}), json!({"name": "Acme", "scope": "read"})] {
            let (next, changed) = apply(patch.clone()).unwrap();
            assert!(changed.is_empty(), "{patch}");
            assert_eq!(next.version, 4, "{patch}");
            assert_eq!(next.updated_at, tenant().updated_at, "{patch}");
        }
    }

    #[test]
    fn credential_changes_make_the_held_token_stale() {
        for (patch, field) in [
            (json!({"client_id": "other"}), "client_id"),
            (json!({"client_secret": "s3cret"}), "client_secret"),
            (json!({"scope": null}), "scope"),
            (json!({"token_type": "bearer"}), "token_type"),
            (json!({"asymmetric_jwt": true}), "asymmetric_jwt"),
        ] {
            let (next, changed) = apply(patch.clone()).unwrap();
            assert_eq!(changed, [field], "{patch}");
            assert!(drops_token(&changed), "{patch}");
            assert_eq!(next.credentials_version, 3, "{patch}");
        }
        let (next, changed) = apply(json!({"jwks_url": "https://lms.example.com/jwks"})).unwrap();
        assert_eq!(changed, ["jwks_url"]);
        assert!(!drops_token(&changed), "a JWKS change keeps the token");
        assert_eq!(next.credentials_version, 2);
    }

    #[test]
    fn moving_the_token_endpoint_needs_the_secret_for_it() {
        for patch in [
            json!({"token_url": "https://collector.attacker.example/token"}),
            json!({"token_url": null}),
        ] {
            let err = apply(patch.clone()).unwrap_err();
            assert_eq!(err.field, "client_secret", "{patch}");
        }
        let (next, changed) = apply(json!({
            "token_url": "https://other.example.com/oauth2/access_token",
            "client_secret": "for-the-new-url",
        }))
        .unwrap();
        assert_eq!(changed, ["client_secret", "token_url"]);
        assert_eq!(next.secret.bytes, b"for-the-new-url");
        // The same URL again is no move.
        let (_, changed) =
            apply(json!({"token_url": "https://lms.example.com/oauth2/access_token"})).unwrap();
        assert!(changed.is_empty());
    }

    #[test]
    fn moving_the_api_base_needs_the_secret_too() {
        for patch in [
            json!({"api_base_url": "https://collector.attacker.example"}),
            json!({"api_base_url": "https://api.example.com", "client_id": "x"}),
        ] {
            let err = apply(patch.clone()).unwrap_err();
            assert_eq!(err.field, "client_secret", "{patch}");
        }
        let (next, changed) = apply(json!({
            "api_base_url": "https://api.example.com",
            "client_secret": "for-the-new-url",
        }))
        .unwrap();
        assert_eq!(changed, ["client_secret", "api_base_url"]);
        assert_eq!(
            next.api_base_url.unwrap().as_str(),
            "https://api.example.com/"
        );
        assert_eq!(
            apply(json!({"api_base_url": "https://api.example.com/?a=1", "client_secret": "s"}))
                .unwrap_err()
                .field,
            "api_base_url"
        );
    }

    #[test]
    fn invalid_values_name_their_field() {
        for (patch, field) in [
            (json!({"name": null}), "name"),
            (json!({"name": "  "}), "name"),
            (json!({"client_id": "has space"}), "client_id"),
            (json!({"client_secret": ""}), "client_secret"),
            (json!({"token_type": "mac"}), "token_type"),
            (json!({"scope": "  "}), "scope"),
            (
                json!({"jwks_url": "http://lms.example.com/jwks"}),
                "jwks_url",
            ),
            (
                json!({"token_url": "https://127.0.0.1/t", "client_secret": "s"}),
                "token_url",
            ),
        ] {
            assert_eq!(apply(patch.clone()).unwrap_err().field, field, "{patch}");
        }
    }
}
