//! The upstream budget (`GET /upstream/budget`): how many token requests each edX host may
//! still be sent, and what waited, was put off or was refused.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};

use crate::engine::BudgetReport;
use crate::http::auth::{Authorized, TenantsRead};
use crate::http::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new().route("/upstream/budget", get(get_upstream_budget))
}

async fn get_upstream_budget(
    State(state): State<AppState>,
    _: Authorized<TenantsRead>,
) -> Json<BudgetReport> {
    Json(state.vendor.status_view().upstream_budget())
}
