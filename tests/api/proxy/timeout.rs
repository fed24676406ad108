//! The proxy timeout, a body that arrives slowly or never, and TRACE.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{call, ENTERPRISE};
use crate::helpers::{assert_problem, spawn_app_with, Backend};
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
