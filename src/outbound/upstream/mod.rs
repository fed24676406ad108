//! The edX token client: the client-credentials request, strict-but-kind parsing of the
//! answer, failure classes, and bounded retries with jittered backoff. Its HTTP client
//! follows the outbound policy of `crate::outbound`.

pub mod failure;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use backon::{ExponentialBuilder, Retryable};
use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use reqwest::header::{HeaderMap, CONTENT_TYPE, DATE, RETRY_AFTER};
use reqwest::StatusCode;
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use tracing::{field, Instrument as _};
use url::Url;

use crate::domain::{parse_expires_in, TokenType};
use crate::outbound::{self, UrlPolicy};
use crate::telemetry::metrics::Metrics;
use crate::telemetry::propagation;

/// The edX token endpoint used when a tenant names none.
pub const DEFAULT_TOKEN_URL: &str = "https://api.edx.org/oauth2/v1/access_token";

/// The largest upstream answer read; a token answer is a few kilobytes.
const MAX_BODY: usize = 256 * 1024;

#[derive(Debug, Clone)]
pub struct UpstreamSettings {
    pub connect_timeout: Duration,
    /// The limit for one HTTP attempt, connection included.
    pub attempt_timeout: Duration,
    /// Attempts per fetch for timeouts and 5xx (1 = no retry).
    pub max_attempts: usize,
    /// First backoff delay; each retry doubles it, with jitter.
    pub retry_base_delay: Duration,
}

impl Default for UpstreamSettings {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(3),
            attempt_timeout: Duration::from_secs(5),
            max_attempts: 3,
            retry_base_delay: Duration::from_millis(250),
        }
    }
}

/// What one tenant's fetch sends.
pub struct TokenRequest<'a> {
    pub token_url: &'a Url,
    pub client_id: &'a str,
    pub client_secret: &'a SecretString,
    pub scope: Option<&'a str>,
    pub token_type: TokenType,
    pub asymmetric_jwt: bool,
}

/// A successful answer, not yet interpreted as a validity window.
#[derive(Debug)]
pub struct FetchedToken {
    pub access_token: SecretString,
    pub token_type: Option<String>,
    pub expires_in: Option<Duration>,
    pub scope: Option<String>,
    /// When it came (`None` from sources that are not HTTP: tests' fakes).
    pub timing: Option<AnswerTiming>,
}

/// When an answer came, for measuring edX's clock against ours.
#[derive(Debug, Clone, Copy)]
pub struct AnswerTiming {
    /// Halfway between sending the request and receiving the answer's headers: when edX
    /// most likely read its clock.
    pub midpoint: Instant,
    /// The answer's `Date` header, if it had a valid one (whole seconds).
    pub date: Option<DateTime<Utc>>,
}

/// Why a fetch failed. Messages carry only the OAuth error code and HTTP status, never an
/// upstream body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpstreamError {
    #[error("edX rejected the client credentials (HTTP {status}, {code})")]
    Rejected { status: u16, code: String },
    #[error("edX is rate-limiting requests (HTTP {status})")]
    Throttled {
        status: u16,
        retry_after: Option<Duration>,
    },
    #[error("edX is unavailable ({detail})")]
    Unavailable {
        status: Option<u16>,
        detail: String,
        retry_after: Option<Duration>,
    },
    #[error("edX did not answer within {}s", .0.as_secs_f64().round())]
    Timeout(Duration),
    #[error("edX sent an invalid answer (HTTP {status}: {detail})")]
    InvalidResponse { status: u16, detail: String },
    /// Not sent: tokenvend's own budget of requests to this token endpoint's host
    /// (`TOKENVEND_UPSTREAM_RATE`) is spent for now.
    #[error("the budget of token requests to this edX host is spent for now; try again in {}s", .retry_after.as_secs().max(1))]
    OverBudget { retry_after: Duration },
    /// Not sent: edX failed this host's last token requests, and tokenvend leaves it
    /// alone until its circuit breaker lets a probe through (`engine/breaker.rs`).
    #[error("edX is failing every token request; not asked again for {}s", .retry_after.as_secs().max(1))]
    HostFailing { retry_after: Duration },
}

impl UpstreamError {
    /// Timeouts and server errors may pass; a rejected credential or a throttle will not.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Unavailable { .. } | Self::Timeout(_))
    }

    /// Whether edX refused the credentials themselves (`invalid_client`,
    /// `unauthorized_client`, or a 401), not the request's form or scope.
    pub fn rejects_credentials(&self) -> bool {
        matches!(self, Self::Rejected { status, code }
            if *status == 401 || code == "invalid_client" || code == "unauthorized_client")
    }

    pub fn http_status(&self) -> Option<u16> {
        match self {
            Self::Rejected { status, .. }
            | Self::Throttled { status, .. }
            | Self::InvalidResponse { status, .. } => Some(*status),
            Self::Unavailable { status, .. } => *status,
            Self::Timeout(_) | Self::OverBudget { .. } | Self::HostFailing { .. } => None,
        }
    }

    /// The metrics label of this failure class.
    pub fn outcome(&self) -> &'static str {
        match self {
            Self::Rejected { .. } => "rejected",
            Self::Throttled { .. } => "throttled",
            Self::Unavailable { .. } => "unavailable",
            Self::Timeout(_) => "timeout",
            Self::InvalidResponse { .. } => "invalid_response",
            Self::OverBudget { .. } => "over_budget",
            Self::HostFailing { .. } => "host_failing",
        }
    }
}

