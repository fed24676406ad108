//! The proxy (openapi.yaml, "The proxy"): a caller's request passed on to the tenant's edX
//! API with the tenant's token, which the caller never sees; bodies streamed both ways; a
//! `401` answered by one retry with a new token when the request body was kept (at most
//! 1 MiB); tokenvend's own failures told apart from the API's answers.

mod body;
mod headers;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, Method, Response, StatusCode};
use tracing::Instrument;
use url::Url;

use self::body::{BodyError, OutgoingBody};
use crate::domain::{ProxyPath, TenantId};
use crate::engine::{HeldToken, VendError, Vendor};
use crate::outbound::{self, UrlPolicy};
use crate::telemetry::metrics::Metrics;
use crate::telemetry::propagation;

pub use body::{MAX_BODY, RETRY_COPY};
pub use headers::FINGERPRINT_HEADER;

/// How long connecting to an API may take (within the proxy timeout).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// One call to pass on.
pub struct ProxyCall {
    pub tenant: TenantId,
    pub method: Method,
    pub path: ProxyPath,
    /// The raw query string, passed on unchanged.
    pub query: Option<String>,
    pub headers: HeaderMap,
    pub body: Body,
    pub request_id: String,
    /// Who asks (the caller key's id): a retry after a `401` counts against its fetch
    /// rate.
    pub caller: String,
}

/// Why a call was not passed on (or its answer not had): tokenvend's own failures.
#[derive(Debug)]
pub enum ProxyError {
    /// No token could be had, or the tenant is unknown or unusable.
    Token(VendError),
    /// The API could not be reached (the cause, for the log).
    Unreachable(String),
    /// The API did not answer within the proxy timeout.
    Timeout,
    /// The request body is over `MAX_BODY`.
    TooLarge,
    /// The request body could not be read from the caller.
    Unreadable,
    /// The caller did not send its request body within the proxy timeout.
    SlowBody,
}

pub struct Proxy {
    vendor: Vendor,
    client: reqwest::Client,
    metrics: Arc<Metrics>,
    timeout: Duration,
}

impl Proxy {
    /// A proxy whose calls follow the outbound policy; `timeout` bounds the wait for an
    /// answer, and each wait for more of its body.
    pub fn new(
        vendor: Vendor,
        metrics: Arc<Metrics>,
        policy: UrlPolicy,
        timeout: Duration,
    ) -> reqwest::Result<Self> {
        Ok(Self {
            vendor,
            client: outbound::streaming_client(policy, CONNECT_TIMEOUT.min(timeout), timeout)?,
            metrics,
            timeout,
        })
    }

    /// Passes `call` on and returns the API's answer, streamed.
    pub async fn forward(&self, call: ProxyCall) -> Result<Response<Body>, ProxyError> {
        let started = Instant::now();
        let tenant = call.tenant.clone();
        let result = self.forward_once_or_twice(call).await;
        let status = result.as_ref().ok().map(|r| r.status().as_u16());
        self.metrics
            .observe_proxy(tenant.as_str(), status, started.elapsed().as_secs_f64());
        self.vendor.status_view().record_proxy_call(&tenant, status);
        result
    }

