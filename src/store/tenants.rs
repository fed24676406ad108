//! Tenant rows: the client secret only ever sealed; a row becomes a `Tenant` through
//! `TryFrom`, which refuses a row that does not parse instead of guessing.

use chrono::{DateTime, Utc};
use url::Url;

use super::backend::{Backend, Store};
use super::keys::AuditEntry;
use super::outbox::NewEvent;
use crate::crypto::Sealed;
use crate::domain::{PreviousSecret, Tenant, TenantId, TenantUid};

/// The tenant columns, in the order `bind_tenant!` binds them (`$1` to `$19`).
const COLUMNS: [&str; 19] = [
    "uid",
    "id",
    "name",
    "client_id",
    "secret_key_id",
    "secret_ciphertext",
    "token_url",
    "scope",
    "token_type",
    "asymmetric_jwt",
    "jwks_url",
    "version",
    "credentials_version",
    "created_at",
    "updated_at",
    "api_base_url",
    "previous_secret_key_id",
    "previous_secret_ciphertext",
    "previous_secret_until",
];

/// Binds every column of tenant `$t` to `$query`, as `$1` to `$19` in the order of
/// `COLUMNS`: the one place that writes a tenant's fields, for the insert and the update.
macro_rules! bind_tenant {
    ($query:expr, $t:expr) => {{
        let t: &Tenant = $t;
        let previous = t.previous_secret.as_ref();
        $query
            .bind(t.uid.to_string())
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
            .bind(t.api_base_url.as_ref().map(Url::as_str))
            .bind(previous.map(|p| &p.sealed.key_id))
            .bind(previous.map(|p| &p.sealed.bytes))
            .bind(previous.map(|p| p.until))
    }};
}

/// `INSERT` of every column, bound by `bind_tenant!`.
fn insert_sql() -> String {
    let placeholders: Vec<String> = (1..=COLUMNS.len()).map(|n| format!("${n}")).collect();
    format!(
        "INSERT INTO tenants ({}) VALUES ({})",
        COLUMNS.join(", "),
        placeholders.join(", ")
    )
}

/// `UPDATE` of every column but the identity (`uid`, `id`) and `created_at`, bound by
/// `bind_tenant!`, of the row still at the version bound as `$20`.
fn update_sql() -> String {
    let set: Vec<String> = COLUMNS
        .iter()
        .enumerate()
        .filter(|(_, column)| !["uid", "id", "created_at"].contains(column))
        .map(|(i, column)| format!("{column} = ${}", i + 1))
        .collect();
    format!(
        "UPDATE tenants SET {} WHERE uid = $1 AND id = $2 AND version = $20",
        set.join(", ")
    )
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
    pub api_base_url: Option<String>,
    pub version: i64,
    pub credentials_version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The sealed client secret from before its last change, and until when it may be
    /// used (all three set, or none).
    pub previous_secret_key_id: Option<String>,
    pub previous_secret_ciphertext: Option<Vec<u8>>,
    pub previous_secret_until: Option<DateTime<Utc>>,
}

/// A tenant row's id, identity and version (bumped by every change).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TenantVersion {
    pub id: String,
    pub uid: String,
    pub version: i64,
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
            api_base_url: url("api_base_url", &row.api_base_url)?,
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
            previous_secret: match (
                row.previous_secret_key_id,
                row.previous_secret_ciphertext,
                row.previous_secret_until,
            ) {
                (Some(key_id), Some(bytes), Some(until)) => Some(PreviousSecret {
                    sealed: Sealed { key_id, bytes },
                    until,
                }),
                (None, None, None) => None,
                _ => {
                    return Err(invalid(
                        "previous_secret",
                        "is only partly stored".to_owned(),
                    ))
                }
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

impl Store {
    /// Writes a new tenant with its audit entry and its `tenant.created` event, in one
    /// transaction.
    pub async fn insert_tenant(
        &self,
        t: &Tenant,
        audit: &AuditEntry,
        event: &NewEvent,
    ) -> Result<(), sqlx::Error> {
        let sql = insert_sql();
        on_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            bind_tenant!(sqlx::query(&sql), t).execute(&mut *tx).await?;
            write_audit!(tx, audit)?;
            write_event!(tx, event);
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
        let sql = format!("SELECT {} FROM tenants WHERE id = $1", COLUMNS.join(", "));
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
        let sql = format!(
            "SELECT {} FROM tenants WHERE id > $1 ORDER BY id LIMIT $2",
            COLUMNS.join(", ")
        );
        on_pool!(self, |pool| sqlx::query_as(&sql)
            .bind(after)
            .bind(limit)
            .fetch_all(pool)
            .await)
    }

    /// Every tenant's id, identity and row version: what a reload compares with the
    /// tenants held before it reads (and opens the secrets of) any row.
    pub async fn list_tenant_versions(&self) -> Result<Vec<TenantVersion>, sqlx::Error> {
        on_pool!(self, |pool| sqlx::query_as(
            "SELECT id, uid, version FROM tenants"
        )
        .fetch_all(pool)
        .await)
    }

    /// Writes `t` if the row is still at `expected_version`, with its audit entry and its
    /// event, in one transaction; false (nothing written) if it changed or vanished.
    pub async fn update_tenant(
        &self,
        t: &Tenant,
        expected_version: i64,
        drop_token: bool,
        audit: &AuditEntry,
        event: &NewEvent,
    ) -> Result<bool, sqlx::Error> {
        let sql = update_sql();
        on_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            let updated = bind_tenant!(sqlx::query(&sql), t)
                .bind(expected_version)
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
            write_event!(tx, event);
            tx.commit().await?;
            Ok(true)
        })
    }

    /// Deletes a tenant and its token, with its audit entry and its event, in one
    /// transaction; false (nothing written) when there was no such tenant.
    pub async fn delete_tenant(
        &self,
        id: &TenantId,
        audit: &AuditEntry,
        event: &NewEvent,
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
            write_event!(tx, event);
            tx.commit().await?;
            Ok(true)
        })
    }
}
