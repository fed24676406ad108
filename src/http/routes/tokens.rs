//! Tokens: the hot path (`GET /tenants/{id}/token`), forced refresh, invalidation, and
//! token status.

use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderValue, Uri};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::domain::{FieldError, TenantId};
use crate::engine::{Invalidation, TokenState, TokenStatus, VendError};
use crate::http::auth::{Authorized, Caller, TenantsRead, TenantsWrite};
use crate::http::error::{ApiError, Result};
use crate::http::extract::{parse_json, Path, Query};
use crate::http::routes::audit_entry::audit;
use crate::http::routes::pagination::{
    decode_tenant_cursor, encode_tenant_cursor, page_size_within,
};
use crate::http::routes::tenant_path::{path_tenant_id, raw_tenant_id};
use crate::http::state::AppState;
use crate::telemetry::RequestId;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/tenants/{id}/token", get(get_token))
        .route("/tenants/{id}/token/refresh", post(refresh_token))
        .route("/tenants/{id}/token/invalidate", post(invalidate_token))
        .route("/tenants/{id}/token/status", get(get_token_status))
        .route("/tokens/status", get(list_token_status))
}

/// The longest `min_ttl` accepted: a day (no edX token lives longer in practice).
const MAX_MIN_TTL: u64 = 86_400;

#[derive(Deserialize)]
struct TokenParams {
    min_ttl: Option<u64>,
}

async fn get_token(
    State(state): State<AppState>,
    caller: Caller,
    uri: Uri,
) -> Result<impl IntoResponse> {
    // The id is read from the path as it is and the tenant found by it, so that a hit
    // allocates nothing for either (the slot's own id is shared).
    let raw_id = raw_tenant_id(uri.path())?;
    let held = state
        .vendor
        .held(&raw_id)
        .map(|h| (h.id().clone(), h.uid()));
    caller.require_token_access(&raw_id, held.as_ref().map(|(_, uid)| *uid))?;
    let id = match held {
        Some((id, _)) => {
            tracing::Span::current().record("tenant", id.as_str());
            id
        }
        None => path_tenant_id(&raw_id)?,
    };
    // The query is read only now, so that a key without scope gets 403 whatever it sends.
    let params: TokenParams = axum::extract::Query::try_from_uri(&uri)
        .map(|q| q.0)
        .map_err(|rejection| ApiError::BadRequest(rejection.body_text()))?;
    let min_ttl = match params.min_ttl {
        Some(n) if n > MAX_MIN_TTL => {
            return Err(ApiError::BadRequest(format!(
                "min_ttl must be at most {MAX_MIN_TTL} seconds"
            )))
        }
        n => Duration::from_secs(n.unwrap_or(0)),
    };
    let started = std::time::Instant::now();
    let token = state.vendor.token_for(&id, min_ttl, caller.id()).await;
    state
        .metrics
        .observe_token_request(started.elapsed().as_secs_f64());
    let token = token?;
    // The answer's bytes are shared by every hit of the same second (`routes::hot` serves
    // the same ones).
    let body = token.response_json(id.as_str(), state.vendor.now());
    // Static header values: nothing copied per answer.
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
            (header::PRAGMA, HeaderValue::from_static("no-cache")),
        ],
        body,
    ))
}

async fn refresh_token(
    State(state): State<AppState>,
    Authorized(caller, _): Authorized<TenantsWrite>,
    request_id: RequestId,
    Path(raw_id): Path<String>,
) -> Result<Json<TokenStatus>> {
    let id = path_tenant_id(&raw_id)?;
    let uid = state.vendor.registry().uid_of(&id);
    let refreshed = state.vendor.force_refresh(&id, caller.id()).await;
    let refused = matches!(
        refreshed,
        Err(VendError::TooSoon { .. } | VendError::CallerOverRate { .. })
    );
    if uid.is_some() && !refused {
        // Forced refreshes reach edX on a caller's word: each that did is on the record,
        // failed or not (an unknown tenant, or one refused with 429 before edX was asked,
        // is not: the trail records changes, and a caller in a loop must not fill it).
        // The refresh stands even if the record cannot be written; that is logged.
        let outcome = match &refreshed {
            Ok(status) => {
                json!({ "uid": uid.map(|u| u.to_string()), "fingerprint": status.fingerprint })
            }
            Err(error) => json!({ "uid": uid.map(|u| u.to_string()), "error": error.to_string() }),
        };
        let entry = audit(&caller, &request_id, "token.refresh", id.as_str(), outcome);
        if let Err(error) = state.store.record_audit(&entry).await {
            tracing::warn!(tenant = %id, %error, "could not record the forced refresh in the audit trail");
        }
    }
    Ok(Json(refreshed?))
}

