//! The token engine: one slot per tenant, read without locks on the hot path; single-flight
//! fetches; refresh-ahead; per-tenant cool-down after failures; a background scheduler
//! that refreshes recently used tenants before their tokens expire.
//!
//! The token path: `Vendor::token` serves the held token (`slot.rs`) or joins the one
//! fetch under way (`flight.rs`), which takes the fleet lock and asks edX (`obtain.rs`)
//! through the `TokenSource` port; tokens are kept through the `TokenStore` port
//! (`port.rs`, sealed into the real store by `sealed.rs`).

mod config;
mod flight;
mod jwks;
#[cfg(test)]
mod memory;
mod obtain;
mod port;
mod registry;
mod scheduler;
mod sealed;
mod slot;
mod status;
mod token;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use chrono::{DateTime, Utc};
use parking_lot::Mutex;
use secrecy::ExposeSecret;

pub use port::{RefreshGuard, StoreFault, StoredToken, TenantKey, TokenSource, TokenStore};
pub use sealed::SealedTokenStore;
pub use slot::LastError;
pub use status::TokenStatus;
pub use token::{decode_claims, fingerprint, HeldToken, SignatureState};

use crate::clock::Clock;
use crate::domain::{TenantId, UrlPolicy};
use crate::metrics::{Metrics, TokenResult};
use crate::upstream::{UpstreamClient, UpstreamError, UpstreamSettings};
use flight::Need;
use jwks::JwksCache;
use slot::Slot;

#[derive(Debug, Clone)]
pub struct VendingSettings {
    /// A token this close to expiry is never served (at most a third of its lifetime).
    pub skew: Duration,
    /// How long a request waits for a new token (retries included).
    pub request_deadline: Duration,
    /// How often the scheduler looks for tokens to refresh.
    pub scheduler_interval: Duration,
    /// A token fetched this recently is not fetched again for a `min_ttl` it cannot meet.
    pub min_refetch_interval: Duration,
    /// On PostgreSQL, how long a refresh waits for another replica refreshing the same
    /// tenant before it asks edX itself (at most half the request deadline).
    pub lock_wait: Duration,
    pub upstream: UpstreamSettings,
}

impl Default for VendingSettings {
    fn default() -> Self {
        Self {
            skew: Duration::from_secs(10),
            request_deadline: Duration::from_secs(12),
            scheduler_interval: Duration::from_secs(1),
            min_refetch_interval: Duration::from_secs(5),
            lock_wait: Duration::from_secs(6),
            upstream: UpstreamSettings::default(),
        }
    }
}

/// Why no token could be served.
#[derive(Debug, Clone, thiserror::Error)]
pub enum VendError {
    #[error("tenant not found")]
    UnknownTenant,
    #[error("{cause}")]
    Upstream {
        cause: UpstreamError,
        /// When edX may be asked again for this tenant.
        retry_after: Option<Duration>,
    },
    /// The tenant's stored settings cannot be used (an unreadable secret, a URL the
    /// outbound rules refuse, an invalid row): nothing is sent anywhere.
    #[error("the tenant cannot be asked a token for: {0}")]
    Unusable(String),
    #[error("the token fetch failed unexpectedly")]
    Internal,
}

struct Inner {
    slots: ArcSwap<HashMap<TenantId, Arc<Slot>>>,
    /// Serialises changes to the slot map (reads never take it).
    writes: Mutex<()>,
    source: Arc<dyn TokenSource>,
    tokens: Arc<dyn TokenStore>,
    jwks: JwksCache,
    master_key: Arc<crate::crypto::MasterKey>,
    policy: UrlPolicy,
    clock: Arc<dyn Clock>,
    settings: VendingSettings,
    metrics: Arc<Metrics>,
    /// Until when refreshes skip the fleet lock because the store was found unreachable.
    store_down_until: Mutex<Option<Instant>>,
}

/// The engine's handle: cheap to clone, shared by every request.
#[derive(Clone)]
pub struct Vendor {
    inner: Arc<Inner>,
}

/// What a `Vendor` is built from besides its ports.
pub struct VendorParts {
    pub master_key: Arc<crate::crypto::MasterKey>,
    pub clock: Arc<dyn Clock>,
    pub settings: VendingSettings,
    pub policy: UrlPolicy,
    pub metrics: Arc<Metrics>,
}

