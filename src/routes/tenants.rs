//! Tenants: create, list, read, update and delete a company's edX credentials.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Router;
use chrono::{DateTime, SubsecRound, Utc};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::auth::{Authorized, TenantsRead, TenantsWrite};
use crate::crypto::Purpose;
use crate::domain::{
    parse_outbound_url, rfc3339, validate_client_id, validate_client_secret, validate_name,
    validate_scope, FieldError, Tenant, TenantId, TenantUid, TokenType,
};
use crate::error::{ApiError, OnConflict, Result};
use crate::extract::{Json, Patch, Path, Query};
use crate::routes::audit_entry::audit;
use crate::routes::pagination::{decode_cursor, encode_cursor, page_size, PageParams};
use crate::routes::tenant_path::path_tenant_id;
use crate::state::AppState;
use crate::telemetry::RequestId;
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
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateTenant {
    #[serde(default)]
    name: Patch<String>,
    #[serde(default)]
    client_id: Patch<String>,
    #[serde(default)]
    client_secret: Patch<SecretString>,
    #[serde(default)]
    token_url: Patch<String>,
    #[serde(default)]
    scope: Patch<String>,
    #[serde(default)]
    token_type: Patch<String>,
    #[serde(default)]
    asymmetric_jwt: Patch<bool>,
    #[serde(default)]
    jwks_url: Patch<String>,
}

#[derive(Serialize)]
struct TenantPage {
    items: Vec<TenantView>,
    next_cursor: Option<String>,
}

/// Fields whose change makes a held token stale (it was issued for other credentials).
const TOKEN_FIELDS: &[&str] = &[
    "client_id",
    "client_secret",
    "token_url",
    "scope",
    "token_type",
    "asymmetric_jwt",
];

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
        version: 1,
        credentials_version: 1,
        created_at: at,
        updated_at: at,
    };
    let entry = audit(
        &caller,
        &request_id,
        "tenant.create",
        id.as_str(),
        json!({}),
    );
    state
        .store
        .insert_tenant(&record, &entry)
        .await
        .on_conflict(|| format!("a tenant with id {id} already exists"))?;
    state.vendor.upsert_tenant(&record);
    tracing::info!(tenant = %id, "tenant created");
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
        .map(decode_cursor)
        .transpose()?
        .unwrap_or_default();
    let mut rows = state
        .store
        .list_tenants(&after, i64::from(limit) + 1)
        .await?;
    let next_cursor = if rows.len() > limit as usize {
        rows.truncate(limit as usize);
        rows.last().map(|t| encode_cursor(&t.id))
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
    Json(patch): Json<UpdateTenant>,
) -> Result<axum::Json<TenantView>> {
    let id = path_tenant_id(&raw_id)?;
    for _ in 0..UPDATE_ATTEMPTS {
        let current = state
            .store
            .get_tenant(&id)
            .await?
            .ok_or(ApiError::TenantNotFound)?;
        let (next, changed) = apply_patch(&state, &current, &patch)?;
        if changed.is_empty() {
            return Ok(axum::Json(TenantView::from(&current)));
        }
        let drop_token = changed.iter().any(|f| TOKEN_FIELDS.contains(f));
        let entry = audit(
            &caller,
            &request_id,
            "tenant.update",
            id.as_str(),
            change_details(&current, &next, &changed),
        );
        if state
            .store
            .update_tenant(&next, current.version, drop_token, &entry)
            .await?
        {
            tracing::info!(tenant = %id, ?changed, drop_token, "tenant updated");
            state.vendor.upsert_tenant(&next);
            return Ok(axum::Json(TenantView::from(&next)));
        }
    }
    Err(ApiError::Conflict(
        "the tenant was changed concurrently; retry the update".to_owned(),
    ))
}

