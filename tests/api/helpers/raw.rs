//! A direct look at the app's database, past the app: what is really stored.

use std::path::PathBuf;

use sqlx::{PgPool, SqlitePool};
use tokenvend::store::DatabaseUrl;

use super::TestApp;

/// A direct connection to the app's database, for looking at what is really stored.
pub enum RawDb {
    Postgres(PgPool),
    Sqlite(SqlitePool),
}

impl TestApp {
    /// Every stored row of every table as text, bytes columns hex-encoded as PostgreSQL
    /// dumps them; for SQLite the raw bytes of the database files.
    pub async fn dump(&self) -> Vec<u8> {
        match &self.raw {
            RawDb::Postgres(pool) => {
                let mut out = Vec::new();
                for table in ["tenants", "api_keys", "tokens", "audit_events", "webhooks"] {
                    let rows: Vec<String> =
                        sqlx::query_scalar(&format!("SELECT row_to_json(t)::text FROM {table} t"))
                            .fetch_all(pool)
                            .await
                            .expect("dump table");
                    for row in rows {
                        out.extend_from_slice(row.as_bytes());
                        out.push(b'\n');
                    }
                }
                out
            }
            RawDb::Sqlite(_) => {
                let path = self.sqlite_path();
                let mut out = Vec::new();
                for suffix in ["", "-wal"] {
                    if let Ok(bytes) = std::fs::read(format!("{}{suffix}", path.display())) {
                        out.extend_from_slice(&bytes);
                    }
                }
                out
            }
        }
    }

    fn sqlite_path(&self) -> PathBuf {
        match &self.settings.database_url {
            Some(DatabaseUrl::Sqlite(url)) => PathBuf::from(url.trim_start_matches("sqlite://")),
            _ => panic!("not a sqlite app"),
        }
    }

    /// Runs a statement directly against the app's database (`$N` placeholders).
    pub async fn raw_execute(&self, sql: &str, args: &[&str]) -> u64 {
        match &self.raw {
            RawDb::Postgres(pool) => {
                let mut q = sqlx::query(sql);
                for a in args {
                    q = q.bind(*a);
                }
                q.execute(pool).await.expect("raw execute").rows_affected()
            }
            RawDb::Sqlite(pool) => {
                let mut q = sqlx::query(sql);
                for a in args {
                    q = q.bind(*a);
                }
                q.execute(pool).await.expect("raw execute").rows_affected()
            }
        }
    }

    pub async fn raw_count(&self, sql: &str, args: &[&str]) -> i64 {
        match &self.raw {
            RawDb::Postgres(pool) => {
                let mut q = sqlx::query_scalar::<_, i64>(sql);
                for a in args {
                    q = q.bind(*a);
                }
                q.fetch_one(pool).await.expect("raw count")
            }
            RawDb::Sqlite(pool) => {
                let mut q = sqlx::query_scalar::<_, i64>(sql);
                for a in args {
                    q = q.bind(*a);
                }
                q.fetch_one(pool).await.expect("raw count")
            }
        }
    }

    /// The first column of every row `sql` returns, as text.
    pub async fn raw_strings(&self, sql: &str, args: &[&str]) -> Vec<String> {
        match &self.raw {
            RawDb::Postgres(pool) => {
                let mut q = sqlx::query_scalar::<_, String>(sql);
                for a in args {
                    q = q.bind(*a);
                }
                q.fetch_all(pool).await.expect("raw strings")
            }
            RawDb::Sqlite(pool) => {
                let mut q = sqlx::query_scalar::<_, String>(sql);
                for a in args {
                    q = q.bind(*a);
                }
                q.fetch_all(pool).await.expect("raw strings")
            }
        }
    }
}
