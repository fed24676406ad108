//! tokenvend: holds many tenants' edX API credentials and vends cached edX access tokens.

/// Caller keys, scopes and the extractor that checks them.
pub mod auth;
/// Command-line interface: subcommands and their arguments.
pub mod cli;
/// Wall-clock time, injectable for tests.
pub mod clock;
/// Typed settings from the environment and flags, validated once.
pub mod config;
/// AES-256-GCM sealing of secrets and tokens at rest.
pub mod crypto;
/// `tokenvend demo`: the service with the local edX-like issuer (`edx-issuer`) and demo
/// tenants; only with the `demo` feature (on by default).
#[cfg(feature = "demo")]
pub mod demo;
/// Parse-don't-validate types: tenant ids, scopes, tenant fields and their URLs.
pub mod domain;
/// `ApiError` and its application/problem+json rendering.
pub mod error;
/// Request extractors that answer with problem+json on bad input.
pub mod extract;
/// Replicas sharing PostgreSQL: change announcements and periodic reloads.
pub mod fleet;
/// The layering rules (no import cycle, no import from a higher layer), checked on the source.
#[cfg(test)]
mod layering;
/// Prometheus metrics.
pub mod metrics;
/// The operator CLI (`tenants`, `keys`, `token`) over the HTTP API.
pub mod operator;
/// The one outbound policy: URL and address rules, the HTTP clients (no environment
/// proxies, no redirects, timeouts, public addresses only), the edX token client.
pub mod outbound;
/// The proxy: a tenant's edX API called with its token, which callers never see.
pub mod proxy;
/// `tokenvend rekey`: re-seals every stored secret and token under the current master key.
pub mod rekey;
/// HTTP routes, one module per resource.
pub mod routes;
/// One write path per change (tenants, keys, webhooks, identities): the row, its audit
/// entry and its event in one transaction, then the in-memory state.
pub mod services;
/// Fleet-wide rates kept by each replica as its share of the live replicas.
pub mod share;
/// Application start-up: storage, keys, listener, graceful shutdown.
pub mod startup;
/// Shared handler state.
pub mod state;
/// The storage layer over PostgreSQL and SQLite.
pub mod store;
/// Tracing subscriber setup (text or JSON), request spans and request ids.
pub mod telemetry;
/// The token cache: single-flight fetches, refresh-ahead, the scheduler, token status.
pub mod vending;
/// Webhooks: lifecycle events, Standard Webhooks signatures, at-least-once delivery.
pub mod webhooks;
