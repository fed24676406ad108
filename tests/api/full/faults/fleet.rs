//! The fleet under fault: real `tokenvend` processes on one PostgreSQL database (each
//! started on port 0; the address is read from its start-up log line), the edX stand-in
//! in-process behind a fault proxy, callers and writers that record every answer, and a
//! webhook receiver.

use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use edx_issuer::{Issuer, RunningIssuer};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use sqlx::PgPool;
use tokenvend::crypto::MasterKey;

use super::proxy::FaultProxy;
use crate::helpers::tokenvend;
use crate::helpers::{eventually_within, tenant_body};
use crate::webhooks::Receiver;

/// What every replica of a fleet is started with.
#[derive(Clone)]
pub struct ReplicaConfig {
    pub database_url: String,
    /// Base64 of the master key (and its id, for looking at what is stored).
    pub master_key: String,
    pub master_key_id: String,
    pub old_master_keys: Option<String>,
    pub admin_key: String,
    /// Further `TOKENVEND_*` settings.
    pub env: Vec<(String, String)>,
}

impl ReplicaConfig {
    pub fn new(database_url: String, env: &[(&str, &str)]) -> Self {
        let (key, encoded) = MasterKey::generate();
        Self {
            database_url,
            master_key: encoded,
            master_key_id: key.id().to_owned(),
            old_master_keys: None,
            // 32 random bytes in hex: a key the start-up's strength check accepts.
            admin_key: format!(
                "{}{}",
                uuid::Uuid::new_v4().simple(),
                uuid::Uuid::new_v4().simple()
            ),
            env: env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        }
    }

    /// A `tokenvend` command (`serve`, `rekey`) with these settings and nothing from the
    /// test run's environment.
    pub fn command(&self, dir: &std::path::Path, subcommand: &str) -> std::process::Command {
        let mut cmd = tokenvend(dir);
        cmd.arg(subcommand)
            .env("TOKENVEND_DATABASE_URL", &self.database_url)
            .env("TOKENVEND_MASTER_KEY", &self.master_key)
            .env("TOKENVEND_ADMIN_KEY", &self.admin_key)
            .env("TOKENVEND_DATA_DIR", dir.join("data"))
            .env("TOKENVEND_ALLOW_INSECURE_TOKEN_URLS", "1")
            .env("TOKENVEND_LOG_FORMAT", "json")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null());
        if let Some(old) = &self.old_master_keys {
            cmd.env("TOKENVEND_OLD_MASTER_KEYS", old);
        }
        for (name, value) in &self.env {
            cmd.env(name, value);
        }
        cmd
    }
}

/// A `tokenvend serve` process; killed (SIGKILL) when dropped.
pub struct Replica {
    child: Child,
    /// `http://127.0.0.1:<port>`
    pub base: String,
    logs: Arc<Mutex<Vec<String>>>,
    _dir: tempfile::TempDir,
}

