//! Upstream failures: each maps to its status and problem type within its call budget,
//! and none can cause a retry storm.

use edx_issuer::Failure;
use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{assert_problem, TestApp};

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

crate::on_both_backends!(
    each_upstream_failure_maps_to_its_status_within_its_call_budget,
    rejected_credentials_and_a_failing_edx_cannot_cause_a_retry_storm,
);
