//! Custody across changes: a token or secret only ever goes to the URLs it was stored for.
//! Moving a tenant's API base keeps no previous secret (the safety net of a secret-only
//! rotation), and after a restart under stricter outbound rules no stored token of a URL
//! they refuse is served.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::{assert_problem, eventually, json_body, TestApp};

async fn moving_the_api_base_with_a_refused_secret_hands_no_token_to_the_new_base(app: TestApp) {
    let client = app.issuer_tenant("acme").await;
    json_body(app.get_token("acme").await, StatusCode::OK).await;
    assert_eq!(app.issuer.calls(&client), 1);
    let proxy_key = app.create_key(&["proxy:acme"]).await;

    // A `tenants:write` key moves the API base and gives a secret edX refuses.
    let resp = app
        .admin(
            Method::PATCH,
            "/tenants/acme",
            Some(&json!({
                "api_base_url": "https://attacker.example",
                "client_secret": "garbage-that-edx-refuses",
            })),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let kept = app
        .raw_count(
            "SELECT count(*) FROM tenants WHERE id = $1 AND previous_secret_ciphertext IS NOT NULL",
            &["acme"],
        )
        .await;
    assert_eq!(kept, 0, "a move of the API base keeps no previous secret");

    // The garbage secret is refused, and the real one is not tried behind it.
    let problem = assert_problem(app.get_token("acme").await, StatusCode::BAD_GATEWAY).await;
    assert_eq!(problem["type"], "urn:tokenvend:problem:upstream-rejected");
    assert_eq!(
        app.issuer.calls(&client),
        2,
        "only the new secret was tried, once"
    );
    let sent = app.issuer.last_form(&client).unwrap();
    assert!(
        sent.iter()
            .any(|(k, v)| k == "client_secret" && v == "garbage-that-edx-refuses"),
        "the last call used the new secret"
    );

    // The proxy has no token to hand to the new base: it fails before calling it.
    let resp = app
        .request(
            Method::GET,
            "/tenants/acme/proxy/api/enterprise/v1/",
            Some(&proxy_key),
            None,
        )
        .await;
    let problem = assert_problem(resp, StatusCode::BAD_GATEWAY).await;
    assert_ne!(
        problem["type"], "urn:tokenvend:problem:api-unreachable",
        "the new base was never called with a token: {problem}"
    );
    let status = app.token_status("acme").await;
    assert_ne!(status["state"], "valid", "{status}");
    let message = status["last_error"]["message"].as_str().unwrap_or_default();
    assert!(
        !message.contains("previous secret"),
        "nothing serves with the previous secret: {status}"
    );
}

async fn a_secret_only_rotation_still_keeps_the_previous_secret(app: TestApp) {
    app.issuer_tenant("acme").await;
    let resp = app
        .admin(
            Method::PATCH,
            "/tenants/acme",
            Some(&json!({"client_secret": "a-new-secret-not-yet-at-edx"})),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let kept = app
        .raw_count(
            "SELECT count(*) FROM tenants WHERE id = $1 AND previous_secret_ciphertext IS NOT NULL",
            &["acme"],
        )
        .await;
    assert_eq!(
        kept, 1,
        "the safety net stays for a change of the secret alone"
    );
}

async fn a_stored_token_of_a_url_now_refused_is_not_served_after_a_restart(mut app: TestApp) {
    let client = app.issuer_tenant("acme").await;
    json_body(app.get_token("acme").await, StatusCode::OK).await;
    // SQLite stores the token in the background.
    eventually("the token is stored", async || {
        app.raw_count(
            "SELECT count(*) FROM tokens WHERE tenant_id = $1",
            &["acme"],
        )
        .await
            == 1
    })
    .await;

    // The local issuer is plain HTTP on loopback: allowed only with the insecure flag.
    app.settings.allow_insecure_token_urls = false;
    app.restart().await;
    let problem = assert_problem(app.get_token("acme").await, StatusCode::BAD_GATEWAY).await;
    assert_eq!(problem["type"], "urn:tokenvend:problem:tenant-unusable");
    let status = app.token_status("acme").await;
    assert_eq!(status["state"], "failing", "{status}");
    assert!(
        status["fingerprint"].is_null(),
        "no token is held: {status}"
    );
    assert_eq!(app.issuer.calls(&client), 1, "nothing more was sent");

    // Back under the flag, the stored token serves again without a call.
    app.settings.allow_insecure_token_urls = true;
    app.restart().await;
    json_body(app.get_token("acme").await, StatusCode::OK).await;
    assert_eq!(app.issuer.calls(&client), 1);
}

crate::on_both_backends!(
    moving_the_api_base_with_a_refused_secret_hands_no_token_to_the_new_base,
    a_secret_only_rotation_still_keeps_the_previous_secret,
    a_stored_token_of_a_url_now_refused_is_not_served_after_a_restart,
);
