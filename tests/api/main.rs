//! The API test suite: the real app over real HTTP. Storage cases run on PostgreSQL and
//! SQLite (`postgres::` and `sqlite::`), HTTP-only cases on SQLite (`sqlite_only::`).
//! A feature is a module (a folder once it outgrows one file); `helpers/` is the harness.
//!
//! Two tiers. The fast one (`cargo fast`) needs nothing outside the repository; the
//! full suite (`scripts/test`) needs the PostgreSQL server on 127.0.0.1:5432 and, for
//! `full::`, more. Where a test goes is decided by the module it is in, and the `fast`
//! profile in .config/nextest.toml is the one place that names the modules it leaves
//! out:
//! - `…::postgres::…`, the PostgreSQL case that `on_both_backends!` (or a hand-written
//!   `mod postgres`) makes of a storage test;
//! - `full::…`, below: throwaway PostgreSQL clusters, Python tools from PyPI, Chromium,
//!   Prometheus.
//!
//! A new test that needs PostgreSQL goes in a `postgres` module, one that needs more goes
//! under `full`; anything else is in the fast tier. `cargo fast` run with PostgreSQL out
//! of reach (`TEST_DATABASE_URL=postgres://postgres@127.0.0.1:1/postgres`) shows a
//! mistake at once.

#![allow(clippy::unwrap_used)]

mod api_keys;
mod audit_retention;
mod auth;
mod binary;
mod binary_custody;
mod binary_flags;
mod breaker;
mod budget;
mod caller_spend;
mod clock_skew;
mod compose;
mod custody;
mod custody_changes;
mod errors;
mod fd_limit;
mod grafana;
mod health;
mod helpers;
mod identity;
mod invalidate;
mod lists;
mod oauth;
mod observability;
mod operator;
mod outbound;
mod outbox;
mod proxy;
mod proxy_headers;
mod rate_limits;
mod rekey;
mod secrets;
mod serving;
mod status_pages;
mod tenants;
mod tokens;
mod tracing;
mod tracing_proxy;
mod verify;
mod verify_guessing;
mod webhooks;
mod workload;

/// Tests that need more than the repository and a PostgreSQL server: clusters of their
/// own (`cluster`), pinned Python tools (`python`), Chromium (`dashboard`, `demo`),
/// Prometheus and promtool (`prometheus`); and
/// the fleet tests and the fault matrix (`faults`), which run on PostgreSQL only.
mod full {
    mod cluster;
    mod contract;
    mod dashboard;
    mod demo;
    mod faults;
    mod fleet;
    mod fleet_invalidation;
    mod fleet_limits;
    mod fleet_tracing;
    mod interop;
    mod kubernetes;
    mod outage;
    mod prometheus;
    mod python;
    mod webhooks;
}
