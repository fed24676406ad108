//! Webhooks beyond one process: the Standard Webhooks reference library (Python, pinned
//! in tests/python) verifies every delivery, and two replicas on one PostgreSQL deliver
//! each event once.

use std::collections::HashSet;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio::process::Command;

use super::python;
use crate::helpers::{eventually, json_body, spawn_app, tenant_body, Backend};
use crate::webhooks::{register, Receiver};

#[tokio::test]
async fn the_standard_webhooks_python_library_verifies_every_delivery() {
    let bin = python::bin_dir().await;
    let app = spawn_app(Backend::Postgres).await;
    let (receiver, url, _server) = Receiver::start().await;
    let (id, secret) = register(&app, &url, &["*"]).await;
    app.issuer_tenant("acme").await;
    let resp = app
        .admin(
            Method::PATCH,
            "/tenants/acme",
            Some(&json!({ "name": "Acme Inc." })),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let resp = app
        .admin(Method::POST, &format!("/webhooks/{id}/test"), None)
        .await;
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    eventually("three deliveries", async || receiver.count() == 3).await;

    let deliveries: Vec<Value> = receiver
        .received()
        .iter()
        .map(|r| json!({ "headers": r.headers, "body": r.body }))
        .collect();
    let input = json!({ "secret": secret, "deliveries": deliveries }).to_string();
    let mut child = Command::new(bin.join("python"))
        .arg(python::scripts_dir().join("verify_webhooks.py"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use tokio::io::AsyncWriteExt;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(input.as_bytes()).await.unwrap();
    }
    let output = child.wait_with_output().await.unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "verification failed:\n{stderr}");
    let seen: Value = serde_json::from_slice(&output.stdout).unwrap();
    let mut types: Vec<&str> = seen["verified"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["type"].as_str().unwrap())
        .collect();
    types.sort_unstable();
    assert_eq!(types, ["tenant.created", "tenant.updated", "webhook.test"]);
    assert_eq!(seen["tampered_rejected"], 3, "an altered body fails");
    assert_eq!(seen["wrong_secret_rejected"], 3, "another secret fails");
}

#[tokio::test]
async fn two_replicas_on_one_postgres_deliver_each_event_once() {
    const TENANTS: usize = 20;
    let app = spawn_app(Backend::Postgres).await;
    let (replica, _stop_replica) = app.start_replica().await;
    let (receiver, url, _server) = Receiver::start().await;
    let (id, _) = register(&app, &url, &["tenant.created"]).await;

    // Half the tenants through each replica, all at once: both write events, and both
    // workers claim from the one outbox.
    let creations = (0..TENANTS).map(|i| {
        let base = if i % 2 == 0 { &app.address } else { &replica };
        app.client
            .post(format!("{base}/tenants"))
            .bearer_auth(&app.admin_key)
            .json(&tenant_body(&format!("tenant-{i}")))
            .send()
    });
    for resp in futures::future::join_all(creations).await {
        assert_eq!(resp.unwrap().status(), StatusCode::CREATED);
    }
    eventually("every event", async || receiver.count() >= TENANTS).await;
    eventually("every delivery recorded", async || {
        let body = json_body(
            app.admin(Method::GET, &format!("/webhooks/{id}/deliveries"), None)
                .await,
            StatusCode::OK,
        )
        .await;
        let items = body["items"].as_array().unwrap().clone();
        items.len() == TENANTS && items.iter().all(|d| d["status"] == "delivered")
    })
    .await;
    // Both workers keep polling meanwhile: a second send would show here.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let received = receiver.received();
    assert_eq!(received.len(), TENANTS, "each event once");
    let ids: HashSet<&str> = received.iter().map(|r| r.header("webhook-id")).collect();
    assert_eq!(ids.len(), TENANTS);
    let tenants: HashSet<String> = received
        .iter()
        .map(|r| r.json()["data"]["tenant_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(tenants.len(), TENANTS);
    let body = json_body(
        app.admin(Method::GET, &format!("/webhooks/{id}/deliveries"), None)
            .await,
        StatusCode::OK,
    )
    .await;
    for delivery in body["items"].as_array().unwrap() {
        assert_eq!(delivery["attempts"], 1, "{delivery}");
    }
}
