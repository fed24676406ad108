//! The circuit breaker of each edX token host: when edX fails every token request, the
//! tenants stop asking it one by one; one probe at a time tests it, and the first answer
//! opens the way again.

use edx_issuer::Failure;
use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::helpers::{assert_problem, json_body, TestApp};

async fn circuit(app: &TestApp) -> Value {
    let budget = json_body(
        app.admin(Method::GET, "/upstream/budget", None).await,
        StatusCode::OK,
    )
    .await;
    budget["hosts"][0]["circuit"].clone()
}

/// `n` tenants whose edX clients all answer `500`.
async fn failing_tenants(app: &TestApp, n: usize) -> Vec<(String, String)> {
    let mut tenants = Vec::new();
    for i in 0..n {
        let id = format!("outage-{i}");
        let client = app.issuer_tenant(&id).await;
        app.issuer
            .configure(&client, |b| b.failure = Some(Failure::ServerError));
        tenants.push((id, client));
    }
    tenants
}

async fn a_failing_edx_gets_five_fetches_not_one_per_tenant_then_one_probe_at_a_time(app: TestApp) {
    let tenants = failing_tenants(&app, 12).await;
    for (id, _) in &tenants {
        let resp = app.get_token(id).await;
        let problem = assert_problem(resp, StatusCode::SERVICE_UNAVAILABLE).await;
        assert_eq!(
            problem["type"],
            "urn:tokenvend:problem:upstream-unavailable"
        );
    }
    // Five tenants' fetches failed, each after three attempts: five failed fetches in a
    // row, and the other seven tenants were not sent at all (without the breaker: 36).
    assert_eq!(app.issuer.total_calls(), 15, "edX calls during the outage");
    assert_eq!(circuit(&app).await, "open");
    let metrics = app.metrics().await;
    assert!(
        metrics.contains("tokenvend_upstream_circuit_open{host=\"127.0.0.1:"),
        "{metrics}"
    );
    // A refused fetch says when to come back, and costs edX nothing.
    let (last, _) = &tenants[11];
    let resp = app.get_token(last).await;
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(resp.headers().contains_key("retry-after"));
    assert_eq!(app.issuer.total_calls(), 15);

    // After the open period one request probes; edX still fails: open twice as long.
    app.advance(2);
    let (id, _) = &tenants[5];
    let resp = app.get_token(id).await;
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(app.issuer.total_calls(), 16, "one probe, not retried");
    for (id, _) in &tenants[6..9] {
        assert_eq!(
            app.get_token(id).await.status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
    }
    assert_eq!(
        app.issuer.total_calls(),
        16,
        "nothing more while open again"
    );

    // edX answers again: the next probe closes the breaker and every tenant gets a token.
    for (_, client) in &tenants {
        app.issuer.configure(client, |b| b.failure = None);
    }
    app.advance(60);
    for (id, _) in &tenants {
        assert_eq!(app.get_token(id).await.status(), StatusCode::OK, "{id}");
    }
    assert_eq!(circuit(&app).await, "closed");
    assert_eq!(app.issuer.total_calls(), 16 + 12);
    assert!(app
        .metrics()
        .await
        .lines()
        .any(|line| line.starts_with("tokenvend_upstream_circuit_open{") && line.ends_with(" 0")));
}

async fn refused_credentials_are_answers_and_never_open_the_breaker(app: TestApp) {
    let mut clients = Vec::new();
    for i in 0..8 {
        let id = format!("refused-{i}");
        let client = app.issuer_tenant(&id).await;
        app.issuer
            .configure(&client, |b| b.failure = Some(Failure::InvalidClient));
        clients.push(id);
    }
    for id in &clients {
        assert_eq!(app.get_token(id).await.status(), StatusCode::BAD_GATEWAY);
    }
    assert_eq!(app.issuer.total_calls(), 8, "one call each, never retried");
    assert_eq!(circuit(&app).await, "closed");
    // A healthy tenant on the same host is served.
    app.issuer_tenant("healthy").await;
    assert_eq!(app.get_token("healthy").await.status(), StatusCode::OK);
}

crate::on_both_backends!(
    a_failing_edx_gets_five_fetches_not_one_per_tenant_then_one_probe_at_a_time,
    refused_credentials_are_answers_and_never_open_the_breaker,
);
