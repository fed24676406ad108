//! Rotating the master key: the old key in `TOKENVEND_OLD_MASTER_KEYS`, `tokenvend rekey`
//! (the real binary, against the running app's database), then the new key alone.

use std::process::{Output, Stdio};

use reqwest::{Method, StatusCode};
use secrecy::ExposeSecret;
use serde_json::Value;
use tokenvend::crypto::{MasterKey, Purpose};
use tokenvend::startup::StartupError;
use tokenvend::store::{DatabaseUrl, SealedKind};

use crate::helpers::tokenvend;
use crate::helpers::{eventually, json_body, tenant_body, TestApp};
use crate::webhooks::{expected_signature, register, Receiver};

const TENANTS: [&str; 2] = ["acme", "globex"];

/// Restarts `app` with a master key the test knows the base64 of, on the empty store.
async fn with_known_key(app: &mut TestApp) -> (MasterKey, String) {
    let (key, encoded) = MasterKey::generate();
    app.settings.master_key = Some(key.clone());
    app.restart().await;
    (key, encoded)
}

/// Runs `tokenvend rekey` on the app's database with these keys.
async fn run_rekey(app: &TestApp, master: &str, old: Option<&str>) -> Output {
    let url = match app.settings.database_url.as_ref().unwrap() {
        DatabaseUrl::Postgres(url) => url.expose_secret().to_owned(),
        DatabaseUrl::Sqlite(url) => url.clone(),
    };
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = tokenvend(dir.path());
    cmd.arg("rekey")
        .env("TOKENVEND_DATABASE_URL", url)
        .env("TOKENVEND_MASTER_KEY", master)
        .env("TOKENVEND_DATA_DIR", dir.path().join("data"))
        .stdin(Stdio::null());
    if let Some(old) = old {
        cmd.env("TOKENVEND_OLD_MASTER_KEYS", old);
    }
    tokio::task::spawn_blocking(move || cmd.output())
        .await
        .unwrap()
        .unwrap()
}

async fn token_of(app: &TestApp, id: &str) -> String {
    let body = json_body(app.get_token(id).await, StatusCode::OK).await;
    body["access_token"].as_str().unwrap().to_owned()
}

async fn stored_under_other_keys(app: &TestApp, key: &MasterKey) -> i64 {
    app.raw_count(
        "SELECT (SELECT COUNT(*) FROM tenants WHERE secret_key_id <> $1) \
         + (SELECT COUNT(*) FROM tenants WHERE previous_secret_key_id <> $1) \
         + (SELECT COUNT(*) FROM tokens WHERE key_id <> $1) \
         + (SELECT COUNT(*) FROM webhooks WHERE secret_key_id <> $1)",
        &[key.id()],
    )
    .await
}

async fn the_master_key_rotates_online_and_no_secret_is_re_entered(mut app: TestApp) {
    let (k1, k1_b64) = with_known_key(&mut app).await;
    let mut clients = Vec::new();
    let mut tokens = Vec::new();
    for id in TENANTS {
        clients.push(app.issuer_tenant(id).await);
        tokens.push(token_of(&app, id).await);
    }
    let secrets: Vec<String> = clients.iter().map(|c| form_secret(&app, c)).collect();
    let (receiver, url, _server) = Receiver::start().await;
    let (webhook, webhook_secret) = register(&app, &url, &["tenant.deleted"]).await;
    let (k2, k2_b64) = MasterKey::generate();

    // The new key alone, before the rekey: start-up refuses, naming the key it lacks.
    let mut alone = app.settings.clone();
    alone.master_key = Some(k2.clone());
    let err = tokenvend::startup::Application::build(alone)
        .await
        .err()
        .expect("start-up refused without the old key");
    let StartupError::Config(err) = err else {
        panic!("a configuration error, not {err:?}")
    };
    assert_eq!(err.variable, "TOKENVEND_MASTER_KEY");
    assert!(err.message.contains(k1.id()), "{err}");
    assert!(err.message.contains("TOKENVEND_OLD_MASTER_KEYS"), "{err}");

    // The new key with the old one: held tokens are still served, edX is not asked.
    app.settings.master_key = Some(k2.clone());
    app.settings.old_master_keys = vec![k1.clone()];
    app.restart().await;
    for (i, id) in TENANTS.iter().enumerate() {
        assert_eq!(token_of(&app, id).await, tokens[i], "{id}'s held token");
        assert_eq!(app.issuer.calls(&clients[i]), 1, "{id}: no edX call");
    }

    // The rekey, while the app runs.
    let output = run_rekey(&app, &k2_b64, Some(&k1_b64)).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains(&format!(
            "re-sealed 2 client secrets, 2 tokens and 1 webhook secrets under key {}; 0 skipped",
            k2.id()
        )),
        "{stdout}"
    );
    for shown in [&stdout, &stderr] {
        for secret in [&k1_b64, &k2_b64]
            .into_iter()
            .chain(&secrets)
            .chain(&tokens)
            .chain([&webhook_secret])
        {
            assert!(!shown.contains(secret.as_str()), "rekey printed a secret");
        }
    }
    assert_eq!(stored_under_other_keys(&app, &k2).await, 0);
    for (i, id) in TENANTS.iter().enumerate() {
        assert_eq!(
            token_of(&app, id).await,
            tokens[i],
            "{id}: served during rekey"
        );
    }
    let events = json_body(
        app.admin(Method::GET, "/audit-events", None).await,
        StatusCode::OK,
    )
    .await;
    let rekey: Vec<&Value> = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "master_key.rekey")
        .collect();
    assert_eq!(rekey.len(), 1, "{events}");
    assert_eq!(rekey[0]["actor"], "cli");
    assert_eq!(rekey[0]["target"], k2.id());
    assert_eq!(
        rekey[0]["details"],
        serde_json::json!({"key_id": k2.id(), "client_secrets": 2, "previous_secrets": 0,
            "tokens": 2, "webhook_secrets": 1, "skipped": 0, "failed": 0})
    );

    // A second run has nothing left to do.
    let again = run_rekey(&app, &k2_b64, Some(&k1_b64)).await;
    assert!(again.status.success());
    assert!(String::from_utf8_lossy(&again.stdout)
        .contains("re-sealed 0 client secrets, 0 tokens and 0 webhook secrets"));

    // The new key alone: held tokens still served, and new fetches send the same secrets.
    app.settings.old_master_keys = Vec::new();
    app.restart().await;
    for (i, id) in TENANTS.iter().enumerate() {
        assert_eq!(token_of(&app, id).await, tokens[i], "{id}'s held token");
    }
    // The webhook still signs with the secret it was given.
    let resp = app
        .admin(Method::POST, &format!("/webhooks/{webhook}/test"), None)
        .await;
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    eventually("the test event", async || receiver.count() == 1).await;
    let got = &receiver.received()[0];
    assert_eq!(
        got.header("webhook-signature"),
        expected_signature(&webhook_secret, got)
    );
    app.advance(2 * 3600);
    for (i, id) in TENANTS.iter().enumerate() {
        let fresh = token_of(&app, id).await;
        assert_ne!(fresh, tokens[i], "{id}: a new token after expiry");
        let client = &clients[i];
        eventually("the new fetch", async || app.issuer.calls(client) >= 2).await;
        assert_eq!(form_secret(&app, client), secrets[i], "{id}: same secret");
    }
}

