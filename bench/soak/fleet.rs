//! The three `tokenvend` replicas: child processes of the driver on one database, started,
//! killed with SIGKILL and restarted; which are up (the driver's load balancer) and
//! their resident memory.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use tokio::process::{Child, Command};

pub struct Replica {
    pub port: u16,
    /// Whether the driver sends it traffic (false from just before a kill until ready).
    up: AtomicBool,
    /// 0 for the first process, +1 per restart.
    generation: AtomicU32,
    child: tokio::sync::Mutex<Option<Child>>,
    pid: AtomicU32,
}

pub struct Fleet {
    pub replicas: Vec<Replica>,
    binary: PathBuf,
    env: Vec<(&'static str, String)>,
    logs: PathBuf,
    next: AtomicUsize,
    client: reqwest::Client,
}

impl Fleet {
    pub fn new(
        count: usize,
        binary: PathBuf,
        env: Vec<(&'static str, String)>,
        logs: PathBuf,
    ) -> anyhow::Result<Self> {
        let mut replicas = Vec::with_capacity(count);
        for _ in 0..count {
            replicas.push(Replica {
                port: free_port()?,
                up: AtomicBool::new(false),
                generation: AtomicU32::new(0),
                child: tokio::sync::Mutex::new(None),
                pid: AtomicU32::new(0),
            });
        }
        Ok(Self {
            replicas,
            binary,
            env,
            logs,
            next: AtomicUsize::new(0),
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(2))
                .build()?,
        })
    }

    pub fn base(&self, replica: usize) -> String {
        format!("http://127.0.0.1:{}", self.replicas[replica].port)
    }

    /// The next replica that is up, round robin (a load balancer with health checks);
    /// replica 0 if none is.
    pub fn pick(&self) -> usize {
        let count = self.replicas.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (0..count)
            .map(|offset| (start + offset) % count)
            .find(|&i| self.replicas[i].up.load(Ordering::Relaxed))
            .unwrap_or(0)
    }

    /// Starts replica `i` (again) and waits until `/readyz` answers 200.
    pub async fn start(&self, i: usize) -> anyhow::Result<()> {
        let replica = &self.replicas[i];
        let mut slot = replica.child.lock().await;
        ensure!(slot.is_none(), "replica {i} is running already");
        let log_path = self.logs.join(format!("replica-{i}.log"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)?;
        let child = Command::new(&self.binary)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(self.env.iter().map(|(k, v)| (*k, v)))
            .env("TOKENVEND_LISTEN", format!("127.0.0.1:{}", replica.port))
            .env(
                "TOKENVEND_DATA_DIR",
                self.logs.join(format!("data-{i}")).display().to_string(),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", self.binary.display()))?;
        replica
            .pid
            .store(child.id().unwrap_or_default(), Ordering::Relaxed);
        *slot = Some(child);
        let url = format!("{}/readyz", self.base(i));
        let started = Instant::now();
        loop {
            if let Some(status) = slot.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                bail!("replica {i} exited: {status} (see {})", log_path.display());
            }
            if let Ok(response) = self.client.get(&url).send().await {
                if response.status() == 200 {
                    break;
                }
            }
            ensure!(
                started.elapsed() < Duration::from_secs(120),
                "replica {i} not ready after two minutes"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        replica.up.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// Takes replica `i` out of the rotation and kills it with SIGKILL (no graceful stop).
    pub async fn kill(&self, i: usize) -> anyhow::Result<()> {
        let replica = &self.replicas[i];
        replica.up.store(false, Ordering::Relaxed);
        let mut slot = replica.child.lock().await;
        let mut child = slot.take().context("replica not running")?;
        child.start_kill()?;
        child.wait().await?;
        replica.generation.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// SIGTERM to every replica (kill(1): the workspace forbids unsafe code), then waits.
    pub async fn stop_all(&self) {
        for replica in &self.replicas {
            replica.up.store(false, Ordering::Relaxed);
            let Some(mut child) = replica.child.lock().await.take() else {
                continue;
            };
            if let Some(pid) = child.id() {
                let _ = Command::new("kill")
                    .args(["-TERM", &pid.to_string()])
                    .status()
                    .await;
            }
            if tokio::time::timeout(Duration::from_secs(30), child.wait())
                .await
                .is_err()
            {
                let _ = child.kill().await;
            }
        }
    }

    /// Every running replica's (index, generation, VmRSS in MiB).
    pub fn rss(&self) -> Vec<(usize, u32, f64)> {
        self.replicas
            .iter()
            .enumerate()
            .filter(|(_, r)| r.up.load(Ordering::Relaxed))
            .filter_map(|(i, r)| {
                let pid = r.pid.load(Ordering::Relaxed);
                let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
                let kib: f64 = status
                    .lines()
                    .find(|l| l.starts_with("VmRSS:"))?
                    .split_whitespace()
                    .nth(1)?
                    .parse()
                    .ok()?;
                Some((i, r.generation.load(Ordering::Relaxed), kib / 1024.0))
            })
            .collect()
    }
}

/// A port that was free a moment ago (each replica keeps its own across restarts).
fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}
