//! One listener's accept loop, with the limits `axum::serve` lacks: hyper runs with a
//! timer, so a client must send its request headers within the header timeout (which
//! also closes a kept-alive connection left idle that long), and at most
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

use axum::extract::ConnectInfo;
use axum::http::Request;
use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tower::ServiceExt;

use crate::config::ServingSettings;

/// Serves `router` on `listener` until `stop` turns true (or its sender is gone), then
/// waits for the open connections to finish.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    settings: &ServingSettings,
    mut stop: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(settings.header_timeout)
        .keep_alive(true);
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
        let service = router
            .clone()
            .map_request(move |mut request: Request<Incoming>| {
                request
                    .extensions_mut()
                    .insert(ConnectInfo::<SocketAddr>(remote));
                request
            });
        let connection =
            http.serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%remote, %error, "connection closed with an error");
            }
            drop(slot);
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
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
