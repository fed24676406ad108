//! The audit trail's retention (`TOKENVEND_AUDIT_RETENTION_DAYS`): events older than it
//! are pruned at start-up and then periodically, in bounded batches.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::backend::{Backend, Store};
use crate::clock::Clock;

/// Events deleted per statement: a large backlog is pruned in many short transactions,
/// never in one that holds the table.
const PRUNE_BATCH: i64 = 1000;

/// How long audit events are kept, and how often the old ones are pruned.
#[derive(Debug, Clone)]
pub struct AuditRetention {
    /// Days an event is kept; `0` keeps every event forever.
    pub retention_days: u32,
    /// The time between two prune passes; the first runs at start-up.
    pub prune_interval: Duration,
}

impl Default for AuditRetention {
    fn default() -> Self {
        Self {
            retention_days: 400,
            prune_interval: Duration::from_secs(3600),
        }
    }
}

impl Store {
    /// Deletes up to `limit` events older than `before`, the oldest first; returns how
    /// many. Replicas pruning at the same time delete each event once between them.
    pub async fn prune_audit_events(
        &self,
        before: DateTime<Utc>,
        limit: i64,
    ) -> Result<u64, sqlx::Error> {
        on_pool!(self, |pool| sqlx::query(
            "DELETE FROM audit_events WHERE id IN \
             (SELECT id FROM audit_events WHERE at < $1 ORDER BY id LIMIT $2)"
        )
        .bind(before)
        .bind(limit)
        .execute(pool)
        .await
        .map(|done| done.rows_affected()))
    }
}

/// Prunes the audit trail by the app's clock.
#[derive(Clone)]
pub struct AuditPruner {
    store: Store,
    clock: Arc<dyn Clock>,
    retention: AuditRetention,
}

impl AuditPruner {
    pub fn new(store: Store, clock: Arc<dyn Clock>, retention: AuditRetention) -> Self {
        Self {
            store,
            clock,
            retention,
        }
    }

    /// One pass: every event older than the retention, batch by batch; returns how many
    /// were deleted (none when the retention is `0`).
    pub async fn prune_once(&self) -> Result<u64, sqlx::Error> {
        let days = self.retention.retention_days;
        if days == 0 {
            return Ok(0);
        }
        let before = self.clock.now() - chrono::Duration::days(i64::from(days));
        let mut count = 0;
        loop {
            let deleted = self.store.prune_audit_events(before, PRUNE_BATCH).await?;
            count += deleted;
            if deleted < PRUNE_BATCH.unsigned_abs() {
                break;
            }
            tokio::task::yield_now().await;
        }
        if count > 0 {
            tracing::info!(
                count,
                retention_days = days,
                "pruned audit events older than the retention"
            );
        }
        Ok(count)
    }

    /// Prunes at once and then every `prune_interval`, until the task is aborted; does
    /// nothing when the retention is `0`. A failed pass is logged and tried again at the
    /// next one.
    pub async fn run(self) {
        if self.retention.retention_days == 0 {
            return;
        }
        let mut passes = tokio::time::interval(self.retention.prune_interval);
        passes.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            passes.tick().await;
            if let Err(error) = self.prune_once().await {
                tracing::warn!(%error, "pruning the audit trail failed; trying again later");
            }
        }
    }
}
