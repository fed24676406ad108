//! Soak benchmark: three `tokenvend` release binaries (child processes) on one PostgreSQL
//! database, 1,000 tenants of the local edX-like issuer (in this process) with short token
//! lifetimes, and a webhook receiver (in this process) subscribed to every event; then
//! mixed traffic for a given time with a fault every few minutes (see `soak/faults.rs`).
//! Prints a markdown report (see `soak/report.rs`) to stdout, progress to stderr.
//!
//! `bench_soak SECONDS TOKENVEND_BINARY`; `bench/soak.sh` builds it, makes a throwaway
//! PostgreSQL cluster and runs it. Environment: `SOAK_DATABASE_URL` (required),
//! `SOAK_PG_RESTART` (a script restarting that cluster, required), `SOAK_TENANTS` (1000),
//! `SOAK_LIFETIME` (token lifetime in seconds, 120), `SOAK_TOKEN_RATE` (token hits per
//! second, 200), `SOAK_PROXY_RATE` (proxied calls per second, 20).

#[path = "soak/faults.rs"]
mod faults;
#[path = "soak/fleet.rs"]
mod fleet;
#[path = "soak/receiver.rs"]
mod receiver;
#[path = "soak/report.rs"]
mod report;
#[path = "soak/setup.rs"]
mod setup;
#[path = "soak/stats.rs"]
mod stats;
#[path = "soak/traffic.rs"]
mod traffic;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use edx_issuer::Issuer;
use tokenvend::crypto::MasterKey;

const REPLICAS: usize = 3;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: bench_soak SECONDS TOKENVEND_BINARY";
    let seconds: u64 = args.next().context(usage)?.parse().context(usage)?;
    ensure!(seconds >= 120, "the soak runs 120 seconds at least");
    let binary = PathBuf::from(args.next().context(usage)?);
    ensure!(
        binary.is_file(),
        "no tokenvend binary at {}",
        binary.display()
    );
    let database_url = std::env::var("SOAK_DATABASE_URL").context("SOAK_DATABASE_URL")?;
    let pg_restart = PathBuf::from(std::env::var("SOAK_PG_RESTART").context("SOAK_PG_RESTART")?);
    let tenants = env_number("SOAK_TENANTS", 1000.0)? as usize;
    let lifetime = Duration::from_secs(env_number("SOAK_LIFETIME", 120.0)? as u64);
    let rates = traffic::Rates {
        token_per_second: env_number("SOAK_TOKEN_RATE", 200.0)?,
        proxy_per_second: env_number("SOAK_PROXY_RATE", 20.0)?,
        patch_per_second: 1.0,
        churn_every: Duration::from_secs(20),
        invalidate_every: Duration::from_secs(10),
    };
    let duration = Duration::from_secs(seconds);

    let dir = tempfile::Builder::new()
        .prefix("tokenvend-soak-")
        .tempdir()?;
    let issuer = Issuer::new(chrono::Utc::now);
    let issuer_server = issuer.start().await?;
    let receiver = receiver::Receiver::default();
    let hook_url = receiver.start().await?;
    let (_, master_key) = MasterKey::generate();
    let admin_key = hex::encode(rand::random::<[u8; 32]>());
    let env = vec![
        ("TOKENVEND_DATABASE_URL", database_url.clone()),
        ("TOKENVEND_MASTER_KEY", master_key),
        ("TOKENVEND_ADMIN_KEY", admin_key.clone()),
        ("TOKENVEND_ALLOW_INSECURE_TOKEN_URLS", "1".to_owned()),
        // The fleet needs ~700 token calls a minute (1,000 tenants, a refresh every ~86 s);
        // the budget (a minute's worth of burst) leaves room for the fill and the catch-up.
        ("TOKENVEND_UPSTREAM_RATE", setup::UPSTREAM_RATE.to_string()),
        ("RUST_LOG", "warn".to_owned()),
    ];
    let fleet = Arc::new(fleet::Fleet::new(
        REPLICAS,
        binary,
        env,
        dir.path().to_owned(),
    )?);
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(256)
        .build()?;

    let outcome = async {
        // One at a time: the first applies the migrations.
        for i in 0..REPLICAS {
            fleet.start(i).await?;
        }
        eprintln!("{REPLICAS} replicas ready");
        let prepared = setup::prepare(
            &client,
            &fleet,
            &issuer,
            &issuer_server.token_url(),
            &admin_key,
            (&hook_url, &receiver),
            tenants,
            lifetime,
        )
        .await?;
        let calls_before = issuer.total_calls();
        eprintln!(
            "{tenants} tenants hold tokens; {} webhook events so far; traffic for {seconds} s",
            receiver.unique()
        );
        // The run's clock starts now: the set-up and the fill are not part of it.
        let stats = Arc::new(stats::Stats::new());
        let traffic = Arc::new(traffic::Traffic::new(
            client.clone(),
            Arc::clone(&fleet),
            stats,
            issuer.clone(),
            issuer_server.token_url(),
            admin_key.clone(),
            prepared,
            lifetime,
            Instant::now() + duration,
        ));
        let schedule = faults::Schedule::for_run(duration, pg_restart);
        let every = schedule.every;
        let sampler = setup::sample(Arc::clone(&traffic));
        let (_, faulted, _) = tokio::join!(
            Arc::clone(&traffic).run(&rates),
            faults::run(Arc::clone(&traffic), schedule),
            sampler
        );
        // A fault that could not be injected (or undone) is reported, not fatal: the
        // figures gathered so far still say what happened.
        if let Err(error) = &faulted {
            eprintln!("fault injection failed: {error:#}");
        }
        let edx_calls = issuer.total_calls() - calls_before;
        let elapsed = traffic.stats.start.elapsed();
        eprintln!("traffic over; waiting for the webhook outbox to drain");
        let pending = setup::drain_outbox(&database_url).await?;
        let committed = setup::committed_events(&database_url).await?;
        let input = report::Input {
            replicas: REPLICAS,
            tenants,
            lifetime,
            duration: elapsed,
            rates: &rates,
            fault_every: every,
            warm_up: (duration / 5).min(Duration::from_secs(300)),
            edx_calls,
            tally: traffic.tally.lock().clone(),
            recorded: traffic.stats.take(),
            received: receiver.take(),
            committed,
            pending,
            fault_error: faulted.err().map(|e| format!("{e:#}")),
        };
        report::print(input)
    }
    .await;
    fleet.stop_all().await;
    if outcome.is_err() {
        for i in 0..REPLICAS {
            let log = std::fs::read_to_string(dir.path().join(format!("replica-{i}.log")))
                .unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(10).collect();
            eprintln!("replica {i} log (last lines):");
            for line in tail.iter().rev() {
                eprintln!("  {line}");
            }
        }
    }
    outcome
}

fn env_number(variable: &str, default: f64) -> anyhow::Result<f64> {
    match std::env::var(variable) {
        Ok(raw) if !raw.trim().is_empty() => raw
            .trim()
            .parse()
            .with_context(|| format!("{variable} must be a number")),
        _ => Ok(default),
    }
}
