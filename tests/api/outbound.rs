//! The outbound policy: which URLs a tenant may name, environment proxies ignored, the
//! warning for insecure URLs, and JWKS signature checks during a key rotation.

use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use edx_issuer::{Issuer, KeyPublishing};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::{assert_problem, eventually, json_body, spawn_app_with, tenant_body, TestApp};
use crate::helpers::{start_on_port_0, terminate, tokenvend, wait_healthy, Started};

async fn urls_that_embed_private_ipv4_or_name_a_port_are_refused(app: TestApp) {
    let backend = app.backend;
    drop(app);
    let app = spawn_app_with(backend, |s| s.allow_insecure_token_urls = false).await;
    let refused = [
        (
            "https://[::7f00:1]/oauth2/access_token",
            "IPv4-compatible loopback",
        ),
        (
            "https://[::ffff:127.0.0.1]/oauth2/access_token",
            "IPv4-mapped loopback",
        ),
        (
            "https://[::ffff:a9fe:a9fe]/latest/meta-data",
            "IPv4-mapped metadata address",
        ),
        (
            "https://[2002:7f00:1::]/oauth2/access_token",
            "6to4 of loopback",
        ),
        (
            "https://[2002:a00:1::1]/oauth2/access_token",
            "6to4 of 10.0.0.1",
        ),
        (
            "https://[64:ff9b::a00:1]/oauth2/access_token",
            "NAT64 of 10.0.0.1",
        ),
        (
            "https://[64:ff9b::7f00:1]/oauth2/access_token",
            "NAT64 of loopback",
        ),
        ("https://[fec0::1]/oauth2/access_token", "site-local"),
        ("https://[2001::1]/oauth2/access_token", "Teredo"),
        (
            "https://lms.example.com:8443/oauth2/access_token",
            "a port other than 443",
        ),
        (
            "https://lms.example.com:22/oauth2/access_token",
            "the ssh port",
        ),
    ];
    for field in ["token_url", "jwks_url"] {
        for (url, why) in refused {
            let mut body = tenant_body("acme");
            body[field] = json!(url);
            let problem = assert_problem(
                app.create_tenant(&body).await,
                StatusCode::UNPROCESSABLE_ENTITY,
            )
            .await;
            assert_eq!(problem["field"], field, "{why}: {url}: {problem}");
            assert_eq!(problem["type"], "urn:tokenvend:problem:validation");
            let detail = problem["detail"].as_str().unwrap();
            assert!(detail.contains(field), "{why}: {detail}");
        }
    }
    let list = json_body(
        app.admin(Method::GET, "/tenants", None).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(list["items"], json!([]), "nothing was created");

    // An explicit :443 is the default port, and fine.
    let mut body = tenant_body("acme");
    body["token_url"] = json!("https://lms.example.com:443/oauth2/access_token");
    body["jwks_url"] = json!("https://lms.example.com:443/oauth2/jwks.json");
    let created = json_body(app.create_tenant(&body).await, StatusCode::CREATED).await;
    assert_eq!(
        created["token_url"],
        "https://lms.example.com/oauth2/access_token"
    );
}

/// edX's defaults: no `kid` in the JWT header, and during a rotation a JWKS whose first
/// key is not the one that signed.
async fn a_token_without_kid_is_valid_when_its_key_is_second_in_the_jwks(app: TestApp) {
    app.issuer.set_key_publishing(KeyPublishing {
        decoy_key_first: true,
        omit_kid: true,
    });
    let jwks = app.issuer_server.jwks_url();
    app.issuer_tenant_with("acme", |b| b["jwks_url"] = json!(jwks))
        .await;
    let token = json_body(app.get_token("acme").await, StatusCode::OK).await;
    let header = jsonwebtoken::decode_header(token["access_token"].as_str().unwrap()).unwrap();
    assert_eq!(header.kid, None, "the issuer sends no kid");
    let mut signature = Value::Null;
    eventually("the token's signature to be checked", async || {
        signature = app.token_status("acme").await["signature"].clone();
        signature != "unverified"
    })
    .await;
    assert_eq!(signature, "valid");
}

crate::on_sqlite_only!(
    urls_that_embed_private_ipv4_or_name_a_port_are_refused,
    a_token_without_kid_is_valid_when_its_key_is_second_in_the_jwks,
);

const PROXY_VARIABLES: [&str; 6] = [
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "http_proxy",
    "https_proxy",
    "all_proxy",
];

/// A TCP listener standing in for a proxy: it counts the connections it is offered.
async fn counting_listener() -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let count = Arc::new(AtomicUsize::new(0));
    let counted = count.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            drop(stream);
        }
    });
    (url, count)
}

