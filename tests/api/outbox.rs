//! One write path per change: a change, its audit entry and (for tenants) its outbox
//! event commit together or not at all, and what holds the change in memory (the engine,
//! the key ring, the identity registry) learns of it only once it committed. A committed
//! change always has its event, and the event reaches its receiver at least once, however
//! long the receiver was down and whatever the process went through meanwhile.

use std::collections::BTreeSet;
use std::time::Duration;

use reqwest::{Method, Response, StatusCode};
use serde_json::json;
use tokio::net::TcpListener;

use crate::helpers::{assert_problem, eventually_within, tenant_body, Backend, TestApp};
use crate::on_both_backends;
use crate::webhooks::{register, Receiver};
use crate::workload::{list_with, setup, token};

/// Makes every transaction that writes an audit entry fail at COMMIT, after all its
/// statements ran: a trigger records a row that breaks a deferred foreign key, which
/// both stores check only when the transaction commits.
async fn fail_commits(app: &TestApp) {
    for sql in [
        "CREATE TABLE commit_guard_target (id TEXT PRIMARY KEY)",
        "CREATE TABLE commit_guard (target TEXT REFERENCES commit_guard_target (id) \
         DEFERRABLE INITIALLY DEFERRED)",
    ] {
        app.raw_execute(sql, &[]).await;
    }
    match app.backend {
        Backend::Postgres => {
            app.raw_execute(
                "CREATE FUNCTION fail_commit() RETURNS trigger AS $$ BEGIN \
                 INSERT INTO commit_guard VALUES ('missing'); RETURN NULL; END $$ \
                 LANGUAGE plpgsql",
                &[],
            )
            .await;
            app.raw_execute(
                "CREATE TRIGGER fail_commit AFTER INSERT ON audit_events \
                 FOR EACH ROW EXECUTE FUNCTION fail_commit()",
                &[],
            )
            .await;
        }
        Backend::Sqlite => {
            app.raw_execute(
                "CREATE TRIGGER fail_commit AFTER INSERT ON audit_events \
                 BEGIN INSERT INTO commit_guard VALUES ('missing'); END",
                &[],
            )
            .await;
        }
    }
}

async fn let_commits_succeed(app: &TestApp) {
    let sql = match app.backend {
        Backend::Postgres => "DROP TRIGGER fail_commit ON audit_events",
        Backend::Sqlite => "DROP TRIGGER fail_commit",
    };
    app.raw_execute(sql, &[]).await;
}

/// How long a delivery may take on a loaded machine (it takes a few milliseconds alone).
const DELIVERY: Duration = Duration::from_secs(20);

/// How many rows each table that a change writes holds.
async fn counts(app: &TestApp) -> Vec<(&'static str, i64)> {
    let mut counts = Vec::new();
    for table in [
        "tenants",
        "audit_events",
        "webhook_events",
        "webhook_deliveries",
        "api_keys",
        "webhooks",
        "identity_providers",
        "identity_mappings",
    ] {
        let sql = format!("SELECT COUNT(*) FROM {table}");
        counts.push((table, app.raw_count(&sql, &[]).await));
    }
    counts
}

/// The events of `kind` about tenant `id` in the outbox.
async fn events_of(app: &TestApp, kind: &str, id: &str) -> i64 {
    let about = format!("%\"tenant_id\":\"{id}\"%");
    app.raw_count(
        "SELECT COUNT(*) FROM webhook_events WHERE type = $1 AND payload LIKE $2",
        &[kind, &about],
    )
    .await
}

/// A 500 whose body says nothing of the cause.
async fn assert_failed_quietly(resp: Response, what: &str) {
    let body = assert_problem(resp, StatusCode::INTERNAL_SERVER_ERROR).await;
    assert_eq!(body["detail"], "internal error", "{what}: {body}");
    let text = body.to_string().to_lowercase();
    for inner in [
        "commit_guard",
        "foreign",
        "constraint",
        "audit_events",
        "sql",
    ] {
        assert!(!text.contains(inner), "{what} leaks {inner:?}: {body}");
    }
}

