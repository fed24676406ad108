//! Callers cannot spend edX for others: each caller may trigger at most
//! `TOKENVEND_CALLER_FETCH_RATE` fetches a minute (forced refreshes, invalidations, proxy
//! retries after a `401`, `min_ttl`, verifies together), such fetches never reach into
//! the budget's reserve for tenants without a token, and only changes are audited.

use std::num::NonZeroU32;

use reqwest::{Method, Response, StatusCode};
use serde_json::Value;

use tokenvend::config::Settings;

use crate::helpers::{assert_problem, json_body, TestApp};
use crate::invalidate::invalidate;

/// The test settings' minimum refresh interval (5 s), and a little more.
const PAST_THE_INTERVAL: u64 = 6;

/// An upstream budget of `upstream` requests a minute (a reserve of a quarter) and a
/// caller fetch rate of `caller` a minute.
fn rates(settings: &mut Settings, upstream: u32, caller: u32) {
    settings.vending.upstream_rate = NonZeroU32::new(upstream);
    settings.vending.caller_fetch_rate = NonZeroU32::new(caller);
}

async fn tenants(app: &TestApp, n: usize) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for i in 0..n {
        let id = format!("t-{i}");
        let client = app.issuer_tenant(&id).await;
        out.push((id, client));
    }
    out
}

async fn fingerprint(app: &TestApp, id: &str) -> String {
    let token = json_body(app.get_token(id).await, StatusCode::OK).await;
    token["fingerprint"].as_str().unwrap().to_owned()
}

async fn budget_remaining(app: &TestApp) -> f64 {
    let budget = json_body(
        app.admin(Method::GET, "/upstream/budget", None).await,
        StatusCode::OK,
    )
    .await;
    budget["hosts"][0]["remaining"].as_f64().unwrap()
}

async fn rate_limited(resp: Response) -> Value {
    assert!(resp.headers().contains_key("retry-after"), "Retry-After");
    let problem = assert_problem(resp, StatusCode::TOO_MANY_REQUESTS).await;
    assert_eq!(problem["type"], "urn:tokenvend:problem:rate-limited");
    problem
}

async fn one_proxy_key_answered_401_cannot_drain_the_shared_budget(app: TestApp) {
    let ids = tenants(&app, 30).await;
    for (id, _) in &ids {
        fingerprint(&app, id).await;
    }
    assert_eq!(app.issuer.total_calls(), 30);
    app.advance(PAST_THE_INTERVAL);
    let key = app.create_key(&["proxy:*"]).await;

    // Three rounds over every tenant of calls that the API answers with 401.
    let mut answers = Vec::new();
    for _ in 0..3 {
        for (id, _) in &ids {
            let resp = app
                .request(
                    Method::GET,
                    &format!("/tenants/{id}/proxy/api/test/unauthorized"),
                    Some(&key),
                    None,
                )
                .await;
            answers.push(resp.status());
        }
    }
    assert!(
        answers.iter().all(|s| *s == StatusCode::UNAUTHORIZED),
        "every call gets the API's own 401, none a 503: {answers:?}"
    );
    assert_eq!(
        app.issuer.total_calls(),
        30 + 10,
        "the key triggered its 10 fetches a minute, no more"
    );
    // Every tenant still has a token for its other callers, without a call.
    for (id, _) in &ids {
        json_body(app.get_token(id).await, StatusCode::OK).await;
    }
    assert_eq!(app.issuer.total_calls(), 40);
    assert!(
        budget_remaining(&app).await >= 15.0,
        "the reserve for tenants without a token is untouched"
    );
}

