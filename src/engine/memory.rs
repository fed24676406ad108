//! Test doubles of the engine's ports: a token store in memory, a scripted edX, and the
//! list of the webhook events raised.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::{BoxFuture, FutureExt};
use parking_lot::Mutex;
use secrecy::SecretString;
use tokio::sync::Semaphore;

use chrono::{DateTime, Utc};

use super::budget::{BudgetRule, Take};
use super::port::{
    RefreshGuard, StoreFault, StoredPage, StoredToken, StoredVersion, TenantKey, TokenEvents,
    TokenSource, TokenStore,
};
use super::token::HeldToken;
use crate::domain::TenantId;
use crate::outbound::upstream::{AttemptGate, FetchedToken, TokenRequest, UpstreamError};
use crate::outbound::webhooks::Event;

/// Tokens kept in memory, with the identity and credentials version they were saved for.
/// It has no fleet lock, like SQLite.
#[derive(Default)]
pub struct MemoryTokenStore {
    pub rows: Mutex<HashMap<TenantId, (TenantKey, HeldToken)>>,
    /// The identity and credentials each tenant id has in "the store" now.
    pub tenants: Mutex<HashMap<TenantId, TenantKey>>,
    /// How many tokens were read one by one (`stored`).
    pub reads: AtomicUsize,
    /// How many refresh locks were asked for.
    pub lock_calls: AtomicUsize,
    /// Faults the next lock requests answer with, in order.
    pub lock_faults: Mutex<VecDeque<StoreFault>>,
}

impl MemoryTokenStore {
    pub fn saved(&self, id: &TenantId) -> Option<(TenantKey, HeldToken)> {
        self.rows.lock().get(id).cloned()
    }
}

impl TokenStore for MemoryTokenStore {
    fn lock<'a>(
        &'a self,
        _tenant: &'a TenantKey,
        _wait: Duration,
    ) -> BoxFuture<'a, Result<Option<Box<dyn RefreshGuard>>, StoreFault>> {
        self.lock_calls.fetch_add(1, Ordering::Relaxed);
        let answer = self.lock_faults.lock().pop_front().map_or(Ok(None), Err);
        futures::future::ready(answer).boxed()
    }

    fn save<'a>(
        &'a self,
        tenant: &'a TenantKey,
        token: &'a HeldToken,
    ) -> BoxFuture<'a, Result<bool, StoreFault>> {
        // As the real store: only for the tenant that is there now, unchanged.
        let current = self.tenants.lock().get(&tenant.id) == Some(tenant);
        if current {
            self.rows
                .lock()
                .insert(tenant.id.clone(), (tenant.clone(), token.clone()));
        }
        futures::future::ready(Ok(current)).boxed()
    }

    fn forget<'a>(
        &'a self,
        tenant: &'a TenantKey,
        token: &'a HeldToken,
    ) -> BoxFuture<'a, Result<bool, StoreFault>> {
        let mut rows = self.rows.lock();
        let same = rows
            .get(&tenant.id)
            .is_some_and(|(key, held)| key == tenant && held.fingerprint == token.fingerprint);
        if same {
            rows.remove(&tenant.id);
        }
        futures::future::ready(Ok(same)).boxed()
    }

    fn stored<'a>(
        &'a self,
        tenant: &'a TenantId,
    ) -> BoxFuture<'a, Result<Option<StoredToken>, StoreFault>> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        let row = self
            .rows
            .lock()
            .get(tenant)
            .map(|(key, token)| StoredToken {
                tenant_id: key.id.clone(),
                tenant_uid: key.uid,
                token: Some(token.clone()),
            });
        futures::future::ready(Ok(row)).boxed()
    }

    fn page<'a>(
        &'a self,
        after: &'a str,
        limit: usize,
    ) -> BoxFuture<'a, Result<StoredPage, StoreFault>> {
        let rows = self.rows.lock();
        let mut ids: Vec<&TenantId> = rows.keys().filter(|id| id.as_str() > after).collect();
        ids.sort();
        ids.truncate(limit);
        let tokens = ids
            .iter()
            .map(|id| {
                let (key, token) = &rows[*id];
                StoredToken {
                    tenant_id: key.id.clone(),
                    tenant_uid: key.uid,
                    token: Some(token.clone()),
                }
            })
            .collect();
        let page = StoredPage {
            tokens,
            last: ids.last().map(|id| id.to_string()),
            full: ids.len() >= limit,
        };
        futures::future::ready(Ok(page)).boxed()
    }

    fn versions(&self) -> BoxFuture<'_, Result<Vec<StoredVersion>, StoreFault>> {
        let versions = self
            .rows
            .lock()
            .values()
            .map(|(key, token)| StoredVersion {
                tenant_id: key.id.clone(),
                tenant_uid: key.uid,
                fetched_at: token.fetched_at,
                expires_at: token.expires_at,
            })
            .collect();
        futures::future::ready(Ok(versions)).boxed()
    }

    fn take_budget<'a>(
        &'a self,
        _host: &'a str,
        _rule: BudgetRule,
        _floor: f64,
        _now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<Option<Take>, StoreFault>> {
        futures::future::ready(Ok(None)).boxed()
    }
}

