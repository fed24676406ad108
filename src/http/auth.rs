//! Caller keys: generation, hashing, the in-memory key ring and the `Caller` extractor.
//! The extractors take the key ring from any state through `FromRef`. The ring also
//! applies the rate limits (`limits`): each key's own, checked once the key is
//! recognised, and the budget of failed authentications per client address; on
//! PostgreSQL each replica keeps its share of them.
//!
//! A key looks like `tv_<id>_<secret>`: the `tv_` prefix lets secret scanners spot a
//! leaked key, the id finds the key's entry without a scan, and the secret carries about
//! 238 random bits. Only the SHA-256 of a key is stored; for long random keys a fast hash is
//! right (there is nothing to brute-force), and hashes are compared in constant time.

mod bearer;
mod extract;
pub use bearer::bearer;
pub mod identity;
pub mod limits;
mod ports;

use std::collections::HashMap;
use std::convert::Infallible;
use std::marker::PhantomData;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::Extensions;
use rand::distributions::{Alphanumeric, DistString};
use rand::rngs::OsRng;
use rand::Rng;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::domain::{Scope, ScopeSet, TenantAccess, TenantUid};
use crate::http::error::ApiError;
use crate::share::Sharing;
use crate::store::ApiKeyRecord;
use limits::{FailureBudget, KeyLimiter, RateLimitSettings};

pub const KEY_PREFIX: &str = "tv_";
const ID_LEN: usize = 12;
const SECRET_LEN: usize = 40;
/// The id under which the bootstrap admin key acts (and appears in the audit trail).
pub const BOOTSTRAP_KEY_ID: &str = "bootstrap";

pub type KeyHash = [u8; 32];

pub fn hash_key(key: &str) -> KeyHash {
    Sha256::digest(key.as_bytes()).into()
}

/// A newly generated key: shown once, then only its hash is kept.
pub struct GeneratedKey {
    pub id: String,
    pub key: SecretString,
    pub hash: KeyHash,
}

pub fn generate_key() -> GeneratedKey {
    const ID_CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let id: String = (0..ID_LEN)
        .map(|_| ID_CHARS[OsRng.gen_range(0..ID_CHARS.len())] as char)
        .collect();
    let secret = Alphanumeric.sample_string(&mut OsRng, SECRET_LEN);
    let key = format!("{KEY_PREFIX}{id}_{secret}");
    GeneratedKey {
        hash: hash_key(&key),
        id,
        key: SecretString::from(key),
    }
}

/// A fresh bootstrap admin key, for writing to the data dir.
pub fn generate_bootstrap_key() -> SecretString {
    let secret = Alphanumeric.sample_string(&mut OsRng, SECRET_LEN);
    SecretString::from(format!("{KEY_PREFIX}{BOOTSTRAP_KEY_ID}_{secret}"))
}

fn key_id_of(presented: &str) -> Option<&str> {
    presented
        .strip_prefix(KEY_PREFIX)?
        .split_once('_')
        .map(|(id, _)| id)
}

/// A caller key as the service knows it.
pub struct KeyEntry {
    pub id: String,
    pub scopes: ScopeSet,
    hash: KeyHash,
    /// `None` for an unlimited key, which then costs nothing per request.
    limiter: Option<Arc<KeyLimiter>>,
}

impl std::fmt::Debug for KeyEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyEntry")
            .field("id", &self.id)
            .field("scopes", &self.scopes)
            .field("rate", &self.rate())
            .finish_non_exhaustive()
    }
}

impl KeyEntry {
    /// An unlimited key; see [`KeyEntry::with_rate`].
    pub fn new(id: String, scopes: ScopeSet, hash: KeyHash) -> Self {
        Self {
            id,
            scopes,
            hash,
            limiter: None,
        }
    }

    /// The key limited to `rate` requests per second for the fleet (`None`: unlimited).
    pub fn with_rate(self, rate: Option<NonZeroU32>, sharing: &Sharing) -> Self {
        Self {
            limiter: rate.map(|rate| Arc::new(KeyLimiter::new(rate, sharing))),
            ..self
        }
    }

    fn from_record(
        record: &ApiKeyRecord,
        rate: Option<NonZeroU32>,
        sharing: &Sharing,
    ) -> Result<Self, String> {
        let hash: KeyHash = record
            .key_hash
            .as_slice()
            .try_into()
            .map_err(|_| "stored key hash is not 32 bytes".to_owned())?;
        let scopes = ScopeSet::parse_stored(&record.scopes)?;
        Ok(Self::new(record.id.clone(), scopes, hash).with_rate(rate, sharing))
    }

