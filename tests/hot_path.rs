//! The hot path (`routes::hot`) answers a plain hit exactly as the router does — status,
//! headers in order, bytes, the span and its log line, the metrics — and passes every other
//! request to the router untouched. Each request is sent to both, the hot path first, on a
//! manual clock that does not move between the two; its log is captured at debug level
//! (the hot route's span and line are at debug).

#[path = "hot_path/setup.rs"]
mod setup;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt as _, Either};
use hyper::body::Body as _;
use tokenvend::config::ServingSettings;
use tokenvend::startup::serve;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tower::ServiceExt as _;

use setup::{service_with_a_held_token, Service};

/// The log, as written.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<u8>>>);

impl Write for Log {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log").extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Log {
    /// The lines about request `id` written since the last call, their latencies blanked.
    fn take(&self, id: &str) -> Vec<String> {
        let mut written = self.0.lock().expect("log");
        let text = String::from_utf8_lossy(&written).into_owned();
        let (ours, others): (Vec<_>, Vec<_>) = text
            .lines()
            .partition(|line| line.contains(&format!("request_id=\"{id}\"")));
        *written = others
            .iter()
            .flat_map(|line| format!("{line}\n").into_bytes())
            .collect();
        ours.into_iter()
            .map(|line| match line.find("latency_ms=") {
                Some(at) => {
                    let rest = &line[at + "latency_ms=".len()..];
                    let end = rest.find(' ').unwrap_or(rest.len());
                    format!("{}latency_ms=…{}", &line[..at], &rest[end..])
                }
                None => line.to_owned(),
            })
            .collect()
    }
}

/// What a client sees of an answer.
#[derive(Debug, PartialEq)]
struct Seen {
    status: StatusCode,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

/// The hit counter and the count of the token-lookup histogram.
fn counts(service: &Service) -> (String, String) {
    let text = service.state.vendor.status_view().render_metrics();
    let line = |prefix: &str| {
        text.lines()
            .find(|line| line.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix} in\n{text}"))
            .to_owned()
    };
    (
        line("tokenvend_token_requests_total{result=\"hit\"}"),
        line("tokenvend_token_request_duration_seconds_count"),
    )
}

fn seen(status: StatusCode, headers: &HeaderMap, body: Vec<u8>) -> Seen {
    let headers = headers
        .iter()
        .map(|(name, value)| {
            let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
            (name.to_string(), value)
        })
        .collect();
    Seen {
        status,
        headers,
        body,
    }
}

/// `request` through the hot path: what it answered, and whether it was the hot path
/// itself (not the router behind it).
async fn through_hot_path(service: &Service, request: Request<Body>) -> (Seen, bool) {
    let response = service.hot.clone().oneshot(request).await.expect("answer");
    let (parts, body) = response.into_parts();
    let served_here = matches!(body, Either::Left(_));
    let size = body.size_hint().exact();
    let body = body.collect().await.expect("body").to_bytes().to_vec();
    if served_here {
        assert_eq!(size, Some(body.len() as u64), "an exact size");
    }
    (seen(parts.status, &parts.headers, body), served_here)
}

async fn through_router(service: &Service, request: Request<Body>) -> Seen {
    let response = service
        .router
        .clone()
        .oneshot(request)
        .await
        .expect("answer");
    let (parts, body) = response.into_parts();
    let body = body.collect().await.expect("body").to_bytes().to_vec();
    seen(parts.status, &parts.headers, body)
}

fn get(uri: &str, key: Option<&str>) -> axum::http::request::Builder {
    let builder = Request::builder()
        .uri(uri)
        .header("x-request-id", "the-same-request-id");
    match key {
        Some(key) => builder.header(header::AUTHORIZATION, format!("Bearer {key}")),
        None => builder,
    }
}

/// The log of this test binary: the service's request spans and lines (debug level),
/// of every test (a subscriber for the process: the call sites' interest is global); each
/// test reads the lines of its own request ids.
fn log() -> &'static Log {
    static LOG: std::sync::OnceLock<Log> = std::sync::OnceLock::new();
    LOG.get_or_init(|| {
        let log = Log::default();
        let writer = log.clone();
        tracing_subscriber::fmt()
            .with_env_filter("tokenvend::telemetry=debug")
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .without_time()
            .init();
        log
    })
}

