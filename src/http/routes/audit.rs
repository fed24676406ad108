//! The audit trail of administrative changes: who changed what, when (never a secret).

use axum::extract::State;
use axum::routing::get;
use axum::Router;
use serde::Serialize;

use crate::domain::rfc3339;
use crate::http::auth::{Admin, Authorized};
use crate::http::error::Result;
use crate::http::extract::Query;
use crate::http::routes::pagination::{
    decode_audit_cursor, encode_audit_cursor, page_size, PageParams,
};
use crate::http::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new().route("/audit-events", get(list_audit_events))
}

#[derive(Serialize)]
struct AuditEventView {
    id: i64,
    at: String,
    actor: String,
    action: String,
    target: String,
    request_id: Option<String>,
    details: serde_json::Value,
}

#[derive(Serialize)]
struct AuditPage {
    items: Vec<AuditEventView>,
    next_cursor: Option<String>,
}

/// Newest first.
async fn list_audit_events(
    State(state): State<AppState>,
    _: Authorized<Admin>,
    Query(params): Query<PageParams>,
) -> Result<axum::Json<AuditPage>> {
    let limit = page_size(params.limit)?;
    let before = match params.cursor.as_deref() {
        Some(cursor) => decode_audit_cursor(cursor)?,
        None => i64::MAX,
    };
    let mut rows = state
        .store
        .list_audit_events(before, i64::from(limit) + 1)
        .await?;
    let next_cursor = if rows.len() > limit as usize {
        rows.truncate(limit as usize);
        rows.last().map(|e| encode_audit_cursor(e.id))
    } else {
        None
    };
    let items = rows
        .into_iter()
        .map(|e| AuditEventView {
            id: e.id,
            at: rfc3339(e.at),
            details: serde_json::from_str(&e.details).unwrap_or(serde_json::Value::Null),
            actor: e.actor,
            action: e.action,
            target: e.target,
            request_id: e.request_id,
        })
        .collect();
    Ok(axum::Json(AuditPage { items, next_cursor }))
}