/// The client secret the issuer last received from `client_id`.
fn form_secret(app: &TestApp, client_id: &str) -> String {
    app.issuer
        .last_form(client_id)
        .unwrap()
        .into_iter()
        .find(|(k, _)| k == "client_secret")
        .map(|(_, v)| v)
        .expect("a client_secret in the form")
}

async fn rekey_exits_1_naming_the_tenant_and_key_it_cannot_open(mut app: TestApp) {
    let (k1, _) = with_known_key(&mut app).await;
    app.create_tenant(&tenant_body("acme")).await;
    let (_, k3_b64) = MasterKey::generate();
    let output = run_rekey(&app, &k3_b64, None).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("tenant acme") && stderr.contains(k1.id()),
        "{stderr}"
    );
    assert!(!stderr.contains(&k3_b64));
    assert_eq!(
        stored_under_other_keys(&app, &k1).await,
        0,
        "left as it was"
    );
}

async fn a_value_changed_since_the_rekey_read_it_is_not_overwritten(app: TestApp) {
    app.create_tenant(&tenant_body("acme")).await;
    let key = app.settings.master_key.clone().unwrap();
    let store = tokenvend::startup::open_store(&app.settings).await.unwrap();
    // As a rekey to another key would read it.
    let next = MasterKey::generate().0.with_old_keys([key.clone()]);
    let read = store
        .sealed_under_other_keys(SealedKind::ClientSecret, next.id())
        .await
        .unwrap();
    assert_eq!(read.len(), 1);
    let resp = app
        .admin(
            Method::PATCH,
            "/tenants/acme",
            Some(&serde_json::json!({"client_secret": "changed-meanwhile"})),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::OK);

    let resealed = next.seal(Purpose::ClientSecret, "acme", b"the old secret");
    assert!(!store.reseal(&read[0], &resealed).await.unwrap());
    let now = store
        .still_sealed_under_other_key(&read[0], next.id())
        .await
        .unwrap()
        .expect("still under the app's key");
    assert_eq!(
        key.open(Purpose::ClientSecret, "acme", &now.sealed)
            .unwrap(),
        b"changed-meanwhile"
    );
    store.close().await;
}

async fn the_previous_client_secret_is_re_sealed_too(mut app: TestApp) {
    let (k1, k1_b64) = with_known_key(&mut app).await;
    app.issuer_tenant("acme").await;
    // An unverified rotation keeps the old secret (sealed under k1) as a fallback.
    let resp = app
        .admin(
            Method::PATCH,
            "/tenants/acme",
            Some(&serde_json::json!({"client_secret": "a-secret-edx-refuses"})),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let (k2, k2_b64) = MasterKey::generate();
    app.settings.master_key = Some(k2.clone());
    app.settings.old_master_keys = vec![k1.clone()];
    app.restart().await;

    let output = run_rekey(&app, &k2_b64, Some(&k1_b64)).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    assert!(
        stdout.contains(
            "re-sealed 1 client secrets (and 1 previous secrets), 0 tokens and 0 webhook secrets"
        ),
        "{stdout}"
    );
    assert_eq!(stored_under_other_keys(&app, &k2).await, 0);

    // The new key alone starts (nothing is left under k1), and the previous secret opens.
    app.settings.old_master_keys = Vec::new();
    app.restart().await;
    let resp = app.get_token("acme").await;
    assert_eq!(
        resp.status(),
        StatusCode::OK,
        "served with the previous secret"
    );
    let status = json_body(
        app.admin(Method::GET, "/tenants/acme/token/status", None)
            .await,
        StatusCode::OK,
    )
    .await;
    assert!(
        status["last_error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("serving with the previous secret")),
        "{status}"
    );
}

crate::on_both_backends!(
    the_previous_client_secret_is_re_sealed_too,
    the_master_key_rotates_online_and_no_secret_is_re_entered,
    rekey_exits_1_naming_the_tenant_and_key_it_cannot_open,
    a_value_changed_since_the_rekey_read_it_is_not_overwritten,
);
