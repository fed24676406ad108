//! The HTTP side: the token endpoint at both edX paths, the JWKS endpoint, and the exact
//! answers (successes, OAuth errors, imitated edX failures) they send.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::{Json, Router};
use rand::distributions::{Alphanumeric, DistString};
use serde_json::{json, Value};
use tokio::sync::watch;

use crate::behaviour::{ClientBehaviour, ExpiresInFormat, Failure};
use crate::jwt::{self, Grant};
use crate::IssuerCore;

/// How long [`Failure::Hang`] keeps a request waiting.
const HANG_FOR: Duration = Duration::from_secs(3600);

/// The handlers' state: the issuer, and the signal that its server is going away.
#[derive(Clone)]
pub(crate) struct IssuerState {
    pub(crate) core: Arc<IssuerCore>,
    /// `None` for a bare [`crate::Issuer::router`], which nothing stops.
    shutdown: Option<watch::Receiver<()>>,
}

impl IssuerState {
    /// Sleeps for `duration`; `false` if the serving [`RunningIssuer`](crate::RunningIssuer)
    /// was dropped first.
    pub(crate) async fn pause(&self, duration: Duration) -> bool {
        if duration.is_zero() {
            return true;
        }
        match &self.shutdown {
            None => {
                tokio::time::sleep(duration).await;
                true
            }
            Some(shutdown) => {
                let mut shutdown = shutdown.clone();
                tokio::select! {
                    () = tokio::time::sleep(duration) => true,
                    _ = shutdown.changed() => false,
                }
            }
        }
    }
}

/// Both edX token paths (same handler) and the JWKS document.
pub(crate) fn router(core: Arc<IssuerCore>, shutdown: Option<watch::Receiver<()>>) -> Router {
    Router::new()
        .route("/oauth2/access_token", post(token_endpoint))
        .route("/oauth2/v1/access_token", post(token_endpoint))
        .route("/oauth2/jwks.json", get(jwks_endpoint))
        .route("/api/{*rest}", any(crate::api::api_endpoint))
        .with_state(IssuerState { core, shutdown })
}

async fn jwks_endpoint(State(app): State<IssuerState>) -> Response {
    Json(jwt::jwks(*app.core.publishing.lock())).into_response()
}

async fn token_endpoint(
    State(app): State<IssuerState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    // Count and record first, whatever happens next.
    // serde_urlencoded decodes lossily, so a body that is not UTF-8 is refused up front.
    let form = std::str::from_utf8(&body)
        .ok()
        .and_then(|body| serde_urlencoded::from_str::<Vec<(String, String)>>(body).ok());
    let traceparent = headers
        .get("traceparent")
        .and_then(|value| value.to_str().ok());
    let client = app.core.record(form.as_deref(), traceparent);
    tracing::debug!(
        client_id = form.as_deref().and_then(|f| field(f, "client_id")),
        "local issuer: token request"
    );
    let offset = client
        .as_ref()
        .map_or_else(chrono::TimeDelta::zero, |(behaviour, _)| behaviour.clock_offset);
    let mut response = answer(&app, &headers, form, client).await;
    // The issuer's clock, not the system's (which hyper would write): a test's edX keeps
    // the test's time, skewed as told.
    let date = ((app.core.now)() + offset)
        .format("%a, %d %b %Y %H:%M:%S GMT")
        .to_string();
    if let Ok(date) = HeaderValue::from_str(&date) {
        response.headers_mut().insert(header::DATE, date);
    }
    response
}

