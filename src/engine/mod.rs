//! The token engine: one slot per tenant, read without locks on the hot path; single-flight
//! fetches; refresh-ahead; per-tenant cool-down after failures; a background scheduler
//! that refreshes recently used tenants before their tokens expire.
//!
//! The token path: `Vendor::token` serves the held token (`slot.rs`) or joins the one
//! fetch under way (`flight.rs`), which takes the fleet lock and asks edX (`obtain.rs`)
//! through the `TokenSource` port; tokens are kept through the `TokenStore` port
//! (`port.rs`, sealed into the real store by `sealed.rs`); a tenant's transitions are
//! told through the `TokenEvents` port (the webhook outbox). `Vendor` serves tokens; its
//! `registry()` (`registry/`) keeps the tenants in step with the store and adopts stored
//! tokens, its `status_view()` (`status.rs`) answers dashboards and `/metrics`, and
//! `scheduler.rs` refreshes ahead.

mod breaker;
mod budget;
mod caller_rate;
mod config;
mod core;
mod error;
mod flight;
mod hot;
mod invalidate;
pub mod jwks;
#[cfg(test)]
mod memory;
mod need;
mod obtain;
mod port;
/// The proxy: a tenant's edX API called with its token, which callers never see.
pub mod proxy;
mod registry;
mod scheduler;
mod sealed;
mod settings;
pub mod signals;
mod skew;
mod slot;
mod slot_map;
mod status;
mod token;
mod verify;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use parking_lot::Mutex;

pub use budget::{BudgetReport, HostBudget};
pub use config::api_base_of;
pub use error::VendError;
pub use hot::{Held, PlainHit};
pub use invalidate::Invalidation;
pub use port::{
    RefreshGuard, StoreFault, StoredToken, TenantKey, TokenEvents, TokenSource, TokenStore,
};
pub use registry::{Registry, StoredTenant};
pub use scheduler::Scheduler;
pub use sealed::SealedTokenStore;
pub use settings::VendingSettings;
pub use slot::{ErrorKind, LastError, ProxyStats};
pub use status::{StatusPage, StatusView, TokenState, TokenStatus};
pub use token::{decode_claims, fingerprint, HeldToken, SignatureState};
pub use verify::VerifiedToken;

use self::budget::UpstreamBudget;
use self::core::{Core, SlotMap};
use crate::clock::Clock;
use crate::crypto::MasterKey;
use crate::domain::{Tenant, TenantId};
use crate::outbound::{upstream::UpstreamClient, UrlPolicy};
use crate::telemetry::metrics::{Metrics, TokenResult};
use jwks::JwksCache;
use need::Need;

/// The engine's handle: cheap to clone, shared by every request.
#[derive(Clone)]
pub struct Vendor {
    core: Arc<Core>,
}

