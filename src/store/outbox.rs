//! The webhook outbox: events and their deliveries, written before anything is sent.
//!
//! A delivery is claimed by setting a lease on it (on PostgreSQL with `FOR UPDATE SKIP
//! LOCKED`, so that each is claimed by one replica); a claimer that dies leaves the lease
//! to run out and the delivery is claimed again. Times are Unix milliseconds.

use super::backend::{Backend, Store};
use super::webhooks::WebhookRecord;
use crate::crypto::Sealed;

/// Writes an event: `$1` id, `$2` type, `$3` payload, `$4` creation time.
pub(super) const INSERT_EVENT: &str =
    "INSERT INTO webhook_events (id, type, payload, created_ms) VALUES ($1, $2, $3, $4)";

/// Writes a pending delivery, due at once: `$1` id, `$2` event, `$3` webhook, `$4` now.
pub(super) const INSERT_DELIVERY: &str =
    "INSERT INTO webhook_deliveries (id, event_id, webhook_id, status, attempts, \
     next_attempt_ms, updated_ms) VALUES ($1, $2, $3, 'pending', 0, $4, $4)";

/// An event to write, with the endpoints it goes to.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub id: String,
    pub kind: String,
    /// The JSON body sent, exactly as signed.
    pub payload: String,
    pub created_ms: i64,
}

/// A claimed delivery with what sending it needs.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ClaimedDelivery {
    pub id: String,
    pub event_id: String,
    pub webhook_id: String,
    /// Attempts made before this one.
    pub attempts: i32,
    pub payload: String,
    pub url: String,
    pub secret_key_id: String,
    pub secret_ciphertext: Vec<u8>,
}

impl ClaimedDelivery {
    pub fn secret(&self) -> Sealed {
        Sealed {
            key_id: self.secret_key_id.clone(),
            bytes: self.secret_ciphertext.clone(),
        }
    }
}

/// What an attempt came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryStatus {
    Pending,
    Delivered,
    Failed,
}

impl DeliveryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Failed => "failed",
        }
    }
}

/// One delivery as `GET /webhooks/{id}/deliveries` shows it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DeliveryRecord {
    pub event_id: String,
    #[sqlx(rename = "type")]
    pub kind: String,
    pub status: String,
    pub attempts: i32,
    pub last_status_code: Option<i32>,
    pub next_attempt_ms: Option<i64>,
    pub created_ms: i64,
}

