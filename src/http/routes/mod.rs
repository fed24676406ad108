//! HTTP routes: the one place that knows URL paths, and the middleware around them.
//!
//! One module per resource, each with its `router()`; the pieces they share (pagination,
//! the tenant path, audit entries) are modules of their own, so that no resource module
//! imports from another.

mod api_keys;
mod audit;
mod audit_entry;
mod dashboard;
mod health;
pub mod hot;
mod identity;
pub mod metrics_only;
mod oauth;
mod pagination;
mod proxy;
pub mod stack;
mod tenant_path;
mod tenants;
mod tokens;
mod upstream;
mod webhooks;

use axum::Router;

use crate::http::error::ApiError;
use crate::http::state::AppState;
pub use stack::Stack;

pub fn router(state: AppState) -> Router {
    router_with(state, Stack::ALL)
}

/// The routes behind `stack`: the service runs with `Stack::ALL`; the cost ladder
/// (`bench/ladder.rs`) measures the same routes with less.
pub fn router_with(state: AppState, stack: Stack) -> Router {
    let routes = Router::new()
        .merge(health::router())
        .merge(tenants::router())
        .merge(tokens::router())
        .merge(upstream::router())
        .merge(oauth::router())
        .merge(dashboard::router())
        .merge(api_keys::router())
        .merge(audit::router())
        .merge(webhooks::router())
        .merge(identity::router())
        .merge(proxy::router())
        .fallback(|| async { ApiError::NotFound("no such endpoint".to_owned()) })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed });
    stack.around(routes).with_state(state)
}
