//! The lifecycle events: one per tenant change and token transition, only those
//! subscribed to.

use edx_issuer::Failure;
use reqwest::{Method, StatusCode};
use serde_json::json;

use super::{register, Receiver};
use crate::helpers::{eventually, TestApp};

async fn tenant_changes_and_token_transitions_raise_one_event_each(app: TestApp) {
    let (receiver, url, _server) = Receiver::start().await;
    register(&app, &url, &["*"]).await;
    let client = app.issuer_tenant("acme").await;
    assert_eq!(app.get_token("acme").await.status(), StatusCode::OK);
    let resp = app
        .admin(
            Method::PATCH,
            "/tenants/acme",
            Some(&json!({ "name": "Acme Inc." })),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::OK);

    // edX goes down and the token runs out: one refresh_failed however often it is
    // retried, and one expired.
    app.issuer
        .configure(&client, |b| b.failure = Some(Failure::Unavailable));
    app.advance(3600);
    assert_ne!(app.get_token("acme").await.status(), StatusCode::OK);
    app.advance(120);
    assert_ne!(app.get_token("acme").await.status(), StatusCode::OK);
    eventually("refresh_failed and expired", async || {
        let types = receiver.types();
        types.contains(&"token.refresh_failed".to_owned())
            && types.contains(&"token.expired".to_owned())
    })
    .await;

    // edX is back.
    app.issuer.configure(&client, |b| b.failure = None);
    app.advance(120);
    assert_eq!(app.get_token("acme").await.status(), StatusCode::OK);
    eventually("recovered", async || {
        receiver.types().contains(&"token.recovered".to_owned())
    })
    .await;

    // edX refuses the credentials.
    app.issuer
        .configure(&client, |b| b.failure = Some(Failure::InvalidClient));
    app.advance(3600);
    assert_ne!(app.get_token("acme").await.status(), StatusCode::OK);
    eventually("credentials_rejected", async || {
        receiver
            .types()
            .contains(&"token.credentials_rejected".to_owned())
    })
    .await;
    app.advance(600);
    assert_ne!(app.get_token("acme").await.status(), StatusCode::OK);
    eventually("expired again", async || {
        receiver
            .types()
            .iter()
            .filter(|t| *t == "token.expired")
            .count()
            == 2
    })
    .await;
    let resp = app.admin(Method::DELETE, "/tenants/acme", None).await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    eventually("tenant.deleted", async || {
        receiver.types().contains(&"tenant.deleted".to_owned())
    })
    .await;

    let mut types = receiver.types();
    types.sort();
    assert_eq!(
        types,
        [
            "tenant.created",
            "tenant.deleted",
            "tenant.updated",
            "token.credentials_rejected",
            // Once while edX was down, once while it refused the credentials.
            "token.expired",
            "token.expired",
            "token.recovered",
            "token.refresh_failed",
            "token.refresh_failed",
        ]
    );
    for got in receiver.received() {
        let body = got.json();
        assert_eq!(body["data"]["tenant_id"], "acme", "{body}");
        for field in ["access_token", "client_secret", "secret", "token"] {
            assert!(body["data"].get(field).is_none(), "{body}");
        }
    }
    let by_type = |kind: &str| {
        receiver
            .received()
            .into_iter()
            .map(|r| r.json())
            .find(|b| b["type"] == kind)
            .unwrap()
    };
    assert_eq!(
        by_type("tenant.updated")["data"]["changed"],
        json!(["name"])
    );
    assert_eq!(
        by_type("token.credentials_rejected")["data"],
        json!({ "tenant_id": "acme", "status": 401, "error": "invalid_client" })
    );
    assert_eq!(by_type("token.recovered")["data"]["state"], "valid");
}

async fn only_subscribed_events_are_delivered(app: TestApp) {
    let (all, all_url, _a) = Receiver::start().await;
    let (deletions, deletions_url, _d) = Receiver::start().await;
    register(&app, &all_url, &["*"]).await;
    register(&app, &deletions_url, &["tenant.deleted"]).await;
    app.issuer_tenant("acme").await;
    let resp = app.admin(Method::DELETE, "/tenants/acme", None).await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    eventually("both events to *", async || all.count() == 2).await;
    eventually("the deletion", async || deletions.count() == 1).await;
    assert_eq!(deletions.types(), ["tenant.deleted"]);
}

crate::on_both_backends!(tenant_changes_and_token_transitions_raise_one_event_each);

crate::on_sqlite_only!(only_subscribed_events_are_delivered);
