//! Caller keys: create (the key is shown once), list (never the key) and revoke.

use std::collections::HashMap;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{delete, post};
use axum::Router;
use chrono::{SubsecRound, Utc};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::auth::limits::MAX_KEY_RATE;
use crate::auth::{generate_key, Admin, Authorized, KeyEntry};
use crate::domain::{rfc3339, validate_name, FieldError, Scope, ScopeSet};
use crate::error::{ApiError, OnConflict, Result};
use crate::extract::{Json, Path, Query};
use crate::routes::audit_entry::audit;
use crate::routes::pagination::{
    decode_created_cursor, encode_created_cursor, page_size, PageParams,
};
use crate::state::AppState;
use crate::store::ApiKeyRecord;
use crate::telemetry::RequestId;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api-keys", post(create_api_key).get(list_api_keys))
        .route("/api-keys/{id}", delete(delete_api_key))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateApiKey {
    name: Option<String>,
    scopes: Option<Vec<String>>,
    /// Any JSON, so that every wrong shape gets the same clear message.
    rate_limit: Option<serde_json::Value>,
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

fn parse_scopes(raw: Option<Vec<String>>) -> Result<ScopeSet, FieldError> {
    let raw = raw.ok_or_else(|| FieldError::new("scopes", "is required"))?;
    let scopes = raw
        .iter()
        .enumerate()
        .map(|(i, s)| {
            s.parse::<Scope>()
                .map_err(|m| FieldError::new(format!("scopes[{i}]"), m))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let set = ScopeSet::new(scopes);
    if set.is_empty() {
        return Err(FieldError::new("scopes", "must name at least one scope"));
    }
    Ok(set)
}

/// `rate_limit`: absent or `null` for the default, else requests per second.
fn parse_rate_limit(raw: Option<serde_json::Value>) -> Result<Option<i32>, FieldError> {
    let Some(raw) = raw.filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    raw.as_u64()
        .filter(|n| (1..=u64::from(MAX_KEY_RATE)).contains(n))
        .and_then(|n| i32::try_from(n).ok())
        .map(Some)
        .ok_or_else(|| {
            FieldError::new(
                "rate_limit",
                format!("must be a whole number of requests per second from 1 to {MAX_KEY_RATE}"),
            )
        })
}

/// Binds each `token:<id>` scope to the tenant that holds the id now; `422` naming the
/// scope when no tenant does.
async fn bind_scopes(state: &AppState, scopes: ScopeSet) -> Result<ScopeSet> {
    let mut current = HashMap::new();
    for scope in scopes.iter() {
        if let Some(id) = scope.unbound_tenant() {
            if let Some(tenant) = state.store.get_tenant(id).await? {
                current.insert(id.clone(), tenant.uid);
            }
        }
    }
    scopes.bind(|id| current.get(id).copied()).map_err(|id| {
        FieldError::new(
            "scopes",
            format!("a tenant scope names {id}, which is no tenant; create the tenant first"),
        )
        .into()
    })
}

async fn create_api_key(
    State(state): State<AppState>,
    Authorized(caller, _): Authorized<Admin>,
    request_id: RequestId,
    Json(body): Json<CreateApiKey>,
) -> Result<impl IntoResponse> {
    let name = body
        .name
        .ok_or_else(|| FieldError::new("name", "is required"))
        .and_then(|n| validate_name(&n).map_err(|m| FieldError::new("name", m)))?;
    let scopes = parse_scopes(body.scopes)?;
    let rate_limit = parse_rate_limit(body.rate_limit)?;
    let scopes = bind_scopes(&state, scopes).await?;
    let generated = generate_key();
    let record = ApiKeyRecord {
        id: generated.id.clone(),
        name,
        scopes: scopes.to_stored(),
        key_hash: generated.hash.to_vec(),
        created_at: Utc::now().trunc_subsecs(6),
        rate_limit,
    };
    let entry = audit(
        &caller,
        &request_id,
        "api_key.create",
        &record.id,
        json!({ "scopes": ApiKeyView::from(&record).scopes, "rate_limit": rate_limit }),
    );
    state
        .store
        .insert_api_key(&record, &entry)
        .await
        .on_conflict(|| "key id collision; retry".to_owned())?;
    let rate = state.keys.rate_for(rate_limit);
    let entry = KeyEntry::new(record.id.clone(), scopes, generated.hash);
    let entry = entry.with_rate(rate, state.keys.sharing());
    state.keys.insert(entry);
    tracing::info!(key_id = %record.id, scopes = %record.scopes, "caller key created");
    Ok((
        StatusCode::CREATED,
        axum::Json(CreatedApiKey {
            view: ApiKeyView::from(&record),
            key: generated.key.expose_secret().to_owned(),
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
    State(state): State<AppState>,
    Authorized(caller, _): Authorized<Admin>,
    request_id: RequestId,
    Path(id): Path<String>,
) -> Result<StatusCode> {
    let entry = audit(&caller, &request_id, "api_key.revoke", &id, json!({}));
    if state.store.delete_api_key(&id, &entry).await? {
        state.keys.remove(&id);
        tracing::info!(key_id = %id, "caller key revoked");
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound("caller key not found".to_owned()))
    }
}
