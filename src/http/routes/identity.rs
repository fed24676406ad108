//! Workload identity: identity providers and identity mappings (create, list, show,
//! delete). All need `admin`; each change writes its audit entry in its transaction and
//! reaches the in-memory registry at once.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Router;
use serde::Serialize;
use serde_json::{json, Map, Value};

use crate::domain::{rfc3339, MappingFields, ProviderFields};
use crate::http::auth::{Admin, Authorized};
use crate::http::error::{ApiError, Result};
use crate::http::extract::{Json, Path, Query};
use crate::http::routes::audit_entry::actor;
use crate::http::routes::pagination::{
    decode_created_cursor, encode_created_cursor, page_size, PageParams,
};
use crate::http::state::AppState;
use crate::services::IdentityService;
use crate::store::{StoredMapping, StoredProvider};
use crate::telemetry::RequestId;

pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/identity/providers",
            post(create_identity_provider).get(list_identity_providers),
        )
        .route(
            "/identity/providers/{id}",
            get(get_identity_provider).delete(delete_identity_provider),
        )
        .route(
            "/identity/mappings",
            post(create_identity_mapping).get(list_identity_mappings),
        )
        .route(
            "/identity/mappings/{id}",
            get(get_identity_mapping).delete(delete_identity_mapping),
        )
        .route("/identity/recent", get(list_recent_identities))
}

/// The workload identities that called this process lately (for the dashboard): kept in
/// memory, the most recent first, at most 200.
async fn list_recent_identities(
    State(state): State<AppState>,
    _: Authorized<Admin>,
) -> axum::Json<Value> {
    let items: Vec<Value> = state
        .identities
        .recent()
        .into_iter()
        .map(|r| json!({"provider": r.provider, "subject": r.subject, "last_seen": rfc3339(r.last_seen)}))
        .collect();
    axum::Json(json!({ "items": items }))
}

#[derive(Serialize)]
struct ProviderView {
    id: String,
    issuer: String,
    audience: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    jwks_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    jwks: Option<Value>,
    max_lifetime_seconds: u32,
    subject_claim: String,
    created_at: String,
}

impl From<&StoredProvider> for ProviderView {
    fn from(stored: &StoredProvider) -> Self {
        let p = &stored.provider;
        Self {
            id: p.id.to_string(),
            issuer: p.issuer.clone(),
            audience: p.audience.clone(),
            jwks_url: p.jwks_url().map(ToString::to_string),
            jwks: p
                .inline_jwks()
                .and_then(|set| serde_json::to_value(set).ok()),
            max_lifetime_seconds: p.max_lifetime_seconds,
            subject_claim: p.subject_claim.clone(),
            created_at: rfc3339(stored.created_at),
        }
    }
}

#[derive(Serialize)]
struct MappingView {
    id: String,
    provider: String,
    #[serde(rename = "match")]
    matches: Map<String, Value>,
    scopes: Vec<String>,
    cidrs: Vec<String>,
    created_at: String,
}

impl From<&StoredMapping> for MappingView {
    fn from(stored: &StoredMapping) -> Self {
        let m = &stored.mapping;
        Self {
            id: m.id.to_string(),
            provider: m.provider.to_string(),
            matches: m.match_object(),
            scopes: m.scopes.to_public(),
            cidrs: m.cidrs.iter().map(ToString::to_string).collect(),
            created_at: rfc3339(stored.created_at),
        }
    }
}

#[derive(Serialize)]
struct Page<T> {
    items: Vec<T>,
    next_cursor: Option<String>,
}

/// A page of `items` fetched one past `limit`: the cursor is there when more follow.
fn page<S, T>(
    mut items: Vec<S>,
    limit: u32,
    position: impl Fn(&S) -> String,
    view: impl Fn(&S) -> T,
) -> Page<T> {
    let next_cursor = (items.len() > limit as usize).then(|| {
        items.truncate(limit as usize);
        items.last().map(&position)
    });
    Page {
        items: items.iter().map(view).collect(),
        next_cursor: next_cursor.flatten(),
    }
}

async fn create_identity_provider(
    State(identities): State<IdentityService>,
    Authorized(caller, _): Authorized<Admin>,
    request_id: RequestId,
    Json(body): Json<ProviderFields>,
) -> Result<impl IntoResponse> {
    let actor = actor(&caller, &request_id);
    let stored = identities.create_provider(&actor, body).await?;
    Ok((StatusCode::CREATED, axum::Json(ProviderView::from(&stored))))
}

async fn list_identity_providers(
    State(state): State<AppState>,
    _: Authorized<Admin>,
    Query(params): Query<PageParams>,
) -> Result<axum::Json<Page<ProviderView>>> {
    let limit = page_size(params.limit)?;
    let after = params
        .cursor
        .as_deref()
        .map(decode_created_cursor)
        .transpose()?;
    let items = state
        .store
        .list_identity_providers_page(after.as_ref(), i64::from(limit) + 1)
        .await?;
    Ok(axum::Json(page(
        items,
        limit,
        |p| encode_created_cursor(p.created_at, p.provider.id.as_str()),
        |p| ProviderView::from(p),
    )))
}

async fn get_identity_provider(
    State(state): State<AppState>,
    _: Authorized<Admin>,
    Path(id): Path<String>,
) -> Result<axum::Json<ProviderView>> {
    let stored = state
        .store
        .get_identity_provider(&id)
        .await?
        .ok_or_else(|| ApiError::NotFound("identity provider not found".to_owned()))?;
    Ok(axum::Json(ProviderView::from(&stored)))
}

async fn delete_identity_provider(
    State(identities): State<IdentityService>,
    Authorized(caller, _): Authorized<Admin>,
    request_id: RequestId,
    Path(id): Path<String>,
) -> Result<StatusCode> {
    let actor = actor(&caller, &request_id);
    identities.delete_provider(&actor, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn create_identity_mapping(
    State(identities): State<IdentityService>,
    Authorized(caller, _): Authorized<Admin>,
    request_id: RequestId,
    Json(body): Json<MappingFields>,
) -> Result<impl IntoResponse> {
    let actor = actor(&caller, &request_id);
    let stored = identities.create_mapping(&actor, body).await?;
    Ok((StatusCode::CREATED, axum::Json(MappingView::from(&stored))))
}

async fn list_identity_mappings(
    State(state): State<AppState>,
    _: Authorized<Admin>,
    Query(params): Query<PageParams>,
) -> Result<axum::Json<Page<MappingView>>> {
    let limit = page_size(params.limit)?;
    let after = params
        .cursor
        .as_deref()
        .map(decode_created_cursor)
        .transpose()?;
    let items = state
        .store
        .list_identity_mappings_page(after.as_ref(), i64::from(limit) + 1)
        .await?;
    Ok(axum::Json(page(
        items,
        limit,
        |m| encode_created_cursor(m.created_at, m.mapping.id.as_str()),
        |m| MappingView::from(m),
    )))
}

async fn get_identity_mapping(
    State(state): State<AppState>,
    _: Authorized<Admin>,
    Path(id): Path<String>,
) -> Result<axum::Json<MappingView>> {
    let stored = state
        .store
        .get_identity_mapping(&id)
        .await?
        .ok_or_else(|| ApiError::NotFound("identity mapping not found".to_owned()))?;
    Ok(axum::Json(MappingView::from(&stored)))
}

async fn delete_identity_mapping(
    State(identities): State<IdentityService>,
    Authorized(caller, _): Authorized<Admin>,
    request_id: RequestId,
    Path(id): Path<String>,
) -> Result<StatusCode> {
    let actor = actor(&caller, &request_id);
    identities.delete_mapping(&actor, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}