async fn a_change_whose_commit_fails_leaves_no_row_no_audit_entry_and_no_event(app: TestApp) {
    let (receiver, url, _server) = Receiver::start().await;
    let (webhook, _) = register(&app, &url, &["*"]).await;
    app.issuer_tenant("kept").await;
    app.issuer_tenant("gone").await;
    let key = app.create_key(&["tenants:read"]).await;
    let key_id = key.split('_').nth(1).unwrap().to_owned();
    setup(&app).await;
    let worker = token(&app, "system:serviceaccount:jobs:builder");
    eventually_within(DELIVERY, "the first events", async || receiver.count() == 2).await;
    let before = counts(&app).await;

    fail_commits(&app).await;
    let failing: [(&str, Method, String, Option<serde_json::Value>); 8] = [
        (
            "tenant create",
            Method::POST,
            "/tenants".into(),
            Some(tenant_body("new")),
        ),
        (
            "tenant update",
            Method::PATCH,
            "/tenants/kept".into(),
            Some(json!({"name": "renamed"})),
        ),
        (
            "tenant delete",
            Method::DELETE,
            "/tenants/gone".into(),
            None,
        ),
        (
            "key create",
            Method::POST,
            "/api-keys".into(),
            Some(json!({"name": "new key", "scopes": ["tenants:read"]})),
        ),
        (
            "key revoke",
            Method::DELETE,
            format!("/api-keys/{key_id}"),
            None,
        ),
        (
            "webhook delete",
            Method::DELETE,
            format!("/webhooks/{webhook}"),
            None,
        ),
        (
            "identity mapping create",
            Method::POST,
            "/identity/mappings".into(),
            Some(
                json!({"id": "more", "provider": "k8s", "match": {"sub": "x"},
                        "scopes": ["tenants:read"]}),
            ),
        ),
        (
            "identity provider delete",
            Method::DELETE,
            "/identity/providers/k8s".into(),
            None,
        ),
    ];
    for (what, method, path, body) in failing {
        assert_failed_quietly(app.admin(method, &path, body.as_ref()).await, what).await;
    }
    assert_eq!(counts(&app).await, before, "no table changed");
    assert_eq!(events_of(&app, "tenant.created", "new").await, 0);
    assert_eq!(events_of(&app, "tenant.updated", "kept").await, 0);
    assert_eq!(events_of(&app, "tenant.deleted", "gone").await, 0);
    let name = app
        .raw_strings("SELECT name FROM tenants WHERE id = $1", &["kept"])
        .await;
    assert_eq!(name, ["Tenant kept"], "the update was not made");

    // Nothing in memory moved either: the engine, the key ring and the identity registry
    // hold what the store holds.
    assert_eq!(app.get_token("new").await.status(), StatusCode::NOT_FOUND);
    assert_eq!(app.get_token("gone").await.status(), StatusCode::OK);
    let listed = app.request(Method::GET, "/tenants", Some(&key), None).await;
    assert_eq!(listed.status(), StatusCode::OK, "the key is not revoked");
    assert_eq!(list_with(&app, &worker).await, StatusCode::OK);

    let_commits_succeed(&app).await;
    let created = app.create_tenant(&tenant_body("after")).await;
    assert_eq!(created.status(), StatusCode::CREATED);
    eventually_within(DELIVERY, "the event of the change after", async || {
        receiver
            .received()
            .iter()
            .any(|r| r.json()["data"]["tenant_id"] == "after")
    })
    .await;
    let mut announced: Vec<String> = receiver
        .received()
        .iter()
        .map(|r| format!("{} {}", r.json()["type"], r.json()["data"]["tenant_id"]))
        .collect();
    announced.sort();
    assert_eq!(
        announced,
        [
            "\"tenant.created\" \"after\"",
            "\"tenant.created\" \"gone\"",
            "\"tenant.created\" \"kept\""
        ],
        "only committed changes are announced"
    );
}

async fn every_committed_tenant_change_reaches_a_receiver_that_was_down_at_least_once(
    mut app: TestApp,
) {
    // A port with nobody listening: every delivery is refused.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    drop(listener);
    register(&app, &format!("http://{address}/hook"), &["*"]).await;

    let changes = [
        (
            "tenant.created",
            "acme",
            Method::POST,
            "/tenants",
            Some(tenant_body("acme")),
        ),
        (
            "tenant.updated",
            "acme",
            Method::PATCH,
            "/tenants/acme",
            Some(json!({"scope": "read"})),
        ),
        (
            "tenant.created",
            "gone",
            Method::POST,
            "/tenants",
            Some(tenant_body("gone")),
        ),
        (
            "tenant.deleted",
            "gone",
            Method::DELETE,
            "/tenants/gone",
            None,
        ),
    ];
    for (kind, id, method, path, body) in &changes {
        let status = app
            .admin(method.clone(), path, body.as_ref())
            .await
            .status();
        assert!(status.is_success(), "{kind} of {id}: {status}");
        // In the outbox by the time the change is answered: it committed with it.
        assert_eq!(events_of(&app, kind, id).await, 1, "{kind} of {id}");
    }

    // The process goes away with every delivery still pending; the receiver comes up,
    // failing the first delivery it gets, and the process comes back.
    app.stop().await;
    let receiver = Receiver::default();
    receiver.answer_next(&[500]);
    let _server = receiver.serve(TcpListener::bind(address).await.unwrap());
    app.restart().await;
    let announced = || {
        receiver
            .received()
            .iter()
            .map(|r| {
                let event = r.json();
                (
                    event["type"].to_string(),
                    event["data"]["tenant_id"].to_string(),
                )
            })
            .collect::<BTreeSet<_>>()
    };
    app.advance(6);
    eventually_within(DELIVERY, "each event once, the first refused", async || {
        receiver.count() == 4
    })
    .await;
    app.advance(31);
    eventually_within(DELIVERY, "the refused event again", async || {
        receiver.count() == 5
    })
    .await;
    let expected: BTreeSet<(String, String)> = changes
        .iter()
        .map(|(kind, id, ..)| (format!("\"{kind}\""), format!("\"{id}\"")))
        .collect();
    assert_eq!(announced(), expected, "every committed change, once each");
    let received = receiver.received();
    let ids: BTreeSet<&str> = received.iter().map(|r| r.header("webhook-id")).collect();
    assert_eq!(ids.len(), 4, "one event per change, whatever was resent");
    assert_eq!(
        received[4].header("webhook-id"),
        received[0].header("webhook-id"),
        "the refused delivery is the one sent again"
    );
}

on_both_backends!(
    a_change_whose_commit_fails_leaves_no_row_no_audit_entry_and_no_event,
    every_committed_tenant_change_reaches_a_receiver_that_was_down_at_least_once,
);
