//! The middleware every route runs behind, as separable steps (request id, request
//! timeout, body limit, trace span): `routes::router` applies them all; the hit-path cost
//! ladder (`bench/ladder.rs`) applies them one at a time, so that it measures these very
//! pieces.

use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, StatusCode};
use axum::Router;
use tower::ServiceBuilder;
use tower_http::request_id::PropagateRequestIdLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use crate::extract::BODY_LIMIT;
use crate::telemetry::{self, REQUEST_ID_HEADER};

/// How long one request may take before it is answered 408.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Which steps of the middleware to apply; the service runs with [`Stack::ALL`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stack {
    /// Every request gets an id (`x-request-id`), echoed in the answer and the log.
    pub request_id: bool,
    /// The routes given to [`Stack::timed`] answer 408 after [`REQUEST_TIMEOUT`].
    pub timeout: bool,
    /// Request bodies are limited to `BODY_LIMIT`.
    pub body_limit: bool,
    /// One span per request, and the request's log line.
    pub trace: bool,
}

impl Stack {
    pub const ALL: Stack = Stack {
        request_id: true,
        timeout: true,
        body_limit: true,
        trace: true,
    };
    pub const NONE: Stack = Stack {
        request_id: false,
        timeout: false,
        body_limit: false,
        trace: false,
    };

    /// The request timeout around `routes` (the proxy has a timeout of its own).
    pub fn timed<S: Clone + Send + Sync + 'static>(self, routes: Router<S>) -> Router<S> {
        if !self.timeout {
            return routes;
        }
        routes.layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            REQUEST_TIMEOUT,
        ))
    }

    /// The rest of the middleware around every route (fallbacks included).
    pub fn around<S: Clone + Send + Sync + 'static>(self, routes: Router<S>) -> Router<S> {
        let routes = if self.body_limit {
            routes.layer(DefaultBodyLimit::max(BODY_LIMIT))
        } else {
            routes
        };
        let request_id = || PropagateRequestIdLayer::new(HeaderName::from_static(REQUEST_ID_HEADER));
        let trace = || {
            TraceLayer::new_for_http()
                .make_span_with(telemetry::request_span)
                .on_request(())
                .on_response(telemetry::log_response)
                .on_failure(())
        };
        match (self.request_id, self.trace) {
            (true, true) => routes.layer(
                ServiceBuilder::new()
                    .map_request(telemetry::with_request_id)
                    .layer(trace())
                    .layer(request_id()),
            ),
            (true, false) => routes.layer(
                ServiceBuilder::new()
                    .map_request(telemetry::with_request_id)
                    .layer(request_id()),
            ),
            (false, true) => routes.layer(trace()),
            (false, false) => routes,
        }
    }
}
