//! A token across its tenant's life: restarts, rotated secrets, deletion, and which
//! caller keys may read it.

use reqwest::{Method, StatusCode};
use serde_json::json;

use super::token_json;
use crate::helpers::{assert_problem, eventually, TestApp};

async fn a_restart_with_a_valid_stored_token_makes_no_upstream_call(mut app: TestApp) {
    let client = app.issuer_tenant("acme").await;
    let first = token_json(&app, "acme").await;
    // The token is written to the store in the background.
    let count = "SELECT COUNT(*) FROM tokens WHERE tenant_id = 'acme'";
    eventually("the token to be stored", async || {
        app.raw_count(count, &[]).await == 1
    })
    .await;
    assert_eq!(app.raw_count(count, &[]).await, 1);
    let dump = app.dump().await;
    assert!(
        !crate::helpers::contains(&dump, first["access_token"].as_str().unwrap()),
        "sealed at rest"
    );

    app.restart().await;
    app.advance(60);
    let after = token_json(&app, "acme").await;
    assert_eq!(after["access_token"], first["access_token"]);
    assert_eq!(after["expires_in"], 3540);
    assert_eq!(app.issuer.calls(&client), 1);
}

async fn a_secret_rotated_by_patch_is_used_on_the_next_fetch(app: TestApp) {
    let client = app.issuer_tenant("acme").await;
    let first = token_json(&app, "acme").await;
    app.issuer.register(&client, "rotated-secret-value");
    let patch = json!({"client_secret": "rotated-secret-value"});
    assert_eq!(
        app.admin(Method::PATCH, "/tenants/acme", Some(&patch))
            .await
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        app.token_status("acme").await["state"],
        "missing",
        "the old token is dropped at once"
    );
    let second = token_json(&app, "acme").await;
    assert_ne!(second["access_token"], first["access_token"]);
    let form = app.issuer.last_form(&client).unwrap();
    assert!(form.contains(&(
        "client_secret".to_owned(),
        "rotated-secret-value".to_owned()
    )));
    assert_eq!(app.issuer.calls(&client), 2);

    // A rename keeps the token.
    let rename = json!({"name": "Renamed"});
    app.admin(Method::PATCH, "/tenants/acme", Some(&rename))
        .await;
    assert_eq!(
        token_json(&app, "acme").await["access_token"],
        second["access_token"]
    );
    assert_eq!(app.issuer.calls(&client), 2);
}

async fn a_deleted_tenant_loses_its_token_at_once(app: TestApp) {
    app.issuer_tenant("acme").await;
    token_json(&app, "acme").await;
    assert_eq!(
        app.admin(Method::DELETE, "/tenants/acme", None)
            .await
            .status(),
        StatusCode::NO_CONTENT
    );
    assert_problem(app.get_token("acme").await, StatusCode::NOT_FOUND).await;
    let resp = app
        .admin(Method::GET, "/tenants/acme/token/status", None)
        .await;
    assert_problem(resp, StatusCode::NOT_FOUND).await;
}

async fn token_scopes_hide_other_tenants_and_forbid_keys_without_token_scope(app: TestApp) {
    app.issuer_tenant("a").await;
    app.issuer_tenant("b").await;
    let token_a = app.create_key(&["token:a"]).await;
    let token_all = app.create_key(&["token:*"]).await;
    let reader = app.create_key(&["tenants:read"]).await;
    let cases = [
        (&token_a, "/tenants/a/token", StatusCode::OK),
        (&token_a, "/tenants/b/token", StatusCode::NOT_FOUND),
        (&token_a, "/tenants/nobody/token", StatusCode::NOT_FOUND),
        (&token_a, "/tenants/Not_An_Id/token", StatusCode::NOT_FOUND),
        (&token_all, "/tenants/b/token", StatusCode::OK),
        (&token_all, "/tenants/nobody/token", StatusCode::NOT_FOUND),
        (&reader, "/tenants/a/token", StatusCode::FORBIDDEN),
        (
            &reader,
            "/tenants/a/token?min_ttl=abc",
            StatusCode::FORBIDDEN,
        ),
        (&token_a, "/tenants/a/token/status", StatusCode::FORBIDDEN),
        (&token_a, "/tokens/status", StatusCode::FORBIDDEN),
        (
            &reader,
            "/tenants/a/token/refresh",
            StatusCode::METHOD_NOT_ALLOWED,
        ),
    ];
    let mut bodies = Vec::new();
    for (key, path, expected) in cases {
        let resp = app.request(Method::GET, path, Some(key), None).await;
        assert_eq!(resp.status(), expected, "{path}");
        if expected == StatusCode::NOT_FOUND {
            bodies.push(resp.text().await.unwrap());
        }
    }
    assert!(
        bodies.windows(2).all(|w| w[0] == w[1]),
        "a hidden tenant looks exactly like an unknown one"
    );
    let resp = app
        .request(
            Method::POST,
            "/tenants/a/token/refresh",
            Some(&reader),
            None,
        )
        .await;
    assert_problem(resp, StatusCode::FORBIDDEN).await;
}

crate::on_both_backends!(
    a_restart_with_a_valid_stored_token_makes_no_upstream_call,
    a_secret_rotated_by_patch_is_used_on_the_next_fetch,
    a_deleted_tenant_loses_its_token_at_once,
);

// HTTP behaviour alone: the backend cannot change these.
crate::on_sqlite_only!(token_scopes_hide_other_tenants_and_forbid_keys_without_token_scope);
