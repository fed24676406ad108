//! OpenTelemetry through the real binary (global tracer providers are process-wide, so
//! the service runs in a process of its own): spans exported as OTLP/HTTP JSON to a small
//! collector on loopback, the caller's trace continued, and the trace passed on to edX.

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use axum::Router;
use edx_issuer::Issuer;
use serde_json::{json, Value};

use crate::helpers::eventually_within;
use crate::helpers::{start_on_port_0, terminate, tokenvend, wait_healthy, Started};

/// Every OTLP export request body received.
pub type Received = Arc<Mutex<Vec<Value>>>;

/// A collector accepting OTLP/HTTP JSON on `POST /v1/traces`; returns its base URL.
pub async fn collector() -> (String, Received) {
    let received: Received = Arc::default();
    let app = Router::new()
        .route(
            "/v1/traces",
            post(|State(received): State<Received>, body: Bytes| async move {
                let value: Value = serde_json::from_slice(&body).expect("OTLP JSON");
                received.lock().unwrap().push(value);
                axum::Json(json!({}))
            }),
        )
        .with_state(received.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{address}"), received)
}

/// Every exported span.
pub fn spans(received: &Received) -> Vec<Value> {
    received
        .lock()
        .unwrap()
        .iter()
        .flat_map(|body| {
            body["resourceSpans"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .flat_map(|rs| rs["scopeSpans"].as_array().cloned().unwrap_or_default())
        .flat_map(|ss| ss["spans"].as_array().cloned().unwrap_or_default())
        .collect()
}

pub fn attribute<'a>(span: &'a Value, key: &str) -> Option<&'a Value> {
    span["attributes"]
        .as_array()?
        .iter()
        .find(|a| a["key"] == key)
        .map(|a| &a["value"])
}

#[tokio::test]
async fn a_cold_token_request_is_traced_from_the_caller_to_edx_on_sqlite() {
    a_cold_token_request_is_traced_from_the_caller_to_edx(None).await;
}

mod postgres {
    /// The same on PostgreSQL, where the fetch runs under the fleet's refresh lock.
    #[tokio::test]
    async fn a_cold_token_request_is_traced_from_the_caller_to_edx() {
        let (_db, url) = crate::helpers::PgTestDb::create().await;
        super::a_cold_token_request_is_traced_from_the_caller_to_edx(Some(url)).await;
    }
}

/// A cold token request, an invalidation and a proxied call refused once, traced through
/// the real binary on SQLite (`database_url` `None`) or the given PostgreSQL database.
async fn a_cold_token_request_is_traced_from_the_caller_to_edx(database_url: Option<String>) {
    let (endpoint, received) = collector().await;
    let issuer = Issuer::new(chrono::Utc::now);
    let issuer_server = issuer.start().await.unwrap();
    let secret = format!("trace-secret-{}", uuid::Uuid::new_v4().simple());
    issuer.register("client-traced", &secret);

    let dir = tempfile::tempdir().unwrap();
    let admin_key = hex::encode(rand::random::<[u8; 32]>());
    let mut command = tokenvend(dir.path());
    if let Some(url) = &database_url {
        command.env("TOKENVEND_DATABASE_URL", url).env(
            "TOKENVEND_MASTER_KEY",
            tokenvend::crypto::MasterKey::generate().1,
        );
    }
    let Started {
        mut child, base, ..
    } = start_on_port_0(
        command
            .env("TOKENVEND_ADMIN_KEY", &admin_key)
            .env("TOKENVEND_ALLOW_INSECURE_TOKEN_URLS", "1")
            // Invalidations and proxy retries a second apart (the test sleeps that long).
            .env("TOKENVEND_MIN_REFRESH_INTERVAL", "1")
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)
            .env("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")
            .env("OTEL_SERVICE_NAME", "tokenvend-under-test")
            // Longer than the test: the spans arrive with the flush at shutdown.
            .env("OTEL_BSP_SCHEDULE_DELAY", "600000")
            .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            .env_remove("OTEL_SDK_DISABLED")
            .stdout(Stdio::null()),
    )
    .await;
    let client = reqwest::Client::new();
    wait_healthy(&client, &base, &mut child).await;

    let resp = client
        .post(format!("{base}/tenants"))
        .bearer_auth(&admin_key)
        .json(
            &json!({"id": "traced", "name": "Traced", "client_id": "client-traced",
            "client_secret": secret, "token_url": issuer_server.token_url(),
            "api_base_url": issuer_server.api_base_url()}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);

    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller_span = "00f067aa0ba902b7";
    let resp = client
        .get(format!("{base}/tenants/traced/token"))
        .bearer_auth(&admin_key)
        .header("traceparent", format!("00-{trace_id}-{caller_span}-01"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let token: Value = resp.json().await.unwrap();
    let access_token = token["access_token"].as_str().unwrap().to_owned();

    // edX got the same trace, from a span of tokenvend's (not the caller's).
    let sent = issuer
        .last_traceparent("client-traced")
        .expect("a traceparent on the token request");
    let parts: Vec<&str> = sent.split('-').collect();
    assert_eq!(parts.len(), 4, "{sent}");
    assert_eq!(parts[1], trace_id, "{sent}");
    assert_ne!(parts[2], caller_span, "{sent}");

    // The fetch after an invalidation says so, and so does the proxy's retry after the
    // API refused a (revoked) token.
    let invalidated_trace = "5bf92f3577b34da6a3ce929d0e0e4737";
    let retry_trace = "6bf92f3577b34da6a3ce929d0e0e4738";
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let resp = client
        .post(format!("{base}/tenants/traced/token/invalidate"))
        .bearer_auth(&admin_key)
        .json(&json!({"fingerprint": token["fingerprint"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let resp = client
        .get(format!("{base}/tenants/traced/token"))
        .bearer_auth(&admin_key)
        .header(
            "traceparent",
            format!("00-{invalidated_trace}-{caller_span}-01"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let second: Value = resp.json().await.unwrap();
    assert_ne!(second["fingerprint"], token["fingerprint"]);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert!(issuer.revoke_tokens_of("client-traced") >= 2);
    let resp = client
        .get(format!(
            "{base}/tenants/traced/proxy/api/enterprise/v1/enterprise-customer/"
        ))
        .bearer_auth(&admin_key)
        .header("traceparent", format!("00-{retry_trace}-{caller_span}-01"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "one retry with a new token");

    terminate(&child);
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status:?}");
    eventually_within(
        Duration::from_secs(10),
        "the spans flushed at shutdown",
        async || {
            spans(&received)
                .iter()
                .any(|s| attribute(s, "tokenvend.trigger").is_some())
        },
    )
    .await;

    let spans = spans(&received);
    let in_trace: Vec<&Value> = spans.iter().filter(|s| s["traceId"] == trace_id).collect();
    let request = in_trace
        .iter()
        .find(|s| s["name"] == "GET /tenants/{id}/token")
        .unwrap_or_else(|| panic!("the request span in the caller's trace: {spans:#?}"));
    assert_eq!(
        request["parentSpanId"], caller_span,
        "continues the caller's span"
    );
    let fetch = in_trace
        .iter()
        .find(|s| s["name"] == "token_fetch")
        .expect("the fetch span in the caller's trace");
    assert_eq!(
        attribute(fetch, "tokenvend.trigger"),
        Some(&json!({"stringValue": "caller"}))
    );
    assert_eq!(fetch["parentSpanId"], request["spanId"]);
    for (trace, trigger) in [
        (invalidated_trace, "invalidated"),
        (retry_trace, "proxy_retry"),
    ] {
        let fetch = spans
            .iter()
            .find(|s| s["traceId"] == trace && s["name"] == "token_fetch")
            .unwrap_or_else(|| panic!("a fetch span in trace {trace}: {spans:#?}"));
        assert_eq!(
            attribute(fetch, "tokenvend.trigger"),
            Some(&json!({ "stringValue": trigger }))
        );
    }
    // The proxied calls: the refused one and its retry, in the caller's trace.
    let proxied: Vec<&Value> = spans
        .iter()
        .filter(|s| s["traceId"] == retry_trace && s["name"] == "proxy_call")
        .collect();
    assert_eq!(proxied.len(), 2, "{spans:#?}");
    let statuses: Vec<&Value> = proxied
        .iter()
        .filter_map(|s| attribute(s, "http.response.status_code"))
        .collect();
    assert!(
        statuses.contains(&&json!({"intValue": "401"})),
        "{statuses:?}"
    );
    assert!(
        statuses.contains(&&json!({"intValue": "200"})),
        "{statuses:?}"
    );
    let attempt = in_trace
        .iter()
        .find(|s| s["name"] == "upstream_attempt")
        .expect("an upstream attempt span");
    assert_eq!(attempt["parentSpanId"], fetch["spanId"]);
    assert_eq!(parts[2], attempt["spanId"], "edX saw the attempt's span");

    let exported = received
        .lock()
        .unwrap()
        .iter()
        .map(Value::to_string)
        .collect::<String>();
    assert!(
        exported.contains("tokenvend-under-test"),
        "OTEL_SERVICE_NAME"
    );
    let second_token = second["access_token"].as_str().unwrap();
    for hidden in [
        secret.as_str(),
        access_token.as_str(),
        second_token,
        admin_key.as_str(),
    ] {
        assert!(
            !exported.contains(hidden),
            "a secret or token in the traces"
        );
    }
}

#[tokio::test]
async fn an_unknown_otlp_protocol_stops_start_up_naming_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    let output = tokenvend(dir.path())
        .env("TOKENVEND_LISTEN", "127.0.0.1:0")
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc/json")
        .env_remove("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("tokenvend: OTEL_EXPORTER_OTLP_PROTOCOL: "),
        "{stderr}"
    );
}