    /// Requests per second allowed, `None` when unlimited.
    pub fn rate(&self) -> Option<NonZeroU32> {
        self.limiter.as_ref().map(|limiter| limiter.rate())
    }

    /// Lets one request through, or says how long until the key may make another.
    pub fn admit(&self) -> Result<(), Duration> {
        match &self.limiter {
            None => Ok(()),
            Some(limiter) => limiter.check(),
        }
    }
}

/// Why a presented key was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No such key (or a wrong secret): 401.
    Unknown,
    /// No such key, and the client's address has failed too often lately: 429.
    TooManyFailures(Duration),
    /// A valid key over its rate limit: 429.
    OverRate(Duration),
}

/// Every valid caller key, held in memory so that authentication never touches the store.
/// Reads are lock-free; the rare writes swap in a new map.
pub struct KeyRing {
    keys: ArcSwap<HashMap<String, Arc<KeyEntry>>>,
    bootstrap: Option<Arc<KeyEntry>>,
    /// The rate of keys without their own `rate_limit`.
    default_rate: Option<NonZeroU32>,
    failures: Option<FailureBudget>,
    /// What the keys' buckets are built on: the clock and the fleet's size.
    sharing: Sharing,
}

impl KeyRing {
    /// `sharing`: the injectable clock the limits are read on, and the fleet's size.
    pub fn new(bootstrap_key: &SecretString, limits: RateLimitSettings, sharing: Sharing) -> Self {
        Self {
            bootstrap: Some(Arc::new(
                KeyEntry::new(
                    BOOTSTRAP_KEY_ID.to_owned(),
                    ScopeSet::new([Scope::Admin]),
                    hash_key(bootstrap_key.expose_secret()),
                )
                .with_rate(limits.key_rate, &sharing),
            )),
            ..Self::without_bootstrap(limits, sharing)
        }
    }

    /// A ring of stored keys only (`TOKENVEND_BOOTSTRAP_ADMIN=disabled`).
    pub fn without_bootstrap(limits: RateLimitSettings, sharing: Sharing) -> Self {
        Self {
            keys: ArcSwap::default(),
            bootstrap: None,
            default_rate: limits.key_rate,
            failures: limits
                .auth_failures
                .map(|n| FailureBudget::per_minute(n, &sharing)),
            sharing,
        }
    }

    /// What the keys' buckets are built on (for keys added one by one).
    pub fn sharing(&self) -> &Sharing {
        &self.sharing
    }

    /// The rate of a key whose own `rate_limit` is `own`: that, else the default.
    pub fn rate_for(&self, own: Option<i32>) -> Option<NonZeroU32> {
        own.and_then(|rate| u32::try_from(rate).ok())
            .and_then(NonZeroU32::new)
            .or(self.default_rate)
    }

    /// Replaces the whole ring with the stored keys; unreadable rows are skipped and logged.
    /// A key that stays the same keeps its bucket, so a reload does not refill it.
    pub fn replace_all(&self, records: &[ApiKeyRecord]) {
        let old = self.keys.load();
        let mut map = HashMap::with_capacity(records.len());
        for record in records {
            let rate = self.rate_for(record.rate_limit);
            match KeyEntry::from_record(record, rate, &self.sharing) {
                Ok(mut entry) => {
                    if let Some(held) = old.get(&entry.id) {
                        if held.hash == entry.hash && held.rate() == rate {
                            entry.limiter = held.limiter.clone();
                        }
                    }
                    map.insert(entry.id.clone(), Arc::new(entry));
                }
                Err(error) => {
                    tracing::warn!(key_id = %record.id, %error, "skipping unreadable caller key")
                }
            }
        }
        self.keys.store(Arc::new(map));
    }

    pub fn insert(&self, entry: KeyEntry) {
        let entry = Arc::new(entry);
        self.keys.rcu(|keys| {
            let mut keys = HashMap::clone(keys);
            keys.insert(entry.id.clone(), entry.clone());
            keys
        });
    }

    pub fn remove(&self, id: &str) {
        self.keys.rcu(|keys| {
            let mut keys = HashMap::clone(keys);
            keys.remove(id);
            keys
        });
    }

