//! What every part of the engine shares: the slot map, the ports, the clock, the settings.

use std::collections::HashMap;
use std::ops::Deref;
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use chrono::{DateTime, Utc};
use parking_lot::Mutex;
use secrecy::ExposeSecret;

use super::budget::UpstreamBudget;
use super::jwks::JwksCache;
use super::port::{TokenSource, TokenStore};
use super::settings::VendingSettings;
use super::slot::Slot;
use super::token::{HeldToken, SignatureState};
use crate::clock::Clock;
use crate::crypto::MasterKey;
use crate::domain::{TenantId, UrlPolicy};
use crate::metrics::{Metrics, TokenResult};
use crate::webhooks::Events;

/// The served tenants: a map for the hot path's lookups, and the same slots in id order
/// so that a page of statuses costs a binary search and the page, not a sort of all.
/// Copied on write like the map alone was (writes are rare; reads never lock).
#[derive(Default, Clone)]
pub struct SlotMap {
    by_id: HashMap<TenantId, Arc<Slot>>,
    ordered: Vec<Arc<Slot>>,
}

impl SlotMap {
    /// Adds or replaces the slot of its tenant id; returns the one replaced.
    pub fn insert(&mut self, slot: Arc<Slot>) -> Option<Arc<Slot>> {
        match self.ordered.binary_search_by(|s| s.id.cmp(&slot.id)) {
            Ok(at) => self.ordered[at] = slot.clone(),
            Err(at) => self.ordered.insert(at, slot.clone()),
        }
        self.by_id.insert(slot.id.clone(), slot)
    }

    pub fn remove(&mut self, id: &TenantId) -> Option<Arc<Slot>> {
        if let Ok(at) = self.ordered.binary_search_by(|s| s.id.cmp(id)) {
            self.ordered.remove(at);
        }
        self.by_id.remove(id)
    }

    /// The slots whose id sorts after `after` (byte order; any string, not only an id),
    /// in id order.
    pub fn after<'a>(&'a self, after: Option<&str>) -> impl Iterator<Item = &'a Arc<Slot>> {
        let start = after.map_or(0, |after| {
            self.ordered.partition_point(|s| s.id.as_str() <= after)
        });
        self.ordered[start..].iter()
    }
}

impl Deref for SlotMap {
    type Target = HashMap<TenantId, Arc<Slot>>;

    fn deref(&self) -> &Self::Target {
        &self.by_id
    }
}

pub struct Core {
    pub slots: ArcSwap<SlotMap>,
    /// Serialises changes to the slot map (reads never take it).
    pub writes: Mutex<()>,
    pub source: Arc<dyn TokenSource>,
    pub tokens: Arc<dyn TokenStore>,
    pub jwks: JwksCache,
    pub master_key: Arc<MasterKey>,
    pub policy: UrlPolicy,
    pub clock: Arc<dyn Clock>,
    pub settings: VendingSettings,
    pub metrics: Arc<Metrics>,
    /// The budget of token requests per token-endpoint host.
    pub budget: UpstreamBudget,
    /// `token.*` webhook events, raised on transitions only.
    pub events: Events,
    /// Until when refreshes skip the fleet lock because the store was found unreachable.
    pub store_down_until: Mutex<Option<Instant>>,
}

impl Core {
    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    pub fn slot(&self, id: &TenantId) -> Option<Arc<Slot>> {
        self.slots.load().get(id).cloned()
    }

    /// Whether `slot` is still the one registered for its tenant id (not deleted, nor
    /// replaced by a tenant re-created under the same id).
    pub fn is_current(&self, slot: &Arc<Slot>) -> bool {
        self.slot(&slot.id)
            .is_some_and(|current| Arc::ptr_eq(&current, slot))
    }

    pub fn count(&self, result: TokenResult) {
        self.metrics.count_token_request(result);
    }

    /// Checks a JWT against the tenant's JWKS, if it has one, and records the result.
    pub fn verify_in_background(self: &Arc<Self>, slot: &Arc<Slot>, token: Arc<HeldToken>) {
        let Some(url) = slot.config.load().jwks_url.clone() else {
            return;
        };
        if token.claims.is_none() {
            return;
        }
        let core = self.clone();
        let slot = slot.clone();
        tokio::spawn(async move {
            let signature = core
                .jwks
                .verify(&url, token.access_token.expose_secret())
                .await;
            if signature == SignatureState::Invalid {
                tracing::warn!(tenant = %slot.id, "token signature does not verify against the JWKS");
            }
            let mut checked = HeldToken::clone(&token);
            checked.signature = signature;
            let current = slot.token.load();
            if current.as_ref().is_some_and(|c| Arc::ptr_eq(c, &token)) {
                slot.token
                    .compare_and_swap(&current, Some(Arc::new(checked)));
            }
        });
    }
}
