//! A local edX-like OAuth2 issuer: a client-credentials token endpoint and a JWKS document
//! that imitate edX's LMS closely enough for tokenvend's tests, benchmarks and demo, so that
//! nothing but production ever talks to the real edX.
//!
//! What it imitates (see DESIGN.md, "The upstream: edX OAuth2 client-credentials"):
//!
//! - `POST /oauth2/access_token` (Open edX) and `POST /oauth2/v1/access_token` (api.edx.org),
//!   same handler: an `application/x-www-form-urlencoded` body with `grant_type`,
//!   `client_id`, `client_secret`, optional `scope`, `token_type` and `asymmetric_jwt`.
//! - `token_type=jwt` gives an RS256 JWT with edX's claims; anything else gives an opaque
//!   40-character bearer token. `expires_in` can be sent as an integer, a numeric string,
//!   a float, or left out, per client.
//! - Every edX failure mode tokenvend must survive can be switched on per client
//!   ([`Failure`]), plus an artificial latency.
//! - `GET /oauth2/jwks.json` publishes the public half of the signing key.
//!
//! Every token request is counted and its form recorded before anything else happens, so
//! tests can assert how frugal tokenvend is with upstream calls, failures included.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rand::distributions::{Alphanumeric, DistString};
use serde::Serialize;
use serde_json::{json, Value};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::clock::Clock;

/// The issuer's RSA signing key (PKCS#1 PEM, 2048 bits).
///
/// This is a PUBLIC TEST KEY for the local issuer only. It is committed to the repository on
/// purpose and never protects anything: a token it signs proves nothing outside tests.
const SIGNING_KEY_PEM: &str = include_str!("issuer_test_key.pem");

/// The `kid` of the signing key, in every JWT header and in the JWKS.
pub const KEY_ID: &str = "tokenvend-local-issuer";

/// The `aud` claim edX puts in its JWTs by default.
pub const AUDIENCE: &str = "lms-key";

/// RSA modulus of [`SIGNING_KEY_PEM`], base64url without padding (checked by a test).
const JWK_N: &str = "1VkJ_H2ZTajzdbVYyAnCQ_KTcAWSTAnsh-tWkckkw5-Yyelwh1QAy_C_bZTzhxFg2vxR4gxwf1Bt6MviFailZcoUXkv9PDxvAlLwoAUaZlu8Axuqg0IuShOCQ9cczUpQllBgmIePK5z2Ibkq_gqxadqfm7eCncwbwIq6qO-sAlpFMz759UEyl715E7_1qnZQYXFh8fYqG4rZ1gp001DgcvrqWNjz2isodkVjowmeytirOW0HrA4j3WTjVD4qSAvnLtASBAwsWGzz3V29GsBysjSP-nxzhqXF5_-hTGSZK2bjppTrTLYN8NsOzh6tebTuyxigz4iQUvWfFETBlvOdbQ";

/// RSA public exponent of [`SIGNING_KEY_PEM`] (65537), base64url without padding.
const JWK_E: &str = "AQAB";

/// The JWT `version` claim edX currently sends.
const JWT_VERSION: &str = "1.2.0";

/// How long [`Failure::Hang`] keeps a request waiting.
const HANG_FOR: Duration = Duration::from_secs(3600);

/// How a registered client's token requests are answered.
#[derive(Debug, Clone)]
pub struct ClientBehaviour {
    /// Token lifetime: `expires_in`, and `exp - iat` in JWTs. Default 3600 s.
    pub lifetime: Duration,
    /// How `expires_in` is written in the answer. Default [`ExpiresInFormat::Integer`].
    pub expires_in: ExpiresInFormat,
    /// Waited before every answer to this client (successes and failures alike). Default 0.
    pub latency: Duration,
    /// When set, every request naming this client gets this failure (after `latency`),
    /// before the grant type or the secret are even looked at. Default `None`.
    pub failure: Option<Failure>,
    /// The scopes the client is allowed, space-separated: answered when the request names
    /// no `scope`; a requested scope outside this set gets `400 invalid_scope`, as on edX.
    /// Default `"read write profile email"`.
    pub scope: String,
}

impl Default for ClientBehaviour {
    fn default() -> Self {
        Self {
            lifetime: Duration::from_secs(3600),
            expires_in: ExpiresInFormat::Integer,
            latency: Duration::ZERO,
            failure: None,
            scope: "read write profile email".to_owned(),
        }
    }
}

