//! The edX-compatible token endpoint: an unmodified edX OAuth2 client (edx-rest-api-client's
//! `OAuthAPIClient`, say) points its token URL at tokenvend and gets its tenant's cached
//! token, with a caller key as its client secret. Answers and errors follow RFC 6749.

use std::collections::HashMap;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde_json::json;

use crate::domain::{TenantAccess, TenantId};
use crate::engine::VendError;
use crate::http::auth::{ClientIp, Refusal};
use crate::http::error::UpstreamFailure;
use crate::http::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/oauth2/access_token", post(access_token))
        .route("/oauth2/v1/access_token", post(access_token))
}

/// An RFC 6749 error answer (section 5.2).
struct OAuthError {
    status: StatusCode,
    code: &'static str,
    description: String,
    retry_after: Option<Duration>,
}

impl OAuthError {
    fn new(status: StatusCode, code: &'static str, description: impl Into<String>) -> Self {
        Self {
            status,
            code,
            description: description.into(),
            retry_after: None,
        }
    }

    fn invalid_request(description: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", description)
    }

    /// RFC 6749 has no code for "too many requests": `invalid_request` with status 429
    /// and `Retry-After`, as the API's `rate-limited` problem.
    fn rate_limited(description: &str, wait: Duration) -> Self {
        Self {
            // Whole seconds, rounded up: a client that waits that long gets through.
            retry_after: Some(Duration::from_secs(
                wait.as_secs() + u64::from(wait.subsec_nanos() > 0),
            )),
            ..Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "invalid_request",
                description,
            )
        }
    }

    /// The same answer for an unknown key, a key without token scope for the tenant and
    /// an unknown tenant, so that tenant ids cannot be probed.
    fn invalid_client() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "client authentication failed: the client_secret must be a caller key with token \
             scope for the tenant named by client_id",
        )
    }
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let body = json!({ "error": self.code, "error_description": self.description });
        let mut response = (self.status, axum::Json(body)).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
        if self.status == StatusCode::UNAUTHORIZED {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(r#"Basic realm="tokenvend""#),
            );
        }
        if let Some(after) = self.retry_after {
            let secs = after.as_secs().max(1);
            if let Ok(value) = HeaderValue::from_str(&secs.to_string()) {
                headers.insert(header::RETRY_AFTER, value);
            }
        }
        response
    }
}

impl From<VendError> for OAuthError {
    fn from(err: VendError) -> Self {
        match err {
            VendError::UnknownTenant => Self::invalid_client(),
            VendError::Upstream { cause, retry_after } => {
                let failure = UpstreamFailure::new(&cause, retry_after);
                let description = format!("edX could not provide a token: {cause}");
                // RFC 6749 has no gateway timeout: a slow edX is unavailable for now too.
                if failure.is_transient() {
                    Self {
                        retry_after: Some(failure.retry_after),
                        ..Self::new(
                            StatusCode::SERVICE_UNAVAILABLE,
                            "temporarily_unavailable",
                            description,
                        )
                    }
                } else {
                    Self::new(failure.status, "server_error", description)
                }
            }
            // Not reachable from a token request (only forced refreshes are refused so),
            // but answered in kind: come back later.
            VendError::TooSoon { retry_after }
            | VendError::CallerOverRate { retry_after }
            | VendError::VerifyCoolingDown { retry_after } => Self {
                retry_after: Some(retry_after),
                ..Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "temporarily_unavailable",
                    "try again later",
                )
            },
            VendError::Unusable(_) => Self::new(
                StatusCode::BAD_GATEWAY,
                "server_error",
                "the tenant's stored settings cannot be used",
            ),
            VendError::Internal => {
                tracing::error!(error = %err, "token request failed");
                Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "server_error",
                    "internal error",
                )
            }
        }
    }
}

/// The client credentials from an HTTP Basic `Authorization` header (RFC 6749 2.3.1: each
/// part form-urlencoded, then joined by `:` and base64-encoded). Other schemes are ignored.
fn basic_credentials(headers: &HeaderMap) -> Result<Option<(String, String)>, OAuthError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let malformed = || OAuthError::invalid_request("malformed Basic Authorization header");
    let value = value.to_str().map_err(|_| malformed())?;
    let Some((scheme, encoded)) = value.split_once(' ') else {
        return Err(malformed());
    };
    if !scheme.eq_ignore_ascii_case("basic") {
        // Not client authentication (a caller's usual Bearer header, say): the form's
        // credentials decide.
        return Ok(None);
    }
    let decoded = STANDARD.decode(encoded.trim()).map_err(|_| malformed())?;
    let decoded = String::from_utf8(decoded).map_err(|_| malformed())?;
    let (id, secret) = decoded.split_once(':').ok_or_else(malformed)?;
    let unescape = |part: &str| form_urlencoded_decode(part).ok_or_else(malformed);
    Ok(Some((unescape(id)?, unescape(secret)?)))
}

