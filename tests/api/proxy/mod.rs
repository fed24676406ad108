//! The proxy, `{any method} /tenants/{id}/proxy/{path}`, against the local issuer's
//! edX-like API (which accepts only the tokens it issued).

use reqwest::{Method, Response, StatusCode};
use serde_json::Value;

use crate::helpers::{json_body, TestApp};

mod passing;
mod retries;
mod tenants;
mod timeout;

/// The test settings' minimum refresh interval (5 s), and a little more.
const PAST_THE_INTERVAL: u64 = 6;

const ENTERPRISE: &str = "/tenants/acme/proxy/api/enterprise/v1/enterprise-customer/";

async fn call(app: &TestApp, method: Method, path: &str, key: &str) -> Response {
    app.client
        .request(method, app.url(path))
        .bearer_auth(key)
        .send()
        .await
        .expect("proxied call")
}

fn fingerprint_of(resp: &Response) -> String {
    resp.headers()["x-tokenvend-token-fingerprint"]
        .to_str()
        .unwrap()
        .to_owned()
}

async fn held_token(app: &TestApp, id: &str) -> Value {
    json_body(app.get_token(id).await, StatusCode::OK).await
}
