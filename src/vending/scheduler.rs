//! The background scheduler: refreshes recently used tenants before their tokens expire,
//! so that a steady caller never waits on edX.

use std::future::Future;
use std::sync::atomic::Ordering;

use super::flight::Need;
use super::Vendor;

impl Vendor {
    /// One scheduler pass: starts a refresh for every recently used tenant whose token is
    /// past its scheduled refresh point. Returns how many were started.
    pub fn run_due_refreshes(&self) -> usize {
        let now = self.now();
        let mut started = 0;
        for slot in self.inner.slots.load().values() {
            let Some(token) = slot.token.load_full() else {
                continue;
            };
            let used_since_fetch =
                slot.last_used.load(Ordering::Relaxed) >= token.fetched_at.timestamp();
            if !used_since_fetch || now < slot.scheduled_refresh(&token) {
                continue;
            }
            if slot.inflight.lock().is_some() || slot.cooling_down(now).is_some() {
                continue;
            }
            drop(self.fetch(slot, Need::Refresh { scheduled: true }));
            started += 1;
        }
        started
    }

    /// Runs the scheduler until `stop` resolves.
    pub async fn run_scheduler(self, stop: impl Future<Output = ()>) {
        let mut ticker = tokio::time::interval(self.inner.settings.scheduler_interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(stop);
        loop {
            tokio::select! {
                _ = ticker.tick() => {
                    let started = self.run_due_refreshes();
                    if started > 0 {
                        tracing::debug!(started, "scheduled token refreshes");
                    }
                }
                () = &mut stop => break,
            }
        }
    }
}
