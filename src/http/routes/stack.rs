//! The middleware every route runs behind — request id, request timeout, body limit,
//! trace span and log line — as one layer: one service and one future per request, no
//! boxing of its own and no allocation but the id it makes. `routes::router` applies it
//! with every step ([`Stack::ALL`]); the hit-path cost ladder (`bench/ladder.rs`) applies
//! the steps one at a time, so that it measures this very code.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use axum::body::{Body, HttpBody as _};
use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::http::{HeaderValue, StatusCode};
use axum::response::Response;
use axum::Router;
use pin_project_lite::pin_project;
use tower::{Layer, Service};
use tracing::instrument::Instrumented;
use tracing::Instrument as _;

use crate::http::extract::BODY_LIMIT;
use crate::telemetry::{self, REQUEST_ID, REQUEST_ID_HEADER};

/// How long one request may take before it is answered 408.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Proxied calls have a timeout of their own (`TOKENVEND_PROXY_TIMEOUT`) and stream their
/// answers: the request timeout is for the other routes.
const UNTIMED_ROUTE_PREFIX: &str = "/tenants/{id}/proxy/";

/// Which steps of the middleware to apply; the service runs with [`Stack::ALL`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stack {
    /// Every request gets an id (`x-request-id`): the client's if plain, else a new
    /// UUID; echoed in the answer and logged.
    pub request_id: bool,
    /// Routes but the proxy's answer 408 after [`REQUEST_TIMEOUT`].
    pub timeout: bool,
    /// Request bodies are limited to `BODY_LIMIT` (a request without one has none to
    /// limit).
    pub body_limit: bool,
    /// One span per request, and the request's log line.
    pub trace: bool,
}

impl Stack {
    pub const ALL: Stack = Stack {
        request_id: true,
        timeout: true,
        body_limit: true,
        trace: true,
    };
    pub const NONE: Stack = Stack {
        request_id: false,
        timeout: false,
        body_limit: false,
        trace: false,
    };

    /// `routes` (fallbacks included) behind the steps of this stack. Applied as a route
    /// layer, it runs once the route is matched, so its span names the route.
    pub fn around<S: Clone + Send + Sync + 'static>(self, routes: Router<S>) -> Router<S> {
        if self == Stack::NONE {
            return routes;
        }
        routes.layer(self)
    }
}

impl<S> Layer<S> for Stack {
    type Service = Middleware<S>;

    fn layer(&self, inner: S) -> Middleware<S> {
        Middleware {
            inner,
            limit: DefaultBodyLimit::max(BODY_LIMIT).layer(HandBack),
            stack: *self,
        }
    }
}

/// The service of [`Stack`].
#[derive(Clone)]
pub struct Middleware<S> {
    inner: S,
    /// axum's own body limit, which sets the limit body extractors read on the request
    /// and hands it back.
    limit: <DefaultBodyLimit as Layer<HandBack>>::Service,
    stack: Stack,
}

/// A service that answers a request with the request itself (for `Middleware::limit`).
#[derive(Debug, Clone, Copy)]
pub struct HandBack;

impl Service<Request> for HandBack {
    type Response = Request;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Request, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request) -> Self::Future {
        std::future::ready(Ok(request))
    }
}

impl<S> Service<Request> for Middleware<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Answer<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request) -> Self::Future {
        let stack = self.stack;
        let started = Instant::now();
        let request_id = stack
            .request_id
            .then(|| telemetry::assign_request_id(request.headers_mut()))
            .flatten();
        let span = if stack.trace {
            telemetry::request_span(&request)
        } else {
            tracing::Span::none()
        };
        let timed = stack.timeout
            && !request
                .extensions()
                .get::<MatchedPath>()
                .is_some_and(|route| route.as_str().starts_with(UNTIMED_ROUTE_PREFIX));
        if stack.body_limit && !request.body().is_end_stream() {
            request = match self.limit.call(request).into_inner() {
                Ok(request) => request,
                Err(never) => match never {},
            };
        }
        let future = {
            let _entered = span.enter();
            self.inner.call(request)
        };
        let future = if timed {
            Timed::Limited {
                future: tokio::time::timeout(REQUEST_TIMEOUT, future),
            }
        } else {
            Timed::Unlimited { future }
        };
        Answer {
            future: future.instrument(span),
            started,
            request_id,
            trace: stack.trace,
        }
    }
}

pin_project! {
    /// The answer of [`Middleware`]: the route's, or 408 past the timeout; with the
    /// request id, logged in the request's span.
    pub struct Answer<F> {
        #[pin]
        future: Instrumented<Timed<F>>,
        started: Instant,
        request_id: Option<HeaderValue>,
        trace: bool,
    }
}

impl<F> Future for Answer<F>
where
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let answered = ready!(this.future.as_mut().poll(cx));
        let mut response = answered.unwrap_or_else(|| {
            let mut timed_out = Response::new(Body::empty());
            *timed_out.status_mut() = StatusCode::REQUEST_TIMEOUT;
            timed_out
        });
        if let Some(id) = this.request_id.take() {
            if !response.headers().contains_key(REQUEST_ID_HEADER) {
                response.headers_mut().insert(REQUEST_ID, id);
            }
        }
        if *this.trace {
            let span = this.future.span();
            let _entered = span.enter();
            telemetry::log_response(&response, this.started.elapsed(), span);
        }
        Poll::Ready(Ok(response))
    }
}

pin_project! {
    /// A route's answer, within the request timeout or not.
    #[project = TimedProjection]
    pub enum Timed<F> {
        Limited { #[pin] future: tokio::time::Timeout<F> },
        Unlimited { #[pin] future: F },
    }
}

impl<F> Future for Timed<F>
where
    F: Future<Output = Result<Response, Infallible>>,
{
    /// `None`: the timeout passed first.
    type Output = Option<Response>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Response>> {
        match self.project() {
            TimedProjection::Limited { future } => match ready!(future.poll(cx)) {
                Ok(Ok(response)) => Poll::Ready(Some(response)),
                Ok(Err(never)) => match never {},
                Err(_elapsed) => Poll::Ready(None),
            },
            TimedProjection::Unlimited { future } => match ready!(future.poll(cx)) {
                Ok(response) => Poll::Ready(Some(response)),
                Err(never) => match never {},
            },
        }
    }
}
