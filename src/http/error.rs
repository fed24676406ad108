//! `ApiError`: every failure a caller can see, rendered as application/problem+json (RFC 9457).
//!
//! Bodies carry only what is safe to show; the cause of a 5xx is logged once, inside the
//! request's span, and never sent.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use std::time::Duration;

use crate::domain::FieldError;
use crate::engine::VendError;
pub use crate::outbound::upstream::failure::UpstreamFailure;
use crate::services::ServiceError;
use crate::store;

pub type Result<T, E = ApiError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("missing or malformed Authorization header")]
    MissingCredentials,
    #[error("unknown or revoked caller key")]
    InvalidCredentials,
    #[error("this caller key lacks the scope {needed}")]
    Forbidden { needed: String },
    #[error("{0}")]
    NotFound(String),
    /// An unknown tenant, and one the caller's scopes do not cover: the same answer, so
    /// that tenant ids cannot be probed.
    #[error("tenant not found")]
    TenantNotFound,
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Validation(#[from] FieldError),
    /// A well-formed request that would pass a limit on stored things (422).
    #[error("{0}")]
    LimitReached(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("request body must be JSON (Content-Type: application/json)")]
    UnsupportedMediaType,
    #[error("request body is larger than the limit of {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("method not allowed on this path")]
    MethodNotAllowed,
    /// Too many requests (a key over its rate limit, an address failing authentication
    /// too often): 429 with `Retry-After`.
    #[error("{detail}")]
    RateLimited {
        retry_after: Duration,
        detail: String,
    },
    /// edX could not provide a token (502, 503 or 504).
    #[error("{detail}")]
    Upstream {
        failure: UpstreamFailure,
        detail: String,
    },
    /// `?verify=true`: edX refused the credentials of a tenant write (422 with the OAuth
    /// error code as `upstream_error`); nothing was stored.
    #[error("edX refused these credentials (HTTP {status}, {code}); nothing was changed")]
    CredentialsRefused { status: u16, code: String },
    /// A forced refresh too soon after the last fetch, or during a failure cool-down.
    #[error("a refresh was asked for too soon after the last one (or while edX is left alone after a failure); try again after Retry-After")]
    RefreshTooSoon { retry_after: Duration },
    /// The tenant's stored settings cannot be used (see `VendError::Unusable`). The
    /// reason is for operators: it is in the token status and the log, not in the answer.
    #[error("the tenant's stored settings cannot be used; its token status says why")]
    TenantUnusable(String),
    /// The proxy could not reach the tenant's edX API (the cause is logged, not sent).
    #[error("the edX API could not be reached")]
    ApiUnreachable(String),
    /// The tenant's edX API did not answer a proxied call in time.
    #[error("the edX API did not answer in time (TOKENVEND_PROXY_TIMEOUT)")]
    ApiTimeout,
    #[error("the store is unavailable; try again shortly")]
    StoreUnavailable(#[source] sqlx::Error),
    #[error("internal error")]
    Internal(#[from] anyhow::Error),
}

impl From<sqlx::Error> for ApiError {
    fn from(err: sqlx::Error) -> Self {
        if store::is_unavailable(&err) {
            ApiError::StoreUnavailable(err)
        } else {
            ApiError::Internal(anyhow::Error::new(err).context("database query failed"))
        }
    }
}

impl From<VendError> for ApiError {
    fn from(err: VendError) -> Self {
        match err {
            VendError::UnknownTenant => ApiError::TenantNotFound,
            VendError::Internal => ApiError::Internal(anyhow::Error::new(err)),
            VendError::Unusable(problem) => ApiError::TenantUnusable(problem),
            VendError::TooSoon { retry_after } => ApiError::RefreshTooSoon { retry_after },
            VendError::CallerOverRate { retry_after }
            | VendError::VerifyCoolingDown { retry_after } => ApiError::RateLimited {
                retry_after,
                detail: err.to_string(),
            },
            VendError::Upstream { cause, retry_after } => ApiError::Upstream {
                failure: UpstreamFailure::new(&cause, retry_after),
                detail: cause.to_string(),
            },
        }
    }
}

impl From<ServiceError> for ApiError {
    fn from(err: ServiceError) -> Self {
        match err {
            ServiceError::Invalid(field) => ApiError::Validation(field),
            ServiceError::Conflict(message) => ApiError::Conflict(message),
            ServiceError::NotFound(what) => ApiError::NotFound(what.to_owned()),
            ServiceError::TenantNotFound => ApiError::TenantNotFound,
            ServiceError::LimitReached(message) => ApiError::LimitReached(message),
            ServiceError::CredentialsRefused { status, code } => {
                ApiError::CredentialsRefused { status, code }
            }
            ServiceError::Vend(error) => error.into(),
            ServiceError::Store(error) => error.into(),
        }
    }
}

/// The problem+json body.
#[derive(Debug, Serialize)]
pub struct Problem {
    #[serde(rename = "type")]
    pub kind: String,
    pub title: &'static str,
    pub status: u16,
    pub detail: String,
    /// The request field that failed validation (422 only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// The OAuth error code edX refused credentials with (`credentials-refused` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream_error: Option<String>,
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::MissingCredentials | ApiError::InvalidCredentials => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden { .. } => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) | ApiError::TenantNotFound => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Validation(_)
            | ApiError::LimitReached(_)
            | ApiError::CredentialsRefused { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Upstream { failure, .. } => failure.status,
            ApiError::TenantUnusable(_) => StatusCode::BAD_GATEWAY,
            ApiError::RefreshTooSoon { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::ApiUnreachable(_) => StatusCode::BAD_GATEWAY,
            ApiError::ApiTimeout => StatusCode::GATEWAY_TIMEOUT,
            ApiError::StoreUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// A stable, machine-readable problem type (documented in openapi.yaml).
    fn slug(&self) -> &'static str {
        match self {
            ApiError::MissingCredentials | ApiError::InvalidCredentials => "unauthorized",
            ApiError::Forbidden { .. } => "forbidden",
            ApiError::NotFound(_) | ApiError::TenantNotFound => "not-found",
            ApiError::Conflict(_) => "conflict",
            ApiError::Validation(_) => "validation",
            ApiError::LimitReached(_) => "limit-reached",
            ApiError::CredentialsRefused { .. } => "credentials-refused",
            ApiError::BadRequest(_) => "bad-request",
            ApiError::UnsupportedMediaType => "unsupported-media-type",
            ApiError::PayloadTooLarge { .. } => "payload-too-large",
            ApiError::MethodNotAllowed => "method-not-allowed",
            ApiError::RateLimited { .. } => "rate-limited",
            ApiError::Upstream { failure, .. } => failure.slug,
            ApiError::TenantUnusable(_) => "tenant-unusable",
            ApiError::RefreshTooSoon { .. } => "refresh-too-soon",
            ApiError::ApiUnreachable(_) => "api-unreachable",
            ApiError::ApiTimeout => "api-timeout",
            ApiError::StoreUnavailable(_) => "store-unavailable",
            ApiError::Internal(_) => "internal",
        }
    }

    fn title(&self) -> &'static str {
        match self {
            ApiError::MissingCredentials | ApiError::InvalidCredentials => "Unauthorized",
            ApiError::Forbidden { .. } => "Forbidden",
            ApiError::NotFound(_) | ApiError::TenantNotFound => "Not Found",
            ApiError::Conflict(_) => "Conflict",
            ApiError::Validation(_) => "Invalid field",
            ApiError::LimitReached(_) => "Limit reached",
            ApiError::CredentialsRefused { .. } => "Credentials refused",
            ApiError::BadRequest(_) => "Bad Request",
            ApiError::UnsupportedMediaType => "Unsupported Media Type",
            ApiError::PayloadTooLarge { .. } => "Payload Too Large",
            ApiError::MethodNotAllowed => "Method Not Allowed",
            ApiError::RateLimited { .. } => "Too Many Requests",
            ApiError::Upstream { failure, .. } => match failure.status {
                StatusCode::BAD_GATEWAY => "Bad Gateway",
                StatusCode::GATEWAY_TIMEOUT => "Gateway Timeout",
                _ => "Service Unavailable",
            },
            ApiError::TenantUnusable(_) => "Bad Gateway",
            ApiError::RefreshTooSoon { .. } => "Too Many Requests",
            ApiError::ApiUnreachable(_) => "Bad Gateway",
            ApiError::ApiTimeout => "Gateway Timeout",
            ApiError::StoreUnavailable(_) => "Service Unavailable",
            ApiError::Internal(_) => "Internal Server Error",
        }
    }

    pub fn to_problem(&self) -> Problem {
        Problem {
            kind: format!("urn:tokenvend:problem:{}", self.slug()),
            title: self.title(),
            status: self.status().as_u16(),
            detail: self.to_string(),
            field: match self {
                ApiError::Validation(e) => Some(e.field.clone()),
                _ => None,
            },
            upstream_error: match self {
                ApiError::CredentialsRefused { code, .. } => Some(code.clone()),
                _ => None,
            },
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match &self {
            ApiError::Internal(cause) => tracing::error!(error = ?cause, "request failed"),
            ApiError::StoreUnavailable(cause) => {
                tracing::warn!(error = %cause, "store unavailable")
            }
            ApiError::Upstream { detail, .. } => tracing::info!(%detail, "no token to serve"),
            ApiError::TenantUnusable(problem) => {
                tracing::error!(%problem, "the tenant cannot be asked a token for")
            }
            ApiError::ApiUnreachable(cause) => {
                tracing::warn!(%cause, "the proxied edX API could not be reached")
            }
            _ => {}
        }
        let status = self.status();
        let mut response = (status, problem_json(&self.to_problem())).into_response();
        let headers = response.headers_mut();
        match self {
            ApiError::MissingCredentials => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"tokenvend\""),
                );
            }
            ApiError::InvalidCredentials => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"tokenvend\", error=\"invalid_token\""),
                );
            }
            ApiError::StoreUnavailable(_) => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("2"));
            }
            // A 504 says nothing of when to come back: edX was only slow.
            ApiError::Upstream { failure, .. }
                if failure.status == StatusCode::SERVICE_UNAVAILABLE =>
            {
                headers.insert(header::RETRY_AFTER, retry_after_secs(failure.retry_after));
            }
            ApiError::RefreshTooSoon { retry_after } => {
                headers.insert(header::RETRY_AFTER, retry_after_secs(retry_after));
            }
            ApiError::RateLimited { retry_after, .. } => {
                headers.insert(header::RETRY_AFTER, retry_after_secs(retry_after));
            }
            _ => {}
        }
        response
    }
}

