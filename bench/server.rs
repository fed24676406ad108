//! Benchmark fixture: tokenvend on the embedded SQLite store with the local edX-like
//! issuer, next to a bare axum handler that returns the very same token bytes.
//!
//! `bench_server serve` prints the two URLs and a caller key, then serves until killed;
//! `bench_server cold N` fires N concurrent requests at a cold tenant and prints how many
//! upstream calls they caused. `bench/run.sh` drives both; `bench/outage.sh` runs it on a
//! PostgreSQL cluster it stops (`BENCH_DATABASE_URL`).

use std::time::{Duration, Instant};

use axum::http::header;
use axum::routing::get;
use axum::Router;
use edx_issuer::Issuer;
use secrecy::SecretString;
use serde_json::{json, Value};
use tokenvend::config::{ServingSettings, Settings};
use tokenvend::crypto::MasterKey;
use tokenvend::startup::Application;
use tokenvend::store::DatabaseUrl;
use tokenvend::telemetry::{self, LogFormat};
use tokenvend::vending::VendingSettings;
use tokenvend::webhooks::WebhookSettings;

const CLIENT_ID: &str = "bench-client";
const CLIENT_SECRET: &str = "bench-secret";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_else(|| "serve".to_owned());
    // Logs as deployed: info level, one line per request (run.sh sends them to /dev/null).
    telemetry::init(LogFormat::Text);

    let issuer = Issuer::new(chrono::Utc::now);
    let issuer_server = issuer.start().await?;
    issuer.register(CLIENT_ID, CLIENT_SECRET);

    let dir = std::env::temp_dir().join(format!("tokenvend-bench-{}", uuid::Uuid::new_v4()));
    let admin_key = format!("bench-admin-{}", uuid::Uuid::new_v4().simple());
    // BENCH_DATABASE_URL puts it on PostgreSQL instead (bench/outage.sh).
    let database_url = std::env::var("BENCH_DATABASE_URL")
        .unwrap_or_else(|_| format!("sqlite://{}/bench.db", dir.display()));
    let settings = Settings {
        listen: "127.0.0.1:0".to_owned(),
        database_url: Some(DatabaseUrl::parse(&database_url).map_err(anyhow::Error::msg)?),
        data_dir: dir.clone(),
        master_key: Some(MasterKey::generate().0),
        old_master_keys: Vec::new(),
        admin_key: Some(SecretString::from(admin_key.clone())),
        bootstrap_admin: true,
        serving: ServingSettings::default(),
        allow_insecure_token_urls: true,
        log_format: LogFormat::Text,
        vending: VendingSettings::default(),
        webhooks: WebhookSettings::default(),
    };
    std::fs::create_dir_all(&dir)?;
    let app = Application::build(settings).await?;
    let base = format!("http://{}", app.local_addr());
    tokio::spawn(app.run_until_stopped(std::future::pending()));

    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(2000)
        .build()?;
    let created = client
        .post(format!("{base}/tenants"))
        .bearer_auth(&admin_key)
        .json(&json!({
            "id": "bench", "name": "Bench", "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET, "token_url": issuer_server.token_url(),
        }))
        .send()
        .await?;
    anyhow::ensure!(
        created.status() == 201,
        "tenant not created: {}",
        created.status()
    );
    let key: Value = client
        .post(format!("{base}/api-keys"))
        .bearer_auth(&admin_key)
        .json(&json!({"name": "bench", "scopes": ["token:bench"]}))
        .send()
        .await?
        .json()
        .await?;
    let key = key["key"].as_str().unwrap_or_default().to_owned();
    // The same scope with a per-key rate limit it never reaches (the highest allowed, far
    // above what one core of wrk sends): the hit path with rate limiting on.
    let limited: Value = client
        .post(format!("{base}/api-keys"))
        .bearer_auth(&admin_key)
        .json(&json!({"name": "bench-limited", "scopes": ["token:bench"], "rate_limit": 100_000}))
        .send()
        .await?
        .json()
        .await?;
    let limited_key = limited["key"].as_str().unwrap_or_default().to_owned();
    let token_url = format!("{base}/tenants/bench/token");

    match mode.as_str() {
        "cold" => {
            let n: usize = args.next().and_then(|n| n.parse().ok()).unwrap_or(1000);
            // edX takes its time: every request arrives while the one fetch is under way.
            issuer.configure(CLIENT_ID, |b| b.latency = Duration::from_millis(200));
            let started = Instant::now();
            let requests = (0..n).map(|_| client.get(&token_url).bearer_auth(&key).send());
            let responses = futures::future::join_all(requests).await;
            let ok = responses
                .iter()
                .filter(|r| r.as_ref().is_ok_and(|r| r.status() == 200))
                .count();
            println!(
                "{{\"requests\": {n}, \"ok\": {ok}, \"upstream_calls\": {}, \"seconds\": {:.3}}}",
                issuer.calls(CLIENT_ID),
                started.elapsed().as_secs_f64()
            );
        }
        _ => {
            let response = client.get(&token_url).bearer_auth(&key).send().await?;
            anyhow::ensure!(response.status() == 200, "no token: {}", response.status());
            let bytes = response.bytes().await?;
            // The bare baseline: the same bytes and headers, nothing else.
            let bare = Router::new().route(
                "/tenants/bench/token",
                get(move || {
                    let bytes = bytes.clone();
                    async move {
                        (
                            [
                                (header::CONTENT_TYPE, "application/json"),
                                (header::CACHE_CONTROL, "no-store"),
                                (header::PRAGMA, "no-cache"),
                            ],
                            bytes,
                        )
                    }
                }),
            );
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            let bare_url = format!("http://{}/tenants/bench/token", listener.local_addr()?);
            tokio::spawn(async move { axum::serve(listener, bare).await });
            println!("TOKENVEND_URL={token_url}");
            println!("BARE_URL={bare_url}");
            println!("KEY={key}");
            println!("LIMITED_KEY={limited_key}");
            println!("METRICS_URL={base}/metrics");
            // /metrics needs the metrics scope; the admin key holds every scope.
            println!("ADMIN_KEY={admin_key}");
            tokio::signal::ctrl_c().await?;
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
