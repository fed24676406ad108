//! What replicas on one PostgreSQL database tell each other for the fleet-wide limits:
//! a heartbeat row each (the live replicas are those heard from within a window), and
//! the verify cool-downs. On SQLite one process owns the store: nothing is shared.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::backend::{Backend, Store};

/// Records `$1` as seen at `$2`, drops rows silent since `$4`, and counts the other
/// replicas seen since `$3` (a statement's writes are not visible to its own reads).
const BEAT: &str = "WITH beat AS ( \
     INSERT INTO replicas (id, last_seen) VALUES ($1, $2) \
     ON CONFLICT (id) DO UPDATE SET last_seen = EXCLUDED.last_seen RETURNING id), \
     gone AS (DELETE FROM replicas WHERE last_seen < $4 AND id <> $1 RETURNING id) \
     SELECT count(*) FROM replicas WHERE last_seen > $3 AND id <> $1";

/// How many windows a silent replica's row is kept before it is deleted.
const FORGET_AFTER_WINDOWS: u32 = 10;

impl Store {
    /// Records this replica (`id`) as alive at `now` and returns how many replicas were
    /// heard from within `window`, itself included; `None` on SQLite.
    pub async fn replica_heartbeat(
        &self,
        id: &str,
        now: DateTime<Utc>,
        window: Duration,
    ) -> Result<Option<u32>, sqlx::Error> {
        let Backend::Postgres(pool) = &self.backend else {
            return Ok(None);
        };
        let before = |by: Duration| {
            chrono::Duration::from_std(by)
                .ok()
                .and_then(|by| now.checked_sub_signed(by))
                .unwrap_or(DateTime::<Utc>::MIN_UTC)
        };
        let others: i64 = sqlx::query_scalar(BEAT)
            .bind(id)
            .bind(now)
            .bind(before(window))
            .bind(before(window.saturating_mul(FORGET_AFTER_WINDOWS)))
            .fetch_one(pool)
            .await?;
        Ok(Some(u32::try_from(others).unwrap_or(u32::MAX - 1) + 1))
    }

    /// Removes this replica's heartbeat (it is stopping), so that the others take its
    /// share at their next beat rather than after the window.
    pub async fn leave_fleet(&self, id: &str) -> Result<(), sqlx::Error> {
        if let Backend::Postgres(pool) = &self.backend {
            sqlx::query("DELETE FROM replicas WHERE id = $1")
                .bind(id)
                .execute(pool)
                .await?;
        }
        Ok(())
    }

    /// Until when the fleet refuses to verify `refusal` (a client id at its token URL),
    /// if a cool-down is running at `now`; `None` on SQLite.
    pub async fn verify_refused_until(
        &self,
        refusal: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
        let Backend::Postgres(pool) = &self.backend else {
            return Ok(None);
        };
        sqlx::query_scalar("SELECT until FROM verify_refusals WHERE refusal = $1 AND until > $2")
            .bind(refusal)
            .bind(now)
            .fetch_optional(pool)
            .await
    }

    /// Starts (or extends) the fleet's cool-down of `refusal` until `until`, dropping
    /// those that ended before `now`. Nothing on SQLite.
    pub async fn refuse_verify(
        &self,
        refusal: &str,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<(), sqlx::Error> {
        let Backend::Postgres(pool) = &self.backend else {
            return Ok(());
        };
        let mut tx = pool.begin().await?;
        sqlx::query("DELETE FROM verify_refusals WHERE until <= $1")
            .bind(now)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO verify_refusals (refusal, until) VALUES ($1, $2) \
             ON CONFLICT (refusal) DO UPDATE SET until = GREATEST(verify_refusals.until, $2)",
        )
        .bind(refusal)
        .bind(until)
        .execute(&mut *tx)
        .await?;
        tx.commit().await
    }
}
