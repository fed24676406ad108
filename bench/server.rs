//! Benchmark fixture: tokenvend on the embedded SQLite store with the local edX-like
//! issuer, next to a bare axum handler that returns the very same token bytes.
//!
//! `bench_server serve` prints the two URLs and a caller key, then serves until killed;
//! `bench_server cold N` fires N concurrent requests at a cold tenant and prints how many
//! upstream calls they caused; `bench_server stream MB` fetches MB megabytes through the
//! proxy (and sends 10 MB up, the most a proxied request may carry), and prints the
//! process's peak memory before and after.
//! `serve` also prints a proxied edX API URL and the same API called directly with the
//! token, and a workload identity JWT (`JWT`) with the same token scope as the key;
//! `bench_server verify N` times N first (uncached) JWT verifies against cached ones. `bench/run.sh` drives them; `bench/outage.sh` runs it on a PostgreSQL cluster it
//! stops (`BENCH_DATABASE_URL`).

#[path = "bare.rs"]
mod bare;
#[path = "identity.rs"]
mod identity;

use std::time::{Duration, Instant};

/// The allocator of the `tokenvend` binary (src/main.rs), so that both are measured alike.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use axum::http::header;
use edx_issuer::Issuer;
use secrecy::SecretString;
use serde_json::{json, Value};
use tokenvend::config::{ServingSettings, Settings};
use tokenvend::crypto::MasterKey;
use tokenvend::engine::VendingSettings;
use tokenvend::outbound::webhooks::WebhookSettings;
use tokenvend::startup::Application;
use tokenvend::store::{AuditRetention, DatabaseUrl};
use tokenvend::telemetry::{self, LogFormat};

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
        audit: AuditRetention::default(),
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
        .json(&json!({"name": "bench", "scopes": ["token:bench", "proxy:bench"]}))
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
    let signer = identity::Signer::new()?;
    signer.register(&client, &base, &admin_key).await?;
    let token_url = format!("{base}/tenants/bench/token");

    let api_path = "api/enterprise/v1/enterprise-customer/";
    let proxy_url = format!("{base}/tenants/bench/proxy/{api_path}");
    match mode.as_str() {
        "stream" => {
            let mb: u64 = args.next().and_then(|n| n.parse().ok()).unwrap_or(100);
            stream(&client, &base, &key, mb * 1_000_000).await?;
        }
        "verify" => {
            let n: u64 = args.next().and_then(|n| n.parse().ok()).unwrap_or(2000);
            client.get(&token_url).bearer_auth(&key).send().await?;
            identity::verify_cost(&client, &signer, &token_url, &key, n).await?;
        }
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
            let bare_url = bare::serve("/tenants/bench/token", bytes).await?;
            let token: Value = client
                .get(&token_url)
                .bearer_auth(&key)
                .send()
                .await?
                .json()
                .await?;
            println!("PROXY_URL={proxy_url}");
            println!("API_URL={}/{api_path}", issuer_server.api_base_url());
            println!(
                "API_AUTHORIZATION='JWT {}'",
                token["access_token"].as_str().unwrap_or_default()
            );
            println!("TOKENVEND_URL={token_url}");
            println!("BARE_URL={bare_url}");
            println!("KEY={key}");
            println!("LIMITED_KEY={limited_key}");
            println!("JWT={}", signer.mint(1)?);
            println!("METRICS_URL={base}/metrics");
            // /metrics needs the metrics scope; the admin key holds every scope.
            println!("ADMIN_KEY={admin_key}");
            tokio::signal::ctrl_c().await?;
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// The process's peak resident memory so far (`VmHWM`), in MiB.
fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0)
}

/// 10 MB up through the proxy (streamed, generated as it is sent; the request limit is
/// 10 MiB) and `bytes` back (streamed, counted and dropped as they arrive): the peak
/// memory must not grow by anything like the body sizes, since nothing holds a body.
async fn stream(client: &reqwest::Client, base: &str, key: &str, bytes: u64) -> anyhow::Result<()> {
    use futures::StreamExt;
    // Warm: a token and a connection.
    let warm = format!("{base}/tenants/bench/proxy/api/enterprise/v1/enterprise-customer/");
    client
        .get(&warm)
        .bearer_auth(key)
        .send()
        .await?
        .bytes()
        .await?;
    let before = peak_rss_mib();
    let started = Instant::now();
    const CHUNK: u64 = 64 * 1024;
    let up_bytes: u64 = 10_000_000;
    let chunks = futures::stream::iter((0..up_bytes.div_ceil(CHUNK)).map(move |n| {
        let len = CHUNK.min(up_bytes - n * CHUNK) as usize;
        Ok::<_, std::io::Error>(vec![b'x'; len])
    }));
    let up = client
        .put(format!(
            "{base}/tenants/bench/proxy/api/enterprise/v1/uploads"
        ))
        .bearer_auth(key)
        .header(header::CONTENT_LENGTH, up_bytes)
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await?;
    let status = up.status();
    let echo: Value = up.json().await?;
    anyhow::ensure!(
        echo["body_length"].as_u64() == Some(up_bytes),
        "upload: {status} {echo}"
    );
    let up_secs = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let down = client
        .get(format!(
            "{base}/tenants/bench/proxy/api/test/large?bytes={bytes}"
        ))
        .bearer_auth(key)
        .send()
        .await?;
    let mut received: u64 = 0;
    let mut body = down.bytes_stream();
    while let Some(chunk) = body.next().await {
        received += chunk?.len() as u64;
    }
    anyhow::ensure!(received == bytes, "download: {received} of {bytes} bytes");
    let down_secs = started.elapsed().as_secs_f64();
    let after = peak_rss_mib();
    println!(
        "{{\"upload_bytes\": {up_bytes}, \"download_bytes\": {bytes}, \"upload_seconds\": {up_secs:.2}, \
         \"download_seconds\": {down_secs:.2}, \
         \"peak_rss_mib_before\": {before:.1}, \"peak_rss_mib_after\": {after:.1}}}"
    );
    Ok(())
}
