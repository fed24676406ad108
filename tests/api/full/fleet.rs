//! Replicas on one PostgreSQL database behave as one service: they see each other's
//! changes and share tokens, one upstream call per tenant per refresh across the fleet.

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::Value;
use tokenvend::store::REFRESH_LOCK_KEY;

use crate::helpers::{
    eventually, eventually_within, poll_until, spawn_app, spawn_app_with, Backend, RawDb, TestApp,
};

/// How soon every replica must see a change made on another.
const PROPAGATION_LIMIT: Duration = Duration::from_secs(1);

/// Polls `url` on another replica until it answers `expected`; returns how long it took,
/// failing once that is longer than `PROPAGATION_LIMIT`.
async fn until_status(app: &TestApp, url: &str, key: &str, expected: StatusCode) -> Duration {
    let mut answered = None;
    let took = poll_until(PROPAGATION_LIMIT, async || {
        let status = app
            .client
            .get(url)
            .bearer_auth(key)
            .send()
            .await
            .unwrap()
            .status();
        answered = Some(status);
        status == expected
    })
    .await;
    took.unwrap_or_else(|| panic!("{url} still answers {answered:?} instead of {expected}"))
}

async fn get_json(app: &TestApp, url: &str) -> Value {
    let resp = app
        .client
        .get(url)
        .bearer_auth(&app.admin_key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK, "{url}");
    resp.json().await.unwrap()
}

/// The token every replica now answers with, asserting they all answer the same.
async fn fleet_token(app: &TestApp, replicas: &[String]) -> Value {
    let mut tokens = Vec::new();
    for replica in replicas {
        let body = get_json(app, &format!("{replica}/tenants/acme/token")).await;
        tokens.push(body["access_token"].clone());
    }
    assert!(tokens.windows(2).all(|w| w[0] == w[1]), "{tokens:?}");
    tokens.remove(0)
}

/// Waits until every replica holds the token with `fingerprint`, failing once that takes
/// longer than `PROPAGATION_LIMIT`.
async fn until_all_hold(app: &TestApp, replicas: &[String], fingerprint: &Value) {
    let mut behind = None;
    let held = poll_until(PROPAGATION_LIMIT, async || {
        for replica in replicas {
            let status = get_json(app, &format!("{replica}/tenants/acme/token/status")).await;
            if &status["fingerprint"] != fingerprint {
                behind = Some((replica, status["fingerprint"].clone()));
                return false;
            }
        }
        true
    })
    .await;
    assert!(
        held.is_some(),
        "{behind:?} (replica, fingerprint) still holds another token than {fingerprint}"
    );
}

