//! edX's own Python client (`edx-rest-api-client`, pinned in tests/python) switches to
//! tokenvend by changing one URL.

use reqwest::StatusCode;
use serde_json::Value;
use tokio::process::Command;

use super::python;
use crate::helpers::{json_body, spawn_app, Backend};

#[tokio::test]
async fn edx_rest_api_client_gets_its_tokens_from_tokenvend() {
    let bin = python::bin_dir().await;
    let app = spawn_app(Backend::Postgres).await;
    let client = app.issuer_tenant("acme").await;
    let key = app.create_key(&["token:acme"]).await;

    let output = Command::new(bin.join("python"))
        .arg(python::scripts_dir().join("edx_client_interop.py"))
        .env("TOKENVEND_URL", &app.address)
        .env("TENANT", "acme")
        .env("KEY", &key)
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the Python client failed:\n{stderr}"
    );
    let seen: Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}\n{stderr}", String::from_utf8_lossy(&output.stdout)));

    assert_eq!(seen["thread_errors"], serde_json::json!([]), "{stderr}");
    assert_eq!(
        app.issuer.calls(&client),
        1,
        "32 threads on a cold cache made one upstream call"
    );
    let current = json_body(app.get_token("acme").await, StatusCode::OK).await;
    let token = &current["access_token"];
    let threads = seen["thread_tokens"].as_array().unwrap();
    assert_eq!(threads.len(), 32);
    assert!(threads.iter().all(|t| t == token), "{threads:?}");
    assert_eq!(
        &seen["client_token"], token,
        "OAuthAPIClient got the current token"
    );
    assert_eq!(
        seen["wrong_key"],
        serde_json::json!({"raised": "HTTPError", "status": 401})
    );
    assert_eq!(app.issuer.calls(&client), 1);
}