async fn invalidations_by_one_key_are_held_to_its_fetch_rate(app: TestApp) {
    let ids = tenants(&app, 5).await;
    let mut prints = Vec::new();
    for (id, _) in &ids {
        prints.push(fingerprint(&app, id).await);
    }
    app.advance(PAST_THE_INTERVAL);
    let key = app.create_key(&["token:*"]).await;
    for n in 0..3 {
        let answer = json_body(
            invalidate(&app, &ids[n].0, &key, &prints[n]).await,
            StatusCode::OK,
        )
        .await;
        assert_eq!(answer["invalidated"], true);
    }
    for n in 3..5 {
        rate_limited(invalidate(&app, &ids[n].0, &key, &prints[n]).await).await;
        assert_eq!(
            fingerprint(&app, &ids[n].0).await,
            prints[n],
            "a refused invalidation drops nothing"
        );
    }
    // Another caller has its own rate.
    let other = app.create_key(&["token:*"]).await;
    let answer = json_body(
        invalidate(&app, &ids[3].0, &other, &prints[3]).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(answer["invalidated"], true);
    // A minute later the first caller may again.
    app.advance(60);
    let answer = json_body(
        invalidate(&app, &ids[4].0, &key, &prints[4]).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(answer["invalidated"], true);
}

async fn the_fetch_after_an_invalidation_leaves_the_reserve_to_tenants_without_a_token(
    app: TestApp,
) {
    let app_ids = tenants(&app, 6).await;
    let mut prints = Vec::new();
    for (id, _) in &app_ids[..5] {
        prints.push(fingerprint(&app, id).await);
    }
    app.advance(PAST_THE_INTERVAL);
    let key = app.create_key(&["token:*"]).await;
    let answer = json_body(
        invalidate(&app, &app_ids[0].0, &key, &prints[0]).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(answer["invalidated"], true);
    let resp = app.get_token(&app_ids[0].0).await;
    let problem = assert_problem(resp, StatusCode::SERVICE_UNAVAILABLE).await;
    assert_eq!(
        problem["type"], "urn:tokenvend:problem:upstream-budget",
        "the refetch a caller caused stays out of the reserve"
    );
    // The reserve is still there for a tenant that never had a token.
    json_body(app.get_token(&app_ids[5].0).await, StatusCode::OK).await;
    assert_eq!(app.issuer.total_calls(), 6);
}

async fn min_ttl_and_forced_refreshes_count_against_the_callers_rate(app: TestApp) {
    let ids = tenants(&app, 1).await;
    let (id, client) = &ids[0];
    fingerprint(&app, id).await;
    let key = app.create_key(&["token:*"]).await;
    let min_ttl_path = format!("/tenants/{id}/token?min_ttl=86400");
    let min_ttl = || app.request(Method::GET, &min_ttl_path, Some(&key), None);
    for expected in [2, 3, 3] {
        app.advance(PAST_THE_INTERVAL);
        json_body(min_ttl().await, StatusCode::OK).await;
        assert_eq!(
            app.issuer.calls(client),
            expected,
            "two min_ttl fetches, then the held token as it is"
        );
    }
    let writer = app.create_key(&["tenants:write"]).await;
    let refresh_path = format!("/tenants/{id}/token/refresh");
    let refresh = || app.request(Method::POST, &refresh_path, Some(&writer), None);
    for _ in 0..2 {
        app.advance(PAST_THE_INTERVAL);
        json_body(refresh().await, StatusCode::OK).await;
    }
    app.advance(PAST_THE_INTERVAL);
    rate_limited(refresh().await).await;
    assert_eq!(app.issuer.calls(client), 5);
    let audited = app
        .raw_count(
            "SELECT count(*) FROM audit_events WHERE action = 'token.refresh'",
            &[],
        )
        .await;
    assert_eq!(audited, 2, "a refused refresh is not audited");
}

async fn only_invalidations_that_change_something_are_audited(app: TestApp) {
    let ids = tenants(&app, 1).await;
    let id = &ids[0].0;
    let held = fingerprint(&app, id).await;
    let key = app.create_key(&["token:*"]).await;
    // Refused as too soon (the token was just fetched): no row.
    for _ in 0..5 {
        let resp = invalidate(&app, id, &key, &held).await;
        assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    }
    // About another token: nothing changes, no row.
    for _ in 0..50 {
        let answer = json_body(
            invalidate(&app, id, &key, "0123456789abcdef").await,
            StatusCode::OK,
        )
        .await;
        assert_eq!(answer["reason"], "fingerprint_mismatch");
    }
    let rows = || {
        app.raw_count(
            "SELECT count(*) FROM audit_events WHERE action = 'token.invalidate'",
            &[],
        )
    };
    assert_eq!(rows().await, 0, "no-op invalidations write no audit rows");
    app.advance(PAST_THE_INTERVAL);
    json_body(invalidate(&app, id, &key, &held).await, StatusCode::OK).await;
    assert_eq!(
        rows().await,
        1,
        "the one that dropped the token is on the record"
    );
}

crate::on_both_backends_with! {
    one_proxy_key_answered_401_cannot_drain_the_shared_budget: |s| rates(s, 60, 10);
    invalidations_by_one_key_are_held_to_its_fetch_rate: |s| rates(s, 60, 3);
    // Six a minute: a reserve of one request for tenants that have no token.
    the_fetch_after_an_invalidation_leaves_the_reserve_to_tenants_without_a_token: |s| rates(s, 6, 10);
    min_ttl_and_forced_refreshes_count_against_the_callers_rate: |s| rates(s, 60, 2);
    only_invalidations_that_change_something_are_audited: |s| rates(s, 60, 10);
}
