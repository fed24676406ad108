//! What is shown about a token (status, signature check, metrics), never the token.

use edx_issuer::Failure;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use super::token_json;
use crate::helpers::{captured_logs, eventually, json_body, TestApp};

async fn token_status_shows_the_window_and_claims_but_never_the_token(app: TestApp) {
    let client = app
        .issuer_tenant_with("acme", |b| b["jwks_url"] = Value::Null)
        .await;
    let missing = app.token_status("acme").await;
    assert_eq!(missing["state"], "missing");
    assert_eq!(missing["fingerprint"], Value::Null);
    assert_eq!(missing["upstream_calls"], 0);

    let token = token_json(&app, "acme").await;
    let access_token = token["access_token"].as_str().unwrap().to_owned();
    app.advance(600);
    let status = app.token_status("acme").await;
    assert_eq!(status["tenant_id"], "acme");
    assert_eq!(status["state"], "valid");
    assert_eq!(status["lifetime_seconds"], 3600);
    assert_eq!(status["remaining_seconds"], 3000);
    assert_eq!(status["upstream_calls"], 1);
    assert_eq!(status["upstream_failures"], 0);
    assert_eq!(status["signature"], "unverified");
    assert_eq!(
        status["fingerprint"],
        tokenvend::engine::fingerprint(&access_token)
    );
    assert_eq!(status["claims"]["grant_type"], "client-credentials");
    assert_eq!(
        status["claims"]["preferred_username"],
        format!("{client}-worker")
    );
    assert_eq!(status["claims"]["aud"], "lms-key");
    assert_eq!(status["issued_at"], token["issued_at"]);
    assert_eq!(status["expires_at"], token["expires_at"]);
    for field in ["fetched_at", "next_refresh_at", "not_before"] {
        assert!(status[field].is_string(), "{field}");
    }
    app.advance(2400);
    assert_eq!(app.token_status("acme").await["state"], "expiring");

    let list = json_body(
        app.admin(Method::GET, "/tokens/status", None).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(list["items"][0]["tenant_id"], "acme");
    let metrics = app.metrics().await;
    let logs = captured_logs();
    assert!(
        logs.contains("request finished"),
        "sanity: this test's requests were logged"
    );
    for text in [status.to_string(), list.to_string(), metrics.clone(), logs] {
        assert!(!text.contains(&access_token), "the token leaked");
    }
    assert!(
        metrics.contains("tokenvend_token_seconds_remaining{tenant=\"acme\"}"),
        "{metrics}"
    );
}

async fn a_jwks_url_gets_each_token_signature_checked(app: TestApp) {
    let jwks = app.issuer_server.jwks_url();
    app.issuer_tenant_with("acme", |b| b["jwks_url"] = json!(jwks))
        .await;
    token_json(&app, "acme").await;
    let mut signature = Value::Null;
    eventually("the token's signature to be checked", async || {
        signature = app.token_status("acme").await["signature"].clone();
        signature == "valid"
    })
    .await;
    assert_eq!(signature, "valid");
}

async fn metrics_count_requests_by_result_and_upstream_calls_by_outcome(app: TestApp) {
    app.issuer_tenant("acme").await;
    token_json(&app, "acme").await;
    token_json(&app, "acme").await;
    let bad = app.issuer_tenant("bad").await;
    app.issuer
        .configure(&bad, |b| b.failure = Some(Failure::InvalidClient));
    app.get_token("bad").await;
    let resp = app
        .request(Method::GET, "/metrics", Some(&app.admin_key), None)
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let text = resp.text().await.unwrap();
    for line in [
        "tokenvend_token_requests_total{result=\"hit\"} 1",
        "tokenvend_token_requests_total{result=\"miss\"} 1",
        "tokenvend_token_requests_total{result=\"error\"} 1",
        "tokenvend_upstream_requests_total{outcome=\"success\"} 1",
        "tokenvend_upstream_requests_total{outcome=\"rejected\"} 1",
        "tokenvend_upstream_request_duration_seconds_count 2",
        "tokenvend_cached_tokens 1",
        "tokenvend_tenants 2",
    ] {
        assert!(text.contains(line), "missing {line:?} in\n{text}");
    }
}

crate::on_both_backends!(
    token_status_shows_the_window_and_claims_but_never_the_token,
    a_jwks_url_gets_each_token_signature_checked,
    metrics_count_requests_by_result_and_upstream_calls_by_outcome,
);
