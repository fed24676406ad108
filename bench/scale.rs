//! Scale benchmark: the real tokenvend binary, as a child process on PostgreSQL, holding
//! tokens for N tenants of the local edX-like issuer (run in this process).
//!
//! `bench_scale N [TOKENVEND_BINARY]` (default binary `target/release/tokenvend`):
//! seeds N tenants straight into a fresh database, fills every tenant's token through the
//! API, and measures the child's memory, the `/tokens/status` page, a restart (how soon it
//! is ready, how soon every stored token is adopted again, and that edX is not asked for
//! any of them), and optionally the hit path spread over 10,000 tenants against one tenant
//! and against a bare handler (wrk). Progress goes to stderr; a markdown block and one
//! JSON line go to stdout. `bench/scale.sh` builds and runs it.
//!
//! Environment: `SCALE_DATABASE_URL` (the PostgreSQL server, any database on it; default
//! `postgres://postgres@127.0.0.1:5432/postgres`), `SPREAD` (1: run the hit-path part, 0:
//! skip it; by default only when N is 10,000), `ROUNDS` (wrk rounds, default 3),
//! `WRK_SECONDS` or `SECONDS` (seconds per wrk run, default 8), `SCALE_PIN` (1: for the
//! hit-path part only, tokenvend and this driver, which serves the bare baseline, are
//! moved to core 0 with `taskset -a -p` and wrk runs under `taskset -c 1`, so that the
//! bare handler and tokenvend each serve from the same single core; start-up, the fill
//! and the restart use every core, as in production. scale.sh sets it on machines with
//! 2 cores or more).

#[path = "bare.rs"]
mod bare;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use edx_issuer::Issuer;
use futures::StreamExt;
use serde_json::{json, Value};
use sqlx::{Connection, PgConnection};
use tokenvend::crypto::{MasterKey, Purpose};
use tokenvend::domain::TenantUid;
use tokenvend::store::{DatabaseUrl, Store};
use tokio::process::{Child, Command};

const DEFAULT_SERVER_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
const DATABASE_NAME: &str = "tokenvend_scale";
/// Rows per INSERT while seeding (13 arrays of this length per statement).
const SEED_BATCH: usize = 2_000;
/// Concurrent token requests while filling.
const FILL_CONCURRENCY: usize = 32;
/// The spread hit path picks among this many tenants (or N, if fewer).
const SPREAD_TENANTS: usize = 10_000;
const STATUS_SAMPLES: usize = 20;

/// How long after a burst (start-up, the fill, adoption) memory is read: a steady
/// process's, once the allocator's decay (jemalloc's 10 s) has returned the pages the
/// burst freed. The same wait for every build measured.
const SETTLE: Duration = Duration::from_secs(11);

/// Everything measured for one N; printed as markdown and as one JSON line.
#[derive(Default)]
struct Figures {
    tenants: usize,
    seed_seconds: f64,
    fill_seconds: f64,
    /// Ready with every tenant loaded, before any token (what the tenants alone take).
    rss_tenants_mib: f64,
    rss_holding_mib: f64,
    status_median_ms: f64,
    status_max_ms: f64,
    status_kb: f64,
    ready_seconds: f64,
    adopted_seconds: f64,
    rss_after_restart_mib: f64,
    edx_calls_during_restart: u64,
    hit: Option<HitFigures>,
}

struct HitFigures {
    rounds: Vec<HitRound>,
    single_over_bare: f64,
    spread_over_bare: f64,
    spread_over_single: f64,
}

/// One wrk run: requests per second and p99 in milliseconds.
#[derive(Clone, Copy)]
struct WrkResult {
    requests_per_second: f64,
    p99_ms: f64,
}

struct HitRound {
    bare: WrkResult,
    single: WrkResult,
    spread: WrkResult,
}