/// How `expires_in` appears in a successful answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpiresInFormat {
    /// `"expires_in": 3600`
    Integer,
    /// `"expires_in": "3600"`
    String,
    /// `"expires_in": 3600.0`
    Float,
    /// No `expires_in` field at all.
    Missing,
}

/// A failure the issuer can be told to answer with, per client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// `500` with Django's small HTML error page.
    ServerError,
    /// `503` with a small HTML page (a load balancer with no healthy LMS behind it).
    Unavailable,
    /// `429` with `Retry-After: <retry_after_secs>` and a JSON body
    /// `{"error": "rate_limited", "detail": "Request was throttled. ..."}`.
    RateLimited { retry_after_secs: u64 },
    /// A bare `403` with an HTML body: edX's own rate limiter. Throttling, not a rejected
    /// credential.
    ForbiddenHtml,
    /// `401 {"error": "invalid_client"}`, whatever the secret.
    InvalidClient,
    /// `400 {"error": "invalid_scope"}`, whatever the scope.
    InvalidScope,
    /// `200` whose body is not JSON (although it claims to be `application/json`).
    Garbage,
    /// `200 {"error": "server_error", "error_description": ...}`: an error without an error
    /// status.
    ErrorIn200,
    /// Never answers (waits an hour; ends early, with a 503, when the [`RunningIssuer`]
    /// serving it is dropped).
    Hang,
}

/// A local edX-like OAuth2 issuer. Cheap to clone: clones share clients and counters.
#[derive(Clone)]
pub struct Issuer {
    inner: Arc<Inner>,
}

struct Inner {
    clock: Arc<dyn Clock>,
    key: EncodingKey,
    state: Mutex<IssuerState>,
}

#[derive(Default)]
struct IssuerState {
    clients: HashMap<String, Client>,
    /// Per `client_id` named in a request, registered or not.
    calls: HashMap<String, CallRecord>,
    total_calls: u64,
}

struct Client {
    secret: String,
    behaviour: ClientBehaviour,
}

#[derive(Default)]
struct CallRecord {
    calls: u64,
    last_form: Vec<(String, String)>,
}

impl std::fmt::Debug for Issuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issuer")
            .field("total_calls", &self.total_calls())
            .finish_non_exhaustive()
    }
}

