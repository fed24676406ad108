//! Refreshing: the refresh window, the scheduler, a failing refresh and forced refreshes.

use std::time::Duration;

use edx_issuer::Failure;
use reqwest::{Method, StatusCode};
use serde_json::Value;

use super::{first_fingerprint, token_json};
use crate::helpers::{assert_problem, eventually, json_body, TestApp};

async fn a_token_in_its_refresh_window_is_served_at_once_while_one_refresh_runs(app: TestApp) {
    let client = app.issuer_tenant("acme").await;
    let first = token_json(&app, "acme").await;
    // 3600 s lifetime: the refresh window is its last 720 s.
    app.issuer
        .configure(&client, |b| b.latency = Duration::from_millis(200));
    app.advance(3000);
    let responses = futures::future::join_all((0..20).map(|_| app.get_token("acme"))).await;
    for resp in responses {
        let body = json_body(resp, StatusCode::OK).await;
        assert_eq!(
            body["access_token"], first["access_token"],
            "the held token, at once"
        );
    }
    eventually("the refresh to finish", async || {
        app.issuer.calls(&client) == 2
    })
    .await;
    // The new token replaces the held one as soon as the refresh finishes.
    let mut newer = Value::Null;
    eventually("the new token to replace the held one", async || {
        newer = token_json(&app, "acme").await;
        newer["access_token"] != first["access_token"]
    })
    .await;
    assert_ne!(newer["access_token"], first["access_token"]);
    assert_eq!(newer["expires_in"], 3600);
    assert_eq!(app.issuer.calls(&client), 2, "exactly one refresh");
}

/// Slow enough that no pass runs by itself during a test: the test runs them.
const HOUR: Duration = Duration::from_secs(3600);

/// The scheduler's passes are run by hand here (its own run once an hour), so that a
/// pass can show what was *not* due instead of a wait hoping nothing happens.
async fn the_scheduler_refreshes_a_recently_used_tenant_before_expiry(app: TestApp) {
    let used = app.issuer_tenant("used").await;
    let idle = app.issuer_tenant("idle").await;
    let first = token_json(&app, "used").await;
    // "idle" gets a token through a forced refresh, never through a request.
    let resp = app
        .admin(Method::POST, "/tenants/idle/token/refresh", None)
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(app.issuer.calls(&idle), 1);

    let scheduler = app.state().vendor.scheduler();
    assert_eq!(scheduler.run_due_refreshes(), 0, "nothing is due yet");
    // Both tokens are now past their refresh point; only the used one is due.
    app.advance(3300);
    assert_eq!(
        scheduler.run_due_refreshes(),
        1,
        "one refresh: the used tenant's"
    );
    eventually("the scheduler to refresh the used tenant", async || {
        app.issuer.calls(&used) == 2
    })
    .await;
    // The new token is installed once stored (on PostgreSQL, under the fleet lock).
    let mut status = Value::Null;
    eventually("the refreshed token to be installed", async || {
        status = app.token_status("used").await;
        status["fingerprint"].as_str().unwrap() != first_fingerprint(&first)
    })
    .await;
    assert_ne!(
        status["fingerprint"].as_str().unwrap(),
        first_fingerprint(&first)
    );
    assert_eq!(status["state"], "valid");
    assert_eq!(scheduler.run_due_refreshes(), 0, "nothing more is due");
    assert_eq!(
        app.issuer.calls(&idle),
        1,
        "an unused tenant is not refreshed"
    );
    assert_eq!(app.issuer.calls(&used), 2);
}

async fn a_failed_refresh_serves_the_held_token_but_never_inside_the_skew(app: TestApp) {
    let client = app.issuer_tenant("acme").await;
    let first = token_json(&app, "acme").await;
    app.issuer
        .configure(&client, |b| b.failure = Some(Failure::Unavailable));
    app.advance(3000);
    let held = token_json(&app, "acme").await;
    assert_eq!(held["access_token"], first["access_token"]);
    eventually("the background refresh to fail", async || {
        app.issuer.calls(&client) >= 2
    })
    .await;

    // 5 s before expiry: inside the 10 s skew, the held token is not served any more.
    app.advance(595);
    let resp = app.get_token("acme").await;
    assert!(resp.headers().contains_key("retry-after"));
    let problem = assert_problem(resp, StatusCode::SERVICE_UNAVAILABLE).await;
    assert_eq!(
        problem["type"],
        "urn:tokenvend:problem:upstream-unavailable"
    );
    let status = app.token_status("acme").await;
    assert_eq!(status["state"], "failing");
    assert_eq!(status["last_error"]["status"], 503);
}

