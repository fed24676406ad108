//! The proxy: `{method} /tenants/{id}/proxy/{path}` (GET, HEAD, POST, PUT, PATCH,
//! DELETE, OPTIONS, TRACE), a tenant's edX API called with
//! its token (see `crate::engine::proxy`); the path is checked on the raw request target, before
//! any decoding, so that nothing can step outside the tenant's `api_base_url`.

use axum::extract::{Request, State};
use axum::response::Response;
use axum::routing::get;
use axum::Router;

use crate::domain::{ProxyPath, TenantId};
use crate::engine::proxy::{ProxyCall, ProxyError, MAX_BODY};
use crate::http::auth::Caller;
use crate::http::error::{ApiError, Result};
use crate::http::routes::tenant_path::path_tenant_id;
use crate::http::state::AppState;
use crate::telemetry::RequestId;

pub fn router() -> Router<AppState> {
    // At least one character of path: the API's root is never an edX API. The methods
    // HTTP APIs use, as openapi.yaml lists them; any other is 405. TRACE above all: a
    // server answering it echoes the request, the injected token included.
    let call = get(proxy_call)
        .post(proxy_call)
        .put(proxy_call)
        .patch(proxy_call)
        .delete(proxy_call)
        .head(proxy_call)
        .options(proxy_call);
    Router::new().route("/tenants/{id}/proxy/{*path}", call)
}

async fn proxy_call(
    State(state): State<AppState>,
    caller: Caller,
    request_id: RequestId,
    request: Request,
) -> Result<Response> {
    let (parts, body) = request.into_parts();
    // `/tenants/{id}/proxy/{path}` as received, still percent-encoded.
    let (raw_id, raw_path) = parts
        .uri
        .path()
        .strip_prefix("/tenants/")
        .and_then(|rest| rest.split_once("/proxy/"))
        .ok_or_else(|| ApiError::NotFound("no such endpoint".to_owned()))?;
    let current = TenantId::parse(raw_id)
        .ok()
        .and_then(|id| state.vendor.registry().uid_of(&id));
    caller.require_proxy_access(raw_id, current)?;
    let tenant = path_tenant_id(raw_id)?;
    let path = ProxyPath::parse(raw_path)
        .map_err(|problem| ApiError::BadRequest(format!("the proxied path {problem}")))?;
    let call = ProxyCall {
        tenant,
        method: parts.method,
        path,
        query: parts.uri.query().map(str::to_owned),
        headers: parts.headers,
        body,
        request_id: request_id.0.unwrap_or_default(),
        caller: caller.id().to_owned(),
    };
    state
        .proxy
        .forward(call)
        .await
        .map_err(|error| match error {
            ProxyError::Token(error) => error.into(),
            ProxyError::Unreachable(cause) => ApiError::ApiUnreachable(cause),
            ProxyError::Timeout => ApiError::ApiTimeout,
            ProxyError::TooLarge => ApiError::PayloadTooLarge {
                limit: MAX_BODY as usize,
            },
            ProxyError::Unreadable => {
                ApiError::BadRequest("the request body could not be read".to_owned())
            }
            ProxyError::SlowBody => ApiError::BadRequest(
                "the request body did not arrive within TOKENVEND_PROXY_TIMEOUT".to_owned(),
            ),
        })
}
