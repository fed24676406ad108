//! The router of `TOKENVEND_METRICS_LISTEN`: `GET /metrics` without a key, and nothing
//! else, for a Prometheus that scrapes over a private interface.

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use crate::http::error::ApiError;
use crate::http::state::AppState;

/// The content type of the main listener's `/metrics` (OpenMetrics text).
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/metrics", get(get_metrics))
        .fallback(|| async { ApiError::NotFound("no such endpoint".to_owned()) })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
}

async fn get_metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(CONTENT_TYPE, OPENMETRICS)],
        state.vendor.status_view().render_metrics(),
    )
}
