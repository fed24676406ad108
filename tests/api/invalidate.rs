//! `POST /tenants/{id}/token/invalidate`: a caller that got a 401 from edX drops the held
//! token, but only while it is still the one it used, and no more often than the minimum
//! refresh interval allows.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::{assert_problem, json_body, TestApp};
use crate::{on_both_backends, on_sqlite_only};

/// The test settings' minimum refresh interval (5 s), and a little more.
const PAST_THE_INTERVAL: u64 = 6;

async fn token(app: &TestApp, id: &str) -> Value {
    json_body(app.get_token(id).await, StatusCode::OK).await
}

/// `POST /tenants/{id}/token/invalidate` with `fingerprint`, as the caller `key`.
pub async fn invalidate(
    app: &TestApp,
    id: &str,
    key: &str,
    fingerprint: &str,
) -> reqwest::Response {
    app.request(
        Method::POST,
        &format!("/tenants/{id}/token/invalidate"),
        Some(key),
        Some(&json!({ "fingerprint": fingerprint })),
    )
    .await
}

async fn invalidating_the_held_token_drops_it_and_the_next_call_fetches_a_new_one(app: TestApp) {
    let client = app.issuer_tenant("acme").await;
    let first = token(&app, "acme").await;
    let fingerprint = first["fingerprint"].as_str().unwrap().to_owned();
    assert_eq!(fingerprint.len(), 16);
    assert_eq!(
        app.token_status("acme").await["fingerprint"],
        fingerprint,
        "the token and its status show the same fingerprint"
    );
    app.advance(PAST_THE_INTERVAL);
    let key = app.create_key(&["token:acme"]).await;
    let answer = json_body(
        invalidate(&app, "acme", &key, &fingerprint).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(answer, json!({ "invalidated": true }));
    assert_eq!(
        app.issuer.calls(&client),
        1,
        "dropping asks edX for nothing"
    );

    let second = token(&app, "acme").await;
    assert_ne!(second["access_token"], first["access_token"]);
    assert_ne!(second["fingerprint"], first["fingerprint"]);
    assert_eq!(app.issuer.calls(&client), 2, "one new token");

    let audit = json_body(
        app.admin(Method::GET, "/audit-events", None).await,
        StatusCode::OK,
    )
    .await;
    let invalidations: Vec<&Value> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "token.invalidate")
        .collect();
    assert_eq!(invalidations.len(), 1, "{audit}");
    assert_eq!(invalidations[0]["target"], "acme");
    assert_eq!(invalidations[0]["details"]["result"], "dropped");
    assert_eq!(
        invalidations[0]["details"]["fingerprint"],
        fingerprint.as_str()
    );
    assert!(
        !audit
            .to_string()
            .contains(first["access_token"].as_str().unwrap()),
        "the audit trail never holds a token"
    );
}

async fn a_late_report_about_an_old_token_drops_nothing_and_calls_nobody(app: TestApp) {
    let client = app.issuer_tenant("acme").await;
    let key = app.create_key(&["token:acme"]).await;
    let old = token(&app, "acme").await;
    app.advance(PAST_THE_INTERVAL);
    let resp = invalidate(&app, "acme", &key, old["fingerprint"].as_str().unwrap()).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let fresh = token(&app, "acme").await;
    assert_eq!(app.issuer.calls(&client), 2);

    app.advance(PAST_THE_INTERVAL);
    for fingerprint in [old["fingerprint"].as_str().unwrap(), "0123456789abcdef"] {
        let answer = json_body(
            invalidate(&app, "acme", &key, fingerprint).await,
            StatusCode::OK,
        )
        .await;
        assert_eq!(
            answer,
            json!({ "invalidated": false, "reason": "fingerprint_mismatch" }),
            "{fingerprint}"
        );
    }
    let still = token(&app, "acme").await;
    assert_eq!(
        still["access_token"], fresh["access_token"],
        "the fresh token is kept"
    );
    assert_eq!(app.issuer.calls(&client), 2, "no call to edX");
    let audit = json_body(
        app.admin(Method::GET, "/audit-events", None).await,
        StatusCode::OK,
    )
    .await;
    let results: Vec<&Value> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "token.invalidate")
        .map(|e| &e["details"]["result"])
        .collect();
    assert_eq!(
        results,
        ["dropped"],
        "only the report that dropped a token is on the record (no-ops are not)"
    );
}

