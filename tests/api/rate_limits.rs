//! Per-key rate limits (`rate_limit`, `TOKENVEND_KEY_RATE`) and the budget of failed
//! authentications per client address (`TOKENVEND_AUTH_FAILURES`).

use std::num::NonZeroU32;

use reqwest::{Method, Response, StatusCode};
use serde_json::{json, Value};

use crate::helpers::{assert_problem, json_body, spawn_app_with, Backend, TestApp};

/// Creates a key with `scopes` and `rate_limit` (JSON, `null` for the default); returns
/// the 201 body.
async fn create_key_with(app: &TestApp, scopes: &[&str], rate_limit: Value) -> Value {
    let body = json!({ "name": "limited", "scopes": scopes, "rate_limit": rate_limit });
    json_body(
        app.admin(Method::POST, "/api-keys", Some(&body)).await,
        StatusCode::CREATED,
    )
    .await
}

async fn list_tenants(app: &TestApp, key: &str) -> Response {
    app.request(Method::GET, "/tenants", Some(key), None).await
}

/// Asserts a 429 `rate-limited` problem with a `Retry-After` of whole seconds, at least
/// 1 and at most `most`.
async fn assert_rate_limited(resp: Response, most: u64) -> Value {
    let after: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .expect("Retry-After is whole seconds");
    assert!((1..=most).contains(&after), "Retry-After: {after}");
    let problem = assert_problem(resp, StatusCode::TOO_MANY_REQUESTS).await;
    assert_eq!(problem["type"], "urn:tokenvend:problem:rate-limited");
    assert_eq!(problem["title"], "Too Many Requests");
    problem
}

/// Sends requests as `key` until one is refused (at most `tries`); returns that answer.
/// A bucket refills while requests are made, so the refusal may come a little later
/// than the burst on a slow machine.
async fn first_refusal(app: &TestApp, key: &str, tries: usize) -> Response {
    for _ in 0..tries {
        let resp = list_tenants(app, key).await;
        if resp.status() != StatusCode::OK {
            return resp;
        }
    }
    panic!("no refusal in {tries} requests");
}

async fn a_key_over_its_rate_limit_gets_429_and_recovers_while_another_key_is_unaffected(
    mut app: TestApp,
) {
    let created = create_key_with(&app, &["tenants:read"], json!(2)).await;
    assert_eq!(created["rate_limit"], 2);
    let limited = created["key"].as_str().unwrap().to_owned();
    let other = create_key_with(&app, &["tenants:read"], Value::Null).await;
    assert_eq!(other["rate_limit"], Value::Null, "the default applies");
    let other = other["key"].as_str().unwrap().to_owned();
    let listed = json_body(
        app.admin(Method::GET, "/api-keys", None).await,
        StatusCode::OK,
    )
    .await;
    let rates: Vec<&Value> = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| &k["rate_limit"])
        .collect();
    assert_eq!(rates, [&json!(2), &Value::Null]);

    for _ in 0..2 {
        assert_eq!(list_tenants(&app, &limited).await.status(), StatusCode::OK);
    }
    let refused = first_refusal(&app, &limited, 5).await;
    let problem = assert_rate_limited(refused, 1).await;
    assert!(
        problem["detail"].as_str().unwrap().contains("rate limit"),
        "{problem}"
    );
    for _ in 0..20 {
        assert_eq!(
            list_tenants(&app, &other).await.status(),
            StatusCode::OK,
            "another key is not slowed by this one"
        );
    }
    // The buckets are read on the app's clock: a second later one request is back.
    app.advance(1);
    assert_eq!(
        list_tenants(&app, &limited).await.status(),
        StatusCode::OK,
        "the bucket refills"
    );

    app.restart().await;
    let refused = first_refusal(&app, &limited, 5).await;
    assert_rate_limited(refused, 1).await;
}

