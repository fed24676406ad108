use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::{assert_problem, tenant_body, TestApp};

async fn requests_without_a_valid_key_are_401_with_a_challenge(app: TestApp) {
    let cases: [(&str, Option<&str>); 5] = [
        ("no header", None),
        ("basic scheme", Some("Basic dXNlcjpwYXNz")),
        ("bearer without key", Some("Bearer")),
        (
            "unknown key",
            Some("Bearer tv_abcdefghijkl_notarealkeynotarealkeynotarealkey1234"),
        ),
        ("admin key with a typo", Some("Bearer test-admin-key-wrong")),
    ];
    for (why, header) in cases {
        let mut req = app.client.get(app.url("/tenants"));
        if let Some(h) = header {
            req = req.header("authorization", h);
        }
        let resp = req.send().await.unwrap();
        assert!(resp.headers().contains_key("www-authenticate"), "{why}");
        let problem = assert_problem(resp, StatusCode::UNAUTHORIZED).await;
        assert_eq!(
            problem["type"], "urn:tokenvend:problem:unauthorized",
            "{why}"
        );
    }
}

async fn each_scope_allows_exactly_its_operations(app: TestApp) {
    app.create_tenant(&tenant_body("a")).await;
    app.create_tenant(&tenant_body("b")).await;
    let read = app.create_key(&["tenants:read"]).await;
    let write = app.create_key(&["tenants:write"]).await;
    let token_a = app.create_key(&["token:a"]).await;
    let token_all = app.create_key(&["token:*"]).await;
    let admin = app.create_key(&["admin"]).await;

    let patch = json!({"name": "x"});
    let new_key = json!({"name": "k", "scopes": ["tenants:read"]});
    let new_tenant = tenant_body("c");
    type Case<'a> = (
        &'a str,
        Method,
        &'a str,
        Option<&'a serde_json::Value>,
        StatusCode,
    );
    let cases: Vec<Case> = vec![
        (&read, Method::GET, "/tenants", None, StatusCode::OK),
        (&read, Method::GET, "/tenants/b", None, StatusCode::OK),
        (
            &read,
            Method::PATCH,
            "/tenants/b",
            Some(&patch),
            StatusCode::FORBIDDEN,
        ),
        (
            &read,
            Method::POST,
            "/api-keys",
            Some(&new_key),
            StatusCode::FORBIDDEN,
        ),
        (&write, Method::GET, "/tenants", None, StatusCode::FORBIDDEN),
        (
            &write,
            Method::PATCH,
            "/tenants/b",
            Some(&patch),
            StatusCode::OK,
        ),
        (
            &write,
            Method::POST,
            "/tenants",
            Some(&new_tenant),
            StatusCode::CREATED,
        ),
        (
            &write,
            Method::GET,
            "/audit-events",
            None,
            StatusCode::FORBIDDEN,
        ),
        (
            &token_a,
            Method::GET,
            "/tenants/b",
            None,
            StatusCode::FORBIDDEN,
        ),
        (
            &token_a,
            Method::GET,
            "/tenants/a",
            None,
            StatusCode::FORBIDDEN,
        ),
        (
            &token_a,
            Method::GET,
            "/tenants",
            None,
            StatusCode::FORBIDDEN,
        ),
        (
            &token_a,
            Method::DELETE,
            "/tenants/b",
            None,
            StatusCode::FORBIDDEN,
        ),
        (
            &token_all,
            Method::GET,
            "/tenants",
            None,
            StatusCode::FORBIDDEN,
        ),
        (
            &token_all,
            Method::GET,
            "/api-keys",
            None,
            StatusCode::FORBIDDEN,
        ),
        (&admin, Method::GET, "/api-keys", None, StatusCode::OK),
        (&admin, Method::GET, "/audit-events", None, StatusCode::OK),
        (
            &admin,
            Method::DELETE,
            "/tenants/c",
            None,
            StatusCode::NO_CONTENT,
        ),
    ];
    for (key, method, path, body, expected) in cases {
        let resp = app.request(method.clone(), path, Some(key), body).await;
        if expected.is_success() {
            assert_eq!(resp.status(), expected, "{method} {path}");
        } else {
            let problem = assert_problem(resp, expected).await;
            assert_eq!(
                problem["type"], "urn:tokenvend:problem:forbidden",
                "{method} {path}"
            );
        }
    }
    let b = app
        .admin(Method::GET, "/tenants/b", None)
        .await
        .json::<serde_json::Value>()
        .await
        .unwrap();
    assert_eq!(b["name"], "x", "only the writer's PATCH went through");
}

// HTTP behaviour alone: the backend cannot change these.
crate::on_sqlite_only!(
    requests_without_a_valid_key_are_401_with_a_challenge,
    each_scope_allows_exactly_its_operations,
);