impl Vendor {
    /// The engine over edX (through the upstream client) and `tokens`.
    pub fn new(parts: VendorParts, tokens: Arc<dyn TokenStore>) -> anyhow::Result<Self> {
        let upstream = UpstreamClient::new(
            parts.settings.upstream.clone(),
            parts.policy,
            parts.metrics.clone(),
        )?;
        Ok(Self::with_ports(
            parts,
            Arc::new(upstream.clone()),
            tokens,
            upstream,
        ))
    }

    /// The engine over any token source and store (unit tests use fakes); `jwks_client`
    /// fetches key sets for signature checks.
    pub fn with_ports(
        parts: VendorParts,
        source: Arc<dyn TokenSource>,
        tokens: Arc<dyn TokenStore>,
        jwks_client: UpstreamClient,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                slots: ArcSwap::default(),
                writes: Mutex::new(()),
                source,
                tokens,
                jwks: JwksCache::new(jwks_client),
                master_key: parts.master_key,
                policy: parts.policy,
                clock: parts.clock,
                settings: parts.settings,
                metrics: parts.metrics,
                store_down_until: Mutex::new(None),
            }),
        }
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.inner.clock.now()
    }

    fn slot(&self, id: &TenantId) -> Option<Arc<Slot>> {
        self.inner.slots.load().get(id).cloned()
    }

    /// A servable token with at least `min_ttl` left if one can be had: from memory when
    /// possible (refreshing ahead in the background), else from one shared upstream fetch.
    /// When even a fresh token has less than `min_ttl`, it is returned as it is.
    pub async fn token(
        &self,
        id: &TenantId,
        min_ttl: Duration,
    ) -> Result<Arc<HeldToken>, VendError> {
        let slot = self.slot(id).ok_or(VendError::UnknownTenant)?;
        let now = self.now();
        slot.touch(now);
        let held_before = slot.token.load_full();
        if let Some(held) = held_before.clone() {
            if held.satisfies(now, min_ttl) {
                if held.in_refresh_window(now) {
                    drop(self.fetch(&slot, Need::Refresh { scheduled: false }));
                    self.count(TokenResult::RefreshAhead);
                } else {
                    self.count(TokenResult::Hit);
                }
                return Ok(held);
            }
        }
        let outcome = self.fetch(&slot, Need::Serve(min_ttl)).await;
        let now = self.now();
        match outcome {
            Ok(fresh) if fresh.servable(now) => {
                // The held token itself comes back when it was fetched moments ago.
                let reused = held_before.is_some_and(|before| Arc::ptr_eq(&before, &fresh));
                self.count(if reused {
                    TokenResult::Hit
                } else {
                    TokenResult::Miss
                });
                Ok(fresh)
            }
            other => {
                // A failed refresh (or an unmet min_ttl) still serves a valid held token,
                // as long as the tenant is the one that was asked for.
                if let Some(held) = slot.token.load_full().filter(|t| t.servable(now)) {
                    if self.is_current(&slot) {
                        self.count(TokenResult::Hit);
                        return Ok(held);
                    }
                }
                self.count(TokenResult::Error);
                Err(other.err().unwrap_or(VendError::Internal))
            }
        }
    }

    fn count(&self, result: TokenResult) {
        self.inner.metrics.count_token_request(result);
    }

    /// Fetches a new token now, whatever is held (joining a fetch already under way).
    pub async fn force_refresh(&self, id: &TenantId) -> Result<TokenStatus, VendError> {
        let slot = self.slot(id).ok_or(VendError::UnknownTenant)?;
        self.fetch(&slot, Need::Force).await?;
        Ok(status::status_of(&slot, self.now()))
    }

    /// Checks a JWT against the tenant's JWKS, if it has one, and records the result.
    fn verify_in_background(&self, slot: &Arc<Slot>, token: Arc<HeldToken>) {
        let Some(url) = slot.config.load().jwks_url.clone() else {
            return;
        };
        if token.claims.is_none() {
            return;
        }
        let vendor = self.clone();
        let slot = slot.clone();
        tokio::spawn(async move {
            let signature = vendor
                .inner
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

#[cfg(test)]
mod tests;
