//! How the listeners treat connections: the header timeout, the connection cap, graceful
//! shutdown, and `/metrics` without a key on `TOKENVEND_METRICS_LISTEN`. Raw TCP, since
//! an HTTP client would hide exactly what is tested. HTTP only: SQLite.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{spawn_app_with, Backend, TestApp};

const HEADER_TIMEOUT: Duration = Duration::from_secs(1);
const GET_HEALTHZ: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: tokenvend\r\n\r\n";

async fn connect(app: &TestApp) -> TcpStream {
    TcpStream::connect(app.address.trim_start_matches("http://"))
        .await
        .expect("connect")
}

/// Reads until the server closes the connection (EOF or reset); fails after `limit`.
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> Duration {
    let started = Instant::now();
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout_at((started + limit).into(), stream.read(&mut buf)).await {
            Err(_) => panic!("the server kept the connection open for {limit:?}"),
            Ok(Ok(0) | Err(_)) => return started.elapsed(),
            Ok(Ok(_)) => {}
        }
    }
}

/// Reads one response head (the status line and headers) and its short body.
async fn response(stream: &mut TcpStream, limit: Duration) -> Option<String> {
    let mut text = Vec::new();
    let mut buf = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + limit;
    while !String::from_utf8_lossy(&text).contains("\r\n\r\n") {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => text.extend_from_slice(&buf[..n]),
            _ => return None,
        }
    }
    Some(String::from_utf8_lossy(&text).into_owned())
}

async fn app_with_header_timeout() -> TestApp {
    spawn_app_with(Backend::Sqlite, |s| {
        s.serving.header_timeout = HEADER_TIMEOUT
    })
    .await
}

#[tokio::test]
async fn a_client_sending_half_a_request_line_is_disconnected_after_the_header_timeout() {
    let app = app_with_header_timeout().await;
    let mut slow = connect(&app).await;
    slow.write_all(b"GET /heal").await.unwrap();
    let took = closed_within(&mut slow, HEADER_TIMEOUT * 5).await;
    assert!(
        took >= HEADER_TIMEOUT / 2,
        "closed after {took:?}, before the timeout"
    );
}

#[tokio::test]
async fn a_client_sending_nothing_or_idling_after_a_request_is_disconnected_too() {
    let app = app_with_header_timeout().await;
    let mut silent = connect(&app).await;
    let mut idle = connect(&app).await;
    idle.write_all(GET_HEALTHZ).await.unwrap();
    let answer = response(&mut idle, Duration::from_secs(5)).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    closed_within(&mut silent, HEADER_TIMEOUT * 5).await;
    closed_within(&mut idle, HEADER_TIMEOUT * 5).await;
    // The service itself is unharmed.
    assert_eq!(
        app.client
            .get(app.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn with_two_connections_allowed_a_third_waits_until_one_closes() {
    let app = spawn_app_with(Backend::Sqlite, |s| s.serving.max_connections = 2).await;
    let mut first = connect(&app).await;
    let mut second = connect(&app).await;
    for open in [&mut first, &mut second] {
        open.write_all(GET_HEALTHZ).await.unwrap();
        let answer = response(open, Duration::from_secs(5)).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }

    let mut third = connect(&app).await;
    third.write_all(GET_HEALTHZ).await.unwrap();
    assert_eq!(
        response(&mut third, Duration::from_millis(500)).await,
        None,
        "the third connection was served while two were open"
    );

    drop(first);
    let answer = response(&mut third, Duration::from_secs(5))
        .await
        .expect("served once a connection closed");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[tokio::test]
async fn shutdown_lets_a_request_in_flight_finish_and_closes_idle_connections() {
    let mut app = spawn_app_with(Backend::Sqlite, |_| {}).await;
    let mut idle = connect(&app).await;
    idle.write_all(GET_HEALTHZ).await.unwrap();
    response(&mut idle, Duration::from_secs(5)).await.unwrap();

    // A request whose body is still on its way when shutdown starts.
    let mut busy = connect(&app).await;
    let body = br#"{"name": "late key", "scopes": ["tenants:read"]}"#;
    let head = format!(
        "POST /api-keys HTTP/1.1\r\nHost: tokenvend\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        app.admin_key,
        body.len()
    );
    busy.write_all(head.as_bytes()).await.unwrap();
    busy.write_all(&body[..10]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;

    let client = async {
        closed_within(&mut idle, Duration::from_secs(5)).await;
        busy.write_all(&body[10..]).await.unwrap();
        response(&mut busy, Duration::from_secs(5)).await
    };
    let (answer, ()) = tokio::time::timeout(Duration::from_secs(10), async {
        tokio::join!(client, app.stop())
    })
    .await
    .expect("shutdown finishes");
    let answer = answer.expect("the request in flight is answered");
    assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");
    assert!(
        TcpStream::connect(app.address.trim_start_matches("http://"))
            .await
            .is_err(),
        "the listener is closed"
    );
}

#[tokio::test]
async fn the_metrics_listener_serves_prometheus_text_without_a_key_and_nothing_else() {
    let app = spawn_app_with(Backend::Sqlite, |s| {
        s.serving.metrics_listen = Some("127.0.0.1:0".to_owned());
    })
    .await;
    let metrics = app.metrics_address.clone().expect("a metrics listener");
    assert_ne!(metrics, app.address);

    let resp = app
        .client
        .get(format!("{metrics}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let content_type = resp.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    let text = resp.text().await.unwrap();
    assert!(text.contains("tokenvend_token_requests_total"), "{text}");
    assert!(text.trim_end().ends_with("# EOF"), "{text}");

    for path in ["/healthz", "/tenants", "/api-keys", "/metrics/x", "/"] {
        let resp = app
            .client
            .get(format!("{metrics}{path}"))
            .bearer_auth(&app.admin_key)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::NOT_FOUND, "{path}");
        assert_eq!(
            resp.headers()["content-type"],
            "application/problem+json",
            "{path}"
        );
    }
    let resp = app
        .client
        .post(format!("{metrics}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn the_metrics_listener_has_the_same_header_timeout() {
    let app = spawn_app_with(Backend::Sqlite, |s| {
        s.serving.metrics_listen = Some("127.0.0.1:0".to_owned());
        s.serving.header_timeout = HEADER_TIMEOUT;
    })
    .await;
    let metrics = app.metrics_address.clone().unwrap();
    let mut slow = TcpStream::connect(metrics.trim_start_matches("http://"))
        .await
        .unwrap();
    slow.write_all(b"GET /met").await.unwrap();
    closed_within(&mut slow, HEADER_TIMEOUT * 5).await;
}
