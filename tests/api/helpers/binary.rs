//! The real `tokenvend` binary: a command with a clean environment, waiting until it is
//! healthy, stopping it with SIGTERM.

use std::path::Path;
use std::process::{Child, Command};
use std::time::Duration;

use super::eventually_within;

pub const BIN: &str = env!("CARGO_BIN_EXE_tokenvend");

/// A command with no tokenvend setting from the environment of the test run.
pub fn tokenvend(dir: &Path) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.current_dir(dir)
        .env_remove("DATABASE_URL")
        .env_remove("RUST_LOG");
    for (name, _) in std::env::vars() {
        if name.starts_with("TOKENVEND_") {
            cmd.env_remove(name);
        }
    }
    cmd
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub async fn wait_healthy(client: &reqwest::Client, base: &str, child: &mut Child) {
    eventually_within(
        Duration::from_secs(10),
        "tokenvend to become healthy",
        async || {
            if let Ok(resp) = client.get(format!("{base}/healthz")).send().await {
                if resp.status().is_success() {
                    return true;
                }
            }
            if let Some(status) = child.try_wait().unwrap() {
                panic!("tokenvend exited early: {status}");
            }
            false
        },
    )
    .await;
}

pub fn terminate(child: &Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}