impl Issuer {
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        // The PEM is a constant compiled into the binary, and a test parses it: failing here
        // is a build defect, not bad input.
        #[allow(clippy::expect_used)]
        let key = EncodingKey::from_rsa_pem(SIGNING_KEY_PEM.as_bytes())
            .expect("the embedded issuer test key is a valid RSA PEM");
        Self {
            inner: Arc::new(Inner {
                clock,
                key,
                state: Mutex::new(IssuerState::default()),
            }),
        }
    }

    /// Routes: `POST /oauth2/access_token` and `POST /oauth2/v1/access_token` (both edX
    /// paths, same handler), `GET /oauth2/jwks.json`.
    pub fn router(&self) -> Router {
        self.router_with(None)
    }

    fn router_with(&self, shutdown: Option<watch::Receiver<()>>) -> Router {
        let state = AppState {
            inner: Arc::clone(&self.inner),
            shutdown,
        };
        Router::new()
            .route("/oauth2/access_token", post(token_endpoint))
            .route("/oauth2/v1/access_token", post(token_endpoint))
            .route("/oauth2/jwks.json", get(jwks_endpoint))
            .with_state(state)
    }

    /// Binds `127.0.0.1:0` and serves in a spawned tokio task, until the returned
    /// [`RunningIssuer`] is dropped.
    pub async fn start(&self) -> std::io::Result<RunningIssuer> {
        let listener = tokio::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let (shutdown_tx, shutdown_rx) = watch::channel(());
        let router = self.router_with(Some(shutdown_rx));
        let task = tokio::spawn(async move {
            if let Err(error) = axum::serve(listener, router).await {
                tracing::warn!(%error, "local issuer stopped serving");
            }
        });
        tracing::debug!(%addr, "local issuer listening");
        Ok(RunningIssuer {
            addr,
            task,
            _shutdown: shutdown_tx,
        })
    }

    /// Registers a client, or replaces the secret of an existing one; an existing client keeps
    /// its behaviour, a new one gets [`ClientBehaviour::default()`].
    pub fn register(&self, client_id: &str, client_secret: &str) {
        let mut state = self.inner.lock();
        match state.clients.get_mut(client_id) {
            Some(client) => client.secret = client_secret.to_owned(),
            None => {
                state.clients.insert(
                    client_id.to_owned(),
                    Client {
                        secret: client_secret.to_owned(),
                        behaviour: ClientBehaviour::default(),
                    },
                );
            }
        }
    }

    /// Changes a client's behaviour. Never panics: an unknown client is registered with an
    /// empty secret, which no request can match (an empty `client_secret` is answered
    /// `400 invalid_request`), so until [`Issuer::register`] gives it a secret only its
    /// `failure` and `latency` matter. `configure` and `register` can come in either order.
    pub fn configure(&self, client_id: &str, f: impl FnOnce(&mut ClientBehaviour)) {
        let mut state = self.inner.lock();
        let client = state
            .clients
            .entry(client_id.to_owned())
            .or_insert_with(|| Client {
                secret: String::new(),
                behaviour: ClientBehaviour::default(),
            });
        f(&mut client.behaviour);
    }

    /// Token requests received that named this `client_id` in their form (any outcome,
    /// including rejected ones).
    pub fn calls(&self, client_id: &str) -> u64 {
        self.inner
            .lock()
            .calls
            .get(client_id)
            .map_or(0, |record| record.calls)
    }

    /// All token requests received, including those whose body could not be parsed.
    pub fn total_calls(&self) -> u64 {
        self.inner.lock().total_calls
    }

    /// The form fields of the last token request that named this `client_id`, in the order
    /// received.
    pub fn last_form(&self, client_id: &str) -> Option<Vec<(String, String)>> {
        self.inner
            .lock()
            .calls
            .get(client_id)
            .map(|record| record.last_form.clone())
    }

    /// The JWKS document published at `GET /oauth2/jwks.json`.
    pub fn jwks(&self) -> Value {
        json!({
            "keys": [{
                "kty": "RSA",
                "use": "sig",
                "alg": "RS256",
                "kid": KEY_ID,
                "n": JWK_N,
                "e": JWK_E,
            }]
        })
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, IssuerState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts a token request and records its form; returns the named client's behaviour
    /// and secret if it is registered.
    fn record(&self, form: Option<&[(String, String)]>) -> Option<(ClientBehaviour, String)> {
        let mut state = self.lock();
        state.total_calls += 1;
        let form = form?;
        let client_id = field(form, "client_id")?;
        let record = state.calls.entry(client_id.to_owned()).or_default();
        record.calls += 1;
        record.last_form = form.to_vec();
        state
            .clients
            .get(client_id)
            .map(|client| (client.behaviour.clone(), client.secret.clone()))
    }
}

/// A served [`Issuer`]. Dropping it stops the server: no new connections, idle keep-alive
/// connections are closed, and requests waiting on `latency` or [`Failure::Hang`] are cut
/// short with a 503.
#[derive(Debug)]
pub struct RunningIssuer {
    pub addr: SocketAddr,
    task: JoinHandle<()>,
    /// Dropped with the `RunningIssuer`, which wakes the handlers that are waiting.
    _shutdown: watch::Sender<()>,
}

impl RunningIssuer {
    /// `http://{addr}/oauth2/access_token` (the Open edX path).
    pub fn token_url(&self) -> String {
        format!("http://{}/oauth2/access_token", self.addr)
    }

    /// `http://{addr}/oauth2/v1/access_token` (the api.edx.org path).
    pub fn v1_token_url(&self) -> String {
        format!("http://{}/oauth2/v1/access_token", self.addr)
    }

    /// `http://{addr}/oauth2/jwks.json`
    pub fn jwks_url(&self) -> String {
        format!("http://{}/oauth2/jwks.json", self.addr)
    }
}

impl Drop for RunningIssuer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[derive(Clone)]
struct AppState {
    inner: Arc<Inner>,
    shutdown: Option<watch::Receiver<()>>,
}

impl AppState {
    /// Sleeps for `duration`; `false` if the serving [`RunningIssuer`] was dropped first.
    async fn pause(&self, duration: Duration) -> bool {
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

/// The JWT claims edX puts in a client-credentials token.
#[derive(Serialize)]
struct Claims<'a> {
    iss: String,
    aud: &'static str,
    iat: i64,
    exp: i64,
    sub: String,
    preferred_username: String,
    scopes: Vec<&'a str>,
    version: &'static str,
    filters: [&'static str; 0],
    is_restricted: bool,
    email_verified: bool,
    grant_type: &'static str,
    jti: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    email: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    administrator: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user_id: Option<u64>,
}

async fn jwks_endpoint(State(app): State<AppState>) -> Response {
    let jwks = Issuer {
        inner: Arc::clone(&app.inner),
    }
    .jwks();
    Json(jwks).into_response()
}

async fn token_endpoint(State(app): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    // Count and record first, whatever happens next.
    // serde_urlencoded decodes lossily, so a body that is not UTF-8 is refused up front.
    let form = std::str::from_utf8(&body)
        .ok()
        .and_then(|body| serde_urlencoded::from_str::<Vec<(String, String)>>(body).ok());
    let client = app.inner.record(form.as_deref());
    tracing::debug!(
        client_id = form.as_deref().and_then(|f| field(f, "client_id")),
        "local issuer: token request"
    );

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
            return failure_response(&app, failure).await;
        }
    }

