//! The storage layer: one `Store` over PostgreSQL (production) or SQLite (embedded default).
//!
//! Both backends run the same SQL text (`$N` placeholders work on both), so each query is
//! written once and `on_pool!` expands it for the backend in use. What differs between them
//! (connection options, migrations, and later fleet coordination) lives in `postgres.rs`
//! and `sqlite.rs`.

mod postgres;
mod sqlite;

pub use postgres::REFRESH_LOCK_KEY;

use std::time::Duration;

use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use sqlx::{PgPool, SqlitePool};
use url::Url;

use crate::crypto::Sealed;
use crate::domain::{Tenant, TenantId, TenantUid};

/// Where the data lives, as given by `TOKENVEND_DATABASE_URL`.
#[derive(Clone)]
pub enum DatabaseUrl {
    Postgres(SecretString),
    Sqlite(String),
}

impl DatabaseUrl {
    pub fn parse(raw: &str) -> Result<Self, String> {
        if raw.starts_with("postgres://") || raw.starts_with("postgresql://") {
            url::Url::parse(raw).map_err(|e| format!("is not a valid URL ({e})"))?;
            Ok(Self::Postgres(SecretString::from(raw.to_owned())))
        } else if raw.starts_with("sqlite:") {
            Ok(Self::Sqlite(raw.to_owned()))
        } else {
            Err("must start with postgres:// or sqlite://".to_owned())
        }
    }

    pub fn is_postgres(&self) -> bool {
        matches!(self, Self::Postgres(_))
    }

    /// The URL with any password replaced, for logs and error messages.
    pub fn redacted(&self) -> String {
        match self {
            Self::Sqlite(url) => url.clone(),
            Self::Postgres(url) => match url::Url::parse(url.expose_secret()) {
                Ok(mut parsed) => {
                    if parsed.password().is_some() {
                        let _ = parsed.set_password(Some("redacted"));
                    }
                    parsed.to_string()
                }
                Err(_) => "postgres://[unparseable]".to_owned(),
            },
        }
    }
}

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted())
    }
}

/// A tenant row as stored; it becomes a `Tenant` through `TryFrom`, which refuses a row
/// that does not parse instead of guessing.
#[derive(Clone, sqlx::FromRow)]
pub struct TenantRow {
    pub uid: String,
    pub id: String,
    pub name: String,
    pub client_id: String,
    pub secret_key_id: String,
    pub secret_ciphertext: Vec<u8>,
    pub token_url: Option<String>,
    pub scope: Option<String>,
    pub token_type: String,
    pub asymmetric_jwt: bool,
    pub jwks_url: Option<String>,
    pub version: i64,
    pub credentials_version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A stored tenant row that does not parse: it is reported (and its tenant refused), never
/// read with a default in place of the bad field.
#[derive(Debug, Clone, thiserror::Error)]
#[error("stored tenant {id} is invalid: {field} {problem}")]
pub struct InvalidTenantRow {
    pub id: String,
    pub uid: Option<TenantUid>,
    pub field: &'static str,
    pub problem: String,
}

impl TryFrom<TenantRow> for Tenant {
    type Error = InvalidTenantRow;

    fn try_from(row: TenantRow) -> Result<Self, Self::Error> {
        let uid = TenantUid::parse(&row.uid).ok();
        let invalid = |field: &'static str, problem: String| InvalidTenantRow {
            id: row.id.clone(),
            uid,
            field,
            problem,
        };
        let url = |field: &'static str, raw: &Option<String>| {
            raw.as_deref()
                .map(|raw| {
                    Url::parse(raw).map_err(|e| invalid(field, format!("is not a URL ({e})")))
                })
                .transpose()
        };
        Ok(Tenant {
            uid: uid.ok_or_else(|| invalid("uid", "is not a UUID".to_owned()))?,
            id: TenantId::parse(&row.id).map_err(|e| invalid("id", e))?,
            token_url: url("token_url", &row.token_url)?,
            jwks_url: url("jwks_url", &row.jwks_url)?,
            token_type: row
                .token_type
                .parse()
                .map_err(|e| invalid("token_type", e))?,
            name: row.name,
            client_id: row.client_id,
            secret: Sealed {
                key_id: row.secret_key_id,
                bytes: row.secret_ciphertext,
            },
            scope: row.scope,
            asymmetric_jwt: row.asymmetric_jwt,
            version: row.version,
            credentials_version: row.credentials_version,
            created_at: row.created_at,
            updated_at: row.updated_at,
        })
    }
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

