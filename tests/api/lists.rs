//! The paged lists of caller keys and webhook endpoints (`?limit=&cursor=`, like
//! `GET /tenants`), and the cap of 100 webhook endpoints.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::{assert_problem, json_body, TestApp};

/// Every item of `path`, page by page with `limit`; and how many pages that took.
async fn page_through(app: &TestApp, path: &str, limit: usize) -> (Vec<Value>, usize) {
    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let url = match &cursor {
            Some(c) => format!("{path}?limit={limit}&cursor={c}"),
            None => format!("{path}?limit={limit}"),
        };
        let page = json_body(app.admin(Method::GET, &url, None).await, StatusCode::OK).await;
        pages += 1;
        let got = page["items"].as_array().expect("items").clone();
        assert!(
            got.len() <= limit,
            "{} items on a page of {limit}",
            got.len()
        );
        items.extend(got);
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => {
                assert!(page["next_cursor"].is_null(), "{page}");
                return (items, pages);
            }
        }
        assert!(pages < 100, "paging does not end");
    }
}

fn ids(items: &[Value]) -> Vec<String> {
    items
        .iter()
        .map(|item| item["id"].as_str().expect("id").to_owned())
        .collect()
}

async fn create_webhook(app: &TestApp, n: usize) -> reqwest::Response {
    app.admin(
        Method::POST,
        "/webhooks",
        Some(&json!({
            "url": format!("https://hooks.example.invalid/tokenvend/{n}"),
            "events": ["*"],
        })),
    )
    .await
}

async fn caller_keys_are_paged_in_creation_order_each_exactly_once(app: TestApp) {
    let mut created = Vec::new();
    for n in 0..250 {
        let body = json!({ "name": format!("key {n}"), "scopes": ["tenants:read"] });
        let resp = app.admin(Method::POST, "/api-keys", Some(&body)).await;
        let key = json_body(resp, StatusCode::CREATED).await;
        created.push(key["id"].as_str().unwrap().to_owned());
    }
    let (items, pages) = page_through(&app, "/api-keys", 40).await;
    assert_eq!(pages, 7, "250 keys in pages of 40");
    assert_eq!(ids(&items), created, "every key once, oldest first");
    assert!(items.iter().all(|item| item.get("key").is_none()));

    let first = json_body(
        app.admin(Method::GET, "/api-keys", None).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(
        first["items"].as_array().unwrap().len(),
        100,
        "default limit"
    );
    assert!(first["next_cursor"].is_string());
    let all = json_body(
        app.admin(Method::GET, "/api-keys?limit=500", None).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(ids(all["items"].as_array().unwrap()), created);
    assert!(all["next_cursor"].is_null());
}

async fn webhooks_are_paged_and_the_101st_is_refused_with_nothing_stored(app: TestApp) {
    let mut created = Vec::new();
    for n in 0..96 {
        let hook = json_body(create_webhook(&app, n).await, StatusCode::CREATED).await;
        created.push(hook["id"].as_str().unwrap().to_owned());
    }
    // Ten at once for the last four places: four get in, whatever the interleaving.
    let racing = (96..106).map(|n| create_webhook(&app, n));
    let mut refused = 0;
    for resp in futures::future::join_all(racing).await {
        if resp.status() == StatusCode::CREATED {
            let hook: Value = resp.json().await.unwrap();
            created.push(hook["id"].as_str().unwrap().to_owned());
        } else {
            let problem = assert_problem(resp, StatusCode::UNPROCESSABLE_ENTITY).await;
            assert!(
                problem["detail"].as_str().unwrap().contains("100"),
                "{problem}"
            );
            refused += 1;
        }
    }
    assert_eq!(refused, 6, "the cap held under concurrent requests");
    let resp = create_webhook(&app, 200).await;
    let problem = assert_problem(resp, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(problem["type"], "urn:tokenvend:problem:limit-reached");
    assert_eq!(
        app.raw_count("SELECT COUNT(*) FROM webhooks", &[]).await,
        100
    );
    let audited = app
        .raw_count(
            "SELECT COUNT(*) FROM audit_events WHERE action = 'webhook.create'",
            &[],
        )
        .await;
    assert_eq!(audited, 100, "a refused webhook writes no audit event");

    let (items, pages) = page_through(&app, "/webhooks", 40).await;
    assert_eq!(pages, 3);
    let mut listed = ids(&items);
    assert_eq!(listed[..96], created[..96], "oldest first");
    listed.sort();
    created.sort();
    assert_eq!(listed, created, "every webhook once");

    let gone = &created[0];
    let resp = app
        .admin(Method::DELETE, &format!("/webhooks/{gone}"), None)
        .await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        create_webhook(&app, 300).await.status(),
        StatusCode::CREATED
    );
}

async fn bad_limits_and_cursors_of_key_and_webhook_lists_are_400(app: TestApp) {
    app.create_key(&["tenants:read"]).await;
    assert_eq!(create_webhook(&app, 1).await.status(), StatusCode::CREATED);
    let long = "A".repeat(5000);
    for path in ["/api-keys", "/webhooks"] {
        for query in [
            "limit=0",
            "limit=501",
            "limit=-1",
            "limit=ten",
            "cursor=%25%25%25",
            "cursor=A",
            "cursor=AAAAAAAAAAA%3D",
            "cursor=YWNtZQ",
            &format!("cursor={long}"),
        ] {
            let resp = app
                .admin(Method::GET, &format!("{path}?{query}"), None)
                .await;
            assert_problem(resp, StatusCode::BAD_REQUEST).await;
        }
        // A cursor of the documented form that was never issued names a position.
        for cursor in ["AAAAAAAAAAA", "_____________w"] {
            let resp = app
                .admin(Method::GET, &format!("{path}?cursor={cursor}"), None)
                .await;
            let page = json_body(resp, StatusCode::OK).await;
            assert!(page["items"].is_array(), "{page}");
        }
    }
}

crate::on_both_backends!(
    caller_keys_are_paged_in_creation_order_each_exactly_once,
    webhooks_are_paged_and_the_101st_is_refused_with_nothing_stored,
);

crate::on_sqlite_only!(bad_limits_and_cursors_of_key_and_webhook_lists_are_400);