    if !is_form_urlencoded(&headers) {
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
        match sign_jwt(&app.inner, client_id, host, &scopes, behaviour.lifetime) {
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

fn sign_jwt(
    inner: &Inner,
    client_id: &str,
    host: &str,
    scopes: &[&str],
    lifetime: Duration,
) -> jsonwebtoken::errors::Result<String> {
    let iat = inner.clock.now().timestamp();
    let lifetime = i64::try_from(lifetime.as_secs()).unwrap_or(i64::MAX);
    let username = format!("{client_id}-worker");
    let has = |scope: &str| scopes.contains(&scope);
    let claims = Claims {
        iss: format!("http://{host}/oauth2"),
        aud: AUDIENCE,
        iat,
        exp: iat.saturating_add(lifetime),
        sub: stable_subject(client_id),
        scopes: scopes.to_vec(),
        version: JWT_VERSION,
        filters: [],
        is_restricted: false,
        email_verified: false,
        grant_type: "client-credentials",
        jti: uuid::Uuid::new_v4().to_string(),
        email: has("email").then(|| format!("{username}@example.invalid")),
        name: has("profile").then(String::new),
        administrator: has("profile").then_some(false),
        user_id: has("user_id").then(|| stable_user_id(client_id)),
        preferred_username: username,
    };
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(KEY_ID.to_owned());
    jsonwebtoken::encode(&header, &claims, &inner.key)
}

/// FNV-1a, 128 bits: stable across builds and platforms (unlike std's hasher).
fn fnv1a_128(bytes: &[u8]) -> u128 {
    const OFFSET: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
    const PRIME: u128 = 0x0000_0000_0100_0000_0000_0000_0000_013b;
    bytes.iter().fold(OFFSET, |hash, &b| {
        (hash ^ u128::from(b)).wrapping_mul(PRIME)
    })
}

/// A `sub` like edX's anonymous user ids: 32 hex digits, stable per client.
fn stable_subject(client_id: &str) -> String {
    format!("{:032x}", fnv1a_128(client_id.as_bytes()))
}

/// A `user_id` stable per client, in edX's range of small positive integers.
fn stable_user_id(client_id: &str) -> u64 {
    (fnv1a_128(client_id.as_bytes()) % 9_000_000) as u64 + 1_000_000
}

/// The value of the first field named `name`.
fn field<'a>(form: &'a [(String, String)], name: &str) -> Option<&'a str> {
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

async fn failure_response(app: &AppState, failure: &Failure) -> Response {
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

#[cfg(test)]
mod tests {
    #![allow(clippy::expect_used, clippy::unwrap_used)]

    use std::time::Instant;

    use jsonwebtoken::jwk::{Jwk, JwkSet};
    use jsonwebtoken::{DecodingKey, Validation};
    use serde_json::Value;

    use super::*;
    use crate::clock::ManualClock;

    const ID: &str = "tenant-a";
    const SECRET: &str = "s3cret";

    async fn setup() -> (Issuer, RunningIssuer, Arc<ManualClock>) {
        let clock = Arc::new(ManualClock::starting_now());
        let issuer = Issuer::new(clock.clone());
        issuer.register(ID, SECRET);
        let running = issuer.start().await.expect("issuer starts");
        (issuer, running, clock)
    }

    fn client() -> reqwest::Client {
        reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client")
    }

    fn creds<'a>(extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
        let mut form = vec![
            ("grant_type", "client_credentials"),
            ("client_id", ID),
            ("client_secret", SECRET),
        ];
        form.extend_from_slice(extra);
        form
    }

    async fn post(url: &str, form: &[(&str, &str)]) -> (StatusCode, HeaderMap, String) {
        let response = client().post(url).form(form).send().await.expect("answer");
        let status = StatusCode::from_u16(response.status().as_u16()).expect("status");
        let headers = response.headers().clone();
        (status, headers, response.text().await.expect("body"))
    }

    async fn post_json(url: &str, form: &[(&str, &str)]) -> (StatusCode, Value) {
        let (status, _, body) = post(url, form).await;
        (status, serde_json::from_str(&body).expect("JSON body"))
    }

    async fn decoding_key(running: &RunningIssuer) -> DecodingKey {
        let jwks: JwkSet = client()
            .get(running.jwks_url())
            .send()
            .await
            .expect("jwks answer")
            .json()
            .await
            .expect("jwks JSON");
        DecodingKey::from_jwk(jwks.find(KEY_ID).expect("kid published")).expect("usable jwk")
    }

    fn validation(running: &RunningIssuer) -> Validation {
        let mut validation = Validation::new(Algorithm::RS256);
        validation.set_audience(&[AUDIENCE]);
        validation.set_issuer(&[format!("http://{}/oauth2", running.addr)]);
        validation.set_required_spec_claims(&["exp", "iat", "aud", "iss", "sub"]);
        validation
    }

    #[tokio::test]
    async fn issues_verifiable_jwts_at_both_paths() {
        let (issuer, running, clock) = setup().await;
        let key = decoding_key(&running).await;
        let mut tokens = Vec::new();
        for url in [running.token_url(), running.v1_token_url()] {
            let (status, body) = post_json(&url, &creds(&[("token_type", "jwt")])).await;
            assert_eq!(status, StatusCode::OK, "{body}");
            assert_eq!(body["token_type"], "JWT");
            assert_eq!(body["expires_in"], 3600);
            assert_eq!(body["scope"], "read write profile email");
            let jwt = body["access_token"].as_str().expect("token").to_owned();

            let data = jsonwebtoken::decode::<Value>(&jwt, &key, &validation(&running))
                .expect("signature and claims verify");
            assert_eq!(data.header.kid.as_deref(), Some(KEY_ID));
            assert_eq!(data.header.alg, Algorithm::RS256);
            let c = data.claims;
            let iat = clock.now().timestamp();
            assert_eq!(c["iat"], iat);
            assert_eq!(c["exp"], iat + 3600);
            assert_eq!(c["aud"], "lms-key");
            assert_eq!(c["sub"], stable_subject(ID));
            assert_eq!(c["sub"].as_str().map(str::len), Some(32));
            assert_eq!(c["preferred_username"], "tenant-a-worker");
            assert_eq!(c["scopes"], json!(["read", "write", "profile", "email"]));
            assert_eq!(c["version"], "1.2.0");
            assert_eq!(c["filters"], json!([]));
            assert_eq!(c["is_restricted"], false);
            assert_eq!(c["email_verified"], false);
            assert_eq!(c["grant_type"], "client-credentials");
            assert!(uuid::Uuid::parse_str(c["jti"].as_str().expect("jti")).is_ok());
            tokens.push(jwt);
        }
        // Same second, same client: still two different tokens.
        assert_ne!(tokens[0], tokens[1]);
        assert_eq!(issuer.calls(ID), 2);
    }

    #[tokio::test]
    async fn jwt_honours_lifetime_requested_scope_and_asymmetric_flag() {
        let (issuer, running, clock) = setup().await;
        issuer.configure(ID, |b| {
            b.lifetime = Duration::from_secs(30);
            b.scope = "read write user_id".to_owned();
        });
        let form = creds(&[
            ("token_type", "JWT"),
            ("asymmetric_jwt", "true"),
            ("scope", "read user_id"),
        ]);
        let (status, body) = post_json(&running.token_url(), &form).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["expires_in"], 30);
        assert_eq!(body["scope"], "read user_id");
        let jwt = body["access_token"].as_str().expect("token");
        let claims = jsonwebtoken::decode::<Value>(
            jwt,
            &decoding_key(&running).await,
            &validation(&running),
        )
        .expect("verifies")
        .claims;
        assert_eq!(claims["exp"], clock.now().timestamp() + 30);
        assert_eq!(claims["scopes"], json!(["read", "user_id"]));
        assert!(claims["user_id"].is_u64());

        let form = creds(&[("token_type", "jwt"), ("scope", "read admin")]);
        let (status, body) = post_json(&running.token_url(), &form).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(body["error"], "invalid_scope");
    }

    #[test]
    fn published_jwk_matches_the_signing_key() {
        let issuer = Issuer::new(Arc::new(ManualClock::starting_now()));
        let derived = Jwk::from_encoding_key(&issuer.inner.key, Algorithm::RS256).expect("jwk");
        let derived = serde_json::to_value(derived).expect("serialise");
        assert_eq!(derived["n"], JWK_N);
        assert_eq!(derived["e"], JWK_E);
        let published = &issuer.jwks()["keys"][0];
        for (k, v) in [
            ("kty", "RSA"),
            ("use", "sig"),
            ("alg", "RS256"),
            ("kid", KEY_ID),
        ] {
            assert_eq!(published[k], v);
        }
    }

    #[tokio::test]
    async fn jwks_endpoint_serves_the_document() {
        let (issuer, running, _) = setup().await;
        let body: Value = client()
            .get(running.jwks_url())
            .send()
            .await
            .expect("answer")
            .json()
            .await
            .expect("JSON");
        assert_eq!(body, issuer.jwks());
        assert_eq!(issuer.total_calls(), 0, "JWKS fetches are not token calls");
    }

    #[tokio::test]
    async fn expires_in_formats() {
        let (issuer, running, _) = setup().await;
        for (format, expected) in [
            (ExpiresInFormat::Integer, Some(json!(3600))),
            (ExpiresInFormat::String, Some(json!("3600"))),
            (ExpiresInFormat::Float, Some(json!(3600.0))),
            (ExpiresInFormat::Missing, None),
        ] {
            issuer.configure(ID, |b| b.expires_in = format);
            let (status, _, raw) = post(&running.token_url(), &creds(&[])).await;
            assert_eq!(status, StatusCode::OK);
            let body: Value = serde_json::from_str(&raw).expect("JSON");
            assert_eq!(body.get("expires_in"), expected.as_ref(), "{format:?}");
            if format == ExpiresInFormat::Float {
                assert!(raw.contains("3600.0"), "{raw}");
            }
        }
    }

    #[tokio::test]
    async fn opaque_bearer_tokens() {
        let (_issuer, running, _) = setup().await;
        let mut seen = Vec::new();
        for extra in [
            vec![],
            vec![("token_type", "bearer")],
            vec![("token_type", "mac")],
        ] {
            let (status, headers, raw) = post(&running.token_url(), &creds(&extra)).await;
            assert_eq!(status, StatusCode::OK);
            assert_eq!(headers[header::CACHE_CONTROL], "no-store");
            let body: Value = serde_json::from_str(&raw).expect("JSON");
            assert_eq!(body["token_type"], "Bearer");
            assert_eq!(body["expires_in"], 3600);
            assert_eq!(body["scope"], "read write profile email");
            let token = body["access_token"].as_str().expect("token").to_owned();
            assert_eq!(token.len(), 40);
            assert!(token.chars().all(|c| c.is_ascii_alphanumeric()));
            assert!(!seen.contains(&token));
            seen.push(token);
        }
    }

    #[tokio::test]
    async fn failure_variants() {
        let (issuer, running, _) = setup().await;
        let cases: Vec<(Failure, StatusCode)> = vec![
            (Failure::ServerError, StatusCode::INTERNAL_SERVER_ERROR),
            (Failure::Unavailable, StatusCode::SERVICE_UNAVAILABLE),
            (
                Failure::RateLimited {
                    retry_after_secs: 7,
                },
                StatusCode::TOO_MANY_REQUESTS,
            ),
            (Failure::ForbiddenHtml, StatusCode::FORBIDDEN),
            (Failure::InvalidClient, StatusCode::UNAUTHORIZED),
            (Failure::InvalidScope, StatusCode::BAD_REQUEST),
            (Failure::Garbage, StatusCode::OK),
            (Failure::ErrorIn200, StatusCode::OK),
        ];
        for (n, (failure, expected_status)) in cases.into_iter().enumerate() {
            issuer.configure(ID, |b| b.failure = Some(failure.clone()));
            let (status, headers, raw) =
                post(&running.token_url(), &creds(&[("token_type", "jwt")])).await;
            assert_eq!(status, expected_status, "{failure:?}");
            assert_eq!(issuer.calls(ID), n as u64 + 1, "{failure:?} is counted");
            let content_type = headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            let json = serde_json::from_str::<Value>(&raw).ok();
            match &failure {
                Failure::ServerError | Failure::Unavailable | Failure::ForbiddenHtml => {
                    assert!(content_type.starts_with("text/html"), "{failure:?}");
                    assert!(json.is_none() && raw.contains("<h1>"), "{failure:?}: {raw}");
                }
                Failure::RateLimited { .. } => {
                    assert_eq!(headers[header::RETRY_AFTER], "7");
                    assert_eq!(json.expect("JSON")["error"], "rate_limited");
                }
                Failure::InvalidClient => {
                    assert_eq!(json.expect("JSON")["error"], "invalid_client");
                }
                Failure::InvalidScope => {
                    assert_eq!(json.expect("JSON")["error"], "invalid_scope");
                }
                Failure::Garbage => assert!(json.is_none() && !raw.is_empty()),
                Failure::ErrorIn200 => {
                    let json = json.expect("JSON");
                    assert_eq!(json["error"], "server_error");
                    assert!(json["error_description"].is_string());
                    assert!(json.get("access_token").is_none());
                }
                Failure::Hang => unreachable!(),
            }
        }
        // Failures apply before the secret is checked.
        issuer.configure(ID, |b| b.failure = Some(Failure::Unavailable));
        let form = [
            ("grant_type", "client_credentials"),
            ("client_id", ID),
            ("client_secret", "wrong"),
        ];
        assert_eq!(
            post(&running.token_url(), &form).await.0,
            StatusCode::SERVICE_UNAVAILABLE
        );
    }

    #[tokio::test]
    async fn hang_never_answers() {
        let (issuer, running, _) = setup().await;
        issuer.configure(ID, |b| b.failure = Some(Failure::Hang));
        let started = Instant::now();
        let result = client()
            .post(running.token_url())
            .form(&creds(&[]))
            .timeout(Duration::from_millis(200))
            .send()
            .await;
        let error = result.expect_err("no answer");
        assert!(error.is_timeout(), "{error}");
        assert!(started.elapsed() >= Duration::from_millis(200));
        assert_eq!(issuer.calls(ID), 1);
    }

    #[tokio::test]
    async fn rejects_bad_credentials_and_counts_them() {
        let (issuer, running, _) = setup().await;
        let wrong = [
            ("grant_type", "client_credentials"),
            ("client_id", ID),
            ("client_secret", "nope"),
        ];
        let (status, body) = post_json(&running.token_url(), &wrong).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(body["error"], "invalid_client");
        assert_eq!(issuer.calls(ID), 1);

        let unknown = [
            ("grant_type", "client_credentials"),
            ("client_id", "stranger"),
            ("client_secret", "x"),
        ];
        let (status, body) = post_json(&running.token_url(), &unknown).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(body["error"], "invalid_client");
        assert_eq!(issuer.calls("stranger"), 1);

        // configure() on an unknown client registers it with a secret nothing can match.
        issuer.configure("configured-only", |b| b.lifetime = Duration::from_secs(5));
        let empty = [
            ("grant_type", "client_credentials"),
            ("client_id", "configured-only"),
            ("client_secret", ""),
        ];
        let (status, body) = post_json(&running.token_url(), &empty).await;
        assert_eq!(
            (status, &body["error"]),
            (StatusCode::BAD_REQUEST, &json!("invalid_request"))
        );
        issuer.register("configured-only", "now-set");
        let ok = [
            ("grant_type", "client_credentials"),
            ("client_id", "configured-only"),
            ("client_secret", "now-set"),
        ];
        let (status, body) = post_json(&running.token_url(), &ok).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["expires_in"], 5, "register() kept the behaviour");
        assert_eq!(issuer.total_calls(), 4);
    }

