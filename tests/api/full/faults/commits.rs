//! The deterministic form of what the half-open PostgreSQL case found: a tenant change
//! and its webhook event commit together or not at all. The store here refuses every
//! event (as a store that fails, or a process that dies, right after the change would
//! leave it); a change it then reports, or keeps, must still be announced.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::{eventually, tenant_body, Backend, TestApp};
use crate::on_both_backends;
use crate::webhooks::{register, Receiver};

async fn refuse_events(app: &TestApp) {
    match app.backend {
        Backend::Postgres => {
            app.raw_execute(
                "CREATE FUNCTION refuse_events() RETURNS trigger AS \
                 $$ BEGIN RAISE EXCEPTION 'injected'; END $$ LANGUAGE plpgsql",
                &[],
            )
            .await;
            app.raw_execute(
                "CREATE TRIGGER refuse_events BEFORE INSERT ON webhook_events \
                 FOR EACH ROW EXECUTE FUNCTION refuse_events()",
                &[],
            )
            .await;
        }
        Backend::Sqlite => {
            app.raw_execute(
                "CREATE TRIGGER refuse_events BEFORE INSERT ON webhook_events \
                 BEGIN SELECT RAISE(ABORT, 'injected'); END",
                &[],
            )
            .await;
        }
    }
}

async fn accept_events(app: &TestApp) {
    let sql = match app.backend {
        Backend::Postgres => "DROP TRIGGER refuse_events ON webhook_events",
        Backend::Sqlite => "DROP TRIGGER refuse_events",
    };
    app.raw_execute(sql, &[]).await;
}

fn announced(receiver: &Receiver, kind: &str, tenant: &str) -> bool {
    receiver
        .received()
        .iter()
        .any(|r| r.json()["type"] == kind && r.json()["data"]["tenant_id"] == tenant)
}

async fn a_tenant_change_that_commits_is_announced_even_when_its_event_cannot_be_written(
    app: TestApp,
) {
    let (receiver, url, _server) = Receiver::start().await;
    register(&app, &url, &["*"]).await;
    for id in ["kept", "gone"] {
        assert_eq!(
            app.create_tenant(&tenant_body(id)).await.status(),
            StatusCode::CREATED
        );
    }
    eventually("the first events", async || receiver.count() == 2).await;

    refuse_events(&app).await;
    let created = app.create_tenant(&tenant_body("new")).await.status();
    let renamed = json!({ "name": "renamed" });
    let updated = app
        .admin(Method::PATCH, "/tenants/kept", Some(&renamed))
        .await
        .status();
    let deleted = app
        .admin(Method::DELETE, "/tenants/gone", None)
        .await
        .status();
    accept_events(&app).await;

    let count = |id: &'static str| {
        let app = &app;
        async move {
            app.raw_count("SELECT COUNT(*) FROM tenants WHERE id = $1", &[id])
                .await
        }
    };
    let name = app
        .raw_strings("SELECT name FROM tenants WHERE id = $1", &["kept"])
        .await;
    let committed = [
        ("tenant.created", "new", count("new").await == 1, created),
        ("tenant.updated", "kept", name == ["renamed"], updated),
        ("tenant.deleted", "gone", count("gone").await == 0, deleted),
    ];
    for (kind, tenant, is_committed, status) in committed {
        if is_committed {
            eventually(
                &format!("{kind} of {tenant} (answered {status})"),
                async || announced(&receiver, kind, tenant),
            )
            .await;
        } else {
            assert!(
                status.is_server_error(),
                "{kind}: {status} for a change not made"
            );
        }
    }
}

on_both_backends!(a_tenant_change_that_commits_is_announced_even_when_its_event_cannot_be_written);