/// Asked before every HTTP attempt of a fetch: whether it may be sent (the engine's
/// upstream budget); it may wait for its turn.
pub type AttemptGate<'a> = dyn Fn() -> BoxFuture<'a, Result<(), UpstreamError>> + Send + Sync + 'a;

#[derive(Clone)]
pub struct UpstreamClient {
    http: reqwest::Client,
    settings: UpstreamSettings,
    metrics: Arc<Metrics>,
}

impl UpstreamClient {
    pub fn new(
        settings: UpstreamSettings,
        policy: UrlPolicy,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Self> {
        let timeouts = outbound::Timeouts {
            connect: settings.connect_timeout,
            total: settings.attempt_timeout,
        };
        Ok(Self {
            http: outbound::client(policy, timeouts)?,
            settings,
            metrics,
        })
    }

    pub fn settings(&self) -> &UpstreamSettings {
        &self.settings
    }

    /// Fetches a token, retrying timeouts and 5xx with jittered exponential backoff until
    /// `max_attempts` or `deadline`. `before_attempt` is asked before every HTTP attempt;
    /// its refusal ends the fetch.
    pub async fn fetch(
        &self,
        request: &TokenRequest<'_>,
        deadline: Instant,
        before_attempt: &AttemptGate<'_>,
    ) -> Result<FetchedToken, UpstreamError> {
        let backoff = ExponentialBuilder::default()
            .with_min_delay(self.settings.retry_base_delay)
            .with_max_delay(self.settings.retry_base_delay * 8)
            .with_max_times(self.settings.max_attempts.saturating_sub(1))
            .with_jitter();
        let attempts = AtomicUsize::new(0);
        let attempt = || async {
            before_attempt().await?;
            let span = tracing::info_span!(
                "upstream_attempt",
                attempt = attempts.fetch_add(1, Ordering::Relaxed) as i64 + 1,
                "server.address" = request.token_url.host_str().unwrap_or("-"),
                "http.response.status_code" = field::Empty,
                outcome = field::Empty,
            );
            self.attempt(request).instrument(span).await
        };
        let retried = attempt
            .retry(backoff)
            .sleep(tokio::time::sleep)
            .when(|e: &UpstreamError| e.is_retryable())
            .notify(|e: &UpstreamError, after: Duration| {
                tracing::warn!(error = %e, retry_in_ms = after.as_millis() as u64, "token fetch failed; retrying");
            });
        let budget = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(budget, retried).await {
            Ok(result) => result,
            Err(_) => Err(UpstreamError::Timeout(budget)),
        }
    }

    async fn attempt(&self, request: &TokenRequest<'_>) -> Result<FetchedToken, UpstreamError> {
        let mut form: Vec<(&str, &str)> = vec![
            ("grant_type", "client_credentials"),
            ("client_id", request.client_id),
            ("client_secret", request.client_secret.expose_secret()),
            ("token_type", request.token_type.as_str()),
        ];
        if let Some(scope) = request.scope {
            form.push(("scope", scope));
        }
        if request.asymmetric_jwt {
            form.push(("asymmetric_jwt", "true"));
        }
        let started = Instant::now();
        let mut post = self
            .http
            .post(request.token_url.clone())
            .header(reqwest::header::ACCEPT, "application/json")
            .form(&form);
        if let Some(trace) = propagation::span_context_headers(&tracing::Span::current()) {
            post = post.headers(trace);
        }
        let sent = post.send().await;
        let span = tracing::Span::current();
        let result = match sent {
            Ok(response) => {
                let timing = AnswerTiming {
                    midpoint: started + started.elapsed() / 2,
                    date: date(response.headers()),
                };
                let status = response.status();
                span.record("http.response.status_code", i64::from(status.as_u16()));
                let headers = response.headers().clone();
                match read_limited(response).await {
                    Ok(body) => classify(status, &headers, &body).map(|fetched| FetchedToken {
                        timing: Some(timing),
                        ..fetched
                    }),
                    Err(e) => Err(transport_error(&e, self.settings.attempt_timeout)),
                }
            }
            Err(e) => Err(transport_error(&e, self.settings.attempt_timeout)),
        };
        let outcome = match &result {
            Ok(_) => "success",
            Err(e) => e.outcome(),
        };
        span.record("outcome", outcome);
        self.metrics
            .observe_upstream(outcome, started.elapsed().as_secs_f64());
        result
    }

    /// Fetches a JWKS document (for signature checks), same safety rules as token calls.
    pub async fn fetch_json(&self, url: &Url) -> Result<Value, UpstreamError> {
        let response = self
            .http
            .get(url.clone())
            .send()
            .await
            .map_err(|e| transport_error(&e, self.settings.attempt_timeout))?;
        let status = response.status();
        let body = read_limited(response)
            .await
            .map_err(|e| transport_error(&e, self.settings.attempt_timeout))?;
        if !status.is_success() {
            return Err(UpstreamError::InvalidResponse {
                status: status.as_u16(),
                detail: "JWKS request failed".to_owned(),
            });
        }
        serde_json::from_slice(&body).map_err(|_| UpstreamError::InvalidResponse {
            status: status.as_u16(),
            detail: "JWKS is not JSON".to_owned(),
        })
    }
}

async fn read_limited(mut response: reqwest::Response) -> Result<Vec<u8>, reqwest::Error> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        let room = MAX_BODY.saturating_sub(body.len());
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() >= MAX_BODY {
            break;
        }
    }
    Ok(body)
}

