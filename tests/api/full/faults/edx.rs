//! edX misbehaving behind the fault proxy: answering in 5 s, resetting connections,
//! swallowing its answers (half-open). Callers keep the held token, a burst of forced
//! refreshes costs edX at most one fetch's attempts, and the first refresh allowed after
//! the fault succeeds.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use tokenvend::outbound::upstream::UpstreamSettings;

use super::fleet::{assert_only_held_tokens, Callers, Replica, ReplicaConfig, World};
use super::proxy::Mode;
use crate::helpers::{eventually_within, PgTestDb};

/// How soon after the fault ends a forced refresh (once the cool-down allows one)
/// brings a new token that every replica holds.
const CONVERGES_WITHIN: Duration = Duration::from_secs(15);

/// `TOKENVEND_MIN_REFRESH_INTERVAL` in these cases.
const MIN_REFRESH_INTERVAL: Duration = Duration::from_secs(1);

/// Attempts one fetch may make (timeouts and 5xx are retried, then it gives up).
fn max_attempts() -> u64 {
    UpstreamSettings::default().max_attempts as u64
}

async fn fleet() -> (PgTestDb, World, Replica, Replica, String, String) {
    let (db, url) = PgTestDb::create().await;
    let config = ReplicaConfig::new(url.clone(), &[("TOKENVEND_MIN_REFRESH_INTERVAL", "1")]);
    let world = World::new(&url, config).await;
    let first = Replica::start(&world.config).await;
    let second = Replica::start(&world.config).await;
    let client = world.tenant(&first, "acme").await;
    let held = world.token(&first, "acme").await;
    world
        .until_all_hold(&[&first, &second], "acme", &held, Duration::from_secs(5))
        .await;
    (db, world, first, second, client, held)
}

/// Sends `n` forced refreshes at once to `replica`; their statuses.
async fn refresh_burst(world: &World, replica: &Replica, n: usize) -> Vec<u16> {
    let url = replica.url("/tenants/acme/token/refresh");
    let requests = (0..n).map(|_| world.admin(Method::POST, &url, None));
    futures::future::join_all(requests)
        .await
        .into_iter()
        .map(|(status, _)| status.as_u16())
        .collect()
}

/// Under `mode`: callers on both replicas and a burst of forced refreshes on the first.
/// Returns the fingerprints served, the burst's statuses, and edX calls and connection
/// attempts during the fault.
async fn during(
    world: &World,
    replicas: [&Replica; 2],
    mode: Mode,
) -> (std::collections::BTreeMap<String, u64>, Vec<u16>, u64, u64) {
    // Past the minimum refresh interval (1 s) since the held token was fetched: the
    // burst's first refresh is allowed a fetch.
    tokio::time::sleep(MIN_REFRESH_INTERVAL + Duration::from_millis(200)).await;
    let (calls, connections) = (world.issuer.total_calls(), world.edx.accepted());
    world.edx.set(mode);
    let urls = replicas.map(|r| r.url("/tenants/acme/token"));
    let callers = Callers::start(world, &urls, 2);
    let burst = refresh_burst(world, replicas[0], 10).await;
    world.edx.set(Mode::Pass);
    let answers = callers.finish().await;
    (
        answers,
        burst,
        world.issuer.total_calls() - calls,
        world.edx.accepted() - connections,
    )
}

/// After the fault: a forced refresh is accepted again (once the cool-down is over) and
/// every replica holds its token. Returns the new fingerprint.
async fn converges(world: &World, replicas: [&Replica; 2]) -> String {
    let url = replicas[0].url("/tenants/acme/token/refresh");
    let mut fingerprint = String::new();
    eventually_within(
        CONVERGES_WITHIN,
        "a forced refresh to succeed",
        async || {
            let (status, body) = world.admin(Method::POST, &url, None).await;
            if status == StatusCode::OK {
                fingerprint = body["fingerprint"].as_str().unwrap_or_default().to_owned();
                return true;
            }
            assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
            tokio::time::sleep(Duration::from_millis(200)).await;
            false
        },
    )
    .await;
    world
        .until_all_hold(&replicas, "acme", &fingerprint, CONVERGES_WITHIN)
        .await;
    fingerprint
}

#[tokio::test]
async fn edx_answering_in_5_s_or_resetting_keeps_serving_the_held_token_within_the_call_budget() {
    let (_db, world, first, second, _client, held) = fleet().await;
    let replicas = [&first, &second];

    // Slow: each answer 5 s late, as long as an attempt may take.
    let (answers, burst, calls, _) =
        during(&world, replicas, Mode::Latency(Duration::from_secs(5))).await;
    // The burst's one fetch may have got its token in time or not.
    let now = world.held(&first, "acme").await.expect("a token held");
    assert_only_held_tokens(&answers, &[&held, &now]);
    assert!(
        (1..=max_attempts()).contains(&calls),
        "{calls} edX calls for one burst of refreshes (burst answered {burst:?})"
    );
    assert!(
        burst.iter().all(|s| [200, 429, 502, 503, 504].contains(s)),
        "{burst:?}"
    );
    let after_slow = converges(&world, replicas).await;

    // Resetting: no request reaches edX; each attempt is at most a fresh connection
    // (and one more for a pooled connection found dead).
    let (answers, burst, calls, connections) = during(&world, replicas, Mode::Reset).await;
    assert_only_held_tokens(&answers, &[&after_slow]);
    assert_eq!(calls, 0);
    assert!(
        (1..=2 * max_attempts()).contains(&connections),
        "{connections} connections to edX for one burst (burst answered {burst:?})"
    );
    assert!(
        burst.iter().all(|s| [429, 502, 503, 504].contains(s)),
        "{burst:?}"
    );
    converges(&world, replicas).await;
}

#[tokio::test]
async fn a_half_open_edx_connection_keeps_serving_the_held_token_and_costs_one_fetchs_attempts() {
    let (_db, world, first, second, _client, held) = fleet().await;
    let replicas = [&first, &second];
    // edX receives every request and answers it; the answers never come back.
    let (answers, burst, calls, _) = during(&world, replicas, Mode::HalfOpen).await;
    assert_only_held_tokens(&answers, &[&held]);
    assert!(
        (1..=max_attempts()).contains(&calls),
        "{calls} edX calls for one burst of refreshes (burst answered {burst:?})"
    );
    assert!(
        burst.iter().all(|s| [429, 502, 503, 504].contains(s)),
        "{burst:?}"
    );
    converges(&world, replicas).await;
}
