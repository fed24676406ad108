//! Audit retention (`TOKENVEND_AUDIT_RETENTION_DAYS`): events older than the retention
//! are pruned, at start-up and then periodically, by the app's clock.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::{captured_logs, eventually, json_body, Backend, TestApp};

const DAY: u64 = 86_400;

/// Creates a caller key named `name`: one `api_key.create` event whose target is the id.
async fn audited_change(app: &TestApp, name: &str) -> String {
    let body = json!({ "name": name, "scopes": ["tenants:read"] });
    let resp = app.admin(Method::POST, "/api-keys", Some(&body)).await;
    let key = json_body(resp, StatusCode::CREATED).await;
    key["id"].as_str().unwrap().to_owned()
}

async fn events(app: &TestApp) -> i64 {
    app.raw_count("SELECT COUNT(*) FROM audit_events", &[])
        .await
}

/// Moves the event of `target` `days` into the past, as an event written then.
async fn backdate(app: &TestApp, target: &str, days: u32) {
    let sql = match app.backend {
        Backend::Postgres => {
            format!("UPDATE audit_events SET at = at - interval '{days} days' WHERE target = $1")
        }
        // Written as sqlx writes timestamps to SQLite (RFC 3339, `+00:00`).
        Backend::Sqlite => format!(
            "UPDATE audit_events SET at = strftime('%Y-%m-%dT%H:%M:%f+00:00', at, \
             '-{days} days') WHERE target = $1"
        ),
    };
    assert_eq!(app.raw_execute(&sql, &[target]).await, 1);
}

async fn events_older_than_the_retention_are_pruned_and_recent_ones_kept(app: TestApp) {
    let old = audited_change(&app, "old").await;
    let recent = audited_change(&app, "recent").await;
    let newer = audited_change(&app, "newer").await;
    backdate(&app, &old, 500).await;
    assert_eq!(app.prune_audit().await, 1, "only the 500-day-old event");
    let left = app
        .raw_strings("SELECT target FROM audit_events ORDER BY id", &[])
        .await;
    assert_eq!(left, [recent.clone(), newer.clone()]);

    app.advance(399 * DAY);
    assert_eq!(app.prune_audit().await, 0, "399 days old: kept");
    assert_eq!(events(&app).await, 2);
    app.advance(2 * DAY);
    assert_eq!(app.prune_audit().await, 2, "401 days old: pruned");
    let page = json_body(
        app.admin(Method::GET, "/audit-events", None).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(page["items"], json!([]));
}

/// The background task prunes at start-up (and then every hour): no pass is asked for.
async fn old_events_are_pruned_at_start_up(mut app: TestApp) {
    let target = audited_change(&app, "old").await;
    app.advance(401 * DAY);
    app.restart().await;
    eventually("the start-up prune", async || events(&app).await == 0).await;
    assert!(
        captured_logs().contains("pruned audit events older than the retention count=1"),
        "the prune is logged with its count"
    );
    assert!(!target.is_empty());
}

async fn a_retention_of_zero_keeps_every_event(mut app: TestApp) {
    app.settings.audit.retention_days = 0;
    app.restart().await;
    let old = audited_change(&app, "old").await;
    audited_change(&app, "recent").await;
    backdate(&app, &old, 5000).await;
    app.advance(10_000 * DAY);
    assert_eq!(app.prune_audit().await, 0);
    app.restart().await;
    assert_eq!(app.prune_audit().await, 0);
    assert_eq!(events(&app).await, 2);
}

/// A backlog far larger than one batch goes in several short transactions, all of it.
async fn a_large_backlog_is_pruned_in_batches(app: TestApp) {
    let insert = match app.backend {
        Backend::Postgres => {
            "INSERT INTO audit_events (at, actor, action, target, details) \
             SELECT now() - interval '500 days', 'test', 'test.backlog', 't' || n, '{}' \
             FROM generate_series(1, 2500) AS n"
        }
        Backend::Sqlite => {
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 2500) \
             INSERT INTO audit_events (at, actor, action, target, details) \
             SELECT strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now', '-500 days'), 'test', \
             'test.backlog', 't' || i, '{}' FROM n"
        }
    };
    assert_eq!(app.raw_execute(insert, &[]).await, 2500);
    audited_change(&app, "recent").await;
    // The pass run here, or the start-up pass if it comes later, takes all of them.
    app.prune_audit().await;
    assert_eq!(events(&app).await, 1, "only the recent event is left");
}

crate::on_both_backends!(
    events_older_than_the_retention_are_pruned_and_recent_ones_kept,
    old_events_are_pruned_at_start_up,
    a_retention_of_zero_keeps_every_event,
    a_large_backlog_is_pruned_in_batches,
);
