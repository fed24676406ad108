//! One tenant's place in the cache: its settings, the held token, the fetch under way,
//! and its health (the cool-down after failures that keeps edX from being hammered).

use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::{ArcSwap, ArcSwapOption};
use chrono::{DateTime, Utc};
use futures::future::{BoxFuture, Shared};
use parking_lot::Mutex;
use serde::Serialize;

use super::config::TenantConfig;
use super::error::VendError;
use super::token::HeldToken;
use crate::domain::{rfc3339, TenantId};
use crate::outbound::upstream::UpstreamError;

#[derive(Debug, Clone, Serialize)]
pub struct LastError {
    pub at: String,
    /// The upstream HTTP status, when there was one.
    pub status: Option<u16>,
    pub message: String,
    /// What the engine itself reads of it (the message is for people only).
    #[serde(skip)]
    pub kind: ErrorKind,
}

/// What a tenant's last error stands for, as the engine decides on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// A failure: the tenant's settings, or edX's answer to its last fetch.
    Failure,
    /// Not a failure but a notice: edX refused the new client secret, and the token
    /// was had with the previous one (still kept for a while).
    PreviousSecretServing,
}

/// What the dashboard shows of a tenant's proxied calls (kept here, beside its token).
#[derive(Debug, Clone, Default, Serialize)]
pub struct ProxyStats {
    pub calls: u64,
    /// The status of the last call (`null`: tokenvend's own failure, or none yet).
    pub last_status: Option<u16>,
    /// When the API last answered `401`.
    pub last_401_at: Option<String>,
}

/// Boxed parts: most tenants are healthy, and every tenant has a `Health`.
#[derive(Default)]
pub struct Health {
    pub last_error: Option<Box<LastError>>,
    pub cause: Option<Box<UpstreamError>>,
    pub consecutive_failures: u32,
    pub cooldown_until: Option<DateTime<Utc>>,
    pub last_attempt_failed: bool,
    /// Whether `token.expired` was raised for the held token.
    pub expiry_reported: bool,
}

impl Health {
    /// A fresh start; a tenant that cannot be asked a token for shows as failing at once.
    pub fn for_config(config: &TenantConfig, now: DateTime<Utc>) -> Self {
        let mut health = Health::default();
        if let Err(problem) = &config.upstream {
            health.last_error = Some(Box::new(LastError {
                at: rfc3339(now),
                status: None,
                message: problem.clone(),
                kind: ErrorKind::Failure,
            }));
            health.last_attempt_failed = true;
        }
        health
    }
}

pub type Outcome = Result<Arc<HeldToken>, VendError>;
pub type SharedFetch = Shared<BoxFuture<'static, Outcome>>;

pub struct Slot {
    pub id: TenantId,
    pub config: ArcSwap<TenantConfig>,
    /// Bumped when credentials change, so a fetch begun with the old ones is discarded.
    pub epoch: AtomicU64,
    pub token: ArcSwapOption<HeldToken>,
    pub inflight: Mutex<Option<SharedFetch>>,
    pub health: Mutex<Health>,
    pub upstream_calls: AtomicU64,
    pub upstream_failures: AtomicU64,
    pub last_used: AtomicI64,
    /// Until when (ms since the epoch; 0: not) refreshes ahead of time are put off because
    /// the upstream budget was short.
    deferred_until: AtomicI64,
    /// Bumped by every invalidation (see `invalidate.rs`).
    pub generation: AtomicU64,
    /// What few tenants have (see `Seldom`): nothing until one does.
    seldom: Mutex<Option<Box<Seldom>>>,
    /// 0..1, fixed per tenant: spreads scheduled refreshes of many tenants.
    jitter: f32,
}

