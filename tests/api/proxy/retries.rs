//! A `401` from the API: the revoked token is replaced once and the call retried, never
//! more, and never with a body that was streamed.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use super::{call, fingerprint_of, held_token, ENTERPRISE, PAST_THE_INTERVAL};
use crate::helpers::TestApp;

async fn a_revoked_token_is_replaced_once_and_the_call_retried(app: TestApp) {
    let client = app.issuer_tenant("acme").await;
    let key = app.create_key(&["proxy:acme"]).await;
    let first = call(&app, Method::GET, ENTERPRISE, &key).await;
    assert_eq!(first.status(), StatusCode::OK);
    let old = fingerprint_of(&first);
    assert_eq!(app.issuer.calls(&client), 1);

    app.advance(PAST_THE_INTERVAL);
    assert_eq!(app.issuer.revoke_tokens_of(&client), 1);
    let api_calls = app.issuer.api_calls();
    let resp = app
        .client
        .post(app.url(ENTERPRISE))
        .bearer_auth(&key)
        .json(&json!({ "name": "kept for the retry" }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let new = fingerprint_of(&resp);
    assert_ne!(new, old, "answered with the new token");
    let echo: Value = resp.json().await.unwrap();
    assert!(
        echo["body_length"].as_u64().unwrap() > 0,
        "the body was sent again"
    );
    assert_eq!(app.issuer.calls(&client), 2, "one new token");
    assert_eq!(app.issuer.api_calls(), api_calls + 2, "one retry");
    assert_eq!(held_token(&app, "acme").await["fingerprint"], new.as_str());

    let metrics = app.metrics().await;
    assert!(
        metrics.contains("tokenvend_proxy_401_retries_total{tenant=\"acme\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("tokenvend_proxy_requests_total{tenant=\"acme\",class=\"2xx\"} 2"),
        "{metrics}"
    );
    assert!(metrics.contains("tokenvend_proxy_request_duration_seconds_count"));
}

async fn a_second_401_is_returned_as_it_is_with_a_bounded_number_of_token_calls(app: TestApp) {
    let client = app.issuer_tenant("acme").await;
    let key = app.create_key(&["proxy:acme"]).await;
    app.get_token("acme").await;
    app.advance(PAST_THE_INTERVAL);
    let path = "/tenants/acme/proxy/api/test/unauthorized";
    let resp = call(&app, Method::GET, path, &key).await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_ne!(
        resp.headers()["content-type"],
        "application/problem+json",
        "the API's own answer"
    );
    assert_eq!(app.issuer.calls(&client), 2, "one new token for the retry");
    let api_calls = app.issuer.api_calls();
    for _ in 0..3 {
        let resp = call(&app, Method::GET, path, &key).await;
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    }
    assert_eq!(
        app.issuer.calls(&client),
        2,
        "no new token within the minimum refresh interval"
    );
    assert_eq!(app.issuer.api_calls(), api_calls + 3, "no retries either");
}

async fn a_streamed_body_is_not_retried_but_its_token_is_dropped(app: TestApp) {
    let client = app.issuer_tenant("acme").await;
    let key = app.create_key(&["proxy:acme"]).await;
    app.get_token("acme").await;
    app.advance(PAST_THE_INTERVAL);
    app.issuer.revoke_tokens_of(&client);
    let resp = app
        .client
        .put(app.url(ENTERPRISE))
        .bearer_auth(&key)
        .body(vec![b'y'; 1024 * 1024 + 1])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "returned as it is");
    assert_eq!(app.issuer.api_calls(), 1);
    let resp = call(&app, Method::GET, ENTERPRISE, &key).await;
    assert_eq!(
        resp.status(),
        StatusCode::OK,
        "the next call has a new token"
    );
    assert_eq!(app.issuer.calls(&client), 2);
}

crate::on_both_backends!(
    a_revoked_token_is_replaced_once_and_the_call_retried,
    a_second_401_is_returned_as_it_is_with_a_bounded_number_of_token_calls,
    a_streamed_body_is_not_retried_but_its_token_is_dropped,
);