impl Replica {
    /// Starts a replica on `127.0.0.1:0` and waits until it serves.
    pub async fn start(config: &ReplicaConfig) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut child = config
            .command(dir.path(), "serve")
            .env("TOKENVEND_LISTEN", "127.0.0.1:0")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("tokenvend starts");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (address_tx, address_rx) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().expect("stderr piped");
        std::thread::spawn({
            let logs = logs.clone();
            move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    if line.contains("tokenvend listening") {
                        if let Ok(entry) = serde_json::from_str::<Value>(&line) {
                            if let Some(addr) = entry["addr"].as_str() {
                                let _ = address_tx.send(addr.to_owned());
                            }
                        }
                    }
                    logs.lock().expect("logs").push(line);
                }
            }
        });
        let address =
            tokio::task::spawn_blocking(move || address_rx.recv_timeout(Duration::from_secs(60)))
                .await
                .expect("join");
        let Ok(address) = address else {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "tokenvend did not say where it listens:\n{}",
                logs.lock().expect("logs").join("\n")
            );
        };
        Self {
            child,
            base: format!("http://{address}"),
            logs,
            _dir: dir,
        }
    }

    /// `kill -9`: no shutdown, no goodbye to the database.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Everything the replica logged so far.
    pub fn logs(&self) -> String {
        self.logs.lock().expect("logs").join("\n")
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The edX stand-in (on the wall clock, as the processes are) behind a fault proxy, a
/// client, and a direct connection to the fleet's database.
pub struct World {
    pub config: ReplicaConfig,
    pub client: reqwest::Client,
    pub issuer: Issuer,
    pub edx: FaultProxy,
    /// A connection to the database that bypasses any proxy in front of it.
    pub db: PgPool,
    _issuer_server: RunningIssuer,
}

impl World {
    /// `direct_url` is the database itself; the replicas use `config.database_url`.
    pub async fn new(direct_url: &str, config: ReplicaConfig) -> Self {
        let issuer = Issuer::new(chrono::Utc::now);
        let issuer_server = issuer.start().await.expect("issuer starts");
        let edx = FaultProxy::start(issuer_server.addr).await;
        Self {
            config,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("client"),
            issuer,
            edx,
            db: PgPool::connect(direct_url)
                .await
                .expect("direct connection"),
            _issuer_server: issuer_server,
        }
    }

    /// The token URL tenants use: the issuer, through the edX fault proxy.
    pub fn token_url(&self) -> String {
        format!("http://{}/oauth2/access_token", self.edx.addr())
    }

    /// A request as the admin; the status and the JSON body (`Null` if none).
    pub async fn admin(
        &self,
        method: Method,
        url: &str,
        body: Option<&Value>,
    ) -> (StatusCode, Value) {
        let mut req = self
            .client
            .request(method, url)
            .bearer_auth(&self.config.admin_key);
        if let Some(body) = body {
            req = req.json(body);
        }
        let resp = req.send().await.unwrap_or_else(|e| panic!("{url}: {e}"));
        let status = resp.status();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// Registers `id` with the issuer and creates it through `replica`; its client id.
    pub async fn tenant(&self, replica: &Replica, id: &str) -> String {
        let mut body = tenant_body(id);
        body["token_url"] = json!(self.token_url());
        let client_id = body["client_id"].as_str().expect("client id").to_owned();
        self.issuer
            .register(&client_id, body["client_secret"].as_str().expect("secret"));
        let (status, answer) = self
            .admin(Method::POST, &replica.url("/tenants"), Some(&body))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{answer}");
        client_id
    }

    /// The token `replica` serves for `id` (asserting a 200); its fingerprint.
    pub async fn token(&self, replica: &Replica, id: &str) -> String {
        let (status, body) = self
            .admin(
                Method::GET,
                &replica.url(&format!("/tenants/{id}/token")),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{id}: {body}");
        body["fingerprint"]
            .as_str()
            .expect("fingerprint")
            .to_owned()
    }

    /// The fingerprint of the token `replica` holds for `id` (none when it holds none or
    /// does not know the tenant yet).
    pub async fn held(&self, replica: &Replica, id: &str) -> Option<String> {
        let url = replica.url(&format!("/tenants/{id}/token/status"));
        let (status, body) = self.admin(Method::GET, &url, None).await;
        if status == StatusCode::NOT_FOUND {
            // Not seen by this replica yet.
            return None;
        }
        assert_eq!(status, StatusCode::OK, "{body}");
        body["fingerprint"].as_str().map(str::to_owned)
    }

    /// Waits until every replica holds the token with `fingerprint` for `id`.
    pub async fn until_all_hold(
        &self,
        replicas: &[&Replica],
        id: &str,
        fingerprint: &str,
        within: Duration,
    ) -> Duration {
        eventually_within(within, "every replica to hold the token", async || {
            for replica in replicas {
                if self.held(replica, id).await.as_deref() != Some(fingerprint) {
                    return false;
                }
            }
            true
        })
        .await
    }

    /// Waits until every replica answers `/readyz` with 200.
    pub async fn until_ready(&self, replicas: &[&Replica], within: Duration) -> Duration {
        eventually_within(within, "every replica to be ready", async || {
            for replica in replicas {
                let ready = self.client.get(replica.url("/readyz")).send().await;
                if !ready.is_ok_and(|r| r.status() == StatusCode::OK) {
                    return false;
                }
            }
            true
        })
        .await
    }

    /// Registers a webhook for `events` at `url` through `replica`; its secret.
    pub async fn webhook(&self, replica: &Replica, url: &str, events: &[&str]) -> String {
        let body = json!({ "url": url, "events": events, "description": "fault matrix" });
        let (status, created) = self
            .admin(Method::POST, &replica.url("/webhooks"), Some(&body))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        created["secret"].as_str().expect("secret").to_owned()
    }

    /// Every tenant id the database holds: the committed creations.
    pub async fn stored_tenants(&self) -> Vec<String> {
        sqlx::query_scalar("SELECT id FROM tenants ORDER BY id")
            .fetch_all(&self.db)
            .await
            .expect("tenant ids")
    }

    /// Waits until `receiver` has a `tenant.created` event for every tenant the database
    /// holds (every committed creation announced at least once).
    pub async fn until_every_creation_delivered(&self, receiver: &Receiver, within: Duration) {
        let stored = self.stored_tenants().await;
        let mut missing = Vec::new();
        let took = crate::helpers::poll_until(within, async || {
            let delivered: HashSet<String> = receiver
                .received()
                .iter()
                .filter(|r| r.json()["type"] == "tenant.created")
                .filter_map(|r| r.json()["data"]["tenant_id"].as_str().map(str::to_owned))
                .collect();
            missing = stored
                .iter()
                .filter(|id| !delivered.contains(*id))
                .cloned()
                .collect();
            missing.is_empty()
        })
        .await;
        assert!(
            took.is_some(),
            "committed tenants whose tenant.created never arrived within {within:?}: {missing:?}"
        );
    }
}

/// Callers asking `urls` (token endpoints) in a loop, recording every answer.
pub struct Callers {
    stop: Arc<AtomicBool>,
    workers: Vec<tokio::task::JoinHandle<()>>,
    answers: Arc<Mutex<BTreeMap<String, u64>>>,
}

impl Callers {
    /// `workers` loops per URL, each answer recorded as its status (and fingerprint for a
    /// 200) or the error.
    pub fn start(world: &World, urls: &[String], workers: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let answers = Arc::new(Mutex::new(BTreeMap::new()));
        let mut handles = Vec::new();
        for url in urls {
            for _ in 0..workers {
                let (client, url, key) = (
                    world.client.clone(),
                    url.clone(),
                    world.config.admin_key.clone(),
                );
                let (stop, answers) = (stop.clone(), answers.clone());
                handles.push(tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        let answer = match client.get(&url).bearer_auth(&key).send().await {
                            Ok(resp) if resp.status() == StatusCode::OK => {
                                let body: Value = resp.json().await.unwrap_or(Value::Null);
                                format!("200 {}", body["fingerprint"].as_str().unwrap_or("?"))
                            }
                            Ok(resp) => format!("{} from {url}", resp.status().as_u16()),
                            Err(e) => format!("error from {url}: {e}"),
                        };
                        *answers.lock().expect("answers").entry(answer).or_default() += 1;
                        // A steady sample, light on the CPU the rest of the suite shares.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }));
            }
        }
        Self {
            stop,
            workers: handles,
            answers,
        }
    }

    /// Stops the callers; every distinct answer and how often it came.
    pub async fn finish(self) -> BTreeMap<String, u64> {
        self.stop.store(true, Ordering::Relaxed);
        for worker in self.workers {
            worker.await.expect("caller");
        }
        let answers = self.answers.lock().expect("answers").clone();
        answers
    }
}

/// Asserts that every answer was a 200 with one of `fingerprints` (the held token), and
/// that there were answers at all.
pub fn assert_only_held_tokens(answers: &BTreeMap<String, u64>, fingerprints: &[&str]) {
    let allowed: HashSet<String> = fingerprints.iter().map(|f| format!("200 {f}")).collect();
    let others: Vec<_> = answers
        .iter()
        .filter(|(answer, _)| !allowed.contains(*answer))
        .collect();
    assert!(
        others.is_empty(),
        "callers got other answers than the held token: {others:?} (all: {answers:?})"
    );
    assert!(answers.values().sum::<u64>() > 0, "no answers at all");
}

/// Creates tenants `w-0`, `w-1`, ... in turn through `replicas` every 100 ms until
/// stopped: writes during a fault, to check afterwards that each one that committed is
/// announced.
pub struct Writer {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<BTreeMap<String, u16>>,
}

impl Writer {
    pub fn start(world: &World, replicas: &[&Replica]) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let bases: Vec<String> = replicas.iter().map(|r| r.base.clone()).collect();
        let (client, key, token_url) = (
            world.client.clone(),
            world.config.admin_key.clone(),
            world.token_url(),
        );
        let task = tokio::spawn({
            let stop = stop.clone();
            async move {
                let mut outcomes = BTreeMap::new();
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    let id = format!("w-{n}");
                    let mut body = tenant_body(&id);
                    body["token_url"] = json!(token_url);
                    let answer = client
                        .post(format!("{}/tenants", bases[n % bases.len()]))
                        .bearer_auth(&key)
                        .json(&body)
                        .timeout(Duration::from_secs(20))
                        .send()
                        .await;
                    outcomes.insert(id, answer.map_or(0, |r| r.status().as_u16()));
                    n += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                outcomes
            }
        });
        Self { stop, task }
    }

    /// Stops writing; each tenant tried and its answer's status (0: no answer).
    pub async fn finish(self) -> BTreeMap<String, u16> {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.expect("writer")
    }
}

/// Asserts that every creation answered `201` is stored (a write reported done is never
/// lost); answers other than 201 may or may not have committed.
pub async fn assert_acknowledged_writes_kept(world: &World, outcomes: &BTreeMap<String, u16>) {
    let stored: HashSet<String> = world.stored_tenants().await.into_iter().collect();
    let lost: Vec<_> = outcomes
        .iter()
        .filter(|(id, status)| **status == 201 && !stored.contains(*id))
        .collect();
    assert!(lost.is_empty(), "acknowledged creations lost: {lost:?}");
    assert!(
        outcomes.values().any(|s| *s == 201),
        "no write succeeded at all: {outcomes:?}"
    );
}
