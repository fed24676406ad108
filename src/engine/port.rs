//! The engine's ports: where tokens are kept between processes (`TokenStore`), where new
//! ones come from (`TokenSource`), and where a tenant's transitions are told
//! (`TokenEvents`). The engine handles tokens, never ciphertext, HTTP or an outbox, so
//! that its rules are unit-tested with an in-memory store, a fake source and a list of
//! the events raised.

use std::time::{Duration, Instant};

use futures::future::BoxFuture;

use chrono::{DateTime, Utc};

use super::budget::{BudgetRule, Take};
use super::token::HeldToken;
use crate::domain::{TenantId, TenantUid};
use crate::outbound::upstream::{
    AttemptGate, FetchedToken, TokenRequest, UpstreamClient, UpstreamError,
};
use crate::outbound::webhooks::{Event, Events};

/// Whose token: the tenant's id, its identity, and the version of its credentials. A token
/// is only ever stored for, or taken from the store by, the same identity and credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantKey {
    pub id: TenantId,
    pub uid: TenantUid,
    pub credentials_version: i64,
}

/// A token read back from the store, for the tenant identity it was fetched for.
pub struct StoredToken {
    pub tenant_id: TenantId,
    pub tenant_uid: TenantUid,
    /// `None` when it could not be opened (another master key, tampered, unparseable).
    pub token: Option<HeldToken>,
}

/// A page of stored tokens: those that name a valid tenant, and the last id read (where
/// the next page starts; `None` when the page was empty).
pub struct StoredPage {
    pub tokens: Vec<StoredToken>,
    pub last: Option<String>,
    /// Whether the page was full (another may follow).
    pub full: bool,
}

/// A stored token's owner and age, without the token.
pub struct StoredVersion {
    pub tenant_id: TenantId,
    pub tenant_uid: TenantUid,
    pub fetched_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// Why the store could not help; the engine then goes on without it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreFault {
    /// The store is unreachable: refreshes skip it for a while.
    #[error("the store is unavailable: {0}")]
    Unavailable(String),
    /// Another replica held the refresh lock for longer than the wait allowed.
    #[error("the refresh lock was held too long by another replica")]
    LockTimeout,
    /// Every connection of the pool stayed in use for the whole acquire timeout: the
    /// store answers, this replica is just using all of it (many fetches at once, each
    /// holding its refresh lock). Not a reason to skip the store for a while.
    #[error("every store connection is in use")]
    Busy,
    #[error("{0}")]
    Other(String),
}

pub trait TokenStore: Send + Sync + 'static {
    /// Takes the fleet-wide refresh lock of `tenant`, waiting at most `wait` for another
    /// replica holding it; `None` where one process owns the store (nothing to share).
    fn lock<'a>(
        &'a self,
        tenant: &'a TenantKey,
        wait: Duration,
    ) -> BoxFuture<'a, Result<Option<Box<dyn RefreshGuard>>, StoreFault>>;

    /// Stores `token` for `tenant` unless the tenant is gone, re-created or changed.
    /// Returns whether it was stored.
    fn save<'a>(
        &'a self,
        tenant: &'a TenantKey,
        token: &'a HeldToken,
    ) -> BoxFuture<'a, Result<bool, StoreFault>>;

    /// Deletes the tenant's stored token if it is still `token` (it was invalidated), so
    /// that a restart does not bring it back, and tells the fleet (every replica drops
    /// `token`). Returns whether the stored copy was deleted.
    fn forget<'a>(
        &'a self,
        tenant: &'a TenantKey,
        token: &'a HeldToken,
    ) -> BoxFuture<'a, Result<bool, StoreFault>>;

    /// The stored token of the tenant with this id, whichever identity it belongs to.
    fn stored<'a>(
        &'a self,
        tenant: &'a TenantId,
    ) -> BoxFuture<'a, Result<Option<StoredToken>, StoreFault>>;

    /// Up to `limit` stored tokens of the tenant ids after `after`, in id order.
    fn page<'a>(
        &'a self,
        after: &'a str,
        limit: usize,
    ) -> BoxFuture<'a, Result<StoredPage, StoreFault>>;

    /// Whose each stored token is and when it was fetched, without reading any token:
    /// what a reload compares with the held tokens before it opens any.
    fn versions(&self) -> BoxFuture<'_, Result<Vec<StoredVersion>, StoreFault>>;

    /// Takes one request from the fleet-wide upstream budget of `host` if that leaves at
    /// least `floor` (see `budget.rs`); `None` where one process owns the store, which
    /// then keeps the budget itself.
    fn take_budget<'a>(
        &'a self,
        host: &'a str,
        rule: BudgetRule,
        floor: f64,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<Option<Take>, StoreFault>>;

    /// Until when the fleet refuses to verify `refusal` (a client id at its token URL),
    /// if its cool-down runs at `now`; where one process owns the store the engine's own
    /// memory is all there is (`None`).
    fn verify_refused_until<'a>(
        &'a self,
        _refusal: &'a str,
        _now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<Option<DateTime<Utc>>, StoreFault>> {
        Box::pin(async { Ok(None) })
    }

    /// Tells the fleet that `refusal` is not to be verified again before `until`.
    fn refuse_verify<'a>(
        &'a self,
        _refusal: &'a str,
        _until: DateTime<Utc>,
        _now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<(), StoreFault>> {
        Box::pin(async { Ok(()) })
    }
}

/// A held refresh lock: released when saved or dropped (and by the store itself when the
/// holder dies).
pub trait RefreshGuard: Send {
    /// The tenant's stored token as it is now (another replica may just have stored it).
    fn stored(&mut self) -> BoxFuture<'_, Result<Option<StoredToken>, StoreFault>>;

    /// Stores the new token as `TokenStore::save` does, and releases the lock.
    fn save_and_release<'a>(
        self: Box<Self>,
        token: &'a HeldToken,
    ) -> BoxFuture<'a, Result<bool, StoreFault>>;
}

/// Where new tokens come from: edX's token endpoint, through the upstream client.
pub trait TokenSource: Send + Sync + 'static {
    /// Asks for a token until it has one, a failure that retrying cannot mend, or
    /// `deadline`; `before_attempt` is asked before every attempt, and its refusal ends
    /// the fetch.
    fn fetch<'a>(
        &'a self,
        request: &'a TokenRequest<'a>,
        deadline: Instant,
        before_attempt: &'a AttemptGate<'_>,
    ) -> BoxFuture<'a, Result<FetchedToken, UpstreamError>>;
}

impl TokenSource for UpstreamClient {
    fn fetch<'a>(
        &'a self,
        request: &'a TokenRequest<'a>,
        deadline: Instant,
        before_attempt: &'a AttemptGate<'_>,
    ) -> BoxFuture<'a, Result<FetchedToken, UpstreamError>> {
        Box::pin(UpstreamClient::fetch(
            self,
            request,
            deadline,
            before_attempt,
        ))
    }
}

/// Where the engine raises the `token.*` webhook events, on a tenant's transitions only.
/// Raising never waits and never fails: the engine's paths that raise them are
/// synchronous, and an event lost to a store error must not fail a fetch.
pub trait TokenEvents: Send + Sync + 'static {
    fn raise_later(&self, event: Event);
}

/// The production port: the webhook outbox, written in a task of its own.
impl TokenEvents for Events {
    fn raise_later(&self, event: Event) {
        Events::raise_later(self, event);
    }
}
