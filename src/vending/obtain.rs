//! Obtaining a new token: under the tenant's fleet-wide refresh lock where the store has
//! one (PostgreSQL), taking the token another replica stored meanwhile if it answers the
//! need; otherwise asking edX and storing the answer before the lock is released. Without
//! the lock (SQLite, store down, lock held too long) edX is asked directly.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use super::config::TenantConfig;
use super::core::Core;
use super::error::VendError;
use super::need::{Need, Obtained};
use super::port::{RefreshGuard, StoreFault, TenantKey};
use super::slot::{Outcome, Slot};
use super::token::HeldToken;
use crate::domain::rfc3339;
use crate::upstream::UpstreamError;

/// How long a read or write under the refresh lock may take before the refresh goes on
/// without it (a store that hangs must not hold callers past their deadline).
const STORE_STEP_TIMEOUT: Duration = Duration::from_secs(2);

/// How long refreshes skip the fleet lock after finding the store unreachable.
const STORE_DOWN_BACKOFF: Duration = Duration::from_secs(5);

/// How long the store may take to hand out a connection for the lock, on top of the wait.
const LOCK_ACQUIRE_SLACK: Duration = Duration::from_secs(1);

async fn bounded<T>(
    step: impl std::future::Future<Output = Result<T, StoreFault>>,
) -> Result<T, StoreFault> {
    tokio::time::timeout(STORE_STEP_TIMEOUT, step)
        .await
        .unwrap_or_else(|_| Err(StoreFault::Unavailable("no answer in time".to_owned())))
}

pub async fn obtain(
    core: &Core,
    slot: &Slot,
    config: &TenantConfig,
    need: Need,
    started: DateTime<Utc>,
) -> Result<Obtained, VendError> {
    let deadline = Instant::now() + core.settings.request_deadline;
    let held_before = slot.token.load_full();
    let Some(mut guard) = refresh_lock(core, &config.key).await else {
        let token = fetch_upstream(core, slot, config, deadline).await?;
        return Ok(Obtained {
            token,
            stored: false,
        });
    };
    match bounded(guard.stored()).await {
        // A token stored for another tenant identity (a deleted predecessor under the
        // same id) is never taken.
        Ok(Some(stored)) if stored.tenant_uid == config.key.uid => {
            if let Some(token) = stored.token {
                // A forced refresh wants another token than the one it began with.
                let forced_same = need == Need::Force
                    && held_before
                        .as_ref()
                        .is_some_and(|held| held.fingerprint == token.fingerprint);
                if !forced_same
                    && need.met_by(&token, slot, &core.settings, core.now(), Some(started))
                {
                    tracing::debug!(tenant = %slot.id, "serving the token another replica stored");
                    return Ok(Obtained {
                        token: Arc::new(token),
                        stored: true,
                    });
                }
            }
        }
        Ok(_) => {}
        Err(error) => {
            tracing::warn!(tenant = %slot.id, %error, "cannot read the stored token")
        }
    }
    let token = fetch_upstream(core, slot, config, deadline).await?;
    match bounded(guard.save_and_release(&token)).await {
        Ok(true) => {}
        Ok(false) => {
            tracing::debug!(tenant = %slot.id, "token not stored: the tenant changed meanwhile")
        }
        // Served all the same; after a restart it is simply fetched again.
        Err(error) => tracing::warn!(tenant = %slot.id, %error, "could not store the token"),
    }
    Ok(Obtained {
        token,
        stored: true,
    })
}

/// The tenant's fleet-wide refresh lock, or `None` when refreshing without it: on
/// SQLite, when the store is unreachable, or when another replica holds it too long
/// (a replica that died holding it releases it with its connection).
async fn refresh_lock(core: &Core, tenant: &TenantKey) -> Option<Box<dyn RefreshGuard>> {
    if core
        .store_down_until
        .lock()
        .is_some_and(|until| Instant::now() < until)
    {
        return None;
    }
    let settings = &core.settings;
    let wait = settings.lock_wait.min(settings.request_deadline / 2);
    let taking = core.tokens.lock(tenant, wait);
    let taken = tokio::time::timeout(wait + LOCK_ACQUIRE_SLACK, taking)
        .await
        .unwrap_or_else(|_| Err(StoreFault::Unavailable("no answer in time".to_owned())));
    match taken {
        Ok(guard) => guard,
        Err(StoreFault::LockTimeout) => {
            tracing::warn!(
                tenant = %tenant.id,
                waited_ms = wait.as_millis() as u64,
                "another replica holds the refresh lock too long; asking edX without it"
            );
            None
        }
        Err(error) => {
            if matches!(error, StoreFault::Unavailable(_)) {
                *core.store_down_until.lock() = Some(Instant::now() + STORE_DOWN_BACKOFF);
            }
            tracing::warn!(tenant = %tenant.id, %error, "cannot take the refresh lock; asking edX without it");
            None
        }
    }
}

async fn fetch_upstream(
    core: &Core,
    slot: &Slot,
    config: &TenantConfig,
    deadline: Instant,
) -> Outcome {
    let params = config
        .upstream
        .as_ref()
        .map_err(|problem| VendError::Unusable(problem.clone()))?;
    let request = params.request();
    let count = || {
        slot.upstream_calls.fetch_add(1, Ordering::Relaxed);
    };
    let upstream_error = |cause: UpstreamError| VendError::Upstream {
        cause,
        retry_after: None,
    };
    let fetched = core
        .source
        .fetch(&request, deadline, &count)
        .await
        .map_err(upstream_error)?;
    let token =
        HeldToken::from_fetch(fetched, core.now(), core.settings.skew).map_err(upstream_error)?;
    tracing::info!(
        tenant = %slot.id,
        fingerprint = %token.fingerprint,
        expires_at = %rfc3339(token.expires_at),
        "fetched a new token"
    );
    Ok(Arc::new(token))
}