    pub fn authenticate(&self, presented: &str) -> Option<Arc<KeyEntry>> {
        let hash = hash_key(presented);
        let keys = self.keys.load();
        let candidate = key_id_of(presented)
            .and_then(|id| keys.get(id))
            .or(self.bootstrap.as_ref())?;
        bool::from(candidate.hash.ct_eq(&hash)).then(|| candidate.clone())
    }

    /// Authenticates `presented` and applies the rate limits: a valid key's own rate, and
    /// for an unknown key the failure budget of `client`'s address (when known).
    pub fn admit(&self, presented: &str, client: Option<IpAddr>) -> Result<Arc<KeyEntry>, Refusal> {
        let Some(entry) = self.authenticate(presented) else {
            return Err(self.fail(client));
        };
        entry.admit().map_err(Refusal::OverRate)?;
        Ok(entry)
    }

    /// Counts a failed authentication (a wrong key, a refused JWT) against `client`'s
    /// budget: the refusal to answer with.
    pub fn fail(&self, client: Option<IpAddr>) -> Refusal {
        match (&self.failures, client) {
            (Some(budget), Some(client)) => budget
                .fail(client)
                .map_or_else(Refusal::TooManyFailures, |()| Refusal::Unknown),
            _ => Refusal::Unknown,
        }
    }
}

/// The client's IP address, when the server recorded the connection's peer
/// (`ConnectInfo<SocketAddr>`; see startup's `serve`).
pub fn client_ip(extensions: &Extensions) -> Option<IpAddr> {
    extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(peer)| peer.ip())
}

/// The client's IP address as an extractor (never rejects).
pub struct ClientIp(pub Option<IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Infallible> {
        Ok(ClientIp(client_ip(&parts.extensions)))
    }
}

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub struct Caller(pub Arc<KeyEntry>);

impl Caller {
    pub fn id(&self) -> &str {
        &self.0.id
    }

    /// 403 unless the key holds `scope`.
    pub fn require(&self, scope: Scope) -> Result<(), ApiError> {
        if self.0.scopes.allows(&scope) {
            Ok(())
        } else {
            Err(ApiError::Forbidden {
                needed: scope.to_string(),
            })
        }
    }

    /// 403 for a key without token scope, 404 (as for an unknown tenant) for a key whose
    /// token scope covers other tenants only.
    /// `current` is the identity of the tenant holding the id now, if any.
    pub fn require_token_access(
        &self,
        tenant: &str,
        current: Option<TenantUid>,
    ) -> Result<(), ApiError> {
        match self.0.scopes.token_access(tenant, current) {
            TenantAccess::Granted => Ok(()),
            TenantAccess::Hidden => Err(ApiError::TenantNotFound),
            TenantAccess::Forbidden => Err(ApiError::Forbidden {
                needed: format!("token:{tenant}"),
            }),
        }
    }
}

impl Caller {
    /// Like `require_token_access`, for the proxy: a proxy or a token scope for the tenant.
    pub fn require_proxy_access(
        &self,
        tenant: &str,
        current: Option<TenantUid>,
    ) -> Result<(), ApiError> {
        match self.0.scopes.proxy_access(tenant, current) {
            TenantAccess::Granted => Ok(()),
            TenantAccess::Hidden => Err(ApiError::TenantNotFound),
            TenantAccess::Forbidden => Err(ApiError::Forbidden {
                needed: format!("proxy:{tenant}"),
            }),
        }
    }
}

/// A scope an endpoint needs, checked before the request body is read.
pub trait RequiredScope {
    fn scope() -> Scope;
}

macro_rules! required_scopes {
    ($($marker:ident => $scope:expr),* $(,)?) => {
        $(
            #[doc = concat!("Marker for the `", stringify!($marker), "` scope.")]
            pub struct $marker;
            impl RequiredScope for $marker {
                fn scope() -> Scope {
                    $scope
                }
            }
        )*
    };
}

required_scopes! {
    Admin => Scope::Admin,
    TenantsRead => Scope::TenantsRead,
    TenantsWrite => Scope::TenantsWrite,
    MetricsRead => Scope::Metrics,
}

/// A caller holding scope `R`: 401 without a valid key, 403 without the scope, before any
/// body or query is parsed.
pub struct Authorized<R>(pub Caller, pub PhantomData<R>);

#[cfg(test)]
mod tests;
