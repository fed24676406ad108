//! The store's connection pools, and what concerns the whole database: connecting,
//! migrating, change announcements, readiness.

use sqlx::{PgPool, SqlitePool};

use super::database_url::DatabaseUrl;
use super::{postgres, sqlite};

#[derive(Clone)]
pub struct Store {
    pub(super) backend: Backend,
    /// PostgreSQL only: the connections that hold per-tenant refresh locks.
    pub(super) refresh_locks: Option<PgPool>,
}

#[derive(Clone)]
pub(super) enum Backend {
    Postgres(PgPool),
    Sqlite(SqlitePool),
}

impl Store {
    pub async fn connect(url: &DatabaseUrl) -> Result<Self, sqlx::Error> {
        Ok(match url {
            DatabaseUrl::Postgres(url) => {
                let (queries, locks) = postgres::connect(url).await?;
                Self {
                    backend: Backend::Postgres(queries),
                    refresh_locks: Some(locks),
                }
            }
            DatabaseUrl::Sqlite(url) => Self {
                backend: Backend::Sqlite(sqlite::connect(url).await?),
                refresh_locks: None,
            },
        })
    }

    pub async fn migrate(&self) -> Result<(), sqlx::migrate::MigrateError> {
        match &self.backend {
            Backend::Postgres(pool) => postgres::MIGRATOR.run(pool).await,
            Backend::Sqlite(pool) => sqlite::MIGRATOR.run(pool).await,
        }
    }

    /// On PostgreSQL, a listener for the changes every replica makes (`None` on SQLite,
    /// where one process owns the store).
    pub async fn change_listener(&self) -> Result<Option<sqlx::postgres::PgListener>, sqlx::Error> {
        match &self.backend {
            Backend::Postgres(pool) => postgres::listen(pool).await.map(Some),
            Backend::Sqlite(_) => Ok(None),
        }
    }

    /// Whether every connection of the refresh-lock pool exists and is in use: a pool
    /// timeout then means this replica is busy, not that the database is unreachable
    /// (sqlx answers both with `PoolTimedOut`).
    pub fn refresh_locks_all_in_use(&self) -> bool {
        self.refresh_locks.as_ref().is_some_and(all_in_use)
    }

    /// The same for the pool of ordinary queries.
    pub fn queries_all_in_use(&self) -> bool {
        match &self.backend {
            Backend::Postgres(pool) => all_in_use(pool),
            Backend::Sqlite(_) => false,
        }
    }

    pub fn backend_name(&self) -> &'static str {
        match self.backend {
            Backend::Postgres(_) => "postgres",
            Backend::Sqlite(_) => "sqlite",
        }
    }

    pub async fn ping(&self) -> Result<(), sqlx::Error> {
        on_pool!(self, |pool| sqlx::query("SELECT 1")
            .execute(pool)
            .await
            .map(drop))
    }

    pub async fn close(&self) {
        // Both pools refuse new work from the first poll; each then waits for its
        // checked-out connections.
        let locks = async {
            if let Some(locks) = &self.refresh_locks {
                locks.close().await;
            }
        };
        let queries = async { on_pool!(self, |pool| pool.close().await) };
        tokio::join!(locks, queries);
    }

    /// The ids of every master key that sealed something in this database.
    pub async fn sealed_key_ids(&self) -> Result<Vec<String>, sqlx::Error> {
        on_pool!(self, |pool| sqlx::query_scalar(
            "SELECT secret_key_id FROM tenants UNION SELECT key_id FROM tokens \
             UNION SELECT secret_key_id FROM webhooks \
             UNION SELECT previous_secret_key_id FROM tenants \
             WHERE previous_secret_key_id IS NOT NULL"
        )
        .fetch_all(pool)
        .await)
    }
}

fn all_in_use(pool: &sqlx::PgPool) -> bool {
    pool.num_idle() == 0 && pool.size() >= pool.options().get_max_connections()
}
