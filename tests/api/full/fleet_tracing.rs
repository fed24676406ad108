//! Tracing with three replicas of the real binary on one PostgreSQL database: a traced
//! token request that waits for another replica's refresh and adopts its token, and one
//! that waits for the refresh lock and then asks edX itself, are both exported in the
//! caller's trace, and edX gets the trace with the request it is sent.

use std::process::{Child, Stdio};
use std::time::Duration;

use edx_issuer::Issuer;
use serde_json::{json, Value};
use sqlx::Connection;
use tokenvend::store::REFRESH_LOCK_KEY;

use crate::helpers::{eventually_within, PgTestDb};
use crate::helpers::{start_on_port_0, terminate, tokenvend, wait_healthy, Started};
use crate::tracing::{attribute, collector, spans};

/// A replica of the binary exporting its spans to `endpoint`; returns it and its base URL.
async fn replica(
    dir: &std::path::Path,
    database_url: &str,
    (master_key, admin_key): (&str, &str),
    endpoint: &str,
    name: &str,
) -> (Child, String) {
    let Started {
        mut child, base, ..
    } = start_on_port_0(
        tokenvend(dir)
            .env("TOKENVEND_DATABASE_URL", database_url)
            .env("TOKENVEND_MASTER_KEY", master_key)
            .env("TOKENVEND_ADMIN_KEY", admin_key)
            .env("TOKENVEND_ALLOW_INSECURE_TOKEN_URLS", "1")
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
            .env("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")
            .env("OTEL_SERVICE_NAME", name)
            // Longer than the test: the spans arrive with the flush at shutdown.
            .env("OTEL_BSP_SCHEDULE_DELAY", "600000")
            .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            .env_remove("OTEL_SDK_DISABLED")
            .stdout(Stdio::null()),
    )
    .await;
    wait_healthy(&reqwest::Client::new(), &base, &mut child).await;
    (child, base)
}

/// A traced `GET /tenants/{tenant}/token` on `base`, answered `200`; returns the token.
async fn traced_token(base: &str, key: &str, tenant: &str, trace: &str, span: &str) -> Value {
    let resp = reqwest::Client::new()
        .get(format!("{base}/tenants/{tenant}/token"))
        .bearer_auth(key)
        .header("traceparent", format!("00-{trace}-{span}-01"))
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(status, 200, "{base}: {body}");
    body
}