fn transport_error(e: &reqwest::Error, attempt_timeout: Duration) -> UpstreamError {
    if e.is_timeout() {
        UpstreamError::Timeout(attempt_timeout)
    } else if e.is_connect() {
        UpstreamError::Unavailable {
            status: None,
            detail: "connection failed".to_owned(),
            retry_after: None,
        }
    } else {
        UpstreamError::Unavailable {
            status: None,
            detail: "the connection broke".to_owned(),
            retry_after: None,
        }
    }
}

/// An OAuth error code from a JSON body, if it looks like one (never arbitrary text).
fn oauth_error_code(body: &[u8]) -> Option<String> {
    let value: Value = serde_json::from_slice(body).ok()?;
    let code = value.get("error")?.as_str()?;
    let plausible = !code.is_empty()
        && code.len() <= 64
        && code.bytes().all(|b| b.is_ascii_lowercase() || b == b'_');
    plausible.then(|| code.to_owned())
}

fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    value.parse::<u64>().ok().map(Duration::from_secs)
}

/// The `Date` header (an HTTP date, `Sun, 06 Nov 1994 08:49:37 GMT`), if valid.
fn date(headers: &HeaderMap) -> Option<DateTime<Utc>> {
    let value = headers.get(DATE)?.to_str().ok()?;
    DateTime::parse_from_rfc2822(value.trim())
        .ok()
        .map(|date| date.with_timezone(&Utc))
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("json"))
}

/// Turns an upstream answer into a token or a failure class.
fn classify(
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<FetchedToken, UpstreamError> {
    let code = status.as_u16();
    match code {
        200..=299 => parse_token_answer(code, body),
        429 => Err(UpstreamError::Throttled {
            status: code,
            retry_after: retry_after(headers),
        }),
        // edX's rate limiter answers a bare 403 with HTML; an OAuth 403 carries an error code.
        403 => match oauth_error_code(body) {
            Some(error) => Err(UpstreamError::Rejected {
                status: code,
                code: error,
            }),
            None => Err(UpstreamError::Throttled {
                status: code,
                retry_after: retry_after(headers),
            }),
        },
        400 | 401 => Err(UpstreamError::Rejected {
            status: code,
            code: oauth_error_code(body).unwrap_or_else(|| "no_error_code".to_owned()),
        }),
        500..=599 => Err(UpstreamError::Unavailable {
            status: Some(code),
            detail: format!("HTTP {code}"),
            retry_after: retry_after(headers),
        }),
        300..=399 => Err(UpstreamError::InvalidResponse {
            status: code,
            detail: "redirects are not followed".to_owned(),
        }),
        _ => Err(UpstreamError::InvalidResponse {
            status: code,
            detail: if is_json(headers) {
                oauth_error_code(body).unwrap_or_else(|| "unexpected status".to_owned())
            } else {
                "unexpected status".to_owned()
            },
        }),
    }
}

fn parse_token_answer(status: u16, body: &[u8]) -> Result<FetchedToken, UpstreamError> {
    let invalid = |detail: &str| UpstreamError::InvalidResponse {
        status,
        detail: detail.to_owned(),
    };
    let value: Value = serde_json::from_slice(body).map_err(|_| invalid("body is not JSON"))?;
    let object = value
        .as_object()
        .ok_or_else(|| invalid("body is not a JSON object"))?;
    if object.contains_key("error") {
        let code = oauth_error_code(body).unwrap_or_else(|| "unreadable".to_owned());
        return Err(invalid(&format!("error {code} in a success answer")));
    }
    let access_token = object
        .get("access_token")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| invalid("no access_token"))?;
    let expires_in = parse_expires_in(object.get("expires_in"))
        .map_err(|m| invalid(&format!("expires_in {m}")))?;
    Ok(FetchedToken {
        access_token: SecretString::from(access_token.to_owned()),
        token_type: object
            .get("token_type")
            .and_then(Value::as_str)
            .map(str::to_owned),
        expires_in,
        scope: object
            .get("scope")
            .and_then(Value::as_str)
            .map(str::to_owned),
        timing: None,
    })
}

#[cfg(test)]
mod tests;