impl Store {
    /// Writes `event` and one pending delivery, due at once, per endpoint of `to`, in one
    /// transaction. Nothing is written when `to` is empty.
    pub async fn enqueue_event(
        &self,
        event: &NewEvent,
        to: &[WebhookRecord],
    ) -> Result<(), sqlx::Error> {
        if to.is_empty() {
            return Ok(());
        }
        on_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            sqlx::query(INSERT_EVENT)
                .bind(&event.id)
                .bind(&event.kind)
                .bind(&event.payload)
                .bind(event.created_ms)
                .execute(&mut *tx)
                .await?;
            for webhook in to {
                sqlx::query(INSERT_DELIVERY)
                    .bind(uuid::Uuid::new_v4().simple().to_string())
                    .bind(&event.id)
                    .bind(&webhook.id)
                    .bind(event.created_ms)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await
        })
    }

    /// Claims up to `limit` pending deliveries due at `now_ms` and not leased by anyone,
    /// leasing them until `lease_until_ms`.
    pub async fn claim_deliveries(
        &self,
        now_ms: i64,
        lease_until_ms: i64,
        limit: i64,
    ) -> Result<Vec<ClaimedDelivery>, sqlx::Error> {
        const DUE: &str = "SELECT id FROM webhook_deliveries WHERE status = 'pending' \
             AND next_attempt_ms <= $2 AND (leased_until_ms IS NULL OR leased_until_ms < $2) \
             ORDER BY next_attempt_ms LIMIT $3";
        let lock = match self.backend {
            Backend::Postgres(_) => " FOR UPDATE SKIP LOCKED",
            // One process owns a SQLite store, and SQLite serialises writers.
            Backend::Sqlite(_) => "",
        };
        let claim = format!(
            "UPDATE webhook_deliveries SET leased_until_ms = $1 WHERE id IN ({DUE}{lock}) \
             RETURNING id"
        );
        let ids: Vec<String> = on_pool!(self, |pool| sqlx::query_scalar(&claim)
            .bind(lease_until_ms)
            .bind(now_ms)
            .bind(limit)
            .fetch_all(pool)
            .await)?;
        let mut claimed = Vec::with_capacity(ids.len());
        for id in ids {
            let row: Option<ClaimedDelivery> = on_pool!(self, |pool| sqlx::query_as(
                "SELECT d.id, d.event_id, d.webhook_id, d.attempts, e.payload, w.url, \
                 w.secret_key_id, w.secret_ciphertext FROM webhook_deliveries d \
                 JOIN webhook_events e ON e.id = d.event_id \
                 JOIN webhooks w ON w.id = d.webhook_id WHERE d.id = $1"
            )
            .bind(&id)
            .fetch_optional(pool)
            .await)?;
            claimed.extend(row);
        }
        Ok(claimed)
    }

    /// Records an attempt: its HTTP status (none when no answer came), the delivery's new
    /// status and, while pending, when it is tried again. The lease is released.
    pub async fn record_attempt(
        &self,
        delivery_id: &str,
        status: DeliveryStatus,
        status_code: Option<u16>,
        next_attempt_ms: Option<i64>,
        now_ms: i64,
    ) -> Result<(), sqlx::Error> {
        on_pool!(self, |pool| sqlx::query(
            "UPDATE webhook_deliveries SET status = $2, attempts = attempts + 1, \
             last_status_code = $3, next_attempt_ms = $4, leased_until_ms = NULL, \
             updated_ms = $5 WHERE id = $1"
        )
        .bind(delivery_id)
        .bind(status.as_str())
        .bind(status_code.map(i32::from))
        .bind(next_attempt_ms)
        .bind(now_ms)
        .execute(pool)
        .await
        .map(drop))
    }

    /// The `limit` most recent deliveries to the endpoint `webhook_id`, newest first.
    pub async fn list_deliveries(
        &self,
        webhook_id: &str,
        limit: i64,
    ) -> Result<Vec<DeliveryRecord>, sqlx::Error> {
        on_pool!(self, |pool| sqlx::query_as(
            "SELECT d.event_id, e.type, d.status, d.attempts, d.last_status_code, \
             d.next_attempt_ms, e.created_ms FROM webhook_deliveries d \
             JOIN webhook_events e ON e.id = d.event_id WHERE d.webhook_id = $1 \
             ORDER BY e.created_ms DESC, d.id LIMIT $2"
        )
        .bind(webhook_id)
        .bind(limit)
        .fetch_all(pool)
        .await)
    }

    /// How many kept deliveries to each endpoint have failed for good (endpoints with
    /// none are left out).
    pub async fn failed_deliveries(&self) -> Result<Vec<(String, i64)>, sqlx::Error> {
        on_pool!(self, |pool| sqlx::query_as(
            "SELECT webhook_id, COUNT(*) FROM webhook_deliveries \
             WHERE status = 'failed' GROUP BY webhook_id"
        )
        .fetch_all(pool)
        .await)
    }

    /// How many deliveries are neither delivered nor failed for good.
    pub async fn pending_deliveries(&self) -> Result<i64, sqlx::Error> {
        on_pool!(self, |pool| sqlx::query_scalar(
            "SELECT COUNT(*) FROM webhook_deliveries WHERE status = 'pending'"
        )
        .fetch_one(pool)
        .await)
    }

    /// Deletes finished deliveries last changed before `before_ms`, then the events left
    /// without deliveries that are older than that; returns how many deliveries went.
    pub async fn prune_deliveries(&self, before_ms: i64) -> Result<u64, sqlx::Error> {
        on_pool!(self, |pool| {
            let pruned = sqlx::query(
                "DELETE FROM webhook_deliveries WHERE status <> 'pending' AND updated_ms < $1",
            )
            .bind(before_ms)
            .execute(pool)
            .await?
            .rows_affected();
            sqlx::query(
                "DELETE FROM webhook_events WHERE created_ms < $1 AND NOT EXISTS \
                 (SELECT 1 FROM webhook_deliveries d WHERE d.event_id = webhook_events.id)",
            )
            .bind(before_ms)
            .execute(pool)
            .await?;
            Ok(pruned)
        })
    }
}
