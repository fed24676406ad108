//! Logging and tracing: a tracing subscriber writing text or JSON to stderr (and, when an
//! OTLP endpoint is configured, exporting spans: `otel.rs`), one span per request carrying
//! method, matched route, request id, tenant and caller key id, and the request id itself
//! (its clean-up middleware and its extractor).

/// Prometheus metrics.
pub mod metrics;
mod otel;
/// W3C trace context in and out: the caller's trace continued, and passed on by outbound
/// calls.
pub mod propagation;
mod request_id;

use std::time::Duration;

use axum::body::Body;
use axum::extract::{FromRequestParts, MatchedPath};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, Request, Response};
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::{field, Span};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer};

pub use otel::{OtelSettings, OtlpProtocol};

/// How log lines are written (`TOKENVEND_LOG_FORMAT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// The process's telemetry, to be shut down when the service stops: queued spans are
/// exported then.
#[derive(Default)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Exports the spans still queued (a bounded wait) and stops the exporter.
    pub async fn shutdown(self) {
        let Some(provider) = self.provider else {
            return;
        };
        // The exporter's own thread does the sending; waiting for it blocks.
        let flushed = tokio::task::spawn_blocking(move || provider.shutdown()).await;
        if let Ok(Err(error)) = flushed {
            eprintln!("tokenvend: could not export the last spans: {error}");
        }
    }
}

/// Installs the global subscriber, exporting spans over OTLP when `traces` says so;
/// `RUST_LOG` filters the log (default `info`). Does nothing if a subscriber is already
/// installed (tests install their own).
pub fn init_with_traces(
    format: LogFormat,
    traces: Option<&OtelSettings>,
) -> Result<Telemetry, String> {
    let Some(settings) = traces else {
        init(format);
        return Ok(Telemetry::default());
    };
    let provider = otel::provider(settings)?;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let log = tracing_subscriber::fmt::layer()
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    let log = match format {
        LogFormat::Text => log.boxed(),
        LogFormat::Json => log
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .boxed(),
    };
    let installed = tracing_subscriber::registry()
        .with(log.with_filter(filter))
        .with(otel::layer(&provider))
        .try_init();
    if installed.is_ok() {
        otel::mark_exporting();
    }
    Ok(Telemetry {
        provider: Some(provider),
    })
}

/// Installs the global subscriber; `RUST_LOG` filters (default `info`).
/// Does nothing if one is already installed (tests install their own).
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
    };
}

pub const REQUEST_ID_HEADER: &str = "x-request-id";
/// The header's name as a value: inserted so, it is not copied (a `&str` name is, each
/// time it is new in the map).
pub const REQUEST_ID: axum::http::HeaderName =
    axum::http::HeaderName::from_static(REQUEST_ID_HEADER);

/// Gives a request its id: the client's when it is short and plain (it is echoed and
/// logged), else a new UUID in its place; returns it, for the answer. A new id allocates
/// nothing of its own (`request_id::fresh`).
pub fn assign_request_id(headers: &mut axum::http::HeaderMap) -> Option<HeaderValue> {
    if let Some(value) = client_request_id(headers) {
        return Some(value.clone());
    }
    let value = request_id::fresh();
    headers.insert(REQUEST_ID, value.clone());
    Some(value)
}

/// The client's request id, when it is short and plain enough to echo and log.
pub fn client_request_id(headers: &axum::http::HeaderMap) -> Option<&HeaderValue> {
    let usable = |value: &&HeaderValue| {
        let bytes = value.as_bytes();
        !bytes.is_empty()
            && bytes.len() <= 128
            && bytes
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.:/+=".contains(b))
    };
    headers.get(REQUEST_ID_HEADER).filter(usable)
}

/// The id of a request that is not passed on (the hot path's, `routes::hot`): the
/// client's, else a new one.
pub fn request_id_of(headers: &axum::http::HeaderMap) -> HeaderValue {
    client_request_id(headers)
        .cloned()
        .unwrap_or_else(request_id::fresh)
}

/// The request id given by `assign_request_id` (the client's, or a new one).
#[derive(Debug, Clone, Default)]
pub struct RequestId(pub Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for RequestId {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(RequestId(
            parts
                .headers
                .get(REQUEST_ID_HEADER)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
        ))
    }
}

/// The hot path: its successful answers are counted in metrics and logged at debug level,
/// so that a busy caller does not pay for (or flood the log with) a line per token.
pub const HOT_ROUTE: &str = "/tenants/{id}/token";

pub fn request_span(request: &Request<Body>) -> Span {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("-", MatchedPath::as_str);
    let request_id = request
        .headers()
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-");
    span_of(request.method(), route, request_id, request.headers())
}

/// The span of a request of `method` to `route` (`request_span`'s, for a request that
/// has no matched route in its extensions: the hot path's).
pub fn span_of(method: &Method, route: &str, request_id: &str, headers: &HeaderMap) -> Span {
    macro_rules! request_span {
        ($level:expr) => {
            tracing::span!(
                $level,
                "request",
                method = %method,
                route,
                request_id,
                tenant = field::Empty,
                caller = field::Empty,
                otel.name = field::Empty,
                otel.kind = "server",
                http.response.status_code = field::Empty,
            )
        };
    }
    let span = if route == HOT_ROUTE && method == Method::GET {
        request_span!(tracing::Level::DEBUG)
    } else {
        request_span!(tracing::Level::INFO)
    };
    if otel::exporting() {
        span.record("otel.name", format!("{method} {route}"));
        propagation::continue_trace(&span, headers);
    }
    span
}

pub fn log_response<B>(response: &Response<B>, latency: Duration, span: &Span) {
    let status = response.status().as_u16();
    let latency_ms = latency.as_secs_f64() * 1000.0;
    if otel::exporting() {
        span.record("http.response.status_code", i64::from(status));
    }
    // A hot-path request (its span is at debug level; disabled below it): only a failure
    // is worth a line at info.
    let hot = span
        .metadata()
        .is_none_or(|metadata| *metadata.level() == tracing::Level::DEBUG);
    if hot {
        if status < 400 {
            tracing::debug!(status, latency_ms, "request finished");
        } else {
            let request_id = response
                .headers()
                .get(REQUEST_ID_HEADER)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-");
            tracing::info!(
                route = HOT_ROUTE,
                request_id,
                status,
                latency_ms,
                "request finished"
            );
        }
        return;
    }
    tracing::info!(status, latency_ms, "request finished");
}
