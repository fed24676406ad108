//! The proxy's request headers: only an allow-list reaches the edX API (openapi.yaml, "The
//! proxy"), seen through the local issuer's echo of what it received.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{json_body, TestApp};
use crate::on_sqlite_only;

const ENTERPRISE: &str = "/tenants/acme/proxy/api/enterprise/v1/enterprise-customer/";

/// The caller's headers that the API gets, with the values sent.
const ALLOWED: &[(&str, &str)] = &[
    ("accept", "application/json"),
    ("accept-encoding", "identity"),
    ("accept-language", "fr-CA"),
    ("content-type", "application/json"),
    ("content-encoding", "identity"),
    ("if-match", "\"v1\""),
    ("if-none-match", "\"v2\""),
    ("if-modified-since", "Sat, 29 Oct 1994 19:43:31 GMT"),
    ("if-unmodified-since", "Sun, 30 Oct 1994 19:43:31 GMT"),
    ("range", "bytes=0-99"),
    ("user-agent", "reporting-service/1.0"),
];

/// Claims about the client's address or the request's origin, and anything else.
const NOT_ALLOWED: &[(&str, &str)] = &[
    ("true-client-ip", "203.0.113.7"),
    ("cf-connecting-ip", "203.0.113.8"),
    ("x-client-ip", "203.0.113.9"),
    ("x-forwarded-prefix", "/admin"),
    ("x-forwarded-server", "attacker.example"),
    ("x-host", "attacker.example"),
    ("x-original-host", "attacker.example"),
    ("x-forwarded-for", "203.0.113.10"),
    ("x-real-ip", "203.0.113.11"),
    ("x-custom-thing", "1"),
    ("origin", "https://attacker.example"),
    ("referer", "https://attacker.example/page"),
    ("cookie", "sessionid=the-callers-session"),
];

/// What tokenvend itself adds or HTTP needs, besides the allowed headers.
const ADDED: &[&str] = &[
    "authorization",
    "x-request-id",
    "traceparent",
    "content-length",
    "host",
];

async fn only_the_allowed_request_headers_reach_the_api(app: TestApp) {
    app.issuer_tenant("acme").await;
    let key = app.create_key(&["proxy:acme"]).await;
    let mut request = app
        .client
        .post(app.url(ENTERPRISE))
        .bearer_auth(&key)
        .body(r#"{"name": "acme"}"#);
    for (name, value) in ALLOWED.iter().chain(NOT_ALLOWED) {
        request = request.header(*name, *value);
    }
    let echo = json_body(request.send().await.unwrap(), StatusCode::OK).await;
    let received = echo["headers"].as_object().expect("headers echoed");
    for (name, value) in ALLOWED {
        assert_eq!(received.get(*name), Some(&json!([value])), "{name}");
    }
    for (name, _) in NOT_ALLOWED {
        assert!(received.get(*name).is_none(), "{name} reached the API");
    }
    for name in received.keys() {
        let known =
            ALLOWED.iter().any(|(allowed, _)| allowed == name) || ADDED.contains(&name.as_str());
        assert!(known, "{name} reached the API");
    }
    assert_eq!(received["content-length"], json!(["16"]));
    assert_eq!(echo["body_length"], 16);
    assert!(
        received["authorization"][0]
            .as_str()
            .is_some_and(|v| v.starts_with("JWT ")),
        "{echo}"
    );
}

/// A header sent twice (two `Accept` lines) arrives twice; one not on the list never does,
/// whatever its case.
async fn allowed_headers_keep_every_value_and_case_does_not_matter(app: TestApp) {
    app.issuer_tenant("acme").await;
    let key = app.create_key(&["proxy:acme"]).await;
    let resp = app
        .client
        .get(app.url(ENTERPRISE))
        .bearer_auth(&key)
        .header("Accept", "application/json")
        .header("Accept", "text/html")
        .header("X-Forwarded-Prefix", "/admin")
        .header("X-Original-Host", "attacker.example")
        .send()
        .await
        .unwrap();
    let echo: Value = json_body(resp, StatusCode::OK).await;
    let headers = &echo["headers"];
    assert_eq!(headers["accept"], json!(["application/json", "text/html"]));
    assert!(headers.get("x-forwarded-prefix").is_none(), "{echo}");
    assert!(headers.get("x-original-host").is_none(), "{echo}");
}

on_sqlite_only!(
    only_the_allowed_request_headers_reach_the_api,
    allowed_headers_keep_every_value_and_case_does_not_matter,
);
