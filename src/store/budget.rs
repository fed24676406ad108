//! The fleet's upstream budget on PostgreSQL: one token-bucket row per token-endpoint host,
//! refilled and taken from in a single statement, so that replicas share it without a lock
//! held across an edX call. On SQLite one process owns the store and keeps the budget in
//! memory instead.

use chrono::{DateTime, Utc};

use super::backend::{Backend, Store};

/// Refills the host's bucket up to `$2` at `$3` a second since it was last touched, and
/// takes one request when that leaves at least `$4`. Returns the level left, or no row.
const TAKE: &str = "INSERT INTO upstream_budget AS b (host, tokens, updated_at) \
     SELECT $1, $2 - 1, $5 WHERE $2 - 1 >= $4 \
     ON CONFLICT (host) DO UPDATE SET \
     tokens = LEAST($2, b.tokens + GREATEST(0, EXTRACT(EPOCH FROM ($5 - b.updated_at))) * $3) - 1, \
     updated_at = GREATEST(b.updated_at, $5) \
     WHERE LEAST($2, b.tokens + GREATEST(0, EXTRACT(EPOCH FROM ($5 - b.updated_at))) * $3) - 1 >= $4 \
     RETURNING tokens";

/// The bucket's level now, refilled.
const LEVEL: &str =
    "SELECT LEAST($2, tokens + GREATEST(0, EXTRACT(EPOCH FROM ($4 - updated_at))) * $3) \
     FROM upstream_budget WHERE host = $1";

/// What the fleet's bucket said.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum BudgetAnswer {
    /// One request taken; the level left (negative: a reservation).
    Taken(f64),
    /// Nothing taken: the level now.
    Short(f64),
}

impl Store {
    /// Takes one request from the fleet-wide bucket of `host` (`capacity` at most,
    /// `per_second` refill) if that leaves at least `floor`; `None` on SQLite, where the
    /// budget is kept per process. `now` is the caller's clock (the engine's, so that
    /// tests can move it).
    pub async fn take_upstream_budget(
        &self,
        host: &str,
        capacity: f64,
        per_second: f64,
        floor: f64,
        now: DateTime<Utc>,
    ) -> Result<Option<BudgetAnswer>, sqlx::Error> {
        let Backend::Postgres(pool) = &self.backend else {
            return Ok(None);
        };
        let taken: Option<f64> = sqlx::query_scalar(TAKE)
            .bind(host)
            .bind(capacity)
            .bind(per_second)
            .bind(floor)
            .bind(now)
            .fetch_optional(pool)
            .await?;
        if let Some(level) = taken {
            return Ok(Some(BudgetAnswer::Taken(level)));
        }
        let level: Option<f64> = sqlx::query_scalar(LEVEL)
            .bind(host)
            .bind(capacity)
            .bind(per_second)
            .bind(now)
            .fetch_optional(pool)
            .await?;
        Ok(Some(BudgetAnswer::Short(level.unwrap_or(capacity))))
    }
}
