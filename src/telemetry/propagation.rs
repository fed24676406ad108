//! W3C trace context (`traceparent`, `tracestate`), in and out, in one place: a request's
//! span continues its caller's trace, and the outbound calls that pass a trace on (token
//! requests to edX, proxied API calls) take it from here.
//!
//! With spans exported, an outbound call carries the context of the span it is made in
//! (the OpenTelemetry propagator), so that the far side's parent id is that span's id.
//! Without, nothing is exported to point at: the token client sends no trace context, and
//! the proxy continues its caller's trace with a new parent id (or starts a trace), so
//! that the API's logs can still be joined with the caller's.

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator as _};
use opentelemetry::trace::{
    SpanContext, SpanId, TraceContextExt as _, TraceFlags, TraceId, TraceState,
};
use opentelemetry::Context;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{IdGenerator as _, RandomIdGenerator};
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// Makes `span` continue the caller's trace when its request carries a W3C `traceparent`
/// (and `tracestate`).
pub fn continue_trace(span: &Span, headers: &HeaderMap) {
    let parent = opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.extract(&Extract(headers))
    });
    // Without a valid traceparent this is an empty context: the span starts a trace.
    let _ = span.set_parent(parent);
}

/// The trace context to send with an outbound call made in `span`: its `traceparent` (and
/// `tracestate`, when there is one) when the span is exported, none when it is not.
pub fn span_context_headers(span: &Span) -> Option<HeaderMap> {
    let context = span.context();
    if !context.span().span_context().is_valid() {
        return None;
    }
    let mut headers = HeaderMap::new();
    opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.inject_context(&context, &mut Inject(&mut headers));
    });
    Some(headers)
}

/// The trace context of an outbound call made outside any exported span, on behalf of a
/// request with `incoming` headers: the caller's trace continued with a new parent id, or
/// a new (sampled) trace when the caller sent none or a malformed one. Only `traceparent`:
/// no span of ours stands behind it to carry the caller's `tracestate`.
pub fn continued_traceparent(incoming: &HeaderMap) -> HeaderMap {
    let propagator = TraceContextPropagator::new();
    let caller = propagator.extract_with_context(&Context::new(), &Extract(incoming));
    let caller = caller.span().span_context().clone();
    let ids = RandomIdGenerator::default();
    let (trace_id, flags) = if caller.is_valid() {
        (caller.trace_id(), caller.trace_flags())
    } else {
        (
            new_id(|| ids.new_trace_id(), TraceId::INVALID),
            TraceFlags::SAMPLED,
        )
    };
    let span_id = new_id(|| ids.new_span_id(), SpanId::INVALID);
    let ours = SpanContext::new(trace_id, span_id, flags, false, TraceState::NONE);
    let mut headers = HeaderMap::new();
    propagator.inject_context(
        &Context::new().with_remote_span_context(ours),
        &mut Inject(&mut headers),
    );
    headers
}

/// A random id other than the invalid all-zero one.
fn new_id<T: PartialEq>(generate: impl Fn() -> T, invalid: T) -> T {
    loop {
        let id = generate();
        if id != invalid {
            return id;
        }
    }
}

struct Extract<'a>(&'a HeaderMap);

impl Extractor for Extract<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|name| name.as_str()).collect()
    }
}

/// Writes the propagator's headers; an empty `tracestate` is left out.
struct Inject<'a>(&'a mut HeaderMap);

impl Injector for Inject<'_> {
    fn set(&mut self, key: &str, value: String) {
        if value.is_empty() {
            return;
        }
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(key.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn traceparent_of(headers: &HeaderMap) -> &str {
        headers["traceparent"].to_str().unwrap()
    }

    fn incoming(traceparent: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("traceparent", HeaderValue::from_str(traceparent).unwrap());
        headers.insert("tracestate", HeaderValue::from_static("vendor=caller"));
        headers
    }

    #[test]
    fn a_callers_trace_is_continued_with_a_new_parent_id() {
        let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
        let sent = continued_traceparent(&incoming(&format!("00-{trace}-00f067aa0ba902b7-01")));
        let parts: Vec<&str> = traceparent_of(&sent).split('-').collect();
        assert_eq!(parts.len(), 4, "{parts:?}");
        assert_eq!((parts[0], parts[1], parts[3]), ("00", trace, "01"));
        assert_eq!(parts[2].len(), 16);
        assert_ne!(parts[2], "00f067aa0ba902b7", "a new parent id");
        assert_ne!(parts[2], "0000000000000000");
        assert_eq!(sent.len(), 1, "only traceparent: {sent:?}");
        let unsampled =
            continued_traceparent(&incoming(&format!("00-{trace}-00f067aa0ba902b7-00")));
        assert!(
            traceparent_of(&unsampled).ends_with("-00"),
            "the caller's flags"
        );
    }

    #[test]
    fn a_missing_or_malformed_trace_starts_a_sampled_one() {
        for caller in [
            HeaderMap::new(),
            incoming("garbage"),
            incoming("00-00000000000000000000000000000000-00f067aa0ba902b7-01"),
            incoming("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01"),
            incoming("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01"),
        ] {
            let sent = continued_traceparent(&caller);
            let sent = traceparent_of(&sent);
            assert_eq!(sent.len(), 55, "{sent}");
            assert!(sent.starts_with("00-") && sent.ends_with("-01"), "{sent}");
            assert!(!sent.contains("4bf92f3577b34da6a3ce929d0e0e4736"), "{sent}");
            assert!(!sent.contains("00000000000000000000000000000000"), "{sent}");
        }
        let one = continued_traceparent(&HeaderMap::new());
        let other = continued_traceparent(&HeaderMap::new());
        assert_ne!(traceparent_of(&one), traceparent_of(&other));
    }

    #[test]
    fn a_span_that_is_not_exported_gives_no_context() {
        // No OpenTelemetry layer in this test: no span is exported.
        let span = tracing::info_span!("proxy_call");
        assert!(span_context_headers(&span).is_none());
        assert!(span_context_headers(&Span::none()).is_none());
    }
}
