//! Custody: no caller key can move a tenant's secret or token anywhere it should not go,
//! and a key's tenant scope covers only the tenant it was created for.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::{assert_problem, json_body, tenant_body, TestApp};

/// The id part of a caller key `tv_<id>_<secret>`.
fn key_id(key: &str) -> &str {
    key.split('_').nth(1).expect("a tv_<id>_<secret> key")
}

async fn a_write_key_cannot_send_a_stored_secret_to_a_new_url(app: TestApp) {
    let client = app.issuer_tenant("acme").await;
    let writer = app.create_key(&["tenants:write"]).await;
    let before = json_body(
        app.admin(Method::GET, "/tenants/acme", None).await,
        StatusCode::OK,
    )
    .await;

    // The attack: point the tenant at a host of the caller's choosing, then force a refresh.
    let steal = json!({"token_url": "https://collector.attacker.example/oauth2/access_token"});
    let resp = app
        .request(Method::PATCH, "/tenants/acme", Some(&writer), Some(&steal))
        .await;
    let problem = assert_problem(resp, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(problem["field"], "client_secret");
    let after = json_body(
        app.admin(Method::GET, "/tenants/acme", None).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(after, before, "nothing changed");
    let resp = app
        .request(
            Method::POST,
            "/tenants/acme/token/refresh",
            Some(&writer),
            None,
        )
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        app.issuer.calls(&client),
        1,
        "the secret went to its own edX only"
    );

    // Clearing the URL (back to the default edX endpoint) moves it too.
    let resp = app
        .request(
            Method::PATCH,
            "/tenants/acme",
            Some(&writer),
            Some(&json!({"token_url": null})),
        )
        .await;
    assert_problem(resp, StatusCode::UNPROCESSABLE_ENTITY).await;

    // With the secret for the new URL it is allowed, and the audit trail says where from
    // and to (never the secret).
    let moved = json!({
        "token_url": "https://lms.example.com/oauth2/access_token",
        "client_secret": "a-secret-for-the-new-endpoint",
    });
    let resp = app
        .request(Method::PATCH, "/tenants/acme", Some(&writer), Some(&moved))
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let details: Vec<String> = app
        .raw_strings(
            "SELECT details FROM audit_events WHERE action = 'tenant.update' AND target = $1",
            &["acme"],
        )
        .await;
    assert_eq!(details.len(), 1, "{details:?}");
    let details: Value = serde_json::from_str(&details[0]).unwrap();
    assert_eq!(
        details["token_url"]["from"],
        app.issuer_server.token_url().as_str()
    );
    assert_eq!(
        details["token_url"]["to"],
        "https://lms.example.com/oauth2/access_token"
    );
    assert!(!details
        .to_string()
        .contains("a-secret-for-the-new-endpoint"));
}

async fn a_tenant_scope_covers_only_the_tenant_it_was_created_for(app: TestApp) {
    app.issuer_tenant("acme").await;
    let key = app.create_key(&["token:acme"]).await;
    let get = |key: String| {
        let app = &app;
        async move {
            app.request(Method::GET, "/tenants/acme/token", Some(&key), None)
                .await
                .status()
        }
    };
    assert_eq!(get(key.clone()).await, StatusCode::OK);
    let listed = json_body(
        app.admin(Method::GET, "/api-keys", None).await,
        StatusCode::OK,
    )
    .await;
    let shown = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["id"] == key_id(&key))
        .expect("listed");
    assert_eq!(
        shown["scopes"],
        json!(["token:acme"]),
        "the binding is not shown"
    );

    // Another company is registered under the same id after the first one is deleted.
    let resp = app.admin(Method::DELETE, "/tenants/acme", None).await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    assert_eq!(get(key.clone()).await, StatusCode::NOT_FOUND);
    app.issuer_tenant("acme").await;
    assert_eq!(
        get(key.clone()).await,
        StatusCode::NOT_FOUND,
        "the old company's key does not cover the new company"
    );
    let form = [
        ("grant_type", "client_credentials"),
        ("client_id", "acme"),
        ("client_secret", key.as_str()),
    ];
    let resp = app
        .client
        .post(app.url("/oauth2/access_token"))
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        StatusCode::UNAUTHORIZED,
        "nor on the edX-compatible endpoint"
    );
    let fresh = app.create_key(&["token:acme"]).await;
    assert_eq!(get(fresh).await, StatusCode::OK);

    // A key cannot be made for a tenant that does not exist (yet).
    let resp = app
        .admin(
            Method::POST,
            "/api-keys",
            Some(&json!({"name": "early", "scopes": ["token:later"]})),
        )
        .await;
    let problem = assert_problem(resp, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(problem["field"], "scopes");
}

