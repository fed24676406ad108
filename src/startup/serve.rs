//! One listener's accept loop, with the limits `axum::serve` lacks: a client must send
//! its request headers within the header timeout (which also closes a kept-alive
//! connection left idle that long: `deadline.rs`, one lazily checked deadline per
//! connection rather than hyper's timer per request), and at most
//! `max_connections` connections are open at once; further ones wait in the accept queue.
//! On shutdown the listener closes, idle connections end and in-flight requests finish.
//! Each request carries its connection's peer address (`ConnectInfo<SocketAddr>`), which
//! the failed-authentication budget is kept by.
//!
//! HTTP/1.1 only, as before (axum was built without HTTP/2): hyper has no header timeout
//! for HTTP/2 streams, and tokenvend's clients reach it over HTTP/1.1 or through a proxy.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use std::convert::Infallible;
use std::task::{Context, Poll};

use axum::body::Bytes;
use axum::extract::ConnectInfo;
use axum::http::Request;
use axum::response::Response;
use axum::routing::future::RouteFuture;
use axum::{BoxError, Router};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tower::Service;

use super::deadline::HeaderDeadline;
use crate::config::ServingSettings;

/// Serves each connection with `service_for(its peer address)` (`with_peer(router)`, or
/// the hot path in front of the router: `routes::hot`) on `listener` until `stop` turns
/// true (or its sender is gone), then waits for the open connections to finish.
pub async fn serve<M, S, B>(
    listener: TcpListener,
    mut service_for: M,
    settings: &ServingSettings,
    mut stop: watch::Receiver<bool>,
) -> std::io::Result<()>
where
    M: FnMut(SocketAddr) -> S,
    S: Service<Request<Incoming>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    // No hyper timer: the header timeout is each connection's `HeaderDeadline`.
    let mut http = http1::Builder::new();
    http.keep_alive(true);
    let slots = Arc::new(Semaphore::new(settings.max_connections));
    let graceful = GracefulShutdown::new();
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
            () = stopped(&mut stop) => break,
        };
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    accept_failed(&error).await;
                    continue;
                }
            },
            () = stopped(&mut stop) => break,
        };
        let deadline = HeaderDeadline::new(settings.header_timeout);
        let service = TowerToHyperService::new(deadline.track(service_for(remote)));
        let connection = http.serve_connection(TokioIo::new(stream), service);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            tokio::select! {
                biased;
                served = connection => if let Err(error) = served {
                    tracing::debug!(%remote, %error, "connection closed with an error");
                },
                // Dropping the connection closes it (no request is under way).
                () = deadline.passed() => tracing::debug!(%remote, "no request head within the header timeout"),
            }
            drop(slot);
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// Each connection served by `router`, its requests carrying the peer's address.
pub fn with_peer(router: Router) -> impl FnMut(SocketAddr) -> WithPeer {
    move |peer| WithPeer {
        router: router.clone(),
        peer,
    }
}

/// `router` with `ConnectInfo(peer)` in each request's extensions.
#[derive(Clone)]
pub struct WithPeer {
    router: Router,
    peer: SocketAddr,
}

impl<B> Service<Request<B>> for WithPeer
where
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = RouteFuture<Infallible>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Service::<Request<B>>::poll_ready(&mut self.router, cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        request.extensions_mut().insert(ConnectInfo(self.peer));
        self.router.call(request)
    }
}

async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopped| *stopped).await;
}

/// A connection that failed before it was accepted concerns that client only; anything
/// else (out of file descriptors, say) is logged and retried after a pause, as
/// `axum::serve` does, rather than spinning.
async fn accept_failed(error: &std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        error.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        return;
    }
    tracing::error!(%error, "cannot accept a connection; retrying in a second");
    tokio::time::sleep(Duration::from_secs(1)).await;
}
