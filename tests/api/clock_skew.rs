//! edX's clock against ours: measured on every fetch from the JWT's `iat` (else the
//! `Date` header), shown per token-endpoint host in `/metrics`, `/upstream/budget` and
//! the logs, and a token issued too far in the future refused — driven by a skewed
//! local issuer.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::{captured_logs, json_body, TestApp};

/// The issuer's `host:port`, as the budget and the gauge name it.
pub fn issuer_host(app: &TestApp) -> String {
    app.issuer_server.addr.to_string()
}

/// The value of `tokenvend_upstream_clock_offset_seconds` for `host`, if shown.
pub fn offset_in(metrics: &str, host: &str) -> Option<f64> {
    let prefix = format!("tokenvend_upstream_clock_offset_seconds{{host=\"{host}\"}} ");
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .map(|value| value.trim().parse().expect("a number"))
}

/// The `/upstream/budget` entry of `host`.
async fn budget_of(app: &TestApp, host: &str) -> Value {
    let report = json_body(
        app.admin(Method::GET, "/upstream/budget", None).await,
        StatusCode::OK,
    )
    .await;
    report["hosts"]
        .as_array()
        .expect("hosts")
        .iter()
        .find(|h| h["host"] == host)
        .cloned()
        .unwrap_or_else(|| panic!("no budget entry for {host}: {report}"))
}

/// The log lines warning about the clock of `host`.
fn clock_warnings(host: &str) -> Vec<String> {
    captured_logs()
        .lines()
        .filter(|line| line.contains("WARN") && line.contains("clock") && line.contains(host))
        .map(str::to_owned)
        .collect()
}

/// A tenant on the issuer whose edX clock is `offset` seconds off.
async fn skewed_tenant(app: &TestApp, id: &str, offset: i64, token_type: &str) -> String {
    let client = app
        .issuer_tenant_with(id, |b| b["token_type"] = json!(token_type))
        .await;
    app.issuer.configure(&client, |b| {
        b.clock_offset = chrono::TimeDelta::seconds(offset)
    });
    client
}

fn assert_near(measured: Option<f64>, expected: f64, what: &str) {
    let measured = measured.unwrap_or_else(|| panic!("{what}: no offset shown"));
    assert!(
        (measured - expected).abs() < 1.0,
        "{what}: {measured} is not within a second of {expected}"
    );
}

async fn an_edx_clock_45s_ahead_shows_in_metrics_the_budget_and_a_warning(app: TestApp) {
    skewed_tenant(&app, "acme", 45, "jwt").await;
    let host = issuer_host(&app);
    assert!(
        offset_in(&app.metrics().await, &host).is_none(),
        "unset until measured"
    );
    assert_eq!(app.get_token("acme").await.status(), StatusCode::OK);

    assert_near(offset_in(&app.metrics().await, &host), 45.0, "/metrics");
    assert_near(
        budget_of(&app, &host).await["clock_offset_seconds"].as_f64(),
        45.0,
        "/upstream/budget",
    );
    let warnings = clock_warnings(&host);
    assert!(
        !warnings.is_empty(),
        "a warning names the host and the offset"
    );
    assert!(warnings[0].contains("45"), "{warnings:?}");
}

async fn an_edx_clock_400s_ahead_is_an_upstream_error(app: TestApp) {
    let client = skewed_tenant(&app, "acme", 400, "jwt").await;
    let resp = app.get_token("acme").await;
    assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
    let problem: Value = resp.json().await.unwrap();
    assert!(
        !problem.to_string().contains("eyJ"),
        "no token in the problem: {problem}"
    );
    assert_eq!(app.issuer.calls(&client), 1, "not retried");

    let status = app.token_status("acme").await;
    assert_eq!(status["state"], "failing");
    assert_eq!(status["fingerprint"], Value::Null, "the token is not held");
    assert_eq!(status["upstream_failures"], 1, "{status}");
    let message = status["last_error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("issued") && message.contains("in the future"),
        "{status}"
    );
    // Measured all the same: the offset is what an operator needs to see.
    assert_near(
        offset_in(&app.metrics().await, &issuer_host(&app)),
        400.0,
        "/metrics",
    );
}

async fn an_edx_clock_10s_ahead_is_fine_and_not_warned_about(app: TestApp) {
    skewed_tenant(&app, "acme", 10, "jwt").await;
    let resp = app.get_token("acme").await;
    assert_eq!(resp.status(), StatusCode::OK);
    let host = issuer_host(&app);
    assert_near(offset_in(&app.metrics().await, &host), 10.0, "/metrics");
    assert_eq!(clock_warnings(&host), Vec::<String>::new());
}

async fn an_edx_clock_behind_by_a_minute_is_warned_about(app: TestApp) {
    skewed_tenant(&app, "acme", -60, "jwt").await;
    assert_eq!(app.get_token("acme").await.status(), StatusCode::OK);
    let host = issuer_host(&app);
    assert_near(offset_in(&app.metrics().await, &host), -60.0, "/metrics");
    assert!(!clock_warnings(&host).is_empty(), "behind counts too");
}

async fn a_bearer_token_is_measured_by_the_date_header(app: TestApp) {
    skewed_tenant(&app, "acme", 45, "bearer").await;
    assert_eq!(app.get_token("acme").await.status(), StatusCode::OK);
    assert_near(
        offset_in(&app.metrics().await, &issuer_host(&app)),
        45.0,
        "/metrics",
    );
}

crate::on_both_backends!(
    an_edx_clock_45s_ahead_shows_in_metrics_the_budget_and_a_warning,
    an_edx_clock_400s_ahead_is_an_upstream_error,
);

// The measurement alone: the store plays no part.
crate::on_sqlite_only!(
    an_edx_clock_10s_ahead_is_fine_and_not_warned_about,
    an_edx_clock_behind_by_a_minute_is_warned_about,
    a_bearer_token_is_measured_by_the_date_header,
);
