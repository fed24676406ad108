//! A service holding a tenant's token (`acme`; another tenant, `other`, beside it), and its callers' keys, for the hot-path
//! tests (`hot_path.rs`, `hot_path_allocations.rs`): the real application's state on a
//! manual clock, its router and the hot path in front of it, driven with `oneshot`.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt as _;
use secrecy::SecretString;
use serde_json::{json, Value};
use tower::ServiceExt as _;

use tokenvend::clock::ManualClock;
use tokenvend::config::{ServingSettings, Settings};
use tokenvend::crypto::MasterKey;
use tokenvend::engine::VendingSettings;
use tokenvend::http::routes::hot::HotPath;
use tokenvend::http::state::AppState;
use tokenvend::outbound::webhooks::WebhookSettings;
use tokenvend::startup::Application;
use tokenvend::store::{AuditRetention, DatabaseUrl};
use tokenvend::telemetry::LogFormat;

pub const ADMIN_KEY: &str = "hot-path-admin-key-0123456789abcdef";

pub struct Service {
    pub state: AppState,
    pub router: Router,
    pub hot: HotPath,
    pub clock: Arc<ManualClock>,
    /// `token:acme`.
    pub key: String,
    /// `token:acme`, one request a second.
    pub limited: String,
    /// `tenants:read` only.
    pub reader: String,
    /// `token:other` only.
    pub other: String,
    _issuer: edx_issuer::RunningIssuer,
}

pub async fn call(router: &Router, request: Request<Body>) -> (StatusCode, Value) {
    let response = router.clone().oneshot(request).await.expect("infallible");
    let status = response.status();
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

pub fn admin(method: Method, uri: &str, body: Value) -> Request<Body> {
    Request::builder()
        .method(method)
        .uri(uri)
        .header(header::AUTHORIZATION, format!("Bearer {ADMIN_KEY}"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .expect("request")
}

pub fn hit(key: &str) -> Request<Body> {
    Request::builder()
        .uri("/tenants/acme/token")
        .header(header::AUTHORIZATION, format!("Bearer {key}"))
        .body(Body::empty())
        .expect("request")
}

/// The service, `acme`'s token fetched (through the router) and held.
pub async fn service_with_a_held_token(dir: &std::path::Path) -> Service {
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
    let clock = Arc::new(ManualClock::starting_now());
    let app = Application::build_with_clock(settings, clock.clone())
        .await
        .expect("app");
    let state = app.state().clone();
    let router = tokenvend::http::routes::router(state.clone());
    for id in ["acme", "other"] {
        let tenant = json!({"id": id, "name": id, "client_id": "acme-client",
                            "client_secret": "acme-secret", "token_url": running.token_url()});
        let (status, body) = call(&router, admin(Method::POST, "/tenants", tenant)).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    let mut keys = Vec::new();
    for key in [
        json!({"name": "hot", "scopes": ["token:acme"]}),
        json!({"name": "limited", "scopes": ["token:acme"], "rate_limit": 1}),
        json!({"name": "reader", "scopes": ["tenants:read"]}),
        json!({"name": "other", "scopes": ["token:other"]}),
    ] {
        let (status, body) = call(&router, admin(Method::POST, "/api-keys", key)).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        keys.push(body["key"].as_str().expect("key").to_owned());
    }
    let (status, body) = call(&router, hit(&keys[0])).await;
    assert_eq!(status, StatusCode::OK, "the first request fetches: {body}");
    let [key, limited, reader, other] = <[String; 4]>::try_from(keys).expect("four keys");
    Service {
        hot: HotPath::new(router.clone(), state.clone()),
        state,
        router,
        clock,
        key,
        limited,
        reader,
        other,
        _issuer: running,
    }
}
