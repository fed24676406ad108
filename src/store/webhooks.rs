//! Webhook endpoints: their URL, the event types they subscribe to and their signing
//! secret (sealed, like client secrets, under the webhook id).

use chrono::{DateTime, Utc};

use super::backend::{Backend, Store};
use super::keys::AuditEntry;
use crate::crypto::Sealed;

/// A stored webhook endpoint.
#[derive(Debug, Clone)]
pub struct WebhookRecord {
    pub id: String,
    pub url: String,
    /// The subscribed event types, or `*` alone for all.
    pub events: Vec<String>,
    pub description: String,
    pub secret: Sealed,
    pub created_at: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
pub(super) struct WebhookRow {
    id: String,
    url: String,
    events: String,
    description: String,
    secret_key_id: String,
    secret_ciphertext: Vec<u8>,
    created_at: DateTime<Utc>,
}

impl From<WebhookRow> for WebhookRecord {
    fn from(row: WebhookRow) -> Self {
        Self {
            id: row.id,
            url: row.url,
            events: row.events.split_whitespace().map(str::to_owned).collect(),
            description: row.description,
            secret: Sealed {
                key_id: row.secret_key_id,
                bytes: row.secret_ciphertext,
            },
            created_at: row.created_at,
        }
    }
}

impl WebhookRecord {
    /// Whether this endpoint wants events of type `kind`.
    pub fn subscribes_to(&self, kind: &str) -> bool {
        self.events.iter().any(|e| e == "*" || e == kind)
    }
}

pub(super) const WEBHOOK_COLUMNS: &str =
    "id, url, events, description, secret_key_id, secret_ciphertext, created_at";

/// The most webhook endpoints that can be registered: every event is written once per
/// subscribed endpoint, so their number bounds the work and storage of each event.
pub const MAX_WEBHOOKS: i64 = 100;

impl Store {
    /// Stores the endpoint and its audit entry unless `MAX_WEBHOOKS` are registered
    /// already; `false`, with nothing written, then. The count and the insert are one
    /// statement, and on PostgreSQL concurrent registrations take turns (a table lock
    /// that readers and deliveries do not wait for), so the cap holds under races.
    pub async fn insert_webhook(
        &self,
        w: &WebhookRecord,
        audit: &AuditEntry,
    ) -> Result<bool, sqlx::Error> {
        let serialize = match self.backend {
            Backend::Postgres(_) => Some("LOCK TABLE webhooks IN SHARE ROW EXCLUSIVE MODE"),
            // A writing statement holds SQLite's one write lock from its start.
            Backend::Sqlite(_) => None,
        };
        on_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            if let Some(lock) = serialize {
                sqlx::query(lock).execute(&mut *tx).await?;
            }
            let inserted = sqlx::query(
                "INSERT INTO webhooks (id, url, events, description, secret_key_id, \
                 secret_ciphertext, created_at) SELECT $1, $2, $3, $4, $5, $6, $7 \
                 WHERE (SELECT COUNT(*) FROM webhooks) < $8",
            )
            .bind(&w.id)
            .bind(&w.url)
            .bind(w.events.join(" "))
            .bind(&w.description)
            .bind(&w.secret.key_id)
            .bind(&w.secret.bytes)
            .bind(w.created_at)
            .bind(MAX_WEBHOOKS)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if inserted == 0 {
                return Ok(false);
            }
            write_audit!(tx, audit)?;
            tx.commit().await?;
            Ok(true)
        })
    }

    pub async fn list_webhooks(&self) -> Result<Vec<WebhookRecord>, sqlx::Error> {
        let sql = format!("SELECT {WEBHOOK_COLUMNS} FROM webhooks ORDER BY created_at, id");
        let rows: Vec<WebhookRow> =
            on_pool!(self, |pool| sqlx::query_as(&sql).fetch_all(pool).await)?;
        Ok(rows.into_iter().map(WebhookRecord::from).collect())
    }

    /// Up to `limit` endpoints in creation order, after the position `after` (a creation
    /// time and an id) when given.
    pub async fn list_webhooks_page(
        &self,
        after: Option<&(DateTime<Utc>, String)>,
        limit: i64,
    ) -> Result<Vec<WebhookRecord>, sqlx::Error> {
        // Without a position: from the epoch on, which every creation time is after.
        let (at, id) = after.cloned().unwrap_or_default();
        let sql = format!(
            "SELECT {WEBHOOK_COLUMNS} FROM webhooks \
             WHERE created_at > $1 OR (created_at = $1 AND id > $2) \
             ORDER BY created_at, id LIMIT $3"
        );
        let rows: Vec<WebhookRow> = on_pool!(self, |pool| sqlx::query_as(&sql)
            .bind(at)
            .bind(id)
            .bind(limit)
            .fetch_all(pool)
            .await)?;
        Ok(rows.into_iter().map(WebhookRecord::from).collect())
    }

    pub async fn get_webhook(&self, id: &str) -> Result<Option<WebhookRecord>, sqlx::Error> {
        let sql = format!("SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE id = $1");
        let row: Option<WebhookRow> = on_pool!(self, |pool| sqlx::query_as(&sql)
            .bind(id)
            .fetch_optional(pool)
            .await)?;
        Ok(row.map(WebhookRecord::from))
    }

    /// Deletes the endpoint and its deliveries; `false` when there was none.
    pub async fn delete_webhook(&self, id: &str, audit: &AuditEntry) -> Result<bool, sqlx::Error> {
        delete_audited!(self, [], "DELETE FROM webhooks WHERE id = $1", id, audit)
    }
}
