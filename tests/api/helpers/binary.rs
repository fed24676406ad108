//! The real `tokenvend` binary: a command with a clean environment, started on port 0
//! with the address read from its log, stopped with SIGTERM.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, ChildStderr, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

use super::eventually_within;

pub const BIN: &str = env!("CARGO_BIN_EXE_tokenvend");

/// How long a loaded machine may take to start the binary.
const START_UP: Duration = Duration::from_secs(30);

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

/// A loopback port nothing listens on, for an address that must refuse connections.
/// Not for tokenvend to bind later (another process may take the port first): it starts
/// on port 0 and says where it listens (`start_on_port_0`). The exceptions are servers
/// that cannot say so: chromedriver, Prometheus, and the pod's ports in the Kubernetes
/// test (whose probes must know them before the start).
pub fn unused_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A `tokenvend` started on `127.0.0.1:0`: its process, `http://` and the address it
/// logged, and its stderr as read so far.
pub struct Started {
    pub child: Child,
    pub base: String,
    pub logs: Logs,
}

/// Starts `cmd` (stderr is taken over; stdout is the caller's) on `127.0.0.1:0` and waits
/// until it logs `tokenvend listening` with its address, in text or JSON format. Panics
/// with its log if it exits first or says nothing within 30 s.
pub async fn start_on_port_0(cmd: &mut Command) -> Started {
    let mut child = cmd
        .env("TOKENVEND_LISTEN", "127.0.0.1:0")
        .stderr(Stdio::piped())
        .spawn()
        .expect("tokenvend starts");
    let (found, address) = tokio::sync::oneshot::channel();
    let logs = Logs::read(child.stderr.take().expect("stderr piped"), found);
    match tokio::time::timeout(START_UP, address).await {
        Ok(Ok(address)) => Started {
            child,
            base: format!("http://{address}"),
            logs,
        },
        failed => {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "tokenvend did not say where it listens ({}):\n{}",
                if failed.is_err() {
                    "timed out"
                } else {
                    "exited"
                },
                logs.wait_for_end()
            );
        }
    }
}

/// The address in a `tokenvend listening` line: `addr=…` in text, `"addr":"…"` in JSON.
fn listening_address(line: &str) -> Option<String> {
    if !line.contains("tokenvend listening") {
        return None;
    }
    if let Ok(entry) = serde_json::from_str::<Value>(line) {
        let addr = entry.get("addr").or_else(|| entry.pointer("/fields/addr"));
        return addr.and_then(Value::as_str).map(str::to_owned);
    }
    let rest = line.split("addr=").nth(1)?;
    rest.split_whitespace().next().map(str::to_owned)
}

/// The stderr of a started binary, read line by line on a thread of its own.
pub struct Logs {
    text: Arc<Mutex<String>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Logs {
    fn read(stderr: ChildStderr, found: tokio::sync::oneshot::Sender<String>) -> Self {
        let text = Arc::new(Mutex::new(String::new()));
        let reader = std::thread::spawn({
            let text = text.clone();
            move || {
                let mut found = Some(found);
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    if let Some(address) = listening_address(&line) {
                        if let Some(found) = found.take() {
                            let _ = found.send(address);
                        }
                    }
                    let mut text = text.lock().expect("log text");
                    text.push_str(&line);
                    text.push('\n');
                }
            }
        });
        Self {
            text,
            reader: Some(reader),
        }
    }

    /// What it has logged so far.
    pub fn so_far(&self) -> String {
        self.text.lock().expect("log text").clone()
    }

    /// Everything it logged, once it has exited (its stderr closed).
    pub fn wait_for_end(mut self) -> String {
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        self.so_far()
    }
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

#[test]
fn the_listening_address_is_read_from_text_and_json_lines() {
    let text = "2026-12-06T13:50:48Z  INFO tokenvend::startup: tokenvend listening \
                addr=127.0.0.1:41234 backend=\"sqlite\"";
    assert_eq!(listening_address(text).as_deref(), Some("127.0.0.1:41234"));
    let json = r#"{"level":"INFO","addr":"127.0.0.1:41235","message":"tokenvend listening"}"#;
    assert_eq!(listening_address(json).as_deref(), Some("127.0.0.1:41235"));
    let nested = r#"{"fields":{"message":"tokenvend listening","addr":"[::1]:8080"}}"#;
    assert_eq!(listening_address(nested).as_deref(), Some("[::1]:8080"));
    assert_eq!(
        listening_address("serving /metrics without a key addr=x"),
        None
    );
}
