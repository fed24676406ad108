//! The background scheduler: refreshes recently used tenants before their tokens expire,
//! so that a steady caller never waits on edX.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::core::Core;
use super::flight::fetch;
use super::need::Need;

/// One scheduler pass: starts a refresh for every recently used tenant whose token is
/// past its scheduled refresh point. Returns how many were started.
pub fn run_due_refreshes(core: &Arc<Core>) -> usize {
    let now = core.now();
    let mut started = 0;
    for slot in core.slots.load().values() {
        let Some(token) = slot.token.load_full() else {
            continue;
        };
        let used_since_fetch =
            slot.last_used.load(Ordering::Relaxed) >= token.fetched_at.timestamp();
        if !used_since_fetch || now < slot.scheduled_refresh(&token) {
            continue;
        }
        if slot.inflight.lock().is_some()
            || slot.cooling_down(now).is_some()
            || slot.refresh_deferred(now)
        {
            continue;
        }
        drop(fetch(core, slot, Need::Refresh { scheduled: true }));
        started += 1;
    }
    started
}
