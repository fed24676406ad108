//! The real binary's custody of its keys and files: file modes whatever the umask and
//! whatever mode was left behind, keys from `…_FILE`, and the bootstrap admin key
//! switched off.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use serde_json::{json, Value};

use crate::helpers::{start_on_port_0, terminate, tokenvend, wait_healthy, Started};

/// Environment variables of one start.
type Env<'a> = &'a [(&'a str, &'a str)];

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// `tokenvend` under `sh` with umask 000, so that only tokenvend's own modes count.
fn tokenvend_with_open_umask(dir: &Path) -> Command {
    let cmd = tokenvend(dir);
    let program = cmd.get_program().to_owned();
    let mut shell = Command::new("sh");
    shell
        .current_dir(dir)
        .arg("-c")
        .arg("umask 000; exec \"$0\"")
        .arg(program);
    for (name, value) in cmd.get_envs() {
        match value {
            Some(value) => shell.env(name, value),
            None => shell.env_remove(name),
        };
    }
    shell
}

async fn start(mut cmd: Command) -> (Child, String) {
    let Started {
        mut child, base, ..
    } = start_on_port_0(cmd.stdout(Stdio::null())).await;
    wait_healthy(&reqwest::Client::new(), &base, &mut child).await;
    (child, base)
}

async fn stop(child: Child) {
    terminate(&child);
    let mut child = child;
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "graceful shutdown exits 0: {status:?}");
}

