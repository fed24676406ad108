//! What every part of the engine shares: the slot map, the ports, the clock, the settings.

use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};
use parking_lot::Mutex;

use super::budget::UpstreamBudget;
use super::caller_rate::CallerFetchRate;
use super::jwks::JwksCache;
use super::port::{TokenEvents, TokenSource, TokenStore};
use super::registry::RegistryState;
use super::settings::VendingSettings;
use super::slot::Slot;
pub use super::slot_map::SlotMap;
use super::token::{HeldToken, SignatureState};
use super::verify::Refusals;
use crate::clock::Clock;
use crate::crypto::MasterKey;
use crate::domain::TenantId;
use crate::outbound::UrlPolicy;
use crate::telemetry::metrics::{Metrics, TokenResult};

pub struct Core {
    pub slots: SlotMap,
    /// The registry's own state (`registry/`).
    pub registry: RegistryState,
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
    pub events: Arc<dyn TokenEvents>,
    /// Until when refreshes skip the fleet lock because the store was found unreachable.
    pub store_down_until: Mutex<Option<Instant>>,
    /// The edX fetches each caller may still trigger (`TOKENVEND_CALLER_FETCH_RATE`).
    pub caller_rate: CallerFetchRate,
    /// Client ids whose verify edX refused (`verify.rs`).
    pub verify_refusals: Refusals,
}

impl Core {
    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    pub fn slot(&self, id: &TenantId) -> Option<Arc<Slot>> {
        self.slots.get(id.as_str())
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
        if !token.is_jwt() {
            return;
        }
        let core = self.clone();
        let slot = slot.clone();
        tokio::spawn(async move {
            let signature = core.jwks.verify(&url, token.expose_token()).await;
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
