//! tokenvend: holds many tenants' edX API credentials and vends cached edX access tokens.
//!
//! The layers, lowest first; each module imports only from its own layer and those below
//! (`src/layering/` checks it): `domain`, `clock`, `crypto`, `share`, `telemetry` ←
//! `store` ← `outbound` ← `engine` ← `services` ← `http`, `config` ← `startup` ←
//! `commands`.

/// Wall-clock time, injectable for tests.
pub mod clock;
/// Command-line interface and the commands beside serving: the operator CLI, `demo`,
/// `rekey`.
pub mod commands;
/// Typed settings from the environment and flags, validated once.
pub mod config;
/// AES-256-GCM sealing of secrets and tokens at rest.
pub mod crypto;
/// Parse-don't-validate types: tenant ids, scopes, tenant fields and their URLs.
pub mod domain;
/// The token engine (slots, single-flight fetches, refresh-ahead, the scheduler, the
/// registry and status view) behind ports; the proxy.
pub mod engine;
/// The HTTP face: caller authentication, extractors, problem+json errors, the routes and
/// the state they share.
pub mod http;
/// The layering rules (no import cycle, no import from a higher layer), checked on the source.
#[cfg(test)]
mod layering;
/// The one outbound policy: URL and address rules, the HTTP clients (no environment
/// proxies, no redirects, timeouts, public addresses only), the edX token client, webhook
/// delivery.
pub mod outbound;
/// One write path per change (tenants, keys, webhooks, identities): the row, its audit
/// entry and its event in one transaction, then the in-memory state.
pub mod services;
/// Fleet-wide rates kept by each replica as its share of the live replicas.
pub mod share;
/// Application start-up: storage, keys, listener, graceful shutdown; replicas sharing
/// PostgreSQL.
pub mod startup;
/// The storage layer over PostgreSQL and SQLite.
pub mod store;
/// Logs, request spans and ids, Prometheus metrics, OpenTelemetry export and W3C trace
/// propagation.
pub mod telemetry;
