//! The faults injected every few minutes, in turn: a replica killed with SIGKILL (and
//! started again), PostgreSQL restarted in immediate mode, edX slow (5 s per token
//! answer), edX failing (500 to every token request).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use edx_issuer::Failure;

use crate::stats::FaultRecord;
use crate::traffic::{EdxMode, Traffic};

/// How long a killed replica stays down before it is started again.
const DOWN_FOR: Duration = Duration::from_secs(5);
/// edX's latency while it is slow.
const SLOW: Duration = Duration::from_secs(5);

pub struct Schedule {
    /// A fault every this long, the first one after the same time.
    pub every: Duration,
    /// How long edX stays slow or failing.
    pub edx_for: Duration,
    /// A script that restarts the throwaway PostgreSQL cluster (`pg_ctl restart -m immediate`).
    pub pg_restart: PathBuf,
}

impl Schedule {
    /// The fault schedule for a run of `duration`: seven or so faults, a fault at most
    /// every 4 minutes and at least every 40 s; edX faults last a minute at most.
    pub fn for_run(duration: Duration, pg_restart: PathBuf) -> Self {
        let every = (duration / 8).clamp(Duration::from_secs(40), Duration::from_secs(240));
        Self {
            every,
            edx_for: (every / 2).min(Duration::from_secs(60)),
            pg_restart,
        }
    }
}

/// Injects the faults until the traffic's deadline (none that would not be over by then).
pub async fn run(traffic: Arc<Traffic>, schedule: Schedule) -> anyhow::Result<()> {
    let mut kills = 0usize;
    for n in 1.. {
        let at = traffic.stats.start + schedule.every * n;
        if at + schedule.every.min(schedule.edx_for * 2) > traffic.deadline {
            break;
        }
        tokio::time::sleep_until(at.into()).await;
        let started = traffic.stats.elapsed();
        let name = match (n - 1) % 4 {
            0 => {
                let replica = kills % traffic.fleet.replicas.len();
                kills += 1;
                traffic.fleet.kill(replica).await?;
                tokio::time::sleep(DOWN_FOR).await;
                traffic.fleet.start(replica).await?;
                format!("replica {replica} killed (SIGKILL), restarted after 5 s")
            }
            1 => {
                restart_postgres(&schedule.pg_restart).await?;
                "PostgreSQL restarted (immediate)".to_owned()
            }
            2 => {
                traffic.set_edx(EdxMode {
                    latency: SLOW,
                    failure: None,
                });
                tokio::time::sleep(schedule.edx_for).await;
                traffic.set_edx(EdxMode::default());
                format!(
                    "edX slow (5 s per token answer) for {} s",
                    schedule.edx_for.as_secs()
                )
            }
            _ => {
                traffic.set_edx(EdxMode {
                    latency: Duration::ZERO,
                    failure: Some(Failure::ServerError),
                });
                tokio::time::sleep(schedule.edx_for).await;
                traffic.set_edx(EdxMode::default());
                format!("edX failing (500) for {} s", schedule.edx_for.as_secs())
            }
        };
        let over = traffic.stats.elapsed();
        eprintln!("[{started:>5} s] fault: {name} (over at {over} s)");
        traffic.stats.fault(FaultRecord {
            name,
            at: started,
            over,
        });
    }
    Ok(())
}

async fn restart_postgres(script: &PathBuf) -> anyhow::Result<()> {
    let started = Instant::now();
    let status = tokio::process::Command::new("bash")
        .arg(script)
        .status()
        .await
        .with_context(|| format!("running {}", script.display()))?;
    ensure!(status.success(), "{} failed: {status}", script.display());
    eprintln!(
        "PostgreSQL restarted in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