/// How the tokenvend child is started (the same way before and after the restart).
struct ChildSpec {
    binary: PathBuf,
    env: Vec<(&'static str, String)>,
    log: PathBuf,
    pin: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let tenants: usize = args
        .next()
        .context("usage: bench_scale N [TOKENVEND_BINARY]")?
        .parse()
        .context("N must be a whole number of tenants")?;
    ensure!(
        (1..=999_999).contains(&tenants),
        "N must be from 1 to 999999"
    );
    let binary = PathBuf::from(
        args.next()
            .unwrap_or_else(|| "target/release/tokenvend".to_owned()),
    );
    ensure!(
        binary.is_file(),
        "no tokenvend binary at {}",
        binary.display()
    );
    let spread = match std::env::var("SPREAD").as_deref() {
        Ok("1") => true,
        Ok("0") => false,
        _ => tenants == 10_000,
    };
    let rounds: usize = env_number("ROUNDS", 3)?;
    // scale.sh passes WRK_SECONDS: bash's own SECONDS counts the script's running time.
    let seconds: usize = match std::env::var("WRK_SECONDS") {
        Ok(_) => env_number("WRK_SECONDS", 8)?,
        Err(_) => env_number("SECONDS", 8)?,
    };
    let pin = std::env::var("SCALE_PIN").as_deref() == Ok("1");
    let server_url =
        std::env::var("SCALE_DATABASE_URL").unwrap_or_else(|_| DEFAULT_SERVER_URL.to_owned());
    let mut database_url = url::Url::parse(&server_url).context("SCALE_DATABASE_URL")?;
    database_url.set_path(&format!("/{DATABASE_NAME}"));
    let database_url = database_url.to_string();

    let dir = tempfile::Builder::new()
        .prefix("tokenvend-scale-")
        .tempdir()?;
    let issuer = Issuer::new(chrono::Utc::now);
    let issuer_server = issuer.start().await?;

    recreate_database(&server_url).await?;
    let (master_key, master_key_base64) = MasterKey::generate();
    // Random bytes as hex: the binary refuses an admin key that is not (see README).
    let admin_key = hex::encode(rand::random::<[u8; 32]>());

    let mut figures = Figures {
        tenants,
        ..Figures::default()
    };
    let started = Instant::now();
    seed(
        &database_url,
        &master_key,
        &issuer,
        &issuer_server.token_url(),
        tenants,
    )
    .await?;
    figures.seed_seconds = started.elapsed().as_secs_f64();
    eprintln!("seeded {tenants} tenants in {:.1} s", figures.seed_seconds);

    let port = free_port()?;
    let base = format!("http://127.0.0.1:{port}");
    let spec = ChildSpec {
        binary,
        env: vec![
            ("TOKENVEND_DATABASE_URL", database_url.clone()),
            ("TOKENVEND_MASTER_KEY", master_key_base64),
            ("TOKENVEND_ADMIN_KEY", admin_key.clone()),
            ("TOKENVEND_LISTEN", format!("127.0.0.1:{port}")),
            ("TOKENVEND_DATA_DIR", dir.path().display().to_string()),
            ("TOKENVEND_ALLOW_INSECURE_TOKEN_URLS", "1".to_owned()),
            // No upstream budget: the fill asks edX for N tokens as fast as it can.
            ("TOKENVEND_UPSTREAM_RATE", "0".to_owned()),
            // No per-key rate limit: wrk must measure the hit path, not the limiter.
            ("TOKENVEND_KEY_RATE", "0".to_owned()),
            ("RUST_LOG", "warn".to_owned()),
        ],
        log: dir.path().join("tokenvend.log"),
        pin,
    };
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(FILL_CONCURRENCY * 2)
        .timeout(Duration::from_secs(60))
        .build()?;

    let mut child = spawn(&spec)?;
    let outcome = measure(
        &mut figures,
        &mut child,
        &spec,
        &client,
        &base,
        &admin_key,
        &issuer,
        spread.then_some((rounds, seconds)),
    )
    .await;
    // Stopped and dropped whatever happened, so that a failed run leaves nothing behind.
    let stopped = stop(&mut child).await;
    if let Err(error) = &outcome {
        let log = std::fs::read_to_string(&spec.log).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(20).collect();
        eprintln!("tokenvend log (last lines):");
        for line in tail.iter().rev() {
            eprintln!("  {line}");
        }
        eprintln!("failed: {error:#}");
    }
    drop_database(&server_url).await?;
    outcome?;
    stopped?;

    print_figures(&figures)?;
    Ok(())
}

/// All the measured steps against a started child; `child` is replaced on the restart.
#[allow(clippy::too_many_arguments)]
async fn measure(
    figures: &mut Figures,
    child: &mut Child,
    spec: &ChildSpec,
    client: &reqwest::Client,
    base: &str,
    admin_key: &str,
    issuer: &Issuer,
    hit_path: Option<(usize, usize)>,
) -> anyhow::Result<()> {
    wait_ready(client, base, child, Duration::from_millis(10)).await?;
    tokio::time::sleep(SETTLE).await;
    figures.rss_tenants_mib = rss_mib(child)?;
    eprintln!(
        "RSS with tenants, no tokens: {:.1} MiB",
        figures.rss_tenants_mib
    );
    // The restart's "adopted" probe must see missing tokens when there are some: before
    // the fill every tenant's token is missing.
    let missing = format!("{base}/tokens/status?state=missing&limit=1");
    let page: Value = client
        .get(&missing)
        .bearer_auth(admin_key)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    ensure!(
        page["items"]
            .as_array()
            .is_some_and(|items| items.len() == 1),
        "before the fill, {missing} did not list a missing token: {page}"
    );

    // Every tenant's token, through the API, FILL_CONCURRENCY at a time.
    let started = Instant::now();
    let calls_before = issuer.total_calls();
    let mut answers = futures::stream::iter(0..figures.tenants)
        .map(|i| {
            let url = format!("{base}/tenants/{}/token", tenant_id(i));
            async move {
                let response = client.get(&url).bearer_auth(admin_key).send().await?;
                let status = response.status();
                response.bytes().await?;
                anyhow::Ok(status)
            }
        })
        .buffer_unordered(FILL_CONCURRENCY);
    let mut failed = 0usize;
    let mut first_failure = None;
    while let Some(answer) = answers.next().await {
        match answer {
            Ok(status) if status == 200 => {}
            other => {
                failed += 1;
                first_failure.get_or_insert_with(|| format!("{other:?}"));
            }
        }
    }
    ensure!(
        failed == 0,
        "{failed} of {} token requests failed (first: {})",
        figures.tenants,
        first_failure.unwrap_or_default()
    );
    figures.fill_seconds = started.elapsed().as_secs_f64();
    let fill_calls = issuer.total_calls() - calls_before;
    eprintln!(
        "filled {} tokens in {:.1} s ({fill_calls} edX calls)",
        figures.tenants, figures.fill_seconds
    );
    ensure!(
        fill_calls == figures.tenants as u64,
        "the fill made {fill_calls} edX calls for {} tenants",
        figures.tenants
    );

    tokio::time::sleep(SETTLE).await;
    figures.rss_holding_mib = rss_mib(child)?;
    eprintln!("RSS holding tokens: {:.1} MiB", figures.rss_holding_mib);

    // The dashboard's page: the first 1,000 statuses.
    let mut latencies = Vec::with_capacity(STATUS_SAMPLES);
    let mut body_bytes = 0;
    for _ in 0..STATUS_SAMPLES {
        let started = Instant::now();
        let response = client
            .get(format!("{base}/tokens/status?limit=1000"))
            .bearer_auth(admin_key)
            .send()
            .await?;
        ensure!(
            response.status() == 200,
            "/tokens/status: {}",
            response.status()
        );
        body_bytes = response.bytes().await?.len();
        latencies.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    latencies.sort_by(f64::total_cmp);
    figures.status_median_ms = median(&latencies);
    figures.status_max_ms = latencies.last().copied().unwrap_or_default();
    figures.status_kb = body_bytes as f64 / 1000.0;
    eprintln!(
        "/tokens/status?limit=1000: median {:.2} ms, max {:.2} ms, {:.0} KB",
        figures.status_median_ms, figures.status_max_ms, figures.status_kb
    );

    // Restart: a graceful stop, then the same binary and settings again.
    let calls_before = issuer.total_calls();
    stop(child).await?;
    let started = Instant::now();
    *child = spawn(spec)?;
    wait_ready(client, base, child, Duration::from_millis(5)).await?;
    figures.ready_seconds = started.elapsed().as_secs_f64();
    loop {
        ensure_running(child)?;
        if let Ok(response) = client.get(&missing).bearer_auth(admin_key).send().await {
            if response.status() == 200 {
                let page: Value = response.json().await?;
                if page["items"].as_array().is_some_and(Vec::is_empty) {
                    break;
                }
            }
        }
        ensure!(
            started.elapsed() < Duration::from_secs(600),
            "tokens not all adopted 10 minutes after the restart"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    figures.adopted_seconds = started.elapsed().as_secs_f64();
    tokio::time::sleep(SETTLE).await;
    figures.rss_after_restart_mib = rss_mib(child)?;
    figures.edx_calls_during_restart = issuer.total_calls() - calls_before;
    eprintln!(
        "restart: ready after {:.3} s, all adopted after {:.3} s, RSS {:.1} MiB, {} edX calls",
        figures.ready_seconds,
        figures.adopted_seconds,
        figures.rss_after_restart_mib,
        figures.edx_calls_during_restart
    );

    if let Some((rounds, seconds)) = hit_path {
        figures.hit = Some({
            if spec.pin {
                // The hit path is compared on one core: tokenvend's and the bare
                // handler's (this process, every thread); wrk gets the other.
                pin_to_core_0(child.id().context("tokenvend has exited")?)?;
                pin_to_core_0(std::process::id())?;
            }
            hit_path_spread(
                client,
                base,
                admin_key,
                figures.tenants,
                rounds,
                seconds,
                spec.pin,
            )
            .await?
        });
    }
    Ok(())
}

/// Moves every thread of process `pid` to core 0 (`taskset -a -p`: no unsafe code here).
fn pin_to_core_0(pid: u32) -> anyhow::Result<()> {
    let status = std::process::Command::new("taskset")
        .args(["-a", "-p", "-c", "0", &pid.to_string()])
        .stdout(Stdio::null())
        .status()?;
    ensure!(status.success(), "taskset could not pin process {pid}");
    Ok(())
}

/// wrk against a bare handler, one tenant and tenants picked at random, interleaved.
async fn hit_path_spread(
    client: &reqwest::Client,
    base: &str,
    admin_key: &str,
    tenants: usize,
    rounds: usize,
    seconds: usize,
    pin: bool,
) -> anyhow::Result<HitFigures> {
    let created = client
        .post(format!("{base}/api-keys"))
        .bearer_auth(admin_key)
        .json(&json!({"name": "scale", "scopes": ["token:*"]}))
        .send()
        .await?;
    ensure!(
        created.status() == 201 || created.status() == 200,
        "caller key not created: {}",
        created.status()
    );
    let created: Value = created.json().await?;
    let key = created["key"]
        .as_str()
        .context("no `key` in the created caller key")?
        .to_owned();

    let single_path = format!("/tenants/{}/token", tenant_id(0));
    let response = client
        .get(format!("{base}{single_path}"))
        .bearer_auth(&key)
        .send()
        .await?;
    ensure!(response.status() == 200, "no token: {}", response.status());
    let bytes = response.bytes().await?;
    let bare_url = bare::serve(&single_path, bytes).await?;

    let script = tempfile::Builder::new().suffix(".lua").tempfile()?;
    let spread_tenants = tenants.min(SPREAD_TENANTS);
    std::fs::write(
        script.path(),
        format!(
            r#"-- A random one of the first {spread_tenants} tenants per request.
local paths = {{}}
for i = 0, {last} do paths[i + 1] = string.format("/tenants/t%06d/token", i) end
wrk.headers["Authorization"] = "Bearer {key}"
function init(args) math.randomseed(os.time()) end
function request() return wrk.format("GET", paths[math.random(#paths)]) end
"#,
            last = spread_tenants - 1
        ),
    )?;
    let authorization = format!("Authorization: Bearer {key}");
    let single_url = format!("{base}{single_path}");
    let script_path = script.path().display().to_string();

    let mut all = Vec::with_capacity(rounds);
    for round in 1..=rounds {
        // Interleaved, so that the machine's noise falls on all three alike.
        let bare = wrk(pin, seconds, &[&bare_url]).await?;
        let single = wrk(pin, seconds, &["-H", &authorization, &single_url]).await?;
        let spread = wrk(pin, seconds, &["-s", &script_path, base]).await?;
        eprintln!(
            "round {round}: bare {:.0} req/s (p99 {:.2} ms), single {:.0} req/s (p99 {:.2} ms), \
             spread {:.0} req/s (p99 {:.2} ms)",
            bare.requests_per_second,
            bare.p99_ms,
            single.requests_per_second,
            single.p99_ms,
            spread.requests_per_second,
            spread.p99_ms
        );
        all.push(HitRound {
            bare,
            single,
            spread,
        });
    }
    let mean = |pick: fn(&HitRound) -> f64| all.iter().map(pick).sum::<f64>() / all.len() as f64;
    let bare = mean(|r| r.bare.requests_per_second);
    let single = mean(|r| r.single.requests_per_second);
    let spread = mean(|r| r.spread.requests_per_second);
    Ok(HitFigures {
        single_over_bare: single / bare,
        spread_over_bare: spread / bare,
        spread_over_single: spread / single,
        rounds: all,
    })
}

/// One `wrk -t1 -c32 --latency` run (under `taskset -c 1` when pinning); non-2xx answers
/// fail the run.
async fn wrk(pin: bool, seconds: usize, args: &[&str]) -> anyhow::Result<WrkResult> {
    let mut command = if pin {
        let mut command = Command::new("taskset");
        command.args(["-c", "1", "wrk"]);
        command
    } else {
        Command::new("wrk")
    };
    let output = command
        .args(["-t1", "-c32", &format!("-d{seconds}s"), "--latency"])
        .args(args)
        .output()
        .await
        .context("running wrk")?;
    let text = String::from_utf8_lossy(&output.stdout);
    ensure!(
        output.status.success(),
        "wrk failed: {text}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    if let Some(line) = text.lines().find(|l| l.contains("Non-2xx")) {
        bail!("wrk saw failures: {}", line.trim());
    }
    let field = |first: &str| {
        text.lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .find(|words| words.first() == Some(&first))
            .and_then(|words| words.get(1).map(|w| (*w).to_owned()))
    };
    let requests_per_second = field("Requests/sec:")
        .and_then(|v| v.parse().ok())
        .context("no Requests/sec in wrk's output")?;
    let p99_ms = field("99%")
        .and_then(|v| wrk_duration_ms(&v))
        .context("no 99% latency in wrk's output")?;
    Ok(WrkResult {
        requests_per_second,
        p99_ms,
    })
}

/// `812.00us`, `1.23ms`, `2.00s`, `1.00m` in milliseconds.
fn wrk_duration_ms(raw: &str) -> Option<f64> {
    let split = raw.find(|c: char| c.is_ascii_alphabetic())?;
    let (number, unit) = raw.split_at(split);
    let number: f64 = number.parse().ok()?;
    let factor = match unit {
        "us" => 0.001,
        "ms" => 1.0,
        "s" => 1000.0,
        "m" => 60_000.0,
        "h" => 3_600_000.0,
        _ => return None,
    };
    Some(number * factor)
}

/// `t000000`, `t000001`, …: ids that sort in creation order.
fn tenant_id(i: usize) -> String {
    format!("t{i:06}")
}

fn env_number(variable: &str, default: usize) -> anyhow::Result<usize> {
    match std::env::var(variable) {
        Ok(raw) if !raw.trim().is_empty() => raw
            .trim()
            .parse()
            .with_context(|| format!("{variable} must be a whole number")),
        _ => Ok(default),
    }
}

async fn recreate_database(server_url: &str) -> anyhow::Result<()> {
    let mut server = PgConnection::connect(server_url)
        .await
        .context("connecting to SCALE_DATABASE_URL")?;
    sqlx::raw_sql(&format!(
        "DROP DATABASE IF EXISTS {DATABASE_NAME} WITH (FORCE)"
    ))
    .execute(&mut server)
    .await?;
    sqlx::raw_sql(&format!("CREATE DATABASE {DATABASE_NAME}"))
        .execute(&mut server)
        .await?;
    server.close().await?;
    Ok(())
}

async fn drop_database(server_url: &str) -> anyhow::Result<()> {
    let mut server = PgConnection::connect(server_url).await?;
    sqlx::raw_sql(&format!(
        "DROP DATABASE IF EXISTS {DATABASE_NAME} WITH (FORCE)"
    ))
    .execute(&mut server)
    .await?;
    server.close().await?;
    Ok(())
}

/// Migrates the fresh database with tokenvend's own migrations, then writes N tenants in
/// batches (the API would take a transaction, an audit row and a cache update per tenant)
/// and registers each client on the issuer.
async fn seed(
    database_url: &str,
    master_key: &MasterKey,
    issuer: &Issuer,
    token_url: &str,
    tenants: usize,
) -> anyhow::Result<()> {
    let store =
        Store::connect(&DatabaseUrl::parse(database_url).map_err(anyhow::Error::msg)?).await?;
    store.migrate().await?;
    drop(store);

    let mut connection = PgConnection::connect(database_url).await?;
    let now = chrono::Utc::now();
    let ids: Vec<usize> = (0..tenants).collect();
    for batch in ids.chunks(SEED_BATCH) {
        let mut id = Vec::with_capacity(batch.len());
        let mut name = Vec::with_capacity(batch.len());
        let mut client_id = Vec::with_capacity(batch.len());
        let mut secret_key_id = Vec::with_capacity(batch.len());
        let mut secret_ciphertext = Vec::with_capacity(batch.len());
        let mut uid = Vec::with_capacity(batch.len());
        for &i in batch {
            let tenant = tenant_id(i);
            let client = format!("scale-{i}");
            let secret = format!("scale-secret-{}", uuid::Uuid::new_v4().simple());
            issuer.register(&client, &secret);
            let sealed = master_key.seal(Purpose::ClientSecret, &tenant, secret.as_bytes());
            name.push(format!("Scale tenant {i}"));
            id.push(tenant);
            client_id.push(client);
            secret_key_id.push(sealed.key_id);
            secret_ciphertext.push(sealed.bytes);
            uid.push(TenantUid::generate().to_string());
        }
        // Columns not named keep their defaults or NULL, as `Store::insert_tenant` leaves
        // them for a tenant without scope, JWKS URL, API base URL or previous secret.
        sqlx::query(
            "INSERT INTO tenants (id, name, client_id, secret_key_id, secret_ciphertext, \
             token_url, token_type, asymmetric_jwt, version, credentials_version, \
             created_at, updated_at, uid) \
             SELECT id, name, client_id, secret_key_id, secret_ciphertext, \
             $6, 'jwt', FALSE, 1, 1, $7, $7, uid \
             FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::bytea[], $8::text[]) \
             AS t(id, name, client_id, secret_key_id, secret_ciphertext, uid)",
        )
        .bind(&id)
        .bind(&name)
        .bind(&client_id)
        .bind(&secret_key_id)
        .bind(&secret_ciphertext)
        .bind(token_url)
        .bind(now)
        .bind(&uid)
        .execute(&mut connection)
        .await
        .context("seeding tenants")?;
    }
    connection.close().await?;
    Ok(())
}

/// A port that was free a moment ago (the child binds it; the same one after the restart).
fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

fn spawn(spec: &ChildSpec) -> anyhow::Result<Child> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&spec.log)?;
    let mut command = Command::new(&spec.binary);
    command
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(spec.env.iter().map(|(k, v)| (*k, v)))
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true);
    command
        .spawn()
        .with_context(|| format!("starting {}", spec.binary.display()))
}

fn ensure_running(child: &mut Child) -> anyhow::Result<()> {
    if let Some(status) = child.try_wait()? {
        bail!("tokenvend exited: {status}");
    }
    Ok(())
}

/// Polls `/readyz` every `every` until it answers 200 (at most two minutes).
async fn wait_ready(
    client: &reqwest::Client,
    base: &str,
    child: &mut Child,
    every: Duration,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let url = format!("{base}/readyz");
    loop {
        ensure_running(child)?;
        if let Ok(response) = client.get(&url).send().await {
            if response.status() == 200 {
                return Ok(());
            }
        }
        ensure!(
            started.elapsed() < Duration::from_secs(120),
            "tokenvend not ready after two minutes"
        );
        tokio::time::sleep(every).await;
    }
}

/// SIGTERM (through kill(1): the workspace forbids unsafe code) and a wait for the
/// graceful exit; killed if it takes more than 30 seconds.
async fn stop(child: &mut Child) -> anyhow::Result<()> {
    if child.try_wait()?.is_some() {
        return Ok(());
    }
    let pid = child.id().context("the child has no pid")?;
    let status = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .await?;
    ensure!(status.success(), "kill -TERM {pid} failed");
    match tokio::time::timeout(Duration::from_secs(30), child.wait()).await {
        Ok(exit) => {
            exit?;
            Ok(())
        }
        Err(_) => {
            child.kill().await?;
            bail!("tokenvend did not stop within 30 s of SIGTERM")
        }
    }
}

/// The child's resident memory (`VmRSS`) in MiB.
fn rss_mib(child: &Child) -> anyhow::Result<f64> {
    let pid = child.id().context("the child has no pid")?;
    let status = std::fs::read_to_string(Path::new("/proc").join(pid.to_string()).join("status"))?;
    let kib: f64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .context("no VmRSS in /proc/<pid>/status")?;
    Ok(kib / 1024.0)
}

fn median(sorted: &[f64]) -> f64 {
    match sorted.len() {
        0 => 0.0,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

fn print_figures(f: &Figures) -> anyhow::Result<()> {
    let cores = std::process::Command::new("nproc")
        .arg("--all")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|| "?".to_owned());
    let date = chrono::Utc::now().format("%Y-%m-%d");
    println!();
    println!(
        "tokenvend on PostgreSQL with {} tenants holding tokens, {cores} cores, {date}",
        f.tenants
    );
    println!();
    println!("| figure | value |");
    println!("| --- | --- |");
    println!("| tenants | {} |", f.tenants);
    println!("| seed (s, not measured) | {:.1} |", f.seed_seconds);
    println!(
        "| fill: every tenant's token, 32 at a time (s) | {:.1} |",
        f.fill_seconds
    );
    println!(
        "| RSS with the tenants loaded, no token yet (MiB) | {:.1} |",
        f.rss_tenants_mib
    );
    println!("| RSS holding tokens (MiB) | {:.1} |", f.rss_holding_mib);
    println!(
        "| `/tokens/status?limit=1000` (median ms, max ms, KB) | {:.2}, {:.2}, {:.0} |",
        f.status_median_ms, f.status_max_ms, f.status_kb
    );
    println!("| ready after restart (s) | {:.3} |", f.ready_seconds);
    println!(
        "| all tokens adopted after restart (s) | {:.3} |",
        f.adopted_seconds
    );
    println!(
        "| RSS after restart (MiB) | {:.1} |",
        f.rss_after_restart_mib
    );
    println!(
        "| edX calls during restart | {} |",
        f.edx_calls_during_restart
    );
    let mut hit_json = Value::Null;
    if let Some(hit) = &f.hit {
        println!(
            "| hit path: one tenant / bare (requests/s) | {:.0}% |",
            100.0 * hit.single_over_bare
        );
        println!(
            "| hit path: random of {} tenants / bare (requests/s) | {:.0}% |",
            f.tenants.min(SPREAD_TENANTS),
            100.0 * hit.spread_over_bare
        );
        println!(
            "| hit path: random tenants / one tenant (requests/s) | {:.0}% |",
            100.0 * hit.spread_over_single
        );
        println!();
        println!("| round | bare req/s | bare p99 | one tenant req/s | one tenant p99 | spread req/s | spread p99 |");
        println!("| --- | --- | --- | --- | --- | --- | --- |");
        for (i, r) in hit.rounds.iter().enumerate() {
            println!(
                "| {} | {:.0} | {:.2} ms | {:.0} | {:.2} ms | {:.0} | {:.2} ms |",
                i + 1,
                r.bare.requests_per_second,
                r.bare.p99_ms,
                r.single.requests_per_second,
                r.single.p99_ms,
                r.spread.requests_per_second,
                r.spread.p99_ms
            );
        }
        let run = |w: &WrkResult| json!({"rps": w.requests_per_second, "p99_ms": w.p99_ms});
        hit_json = json!({
            "rounds": hit.rounds.iter().map(|r| json!({
                "bare": run(&r.bare), "single": run(&r.single), "spread": run(&r.spread),
            })).collect::<Vec<_>>(),
            "single_over_bare": hit.single_over_bare,
            "spread_over_bare": hit.spread_over_bare,
            "spread_over_single": hit.spread_over_single,
        });
    }
    println!();
    let line = json!({
        "cores": cores,
        "date": date.to_string(),
        "tenants": f.tenants,
        "seed_seconds": f.seed_seconds,
        "fill_seconds": f.fill_seconds,
        "rss_tenants_mib": f.rss_tenants_mib,
        "rss_holding_tokens_mib": f.rss_holding_mib,
        "status_page_median_ms": f.status_median_ms,
        "status_page_max_ms": f.status_max_ms,
        "status_page_kb": f.status_kb,
        "ready_after_restart_seconds": f.ready_seconds,
        "adopted_after_restart_seconds": f.adopted_seconds,
        "rss_after_restart_mib": f.rss_after_restart_mib,
        "edx_calls_during_restart": f.edx_calls_during_restart,
        "hit_path": hit_json,
    });
    println!("{}", serde_json::to_string(&line)?);
    Ok(())
}
