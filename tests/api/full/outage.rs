//! The service rides out a PostgreSQL outage: cached tokens keep flowing, readiness and
//! writes say the store is down quickly, and everything recovers without a restart.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::Value;

use super::cluster::Cluster;
use crate::helpers::{
    assert_problem, eventually_within, spawn_app_on_postgres, tenant_body, TestApp,
};

/// Requests a cached tenant's token from `workers` loops until `stop` is set; returns
/// counters of answers that were 200 and that were not.
fn load(
    app: &TestApp,
    workers: usize,
    stop: Arc<AtomicBool>,
) -> (
    Arc<AtomicU64>,
    Arc<AtomicU64>,
    Vec<tokio::task::JoinHandle<()>>,
) {
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let handles = (0..workers)
        .map(|_| {
            let (client, url, key) = (
                app.client.clone(),
                app.url("/tenants/acme/token"),
                app.admin_key.clone(),
            );
            let (ok, failed, stop) = (ok.clone(), failed.clone(), stop.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let status = client
                        .get(&url)
                        .bearer_auth(&key)
                        .send()
                        .await
                        .map(|r| r.status());
                    let counter = if matches!(status, Ok(StatusCode::OK)) {
                        &ok
                    } else {
                        &failed
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    (ok, failed, handles)
}

async fn status_of(app: &TestApp, path: &str) -> StatusCode {
    app.client.get(app.url(path)).send().await.unwrap().status()
}

#[tokio::test]
async fn the_service_rides_out_a_database_outage() {
    let cluster = Cluster::start_new().await;
    let mut app = spawn_app_on_postgres(cluster.url()).await;
    let client = app.issuer_tenant("acme").await;
    // Known to the service, its token never asked for yet.
    let beta = app.issuer_tenant("beta").await;
    assert_eq!(app.get_token("acme").await.status(), StatusCode::OK);

    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed, workers) = load(&app, 4, stop.clone());
    tokio::time::sleep(Duration::from_millis(200)).await;

    cluster.stop().await;

    // Readiness says so at once.
    let started = Instant::now();
    let resp = app.client.get(app.url("/readyz")).send().await.unwrap();
    let body = assert_problem(resp, StatusCode::SERVICE_UNAVAILABLE).await;
    assert!(started.elapsed() < Duration::from_secs(2), "{body}");

    // A write answers 503 within 2 s, and loses nothing once the store is back.
    let started = Instant::now();
    let resp = app.create_tenant(&tenant_body("gamma")).await;
    let took = started.elapsed();
    let body = assert_problem(resp, StatusCode::SERVICE_UNAVAILABLE).await;
    assert!(took < Duration::from_secs(2), "the write took {took:?}");
    assert_eq!(body["type"], "urn:tokenvend:problem:store-unavailable");

    // A token that must be fetched is still served, though it cannot be stored.
    let resp = app.get_token("beta").await;
    assert_eq!(resp.status(), StatusCode::OK, "a new token is served");
    assert_eq!(app.issuer.calls(&beta), 1);

    let served_during = ok.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        ok.load(Ordering::Relaxed) > served_during,
        "cached tokens keep flowing while the store is down"
    );

    cluster.start().await;

    // Readiness and writes come back without a restart.
    eventually_within(Duration::from_secs(10), "ready again", async || {
        status_of(&app, "/readyz").await == StatusCode::OK
    })
    .await;
    let resp = app.create_tenant(&tenant_body("gamma")).await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    let resp = app
        .admin(reqwest::Method::GET, "/tenants/gamma", None)
        .await;
    let tenant: Value = resp.json().await.unwrap();
    assert_eq!(tenant["id"], "gamma");

    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        worker.await.unwrap();
    }
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "a cached token request failed during the outage"
    );
    assert!(ok.load(Ordering::Relaxed) > 0);
    // The acme token was cached all along: never fetched again while the store was down.
    assert_eq!(app.issuer.calls(&client), 1);
    app.stop().await;
}
