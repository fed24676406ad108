//! `?verify=true` on tenant writes: new credentials are tried on edX before anything is
//! stored, and a verified token is kept; and the safety net of an unverified rotation
//! (the previous secret, kept for a day, serves while edX refuses the new one).

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::unused_port;
use crate::helpers::{assert_problem, captured_logs, contains, json_body, tenant_body, TestApp};

/// A tenant body pointed at the local issuer, whose client is registered with `accepted`
/// as its secret (what edX accepts), while the body carries `sent`.
fn body_for(app: &TestApp, id: &str, accepted: &str, sent: &str) -> Value {
    let mut body = tenant_body(id);
    body["token_url"] = json!(app.issuer_server.token_url());
    body["client_secret"] = json!(sent);
    app.issuer
        .register(body["client_id"].as_str().unwrap(), accepted);
    body
}

async fn count(app: &TestApp, sql: &str, id: &str) -> i64 {
    app.raw_count(sql, &[id]).await
}

async fn audited(app: &TestApp, action: &str, id: &str) -> i64 {
    app.raw_count(
        "SELECT count(*) FROM audit_events WHERE action = $1 AND target = $2",
        &[action, id],
    )
    .await
}

async fn a_refused_secret_is_422_with_the_upstream_error_and_nothing_is_stored(app: TestApp) {
    let body = body_for(&app, "acme", "the-right-secret", "a-wrong-secret");
    let resp = app
        .admin(Method::POST, "/tenants?verify=true", Some(&body))
        .await;
    let problem = assert_problem(resp, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(problem["upstream_error"], "invalid_client", "{problem}");
    assert_eq!(problem["type"], "urn:tokenvend:problem:credentials-refused");
    assert!(!problem.to_string().contains("a-wrong-secret"), "{problem}");
    assert_eq!(app.issuer.calls("client-acme"), 1, "one try, never retried");

    let resp = app.admin(Method::GET, "/tenants/acme", None).await;
    assert_problem(resp, StatusCode::NOT_FOUND).await;
    assert_eq!(
        count(&app, "SELECT count(*) FROM tenants WHERE id = $1", "acme").await,
        0
    );
    assert_eq!(
        audited(&app, "tenant.create", "acme").await,
        0,
        "no change audited"
    );
    assert_eq!(audited(&app, "tenant.verify_failed", "acme").await, 1);
    let details = app
        .raw_strings(
            "SELECT details FROM audit_events WHERE action = 'tenant.verify_failed' AND target = $1",
            &["acme"],
        )
        .await;
    let details: Value = serde_json::from_str(&details[0]).unwrap();
    assert_eq!(details["upstream_error"], "invalid_client", "{details}");
    assert_eq!(details["operation"], "create", "{details}");
}

async fn good_credentials_are_stored_and_their_token_served_without_a_second_call(app: TestApp) {
    let body = body_for(&app, "acme", "the-secret", "the-secret");
    let resp = app
        .admin(Method::POST, "/tenants?verify=true", Some(&body))
        .await;
    let created = json_body(resp, StatusCode::CREATED).await;
    assert_eq!(created["id"], "acme");
    assert_eq!(app.issuer.calls("client-acme"), 1);
    assert_eq!(
        count(
            &app,
            "SELECT count(*) FROM tokens WHERE tenant_id = $1",
            "acme"
        )
        .await,
        1,
        "the verified token is stored (sealed)"
    );

    let resp = app.get_token("acme").await;
    let token = json_body(resp, StatusCode::OK).await;
    assert!(token["access_token"].is_string());
    assert_eq!(app.issuer.calls("client-acme"), 1, "no second edX call");
    let status = app.token_status("acme").await;
    assert_eq!(status["state"], "valid");
    assert_eq!(status["upstream_calls"], 1);
    let access_token = token["access_token"].as_str().unwrap();
    assert!(
        !contains(&app.dump().await, access_token),
        "never stored in the clear"
    );
}

async fn edx_unreachable_is_503_and_nothing_is_stored(app: TestApp) {
    let mut body = tenant_body("acme");
    // A loopback port nothing listens on.
    let dead = format!("http://127.0.0.1:{}/oauth2/access_token", unused_port());
    body["token_url"] = json!(dead);
    let resp = app
        .admin(Method::POST, "/tenants?verify=true", Some(&body))
        .await;
    let problem = assert_problem(resp, StatusCode::SERVICE_UNAVAILABLE).await;
    assert!(problem.get("upstream_error").is_none(), "{problem}");
    assert_eq!(
        count(&app, "SELECT count(*) FROM tenants WHERE id = $1", "acme").await,
        0
    );
    assert_eq!(audited(&app, "tenant.verify_failed", "acme").await, 1);

    // The same write without verification is stored as it is.
    let resp = app
        .admin(Method::POST, "/tenants?verify=false", Some(&body))
        .await;
    assert_eq!(resp.status(), StatusCode::CREATED);
}

async fn a_refused_patch_changes_nothing_and_keeps_the_held_token(app: TestApp) {
    let client = app.issuer_tenant("acme").await;
    let before = json_body(app.get_token("acme").await, StatusCode::OK).await;
    let tenant_before = json_body(
        app.admin(Method::GET, "/tenants/acme", None).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(app.issuer.calls(&client), 1);

    let resp = app
        .admin(
            Method::PATCH,
            "/tenants/acme?verify=true",
            Some(&json!({"client_secret": "not-the-secret", "name": "Renamed"})),
        )
        .await;
    let problem = assert_problem(resp, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(problem["upstream_error"], "invalid_client");
    assert_eq!(app.issuer.calls(&client), 2, "the verify call");
    let tenant_after = json_body(
        app.admin(Method::GET, "/tenants/acme", None).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(tenant_after, tenant_before, "nothing changed");
    assert_eq!(audited(&app, "tenant.update", "acme").await, 0);
    let details = app
        .raw_strings(
            "SELECT details FROM audit_events WHERE action = 'tenant.verify_failed' AND target = $1",
            &["acme"],
        )
        .await;
    assert!(details[0].contains("\"update\""), "{details:?}");

    let after = json_body(app.get_token("acme").await, StatusCode::OK).await;
    assert_eq!(
        after["access_token"], before["access_token"],
        "the held token is untouched"
    );
    assert_eq!(app.issuer.calls(&client), 2);
    assert_eq!(
        count(
            &app,
            "SELECT count(*) FROM tokens WHERE tenant_id = $1",
            "acme"
        )
        .await,
        1,
        "the stored token is untouched"
    );
}

async fn a_verified_patch_keeps_its_token(app: TestApp) {
    let client = app.issuer_tenant("acme").await;
    let before = json_body(app.get_token("acme").await, StatusCode::OK).await;
    app.issuer.register(&client, "the-new-secret");

    let resp = app
        .admin(
            Method::PATCH,
            "/tenants/acme?verify=true",
            Some(&json!({"client_secret": "the-new-secret"})),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(app.issuer.calls(&client), 2);

    let after = json_body(app.get_token("acme").await, StatusCode::OK).await;
    assert_ne!(
        after["access_token"], before["access_token"],
        "the new credentials' token"
    );
    assert_eq!(app.issuer.calls(&client), 2, "no second edX call");
    assert_eq!(audited(&app, "tenant.update", "acme").await, 1);
    let previous = app
        .raw_count(
            "SELECT count(*) FROM tenants WHERE id = $1 AND previous_secret_ciphertext IS NULL",
            &["acme"],
        )
        .await;
    assert_eq!(previous, 1, "a verified rotation needs no fallback");

    // A change of name alone has no new credentials to verify: no edX call.
    let resp = app
        .admin(
            Method::PATCH,
            "/tenants/acme?verify=true",
            Some(&json!({"name": "Acme Renamed"})),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(app.issuer.calls(&client), 2);
}

async fn a_patch_to_an_unreachable_endpoint_changes_nothing(app: TestApp) {
    let client = app.issuer_tenant("acme").await;
    let secret = "the-secret-for-the-new-endpoint";
    let dead = format!("http://127.0.0.1:{}/oauth2/access_token", unused_port());
    let resp = app
        .admin(
            Method::PATCH,
            "/tenants/acme?verify=true",
            Some(&json!({"token_url": dead, "client_secret": secret})),
        )
        .await;
    assert_problem(resp, StatusCode::SERVICE_UNAVAILABLE).await;
    let tenant = json_body(
        app.admin(Method::GET, "/tenants/acme", None).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(tenant["token_url"], app.issuer_server.token_url());
    assert_eq!(audited(&app, "tenant.update", "acme").await, 0);
    json_body(app.get_token("acme").await, StatusCode::OK).await;
    assert_eq!(
        app.issuer.calls(&client),
        1,
        "the old credentials still work"
    );
}

async fn the_previous_secret_serves_while_edx_refuses_an_unverified_new_one(app: TestApp) {
    let client = app.issuer_tenant("rotating").await;
    json_body(app.get_token("rotating").await, StatusCode::OK).await;
    assert_eq!(app.issuer.calls(&client), 1);

    // An unverified rotation to a secret edX does not know (yet).
    let resp = app
        .admin(
            Method::PATCH,
            "/tenants/rotating",
            Some(&json!({"client_secret": "a-secret-edx-refuses"})),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let kept = app
        .raw_count(
            "SELECT count(*) FROM tenants WHERE id = $1 AND previous_secret_ciphertext IS NOT NULL \
             AND previous_secret_until IS NOT NULL",
            &["rotating"],
        )
        .await;
    assert_eq!(kept, 1, "the previous secret is kept, sealed");

    let token = json_body(app.get_token("rotating").await, StatusCode::OK).await;
    assert!(token["access_token"].is_string());
    assert_eq!(
        app.issuer.calls(&client),
        3,
        "the new secret, then the previous one"
    );
    let sent = app.issuer.last_form(&client).unwrap();
    assert!(
        !sent
            .iter()
            .any(|(k, v)| k == "client_secret" && v == "a-secret-edx-refuses"),
        "the last call used the previous secret"
    );
    let status = app.token_status("rotating").await;
    assert_eq!(status["state"], "valid", "{status}");
    let message = status["last_error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with(
            "the new client secret was refused by edX (invalid_client); serving with the previous secret until "
        ),
        "{status}"
    );
    assert_eq!(status["last_error"]["status"], 401);
    let logs = captured_logs();
    assert!(
        logs.lines()
            .any(|line| line.contains("token.credentials_rejected")
                && line.contains("rotating")
                && line.contains("serving_previous_until")),
        "the credentials-rejected signal is raised"
    );

    // A day later the previous secret is no longer sent: the refusal shows.
    app.advance(25 * 3600);
    let resp = app.get_token("rotating").await;
    assert_problem(resp, StatusCode::BAD_GATEWAY).await;
    assert_eq!(
        app.issuer.calls(&client),
        4,
        "only the new secret was tried"
    );
}

async fn a_verify_value_other_than_true_or_false_is_400(app: TestApp) {
    for query in ["verify=yes", "verify=1", "verify=", "verify=TRUE"] {
        let body = tenant_body("acme");
        let resp = app
            .admin(Method::POST, &format!("/tenants?{query}"), Some(&body))
            .await;
        assert_problem(resp, StatusCode::BAD_REQUEST).await;
        let resp = app
            .admin(
                Method::PATCH,
                &format!("/tenants/acme?{query}"),
                Some(&json!({"name": "x"})),
            )
            .await;
        assert_problem(resp, StatusCode::BAD_REQUEST).await;
    }
    assert_eq!(app.issuer.total_calls(), 0);
}

async fn verifying_an_existing_id_is_409_without_asking_edx(app: TestApp) {
    let client = app.issuer_tenant("acme").await;
    let mut body = tenant_body("acme");
    body["client_id"] = json!(client);
    let resp = app
        .admin(Method::POST, "/tenants?verify=true", Some(&body))
        .await;
    assert_problem(resp, StatusCode::CONFLICT).await;
    assert_eq!(app.issuer.calls(&client), 0);
}

crate::on_both_backends!(
    a_refused_secret_is_422_with_the_upstream_error_and_nothing_is_stored,
    good_credentials_are_stored_and_their_token_served_without_a_second_call,
    edx_unreachable_is_503_and_nothing_is_stored,
    a_refused_patch_changes_nothing_and_keeps_the_held_token,
    a_verified_patch_keeps_its_token,
    a_patch_to_an_unreachable_endpoint_changes_nothing,
    the_previous_secret_serves_while_edx_refuses_an_unverified_new_one,
);

crate::on_sqlite_only!(
    a_verify_value_other_than_true_or_false_is_400,
    verifying_an_existing_id_is_409_without_asking_edx,
);
