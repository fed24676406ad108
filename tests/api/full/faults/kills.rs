//! `kill -9` at the worst moments: a replica inside an edX fetch under the tenant's
//! refresh lock, `tokenvend rekey` half-way, a replica with a webhook delivery claimed.

use std::process::Stdio;
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::json;
use tokenvend::crypto::MasterKey;

use super::fleet::{assert_only_held_tokens, Callers, Replica, ReplicaConfig, World};
use super::proxy::{FaultProxy, Mode};
use crate::helpers::{eventually_within, PgTestDb};
use crate::webhooks::{expected_signature, Receiver};

/// How soon after the holder's death another replica has fetched and stored a token.
const LOCK_RELEASED_WITHIN: Duration = Duration::from_secs(5);

#[tokio::test]
async fn kill_9_of_the_replica_holding_the_refresh_lock_lets_another_fetch_once_and_callers_never_see_5xx(
) {
    let (_db, url) = PgTestDb::create().await;
    let config = ReplicaConfig::new(url.clone(), &[("TOKENVEND_MIN_REFRESH_INTERVAL", "1")]);
    let world = World::new(&url, config).await;
    let mut holder = Replica::start(&world.config).await;
    let other = Replica::start(&world.config).await;
    let client = world.tenant(&holder, "acme").await;
    let held = world.token(&holder, "acme").await;
    world
        .until_all_hold(&[&holder, &other], "acme", &held, Duration::from_secs(5))
        .await;
    assert_eq!(world.issuer.calls(&client), 1);

    // edX takes its time: the holder's forced refresh sits inside the fetch, holding
    // the tenant's refresh lock, when it is killed. (Past the minimum refresh interval
    // first, or the refresh is refused without a fetch.)
    tokio::time::sleep(Duration::from_millis(1200)).await;
    world
        .issuer
        .configure(&client, |c| c.latency = Duration::from_secs(60));
    let refresh = tokio::spawn({
        let request = world
            .client
            .post(holder.url("/tenants/acme/token/refresh"))
            .bearer_auth(&world.config.admin_key)
            .send();
        async move { request.await.map(|r| r.status()) }
    });
    eventually_within(
        Duration::from_secs(10),
        "the holder to ask edX",
        async || {
            assert!(
                !refresh.is_finished(),
                "the refresh answered without asking edX"
            );
            world.issuer.calls(&client) == 2
        },
    )
    .await;
    let callers = Callers::start(&world, &[other.url("/tenants/acme/token")], 4);
    tokio::time::sleep(Duration::from_millis(300)).await;
    holder.kill();
    let killed = Instant::now();
    assert!(
        refresh.await.expect("join").is_err(),
        "the killed holder never answered"
    );

    // The other replica takes the lock at once (PostgreSQL ended the dead session and
    // its lock) and makes exactly one call; its callers had the held token throughout.
    world
        .issuer
        .configure(&client, |c| c.latency = Duration::ZERO);
    let (status, body) = world
        .admin(
            Method::POST,
            &other.url("/tenants/acme/token/refresh"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let refreshed = body["fingerprint"]
        .as_str()
        .expect("fingerprint")
        .to_owned();
    let took = killed.elapsed();
    assert!(
        took < LOCK_RELEASED_WITHIN,
        "the refresh after the holder's death took {took:?}: the lock outlived its holder"
    );
    assert_ne!(refreshed, held);
    assert_eq!(
        world.issuer.calls(&client),
        3,
        "one call for the other replica"
    );
    assert!(
        !other.logs().contains("holds the refresh lock too long"),
        "the other replica waited out the lock instead of getting it"
    );
    let answers = callers.finish().await;
    assert_only_held_tokens(&answers, &[&held, &refreshed]);

    // A replacement of the killed replica converges on the stored token, no edX call.
    let replacement = Replica::start(&world.config).await;
    world
        .until_all_hold(
            &[&replacement, &other],
            "acme",
            &refreshed,
            Duration::from_secs(5),
        )
        .await;
    assert_eq!(world.token(&replacement, "acme").await, refreshed);
    assert_eq!(world.issuer.calls(&client), 3);
}

/// Values (client secrets, previous secrets, tokens, webhook secrets) not sealed under
/// the key with id `key_id`.
async fn sealed_under_other_keys(world: &World, key_id: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT (SELECT COUNT(*) FROM tenants WHERE secret_key_id <> $1) \
         + (SELECT COUNT(*) FROM tenants WHERE previous_secret_key_id <> $1) \
         + (SELECT COUNT(*) FROM tokens WHERE key_id <> $1) \
         + (SELECT COUNT(*) FROM webhooks WHERE secret_key_id <> $1)",
    )
    .bind(key_id)
    .fetch_one(&world.db)
    .await
    .expect("count sealed values")
}

#[tokio::test]
async fn kill_9_during_rekey_then_rerun_leaves_every_secret_and_token_readable() {
    const TENANTS: usize = 30;
    let (_db, url) = PgTestDb::create().await;
    // Every tenant refreshed at the end with the one admin key, all at once.
    let env = [
        ("TOKENVEND_MIN_REFRESH_INTERVAL", "1"),
        ("TOKENVEND_CALLER_FETCH_RATE", "0"),
        ("TOKENVEND_UPSTREAM_RATE", "0"),
    ];
    let config = ReplicaConfig::new(url.clone(), &env);
    let mut world = World::new(&url, config).await;
    let (receiver, hook_url, _server) = Receiver::start().await;
    let mut replica = Replica::start(&world.config).await;
    let webhook_secret = world
        .webhook(&replica, &hook_url, &["tenant.updated"])
        .await;
    let ids: Vec<String> = (0..TENANTS).map(|i| format!("t-{i}")).collect();
    let mut clients = Vec::new();
    let mut tokens = Vec::new();
    for id in &ids {
        clients.push(world.tenant(&replica, id).await);
        tokens.push(world.token(&replica, id).await);
    }
    let total = sealed_under_other_keys(&world, "none").await;
    assert_eq!(total, 2 * TENANTS as i64 + 1);

    // The new key, the old one kept for opening.
    let old = world.config.clone();
    let (new_key, new_b64) = MasterKey::generate();
    world.config.master_key = new_b64;
    world.config.master_key_id = new_key.id().to_owned();
    world.config.old_master_keys = Some(old.master_key.clone());
    replica.kill();
    let replica = Replica::start(&world.config).await;

    // The rekey on a slow database (every answer 50 ms late), killed part-way.
    let slow_db = FaultProxy::start(database_addr(&url)).await;
    slow_db.set(Mode::Latency(Duration::from_millis(50)));
    let mut through_slow = world.config.clone();
    through_slow.database_url = via(&url, &slow_db);
    let dir = tempfile::tempdir().expect("temp dir");
    let mut rekey = through_slow
        .command(dir.path(), "rekey")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("rekey starts");
    let new_id = world.config.master_key_id.clone();
    eventually_within(
        Duration::from_secs(30),
        "the rekey to be part-way",
        async || {
            let left = sealed_under_other_keys(&world, &new_id).await;
            left <= total * 2 / 3
        },
    )
    .await;
    rekey.kill().expect("kill -9 the rekey");
    let _ = rekey.wait();
    let left = sealed_under_other_keys(&world, &new_id).await;
    assert!(
        left > 0 && left < total,
        "killed part-way: {left} of {total} left"
    );

    // Half re-sealed: the running replica serves every held token as before.
    for (id, token) in ids.iter().zip(&tokens) {
        assert_eq!(&world.token(&replica, id).await, token, "{id}");
    }

    // The rerun finishes the job.
    let output = world
        .config
        .command(dir.path(), "rekey")
        .stderr(Stdio::piped())
        .stdout(Stdio::piped())
        .output()
        .expect("rekey runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("; 0 skipped"), "{stdout}");
    assert_eq!(sealed_under_other_keys(&world, &new_id).await, 0);

    // The new key alone opens everything: a new replica starts, serves every token it
    // finds stored (no edX call), and every secret still opens (each tenant's forced
    // refresh is accepted by edX, the webhook's deliveries verify with its secret).
    drop(replica);
    world.config.old_master_keys = None;
    let fresh = Replica::start(&world.config).await;
    for ((id, token), client) in ids.iter().zip(&tokens).zip(&clients) {
        assert_eq!(&world.token(&fresh, id).await, token, "{id}");
        assert_eq!(
            world.issuer.calls(client),
            1,
            "{id}: the stored token served"
        );
    }
    for (id, client) in ids.iter().zip(&clients) {
        let url = fresh.url(&format!("/tenants/{id}/token/refresh"));
        let (status, body) = world.admin(Method::POST, &url, None).await;
        assert_eq!(status, StatusCode::OK, "{id}: {body}");
        assert_eq!(world.issuer.calls(client), 2, "{id}");
    }
    let patch = json!({ "name": "renamed after the rekey" });
    let (status, _) = world
        .admin(Method::PATCH, &fresh.url("/tenants/t-0"), Some(&patch))
        .await;
    assert_eq!(status, StatusCode::OK);
    eventually_within(Duration::from_secs(10), "the update's event", async || {
        receiver.count() == 1
    })
    .await;
    let delivered = &receiver.received()[0];
    assert_eq!(
        delivered.header("webhook-signature"),
        expected_signature(&webhook_secret, delivered)
    );
}

/// The database server's address in a `postgres://` URL.
fn database_addr(url: &str) -> std::net::SocketAddr {
    let parsed = url::Url::parse(url).expect("database url");
    let host = parsed.host_str().expect("host");
    format!("{host}:{}", parsed.port().unwrap_or(5432))
        .parse()
        .expect("a loopback address")
}

/// `url` with its host and port replaced by the proxy's.
fn via(url: &str, proxy: &FaultProxy) -> String {
    let mut parsed = url::Url::parse(url).expect("database url");
    parsed
        .set_host(Some(&proxy.addr().ip().to_string()))
        .expect("host");
    parsed.set_port(Some(proxy.addr().port())).expect("port");
    parsed.to_string()
}

/// The webhook lease (`WebhookSettings::lease`, 60 s): a delivery claimed by a replica
/// that died is claimed again after it, and sent within the worker's 2 s poll.
const REDELIVERED_WITHIN: Duration = Duration::from_secs(80);

#[tokio::test]
async fn kill_9_with_a_webhook_delivery_claimed_still_delivers_the_event_at_least_once() {
    let (_db, url) = PgTestDb::create().await;
    let world = World::new(&url, ReplicaConfig::new(url.clone(), &[])).await;
    // The receiver behind a black hole: the replica that claims the delivery connects
    // and is left waiting for an answer; it is killed then.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let receiver_addr = listener.local_addr().expect("address");
    let receiver = Receiver::default();
    let _server = receiver.serve(listener);
    let hole = FaultProxy::start(receiver_addr).await;
    hole.set(Mode::BlackHole);
    let hook_url = format!("http://{}/hook", hole.addr());

    let mut claimer = Replica::start(&world.config).await;
    let secret = world
        .webhook(&claimer, &hook_url, &["tenant.created"])
        .await;
    world.tenant(&claimer, "acme").await;
    eventually_within(
        Duration::from_secs(10),
        "the delivery to be claimed and sent",
        async || hole.accepted() >= 1,
    )
    .await;
    claimer.kill();
    let killed = Instant::now();
    // The request the dead claimer had sent is lost with it (as in a real partition,
    // where nobody retransmits it): its held connection is reset, then the way is open.
    hole.set(Mode::Reset);
    tokio::time::sleep(Duration::from_millis(500)).await;
    hole.set(Mode::Pass);

    // Another replica delivers it once the dead one's lease runs out.
    let other = Replica::start(&world.config).await;
    let (status, list) = world
        .admin(Method::GET, &other.url("/webhooks"), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let id = list["items"][0]["id"]
        .as_str()
        .expect("webhook id")
        .to_owned();
    eventually_within(
        REDELIVERED_WITHIN,
        "the delivery recorded as delivered",
        async || {
            let url = other.url(&format!("/webhooks/{id}/deliveries"));
            let (_, body) = world.admin(Method::GET, &url, None).await;
            body["items"][0]["status"] == "delivered"
        },
    )
    .await;
    eprintln!("delivered {:?} after the claimer's death", killed.elapsed());
    assert!(receiver.count() >= 1);
    let delivered = &receiver.received()[0];
    let event = delivered.json();
    assert_eq!(event["type"], "tenant.created");
    assert_eq!(event["data"]["tenant_id"], "acme");
    assert_eq!(
        delivered.header("webhook-signature"),
        expected_signature(&secret, delivered)
    );
}
