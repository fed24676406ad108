//! The dashboard in a real browser: headless Chromium driven over WebDriver
//! (chromedriver) against the running service.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use edx_issuer::Failure;
use fantoccini::{Client, ClientBuilder, Locator};
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::unused_port;
use crate::helpers::{eventually, poll_until, spawn_app, spawn_app_with, Backend};
use crate::webhooks::{register, Receiver};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// Where the test leaves its screenshot.
pub fn artifact(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// A chromedriver of the test's own, and a headless Chromium session through it.
pub async fn browser() -> (tokio::process::Child, Client) {
    assert!(
        Path::new(CHROMIUM).exists() && Path::new(CHROMEDRIVER).exists(),
        "the browser test needs Debian's chromium and chromium-driver (bash .ci/run installs them)"
    );
    // hyper-rustls under fantoccini: pick the crypto the rest of the build uses.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let port = unused_port();
    let driver = tokio::process::Command::new(CHROMEDRIVER)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let capabilities = json!({
        "goog:chromeOptions": {
            "binary": CHROMIUM,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1280,900"],
        }
    });
    let capabilities = capabilities.as_object().unwrap().clone();
    let mut session = None;
    let mut last_error = None;
    let connected = poll_until(Duration::from_secs(10), async || {
        match ClientBuilder::rustls()
            .unwrap()
            .capabilities(capabilities.clone())
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
        {
            Ok(client) => session = Some(client),
            Err(e) => last_error = Some(e),
        }
        session.is_some()
    })
    .await;
    match (connected, session) {
        (Some(_), Some(client)) => (driver, client),
        _ => panic!("cannot start a Chromium session: {last_error:?}"),
    }
}

pub async fn type_key(browser: &Client, key: &str) {
    let input = browser
        .wait()
        .for_element(Locator::Id("key"))
        .await
        .unwrap();
    input.clear().await.unwrap();
    input.send_keys(key).await.unwrap();
    browser
        .find(Locator::Id("show-tokens"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

/// Waits for a row per `(tenant, state)`, showing both.
pub async fn expect_rows(browser: &Client, rows: &[(&str, &str)]) {
    for (tenant, state) in rows {
        let row = browser
            .wait()
            .at_most(Duration::from_secs(10))
            .for_element(Locator::Css(&format!(
                "[data-tenant='{tenant}'][data-state='{state}']"
            )))
            .await
            .unwrap_or_else(|e| panic!("no {state} row for {tenant}: {e}"));
        let text = row.text().await.unwrap();
        assert!(text.contains(tenant) && text.contains(state), "{text}");
    }
}

#[tokio::test]
async fn the_dashboard_shows_every_tenant_in_a_real_browser() {
    let app = spawn_app(Backend::Sqlite).await;
    app.issuer_tenant("acme").await;
    let refused = app.issuer_tenant("initech").await;
    app.issuer
        .configure(&refused, |b| b.failure = Some(Failure::InvalidClient));
    app.issuer_tenant("umbrella").await; // never asked for: missing
    assert_eq!(app.get_token("acme").await.status(), StatusCode::OK);
    assert_eq!(
        app.get_token("initech").await.status(),
        StatusCode::BAD_GATEWAY
    );
    let token = app
        .get_token("acme")
        .await
        .json::<serde_json::Value>()
        .await
        .unwrap();
    let key = app.create_key(&["tenants:read"]).await;
    // Two calls through acme's proxy: one answered, one the API refuses (401).
    let proxy_key = app.create_key(&["proxy:acme"]).await;
    for (path, status) in [
        ("api/enterprise/v1/enterprise-customer/", StatusCode::OK),
        ("api/test/unauthorized", StatusCode::UNAUTHORIZED),
    ] {
        let resp = app
            .client
            .get(app.url(&format!("/tenants/acme/proxy/{path}")))
            .bearer_auth(&proxy_key)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), status);
    }

    let (_driver, browser) = browser().await;
    // One tenant a page: the page must follow `next_cursor` to show them all.
    browser.goto(&app.url("/dashboard?limit=1")).await.unwrap();

    // A wrong key gets a clear message.
    type_key(&browser, "tv_aaaaaaaaaaaa_not-a-real-key").await;
    let error = browser
        .wait()
        .for_element(Locator::Id("error"))
        .await
        .unwrap();
    let mut message = String::new();
    eventually("the page to show an error", async || {
        message = error.text().await.unwrap();
        !message.is_empty()
    })
    .await;
    assert!(
        message.contains("not accepted") && message.contains("401"),
        "{message:?}"
    );

    // The right key shows every tenant in its state.
    type_key(&browser, &key).await;
    expect_rows(
        &browser,
        &[
            ("acme", "valid"),
            ("initech", "failing"),
            ("umbrella", "missing"),
        ],
    )
    .await;
    let failing = browser
        .find(Locator::Css("[data-tenant='initech']"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        failing.contains("rejected"),
        "the last error is shown: {failing}"
    );
    let acme = browser
        .find(Locator::Css("[data-tenant='acme']"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        acme.contains("2 proxied") && acme.contains("401 "),
        "the proxy traffic and the last 401 are shown: {acme}"
    );

    // The upstream budget of the issuer's host: two requests taken from it.
    let budget = browser.find(Locator::Id("budget")).await.unwrap();
    let mut line = String::new();
    eventually("the page to show the upstream budget", async || {
        line = budget.text().await.unwrap();
        line.contains("left")
    })
    .await;
    assert!(
        line.contains("edX budget (100000/min)") && line.contains("99998 left"),
        "{line:?}"
    );

    let page = browser.source().await.unwrap();
    assert!(
        !page.contains(token["access_token"].as_str().unwrap()),
        "the page never holds a token"
    );
    let screenshot = browser.screenshot().await.unwrap();
    std::fs::write(artifact("dashboard.png"), &screenshot).unwrap();
    eprintln!(
        "dashboard screenshot: {}",
        artifact("dashboard.png").display()
    );
    browser.close().await.unwrap();
}

#[tokio::test]
async fn the_dashboard_names_failing_webhook_endpoints_to_an_admin() {
    // No retries: the first failed attempt fails the delivery for good.
    let app = spawn_app_with(Backend::Sqlite, |s| s.webhooks.retry_schedule = Vec::new()).await;
    let (receiver, url, _server) = Receiver::start().await;
    receiver.answer_next(&[500]);
    let (id, _) = register(&app, &url, &["tenant.created"]).await;
    app.issuer_tenant("acme").await;
    eventually("the delivery to fail", async || {
        let shown: serde_json::Value = app
            .admin(reqwest::Method::GET, &format!("/webhooks/{id}"), None)
            .await
            .json()
            .await
            .unwrap();
        shown["failed_deliveries"] == 1
    })
    .await;

    let (_driver, browser) = browser().await;
    browser.goto(&app.url("/dashboard")).await.unwrap();
    type_key(&browser, &app.admin_key).await;
    expect_rows(&browser, &[("acme", "missing")]).await;
    let line = browser
        .wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Css("#webhooks:not([hidden])"))
        .await
        .unwrap();
    let text = line.text().await.unwrap();
    assert!(
        text.contains(&url) && text.contains("1 failed delivery"),
        "{text:?}"
    );
    browser.close().await.unwrap();
}

#[tokio::test]
async fn the_dashboard_shows_edx_clock_offset_and_flags_bearer_tenants() {
    let app = spawn_app(Backend::Sqlite).await;
    let client = app.issuer_tenant("acme").await;
    app.issuer
        .configure(&client, |b| b.clock_offset = chrono::TimeDelta::seconds(45));
    app.issuer_tenant_with("initech", |b| b["token_type"] = json!("bearer"))
        .await;
    assert_eq!(app.get_token("acme").await.status(), StatusCode::OK);
    let key = app.create_key(&["tenants:read"]).await;

    let (_driver, browser) = browser().await;
    browser.goto(&app.url("/dashboard")).await.unwrap();
    type_key(&browser, &key).await;
    expect_rows(&browser, &[("acme", "valid"), ("initech", "missing")]).await;

    // The offset of the issuer's host, flagged as beyond the 30 s warning.
    let host = app.issuer_server.addr.to_string();
    let clock = browser
        .wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Css("#clock.is-off"))
        .await
        .unwrap_or_else(|e| panic!("no clock offset flagged: {e}"));
    let line = clock.text().await.unwrap();
    assert!(
        line.contains(&host) && line.contains("+45"),
        "the offset of {host}: {line:?}"
    );

    // The Bearer tenant carries a visible flag; the JWT tenant none.
    let flag = browser
        .find(Locator::Css(
            "[data-tenant='initech'] [data-warning='bearer-token-retiring']",
        ))
        .await
        .unwrap_or_else(|e| panic!("no Bearer flag on initech: {e}"));
    assert!(flag.is_displayed().await.unwrap(), "the flag is visible");
    let text = flag.text().await.unwrap();
    assert!(text.to_lowercase().contains("bearer"), "{text:?}");
    let acme_flags = browser
        .find_all(Locator::Css("[data-tenant='acme'] [data-warning]"))
        .await
        .unwrap();
    assert!(acme_flags.is_empty(), "no flag on a JWT tenant");
    let screenshot = browser.screenshot().await.unwrap();
    std::fs::write(artifact("dashboard-clock-bearer.png"), &screenshot).unwrap();
    browser.close().await.unwrap();
}

#[tokio::test]
async fn the_dashboard_shows_the_workload_identities_seen_lately_to_an_admin() {
    use crate::workload::{list_with, setup, token, WORKER};
    let app = spawn_app(Backend::Sqlite).await;
    app.issuer_tenant("acme").await;
    setup(&app).await;
    assert_eq!(
        list_with(&app, &token(&app, WORKER)).await,
        reqwest::StatusCode::OK
    );

    let (_driver, browser) = browser().await;
    browser.goto(&app.url("/dashboard")).await.unwrap();
    type_key(&browser, &app.admin_key).await;
    expect_rows(&browser, &[("acme", "missing")]).await;
    let line = browser
        .wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Css("#identities:not([hidden])"))
        .await
        .unwrap();
    let text = line.text().await.unwrap();
    assert!(
        text.contains("k8s") && text.contains(WORKER) && text.contains("last seen"),
        "{text:?}"
    );
    browser.close().await.unwrap();
}
