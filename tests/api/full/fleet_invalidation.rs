//! Invalidation holds for the whole fleet: three replicas on one PostgreSQL database, a
//! token invalidated on one (its API, or the proxy after a `401`) is served by none of
//! them within 5 s, a newer token is kept, and the fleet makes one edX call for the
//! replacement, even when the announcement is lost.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio::sync::oneshot;

use crate::helpers::{json_body, poll_until, spawn_app_with, Backend, TestApp};

/// The contract: within this long of an accepted invalidation no replica serves the token.
const FLEET_BOUND: Duration = Duration::from_secs(5);

/// The test settings' minimum refresh interval (5 s), and a little more.
const PAST_THE_INTERVAL: u64 = 6;

/// A fleet of three: the test app and two replicas on its database (stopped on drop).
struct Fleet {
    app: TestApp,
    replicas: [String; 3],
    _stops: [oneshot::Sender<()>; 2],
    /// The issuer's client id of the tenant `acme`.
    client: String,
}

impl Fleet {
    /// Three replicas, the tenant `acme`, and its first token held by all three.
    async fn start() -> Self {
        // A long lock wait: a replica waiting for another's refresh on a loaded machine
        // must not give up and ask edX itself.
        let app = spawn_app_with(Backend::Postgres, |s| {
            s.vending.lock_wait = Duration::from_secs(5);
            s.vending.request_deadline = Duration::from_secs(10);
        })
        .await;
        let (second, stop_second) = app.start_replica().await;
        let (third, stop_third) = app.start_replica().await;
        let client = app.issuer_tenant("acme").await;
        let fleet = Self {
            replicas: [app.address.clone(), second, third],
            _stops: [stop_second, stop_third],
            app,
            client,
        };
        for replica in &fleet.replicas {
            // Each replica knows the tenant (announced) before anything is asked of it.
            let url = format!("{replica}/tenants/acme/token/status");
            let known = poll_until(Duration::from_secs(5), async || {
                let resp = fleet.app.client.get(&url).bearer_auth(&fleet.app.admin_key);
                resp.send().await.unwrap().status() == StatusCode::OK
            })
            .await;
            assert!(known.is_some(), "{replica} does not know the tenant");
        }
        let first = fleet.token(0).await;
        assert_eq!(fleet.edx_calls(), 1);
        fleet.until_all_hold(&first["fingerprint"]).await;
        fleet
    }

    /// `GET /tenants/acme/token` on replica `i`, what a caller is served.
    async fn token(&self, i: usize) -> Value {
        let resp = self
            .app
            .client
            .get(format!("{}/tenants/acme/token", self.replicas[i]))
            .bearer_auth(&self.app.admin_key)
            .send()
            .await
            .unwrap();
        json_body(resp, StatusCode::OK).await
    }

    /// The fingerprint of the token replica `i` holds (`null`: none), asking nobody.
    async fn held(&self, i: usize) -> Value {
        let resp = self
            .app
            .client
            .get(format!("{}/tenants/acme/token/status", self.replicas[i]))
            .bearer_auth(&self.app.admin_key)
            .send()
            .await
            .unwrap();
        json_body(resp, StatusCode::OK).await["fingerprint"].clone()
    }

    fn edx_calls(&self) -> u64 {
        self.app.issuer.calls(&self.client)
    }

    /// Waits (1 s at most: announcements) until every replica holds `fingerprint`.
    async fn until_all_hold(&self, fingerprint: &Value) {
        let mut held = Vec::new();
        let all = poll_until(Duration::from_secs(1), async || {
            held.clear();
            for i in 0..3 {
                held.push(self.held(i).await);
            }
            held.iter().all(|f| f == fingerprint)
        })
        .await;
        assert!(all.is_some(), "replicas hold {held:?}, not {fingerprint}");
    }

