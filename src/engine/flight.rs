//! Single-flight: every caller that needs a new token for a tenant shares one fetch, run in
//! its own task so that a caller going away does not abort it for the others. What a
//! caller needs is checked again under the flight lock, so a token fetched meanwhile is
//! used instead of fetching another; a result is installed only while the tenant it was
//! fetched for is still the current one.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::future::{BoxFuture, FutureExt};
use tracing::Instrument;

use super::core::Core;
use super::error::VendError;
use super::need::{Need, Obtained};
use super::obtain::obtain;
use super::port::TenantKey;
use super::slot::{Outcome, Slot};
use super::token::HeldToken;
use crate::outbound::upstream::UpstreamError;
use crate::outbound::webhooks::Event;

/// Joins the fetch under way for this tenant, or starts one.
pub fn fetch(core: &Arc<Core>, slot: &Arc<Slot>, need: Need) -> BoxFuture<'static, Outcome> {
    let mut inflight = slot.inflight.lock();
    if let Some(fetch) = inflight.as_ref() {
        return fetch.clone().boxed();
    }
    let now = core.now();
    if let Some(token) = slot.token.load_full() {
        if need.met_by(&token, slot, &core.settings, now, None) {
            return futures::future::ready(Ok(token)).boxed();
        }
    }
    if matches!(need, Need::Refresh { .. }) && slot.refresh_deferred(now) {
        // The upstream budget was short moments ago: the held token serves meanwhile.
        return futures::future::ready(Err(VendError::Upstream {
            cause: UpstreamError::OverBudget {
                retry_after: Duration::from_secs(1),
            },
            retry_after: Some(Duration::from_secs(1)),
        }))
        .boxed();
    }
    if let Some(cooling) = slot.cooling_down(now) {
        // A forced refresh during a cool-down is refused as too soon: edX is left alone.
        let refused = match (&cooling, need) {
            (VendError::Upstream { retry_after, .. }, Need::Force) => VendError::TooSoon {
                retry_after: retry_after.unwrap_or(Duration::from_secs(1)),
            },
            _ => cooling,
        };
        return futures::future::ready(Err(refused)).boxed();
    }
    if need == Need::Force {
        if let Some(wait) = too_soon(core, slot, now) {
            return futures::future::ready(Err(VendError::TooSoon { retry_after: wait })).boxed();
        }
    }
    let epoch = slot.epoch.load(Ordering::SeqCst);
    let generation = slot.generation.load(Ordering::SeqCst);
    let held = slot.token.load().as_ref().is_some_and(|t| t.servable(now));
    // A child of the request that started it (if any); the fetch outlives that request.
    let span = tracing::info_span!(
        "token_fetch",
        tenant = %slot.id,
        "tokenvend.trigger" = slot
            .take_next_trigger()
            .unwrap_or_else(|| need.trigger(held)),
    );
    let task = tokio::spawn(
        fetch_task(core.clone(), slot.clone(), (epoch, generation), need, now).instrument(span),
    );
    let fetch = async move { task.await.unwrap_or(Err(VendError::Internal)) }
        .boxed()
        .shared();
    *inflight = Some(fetch.clone());
    fetch.boxed()
}

/// How long until a caller may trigger another fetch for `slot`: the held token was
/// fetched less than the minimum refresh interval ago.
pub fn too_soon(core: &Core, slot: &Slot, now: DateTime<Utc>) -> Option<Duration> {
    let token = slot.token.load_full()?;
    let interval = chrono::Duration::from_std(core.settings.min_refresh_interval).ok()?;
    let next = token.fetched_at + interval;
    (now < next).then(|| {
        (next - now)
            .to_std()
            .unwrap_or_default()
            .max(Duration::from_secs(1))
    })
}

