//! The real binary's operator commands (`tenants`, `keys`, `token`) and its JSON logs.

use std::process::Stdio;

use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;

use crate::helpers::{json_body, spawn_app, Backend, TestApp};
use crate::helpers::{start_on_port_0, terminate, tokenvend, unused_port, wait_healthy, Started};

struct Ran {
    ok: bool,
    stdout: String,
    stderr: String,
}

/// Runs `tokenvend <args>` against `app` with `key`, feeding `stdin`.
async fn cli(
    app: &TestApp,
    key: &str,
    args: &[&str],
    stdin: Option<&str>,
    env: &[(&str, &str)],
) -> Ran {
    let dir = tempfile::tempdir().unwrap();
    let mut command = tokio::process::Command::from(tokenvend(dir.path()));
    command
        .args(args)
        .env("TOKENVEND_URL", &app.address)
        .env("TOKENVEND_KEY", key)
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).await.unwrap();
    }
    drop(input);
    let output = child.wait_with_output().await.unwrap();
    Ran {
        ok: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

fn parse(ran: &Ran) -> Value {
    assert!(ran.ok, "{}", ran.stderr);
    serde_json::from_str(&ran.stdout).unwrap_or_else(|e| panic!("{e}: {}", ran.stdout))
}

#[tokio::test]
async fn tenants_add_verifies_the_credentials_unless_told_not_to() {
    let app = spawn_app(Backend::Sqlite).await;
    let admin = app.admin_key.clone();
    let token_url = app.issuer_server.token_url();
    app.issuer.register("cli-verified", "the-secret-edx-knows");
    let add = |id: &'static str, extra: &'static [&'static str]| {
        let mut args = vec!["tenants", "add", id, "--client-id", "cli-verified"];
        args.extend(["--token-url", token_url.as_str()]);
        args.extend(extra);
        args
    };

    let ran = cli(
        &app,
        &admin,
        &add("refused", &[]),
        Some("a-wrong-secret\n"),
        &[],
    )
    .await;
    assert!(!ran.ok, "{}", ran.stdout);
    assert!(
        ran.stderr.contains("422") && ran.stderr.contains("invalid_client"),
        "{}",
        ran.stderr
    );
    assert!(ran.stderr.contains("--no-verify"), "{}", ran.stderr);
    let resp = app
        .admin(reqwest::Method::GET, "/tenants/refused", None)
        .await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND, "nothing stored");
    assert_eq!(app.issuer.calls("cli-verified"), 1);

    let ran = cli(
        &app,
        &admin,
        &add("unchecked", &["--no-verify"]),
        Some("a-wrong-secret\n"),
        &[],
    )
    .await;
    assert!(ran.ok, "{}", ran.stderr);
    assert_eq!(app.issuer.calls("cli-verified"), 1, "edX was not asked");

    // edX refused this client id moments ago: it is verified again only after the
    // minimum refresh interval (5 s in tests).
    app.advance(6);
    let ran = cli(
        &app,
        &admin,
        &add("checked", &[]),
        Some("the-secret-edx-knows\n"),
        &[],
    )
    .await;
    assert!(ran.ok, "{}", ran.stderr);
    assert_eq!(app.issuer.calls("cli-verified"), 2);
    json_body(app.get_token("checked").await, StatusCode::OK).await;
    assert_eq!(
        app.issuer.calls("cli-verified"),
        2,
        "the verified token is served"
    );
}

