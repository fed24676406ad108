//! Caller keys: create (the key is shown once, only its hash stored) and revoke, each
//! with its audit entry in the row's transaction; the key ring learns of it once that
//! committed.

use std::sync::Arc;

use secrecy::SecretString;
use serde::Deserialize;
use serde_json::json;

use super::change::{bind_tenant_scopes, now, Actor, OnConflict, Result, ServiceError};
use crate::domain::{validate_name, FieldError, Scope, ScopeSet};
use crate::store::{ApiKeyRecord, Store};

/// The highest `rate_limit` a key may have, and the highest `TOKENVEND_KEY_RATE`.
pub const MAX_KEY_RATE: u32 = 100_000;

/// A freshly generated caller key: shown once, then only its hash is kept.
pub struct NewKey {
    pub id: String,
    pub key: SecretString,
    pub hash: [u8; 32],
}

/// The caller keys a process holds in memory (its key ring): where new keys come from,
/// and what must know at once that a key was stored or revoked.
pub trait CallerKeys: Send + Sync {
    fn generate(&self) -> NewKey;
    /// `record` is stored with `scopes` (bound) and `hash`: it works from now on.
    fn added(&self, record: &ApiKeyRecord, scopes: ScopeSet, hash: [u8; 32]);
    /// Key `id` is revoked: it stops working now.
    fn revoked(&self, id: &str);
}

/// A `POST /api-keys` body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyFields {
    pub name: Option<String>,
    pub scopes: Option<Vec<String>>,
    /// Any JSON, so that every wrong shape gets the same clear message.
    pub rate_limit: Option<serde_json::Value>,
}

/// A stored key and the key itself (for the one answer that shows it).
pub struct CreatedKey {
    pub record: ApiKeyRecord,
    pub key: SecretString,
}

/// The one write path of caller keys.
#[derive(Clone)]
pub struct KeyService {
    pub store: Store,
    pub keys: Arc<dyn CallerKeys>,
}

fn parse_scopes(raw: Option<Vec<String>>) -> Result<ScopeSet, FieldError> {
    let raw = raw.ok_or_else(|| FieldError::new("scopes", "is required"))?;
    let scopes = raw
        .iter()
        .enumerate()
        .map(|(i, s)| {
            s.parse::<Scope>()
                .map_err(|m| FieldError::new(format!("scopes[{i}]"), m))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let set = ScopeSet::new(scopes);
    if set.is_empty() {
        return Err(FieldError::new("scopes", "must name at least one scope"));
    }
    Ok(set)
}

/// `rate_limit`: absent or `null` for the default, else requests per second.
fn parse_rate_limit(raw: Option<serde_json::Value>) -> Result<Option<i32>, FieldError> {
    let Some(raw) = raw.filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    raw.as_u64()
        .filter(|n| (1..=u64::from(MAX_KEY_RATE)).contains(n))
        .and_then(|n| i32::try_from(n).ok())
        .map(Some)
        .ok_or_else(|| {
            FieldError::new(
                "rate_limit",
                format!("must be a whole number of requests per second from 1 to {MAX_KEY_RATE}"),
            )
        })
}

impl KeyService {
    /// Creates a key from `fields`: its `token:<id>` scopes bound to the tenants holding
    /// those ids now.
    pub async fn create(&self, actor: &Actor, fields: KeyFields) -> Result<CreatedKey> {
        let name = fields
            .name
            .ok_or_else(|| FieldError::new("name", "is required"))
            .and_then(|n| validate_name(&n).map_err(|m| FieldError::new("name", m)))?;
        let scopes = parse_scopes(fields.scopes)?;
        let rate_limit = parse_rate_limit(fields.rate_limit)?;
        let scopes = bind_tenant_scopes(&self.store, scopes).await?;
        let generated = self.keys.generate();
        let record = ApiKeyRecord {
            id: generated.id,
            name,
            scopes: scopes.to_stored(),
            key_hash: generated.hash.to_vec(),
            created_at: now(),
            rate_limit,
        };
        let entry = actor.audit(
            "api_key.create",
            &record.id,
            json!({ "scopes": scopes.to_public(), "rate_limit": rate_limit }),
        );
        self.store
            .insert_api_key(&record, &entry)
            .await
            .on_conflict(|| "key id collision; retry".to_owned())?;
        self.keys.added(&record, scopes, generated.hash);
        tracing::info!(key_id = %record.id, scopes = %record.scopes, "caller key created");
        Ok(CreatedKey {
            record,
            key: generated.key,
        })
    }

    /// Revokes key `id`, effective at once.
    pub async fn revoke(&self, actor: &Actor, id: &str) -> Result<()> {
        let entry = actor.audit("api_key.revoke", id, json!({}));
        if !self.store.delete_api_key(id, &entry).await? {
            return Err(ServiceError::NotFound("caller key not found"));
        }
        self.keys.revoked(id);
        tracing::info!(key_id = %id, "caller key revoked");
        Ok(())
    }
}
