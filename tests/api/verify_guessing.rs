//! `?verify=true` is no credential-guessing oracle: once edX refuses a client id's secret,
//! that client id is not verified again within the minimum refresh interval (`429`, no
//! edX call, even for the right secret), the refusal is audited once, and every verify
//! counts against the caller's fetch rate.

use std::num::NonZeroU32;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::{assert_problem, json_body, tenant_body, TestApp};

/// The test settings' minimum refresh interval (5 s), and a little more.
const PAST_THE_INTERVAL: u64 = 6;

async fn patch_secret(app: &TestApp, key: &str, id: &str, secret: &str) -> reqwest::Response {
    app.request(
        Method::PATCH,
        &format!("/tenants/{id}?verify=true"),
        Some(key),
        Some(&json!({ "client_secret": secret })),
    )
    .await
}

async fn assert_rate_limited(resp: reqwest::Response) -> Value {
    assert!(resp.headers().contains_key("retry-after"), "Retry-After");
    let problem = assert_problem(resp, StatusCode::TOO_MANY_REQUESTS).await;
    assert_eq!(problem["type"], "urn:tokenvend:problem:rate-limited");
    problem
}

async fn guessed_secrets_reach_edx_once_per_cool_down(app: TestApp) {
    let right = "the-secret-edx-knows-0123456789";
    let mut body = tenant_body("acme");
    body["token_url"] = json!(app.issuer_server.token_url());
    let client = body["client_id"].as_str().unwrap().to_owned();
    app.issuer.register(&client, right);
    body["client_secret"] = json!(right);
    assert_eq!(app.create_tenant(&body).await.status(), StatusCode::CREATED);
    let key = app.create_key(&["tenants:write"]).await;

    let first = patch_secret(&app, &key, "acme", "guess-0").await;
    let problem = assert_problem(first, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(problem["upstream_error"], "invalid_client");
    for n in 1..20 {
        assert_rate_limited(patch_secret(&app, &key, "acme", &format!("guess-{n}")).await).await;
    }
    // Not even the right secret is tried (its answer would tell the guess apart).
    assert_rate_limited(patch_secret(&app, &key, "acme", right).await).await;
    assert_eq!(app.issuer.calls(&client), 1, "one guess reached edX");
    // Nor under another tenant id with the same client id.
    let mut again = body.clone();
    again["id"] = json!("acme-two");
    again["client_secret"] = json!("guess-x");
    let resp = app
        .request(
            Method::POST,
            "/tenants?verify=true",
            Some(&key),
            Some(&again),
        )
        .await;
    assert_rate_limited(resp).await;
    assert_eq!(app.issuer.calls(&client), 1);
    let audited = app
        .raw_count(
            "SELECT count(*) FROM audit_events WHERE action = 'tenant.verify_failed'",
            &[],
        )
        .await;
    assert_eq!(audited, 1, "the refusal is on the record once");

    // After the cool-down the right secret verifies.
    app.advance(PAST_THE_INTERVAL);
    json_body(
        patch_secret(&app, &key, "acme", right).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(app.issuer.calls(&client), 2);
}

async fn verifies_count_against_the_callers_fetch_rate(app: TestApp) {
    let key = app.create_key(&["tenants:write"]).await;
    let mut answers = Vec::new();
    for n in 0..3 {
        let mut body = tenant_body(&format!("v-{n}"));
        body["token_url"] = json!(app.issuer_server.token_url());
        app.issuer.register(
            body["client_id"].as_str().unwrap(),
            body["client_secret"].as_str().unwrap(),
        );
        answers.push(
            app.request(
                Method::POST,
                "/tenants?verify=true",
                Some(&key),
                Some(&body),
            )
            .await,
        );
    }
    let third = answers.pop().unwrap();
    for resp in answers {
        assert_eq!(resp.status(), StatusCode::CREATED);
    }
    assert_rate_limited(third).await;
    assert_eq!(
        app.issuer.total_calls(),
        2,
        "the third verify never reached edX"
    );
    let stored = app
        .raw_count("SELECT count(*) FROM tenants WHERE id = $1", &["v-2"])
        .await;
    assert_eq!(stored, 0, "nothing is stored for a refused verify");
}

crate::on_both_backends_with! {
    // A rate far above what the guesses need: the cool-down alone stops them.
    guessed_secrets_reach_edx_once_per_cool_down: |s| s.vending.caller_fetch_rate = NonZeroU32::new(100);
    verifies_count_against_the_callers_fetch_rate: |s| s.vending.caller_fetch_rate = NonZeroU32::new(2);
}
