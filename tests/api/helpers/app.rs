//! `TestApp`: the real app on port 0 with its own database, a local issuer standing in
//! for edX and a manual clock, with one helper per endpoint.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use edx_issuer::{Issuer, RunningIssuer};
use reqwest::{Method, Response, StatusCode};
use secrecy::SecretString;
use serde_json::{json, Value};
use sqlx::{PgPool, SqlitePool};
use tempfile::TempDir;
use tokenvend::clock::{Clock, ManualClock};
use tokenvend::config::{ServingSettings, Settings};
use tokenvend::crypto::MasterKey;
use tokenvend::engine::VendingSettings;
use tokenvend::http::state::AppState;
use tokenvend::outbound::upstream::UpstreamSettings;
use tokenvend::outbound::webhooks::WebhookSettings;
use tokenvend::startup::Application;
use tokenvend::store::{AuditPruner, AuditRetention, DatabaseUrl};
use tokenvend::telemetry::LogFormat;
use tokio::sync::oneshot;

use super::logs::init_logs;
use super::{tenant_body, Backend, PgTestDb, RawDb};

/// Short limits so that failure tests take milliseconds, not seconds.
pub fn test_vending_settings() -> VendingSettings {
    VendingSettings {
        skew: Duration::from_secs(10),
        request_deadline: Duration::from_secs(3),
        scheduler_interval: Duration::from_millis(20),
        min_refresh_interval: Duration::from_secs(5),
        // Far above what any test asks, except the budget's own tests.
        upstream_rate: NonZeroU32::new(100_000),
        // The caller fetch rate has tests of its own, which set it.
        caller_fetch_rate: None,
        lock_wait: Duration::from_secs(1),
        upstream: UpstreamSettings {
            connect_timeout: Duration::from_secs(1),
            attempt_timeout: Duration::from_millis(400),
            max_attempts: 3,
            retry_base_delay: Duration::from_millis(10),
        },
    }
}

/// The documented retry schedule (tests move the clock past each wait), a worker that
/// polls every 250 ms (new events wake it at once; a shorter poll loads the database
/// of every test running at the same time) and short attempts.
pub fn test_webhook_settings() -> WebhookSettings {
    WebhookSettings {
        poll_interval: Duration::from_millis(250),
        attempt_timeout: Duration::from_secs(2),
        ..WebhookSettings::default()
    }
}

pub struct TestApp {
    pub address: String,
    /// Where `/metrics` is served without a key, when `serving.metrics_listen` is set.
    pub metrics_address: Option<String>,
    /// The clock both the app and the issuer read; tests move it instead of sleeping.
    pub clock: Arc<ManualClock>,
    /// The local edX-like issuer standing in for edX.
    pub issuer: Issuer,
    pub issuer_server: RunningIssuer,
    pub client: reqwest::Client,
    pub admin_key: String,
    pub backend: Backend,
    pub settings: Settings,
    pub raw: RawDb,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<()>>,
    state: Option<AppState>,
    audit_pruner: Option<AuditPruner>,
    _pg: Option<PgTestDb>,
    _dir: TempDir,
}

pub async fn spawn_app(backend: Backend) -> TestApp {
    spawn_app_with(backend, |_| {}).await
}

/// Spawns the app after `configure` has adjusted its settings.
pub async fn spawn_app_with(backend: Backend, configure: impl FnOnce(&mut Settings)) -> TestApp {
    let dir = tempfile::tempdir().expect("temp dir");
    let (pg, database_url) = match backend {
        Backend::Postgres => {
            let (db, url) = PgTestDb::create().await;
            (Some(db), url)
        }
        Backend::Sqlite => (
            None,
            format!("sqlite://{}", dir.path().join("test.db").display()),
        ),
    };
    spawn(backend, dir, pg, database_url, configure).await
}

/// Spawns the app on a PostgreSQL database the test provides (and owns).
pub async fn spawn_app_on_postgres(database_url: String) -> TestApp {
    spawn_app_on_postgres_with(database_url, |_| {}).await
}

/// The same, after `configure` has adjusted its settings.
pub async fn spawn_app_on_postgres_with(
    database_url: String,
    configure: impl FnOnce(&mut Settings),
) -> TestApp {
    let dir = tempfile::tempdir().expect("temp dir");
    spawn(Backend::Postgres, dir, None, database_url, configure).await
}

async fn spawn(
    backend: Backend,
    dir: TempDir,
    pg: Option<PgTestDb>,
    database_url: String,
    configure: impl FnOnce(&mut Settings),
) -> TestApp {
    init_logs();
    let admin_key = format!("test-admin-key-{}", uuid::Uuid::new_v4().simple());
    let mut settings = Settings {
        listen: "127.0.0.1:0".to_owned(),
        database_url: Some(DatabaseUrl::parse(&database_url).expect("database url")),
        data_dir: dir.path().join("data"),
        master_key: Some(MasterKey::generate().0),
        old_master_keys: Vec::new(),
        admin_key: Some(SecretString::from(admin_key.clone())),
        bootstrap_admin: true,
        serving: ServingSettings::default(),
        allow_insecure_token_urls: true,
        log_format: LogFormat::Text,
        vending: test_vending_settings(),
        webhooks: test_webhook_settings(),
        audit: AuditRetention::default(),
    };
    configure(&mut settings);
    let raw = match backend {
        Backend::Postgres => RawDb::Postgres(PgPool::connect(&database_url).await.expect("raw pg")),
        Backend::Sqlite => {
            // The app creates the file; the raw handle opens it after start-up below.
            RawDb::Sqlite(
                SqlitePool::connect_lazy(&format!("{database_url}?mode=rwc")).expect("raw sqlite"),
            )
        }
    };
    let clock = Arc::new(ManualClock::starting_now());
    let issuer = Issuer::new({
        let clock = clock.clone();
        move || clock.now()
    });
    let issuer_server = issuer.start().await.expect("issuer starts");
    let mut app = TestApp {
        address: String::new(),
        metrics_address: None,
        clock,
        issuer,
        issuer_server,
        client: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client"),
        admin_key,
        backend,
        settings,
        raw,
        shutdown: None,
        server: None,
        state: None,
        audit_pruner: None,
        _pg: pg,
        _dir: dir,
    };
    app.start().await;
    app
}

