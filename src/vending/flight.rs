//! Single-flight: every caller that needs a new token for a tenant shares one fetch, run in
//! its own task so that a caller going away does not abort it for the others. What a
//! caller needs is checked again under the flight lock, so a token fetched meanwhile is
//! used instead of fetching another; a result is installed only while the tenant it was
//! fetched for is still the current one.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures::future::{BoxFuture, FutureExt};

use super::slot::{Outcome, Slot};
use super::token::HeldToken;
use super::{VendError, Vendor};
use crate::upstream::UpstreamError;

/// What a caller of `fetch` needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// A servable token with at least this much time left.
    Serve(std::time::Duration),
    /// A token outside its (scheduled) refresh point.
    Refresh { scheduled: bool },
    /// A new token whatever is held (operators' forced refresh).
    Force,
}

/// A new token, and whether it is already in the store.
pub struct Obtained {
    pub token: Arc<HeldToken>,
    pub stored: bool,
}

impl Vendor {
    /// Whether `token` answers `need`; a forced refresh takes only a token fetched since it
    /// `started`.
    pub(super) fn meets(
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

    /// Joins the fetch under way for this tenant, or starts one.
    pub(super) fn fetch(&self, slot: &Arc<Slot>, need: Need) -> BoxFuture<'static, Outcome> {
        let mut inflight = slot.inflight.lock();
        if let Some(fetch) = inflight.as_ref() {
            return fetch.clone().boxed();
        }
        let now = self.now();
        if let Some(token) = slot.token.load_full() {
            if self.meets(slot, &token, need, now, None) {
                return futures::future::ready(Ok(token)).boxed();
            }
        }
        if let Some(cooling) = slot.cooling_down(now) {
            let throttled = matches!(
                cooling,
                VendError::Upstream {
                    cause: UpstreamError::Throttled { .. },
                    ..
                }
            );
            if need != Need::Force || throttled {
                return futures::future::ready(Err(cooling)).boxed();
            }
        }
        let epoch = slot.epoch.load(Ordering::SeqCst);
        let task = tokio::spawn(self.clone().fetch_task(slot.clone(), epoch, need, now));
        let fetch = async move { task.await.unwrap_or(Err(VendError::Internal)) }
            .boxed()
            .shared();
        *inflight = Some(fetch.clone());
        fetch.boxed()
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
        let mut inflight = slot.inflight.lock();
        *inflight = None;
        if !self.is_current(&slot) {
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
            Ok(Obtained { token, stored }) => {
                slot.install(token.clone());
                if !stored {
                    self.persist(&config.key, token.clone());
                }
                self.verify_in_background(&slot, token.clone());
                Ok(token)
            }
            Err(VendError::Upstream { cause, .. }) => {
                let wait = slot.record_failure(&cause, now);
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

    /// Whether `slot` is still the one registered for its tenant id.
    pub(super) fn is_current(&self, slot: &Arc<Slot>) -> bool {
        self.slot(&slot.id)
            .is_some_and(|current| Arc::ptr_eq(&current, slot))
    }
}
