//! The storage layer: one `Store` over PostgreSQL (production) or SQLite (embedded default).
//!
//! Both backends run the same SQL text (`$N` placeholders work on both), so each query is
//! written once and `on_pool!` expands it for the backend in use. What differs between them
//! (connection options, migrations, fleet coordination) lives in `postgres.rs` and
//! `sqlite.rs`; the queries live with what they store: `tenants.rs`, `tokens.rs`,
//! `keys.rs` (caller keys and the audit trail), `budget.rs` (the fleet's upstream budget),
//! `fleet.rs` (the replicas' heartbeats and verify cool-downs for the fleet-wide limits),
//! `webhooks.rs` and `outbox.rs` (webhook endpoints and the events waiting to reach them),
//! and `rekey.rs` re-seals all of them under a new master key.

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

/// Deletes the row of `$id` with `$delete`, after the `$before` statements (bound to the
/// same id), and appends the audit entry, in one transaction; `Ok(false)`, with nothing
/// written, when there was no such row.
macro_rules! delete_audited {
    ($store:expr, [$($before:expr),*], $delete:expr, $id:expr, $audit:expr) => {
        on_pool!($store, |pool| {
            let mut tx = pool.begin().await?;
            $(sqlx::query($before).bind($id).execute(&mut *tx).await?;)*
            let deleted = sqlx::query($delete)
                .bind($id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if deleted == 0 {
                return Ok(false);
            }
            write_audit!(tx, $audit)?;
            tx.commit().await?;
            Ok(true)
        })
    };
}

/// Writes `$event` (a `&NewEvent`) and one pending delivery, due at once, per webhook
/// endpoint subscribed to its type, inside the open transaction of the change it
/// announces: the change and its event commit together or not at all, so that a store
/// failing (or a process dying) right after the change cannot lose its event. For a
/// block returning `Result<_, sqlx::Error>`.
macro_rules! write_event {
    ($tx:expr, $event:expr) => {{
        let event: &$crate::store::NewEvent = $event;
        let sql = format!(
            "SELECT {} FROM webhooks",
            $crate::store::webhooks::WEBHOOK_COLUMNS
        );
        let endpoints: Vec<$crate::store::webhooks::WebhookRow> =
            sqlx::query_as(&sql).fetch_all(&mut *$tx).await?;
        let to: Vec<String> = endpoints
            .into_iter()
            .map($crate::store::WebhookRecord::from)
            .filter(|w| w.subscribes_to(&event.kind))
            .map(|w| w.id)
            .collect();
        if !to.is_empty() {
            sqlx::query($crate::store::outbox::INSERT_EVENT)
                .bind(&event.id)
                .bind(&event.kind)
                .bind(&event.payload)
                .bind(event.created_ms)
                .execute(&mut *$tx)
                .await?;
            for webhook_id in &to {
                sqlx::query($crate::store::outbox::INSERT_DELIVERY)
                    .bind(uuid::Uuid::new_v4().simple().to_string())
                    .bind(&event.id)
                    .bind(webhook_id)
                    .bind(event.created_ms)
                    .execute(&mut *$tx)
                    .await?;
            }
        }
    }};
}

mod audit;
mod backend;
mod budget;
mod database_url;
mod fleet;
mod identity;
mod invalidations;
mod keys;
mod limits;
mod outbox;
mod postgres;
mod rekey;
mod sqlite;
mod tenants;
mod tokens;
mod webhooks;

pub use audit::{AuditPruner, AuditRetention};
pub use backend::Store;
pub use budget::BudgetAnswer;
pub use database_url::DatabaseUrl;
pub use identity::{StoredMapping, StoredProvider};
pub use invalidations::InvalidationRecord;
pub use keys::{ApiKeyRecord, AuditEntry, AuditEvent};
pub use limits::ACQUIRE_TIMEOUT;
pub use outbox::{ClaimedDelivery, DeliveryRecord, DeliveryStatus, NewEvent};
pub use postgres::REFRESH_LOCK_KEY;
pub use rekey::{SealedKind, SealedValue};
pub use tenants::{InvalidTenantRow, TenantRow, TenantVersion};
pub use tokens::{RefreshLock, TokenRecord, TokenVersion};
pub use webhooks::{WebhookRecord, MAX_WEBHOOKS};

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
