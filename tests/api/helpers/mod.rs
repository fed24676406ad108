//! The test harness: the real app on a random port, on its own fresh database.
//!
//! `spawn_app` (in `app`) builds a `TestApp`; the `on_both_backends!` family (in
//! `backends`) runs a case on PostgreSQL and SQLite; `eventually` (in `poll`) waits for
//! background work; `raw` looks at what is really stored; `checks` holds the assertions
//! every file uses.

mod app;
mod backends;
mod binary;
mod checks;
mod logs;
mod poll;
mod postgres;
mod raw;

pub use app::{
    spawn_app, spawn_app_on_postgres, spawn_app_on_postgres_with, spawn_app_with, TestApp,
};
pub use backends::Backend;
pub use binary::{start_on_port_0, terminate, tokenvend, unused_port, wait_healthy, Started, BIN};
pub use checks::{assert_problem, contains, json_body, tenant_body};
pub use logs::captured_logs;
pub use poll::{eventually, eventually_within, poll_until};
pub use postgres::{postgres_admin_url, PgTestDb};
pub use raw::RawDb;