    #[tokio::test]
    async fn rejects_malformed_requests() {
        let (issuer, running, _) = setup().await;
        let url = running.token_url();

        let form = [
            ("grant_type", "password"),
            ("client_id", ID),
            ("client_secret", SECRET),
        ];
        let (status, body) = post_json(&url, &form).await;
        assert_eq!(
            (status, &body["error"]),
            (StatusCode::BAD_REQUEST, &json!("unsupported_grant_type"))
        );

        let (status, body) = post_json(&url, &[("client_id", ID), ("client_secret", SECRET)]).await;
        assert_eq!(
            (status, &body["error"]),
            (StatusCode::BAD_REQUEST, &json!("unsupported_grant_type"))
        );

        let form = [("grant_type", "client_credentials"), ("client_id", ID)];
        let (status, body) = post_json(&url, &form).await;
        assert_eq!(
            (status, &body["error"]),
            (StatusCode::BAD_REQUEST, &json!("invalid_request"))
        );

        let form = [
            ("grant_type", "client_credentials"),
            ("client_secret", SECRET),
        ];
        let (status, body) = post_json(&url, &form).await;
        assert_eq!(
            (status, &body["error"]),
            (StatusCode::BAD_REQUEST, &json!("invalid_request"))
        );

        let form = creds(&[("client_id", "other")]);
        let (status, body) = post_json(&url, &form).await;
        assert_eq!(
            (status, &body["error"]),
            (StatusCode::BAD_REQUEST, &json!("invalid_request"))
        );

        // Not form-encoded: a JSON body, and bytes that are not a form at all.
        let response = client()
            .post(&url)
            .json(&json!({"grant_type": "client_credentials"}))
            .send()
            .await
            .expect("answer");
        assert_eq!(response.status().as_u16(), 400);
        let body: Value = response.json().await.expect("JSON");
        assert_eq!(body["error"], "invalid_request");
        let response = client()
            .post(&url)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(vec![0xff, 0xfe, b'=', 0x80])
            .send()
            .await
            .expect("answer");
        assert_eq!(response.status().as_u16(), 400);
        let body: Value = response.json().await.expect("JSON");
        assert_eq!(body["error"], "invalid_request");

        // Wrong method.
        let response = client().get(&url).send().await.expect("answer");
        assert_eq!(response.status().as_u16(), 405);

        assert_eq!(issuer.total_calls(), 7);
        assert_eq!(issuer.calls(ID), 4);
    }

