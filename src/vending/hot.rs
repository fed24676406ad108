//! The plain cache hit as two steps, for the HTTP fast path (`routes::hot`): look (no
//! effect), then serve (the slot touched, the hit counted, the answer's bytes) — exactly
//! what `Vendor::token(id, ZERO)` does when it serves the held token without a fetch.
//! Anything else (no token, one inside its refresh window or its margin) is not a plain
//! hit, and `Vendor::token` deals with it.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};

use super::slot::Slot;
use super::{HeldToken, Vendor};
use crate::domain::{TenantId, TenantUid};
use crate::metrics::TokenResult;

/// A held token that `Vendor::token(id, ZERO)` would serve as it is, looked at but not
/// served yet.
pub struct PlainHit {
    slot: Arc<Slot>,
    token: Arc<HeldToken>,
    now: DateTime<Utc>,
}

impl Vendor {
    /// The plain hit of the tenant served under the path's text `raw`, if there is one
    /// now (servable, outside its refresh window). Changes nothing.
    pub fn plain_hit(&self, raw: &str) -> Option<PlainHit> {
        let slot = self.core.slots.get(raw)?;
        let now = self.core.now();
        let token = slot.token.load_full()?;
        (token.satisfies(now, Duration::ZERO) && !token.in_refresh_window(now))
            .then_some(PlainHit { slot, token, now })
    }
}

impl PlainHit {
    /// The tenant's id (the slot's own, shared).
    pub fn id(&self) -> &TenantId {
        &self.slot.id
    }

    /// The identity of the tenant holding the id now.
    pub fn uid(&self) -> TenantUid {
        self.slot.config.load().key.uid
    }

    /// Serves the token as `Vendor::token` does on a hit (the slot touched for the
    /// scheduler, the hit counted): its answer's bytes, and their length in decimal.
    pub fn serve(self, vendor: &Vendor) -> (Bytes, Bytes) {
        self.slot.touch(self.now);
        vendor.core.count(TokenResult::Hit);
        self.token
            .answer_and_length(self.slot.id.as_str(), self.now)
    }
}
