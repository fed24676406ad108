//! Webhook URLs obey the outbound rules, when registered and again before each attempt.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use super::{deliveries, register, Receiver};
use crate::helpers::{assert_problem, eventually, spawn_app_with, Backend};

#[tokio::test]
async fn webhook_urls_obey_the_outbound_rules() {
    let app = spawn_app_with(Backend::Sqlite, |s| s.allow_insecure_token_urls = false).await;
    for url in [
        "https://10.0.0.1/hook",
        "https://[::ffff:192.168.1.1]/hook",
        "https://169.254.169.254/latest",
        "https://localhost/hook",
        "https://hooks.internal/hook",
        "http://hooks.example.invalid/hook",
        "https://hooks.example.invalid:8443/hook",
    ] {
        let resp = app
            .admin(
                Method::POST,
                "/webhooks",
                Some(&json!({ "url": url, "events": ["*"] })),
            )
            .await;
        let problem = assert_problem(resp, StatusCode::UNPROCESSABLE_ENTITY).await;
        assert_eq!(problem["field"], "url", "{url}: {problem}");
    }
    let resp = app
        .admin(
            Method::POST,
            "/webhooks",
            Some(&json!({ "url": "https://hooks.example.invalid/hook", "events": ["*"] })),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::CREATED, "a public https URL");
}

/// A URL stored while insecure URLs were allowed is checked again before each attempt:
/// without the flag it is never called.
#[tokio::test]
async fn a_stored_webhook_url_is_checked_again_before_every_attempt() {
    let mut app = spawn_app_with(Backend::Sqlite, |_| {}).await;
    let (receiver, url, _server) = Receiver::start().await;
    let (id, _) = register(&app, &url, &["tenant.created"]).await;
    app.settings.allow_insecure_token_urls = false;
    app.restart().await;
    let mut body = crate::helpers::tenant_body("acme");
    body["token_url"] = json!("https://edx.example.invalid/oauth2/access_token");
    assert_eq!(app.create_tenant(&body).await.status(), StatusCode::CREATED);
    eventually("the refused attempt recorded", async || {
        deliveries(&app, &id)
            .await
            .first()
            .map(|d| d["attempts"].clone())
            == Some(json!(1))
    })
    .await;
    let refused = &deliveries(&app, &id).await[0];
    assert_eq!(refused["status"], "pending");
    assert_eq!(refused["last_status_code"], Value::Null);
    assert_eq!(receiver.count(), 0, "a loopback URL is not called");
}
