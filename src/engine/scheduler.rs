//! The background scheduler: refreshes recently used tenants before their tokens expire,
//! so that a steady caller never waits on edX.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::core::Core;
use super::flight::fetch;
use super::need::Need;
use super::slot::Slot;
use crate::outbound::webhooks::Event;

/// The background scheduler of an engine.
pub struct Scheduler {
    core: Arc<Core>,
}

impl Scheduler {
    pub(super) fn new(core: Arc<Core>) -> Self {
        Self { core }
    }

    /// One pass; returns how many refreshes it started.
    pub fn run_due_refreshes(&self) -> usize {
        run_due_refreshes(&self.core)
    }

    /// Runs a pass every `scheduler_interval` until `stop` resolves.
    pub async fn run(self, stop: impl Future<Output = ()>) {
        let mut ticker = tokio::time::interval(self.core.settings.scheduler_interval);
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

/// One scheduler pass: starts a refresh for every recently used tenant whose token is
/// past its scheduled refresh point. Returns how many were started.
pub fn run_due_refreshes(core: &Arc<Core>) -> usize {
    let now = core.now();
    report_expired(core, now);
    // The due slots are taken out of the lock first: starting a fetch takes others.
    let due: Vec<Arc<Slot>> = core
        .slots
        .ordered()
        .values()
        .filter(|slot| is_due(slot, now))
        .cloned()
        .collect();
    for slot in &due {
        drop(fetch(core, slot, Need::Refresh { scheduled: true }));
    }
    due.len()
}

/// Whether `slot` was used since its token was fetched, is past its scheduled refresh
/// point, and may be refreshed now.
fn is_due(slot: &Slot, now: DateTime<Utc>) -> bool {
    let Some(token) = slot.token.load_full() else {
        return false;
    };
    let used_since_fetch = slot.last_used.load(Ordering::Relaxed) >= token.fetched_at.timestamp();
    used_since_fetch
        && now >= slot.scheduled_refresh(&token)
        && slot.inflight.lock().is_none()
        && slot.cooling_down(now).is_none()
        && !slot.refresh_deferred(now)
}

/// Raises `token.expired` once for each failing tenant whose held token can no longer be
/// served: its callers now get errors. (An idle tenant's token running out is no event:
/// its next caller simply fetches a new one.)
fn report_expired(core: &Core, now: DateTime<Utc>) {
    for slot in core.slots.ordered().values() {
        let Some(token) = slot.token.load_full() else {
            continue;
        };
        if token.servable(now) {
            continue;
        }
        let mut health = slot.health.lock();
        if health.last_attempt_failed && !health.expiry_reported {
            health.expiry_reported = true;
            core.events
                .raise_later(Event::expired(slot.id.as_str(), token.expires_at));
        }
    }
}
