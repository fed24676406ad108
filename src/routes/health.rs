//! Liveness and readiness probes and metrics (no authentication).

use std::time::Duration;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

use crate::error::{ApiError, Result};
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(get_health))
        .route("/readyz", get(get_readiness))
        .route("/metrics", get(get_metrics))
}

async fn get_health() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// Prometheus text (OpenMetrics); no authentication, no secrets, tenant ids as labels.
async fn get_metrics(State(state): State<AppState>) -> impl axum::response::IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.vendor.render_metrics(),
    )
}

/// Ready while the store answers within a second or two.
async fn get_readiness(State(state): State<AppState>) -> Result<Json<Value>> {
    match tokio::time::timeout(Duration::from_secs(2), state.store.ping()).await {
        Ok(Ok(())) => Ok(Json(
            json!({ "status": "ready", "store": state.store.backend_name() }),
        )),
        Ok(Err(err)) => Err(ApiError::StoreUnavailable(err)),
        Err(_) => Err(ApiError::StoreUnavailable(sqlx::Error::PoolTimedOut)),
    }
}