#[tokio::test]
async fn every_operator_command_works_against_a_running_service() {
    let app = spawn_app(Backend::Sqlite).await;
    let admin = app.admin_key.clone();
    let token_url = app.issuer_server.token_url();

    // tenants add: the secret from the environment, or from standard input.
    app.issuer.register("cli-acme", "acme-secret-from-env");
    let ran = cli(
        &app,
        &admin,
        &[
            "tenants",
            "add",
            "acme",
            "--name",
            "Acme Corp",
            "--client-id",
            "cli-acme",
            "--token-url",
            &token_url,
            "--scope",
            "read write",
        ],
        None,
        &[("TOKENVEND_CLIENT_SECRET", "acme-secret-from-env")],
    )
    .await;
    assert!(ran.ok, "{}", ran.stderr);
    assert_eq!(ran.stdout.trim(), "added tenant acme");
    app.issuer.register("cli-beta", "beta-secret-from-stdin");
    let ran = cli(
        &app,
        &admin,
        &[
            "tenants",
            "add",
            "beta",
            "--client-id",
            "cli-beta",
            "--token-url",
            &token_url,
            "--json",
        ],
        Some("beta-secret-from-stdin\n"),
        &[],
    )
    .await;
    assert_eq!(parse(&ran)["name"], "beta");
    assert!(!ran.stdout.contains("beta-secret-from-stdin"));

    // tenants list / show.
    let ran = cli(&app, &admin, &["tenants", "list"], None, &[]).await;
    assert!(
        ran.ok && ran.stdout.contains("acme") && ran.stdout.contains("Acme Corp"),
        "{}",
        ran.stdout
    );
    let list = parse(&cli(&app, &admin, &["tenants", "list", "--json"], None, &[]).await);
    assert_eq!(list["items"].as_array().unwrap().len(), 2);

    // token: the bare token for scripts, or the whole answer.
    let ran = cli(&app, &admin, &["token", "acme"], None, &[]).await;
    assert!(ran.ok, "{}", ran.stderr);
    let served = json_body(app.get_token("acme").await, StatusCode::OK).await;
    assert_eq!(ran.stdout.trim(), served["access_token"].as_str().unwrap());
    let answer = parse(
        &cli(
            &app,
            &admin,
            &["token", "acme", "--json", "--min-ttl", "60"],
            None,
            &[],
        )
        .await,
    );
    assert_eq!(answer["access_token"], served["access_token"]);
    assert_eq!(
        app.issuer.calls("cli-acme"),
        1,
        "the secret from the environment worked"
    );

    let ran = cli(&app, &admin, &["tenants", "show", "acme"], None, &[]).await;
    assert!(
        ran.ok && ran.stdout.contains("token state") && ran.stdout.contains("valid"),
        "{}",
        ran.stdout
    );
    let shown = parse(
        &cli(
            &app,
            &admin,
            &["tenants", "show", "acme", "--json"],
            None,
            &[],
        )
        .await,
    );
    assert_eq!(shown["tenant"]["client_id"], "cli-acme");
    assert_eq!(shown["token_status"]["state"], "valid");

    // keys create / list / revoke.
    let ran = cli(
        &app,
        &admin,
        &[
            "keys",
            "create",
            "--name",
            "billing",
            "--scope",
            "token:acme",
        ],
        None,
        &[],
    )
    .await;
    assert!(
        ran.ok && ran.stdout.contains("shown this once"),
        "{}",
        ran.stdout
    );
    let created = parse(
        &cli(
            &app,
            &admin,
            &[
                "keys",
                "create",
                "--name",
                "reports",
                "--scope",
                "tenants:read",
                "--scope",
                "token:beta",
                "--json",
            ],
            None,
            &[],
        )
        .await,
    );
    let key = created["key"].as_str().unwrap().to_owned();
    let id = created["id"].as_str().unwrap().to_owned();
    let ran = cli(&app, &admin, &["keys", "list"], None, &[]).await;
    assert!(
        ran.ok && ran.stdout.contains(&id) && ran.stdout.contains("billing"),
        "{}",
        ran.stdout
    );
    assert!(!ran.stdout.contains("tv_"), "keys list never shows a key");
    let listed = parse(&cli(&app, &admin, &["keys", "list", "--json"], None, &[]).await);
    assert_eq!(listed["items"].as_array().unwrap().len(), 2);
    let ran = cli(&app, &key, &["tenants", "list"], None, &[]).await;
    assert!(ran.ok, "the new key works: {}", ran.stderr);
    let ran = cli(&app, &admin, &["keys", "revoke", &id], None, &[]).await;
    assert_eq!(ran.stdout.trim(), format!("revoked key {id}"));

    // Failures, in plain words, with exit status 1.
    let ran = cli(&app, &key, &["tenants", "list"], None, &[]).await;
    assert!(
        !ran.ok && ran.stderr.contains("401") && ran.stderr.contains("TOKENVEND_KEY"),
        "{}",
        ran.stderr
    );
    let ran = cli(&app, &admin, &["tenants", "show", "nobody"], None, &[]).await;
    assert!(!ran.ok && ran.stderr.contains("404"), "{}", ran.stderr);
    let ran = cli(
        &app,
        &admin,
        &["tenants", "add", "Bad Id", "--client-id", "x"],
        Some("s\n"),
        &[],
    )
    .await;
    assert!(
        !ran.ok && ran.stderr.contains("422") && ran.stderr.contains("field id"),
        "{}",
        ran.stderr
    );
    let ran = cli(&app, &admin, &["token", "../api-keys"], None, &[]).await;
    assert!(
        !ran.ok && ran.stderr.contains("not a tenant or key id"),
        "{}",
        ran.stderr
    );
    let unreachable = format!("http://127.0.0.1:{}", unused_port());
    let ran = cli(
        &app,
        &admin,
        &["tenants", "list"],
        None,
        &[("TOKENVEND_URL", unreachable.as_str())],
    )
    .await;
    assert!(
        !ran.ok && ran.stderr.contains("cannot reach tokenvend"),
        "{}",
        ran.stderr
    );

    // tenants rm.
    let ran = cli(&app, &admin, &["tenants", "rm", "beta"], None, &[]).await;
    assert_eq!(ran.stdout.trim(), "deleted tenant beta");
    let list = parse(&cli(&app, &admin, &["tenants", "list", "--json"], None, &[]).await);
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
}

