//! Tenants: create, list, read, update and delete a company's edX credentials.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Router;
use chrono::{DateTime, SubsecRound, Utc};
use secrecy::{ExposeSecret, SecretSlice, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::auth::{Authorized, TenantsRead, TenantsWrite};
use crate::crypto::Purpose;
use crate::domain::{
    display_url, drops_token, parse_api_base_url, rfc3339, validate_client_id,
    validate_client_secret, validate_name, validate_scope, FieldError, PreviousSecret, Tenant,
    TenantId, TenantPatch, TenantUid, TokenType, PREVIOUS_SECRET_KEPT,
};
use crate::error::{ApiError, OnConflict, Result};
use crate::extract::{Json, Path, Query};
use crate::outbound::parse_outbound_url;
use crate::routes::audit_entry::audit;
use crate::routes::pagination::{
    decode_tenant_cursor, encode_tenant_cursor, page_size, PageParams,
};
use crate::routes::tenant_path::path_tenant_id;
use crate::routes::verify::{verify_credentials, WriteParams};
use crate::state::AppState;
use crate::telemetry::RequestId;
use crate::vending::api_base_of;
use crate::webhooks::Event;
use url::Url;

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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateTenant {
    id: Option<String>,
    name: Option<String>,
    client_id: Option<String>,
    client_secret: Option<SecretString>,
    token_url: Option<String>,
    scope: Option<String>,
    token_type: Option<String>,
    asymmetric_jwt: Option<bool>,
    jwks_url: Option<String>,
    api_base_url: Option<String>,
}

#[derive(Serialize)]
struct TenantPage {
    items: Vec<TenantView>,
    next_cursor: Option<String>,
}

fn required<T>(value: Option<T>, field: &str) -> Result<T, FieldError> {
    value.ok_or_else(|| FieldError::new(field, "is required"))
}

fn field<T>(field: &str, result: std::result::Result<T, String>) -> Result<T, FieldError> {
    result.map_err(|message| FieldError::new(field, message))
}

fn check_secret(secret: &SecretString) -> Result<(), FieldError> {
    field(
        "client_secret",
        validate_client_secret(secret.expose_secret()),
    )
}

fn now() -> DateTime<Utc> {
    // Both stores keep microseconds; truncating here keeps answers identical on both.
    Utc::now().trunc_subsecs(6)
}

impl AppState {
    fn outbound_url(&self, name: &str, raw: &str) -> Result<Url, FieldError> {
        field(name, parse_outbound_url(raw, self.url_policy))
    }
}

async fn create_tenant(
    State(state): State<AppState>,
    Authorized(caller, _): Authorized<TenantsWrite>,
    request_id: RequestId,
    Query(params): Query<WriteParams>,
    Json(body): Json<CreateTenant>,
) -> Result<impl IntoResponse> {
    let id = field("id", TenantId::parse(&required(body.id, "id")?))?;
    tracing::Span::current().record("tenant", id.as_str());
    let name = field("name", validate_name(&required(body.name, "name")?))?;
    let client_id = required(body.client_id, "client_id")?;
    field("client_id", validate_client_id(&client_id))?;
    let secret = required(body.client_secret, "client_secret")?;
    check_secret(&secret)?;
    let token_url = body
        .token_url
        .map(|raw| state.outbound_url("token_url", &raw))
        .transpose()?;
    let scope = body
        .scope
        .map(|s| field("scope", validate_scope(&s)))
        .transpose()?;
    let token_type: TokenType = body
        .token_type
        .map(|t| field("token_type", t.parse()))
        .transpose()?
        .unwrap_or_default();
    let jwks_url = body
        .jwks_url
        .map(|raw| state.outbound_url("jwks_url", &raw))
        .transpose()?;
    let api_base_url = body
        .api_base_url
        .map(|raw| field("api_base_url", parse_api_base_url(&raw, state.url_policy)))
        .transpose()?;

    let sealed = state.master_key.seal(
        Purpose::ClientSecret,
        id.as_str(),
        secret.expose_secret().as_bytes(),
    );
    let at = now();
    let record = Tenant {
        uid: TenantUid::generate(),
        id: id.clone(),
        name,
        client_id,
        secret: sealed,
        token_url,
        scope,
        token_type,
        asymmetric_jwt: body.asymmetric_jwt.unwrap_or(false),
        jwks_url,
        api_base_url,
        previous_secret: None,
        version: 1,
        credentials_version: 1,
        created_at: at,
        updated_at: at,
    };
    let verified = if params.verify {
        // edX is not asked about credentials that could not be stored anyway.
        if state.store.get_tenant_row(&id).await?.is_some() {
            return Err(ApiError::Conflict(format!(
                "a tenant with id {id} already exists"
            )));
        }
        Some(verify_credentials(&state, &caller, &request_id, &record, "create").await?)
    } else {
        None
    };
    let entry = audit(
        &caller,
        &request_id,
        "tenant.create",
        id.as_str(),
        json!({ "uid": record.uid.to_string() }),
    );
    let event = state.events.for_change(&Event::tenant_created(id.as_str()));
    state
        .store
        .insert_tenant(&record, &entry, &event)
        .await
        .on_conflict(|| format!("a tenant with id {id} already exists"))?;
    state.vendor.registry().upsert_tenant(&record);
    if let Some(verified) = verified {
        state.vendor.keep_verified(verified).await;
    }
    tracing::info!(tenant = %id, verified = params.verify, "tenant created");
    state.events.wake();
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, format!("/tenants/{id}"))],
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

