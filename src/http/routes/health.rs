//! Liveness and readiness probes (no authentication) and metrics (the `metrics` scope).

use std::time::Duration;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

use crate::http::auth::{Authorized, MetricsRead};
use crate::http::error::{ApiError, Result};
use crate::http::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(get_health))
        .route("/readyz", get(get_readiness))
        .route("/metrics", get(get_metrics))
}

async fn get_health() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// Prometheus text (OpenMetrics): no secrets, but tenant ids as labels, so only for keys
/// with the `metrics` scope (a hidden tenant must look exactly like an unknown one).
/// `TOKENVEND_METRICS_LISTEN` serves it without a key on a private address.
async fn get_metrics(
    State(state): State<AppState>,
    _: Authorized<MetricsRead>,
) -> impl axum::response::IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.vendor.status_view().render_metrics(),
    )
}

/// Ready while the store answers within a second or two; `tokenvend_ready` says what the
/// last check found (so a scrape never queries the store itself).
async fn get_readiness(State(state): State<AppState>) -> Result<Json<Value>> {
    let answered = tokio::time::timeout(Duration::from_secs(2), state.store.ping()).await;
    state.metrics.set_ready(matches!(answered, Ok(Ok(()))));
    match answered {
        Ok(Ok(())) => Ok(Json(
            json!({ "status": "ready", "store": state.store.backend_name() }),
        )),
        Ok(Err(err)) => Err(ApiError::StoreUnavailable(err)),
        Err(_) => Err(ApiError::StoreUnavailable(sqlx::Error::PoolTimedOut)),
    }
}