async fn an_invalidation_within_the_refresh_interval_is_refused_with_retry_after(app: TestApp) {
    let client = app.issuer_tenant("acme").await;
    let held = token(&app, "acme").await;
    let key = app.create_key(&["token:*"]).await;
    let resp = invalidate(&app, "acme", &key, held["fingerprint"].as_str().unwrap()).await;
    let retry_after: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=5).contains(&retry_after), "{retry_after}");
    let problem = assert_problem(resp, StatusCode::TOO_MANY_REQUESTS).await;
    assert_eq!(problem["type"], "urn:tokenvend:problem:refresh-too-soon");
    let still = token(&app, "acme").await;
    assert_eq!(
        still["access_token"], held["access_token"],
        "nothing dropped"
    );
    assert_eq!(app.issuer.calls(&client), 1);
}

async fn an_invalidated_token_is_not_brought_back_by_a_restart(mut app: TestApp) {
    let client = app.issuer_tenant("acme").await;
    let first = token(&app, "acme").await;
    // On SQLite the token is stored in the background, moments after it is served.
    crate::helpers::eventually("the token is stored", async || {
        app.raw_count("SELECT COUNT(*) FROM tokens WHERE tenant_id = 'acme'", &[])
            .await
            == 1
    })
    .await;
    app.advance(PAST_THE_INTERVAL);
    let fingerprint = first["fingerprint"].as_str().unwrap();
    let answer = json_body(
        invalidate(&app, "acme", &app.admin_key, fingerprint).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(answer, json!({ "invalidated": true }));
    crate::helpers::eventually("the stored copy is deleted", async || {
        app.raw_count("SELECT COUNT(*) FROM tokens WHERE tenant_id = 'acme'", &[])
            .await
            == 0
    })
    .await;
    app.restart().await;
    let second = token(&app, "acme").await;
    assert_ne!(second["fingerprint"], first["fingerprint"]);
    assert_eq!(
        app.issuer.calls(&client),
        2,
        "the dead token was not adopted"
    );
}

on_both_backends!(
    an_invalidated_token_is_not_brought_back_by_a_restart,
    invalidating_the_held_token_drops_it_and_the_next_call_fetches_a_new_one,
    a_late_report_about_an_old_token_drops_nothing_and_calls_nobody,
    an_invalidation_within_the_refresh_interval_is_refused_with_retry_after,
);

async fn invalidation_follows_the_token_scope_rules(app: TestApp) {
    app.issuer_tenant("acme").await;
    app.issuer_tenant("other").await;
    let held = token(&app, "acme").await;
    let fingerprint = held["fingerprint"].as_str().unwrap();
    let cases = [
        (
            vec!["tenants:write"],
            StatusCode::FORBIDDEN,
            "no token scope",
        ),
        (
            vec!["proxy:acme"],
            StatusCode::FORBIDDEN,
            "a proxy scope only",
        ),
        (
            vec!["token:other"],
            StatusCode::NOT_FOUND,
            "another tenant's token",
        ),
    ];
    for (scopes, status, why) in cases {
        let key = app.create_key(&scopes).await;
        let resp = invalidate(&app, "acme", &key, fingerprint).await;
        assert_eq!(resp.status(), status, "{why}");
        assert_problem(resp, status).await;
    }
    let key = app.create_key(&["token:acme"]).await;
    for (body, why) in [
        (json!({ "fingerprint": "not-a-fingerprint" }), "not hex"),
        (json!({ "fingerprint": "0123456789ABCDEF" }), "upper case"),
        (json!({}), "missing"),
        (
            json!({ "fingerprint": fingerprint, "extra": 1 }),
            "unknown field",
        ),
    ] {
        let resp = app
            .request(
                Method::POST,
                "/tenants/acme/token/invalidate",
                Some(&key),
                Some(&body),
            )
            .await;
        assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY, "{why}");
        assert_problem(resp, StatusCode::UNPROCESSABLE_ENTITY).await;
    }
    let resp = invalidate(&app, "ghost", &key, fingerprint).await;
    assert_problem(resp, StatusCode::NOT_FOUND).await;
}

on_sqlite_only!(invalidation_follows_the_token_scope_rules);