/// How many times an update is retried when another writer changed the tenant meanwhile.
const UPDATE_ATTEMPTS: usize = 3;

async fn update_tenant(
    State(state): State<AppState>,
    Authorized(caller, _): Authorized<TenantsWrite>,
    request_id: RequestId,
    Path(raw_id): Path<String>,
    Query(params): Query<WriteParams>,
    Json(patch): Json<TenantPatch>,
) -> Result<axum::Json<TenantView>> {
    let id = path_tenant_id(&raw_id)?;
    for _ in 0..UPDATE_ATTEMPTS {
        let current = state
            .store
            .get_tenant(&id)
            .await?
            .ok_or(ApiError::TenantNotFound)?;
        let seal = |secret: &SecretString| {
            state.master_key.seal(
                Purpose::ClientSecret,
                current.id.as_str(),
                secret.expose_secret().as_bytes(),
            )
        };
        let at = now();
        let (mut next, changed) = current.patched(&patch, state.url_policy, seal, at)?;
        if changed.is_empty() {
            return Ok(axum::Json(TenantView::from(&current)));
        }
        let drop_token = drops_token(&changed);
        // Only new credentials need trying: a change of name or JWKS URL keeps them.
        let verified = if params.verify && drop_token {
            Some(verify_credentials(&state, &caller, &request_id, &next, "update").await?)
        } else {
            None
        };
        next.previous_secret =
            kept_previous_secret(&state, &current, &changed, verified.is_some(), at);
        let entry = audit(
            &caller,
            &request_id,
            "tenant.update",
            id.as_str(),
            change_details(&current, &next, &changed),
        );
        let event = state
            .events
            .for_change(&Event::tenant_updated(id.as_str(), &changed));
        if state
            .store
            .update_tenant(&next, current.version, drop_token, &entry, &event)
            .await?
        {
            tracing::info!(tenant = %id, ?changed, drop_token, verified = verified.is_some(), "tenant updated");
            state.vendor.registry().upsert_tenant(&next);
            if let Some(verified) = verified {
                state.vendor.keep_verified(verified).await;
            }
            state.events.wake();
            return Ok(axum::Json(TenantView::from(&next)));
        }
    }
    Err(ApiError::Conflict(
        "the tenant was changed concurrently; retry the update".to_owned(),
    ))
}

/// The previous client secret an update keeps. An unverified change of the secret alone
/// (same client, same token endpoint, same API base) keeps the replaced one, sealed under
/// its own purpose, for a day: if edX refuses the new one, tokens are still had with the
/// old one meanwhile. A verified change, or a change of client, token endpoint or API
/// base, keeps none: a secret, and a token had with it, only ever go to the URLs they
/// were stored for (otherwise moving the API base with a garbage secret would have the
/// safety net fetch a good token and the proxy hand it to the new base). Other changes
/// keep what was kept, while it lasts.
fn kept_previous_secret(
    state: &AppState,
    current: &Tenant,
    changed: &[&str],
    verified: bool,
    now: DateTime<Utc>,
) -> Option<PreviousSecret> {
    let credentials_moved = ["client_id", "token_url", "api_base_url"]
        .iter()
        .any(|field| changed.contains(field));
    if !changed.contains(&"client_secret") && !credentials_moved {
        return current.previous_secret.clone().filter(|p| p.until > now);
    }
    if verified || credentials_moved {
        return None;
    }
    let id = current.id.as_str();
    let secret = SecretSlice::from(
        state
            .master_key
            .open(Purpose::ClientSecret, id, &current.secret)
            .ok()?,
    );
    Some(PreviousSecret {
        sealed: state
            .master_key
            .seal(Purpose::PreviousClientSecret, id, secret.expose_secret()),
        until: now + PREVIOUS_SECRET_KEPT,
    })
}

/// The audit details of an update: the names of the changed fields, and where the token
/// endpoint and the API base moved from and to (URLs are not secret; secrets never
/// appear).
fn change_details(current: &Tenant, next: &Tenant, changed: &[&str]) -> serde_json::Value {
    let mut details = json!({ "changed": changed, "uid": current.uid.to_string() });
    let shown = |url: &Option<Url>| url.as_ref().map(Url::as_str).map(str::to_owned);
    if changed.contains(&"token_url") {
        details["token_url"] = json!({
            "from": shown(&current.token_url),
            "to": shown(&next.token_url),
        });
    }
    if changed.contains(&"api_base_url") {
        details["api_base_url"] = json!({
            "from": shown(&current.api_base_url),
            "to": shown(&next.api_base_url),
        });
    }
    details
}

async fn delete_tenant(
    State(state): State<AppState>,
    Authorized(caller, _): Authorized<TenantsWrite>,
    request_id: RequestId,
    Path(raw_id): Path<String>,
) -> Result<StatusCode> {
    let id = path_tenant_id(&raw_id)?;
    let entry = audit(
        &caller,
        &request_id,
        "tenant.delete",
        id.as_str(),
        // Which tenant under this id: a later one re-created under it is another.
        json!({ "uid": state.vendor.registry().uid_of(&id).map(|uid| uid.to_string()) }),
    );
    let event = state.events.for_change(&Event::tenant_deleted(id.as_str()));
    if state.store.delete_tenant(&id, &entry, &event).await? {
        state.vendor.registry().remove_tenant(&id);
        tracing::info!(tenant = %id, "tenant deleted");
        state.events.wake();
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::TenantNotFound)
    }
}
