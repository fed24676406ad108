//! Caller keys: create (the key is shown once), list (never the key) and revoke.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{delete, post};
use axum::Router;
use secrecy::ExposeSecret;
use serde::Serialize;

use crate::domain::{rfc3339, ScopeSet};
use crate::http::auth::{Admin, Authorized};
use crate::http::error::Result;
use crate::http::extract::{Json, Path, Query};
use crate::http::routes::audit_entry::actor;
use crate::http::routes::pagination::{
    decode_created_cursor, encode_created_cursor, page_size, PageParams,
};
use crate::http::state::AppState;
use crate::services::{KeyFields, KeyService};
use crate::store::ApiKeyRecord;
use crate::telemetry::RequestId;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api-keys", post(create_api_key).get(list_api_keys))
        .route("/api-keys/{id}", delete(delete_api_key))
}

#[derive(Serialize)]
struct ApiKeyView {
    id: String,
    name: String,
    scopes: Vec<String>,
    created_at: String,
    /// `null` when `TOKENVEND_KEY_RATE` applies.
    rate_limit: Option<i32>,
}

impl From<&ApiKeyRecord> for ApiKeyView {
    fn from(k: &ApiKeyRecord) -> Self {
        Self {
            id: k.id.clone(),
            name: k.name.clone(),
            // Tenant scopes without their binding (the tenant identity is internal).
            scopes: ScopeSet::parse_stored(&k.scopes).map_or_else(
                |_| k.scopes.split_whitespace().map(str::to_owned).collect(),
                |set| set.to_public(),
            ),
            created_at: rfc3339(k.created_at),
            rate_limit: k.rate_limit,
        }
    }
}

#[derive(Serialize)]
struct CreatedApiKey {
    #[serde(flatten)]
    view: ApiKeyView,
    /// The key itself: returned here only, never stored or shown again.
    key: String,
}

#[derive(Serialize)]
struct ApiKeyPage {
    items: Vec<ApiKeyView>,
    next_cursor: Option<String>,
}

async fn create_api_key(
    State(keys): State<KeyService>,
    Authorized(caller, _): Authorized<Admin>,
    request_id: RequestId,
    Json(body): Json<KeyFields>,
) -> Result<impl IntoResponse> {
    let created = keys.create(&actor(&caller, &request_id), body).await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(CreatedApiKey {
            view: ApiKeyView::from(&created.record),
            key: created.key.expose_secret().to_owned(),
        }),
    ))
}

/// Oldest first, paged like `GET /tenants`.
async fn list_api_keys(
    State(state): State<AppState>,
    _: Authorized<Admin>,
    Query(params): Query<PageParams>,
) -> Result<axum::Json<ApiKeyPage>> {
    let limit = page_size(params.limit)?;
    let after = params
        .cursor
        .as_deref()
        .map(decode_created_cursor)
        .transpose()?;
    let mut records = state
        .store
        .list_api_keys_page(after.as_ref(), i64::from(limit) + 1)
        .await?;
    let next_cursor = if records.len() > limit as usize {
        records.truncate(limit as usize);
        records
            .last()
            .map(|k| encode_created_cursor(k.created_at, &k.id))
    } else {
        None
    };
    Ok(axum::Json(ApiKeyPage {
        items: records.iter().map(ApiKeyView::from).collect(),
        next_cursor,
    }))
}

async fn delete_api_key(
    State(keys): State<KeyService>,
    Authorized(caller, _): Authorized<Admin>,
    request_id: RequestId,
    Path(id): Path<String>,
) -> Result<StatusCode> {
    keys.revoke(&actor(&caller, &request_id), &id).await?;
    Ok(StatusCode::NO_CONTENT)
}
