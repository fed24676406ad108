//! Managing webhooks: list, show and delete, the secret shown once, the admin scope and
//! bad input.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::{assert_problem, contains, json_body, TestApp};

async fn webhooks_can_be_listed_shown_and_deleted_and_the_secret_is_shown_once(app: TestApp) {
    let created = json_body(
        app.admin(
            Method::POST,
            "/webhooks",
            Some(&json!({
                "url": "https://hooks.example.invalid/tokenvend",
                "events": ["token.refresh_failed", "token.recovered", "token.refresh_failed"],
                "description": "ops pager",
            })),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    let id = created["id"].as_str().unwrap().to_owned();
    let secret = created["secret"].as_str().unwrap().to_owned();
    let key = BASE64
        .decode(secret.strip_prefix("whsec_").expect("whsec_ prefix"))
        .unwrap();
    assert!((24..=64).contains(&key.len()), "{} bytes", key.len());
    assert_eq!(
        created["events"],
        json!(["token.refresh_failed", "token.recovered"])
    );
    assert_eq!(created["failed_deliveries"], 0);

    let resp = app.admin(Method::GET, "/webhooks", None).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let text = resp.text().await.unwrap();
    assert!(!text.contains(&secret), "the list never shows the secret");
    let list: Value = serde_json::from_str(&text).unwrap();
    let mut expected = created.clone();
    expected.as_object_mut().unwrap().remove("secret");
    assert_eq!(list["items"], json!([expected.clone()]));

    let resp = app
        .admin(Method::GET, &format!("/webhooks/{id}"), None)
        .await;
    let text = resp.text().await.unwrap();
    assert!(!text.contains(&secret));
    assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), expected);
    assert!(!contains(&app.dump().await, &secret), "stored sealed");
    assert!(!contains(&app.dump().await, &key_text(&key)));

    let resp = app
        .admin(Method::DELETE, &format!("/webhooks/{id}"), None)
        .await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    for (method, path) in [
        (Method::GET, format!("/webhooks/{id}")),
        (Method::DELETE, format!("/webhooks/{id}")),
        (Method::GET, format!("/webhooks/{id}/deliveries")),
        (Method::POST, format!("/webhooks/{id}/test")),
        (Method::GET, "/webhooks/not-a-webhook-id".to_owned()),
    ] {
        let resp = app.admin(method.clone(), &path, None).await;
        assert_problem(resp, StatusCode::NOT_FOUND).await;
    }
    let list = json_body(
        app.admin(Method::GET, "/webhooks", None).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(list["items"], json!([]));
    let audit = json_body(
        app.admin(Method::GET, "/audit-events", None).await,
        StatusCode::OK,
    )
    .await;
    let actions: Vec<&str> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["action"].as_str())
        .filter(|a| a.starts_with("webhook."))
        .collect();
    assert_eq!(actions, ["webhook.delete", "webhook.create"]);
}

/// The raw key bytes as lowercase hex (what a careless store might have written).
fn key_text(key: &[u8]) -> String {
    key.iter().map(|b| format!("{b:02x}")).collect()
}

async fn webhooks_need_the_admin_scope(app: TestApp) {
    let key = app
        .create_key(&["tenants:read", "tenants:write", "token:*", "metrics"])
        .await;
    let id = "wh_00000000000000000000000000000000";
    for (method, path, body) in [
        (
            Method::POST,
            "/webhooks".to_owned(),
            Some(json!({ "url": "https://hooks.example.invalid/x", "events": ["*"] })),
        ),
        (Method::GET, "/webhooks".to_owned(), None),
        (Method::GET, format!("/webhooks/{id}"), None),
        (Method::DELETE, format!("/webhooks/{id}"), None),
        (Method::GET, format!("/webhooks/{id}/deliveries"), None),
        (Method::POST, format!("/webhooks/{id}/test"), None),
    ] {
        let resp = app
            .request(method.clone(), &path, Some(&key), body.as_ref())
            .await;
        let problem = assert_problem(resp, StatusCode::FORBIDDEN).await;
        assert!(
            problem["detail"].as_str().unwrap().contains("admin"),
            "{method} {path}: {problem}"
        );
        let resp = app
            .request(method.clone(), &path, None, body.as_ref())
            .await;
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{method} {path}");
    }
}

async fn bad_webhook_input_is_a_problem_naming_the_field(app: TestApp) {
    let long = "d".repeat(501);
    let cases = [
        (json!({ "events": ["*"] }), "url", "a missing url"),
        (
            json!({ "url": "not a url", "events": ["*"] }),
            "url",
            "a relative url",
        ),
        (
            json!({ "url": "ftp://hooks.example.invalid/x", "events": ["*"] }),
            "url",
            "not http(s)",
        ),
        (
            json!({ "url": "https://hooks.example.invalid/x" }),
            "events",
            "no events",
        ),
        (
            json!({ "url": "https://hooks.example.invalid/x", "events": [] }),
            "events",
            "empty events",
        ),
        (
            json!({ "url": "https://hooks.example.invalid/x", "events": ["token.stolen"] }),
            "events[0]",
            "an unknown event",
        ),
        (
            json!({ "url": "https://hooks.example.invalid/x", "events": ["tenant.created", "webhook.test"] }),
            "events[1]",
            "webhook.test is not subscribable",
        ),
        (
            json!({ "url": "https://hooks.example.invalid/x", "events": ["*", "tenant.created"] }),
            "events",
            "* with others",
        ),
        (
            json!({ "url": "https://hooks.example.invalid/x", "events": ["*"], "description": long }),
            "description",
            "a long description",
        ),
        (
            json!({ "url": "https://hooks.example.invalid/x", "events": ["*"], "secret": "whsec_x" }),
            "secret",
            "an unknown field",
        ),
        (
            json!({ "url": 7, "events": ["*"] }),
            "url",
            "a number for the url",
        ),
    ];
    for (body, field, what) in cases {
        let resp = app.admin(Method::POST, "/webhooks", Some(&body)).await;
        let problem = assert_problem(resp, StatusCode::UNPROCESSABLE_ENTITY).await;
        assert_eq!(problem["field"], field, "{what}: {problem}");
    }
    let resp = app
        .client
        .post(app.url("/webhooks"))
        .bearer_auth(&app.admin_key)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_problem(resp, StatusCode::BAD_REQUEST).await;
    let list = json_body(
        app.admin(Method::GET, "/webhooks", None).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(list["items"], json!([]), "nothing was stored");
}

crate::on_both_backends!(webhooks_can_be_listed_shown_and_deleted_and_the_secret_is_shown_once);

crate::on_sqlite_only!(
    webhooks_need_the_admin_scope,
    bad_webhook_input_is_a_problem_naming_the_field,
);
