//! The test harness: the real app on a random port, on its own fresh database.

use std::io::Write;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use edx_issuer::{Issuer, RunningIssuer};
use reqwest::{Method, Response, StatusCode};
use secrecy::SecretString;
use serde_json::{json, Value};
use sqlx::{Connection, Executor, PgConnection, PgPool, SqlitePool};
use tempfile::TempDir;
use tokenvend::clock::{Clock, ManualClock};
use tokenvend::config::{ServingSettings, Settings};
use tokenvend::crypto::MasterKey;
use tokenvend::outbound::upstream::UpstreamSettings;
use tokenvend::startup::Application;
use tokenvend::store::{AuditPruner, AuditRetention, DatabaseUrl};
use tokenvend::telemetry::LogFormat;
use tokenvend::vending::VendingSettings;
use tokenvend::webhooks::WebhookSettings;
use tokio::sync::oneshot;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

/// Every test case in `$name` runs once on each backend, as `postgres::$name` and
/// `sqlite::$name`. Each case is an `async fn(TestApp)`. Cases about storage (what is
/// kept, read back, changed, announced) belong here.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod postgres {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name($crate::helpers::spawn_app($crate::helpers::Backend::Postgres).await).await
                }
            )*
        }
        mod sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name($crate::helpers::spawn_app($crate::helpers::Backend::Sqlite).await).await
                }
            )*
        }
    };
}

/// Like `on_both_backends!`, each case with settings of its own:
/// `on_both_backends_with! { case_name: |s| s.vending.caller_fetch_rate = None; }`; the
/// settings expression sees the items of the module that uses the macro.
#[macro_export]
macro_rules! on_both_backends_with {
    ($($name:ident: $configure:expr;)*) => {
        mod postgres {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name($crate::helpers::spawn_app_with($crate::helpers::Backend::Postgres, $configure).await).await
                }
            )*
        }
        mod sqlite {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name($crate::helpers::spawn_app_with($crate::helpers::Backend::Sqlite, $configure).await).await
                }
            )*
        }
    };
}

/// Every test case in `$name` runs on SQLite only, as `sqlite_only::$name`: cases about
/// HTTP behaviour alone (validation, caller keys and scopes, error shapes) that the
/// backend cannot change. Each case is an `async fn(TestApp)`.
#[macro_export]
macro_rules! on_sqlite_only {
    ($($name:ident),* $(,)?) => {
        mod sqlite_only {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name($crate::helpers::spawn_app($crate::helpers::Backend::Sqlite).await).await
                }
            )*
        }
    };
}

/// The server that holds PostgreSQL test databases; `TEST_DATABASE_URL` overrides it.
pub fn postgres_admin_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// Logs of every app in this test process, captured at debug level so that tests can
/// check what was (not) logged. Printed too when `TEST_LOG` is set.
static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();

#[derive(Clone)]
struct CaptureWriter(Arc<Mutex<Vec<u8>>>);

impl Write for CaptureWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if std::env::var_os("TEST_LOG").is_some() {
            let _ = std::io::stderr().write_all(buf);
        }
        self.0.lock().expect("log buffer").extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn init_logs() {
    LOGS.get_or_init(|| {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let writer = CaptureWriter(buffer.clone());
        let _ = tracing_subscriber::fmt()
            .with_env_filter("debug")
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .try_init();
        buffer
    });
}

/// Everything logged so far by every app in this test process.
pub fn captured_logs() -> String {
    let logs = LOGS.get().expect("logs initialised by spawn_app");
    String::from_utf8_lossy(&logs.lock().expect("log buffer")).into_owned()
}

/// A throwaway PostgreSQL database, dropped when this is dropped.
pub struct PgTestDb {
    name: String,
}

impl PgTestDb {
    /// A new empty database on the test server, and its URL.
    pub async fn create() -> (Self, String) {
        let admin_url = postgres_admin_url();
        let name = format!("tokenvend_test_{}", uuid::Uuid::new_v4().simple());
        let mut conn = PgConnection::connect(&admin_url)
            .await
            .expect("connect to the PostgreSQL test server (is it running?)");
        conn.execute(format!(r#"CREATE DATABASE "{name}""#).as_str())
            .await
            .expect("create test database");
        let mut url = url::Url::parse(&admin_url).expect("admin url");
        url.set_path(&name);
        (Self { name }, url.to_string())
    }
}

impl Drop for PgTestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop runs inside the test's runtime; use a thread with its own to block on.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                if let Ok(mut conn) = PgConnection::connect(&postgres_admin_url()).await {
                    let _ = conn
                        .execute(
                            format!(r#"DROP DATABASE IF EXISTS "{name}" WITH (FORCE)"#).as_str(),
                        )
                        .await;
                }
            });
        })
        .join();
    }
}

