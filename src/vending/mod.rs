//! The token engine: one slot per tenant, read without locks on the hot path; single-flight
//! fetches; refresh-ahead; per-tenant cool-down after failures; a background scheduler
//! that refreshes recently used tenants before their tokens expire.
//!
//! The token path: `Vendor::token` serves the held token (`slot.rs`) or joins the one
//! fetch under way (`flight.rs`), which takes the fleet lock and asks edX (`obtain.rs`)
//! through the `TokenSource` port; tokens are kept through the `TokenStore` port
//! (`port.rs`, sealed into the real store by `sealed.rs`). `registry.rs` keeps the
//! tenants in step with the store, `status.rs` answers dashboards, `scheduler.rs`
//! refreshes ahead.

mod answer;
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

use std::collections::HashSet;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use parking_lot::Mutex;

pub use budget::{BudgetReport, HostBudget};
pub use config::api_base_of;
pub use error::VendError;
pub use invalidate::Invalidation;
pub use port::{RefreshGuard, StoreFault, StoredToken, TenantKey, TokenSource, TokenStore};
pub use sealed::SealedTokenStore;
pub use settings::VendingSettings;
pub use slot::{LastError, ProxyStats};
pub use status::{StatusPage, TokenState, TokenStatus};
pub use token::{decode_claims, fingerprint, HeldToken, SignatureState};
pub use verify::VerifiedToken;

