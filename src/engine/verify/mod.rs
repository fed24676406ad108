//! Verifying credentials before they are stored (`?verify=true` on a tenant write): one
//! token fetch with the new settings through the same upstream client and outbound rules,
//! nothing served or stored meanwhile; the token is kept once the tenant is stored, so
//! that its first caller needs no second upstream call.

mod refusals;

pub use refusals::Refusals;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use futures::future::{BoxFuture, FutureExt};
use tracing::Instrument;

use super::budget::Priority;
use super::config::TenantConfig;
use super::core::Core;
use super::error::VendError;
use super::obtain::{before_attempt, budget_host, AttemptsSent};
use super::port::TenantKey;
use super::token::HeldToken;
use crate::domain::Tenant;
use crate::outbound::upstream::UpstreamError;

/// A token fetched with a tenant's credentials before it is stored.
pub struct VerifiedToken {
    key: TenantKey,
    token: Arc<HeldToken>,
    /// Upstream attempts it took (counted in the tenant's status once it is kept).
    attempts: u64,
}

/// The cool-down key of a verify: the client id at its token endpoint.
fn refusal_key(token_url: &url::Url, client_id: &str) -> String {
    format!("{client_id} {token_url}")
}

/// How long edX's refusal of this client id still stands, if it does: as this replica
/// remembers it, else as the fleet does (another replica's verify may have been refused;
/// verifies are rare, so asking the store here costs nothing that matters). When the
/// store cannot say, this replica's memory decides.
async fn cooling_down(core: &Core, key: &str) -> Option<std::time::Duration> {
    let now = core.now();
    let local = {
        let mut refusals = core.verify_refusals.0.lock();
        refusals.retain(|_, until| *until > now);
        refusals.get(key).copied()
    };
    let until = match local {
        Some(until) => until,
        None => match core.tokens.verify_refused_until(key, now).await {
            Ok(fleet) => {
                let until = fleet?;
                core.verify_refusals.0.lock().insert(key.to_owned(), until);
                until
            }
            Err(fault) => {
                tracing::warn!(%fault, "cannot read the fleet's verify cool-downs");
                return None;
            }
        },
    };
    Some(
        (until - now)
            .to_std()
            .unwrap_or_default()
            .max(std::time::Duration::from_secs(1)),
    )
}

/// Asks edX for a token with `tenant`'s settings, serving and storing nothing. A client
/// id that edX refused moments ago is not tried again within the minimum refresh
/// interval, and every verify counts against `caller`'s fetch rate: credentials cannot
/// be guessed through tokenvend.
pub async fn verify(
    core: &Core,
    tenant: &Tenant,
    caller: &str,
) -> Result<VerifiedToken, VendError> {
    let config = TenantConfig::new(tenant, &core.master_key, core.policy);
    let params = config
        .upstream
        .as_ref()
        .map_err(|problem| VendError::Unusable(problem.clone()))?;
    let request = params.request();
    let refusal = refusal_key(request.token_url, request.client_id);
    if let Some(retry_after) = cooling_down(core, &refusal).await {
        return Err(VendError::VerifyCoolingDown { retry_after });
    }
    core.caller_rate
        .charge(caller)
        .map_err(|retry_after| VendError::CallerOverRate { retry_after })?;
    let deadline = Instant::now() + core.settings.request_deadline;
    let attempts = AtomicU64::new(0);
    let host = budget_host(request.token_url);
    // Taken from the host's budget like every token request, but outside the reserve
    // kept for tenants whose callers have no token.
    let sent = AttemptsSent::default();
    let count = || -> BoxFuture<'_, Result<(), UpstreamError>> {
        let (host, attempts, sent) = (host.as_str(), &attempts, &sent);
        async move {
            before_attempt(core, host, Priority::Caller, deadline, sent).await?;
            attempts.fetch_add(1, Ordering::Relaxed);
            Ok(())
        }
        .boxed()
    };
    let span =
        tracing::info_span!("token_fetch", tenant = %tenant.id, "tokenvend.trigger" = "verify");
    let fetched = core
        .source
        .fetch(&request, deadline, &count)
        .instrument(span)
        .await;
    sent.finish(core, &host, &fetched);
    // No cool-down is started for a tenant not yet stored: edX's own word on when to
    // come back is all a caller gets.
    let upstream_error = |cause: UpstreamError| {
        let retry_after = match &cause {
            UpstreamError::Throttled { retry_after, .. }
            | UpstreamError::Unavailable { retry_after, .. } => *retry_after,
            UpstreamError::OverBudget { retry_after }
            | UpstreamError::HostFailing { retry_after } => Some(*retry_after),
            _ => None,
        };
        VendError::Upstream { cause, retry_after }
    };
    if let Err(cause) = &fetched {
        // Any refusal (not only of the secret): each answer says something about a guess.
        if matches!(cause, UpstreamError::Rejected { .. }) {
            let interval =
                chrono::Duration::from_std(core.settings.min_refresh_interval).unwrap_or_default();
            let (now, until) = (core.now(), core.now() + interval);
            core.verify_refusals.0.lock().insert(refusal.clone(), until);
            // Before answering: a verify on another replica right after this one's
            // answer is refused too.
            if let Err(fault) = core.tokens.refuse_verify(&refusal, until, now).await {
                tracing::warn!(%fault, "cannot share the verify cool-down with the fleet");
            }
        }
    }
    let token = HeldToken::from_fetch(
        fetched.map_err(upstream_error)?,
        core.now(),
        core.settings.skew,
    )
    .map_err(upstream_error)?;
    tracing::info!(tenant = %tenant.id, fingerprint = %token.fingerprint, "verified the credentials");
    Ok(VerifiedToken {
        key: config.key,
        token: Arc::new(token),
        attempts: attempts.into_inner(),
    })
}

/// Serves and stores (sealed) a verified token, once its tenant is stored and registered
/// with the same identity and credentials; otherwise it is dropped.
pub async fn keep(core: &Arc<Core>, verified: VerifiedToken) {
    let VerifiedToken {
        key,
        token,
        attempts,
    } = verified;
    let Some(slot) = core.slot(&key.id) else {
        return;
    };
    {
        // Under the flight lock, as a fetch's own result is installed.
        let _inflight = slot.inflight.lock();
        if slot.config.load().key != key {
            tracing::debug!(tenant = %key.id, "verified token not kept: the tenant changed meanwhile");
            return;
        }
        slot.install(token.clone());
        slot.upstream_calls.fetch_add(attempts, Ordering::Relaxed);
    }
    core.verify_in_background(&slot, token.clone());
    match core.tokens.save(&key, &token).await {
        Ok(true) => {}
        Ok(false) => {
            tracing::debug!(tenant = %key.id, "verified token not stored: the tenant changed meanwhile")
        }
        Err(error) => {
            tracing::warn!(tenant = %key.id, %error, "could not store the verified token")
        }
    }
}
