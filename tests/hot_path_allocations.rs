//! Heap allocations on the hit path: the real router (`routes::router`, the whole
//! middleware) answers `GET /tenants/{id}/token` from memory, driven in this thread with
//! `tower::ServiceExt::oneshot` (no sockets, so hyper's own work is not counted), and every
//! allocation this thread makes while it does is counted (`allocation-counter`: a counting
//! wrapper around the system allocator, installed as this test binary's global
//! allocator). The subscriber is installed as deployed (info level), so that the span
//! and the log line cost what they cost in production.

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use axum::Router;
use secrecy::SecretString;
use serde_json::{json, Value};
use tower::ServiceExt;

use tokenvend::config::{ServingSettings, Settings};
use tokenvend::crypto::MasterKey;
use tokenvend::engine::VendingSettings;
use tokenvend::outbound::webhooks::WebhookSettings;
use tokenvend::startup::Application;
use tokenvend::store::{AuditRetention, DatabaseUrl};
use tokenvend::telemetry::{self, LogFormat};

const ADMIN_KEY: &str = "hot-path-admin-key-0123456789abcdef";

/// The allocations a cache hit makes through the router (45 before issue 25). Measured
/// step by step, as the cost ladder builds the route up (`bench/ladder.rs`), with
/// `oneshot` and no sockets:
/// - 14: axum serving any route from a `Router` — the matched route's boxed service
///   clone and boxed future, its handler's boxed future, the request's extensions map
///   and the `MatchedPath` in it, the answer's body box and header map;
/// - 4: the route's path parameter (`/tenants/{id}/token`): axum's `UrlParams` in the
///   extensions (the parameter's name and decoded value, shared);
/// - 5: the middleware as one route layer (`routes::Stack`): axum boxes a layered route
///   again (a boxed clone and a boxed future per request); the layer itself, its
///   timeout and its span allocate nothing;
/// - 1 of the 3 of the request id: its 36 bytes, shared by the request's header and the
///   answer's (a new UUID per request is documented; the other 2 are the header maps'
///   growth for one more header);
/// - the hit itself: the answer's bytes (its `expires_in` changes every second, so it
///   is built per request into one buffer of its exact size) in place of the fixed
///   answers of the steps above; the key's check, the scope check, the slot lookup, the
///   token, the counters and the latency histogram allocate nothing.
///
/// With hyper, each request also pays the connection's peer address in the extensions.
const EXPECTED_PER_HIT: u64 = 24;

async fn call(router: &Router, request: Request<Body>) -> (StatusCode, Value) {
    let response = router.clone().oneshot(request).await.expect("infallible");
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .expect("body");
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

fn admin(method: Method, uri: &str, body: Value) -> Request<Body> {
    Request::builder()
        .method(method)
        .uri(uri)
        .header(header::AUTHORIZATION, format!("Bearer {ADMIN_KEY}"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .expect("request")
}

fn hit(key: &str) -> Request<Body> {
    Request::builder()
        .uri("/tenants/acme/token")
        .header(header::AUTHORIZATION, format!("Bearer {key}"))
        .body(Body::empty())
        .expect("request")
}

/// A service with one tenant whose token is held, and a caller key for it: the router,
/// the key, and the issuer (serving while it is held).
async fn service_with_a_held_token(
    dir: &std::path::Path,
) -> (Router, String, edx_issuer::RunningIssuer) {
    let issuer = edx_issuer::Issuer::new(chrono::Utc::now);
    let running = issuer.start().await.expect("issuer");
    issuer.register("acme-client", "acme-secret");
    let settings = Settings {
        listen: "127.0.0.1:0".to_owned(),
        database_url: Some(
            DatabaseUrl::parse(&format!("sqlite://{}/hot.db", dir.display())).expect("url"),
        ),
        data_dir: dir.to_owned(),
        master_key: Some(MasterKey::generate().0),
        old_master_keys: Vec::new(),
        admin_key: Some(SecretString::from(ADMIN_KEY.to_owned())),
        bootstrap_admin: true,
        serving: ServingSettings::default(),
        allow_insecure_token_urls: true,
        log_format: LogFormat::Text,
        vending: VendingSettings::default(),
        webhooks: WebhookSettings::default(),
        audit: AuditRetention::default(),
    };
    let app = Application::build(settings).await.expect("app");
    let router = tokenvend::http::routes::router(app.state().clone());
    let tenant = json!({"id": "acme", "name": "Acme", "client_id": "acme-client",
                        "client_secret": "acme-secret", "token_url": running.token_url()});
    let (status, body) = call(&router, admin(Method::POST, "/tenants", tenant)).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let key = json!({"name": "hot", "scopes": ["token:acme"]});
    let (status, body) = call(&router, admin(Method::POST, "/api-keys", key)).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let key = body["key"].as_str().expect("key").to_owned();
    let (status, body) = call(&router, hit(&key)).await;
    assert_eq!(status, StatusCode::OK, "the first request fetches: {body}");
    (router, key, running)
}

/// Allocations per cache hit through the real router, after warm-up: exactly the named
/// ones (`EXPECTED_PER_HIT`).
#[test]
fn a_cache_hit_allocates_only_what_is_named() {
    telemetry::init(LogFormat::Text);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("dir");
    let (router, key, _issuer) = runtime.block_on(service_with_a_held_token(dir.path()));
    const N: u64 = 200;
    let serve = |requests: Vec<Request<Body>>| {
        runtime.block_on(async {
            for request in requests {
                let response = router.clone().oneshot(request).await.expect("infallible");
                assert_eq!(response.status(), StatusCode::OK);
                assert!(response.headers().contains_key("x-request-id"));
            }
        })
    };
    // Warm-up: lazily built parts (thread-locals, span call sites, buffers) are built once.
    serve((0..N).map(|_| hit(&key)).collect());
    let requests: Vec<_> = (0..N).map(|_| hit(&key)).collect();
    let counted = allocation_counter::measure(|| serve(requests));
    // The requests themselves were built before counting; freeing them is not counted
    // as an allocation.
    assert_eq!(
        counted.count_total,
        EXPECTED_PER_HIT * N,
        "allocations per cache hit: {} (expected {EXPECTED_PER_HIT}); {counted:?}",
        counted.count_total as f64 / N as f64
    );
}