fn form_urlencoded_decode(part: &str) -> Option<String> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(&format!("v={part}")).ok()?;
    pairs.into_iter().next().map(|(_, value)| value)
}

/// The form parameters this endpoint reads; others are ignored.
const PARAMETERS: [&str; 5] = [
    "grant_type",
    "client_id",
    "client_secret",
    "token_type",
    "scope",
];

/// `POST /oauth2/access_token`, `POST /oauth2/v1/access_token`.
async fn access_token(
    State(state): State<AppState>,
    ClientIp(client): ClientIp,
    request: Request,
) -> Result<Response, OAuthError> {
    // Credentials in the URL end up in access logs and browser histories: any query
    // string is refused before the body or a key is looked at (and it is never echoed).
    if request.uri().query().is_some() {
        return Err(OAuthError::invalid_request(
            "a query string is not accepted here: send the parameters in the form body \
             (application/x-www-form-urlencoded) or client credentials in a Basic \
             Authorization header",
        ));
    }
    let headers = request.headers().clone();
    let body =
        Bytes::from_request(request, &state)
            .await
            .map_err(|rejection: BytesRejection| OAuthError {
                status: rejection.status(),
                ..OAuthError::invalid_request(rejection.body_text())
            })?;
    let form_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| {
            v.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        });
    if !form_type {
        return Err(OAuthError::invalid_request(
            "the body must be application/x-www-form-urlencoded",
        ));
    }
    let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(&body)
        .map_err(|_| OAuthError::invalid_request("the body is not a valid form"))?;
    // RFC 6749 3.1: unrecognised parameters are ignored, an empty one counts as absent,
    // and a parameter must not appear more than once.
    let mut form: HashMap<&'static str, String> = HashMap::new();
    for (name, value) in pairs {
        let Some(name) = PARAMETERS.iter().find(|known| **known == name) else {
            continue;
        };
        if value.is_empty() {
            continue;
        }
        if form.insert(name, value).is_some() {
            return Err(OAuthError::invalid_request(format!(
                "parameter {name} appears more than once"
            )));
        }
    }

    let grant_type = form
        .get("grant_type")
        .ok_or_else(|| OAuthError::invalid_request("missing grant_type"))?;
    if grant_type != "client_credentials" {
        return Err(OAuthError::new(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "only grant_type=client_credentials is supported",
        ));
    }
    if let Some(token_type) = form.get("token_type") {
        if !["jwt", "bearer"].contains(&token_type.to_ascii_lowercase().as_str()) {
            return Err(OAuthError::invalid_request(
                "token_type must be jwt or bearer",
            ));
        }
    }
    let from_form = match (form.get("client_id"), form.get("client_secret")) {
        (Some(id), Some(secret)) => Some((id.clone(), secret.clone())),
        (None, None) => None,
        _ => {
            return Err(OAuthError::invalid_request(
                "client_id and client_secret go together",
            ))
        }
    };
    let (client_id, client_secret) = match (basic_credentials(&headers)?, from_form) {
        (Some(_), Some(_)) => {
            return Err(OAuthError::invalid_request(
                "use one client authentication method: Basic or the form, not both",
            ))
        }
        (Some(credentials), None) | (None, Some(credentials)) => credentials,
        (None, None) => {
            return Err(OAuthError::invalid_request(
                "missing client_id and client_secret",
            ))
        }
    };

    let caller = state
        .keys
        .admit(&client_secret, client)
        .map_err(|refusal| match refusal {
            Refusal::Unknown => OAuthError::invalid_client(),
            Refusal::TooManyFailures(wait) => {
                OAuthError::rate_limited("too many failed authentications from this address", wait)
            }
            Refusal::OverRate(wait) => OAuthError::rate_limited("rate limit exceeded", wait),
        })?;
    let tenant = TenantId::parse(&client_id).map_err(|_| OAuthError::invalid_client())?;
    tracing::Span::current().record("tenant", tenant.as_str());
    let current = state.vendor.registry().uid_of(&tenant);
    if caller.scopes.token_access(tenant.as_str(), current) != TenantAccess::Granted {
        return Err(OAuthError::invalid_client());
    }
    let token = state.vendor.token(&tenant, Duration::ZERO).await?;
    let mut body = json!({
        "access_token": token.expose_token(),
        "token_type": token.token_type,
        "expires_in": token.remaining(state.vendor.now()),
    });
    if let Some(scope) = &token.scope {
        body["scope"] = json!(scope);
    }
    Ok((
        [
            (header::CACHE_CONTROL, "no-store"),
            (header::PRAGMA, "no-cache"),
        ],
        axum::Json(body),
    )
        .into_response())
}
