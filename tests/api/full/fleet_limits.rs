//! Limits hold for the fleet, not per replica (PostgreSQL): three replicas sharing one
//! database, settings and clock together allow about a key's rate, an address's failed
//! authentications and a caller's fetch rate (within 25 %), never three times them; a
//! verify refused on one replica is in cool-down on all; and when a replica stops or
//! dies, the others take its share within the heartbeat window.

use std::future::Future;
use std::num::NonZeroU32;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::json;
use tokenvend::config::Settings;
use tokenvend::share::HeartbeatSettings;

use crate::helpers::{
    eventually_within, json_body, poll_until, spawn_app_with, tenant_body, Backend, RawDb, TestApp,
};

/// The heartbeat window on the app's clock, which the tests move past on purpose only.
const WINDOW_SECS: u64 = 10;

/// A heartbeat every 100 ms, so that replicas see each other within a second.
fn fast_heartbeat(settings: &mut Settings) {
    settings.serving.heartbeat = HeartbeatSettings {
        interval: Duration::from_millis(100),
        window: Duration::from_secs(WINDOW_SECS),
    };
}

/// The app and two replicas on its database, each counting the three of them.
struct Fleet {
    app: TestApp,
    replicas: Vec<String>,
    stops: Vec<tokio::sync::oneshot::Sender<()>>,
}

async fn three_replicas(configure: impl FnOnce(&mut Settings)) -> Fleet {
    let app = spawn_app_with(Backend::Postgres, |s| {
        fast_heartbeat(s);
        configure(s);
    })
    .await;
    let mut replicas = vec![app.address.clone()];
    let mut stops = Vec::new();
    for _ in 0..2 {
        let (address, stop) = app.start_replica().await;
        replicas.push(address);
        stops.push(stop);
    }
    let fleet = Fleet {
        app,
        replicas,
        stops,
    };
    fleet.until_every_replica_counts(3).await;
    fleet
}

impl Fleet {
    /// The live replicas `replica` counts (its `tokenvend_fleet_replicas` gauge).
    async fn counted_by(&self, replica: &str) -> u32 {
        let resp = self
            .app
            .client
            .get(format!("{replica}/metrics"))
            .bearer_auth(&self.app.admin_key)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let text = resp.text().await.unwrap();
        let line = text
            .lines()
            .find_map(|line| line.strip_prefix("tokenvend_fleet_replicas "))
            .unwrap_or_else(|| panic!("no tokenvend_fleet_replicas gauge in:\n{text}"));
        line.trim().parse().unwrap()
    }

    /// Waits until every replica still running counts `n` live replicas.
    async fn until_every_replica_counts(&self, n: u32) {
        let mut last = Vec::new();
        let counted = poll_until(Duration::from_secs(10), async || {
            last.clear();
            for replica in &self.replicas {
                last.push(self.counted_by(replica).await);
            }
            last.iter().all(|&seen| seen == n)
        })
        .await;
        assert!(counted.is_some(), "replicas count {last:?}, not {n} each");
    }

    /// Waits until every replica answers `path` with `expected` for `key` (a key or a
    /// tenant made on the first has reached the others). Each check is a request.
    async fn until_known(&self, path: &str, key: &str, expected: StatusCode) {
        for replica in &self.replicas {
            let url = format!("{replica}{path}");
            eventually_within(Duration::from_secs(5), &url, async || {
                let resp = self.app.client.get(&url).bearer_auth(key).send().await;
                resp.unwrap().status() == expected
            })
            .await;
        }
    }

    /// Sends `n` requests round-robin over the replicas (`send` makes one to the given
    /// replica); returns how many of them answered `accepted`.
    async fn round_robin<F: Future<Output = StatusCode>>(
        &self,
        n: usize,
        accepted: StatusCode,
        mut send: impl FnMut(usize, String) -> F,
    ) -> usize {
        let mut passed = 0;
        for i in 0..n {
            let replica = self.replicas[i % self.replicas.len()].clone();
            if send(i, replica).await == accepted {
                passed += 1;
            }
        }
        passed
    }
}