    #[tokio::test]
    async fn counts_calls_and_records_forms() {
        let (issuer, running, _) = setup().await;
        issuer.register("tenant-b", "other");
        assert_eq!((issuer.calls(ID), issuer.total_calls()), (0, 0));
        assert_eq!(issuer.last_form(ID), None);

        post(&running.token_url(), &creds(&[("token_type", "jwt")])).await;
        post(&running.v1_token_url(), &creds(&[("scope", "read")])).await;
        let b = [
            ("grant_type", "client_credentials"),
            ("client_id", "tenant-b"),
            ("client_secret", "other"),
        ];
        post(&running.token_url(), &b).await;

        assert_eq!(issuer.calls(ID), 2);
        assert_eq!(issuer.calls("tenant-b"), 1);
        assert_eq!(issuer.calls("nobody"), 0);
        assert_eq!(issuer.total_calls(), 3);
        let expected: Vec<(String, String)> = creds(&[("scope", "read")])
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        assert_eq!(issuer.last_form(ID), Some(expected));
        assert_eq!(issuer.last_form("nobody"), None);
    }

    #[tokio::test]
    async fn latency_is_honoured() {
        let (issuer, running, _) = setup().await;
        issuer.configure(ID, |b| b.latency = Duration::from_millis(100));
        let started = Instant::now();
        let (status, _, _) = post(&running.token_url(), &creds(&[])).await;
        assert_eq!(status, StatusCode::OK);
        assert!(started.elapsed() >= Duration::from_millis(100));

        issuer.configure(ID, |b| b.failure = Some(Failure::ServerError));
        let started = Instant::now();
        let (status, _, _) = post(&running.token_url(), &creds(&[])).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(
            started.elapsed() >= Duration::from_millis(100),
            "failures wait too"
        );
    }

