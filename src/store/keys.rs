//! Caller keys (only their SHA-256 stored) and the audit trail of administrative changes.

use chrono::{DateTime, Utc};

use std::collections::HashMap;

use super::backend::{Backend, Store};
use crate::domain::ScopeSet;

/// A caller key row: only the SHA-256 of the key is stored.
#[derive(Clone, sqlx::FromRow)]
pub struct ApiKeyRecord {
    pub id: String,
    pub name: String,
    pub scopes: String,
    pub key_hash: Vec<u8>,
    pub created_at: DateTime<Utc>,
    /// Requests per second allowed to this key; `None`: the default (`TOKENVEND_KEY_RATE`).
    pub rate_limit: Option<i32>,
}

/// One administrative change, written in the same transaction as the change itself.
#[derive(Debug, Clone)]
pub struct AuditEntry {
    pub actor: String,
    pub action: &'static str,
    pub target: String,
    pub request_id: Option<String>,
    /// Field names and non-secret facts only, never a secret's value.
    pub details: serde_json::Value,
}

#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize)]
pub struct AuditEvent {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub request_id: Option<String>,
    #[serde(skip)]
    pub details: String,
}

impl Store {
    /// Binds the `token:<id>` scopes of keys stored before scopes were bound to tenant
    /// identities, to the tenant holding that id now (a scope whose tenant is gone stays
    /// unbound and grants nothing). Returns how many keys changed; running it again
    /// changes nothing.
    pub async fn bind_legacy_token_scopes(&self) -> Result<usize, sqlx::Error> {
        let mut changed = 0;
        for key in self.list_api_keys().await? {
            let Ok(scopes) = ScopeSet::parse_stored(&key.scopes) else {
                continue;
            };
            if !scopes.has_unbound() {
                continue;
            }
            let mut current = HashMap::new();
            for scope in scopes.iter() {
                if let Some(id) = scope.unbound_tenant() {
                    if let Some(tenant) = self.get_tenant(id).await? {
                        current.insert(id.clone(), tenant.uid);
                    }
                }
            }
            let bound = scopes.bind_known(|id| current.get(id).copied()).to_stored();
            if bound != key.scopes {
                on_pool!(self, |pool| sqlx::query(
                    "UPDATE api_keys SET scopes = $2 WHERE id = $1 AND scopes = $3"
                )
                .bind(&key.id)
                .bind(&bound)
                .bind(&key.scopes)
                .execute(pool)
                .await
                .map(drop))?;
                changed += 1;
            }
        }
        Ok(changed)
    }

    pub async fn insert_api_key(
        &self,
        k: &ApiKeyRecord,
        audit: &AuditEntry,
    ) -> Result<(), sqlx::Error> {
        on_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            sqlx::query(
                "INSERT INTO api_keys (id, name, scopes, key_hash, created_at, rate_limit) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(&k.id)
            .bind(&k.name)
            .bind(&k.scopes)
            .bind(&k.key_hash)
            .bind(k.created_at)
            .bind(k.rate_limit)
            .execute(&mut *tx)
            .await?;
            write_audit!(tx, audit)?;
            tx.commit().await
        })
    }

    pub async fn list_api_keys(&self) -> Result<Vec<ApiKeyRecord>, sqlx::Error> {
        on_pool!(self, |pool| sqlx::query_as(
            "SELECT id, name, scopes, key_hash, created_at, rate_limit FROM api_keys \
             ORDER BY created_at, id"
        )
        .fetch_all(pool)
        .await)
    }

    /// Up to `limit` caller keys in creation order, after the position `after` (a
    /// creation time and an id) when given.
    pub async fn list_api_keys_page(
        &self,
        after: Option<&(DateTime<Utc>, String)>,
        limit: i64,
    ) -> Result<Vec<ApiKeyRecord>, sqlx::Error> {
        // Without a position: from the epoch on, which every creation time is after.
        let (at, id) = after.cloned().unwrap_or_default();
        on_pool!(self, |pool| sqlx::query_as(
            "SELECT id, name, scopes, key_hash, created_at, rate_limit FROM api_keys \
             WHERE created_at > $1 OR (created_at = $1 AND id > $2) \
             ORDER BY created_at, id LIMIT $3"
        )
        .bind(at)
        .bind(id)
        .bind(limit)
        .fetch_all(pool)
        .await)
    }

    pub async fn delete_api_key(&self, id: &str, audit: &AuditEntry) -> Result<bool, sqlx::Error> {
        delete_audited!(self, [], "DELETE FROM api_keys WHERE id = $1", id, audit)
    }

    /// Up to `limit` audit events older than `before` (newest first).
    pub async fn list_audit_events(
        &self,
        before: i64,
        limit: i64,
    ) -> Result<Vec<AuditEvent>, sqlx::Error> {
        on_pool!(self, |pool| sqlx::query_as(
            "SELECT id, at, actor, action, target, request_id, details FROM audit_events \
             WHERE id < $1 ORDER BY id DESC LIMIT $2"
        )
        .bind(before)
        .bind(limit)
        .fetch_all(pool)
        .await)
    }
}
