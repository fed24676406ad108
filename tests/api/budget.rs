//! The upstream budget (`TOKENVEND_UPSTREAM_RATE`): token requests to one edX host are
//! capped whatever asks for them; tenants with no servable token go first; refreshes ahead
//! of time wait their turn; a caller whose fetch cannot be made gets `503` + `Retry-After`;
//! on PostgreSQL the replicas share one budget.

use std::num::NonZeroU32;
use std::time::Duration;

use futures::future::join_all;
use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::helpers::{
    assert_problem, eventually, json_body, spawn_app, spawn_app_with, Backend, TestApp,
};

async fn app_with_rate(backend: Backend, per_minute: u32) -> TestApp {
    spawn_app_with(backend, |s| {
        s.vending.upstream_rate = NonZeroU32::new(per_minute);
    })
    .await
}

async fn budget(app: &TestApp) -> Value {
    json_body(
        app.admin(Method::GET, "/upstream/budget", None).await,
        StatusCode::OK,
    )
    .await
}

/// Fires one token request per tenant at once, spread over `addresses` in turn; returns
/// the statuses and the `Retry-After` of every 503.
async fn request_all(
    app: &TestApp,
    addresses: &[&str],
    ids: &[String],
) -> (Vec<StatusCode>, Vec<u64>) {
    let requests = ids.iter().enumerate().map(|(n, id)| {
        let base = addresses[n % addresses.len()];
        app.client
            .get(format!("{base}/tenants/{id}/token"))
            .bearer_auth(&app.admin_key)
            .send()
    });
    let mut statuses = Vec::new();
    let mut waits = Vec::new();
    for resp in join_all(requests).await {
        let resp = resp.expect("answer");
        statuses.push(resp.status());
        if resp.status() == StatusCode::SERVICE_UNAVAILABLE {
            let after = resp.headers()["retry-after"]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            waits.push(after);
            let problem = assert_problem(resp, StatusCode::SERVICE_UNAVAILABLE).await;
            assert_eq!(problem["type"], "urn:tokenvend:problem:upstream-budget");
        }
    }
    (statuses, waits)
}

async fn tenants(app: &TestApp, prefix: &str, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..n {
        let id = format!("{prefix}-{i}");
        app.issuer_tenant(&id).await;
        ids.push(id);
    }
    ids
}

fn count(statuses: &[StatusCode], status: StatusCode) -> usize {
    statuses.iter().filter(|s| **s == status).count()
}

