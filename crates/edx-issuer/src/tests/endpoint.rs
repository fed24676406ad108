//! The token endpoint: answer formats, imitated failures, validation, counting, latency
//! and shutdown.

use std::time::{Duration, Instant};

use axum::http::{header, StatusCode};
use serde_json::{json, Value};

use super::{client, creds, post, post_json, setup, ID, SECRET};
use crate::{ExpiresInFormat, Failure};

#[tokio::test]
async fn expires_in_formats() {
    let (issuer, running, _) = setup().await;
    for (format, expected) in [
        (ExpiresInFormat::Integer, Some(json!(3600))),
        (ExpiresInFormat::String, Some(json!("3600"))),
        (ExpiresInFormat::Float, Some(json!(3600.0))),
        (ExpiresInFormat::Missing, None),
    ] {
        issuer.configure(ID, |b| b.expires_in = format);
        let (status, _, raw) = post(&running.token_url(), &creds(&[])).await;
        assert_eq!(status, StatusCode::OK);
        let body: Value = serde_json::from_str(&raw).expect("JSON");
        assert_eq!(body.get("expires_in"), expected.as_ref(), "{format:?}");
        if format == ExpiresInFormat::Float {
            assert!(raw.contains("3600.0"), "{raw}");
        }
    }
}

#[tokio::test]
async fn opaque_bearer_tokens() {
    let (_issuer, running, _) = setup().await;
    let mut seen = Vec::new();
    for extra in [
        vec![],
        vec![("token_type", "bearer")],
        vec![("token_type", "mac")],
    ] {
        let (status, headers, raw) = post(&running.token_url(), &creds(&extra)).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers[header::CACHE_CONTROL], "no-store");
        let body: Value = serde_json::from_str(&raw).expect("JSON");
        assert_eq!(body["token_type"], "Bearer");
        assert_eq!(body["expires_in"], 3600);
        assert_eq!(body["scope"], "read write profile email");
        let token = body["access_token"].as_str().expect("token").to_owned();
        assert_eq!(token.len(), 40);
        assert!(token.chars().all(|c| c.is_ascii_alphanumeric()));
        assert!(!seen.contains(&token));
        seen.push(token);
    }
}