use self::budget::UpstreamBudget;
use self::core::{Core, SlotMap};
use crate::clock::Clock;
use crate::crypto::MasterKey;
use crate::domain::{Tenant, TenantId, TenantUid, UrlPolicy};
use crate::metrics::{Metrics, TokenResult};
use crate::store::TenantRow;
use crate::upstream::UpstreamClient;
use crate::webhooks::Events;
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
    /// Where the engine raises `token.*` webhook events on a tenant's transitions.
    pub events: Events,
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
                writes: Mutex::new(()),
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
                adopting: AtomicBool::new(false),
                caller_rate,
                verify_refusals: Mutex::new(Default::default()),
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
        if held_before.is_none() && core.adopting.load(Ordering::Acquire) {
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

    /// Another replica invalidated that token: dropped here too if held (`invalidate.rs`).
    pub fn fleet_invalidated(&self, id: &TenantId, uid: TenantUid, fingerprint: &str) -> bool {
        self.core
            .slot(id)
            .is_some_and(|slot| invalidate::fleet_invalidated(&slot, uid, fingerprint))
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
    /// `upsert_tenant`): its first caller needs no upstream call.
    pub async fn keep_verified(&self, verified: VerifiedToken) {
        verify::keep(&self.core, verified).await;
    }

    /// Adds a tenant or applies a change to it (see `registry::upsert_tenant`).
    pub fn upsert_tenant(&self, tenant: &Tenant) {
        registry::upsert_tenant(&self.core, tenant);
    }

    /// Adds or updates the tenant of a stored row, valid or not; returns its id.
    pub fn upsert_row(&self, row: TenantRow) -> Option<TenantId> {
        registry::upsert_row(&self.core, row)
    }

    /// Forgets a tenant and its token at once.
    pub fn remove_tenant(&self, id: &TenantId) {
        registry::remove_tenant(&self.core, id);
    }

    /// Serves exactly the tenants of `rows` (the whole store), forgetting the others.
    pub fn replace_tenants(&self, rows: impl IntoIterator<Item = TenantRow>) {
        registry::replace_tenants(&self.core, rows);
    }

    /// Adds or updates the tenants of `rows` (a page of the store) at once.
    pub fn apply_tenant_rows(&self, rows: Vec<TenantRow>) {
        registry::apply_rows(&self.core, rows);
    }

    /// Forgets every tenant whose id is not in `present` (the whole store's ids).
    pub fn retain_tenants(&self, present: &HashSet<&str>) {
        registry::retain_tenants(&self.core, present);
    }

    /// Whether the tenant `id` is held with identity `uid`, as of the row at `version`.
    pub fn holds_tenant_version(&self, id: &str, uid: &str, version: i64) -> bool {
        registry::holds_version(&self.core, id, uid, version)
    }

    /// Marks the stored tokens as not adopted yet (start-up): until `adopt_stored_tokens`
    /// has run, a request for a tenant without a token first takes its stored one.
    pub fn expect_adoption(&self) {
        self.core.adopting.store(true, Ordering::Release);
    }

    /// Whether stored tokens are still being adopted (see `expect_adoption`).
    pub fn adopting(&self) -> bool {
        self.core.adopting.load(Ordering::Acquire)
    }

    /// Serves every stored token newer than the one held (another replica's, or an
    /// earlier run's), a page at a time; returns how many.
    pub async fn adopt_stored_tokens(&self) -> Result<usize, StoreFault> {
        let adopted = registry::adopt_stored_tokens(&self.core).await?;
        self.core.adopting.store(false, Ordering::Release);
        Ok(adopted)
    }

    /// Serves the stored tokens newer than the held ones, reading only those (the
    /// periodic reload); returns how many.
    pub async fn adopt_newer_stored_tokens(&self) -> Result<usize, StoreFault> {
        registry::adopt_newer_stored_tokens(&self.core).await
    }

    /// Serves the tenant's stored token if it is its own and newer than the one held.
    pub async fn adopt_stored_token(&self, id: &TenantId) -> Result<bool, StoreFault> {
        registry::adopt_stored_token(&self.core, id).await
    }

    /// Serves a stored token if it belongs to the tenant held under its id (the same
    /// identity), is servable and is newer than the one held.
    pub fn adopt(&self, stored: StoredToken) -> bool {
        registry::adopt(&self.core, stored)
    }

    /// The identity of the tenant that holds `id` now, if any.
    pub fn uid_of(&self, id: &TenantId) -> Option<TenantUid> {
        Some(self.core.slot(id)?.config.load().key.uid)
    }

    /// The id and identity of the tenant served under `raw`: the slot's own id (shared,
    /// not copied: the hot path finds tenants by the path's text).
    pub fn held_id(&self, raw: &str) -> Option<(TenantId, TenantUid)> {
        let slot = self.core.slots.get(raw)?;
        let uid = slot.config.load().key.uid;
        Some((slot.id.clone(), uid))
    }

    /// Records a proxied call's answer (`None`: tokenvend's own failure) for the status.
    pub fn record_proxy_call(&self, id: &TenantId, status: Option<u16>) {
        let Some(slot) = self.core.slot(id) else {
            return;
        };
        let now = self.now();
        slot.seldom(|seldom| {
            let stats = &mut seldom.proxy;
            stats.calls += 1;
            stats.last_status = status;
            if status == Some(401) {
                stats.last_401_at = Some(crate::domain::rfc3339(now));
            }
        });
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

    pub fn status(&self, id: &TenantId) -> Option<TokenStatus> {
        let slot = self.core.slot(id)?;
        Some(status::status_of(&slot, self.now()))
    }

    /// Up to `limit` token statuses after the tenant id `after` (any string: the tenants
    /// sorting after it in byte order), in id order, of the given states (all when
    /// empty), and whether more follow.
    pub fn statuses(&self, after: Option<&str>, states: &[TokenState], limit: usize) -> StatusPage {
        status::statuses(&self.core, after, states, limit)
    }

    /// The upstream budget: its rate, and what it did for each token-endpoint host.
    pub fn upstream_budget(&self) -> BudgetReport {
        BudgetReport {
            rate_per_minute: self.core.settings.upstream_rate.map(|n| n.get()),
            hosts: self.core.budget.hosts(),
        }
    }

    /// Prometheus text, with the per-tenant seconds-left gauges brought up to date.
    pub fn render_metrics(&self) -> String {
        status::render_metrics(&self.core)
    }

    /// One scheduler pass; returns how many refreshes it started.
    pub fn run_due_refreshes(&self) -> usize {
        scheduler::run_due_refreshes(&self.core)
    }

    /// Runs the scheduler until `stop` resolves.
    pub async fn run_scheduler(self, stop: impl Future<Output = ()>) {
        let mut ticker = tokio::time::interval(self.core.settings.scheduler_interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(stop);
        loop {
            tokio::select! {
                _ = ticker.tick() => {
                    let started = self.run_due_refreshes();
                    if started > 0 {
                        tracing::debug!(started, "scheduled token refreshes");
                    }
                }
                () = &mut stop => break,
            }
        }
    }
}

#[cfg(test)]
mod tests;
