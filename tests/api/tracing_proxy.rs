//! The OTLP exporter ignores `HTTP(S)_PROXY` like every other outbound client: with the
//! proxy variables pointing at a local listener, spans still reach the collector directly
//! and the listener sees no connection.

use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::helpers::{start_on_port_0, terminate, tokenvend, wait_healthy, Started};
use crate::tracing::{collector, spans};

#[tokio::test]
async fn spans_go_to_the_collector_past_the_proxy_variables() {
    let (endpoint, received) = collector().await;
    let proxy = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy_url = format!("http://{}", proxy.local_addr().unwrap());
    let proxied = Arc::new(AtomicBool::new(false));
    let seen = proxied.clone();
    let watcher = tokio::spawn(async move {
        while proxy.accept().await.is_ok() {
            seen.store(true, Ordering::SeqCst);
        }
    });

    let dir = tempfile::tempdir().unwrap();
    let mut cmd = tokenvend(dir.path());
    cmd.env("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")
        .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        .env_remove("OTEL_SDK_DISABLED")
        .env_remove("NO_PROXY")
        .env_remove("no_proxy");
    for variable in [
        "HTTP_PROXY",
        "http_proxy",
        "HTTPS_PROXY",
        "https_proxy",
        "ALL_PROXY",
    ] {
        cmd.env(variable, &proxy_url);
    }
    let Started {
        mut child, base, ..
    } = start_on_port_0(cmd.stdout(Stdio::null())).await;
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    wait_healthy(&client, &base, &mut child).await;
    let resp = client.get(format!("{base}/readyz")).send().await.unwrap();
    assert_eq!(resp.status(), 200);

    // The spans are flushed at shutdown.
    terminate(&child);
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status:?}");
    watcher.abort();
    assert!(
        !proxied.load(Ordering::SeqCst),
        "the exporter connected to the HTTP(S)_PROXY listener"
    );
    assert!(
        !spans(&received).is_empty(),
        "no span reached the collector"
    );
}