/// A scripted edX: answers from a queue (a token with the default lifetime when it is
/// empty), counts calls, records which client asked, and can hold answers back until
/// released so that a fetch stays in flight.
pub struct FakeEdx {
    pub calls: AtomicUsize,
    pub clients: Mutex<Vec<String>>,
    pub script: Mutex<VecDeque<Result<u64, UpstreamError>>>,
    pub lifetime: Duration,
    /// When set, each answer waits for a permit.
    pub gate: Option<Arc<Semaphore>>,
}

impl FakeEdx {
    pub fn new(lifetime: Duration) -> Self {
        Self {
            calls: AtomicUsize::new(0),
            clients: Mutex::new(Vec::new()),
            script: Mutex::new(VecDeque::new()),
            lifetime,
            gate: None,
        }
    }

    pub fn gated(lifetime: Duration) -> (Self, Arc<Semaphore>) {
        let gate = Arc::new(Semaphore::new(0));
        let mut edx = Self::new(lifetime);
        edx.gate = Some(gate.clone());
        (edx, gate)
    }

    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    /// The next answer: a failure.
    pub fn fail_next(&self, error: UpstreamError) {
        self.script.lock().push_back(Err(error));
    }
}

impl TokenSource for FakeEdx {
    fn fetch<'a>(
        &'a self,
        request: &'a TokenRequest<'a>,
        _deadline: Instant,
        before_attempt: &'a AttemptGate<'_>,
    ) -> BoxFuture<'a, Result<FetchedToken, UpstreamError>> {
        async move {
            before_attempt().await?;
            let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
            self.clients.lock().push(request.client_id.to_owned());
            if let Some(gate) = &self.gate {
                gate.acquire().await.expect("gate open").forget();
            }
            let answer = self
                .script
                .lock()
                .pop_front()
                .unwrap_or(Ok(self.lifetime.as_secs()));
            answer.map(|lifetime| FetchedToken {
                access_token: SecretString::from(format!("{}-token-{n}", request.client_id)),
                token_type: Some("Bearer".to_owned()),
                expires_in: Some(Duration::from_secs(lifetime)),
                scope: None,
                timing: None,
            })
        }
        .boxed()
    }
}

/// The webhook events the engine raised, in order.
#[derive(Default)]
pub struct MemoryEvents(Mutex<Vec<Event>>);

impl MemoryEvents {
    pub fn raised(&self) -> Vec<Event> {
        self.0.lock().clone()
    }
}

impl TokenEvents for MemoryEvents {
    fn raise_later(&self, event: Event) {
        self.0.lock().push(event);
    }
}
