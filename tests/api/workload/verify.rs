//! An accepted JWT caller: its name, its scopes from the mappings that match (prefixes,
//! nested claims, CIDRs), deletions taking effect at once even for a verified token held
//! in the cache, and its token kept out of the logs.

use jsonwebtoken::Algorithm;
use reqwest::{Method, StatusCode};
use serde_json::json;

use super::{add_mapping, add_provider, claims, keys, list_with, mint, post, setup, token, WORKER};
use crate::helpers::{assert_problem, captured_logs, json_body, tenant_body, TestApp};
use crate::on_both_backends;

async fn a_workload_is_named_provider_and_subject_in_the_audit_trail(app: TestApp) {
    setup(&app).await;
    let jwt = token(&app, WORKER);
    let resp = app
        .request(
            Method::POST,
            "/tenants",
            Some(&jwt),
            Some(&tenant_body("acme")),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    let events = json_body(
        app.admin(Method::GET, "/audit-events", None).await,
        StatusCode::OK,
    )
    .await;
    let created = &events["items"][0];
    assert_eq!(created["action"], "tenant.create");
    assert_eq!(created["actor"], format!("k8s:{WORKER}"));
    // Its scopes are those of the mapping: no admin.
    let resp = app
        .request(Method::GET, "/api-keys", Some(&jwt), None)
        .await;
    assert_problem(resp, StatusCode::FORBIDDEN).await;
}

async fn a_valid_token_that_no_mapping_matches_is_forbidden(app: TestApp) {
    setup(&app).await;
    let outsider = token(&app, "system:serviceaccount:kube-system:default");
    let resp = app
        .request(Method::GET, "/tenants", Some(&outsider), None)
        .await;
    assert_problem(resp, StatusCode::FORBIDDEN).await;
    // Forbidden is not a failed authentication: the address's budget is untouched, and
    // the prefix match lets the namespace's accounts in.
    assert_eq!(list_with(&app, &token(&app, WORKER)).await, StatusCode::OK);
    let sibling = token(&app, "system:serviceaccount:jobs:reporter");
    assert_eq!(list_with(&app, &sibling).await, StatusCode::OK);
}

async fn a_mapping_can_match_a_nested_claim_by_json_pointer(app: TestApp) {
    add_provider(&app).await;
    add_mapping(
        &app,
        "by-namespace",
        json!({"/kubernetes.io/namespace": "jobs", "/kubernetes.io/serviceaccount/name": "work*"}),
        &["tenants:read"],
    )
    .await;
    // Any subject: the nested claims decide.
    assert_eq!(
        list_with(&app, &token(&app, "anyone")).await,
        StatusCode::OK
    );
    let mut other = claims(&app, "anyone");
    other["kubernetes.io"]["namespace"] = json!("default");
    let jwt = mint(&keys().rsa[0], Algorithm::RS256, Some("a"), &other);
    assert_eq!(list_with(&app, &jwt).await, StatusCode::FORBIDDEN);
    // Scopes are the union of every matching mapping.
    add_mapping(
        &app,
        "writers",
        json!({"sub": "anyone"}),
        &["tenants:write"],
    )
    .await;
    let jwt = token(&app, "anyone");
    let resp = app
        .request(
            Method::POST,
            "/tenants",
            Some(&jwt),
            Some(&tenant_body("acme")),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::CREATED);
}

async fn a_mapping_with_cidrs_applies_only_to_callers_inside_them(app: TestApp) {
    add_provider(&app).await;
    let inside = json!({"id": "loopback", "provider": "k8s", "match": {"sub": WORKER},
                        "scopes": ["tenants:read"], "cidrs": ["127.0.0.0/8", "::1/128"]});
    let outside = json!({"id": "elsewhere", "provider": "k8s", "match": {"sub": WORKER},
                         "scopes": ["tenants:write"], "cidrs": ["10.0.0.0/8"]});
    for body in [inside, outside] {
        json_body(
            post(&app, "/identity/mappings", &body).await,
            StatusCode::CREATED,
        )
        .await;
    }
    let jwt = token(&app, WORKER);
    assert_eq!(
        list_with(&app, &jwt).await,
        StatusCode::OK,
        "127.0.0.1 is inside"
    );
    let resp = app
        .request(
            Method::POST,
            "/tenants",
            Some(&jwt),
            Some(&tenant_body("acme")),
        )
        .await;
    assert_problem(resp, StatusCode::FORBIDDEN).await;

    // Without the loopback mapping, no mapping admits this address: 403.
    let resp = app
        .admin(Method::DELETE, "/identity/mappings/loopback", None)
        .await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    assert_eq!(list_with(&app, &jwt).await, StatusCode::FORBIDDEN);
}

async fn deleting_a_mapping_or_provider_takes_effect_at_once_even_for_a_cached_token(app: TestApp) {
    setup(&app).await;
    let jwt = token(&app, WORKER);
    assert_eq!(list_with(&app, &jwt).await, StatusCode::OK);
    assert_eq!(
        list_with(&app, &jwt).await,
        StatusCode::OK,
        "now from the cache"
    );
    let resp = app
        .admin(Method::DELETE, "/identity/mappings/jobs", None)
        .await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    assert_eq!(list_with(&app, &jwt).await, StatusCode::FORBIDDEN);

    add_mapping(&app, "again", json!({"sub": WORKER}), &["tenants:read"]).await;
    assert_eq!(list_with(&app, &jwt).await, StatusCode::OK);
    let resp = app
        .admin(Method::DELETE, "/identity/providers/k8s", None)
        .await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    assert_eq!(list_with(&app, &jwt).await, StatusCode::UNAUTHORIZED);
}

async fn a_cached_token_stops_working_when_it_expires(app: TestApp) {
    setup(&app).await;
    let jwt = token(&app, WORKER);
    assert_eq!(list_with(&app, &jwt).await, StatusCode::OK);
    app.advance(600 + 29);
    assert_eq!(
        list_with(&app, &jwt).await,
        StatusCode::OK,
        "within the leeway"
    );
    app.advance(1);
    assert_eq!(list_with(&app, &jwt).await, StatusCode::UNAUTHORIZED);
}

async fn no_token_reaches_a_log_line_and_metrics_count_by_provider(app: TestApp) {
    setup(&app).await;
    let accepted = token(&app, "system:serviceaccount:jobs:logged-worker");
    let refused = mint(
        &keys().rsa[1],
        Algorithm::RS256,
        Some("a"),
        &claims(&app, "system:serviceaccount:jobs:logged-worker"),
    );
    let outsider = token(&app, "system:serviceaccount:other:logged");
    assert_eq!(list_with(&app, &accepted).await, StatusCode::OK);
    assert_eq!(list_with(&app, &refused).await, StatusCode::UNAUTHORIZED);
    assert_eq!(list_with(&app, &outsider).await, StatusCode::FORBIDDEN);

    let logs = captured_logs();
    assert!(
        logs.contains("k8s:system:serviceaccount:jobs:logged-worker"),
        "the caller is named in the request's log line"
    );
    for jwt in [&accepted, &refused, &outsider] {
        let signature = jwt.rsplit('.').next().unwrap();
        assert!(!logs.contains(signature), "a JWT was logged");
    }
    let metrics = app.metrics().await;
    for line in [
        r#"tokenvend_identity_authentications_total{provider="k8s",outcome="accepted"} 1"#,
        r#"tokenvend_identity_authentications_total{provider="k8s",outcome="forbidden"} 1"#,
        r#"tokenvend_identity_authentications_total{provider="k8s",outcome="invalid"} 1"#,
    ] {
        assert!(metrics.contains(line), "{line} in\n{metrics}");
    }
    assert!(
        !metrics.contains("logged-worker"),
        "never a subject as a label"
    );
}

on_both_backends! {
    a_workload_is_named_provider_and_subject_in_the_audit_trail,
    a_valid_token_that_no_mapping_matches_is_forbidden,
    a_mapping_can_match_a_nested_claim_by_json_pointer,
    a_mapping_with_cidrs_applies_only_to_callers_inside_them,
    deleting_a_mapping_or_provider_takes_effect_at_once_even_for_a_cached_token,
    a_cached_token_stops_working_when_it_expires,
    no_token_reaches_a_log_line_and_metrics_count_by_provider,
}
