//! Webhooks: registration, Standard Webhooks signatures, at-least-once delivery with
//! retries, restarts and replicas, the lifecycle events and the outbound rules — checked
//! with a real receiver on loopback (`receiver`, which other test modules use too).

use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::helpers::{json_body, TestApp};

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
