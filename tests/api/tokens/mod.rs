//! `GET /tenants/{id}/token` and its status and refresh: serving from memory, the
//! refresh window and the scheduler, upstream failures, the tenant's lifecycle and what
//! is shown about a token.

use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{json_body, TestApp};

mod failures;
mod lifecycle;
mod refresh;
mod serving;
mod status;

/// The token body of a `200` answer, which must never be cached.
async fn token_json(app: &TestApp, id: &str) -> Value {
    let resp = app.get_token(id).await;
    assert_eq!(resp.headers()["cache-control"], "no-store");
    json_body(resp, StatusCode::OK).await
}

fn first_fingerprint(token: &Value) -> String {
    tokenvend::engine::fingerprint(token["access_token"].as_str().unwrap())
}