/// A caller key row: only the SHA-256 of the key is stored.
#[derive(Clone, sqlx::FromRow)]
pub struct ApiKeyRecord {
    pub id: String,
    pub name: String,
    pub scopes: String,
    pub key_hash: Vec<u8>,
    pub created_at: DateTime<Utc>,
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

#[derive(Clone)]
pub struct Store {
    backend: Backend,
    /// PostgreSQL only: the connections that hold per-tenant refresh locks.
    refresh_locks: Option<PgPool>,
}

#[derive(Clone)]
enum Backend {
    Postgres(PgPool),
    Sqlite(SqlitePool),
}

/// Runs the same block against whichever pool the store holds.
macro_rules! on_pool {
    ($store:expr, |$pool:ident| $body:expr) => {
        match &$store.backend {
            Backend::Postgres($pool) => $body,
            Backend::Sqlite($pool) => $body,
        }
    };
}

/// Appends an audit row inside an open transaction.
macro_rules! write_audit {
    ($tx:expr, $entry:expr) => {
        sqlx::query(
            "INSERT INTO audit_events (at, actor, action, target, request_id, details) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(Utc::now())
        .bind(&$entry.actor)
        .bind($entry.action)
        .bind(&$entry.target)
        .bind(&$entry.request_id)
        .bind($entry.details.to_string())
        .execute(&mut *$tx)
        .await
    };
}

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

const TENANT_COLUMNS: &str = "uid, id, name, client_id, secret_key_id, secret_ciphertext, token_url, \
     scope, token_type, asymmetric_jwt, jwks_url, version, credentials_version, created_at, updated_at";

/// How long a request waits for a database connection before the store counts as down.
pub const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(1);

impl Store {
    pub async fn connect(url: &DatabaseUrl) -> Result<Self, sqlx::Error> {
        Ok(match url {
            DatabaseUrl::Postgres(url) => {
                let (queries, locks) = postgres::connect(url).await?;
                Self {
                    backend: Backend::Postgres(queries),
                    refresh_locks: Some(locks),
                }
            }
            DatabaseUrl::Sqlite(url) => Self {
                backend: Backend::Sqlite(sqlite::connect(url).await?),
                refresh_locks: None,
            },
        })
    }

    pub async fn migrate(&self) -> Result<(), sqlx::migrate::MigrateError> {
        match &self.backend {
            Backend::Postgres(pool) => postgres::MIGRATOR.run(pool).await,
            Backend::Sqlite(pool) => sqlite::MIGRATOR.run(pool).await,
        }
    }

    /// On PostgreSQL, a listener for the changes every replica makes (`None` on SQLite,
    /// where one process owns the store).
    pub async fn change_listener(&self) -> Result<Option<sqlx::postgres::PgListener>, sqlx::Error> {
        match &self.backend {
            Backend::Postgres(pool) => postgres::listen(pool).await.map(Some),
            Backend::Sqlite(_) => Ok(None),
        }
    }

    pub fn backend_name(&self) -> &'static str {
        match self.backend {
            Backend::Postgres(_) => "postgres",
            Backend::Sqlite(_) => "sqlite",
        }
    }

    pub async fn ping(&self) -> Result<(), sqlx::Error> {
        on_pool!(self, |pool| sqlx::query("SELECT 1")
            .execute(pool)
            .await
            .map(drop))
    }

    pub async fn close(&self) {
        if let Some(locks) = &self.refresh_locks {
            locks.close().await;
        }
        on_pool!(self, |pool| pool.close().await)
    }

    /// The ids of every master key that sealed something in this database.
    pub async fn sealed_key_ids(&self) -> Result<Vec<String>, sqlx::Error> {
        on_pool!(self, |pool| sqlx::query_scalar(
            "SELECT secret_key_id FROM tenants UNION SELECT key_id FROM tokens"
        )
        .fetch_all(pool)
        .await)
    }

    pub async fn insert_tenant(&self, t: &Tenant, audit: &AuditEntry) -> Result<(), sqlx::Error> {
        on_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            sqlx::query(
                "INSERT INTO tenants (id, name, client_id, secret_key_id, secret_ciphertext, \
                 token_url, scope, token_type, asymmetric_jwt, jwks_url, version, \
                 credentials_version, created_at, updated_at, uid) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
            )
            .bind(t.id.as_str())
            .bind(&t.name)
            .bind(&t.client_id)
            .bind(&t.secret.key_id)
            .bind(&t.secret.bytes)
            .bind(t.token_url.as_ref().map(Url::as_str))
            .bind(&t.scope)
            .bind(t.token_type.as_str())
            .bind(t.asymmetric_jwt)
            .bind(t.jwks_url.as_ref().map(Url::as_str))
            .bind(t.version)
            .bind(t.credentials_version)
            .bind(t.created_at)
            .bind(t.updated_at)
            .bind(t.uid.to_string())
            .execute(&mut *tx)
            .await?;
            write_audit!(tx, audit)?;
            tx.commit().await
        })
    }

    /// A tenant; a stored row that does not parse is an error (a decode error naming the
    /// tenant and the field).
    pub async fn get_tenant(&self, id: &TenantId) -> Result<Option<Tenant>, sqlx::Error> {
        self.get_tenant_row(id)
            .await?
            .map(|row| Tenant::try_from(row).map_err(|e| sqlx::Error::Decode(Box::new(e))))
            .transpose()
    }

    /// A tenant as stored, parsed or not.
    pub async fn get_tenant_row(&self, id: &TenantId) -> Result<Option<TenantRow>, sqlx::Error> {
        let sql = format!("SELECT {TENANT_COLUMNS} FROM tenants WHERE id = $1");
        on_pool!(self, |pool| sqlx::query_as(&sql)
            .bind(id.as_str())
            .fetch_optional(pool)
            .await)
    }

    /// Up to `limit` tenant rows with ids after `after`, in id order (keyset pagination).
    /// Rows are returned as stored: callers turn them into tenants and decide what an
    /// invalid one means for them.
    pub async fn list_tenants(
        &self,
        after: &str,
        limit: i64,
    ) -> Result<Vec<TenantRow>, sqlx::Error> {
        let sql =
            format!("SELECT {TENANT_COLUMNS} FROM tenants WHERE id > $1 ORDER BY id LIMIT $2");
        on_pool!(self, |pool| sqlx::query_as(&sql)
            .bind(after)
            .bind(limit)
            .fetch_all(pool)
            .await)
    }

    /// Writes `t` if the row is still at `expected_version`; false if it changed or vanished.
    pub async fn update_tenant(
        &self,
        t: &Tenant,
        expected_version: i64,
        drop_token: bool,
        audit: &AuditEntry,
    ) -> Result<bool, sqlx::Error> {
        on_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            let updated = sqlx::query(
                "UPDATE tenants SET name = $2, client_id = $3, secret_key_id = $4, \
                 secret_ciphertext = $5, token_url = $6, scope = $7, token_type = $8, \
                 asymmetric_jwt = $9, jwks_url = $10, version = $11, updated_at = $12, \
                 credentials_version = $14 WHERE id = $1 AND uid = $15 AND version = $13",
            )
            .bind(t.id.as_str())
            .bind(&t.name)
            .bind(&t.client_id)
            .bind(&t.secret.key_id)
            .bind(&t.secret.bytes)
            .bind(t.token_url.as_ref().map(Url::as_str))
            .bind(&t.scope)
            .bind(t.token_type.as_str())
            .bind(t.asymmetric_jwt)
            .bind(t.jwks_url.as_ref().map(Url::as_str))
            .bind(t.version)
            .bind(t.updated_at)
            .bind(expected_version)
            .bind(t.credentials_version)
            .bind(t.uid.to_string())
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if updated == 0 {
                return Ok(false);
            }
            if drop_token {
                sqlx::query("DELETE FROM tokens WHERE tenant_id = $1")
                    .bind(t.id.as_str())
                    .execute(&mut *tx)
                    .await?;
            }
            write_audit!(tx, audit)?;
            tx.commit().await?;
            Ok(true)
        })
    }

    pub async fn delete_tenant(
        &self,
        id: &TenantId,
        audit: &AuditEntry,
    ) -> Result<bool, sqlx::Error> {
        let id = id.as_str();
        on_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            sqlx::query("DELETE FROM tokens WHERE tenant_id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
            let deleted = sqlx::query("DELETE FROM tenants WHERE id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if deleted == 0 {
                return Ok(false);
            }
            write_audit!(tx, audit)?;
            tx.commit().await?;
            Ok(true)
        })
    }

    /// Every stored token (sealed).
    pub async fn list_tokens(&self) -> Result<Vec<TokenRecord>, sqlx::Error> {
        on_pool!(self, |pool| sqlx::query_as(&format!(
            "SELECT {TOKEN_COLUMNS} FROM tokens"
        ))
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

    pub async fn insert_api_key(
        &self,
        k: &ApiKeyRecord,
        audit: &AuditEntry,
    ) -> Result<(), sqlx::Error> {
        on_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            sqlx::query(
                "INSERT INTO api_keys (id, name, scopes, key_hash, created_at) \
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(&k.id)
            .bind(&k.name)
            .bind(&k.scopes)
            .bind(&k.key_hash)
            .bind(k.created_at)
            .execute(&mut *tx)
            .await?;
            write_audit!(tx, audit)?;
            tx.commit().await
        })
    }

    pub async fn list_api_keys(&self) -> Result<Vec<ApiKeyRecord>, sqlx::Error> {
        on_pool!(self, |pool| sqlx::query_as(
            "SELECT id, name, scopes, key_hash, created_at FROM api_keys ORDER BY created_at, id"
        )
        .fetch_all(pool)
        .await)
    }

    pub async fn delete_api_key(&self, id: &str, audit: &AuditEntry) -> Result<bool, sqlx::Error> {
        on_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            let deleted = sqlx::query("DELETE FROM api_keys WHERE id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if deleted == 0 {
                return Ok(false);
            }
            write_audit!(tx, audit)?;
            tx.commit().await?;
            Ok(true)
        })
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

/// Whether a database error is a unique-constraint violation (a duplicate id or key).
pub fn is_unique_violation(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db) if db.is_unique_violation())
}

/// Whether a database error means the store is unreachable rather than the query wrong:
/// no connection, or the server shutting down, starting up or out of connections
/// (SQLSTATE classes 08, 57 and 53).
pub fn is_unavailable(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_) => true,
        sqlx::Error::Database(db) => db
            .code()
            .is_some_and(|code| ["08", "57", "53"].iter().any(|c| code.starts_with(c))),
        _ => false,
    }
}

/// Whether a database error is a lock wait that ran out of time (SQLSTATE 55P03).
pub fn is_lock_timeout(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db) if db.code().as_deref() == Some("55P03"))
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
