//! Replicas on one PostgreSQL database see each other's changes.

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};

use crate::helpers::{spawn_app, Backend, TestApp};

/// Polls `url` on another replica until it answers `expected`; returns how long it took.
async fn until_status(app: &TestApp, url: &str, key: &str, expected: StatusCode) -> Duration {
    let started = Instant::now();
    loop {
        let resp = app.client.get(url).bearer_auth(key).send().await.unwrap();
        if resp.status() == expected {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{url} still answers {} instead of {expected}",
            resp.status()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_replica_applies_tenant_and_key_changes_made_on_another() {
    let app = spawn_app(Backend::Postgres).await;
    let (other, _stop) = app.start_replica().await;
    let admin = app.admin_key.clone();

    app.issuer_tenant("acme").await;
    let tenant_url = format!("{other}/tenants/acme/token");
    let created = until_status(&app, &tenant_url, &admin, StatusCode::OK).await;

    let key = app.create_key(&["tenants:read"]).await;
    let list_url = format!("{other}/tenants");
    let key_created = until_status(&app, &list_url, &key, StatusCode::OK).await;
    let id = key.split('_').nth(1).unwrap();
    let resp = app
        .admin(Method::DELETE, &format!("/api-keys/{id}"), None)
        .await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let key_revoked = until_status(&app, &list_url, &key, StatusCode::UNAUTHORIZED).await;

    let resp = app.admin(Method::DELETE, "/tenants/acme", None).await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let deleted = until_status(&app, &tenant_url, &admin, StatusCode::NOT_FOUND).await;

    for (what, took) in [
        ("tenant created", created),
        ("key created", key_created),
        ("key revoked", key_revoked),
        ("tenant deleted", deleted),
    ] {
        eprintln!("{what}: seen by the other replica after {took:?}");
    }
}

#[tokio::test]
async fn a_credentials_change_on_one_replica_drops_the_token_on_another() {
    let app = spawn_app(Backend::Postgres).await;
    let (other, _stop) = app.start_replica().await;
    let client = app.issuer_tenant("acme").await;
    let url = format!("{other}/tenants/acme/token");
    until_status(&app, &url, &app.admin_key, StatusCode::OK).await;
    let before: serde_json::Value = app
        .client
        .get(&url)
        .bearer_auth(&app.admin_key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();

    app.issuer.register(&client, "rotated-on-the-first-replica");
    let patch = serde_json::json!({"client_secret": "rotated-on-the-first-replica"});
    assert_eq!(
        app.admin(Method::PATCH, "/tenants/acme", Some(&patch))
            .await
            .status(),
        StatusCode::OK
    );
    let status_url = format!("{other}/tenants/acme/token/status");
    let started = Instant::now();
    loop {
        let status: serde_json::Value = app
            .client
            .get(&status_url)
            .bearer_auth(&app.admin_key)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if status["state"] == "missing" {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "the other replica still holds the old token"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let after: serde_json::Value = app
        .client
        .get(&url)
        .bearer_auth(&app.admin_key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_ne!(after["access_token"], before["access_token"]);
    let form = app.issuer.last_form(&client).unwrap();
    assert!(form.contains(&(
        "client_secret".to_owned(),
        "rotated-on-the-first-replica".to_owned()
    )));
}
