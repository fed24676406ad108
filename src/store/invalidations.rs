//! Invalidated tokens: the stored copy deleted and, on PostgreSQL, the invalidation
//! recorded (and so announced) in the same transaction, for every replica to drop it.

use chrono::{DateTime, Utc};

use super::backend::{Backend, Store};
use crate::domain::{TenantId, TenantUid};

/// A recorded invalidation: the token of this fingerprint, held for the tenant with this
/// identity, is never served again by any replica.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct InvalidationRecord {
    pub tenant_id: String,
    pub tenant_uid: String,
    pub fingerprint: String,
}

/// Deletes the stored copy if it is still the invalidated token (the one fetched at `$3`
/// for that identity).
const DELETE_INVALIDATED: &str =
    "DELETE FROM tokens WHERE tenant_id = $1 AND tenant_uid = $2 AND fetched_at = $3";

/// Records an invalidation (its insert trigger announces it), unless the tenant is gone.
const RECORD_INVALIDATION: &str = "INSERT INTO token_invalidations (tenant_id, tenant_uid, \
     fingerprint, recorded_at) SELECT $1, $2, $3, now() WHERE EXISTS \
     (SELECT 1 FROM tenants WHERE id = $1 AND uid = $2)";

/// Invalidations older than any token lives are of no use to anyone.
const PRUNE_INVALIDATIONS: &str =
    "DELETE FROM token_invalidations WHERE recorded_at < now() - interval '1 day'";

impl Store {
    /// A token was invalidated: deletes its stored copy if it is still the one fetched at
    /// `fetched_at` for that tenant identity (so that a restart does not bring it back),
    /// and on PostgreSQL records the invalidation in the same transaction, which announces
    /// it to every replica. Returns whether the stored copy was deleted.
    pub async fn invalidate_token(
        &self,
        tenant_id: &TenantId,
        uid: TenantUid,
        fetched_at: DateTime<Utc>,
        fingerprint: &str,
    ) -> Result<bool, sqlx::Error> {
        let uid = uid.to_string();
        match &self.backend {
            Backend::Postgres(pool) => {
                let mut tx = pool.begin().await?;
                let deleted = sqlx::query(DELETE_INVALIDATED)
                    .bind(tenant_id.as_str())
                    .bind(&uid)
                    .bind(fetched_at)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected()
                    > 0;
                sqlx::query(RECORD_INVALIDATION)
                    .bind(tenant_id.as_str())
                    .bind(&uid)
                    .bind(fingerprint)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query(PRUNE_INVALIDATIONS).execute(&mut *tx).await?;
                tx.commit().await?;
                Ok(deleted)
            }
            // One process owns the store: there is nobody to tell.
            Backend::Sqlite(pool) => Ok(sqlx::query(DELETE_INVALIDATED)
                .bind(tenant_id.as_str())
                .bind(&uid)
                .bind(fetched_at)
                .execute(pool)
                .await?
                .rows_affected()
                > 0),
        }
    }

    /// The invalidations recorded after `since` (all that are kept when `None`), oldest
    /// first, and the database's time when they were read (where the next read starts,
    /// less a margin for transactions that commit late). Nothing on SQLite.
    pub async fn invalidations_since(
        &self,
        since: Option<DateTime<Utc>>,
    ) -> Result<(Vec<InvalidationRecord>, DateTime<Utc>), sqlx::Error> {
        match &self.backend {
            Backend::Postgres(pool) => {
                let read_at: DateTime<Utc> =
                    sqlx::query_scalar("SELECT now()").fetch_one(pool).await?;
                let records = sqlx::query_as(
                    "SELECT tenant_id, tenant_uid, fingerprint FROM token_invalidations \
                     WHERE $1::timestamptz IS NULL OR recorded_at > $1 ORDER BY id",
                )
                .bind(since)
                .fetch_all(pool)
                .await?;
                Ok((records, read_at))
            }
            Backend::Sqlite(_) => Ok((Vec::new(), Utc::now())),
        }
    }
}
