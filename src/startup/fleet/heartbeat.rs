//! The fleet's heartbeat (PostgreSQL): every few seconds each replica records itself as
//! alive and counts the replicas heard from within the window, and its limiters keep
//! that share of the fleet-wide rates (`crate::share`). A replica that stops removes
//! its row; one that dies drops out of the others' count after the window.

use std::sync::Arc;

use rand::distributions::{Alphanumeric, DistString};
use rand::rngs::OsRng;
use tokio::sync::watch;

use crate::clock::Clock;
use crate::config::Settings;
use crate::share::{FleetSize, HeartbeatSettings, Sharing};
use crate::store::Store;
use crate::telemetry::metrics::Metrics;

pub struct Heartbeat {
    /// This replica's name in the `replicas` table: random, new at every start.
    id: String,
    store: Store,
    clock: Arc<dyn Clock>,
    settings: HeartbeatSettings,
    fleet: Arc<FleetSize>,
    metrics: Arc<Metrics>,
}

impl Heartbeat {
    /// Joins the fleet: the first beat is done before this returns, so that a replica
    /// starts serving with its share. Also returns what its limiters are built on.
    pub async fn join(
        store: &Store,
        clock: &Arc<dyn Clock>,
        settings: &Settings,
        metrics: &Arc<Metrics>,
    ) -> (Self, Sharing) {
        let fleet = Arc::new(FleetSize::default());
        let sharing = Sharing::new(clock.clone(), fleet.clone());
        let heartbeat = Self {
            id: Alphanumeric.sample_string(&mut OsRng, 16),
            store: store.clone(),
            clock: clock.clone(),
            settings: settings.serving.heartbeat,
            fleet,
            metrics: metrics.clone(),
        };
        heartbeat.beat().await;
        (heartbeat, sharing)
    }

    /// Records this replica as alive and takes the fleet's size from the answer; while
    /// the store cannot answer, the last size seen stands.
    pub async fn beat(&self) {
        let now = self.clock.now();
        let live = match self
            .store
            .replica_heartbeat(&self.id, now, self.settings.window)
            .await
        {
            Ok(live) => live.unwrap_or(1),
            Err(error) => {
                tracing::warn!(%error, "fleet heartbeat failed; keeping the last fleet size");
                return;
            }
        };
        let before = self.fleet.live();
        self.fleet.set(live);
        self.metrics.set_fleet_replicas(live);
        if live != before {
            tracing::info!(replicas = live, before, "the fleet's size changed");
        }
    }

    /// Beats every interval until `stopped` turns true, then leaves the fleet.
    pub async fn run(self, mut stopped: watch::Receiver<bool>) {
        if self.store.backend_name() == "sqlite" {
            return;
        }
        let stop = async move {
            let _ = stopped.wait_for(|stop| *stop).await;
        };
        tokio::pin!(stop);
        let mut every = tokio::time::interval(self.settings.interval);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        every.tick().await;
        loop {
            tokio::select! {
                _ = every.tick() => self.beat().await,
                () = &mut stop => break,
            }
        }
        if let Err(error) = self.store.leave_fleet(&self.id).await {
            tracing::warn!(%error, "could not leave the fleet; the others count this replica until the window ends");
        }
    }
}
