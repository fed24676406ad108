//! The PostgreSQL server that holds the test databases, and a throwaway database on it.

use sqlx::{Connection, Executor, PgConnection};

/// The server that holds PostgreSQL test databases; `TEST_DATABASE_URL` overrides it.
pub fn postgres_admin_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// A throwaway PostgreSQL database, dropped when this is dropped.
pub struct PgTestDb {
    name: String,
}

impl PgTestDb {
    /// A new empty database on the test server, and its URL.
    pub async fn create() -> (Self, String) {
        let admin_url = postgres_admin_url();
        let name = format!("tokenvend_test_{}", uuid::Uuid::new_v4().simple());
        let mut conn = PgConnection::connect(&admin_url)
            .await
            .expect("connect to the PostgreSQL test server (is it running?)");
        conn.execute(format!(r#"CREATE DATABASE "{name}""#).as_str())
            .await
            .expect("create test database");
        let mut url = url::Url::parse(&admin_url).expect("admin url");
        url.set_path(&name);
        (Self { name }, url.to_string())
    }
}

impl Drop for PgTestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop runs inside the test's runtime; use a thread with its own to block on.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                if let Ok(mut conn) = PgConnection::connect(&postgres_admin_url()).await {
                    let _ = conn
                        .execute(
                            format!(r#"DROP DATABASE IF EXISTS "{name}" WITH (FORCE)"#).as_str(),
                        )
                        .await;
                }
            });
        })
        .join();
    }
}
