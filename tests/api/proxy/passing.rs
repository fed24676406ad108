//! What passes through the proxy and what stays behind: the tenant's token in, the
//! caller's key and cookies out; bodies, queries and redirects intact; paths that could
//! leave the API base refused.

use edx_issuer::{large_body_byte, REDIRECT_TARGET};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{call, fingerprint_of, held_token, ENTERPRISE};
use crate::helpers::{assert_problem, json_body, TestApp};

async fn the_api_sees_the_tenants_token_and_never_the_callers_key_or_cookies(app: TestApp) {
    app.issuer_tenant("acme").await;
    let key = app.create_key(&["proxy:acme"]).await;
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let resp = app
        .client
        .get(app.url(&format!("{ENTERPRISE}?page=2")))
        .bearer_auth(&key)
        .header("cookie", "sessionid=the-callers-session")
        .header("x-tokenvend-debug", "1")
        .header("x-custom", "dropped")
        .header("x-forwarded-for", "203.0.113.9")
        .header("forwarded", "for=203.0.113.9")
        .header("x-http-method-override", "DELETE")
        .header("x-request-id", "req-from-the-caller")
        .header("traceparent", format!("00-{trace}-00f067aa0ba902b7-01"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let fingerprint = fingerprint_of(&resp);
    let echo: Value = resp.json().await.unwrap();
    let token = held_token(&app, "acme").await;
    assert_eq!(
        fingerprint, token["fingerprint"],
        "the answer names the token used"
    );
    let headers = &echo["headers"];
    assert_eq!(
        headers["authorization"],
        json!([format!("JWT {}", token["access_token"].as_str().unwrap())])
    );
    assert_eq!(echo["method"], "GET");
    assert_eq!(echo["path"], "/api/enterprise/v1/enterprise-customer/");
    assert_eq!(echo["query"], "page=2");
    assert_eq!(headers["x-request-id"], json!(["req-from-the-caller"]));
    let sent_trace = headers["traceparent"][0].as_str().unwrap();
    assert!(
        sent_trace.starts_with(&format!("00-{trace}-")),
        "{sent_trace}"
    );
    for absent in [
        "cookie",
        "x-tokenvend-debug",
        "x-forwarded-for",
        "forwarded",
        "x-http-method-override",
        "x-custom",
    ] {
        assert!(headers.get(absent).is_none(), "{absent} reached the API");
    }
    assert!(
        !echo.to_string().contains(&key),
        "the caller's key never reaches the API"
    );
}

async fn bodies_pass_intact_both_ways(app: TestApp) {
    app.issuer_tenant("acme").await;
    let key = app.create_key(&["proxy:*"]).await;
    let body: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 256) as u8).collect();
    let resp = app
        .client
        .post(app.url("/tenants/acme/proxy/api/enterprise/v1/uploads"))
        .bearer_auth(&key)
        .header("content-type", "application/octet-stream")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    let echo = json_body(resp, StatusCode::OK).await;
    assert_eq!(echo["method"], "POST");
    assert_eq!(echo["body_length"], 200_000);
    assert_eq!(echo["body_sha256"], hex::encode(Sha256::digest(&body)));
    assert_eq!(
        echo["headers"]["content-type"],
        json!(["application/octet-stream"])
    );

    let size: u64 = 2_000_000;
    let resp = call(
        &app,
        Method::GET,
        &format!("/tenants/acme/proxy/api/test/large?bytes={size}"),
        &key,
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let got = resp.bytes().await.unwrap();
    let expected: Vec<u8> = (0..size).map(large_body_byte).collect();
    assert_eq!(got.len(), expected.len());
    assert!(got == expected, "the 2 MB answer arrives intact");
}

async fn query_strings_and_course_ids_pass_unchanged(app: TestApp) {
    app.issuer_tenant("acme").await;
    let key = app.create_key(&["token:acme"]).await;
    let course = "course-v1:edX+DemoX+Demo_Course";
    for query in [
        "q=a+b&plus=%2B&space=%20",
        "course_id=course-v1:edX+DemoX+Demo_Course",
        "course_id=course-v1%3AedX%2BDemoX%2BDemo_Course&x=%2b",
    ] {
        let path = format!("/tenants/acme/proxy/api/courses/v1/courses/{course}?{query}");
        let echo = json_body(call(&app, Method::GET, &path, &key).await, StatusCode::OK).await;
        assert_eq!(echo["query"], query);
        assert_eq!(echo["path"], format!("/api/courses/v1/courses/{course}"));
    }
}

async fn redirects_come_back_unfollowed_and_cookies_stay_behind(app: TestApp) {
    app.issuer_tenant("acme").await;
    let key = app.create_key(&["proxy:acme"]).await;
    let calls = app.issuer.api_calls();
    let resp = call(
        &app,
        Method::GET,
        "/tenants/acme/proxy/api/test/redirect",
        &key,
    )
    .await;
    assert_eq!(resp.status(), StatusCode::FOUND);
    assert_eq!(resp.headers()["location"], REDIRECT_TARGET);
    assert_eq!(app.issuer.api_calls(), calls + 1, "not followed");

    let resp = call(
        &app,
        Method::GET,
        "/tenants/acme/proxy/api/test/cookie",
        &key,
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(
        resp.headers().get("set-cookie").is_none(),
        "Set-Cookie is stripped"
    );
    assert!(resp.headers().contains_key("x-tokenvend-token-fingerprint"));
}

/// Sends `path` exactly as written (reqwest would normalise dot segments).
async fn raw_get(app: &TestApp, path: &str, key: &str) -> u16 {
    let addr = app.address.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {key}\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    let text = String::from_utf8_lossy(&answer);
    text.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

async fn paths_that_could_leave_the_api_base_are_refused_with_nothing_sent(app: TestApp) {
    let client = app.issuer_tenant("acme").await;
    let key = app.create_key(&["proxy:acme"]).await;
    for path in [
        "/tenants/acme/proxy/../../oauth2/access_token",
        "/tenants/acme/proxy/api/../x",
        "/tenants/acme/proxy/api/./x",
        "/tenants/acme/proxy/api/%2e%2e/x",
        "/tenants/acme/proxy/api/.%2E/x",
        "/tenants/acme/proxy/api%2Fx",
        "/tenants/acme/proxy/api%2fx",
        "/tenants/acme/proxy/api%5Cx",
        "/tenants/acme/proxy/api%5cx",
        "/tenants/acme/proxy/api\\x",
        "/tenants/acme/proxy//evil.example.invalid/x",
    ] {
        assert_eq!(raw_get(&app, path, &key).await, 400, "{path}");
    }
    assert_eq!(app.issuer.api_calls(), 0, "nothing reached the API");
    assert_eq!(
        app.issuer.calls(&client),
        0,
        "not even a token was asked for"
    );
}

async fn opaque_tokens_go_as_bearer_tokens(app: TestApp) {
    app.issuer_tenant_with("acme", |body| body["token_type"] = json!("bearer"))
        .await;
    let key = app.create_key(&["proxy:acme"]).await;
    let echo = json_body(
        call(&app, Method::GET, ENTERPRISE, &key).await,
        StatusCode::OK,
    )
    .await;
    let token = held_token(&app, "acme").await;
    assert_eq!(token["token_type"], "Bearer");
    assert_eq!(
        echo["headers"]["authorization"],
        json!([format!(
            "Bearer {}",
            token["access_token"].as_str().unwrap()
        )])
    );
}

async fn a_body_over_10_mib_is_refused(app: TestApp) {
    app.issuer_tenant("acme").await;
    let key = app.create_key(&["proxy:acme"]).await;
    let resp = app
        .client
        .post(app.url("/tenants/acme/proxy/api/enterprise/v1/uploads"))
        .bearer_auth(&key)
        .body(vec![b'x'; 10 * 1024 * 1024 + 1])
        .send()
        .await
        .unwrap();
    assert_problem(resp, StatusCode::PAYLOAD_TOO_LARGE).await;
    assert_eq!(app.issuer.api_calls(), 0);
}

// HTTP behaviour alone: the backend cannot change these.
crate::on_sqlite_only!(
    the_api_sees_the_tenants_token_and_never_the_callers_key_or_cookies,
    bodies_pass_intact_both_ways,
    query_strings_and_course_ids_pass_unchanged,
    redirects_come_back_unfollowed_and_cookies_stay_behind,
    paths_that_could_leave_the_api_base_are_refused_with_nothing_sent,
    opaque_tokens_go_as_bearer_tokens,
    a_body_over_10_mib_is_refused,
);