#[tokio::test]
async fn failure_variants() {
    let (issuer, running, _) = setup().await;
    let cases: Vec<(Failure, StatusCode)> = vec![
        (Failure::ServerError, StatusCode::INTERNAL_SERVER_ERROR),
        (Failure::Unavailable, StatusCode::SERVICE_UNAVAILABLE),
        (
            Failure::RateLimited {
                retry_after_secs: 7,
            },
            StatusCode::TOO_MANY_REQUESTS,
        ),
        (Failure::ForbiddenHtml, StatusCode::FORBIDDEN),
        (Failure::InvalidClient, StatusCode::UNAUTHORIZED),
        (Failure::InvalidScope, StatusCode::BAD_REQUEST),
        (Failure::Garbage, StatusCode::OK),
        (Failure::ErrorIn200, StatusCode::OK),
    ];
    for (n, (failure, expected_status)) in cases.into_iter().enumerate() {
        issuer.configure(ID, |b| b.failure = Some(failure.clone()));
        let (status, headers, raw) =
            post(&running.token_url(), &creds(&[("token_type", "jwt")])).await;
        assert_eq!(status, expected_status, "{failure:?}");
        assert_eq!(issuer.calls(ID), n as u64 + 1, "{failure:?} is counted");
        let content_type = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let json = serde_json::from_str::<Value>(&raw).ok();
        match &failure {
            Failure::ServerError | Failure::Unavailable | Failure::ForbiddenHtml => {
                assert!(content_type.starts_with("text/html"), "{failure:?}");
                assert!(json.is_none() && raw.contains("<h1>"), "{failure:?}: {raw}");
            }
            Failure::RateLimited { .. } => {
                assert_eq!(headers[header::RETRY_AFTER], "7");
                assert_eq!(json.expect("JSON")["error"], "rate_limited");
            }
            Failure::InvalidClient => {
                assert_eq!(json.expect("JSON")["error"], "invalid_client");
            }
            Failure::InvalidScope => {
                assert_eq!(json.expect("JSON")["error"], "invalid_scope");
            }
            Failure::Garbage => assert!(json.is_none() && !raw.is_empty()),
            Failure::ErrorIn200 => {
                let json = json.expect("JSON");
                assert_eq!(json["error"], "server_error");
                assert!(json["error_description"].is_string());
                assert!(json.get("access_token").is_none());
            }
            Failure::Hang => unreachable!(),
        }
    }
    // Failures apply before the secret is checked.
    issuer.configure(ID, |b| b.failure = Some(Failure::Unavailable));
    let form = [
        ("grant_type", "client_credentials"),
        ("client_id", ID),
        ("client_secret", "wrong"),
    ];
    assert_eq!(
        post(&running.token_url(), &form).await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
}

#[tokio::test]
async fn hang_never_answers() {
    let (issuer, running, _) = setup().await;
    issuer.configure(ID, |b| b.failure = Some(Failure::Hang));
    let started = Instant::now();
    let result = client()
        .post(running.token_url())
        .form(&creds(&[]))
        .timeout(Duration::from_millis(200))
        .send()
        .await;
    let error = result.expect_err("no answer");
    assert!(error.is_timeout(), "{error}");
    assert!(started.elapsed() >= Duration::from_millis(200));
    assert_eq!(issuer.calls(ID), 1);
}

#[tokio::test]
async fn rejects_bad_credentials_and_counts_them() {
    let (issuer, running, _) = setup().await;
    let wrong = [
        ("grant_type", "client_credentials"),
        ("client_id", ID),
        ("client_secret", "nope"),
    ];
    let (status, body) = post_json(&running.token_url(), &wrong).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"], "invalid_client");
    assert_eq!(issuer.calls(ID), 1);

    let unknown = [
        ("grant_type", "client_credentials"),
        ("client_id", "stranger"),
        ("client_secret", "x"),
    ];
    let (status, body) = post_json(&running.token_url(), &unknown).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"], "invalid_client");
    assert_eq!(issuer.calls("stranger"), 1);

    // configure() on an unknown client registers it with a secret nothing can match.
    issuer.configure("configured-only", |b| b.lifetime = Duration::from_secs(5));
    let empty = [
        ("grant_type", "client_credentials"),
        ("client_id", "configured-only"),
        ("client_secret", ""),
    ];
    let (status, body) = post_json(&running.token_url(), &empty).await;
    assert_eq!(
        (status, &body["error"]),
        (StatusCode::BAD_REQUEST, &json!("invalid_request"))
    );
    issuer.register("configured-only", "now-set");
    let ok = [
        ("grant_type", "client_credentials"),
        ("client_id", "configured-only"),
        ("client_secret", "now-set"),
    ];
    let (status, body) = post_json(&running.token_url(), &ok).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["expires_in"], 5, "register() kept the behaviour");
    assert_eq!(issuer.total_calls(), 4);
}

