//! The proxy, `{any method} /tenants/{id}/proxy/{path}`, against the local issuer's
//! edX-like API (which accepts only the tokens it issued).

use std::time::Duration;

use edx_issuer::{large_body_byte, REDIRECT_TARGET};
use reqwest::{Method, Response, StatusCode};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::{assert_problem, json_body, spawn_app_with, Backend, TestApp};
use crate::{on_both_backends, on_sqlite_only};

/// The test settings' minimum refresh interval (5 s), and a little more.
const PAST_THE_INTERVAL: u64 = 6;

const ENTERPRISE: &str = "/tenants/acme/proxy/api/enterprise/v1/enterprise-customer/";

async fn call(app: &TestApp, method: Method, path: &str, key: &str) -> Response {
    app.client
        .request(method, app.url(path))
        .bearer_auth(key)
        .send()
        .await
        .expect("proxied call")
}

fn fingerprint_of(resp: &Response) -> String {
    resp.headers()["x-tokenvend-token-fingerprint"]
        .to_str()
        .unwrap()
        .to_owned()
}

async fn held_token(app: &TestApp, id: &str) -> Value {
    json_body(app.get_token(id).await, StatusCode::OK).await
}

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

async fn proxy_scopes_never_read_the_token_and_other_tenants_are_hidden(app: TestApp) {
    app.issuer_tenant("acme").await;
    app.issuer_tenant("other").await;
    let proxy_key = app.create_key(&["proxy:acme"]).await;
    let resp = app
        .request(Method::GET, "/tenants/acme/token", Some(&proxy_key), None)
        .await;
    assert_problem(resp, StatusCode::FORBIDDEN).await;
    let resp = call(&app, Method::GET, ENTERPRISE, &proxy_key).await;
    assert_eq!(resp.status(), StatusCode::OK);

    for (scopes, status) in [
        (vec!["proxy:other"], StatusCode::NOT_FOUND),
        (vec!["token:other"], StatusCode::NOT_FOUND),
        (vec!["tenants:read", "tenants:write"], StatusCode::FORBIDDEN),
    ] {
        let key = app.create_key(&scopes).await;
        let resp = call(&app, Method::GET, ENTERPRISE, &key).await;
        assert_eq!(resp.status(), status, "{scopes:?}");
        assert_problem(resp, status).await;
    }
    let resp = call(&app, Method::GET, "/tenants/ghost/proxy/api/x", &proxy_key).await;
    assert_problem(resp, StatusCode::NOT_FOUND).await;

    let resp = app
        .admin(
            Method::POST,
            "/api-keys",
            Some(&json!({ "name": "k", "scopes": ["proxy:ghost"] })),
        )
        .await;
    assert_problem(resp, StatusCode::UNPROCESSABLE_ENTITY).await;
    let listed = json_body(
        app.admin(Method::GET, "/api-keys", None).await,
        StatusCode::OK,
    )
    .await;
    assert!(listed.to_string().contains("\"proxy:acme\""), "{listed}");

    // The scope is bound to the tenant, not its id: a successor under the id is another.
    let resp = app.admin(Method::DELETE, "/tenants/acme", None).await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    app.issuer_tenant("acme").await;
    let resp = call(&app, Method::GET, ENTERPRISE, &proxy_key).await;
    assert_problem(resp, StatusCode::NOT_FOUND).await;
}

async fn an_unreachable_api_is_502(app: TestApp) {
    // A loopback port with nothing listening.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    app.issuer_tenant_with("acme", |body| {
        body["api_base_url"] = json!(format!("http://127.0.0.1:{port}"));
    })
    .await;
    let key = app.create_key(&["proxy:acme"]).await;
    let resp = call(&app, Method::GET, ENTERPRISE, &key).await;
    let problem = assert_problem(resp, StatusCode::BAD_GATEWAY).await;
    assert_eq!(problem["type"], "urn:tokenvend:problem:api-unreachable");
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

