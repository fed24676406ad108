//! Getting the fleet ready for the soak (the webhook subscription, caller keys, the
//! tenants and their first tokens) and the work around the run: sampling the edX call
//! counter and RSS, draining the webhook outbox and reading the events it committed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use edx_issuer::Issuer;
use futures::StreamExt;
use serde_json::{json, Value};
use sqlx::{Connection, PgConnection};

use crate::fleet::Fleet;
use crate::receiver::Receiver;
use crate::stats::RssSample;
use crate::traffic::{register, tenant_id, EdxMode, Traffic};

/// `TOKENVEND_UPSTREAM_RATE` for the fleet: token calls per minute to the issuer.
pub const UPSTREAM_RATE: u32 = 1200;
/// Requests at once while creating tenants and filling their tokens.
const SETUP_CONCURRENCY: usize = 16;
/// How long the outbox may take to drain after the traffic (a retry is due after 5 s,
/// 30 s, 2 min, …).
const DRAIN_FOR: Duration = Duration::from_secs(180);

/// What the traffic needs from the set-up.
pub struct Prepared {
    /// `token:*` and `proxy:*`: the token hits and proxied calls.
    pub caller_key: String,
    /// `token:*`: the invalidations (their own key, so that their caller fetch rate is
    /// theirs alone).
    pub invalidator_key: String,
    /// The issuer client of each base tenant, in order.
    pub clients: Vec<String>,
}

/// Subscribes the receiver to every event, makes the caller keys, creates the tenants
/// through the API (spread over the replicas) and fetches each one's first token.
#[allow(clippy::too_many_arguments)]
pub async fn prepare(
    client: &reqwest::Client,
    fleet: &Fleet,
    issuer: &Issuer,
    token_url: &str,
    admin_key: &str,
    (hook_url, receiver): (&str, &Receiver),
    tenants: usize,
    lifetime: Duration,
) -> anyhow::Result<Prepared> {
    let post = |path: &str, body: Value| {
        let url = format!("{}{path}", fleet.base(fleet.pick()));
        async move {
            let response = client
                .post(url)
                .bearer_auth(admin_key)
                .json(&body)
                .send()
                .await?;
            let status = response.status();
            let body: Value = response.json().await.unwrap_or(Value::Null);
            ensure!(status == 201, "{status}: {body}");
            anyhow::Ok(body)
        }
    };
    let webhook = post(
        "/webhooks",
        json!({"url": hook_url, "events": ["*"], "description": "soak receiver"}),
    )
    .await
    .context("creating the webhook")?;
    receiver.set_secret(webhook["secret"].as_str().unwrap_or_default())?;
    let mut keys = Vec::new();
    for (name, scopes) in [
        ("soak-traffic", json!(["token:*", "proxy:*"])),
        ("soak-invalidator", json!(["token:*"])),
    ] {
        let created = post("/api-keys", json!({"name": name, "scopes": scopes}))
            .await
            .context("creating a caller key")?;
        keys.push(created["key"].as_str().unwrap_or_default().to_owned());
    }

    let started = Instant::now();
    let clients: Vec<String> = (0..tenants)
        .map(|i| format!("soak-{}", tenant_id(i)))
        .collect();
    let mut created = futures::stream::iter(0..tenants)
        .map(|i| {
            let (client_id, secret) = (&clients[i], format!("secret-{i}-{}", uuid::Uuid::new_v4()));
            register(issuer, client_id, &secret, lifetime, &EdxMode::default());
            post(
                "/tenants",
                json!({
                    "id": tenant_id(i), "name": format!("Soak tenant {i}"),
                    "client_id": client_id, "client_secret": secret, "token_url": token_url,
                }),
            )
        })
        .buffer_unordered(SETUP_CONCURRENCY);
    while let Some(answer) = created.next().await {
        answer.context("creating a tenant")?;
    }
    drop(created);
    eprintln!(
        "{tenants} tenants created in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let started = Instant::now();
    let caller_key = &keys[0];
    let mut filled = futures::stream::iter(0..tenants)
        .map(|i| {
            let url = format!(
                "{}/tenants/{}/token",
                fleet.base(fleet.pick()),
                tenant_id(i)
            );
            async move {
                let response = client.get(url).bearer_auth(caller_key).send().await?;
                ensure!(response.status() == 200, "token: {}", response.status());
                anyhow::Ok(())
            }
        })
        .buffer_unordered(SETUP_CONCURRENCY);
    while let Some(answer) = filled.next().await {
        answer.context("filling a token")?;
    }
    drop(filled);
    eprintln!(
        "{tenants} tokens filled in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(Prepared {
        caller_key: keys[0].clone(),
        invalidator_key: keys[1].clone(),
        clients,
    })
}

/// Every second the issuer's call counter, every 10 s each replica's RSS, until the
/// traffic's deadline.
pub async fn sample(traffic: Arc<Traffic>) {
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    let mut n = 0u64;
    while Instant::now() < traffic.deadline {
        ticker.tick().await;
        let at = traffic.stats.elapsed();
        traffic.stats.edx_calls(at, traffic.issuer.total_calls());
        if n % 10 == 0 {
            let rss = traffic.fleet.rss();
            if n % 60 == 0 {
                let mib: Vec<String> = rss.iter().map(|r| format!("{:.1}", r.2)).collect();
                eprintln!(
                    "[{at:>5} s] edX calls so far {}; RSS MiB {}",
                    traffic.issuer.total_calls(),
                    mib.join(", ")
                );
            }
            for (replica, generation, mib) in rss {
                traffic.stats.rss(RssSample {
                    at,
                    replica,
                    generation,
                    mib,
                });
            }
        }
        n += 1;
    }
}

/// Waits until no delivery is pending (at most `DRAIN_FOR`); returns how many still are.
pub async fn drain_outbox(database_url: &str) -> anyhow::Result<i64> {
    let started = Instant::now();
    loop {
        let mut connection = PgConnection::connect(database_url).await?;
        let (pending,): (i64,) =
            sqlx::query_as("SELECT count(*) FROM webhook_deliveries WHERE status = 'pending'")
                .fetch_one(&mut connection)
                .await?;
        connection.close().await?;
        if pending == 0 || started.elapsed() > DRAIN_FOR {
            return Ok(pending);
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// Every event the service committed to its outbox: (id, type, delivery status).
pub async fn committed_events(database_url: &str) -> anyhow::Result<Vec<(String, String, String)>> {
    let mut connection = PgConnection::connect(database_url).await?;
    let rows = sqlx::query_as(
        "SELECT e.id, e.type, COALESCE(d.status, 'none') FROM webhook_events e \
         LEFT JOIN webhook_deliveries d ON d.event_id = e.id",
    )
    .fetch_all(&mut connection)
    .await?;
    connection.close().await?;
    Ok(rows)
}