#[tokio::test]
async fn rejects_malformed_requests() {
    let (issuer, running, _) = setup().await;
    let url = running.token_url();

    let form = [
        ("grant_type", "password"),
        ("client_id", ID),
        ("client_secret", SECRET),
    ];
    let (status, body) = post_json(&url, &form).await;
    assert_eq!(
        (status, &body["error"]),
        (StatusCode::BAD_REQUEST, &json!("unsupported_grant_type"))
    );

    let (status, body) = post_json(&url, &[("client_id", ID), ("client_secret", SECRET)]).await;
    assert_eq!(
        (status, &body["error"]),
        (StatusCode::BAD_REQUEST, &json!("unsupported_grant_type"))
    );

    let form = [("grant_type", "client_credentials"), ("client_id", ID)];
    let (status, body) = post_json(&url, &form).await;
    assert_eq!(
        (status, &body["error"]),
        (StatusCode::BAD_REQUEST, &json!("invalid_request"))
    );

    let form = [
        ("grant_type", "client_credentials"),
        ("client_secret", SECRET),
    ];
    let (status, body) = post_json(&url, &form).await;
    assert_eq!(
        (status, &body["error"]),
        (StatusCode::BAD_REQUEST, &json!("invalid_request"))
    );

    let form = creds(&[("client_id", "other")]);
    let (status, body) = post_json(&url, &form).await;
    assert_eq!(
        (status, &body["error"]),
        (StatusCode::BAD_REQUEST, &json!("invalid_request"))
    );

    // Not form-encoded: a JSON body, and bytes that are not a form at all.
    let response = client()
        .post(&url)
        .json(&json!({"grant_type": "client_credentials"}))
        .send()
        .await
        .expect("answer");
    assert_eq!(response.status().as_u16(), 400);
    let body: Value = response.json().await.expect("JSON");
    assert_eq!(body["error"], "invalid_request");
    let response = client()
        .post(&url)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(vec![0xff, 0xfe, b'=', 0x80])
        .send()
        .await
        .expect("answer");
    assert_eq!(response.status().as_u16(), 400);
    let body: Value = response.json().await.expect("JSON");
    assert_eq!(body["error"], "invalid_request");

    // Wrong method.
    let response = client().get(&url).send().await.expect("answer");
    assert_eq!(response.status().as_u16(), 405);

    assert_eq!(issuer.total_calls(), 7);
    assert_eq!(issuer.calls(ID), 4);
}

#[tokio::test]
async fn counts_calls_and_records_forms() {
    let (issuer, running, _) = setup().await;
    issuer.register("tenant-b", "other");
    assert_eq!((issuer.calls(ID), issuer.total_calls()), (0, 0));
    assert_eq!(issuer.last_form(ID), None);

    post(&running.token_url(), &creds(&[("token_type", "jwt")])).await;
    post(&running.v1_token_url(), &creds(&[("scope", "read")])).await;
    let b = [
        ("grant_type", "client_credentials"),
        ("client_id", "tenant-b"),
        ("client_secret", "other"),
    ];
    post(&running.token_url(), &b).await;

    assert_eq!(issuer.calls(ID), 2);
    assert_eq!(issuer.calls("tenant-b"), 1);
    assert_eq!(issuer.calls("nobody"), 0);
    assert_eq!(issuer.total_calls(), 3);
    let expected: Vec<(String, String)> = creds(&[("scope", "read")])
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    assert_eq!(issuer.last_form(ID), Some(expected));
    assert_eq!(issuer.last_form("nobody"), None);
}

#[tokio::test]
async fn latency_is_honoured() {
    let (issuer, running, _) = setup().await;
    issuer.configure(ID, |b| b.latency = Duration::from_millis(100));
    let started = Instant::now();
    let (status, _, _) = post(&running.token_url(), &creds(&[])).await;
    assert_eq!(status, StatusCode::OK);
    assert!(started.elapsed() >= Duration::from_millis(100));

    issuer.configure(ID, |b| b.failure = Some(Failure::ServerError));
    let started = Instant::now();
    let (status, _, _) = post(&running.token_url(), &creds(&[])).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(
        started.elapsed() >= Duration::from_millis(100),
        "failures wait too"
    );
}

#[tokio::test]
async fn router_serves_without_start_and_drop_stops_the_server() {
    let (issuer, running, _) = setup().await;
    let url = running.token_url();
    drop(running);
    tokio::task::yield_now().await;
    assert!(client().post(&url).form(&creds(&[])).send().await.is_err());

    // The bare router answers too (for callers that mount it themselves).
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let router = issuer.router();
    let server = tokio::spawn(async move { axum::serve(listener, router).await });
    let (status, _, _) = post(&format!("http://{addr}/oauth2/access_token"), &creds(&[])).await;
    assert_eq!(status, StatusCode::OK);
    server.abort();
}
