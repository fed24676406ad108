//! The real `tokenvend` binary: its zero-setup default, its start-up errors, `migrate`.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::json;

use crate::helpers::{start_on_port_0, terminate, tokenvend, wait_healthy, Started, BIN};

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test]
async fn with_no_settings_it_serves_on_embedded_sqlite_and_generates_its_keys() {
    let dir = tempfile::tempdir().unwrap();
    let Started {
        mut child,
        base,
        logs,
    } = start_on_port_0(
        tokenvend(dir.path())
            .env("RUST_LOG", "debug")
            .stdout(Stdio::null()),
    )
    .await;
    let client = reqwest::Client::new();
    wait_healthy(&client, &base, &mut child).await;

    let data = dir.path().join("data");
    assert!(data.join("tokenvend.db").exists());
    assert_eq!(mode(&data.join("master.key")), 0o600);
    assert_eq!(mode(&data.join("admin.key")), 0o600);
    assert_eq!(mode(&data), 0o700);
    let admin_key = std::fs::read_to_string(data.join("admin.key"))
        .unwrap()
        .trim()
        .to_owned();
    assert!(admin_key.starts_with("tv_"));

    let secret = format!("binary-secret-{}", uuid::Uuid::new_v4().simple());
    let resp = client
        .post(format!("{base}/tenants"))
        .bearer_auth(&admin_key)
        .json(&json!({"id": "acme", "name": "Acme", "client_id": "cid", "client_secret": secret}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let resp = client
        .get(format!("{base}/tenants/acme"))
        .bearer_auth(&admin_key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);

    terminate(&child);
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "graceful shutdown exits 0: {status:?}");
    let logs = logs.wait_for_end();
    assert!(
        logs.contains("admin.key"),
        "the key file's path is logged: {logs}"
    );
    assert!(logs.contains("request finished"), "requests are logged");
    for s in [admin_key.as_str(), secret.as_str()] {
        assert!(!logs.contains(s), "a log line contains a secret");
    }
    let master = std::fs::read_to_string(data.join("master.key")).unwrap();
    assert!(!logs.contains(master.trim()));

    // A second start reuses the generated keys.
    let Started {
        mut child, base, ..
    } = start_on_port_0(&mut tokenvend(dir.path())).await;
    wait_healthy(&client, &base, &mut child).await;
    let resp = client
        .get(format!("{base}/tenants/acme"))
        .bearer_auth(&admin_key)
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        200,
        "same admin key, same master key, same data"
    );
    terminate(&child);
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "graceful shutdown exits 0: {status:?}");
}

#[test]
fn a_bad_setting_stops_start_up_with_one_line_naming_it() {
    let zero_key = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
    let cases: &[(&[(&str, &str)], &str)] = &[
        (
            &[("TOKENVEND_MASTER_KEY", "not-base64!")],
            "TOKENVEND_MASTER_KEY",
        ),
        (
            &[("TOKENVEND_MASTER_KEY", zero_key)],
            "TOKENVEND_MASTER_KEY",
        ),
        (
            &[("TOKENVEND_MASTER_KEY", "c2hvcnQ=")],
            "TOKENVEND_MASTER_KEY",
        ),
        (
            &[(
                "TOKENVEND_DATABASE_URL",
                "postgres://postgres@127.0.0.1:5432/postgres",
            )],
            "TOKENVEND_MASTER_KEY",
        ),
        (
            &[("TOKENVEND_DATABASE_URL", "mysql://localhost/x")],
            "TOKENVEND_DATABASE_URL",
        ),
        (&[("DATABASE_URL", "redis://localhost")], "DATABASE_URL"),
        (
            &[("TOKENVEND_LISTEN", "not-an-address")],
            "TOKENVEND_LISTEN",
        ),
        (&[("TOKENVEND_LISTEN", "203.0.113.1:1")], "TOKENVEND_LISTEN"),
        (&[("TOKENVEND_ADMIN_KEY", "short")], "TOKENVEND_ADMIN_KEY"),
        (
            &[("TOKENVEND_ALLOW_INSECURE_TOKEN_URLS", "maybe")],
            "TOKENVEND_ALLOW_INSECURE_TOKEN_URLS",
        ),
        (&[("TOKENVEND_LOG_FORMAT", "xml")], "TOKENVEND_LOG_FORMAT"),
        (&[("TOKENVEND_KEY_RATE", "-1")], "TOKENVEND_KEY_RATE"),
        (
            &[("TOKENVEND_AUTH_FAILURES", "lots")],
            "TOKENVEND_AUTH_FAILURES",
        ),
        (
            &[
                (
                    "TOKENVEND_DATABASE_URL",
                    "postgres://postgres@127.0.0.1:1/none",
                ),
                (
                    "TOKENVEND_MASTER_KEY",
                    "MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTIzNDU2Nzg5MDE=",
                ),
                (
                    "TOKENVEND_ADMIN_KEY",
                    "5f0c9e1a7b3d2846e8a1c0f49b7d3e2a6c5b8f1d0e9a7c34",
                ),
            ],
            "TOKENVEND_DATABASE_URL",
        ),
    ];
    for (env, variable) in cases {
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = tokenvend(dir.path());
        cmd.env("TOKENVEND_LISTEN", "127.0.0.1:0");
        for (k, v) in *env {
            cmd.env(k, v);
        }
        let output = cmd.stdin(Stdio::null()).output().unwrap();
        assert!(!output.status.success(), "{env:?} should stop start-up");
        let stderr = String::from_utf8_lossy(&output.stderr);
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{env:?}: exactly one line, got {stderr}");
        assert!(lines[0].contains(variable), "{env:?}: {stderr}");
        for (_, v) in *env {
            if v.len() > 20 && !v.starts_with("postgres") {
                assert!(
                    !lines[0].contains(v),
                    "the error repeats a key value: {stderr}"
                );
            }
        }
    }
}

#[test]
fn migrate_prepares_the_database_and_exits() {
    let dir = tempfile::tempdir().unwrap();
    let output = tokenvend(dir.path()).arg("migrate").output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(dir.path().join("data/tokenvend.db").exists());
    let again = tokenvend(dir.path()).arg("migrate").output().unwrap();
    assert!(again.status.success(), "migrating twice is harmless");
}

#[test]
fn help_lists_the_subcommands_and_variables() {
    let output = Command::new(BIN).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&output.stdout);
    for word in [
        "serve",
        "migrate",
        "TOKENVEND_LISTEN",
        "TOKENVEND_DATABASE_URL",
        "TOKENVEND_MASTER_KEY",
    ] {
        assert!(help.contains(word), "--help lacks {word}: {help}");
    }
}
