//! The real binary's refusals at start-up: keys given as flags (every user sees them in
//! `ps`), admin keys that are not random bytes written out, and bad settings (which stop
//! the service, not the operator commands that never read them).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::helpers::tokenvend;

/// Runs `cmd` until it exits (or 10 s, then kills it); its exit code and stderr.
fn run_to_exit(mut cmd: Command) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("stderr");
    let mut child = cmd
        .env("TOKENVEND_LISTEN", "127.0.0.1:0")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if started.elapsed() > Duration::from_secs(10) {
            child.kill().unwrap();
            child.wait().unwrap();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stderr = std::fs::read_to_string(&log).unwrap();
    (status.and_then(|s| s.code()), stderr)
}

#[test]
fn keys_given_as_flags_are_refused_pointing_to_the_files_and_never_echoed() {
    let master = "MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTIzNDU2Nzg5MDE=";
    let admin = hex::encode(rand::random::<[u8; 32]>());
    let cases: &[(&[&str], &str)] = &[
        (&["--master-key", master], "TOKENVEND_MASTER_KEY_FILE"),
        (
            &["serve", &format!("--master-key={master}")],
            "TOKENVEND_MASTER_KEY_FILE",
        ),
        (&["--admin-key", &admin], "TOKENVEND_ADMIN_KEY_FILE"),
        (
            &["migrate", "--admin-key", &admin],
            "TOKENVEND_ADMIN_KEY_FILE",
        ),
        (&["--old-master-keys", master], "TOKENVEND_OLD_MASTER_KEYS"),
        (
            &["rekey", "--old-master-keys", master],
            "TOKENVEND_OLD_MASTER_KEYS",
        ),
    ];
    for (args, pointer) in cases {
        let run = tempfile::tempdir().unwrap();
        let mut cmd = tokenvend(run.path());
        cmd.args(*args);
        let (code, stderr) = run_to_exit(cmd);
        assert_eq!(code, Some(2), "{args:?} should stop start-up: {stderr}");
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{args:?}: one line, got {stderr}");
        assert!(lines[0].contains(pointer), "{args:?}: {stderr}");
        assert!(lines[0].contains("ps"), "{args:?} says why: {stderr}");
        for secret in [master, admin.as_str(), "MDEyMzQ1"] {
            assert!(!stderr.contains(secret), "a key in the error: {stderr}");
        }
        assert!(
            !run.path().join("data").exists(),
            "{args:?}: nothing was started"
        );
    }
}

#[test]
fn passphrases_as_admin_keys_are_refused_at_start_up_naming_the_variable() {
    for key in [
        "tokenvend-production-admin-key-please-change",
        "correct-horse-battery-staple-correct-horse",
    ] {
        let run = tempfile::tempdir().unwrap();
        let mut cmd = tokenvend(run.path());
        cmd.env("TOKENVEND_ADMIN_KEY", key);
        let (code, stderr) = run_to_exit(cmd);
        assert_eq!(code, Some(2), "{key} should stop start-up: {stderr}");
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 1, "one line, got {stderr}");
        assert!(lines[0].contains("TOKENVEND_ADMIN_KEY"), "{stderr}");
        assert!(lines[0].contains("openssl rand -base64 32"), "{stderr}");
        assert!(!stderr.contains(key), "the key in the error: {stderr}");
        assert!(
            !stderr.contains("please-change"),
            "part of the key: {stderr}"
        );
    }
}

#[test]
fn a_bad_service_setting_stops_the_service_but_not_the_operator_commands() {
    let run = tempfile::tempdir().unwrap();
    let mut serve = tokenvend(run.path());
    serve.env("TOKENVEND_LOG_FORMAT", "yaml");
    let (code, stderr) = run_to_exit(serve);
    assert_eq!(code, Some(2), "{stderr}");
    assert_eq!(
        stderr.trim(),
        "tokenvend: TOKENVEND_LOG_FORMAT: \"yaml\" is not text or json"
    );

    // The operator command never reads it: it goes on to look for its caller key.
    let mut operate = tokenvend(run.path());
    operate
        .args(["tenants", "list"])
        .env("TOKENVEND_LOG_FORMAT", "yaml")
        .env_remove("TOKENVEND_KEY");
    let (code, stderr) = run_to_exit(operate);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.starts_with("tokenvend: no caller key"), "{stderr}");
    assert!(!stderr.contains("LOG_FORMAT"), "{stderr}");

    // Given as a flag to the operator command, it is refused as before.
    let mut flagged = tokenvend(run.path());
    flagged.args(["tenants", "list", "--log-format", "yaml"]);
    let (code, stderr) = run_to_exit(flagged);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("TOKENVEND_LOG_FORMAT"), "{stderr}");
}