async fn rate_limit_must_be_a_whole_number_of_requests_per_second(app: TestApp) {
    let cases = [
        (json!(0), "zero would lock the key out"),
        (json!(-1), "negative"),
        (json!(1.5), "not whole"),
        (json!("2"), "a string"),
        (json!(true), "a boolean"),
        (json!([2]), "an array"),
        (json!(100_001), "absurdly high"),
        (json!(1e12), "a float far out of range"),
        (json!(u64::MAX), "beyond any integer column"),
    ];
    for (rate_limit, why) in cases {
        let body = json!({ "name": "k", "scopes": ["tenants:read"], "rate_limit": rate_limit });
        let resp = app.admin(Method::POST, "/api-keys", Some(&body)).await;
        let problem = assert_problem(resp, StatusCode::UNPROCESSABLE_ENTITY).await;
        assert_eq!(problem["field"], "rate_limit", "{why}: {problem}");
    }
    let listed = json_body(
        app.admin(Method::GET, "/api-keys", None).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(listed["items"], json!([]), "nothing was created");
    let created = create_key_with(&app, &["tenants:read"], json!(100_000)).await;
    assert_eq!(created["rate_limit"], 100_000);
}

async fn an_address_that_keeps_failing_authentication_is_slowed_but_valid_keys_still_work(
    app: TestApp,
) {
    let valid = app.create_key(&["tenants:read"]).await;
    let wrong = format!("{}x", &valid[..valid.len() - 1]);
    // The default, TOKENVEND_AUTH_FAILURES=60: sixty failures a minute are answered 401.
    for i in 0..60 {
        let resp = list_tenants(&app, &wrong).await;
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "failure {}", i + 1);
    }
    // The budget is read on the app's clock, which stands still: the 61st is refused
    // however long this machine took for the sixty.
    let refused = list_tenants(&app, &wrong).await;
    let problem = assert_rate_limited(refused, 60).await;
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("failed authentications"),
        "{problem}"
    );
    assert_eq!(
        list_tenants(&app, &valid).await.status(),
        StatusCode::OK,
        "a valid key from the same address still works"
    );
    assert_eq!(
        app.admin(Method::GET, "/tenants", None).await.status(),
        StatusCode::OK
    );

    // The edX-compatible endpoint counts and refuses the same way.
    let resp = app
        .client
        .post(app.url("/oauth2/access_token"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", "acme"),
            ("client_secret", wrong.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(resp.headers().contains_key("retry-after"));
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "invalid_request", "{body}");

    // A second later the budget has one failure again; a minute later all sixty.
    app.advance(1);
    assert_eq!(
        list_tenants(&app, &wrong).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        list_tenants(&app, &wrong).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    app.advance(60);
    for i in 0..60 {
        let resp = list_tenants(&app, &wrong).await;
        assert_eq!(
            resp.status(),
            StatusCode::UNAUTHORIZED,
            "after a minute, failure {}",
            i + 1
        );
    }
}

async fn a_key_over_its_rate_limit_is_refused_by_the_edx_compatible_endpoint(app: TestApp) {
    app.issuer_tenant("acme").await;
    let created = create_key_with(&app, &["token:acme"], json!(1)).await;
    let key = created["key"].as_str().unwrap().to_owned();
    let form = [
        ("grant_type", "client_credentials"),
        ("client_id", "acme"),
        ("client_secret", key.as_str()),
    ];
    let post = || {
        app.client
            .post(app.url("/oauth2/access_token"))
            .form(&form)
            .send()
    };
    assert_eq!(post().await.unwrap().status(), StatusCode::OK);
    let mut refused = None;
    for _ in 0..3 {
        let resp = post().await.unwrap();
        if resp.status() != StatusCode::OK {
            refused = Some(resp);
            break;
        }
    }
    let resp = refused.expect("a refusal");
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(resp.headers()["retry-after"], "1");
    assert_eq!(resp.headers()["cache-control"], "no-store");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        body,
        json!({"error": "invalid_request", "error_description": "rate limit exceeded"})
    );
}

crate::on_both_backends!(
    a_key_over_its_rate_limit_gets_429_and_recovers_while_another_key_is_unaffected,
);

crate::on_sqlite_only!(
    rate_limit_must_be_a_whole_number_of_requests_per_second,
    an_address_that_keeps_failing_authentication_is_slowed_but_valid_keys_still_work,
    a_key_over_its_rate_limit_is_refused_by_the_edx_compatible_endpoint,
);

#[tokio::test]
async fn the_default_key_rate_applies_to_keys_without_their_own_and_to_the_admin_key() {
    let app = spawn_app_with(Backend::Sqlite, |s| {
        s.serving.rate_limits.key_rate = NonZeroU32::new(3);
    })
    .await;
    // Two of the admin key's burst of three.
    let default = create_key_with(&app, &["tenants:read"], Value::Null).await;
    let own = create_key_with(&app, &["tenants:read"], json!(50)).await;
    let default = default["key"].as_str().unwrap().to_owned();
    let own = own["key"].as_str().unwrap().to_owned();

    for _ in 0..3 {
        assert_eq!(list_tenants(&app, &default).await.status(), StatusCode::OK);
    }
    assert_rate_limited(first_refusal(&app, &default, 5).await, 1).await;
    for _ in 0..20 {
        assert_eq!(
            list_tenants(&app, &own).await.status(),
            StatusCode::OK,
            "a key's own rate_limit overrides the default"
        );
    }
    assert_rate_limited(first_refusal(&app, &app.admin_key, 6).await, 1).await;
}

#[tokio::test]
async fn no_limits_when_both_are_zero() {
    let app = spawn_app_with(Backend::Sqlite, |s| {
        s.serving.rate_limits.key_rate = None;
        s.serving.rate_limits.auth_failures = None;
    })
    .await;
    for _ in 0..80 {
        let resp = list_tenants(&app, "tv_nobody_wrong").await;
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    }
    for _ in 0..50 {
        assert_eq!(
            app.admin(Method::GET, "/tenants", None).await.status(),
            StatusCode::OK
        );
    }
}