async fn thirty_cold_tenants_on_one_host_are_held_to_the_budget(backend: Backend) {
    let app = app_with_rate(backend, 10).await;
    let ids = tenants(&app, "cold", 30).await;
    let (statuses, waits) = request_all(&app, &[app.address.as_str()], &ids).await;
    assert_eq!(
        app.issuer.total_calls(),
        10,
        "a minute's budget at once, no more"
    );
    assert_eq!(count(&statuses, StatusCode::OK), 10, "{statuses:?}");
    assert_eq!(
        count(&statuses, StatusCode::SERVICE_UNAVAILABLE),
        20,
        "the rest are told to come back, never a 500: {statuses:?}"
    );
    assert!(waits.iter().all(|w| (1..=6).contains(w)), "{waits:?}");

    let report = budget(&app).await;
    assert_eq!(report["rate_per_minute"], 10);
    let host = &report["hosts"][0];
    assert_eq!(host["refused"], 20, "{report}");
    assert_eq!(host["remaining"], 0.0, "{report}");

    // Six seconds refill one request: a refused tenant is served when it comes back.
    app.advance(6);
    let refused: Vec<String> = ids
        .iter()
        .zip(&statuses)
        .filter(|(_, s)| **s != StatusCode::OK)
        .map(|(id, _)| id.clone())
        .collect();
    assert_eq!(app.get_token(&refused[0]).await.status(), StatusCode::OK);
    assert_eq!(
        app.get_token(&refused[1]).await.status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(app.issuer.total_calls(), 11);

    let metrics = app.metrics().await;
    assert!(
        metrics.contains("tokenvend_upstream_budget_asks_total{")
            && metrics.contains("outcome=\"refused\"} 21"),
        "{metrics}"
    );
}

async fn refreshes_ahead_wait_while_tenants_without_a_token_go_first(backend: Backend) {
    // 8 a minute (one per 7.5 s): a reserve of 2 is left to tenants without a servable
    // token. The warm tenant's 300 s token is refreshed ahead from 240 s on (scheduled
    // from 225 s on at the earliest).
    let app = app_with_rate(backend, 8).await;
    let warm_client = app.issuer_tenant("warm").await;
    app.issuer
        .configure(&warm_client, |b| b.lifetime = Duration::from_secs(300));
    assert_eq!(app.get_token("warm").await.status(), StatusCode::OK);
    let cold = tenants(&app, "cold", 9).await;
    app.advance(224);
    for id in &cold[..8] {
        assert_eq!(app.get_token(id).await.status(), StatusCode::OK);
    }
    // Into the refresh window: 16 s refilled about 2 requests, both in the reserve. The
    // warm tenant is served its held token and its refresh ahead is put off, not sent.
    app.advance(16);
    assert_eq!(app.get_token("warm").await.status(), StatusCode::OK);
    eventually("the refresh ahead is put off", async || {
        budget(&app).await["hosts"][0]["deferred"].as_u64() >= Some(1)
    })
    .await;
    assert_eq!(app.issuer.calls(&warm_client), 1);
    // The reserve serves a tenant that has nothing.
    assert_eq!(app.get_token(&cold[8]).await.status(), StatusCode::OK);
    assert_eq!(app.issuer.total_calls(), 10);
    // Put off, not dropped: once the budget has refilled (and while the held token is
    // still good), the scheduler refreshes it.
    app.advance(20);
    eventually("the put-off refresh is made", async || {
        app.issuer.calls(&warm_client) == 2
    })
    .await;
}

async fn replicas_share_one_budget(app: TestApp) {
    let (replica, _stop) = app.start_replica().await;
    let ids = tenants(&app, "shared", 30).await;
    let last = format!("{replica}/tenants/{}/token/status", ids[29]);
    eventually("the replica knows every tenant", async || {
        let resp = app
            .client
            .get(&last)
            .bearer_auth(&app.admin_key)
            .send()
            .await;
        resp.is_ok_and(|r| r.status() == StatusCode::OK)
    })
    .await;
    let (statuses, _) = request_all(&app, &[app.address.as_str(), replica.as_str()], &ids).await;
    assert_eq!(
        app.issuer.total_calls(),
        10,
        "one budget for the fleet, not one per replica"
    );
    assert_eq!(count(&statuses, StatusCode::OK), 10, "{statuses:?}");
    assert_eq!(count(&statuses, StatusCode::SERVICE_UNAVAILABLE), 20);
}

async fn a_budget_of_zero_means_no_limit(backend: Backend) {
    let app = spawn_app_with(backend, |s| s.vending.upstream_rate = None).await;
    let ids = tenants(&app, "free", 12).await;
    let (statuses, _) = request_all(&app, &[app.address.as_str()], &ids).await;
    assert_eq!(count(&statuses, StatusCode::OK), 12);
    let report = budget(&app).await;
    assert_eq!(report["rate_per_minute"], Value::Null);
    // Listed only for edX's clock, measured on the fetches; nothing was counted.
    let hosts = report["hosts"].as_array().unwrap();
    assert_eq!(hosts.len(), 1, "{report}");
    assert_eq!(hosts[0]["host"], app.issuer_server.addr.to_string());
    for counted in ["remaining", "waits", "deferred", "refused"] {
        assert_eq!(hosts[0][counted].as_f64(), Some(0.0), "{counted}: {report}");
    }
    assert!(hosts[0]["clock_offset_seconds"].as_f64().unwrap().abs() < 1.0);
}

async fn a_careless_min_ttl_loop_makes_at_most_one_call_per_interval(backend: Backend) {
    let app = spawn_app(backend).await;
    let client = app.issuer_tenant("acme").await;
    // 20 requests over 6 s, each asking for more than edX ever grants (3600 s), with the
    // test's 5 s caller-triggered interval.
    for _ in 0..20 {
        let resp = app
            .admin(Method::GET, "/tenants/acme/token?min_ttl=86400", None)
            .await;
        assert_eq!(resp.status(), StatusCode::OK);
        app.clock.advance(Duration::from_millis(300));
    }
    let calls = app.issuer.calls(&client);
    assert!((1..=3).contains(&calls), "{calls} edX calls");
}

mod postgres {
    use super::*;

    #[tokio::test]
    async fn thirty_cold_tenants_on_one_host_are_held_to_the_budget() {
        super::thirty_cold_tenants_on_one_host_are_held_to_the_budget(Backend::Postgres).await
    }

    #[tokio::test]
    async fn refreshes_ahead_wait_while_tenants_without_a_token_go_first() {
        super::refreshes_ahead_wait_while_tenants_without_a_token_go_first(Backend::Postgres).await
    }

    #[tokio::test]
    async fn replicas_share_one_budget() {
        super::replicas_share_one_budget(app_with_rate(Backend::Postgres, 10).await).await
    }
}

mod sqlite {
    use super::*;

    #[tokio::test]
    async fn thirty_cold_tenants_on_one_host_are_held_to_the_budget() {
        super::thirty_cold_tenants_on_one_host_are_held_to_the_budget(Backend::Sqlite).await
    }

    #[tokio::test]
    async fn refreshes_ahead_wait_while_tenants_without_a_token_go_first() {
        super::refreshes_ahead_wait_while_tenants_without_a_token_go_first(Backend::Sqlite).await
    }

    #[tokio::test]
    async fn a_careless_min_ttl_loop_makes_at_most_one_call_per_interval() {
        super::a_careless_min_ttl_loop_makes_at_most_one_call_per_interval(Backend::Sqlite).await
    }

    #[tokio::test]
    async fn a_budget_of_zero_means_no_limit() {
        super::a_budget_of_zero_means_no_limit(Backend::Sqlite).await
    }
}