    /// Polls what the replicas `which` serve until none serves `dead`; fails past the
    /// fleet bound. Returns how long it took.
    async fn until_none_serves(&self, which: &[usize], dead: &Value) -> Duration {
        let mut served = Vec::new();
        let took = poll_until(FLEET_BOUND, async || {
            served.clear();
            for &i in which {
                served.push(self.token(i).await["fingerprint"].clone());
            }
            served.iter().all(|f| f != dead)
        })
        .await;
        took.unwrap_or_else(|| {
            panic!("after {FLEET_BOUND:?} replicas {which:?} still serve {served:?} (dead: {dead})")
        })
    }

    /// `POST /tenants/acme/token/invalidate` on replica `i`.
    async fn invalidate(&self, i: usize, fingerprint: &Value) -> Value {
        let resp = self
            .app
            .client
            .post(format!(
                "{}/tenants/acme/token/invalidate",
                self.replicas[i]
            ))
            .bearer_auth(&self.app.admin_key)
            .json(&json!({ "fingerprint": fingerprint }))
            .send()
            .await
            .unwrap();
        json_body(resp, StatusCode::OK).await
    }

    /// Runs a statement on the fleet's database.
    async fn sql(&self, sql: &str, args: &[&str]) -> u64 {
        self.app.raw_execute(sql, args).await
    }
}

#[tokio::test]
async fn an_invalidation_on_one_replica_stops_every_replica_serving_that_token_within_5_s() {
    let fleet = Fleet::start().await;
    let dead = fleet.held(0).await;
    fleet.app.advance(PAST_THE_INTERVAL);
    assert_eq!(
        fleet.invalidate(0, &dead).await,
        json!({ "invalidated": true })
    );

    // The replicas that did not accept it are asked first: nobody else fetches for them.
    let took = fleet.until_none_serves(&[1, 2], &dead).await;
    fleet.until_none_serves(&[0, 1, 2], &dead).await;
    eprintln!("the other replicas stopped serving the invalidated token after {took:?}");
    let fresh = fleet.token(1).await["fingerprint"].clone();
    fleet.until_all_hold(&fresh).await;
    for i in 0..3 {
        assert_eq!(fleet.token(i).await["fingerprint"], fresh, "replica {i}");
    }
    assert_eq!(fleet.edx_calls(), 2, "one new token for the whole fleet");
    // On record for replicas that missed the announcement, by fingerprint only.
    let recorded = fleet
        .app
        .raw_strings("SELECT fingerprint FROM token_invalidations", &[])
        .await;
    assert_eq!(recorded, [dead.as_str().unwrap()]);
}

#[tokio::test]
async fn a_proxy_401_on_one_replica_stops_every_replica_serving_that_token_within_5_s() {
    let fleet = Fleet::start().await;
    let dead = fleet.held(0).await;
    let key = fleet.app.create_key(&["proxy:acme"]).await;
    fleet.app.advance(PAST_THE_INTERVAL);
    assert_eq!(fleet.app.issuer.revoke_tokens_of(&fleet.client), 1);
    // A body too large to send again: the token is dropped, and nothing fetched on the
    // replica that got the 401 (no retry), so only the fleet's invalidation can reach
    // the others.
    let resp = fleet
        .app
        .client
        .put(
            fleet
                .app
                .url("/tenants/acme/proxy/api/enterprise/v1/enterprise-customer/"),
        )
        .bearer_auth(&key)
        .body(vec![b'y'; 1024 * 1024 + 1])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(fleet.edx_calls(), 1);

    fleet.until_none_serves(&[1, 2], &dead).await;
    let fresh = fleet.token(2).await["fingerprint"].clone();
    fleet.until_all_hold(&fresh).await;
    assert_eq!(fleet.edx_calls(), 2, "one new token for the whole fleet");
    let resp = fleet
        .app
        .client
        .get(format!(
            "{}/tenants/acme/proxy/api/enterprise/v1/enterprise-customer/",
            fleet.replicas[1]
        ))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK, "the new token works");
    assert_eq!(
        resp.headers()["x-tokenvend-token-fingerprint"],
        fresh.as_str().unwrap()
    );
}