/// The real binary in `dir` with every proxy variable pointing at `proxy`; `extra`
/// settings on top. Returns it started, with its base URL, and its admin key.
async fn start_with_proxy(
    dir: &std::path::Path,
    proxy: &str,
    extra: &[(&str, &str)],
) -> (Started, String, String) {
    let mut cmd = tokenvend(dir);
    cmd.env_remove("NO_PROXY")
        .env_remove("no_proxy")
        .stdout(Stdio::null());
    for name in PROXY_VARIABLES {
        cmd.env(name, proxy);
    }
    for (name, value) in extra {
        cmd.env(name, value);
    }
    let mut started = start_on_port_0(&mut cmd).await;
    let base = started.base.clone();
    wait_healthy(&reqwest::Client::new(), &base, &mut started.child).await;
    let admin_key = std::fs::read_to_string(dir.join("data/admin.key"))
        .unwrap()
        .trim()
        .to_owned();
    (started, base, admin_key)
}

/// Stops it gracefully; returns everything it logged.
async fn stop(started: Started) -> String {
    let Started {
        mut child, logs, ..
    } = started;
    terminate(&child);
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status:?}");
    logs.wait_for_end()
}

async fn create_and_fetch(base: &str, admin_key: &str, token_url: &str) -> reqwest::Response {
    let client = reqwest::Client::new();
    let body = json!({
        "id": "acme", "name": "Acme", "client_id": "cid",
        "client_secret": "binary-proxy-secret", "token_url": token_url,
    });
    let resp = client
        .post(format!("{base}/tenants"))
        .bearer_auth(admin_key)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    client
        .get(format!("{base}/tenants/acme/token"))
        .bearer_auth(admin_key)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn environment_proxies_are_never_used_for_token_fetches() {
    let (proxy, offered) = counting_listener().await;
    let issuer = Issuer::new(chrono::Utc::now);
    issuer.register("cid", "binary-proxy-secret");
    let running = issuer.start().await.unwrap();

    // A local issuer (insecure URLs allowed): the token comes straight from it.
    let dir = tempfile::tempdir().unwrap();
    let insecure = [("TOKENVEND_ALLOW_INSECURE_TOKEN_URLS", "1")];
    let (child, base, admin_key) = start_with_proxy(dir.path(), &proxy, &insecure).await;
    let resp = create_and_fetch(&base, &admin_key, &running.token_url()).await;
    let token = json_body(resp, StatusCode::OK).await;
    assert!(token["access_token"]
        .as_str()
        .is_some_and(|t| !t.is_empty()));
    assert_eq!(issuer.calls("cid"), 1);
    stop(child).await;

    // The default policy: a name that does not resolve here is not handed to the proxy
    // to resolve and connect to in tokenvend's place.
    let dir = tempfile::tempdir().unwrap();
    let (child, base, admin_key) = start_with_proxy(dir.path(), &proxy, &[]).await;
    let url = "https://lms.tokenvend-proxy-test.example/oauth2/access_token";
    let resp = create_and_fetch(&base, &admin_key, url).await;
    assert!(resp.status().is_server_error(), "{}", resp.status());
    stop(child).await;

    assert_eq!(
        offered.load(Ordering::SeqCst),
        0,
        "the proxy was offered a connection"
    );
}

#[tokio::test]
async fn allowing_insecure_token_urls_logs_a_warning_at_start_up() {
    let unused_proxy = "http://127.0.0.1:9";
    for (extra, warned) in [
        (&[("TOKENVEND_ALLOW_INSECURE_TOKEN_URLS", "1")][..], true),
        (&[][..], false),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let (child, _, _) = start_with_proxy(dir.path(), unused_proxy, extra).await;
        let logs = stop(child).await;
        let warning = logs
            .lines()
            .find(|line| line.contains("TOKENVEND_ALLOW_INSECURE_TOKEN_URLS"));
        assert_eq!(warning.is_some(), warned, "{extra:?}: {logs}");
        if let Some(line) = warning {
            assert!(line.contains("WARN"), "{line}");
            assert!(line.contains("plain http"), "{line}");
        }
    }
}