/// What few tenants ever have, kept apart so that every other tenant's slot stays small
/// (a deployment holds 100,000 of them).
#[derive(Default)]
pub struct Seldom {
    /// The fingerprint of the token last dropped by an invalidation: never installed
    /// again, whichever fetch or stored copy brings it back.
    pub invalidated: Option<String>,
    /// Why the next fetch happens, when a caller's need alone does not say it: set by an
    /// invalidation (`invalidated`) and the proxy's retry after a 401 (`proxy_retry`),
    /// taken by the fetch that follows (the `tokenvend.trigger` of its span).
    pub next_trigger: Option<&'static str>,
    /// Set while the tenant has no token because a caller invalidated it: the fetch that
    /// replaces it is the caller's, and stays out of the budget's reserve for tenants
    /// that never had one (a caller cannot spend edX for others by invalidating).
    pub caller_dropped: bool,
    pub proxy: ProxyStats,
}

fn chrono_secs(secs: f64) -> chrono::Duration {
    chrono::Duration::milliseconds((secs * 1000.0) as i64)
}

impl Slot {
    pub fn new(config: TenantConfig, now: DateTime<Utc>) -> Self {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        config.key.id.hash(&mut hasher);
        let health = Health::for_config(&config, now);
        Self {
            jitter: (hasher.finish() % 10_000) as f32 / 10_000.0,
            id: config.key.id.clone(),
            config: ArcSwap::from_pointee(config),
            epoch: AtomicU64::new(0),
            token: ArcSwapOption::empty(),
            inflight: Mutex::new(None),
            health: Mutex::new(health),
            upstream_calls: AtomicU64::new(0),
            upstream_failures: AtomicU64::new(0),
            last_used: AtomicI64::new(0),
            deferred_until: AtomicI64::new(0),
            generation: AtomicU64::new(0),
            seldom: Mutex::new(None),
        }
    }

    /// Changes what few tenants have, making room for it at the first change.
    pub fn seldom<R>(&self, change: impl FnOnce(&mut Seldom) -> R) -> R {
        change(self.seldom.lock().get_or_insert_with(Box::default))
    }

    /// Whether the tenant's token was dropped by a caller and not replaced yet.
    pub fn caller_dropped(&self) -> bool {
        self.seldom
            .lock()
            .as_ref()
            .is_some_and(|seldom| seldom.caller_dropped)
    }