/// Asserts that `accepted` is within 25 % of `rate` (and so well short of twice it).
fn assert_within_a_quarter(what: &str, accepted: usize, rate: u32) {
    let rate = f64::from(rate);
    let got = accepted as f64;
    assert!(
        (0.75 * rate..=1.25 * rate).contains(&got) && got < 2.0 * rate,
        "{what}: accepted {accepted} of a fleet-wide rate of {rate}"
    );
}

/// `GET /tenants` on `replica` as `key`.
async fn list_on(app: &TestApp, replica: impl AsRef<str>, key: &str) -> StatusCode {
    let replica = replica.as_ref();
    let url = format!("{replica}/tenants");
    let resp = app.client.get(url).bearer_auth(key).send().await.unwrap();
    resp.status()
}

/// Creates a `tenants:read` key with `rate_limit` requests per second.
async fn key_with_rate(app: &TestApp, rate: u32) -> String {
    let body = json!({ "name": "fleet", "scopes": ["tenants:read"], "rate_limit": rate });
    let created = json_body(
        app.admin(Method::POST, "/api-keys", Some(&body)).await,
        StatusCode::CREATED,
    )
    .await;
    created["key"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn three_replicas_together_allow_a_keys_rate_within_25_percent_not_three_times_it() {
    const RATE: u32 = 12;
    let fleet = three_replicas(|_| {}).await;
    let app = &fleet.app;
    let key = key_with_rate(app, RATE).await;
    fleet.until_known("/tenants", &key, StatusCode::OK).await;
    // Full buckets everywhere; the clock then stands still, so nothing refills however
    // long the requests take.
    app.advance(2);
    let accepted = fleet
        .round_robin(3 * RATE as usize, StatusCode::OK, |_, replica| {
            list_on(app, replica, &key)
        })
        .await;
    assert_within_a_quarter("a key's requests", accepted, RATE);
    // One second later, about one second's worth again, fleet-wide.
    app.advance(1);
    let accepted = fleet
        .round_robin(3 * RATE as usize, StatusCode::OK, |_, replica| {
            list_on(app, replica, &key)
        })
        .await;
    assert_within_a_quarter("a key's requests a second later", accepted, RATE);
}

#[tokio::test]
async fn three_replicas_together_allow_an_addresses_failed_authentications_within_25_percent() {
    // The default: 60 failed authentications a minute per address.
    let fleet = three_replicas(|_| {}).await;
    let app = &fleet.app;
    let valid = app.create_key(&["tenants:read"]).await;
    fleet.until_known("/tenants", &valid, StatusCode::OK).await;
    let wrong = format!("{}x", &valid[..valid.len() - 1]);
    let answered_401 = fleet
        .round_robin(180, StatusCode::UNAUTHORIZED, |_, replica| {
            list_on(app, replica, &wrong)
        })
        .await;
    assert_within_a_quarter("failed authentications", answered_401, 60);
    for replica in &fleet.replicas {
        assert_eq!(
            list_on(app, replica, &wrong).await,
            StatusCode::TOO_MANY_REQUESTS,
            "{replica} refuses further wrong keys"
        );
        assert_eq!(
            list_on(app, replica, &valid).await,
            StatusCode::OK,
            "a valid key from the address still works on {replica}"
        );
    }
}

#[tokio::test]
async fn three_replicas_together_trigger_about_a_callers_fetch_rate_not_three_times_it() {
    const RATE: u32 = 8;
    let fleet = three_replicas(|s| {
        s.vending.caller_fetch_rate = NonZeroU32::new(RATE);
    })
    .await;
    let app = &fleet.app;
    let ids: Vec<String> = (0..3 * RATE).map(|i| format!("t-{i}")).collect();
    for id in &ids {
        app.issuer_tenant(id).await;
        json_body(app.get_token(id).await, StatusCode::OK).await;
    }
    let key = app.create_key(&["tenants:write", "tenants:read"]).await;
    let last = format!("/tenants/{}/token/status", ids.last().unwrap());
    fleet.until_known(&last, &key, StatusCode::OK).await;
    let before = app.issuer.total_calls();
    // Past every tenant's minimum refresh interval: each may be refreshed once.
    app.advance(6);
    let refreshed = fleet
        .round_robin(ids.len(), StatusCode::OK, |i, replica| {
            let url = format!("{replica}/tenants/{}/token/refresh", ids[i]);
            let request = app.client.post(url).bearer_auth(&key).send();
            async move { request.await.unwrap().status() }
        })
        .await;
    let fetches = app.issuer.total_calls() - before;
    assert_eq!(
        fetches, refreshed as u64,
        "each accepted refresh is one fetch"
    );
    assert_within_a_quarter("forced refreshes", refreshed, RATE);
}

#[tokio::test]
async fn a_verify_refused_on_one_replica_is_in_cool_down_on_the_others_without_an_edx_call() {
    let fleet = three_replicas(|_| {}).await;
    let app = &fleet.app;
    let right = "the-secret-edx-knows-0123456789";
    let mut body = tenant_body("acme");
    body["token_url"] = json!(app.issuer_server.token_url());
    body["client_secret"] = json!(right);
    let client = body["client_id"].as_str().unwrap().to_owned();
    app.issuer.register(&client, right);
    assert_eq!(app.create_tenant(&body).await.status(), StatusCode::CREATED);
    let key = app.create_key(&["tenants:write", "tenants:read"]).await;
    fleet
        .until_known("/tenants/acme", &key, StatusCode::OK)
        .await;

    let patch = |replica: &str, secret: &str| {
        app.client
            .patch(format!("{replica}/tenants/acme?verify=true"))
            .bearer_auth(&key)
            .json(&json!({ "client_secret": secret }))
            .send()
    };
    let first = patch(&fleet.replicas[0], "guess-0").await.unwrap();
    assert_eq!(first.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(app.issuer.calls(&client), 1);
    for (n, replica) in fleet.replicas.iter().enumerate().skip(1) {
        let resp = patch(replica, &format!("guess-{n}")).await.unwrap();
        assert_eq!(
            resp.status(),
            StatusCode::TOO_MANY_REQUESTS,
            "{replica} verifies a client id refused on another replica"
        );
        assert!(resp.headers().contains_key("retry-after"));
        let resp = patch(replica, right).await.unwrap();
        assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    }
    assert_eq!(app.issuer.calls(&client), 1, "one guess reached edX");

    // After the cool-down any replica verifies the right secret.
    app.advance(6);
    let resp = patch(&fleet.replicas[2], right).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(app.issuer.calls(&client), 2);
}

/// Inserts the heartbeat of a replica that died at the app's time now (it never beats
/// again, nor removes its row).
async fn a_replica_that_dies_now(app: &TestApp) {
    let RawDb::Postgres(pool) = &app.raw else {
        unreachable!("fleet tests run on PostgreSQL")
    };
    let now = tokenvend::clock::Clock::now(app.clock.as_ref());
    sqlx::query("INSERT INTO replicas (id, last_seen) VALUES ('died', $1::timestamptz)")
        .bind(now.to_rfc3339())
        .execute(pool)
        .await
        .unwrap();
}

#[tokio::test]
async fn when_a_replica_stops_or_dies_the_others_take_its_share_within_the_heartbeat_window() {
    const RATE: u32 = 12;
    let mut fleet = three_replicas(|_| {}).await;
    let key = key_with_rate(&fleet.app, RATE).await;
    fleet.until_known("/tenants", &key, StatusCode::OK).await;
    let measure = async |fleet: &Fleet| {
        fleet.app.advance(2);
        let n = 3 * RATE as usize;
        fleet
            .round_robin(n, StatusCode::OK, |_, replica| {
                list_on(&fleet.app, replica, &key)
            })
            .await
    };

    // A replica stopped: it leaves the fleet at once, and the two left share the rate.
    drop(fleet.stops.pop());
    fleet.replicas.pop();
    fleet.until_every_replica_counts(2).await;
    let accepted = measure(&fleet).await;
    assert_within_a_quarter("two replicas after one stopped", accepted, RATE);

    // A replica that dies leaves its heartbeat row behind: counted until the window ends.
    a_replica_that_dies_now(&fleet.app).await;
    fleet.until_every_replica_counts(3).await;
    let accepted = measure(&fleet).await;
    assert!(
        accepted < RATE as usize,
        "while the dead replica is counted the two keep two thirds: accepted {accepted}"
    );
    fleet.app.advance(WINDOW_SECS + 1);
    fleet.until_every_replica_counts(2).await;
    let accepted = measure(&fleet).await;
    assert_within_a_quarter("two replicas after the window", accepted, RATE);
}
