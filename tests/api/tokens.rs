use std::time::Duration;

use edx_issuer::{ExpiresInFormat, Failure};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::{assert_problem, captured_logs, eventually, json_body, TestApp};

async fn token_json(app: &TestApp, id: &str) -> Value {
    let resp = app.get_token(id).await;
    assert_eq!(resp.headers()["cache-control"], "no-store");
    json_body(resp, StatusCode::OK).await
}

async fn a_cold_tenant_fetches_once_then_serves_from_memory(app: TestApp) {
    let client = app.issuer_tenant("acme").await;
    let first = token_json(&app, "acme").await;
    assert_eq!(first["tenant_id"], "acme");
    assert_eq!(first["token_type"], "JWT");
    assert_eq!(first["expires_in"], 3600);
    assert_eq!(first["scope"], "read write");
    assert_eq!(
        first["access_token"].as_str().unwrap().split('.').count(),
        3
    );
    assert!(first["issued_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(app.issuer.calls(&client), 1);

    app.advance(100);
    let second = token_json(&app, "acme").await;
    assert_eq!(second["access_token"], first["access_token"]);
    assert_eq!(second["expires_in"], 3500, "whole seconds left now");
    assert_eq!(app.issuer.calls(&client), 1, "served from memory");
}

async fn the_token_request_sends_exactly_the_edx_form(app: TestApp) {
    let client = app.issuer_tenant("acme").await;
    token_json(&app, "acme").await;
    let form = app.issuer.last_form(&client).unwrap();
    let names: Vec<&str> = form.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        names,
        [
            "grant_type",
            "client_id",
            "client_secret",
            "token_type",
            "scope"
        ]
    );
    let get = |k: &str| {
        form.iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .unwrap()
    };
    assert_eq!(get("grant_type"), "client_credentials");
    assert_eq!(get("client_id"), client);
    assert!(get("client_secret").starts_with("secret-acme-"));
    assert_eq!(get("token_type"), "jwt");
    assert_eq!(get("scope"), "read write");

    let other = app
        .issuer_tenant_with("globex", |b| {
            b["scope"] = Value::Null;
            b["asymmetric_jwt"] = json!(true);
        })
        .await;
    token_json(&app, "globex").await;
    let form = app.issuer.last_form(&other).unwrap();
    let names: Vec<&str> = form.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        names,
        [
            "grant_type",
            "client_id",
            "client_secret",
            "token_type",
            "asymmetric_jwt"
        ]
    );
}

async fn two_hundred_concurrent_cold_requests_make_one_upstream_call(app: TestApp) {
    let client = app.issuer_tenant("acme").await;
    app.issuer
        .configure(&client, |b| b.latency = Duration::from_millis(100));
    let requests = (0..200).map(|_| app.get_token("acme"));
    let responses = futures::future::join_all(requests).await;
    let mut tokens = std::collections::HashSet::new();
    for resp in responses {
        let body = json_body(resp, StatusCode::OK).await;
        tokens.insert(body["access_token"].as_str().unwrap().to_owned());
    }
    assert_eq!(tokens.len(), 1, "everyone got the same token");
    assert_eq!(app.issuer.calls(&client), 1);
}

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

fn first_fingerprint(token: &Value) -> String {
    tokenvend::vending::fingerprint(token["access_token"].as_str().unwrap())
}

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

    app.advance(3300);
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
    tokio::time::sleep(Duration::from_millis(100)).await;
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

