//! OpenTelemetry: spans exported over OTLP/HTTP when an endpoint is configured, the W3C
//! propagator installed for `propagation.rs`, and the flush at shutdown.
//! Off (the default), none of this runs: no layer, no propagator, nothing per request.

use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig as _, WithHttpConfig as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use tracing::subscriber::Interest;
use tracing::Subscriber;
use tracing_subscriber::filter::dynamic_filter_fn;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

/// How spans are sent to the collector (`OTEL_EXPORTER_OTLP_PROTOCOL`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OtlpProtocol {
    /// `http/protobuf`, the default.
    #[value(name = "http/protobuf")]
    HttpProtobuf,
    /// `http/json`.
    #[value(name = "http/json")]
    HttpJson,
}

/// Trace export settings (`crate::config::otel` reads them from the standard variables).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtelSettings {
    pub protocol: OtlpProtocol,
    pub service_name: String,
}

/// Whether spans are exported: set once, when the exporting subscriber is installed.
static EXPORTING: AtomicBool = AtomicBool::new(false);

pub fn exporting() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

/// The tracer provider over an OTLP/HTTP exporter (batched; `OTEL_BSP_*` apply), with the
/// W3C trace-context propagator installed for incoming and outgoing requests.
pub fn provider(settings: &OtelSettings) -> Result<SdkTracerProvider, String> {
    let protocol = match settings.protocol {
        OtlpProtocol::HttpProtobuf => Protocol::HttpBinary,
        OtlpProtocol::HttpJson => Protocol::HttpJson,
    };
    // The endpoint comes from OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT, which the exporter
    // reads itself (adding /v1/traces to the general one, as the specification says).
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(exporter_client()?)
        .with_protocol(protocol)
        .build()
        .map_err(|e| format!("OTEL_EXPORTER_OTLP_ENDPOINT: cannot export traces there: {e}"))?;
    let resource = Resource::builder()
        .with_service_name(settings.service_name.clone())
        .build();
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build())
}

/// The exporter's HTTP client: the one the exporter would build (blocking, with the
/// standard timeout variables), but like every outbound client of tokenvend it ignores
/// `HTTP_PROXY`, `HTTPS_PROXY` and `ALL_PROXY` (see `crate::outbound`). It is built on a
/// thread of its own, as the exporter does: a blocking client may not be built (or
/// dropped) on the async runtime's threads.
fn exporter_client() -> Result<reqwest::blocking::Client, String> {
    let millis = |variable: &str| std::env::var(variable).ok()?.trim().parse::<u64>().ok();
    let timeout = millis("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT")
        .or_else(|| millis("OTEL_EXPORTER_OTLP_TIMEOUT"))
        .map_or(EXPORT_TIMEOUT, std::time::Duration::from_millis);
    std::thread::spawn(move || {
        reqwest::blocking::Client::builder()
            .no_proxy()
            .timeout(timeout)
            .build()
    })
    .join()
    .map_err(|_| "cannot build the OTLP exporter's HTTP client".to_owned())?
    .map_err(|e| format!("cannot build the OTLP exporter's HTTP client: {e}"))
}

/// The specification's default for `OTEL_EXPORTER_OTLP_TIMEOUT`.
const EXPORT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The layer that turns tokenvend's spans into OpenTelemetry spans: every span of ours
/// (the hot path's request span is at debug level, so the log filter alone would drop
/// it), and events at info and above as span events.
pub fn layer<S>(provider: &SdkTracerProvider) -> impl Layer<S>
where
    S: Subscriber + for<'span> LookupSpan<'span>,
{
    let tracer = provider.tracer("tokenvend");
    // Asked at every span and event, never cached per callsite ("sometimes"): with
    // per-layer filters, a callsite whose interest is cached as "always" reuses the
    // thread's last filter verdicts, and a `tracing::enabled!` check that no event
    // follows (sqlx makes one after every statement it does not log) leaves verdicts
    // that say "disabled". On PostgreSQL, where sqlx runs on the request's own thread,
    // the span or event after a query was then dropped: the upstream attempt (and so the
    // `traceparent` sent to edX), the stored-token read, whole admin requests.
    let exported =
        dynamic_filter_fn(|metadata, _| exported(metadata)).with_callsite_filter(|metadata| {
            if exported(metadata) {
                Interest::sometimes()
            } else {
                Interest::never()
            }
        });
    tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_filter(exported)
}

/// What is exported: every span of ours (the hot path's request span is at debug level,
/// so the log filter alone would drop it), and events at info and above.
fn exported(metadata: &tracing::Metadata<'_>) -> bool {
    if metadata.is_span() {
        metadata.target().starts_with("tokenvend") && *metadata.level() <= tracing::Level::DEBUG
    } else {
        *metadata.level() <= tracing::Level::INFO
    }
}

pub fn mark_exporting() {
    EXPORTING.store(true, Ordering::Relaxed);
}
