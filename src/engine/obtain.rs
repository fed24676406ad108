//! Obtaining a new token: under the tenant's fleet-wide refresh lock where the store has
//! one (PostgreSQL), taking the token another replica stored meanwhile if it answers the
//! need; otherwise asking edX and storing the answer before the lock is released. Without
//! the lock (SQLite, store down, lock held too long) edX is asked directly.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::future::{BoxFuture, FutureExt};
use tracing::Instrument;
use url::Url;

use super::breaker::{Admission, Circuit};
use super::budget::{Priority, UpstreamBudget};
use super::config::TenantConfig;
use super::core::Core;
use super::error::VendError;
use super::need::{Need, Obtained};
use super::port::{RefreshGuard, StoreFault, TenantKey};
use super::signals;
use super::skew;
use super::slot::{ErrorKind, LastError, Slot};
use super::token::HeldToken;
use crate::domain::rfc3339;
use crate::outbound::upstream::{AttemptGate, FetchedToken, UpstreamError};
use crate::outbound::webhooks::Event;

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
    if let Err(problem) = &config.upstream {
        // Not even a stored copy: a token only goes to the URLs the rules allow now.
        return Err(VendError::Unusable(problem.clone()));
    }
    let deadline = Instant::now() + core.settings.request_deadline;
    let held_before = slot.token.load_full();
    let locking =
        refresh_lock(core, &config.key).instrument(tracing::info_span!("store.refresh_lock"));
    let Some(mut guard) = locking.await else {
        let (token, notice) = fetch_upstream(core, slot, config, need, deadline).await?;
        return Ok(Obtained {
            token,
            stored: false,
            notice,
        });
    };
    let reading = bounded(guard.stored()).instrument(tracing::info_span!("store.read_token"));
    match reading.await {
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
                        notice: None,
                    });
                }
            }
        }
        Ok(_) => {}
        Err(error) => {
            tracing::warn!(tenant = %slot.id, %error, "cannot read the stored token")
        }
    }
    let (token, notice) = fetch_upstream(core, slot, config, need, deadline).await?;
    let saving =
        bounded(guard.save_and_release(&token)).instrument(tracing::info_span!("store.save_token"));
    match saving.await {
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
        notice,
    })
}

