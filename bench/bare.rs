//! The bare baseline both benchmarks compare tokenvend's hit path with: axum serving the
//! very bytes and headers of one token answer at `path`, nothing else (no authentication,
//! no middleware). Included by `server.rs` and `scale.rs` (`#[path]`).

use axum::body::Bytes;
use axum::http::{header, HeaderValue};
use axum::routing::get;
use axum::Router;

/// Serves `body` at `path` on a free loopback port; returns the URL.
pub async fn serve(path: &str, body: Bytes) -> anyhow::Result<String> {
    let bare = Router::new().route(
        path,
        get(move || {
            let body = body.clone();
            async move {
                // Static values, as tokenvend's answer has: nothing copied per answer.
                (
                    [
                        (
                            header::CONTENT_TYPE,
                            HeaderValue::from_static("application/json"),
                        ),
                        (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
                        (header::PRAGMA, HeaderValue::from_static("no-cache")),
                    ],
                    body,
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}{path}", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, bare).await });
    Ok(url)
}
