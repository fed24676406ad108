//! PostgreSQL going away under load: a restart, a 30 s black hole, a half-open
//! connection. Callers keep getting the held token, nothing acknowledged is lost, every
//! committed change is announced, and the fleet converges soon after.

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};

use super::fleet::{
    assert_acknowledged_writes_kept, assert_only_held_tokens, Callers, Replica, ReplicaConfig,
    World, Writer,
};
use super::proxy::{FaultProxy, Mode};
use crate::full::cluster::Cluster;
use crate::helpers::PgTestDb;
use crate::webhooks::Receiver;

/// How soon after PostgreSQL is back every replica is ready, has seen a change made on
/// another and holds a token refreshed on another.
const CONVERGES_WITHIN: Duration = Duration::from_secs(15);

/// How soon after that every committed creation's event has arrived: a delivery claimed
/// just before the fault (its claim committed, the answer lost) waits out the claim's
/// 60 s lease, then the worker's 2 s poll.
const DELIVERED_WITHIN: Duration = Duration::from_secs(75);

/// The convergence check forces a refresh a moment after the last fetch.
const FLEET_ENV: &[(&str, &str)] = &[("TOKENVEND_MIN_REFRESH_INTERVAL", "1")];

/// Two replicas, a warm tenant, a webhook for creations; runs `fault` under callers and
/// a writer, then checks the properties and the convergence after it.
async fn under_load(world: &World, replicas: [&Replica; 2], fault: impl AsyncFnOnce()) {
    let [first, second] = replicas;
    let (receiver, hook_url, _server) = Receiver::start().await;
    world.webhook(first, &hook_url, &["tenant.created"]).await;
    let client = world.tenant(first, "acme").await;
    let held = world.token(first, "acme").await;
    world
        .until_all_hold(&replicas, "acme", &held, Duration::from_secs(5))
        .await;
    let token_urls = [
        first.url("/tenants/acme/token"),
        second.url("/tenants/acme/token"),
    ];
    let callers = Callers::start(world, &token_urls, 2);
    let writer = Writer::start(world, &replicas);

    fault().await;
    let ended = Instant::now();

    let outcomes = writer.finish().await;
    let answers = callers.finish().await;
    assert_only_held_tokens(&answers, &[&held]);
    assert_eq!(world.issuer.calls(&client), 1, "the held token was enough");

    world.until_ready(&replicas, CONVERGES_WITHIN).await;
    // A change made on one replica now reaches the other.
    world.tenant(first, "after").await;
    crate::helpers::eventually_within(
        CONVERGES_WITHIN,
        "the other replica to see it",
        async || {
            let url = second.url("/tenants/after");
            world.admin(Method::GET, &url, None).await.0 == StatusCode::OK
        },
    )
    .await;
    // A token refreshed on one replica is held by the other.
    let (status, body) = world
        .admin(
            Method::POST,
            &first.url("/tenants/acme/token/refresh"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let refreshed = body["fingerprint"]
        .as_str()
        .expect("fingerprint")
        .to_owned();
    world
        .until_all_hold(&replicas, "acme", &refreshed, CONVERGES_WITHIN)
        .await;
    assert_acknowledged_writes_kept(world, &outcomes).await;
    world
        .until_every_creation_delivered(&receiver, DELIVERED_WITHIN)
        .await;
    eprintln!(
        "converged {:?} after the fault ended; writes: {:?}",
        ended.elapsed(),
        outcomes
            .values()
            .fold(std::collections::BTreeMap::<u16, u32>::new(), |mut m, s| {
                *m.entry(*s).or_default() += 1;
                m
            })
    );
}

#[tokio::test]
async fn postgres_restart_under_load_serves_held_tokens_without_5xx_and_converges_within_15_s() {
    let cluster = Cluster::start_new().await;
    // The fleet's own database on the cluster.
    let admin = sqlx::PgPool::connect(&cluster.url())
        .await
        .expect("cluster");
    sqlx::query("CREATE DATABASE fleet")
        .execute(&admin)
        .await
        .expect("create database");
    admin.close().await;
    let mut url = url::Url::parse(&cluster.url()).expect("cluster url");
    url.set_path("/fleet");
    let url = url.to_string();
    let world = World::new(&url, ReplicaConfig::new(url.clone(), FLEET_ENV)).await;
    let first = Replica::start(&world.config).await;
    let second = Replica::start(&world.config).await;
    under_load(&world, [&first, &second], async || {
        tokio::time::sleep(Duration::from_millis(500)).await;
        cluster.stop().await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        cluster.start().await;
    })
    .await;
}

/// The replicas on a database behind a fault proxy; the world's direct connection
/// bypasses it.
async fn behind_proxy() -> (PgTestDb, FaultProxy, World) {
    let (db, url) = PgTestDb::create().await;
    let parsed = url::Url::parse(&url).expect("database url");
    let target = format!(
        "{}:{}",
        parsed.host_str().expect("host"),
        parsed.port().unwrap_or(5432)
    );
    let proxy = FaultProxy::start(target.parse().expect("loopback address")).await;
    let mut through = parsed.clone();
    through.set_port(Some(proxy.addr().port())).expect("port");
    let world = World::new(&url, ReplicaConfig::new(through.to_string(), FLEET_ENV)).await;
    (db, proxy, world)
}

#[tokio::test]
async fn a_30_s_postgres_black_hole_serves_held_tokens_and_converges_within_15_s() {
    let (_db, proxy, world) = behind_proxy().await;
    let first = Replica::start(&world.config).await;
    let second = Replica::start(&world.config).await;
    under_load(&world, [&first, &second], async || {
        tokio::time::sleep(Duration::from_millis(500)).await;
        proxy.set(Mode::BlackHole);
        tokio::time::sleep(Duration::from_secs(30)).await;
        proxy.set(Mode::Pass);
    })
    .await;
}

#[tokio::test]
async fn a_half_open_postgres_connection_serves_held_tokens_announces_every_commit_and_converges_within_15_s(
) {
    let (_db, proxy, world) = behind_proxy().await;
    let first = Replica::start(&world.config).await;
    let second = Replica::start(&world.config).await;
    under_load(&world, [&first, &second], async || {
        tokio::time::sleep(Duration::from_millis(500)).await;
        // Writes reach PostgreSQL and commit; their answers never come back.
        proxy.set(Mode::HalfOpen);
        tokio::time::sleep(Duration::from_secs(8)).await;
        proxy.set(Mode::Pass);
    })
    .await;
}
