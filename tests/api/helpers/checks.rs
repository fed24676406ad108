//! Request bodies and the assertions on answers that every test file uses.

use reqwest::{Response, StatusCode};
use serde_json::{json, Value};

/// A valid tenant body with a unique secret.
pub fn tenant_body(id: &str) -> Value {
    json!({
        "id": id,
        "name": format!("Tenant {id}"),
        "client_id": format!("client-{id}"),
        "client_secret": format!("secret-{id}-{}", uuid::Uuid::new_v4().simple()),
        "scope": "read write",
    })
}

/// Asserts a problem+json answer with `status`, and returns its body.
pub async fn assert_problem(resp: Response, status: StatusCode) -> Value {
    assert_eq!(resp.status(), status, "status");
    assert!(
        resp.headers().contains_key("x-request-id"),
        "every answer carries a request id"
    );
    let content_type = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert_eq!(content_type, "application/problem+json");
    let body: Value = resp.json().await.expect("problem body is JSON");
    assert_eq!(body["status"], status.as_u16(), "{body}");
    for field in ["type", "title", "detail"] {
        assert!(body[field].is_string(), "problem lacks {field}: {body}");
    }
    body
}

pub async fn json_body(resp: Response, status: StatusCode) -> Value {
    assert_eq!(resp.status(), status, "status");
    resp.json().await.expect("JSON body")
}

pub fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle.as_bytes())
}
