//! PostgreSQL: the production store, shared by every replica of a fleet.

use secrecy::{ExposeSecret, SecretString};
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, PgPool};
use std::str::FromStr;

pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations/postgres");

/// The pool for queries, and a separate pool for refresh locks: a lock is held while edX
/// answers, and those waits must never starve queries of connections.
pub async fn connect(url: &SecretString) -> Result<(PgPool, PgPool), sqlx::Error> {
    let options = PgConnectOptions::from_str(url.expose_secret())?
        .application_name("tokenvend")
        .log_statements(log::LevelFilter::Trace);
    let queries = PgPoolOptions::new()
        .max_connections(10)
        .acquire_timeout(super::limits::ACQUIRE_TIMEOUT)
        .connect_with(options.clone())
        .await?;
    let locks = PgPoolOptions::new()
        .max_connections(REFRESH_LOCK_CONNECTIONS)
        .min_connections(0)
        .acquire_timeout(super::limits::ACQUIRE_TIMEOUT)
        .connect_lazy_with(options);
    Ok((queries, locks))
}

/// How many tenants one replica may refresh under the fleet lock at the same time; more
/// wait for a connection (and fetch without the lock when that takes too long).
const REFRESH_LOCK_CONNECTIONS: u32 = 16;

/// The advisory-lock key of a tenant's refresh lock, `$1` being the tenant id.
pub const REFRESH_LOCK_KEY: &str = "hashtextextended('tokenvend-refresh:' || $1, 0)";

/// The channel on which the database announces tenant and caller-key changes.
pub const CHANGES_CHANNEL: &str = "tokenvend_changes";

/// A connection listening for change announcements.
pub async fn listen(pool: &PgPool) -> Result<sqlx::postgres::PgListener, sqlx::Error> {
    let mut listener = sqlx::postgres::PgListener::connect_with(pool).await?;
    listener.listen(CHANGES_CHANNEL).await?;
    Ok(listener)
}