async fn min_ttl_fetches_a_fresher_token_at_most_once_per_request(app: TestApp) {
    let client = app.issuer_tenant("acme").await;
    let first = token_json(&app, "acme").await;
    let path = |n: u64| format!("/tenants/acme/token?min_ttl={n}");
    let same = json_body(
        app.admin(Method::GET, &path(3000), None).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(same["access_token"], first["access_token"]);
    assert_eq!(app.issuer.calls(&client), 1);

    app.advance(1000);
    let fresher = json_body(
        app.admin(Method::GET, &path(3000), None).await,
        StatusCode::OK,
    )
    .await;
    assert_ne!(fresher["access_token"], first["access_token"]);
    assert_eq!(fresher["expires_in"], 3600);
    assert_eq!(app.issuer.calls(&client), 2);

    // More than any token lives: the just-fetched token is returned as it is.
    let as_is = json_body(
        app.admin(Method::GET, &path(86_400), None).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(as_is["access_token"], fresher["access_token"]);
    assert_eq!(
        app.issuer.calls(&client),
        2,
        "a token fetched seconds ago is not refetched"
    );
    app.advance(60);
    let refetched = json_body(
        app.admin(Method::GET, &path(86_400), None).await,
        StatusCode::OK,
    )
    .await;
    assert_ne!(refetched["access_token"], fresher["access_token"]);
    assert_eq!(app.issuer.calls(&client), 3, "one fetch for that request");
    let metrics = app.metrics().await;
    assert!(
        metrics.contains("tokenvend_token_requests_total{result=\"miss\"} 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains("tokenvend_token_requests_total{result=\"hit\"} 2"),
        "{metrics}"
    );

    for bad in ["x", "-1", "86401"] {
        let resp = app
            .admin(
                Method::GET,
                &format!("/tenants/acme/token?min_ttl={bad}"),
                None,
            )
            .await;
        assert_problem(resp, StatusCode::BAD_REQUEST).await;
    }
}

async fn expires_in_as_a_string_a_float_or_missing_is_understood(app: TestApp) {
    for (id, format) in [
        ("as-string", ExpiresInFormat::String),
        ("as-float", ExpiresInFormat::Float),
        ("missing", ExpiresInFormat::Missing),
    ] {
        let client = app.issuer_tenant(id).await;
        app.issuer.configure(&client, |b| {
            b.expires_in = format;
            b.lifetime = Duration::from_secs(180);
        });
        let token = token_json(&app, id).await;
        assert_eq!(token["expires_in"], 180, "{id}");
        let status = app.token_status(id).await;
        assert_eq!(status["lifetime_seconds"], 180, "{id}");
    }
}

async fn opaque_bearer_tokens_get_a_window_from_expires_in_and_no_claims(app: TestApp) {
    let client = app
        .issuer_tenant_with("opaque", |b| b["token_type"] = json!("bearer"))
        .await;
    app.issuer
        .configure(&client, |b| b.lifetime = Duration::from_secs(36000));
    let token = token_json(&app, "opaque").await;
    assert_eq!(token["token_type"], "Bearer");
    assert_eq!(token["expires_in"], 36000);
    let status = app.token_status("opaque").await;
    assert_eq!(status["claims"], Value::Null);
    assert_eq!(status["lifetime_seconds"], 36000);
    assert_eq!(status["state"], "valid");
    let form = app.issuer.last_form(&client).unwrap();
    assert!(form.contains(&("token_type".to_owned(), "bearer".to_owned())));
}

async fn each_upstream_failure_maps_to_its_status_within_its_call_budget(app: TestApp) {
    let cases: Vec<(Failure, StatusCode, &str, u64)> = vec![
        (
            Failure::InvalidClient,
            StatusCode::BAD_GATEWAY,
            "upstream-rejected",
            1,
        ),
        (
            Failure::InvalidScope,
            StatusCode::BAD_GATEWAY,
            "upstream-rejected",
            1,
        ),
        (
            Failure::Garbage,
            StatusCode::BAD_GATEWAY,
            "upstream-invalid-response",
            1,
        ),
        (
            Failure::ErrorIn200,
            StatusCode::BAD_GATEWAY,
            "upstream-invalid-response",
            1,
        ),
        (
            Failure::RateLimited {
                retry_after_secs: 7,
            },
            StatusCode::SERVICE_UNAVAILABLE,
            "upstream-throttled",
            1,
        ),
        (
            Failure::ForbiddenHtml,
            StatusCode::SERVICE_UNAVAILABLE,
            "upstream-throttled",
            1,
        ),
        (
            Failure::ServerError,
            StatusCode::SERVICE_UNAVAILABLE,
            "upstream-unavailable",
            3,
        ),
        (
            Failure::Unavailable,
            StatusCode::SERVICE_UNAVAILABLE,
            "upstream-unavailable",
            3,
        ),
        (
            Failure::Hang,
            StatusCode::GATEWAY_TIMEOUT,
            "upstream-timeout",
            3,
        ),
    ];
    for (i, (failure, status, slug, calls)) in cases.into_iter().enumerate() {
        // A token fetched by a healthy tenant first: the host answers, so the cases'
        // failures never add up to the five in a row that open its circuit breaker
        // (tests/api/breaker.rs).
        app.issuer_tenant(&format!("healthy{i}")).await;
        let healthy = app.get_token(&format!("healthy{i}")).await;
        assert_eq!(healthy.status(), StatusCode::OK);
        let id = format!("t{i}");
        let client = app.issuer_tenant(&id).await;
        app.issuer
            .configure(&client, |b| b.failure = Some(failure.clone()));
        let resp = app.get_token(&id).await;
        let retry_after = resp
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_owned());
        let problem = assert_problem(resp, status).await;
        assert_eq!(
            problem["type"],
            format!("urn:tokenvend:problem:{slug}"),
            "{failure:?}"
        );
        let detail = problem["detail"].as_str().unwrap();
        assert!(
            !detail.contains('<') && !detail.contains("throttled."),
            "no upstream body: {detail}"
        );
        assert_eq!(app.issuer.calls(&client), calls, "{failure:?}");
        if status == StatusCode::SERVICE_UNAVAILABLE {
            let secs: u64 = retry_after.expect("Retry-After").parse().unwrap();
            assert!(secs >= 1);
            if let Failure::RateLimited { retry_after_secs } = failure {
                assert_eq!(secs, retry_after_secs, "edX's Retry-After is honoured");
            }
        }
        // While cooling down, a second request answers the same without calling edX.
        let again = app.get_token(&id).await;
        assert_eq!(again.status(), status, "{failure:?}");
        assert_eq!(
            app.issuer.calls(&client),
            calls,
            "{failure:?}: no call during cool-down"
        );
    }
}

async fn rejected_credentials_and_a_failing_edx_cannot_cause_a_retry_storm(app: TestApp) {
    let rejected = app.issuer_tenant("rejected").await;
    app.issuer
        .configure(&rejected, |b| b.failure = Some(Failure::InvalidClient));
    for _ in 0..20 {
        assert_eq!(
            app.get_token("rejected").await.status(),
            StatusCode::BAD_GATEWAY
        );
    }
    assert!(
        app.issuer.calls(&rejected) <= 2,
        "{} calls",
        app.issuer.calls(&rejected)
    );

    let failing = app.issuer_tenant("failing").await;
    app.issuer
        .configure(&failing, |b| b.failure = Some(Failure::ServerError));
    let responses = futures::future::join_all((0..50).map(|_| app.get_token("failing"))).await;
    assert!(responses
        .iter()
        .all(|r| r.status() == StatusCode::SERVICE_UNAVAILABLE));
    assert!(
        app.issuer.calls(&failing) <= 3,
        "{} calls",
        app.issuer.calls(&failing)
    );

    // After the cool-down, edX is asked again, and recovery is served.
    app.issuer.configure(&failing, |b| b.failure = None);
    app.advance(120);
    assert_eq!(app.get_token("failing").await.status(), StatusCode::OK);
    let status = app.token_status("failing").await;
    assert_eq!(status["state"], "valid");
    assert_eq!(status["last_error"], Value::Null);
    assert!(status["upstream_failures"].as_u64().unwrap() >= 1);
}

async fn a_restart_with_a_valid_stored_token_makes_no_upstream_call(mut app: TestApp) {
    let client = app.issuer_tenant("acme").await;
    let first = token_json(&app, "acme").await;
    // The token is written to the store in the background.
    let count = "SELECT COUNT(*) FROM tokens WHERE tenant_id = 'acme'";
    eventually("the token to be stored", async || {
        app.raw_count(count, &[]).await == 1
    })
    .await;
    assert_eq!(app.raw_count(count, &[]).await, 1);
    let dump = app.dump().await;
    assert!(
        !crate::helpers::contains(&dump, first["access_token"].as_str().unwrap()),
        "sealed at rest"
    );

    app.restart().await;
    app.advance(60);
    let after = token_json(&app, "acme").await;
    assert_eq!(after["access_token"], first["access_token"]);
    assert_eq!(after["expires_in"], 3540);
    assert_eq!(app.issuer.calls(&client), 1);
}

async fn a_secret_rotated_by_patch_is_used_on_the_next_fetch(app: TestApp) {
    let client = app.issuer_tenant("acme").await;
    let first = token_json(&app, "acme").await;
    app.issuer.register(&client, "rotated-secret-value");
    let patch = json!({"client_secret": "rotated-secret-value"});
    assert_eq!(
        app.admin(Method::PATCH, "/tenants/acme", Some(&patch))
            .await
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        app.token_status("acme").await["state"],
        "missing",
        "the old token is dropped at once"
    );
    let second = token_json(&app, "acme").await;
    assert_ne!(second["access_token"], first["access_token"]);
    let form = app.issuer.last_form(&client).unwrap();
    assert!(form.contains(&(
        "client_secret".to_owned(),
        "rotated-secret-value".to_owned()
    )));
    assert_eq!(app.issuer.calls(&client), 2);

    // A rename keeps the token.
    let rename = json!({"name": "Renamed"});
    app.admin(Method::PATCH, "/tenants/acme", Some(&rename))
        .await;
    assert_eq!(
        token_json(&app, "acme").await["access_token"],
        second["access_token"]
    );
    assert_eq!(app.issuer.calls(&client), 2);
}

async fn a_deleted_tenant_loses_its_token_at_once(app: TestApp) {
    app.issuer_tenant("acme").await;
    token_json(&app, "acme").await;
    assert_eq!(
        app.admin(Method::DELETE, "/tenants/acme", None)
            .await
            .status(),
        StatusCode::NO_CONTENT
    );
    assert_problem(app.get_token("acme").await, StatusCode::NOT_FOUND).await;
    let resp = app
        .admin(Method::GET, "/tenants/acme/token/status", None)
        .await;
    assert_problem(resp, StatusCode::NOT_FOUND).await;
}

async fn token_scopes_hide_other_tenants_and_forbid_keys_without_token_scope(app: TestApp) {
    app.issuer_tenant("a").await;
    app.issuer_tenant("b").await;
    let token_a = app.create_key(&["token:a"]).await;
    let token_all = app.create_key(&["token:*"]).await;
    let reader = app.create_key(&["tenants:read"]).await;
    let cases = [
        (&token_a, "/tenants/a/token", StatusCode::OK),
        (&token_a, "/tenants/b/token", StatusCode::NOT_FOUND),
        (&token_a, "/tenants/nobody/token", StatusCode::NOT_FOUND),
        (&token_a, "/tenants/Not_An_Id/token", StatusCode::NOT_FOUND),
        (&token_all, "/tenants/b/token", StatusCode::OK),
        (&token_all, "/tenants/nobody/token", StatusCode::NOT_FOUND),
        (&reader, "/tenants/a/token", StatusCode::FORBIDDEN),
        (
            &reader,
            "/tenants/a/token?min_ttl=abc",
            StatusCode::FORBIDDEN,
        ),
        (&token_a, "/tenants/a/token/status", StatusCode::FORBIDDEN),
        (&token_a, "/tokens/status", StatusCode::FORBIDDEN),
        (
            &reader,
            "/tenants/a/token/refresh",
            StatusCode::METHOD_NOT_ALLOWED,
        ),
    ];
    let mut bodies = Vec::new();
    for (key, path, expected) in cases {
        let resp = app.request(Method::GET, path, Some(key), None).await;
        assert_eq!(resp.status(), expected, "{path}");
        if expected == StatusCode::NOT_FOUND {
            bodies.push(resp.text().await.unwrap());
        }
    }
    assert!(
        bodies.windows(2).all(|w| w[0] == w[1]),
        "a hidden tenant looks exactly like an unknown one"
    );
    let resp = app
        .request(
            Method::POST,
            "/tenants/a/token/refresh",
            Some(&reader),
            None,
        )
        .await;
    assert_problem(resp, StatusCode::FORBIDDEN).await;
}

async fn token_status_shows_the_window_and_claims_but_never_the_token(app: TestApp) {
    let client = app
        .issuer_tenant_with("acme", |b| b["jwks_url"] = Value::Null)
        .await;
    let missing = app.token_status("acme").await;
    assert_eq!(missing["state"], "missing");
    assert_eq!(missing["fingerprint"], Value::Null);
    assert_eq!(missing["upstream_calls"], 0);

    let token = token_json(&app, "acme").await;
    let access_token = token["access_token"].as_str().unwrap().to_owned();
    app.advance(600);
    let status = app.token_status("acme").await;
    assert_eq!(status["tenant_id"], "acme");
    assert_eq!(status["state"], "valid");
    assert_eq!(status["lifetime_seconds"], 3600);
    assert_eq!(status["remaining_seconds"], 3000);
    assert_eq!(status["upstream_calls"], 1);
    assert_eq!(status["upstream_failures"], 0);
    assert_eq!(status["signature"], "unverified");
    assert_eq!(
        status["fingerprint"],
        tokenvend::vending::fingerprint(&access_token)
    );
    assert_eq!(status["claims"]["grant_type"], "client-credentials");
    assert_eq!(
        status["claims"]["preferred_username"],
        format!("{client}-worker")
    );
    assert_eq!(status["claims"]["aud"], "lms-key");
    assert_eq!(status["issued_at"], token["issued_at"]);
    assert_eq!(status["expires_at"], token["expires_at"]);
    for field in ["fetched_at", "next_refresh_at", "not_before"] {
        assert!(status[field].is_string(), "{field}");
    }
    app.advance(2400);
    assert_eq!(app.token_status("acme").await["state"], "expiring");

    let list = json_body(
        app.admin(Method::GET, "/tokens/status", None).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(list["items"][0]["tenant_id"], "acme");
    let metrics = app.metrics().await;
    for text in [
        status.to_string(),
        list.to_string(),
        metrics.clone(),
        captured_logs(),
    ] {
        assert!(!text.contains(&access_token), "the token leaked");
    }
    assert!(
        metrics.contains("tokenvend_token_seconds_remaining{tenant=\"acme\"}"),
        "{metrics}"
    );
}

async fn a_jwks_url_gets_each_token_signature_checked(app: TestApp) {
    let jwks = app.issuer_server.jwks_url();
    app.issuer_tenant_with("acme", |b| b["jwks_url"] = json!(jwks))
        .await;
    token_json(&app, "acme").await;
    let mut signature = Value::Null;
    eventually("the token's signature to be checked", async || {
        signature = app.token_status("acme").await["signature"].clone();
        signature == "valid"
    })
    .await;
    assert_eq!(signature, "valid");
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

async fn metrics_count_requests_by_result_and_upstream_calls_by_outcome(app: TestApp) {
    app.issuer_tenant("acme").await;
    token_json(&app, "acme").await;
    token_json(&app, "acme").await;
    let bad = app.issuer_tenant("bad").await;
    app.issuer
        .configure(&bad, |b| b.failure = Some(Failure::InvalidClient));
    app.get_token("bad").await;
    let resp = app
        .request(Method::GET, "/metrics", Some(&app.admin_key), None)
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let text = resp.text().await.unwrap();
    for line in [
        "tokenvend_token_requests_total{result=\"hit\"} 1",
        "tokenvend_token_requests_total{result=\"miss\"} 1",
        "tokenvend_token_requests_total{result=\"error\"} 1",
        "tokenvend_upstream_requests_total{outcome=\"success\"} 1",
        "tokenvend_upstream_requests_total{outcome=\"rejected\"} 1",
        "tokenvend_upstream_request_duration_seconds_count 2",
        "tokenvend_cached_tokens 1",
        "tokenvend_tenants 2",
    ] {
        assert!(text.contains(line), "missing {line:?} in\n{text}");
    }
}

crate::on_both_backends!(
    a_cold_tenant_fetches_once_then_serves_from_memory,
    the_token_request_sends_exactly_the_edx_form,
    two_hundred_concurrent_cold_requests_make_one_upstream_call,
    a_token_in_its_refresh_window_is_served_at_once_while_one_refresh_runs,
    the_scheduler_refreshes_a_recently_used_tenant_before_expiry,
    a_failed_refresh_serves_the_held_token_but_never_inside_the_skew,
    min_ttl_fetches_a_fresher_token_at_most_once_per_request,
    expires_in_as_a_string_a_float_or_missing_is_understood,
    opaque_bearer_tokens_get_a_window_from_expires_in_and_no_claims,
    each_upstream_failure_maps_to_its_status_within_its_call_budget,
    rejected_credentials_and_a_failing_edx_cannot_cause_a_retry_storm,
    a_restart_with_a_valid_stored_token_makes_no_upstream_call,
    a_secret_rotated_by_patch_is_used_on_the_next_fetch,
    a_deleted_tenant_loses_its_token_at_once,
    token_status_shows_the_window_and_claims_but_never_the_token,
    a_jwks_url_gets_each_token_signature_checked,
    a_forced_refresh_fetches_a_new_token,
    metrics_count_requests_by_result_and_upstream_calls_by_outcome,
);

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

crate::on_sqlite_only!(
    token_scopes_hide_other_tenants_and_forbid_keys_without_token_scope,
    caller_triggered_fetches_are_limited_to_one_per_interval,
);