#[tokio::test]
async fn three_replicas_behave_as_one_service() {
    let app = spawn_app(Backend::Postgres).await;
    let (second, _stop_second) = app.start_replica().await;
    let (third, _stop_third) = app.start_replica().await;
    let replicas = [app.address.clone(), second, third];
    let client = app.issuer_tenant("acme").await;
    let key = app.create_key(&["tenants:read"]).await;
    for replica in &replicas {
        // Known to the replica's token cache (not only readable from the database), and
        // the caller key accepted.
        let status = format!("{replica}/tenants/acme/token/status");
        until_status(&app, &status, &key, StatusCode::OK).await;
    }

    // A cold tenant: 300 concurrent requests over the three replicas, one upstream call.
    let requests = (0..300).map(|i| {
        let url = format!("{}/tenants/acme/token", replicas[i % 3]);
        let request = app.client.get(url).bearer_auth(&app.admin_key).send();
        async move {
            let resp = request.await.unwrap();
            let status = resp.status();
            let body: Value = resp.json().await.unwrap();
            assert_eq!(status, StatusCode::OK, "{body}");
            body["access_token"].clone()
        }
    });
    let tokens = futures::future::join_all(requests).await;
    assert_eq!(app.issuer.calls(&client), 1, "one call for the whole fleet");
    assert!(tokens.iter().all(|t| t == &tokens[0]));

    // A token refreshed by one replica is served by the others with no call of their own.
    app.advance(6); // past the minimum refresh interval
    let refreshed = app
        .admin(Method::POST, "/tenants/acme/token/refresh", None)
        .await;
    assert_eq!(refreshed.status(), StatusCode::OK);
    let fingerprint = refreshed.json::<Value>().await.unwrap()["fingerprint"].clone();
    assert_eq!(app.issuer.calls(&client), 2);
    until_all_hold(&app, &replicas, &fingerprint).await;
    let served = fleet_token(&app, &replicas).await;
    assert_ne!(served, tokens[0]);
    assert_eq!(app.issuer.calls(&client), 2, "the others asked edX again");

    // Scheduled refreshes: every replica's scheduler finds the token due at once, and
    // the fleet still makes one call.
    app.advance(3300);
    eventually("the scheduled refresh", async || {
        app.issuer.calls(&client) == 3
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        app.issuer.calls(&client),
        3,
        "one scheduled call for the fleet"
    );
    let status = get_json(&app, &app.url("/tenants/acme/token/status")).await;
    until_all_hold(&app, &replicas, &status["fingerprint"]).await;
    assert_ne!(fleet_token(&app, &replicas).await, served);
    assert_eq!(app.issuer.calls(&client), 3);

    // A revoked caller key is refused by every replica within a second.
    let id = key.split('_').nth(1).unwrap();
    let resp = app
        .admin(Method::DELETE, &format!("/api-keys/{id}"), None)
        .await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    for replica in &replicas {
        let url = format!("{replica}/tenants/acme/token/status");
        until_status(&app, &url, &key, StatusCode::UNAUTHORIZED).await;
    }

    // A tenant deleted on one replica is gone from the others within a second.
    let resp = app.admin(Method::DELETE, "/tenants/acme", None).await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    for replica in &replicas {
        let url = format!("{replica}/tenants/acme/token");
        until_status(&app, &url, &app.admin_key, StatusCode::NOT_FOUND).await;
    }
}

/// Takes the tenant's refresh lock on a connection of its own, as a replica in the middle
/// of a refresh would; returns the connection's backend pid.
async fn hold_refresh_lock(app: &TestApp, tenant: &str) -> (sqlx::PgConnection, i32) {
    let RawDb::Postgres(pool) = &app.raw else {
        unreachable!("fleet tests run on PostgreSQL")
    };
    let mut conn = pool.acquire().await.unwrap().detach();
    let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    // The lock is keyed by the tenant's identity, not its id.
    let uid: String = sqlx::query_scalar("SELECT uid FROM tenants WHERE id = $1")
        .bind(tenant)
        .fetch_one(&mut conn)
        .await
        .unwrap();
    sqlx::query(&format!("SELECT pg_advisory_lock({REFRESH_LOCK_KEY})"))
        .bind(uid)
        .execute(&mut conn)
        .await
        .unwrap();
    (conn, pid)
}

#[tokio::test]
async fn a_replica_dying_while_it_holds_the_refresh_lock_does_not_block_the_others() {
    // A long lock wait, so that only the holder's death can let the request through soon.
    let lock_wait = Duration::from_secs(20);
    let app = spawn_app_with(Backend::Postgres, |s| {
        s.vending.lock_wait = lock_wait;
        s.vending.request_deadline = 2 * lock_wait;
    })
    .await;
    let client = app.issuer_tenant("acme").await;
    let (_holder, pid) = hold_refresh_lock(&app, "acme").await;

    let started = Instant::now();
    let pending = tokio::spawn(
        app.client
            .get(app.url("/tenants/acme/token"))
            .bearer_auth(&app.admin_key)
            .send(),
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !pending.is_finished(),
        "the request waits for the replica refreshing"
    );
    assert_eq!(app.issuer.calls(&client), 0);

    // The holder dies: PostgreSQL ends its session and with it the lock.
    let RawDb::Postgres(pool) = &app.raw else {
        unreachable!()
    };
    let killed: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
        .bind(pid)
        .fetch_one(pool)
        .await
        .unwrap();
    assert!(killed);
    let resp = pending.await.unwrap().unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(
        started.elapsed() < lock_wait / 2,
        "served {:?} after the request, not on the holder's death",
        started.elapsed()
    );
    assert_eq!(app.issuer.calls(&client), 1);
}

#[tokio::test]
async fn a_refresh_lock_held_too_long_does_not_keep_a_token_from_callers() {
    let app = spawn_app(Backend::Postgres).await;
    let client = app.issuer_tenant("acme").await;
    // A replica hung in the middle of a refresh, its connection still alive.
    let (_holder, _) = hold_refresh_lock(&app, "acme").await;

    let resp = app.get_token("acme").await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(app.issuer.calls(&client), 1);
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
    let before = get_json(&app, &url).await;

    app.issuer.register(&client, "rotated-on-the-first-replica");
    let patch = serde_json::json!({"client_secret": "rotated-on-the-first-replica"});
    assert_eq!(
        app.admin(Method::PATCH, "/tenants/acme", Some(&patch))
            .await
            .status(),
        StatusCode::OK
    );
    let status_url = format!("{other}/tenants/acme/token/status");
    eventually_within(
        Duration::from_secs(2),
        "the other replica to drop the old token",
        async || get_json(&app, &status_url).await["state"] == "missing",
    )
    .await;
    let after = get_json(&app, &url).await;
    assert_ne!(after["access_token"], before["access_token"]);
    let form = app.issuer.last_form(&client).unwrap();
    assert!(form.contains(&(
        "client_secret".to_owned(),
        "rotated-on-the-first-replica".to_owned()
    )));
}
