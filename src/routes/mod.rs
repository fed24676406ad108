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
mod identity;
pub mod metrics_only;
mod oauth;
mod pagination;
mod proxy;
mod tenant_path;
mod tenants;
mod tokens;
mod upstream;
mod verify;
mod webhooks;

use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, StatusCode};
use axum::Router;
use tower::ServiceBuilder;
use tower_http::request_id::PropagateRequestIdLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use crate::error::ApiError;
use crate::extract::BODY_LIMIT;
use crate::state::AppState;
use crate::telemetry::{self, REQUEST_ID_HEADER};

/// How long one request may take before it is answered 408.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

pub fn router(state: AppState) -> Router {
    let request_id = HeaderName::from_static(REQUEST_ID_HEADER);
    // Proxied calls have a timeout of their own (TOKENVEND_PROXY_TIMEOUT) and stream
    // their answers: the overall request timeout is for the other routes.
    let timed = Router::new()
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
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            REQUEST_TIMEOUT,
        ));
    Router::new()
        .merge(timed)
        .merge(proxy::router())
        .fallback(|| async { ApiError::NotFound("no such endpoint".to_owned()) })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(
            ServiceBuilder::new()
                .map_request(telemetry::with_request_id)
                .layer(
                    TraceLayer::new_for_http()
                        .make_span_with(telemetry::request_span)
                        .on_request(())
                        .on_response(telemetry::log_response)
                        .on_failure(()),
                )
                .layer(PropagateRequestIdLayer::new(request_id)),
        )
        .with_state(state)
}