/// An invalidation body is one short field.
const INVALIDATE_BODY_LIMIT: usize = 4096;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InvalidateBody {
    fingerprint: String,
}

/// A caller got a 401 from edX with the token of this fingerprint: drop it if it is still
/// the held one.
async fn invalidate_token(
    State(state): State<AppState>,
    caller: Caller,
    request_id: RequestId,
    Path(raw_id): Path<String>,
    body: Body,
) -> Result<Json<serde_json::Value>> {
    let current = TenantId::parse(&raw_id)
        .ok()
        .and_then(|id| state.vendor.registry().uid_of(&id));
    caller.require_token_access(&raw_id, current)?;
    let id = path_tenant_id(&raw_id)?;
    // The body is read only now, so that a key without scope gets 403 whatever it sends.
    let body = axum::body::to_bytes(body, INVALIDATE_BODY_LIMIT)
        .await
        .map_err(|_| ApiError::PayloadTooLarge {
            limit: INVALIDATE_BODY_LIMIT,
        })?;
    let body: InvalidateBody = parse_json(&body)?;
    let is_fingerprint = |f: &str| {
        f.len() == 16
            && f.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    if !is_fingerprint(&body.fingerprint) {
        return Err(FieldError::new(
            "fingerprint",
            "must be 16 lowercase hex digits (the token's fingerprint)",
        )
        .into());
    }
    let outcome = state.vendor.invalidate(&id, &body.fingerprint, caller.id());
    if let Ok(Invalidation::Dropped) = outcome {
        // An invalidation that dropped the token makes edX be asked on a caller's word: it
        // is on the record. One that changed nothing (another token is held, or it was
        // refused with 429) is not: the trail records changes, and a caller in a loop
        // must not fill it.
        let detail = json!({
            "uid": current.map(|u| u.to_string()),
            "fingerprint": body.fingerprint,
            "result": "dropped",
        });
        let entry = audit(
            &caller,
            &request_id,
            "token.invalidate",
            id.as_str(),
            detail,
        );
        if let Err(error) = state.store.record_audit(&entry).await {
            tracing::warn!(tenant = %id, %error, "could not record the invalidation in the audit trail");
        }
    }
    Ok(Json(match outcome? {
        Invalidation::Dropped => json!({ "invalidated": true }),
        Invalidation::FingerprintMismatch => {
            json!({ "invalidated": false, "reason": "fingerprint_mismatch" })
        }
    }))
}

async fn get_token_status(
    State(state): State<AppState>,
    _: Authorized<TenantsRead>,
    Path(raw_id): Path<String>,
) -> Result<Json<TokenStatus>> {
    let id = path_tenant_id(&raw_id)?;
    state
        .vendor
        .status_view()
        .status(&id)
        .map(Json)
        .ok_or(ApiError::TenantNotFound)
}

/// Status pages are larger than other lists: the dashboard shows every tenant.
const DEFAULT_STATUS_PAGE: u32 = 1000;
const MAX_STATUS_PAGE: u32 = 1000;

#[derive(Deserialize)]
struct StatusParams {
    limit: Option<u32>,
    cursor: Option<String>,
    /// A comma-separated list of states; none (or empty) means every state.
    state: Option<String>,
}

#[derive(Serialize)]
struct TokenStatusList {
    items: Vec<TokenStatus>,
    next_cursor: Option<String>,
}

async fn list_token_status(
    State(state): State<AppState>,
    _: Authorized<TenantsRead>,
    Query(params): Query<StatusParams>,
) -> Result<Json<TokenStatusList>> {
    let limit = page_size_within(params.limit, DEFAULT_STATUS_PAGE, MAX_STATUS_PAGE)?;
    let after = params
        .cursor
        .as_deref()
        .map(decode_tenant_cursor)
        .transpose()?;
    let states = parse_states(params.state.as_deref().unwrap_or_default())?;
    let page = state
        .vendor
        .status_view()
        .statuses(after.as_deref(), &states, limit as usize);
    let next_cursor = match page.items.last() {
        Some(last) if page.more => Some(encode_tenant_cursor(&last.tenant_id)),
        _ => None,
    };
    Ok(Json(TokenStatusList {
        items: page.items,
        next_cursor,
    }))
}

/// `failing,expired`: the states asked for; an empty list asks for all.
fn parse_states(raw: &str) -> Result<Vec<TokenState>> {
    raw.split(',')
        .filter(|name| !name.is_empty())
        .map(|name| {
            name.parse()
                .map_err(|reason| ApiError::BadRequest(format!("each state in `state` {reason}")))
        })
        .collect()
}
