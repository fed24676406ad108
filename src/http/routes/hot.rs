//! The hot route served in front of axum's `Router`: `GET /tenants/{id}/token` with no
//! query and no body, a `tv_` key with the tenant's token scope and within its rate, and a
//! held token that `Vendor::token` would serve as it is (a plain hit) — answered here,
//! without the router's boxed routes, futures, extensions and path parameters, with the
//! very status, headers, bytes, span, log line and metrics of the router's answer: each
//! is made by the function the router's path uses (`auth::bearer`, `ScopeSet::
//! token_access`, `Held::plain_hit`, `HeldToken::response_json`,
//! `telemetry::span_of`/`log_response`). Every other request goes to the router
//! untouched, and nothing is charged before the last check: a key's rate is taken only
//! once the answer is certain, an unknown key is left to the router (which counts the
//! failure against the client's address).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::ConnectInfo;
use axum::http::{header, HeaderValue, Method, Request, Response};
use axum::routing::future::RouteFuture;
use axum::{BoxError, Router};
use http_body_util::{Either, Full};
use pin_project_lite::pin_project;
use tower::Service;

use crate::domain::TenantAccess;
use crate::http::auth::{bearer, identity::looks_like_jwt};
use crate::http::state::AppState;
use crate::telemetry::{self, HOT_ROUTE, REQUEST_ID};

/// An answer's body: the hot path's bytes (`Left`) or the router's (`Right`).
pub type HotBody = Either<Full<Bytes>, Body>;

/// The router behind the hot path; one per connection (`per_peer`).
#[derive(Clone)]
pub struct HotPath {
    router: Router,
    state: AppState,
    /// Put in the extensions of the requests passed to the router (`ConnectInfo`).
    peer: Option<SocketAddr>,
}

impl HotPath {
    /// `router` (`routes::router(state)`) behind the hot path over the same `state`.
    pub fn new(router: Router, state: AppState) -> Self {
        Self {
            router,
            state,
            peer: None,
        }
    }

    /// The service of each connection, by its peer address (for `startup::serve`).
    pub fn per_peer(self) -> impl FnMut(SocketAddr) -> HotPath {
        move |peer| HotPath {
            peer: Some(peer),
            ..self.clone()
        }
    }
}

impl<B> Service<Request<B>> for HotPath
where
    B: HttpBody<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<HotBody>;
    type Error = Infallible;
    type Future = HotFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Service::<Request<B>>::poll_ready(&mut self.router, cx)
    }

    fn call(&mut self, mut request: Request<B>) -> HotFuture {
        let started = Instant::now();
        if let Some(response) = answer(&self.state, &request, started) {
            return HotFuture::Served {
                response: Some(response),
            };
        }
        if let Some(peer) = self.peer {
            request.extensions_mut().insert(ConnectInfo(peer));
        }
        HotFuture::Routed {
            future: self.router.call(request),
        }
    }
}

/// The tenant id of a hot-route path, as it is: none with an escape (`%`), which the
/// router decodes.
fn hot_tenant(path: &str) -> Option<&str> {
    let id = path.strip_prefix("/tenants/")?.strip_suffix("/token")?;
    (!id.is_empty() && !id.contains(['/', '%'])).then_some(id)
}

/// The router's answer to `request` when it is a plain hit of a `tv_` key allowed it, now;
/// `None` (nothing done, nothing charged) otherwise.
fn answer<B: HttpBody>(
    state: &AppState,
    request: &Request<B>,
    started: Instant,
) -> Option<Response<HotBody>> {
    if request.method() != Method::GET
        || request.uri().query().is_some()
        || !request.body().is_end_stream()
    {
        return None;
    }
    let raw = hot_tenant(request.uri().path())?;
    let key = bearer(request.headers()).filter(|key| !looks_like_jwt(key))?;
    let entry = state.keys.authenticate(key)?;
    let hit = state.vendor.held(raw)?.plain_hit()?;
    if entry.scopes.token_access(raw, Some(hit.uid())) != TenantAccess::Granted {
        return None;
    }
    // The last check, and the only one that changes anything: a refusal took nothing.
    entry.admit().ok()?;

    // Served: what `routes::Stack` and the token route do around a hit.
    let request_id = telemetry::request_id_of(request.headers());
    let span = telemetry::span_of(
        &Method::GET,
        HOT_ROUTE,
        request_id.to_str().unwrap_or("-"),
        request.headers(),
    );
    let _entered = span.enter();
    span.record("caller", entry.id.as_str());
    span.record("tenant", hit.id().as_str());
    let looked_up = Instant::now();
    let (body, length) = hit.serve();
    state
        .metrics
        .observe_token_request(looked_up.elapsed().as_secs_f64());
    let mut response = Response::new(Either::Left(Full::new(body)));
    let headers = response.headers_mut();
    headers.reserve(5);
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    headers.insert(REQUEST_ID, request_id);
    // Last, as the router sets it (hyper would write its own after a `connection` header).
    if let Ok(length) = HeaderValue::from_maybe_shared(length) {
        headers.insert(header::CONTENT_LENGTH, length);
    }
    telemetry::log_response(&response, started.elapsed(), &span);
    Some(response)
}

pin_project! {
    /// The hot path's answer, ready at once, or the router's.
    #[project = HotProjection]
    pub enum HotFuture {
        Served { response: Option<Response<HotBody>> },
        Routed { #[pin] future: RouteFuture<Infallible> },
    }
}

impl Future for HotFuture {
    type Output = Result<Response<HotBody>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            HotProjection::Served { response } => match response.take() {
                Some(response) => Poll::Ready(Ok(response)),
                None => panic!("HotFuture polled after it was ready"),
            },
            HotProjection::Routed { future } => future
                .poll(cx)
                .map(|answered| answered.map(|response| response.map(Either::Right))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::hot_tenant;

    #[test]
    fn only_a_plain_token_path_names_a_hot_tenant() {
        let cases = [
            ("/tenants/acme/token", Some("acme"), "the hot route"),
            ("/tenants/a-1/token", Some("a-1"), "digits and dashes"),
            ("/tenants//token", None, "an empty id"),
            (
                "/tenants/%61cme/token",
                None,
                "an escape: the router decodes it",
            ),
            ("/tenants/a/b/token", None, "two segments"),
            ("/tenants/acme/token/", None, "a trailing slash"),
            ("/tenants/acme/token/status", None, "another route"),
            ("/tenants/acme", None, "the tenant itself"),
            ("//tenants/acme/token", None, "not the route's prefix"),
        ];
        for (path, expected, why) in cases {
            assert_eq!(hot_tenant(path), expected, "{path}: {why}");
        }
    }
}
