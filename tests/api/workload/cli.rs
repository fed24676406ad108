//! `tokenvend identity providers …` and `tokenvend identity mappings …` against a
//! running service; a JWK Set piped in as `kubectl get --raw /openid/v1/jwks` prints it.

use std::process::Stdio;

use jsonwebtoken::Algorithm;
use reqwest::StatusCode;
use serde_json::Value;
use tokio::io::AsyncWriteExt;

use super::{jwk, jwks, keys, list_with, token, ISSUER, WORKER};
use crate::helpers::tokenvend;
use crate::helpers::{spawn_app, Backend, TestApp};

/// Runs `tokenvend identity <args> --json` as the admin, feeding `stdin`; its JSON answer.
async fn identity(app: &TestApp, args: &[&str], stdin: &str) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let mut command = tokio::process::Command::from(tokenvend(dir.path()));
    command
        .arg("identity")
        .args(args)
        .arg("--json")
        .env("TOKENVEND_URL", &app.address)
        .env("TOKENVEND_KEY", &app.admin_key)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.as_bytes()).await.unwrap();
    drop(input);
    let output = child.wait_with_output().await.unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

#[tokio::test]
async fn the_identity_commands_add_list_and_delete() {
    let app = spawn_app(Backend::Sqlite).await;
    let set = jwks(&[jwk(&keys().rsa[0], Algorithm::RS256, "a")]).to_string();
    let add = [
        "providers",
        "add",
        "k8s",
        "--issuer",
        ISSUER,
        "--audience",
        "tokenvend",
        "--jwks-file",
        "-",
    ];
    let made = identity(&app, &add, &set).await;
    assert_eq!(made["id"], "k8s");
    let add = [
        "mappings",
        "add",
        "jobs",
        "--provider",
        "k8s",
        "--match",
        "/kubernetes.io/namespace=jobs",
        "--match",
        "sub=system:serviceaccount:*",
        "--scope",
        "tenants:read",
    ];
    let made = identity(&app, &add, "").await;
    assert_eq!(made["match"]["/kubernetes.io/namespace"], "jobs");
    assert_eq!(list_with(&app, &token(&app, WORKER)).await, StatusCode::OK);

    let listed = identity(&app, &["mappings", "list"], "").await;
    assert_eq!(listed["items"][0]["id"], "jobs");
    let listed = identity(&app, &["providers", "list"], "").await;
    assert_eq!(listed["items"][0]["issuer"], ISSUER);

    identity(&app, &["providers", "delete", "k8s"], "").await;
    assert_eq!(
        list_with(&app, &token(&app, WORKER)).await,
        StatusCode::UNAUTHORIZED
    );
    let listed = identity(&app, &["mappings", "list"], "").await;
    assert_eq!(listed["items"], serde_json::json!([]));
}