async fn fetch_task(
    core: Arc<Core>,
    slot: Arc<Slot>,
    (epoch, generation): (u64, u64),
    need: Need,
    started: DateTime<Utc>,
) -> Outcome {
    let config = slot.config.load_full();
    // Read before the fetch: on PostgreSQL the token it stores is announced, and this
    // replica's own listener may adopt it (resetting the health) before the result is
    // installed here; the recovery is still this fetch's to announce.
    let failing_before = slot.health.lock().cause.is_some();
    let result = obtain(&core, &slot, &config, need, started).await;
    let now = core.now();
    let mut inflight = slot.inflight.lock();
    *inflight = None;
    if !core.is_current(&slot) {
        // The tenant was deleted (and perhaps re-created under the same id) meanwhile:
        // this result belongs to a tenant that no longer exists.
        tracing::debug!(tenant = %slot.id, "discarding a token fetched for a deleted tenant");
        return Err(VendError::UnknownTenant);
    }
    if slot.epoch.load(Ordering::SeqCst) != epoch {
        // Credentials changed meanwhile: this result belongs to the old ones.
        return result.map(|obtained| obtained.token);
    }
    match result {
        Ok(Obtained {
            token,
            stored,
            notice,
        }) => {
            // A token held before an invalidation that happened during this fetch (one
            // another replica had stored) is not brought back.
            let stale =
                slot.generation.load(Ordering::SeqCst) != generation && token.fetched_at < started;
            let was_failing = failing_before || slot.health.lock().cause.is_some();
            if stale || !slot.install(token.clone()) {
                return Ok(token);
            }
            if let Some(notice) = notice {
                slot.health.lock().last_error = Some(Box::new(notice));
            }
            if was_failing {
                let event =
                    Event::recovered(slot.id.as_str(), token.expires_at, &token.fingerprint);
                core.events.raise_later(event);
            }
            if !stored {
                persist(&core, &config.key, token.clone());
            }
            core.verify_in_background(&slot, token.clone());
            Ok(token)
        }
        // Not sent at all: no failure of edX's. A refresh ahead of time waits its turn.
        Err(VendError::Upstream {
            cause: cause @ UpstreamError::OverBudget { retry_after },
            ..
        }) => {
            if matches!(need, Need::Refresh { .. }) {
                slot.defer_refresh(now, retry_after);
            }
            Err(VendError::Upstream {
                cause,
                retry_after: Some(retry_after),
            })
        }
        Err(VendError::Upstream { cause, .. }) => {
            let (was_healthy, was_rejected) = {
                let health = slot.health.lock();
                let rejected = health
                    .cause
                    .as_deref()
                    .is_some_and(UpstreamError::rejects_credentials);
                (health.consecutive_failures == 0, rejected)
            };
            let wait = slot.record_failure(&cause, now);
            raise_failure_events(&core, &slot, &cause, was_healthy, was_rejected);
            tracing::warn!(
                tenant = %slot.id,
                error = %cause,
                cooldown_s = wait.as_secs(),
                "token fetch failed"
            );
            Err(VendError::Upstream {
                cause,
                retry_after: Some(wait),
            })
        }
        Err(other) => Err(other),
    }
}

/// `token.refresh_failed` when a healthy tenant starts failing (not on every retry), and
/// `token.credentials_rejected` when edX starts refusing its credentials.
fn raise_failure_events(
    core: &Core,
    slot: &Slot,
    cause: &UpstreamError,
    was_healthy: bool,
    was_rejected: bool,
) {
    let id = slot.id.as_str();
    if was_healthy {
        let event = Event::refresh_failed(id, cause.http_status(), &cause.to_string());
        core.events.raise_later(event);
    }
    if let UpstreamError::Rejected { status, code } = cause {
        if cause.rejects_credentials() && !was_rejected {
            core.events
                .raise_later(Event::credentials_rejected(id, *status, code));
        }
    }
}

/// Writes the token to the store in the background; a failure is logged and costs at most
/// one upstream call after a restart.
fn persist(core: &Arc<Core>, tenant: &TenantKey, token: Arc<HeldToken>) {
    let core = core.clone();
    let tenant = tenant.clone();
    tokio::spawn(async move {
        match core.tokens.save(&tenant, &token).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::debug!(tenant = %tenant.id, "token not stored: the tenant changed meanwhile")
            }
            Err(error) => {
                tracing::warn!(tenant = %tenant.id, %error, "could not store the token")
            }
        }
    });
}
