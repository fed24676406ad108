use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::{assert_problem, json_body, tenant_body, TestApp};

async fn malformed_json_is_400(app: TestApp) {
    let resp = app
        .client
        .post(app.url("/tenants"))
        .bearer_auth(&app.admin_key)
        .header("content-type", "application/json")
        .body(r#"{"id": "acme", "#)
        .send()
        .await
        .unwrap();
    let problem = assert_problem(resp, StatusCode::BAD_REQUEST).await;
    assert_eq!(problem["type"], "urn:tokenvend:problem:bad-request");
}

async fn a_body_without_a_json_content_type_is_415(app: TestApp) {
    let body = serde_json::to_string(&tenant_body("acme")).unwrap();
    for content_type in [
        None,
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
    ] {
        let mut req = app
            .client
            .post(app.url("/tenants"))
            .bearer_auth(&app.admin_key)
            .body(body.clone());
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        let problem = assert_problem(
            req.send().await.unwrap(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        )
        .await;
        assert_eq!(
            problem["type"], "urn:tokenvend:problem:unsupported-media-type",
            "{content_type:?}"
        );
    }
}

async fn merge_patch_json_is_accepted_for_updates(app: TestApp) {
    app.create_tenant(&tenant_body("acme")).await;
    let resp = app
        .client
        .patch(app.url("/tenants/acme"))
        .bearer_auth(&app.admin_key)
        .header("content-type", "application/merge-patch+json")
        .body(r#"{"name": "Merged"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(json_body(resp, StatusCode::OK).await["name"], "Merged");
}

async fn a_body_over_one_mebibyte_is_413_and_nothing_is_stored(app: TestApp) {
    let mut body = tenant_body("acme");
    body["name"] = json!("n".repeat(1024 * 1024 + 1));
    let problem = assert_problem(
        app.create_tenant(&body).await,
        StatusCode::PAYLOAD_TOO_LARGE,
    )
    .await;
    assert_eq!(problem["type"], "urn:tokenvend:problem:payload-too-large");
    let resp = app.admin(Method::GET, "/tenants/acme", None).await;
    assert_problem(resp, StatusCode::NOT_FOUND).await;
}

async fn unknown_paths_are_404_and_wrong_methods_405(app: TestApp) {
    let problem = assert_problem(
        app.admin(Method::GET, "/nope", None).await,
        StatusCode::NOT_FOUND,
    )
    .await;
    assert_eq!(problem["type"], "urn:tokenvend:problem:not-found");
    let problem = assert_problem(
        app.admin(Method::PUT, "/tenants", None).await,
        StatusCode::METHOD_NOT_ALLOWED,
    )
    .await;
    assert_eq!(problem["type"], "urn:tokenvend:problem:method-not-allowed");
}

async fn a_client_request_id_is_echoed_and_one_is_made_otherwise(app: TestApp) {
    let resp = app
        .client
        .get(app.url("/healthz"))
        .header("x-request-id", "trace-me-123")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["x-request-id"], "trace-me-123");
    let resp = app.client.get(app.url("/healthz")).send().await.unwrap();
    let generated = resp.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(generated.len(), 36, "a UUID: {generated}");
    for unusable in [
        "x".repeat(129),
        "has space".to_owned(),
        "quote\"d".to_owned(),
    ] {
        let resp = app
            .client
            .get(app.url("/healthz"))
            .header("x-request-id", &unusable)
            .send()
            .await
            .unwrap();
        let echoed = resp.headers()["x-request-id"].to_str().unwrap();
        assert_eq!(
            echoed.len(),
            36,
            "{unusable:?} was replaced by a UUID, got {echoed}"
        );
    }
}

async fn scope_is_checked_before_the_body_is_read(app: TestApp) {
    let reader = app.create_key(&["tenants:read"]).await;
    let resp = app
        .client
        .post(app.url("/tenants"))
        .bearer_auth(&reader)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_problem(resp, StatusCode::FORBIDDEN).await;
    let resp = app
        .request(Method::GET, "/audit-events?limit=0", Some(&reader), None)
        .await;
    assert_problem(resp, StatusCode::FORBIDDEN).await;
}

async fn a_path_that_does_not_decode_is_404(app: TestApp) {
    let resp = app.admin(Method::GET, "/tenants/%FF%FE", None).await;
    assert_problem(resp, StatusCode::NOT_FOUND).await;
    let resp = app.admin(Method::DELETE, "/api-keys/%C0", None).await;
    assert_problem(resp, StatusCode::NOT_FOUND).await;
}

async fn bad_input_leaves_the_service_up(app: TestApp) {
    for body in [
        "",
        "null",
        "[]",
        "\"text\"",
        "{\"id\": {\"nested\": true}}",
        "\u{0}",
    ] {
        let resp = app
            .client
            .post(app.url("/tenants"))
            .bearer_auth(&app.admin_key)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert!(
            resp.status().is_client_error(),
            "{body:?}: {}",
            resp.status()
        );
    }
    let resp = app.request(Method::GET, "/healthz", None, None).await;
    assert_eq!(resp.status(), StatusCode::OK);
}

crate::on_both_backends!(
    merge_patch_json_is_accepted_for_updates,
    a_body_over_one_mebibyte_is_413_and_nothing_is_stored,
);

// HTTP behaviour alone: the backend cannot change these.
crate::on_sqlite_only!(
    malformed_json_is_400,
    a_body_without_a_json_content_type_is_415,
    unknown_paths_are_404_and_wrong_methods_405,
    a_client_request_id_is_echoed_and_one_is_made_otherwise,
    bad_input_leaves_the_service_up,
    scope_is_checked_before_the_body_is_read,
    a_path_that_does_not_decode_is_404,
);
