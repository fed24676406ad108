//! The plain cache hit as two steps, for the HTTP fast path (`routes::hot`): look (no
//! effect), then serve (the slot touched, the hit counted, the answer's bytes) — exactly
//! what `Vendor::token(id, ZERO)` does when it serves the held token without a fetch.
//! Anything else (no token, one inside its refresh window or its margin) is not a plain
//! hit, and `Vendor::token` deals with it.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};

use super::core::Core;
use super::slot::Slot;
use super::token::HeldToken;
use crate::domain::{TenantId, TenantUid};
use crate::telemetry::metrics::TokenResult;

/// The tenant served under a path's text, as the engine holds it now
/// (`Vendor::held`).
pub struct Held<'a> {
    core: &'a Core,
    slot: Arc<Slot>,
}

/// A held token that `Vendor::token(id, ZERO)` would serve as it is, looked at but not
/// served yet.
pub struct PlainHit<'a> {
    core: &'a Core,
    slot: Arc<Slot>,
    token: Arc<HeldToken>,
    now: DateTime<Utc>,
}

impl<'a> Held<'a> {
    /// The tenant served under `raw` (the path's text as it is). Changes nothing.
    pub(super) fn find(core: &'a Core, raw: &str) -> Option<Self> {
        Some(Self {
            core,
            slot: core.slots.get(raw)?,
        })
    }

    /// The tenant's id (the slot's own, shared, not copied).
    pub fn id(&self) -> &TenantId {
        &self.slot.id
    }

    /// The identity of the tenant holding the id now.
    pub fn uid(&self) -> TenantUid {
        self.slot.config.load().key.uid
    }

    /// Its plain hit, if there is one now (a token servable and outside its refresh
    /// window). Changes nothing.
    pub fn plain_hit(self) -> Option<PlainHit<'a>> {
        let now = self.core.now();
        let token = self.slot.token.load_full()?;
        (token.satisfies(now, Duration::ZERO) && !token.in_refresh_window(now)).then_some(
            PlainHit {
                core: self.core,
                slot: self.slot,
                token,
                now,
            },
        )
    }
}

impl PlainHit<'_> {
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
    pub fn serve(self) -> (Bytes, Bytes) {
        self.slot.touch(self.now);
        self.core.count(TokenResult::Hit);
        let bytes = Bytes::from(self.token.response_json(self.slot.id.as_str(), self.now));
        let length = Bytes::copy_from_slice(itoa::Buffer::new().format(bytes.len()).as_bytes());
        (bytes, length)
    }
}