/// The answer to a token request (`client`: its registered client, if any).
async fn answer(
    app: &IssuerState,
    headers: &HeaderMap,
    form: Option<Vec<(String, String)>>,
    client: Option<(ClientBehaviour, String)>,
) -> Response {
    let Some(form) = form else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "malformed form body",
        );
    };

    if let Some((behaviour, _)) = &client {
        if !app.pause(behaviour.latency).await {
            return shutting_down();
        }
        if let Some(failure) = &behaviour.failure {
            return failure_response(app, failure).await;
        }
    }

    if !is_form_urlencoded(headers) {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "the body must be application/x-www-form-urlencoded",
        );
    }
    // oauthlib refuses repeated OAuth parameters.
    for name in [
        "grant_type",
        "client_id",
        "client_secret",
        "scope",
        "token_type",
    ] {
        if form.iter().filter(|(k, _)| k == name).count() > 1 {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                &format!("duplicate {name} parameter"),
            );
        }
    }
    if field(&form, "grant_type") != Some("client_credentials") {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "only client_credentials is supported",
        );
    }
    let (Some(client_id), Some(secret)) = (
        field(&form, "client_id").filter(|v| !v.is_empty()),
        field(&form, "client_secret").filter(|v| !v.is_empty()),
    ) else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "client_id and client_secret are required",
        );
    };
    let behaviour = match client {
        Some((behaviour, expected)) if !expected.is_empty() && expected == secret => behaviour,
        _ => return invalid_client(),
    };

    let allowed: Vec<&str> = behaviour.scope.split_whitespace().collect();
    let scopes: Vec<&str> = match field(&form, "scope").filter(|s| !s.trim().is_empty()) {
        Some(requested) => {
            let requested: Vec<&str> = requested.split_whitespace().collect();
            if let Some(bad) = requested.iter().find(|s| !allowed.contains(s)) {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_scope",
                    &format!("scope {bad:?} is not allowed for this client"),
                );
            }
            requested
        }
        None => allowed,
    };
    let scope = scopes.join(" ");

    let wants_jwt = field(&form, "token_type").is_some_and(|t| t.eq_ignore_ascii_case("jwt"));
    let (access_token, token_type) = if wants_jwt {
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .filter(|h| !h.is_empty())
            .unwrap_or("localhost");
        let grant = Grant {
            client_id,
            host,
            scopes: &scopes,
            iat: ((app.core.now)() + behaviour.clock_offset).timestamp(),
            lifetime: behaviour.lifetime,
        };
        match jwt::sign(&app.core.key, *app.core.publishing.lock(), &grant) {
            Ok(jwt) => (jwt, "JWT"),
            Err(error) => {
                tracing::error!(%error, "local issuer could not sign a JWT");
                return oauth_error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "server_error",
                    "signing failed",
                );
            }
        }
    } else {
        (
            Alphanumeric.sample_string(&mut rand::thread_rng(), 40),
            "Bearer",
        )
    };

    let expires_at = (app.core.now)()
        + chrono::Duration::from_std(behaviour.lifetime).unwrap_or(chrono::Duration::MAX);
    app.core
        .api
        .lock()
        .issue(&access_token, client_id, expires_at);
    let mut answer = json!({
        "access_token": access_token,
        "token_type": token_type,
        "scope": scope,
    });
    let secs = behaviour.lifetime.as_secs();
    let expires_in = match behaviour.expires_in {
        ExpiresInFormat::Integer => Some(json!(secs)),
        ExpiresInFormat::String => Some(json!(secs.to_string())),
        // Precision loss only above 2^53 seconds.
        #[allow(clippy::cast_precision_loss)]
        ExpiresInFormat::Float => Some(json!(secs as f64)),
        ExpiresInFormat::Missing => None,
    };
    if let (Some(expires_in), Some(object)) = (expires_in, answer.as_object_mut()) {
        object.insert("expires_in".to_owned(), expires_in);
    }
    json_response(StatusCode::OK, &answer)
}

/// The value of the first field named `name`.
pub(crate) fn field<'a>(form: &'a [(String, String)], name: &str) -> Option<&'a str> {
    form.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn is_form_urlencoded(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|mime| {
            mime.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        })
}

async fn failure_response(app: &IssuerState, failure: &Failure) -> Response {
    match failure {
        Failure::ServerError => html(
            StatusCode::INTERNAL_SERVER_ERROR,
            "<h1>Server Error (500)</h1>",
        ),
        Failure::Unavailable => html(
            StatusCode::SERVICE_UNAVAILABLE,
            "<html><head><title>503 Service Temporarily Unavailable</title></head>             <body><h1>503 Service Temporarily Unavailable</h1></body></html>",
        ),
        Failure::RateLimited { retry_after_secs } => {
            let mut response = json_response(
                StatusCode::TOO_MANY_REQUESTS,
                &json!({
                    "error": "rate_limited",
                    "detail": format!(
                        "Request was throttled. Expected available in {retry_after_secs} seconds."
                    ),
                }),
            );
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_secs));
            response
        }
        Failure::ForbiddenHtml => html(
            StatusCode::FORBIDDEN,
            "<!DOCTYPE html><html><head><title>403 Forbidden</title></head><body>             <h1>Forbidden</h1><p>You don't have permission to access this resource.</p>             </body></html>",
        ),
        Failure::InvalidClient => invalid_client(),
        Failure::InvalidScope => oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            "the requested scope is invalid",
        ),
        Failure::Garbage => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            "<html><body>Gateway says hello. This is not JSON.</body></html>",
        )
            .into_response(),
        Failure::ErrorIn200 => json_response(
            StatusCode::OK,
            &json!({
                "error": "server_error",
                "error_description": "The authorization server encountered an unexpected condition.",
            }),
        ),
        Failure::Hang => {
            // Either way the caller has long given up; ends early only on shutdown.
            let _ = app.pause(HANG_FOR).await;
            shutting_down()
        }
    }
}

fn invalid_client() -> Response {
    oauth_error(
        StatusCode::UNAUTHORIZED,
        "invalid_client",
        "client authentication failed",
    )
}

fn shutting_down() -> Response {
    oauth_error(
        StatusCode::SERVICE_UNAVAILABLE,
        "temporarily_unavailable",
        "the local issuer is shutting down",
    )
}

fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    json_response(
        status,
        &json!({ "error": error, "error_description": description }),
    )
}

/// A JSON answer with the cache headers django-oauth-toolkit sends on the token endpoint.
fn json_response(status: StatusCode, body: &Value) -> Response {
    (
        status,
        [
            (header::CACHE_CONTROL, "no-store"),
            (header::PRAGMA, "no-cache"),
        ],
        Json(body),
    )
        .into_response()
}

fn html(status: StatusCode, body: &'static str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        body,
    )
        .into_response()
}