/// What a `Vendor` is built from besides its ports.
pub struct VendorParts {
    pub master_key: Arc<MasterKey>,
    pub clock: Arc<dyn Clock>,
    pub settings: VendingSettings,
    pub policy: UrlPolicy,
    pub metrics: Arc<Metrics>,
    /// Where the engine raises `token.*` webhook events on a tenant's transitions (the
    /// webhook outbox: `webhooks::Events`).
    pub events: Arc<dyn TokenEvents>,
    /// The live replicas (the caller fetch rate is shared among them).
    pub fleet: Arc<crate::share::FleetSize>,
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
        let budget = UpstreamBudget::new(parts.settings.upstream_rate, parts.metrics.clone());
        let sharing = crate::share::Sharing::new(parts.clock.clone(), parts.fleet);
        let caller_rate =
            caller_rate::CallerFetchRate::new(parts.settings.caller_fetch_rate, &sharing);
        Self {
            core: Arc::new(Core {
                slots: SlotMap::default(),
                source,
                tokens,
                jwks: JwksCache::new(jwks_client),
                master_key: parts.master_key,
                policy: parts.policy,
                clock: parts.clock,
                settings: parts.settings,
                metrics: parts.metrics,
                budget,
                events: parts.events,
                store_down_until: Mutex::new(None),
                registry: Default::default(),
                caller_rate,
                verify_refusals: Default::default(),
            }),
        }
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.core.now()
    }

    /// A servable token with at least `min_ttl` left if one can be had: from memory when
    /// possible (refreshing ahead in the background), else from one shared upstream fetch.
    /// When even a fresh token has less than `min_ttl`, it is returned as it is.
    pub async fn token(
        &self,
        id: &TenantId,
        min_ttl: Duration,
    ) -> Result<Arc<HeldToken>, VendError> {
        let core = &self.core;
        let slot = core.slot(id).ok_or(VendError::UnknownTenant)?;
        let now = core.now();
        slot.touch(now);
        let held_before = slot.token.load_full();
        if let Some(held) = held_before.clone() {
            if held.satisfies(now, min_ttl) {
                if held.in_refresh_window(now) {
                    drop(flight::fetch(
                        core,
                        &slot,
                        Need::Refresh { scheduled: false },
                    ));
                    core.count(TokenResult::RefreshAhead);
                } else {
                    core.count(TokenResult::Hit);
                }
                return Ok(held);
            }
        }
        if held_before.is_none() && core.registry.adopting() {
            // Start-up: stored tokens are being adopted in the background; this tenant's
            // is taken now rather than asked of edX again.
            if let Err(error) = registry::adopt_stored_token(core, id).await {
                tracing::debug!(tenant = %id, %error, "cannot read the stored token");
            }
            if let Some(held) = slot.token.load_full() {
                if held.satisfies(now, min_ttl) {
                    core.count(TokenResult::Hit);
                    return Ok(held);
                }
            }
        }
        let outcome = flight::fetch(core, &slot, Need::Serve(min_ttl)).await;
        let now = core.now();
        match outcome {
            Ok(fresh) if fresh.servable(now) => {
                // The held token itself comes back when it was fetched moments ago.
                let reused = held_before.is_some_and(|before| Arc::ptr_eq(&before, &fresh));
                core.count(if reused {
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
                    if core.is_current(&slot) {
                        core.count(TokenResult::Hit);
                        return Ok(held);
                    }
                }
                core.count(TokenResult::Error);
                Err(other.err().unwrap_or(VendError::Internal))
            }
        }
    }

    /// `token` for a caller that asks for at least `min_ttl` left: a fetch that only its
    /// `min_ttl` makes necessary counts against the caller's fetch rate, and once the
    /// caller is over it the held token is served as it is (as when the interval rule
    /// declines the fetch).
    pub async fn token_for(
        &self,
        id: &TenantId,
        min_ttl: Duration,
        caller: &str,
    ) -> Result<Arc<HeldToken>, VendError> {
        if !min_ttl.is_zero() {
            if let Some(slot) = self.core.slot(id) {
                let now = self.core.now();
                let held = slot.token.load_full().filter(|held| held.servable(now));
                if let Some(held) = held {
                    let fetches =
                        !Need::Serve(min_ttl).met_by(&held, &slot, &self.core.settings, now, None);
                    if fetches && self.core.caller_rate.charge(caller).is_err() {
                        tracing::debug!(tenant = %id, caller, "min_ttl not met: the caller is over its fetch rate");
                        self.core.count(TokenResult::Hit);
                        return Ok(held);
                    }
                }
            }
        }
        self.token(id, min_ttl).await
    }

    /// Fetches a new token now, whatever is held (joining a fetch already under way), on
    /// `caller`'s word: counted against its fetch rate.
    pub async fn force_refresh(
        &self,
        id: &TenantId,
        caller: &str,
    ) -> Result<TokenStatus, VendError> {
        let slot = self.core.slot(id).ok_or(VendError::UnknownTenant)?;
        let now = self.core.now();
        // Refusals that cost the caller nothing: edX would not be asked anyway.
        if slot.token.load().is_some() {
            if let Some(wait) = flight::too_soon(&self.core, &slot, now) {
                return Err(VendError::TooSoon { retry_after: wait });
            }
        }
        if let Some(VendError::Upstream { retry_after, .. }) = slot.cooling_down(now) {
            return Err(VendError::TooSoon {
                retry_after: retry_after.unwrap_or(Duration::from_secs(1)),
            });
        }
        self.core
            .caller_rate
            .charge(caller)
            .map_err(|retry_after| VendError::CallerOverRate { retry_after })?;
        flight::fetch(&self.core, &slot, Need::Force).await?;
        Ok(status::status_of(&slot, self.now()))
    }

    /// Drops the held token if its fingerprint is `fingerprint` (`caller` got a 401 with
    /// it); `TooSoon` within the minimum refresh interval of its fetch or during a
    /// failure cool-down, `CallerOverRate` once the caller has triggered its fetches.
    pub fn invalidate(
        &self,
        id: &TenantId,
        fingerprint: &str,
        caller: &str,
    ) -> Result<Invalidation, VendError> {
        let slot = self.core.slot(id).ok_or(VendError::UnknownTenant)?;
        invalidate::invalidate(&self.core, &slot, fingerprint, caller)
    }

    /// The token to use after edX refused `refused`: the held token when it is newer,
    /// else a new one (the refused one invalidated, single-flight). `None` when no other
    /// token may be had now (the interval rule, a cool-down, or a fetch that brought back
    /// the same token).
    pub async fn replace_refused(
        &self,
        id: &TenantId,
        refused: &HeldToken,
        caller: &str,
    ) -> Option<Arc<HeldToken>> {
        match self.invalidate(id, &refused.fingerprint, caller) {
            Ok(Invalidation::Dropped) => {
                if let Some(slot) = self.core.slot(id) {
                    slot.seldom(|seldom| seldom.next_trigger = Some("proxy_retry"));
                }
            }
            Ok(Invalidation::FingerprintMismatch) => {}
            Err(error) => {
                tracing::debug!(tenant = %id, %error, "the refused token is not replaced now");
                return None;
            }
        }
        let fresh = self.token(id, Duration::ZERO).await.ok()?;
        (fresh.fingerprint != refused.fingerprint).then_some(fresh)
    }

    /// Asks edX for a token with `tenant`'s settings before it is stored (nothing is
    /// served, stored or counted against the tenant as held now), on `caller`'s word:
    /// counted against its fetch rate, and refused while edX's refusal of the same
    /// client id is fresh.
    pub async fn verify(&self, tenant: &Tenant, caller: &str) -> Result<VerifiedToken, VendError> {
        verify::verify(&self.core, tenant, caller).await
    }

    /// Serves and stores a verified token once its tenant is stored and registered (see
    /// `Registry::upsert_tenant`): its first caller needs no upstream call.
    pub async fn keep_verified(&self, verified: VerifiedToken) {
        verify::keep(&self.core, verified).await;
    }

    /// The tenant served under `raw` (the path's text as it is): the hot path finds
    /// tenants without parsing or copying their id. Changes nothing.
    pub fn held(&self, raw: &str) -> Option<Held<'_>> {
        Held::find(&self.core, raw)
    }

    /// Where the proxy sends the tenant's API calls, checked against the outbound rules in
    /// force now.
    pub fn api_base(&self, id: &TenantId) -> Result<url::Url, VendError> {
        let slot = self.core.slot(id).ok_or(VendError::UnknownTenant)?;
        let config = slot.config.load();
        match &config.api_base {
            Ok(url) => Ok(url::Url::clone(url)),
            Err(problem) => Err(VendError::Unusable(problem.clone())),
        }
    }

    /// The tenants served and the stored tokens they take over: for start-up, the tenant
    /// writes and the fleet.
    pub fn registry(&self) -> Registry<'_> {
        Registry::new(&self.core)
    }

    /// What is read of the engine for people: token statuses, metrics, the upstream
    /// budget (and the proxy's record of its calls, which the status shows).
    pub fn status_view(&self) -> StatusView<'_> {
        StatusView::new(&self.core)
    }

    /// The background refreshes: `scheduler().run(stop)` runs them until `stop`.
    pub fn scheduler(&self) -> Scheduler {
        Scheduler::new(self.core.clone())
    }
}

#[cfg(test)]
mod tests;