async fn keys_stored_before_scopes_were_bound_are_bound_at_start_up(mut app: TestApp) {
    app.issuer_tenant("acme").await;
    let known = app.create_key(&["token:acme"]).await;
    let unknown = app.create_key(&["token:acme"]).await;
    // As stored by an earlier version: no binding; the second names a tenant that is gone.
    app.raw_execute(
        "UPDATE api_keys SET scopes = 'token:acme' WHERE id = $1",
        &[key_id(&known)],
    )
    .await;
    app.raw_execute(
        "UPDATE api_keys SET scopes = 'token:ghost' WHERE id = $1",
        &[key_id(&unknown)],
    )
    .await;
    app.restart().await;
    assert_eq!(token_status(&app, &known, "acme").await, StatusCode::OK);
    app.create_tenant(&tenant_body("ghost")).await;
    assert_eq!(
        token_status(&app, &unknown, "ghost").await,
        StatusCode::NOT_FOUND,
        "a scope whose tenant was gone at the upgrade grants nothing"
    );
    app.restart().await;
    assert_eq!(
        token_status(&app, &known, "acme").await,
        StatusCode::OK,
        "binding is stable"
    );
}

async fn a_url_stored_under_the_insecure_flag_is_not_called_after_a_restart_without_it(
    mut app: TestApp,
) {
    // The local issuer is plain HTTP on loopback: allowed only with the insecure flag.
    assert!(app.settings.allow_insecure_token_urls);
    let client = app.issuer_tenant("acme").await;
    app.settings.allow_insecure_token_urls = false;
    app.restart().await;
    // Nothing is sent, and callers are told why in plain words (without the URL).
    let problem = assert_problem(app.get_token("acme").await, StatusCode::BAD_GATEWAY).await;
    assert_eq!(problem["type"], "urn:tokenvend:problem:tenant-unusable");
    assert!(
        !problem["detail"].as_str().unwrap().contains("127.0.0.1"),
        "the reason is for operators: {problem}"
    );
    let status = app.token_status("acme").await;
    assert_eq!(status["state"], "failing");
    let message = status["last_error"]["message"].as_str().unwrap();
    assert!(message.contains("token_url"), "{message}");
    assert_eq!(app.issuer.calls(&client), 0, "the secret was never sent");
}

crate::on_both_backends!(
    a_url_stored_under_the_insecure_flag_is_not_called_after_a_restart_without_it,
    a_write_key_cannot_send_a_stored_secret_to_a_new_url,
    a_tenant_scope_covers_only_the_tenant_it_was_created_for,
    keys_stored_before_scopes_were_bound_are_bound_at_start_up,
);

async fn metrics_need_the_metrics_scope(app: TestApp) {
    app.issuer_tenant("hidden").await;
    let resp = app.request(Method::GET, "/metrics", None, None).await;
    assert_problem(resp, StatusCode::UNAUTHORIZED).await;
    let token_key = app.create_key(&["token:*"]).await;
    let resp = app
        .request(Method::GET, "/metrics", Some(&token_key), None)
        .await;
    assert_problem(resp, StatusCode::FORBIDDEN).await;
    for key in [app.create_key(&["metrics"]).await, app.admin_key.clone()] {
        let resp = app.request(Method::GET, "/metrics", Some(&key), None).await;
        assert_eq!(resp.status(), StatusCode::OK);
        let text = resp.text().await.unwrap();
        assert!(text.contains("tokenvend_tenants"), "{text}");
    }
}

crate::on_sqlite_only!(metrics_need_the_metrics_scope);

async fn token_status(app: &TestApp, key: &str, tenant: &str) -> StatusCode {
    app.request(
        Method::GET,
        &format!("/tenants/{tenant}/token"),
        Some(key),
        None,
    )
    .await
    .status()
}
