//! The token cache: one slot per tenant, read without locks on the hot path; single-flight
//! fetches; refresh-ahead; per-tenant cool-down after failures; a background scheduler
//! that refreshes recently used tenants before their tokens expire.

mod jwks;
mod token;

use std::collections::HashMap;
use std::future::Future;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use arc_swap::{ArcSwap, ArcSwapOption};
use chrono::{DateTime, SecondsFormat, Utc};
use futures::future::{BoxFuture, FutureExt, Shared};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use serde_json::Value;
use url::Url;

pub use token::{decode_claims, fingerprint, HeldToken, SignatureState};

use crate::clock::Clock;
use crate::crypto::{MasterKey, Purpose};
use crate::domain::{TokenType, UrlPolicy};
use crate::metrics::{Metrics, TokenResult};
use crate::store::{RefreshLock, Store, TenantRecord, TokenRecord};
use crate::upstream::{
    TokenRequest, UpstreamClient, UpstreamError, UpstreamSettings, DEFAULT_TOKEN_URL,
};
use jwks::JwksCache;

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
    #[error("the tenant's stored client secret cannot be decrypted")]
    Credentials,
    #[error("the token fetch failed unexpectedly")]
    Internal,
}

/// A tenant's settings as vending needs them, the client secret decrypted.
struct TenantConfig {
    credentials_version: i64,
    client_id: String,
    client_secret: Option<SecretString>,
    token_url: Option<Url>,
    scope: Option<String>,
    token_type: TokenType,
    asymmetric_jwt: bool,
    jwks_url: Option<Url>,
}

