//! Invalidation: a caller reports that edX refused a token (a `401`). The held token is
//! dropped only while it is still the one the caller used (a late report about an older
//! token never throws away a fresh one), no more often than caller-triggered fetches may
//! happen, and it is never served again: its fingerprint is kept and the slot's generation
//! bumped, so that neither a fetch under way nor a stored copy brings it back.

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::core::Core;
use super::error::VendError;
use super::flight::too_soon;
use super::slot::Slot;

/// What an invalidation did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invalidation {
    /// The held token was the one reported: it is dropped; the next request fetches anew.
    Dropped,
    /// Another token (or none) is held: nothing was dropped.
    FingerprintMismatch,
}

pub fn invalidate(core: &Core, slot: &Slot, fingerprint: &str) -> Result<Invalidation, VendError> {
    // Under the flight lock, where fetch results and stored tokens are installed.
    let _inflight = slot.inflight.lock();
    let Some(held) = slot
        .token
        .load_full()
        .filter(|held| held.fingerprint == fingerprint)
    else {
        return Ok(Invalidation::FingerprintMismatch);
    };
    let now = core.now();
    if let Some(VendError::Upstream { retry_after, .. }) = slot.cooling_down(now) {
        return Err(VendError::TooSoon {
            retry_after: retry_after.unwrap_or(Duration::from_secs(1)),
        });
    }
    if let Some(wait) = too_soon(core, slot, now) {
        return Err(VendError::TooSoon { retry_after: wait });
    }
    *slot.invalidated.lock() = Some(held.fingerprint.clone());
    slot.generation.fetch_add(1, Ordering::SeqCst);
    slot.token.store(None);
    tracing::info!(tenant = %slot.id, fingerprint = %held.fingerprint, "token invalidated");
    Ok(Invalidation::Dropped)
}
