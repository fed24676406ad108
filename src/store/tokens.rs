//! Token rows (the token itself only ever sealed), and the fleet's per-tenant refresh lock.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::backend::{Backend, Store};
use super::postgres::REFRESH_LOCK_KEY;
use crate::domain::{TenantId, TenantUid};

const TOKEN_COLUMNS: &str =
    "tenant_id, tenant_uid, key_id, ciphertext, token_type, scope, fetched_at, expires_at";

const GET_TOKEN: &str = "SELECT tenant_id, tenant_uid, key_id, ciphertext, token_type, scope, \
     fetched_at, expires_at FROM tokens WHERE tenant_id = $1";

/// Stores a tenant's token unless the tenant is gone (a tenant re-created under the same id
/// is another tenant) or its credentials changed.
const SAVE_TOKEN: &str = "INSERT INTO tokens (tenant_id, key_id, ciphertext, token_type, scope, \
     fetched_at, expires_at, tenant_uid) SELECT $1, $2, $3, $4, $5, $6, $7, $9 WHERE EXISTS \
     (SELECT 1 FROM tenants WHERE id = $1 AND uid = $9 AND credentials_version = $8) \
     ON CONFLICT (tenant_id) DO UPDATE SET key_id = excluded.key_id, \
     ciphertext = excluded.ciphertext, token_type = excluded.token_type, \
     scope = excluded.scope, fetched_at = excluded.fetched_at, \
     expires_at = excluded.expires_at, tenant_uid = excluded.tenant_uid";

/// Binds a token row to `SAVE_TOKEN` (on either backend).
macro_rules! save_token_query {
    ($t:expr, $credentials_version:expr) => {
        sqlx::query(SAVE_TOKEN)
            .bind(&$t.tenant_id)
            .bind(&$t.key_id)
            .bind(&$t.ciphertext)
            .bind(&$t.token_type)
            .bind(&$t.scope)
            .bind($t.fetched_at)
            .bind($t.expires_at)
            .bind($credentials_version)
            .bind(&$t.tenant_uid)
    };
}

/// A token row: the token itself only ever sealed.
#[derive(Clone, sqlx::FromRow)]
pub struct TokenRecord {
    pub tenant_id: String,
    /// The identity of the tenant the token was fetched for.
    pub tenant_uid: String,
    pub key_id: String,
    pub ciphertext: Vec<u8>,
    pub token_type: String,
    pub scope: Option<String>,
    pub fetched_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// What says whether a stored token is worth reading: whose it is and when it was fetched
/// (no ciphertext).
#[derive(Clone, sqlx::FromRow)]
pub struct TokenVersion {
    pub tenant_id: String,
    pub tenant_uid: String,
    pub fetched_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

impl Store {
    /// Up to `limit` stored tokens (sealed) of tenant ids after `after`, in id order.
    pub async fn list_tokens_page(
        &self,
        after: &str,
        limit: i64,
    ) -> Result<Vec<TokenRecord>, sqlx::Error> {
        let sql = format!(
            "SELECT {TOKEN_COLUMNS} FROM tokens WHERE tenant_id > $1 ORDER BY tenant_id LIMIT $2"
        );
        on_pool!(self, |pool| sqlx::query_as(&sql)
            .bind(after)
            .bind(limit)
            .fetch_all(pool)
            .await)
    }

    /// Whose every stored token is and when it was fetched: what a reload compares with
    /// the tokens held before it reads (and opens) any.
    pub async fn list_token_versions(&self) -> Result<Vec<TokenVersion>, sqlx::Error> {
        on_pool!(self, |pool| sqlx::query_as(
            "SELECT tenant_id, tenant_uid, fetched_at, expires_at FROM tokens"
        )
        .fetch_all(pool)
        .await)
    }

    /// A tenant's stored token (sealed), if any.
    pub async fn get_token(
        &self,
        tenant_id: &TenantId,
    ) -> Result<Option<TokenRecord>, sqlx::Error> {
        on_pool!(self, |pool| sqlx::query_as(GET_TOKEN)
            .bind(tenant_id.as_str())
            .fetch_optional(pool)
            .await)
    }

    /// Stores a tenant's token, unless the tenant is gone or its credentials changed since
    /// the token was asked for. Returns whether it was stored.
    pub async fn save_token(
        &self,
        t: &TokenRecord,
        credentials_version: i64,
    ) -> Result<bool, sqlx::Error> {
        on_pool!(self, |pool| save_token_query!(t, credentials_version)
            .execute(pool)
            .await
            .map(|r| r.rows_affected() > 0))
    }

    /// Takes the fleet-wide lock on refreshing a tenant's token, waiting at most `wait` for
    /// another replica to release it (`None` on SQLite, where one process owns the store).
    ///
    /// The lock is a transaction-scoped advisory lock: it is released when the returned
    /// lock is saved or dropped, and by PostgreSQL itself when the holder's connection dies.
    pub async fn refresh_lock(
        &self,
        tenant_id: &TenantId,
        uid: TenantUid,
        wait: Duration,
    ) -> Result<Option<RefreshLock>, sqlx::Error> {
        let Some(pool) = &self.refresh_locks else {
            return Ok(None);
        };
        let mut tx = pool.begin().await?;
        sqlx::query("SELECT set_config('lock_timeout', $1, true)")
            .bind(format!("{}ms", wait.as_millis().max(1)))
            .execute(&mut *tx)
            .await?;
        // Keyed by the tenant's identity: a tenant re-created under a deleted one's id
        // never waits for, nor is served by, a refresh of its predecessor.
        sqlx::query(&format!("SELECT pg_advisory_xact_lock({REFRESH_LOCK_KEY})"))
            .bind(uid.to_string())
            .execute(&mut *tx)
            .await?;
        Ok(Some(RefreshLock {
            tx,
            tenant_id: tenant_id.to_string(),
        }))
    }
}

/// A tenant's refresh lock, held by this replica until saved or dropped.
pub struct RefreshLock {
    tx: sqlx::Transaction<'static, sqlx::Postgres>,
    tenant_id: String,
}

impl RefreshLock {
    /// The tenant's stored token as it is now (another replica may just have stored it).
    pub async fn stored_token(&mut self) -> Result<Option<TokenRecord>, sqlx::Error> {
        sqlx::query_as(GET_TOKEN)
            .bind(&self.tenant_id)
            .fetch_optional(&mut *self.tx)
            .await
    }

    /// Stores the new token (as `Store::save_token` does) and releases the lock.
    pub async fn save_and_release(
        mut self,
        t: &TokenRecord,
        credentials_version: i64,
    ) -> Result<bool, sqlx::Error> {
        let saved = save_token_query!(t, credentials_version)
            .execute(&mut *self.tx)
            .await?
            .rows_affected()
            > 0;
        self.tx.commit().await?;
        Ok(saved)
    }
}
