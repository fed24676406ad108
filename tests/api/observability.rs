//! What operators watch besides the token path: tenants by state, Bearer tenants (edX is
//! retiring opaque tokens), webhook deliveries and readiness, in `/metrics` and the token
//! statuses.

use std::time::Duration;

use edx_issuer::Failure;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::{eventually, json_body, TestApp};
use crate::webhooks::{register, Receiver};

/// The value of the sample `name` (labels included, as rendered) in `metrics`.
fn sample(metrics: &str, name: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .map(|value| value.trim().parse().expect("a number"))
}

fn state_count(metrics: &str, state: &str) -> Option<f64> {
    sample(
        metrics,
        &format!("tokenvend_tenants_by_state{{state=\"{state}\"}}"),
    )
}

fn deliveries(metrics: &str, outcome: &str) -> Option<f64> {
    sample(
        metrics,
        &format!("tokenvend_webhook_deliveries_total{{outcome=\"{outcome}\"}}"),
    )
}

async fn the_state_gauge_counts_tenants_per_state(app: TestApp) {
    app.issuer_tenant("acme").await;
    let refused = app.issuer_tenant("initech").await;
    app.issuer
        .configure(&refused, |b| b.failure = Some(Failure::InvalidClient));
    app.issuer_tenant("umbrella").await;
    app.issuer_tenant("hooli").await;
    let metrics = app.metrics().await;
    assert_eq!(state_count(&metrics, "missing"), Some(4.0), "{metrics}");
    for state in ["valid", "expiring", "expired", "failing"] {
        assert_eq!(
            state_count(&metrics, state),
            Some(0.0),
            "{state} shown at 0"
        );
    }

    assert_eq!(app.get_token("acme").await.status(), StatusCode::OK);
    assert_eq!(app.get_token("hooli").await.status(), StatusCode::OK);
    assert_eq!(
        app.get_token("initech").await.status(),
        StatusCode::BAD_GATEWAY
    );
    let metrics = app.metrics().await;
    let counts: Vec<_> = ["valid", "expiring", "expired", "missing", "failing"]
        .iter()
        .map(|state| state_count(&metrics, state))
        .collect();
    assert_eq!(
        counts,
        [Some(2.0), Some(0.0), Some(0.0), Some(1.0), Some(1.0)],
        "valid, expiring, expired, missing, failing"
    );
}

async fn a_bearer_tenant_is_flagged_in_both_status_endpoints_and_counted(app: TestApp) {
    app.issuer_tenant("acme").await;
    app.issuer_tenant_with("initech", |b| b["token_type"] = json!("bearer"))
        .await;
    assert_eq!(app.get_token("initech").await.status(), StatusCode::OK);

    let bearer = app.token_status("initech").await;
    assert_eq!(bearer["token_type"], "bearer", "{bearer}");
    assert_eq!(bearer["warnings"], json!(["bearer-token-retiring"]));
    let jwt = app.token_status("acme").await;
    assert_eq!(jwt["token_type"], "jwt", "{jwt}");
    assert_eq!(jwt["warnings"], json!([]));

    let listed = json_body(
        app.admin(Method::GET, "/tokens/status", None).await,
        StatusCode::OK,
    )
    .await;
    let flags: Vec<(Value, Value, Value)> = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["tenant_id"].clone(),
                s["token_type"].clone(),
                s["warnings"].clone(),
            )
        })
        .collect();
    assert_eq!(
        flags,
        [
            (json!("acme"), json!("jwt"), json!([])),
            (
                json!("initech"),
                json!("bearer"),
                json!(["bearer-token-retiring"])
            ),
        ]
    );
    let metrics = app.metrics().await;
    assert_eq!(sample(&metrics, "tokenvend_bearer_tenants"), Some(1.0));
}