#[tokio::test]
async fn data_dir_keys_and_sqlite_files_are_private_whatever_the_umask_and_earlier_modes() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // As an earlier version (or a careless operator) left them.
    std::fs::create_dir(&data).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(data.join("tokenvend.db"), b"").unwrap();
    std::fs::set_permissions(
        data.join("tokenvend.db"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();

    let (child, base) = start(tokenvend_with_open_umask(dir.path())).await;
    let admin_key = std::fs::read_to_string(data.join("admin.key")).unwrap();
    let resp = reqwest::Client::new()
        .post(format!("{base}/api-keys"))
        .bearer_auth(admin_key.trim())
        .json(&json!({"name": "writes to the WAL", "scopes": ["tenants:read"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);

    assert_eq!(mode(&data), 0o700, "the data dir");
    for file in [
        "master.key",
        "admin.key",
        "tokenvend.db",
        "tokenvend.db-wal",
        "tokenvend.db-shm",
    ] {
        assert_eq!(mode(&data.join(file)), 0o600, "{file}");
    }
    stop(child).await;
}

#[tokio::test]
async fn with_a_sqlite_database_elsewhere_the_data_dir_is_still_made_for_the_keys() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("elsewhere.db");
    let mut cmd = tokenvend_with_open_umask(dir.path());
    cmd.env(
        "TOKENVEND_DATABASE_URL",
        format!("sqlite://{}", db.display()),
    );
    let (child, _) = start(cmd).await;
    let data = dir.path().join("data");
    assert_eq!(mode(&data), 0o700);
    assert_eq!(mode(&data.join("master.key")), 0o600);
    assert_eq!(mode(&data.join("admin.key")), 0o600);
    assert_eq!(mode(&db), 0o600);
    assert!(!data.join("tokenvend.db").exists());
    stop(child).await;
}

#[tokio::test]
async fn keys_from_files_work_and_a_disabled_bootstrap_key_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let secrets = dir.path().join("secrets");
    std::fs::create_dir(&secrets).unwrap();
    let admin_key = hex::encode(rand::random::<[u8; 32]>());
    let master_key = "MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTIzNDU2Nzg5MDE=";
    std::fs::write(secrets.join("admin"), format!("{admin_key}\n")).unwrap();
    std::fs::write(secrets.join("master"), format!("{master_key}\n")).unwrap();
    let with_files = |cmd: &mut Command| {
        cmd.env("TOKENVEND_ADMIN_KEY_FILE", secrets.join("admin"))
            .env("TOKENVEND_MASTER_KEY_FILE", secrets.join("master"));
    };
    let client = reqwest::Client::new();

    let mut cmd = tokenvend(dir.path());
    with_files(&mut cmd);
    let (child, base) = start(cmd).await;
    let resp = client
        .post(format!("{base}/api-keys"))
        .bearer_auth(&admin_key)
        .json(&json!({"name": "stored admin", "scopes": ["admin"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201, "the admin key from its file works");
    let stored: Value = resp.json().await.unwrap();
    let stored_key = stored["key"].as_str().unwrap().to_owned();
    let data = dir.path().join("data");
    assert!(
        !data.join("admin.key").exists(),
        "no admin.key is generated"
    );
    assert!(
        !data.join("master.key").exists(),
        "no master.key is generated"
    );
    stop(child).await;

    let mut cmd = tokenvend(dir.path());
    with_files(&mut cmd);
    cmd.env("TOKENVEND_BOOTSTRAP_ADMIN", "disabled");
    let (child, base) = start(cmd).await;
    let list = |key: String| {
        let request = client.get(format!("{base}/api-keys")).bearer_auth(key);
        async move { request.send().await.unwrap().status() }
    };
    assert_eq!(list(admin_key.clone()).await, 401, "the bootstrap key");
    assert_eq!(list(stored_key).await, 200, "a stored admin key");
    stop(child).await;

    // Disabled from the first start: no admin.key is made at all.
    let fresh = tempfile::tempdir().unwrap();
    let mut cmd = tokenvend(fresh.path());
    cmd.env("TOKENVEND_BOOTSTRAP_ADMIN", "disabled");
    let (child, _) = start(cmd).await;
    assert!(!fresh.path().join("data/admin.key").exists());
    stop(child).await;
}

#[test]
fn weak_or_doubly_given_keys_and_bad_limits_stop_start_up_with_one_line_naming_them() {
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("key");
    std::fs::write(&key_file, "MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTIzNDU2Nzg5MDE=\n").unwrap();
    let weak_file = dir.path().join("weak");
    std::fs::write(&weak_file, "password1234".repeat(4)).unwrap();
    let key_file = key_file.to_str().unwrap();
    let weak_file = weak_file.to_str().unwrap();
    let strong = "Zr8Qm2XkP4wLs9TfVb7nHc3JyGd6Ea5U";
    let aaaa = "a".repeat(40);
    let cases: &[(Env, &[&str])] = &[
        (&[("TOKENVEND_ADMIN_KEY", &aaaa)], &["TOKENVEND_ADMIN_KEY"]),
        (
            &[("TOKENVEND_ADMIN_KEY_FILE", weak_file)],
            &["TOKENVEND_ADMIN_KEY_FILE"],
        ),
        (
            &[
                ("TOKENVEND_ADMIN_KEY", strong),
                ("TOKENVEND_ADMIN_KEY_FILE", key_file),
            ],
            &["TOKENVEND_ADMIN_KEY", "TOKENVEND_ADMIN_KEY_FILE"],
        ),
        (
            &[
                (
                    "TOKENVEND_MASTER_KEY",
                    "MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTIzNDU2Nzg5MDE=",
                ),
                ("TOKENVEND_MASTER_KEY_FILE", key_file),
            ],
            &["TOKENVEND_MASTER_KEY", "TOKENVEND_MASTER_KEY_FILE"],
        ),
        (
            &[("TOKENVEND_MASTER_KEY_FILE", "/nonexistent/master.key")],
            &["TOKENVEND_MASTER_KEY_FILE"],
        ),
        (
            &[("TOKENVEND_BOOTSTRAP_ADMIN", "off")],
            &["TOKENVEND_BOOTSTRAP_ADMIN"],
        ),
        (
            &[("TOKENVEND_HEADER_TIMEOUT", "0")],
            &["TOKENVEND_HEADER_TIMEOUT"],
        ),
        (
            &[("TOKENVEND_MAX_CONNECTIONS", "none")],
            &["TOKENVEND_MAX_CONNECTIONS"],
        ),
        (
            &[("TOKENVEND_METRICS_LISTEN", "9090")],
            &["TOKENVEND_METRICS_LISTEN"],
        ),
        (
            &[("TOKENVEND_METRICS_LISTEN", "203.0.113.1:9090")],
            &["TOKENVEND_METRICS_LISTEN"],
        ),
    ];
    for (env, variables) in cases {
        let run = tempfile::tempdir().unwrap();
        let mut cmd = tokenvend(run.path());
        cmd.env("TOKENVEND_LISTEN", "127.0.0.1:0");
        for (k, v) in *env {
            cmd.env(k, v);
        }
        let output = cmd.stdin(Stdio::null()).output().unwrap();
        assert_eq!(
            output.status.code(),
            Some(2),
            "{env:?} should stop start-up"
        );
        let stderr = String::from_utf8_lossy(&output.stderr);
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{env:?}: exactly one line, got {stderr}");
        for variable in *variables {
            assert!(lines[0].contains(variable), "{env:?}: {stderr}");
        }
        for secret in [aaaa.as_str(), strong, "password1234", "MDEyMzQ1"] {
            assert!(!lines[0].contains(secret), "a key in the error: {stderr}");
        }
    }
}
