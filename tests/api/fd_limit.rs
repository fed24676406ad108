//! The real binary under a low open-file limit: it raises its soft limit to the hard one
//! and keeps `TOKENVEND_MAX_CONNECTIONS` below it, so that a flood of idle connections
//! cannot take the descriptors an edX call needs.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use edx_issuer::Issuer;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{start_on_port_0, terminate, tokenvend, wait_healthy, Started};

/// The limits the service starts under: soft 128 (below the flood), hard 512.
const SOFT_LIMIT: u32 = 128;
const HARD_LIMIT: u32 = 512;
/// Idle connections opened at once: more than the soft limit, and more than the cap.
const FLOOD: usize = 200;

/// `tokenvend` under `sh` with the open-file limits lowered first.
fn tokenvend_under_limits(dir: &Path) -> Command {
    let cmd = tokenvend(dir);
    let mut shell = Command::new("sh");
    shell
        .current_dir(dir)
        .arg("-c")
        .arg(format!(
            "ulimit -Sn {SOFT_LIMIT} && ulimit -Hn {HARD_LIMIT} && exec \"$0\""
        ))
        .arg(cmd.get_program());
    for (name, value) in cmd.get_envs() {
        match value {
            Some(value) => shell.env(name, value),
            None => shell.env_remove(name),
        };
    }
    shell
}

/// One request on an already open connection; returns the status line.
async fn request_on(stream: &mut TcpStream, path: &str, key: &str) -> String {
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}\r\n\
         Connection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(15), stream.read_to_end(&mut response))
        .await
        .expect("the response arrives")
        .unwrap();
    let response = String::from_utf8_lossy(&response);
    response.lines().next().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn idle_connections_beyond_the_open_file_limit_leave_room_for_edx_calls() {
    let issuer = Issuer::new(chrono::Utc::now);
    let issuer_server = issuer.start().await.unwrap();
    let secret = format!("fd-secret-{}", uuid::Uuid::new_v4().simple());
    issuer.register("client-fd", &secret);

    let dir = tempfile::tempdir().unwrap();
    let admin_key = hex::encode(rand::random::<[u8; 32]>());
    let Started {
        mut child,
        base,
        logs,
    } = start_on_port_0(
        tokenvend_under_limits(dir.path())
            .env("TOKENVEND_ADMIN_KEY", &admin_key)
            .env("TOKENVEND_ALLOW_INSECURE_TOKEN_URLS", "1")
            // Longer than the test: the idle connections stay open throughout.
            .env("TOKENVEND_HEADER_TIMEOUT", "120")
            .stdout(Stdio::null()),
    )
    .await;
    let client = reqwest::Client::new();
    wait_healthy(&client, &base, &mut child).await;
    let resp = client
        .post(format!("{base}/tenants"))
        .bearer_auth(&admin_key)
        .json(
            &json!({"id": "cold", "name": "Cold", "client_id": "client-fd",
            "client_secret": secret, "token_url": issuer_server.token_url(),
            "api_base_url": issuer_server.api_base_url()}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    drop(client);

    // A client connected before the flood...
    let address = base.trim_start_matches("http://").to_owned();
    let mut early = TcpStream::connect(&address).await.unwrap();
    // ...then idle connections that send nothing (those past the cap wait in the queue).
    let mut flood = Vec::with_capacity(FLOOD);
    for _ in 0..FLOOD {
        match tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(&address)).await {
            Ok(Ok(stream)) => flood.push(stream),
            _ => break,
        }
    }
    assert!(flood.len() > SOFT_LIMIT as usize, "{} opened", flood.len());
    // Time for the service to accept what it will.
    tokio::time::sleep(Duration::from_millis(500)).await;

    // A cold tenant's token needs a call to edX: a socket of its own.
    let status = request_on(&mut early, "/tenants/cold/token", &admin_key).await;
    drop(flood);
    terminate(&child);
    let exited = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    let logs = logs.wait_for_end();
    assert!(status.contains(" 200 "), "{status}; log:\n{logs}");
    assert!(exited.success(), "{exited:?}");
    assert!(!logs.contains("Too many open files"), "{logs}");
    let warning = logs
        .lines()
        .find(|line| line.contains("TOKENVEND_MAX_CONNECTIONS") && line.contains("WARN"))
        .unwrap_or_else(|| panic!("no warning about the lowered cap: {logs}"));
    for number in ["10000", "128", "512"] {
        assert!(warning.contains(number), "{number} missing: {warning}");
    }
    assert!(!logs.contains(&admin_key), "the admin key in the log");
}