    /// Takes the reason of the next fetch, if one was given.
    pub fn take_next_trigger(&self) -> Option<&'static str> {
        self.seldom.lock().as_mut()?.next_trigger.take()
    }

    /// What the dashboard shows of the tenant's proxied calls.
    pub fn proxy_stats(&self) -> ProxyStats {
        self.seldom
            .lock()
            .as_ref()
            .map(|seldom| seldom.proxy.clone())
            .unwrap_or_default()
    }

    pub fn touch(&self, now: DateTime<Utc>) {
        let secs = now.timestamp();
        // Skip the store when unchanged: keeps the hot path free of cache-line contention.
        if self.last_used.load(Ordering::Relaxed) != secs {
            self.last_used.store(secs, Ordering::Relaxed);
        }
    }

    /// When the scheduler refreshes this token: a little before the refresh point.
    pub fn scheduled_refresh(&self, token: &HeldToken) -> DateTime<Utc> {
        let window = (token.expires_at - token.refresh_at).num_milliseconds() as f64 / 1000.0;
        token.refresh_at - chrono_secs(window * 0.25 * f64::from(self.jitter))
    }

    /// Puts off refreshes ahead of time for about `wait` (a little more or less per tenant,
    /// so that the tenants put off together do not all come back at once).
    pub fn defer_refresh(&self, now: DateTime<Utc>, wait: Duration) {
        let spread = wait.as_secs_f64() * (0.75 + 0.5 * f64::from(self.jitter));
        let until = now + chrono_secs(spread.max(1.0));
        self.deferred_until
            .store(until.timestamp_millis(), Ordering::Relaxed);
    }

    /// Whether refreshes ahead of time are put off now (the upstream budget was short).
    pub fn refresh_deferred(&self, now: DateTime<Utc>) -> bool {
        now.timestamp_millis() < self.deferred_until.load(Ordering::Relaxed)
    }

    /// The answer while edX is left alone for this tenant after a failure.
    pub fn cooling_down(&self, now: DateTime<Utc>) -> Option<VendError> {
        let health = self.health.lock();
        let until = health.cooldown_until.filter(|until| *until > now)?;
        let cause = UpstreamError::clone(health.cause.as_deref()?);
        let left = (until - now).to_std().unwrap_or_default();
        Some(VendError::Upstream {
            cause,
            retry_after: Some(left.max(Duration::from_secs(1))),
        })
    }

    /// Records a failed fetch and starts the cool-down; returns its length.
    pub fn record_failure(&self, cause: &UpstreamError, now: DateTime<Utc>) -> Duration {
        let mut health = self.health.lock();
        health.consecutive_failures += 1;
        let wait = cooldown(cause, health.consecutive_failures);
        health.last_error = Some(Box::new(LastError {
            at: rfc3339(now),
            status: cause.http_status(),
            message: cause.to_string(),
            kind: ErrorKind::Failure,
        }));
        health.cooldown_until = Some(now + chrono::Duration::from_std(wait).unwrap_or_default());
        health.cause = Some(Box::new(cause.clone()));
        health.last_attempt_failed = true;
        self.upstream_failures.fetch_add(1, Ordering::Relaxed);
        wait
    }

    /// Serves `token` from now on and forgets past failures; refuses (false) the token an
    /// invalidation dropped, and any token while the tenant's settings are unusable.
    pub fn install(&self, token: Arc<HeldToken>) -> bool {
        if self.is_invalidated(&token) {
            tracing::debug!(tenant = %self.id, "not serving an invalidated token again");
            return false;
        }
        if self.config.load().upstream.is_err() {
            // A token had for URLs the outbound rules now refuse (a stored copy adopted
            // after a restart without the insecure flag) is never served.
            tracing::debug!(tenant = %self.id, "not serving a token of an unusable tenant");
            return false;
        }
        self.token.store(Some(token));
        *self.health.lock() = Health::default();
        if let Some(seldom) = self.seldom.lock().as_mut() {
            seldom.caller_dropped = false;
        }
        true
    }

    /// Whether `token` is the one an invalidation dropped.
    pub fn is_invalidated(&self, token: &HeldToken) -> bool {
        self.seldom
            .lock()
            .as_ref()
            .and_then(|seldom| seldom.invalidated.as_deref())
            == Some(token.fingerprint.as_str())
    }
}

/// How long edX is left alone for a tenant after its `n`th failure in a row.
pub fn cooldown(cause: &UpstreamError, n: u32) -> Duration {
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
        // Not an answer of edX's: tokenvend's own budget (never recorded as a failure).
        UpstreamError::OverBudget { retry_after } => bounded(*retry_after),
        // Not sent: the host's circuit breaker is open; asked again when it probes.
        UpstreamError::HostFailing { retry_after } => bounded(*retry_after),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cool_downs_double_up_to_their_cap_and_honour_retry_after() {
        let rejected = UpstreamError::Rejected {
            status: 401,
            code: "invalid_client".into(),
        };
        let secs = |n| cooldown(&rejected, n).as_secs();
        assert_eq!((secs(1), secs(2), secs(3)), (30, 60, 120));
        assert_eq!(secs(10), 600, "capped at ten minutes");
        let throttled = |after| UpstreamError::Throttled {
            status: 429,
            retry_after: after,
        };
        assert_eq!(
            cooldown(&throttled(Some(Duration::from_secs(17))), 1).as_secs(),
            17
        );
        assert_eq!(cooldown(&throttled(None), 5).as_secs(), 30);
        assert_eq!(
            cooldown(&throttled(Some(Duration::from_secs(86_400))), 1).as_secs(),
            600,
            "a huge Retry-After is bounded"
        );
        assert_eq!(
            cooldown(&UpstreamError::Timeout(Duration::ZERO), 7).as_secs(),
            60
        );
    }
}
