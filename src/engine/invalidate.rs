//! Invalidation: a caller reports that edX refused a token (a `401`). The held token is
//! dropped only while it is still the one the caller used (a late report about an older
//! token never throws away a fresh one), no more often than caller-triggered fetches may
//! happen, and it is never served again: its fingerprint is kept and the slot's generation
//! bumped, so that neither a fetch under way nor a stored copy brings it back. The
//! store tells the other replicas (`fleet.rs`), which drop the same token (and only
//! that one) through `fleet_invalidated`.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::core::Core;
use super::error::VendError;
use super::flight::too_soon;
use super::slot::Slot;
use super::token::HeldToken;
use crate::domain::TenantUid;

/// What an invalidation did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invalidation {
    /// The held token was the one reported: it is dropped; the next request fetches anew.
    Dropped,
    /// Another token (or none) is held: nothing was dropped.
    FingerprintMismatch,
}

/// Deletes the stored copy of an invalidated token in the background, so that a restart
/// does not adopt it again (a failure is logged: the copy is then refused in this
/// process and draws another 401 after a restart at worst).
fn forget_stored(core: &Arc<Core>, slot: &Slot, held: Arc<HeldToken>) {
    let core = core.clone();
    let key = slot.config.load().key.clone();
    tokio::spawn(async move {
        match core.tokens.forget(&key, &held).await {
            Ok(deleted) => {
                tracing::debug!(tenant = %key.id, deleted, "stored copy of the invalidated token")
            }
            Err(error) => {
                tracing::warn!(tenant = %key.id, %error, "could not delete the invalidated token from the store")
            }
        }
    });
}

pub fn invalidate(
    core: &Arc<Core>,
    slot: &Slot,
    fingerprint: &str,
    caller: &str,
) -> Result<Invalidation, VendError> {
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
    // Checked last, so that a report that would change nothing costs the caller nothing.
    core.caller_rate
        .charge(caller)
        .map_err(|retry_after| VendError::CallerOverRate { retry_after })?;
    slot.seldom(|seldom| {
        seldom.invalidated = Some(held.fingerprint.clone());
        seldom.next_trigger = Some("invalidated");
        seldom.caller_dropped = true;
    });
    slot.generation.fetch_add(1, Ordering::SeqCst);
    slot.token.store(None);
    tracing::info!(tenant = %slot.id, fingerprint = %held.fingerprint, "token invalidated");
    forget_stored(core, slot, held);
    Ok(Invalidation::Dropped)
}

/// Another replica accepted an invalidation of the token `fingerprint` of the tenant with
/// identity `uid`: it is never served here either, and dropped if it is the held one (a
/// newer token is kept). The fetch that replaces it is on the caller's word, as on the
/// replica that accepted it. Returns whether the held token was dropped.
pub fn fleet_invalidated(slot: &Slot, uid: TenantUid, fingerprint: &str) -> bool {
    if slot.config.load().key.uid != uid {
        return false;
    }
    // Under the flight lock, where fetch results and stored tokens are installed.
    let _inflight = slot.inflight.lock();
    // Recorded even when another token is held: a stored copy read before the
    // invalidation was (an adoption, a fetch under the fleet lock) is not installed later.
    slot.seldom(|seldom| seldom.invalidated = Some(fingerprint.to_owned()));
    let held = slot.token.load_full();
    if held.is_none_or(|held| held.fingerprint != fingerprint) {
        return false;
    }
    slot.seldom(|seldom| {
        seldom.next_trigger = Some("invalidated");
        seldom.caller_dropped = true;
    });
    slot.generation.fetch_add(1, Ordering::SeqCst);
    slot.token.store(None);
    tracing::info!(tenant = %slot.id, %fingerprint, "token invalidated by another replica");
    true
}
