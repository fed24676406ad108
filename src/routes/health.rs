//! Liveness and readiness probes (no authentication).

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
}

async fn get_health() -> Json<Value> {
    Json(json!({ "status": "ok" }))
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