async fn a_forced_refresh_fetches_a_new_token(app: TestApp) {
    let client = app.issuer_tenant("acme").await;
    let first = token_json(&app, "acme").await;
    // Forced refreshes are at most one per TOKENVEND_MIN_REFRESH_INTERVAL (5 s here).
    app.advance(6);
    let resp = app
        .admin(Method::POST, "/tenants/acme/token/refresh", None)
        .await;
    let status = json_body(resp, StatusCode::OK).await;
    assert_ne!(
        status["fingerprint"].as_str().unwrap(),
        first_fingerprint(&first)
    );
    assert_eq!(status["upstream_calls"], 2);
    assert!(status.get("access_token").is_none());
    assert_eq!(app.issuer.calls(&client), 2);

    app.issuer
        .configure(&client, |b| b.failure = Some(Failure::InvalidClient));
    app.advance(6);
    let resp = app
        .admin(Method::POST, "/tenants/acme/token/refresh", None)
        .await;
    assert_problem(resp, StatusCode::BAD_GATEWAY).await;
    assert_eq!(
        app.get_token("acme").await.status(),
        StatusCode::OK,
        "the held token is still served"
    );
}

// HTTP behaviour alone: the backend cannot change these.

async fn caller_triggered_fetches_are_limited_to_one_per_interval(app: TestApp) {
    let client = app.issuer_tenant("acme").await;
    token_json(&app, "acme").await;
    app.advance(6);
    let refresh = || app.admin(Method::POST, "/tenants/acme/token/refresh", None);
    assert_eq!(refresh().await.status(), StatusCode::OK);
    // A second forced refresh inside the interval: 429 with Retry-After, no edX call.
    let resp = refresh().await;
    let retry_after: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=5).contains(&retry_after), "{retry_after}");
    let problem = assert_problem(resp, StatusCode::TOO_MANY_REQUESTS).await;
    assert_eq!(problem["type"], "urn:tokenvend:problem:refresh-too-soon");
    assert_eq!(app.issuer.calls(&client), 2);

    // During a failure cool-down: 429 as well, and edX is left alone.
    app.issuer
        .configure(&client, |b| b.failure = Some(Failure::InvalidClient));
    app.advance(6);
    assert_problem(refresh().await, StatusCode::BAD_GATEWAY).await;
    let calls = app.issuer.calls(&client);
    app.advance(6);
    assert_problem(refresh().await, StatusCode::TOO_MANY_REQUESTS).await;
    assert_eq!(app.issuer.calls(&client), calls);

    // min_ttl above what edX grants: over 6 s of requests, at most one fetch per 5 s.
    app.issuer.configure(&client, |b| b.failure = None);
    app.advance(600);
    let before = app.issuer.calls(&client);
    for _ in 0..20 {
        let resp = app
            .admin(Method::GET, "/tenants/acme/token?min_ttl=86400", None)
            .await;
        assert_eq!(resp.status(), StatusCode::OK, "the best token there is");
        app.clock.advance(std::time::Duration::from_millis(300));
    }
    let made = app.issuer.calls(&client) - before;
    assert!((1..=3).contains(&made), "{made} calls");
}

crate::on_both_backends!(
    a_token_in_its_refresh_window_is_served_at_once_while_one_refresh_runs,
    the_scheduler_refreshes_a_recently_used_tenant_before_expiry: |s| {
        s.vending.scheduler_interval = HOUR
    },
    a_failed_refresh_serves_the_held_token_but_never_inside_the_skew,
    a_forced_refresh_fetches_a_new_token,
);

// HTTP behaviour alone: the backend cannot change these.
crate::on_sqlite_only!(caller_triggered_fetches_are_limited_to_one_per_interval);