/// A `Retry-After` value: whole seconds, rounded up, at least 1.
pub fn retry_after_secs(after: Duration) -> HeaderValue {
    let secs = after.as_secs() + u64::from(after.subsec_nanos() > 0);
    HeaderValue::from(secs.max(1))
}

/// Serialises a problem with the problem+json content type.
pub fn problem_json(problem: &Problem) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        )],
        serde_json::to_vec(problem).unwrap_or_default(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbound::upstream::UpstreamError;

    #[test]
    fn each_upstream_failure_has_one_status_slug_and_retry_rule() {
        let throttled = UpstreamError::Throttled {
            status: 429,
            retry_after: None,
        };
        let cases = [
            (
                UpstreamError::Rejected {
                    status: 401,
                    code: "invalid_client".into(),
                },
                502,
                "upstream-rejected",
                None,
            ),
            (
                UpstreamError::InvalidResponse {
                    status: 200,
                    detail: "not JSON".into(),
                },
                502,
                "upstream-invalid-response",
                None,
            ),
            (throttled, 503, "upstream-throttled", Some("7")),
            (
                UpstreamError::Unavailable {
                    status: Some(500),
                    detail: "HTTP 500".into(),
                    retry_after: None,
                },
                503,
                "upstream-unavailable",
                Some("7"),
            ),
            (
                UpstreamError::Timeout(Duration::from_secs(5)),
                504,
                "upstream-timeout",
                None,
            ),
        ];
        for (cause, status, slug, retry_header) in cases {
            let failure = UpstreamFailure::new(&cause, Some(Duration::from_millis(6_500)));
            assert_eq!(failure.status.as_u16(), status, "{cause:?}");
            assert_eq!(failure.slug, slug, "{cause:?}");
            assert_eq!(failure.is_transient(), status != 502, "{cause:?}");
            let response = ApiError::from(VendError::Upstream {
                cause: cause.clone(),
                retry_after: Some(Duration::from_millis(6_500)),
            })
            .into_response();
            assert_eq!(response.status().as_u16(), status, "{cause:?}");
            let header = response
                .headers()
                .get(header::RETRY_AFTER)
                .map(|v| v.to_str().unwrap());
            assert_eq!(header, retry_header, "{cause:?}");
        }
        let unsaid = UpstreamFailure::new(&UpstreamError::Timeout(Duration::ZERO), None);
        assert_eq!(unsaid.retry_after, Duration::from_secs(1));
    }
}