/// The tenant after `patch`, and the names of the fields that changed.
fn apply_patch(
    state: &AppState,
    current: &Tenant,
    patch: &UpdateTenant,
) -> Result<(Tenant, Vec<&'static str>), FieldError> {
    fn not_null<T: Clone>(name: &str, p: &Patch<T>) -> Result<Option<T>, FieldError> {
        match p {
            Patch::Absent => Ok(None),
            Patch::Null => Err(FieldError::new(name, "must not be null")),
            Patch::Value(v) => Ok(Some(v.clone())),
        }
    }
    fn nullable<T>(
        name: &str,
        p: &Patch<String>,
        check: impl FnOnce(&str) -> Result<T, FieldError>,
    ) -> Result<Option<Option<T>>, FieldError> {
        match p {
            Patch::Absent => Ok(None),
            Patch::Null => Ok(Some(None)),
            Patch::Value(v) => check(v).map(|v| Some(Some(v))).map_err(|mut e| {
                e.field = name.to_owned();
                e
            }),
        }
    }

    let mut next = current.clone();
    let mut changed = Vec::new();

    if let Some(name) = not_null("name", &patch.name)? {
        let name = field("name", validate_name(&name))?;
        if name != next.name {
            next.name = name;
            changed.push("name");
        }
    }
    if let Some(client_id) = not_null("client_id", &patch.client_id)? {
        field("client_id", validate_client_id(&client_id))?;
        if client_id != next.client_id {
            next.client_id = client_id;
            changed.push("client_id");
        }
    }
    if let Some(secret) = not_null("client_secret", &patch.client_secret)? {
        check_secret(&secret)?;
        next.secret = state.master_key.seal(
            Purpose::ClientSecret,
            current.id.as_str(),
            secret.expose_secret().as_bytes(),
        );
        changed.push("client_secret");
    }
    if let Some(url) = nullable("token_url", &patch.token_url, |raw| {
        state.outbound_url("token_url", raw)
    })? {
        if url != next.token_url {
            next.token_url = url;
            changed.push("token_url");
        }
    }
    if let Some(scope) = nullable("scope", &patch.scope, |s| field("scope", validate_scope(s)))? {
        if scope != next.scope {
            next.scope = scope;
            changed.push("scope");
        }
    }
    if let Some(raw) = not_null("token_type", &patch.token_type)? {
        let token_type: TokenType = field("token_type", raw.parse())?;
        if token_type != next.token_type {
            next.token_type = token_type;
            changed.push("token_type");
        }
    }
    if let Some(asymmetric) = not_null("asymmetric_jwt", &patch.asymmetric_jwt)? {
        if asymmetric != next.asymmetric_jwt {
            next.asymmetric_jwt = asymmetric;
            changed.push("asymmetric_jwt");
        }
    }
    if let Some(url) = nullable("jwks_url", &patch.jwks_url, |raw| {
        state.outbound_url("jwks_url", raw)
    })? {
        if url != next.jwks_url {
            next.jwks_url = url;
            changed.push("jwks_url");
        }
    }
    if changed.iter().any(|f| TOKEN_FIELDS.contains(f)) {
        next.credentials_version = current.credentials_version + 1;
    }
    // A stored secret is never sent somewhere new: whoever moves the token endpoint must
    // also give the secret for it (otherwise a `tenants:write` key could post any
    // tenant's secret to a host of its choosing).
    if changed.contains(&"token_url") && !changed.contains(&"client_secret") {
        return Err(FieldError::new(
            "client_secret",
            "is required in the same request when token_url changes (a stored secret is \
             never sent to a new URL)",
        ));
    }
    if !changed.is_empty() {
        next.version = current.version + 1;
        next.updated_at = now();
    }
    Ok((next, changed))
}

/// The audit details of an update: the names of the changed fields, and where the token
/// endpoint moved from and to (URLs are not secret; secrets never appear).
fn change_details(current: &Tenant, next: &Tenant, changed: &[&str]) -> serde_json::Value {
    let mut details = json!({ "changed": changed });
    if changed.contains(&"token_url") {
        let shown = |url: &Option<Url>| url.as_ref().map(Url::as_str).map(str::to_owned);
        details["token_url"] = json!({
            "from": shown(&current.token_url),
            "to": shown(&next.token_url),
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
        json!({}),
    );
    if state.store.delete_tenant(&id, &entry).await? {
        state.vendor.remove_tenant(&id);
        tracing::info!(tenant = %id, "tenant deleted");
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::TenantNotFound)
    }
}
