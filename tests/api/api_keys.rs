use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::{assert_problem, json_body, TestApp};

async fn a_created_key_is_shown_once_and_never_listed(app: TestApp) {
    app.create_tenant(&crate::helpers::tenant_body("acme"))
        .await;
    let body =
        json!({"name": "billing service", "scopes": ["token:acme", "tenants:read", "token:acme"]});
    let resp = app.admin(Method::POST, "/api-keys", Some(&body)).await;
    let created = json_body(resp, StatusCode::CREATED).await;
    let key = created["key"].as_str().unwrap().to_owned();
    assert!(key.starts_with("tv_"), "{key}");
    assert!(key.len() >= 40);
    assert_eq!(created["name"], "billing service");
    assert_eq!(
        created["scopes"],
        json!(["token:acme", "tenants:read"]),
        "duplicates collapse"
    );
    let id = created["id"].as_str().unwrap();
    assert!(key.starts_with(&format!("tv_{id}_")));

    let list = json_body(
        app.admin(Method::GET, "/api-keys", None).await,
        StatusCode::OK,
    )
    .await;
    let items = list["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["id"], created["id"]);
    assert!(items[0].get("key").is_none());
    assert!(!list.to_string().contains(&key));

    let stored = app.dump().await;
    assert!(
        !crate::helpers::contains(&stored, &key),
        "only the hash is stored"
    );
}

async fn a_key_works_at_once_survives_a_restart_and_revocation_is_immediate(mut app: TestApp) {
    let key = app.create_key(&["tenants:read"]).await;
    let resp = app.request(Method::GET, "/tenants", Some(&key), None).await;
    assert_eq!(resp.status(), StatusCode::OK);

    app.restart().await;
    let resp = app.request(Method::GET, "/tenants", Some(&key), None).await;
    assert_eq!(
        resp.status(),
        StatusCode::OK,
        "keys are loaded from the store at start-up"
    );

    let id = key.split('_').nth(1).unwrap();
    let resp = app
        .admin(Method::DELETE, &format!("/api-keys/{id}"), None)
        .await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let resp = app.request(Method::GET, "/tenants", Some(&key), None).await;
    assert_problem(resp, StatusCode::UNAUTHORIZED).await;
    let resp = app
        .admin(Method::DELETE, &format!("/api-keys/{id}"), None)
        .await;
    assert_problem(resp, StatusCode::NOT_FOUND).await;

    app.restart().await;
    let resp = app.request(Method::GET, "/tenants", Some(&key), None).await;
    assert_problem(resp, StatusCode::UNAUTHORIZED).await;
}

async fn invalid_key_requests_are_422_naming_the_field(app: TestApp) {
    let cases: Vec<(&str, Value, &str)> = vec![
        ("no name", json!({"scopes": ["admin"]}), "name"),
        (
            "blank name",
            json!({"name": " ", "scopes": ["admin"]}),
            "name",
        ),
        ("no scopes", json!({"name": "k"}), "scopes"),
        ("empty scopes", json!({"name": "k", "scopes": []}), "scopes"),
        (
            "unknown scope",
            json!({"name": "k", "scopes": ["admin", "root"]}),
            "scopes[1]",
        ),
        (
            "bad tenant in scope",
            json!({"name": "k", "scopes": ["token:Bad_Id"]}),
            "scopes[0]",
        ),
        (
            "scopes not a list",
            json!({"name": "k", "scopes": "admin"}),
            "scopes",
        ),
        (
            "unknown field",
            json!({"name": "k", "scopes": ["admin"], "expires": 3}),
            "expires",
        ),
    ];
    for (why, body, field) in cases {
        let resp = app.admin(Method::POST, "/api-keys", Some(&body)).await;
        let problem = assert_problem(resp, StatusCode::UNPROCESSABLE_ENTITY).await;
        assert_eq!(problem["field"], field, "{why}: {problem}");
    }
    let list = json_body(
        app.admin(Method::GET, "/api-keys", None).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(list["items"], json!([]));
}

async fn a_non_admin_key_cannot_manage_keys(app: TestApp) {
    let writer = app
        .create_key(&["tenants:write", "tenants:read", "token:*"])
        .await;
    let body = json!({"name": "escalate", "scopes": ["admin"]});
    let resp = app
        .request(Method::POST, "/api-keys", Some(&writer), Some(&body))
        .await;
    assert_problem(resp, StatusCode::FORBIDDEN).await;
    let id = writer.split('_').nth(1).unwrap();
    let resp = app
        .request(
            Method::DELETE,
            &format!("/api-keys/{id}"),
            Some(&writer),
            None,
        )
        .await;
    assert_problem(resp, StatusCode::FORBIDDEN).await;
}

async fn a_created_admin_key_can_create_keys(app: TestApp) {
    let admin = app.create_key(&["admin"]).await;
    let body = json!({"name": "child", "scopes": ["token:*"]});
    let resp = app
        .request(Method::POST, "/api-keys", Some(&admin), Some(&body))
        .await;
    assert_eq!(resp.status(), StatusCode::CREATED);
}

crate::on_both_backends!(
    a_created_key_is_shown_once_and_never_listed,
    a_key_works_at_once_survives_a_restart_and_revocation_is_immediate,
);

// HTTP behaviour alone: the backend cannot change these.
crate::on_sqlite_only!(
    invalid_key_requests_are_422_naming_the_field,
    a_non_admin_key_cannot_manage_keys,
    a_created_admin_key_can_create_keys,
);
