//! The adoption of tokens stored by another replica or an earlier run: all of them after
//! start-up (in the background; a tenant asked for meanwhile takes its own at once), the
//! newer ones on the fleet's reloads, one on a change announcement.

use std::sync::Arc;

use crate::domain::TenantId;
use crate::engine::core::Core;
use crate::engine::port::{StoreFault, StoredToken};

/// How many stored tokens are read and opened at a time.
const ADOPTION_PAGE: usize = 1000;

/// Serves every stored token that is newer than the one held (stored by another replica,
/// or by an earlier run), reading and opening them a page at a time (the next page is
/// read while one is adopted). Returns how many were adopted.
pub async fn adopt_stored_tokens(core: &Arc<Core>) -> Result<usize, StoreFault> {
    let read = |after: String| {
        let tokens = core.tokens.clone();
        tokio::spawn(async move { tokens.page(&after, ADOPTION_PAGE).await })
    };
    let mut adopted = 0;
    let mut next = Some(read(String::new()));
    while let Some(reading) = next.take() {
        let page = reading
            .await
            .map_err(|e| StoreFault::Other(format!("reading stored tokens failed: {e}")))??;
        if let (true, Some(last)) = (page.full, page.last) {
            next = Some(read(last));
        }
        for stored in page.tokens {
            adopted += usize::from(adopt(core, stored));
        }
    }
    Ok(adopted)
}

/// Serves the stored tokens that are newer than the held ones, reading only those: the
/// fleet's periodic reload, which must not open every token again.
pub async fn adopt_newer_stored_tokens(core: &Arc<Core>) -> Result<usize, StoreFault> {
    let now = core.now();
    let mut adopted = 0;
    for version in core.tokens.versions().await? {
        if version.expires_at <= now {
            continue;
        }
        let Some(slot) = core.slot(&version.tenant_id) else {
            continue;
        };
        let newer = slot.config.load().key.uid == version.tenant_uid
            && slot
                .token
                .load()
                .as_ref()
                .is_none_or(|held| held.fetched_at < version.fetched_at);
        if newer && adopt_stored_token(core, &version.tenant_id).await? {
            adopted += 1;
        }
    }
    Ok(adopted)
}

/// Serves the tenant's stored token if it is newer than the one held.
pub async fn adopt_stored_token(core: &Arc<Core>, id: &TenantId) -> Result<bool, StoreFault> {
    Ok(match core.tokens.stored(id).await? {
        Some(stored) => adopt(core, stored),
        None => false,
    })
}

/// Serves a stored token from now on if it belongs to the tenant held under its id
/// (the same identity), is servable, and is newer than the one held. Returns whether
/// it was adopted.
pub fn adopt(core: &Arc<Core>, stored: StoredToken) -> bool {
    let Some(slot) = core.slot(&stored.tenant_id) else {
        return false;
    };
    if slot.config.load().key.uid != stored.tenant_uid {
        tracing::debug!(tenant = %slot.id, "ignoring a stored token of another tenant identity");
        return false;
    }
    let Some(token) = stored.token else {
        tracing::warn!(tenant = %slot.id, "ignoring an unreadable stored token");
        return false;
    };
    if !token.servable(core.now()) {
        return false;
    }
    let token = Arc::new(token);
    {
        // Under the flight lock, as a fetch's own result is installed.
        let _inflight = slot.inflight.lock();
        let held = slot.token.load();
        if held.as_ref().is_some_and(|held| {
            held.fingerprint == token.fingerprint || held.fetched_at > token.fetched_at
        }) {
            return false;
        }
        if !slot.install(token.clone()) {
            return false;
        }
    }
    tracing::debug!(tenant = %slot.id, fingerprint = %token.fingerprint, "serving a stored token");
    core.verify_in_background(&slot, token);
    true
}