#[tokio::test]
async fn a_plain_hit_is_answered_by_the_hot_path_exactly_as_by_the_router() {
    let log = log();
    let dir = tempfile::tempdir().expect("dir");
    let service = service_with_a_held_token(dir.path()).await;
    let id = "log-compared";
    let request = || {
        Request::builder()
            .uri("/tenants/acme/token")
            .header(header::AUTHORIZATION, format!("Bearer {}", service.key))
            .header("x-request-id", id)
            .body(Body::empty())
            .expect("request")
    };

    let before = counts(&service);
    let (hot, served_here) = through_hot_path(&service, request()).await;
    let hot_log = log.take(id);
    let after_hot = counts(&service);
    let routed = through_router(&service, request()).await;
    let router_log = log.take(id);
    let after_router = counts(&service);

    assert!(served_here, "a plain hit is the hot path's");
    assert_eq!(hot.status, StatusCode::OK);
    assert_eq!(hot, routed, "status, headers in order, and bytes");
    let names: Vec<_> = hot.headers.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(
        names,
        [
            "content-type",
            "cache-control",
            "pragma",
            "x-request-id",
            "content-length"
        ]
    );
    assert!(
        hot_log.iter().any(|line| line.contains("request finished")
            && line.contains("tenant=\"acme\"")
            && line.contains("caller=")),
        "{hot_log:#?}"
    );
    assert_eq!(hot_log, router_log, "the same span and log line");
    assert_ne!(before, after_hot, "the hot path counts the hit");
    let counted = |(hit, timed): &(String, String)| {
        let value = |line: &str| -> f64 {
            line.rsplit(' ')
                .next()
                .and_then(|v| v.parse().ok())
                .expect("a number")
        };
        (value(hit), value(timed))
    };
    let (before, after_hot, after_router) = (
        counted(&before),
        counted(&after_hot),
        counted(&after_router),
    );
    assert_eq!((after_hot.0 - before.0, after_hot.1 - before.1), (1.0, 1.0));
    assert_eq!(
        (after_router.0 - after_hot.0, after_router.1 - after_hot.1),
        (1.0, 1.0),
        "the same metrics as the router's hit"
    );
}

fn hit_with_id(key: &str) -> Request<Body> {
    get("/tenants/acme/token", Some(key))
        .body(Body::empty())
        .expect("request")
}

#[tokio::test]
async fn without_a_request_id_each_path_makes_a_new_uuid() {
    let dir = tempfile::tempdir().expect("dir");
    let service = service_with_a_held_token(dir.path()).await;
    let (hot, served_here) = through_hot_path(&service, setup::hit(&service.key)).await;
    let routed = through_router(&service, setup::hit(&service.key)).await;
    assert!(served_here);
    let id = |seen: &Seen| {
        let (_, id) = seen
            .headers
            .iter()
            .find(|(name, _)| name == "x-request-id")
            .cloned()
            .expect("an id");
        let parsed = uuid::Uuid::parse_str(&id).expect("a uuid");
        assert_eq!(parsed.hyphenated().to_string(), id);
        assert_eq!(parsed.get_version_num(), 4);
        id
    };
    assert_ne!(id(&hot), id(&routed));
    let without_id = |seen: &Seen| {
        let headers: Vec<_> = seen
            .headers
            .iter()
            .filter(|(name, _)| name != "x-request-id")
            .cloned()
            .collect();
        (seen.status, headers, seen.body.clone())
    };
    assert_eq!(without_id(&hot), without_id(&routed));
}