async fn webhook_delivery_counters_move_on_delivered_retried_and_failed(mut app: TestApp) {
    // One retry: the second failed attempt fails the delivery for good.
    app.settings.webhooks.retry_schedule = vec![Duration::from_secs(5)];
    app.restart().await;
    let metrics = app.metrics().await;
    for outcome in ["delivered", "retried", "failed"] {
        assert_eq!(deliveries(&metrics, outcome), Some(0.0), "{outcome} at 0");
    }
    assert_eq!(sample(&metrics, "tokenvend_webhook_pending"), Some(0.0));

    let (receiver, url, _server) = Receiver::start().await;
    receiver.answer_next(&[500, 500]);
    register(&app, &url, &["tenant.created"]).await;
    app.issuer_tenant("acme").await;
    eventually("a retry counted, the delivery pending", async || {
        let metrics = app.metrics().await;
        deliveries(&metrics, "retried") == Some(1.0)
            && sample(&metrics, "tokenvend_webhook_pending") == Some(1.0)
    })
    .await;

    app.advance(6);
    eventually("the delivery failed for good", async || {
        let metrics = app.metrics().await;
        deliveries(&metrics, "failed") == Some(1.0)
            && sample(&metrics, "tokenvend_webhook_pending") == Some(0.0)
    })
    .await;

    app.issuer_tenant("initech").await;
    eventually("the next one delivered", async || {
        deliveries(&app.metrics().await, "delivered") == Some(1.0)
    })
    .await;
    assert_eq!(receiver.count(), 3);
    let metrics = app.metrics().await;
    assert_eq!(deliveries(&metrics, "retried"), Some(1.0));
    assert_eq!(deliveries(&metrics, "failed"), Some(1.0));
}

async fn the_ready_gauge_follows_the_readiness_check(app: TestApp) {
    assert_eq!(
        sample(&app.metrics().await, "tokenvend_ready"),
        Some(1.0),
        "ready after start-up"
    );
    let resp = app.request(Method::GET, "/readyz", None, None).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(sample(&app.metrics().await, "tokenvend_ready"), Some(1.0));

    // Another instance on the same database, whose store then goes away; its metrics
    // are served without a key (the key check must not depend on the store here).
    let mut settings = app.settings.clone();
    settings.serving.metrics_listen = Some("127.0.0.1:0".to_owned());
    let built = tokenvend::startup::Application::build(settings)
        .await
        .expect("builds");
    let address = format!("http://{}", built.local_addr());
    let metrics_url = format!("http://{}/metrics", built.metrics_addr().unwrap());
    // Closed at the first poll; the wait for checked-out connections (the change
    // listener made for the start-up load holds one until the app runs) is not awaited:
    // under load it hung this test for minutes.
    let closing = tokio::time::timeout(Duration::from_millis(200), built.state().store.close());
    let _ = closing.await;
    tokio::spawn(built.run_until_stopped(std::future::pending()));
    let scrape = async || {
        let resp = app.client.get(&metrics_url).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        sample(&resp.text().await.unwrap(), "tokenvend_ready")
    };
    assert_eq!(scrape().await, Some(1.0), "until a check finds otherwise");
    let resp = app
        .client
        .get(format!("{address}/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(scrape().await, Some(0.0));
}

async fn token_requests_are_timed_and_hits_are_fast(app: TestApp) {
    let count = "tokenvend_token_request_duration_seconds_count";
    let fast = "tokenvend_token_request_duration_seconds_bucket{le=\"0.0128\"}";
    assert_eq!(sample(&app.metrics().await, count), Some(0.0));
    app.issuer_tenant("acme").await;
    for _ in 0..3 {
        json_body(app.get_token("acme").await, StatusCode::OK).await;
    }
    let metrics = app.metrics().await;
    assert_eq!(sample(&metrics, count), Some(3.0), "every request is timed");
    assert!(
        sample(&metrics, fast).is_some_and(|hits| hits >= 2.0),
        "the two hits took under 12.8 ms (a hit takes microseconds): {metrics}"
    );
}

async fn a_deleted_tenants_series_leave_the_metrics(app: TestApp) {
    app.issuer_tenant("gone").await;
    let proxied = app
        .admin(
            Method::GET,
            "/tenants/gone/proxy/api/enterprise/v1/enterprise-customer/",
            None,
        )
        .await;
    assert_eq!(proxied.status(), StatusCode::OK);
    let tenant_series = |metrics: &str| {
        metrics
            .lines()
            .filter(|line| line.contains("tenant=\"gone\""))
            .count()
    };
    assert!(
        tenant_series(&app.metrics().await) >= 2,
        "proxy and seconds left"
    );
    let deleted = app.admin(Method::DELETE, "/tenants/gone", None).await;
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    let metrics = app.metrics().await;
    assert_eq!(tenant_series(&metrics), 0, "{metrics}");
}

crate::on_sqlite_only!(token_requests_are_timed_and_hits_are_fast);

crate::on_both_backends!(
    the_state_gauge_counts_tenants_per_state,
    a_bearer_tenant_is_flagged_in_both_status_endpoints_and_counted,
    webhook_delivery_counters_move_on_delivered_retried_and_failed,
    the_ready_gauge_follows_the_readiness_check,
    a_deleted_tenants_series_leave_the_metrics,
);