impl TenantConfig {
    fn from_record(record: &TenantRecord, key: &MasterKey) -> Self {
        let sealed = crate::crypto::Sealed {
            key_id: record.secret_key_id.clone(),
            bytes: record.secret_ciphertext.clone(),
        };
        let client_secret = match key.open(Purpose::ClientSecret, &record.id, &sealed) {
            Ok(bytes) => String::from_utf8(bytes).ok().map(SecretString::from),
            Err(error) => {
                tracing::error!(tenant = %record.id, %error, "cannot decrypt the client secret");
                None
            }
        };
        let url = |raw: &Option<String>| raw.as_deref().and_then(|u| Url::parse(u).ok());
        Self {
            credentials_version: record.credentials_version,
            client_id: record.client_id.clone(),
            client_secret,
            token_url: url(&record.token_url),
            scope: record.scope.clone(),
            token_type: record.token_type.parse().unwrap_or_default(),
            asymmetric_jwt: record.asymmetric_jwt,
            jwks_url: url(&record.jwks_url),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct LastError {
    pub at: String,
    /// The upstream HTTP status, when there was one.
    pub status: Option<u16>,
    pub message: String,
}

#[derive(Default)]
struct Health {
    last_error: Option<LastError>,
    cause: Option<UpstreamError>,
    consecutive_failures: u32,
    cooldown_until: Option<DateTime<Utc>>,
    last_attempt_failed: bool,
}

type Outcome = Result<Arc<HeldToken>, VendError>;

/// A new token, and whether it is already in the store.
struct Obtained {
    token: Arc<HeldToken>,
    stored: bool,
}
type SharedFetch = Shared<BoxFuture<'static, Outcome>>;

struct Slot {
    id: String,
    config: ArcSwap<TenantConfig>,
    /// Bumped when credentials change, so a fetch begun with the old ones is discarded.
    epoch: AtomicU64,
    token: ArcSwapOption<HeldToken>,
    inflight: Mutex<Option<SharedFetch>>,
    health: Mutex<Health>,
    upstream_calls: AtomicU64,
    upstream_failures: AtomicU64,
    last_used: AtomicI64,
    /// 0..1, fixed per tenant: spreads scheduled refreshes of many tenants.
    jitter: f64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn rfc3339(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn chrono_secs(secs: f64) -> chrono::Duration {
    chrono::Duration::milliseconds((secs * 1000.0) as i64)
}

impl Slot {
    fn new(id: String, config: TenantConfig) -> Self {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        id.hash(&mut hasher);
        Self {
            jitter: (hasher.finish() % 10_000) as f64 / 10_000.0,
            id,
            config: ArcSwap::from_pointee(config),
            epoch: AtomicU64::new(0),
            token: ArcSwapOption::empty(),
            inflight: Mutex::new(None),
            health: Mutex::new(Health::default()),
            upstream_calls: AtomicU64::new(0),
            upstream_failures: AtomicU64::new(0),
            last_used: AtomicI64::new(0),
        }
    }

    fn touch(&self, now: DateTime<Utc>) {
        let secs = now.timestamp();
        // Skip the store when unchanged: keeps the hot path free of cache-line contention.
        if self.last_used.load(Ordering::Relaxed) != secs {
            self.last_used.store(secs, Ordering::Relaxed);
        }
    }

    /// When the scheduler refreshes this token: a little before the refresh point.
    fn scheduled_refresh(&self, token: &HeldToken) -> DateTime<Utc> {
        let window = (token.expires_at - token.refresh_at).num_milliseconds() as f64 / 1000.0;
        token.refresh_at - chrono_secs(window * 0.25 * self.jitter)
    }

    fn cooling_down(&self, now: DateTime<Utc>) -> Option<VendError> {
        let health = lock(&self.health);
        let until = health.cooldown_until.filter(|until| *until > now)?;
        let cause = health.cause.clone()?;
        let left = (until - now).to_std().unwrap_or_default();
        Some(VendError::Upstream {
            cause,
            retry_after: Some(left.max(Duration::from_secs(1))),
        })
    }
}

/// How long edX is left alone for a tenant after its `n`th failure in a row.
fn cooldown(cause: &UpstreamError, n: u32) -> Duration {
    let doubling = |base: u64, cap: u64| {
        Duration::from_secs(
            base.saturating_mul(1 << n.saturating_sub(1).min(16))
                .min(cap),
        )
    };
    let bounded = |d: Duration| d.clamp(Duration::from_secs(1), Duration::from_secs(600));
    match cause {
        UpstreamError::Rejected { .. } => doubling(30, 600),
        UpstreamError::Throttled { retry_after, .. } => {
            bounded(retry_after.unwrap_or(Duration::from_secs(30)))
        }
        UpstreamError::Unavailable { retry_after, .. } => {
            retry_after.map_or_else(|| doubling(1, 60), bounded)
        }
        UpstreamError::Timeout(_) => doubling(1, 60),
        UpstreamError::InvalidResponse { .. } => doubling(5, 300),
    }
}

/// What a caller of `fetch` needs; checked again under the single-flight lock so that a
/// token fetched meanwhile is used instead of fetching another.
#[derive(Debug, Clone, Copy)]
enum Need {
    /// A servable token with at least this much time left.
    Serve(Duration),
    /// A token outside its (scheduled) refresh point.
    Refresh { scheduled: bool },
    /// A new token whatever is held (operators' forced refresh).
    Force,
}

/// Where a token request was answered from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Served {
    Cache,
    CacheRefreshing,
    Upstream,
}

/// A token status as ops dashboards see it: never the token itself.
#[derive(Debug, Clone, Serialize)]
pub struct TokenStatus {
    pub tenant_id: String,
    pub state: &'static str,
    pub issued_at: Option<String>,
    pub expires_at: Option<String>,
    pub not_before: Option<String>,
    pub lifetime_seconds: Option<i64>,
    pub remaining_seconds: Option<i64>,
    pub fetched_at: Option<String>,
    pub next_refresh_at: Option<String>,
    pub claims: Option<Value>,
    pub signature: SignatureState,
    pub fingerprint: Option<String>,
    pub last_error: Option<LastError>,
    pub upstream_calls: u64,
    pub upstream_failures: u64,
}

struct Inner {
    slots: ArcSwap<HashMap<String, Arc<Slot>>>,
    /// Serialises changes to the slot map (reads never take it).
    writes: Mutex<()>,
    upstream: UpstreamClient,
    jwks: JwksCache,
    store: Store,
    master_key: Arc<MasterKey>,
    clock: Arc<dyn Clock>,
    settings: VendingSettings,
    metrics: Arc<Metrics>,
    /// Until when refreshes skip the fleet lock because the store was found unreachable.
    store_down_until: Mutex<Option<Instant>>,
}

/// How long a read or write under the refresh lock may take before the refresh goes on
/// without it (a store that hangs must not hold callers past their deadline).
const STORE_STEP_TIMEOUT: Duration = Duration::from_secs(2);

/// How long refreshes skip the fleet lock after finding the store unreachable.
const STORE_DOWN_BACKOFF: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub struct Vendor {
    inner: Arc<Inner>,
}

impl Vendor {
    pub fn new(
        store: Store,
        master_key: Arc<MasterKey>,
        clock: Arc<dyn Clock>,
        settings: VendingSettings,
        policy: UrlPolicy,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Self> {
        let upstream = UpstreamClient::new(settings.upstream.clone(), policy, metrics.clone())?;
        Ok(Self {
            inner: Arc::new(Inner {
                slots: ArcSwap::default(),
                writes: Mutex::new(()),
                jwks: JwksCache::new(upstream.clone()),
                upstream,
                store,
                master_key,
                clock,
                settings,
                metrics,
                store_down_until: Mutex::new(None),
            }),
        })
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.inner.clock.now()
    }

    fn slot(&self, id: &str) -> Option<Arc<Slot>> {
        self.inner.slots.load().get(id).cloned()
    }

    /// Loads every tenant and every still-valid stored token, so that a restart makes no
    /// upstream call for tenants whose tokens are still good.
    pub async fn load(&self) -> Result<(), sqlx::Error> {
        self.reload_tenants().await?;
        self.adopt_stored_tokens().await
    }

    /// Serves every stored token that is newer than the one held (stored by another
    /// replica, or by an earlier run).
    pub async fn adopt_stored_tokens(&self) -> Result<(), sqlx::Error> {
        for record in self.inner.store.list_tokens().await? {
            self.adopt_token(&record);
        }
        Ok(())
    }

    /// Serves a stored token from now on if it is valid and newer than the one held.
    /// Returns whether it was adopted.
    pub fn adopt_token(&self, record: &TokenRecord) -> bool {
        let Some(slot) = self.slot(&record.tenant_id) else {
            return false;
        };
        let Some(token) = self.restore_token(record) else {
            tracing::warn!(tenant = %record.tenant_id, "ignoring an unreadable stored token");
            return false;
        };
        if !token.servable(self.now()) {
            return false;
        }
        let token = Arc::new(token);
        {
            // Under the flight lock, as a fetch's own result is installed.
            let _inflight = lock(&slot.inflight);
            let held = slot.token.load();
            if held.as_ref().is_some_and(|held| {
                held.fingerprint == token.fingerprint || held.fetched_at > token.fetched_at
            }) {
                return false;
            }
            slot.token.store(Some(token.clone()));
            *lock(&slot.health) = Health::default();
        }
        tracing::debug!(tenant = %slot.id, fingerprint = %token.fingerprint, "serving a stored token");
        self.verify_in_background(&slot, token);
        true
    }

    fn restore_token(&self, record: &TokenRecord) -> Option<HeldToken> {
        let sealed = crate::crypto::Sealed {
            key_id: record.key_id.clone(),
            bytes: record.ciphertext.clone(),
        };
        let bytes = self
            .inner
            .master_key
            .open(Purpose::AccessToken, &record.tenant_id, &sealed)
            .ok()?;
        HeldToken::restore(
            SecretString::from(String::from_utf8(bytes).ok()?),
            record.token_type.clone(),
            record.scope.clone(),
            record.fetched_at,
            record.expires_at,
            self.inner.settings.skew,
        )
    }

    /// Adds a tenant or applies a change to it. A change of credentials, URL, scope or
    /// token type drops its token at once; other changes keep it.
    pub fn upsert_tenant(&self, record: &TenantRecord) {
        let config = TenantConfig::from_record(record, &self.inner.master_key);
        let _writing = lock(&self.inner.writes);
        let slots = self.inner.slots.load();
        match slots.get(&record.id) {
            Some(slot) => {
                let old = slot.config.load();
                let same_credentials = old.credentials_version == config.credentials_version;
                if same_credentials {
                    slot.config.store(Arc::new(config));
                } else {
                    let mut inflight = lock(&slot.inflight);
                    slot.epoch.fetch_add(1, Ordering::SeqCst);
                    slot.config.store(Arc::new(config));
                    slot.token.store(None);
                    *lock(&slot.health) = Health::default();
                    *inflight = None;
                }
            }
            None => {
                let mut map = HashMap::clone(&slots);
                map.insert(
                    record.id.clone(),
                    Arc::new(Slot::new(record.id.clone(), config)),
                );
                self.inner.slots.store(Arc::new(map));
            }
        }
    }

    /// Forgets a tenant and its token at once.
    pub fn remove_tenant(&self, id: &str) {
        let _writing = lock(&self.inner.writes);
        let slots = self.inner.slots.load();
        if slots.contains_key(id) {
            let mut map = HashMap::clone(&slots);
            if let Some(slot) = map.remove(id) {
                slot.token.store(None);
            }
            self.inner.slots.store(Arc::new(map));
        }
    }

    /// Brings every tenant up to date with the store, and forgets those it no longer has.
    pub async fn reload_tenants(&self) -> Result<(), sqlx::Error> {
        let mut ids = Vec::new();
        let mut after = String::new();
        loop {
            let page = self.inner.store.list_tenants(&after, 500).await?;
            let Some(last) = page.last() else { break };
            after = last.id.clone();
            for record in &page {
                self.upsert_tenant(record);
                ids.push(record.id.clone());
            }
        }
        self.retain_tenants(&ids);
        Ok(())
    }

    /// Forgets every tenant not in `ids`.
    fn retain_tenants(&self, ids: &[String]) {
        let keep: std::collections::HashSet<&str> = ids.iter().map(String::as_str).collect();
        let gone: Vec<String> = self
            .inner
            .slots
            .load()
            .keys()
            .filter(|id| !keep.contains(id.as_str()))
            .cloned()
            .collect();
        for id in gone {
            self.remove_tenant(&id);
        }
    }

    /// A servable token with at least `min_ttl` left if one can be had: from memory when
    /// possible (refreshing ahead in the background), else from one shared upstream fetch.
    /// When even a fresh token has less than `min_ttl`, it is returned as it is.
    pub async fn token(
        &self,
        id: &str,
        min_ttl: Duration,
    ) -> Result<(Arc<HeldToken>, Served), VendError> {
        let slot = self.slot(id).ok_or(VendError::UnknownTenant)?;
        let now = self.now();
        slot.touch(now);
        let held_before = slot.token.load_full();
        if let Some(held) = held_before.clone() {
            if held.satisfies(now, min_ttl) {
                if held.in_refresh_window(now) {
                    drop(self.fetch(&slot, Need::Refresh { scheduled: false }));
                    self.inner
                        .metrics
                        .count_token_request(TokenResult::RefreshAhead);
                    return Ok((held, Served::CacheRefreshing));
                }
                self.inner.metrics.count_token_request(TokenResult::Hit);
                return Ok((held, Served::Cache));
            }
        }
        let outcome = self.fetch(&slot, Need::Serve(min_ttl)).await;
        let now = self.now();
        match outcome {
            Ok(fresh) if fresh.servable(now) => {
                // The held token itself comes back when it was fetched moments ago.
                let reused = held_before.is_some_and(|before| Arc::ptr_eq(&before, &fresh));
                if reused {
                    self.inner.metrics.count_token_request(TokenResult::Hit);
                    return Ok((fresh, Served::Cache));
                }
                self.inner.metrics.count_token_request(TokenResult::Miss);
                Ok((fresh, Served::Upstream))
            }
            other => {
                // A failed refresh (or an unmet min_ttl) still serves a valid held token.
                if let Some(held) = slot.token.load_full().filter(|t| t.servable(now)) {
                    self.inner.metrics.count_token_request(TokenResult::Hit);
                    return Ok((held, Served::Cache));
                }
                self.inner.metrics.count_token_request(TokenResult::Error);
                Err(other.err().unwrap_or(VendError::Internal))
            }
        }
    }

    /// Fetches a new token now, whatever is held (joining a fetch already under way).
    pub async fn force_refresh(&self, id: &str) -> Result<TokenStatus, VendError> {
        let slot = self.slot(id).ok_or(VendError::UnknownTenant)?;
        self.fetch(&slot, Need::Force).await?;
        Ok(self.status_of(&slot, self.now()))
    }

    fn satisfied(&self, slot: &Slot, need: Need, now: DateTime<Utc>) -> Option<Arc<HeldToken>> {
        let token = slot.token.load_full()?;
        self.meets(slot, &token, need, now, None).then_some(token)
    }

    /// Whether `token` answers `need`; a forced refresh takes only a token fetched since it
    /// `started`.
    fn meets(
        &self,
        slot: &Slot,
        token: &HeldToken,
        need: Need,
        now: DateTime<Utc>,
        started: Option<DateTime<Utc>>,
    ) -> bool {
        match need {
            Need::Serve(min_ttl) => {
                let recently = now - token.fetched_at
                    < chrono::Duration::from_std(self.inner.settings.min_refetch_interval)
                        .unwrap_or_default();
                token.satisfies(now, min_ttl) || (token.servable(now) && recently)
            }
            Need::Refresh { scheduled: true } => now < slot.scheduled_refresh(token),
            Need::Refresh { scheduled: false } => !token.in_refresh_window(now),
            Need::Force => started.is_some_and(|started| token.fetched_at >= started),
        }
    }

    /// The single-flight: joins the fetch under way for this tenant, or starts one in its
    /// own task (so that a caller going away does not abort it for the others).
    fn fetch(&self, slot: &Arc<Slot>, need: Need) -> BoxFuture<'static, Outcome> {
        let shared = {
            let mut inflight = lock(&slot.inflight);
            if let Some(fetch) = inflight.as_ref() {
                fetch.clone()
            } else {
                let now = self.now();
                if let Some(token) = self.satisfied(slot, need, now) {
                    return futures::future::ready(Ok(token)).boxed();
                }
                if let Some(cooling) = slot.cooling_down(now) {
                    let throttled = matches!(
                        cooling,
                        VendError::Upstream {
                            cause: UpstreamError::Throttled { .. },
                            ..
                        }
                    );
                    if !matches!(need, Need::Force) || throttled {
                        return futures::future::ready(Err(cooling)).boxed();
                    }
                }
                let epoch = slot.epoch.load(Ordering::SeqCst);
                let task = tokio::spawn(self.clone().fetch_task(slot.clone(), epoch, need, now));
                let fetch = async move { task.await.unwrap_or(Err(VendError::Internal)) }
                    .boxed()
                    .shared();
                *inflight = Some(fetch.clone());
                fetch
            }
        };
        shared.boxed()
    }

    async fn fetch_task(
        self,
        slot: Arc<Slot>,
        epoch: u64,
        need: Need,
        started: DateTime<Utc>,
    ) -> Outcome {
        let config = slot.config.load_full();
        let result = self.obtain(&slot, &config, need, started).await;
        let now = self.now();
        let mut inflight = lock(&slot.inflight);
        if slot.epoch.load(Ordering::SeqCst) != epoch {
            // Credentials changed meanwhile: this result belongs to the old ones.
            return result.map(|obtained| obtained.token);
        }
        let mut health = lock(&slot.health);
        let outcome = match result {
            Ok(Obtained { token, stored }) => {
                slot.token.store(Some(token.clone()));
                *health = Health::default();
                if !stored {
                    self.persist(&slot.id, &config, &token);
                }
                self.verify_in_background(&slot, token.clone());
                Ok(token)
            }
            Err(VendError::Upstream { cause, .. }) => {
                health.consecutive_failures += 1;
                let wait = cooldown(&cause, health.consecutive_failures);
                tracing::warn!(
                    tenant = %slot.id,
                    error = %cause,
                    cooldown_s = wait.as_secs(),
                    "token fetch failed"
                );
                health.last_error = Some(LastError {
                    at: rfc3339(now),
                    status: cause.http_status(),
                    message: cause.to_string(),
                });
                health.cooldown_until =
                    Some(now + chrono::Duration::from_std(wait).unwrap_or_default());
                health.cause = Some(cause.clone());
                health.last_attempt_failed = true;
                slot.upstream_failures.fetch_add(1, Ordering::Relaxed);
                Err(VendError::Upstream {
                    cause,
                    retry_after: Some(wait),
                })
            }
            Err(other) => Err(other),
        };
        drop(health);
        *inflight = None;
        outcome
    }

    /// A new token for `need`. On PostgreSQL this holds the tenant's fleet-wide refresh
    /// lock: the token another replica stored meanwhile is taken if it answers `need`;
    /// otherwise edX is asked and the answer stored before the lock is released. Without
    /// the lock (SQLite, store down, lock held too long) edX is asked directly.
    async fn obtain(
        &self,
        slot: &Slot,
        config: &TenantConfig,
        need: Need,
        started: DateTime<Utc>,
    ) -> Result<Obtained, VendError> {
        let deadline = Instant::now() + self.inner.settings.request_deadline;
        let held_before = slot.token.load_full();
        let Some(mut lock) = self.refresh_lock(slot).await else {
            let token = self.fetch_upstream(slot, config, deadline).await?;
            return Ok(Obtained {
                token,
                stored: false,
            });
        };
        match tokio::time::timeout(STORE_STEP_TIMEOUT, lock.stored_token())
            .await
            .unwrap_or(Err(sqlx::Error::PoolTimedOut))
        {
            Ok(Some(record)) => {
                if let Some(token) = self.restore_token(&record) {
                    // A forced refresh wants another token than the one it began with.
                    let forced_same = matches!(need, Need::Force)
                        && held_before
                            .as_ref()
                            .is_some_and(|held| held.fingerprint == token.fingerprint);
                    if !forced_same && self.meets(slot, &token, need, self.now(), Some(started)) {
                        tracing::debug!(tenant = %slot.id, "serving the token another replica stored");
                        return Ok(Obtained {
                            token: Arc::new(token),
                            stored: true,
                        });
                    }
                }
            }
            Ok(None) => {}
            Err(error) => {
                tracing::warn!(tenant = %slot.id, %error, "cannot read the stored token")
            }
        }
        let token = self.fetch_upstream(slot, config, deadline).await?;
        let record = self.seal(&slot.id, &token);
        let saving = lock.save_and_release(&record, config.credentials_version);
        if let Err(error) = tokio::time::timeout(STORE_STEP_TIMEOUT, saving)
            .await
            .unwrap_or(Err(sqlx::Error::PoolTimedOut))
        {
            // Served all the same; after a restart it is simply fetched again.
            tracing::warn!(tenant = %slot.id, %error, "could not store the token");
        }
        Ok(Obtained {
            token,
            stored: true,
        })
    }

    /// The tenant's fleet-wide refresh lock, or `None` when refreshing without it: on
    /// SQLite, when the store is unreachable, or when another replica holds it too long
    /// (a replica that died holding it releases it with its connection).
    async fn refresh_lock(&self, slot: &Slot) -> Option<RefreshLock> {
        if lock(&self.inner.store_down_until).is_some_and(|until| Instant::now() < until) {
            return None;
        }
        let settings = &self.inner.settings;
        let wait = settings.lock_wait.min(settings.request_deadline / 2);
        let taking = self.inner.store.refresh_lock(&slot.id, wait);
        match tokio::time::timeout(wait + crate::store::ACQUIRE_TIMEOUT, taking).await {
            Ok(Ok(lock)) => lock,
            Ok(Err(error)) if crate::store::is_lock_timeout(&error) => {
                tracing::warn!(
                    tenant = %slot.id,
                    waited_ms = wait.as_millis() as u64,
                    "another replica holds the refresh lock too long; asking edX without it"
                );
                None
            }
            Ok(Err(error)) => {
                if crate::store::is_unavailable(&error) {
                    *lock(&self.inner.store_down_until) = Some(Instant::now() + STORE_DOWN_BACKOFF);
                }
                tracing::warn!(tenant = %slot.id, %error, "cannot take the refresh lock; asking edX without it");
                None
            }
            Err(_) => {
                *lock(&self.inner.store_down_until) = Some(Instant::now() + STORE_DOWN_BACKOFF);
                tracing::warn!(tenant = %slot.id, "the store did not answer for the refresh lock; asking edX without it");
                None
            }
        }
    }

    async fn fetch_upstream(
        &self,
        slot: &Slot,
        config: &TenantConfig,
        deadline: Instant,
    ) -> Outcome {
        let secret = config
            .client_secret
            .as_ref()
            .ok_or(VendError::Credentials)?;
        let default_url;
        let token_url = match &config.token_url {
            Some(url) => url,
            None => {
                default_url = Url::parse(DEFAULT_TOKEN_URL).map_err(|_| VendError::Internal)?;
                &default_url
            }
        };
        let request = TokenRequest {
            token_url,
            client_id: &config.client_id,
            client_secret: secret,
            scope: config.scope.as_deref(),
            token_type: config.token_type,
            asymmetric_jwt: config.asymmetric_jwt,
        };
        let count = || {
            slot.upstream_calls.fetch_add(1, Ordering::Relaxed);
        };
        let upstream_error = |cause: UpstreamError| VendError::Upstream {
            cause,
            retry_after: None,
        };
        let fetched = self
            .inner
            .upstream
            .fetch(&request, deadline, &count)
            .await
            .map_err(upstream_error)?;
        let token = HeldToken::from_fetch(fetched, self.now(), self.inner.settings.skew)
            .map_err(upstream_error)?;
        tracing::info!(
            tenant = %slot.id,
            fingerprint = %token.fingerprint,
            expires_at = %rfc3339(token.expires_at),
            "fetched a new token"
        );
        Ok(Arc::new(token))
    }

    /// Writes the token, sealed, to the store in the background; a failure is logged and
    /// costs at most one upstream call after a restart.
    fn persist(&self, tenant_id: &str, config: &TenantConfig, token: &HeldToken) {
        let record = self.seal(tenant_id, token);
        let store = self.inner.store.clone();
        let credentials_version = config.credentials_version;
        tokio::spawn(async move {
            match store.save_token(&record, credentials_version).await {
                Ok(true) => {}
                Ok(false) => {
                    tracing::debug!(tenant = %record.tenant_id, "token not stored: the tenant changed meanwhile")
                }
                Err(error) => {
                    tracing::warn!(tenant = %record.tenant_id, %error, "could not store the token")
                }
            }
        });
    }

    /// The token as a store row, sealed under the master key.
    fn seal(&self, tenant_id: &str, token: &HeldToken) -> TokenRecord {
        let sealed = self.inner.master_key.seal(
            Purpose::AccessToken,
            tenant_id,
            token.access_token.expose_secret().as_bytes(),
        );
        TokenRecord {
            tenant_id: tenant_id.to_owned(),
            key_id: sealed.key_id,
            ciphertext: sealed.bytes,
            token_type: token.token_type.clone(),
            scope: token.scope.clone(),
            fetched_at: token.fetched_at,
            expires_at: token.expires_at,
        }
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

    fn status_of(&self, slot: &Slot, now: DateTime<Utc>) -> TokenStatus {
        let token = slot.token.load_full();
        let health = lock(&slot.health);
        let state = match &token {
            _ if health.last_attempt_failed => "failing",
            None => "missing",
            Some(t) if !t.servable(now) => "expired",
            Some(t) if t.in_refresh_window(now) => "expiring",
            Some(_) => "valid",
        };
        let cooldown_until = health.cooldown_until.filter(|u| *u > now);
        let next_refresh_at = match (&token, cooldown_until) {
            (_, Some(until)) => Some(until),
            (Some(t), None) => Some(slot.scheduled_refresh(t).max(now)),
            (None, None) => None,
        };
        let t = token.as_deref();
        TokenStatus {
            tenant_id: slot.id.clone(),
            state,
            issued_at: t.map(|t| rfc3339(t.issued_at)),
            expires_at: t.map(|t| rfc3339(t.expires_at)),
            not_before: t.and_then(|t| t.not_before).map(rfc3339),
            lifetime_seconds: t.map(HeldToken::lifetime_seconds),
            remaining_seconds: t.map(|t| t.remaining(now)),
            fetched_at: t.map(|t| rfc3339(t.fetched_at)),
            next_refresh_at: next_refresh_at.map(rfc3339),
            claims: t.and_then(|t| t.claims.clone()),
            signature: t.map_or(SignatureState::Unverified, |t| t.signature),
            fingerprint: t.map(|t| t.fingerprint.clone()),
            last_error: health.last_error.clone(),
            upstream_calls: slot.upstream_calls.load(Ordering::Relaxed),
            upstream_failures: slot.upstream_failures.load(Ordering::Relaxed),
        }
    }

    pub fn status(&self, id: &str) -> Option<TokenStatus> {
        let slot = self.slot(id)?;
        Some(self.status_of(&slot, self.now()))
    }

    /// Every tenant's token status, in tenant id order.
    pub fn statuses(&self) -> Vec<TokenStatus> {
        let now = self.now();
        let slots = self.inner.slots.load();
        let mut items: Vec<TokenStatus> = slots.values().map(|s| self.status_of(s, now)).collect();
        items.sort_by(|a, b| a.tenant_id.cmp(&b.tenant_id));
        items
    }

    /// Prometheus text, with the per-tenant seconds-left gauges brought up to date.
    pub fn render_metrics(&self) -> String {
        let now = self.now();
        let slots = self.inner.slots.load();
        self.inner.metrics.render(slots.iter().map(|(id, slot)| {
            let left = slot
                .token
                .load()
                .as_ref()
                .map(|t| (t.expires_at - now).num_milliseconds() as f64 / 1000.0);
            (id.as_str(), left)
        }))
    }

    /// One scheduler pass: starts a refresh for every recently used tenant whose token is
    /// past its scheduled refresh point. Returns how many were started.
    pub fn run_due_refreshes(&self) -> usize {
        let now = self.now();
        let mut started = 0;
        for slot in self.inner.slots.load().values() {
            let Some(token) = slot.token.load_full() else {
                continue;
            };
            let used_since_fetch =
                slot.last_used.load(Ordering::Relaxed) >= token.fetched_at.timestamp();
            if !used_since_fetch || now < slot.scheduled_refresh(&token) {
                continue;
            }
            if lock(&slot.inflight).is_some() || slot.cooling_down(now).is_some() {
                continue;
            }
            drop(self.fetch(slot, Need::Refresh { scheduled: true }));
            started += 1;
        }
        started
    }

    /// Runs the scheduler until `stop` resolves.
    pub async fn run_scheduler(self, stop: impl Future<Output = ()>) {
        let mut ticker = tokio::time::interval(self.inner.settings.scheduler_interval);
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