#[tokio::test]
async fn every_other_request_gets_the_routers_answer() {
    let dir = tempfile::tempdir().expect("dir");
    let service = service_with_a_held_token(dir.path()).await;
    let key = service.key.as_str();
    let plain = |uri: &str, key: Option<&str>| get(uri, key).body(Body::empty()).expect("request");
    // The limited key's one request of this second, served by the hot path.
    let (first, served_here) = through_hot_path(&service, hit_with_id(&service.limited)).await;
    assert!(served_here && first.status == StatusCode::OK, "{first:?}");

    let cases: Vec<(&str, Request<Body>, StatusCode)> = vec![
        (
            "no credentials",
            plain("/tenants/acme/token", None),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "an unknown key",
            plain("/tenants/acme/token", Some("tv_nosuchkeyid_0123456789")),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "a JWT no provider issued",
            plain(
                "/tenants/acme/token",
                Some("eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln"),
            ),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "a key without token scope",
            plain("/tenants/acme/token", Some(&service.reader)),
            StatusCode::FORBIDDEN,
        ),
        (
            "a key for another tenant",
            plain("/tenants/acme/token", Some(&service.other)),
            StatusCode::NOT_FOUND,
        ),
        (
            "a key over its rate",
            plain("/tenants/acme/token", Some(&service.limited)),
            StatusCode::TOO_MANY_REQUESTS,
        ),
        (
            "an unknown tenant",
            plain("/tenants/nosuch/token", Some(key)),
            StatusCode::NOT_FOUND,
        ),
        (
            "an id that is not one",
            plain("/tenants/ACME/token", Some(key)),
            StatusCode::NOT_FOUND,
        ),
        (
            "a percent-encoded id",
            plain("/tenants/%61cme/token", Some(key)),
            StatusCode::OK,
        ),
        (
            "a min_ttl",
            plain("/tenants/acme/token?min_ttl=60", Some(key)),
            StatusCode::OK,
        ),
        (
            "an empty query",
            plain("/tenants/acme/token?", Some(key)),
            StatusCode::OK,
        ),
        (
            "a bad query",
            plain("/tenants/acme/token?min_ttl=x", Some(key)),
            StatusCode::BAD_REQUEST,
        ),
        (
            "HEAD",
            get("/tenants/acme/token", Some(key))
                .method(Method::HEAD)
                .body(Body::empty())
                .expect("request"),
            StatusCode::OK,
        ),
        (
            "POST",
            get("/tenants/acme/token", Some(key))
                .method(Method::POST)
                .body(Body::empty())
                .expect("request"),
            StatusCode::METHOD_NOT_ALLOWED,
        ),
        (
            "a body",
            get("/tenants/acme/token", Some(key))
                .body(Body::from("{}"))
                .expect("request"),
            StatusCode::OK,
        ),
        (
            "another route",
            plain("/tenants/acme/token/status", Some(key)),
            StatusCode::FORBIDDEN,
        ),
    ];
    for (case, request, status) in cases {
        let (parts, body) = request.into_parts();
        let body = body.collect().await.expect("body").to_bytes();
        let copy = |body: axum::body::Bytes| {
            let mut request = Request::new(Body::from(body));
            *request.method_mut() = parts.method.clone();
            *request.uri_mut() = parts.uri.clone();
            *request.headers_mut() = parts.headers.clone();
            request
        };
        let (hot, served_here) = through_hot_path(&service, copy(body.clone())).await;
        let routed = through_router(&service, copy(body)).await;
        assert!(!served_here, "{case}: passed to the router");
        assert_eq!(hot.status, status, "{case}: {hot:?}");
        assert_eq!(hot, routed, "{case}: the router's answer");
    }
}

#[tokio::test]
async fn a_token_to_refresh_or_past_serving_is_left_to_the_router() {
    let dir = tempfile::tempdir().expect("dir");
    let service = service_with_a_held_token(dir.path()).await;
    let (_, served_here) = through_hot_path(&service, hit_with_id(&service.key)).await;
    assert!(served_here, "held and fresh");
    // The issuer's tokens live an hour; refresh-ahead starts well before the end.
    service.clock.advance(Duration::from_secs(3500));
    let (hot, served_here) = through_hot_path(&service, hit_with_id(&service.key)).await;
    assert!(
        !served_here,
        "in its refresh window (or margin): the router's"
    );
    assert_eq!(hot.status, StatusCode::OK, "{hot:?}");
}

/// The whole answer written for `request` by a server of `service`, its `date` left out.
async fn over_the_wire<M, S, B>(service_for: M, request: &str) -> String
where
    M: FnMut(std::net::SocketAddr) -> S + Send + 'static,
    S: tower::Service<
            Request<hyper::body::Incoming>,
            Response = axum::http::Response<B>,
            Error = std::convert::Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let server = tokio::spawn(async move {
        serve::serve(listener, service_for, &ServingSettings::default(), stopped).await
    });
    let mut stream = TcpStream::connect(address).await.expect("connect");
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.expect("answer");
    let _ = stop.send(true);
    server.await.expect("server").expect("served");
    answer
        .split("\r\n")
        .filter(|line| !line.starts_with("date: "))
        .collect::<Vec<_>>()
        .join("\r\n")
}

#[tokio::test]
async fn on_the_wire_the_hot_paths_answer_is_the_routers_byte_for_byte() {
    let dir = tempfile::tempdir().expect("dir");
    let service = service_with_a_held_token(dir.path()).await;
    let request = format!(
        "GET /tenants/acme/token HTTP/1.1\r\nHost: tokenvend\r\nAuthorization: Bearer {}\r\n\
         x-request-id: the-same-request-id\r\nConnection: close\r\n\r\n",
        service.key
    );
    let hits = || service.state.vendor.status_view().render_metrics();
    let before = hits();
    let hot = over_the_wire(service.hot.clone().per_peer(), &request).await;
    assert_ne!(before, hits(), "the hot path served it");
    let routed = over_the_wire(serve::with_peer(service.router.clone()), &request).await;
    assert!(hot.starts_with("HTTP/1.1 200 OK\r\n"), "{hot}");
    assert!(hot.contains("\r\ncontent-length: "), "{hot}");
    assert_eq!(hot, routed);
}
