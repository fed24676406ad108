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

impl Store {
    pub async fn insert_webhook(
        &self,
        w: &WebhookRecord,
        audit: &AuditEntry,
    ) -> Result<(), sqlx::Error> {
        on_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            sqlx::query(
                "INSERT INTO webhooks (id, url, events, description, secret_key_id, \
                 secret_ciphertext, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(&w.id)
            .bind(&w.url)
            .bind(w.events.join(" "))
            .bind(&w.description)
            .bind(&w.secret.key_id)
            .bind(&w.secret.bytes)
            .bind(w.created_at)
            .execute(&mut *tx)
            .await?;
            write_audit!(tx, audit)?;
            tx.commit().await
        })
    }

    pub async fn list_webhooks(&self) -> Result<Vec<WebhookRecord>, sqlx::Error> {
        let sql = format!("SELECT {WEBHOOK_COLUMNS} FROM webhooks ORDER BY created_at, id");
        let rows: Vec<WebhookRow> =
            on_pool!(self, |pool| sqlx::query_as(&sql).fetch_all(pool).await)?;
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
