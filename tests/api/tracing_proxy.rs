//! Tracing and proxies, both kinds: the OTLP exporter ignores `HTTP(S)_PROXY` like every
//! other outbound client (with the proxy variables pointing at a local listener, spans
//! still reach the collector directly and the listener sees no connection); and a call
//! through tokenvend's proxy passes on the trace context of its own exported span.

use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use edx_issuer::Issuer;
use serde_json::{json, Value};

use crate::helpers::{
    eventually_within, start_on_port_0, terminate, tokenvend, wait_healthy, Started,
};
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

/// With spans exported, a proxied API call carries its own exported `proxy_call` span as
/// the parent in the caller's trace (not a made-up parent id), and the caller's
/// `tracestate` with it.
#[tokio::test]
async fn a_proxied_calls_parent_id_is_its_exported_span() {
    let (endpoint, received) = collector().await;
    let issuer = Issuer::new(chrono::Utc::now);
    let issuer_server = issuer.start().await.unwrap();
    let secret = format!("proxy-trace-secret-{}", uuid::Uuid::new_v4().simple());
    issuer.register("client-proxy-traced", &secret);

    let dir = tempfile::tempdir().unwrap();
    let admin_key = hex::encode(rand::random::<[u8; 32]>());
    let mut cmd = tokenvend(dir.path());
    cmd.env("TOKENVEND_ADMIN_KEY", &admin_key)
        .env("TOKENVEND_ALLOW_INSECURE_TOKEN_URLS", "1")
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")
        // Longer than the test: the spans arrive with the flush at shutdown.
        .env("OTEL_BSP_SCHEDULE_DELAY", "600000")
        .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        .env_remove("OTEL_SDK_DISABLED")
        .stdout(Stdio::null());
    let Started {
        mut child, base, ..
    } = start_on_port_0(&mut cmd).await;
    let client = reqwest::Client::new();
    wait_healthy(&client, &base, &mut child).await;
    let resp = client
        .post(format!("{base}/tenants"))
        .bearer_auth(&admin_key)
        .json(
            &json!({"id": "proxied", "name": "Proxied", "client_id": "client-proxy-traced",
            "client_secret": secret, "token_url": issuer_server.token_url(),
            "api_base_url": issuer_server.api_base_url()}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);

    let trace_id = "7bf92f3577b34da6a3ce929d0e0e4739";
    let caller_span = "00f067aa0ba902b7";
    let resp = client
        .get(format!(
            "{base}/tenants/proxied/proxy/api/enterprise/v1/enterprise-customer/"
        ))
        .bearer_auth(&admin_key)
        .header("traceparent", format!("00-{trace_id}-{caller_span}-01"))
        .header("tracestate", "vendor=caller")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let echo: Value = resp.json().await.unwrap();
    let sent = echo["headers"]["traceparent"]
        .as_array()
        .expect("a traceparent reached the API");
    assert_eq!(sent.len(), 1, "{sent:?}");
    let sent = sent[0].as_str().unwrap().to_owned();
    assert_eq!(echo["headers"]["tracestate"], json!(["vendor=caller"]));
    let parts: Vec<&str> = sent.split('-').collect();
    assert_eq!(parts.len(), 4, "{sent}");
    assert_eq!((parts[1], parts[3]), (trace_id, "01"), "{sent}");
    assert_ne!(parts[2], caller_span, "{sent}");

    terminate(&child);
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status:?}");
    eventually_within(
        Duration::from_secs(10),
        "the proxy_call span flushed at shutdown",
        async || {
            spans(&received)
                .iter()
                .any(|s| s["name"] == "proxy_call" && s["traceId"] == trace_id)
        },
    )
    .await;
    let spans = spans(&received);
    let proxied: Vec<&Value> = spans
        .iter()
        .filter(|s| s["traceId"] == trace_id && s["name"] == "proxy_call")
        .collect();
    assert_eq!(proxied.len(), 1, "{spans:#?}");
    assert_eq!(
        proxied[0]["spanId"], parts[2],
        "the API's parent id is the exported proxy_call span"
    );
}
