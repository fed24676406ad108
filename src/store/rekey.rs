//! Re-sealing under a new master key (`tokenvend rekey`): every sealed value as stored,
//! and a write that only lands if the value is still the one that was read, so that a
//! concurrent change by a running replica is never overwritten.

use chrono::Utc;

use super::backend::{Backend, Store};
use super::keys::AuditEntry;
use crate::crypto::Sealed;

/// What a sealed value is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SealedKind {
    ClientSecret,
    /// A tenant's client secret from before its last change (kept for a day).
    PreviousSecret,
    Token,
    /// A webhook endpoint's signing secret: its owner is the webhook, not a tenant (the
    /// webhook id stands in both `tenant_id` and `tenant_uid`).
    WebhookSecret,
}

/// A sealed value as stored, with the tenant (or webhook) it belongs to.
#[derive(Debug, Clone)]
pub struct SealedValue {
    pub kind: SealedKind,
    /// The id the value is sealed under: the tenant's, or the webhook's.
    pub tenant_id: String,
    pub tenant_uid: String,
    pub sealed: Sealed,
}

#[derive(sqlx::FromRow)]
struct SealedRow {
    tenant_id: String,
    tenant_uid: String,
    key_id: String,
    ciphertext: Vec<u8>,
}

impl SealedKind {
    /// Selects `tenant_id, tenant_uid, key_id, ciphertext` of the values not sealed
    /// under the key `$1`.
    fn select(self) -> &'static str {
        match self {
            SealedKind::ClientSecret => {
                "SELECT id AS tenant_id, uid AS tenant_uid, secret_key_id AS key_id, \
                 secret_ciphertext AS ciphertext FROM tenants WHERE secret_key_id <> $1"
            }
            SealedKind::PreviousSecret => {
                "SELECT id AS tenant_id, uid AS tenant_uid, previous_secret_key_id AS key_id, \
                 previous_secret_ciphertext AS ciphertext FROM tenants \
                 WHERE previous_secret_key_id <> $1"
            }
            SealedKind::Token => {
                "SELECT tenant_id, tenant_uid, key_id, ciphertext FROM tokens WHERE key_id <> $1"
            }
            SealedKind::WebhookSecret => {
                "SELECT id AS tenant_id, id AS tenant_uid, secret_key_id AS key_id, \
                 secret_ciphertext AS ciphertext FROM webhooks WHERE secret_key_id <> $1"
            }
        }
    }

    fn order(self) -> &'static str {
        match self {
            SealedKind::ClientSecret | SealedKind::PreviousSecret => " ORDER BY id",
            SealedKind::Token => " ORDER BY tenant_id",
            SealedKind::WebhookSecret => " ORDER BY id",
        }
    }

    fn one(self) -> &'static str {
        match self {
            SealedKind::ClientSecret | SealedKind::PreviousSecret => " AND id = $2 AND uid = $3",
            SealedKind::Token => " AND tenant_id = $2 AND tenant_uid = $3",
            SealedKind::WebhookSecret => " AND id = $2 AND id = $3",
        }
    }

    /// Writes the new value (`$1`, `$2`) only where the old one (`$5`, `$6`) is still
    /// stored. A tenant's version moves on, so that an update prepared from the old row
    /// (which would write the old sealed secret back) fails and is retried.
    fn reseal(self) -> &'static str {
        match self {
            SealedKind::ClientSecret => {
                "UPDATE tenants SET secret_key_id = $1, secret_ciphertext = $2, \
                 version = version + 1 WHERE id = $3 AND uid = $4 AND secret_key_id = $5 \
                 AND secret_ciphertext = $6"
            }
            SealedKind::PreviousSecret => {
                "UPDATE tenants SET previous_secret_key_id = $1, previous_secret_ciphertext = $2, \
                 version = version + 1 WHERE id = $3 AND uid = $4 \
                 AND previous_secret_key_id = $5 AND previous_secret_ciphertext = $6"
            }
            SealedKind::Token => {
                "UPDATE tokens SET key_id = $1, ciphertext = $2 WHERE tenant_id = $3 \
                 AND tenant_uid = $4 AND key_id = $5 AND ciphertext = $6"
            }
            SealedKind::WebhookSecret => {
                "UPDATE webhooks SET secret_key_id = $1, secret_ciphertext = $2 WHERE id = $3 \
                 AND id = $4 AND secret_key_id = $5 AND secret_ciphertext = $6"
            }
        }
    }

    fn value(self, row: SealedRow) -> SealedValue {
        SealedValue {
            kind: self,
            tenant_id: row.tenant_id,
            tenant_uid: row.tenant_uid,
            sealed: Sealed {
                key_id: row.key_id,
                bytes: row.ciphertext,
            },
        }
    }
}

impl Store {
    /// Every stored value of `kind` that is not sealed under the key `key_id`.
    pub async fn sealed_under_other_keys(
        &self,
        kind: SealedKind,
        key_id: &str,
    ) -> Result<Vec<SealedValue>, sqlx::Error> {
        let sql = format!("{}{}", kind.select(), kind.order());
        let rows: Vec<SealedRow> = on_pool!(self, |pool| sqlx::query_as(&sql)
            .bind(key_id)
            .fetch_all(pool)
            .await)?;
        Ok(rows.into_iter().map(|row| kind.value(row)).collect())
    }

    /// `value` as stored now, if it is still there and still not sealed under `key_id`.
    pub async fn still_sealed_under_other_key(
        &self,
        value: &SealedValue,
        key_id: &str,
    ) -> Result<Option<SealedValue>, sqlx::Error> {
        let kind = value.kind;
        let sql = format!("{}{}", kind.select(), kind.one());
        let row: Option<SealedRow> = on_pool!(self, |pool| sqlx::query_as(&sql)
            .bind(key_id)
            .bind(&value.tenant_id)
            .bind(&value.tenant_uid)
            .fetch_optional(pool)
            .await)?;
        Ok(row.map(|row| kind.value(row)))
    }

    /// Replaces `old` by `new` unless it changed since it was read; returns whether it
    /// was replaced.
    pub async fn reseal(&self, old: &SealedValue, new: &Sealed) -> Result<bool, sqlx::Error> {
        on_pool!(self, |pool| sqlx::query(old.kind.reseal())
            .bind(&new.key_id)
            .bind(&new.bytes)
            .bind(&old.tenant_id)
            .bind(&old.tenant_uid)
            .bind(&old.sealed.key_id)
            .bind(&old.sealed.bytes)
            .execute(pool)
            .await
            .map(|r| r.rows_affected() > 0))
    }

    /// Records an event that changes nothing else in the store (a rekey).
    pub async fn record_audit(&self, audit: &AuditEntry) -> Result<(), sqlx::Error> {
        on_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            write_audit!(tx, audit)?;
            tx.commit().await
        })
    }
}