#[tokio::test]
async fn a_token_newer_than_the_invalidated_one_is_kept_by_every_replica() {
    let fleet = Fleet::start().await;
    let dead = fleet.held(0).await;
    fleet.app.advance(PAST_THE_INTERVAL);
    fleet.invalidate(0, &dead).await;
    fleet.until_none_serves(&[1, 2], &dead).await;
    let fresh = fleet.token(0).await["fingerprint"].clone();
    fleet.until_all_hold(&fresh).await;
    assert_eq!(fleet.edx_calls(), 2);

    // The same invalidation read again (every replica re-reads the recent ones every
    // second) and reported again late, as another replica would record it: the newer
    // token stays everywhere.
    let uid = fleet
        .app
        .raw_strings("SELECT uid FROM tenants WHERE id = 'acme'", &[])
        .await
        .remove(0);
    let record = "INSERT INTO token_invalidations (tenant_id, tenant_uid, fingerprint) \
                  VALUES ('acme', $1, $2)";
    fleet.sql(record, &[&uid, dead.as_str().unwrap()]).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    for i in 0..3 {
        assert_eq!(
            fleet.held(i).await,
            fresh,
            "replica {i} kept the newer token"
        );
    }
    assert_eq!(
        fleet.invalidate(1, &dead).await,
        json!({ "invalidated": false, "reason": "fingerprint_mismatch" })
    );
    assert_eq!(fleet.edx_calls(), 2, "nobody asked edX");

    // The same record naming the held token does drop it everywhere.
    fleet.sql(record, &[&uid, fresh.as_str().unwrap()]).await;
    fleet.until_none_serves(&[0, 1, 2], &fresh).await;
    assert_eq!(fleet.edx_calls(), 3);
}

#[tokio::test]
async fn after_an_invalidation_30_requests_over_three_replicas_make_one_edx_call() {
    let fleet = Fleet::start().await;
    let dead = fleet.held(1).await;
    fleet.app.advance(PAST_THE_INTERVAL);
    fleet.invalidate(1, &dead).await;
    // Every replica has dropped it (asking nobody) before the callers come.
    fleet.until_all_hold(&Value::Null).await;

    let requests = (0..30).map(|i| fleet.token(i % 3));
    let served = futures::future::join_all(requests).await;
    let fingerprints: Vec<&Value> = served.iter().map(|t| &t["fingerprint"]).collect();
    assert!(
        fingerprints
            .iter()
            .all(|f| *f == fingerprints[0] && *f != &dead),
        "{fingerprints:?}"
    );
    assert_eq!(
        fleet.edx_calls(),
        2,
        "one edX call for 30 callers on 3 replicas"
    );
}

#[tokio::test]
async fn a_lost_invalidation_announcement_still_stops_every_replica_within_5_s() {
    let fleet = Fleet::start().await;
    // Recorded but never announced: the replicas learn of it only by reading.
    fleet
        .sql(
            "ALTER TABLE token_invalidations DISABLE TRIGGER token_invalidations_changed",
            &[],
        )
        .await;
    let dead = fleet.held(0).await;
    fleet.app.advance(PAST_THE_INTERVAL);
    fleet.invalidate(0, &dead).await;

    let took = fleet.until_none_serves(&[1, 2], &dead).await;
    eprintln!("without the announcement, the others stopped serving it after {took:?}");
    fleet.until_none_serves(&[0], &dead).await;
    // No announcement of the new token's invalidation either; the new token itself is
    // announced, so every replica moves to it.
    let fresh = fleet.token(0).await["fingerprint"].clone();
    fleet.until_all_hold(&fresh).await;
    assert_eq!(fleet.edx_calls(), 2, "one new token for the whole fleet");
}

#[tokio::test]
async fn a_forced_refresh_on_one_replica_moves_every_replica_to_the_new_token() {
    let fleet = Fleet::start().await;
    let old = fleet.held(0).await;
    fleet.app.advance(PAST_THE_INTERVAL);
    let resp = fleet
        .app
        .admin(Method::POST, "/tenants/acme/token/refresh", None)
        .await;
    let fresh = json_body(resp, StatusCode::OK).await["fingerprint"].clone();
    assert_ne!(fresh, old);
    fleet.until_all_hold(&fresh).await;
    fleet.until_none_serves(&[1, 2], &old).await;
    assert_eq!(fleet.edx_calls(), 2);
}
