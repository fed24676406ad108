//! Tenants: create, list, read, update and delete a company's edX credentials.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Router;
use serde::{Deserialize, Serialize};
use url::Url;

use crate::domain::{display_url, rfc3339, NewTenant, Tenant, TenantFields, TenantId, TenantPatch};
use crate::engine::api_base_of;
use crate::http::auth::{Authorized, TenantsRead, TenantsWrite};
use crate::http::error::{ApiError, Result};
use crate::http::extract::{Json, Path, Query};
use crate::http::routes::audit_entry::actor;
use crate::http::routes::pagination::{
    decode_tenant_cursor, encode_tenant_cursor, page_size, PageParams,
};
use crate::http::routes::tenant_path::path_tenant_id;
use crate::http::state::AppState;
use crate::services::TenantService;
use crate::telemetry::RequestId;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/tenants", post(create_tenant).get(list_tenants))
        .route(
            "/tenants/{id}",
            get(get_tenant).patch(update_tenant).delete(delete_tenant),
        )
}

/// A tenant as callers see it: never the client secret.
#[derive(Debug, Serialize)]
pub struct TenantView {
    pub id: String,
    pub name: String,
    pub client_id: String,
    pub token_url: Option<String>,
    pub scope: Option<String>,
    pub token_type: String,
    pub asymmetric_jwt: bool,
    pub jwks_url: Option<String>,
    /// Where the proxy sends API calls: the tenant's own, or the origin of its token URL.
    pub api_base_url: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

impl From<&Tenant> for TenantView {
    fn from(t: &Tenant) -> Self {
        Self {
            id: t.id.to_string(),
            name: t.name.clone(),
            client_id: t.client_id.clone(),
            token_url: t.token_url.as_ref().map(Url::to_string),
            scope: t.scope.clone(),
            token_type: t.token_type.to_string(),
            asymmetric_jwt: t.asymmetric_jwt,
            jwks_url: t.jwks_url.as_ref().map(Url::to_string),
            api_base_url: api_base_of(t).ok().as_ref().map(display_url),
            created_at: rfc3339(t.created_at),
            updated_at: rfc3339(t.updated_at),
        }
    }
}

/// The query of a tenant write: `verify` is `true` or `false` (anything else is `400`).
#[derive(Debug, Default, Deserialize)]
struct WriteParams {
    #[serde(default)]
    verify: bool,
}

#[derive(Serialize)]
struct TenantPage {
    items: Vec<TenantView>,
    next_cursor: Option<String>,
}

async fn create_tenant(
    State(tenants): State<TenantService>,
    Authorized(caller, _): Authorized<TenantsWrite>,
    request_id: RequestId,
    Query(params): Query<WriteParams>,
    Json(body): Json<TenantFields>,
) -> Result<impl IntoResponse> {
    if let Some(id) = body.id.as_deref().and_then(|raw| TenantId::parse(raw).ok()) {
        tracing::Span::current().record("tenant", id.as_str());
    }
    let new = NewTenant::parse(body, tenants.url_policy)?;
    let actor = actor(&caller, &request_id);
    let record = tenants.create(&actor, new, params.verify).await?;
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, format!("/tenants/{}", record.id))],
        axum::Json(TenantView::from(&record)),
    ))
}

async fn list_tenants(
    State(state): State<AppState>,
    _: Authorized<TenantsRead>,
    Query(params): Query<PageParams>,
) -> Result<axum::Json<TenantPage>> {
    let limit = page_size(params.limit)?;
    let after = params
        .cursor
        .as_deref()
        .map(decode_tenant_cursor)
        .transpose()?
        .unwrap_or_default();
    let mut rows = state
        .store
        .list_tenants(&after, i64::from(limit) + 1)
        .await?;
    let next_cursor = if rows.len() > limit as usize {
        rows.truncate(limit as usize);
        rows.last().map(|t| encode_tenant_cursor(&t.id))
    } else {
        None
    };
    let items = rows
        .into_iter()
        .map(|row| Tenant::try_from(row).map(|t| TenantView::from(&t)))
        .collect::<std::result::Result<_, _>>()
        .map_err(|invalid| ApiError::Internal(anyhow::Error::new(invalid)))?;
    Ok(axum::Json(TenantPage { items, next_cursor }))
}

async fn get_tenant(
    State(state): State<AppState>,
    _: Authorized<TenantsRead>,
    Path(raw_id): Path<String>,
) -> Result<axum::Json<TenantView>> {
    let id = path_tenant_id(&raw_id)?;
    let record = state
        .store
        .get_tenant(&id)
        .await?
        .ok_or(ApiError::TenantNotFound)?;
    Ok(axum::Json(TenantView::from(&record)))
}

async fn update_tenant(
    State(tenants): State<TenantService>,
    Authorized(caller, _): Authorized<TenantsWrite>,
    request_id: RequestId,
    Path(raw_id): Path<String>,
    Query(params): Query<WriteParams>,
    Json(patch): Json<TenantPatch>,
) -> Result<axum::Json<TenantView>> {
    let id = path_tenant_id(&raw_id)?;
    let actor = actor(&caller, &request_id);
    let tenant = tenants.update(&actor, &id, &patch, params.verify).await?;
    Ok(axum::Json(TenantView::from(&tenant)))
}

async fn delete_tenant(
    State(tenants): State<TenantService>,
    Authorized(caller, _): Authorized<TenantsWrite>,
    request_id: RequestId,
    Path(raw_id): Path<String>,
) -> Result<StatusCode> {
    let id = path_tenant_id(&raw_id)?;
    tenants.delete(&actor(&caller, &request_id), &id).await?;
    Ok(StatusCode::NO_CONTENT)
}
