//! The API kept to its promise. Schemathesis (pinned in tests/python) generates requests
//! for every operation in openapi.yaml and checks every answer against the spec; then
//! `contract_statuses.py` makes sure every status the spec documents is one the service
//! really answers, in the documented shape (edX failures and a database outage included).

use std::path::{Path, PathBuf};

use edx_issuer::Failure;
use tokio::process::Command;

use super::cluster::Cluster;
use super::python;
use crate::helpers::{spawn_app_on_postgres_with, TestApp};

/// The caller key in openapi.yaml's examples of the edX-compatible endpoint.
const EXAMPLE_CALLER_KEY: &str = "tv_k3v9q2m8x1ab_Q2xvY2tUb3dlckJyaWRnZUNpcmNsZVN0YXJzMTIz";

struct Run {
    bin: &'static Path,
    work: tempfile::TempDir,
    spec: PathBuf,
    env: Vec<(&'static str, String)>,
}

impl Run {
    /// Runs a program from the Python environment; fails the test with its output unless
    /// it succeeds.
    async fn python(&self, program: &str, args: &[&std::ffi::OsStr]) -> String {
        let output = Command::new(self.bin.join(program))
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (*k, v.as_str())))
            .env("NO_COLOR", "1")
            .current_dir(self.work.path())
            .output()
            .await
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success(),
            "{program} {args:?} failed:\n{stdout}\n{stderr}"
        );
        stdout
    }

    async fn statuses(&self, phase: &str) -> String {
        let script = python::scripts_dir().join("contract_statuses.py");
        self.python("python", &[script.as_os_str(), phase.as_ref()])
            .await
    }
}

async fn tenant_with_failure(app: &TestApp, id: &str, failure: Failure) {
    let client = app.issuer_tenant(id).await;
    app.issuer.configure(&client, |b| b.failure = Some(failure));
}

#[tokio::test]
async fn the_service_keeps_to_openapi_yaml() {
    let bin = python::bin_dir().await;
    // A database of the test's own, to be stopped for the outage answers.
    let cluster = Cluster::start_new().await;
    // Schemathesis probes each operation with a wrong key and wants 401 or 403, and it
    // fuzzes the edX-compatible endpoint's client_secret: together more failed
    // authentications from 127.0.0.1 than TOKENVEND_AUTH_FAILURES allows, whose 429 is
    // documented but is not what that probe takes for "authentication enforced".
    let app = spawn_app_on_postgres_with(cluster.url(), |s| {
        s.serving.rate_limits.auth_failures = None;
        // The fuzzer registers webhooks at made-up URLs: their events stay in the outbox.
        s.webhooks.send = false;
    })
    .await;
    // Its proxied paths land on the issuer's edX-like API, which echoes any of them.
    let api = format!("{}/api", app.issuer_server.api_base_url());
    app.issuer_tenant_with("acme", |body| body["api_base_url"] = api.into())
        .await;
    tenant_with_failure(&app, "rejected", Failure::InvalidClient).await;
    tenant_with_failure(&app, "slow", Failure::Hang).await;
    tenant_with_failure(&app, "down", Failure::Unavailable).await;
    tenant_with_failure(&app, "garbage", Failure::Garbage).await;
    let token_only = app.create_key(&["token:acme"]).await;
    let read_only = app.create_key(&["tenants:read"]).await;

    // The spec's example credentials for the edX-compatible endpoint, made live for this
    // run, so that its examples reach a 200 too.
    let spec = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("openapi.yaml"))
        .unwrap()
        .replace(EXAMPLE_CALLER_KEY, &token_only);
    let work = tempfile::tempdir().unwrap();
    let spec_path = work.path().join("openapi.yaml");
    std::fs::write(&spec_path, spec).unwrap();
    let har = work.path().join("fuzzing.har");
    let run = Run {
        bin,
        env: vec![
            ("BASE_URL", app.address.clone()),
            ("SPEC", spec_path.display().to_string()),
            (
                "STATE",
                work.path().join("reached.json").display().to_string(),
            ),
            ("HAR", har.display().to_string()),
            ("ADMIN_KEY", app.admin_key.clone()),
            ("TOKEN_ONLY_KEY", token_only),
            ("READ_ONLY_KEY", read_only),
        ],
        spec: spec_path,
        work,
    };

    run.statuses("up").await;

    let authorization = format!("Authorization: Bearer {}", app.admin_key);
    let config = python::scripts_dir().join("schemathesis.toml");
    let args: Vec<&std::ffi::OsStr> = vec![
        "--config-file".as_ref(),
        config.as_os_str(),
        "run".as_ref(),
        run.spec.as_os_str(),
        "--url".as_ref(),
        app.address.as_ref(),
        "--header".as_ref(),
        authorization.as_ref(),
        "--checks".as_ref(),
        "all".as_ref(),
        "--max-examples".as_ref(),
        "25".as_ref(),
        "--seed".as_ref(),
        "1".as_ref(),
        // One worker: Hypothesis parses lambda sources with `ast` while describing
        // strategies, and CPython 3.11's parser is not safe across threads ("AST
        // constructor recursion depth mismatch" seen once with two workers).
        "--workers".as_ref(),
        "1".as_ref(),
        "--report".as_ref(),
        "har".as_ref(),
        "--report-har-path".as_ref(),
        har.as_os_str(),
    ];
    run.python("schemathesis", &args).await;

    cluster.stop().await;
    let summary = run.statuses("down").await;
    eprintln!("documented statuses reached: {summary}");
}