    #[tokio::test]
    async fn iss_follows_the_host_header() {
        let (_issuer, running, _) = setup().await;
        let body: Value = client()
            .post(running.token_url())
            .header(header::HOST, "lms.example.org")
            .form(&creds(&[("token_type", "jwt")]))
            .send()
            .await
            .expect("answer")
            .json()
            .await
            .expect("JSON");
        let jwt = body["access_token"].as_str().expect("token");
        let mut validation = validation(&running);
        validation.set_issuer(&["http://lms.example.org/oauth2"]);
        jsonwebtoken::decode::<Value>(jwt, &decoding_key(&running).await, &validation)
            .expect("verifies with the Host-derived issuer");
    }

    #[tokio::test]
    async fn router_serves_without_start_and_drop_stops_the_server() {
        let (issuer, running, _) = setup().await;
        let url = running.token_url();
        drop(running);
        tokio::task::yield_now().await;
        assert!(client().post(&url).form(&creds(&[])).send().await.is_err());

        // The bare router answers too (for callers that mount it themselves).
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let router = issuer.router();
        let server = tokio::spawn(async move { axum::serve(listener, router).await });
        let (status, _, _) = post(&format!("http://{addr}/oauth2/access_token"), &creds(&[])).await;
        assert_eq!(status, StatusCode::OK);
        server.abort();
    }
}