    async fn forward_once_or_twice(&self, call: ProxyCall) -> Result<Response<Body>, ProxyError> {
        // Checked before the body is read and before any token is used...
        self.target(&call.tenant, &call.path, call.query.as_deref())?;
        let declared = call
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > MAX_BODY) {
            return Err(ProxyError::TooLarge);
        }
        // A caller that trickles its body (or stops sending it) holds a connection and a
        // buffer: the part kept for a retry must arrive within the proxy timeout.
        let body = tokio::time::timeout(self.timeout, OutgoingBody::read(call.body))
            .await
            .map_err(|_| ProxyError::SlowBody)?
            .map_err(|e| match e {
                BodyError::TooLarge => ProxyError::TooLarge,
                BodyError::Unreadable => ProxyError::Unreadable,
            })?;
        let mut sent_headers = headers::request_headers(&call.headers, body.kept().is_none());
        if let Ok(id) = HeaderValue::from_str(&call.request_id) {
            sent_headers.insert("x-request-id", id);
        }
        // Sent when the call's span is not exported (`send` puts that span's own context
        // in its place when it is).
        sent_headers.extend(propagation::continued_traceparent(&call.headers));
        let token = self
            .vendor
            .token(&call.tenant, Duration::ZERO)
            .await
            .map_err(ProxyError::Token)?;
        // ...and taken again with the token in hand: the tenant's API base may have moved
        // while the body arrived, and the token is only ever sent to the current one.
        let url = self.target(&call.tenant, &call.path, call.query.as_deref())?;
        let (method, headers) = (&call.method, &sent_headers);
        match body {
            OutgoingBody::Kept(bytes) => {
                let first = self
                    .send(method, &url, headers, &token, bytes.clone().into())
                    .await?;
                if first.status() != StatusCode::UNAUTHORIZED {
                    return Ok(answer(first, &token));
                }
                let Some(fresh) = self
                    .vendor
                    .replace_refused(&call.tenant, &token, &call.caller)
                    .await
                else {
                    return Ok(answer(first, &token));
                };
                drop(first);
                let url = self.target(&call.tenant, &call.path, call.query.as_deref())?;
                self.metrics.count_proxy_retry(call.tenant.as_str());
                tracing::info!(tenant = %call.tenant, "the API refused the token; retrying once with a new one");
                let second = self
                    .send(method, &url, headers, &fresh, bytes.into())
                    .await?;
                Ok(answer(second, &fresh))
            }
            OutgoingBody::Streamed {
                head,
                rest,
                over_limit,
            } => {
                let streamed = OutgoingBody::stream(head, rest, over_limit.clone());
                let answered = self
                    .send(method, &url, headers, &token, streamed)
                    .await
                    .map_err(|e| {
                        if OutgoingBody::went_over_limit(&over_limit) {
                            ProxyError::TooLarge
                        } else {
                            e
                        }
                    })?;
                if answered.status() == StatusCode::UNAUTHORIZED {
                    // Too large to send again: the token is still dropped for the next call.
                    let _ = self
                        .vendor
                        .invalidate(&call.tenant, &token.fingerprint, &call.caller);
                }
                Ok(answer(answered, &token))
            }
        }
    }

    /// Where the call goes: the path under the tenant's current API base.
    fn target(
        &self,
        tenant: &TenantId,
        path: &ProxyPath,
        query: Option<&str>,
    ) -> Result<Url, ProxyError> {
        let base = self.vendor.api_base(tenant).map_err(ProxyError::Token)?;
        path.target(&base, query)
            .ok_or_else(|| ProxyError::Token(VendError::Unusable("api_base_url".to_owned())))
    }

    async fn send(
        &self,
        method: &Method,
        url: &Url,
        headers: &HeaderMap,
        token: &HeldToken,
        body: reqwest::Body,
    ) -> Result<reqwest::Response, ProxyError> {
        // edX takes a JWT as `JWT <token>`; opaque tokens are bearer tokens.
        let scheme = if token.token_type.eq_ignore_ascii_case("jwt") {
            "JWT"
        } else {
            "Bearer"
        };
        let mut authorization =
            HeaderValue::from_str(&format!("{scheme} {}", token.expose_token()))
                .map_err(|_| ProxyError::Token(VendError::Internal))?;
        authorization.set_sensitive(true);
        // One span per call to the API (two when a 401 is retried): never the token, the
        // query or the headers, only where it went and how it was answered.
        let span = tracing::info_span!(
            "proxy_call",
            "http.request.method" = %method,
            "server.address" = url.host_str().unwrap_or("-"),
            "url.path" = url.path(),
            "http.response.status_code" = tracing::field::Empty,
        );
        let mut headers = headers.clone();
        if let Some(trace) = propagation::span_context_headers(&span) {
            // The API's parent id is this call's exported span.
            headers.extend(trace);
        }
        let request = self
            .client
            .request(method.clone(), url.clone())
            .headers(headers)
            .header(header::AUTHORIZATION, authorization)
            .body(body);
        let sent = tokio::time::timeout(self.timeout, request.send())
            .instrument(span.clone())
            .await;
        match sent {
            Err(_) => Err(ProxyError::Timeout),
            Ok(Ok(response)) => {
                span.record(
                    "http.response.status_code",
                    i64::from(response.status().as_u16()),
                );
                Ok(response)
            }
            Ok(Err(error)) if error.is_timeout() => Err(ProxyError::Timeout),
            Ok(Err(error)) => Err(ProxyError::Unreachable(format!("{error:#}"))),
        }
    }
}

/// The API's answer for the caller: its status, its headers less hop-by-hop ones and
/// cookies, the fingerprint of the token used, and its body streamed.
fn answer(from: reqwest::Response, token: &HeldToken) -> Response<Body> {
    let status = from.status();
    let mut headers = headers::response_headers(from.headers());
    if let Ok(fingerprint) = HeaderValue::from_str(&token.fingerprint) {
        headers.insert(FINGERPRINT_HEADER, fingerprint);
    }
    let mut response = Response::new(Body::from_stream(from.bytes_stream()));
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}