async fn the_api_base_defaults_to_the_token_urls_origin_and_moves_only_with_the_secret(
    app: TestApp,
) {
    app.issuer_tenant("acme").await;
    let tenant = json_body(
        app.admin(Method::GET, "/tenants/acme", None).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(tenant["api_base_url"], app.issuer_server.api_base_url());
    let resp = app
        .admin(
            Method::PATCH,
            "/tenants/acme",
            Some(&json!({ "api_base_url": "http://127.0.0.1:9/elsewhere" })),
        )
        .await;
    let problem = assert_problem(resp, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(problem["field"], "client_secret");
    for bad in [
        "ftp://api.example.com",
        "http://api.example.com/?q=1",
        "not a url",
    ] {
        let mut body = crate::helpers::tenant_body("bad");
        body["api_base_url"] = json!(bad);
        let problem = assert_problem(
            app.create_tenant(&body).await,
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
        assert_eq!(problem["field"], "api_base_url", "{bad}");
    }
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

async fn a_moved_api_base_is_where_calls_go(app: TestApp) {
    app.issuer_tenant("acme").await;
    let key = app.create_key(&["proxy:acme"]).await;
    let moved = format!("{}/api/enterprise", app.issuer_server.api_base_url());
    let secret = format!("moved-{}", uuid::Uuid::new_v4().simple());
    app.issuer.register("client-acme", &secret);
    let resp = app
        .admin(
            Method::PATCH,
            "/tenants/acme",
            Some(&json!({ "api_base_url": moved, "client_secret": secret })),
        )
        .await;
    let tenant = json_body(resp, StatusCode::OK).await;
    assert_eq!(tenant["api_base_url"], moved);
    let audit = json_body(
        app.admin(Method::GET, "/audit-events", None).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(
        audit["items"][0]["details"]["api_base_url"]["to"], moved,
        "the move is on the record: {audit}"
    );
    let echo = json_body(
        call(
            &app,
            Method::GET,
            "/tenants/acme/proxy/v1/enterprise-customer/",
            &key,
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(echo["path"], "/api/enterprise/v1/enterprise-customer/");
}

async fn an_api_base_stored_under_the_insecure_flag_is_not_called_after_a_restart_without_it(
    mut app: TestApp,
) {
    let client = app.issuer_tenant("acme").await;
    let key = app.create_key(&["proxy:acme"]).await;
    app.settings.allow_insecure_token_urls = false;
    app.restart().await;
    let resp = call(&app, Method::GET, ENTERPRISE, &key).await;
    let problem = assert_problem(resp, StatusCode::BAD_GATEWAY).await;
    assert_eq!(problem["type"], "urn:tokenvend:problem:tenant-unusable");
    assert_eq!(app.issuer.api_calls(), 0, "nothing was sent to the API");
    assert_eq!(app.issuer.calls(&client), 0, "nor to the token endpoint");
}

on_sqlite_only!(
    an_api_base_stored_under_the_insecure_flag_is_not_called_after_a_restart_without_it,
    opaque_tokens_go_as_bearer_tokens,
    a_moved_api_base_is_where_calls_go,
    the_api_sees_the_tenants_token_and_never_the_callers_key_or_cookies,
    bodies_pass_intact_both_ways,
    query_strings_and_course_ids_pass_unchanged,
    redirects_come_back_unfollowed_and_cookies_stay_behind,
    paths_that_could_leave_the_api_base_are_refused_with_nothing_sent,
    proxy_scopes_never_read_the_token_and_other_tenants_are_hidden,
    an_unreachable_api_is_502,
    a_body_over_10_mib_is_refused,
    the_api_base_defaults_to_the_token_urls_origin_and_moves_only_with_the_secret,
);

async fn a_revoked_token_is_replaced_once_and_the_call_retried(app: TestApp) {
    let client = app.issuer_tenant("acme").await;
    let key = app.create_key(&["proxy:acme"]).await;
    let first = call(&app, Method::GET, ENTERPRISE, &key).await;
    assert_eq!(first.status(), StatusCode::OK);
    let old = fingerprint_of(&first);
    assert_eq!(app.issuer.calls(&client), 1);

    app.advance(PAST_THE_INTERVAL);
    assert_eq!(app.issuer.revoke_tokens_of(&client), 1);
    let api_calls = app.issuer.api_calls();
    let resp = app
        .client
        .post(app.url(ENTERPRISE))
        .bearer_auth(&key)
        .json(&json!({ "name": "kept for the retry" }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let new = fingerprint_of(&resp);
    assert_ne!(new, old, "answered with the new token");
    let echo: Value = resp.json().await.unwrap();
    assert!(
        echo["body_length"].as_u64().unwrap() > 0,
        "the body was sent again"
    );
    assert_eq!(app.issuer.calls(&client), 2, "one new token");
    assert_eq!(app.issuer.api_calls(), api_calls + 2, "one retry");
    assert_eq!(held_token(&app, "acme").await["fingerprint"], new.as_str());

    let metrics = app.metrics().await;
    assert!(
        metrics.contains("tokenvend_proxy_401_retries_total{tenant=\"acme\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("tokenvend_proxy_requests_total{tenant=\"acme\",class=\"2xx\"} 2"),
        "{metrics}"
    );
    assert!(metrics.contains("tokenvend_proxy_request_duration_seconds_count"));
}

async fn a_second_401_is_returned_as_it_is_with_a_bounded_number_of_token_calls(app: TestApp) {
    let client = app.issuer_tenant("acme").await;
    let key = app.create_key(&["proxy:acme"]).await;
    app.get_token("acme").await;
    app.advance(PAST_THE_INTERVAL);
    let path = "/tenants/acme/proxy/api/test/unauthorized";
    let resp = call(&app, Method::GET, path, &key).await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_ne!(
        resp.headers()["content-type"],
        "application/problem+json",
        "the API's own answer"
    );
    assert_eq!(app.issuer.calls(&client), 2, "one new token for the retry");
    let api_calls = app.issuer.api_calls();
    for _ in 0..3 {
        let resp = call(&app, Method::GET, path, &key).await;
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    }
    assert_eq!(
        app.issuer.calls(&client),
        2,
        "no new token within the minimum refresh interval"
    );
    assert_eq!(app.issuer.api_calls(), api_calls + 3, "no retries either");
}

async fn a_streamed_body_is_not_retried_but_its_token_is_dropped(app: TestApp) {
    let client = app.issuer_tenant("acme").await;
    let key = app.create_key(&["proxy:acme"]).await;
    app.get_token("acme").await;
    app.advance(PAST_THE_INTERVAL);
    app.issuer.revoke_tokens_of(&client);
    let resp = app
        .client
        .put(app.url(ENTERPRISE))
        .bearer_auth(&key)
        .body(vec![b'y'; 1024 * 1024 + 1])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "returned as it is");
    assert_eq!(app.issuer.api_calls(), 1);
    let resp = call(&app, Method::GET, ENTERPRISE, &key).await;
    assert_eq!(
        resp.status(),
        StatusCode::OK,
        "the next call has a new token"
    );
    assert_eq!(app.issuer.calls(&client), 2);
}

on_both_backends!(
    a_revoked_token_is_replaced_once_and_the_call_retried,
    a_second_401_is_returned_as_it_is_with_a_bounded_number_of_token_calls,
    a_streamed_body_is_not_retried_but_its_token_is_dropped,
);

mod timeout {
    use super::*;

    #[tokio::test]
    async fn sqlite_only_a_slow_api_is_504_after_the_proxy_timeout() {
        let app = spawn_app_with(Backend::Sqlite, |settings| {
            settings.serving.proxy_timeout = Duration::from_secs(1);
        })
        .await;
        app.issuer_tenant("acme").await;
        let key = app.create_key(&["proxy:acme"]).await;
        let started = std::time::Instant::now();
        let resp = call(
            &app,
            Method::GET,
            "/tenants/acme/proxy/api/test/slow?secs=30",
            &key,
        )
        .await;
        let problem = assert_problem(resp, StatusCode::GATEWAY_TIMEOUT).await;
        assert_eq!(problem["type"], "urn:tokenvend:problem:api-timeout");
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    /// A caller that announces a body and stops sending it holds a connection and a
    /// buffer no longer than the proxy timeout.
    #[tokio::test]
    async fn sqlite_only_a_body_that_never_arrives_is_400_after_the_proxy_timeout() {
        let app = spawn_app_with(Backend::Sqlite, |settings| {
            settings.serving.proxy_timeout = Duration::from_secs(1);
        })
        .await;
        app.issuer_tenant("acme").await;
        let key = app.create_key(&["proxy:acme"]).await;
        let address = app.address.trim_start_matches("http://").to_owned();
        let mut stream = tokio::net::TcpStream::connect(&address).await.unwrap();
        let head = format!(
            "POST {ENTERPRISE} HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {key}\r\n\
             Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{"
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        let mut answer = vec![0u8; 4096];
        let read = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut answer))
            .await
            .expect("an answer within the proxy timeout, not a connection held open")
            .unwrap();
        let answer = String::from_utf8_lossy(&answer[..read]);
        assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
        assert!(answer.contains("TOKENVEND_PROXY_TIMEOUT"), "{answer}");
        assert_eq!(app.issuer.api_calls(), 0, "nothing was sent");
    }

    /// The API base is taken again once the body is in: a call whose body was still
    /// arriving when the tenant moved goes to the new base, never the old one.
    #[tokio::test]
    async fn sqlite_only_a_move_while_the_body_arrives_sends_the_call_to_the_new_base() {
        let app = spawn_app_with(Backend::Sqlite, |_| {}).await;
        app.issuer_tenant("acme").await;
        let key = app.create_key(&["proxy:acme"]).await;
        let address = app.address.trim_start_matches("http://").to_owned();
        let mut stream = tokio::net::TcpStream::connect(&address).await.unwrap();
        let head = format!(
            "POST /tenants/acme/proxy/v1/enterprise-customer/ HTTP/1.1\r\nHost: {address}\r\n\
             Authorization: Bearer {key}\r\nContent-Type: application/json\r\n\
             Content-Length: 2\r\nConnection: close\r\n\r\n{{"
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        stream.flush().await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let moved = format!("{}/api/enterprise", app.issuer_server.api_base_url());
        let secret = format!("moved-{}", uuid::Uuid::new_v4().simple());
        app.issuer.register("client-acme", &secret);
        let resp = app
            .admin(
                Method::PATCH,
                "/tenants/acme",
                Some(&json!({ "api_base_url": moved, "client_secret": secret })),
            )
            .await;
        assert_eq!(resp.status(), StatusCode::OK);
        stream.write_all(b"}").await.unwrap();
        let mut answer = String::new();
        tokio::time::timeout(Duration::from_secs(10), stream.read_to_string(&mut answer))
            .await
            .expect("an answer")
            .unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(
            answer.contains("/api/enterprise/v1/enterprise-customer/"),
            "the call went to the new base: {answer}"
        );
    }

    /// TRACE makes a server echo the request back, the injected token included.
    #[tokio::test]
    async fn sqlite_only_trace_is_refused_before_a_token_is_used() {
        let app = spawn_app_with(Backend::Sqlite, |_| {}).await;
        let client = app.issuer_tenant("acme").await;
        let key = app.create_key(&["proxy:acme"]).await;
        let resp = call(&app, Method::TRACE, ENTERPRISE, &key).await;
        assert_problem(resp, StatusCode::METHOD_NOT_ALLOWED).await;
        assert_eq!(app.issuer.api_calls(), 0);
        assert_eq!(app.issuer.calls(&client), 0, "no token was fetched for it");
    }
}