/// JSON logs carry request id, route, tenant, status and latency; no line, at debug,
/// holds a secret, a caller key or a token.
#[tokio::test]
async fn json_logs_carry_the_request_and_never_a_secret() {
    let app = spawn_app(Backend::Sqlite).await; // for its local issuer
    app.issuer
        .register("logs-client", "logs-client-secret-7f3a9");
    let dir = tempfile::tempdir().unwrap();
    let admin_key = hex::encode(rand::random::<[u8; 32]>());
    let Started {
        mut child,
        base,
        logs,
    } = start_on_port_0(
        tokenvend(dir.path())
            .env("TOKENVEND_ADMIN_KEY", &admin_key)
            .env("TOKENVEND_ALLOW_INSECURE_TOKEN_URLS", "1")
            .env("TOKENVEND_LOG_FORMAT", "json")
            .env("RUST_LOG", "debug")
            .stdout(Stdio::null()),
    )
    .await;
    let client = reqwest::Client::new();
    wait_healthy(&client, &base, &mut child).await;

    let resp = client.post(format!("{base}/tenants")).bearer_auth(&admin_key)
        .json(&json!({"id": "acme", "name": "Acme", "client_id": "logs-client",
            "client_secret": "logs-client-secret-7f3a9", "token_url": app.issuer_server.token_url()}))
        .send().await.unwrap();
    assert_eq!(resp.status(), 201);
    let created: Value = client
        .post(format!("{base}/api-keys"))
        .bearer_auth(&admin_key)
        .json(&json!({"name": "svc", "scopes": ["token:acme"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let key = created["key"].as_str().unwrap().to_owned();
    let token: Value = client
        .get(format!("{base}/tenants/acme/token"))
        .bearer_auth(&key)
        .header("x-request-id", "trace-me-123")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = token["access_token"].as_str().unwrap().to_owned();
    let resp = client
        .post(format!("{base}/oauth2/access_token"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", "acme"),
            ("client_secret", key.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let resp = client
        .get(format!("{base}/tenants/acme"))
        .bearer_auth("tv_aaaaaaaaaaaa_wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);

    terminate(&child);
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success());
    let logs = logs.wait_for_end();
    let lines: Vec<Value> = logs
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let finished: Vec<&Value> = lines
        .iter()
        .filter(|l| l["message"] == "request finished")
        .collect();
    assert!(finished.len() >= 5, "{logs}");
    for line in &finished {
        assert!(line["span"]["request_id"].is_string(), "{line}");
        assert!(line["span"]["route"].is_string(), "{line}");
        assert!(
            line["status"].is_u64() && line["latency_ms"].is_f64(),
            "{line}"
        );
    }
    let token_line = finished
        .iter()
        .find(|l| l["span"]["request_id"] == "trace-me-123")
        .expect("the token request");
    assert_eq!(token_line["span"]["tenant"], "acme");
    assert_eq!(token_line["span"]["route"], "/tenants/{id}/token");
    assert_eq!(token_line["status"], 200);
    let oauth_line = finished
        .iter()
        .find(|l| l["span"]["route"] == "/oauth2/access_token")
        .unwrap();
    assert_eq!(oauth_line["span"]["tenant"], "acme");
    for secret in [
        "logs-client-secret-7f3a9",
        admin_key.as_str(),
        key.as_str(),
        token.as_str(),
    ] {
        assert!(!logs.contains(secret), "a log line holds a secret or token");
    }
    // Not even the token's signature or payload part alone.
    for part in token.split('.').skip(1) {
        assert!(!logs.contains(part));
    }
}

/// `keys list` follows `next_cursor` through every page (the list is paged by 500 at most).
#[tokio::test]
async fn keys_list_shows_every_key_across_pages() {
    let app = spawn_app(Backend::Sqlite).await;
    let stored = app
        .raw_execute(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1234) \
             INSERT INTO api_keys (id, name, scopes, key_hash, created_at) \
             SELECT printf('bulk%08d', i), 'bulk', 'tenants:read', randomblob(32), \
             strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now') FROM n",
            &[],
        )
        .await;
    assert_eq!(stored, 1234);
    let listed = parse(&cli(&app, &app.admin_key, &["keys", "list", "--json"], None, &[]).await);
    let ids: std::collections::BTreeSet<&str> = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 1234, "every key, each once");
}
