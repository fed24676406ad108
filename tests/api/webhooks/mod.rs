//! Webhooks: registration, Standard Webhooks signatures, at-least-once delivery with
//! retries, restarts and replicas, the lifecycle events and the outbound rules — checked
//! with a real receiver on loopback (`receiver`, which other test modules use too).

use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::helpers::{eventually, json_body, TestApp};

mod delivery;
mod events;
mod management;
mod receiver;
mod rules;

pub use receiver::{expected_signature, register, Receiver};

/// The deliveries of webhook `id`, newest first.
async fn deliveries(app: &TestApp, id: &str) -> Vec<Value> {
    let body = json_body(
        app.admin(Method::GET, &format!("/webhooks/{id}/deliveries"), None)
            .await,
        StatusCode::OK,
    )
    .await;
    body["items"].as_array().unwrap().clone()
}

/// Waits until the delivery worker has made a pass at the clock's present time, so that
/// a test can check what that pass did not do: a probe webhook of its own gets a test
/// event, and the claim that took the probe's delivery took every delivery due by then
/// (a claim takes the due ones, oldest first, twenty at a time).
async fn worker_pass(app: &TestApp) {
    let (probe, url, _server) = Receiver::start().await;
    let (id, _) = register(app, &url, &["token.recovered"]).await;
    let resp = app
        .admin(Method::POST, &format!("/webhooks/{id}/test"), None)
        .await;
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    eventually("a worker pass (the probe's test event)", async || {
        probe.count() == 1
    })
    .await;
}

/// Until when each delivery of webhook `id` is leased (`-` when not). A claim sets it and
/// the record of the attempt clears it, after the receiver has the request: so the same
/// leases before and after a pass, and no new request at the receiver, show the pass
/// left the delivery alone (claimed, one of the two would differ).
async fn leases(app: &TestApp, id: &str) -> Vec<String> {
    let sql = "SELECT COALESCE(CAST(leased_until_ms AS TEXT), '-') FROM webhook_deliveries \
               WHERE webhook_id = $1 ORDER BY id";
    app.raw_strings(sql, &[id]).await
}
