//! `GET /tokens/status` in pages and by state, and the cursors of every list: bounded,
//! and any cursor of the documented form a position, never an error.

use edx_issuer::Failure;
use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::helpers::{assert_problem, json_body, tenant_body, TestApp};

/// Follows `next_cursor` from `first` to the end; returns each page's tenant ids.
async fn status_pages(app: &TestApp, first: &str) -> Vec<Vec<String>> {
    let mut pages = Vec::new();
    let mut path = first.to_owned();
    loop {
        let page = json_body(app.admin(Method::GET, &path, None).await, StatusCode::OK).await;
        let ids = page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["tenant_id"].as_str().unwrap().to_owned())
            .collect();
        pages.push(ids);
        match page["next_cursor"].as_str() {
            Some(cursor) => {
                let joiner = if first.contains('?') { '&' } else { '?' };
                path = format!("{first}{joiner}cursor={cursor}");
            }
            None => return pages,
        }
    }
}

async fn status_pages_give_every_tenant_once_in_id_order(app: TestApp) {
    // Created out of order: the pages must not follow creation.
    let mut ids: Vec<String> = (0..25).map(|n| format!("t{:02}", (n * 7) % 25)).collect();
    for id in &ids {
        let resp = app.create_tenant(&tenant_body(id)).await;
        assert_eq!(resp.status(), StatusCode::CREATED);
    }
    ids.sort();
    let pages = status_pages(&app, "/tokens/status?limit=10").await;
    let sizes: Vec<usize> = pages.iter().map(Vec::len).collect();
    assert_eq!(sizes, [10, 10, 5]);
    assert_eq!(pages.concat(), ids, "every tenant once, in id order");
    let all = status_pages(&app, "/tokens/status").await;
    assert_eq!(all, [ids], "one page by default");
}

async fn a_state_filter_returns_only_tenants_in_those_states(app: TestApp) {
    for id in ["a", "b", "c", "d"] {
        app.issuer_tenant(id).await;
    }
    app.issuer
        .configure("client-b", |b| b.failure = Some(Failure::ServerError));
    app.issuer
        .configure("client-d", |b| b.failure = Some(Failure::ServerError));
    for id in ["a", "b", "d"] {
        app.get_token(id).await;
    }
    let cases: [(&str, &[&str]); 6] = [
        ("state=failing", &["b", "d"]),
        ("state=valid", &["a"]),
        ("state=missing,failing", &["b", "c", "d"]),
        ("state=expired", &[]),
        ("state=", &["a", "b", "c", "d"]),
        ("state=failing&limit=1", &["b", "d"]),
    ];
    for (query, expected) in cases {
        let pages = status_pages(&app, &format!("/tokens/status?{query}")).await;
        assert_eq!(pages.concat(), expected, "{query}");
    }
    let page = json_body(
        app.admin(Method::GET, "/tokens/status?state=failing", None)
            .await,
        StatusCode::OK,
    )
    .await;
    assert!(page["items"]
        .as_array()
        .unwrap()
        .iter()
        .all(|s| s["state"] == "failing"));
}

async fn malformed_status_parameters_are_400_naming_them(app: TestApp) {
    app.create_tenant(&tenant_body("acme")).await;
    let huge = "A".repeat(5000);
    let cases = [
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("limit=ten", "limit"),
        ("limit=99999999999", "limit"),
        ("cursor=%25%25%25", "cursor"),
        ("cursor=A", "cursor"),
        ("cursor=YWNtZQ==", "cursor"),
        (&format!("cursor={huge}"), "cursor"),
        ("state=bogus", "state"),
        ("state=failing,Failing", "state"),
    ];
    for (query, named) in cases {
        let resp = app
            .admin(Method::GET, &format!("/tokens/status?{query}"), None)
            .await;
        let problem = assert_problem(resp, StatusCode::BAD_REQUEST).await;
        let detail = problem["detail"].as_str().unwrap_or_default();
        assert!(detail.contains(named), "{query}: {detail}");
        assert!(!detail.contains("bogus"), "the value is not repeated");
    }
}

/// A cursor the service did not issue: too long is `400`; of the documented form, a
/// position. Before, `/tenants?cursor=AAAA…` (NUL bytes once decoded) was a `500` on
/// PostgreSQL, and `/tenants?cursor=<5,000 characters>` too.
async fn oversized_cursors_are_400_and_foreign_ones_a_position(app: TestApp) {
    for id in ["acme", "beta"] {
        app.create_tenant(&tenant_body(id)).await;
    }
    let huge = "A".repeat(5000);
    for list in ["/tenants", "/audit-events", "/tokens/status"] {
        let resp = app
            .admin(Method::GET, &format!("{list}?cursor={huge}"), None)
            .await;
        let problem = assert_problem(resp, StatusCode::BAD_REQUEST).await;
        assert_eq!(problem["detail"], "cursor is not one this service issued");
    }
    let ids = |page: Value| -> Vec<String> {
        let items = page["items"].as_array().unwrap().clone();
        items
            .iter()
            .map(|t| {
                let id = t.get("id").or_else(|| t.get("tenant_id")).unwrap();
                id.as_str().unwrap().to_owned()
            })
            .collect()
    };
    // "AAAA" is three NUL bytes, "YWNtZQ" is "acme", "_w" is the byte 0xff.
    for list in ["/tenants", "/tokens/status"] {
        for (cursor, expected) in [
            ("AAAA", vec!["acme", "beta"]),
            ("", vec!["acme", "beta"]),
            ("YWNtZQ", vec!["beta"]),
            ("_w", vec![]),
        ] {
            let path = format!("{list}?cursor={cursor}");
            let page = json_body(app.admin(Method::GET, &path, None).await, StatusCode::OK).await;
            assert_eq!(ids(page), expected, "{path}");
        }
    }
    for (cursor, events) in [("AAAAAAAAAAA", 0), ("f_________8", 2)] {
        let path = format!("/audit-events?cursor={cursor}");
        let page = json_body(app.admin(Method::GET, &path, None).await, StatusCode::OK).await;
        assert_eq!(page["items"].as_array().unwrap().len(), events, "{path}");
    }
}

crate::on_both_backends!(oversized_cursors_are_400_and_foreign_ones_a_position);

crate::on_sqlite_only!(
    status_pages_give_every_tenant_once_in_id_order,
    a_state_filter_returns_only_tenants_in_those_states,
    malformed_status_parameters_are_400_naming_them,
);