/// The tenant's fleet-wide refresh lock, or `None` when refreshing without it: on
/// SQLite, when the store is unreachable, or when another replica holds it too long
/// (a replica that died holding it releases it with its connection).
async fn refresh_lock(core: &Core, tenant: &TenantKey) -> Option<Box<dyn RefreshGuard>> {
    if store_down(core) {
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
        // All of this replica's lock connections are held by fetches in flight (edX slow
        // or failing, many tenants at once). The store is up: the fleet's budget is still
        // taken from it, so fetching without the lock stays within the fleet's rate. (Once
        // this counted as the store being down, and every replica then spent a full
        // budget of its own: the soak saw 7,800 edX calls a minute against 1,200.)
        Err(StoreFault::Busy) => {
            tracing::warn!(tenant = %tenant.id, "every refresh-lock connection is in use; asking edX without the lock, within the fleet's budget");
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

/// A new token from edX, and a notice for the token status when it was had with the
/// previous client secret.
async fn fetch_upstream(
    core: &Core,
    slot: &Slot,
    config: &TenantConfig,
    need: Need,
    deadline: Instant,
) -> Result<(Arc<HeldToken>, Option<LastError>), VendError> {
    let params = config
        .upstream
        .as_ref()
        .map_err(|problem| VendError::Unusable(problem.clone()))?;
    let request = params.request();
    let host = budget_host(request.token_url);
    // Tenants whose callers have nothing to be served go first.
    let servable = slot
        .token
        .load_full()
        .is_some_and(|held| held.servable(core.now()));
    // A fetch on a caller's word (a forced refresh, the one after an invalidation or a
    // proxy retry, a `min_ttl` the held token cannot meet) never reaches into the reserve.
    let priority = match need {
        Need::Force => Priority::Caller,
        _ if slot.caller_dropped() => Priority::Caller,
        _ if !servable => Priority::Urgent,
        Need::Refresh { .. } => Priority::Background,
        Need::Serve(_) => Priority::Caller,
    };
    let sent = AttemptsSent::default();
    let gate = || -> BoxFuture<'_, Result<(), UpstreamError>> {
        let (host, sent) = (host.as_str(), &sent);
        async move {
            before_attempt(core, host, priority, deadline, sent).await?;
            slot.upstream_calls.fetch_add(1, Ordering::Relaxed);
            Ok(())
        }
        .boxed()
    };
    let upstream_error = |cause: UpstreamError| VendError::Upstream {
        retry_after: match &cause {
            UpstreamError::OverBudget { retry_after } => Some(*retry_after),
            _ => None,
        },
        cause,
    };
    let mut notice = None;
    let first = core.source.fetch(&request, deadline, &gate).await;
    sent.finish(core, &host, &first);
    let fetched = match first {
        Err(UpstreamError::Rejected { status, code }) if code == "invalid_client" => {
            let fallback = previous_secret_fallback(core, slot, config, deadline, (&gate, &sent));
            let (fetched, until) = fallback.await.ok_or_else(|| {
                upstream_error(UpstreamError::Rejected {
                    status,
                    code: code.clone(),
                })
            })?;
            notice = Some(LastError {
                at: rfc3339(core.now()),
                status: Some(status),
                message: format!(
                    "the new client secret was refused by edX ({code}); serving with the \
                     previous secret until {}",
                    rfc3339(until)
                ),
                kind: ErrorKind::PreviousSecretServing,
            });
            // Said once while the previous secret serves, not on every refresh.
            let said = slot
                .health
                .lock()
                .last_error
                .as_ref()
                .is_some_and(|e| e.kind == ErrorKind::PreviousSecretServing);
            if !said {
                signals::credentials_rejected(&slot.id, &code, Some(until));
                core.events.raise_later(Event::credentials_rejected(
                    slot.id.as_str(),
                    status,
                    &code,
                ));
            }
            fetched
        }
        other => other.map_err(upstream_error)?,
    };
    skew::check(core, &host, &fetched).map_err(upstream_error)?;
    let token =
        HeldToken::from_fetch(fetched, core.now(), core.settings.skew).map_err(upstream_error)?;
    tracing::info!(
        tenant = %slot.id,
        fingerprint = %token.fingerprint,
        expires_at = %rfc3339(token.expires_at),
        "fetched a new token"
    );
    Ok((Arc::new(token), notice))
}

/// After edX refused the client secret as `invalid_client`: a token asked for with the
/// tenant's previous secret, while it is kept, and until when that secret is kept.
async fn previous_secret_fallback(
    core: &Core,
    slot: &Slot,
    config: &TenantConfig,
    deadline: Instant,
    (gate, sent): (&AttemptGate<'_>, &AttemptsSent),
) -> Option<(FetchedToken, DateTime<Utc>)> {
    let params = config.upstream.as_ref().ok()?;
    let (request, until) = params.previous_request(core.now())?;
    let fetched = core.source.fetch(&request, deadline, gate).await;
    sent.finish(core, &budget_host(request.token_url), &fetched);
    match fetched {
        Ok(fetched) => {
            tracing::warn!(tenant = %slot.id, until = %rfc3339(until), "edX refused the new client secret; serving with the previous one");
            Some((fetched, until))
        }
        Err(error) => {
            tracing::debug!(tenant = %slot.id, %error, "the previous client secret does not work either");
            None
        }
    }
}

/// What one fetch sent to edX, for the host's circuit breaker: a fetch counts once, by
/// its result after its own retries; only the probe (one attempt that tests an open host)
/// counts by its attempt.
#[derive(Default)]
pub struct AttemptsSent {
    sent: AtomicU32,
    /// This fetch's last attempt was the probe.
    probing: AtomicBool,
}

impl AttemptsSent {
    /// Records what the fetch came to (if it sent anything), and starts over.
    pub fn finish<T>(&self, core: &Core, host: &str, result: &Result<T, UpstreamError>) {
        self.probing.store(false, Ordering::Relaxed);
        if self.sent.swap(0, Ordering::Relaxed) == 0 {
            return;
        }
        let outcome = result.as_ref().map(|_| ());
        let change = core.budget.breakers.record(host, &outcome, core.now());
        note_circuit(core, host, change);
    }
}

/// Asked before each attempt of a fetch: the host's circuit breaker, then its budget.
pub async fn before_attempt(
    core: &Core,
    host: &str,
    priority: Priority,
    deadline: Instant,
    sent: &AttemptsSent,
) -> Result<(), UpstreamError> {
    let breakers = &core.budget.breakers;
    if sent.probing.swap(false, Ordering::Relaxed) {
        // The probe timed out or failed (only those are retried): the host stays open,
        // for twice as long, and this fetch's retry is refused with the rest.
        let failed = Err(&UpstreamError::Timeout(Duration::ZERO));
        note_circuit(core, host, breakers.record(host, &failed, core.now()));
    }
    let probe = match breakers.admit(host, core.now()) {
        Admission::Go { probe } => probe,
        Admission::Refused { retry_after } => {
            return Err(UpstreamError::HostFailing { retry_after });
        }
    };
    if let Err(refused) = take_budget(core, host, priority, deadline).await {
        if probe {
            breakers.release(host, core.now());
        }
        return Err(refused);
    }
    if probe {
        tracing::info!(
            host,
            "edX has been failing; sending one token request to see whether it answers again"
        );
    }
    sent.probing.store(probe, Ordering::Relaxed);
    sent.sent.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

/// Says when a host's circuit breaker opened or closed.
fn note_circuit(core: &Core, host: &str, change: Option<Circuit>) {
    let Some(circuit) = change else { return };
    core.budget.note_circuit(host, circuit);
    match circuit {
        Circuit::Open => tracing::warn!(
            host,
            "edX is failing every token request; sending none until a probe gets an answer"
        ),
        Circuit::Closed => tracing::info!(host, "edX answers token requests again"),
        Circuit::Probing => {}
    }
}

/// Whose budget a token request is taken from: its endpoint's host (and port, if not the
/// scheme's default).
pub fn budget_host(url: &Url) -> String {
    let host = url.host_str().unwrap_or_default();
    match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_owned(),
    }
}

/// Takes one request from the budget of `host`: from the fleet's bucket in the store when
/// there is one (and it answers in time), else from this process's. A reservation that
/// comes due before the deadline is waited for; otherwise the request is not sent.
pub async fn take_budget(
    core: &Core,
    host: &str,
    priority: Priority,
    deadline: Instant,
) -> Result<(), UpstreamError> {
    let Some(rule) = core.budget.rule() else {
        return Ok(());
    };
    let floor = UpstreamBudget::floor(&rule, priority, deadline);
    let now = core.now();
    let shared = if store_down(core) {
        None
    } else {
        match bounded(core.tokens.take_budget(host, rule, floor, now)).await {
            Ok(take) => take,
            // The fleet's bucket is there but no connection is free to read it: not sent
            // (a bucket of this replica's own would let each replica spend a full budget).
            Err(StoreFault::Busy) => {
                return Err(UpstreamError::OverBudget {
                    retry_after: Duration::from_secs(1),
                })
            }
            Err(error) => {
                if matches!(error, StoreFault::Unavailable(_)) {
                    *core.store_down_until.lock() = Some(Instant::now() + STORE_DOWN_BACKOFF);
                }
                tracing::warn!(host, %error, "cannot reach the fleet's upstream budget; using this replica's");
                None
            }
        }
    };
    let take = shared.unwrap_or_else(|| core.budget.take_local(&rule, host, now, floor));
    match core.budget.settle(&rule, host, priority, floor, take) {
        Ok(wait) => {
            if !wait.is_zero() {
                tracing::debug!(
                    host,
                    wait_ms = wait.as_millis() as u64,
                    "waiting for the upstream budget"
                );
                tokio::time::sleep(wait).await;
            }
            Ok(())
        }
        Err(short) => Err(UpstreamError::OverBudget {
            retry_after: short.retry_after,
        }),
    }
}

/// Whether the store was found unreachable moments ago (refreshes then skip it).
fn store_down(core: &Core) -> bool {
    core.store_down_until
        .lock()
        .is_some_and(|until| Instant::now() < until)
}