impl TestApp {
    async fn start(&mut self) {
        let app = Application::build_with_clock(self.settings.clone(), self.clock.clone())
            .await
            .expect("app builds");
        self.address = format!("http://{}", app.local_addr());
        self.metrics_address = app.metrics_addr().map(|addr| format!("http://{addr}"));
        self.audit_pruner = Some(app.audit_pruner());
        self.state = Some(app.state().clone());
        let (tx, rx) = oneshot::channel();
        self.shutdown = Some(tx);
        self.server = Some(tokio::spawn(async move {
            let _ = app
                .run_until_stopped(async {
                    let _ = rx.await;
                })
                .await;
        }));
    }

    /// Starts another replica on the same database, settings, clock and issuer; it stops
    /// when the returned sender is dropped.
    pub async fn start_replica(&self) -> (String, oneshot::Sender<()>) {
        let app = Application::build_with_clock(self.settings.clone(), self.clock.clone())
            .await
            .expect("replica builds");
        let address = format!("http://{}", app.local_addr());
        let (tx, rx) = oneshot::channel();
        tokio::spawn(async move {
            let _ = app
                .run_until_stopped(async {
                    let _ = rx.await;
                })
                .await;
        });
        (address, tx)
    }

    /// Stops the server and waits until it has finished.
    pub async fn stop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            let _ = server.await;
        }
    }

    /// Stops the app and starts it again on the same database and settings.
    pub async fn restart(&mut self) {
        self.stop().await;
        self.start().await;
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    /// A request with `key` as the caller key (none when `None`) and an optional JSON body.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        key: Option<&str>,
        body: Option<&Value>,
    ) -> Response {
        let mut req = self.client.request(method, self.url(path));
        if let Some(key) = key {
            req = req.bearer_auth(key);
        }
        if let Some(body) = body {
            req = req.json(body);
        }
        req.send().await.expect("request sent")
    }

    /// A request as the bootstrap admin.
    pub async fn admin(&self, method: Method, path: &str, body: Option<&Value>) -> Response {
        self.request(method, path, Some(&self.admin_key), body)
            .await
    }

    pub async fn create_tenant(&self, body: &Value) -> Response {
        self.admin(Method::POST, "/tenants", Some(body)).await
    }

    /// Creates a caller key with `scopes` and returns the key.
    pub async fn create_key(&self, scopes: &[&str]) -> String {
        let resp = self
            .admin(
                Method::POST,
                "/api-keys",
                Some(&json!({ "name": "test key", "scopes": scopes })),
            )
            .await;
        assert_eq!(resp.status(), StatusCode::CREATED);
        let body: Value = resp.json().await.expect("json");
        body["key"].as_str().expect("key").to_owned()
    }
}

impl TestApp {
    /// Registers a client with the issuer and a tenant `id` that uses it; returns the
    /// tenant's client id.
    pub async fn issuer_tenant(&self, id: &str) -> String {
        self.issuer_tenant_with(id, |_| {}).await
    }

    /// Like `issuer_tenant`, after `adjust` has changed the tenant body.
    pub async fn issuer_tenant_with(&self, id: &str, adjust: impl FnOnce(&mut Value)) -> String {
        let mut body = tenant_body(id);
        body["token_url"] = json!(self.issuer_server.token_url());
        adjust(&mut body);
        let client_id = body["client_id"].as_str().expect("client_id").to_owned();
        let secret = body["client_secret"]
            .as_str()
            .expect("client_secret")
            .to_owned();
        self.issuer.register(&client_id, &secret);
        let resp = self.create_tenant(&body).await;
        assert_eq!(resp.status(), StatusCode::CREATED, "tenant {id} created");
        client_id
    }

    pub async fn get_token(&self, id: &str) -> Response {
        self.admin(Method::GET, &format!("/tenants/{id}/token"), None)
            .await
    }

    pub async fn token_status(&self, id: &str) -> Value {
        let resp = self
            .admin(Method::GET, &format!("/tenants/{id}/token/status"), None)
            .await;
        assert_eq!(resp.status(), StatusCode::OK);
        resp.json().await.expect("status JSON")
    }

    /// The `/metrics` text, read with the admin key.
    pub async fn metrics(&self) -> String {
        let resp = self.admin(Method::GET, "/metrics", None).await;
        assert_eq!(resp.status(), StatusCode::OK);
        resp.text().await.expect("metrics text")
    }

    /// Runs one pass of the app's audit pruning (by its clock and settings); returns how
    /// many events it deleted.
    pub async fn prune_audit(&self) -> u64 {
        let pruner = self.audit_pruner.as_ref().expect("the app has started");
        pruner.prune_once().await.expect("audit pruning")
    }

    /// The running app's state, for driving its engine by hand: one scheduler pass
    /// (`app.state().vendor.scheduler().run_due_refreshes()`) says what is due, where waiting would
    /// only show what happened to happen.
    pub fn state(&self) -> &AppState {
        self.state.as_ref().expect("the app has started")
    }

    pub fn advance(&self, secs: u64) {
        self.clock.advance(Duration::from_secs(secs));
    }
}