/// A direct connection to the app's database, for looking at what is really stored.
pub enum RawDb {
    Postgres(PgPool),
    Sqlite(SqlitePool),
}

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

    /// Every stored row of every table as text, bytes columns hex-encoded as PostgreSQL
    /// dumps them; for SQLite the raw bytes of the database files.
    pub async fn dump(&self) -> Vec<u8> {
        match &self.raw {
            RawDb::Postgres(pool) => {
                let mut out = Vec::new();
                for table in ["tenants", "api_keys", "tokens", "audit_events", "webhooks"] {
                    let rows: Vec<String> =
                        sqlx::query_scalar(&format!("SELECT row_to_json(t)::text FROM {table} t"))
                            .fetch_all(pool)
                            .await
                            .expect("dump table");
                    for row in rows {
                        out.extend_from_slice(row.as_bytes());
                        out.push(b'\n');
                    }
                }
                out
            }
            RawDb::Sqlite(_) => {
                let path = self.sqlite_path();
                let mut out = Vec::new();
                for suffix in ["", "-wal"] {
                    if let Ok(bytes) = std::fs::read(format!("{}{suffix}", path.display())) {
                        out.extend_from_slice(&bytes);
                    }
                }
                out
            }
        }
    }

    fn sqlite_path(&self) -> PathBuf {
        match &self.settings.database_url {
            Some(DatabaseUrl::Sqlite(url)) => PathBuf::from(url.trim_start_matches("sqlite://")),
            _ => panic!("not a sqlite app"),
        }
    }

    /// Runs a statement directly against the app's database (`$N` placeholders).
    pub async fn raw_execute(&self, sql: &str, args: &[&str]) -> u64 {
        match &self.raw {
            RawDb::Postgres(pool) => {
                let mut q = sqlx::query(sql);
                for a in args {
                    q = q.bind(*a);
                }
                q.execute(pool).await.expect("raw execute").rows_affected()
            }
            RawDb::Sqlite(pool) => {
                let mut q = sqlx::query(sql);
                for a in args {
                    q = q.bind(*a);
                }
                q.execute(pool).await.expect("raw execute").rows_affected()
            }
        }
    }

    pub async fn raw_count(&self, sql: &str, args: &[&str]) -> i64 {
        match &self.raw {
            RawDb::Postgres(pool) => {
                let mut q = sqlx::query_scalar::<_, i64>(sql);
                for a in args {
                    q = q.bind(*a);
                }
                q.fetch_one(pool).await.expect("raw count")
            }
            RawDb::Sqlite(pool) => {
                let mut q = sqlx::query_scalar::<_, i64>(sql);
                for a in args {
                    q = q.bind(*a);
                }
                q.fetch_one(pool).await.expect("raw count")
            }
        }
    }

    /// The first column of every row `sql` returns, as text.
    pub async fn raw_strings(&self, sql: &str, args: &[&str]) -> Vec<String> {
        match &self.raw {
            RawDb::Postgres(pool) => {
                let mut q = sqlx::query_scalar::<_, String>(sql);
                for a in args {
                    q = q.bind(*a);
                }
                q.fetch_all(pool).await.expect("raw strings")
            }
            RawDb::Sqlite(pool) => {
                let mut q = sqlx::query_scalar::<_, String>(sql);
                for a in args {
                    q = q.bind(*a);
                }
                q.fetch_all(pool).await.expect("raw strings")
            }
        }
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

    pub fn advance(&self, secs: u64) {
        self.clock.advance(Duration::from_secs(secs));
    }
}

/// How long `eventually` waits for background work.
const EVENTUALLY: Duration = Duration::from_secs(5);

/// The pause between two checks of a poll.
const POLL_INTERVAL: Duration = Duration::from_millis(10);

/// Polls `check` until it holds (background work), failing after 5 s with `what` in the
/// message: `eventually("the refresh", async || app.issuer.calls(&id) == 2).await`
/// (`|| async { ... }` works too).
pub async fn eventually(what: &str, check: impl AsyncFnMut() -> bool) {
    eventually_within(EVENTUALLY, what, check).await;
}

/// Like `eventually`, failing after `limit`; returns how long it took.
pub async fn eventually_within(
    limit: Duration,
    what: &str,
    check: impl AsyncFnMut() -> bool,
) -> Duration {
    poll_until(limit, check)
        .await
        .unwrap_or_else(|| panic!("timed out after {limit:?} waiting for: {what}"))
}

/// Polls `check` every 10 ms until it holds and returns how long that took, or `None`
/// once `limit` has passed, for callers that say themselves what went wrong. A check
/// begun in time may finish a little late (a loaded machine) and still count, but one
/// that hangs is abandoned a further `limit` on.
pub async fn poll_until(limit: Duration, mut check: impl AsyncFnMut() -> bool) -> Option<Duration> {
    let started = tokio::time::Instant::now();
    let deadline = started + limit;
    loop {
        match tokio::time::timeout_at(deadline + limit, check()).await {
            Ok(true) => return Some(started.elapsed()),
            Ok(false) if tokio::time::Instant::now() < deadline => {}
            Ok(false) | Err(_) => return None,
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// A valid tenant body with a unique secret.
pub fn tenant_body(id: &str) -> Value {
    json!({
        "id": id,
        "name": format!("Tenant {id}"),
        "client_id": format!("client-{id}"),
        "client_secret": format!("secret-{id}-{}", uuid::Uuid::new_v4().simple()),
        "scope": "read write",
    })
}

/// Asserts a problem+json answer with `status`, and returns its body.
pub async fn assert_problem(resp: Response, status: StatusCode) -> Value {
    assert_eq!(resp.status(), status, "status");
    assert!(
        resp.headers().contains_key("x-request-id"),
        "every answer carries a request id"
    );
    let content_type = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert_eq!(content_type, "application/problem+json");
    let body: Value = resp.json().await.expect("problem body is JSON");
    assert_eq!(body["status"], status.as_u16(), "{body}");
    for field in ["type", "title", "detail"] {
        assert!(body[field].is_string(), "problem lacks {field}: {body}");
    }
    body
}

pub async fn json_body(resp: Response, status: StatusCode) -> Value {
    assert_eq!(resp.status(), status, "status");
    resp.json().await.expect("JSON body")
}

pub fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle.as_bytes())
}
