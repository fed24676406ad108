//! A tenant's identity: a tenant deleted and re-created under the same id inherits nothing
//! from its predecessor, not even a token whose fetch was under way when it was deleted.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::{eventually, json_body, spawn_app_with, Backend, TestApp};
use tokenvend::config::Settings;

/// Whose client a token was issued to: the local issuer names the client in the JWT.
fn issued_to(token: &Value) -> String {
    let claims = tokenvend::engine::decode_claims(token["access_token"].as_str().expect("a token"))
        .expect("a JWT");
    claims["preferred_username"]
        .as_str()
        .expect("preferred_username")
        .trim_end_matches("-worker")
        .to_owned()
}

/// Tenant `t` on client A, whose edX takes 1.5 s to answer.
async fn slow_tenant(app: &TestApp) -> String {
    let client_a = app
        .issuer_tenant_with("t", |b| b["client_id"] = json!("client-a"))
        .await;
    app.issuer
        .configure(&client_a, |b| b.latency = Duration::from_millis(1500));
    client_a
}

/// Deletes `t` and creates it again on client B.
async fn recreate(app: &TestApp) -> String {
    let resp = app.admin(Method::DELETE, "/tenants/t", None).await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    app.issuer_tenant_with("t", |b| b["client_id"] = json!("client-b"))
        .await
}

/// The stored token rows of `t` that belong to the tenant `t` is now.
async fn own_stored_tokens(app: &TestApp) -> i64 {
    app.raw_count(
        "SELECT count(*) FROM tokens JOIN tenants ON tenants.id = tokens.tenant_id \
         AND tenants.uid = tokens.tenant_uid WHERE tokens.tenant_id = $1",
        &["t"],
    )
    .await
}

/// Asks `address` for `t`'s token in the background, and returns once client A's fetch
/// is under way (the request then waits on the slow edX).
async fn fetch_in_flight(
    app: &TestApp,
    address: &str,
    client_a: &str,
) -> tokio::task::JoinHandle<reqwest::Response> {
    let request = app
        .client
        .get(format!("{address}/tenants/t/token"))
        .bearer_auth(&app.admin_key);
    let in_flight = tokio::spawn(async move { request.send().await.unwrap() });
    eventually("client A's fetch to be under way", async || {
        app.issuer.calls(client_a) == 1
    })
    .await;
    in_flight
}

async fn a_recreated_tenant_is_never_served_the_deleted_tenants_token(mut app: TestApp) {
    let client_a = slow_tenant(&app).await;
    let in_flight = fetch_in_flight(&app, &app.address, &client_a).await;
    let client_b = recreate(&app).await;

    // The caller of the deleted tenant does not get its token either: that tenant is gone.
    let first = in_flight.await.unwrap();
    assert_eq!(first.status(), StatusCode::NOT_FOUND);

    for _ in 0..3 {
        let token = json_body(app.get_token("t").await, StatusCode::OK).await;
        assert_eq!(issued_to(&token), client_b, "only client B's tokens, ever");
    }
    assert_eq!(app.issuer.calls(&client_b), 1);
    eventually_stored(&app).await;
    let total: i64 = app
        .raw_count("SELECT count(*) FROM tokens WHERE tenant_id = $1", &["t"])
        .await;
    assert_eq!(
        total, 1,
        "client A's token was never stored for the new tenant"
    );

    // After a restart the new tenant's stored token is served, without edX.
    app.restart().await;
    let token = json_body(app.get_token("t").await, StatusCode::OK).await;
    assert_eq!(issued_to(&token), client_b);
    assert_eq!(app.issuer.calls(&client_a), 1);
    assert_eq!(app.issuer.calls(&client_b), 1);
}

async fn eventually_stored(app: &TestApp) {
    eventually("the new tenant's token to be stored", async || {
        own_stored_tokens(app).await == 1
    })
    .await;
}

/// Lets edX take 1.5 s for one attempt without a retry or a timeout.
fn patient(settings: &mut Settings) {
    settings.vending.upstream.attempt_timeout = Duration::from_secs(5);
    settings.vending.upstream.max_attempts = 1;
    settings.vending.request_deadline = Duration::from_secs(10);
}

mod sqlite {
    use super::*;

    #[tokio::test]
    async fn a_recreated_tenant_is_never_served_the_deleted_tenants_token() {
        super::a_recreated_tenant_is_never_served_the_deleted_tenants_token(
            spawn_app_with(Backend::Sqlite, patient).await,
        )
        .await;
    }
}

mod postgres {
    use super::*;

    #[tokio::test]
    async fn a_recreated_tenant_is_never_served_the_deleted_tenants_token() {
        super::a_recreated_tenant_is_never_served_the_deleted_tenants_token(
            spawn_app_with(Backend::Postgres, patient).await,
        )
        .await;
    }

    #[tokio::test]
    async fn a_fetch_in_flight_on_one_replica_never_reaches_a_tenant_recreated_on_another() {
        let app = spawn_app_with(Backend::Postgres, patient).await;
        let (replica, _stop) = app.start_replica().await;
        let client_a = slow_tenant(&app).await;
        // The replica learns of the tenant through the database's announcement.
        eventually("the replica to know tenant t", async || {
            let resp = app
                .client
                .get(format!("{replica}/tenants/t/token/status"))
                .bearer_auth(&app.admin_key)
                .send()
                .await
                .unwrap();
            resp.status() == StatusCode::OK
        })
        .await;
        // The fetch runs on the replica; the delete and re-create happen on the first app.
        let in_flight = fetch_in_flight(&app, &replica, &client_a).await;
        let client_b = recreate(&app).await;
        let first = in_flight.await.unwrap();
        assert_ne!(
            first.status(),
            StatusCode::OK,
            "the deleted tenant's token is not served"
        );

        for address in [app.address.clone(), replica.clone()] {
            for _ in 0..3 {
                let resp = app
                    .client
                    .get(format!("{address}/tenants/t/token"))
                    .bearer_auth(&app.admin_key)
                    .send()
                    .await
                    .unwrap();
                let token = json_body(resp, StatusCode::OK).await;
                assert_eq!(
                    issued_to(&token),
                    client_b,
                    "{address} serves only client B's tokens"
                );
            }
        }
        assert_eq!(app.issuer.calls(&client_b), 1, "one call for the fleet");
        eventually_stored(&app).await;
        assert_eq!(
            app.raw_count("SELECT count(*) FROM tokens WHERE tenant_id = $1", &["t"])
                .await,
            1
        );
    }
}