#[tokio::test]
async fn traced_token_requests_waiting_on_another_replicas_refresh_stay_in_the_callers_trace() {
    let (endpoint, received) = collector().await;
    let (_db, database_url) = PgTestDb::create().await;
    let issuer = Issuer::new(chrono::Utc::now);
    let issuer_server = issuer.start().await.unwrap();
    let master_key = tokenvend::crypto::MasterKey::generate().1;
    let admin_key = hex::encode(rand::random::<[u8; 32]>());
    let keys = (master_key.as_str(), admin_key.as_str());
    let dir = tempfile::tempdir().unwrap();
    let mut replicas = Vec::new();
    for i in 0..3 {
        let name = format!("tokenvend-replica-{i}");
        replicas.push(replica(dir.path(), &database_url, keys, &endpoint, &name).await);
    }
    let base = |i: usize| replicas[i].1.clone();
    let client = reqwest::Client::new();
    for tenant in ["adopted", "waited"] {
        let client_id = format!("client-{tenant}");
        let secret = format!("secret-{tenant}-{}", uuid::Uuid::new_v4().simple());
        issuer.register(&client_id, &secret);
        let body = json!({"id": tenant, "name": tenant, "client_id": client_id,
            "client_secret": secret, "token_url": issuer_server.token_url()});
        let resp = client
            .post(format!("{}/tenants", base(0)))
            .bearer_auth(&admin_key)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 201, "{tenant}");
        for i in 1..3 {
            let url = format!("{}/tenants/{tenant}/token/status", base(i));
            eventually_within(
                Duration::from_secs(5),
                "the tenant on every replica",
                async || {
                    let resp = client.get(&url).bearer_auth(&admin_key).send().await;
                    resp.is_ok_and(|r| r.status() == 200)
                },
            )
            .await;
        }
    }
    let caller_span = "00f067aa0ba902b7";

    // Replica 0 refreshes slowly (edX takes 1.5 s) under the refresh lock; a traced
    // request on replica 2 waits for that lock and takes the token replica 0 stored.
    let adopted_trace = "7bf92f3577b34da6a3ce929d0e0e4731";
    issuer.configure("client-adopted", |b| {
        b.latency = Duration::from_millis(1500)
    });
    let first = tokio::spawn(
        client
            .get(format!("{}/tenants/adopted/token", base(0)))
            .bearer_auth(&admin_key)
            .send(),
    );
    eventually_within(Duration::from_secs(5), "replica 0 asking edX", async || {
        issuer.calls("client-adopted") == 1
    })
    .await;
    let adopted = traced_token(&base(2), &admin_key, "adopted", adopted_trace, caller_span).await;
    let first: Value = first.await.unwrap().unwrap().json().await.unwrap();
    assert_eq!(
        adopted["fingerprint"], first["fingerprint"],
        "the same token"
    );
    assert_eq!(issuer.calls("client-adopted"), 1, "one edX call for both");
    let untraced = issuer
        .last_traceparent("client-adopted")
        .unwrap_or_default();
    assert!(!untraced.contains(adopted_trace), "{untraced}");

    // The refresh lock held elsewhere (a replica in the middle of a refresh that then
    // stores nothing): a traced request on replica 1 waits for it, then asks edX.
    let waited_trace = "8bf92f3577b34da6a3ce929d0e0e4732";
    let mut holder = sqlx::PgConnection::connect(&database_url).await.unwrap();
    // The lock is keyed by the tenant's identity, not its id.
    let uid: String = sqlx::query_scalar("SELECT uid FROM tenants WHERE id = 'waited'")
        .fetch_one(&mut holder)
        .await
        .unwrap();
    sqlx::query(&format!("SELECT pg_advisory_lock({REFRESH_LOCK_KEY})"))
        .bind(uid)
        .execute(&mut holder)
        .await
        .unwrap();
    let (key, waiter) = (admin_key.clone(), base(1));
    let waiting = tokio::spawn(async move {
        traced_token(&waiter, &key, "waited", waited_trace, caller_span).await
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!waiting.is_finished(), "the request waits for the lock");
    assert_eq!(issuer.calls("client-waited"), 0);
    holder.close().await.unwrap();
    waiting.await.unwrap();
    assert_eq!(issuer.calls("client-waited"), 1);
    let sent = issuer
        .last_traceparent("client-waited")
        .expect("a traceparent");
    let sent: Vec<&str> = sent.split('-').collect();
    assert_eq!(sent[1], waited_trace, "edX got the caller's trace");

    for (child, _) in &replicas {
        terminate(child);
    }
    for (mut child, _) in replicas {
        let status = tokio::task::spawn_blocking(move || child.wait())
            .await
            .unwrap()
            .unwrap();
        assert!(status.success(), "{status:?}");
    }
    let in_trace = |trace: &str| -> Vec<Value> {
        spans(&received)
            .into_iter()
            .filter(|s| s["traceId"] == trace)
            .collect()
    };
    eventually_within(Duration::from_secs(10), "the spans flushed", async || {
        [adopted_trace, waited_trace]
            .iter()
            .all(|t| in_trace(t).iter().any(|s| s["name"] == "token_fetch"))
    })
    .await;
    for trace in [adopted_trace, waited_trace] {
        let spans = in_trace(trace);
        let named = |name: &str| spans.iter().find(|s| s["name"] == name).cloned();
        let request = named("GET /tenants/{id}/token")
            .unwrap_or_else(|| panic!("the request span in {trace}: {spans:#?}"));
        assert_eq!(request["parentSpanId"], caller_span);
        let fetch = named("token_fetch").expect("the fetch span");
        assert_eq!(fetch["parentSpanId"], request["spanId"]);
        assert_eq!(
            attribute(&fetch, "tokenvend.trigger"),
            Some(&json!({"stringValue": "caller"}))
        );
        let lock = named("store.refresh_lock").expect("the wait for the lock, traced");
        assert_eq!(lock["parentSpanId"], fetch["spanId"]);
        let attempt = named("upstream_attempt");
        if trace == adopted_trace {
            assert!(attempt.is_none(), "the adopting replica did not ask edX");
            assert!(named("store.read_token").is_some(), "{spans:#?}");
        } else {
            let attempt = attempt.expect("the replica that waited asked edX");
            assert_eq!(sent[2], attempt["spanId"], "edX saw the attempt's span");
        }
    }
}
