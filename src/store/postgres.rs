//! PostgreSQL: the production store, shared by every replica of a fleet.

use secrecy::{ExposeSecret, SecretString};
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, PgPool};
use std::str::FromStr;

pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations/postgres");

pub async fn connect(url: &SecretString) -> Result<PgPool, sqlx::Error> {
    let options = PgConnectOptions::from_str(url.expose_secret())?
        .application_name("tokenvend")
        .log_statements(log::LevelFilter::Trace);
    PgPoolOptions::new()
        .max_connections(10)
        .acquire_timeout(super::ACQUIRE_TIMEOUT)
        .connect_with(options)
        .await
}

/// The channel on which the database announces tenant and caller-key changes.
pub const CHANGES_CHANNEL: &str = "tokenvend_changes";

/// A connection listening for change announcements.
pub async fn listen(pool: &PgPool) -> Result<sqlx::postgres::PgListener, sqlx::Error> {
    let mut listener = sqlx::postgres::PgListener::connect_with(pool).await?;
    listener.listen(CHANGES_CHANNEL).await?;
    Ok(listener)
}
