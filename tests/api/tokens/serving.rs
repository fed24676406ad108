//! Serving: one upstream call for a cold tenant, the exact edX form, `min_ttl` and the
//! forms of `expires_in` edX sends.

use std::time::Duration;

use edx_issuer::ExpiresInFormat;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use super::token_json;
use crate::helpers::{assert_problem, json_body, TestApp};

async fn a_cold_tenant_fetches_once_then_serves_from_memory(app: TestApp) {
    let client = app.issuer_tenant("acme").await;
    let first = token_json(&app, "acme").await;
    assert_eq!(first["tenant_id"], "acme");
    assert_eq!(first["token_type"], "JWT");
    assert_eq!(first["expires_in"], 3600);
    assert_eq!(first["scope"], "read write");
    assert_eq!(
        first["access_token"].as_str().unwrap().split('.').count(),
        3
    );
    assert!(first["issued_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(app.issuer.calls(&client), 1);

    app.advance(100);
    let second = token_json(&app, "acme").await;
    assert_eq!(second["access_token"], first["access_token"]);
    assert_eq!(second["expires_in"], 3500, "whole seconds left now");
    assert_eq!(app.issuer.calls(&client), 1, "served from memory");
}

async fn the_token_request_sends_exactly_the_edx_form(app: TestApp) {
    let client = app.issuer_tenant("acme").await;
    token_json(&app, "acme").await;
    let form = app.issuer.last_form(&client).unwrap();
    let names: Vec<&str> = form.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        names,
        [
            "grant_type",
            "client_id",
            "client_secret",
            "token_type",
            "scope"
        ]
    );
    let get = |k: &str| {
        form.iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .unwrap()
    };
    assert_eq!(get("grant_type"), "client_credentials");
    assert_eq!(get("client_id"), client);
    assert!(get("client_secret").starts_with("secret-acme-"));
    assert_eq!(get("token_type"), "jwt");
    assert_eq!(get("scope"), "read write");

    let other = app
        .issuer_tenant_with("globex", |b| {
            b["scope"] = Value::Null;
            b["asymmetric_jwt"] = json!(true);
        })
        .await;
    token_json(&app, "globex").await;
    let form = app.issuer.last_form(&other).unwrap();
    let names: Vec<&str> = form.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        names,
        [
            "grant_type",
            "client_id",
            "client_secret",
            "token_type",
            "asymmetric_jwt"
        ]
    );
}

async fn two_hundred_concurrent_cold_requests_make_one_upstream_call(app: TestApp) {
    let client = app.issuer_tenant("acme").await;
    app.issuer
        .configure(&client, |b| b.latency = Duration::from_millis(100));
    let requests = (0..200).map(|_| app.get_token("acme"));
    let responses = futures::future::join_all(requests).await;
    let mut tokens = std::collections::HashSet::new();
    for resp in responses {
        let body = json_body(resp, StatusCode::OK).await;
        tokens.insert(body["access_token"].as_str().unwrap().to_owned());
    }
    assert_eq!(tokens.len(), 1, "everyone got the same token");
    assert_eq!(app.issuer.calls(&client), 1);
}

async fn min_ttl_fetches_a_fresher_token_at_most_once_per_request(app: TestApp) {
    let client = app.issuer_tenant("acme").await;
    let first = token_json(&app, "acme").await;
    let path = |n: u64| format!("/tenants/acme/token?min_ttl={n}");
    let same = json_body(
        app.admin(Method::GET, &path(3000), None).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(same["access_token"], first["access_token"]);
    assert_eq!(app.issuer.calls(&client), 1);

    app.advance(1000);
    let fresher = json_body(
        app.admin(Method::GET, &path(3000), None).await,
        StatusCode::OK,
    )
    .await;
    assert_ne!(fresher["access_token"], first["access_token"]);
    assert_eq!(fresher["expires_in"], 3600);
    assert_eq!(app.issuer.calls(&client), 2);

    // More than any token lives: the just-fetched token is returned as it is.
    let as_is = json_body(
        app.admin(Method::GET, &path(86_400), None).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(as_is["access_token"], fresher["access_token"]);
    assert_eq!(
        app.issuer.calls(&client),
        2,
        "a token fetched seconds ago is not refetched"
    );
    app.advance(60);
    let refetched = json_body(
        app.admin(Method::GET, &path(86_400), None).await,
        StatusCode::OK,
    )
    .await;
    assert_ne!(refetched["access_token"], fresher["access_token"]);
    assert_eq!(app.issuer.calls(&client), 3, "one fetch for that request");
    let metrics = app.metrics().await;
    assert!(
        metrics.contains("tokenvend_token_requests_total{result=\"miss\"} 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains("tokenvend_token_requests_total{result=\"hit\"} 2"),
        "{metrics}"
    );

    for bad in ["x", "-1", "86401"] {
        let resp = app
            .admin(
                Method::GET,
                &format!("/tenants/acme/token?min_ttl={bad}"),
                None,
            )
            .await;
        assert_problem(resp, StatusCode::BAD_REQUEST).await;
    }
}

async fn expires_in_as_a_string_a_float_or_missing_is_understood(app: TestApp) {
    for (id, format) in [
        ("as-string", ExpiresInFormat::String),
        ("as-float", ExpiresInFormat::Float),
        ("missing", ExpiresInFormat::Missing),
    ] {
        let client = app.issuer_tenant(id).await;
        app.issuer.configure(&client, |b| {
            b.expires_in = format;
            b.lifetime = Duration::from_secs(180);
        });
        let token = token_json(&app, id).await;
        assert_eq!(token["expires_in"], 180, "{id}");
        let status = app.token_status(id).await;
        assert_eq!(status["lifetime_seconds"], 180, "{id}");
    }
}

async fn opaque_bearer_tokens_get_a_window_from_expires_in_and_no_claims(app: TestApp) {
    let client = app
        .issuer_tenant_with("opaque", |b| b["token_type"] = json!("bearer"))
        .await;
    app.issuer
        .configure(&client, |b| b.lifetime = Duration::from_secs(36000));
    let token = token_json(&app, "opaque").await;
    assert_eq!(token["token_type"], "Bearer");
    assert_eq!(token["expires_in"], 36000);
    let status = app.token_status("opaque").await;
    assert_eq!(status["claims"], Value::Null);
    assert_eq!(status["lifetime_seconds"], 36000);
    assert_eq!(status["state"], "valid");
    let form = app.issuer.last_form(&client).unwrap();
    assert!(form.contains(&("token_type".to_owned(), "bearer".to_owned())));
}

crate::on_both_backends!(
    a_cold_tenant_fetches_once_then_serves_from_memory,
    the_token_request_sends_exactly_the_edx_form,
    two_hundred_concurrent_cold_requests_make_one_upstream_call,
    min_ttl_fetches_a_fresher_token_at_most_once_per_request,
    expires_in_as_a_string_a_float_or_missing_is_understood,
    opaque_bearer_tokens_get_a_window_from_expires_in_and_no_claims,
);
