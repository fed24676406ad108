//! Workload identity callers: a JWT from a trusted identity provider instead of a `tv_`
//! key. The registry holds the providers and mappings in memory (replaced as they change,
//! like the key ring), verifies a token once and then answers from a bounded cache of
//! verified tokens until their `exp`. Every change to providers or mappings moves a
//! generation counter that each cache hit checks, so a deletion takes effect at once.
//!
//! The caller is named `<provider>:<subject>`; its token is never logged nor stored (the
//! cache is keyed by the token's SHA-256).

mod claims;
mod verified;

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use jsonwebtoken::decode_header;
use parking_lot::Mutex;
use serde_json::Value;

use super::limits::KeyLimiter;
use super::{hash_key, KeyEntry, KeyRing, Refusal, KEY_PREFIX};
use crate::clock::Clock;
use crate::domain::{IdentityMapping, IdentityProvider, ProviderKeys, TenantId};
use crate::engine::jwks::{verifies_with_set, JwksCache, IDENTITY_ALLOWED};
use crate::http::error::ApiError;
use crate::share::Sharing;
use crate::store::{StoredMapping, StoredProvider};
use crate::telemetry::metrics::Metrics;
pub use verified::RecentIdentity;
use verified::{Identity, VerifiedCache};

/// How many identities keep a rate-limit bucket; past that the buckets start afresh.
const MAX_LIMITERS: usize = 10_000;

/// Why a JWT caller was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdentityRefusal {
    /// Not a token we accept (401): why (for the log, never the caller), and the
    /// provider whose token it claims to be, when known.
    Invalid(&'static str, Option<TenantId>),
    /// A valid token that no mapping of its provider matches (403).
    NoMapping(String),
}

#[derive(Default)]
struct Snapshot {
    by_issuer: HashMap<String, Arc<IdentityProvider>>,
    mappings: HashMap<TenantId, Vec<Arc<IdentityMapping>>>,
}

pub struct IdentityRegistry {
    snapshot: ArcSwap<Snapshot>,
    /// What the last full load read (each row's id and creation time: rows are never
    /// changed in place), so that a periodic reload that finds nothing new keeps the
    /// verified tokens.
    loaded: Mutex<Vec<(String, i64)>>,
    generation: AtomicU64,
    jwks: JwksCache,
    clock: Arc<dyn Clock>,
    /// `TOKENVEND_KEY_RATE`, applied to each identity as to a key (this replica's share).
    default_rate: Option<NonZeroU32>,
    sharing: Sharing,
    limiters: Mutex<HashMap<String, Arc<KeyLimiter>>>,
    verified: VerifiedCache,
    metrics: Arc<Metrics>,
}

impl IdentityRegistry {
    pub fn new(
        jwks: JwksCache,
        clock: Arc<dyn Clock>,
        default_rate: Option<NonZeroU32>,
        sharing: Sharing,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            snapshot: ArcSwap::default(),
            loaded: Mutex::new(Vec::new()),
            generation: AtomicU64::new(0),
            jwks,
            clock,
            default_rate,
            sharing,
            limiters: Mutex::new(HashMap::new()),
            verified: VerifiedCache::default(),
            metrics,
        }
    }

    /// Replaces every provider and mapping with the stored ones.
    pub fn replace_all(&self, providers: Vec<StoredProvider>, mappings: Vec<StoredMapping>) {
        let rows: Vec<(String, i64)> = providers
            .iter()
            .map(|p| {
                (
                    format!("p/{}", p.provider.id),
                    p.created_at.timestamp_micros(),
                )
            })
            .chain(mappings.iter().map(|m| {
                (
                    format!("m/{}", m.mapping.id),
                    m.created_at.timestamp_micros(),
                )
            }))
            .collect();
        {
            let mut loaded = self.loaded.lock();
            if *loaded == rows && self.generation.load(Ordering::SeqCst) > 0 {
                return;
            }
            *loaded = rows;
        }
        let mut snapshot = Snapshot::default();
        for stored in providers {
            let provider = stored.provider;
            snapshot
                .by_issuer
                .insert(provider.issuer.clone(), Arc::new(provider));
        }
        for stored in mappings {
            let mapping = stored.mapping;
            snapshot
                .mappings
                .entry(mapping.provider.clone())
                .or_default()
                .push(Arc::new(mapping));
        }
        self.snapshot.store(Arc::new(snapshot));
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    pub fn insert_provider(&self, provider: IdentityProvider) {
        let provider = Arc::new(provider);
        self.swap(|old| Snapshot {
            by_issuer: with(&old.by_issuer, |map| {
                map.retain(|_, p| p.id != provider.id);
                map.insert(provider.issuer.clone(), provider.clone());
            }),
            mappings: old.mappings.clone(),
        });
    }

    /// Forgets the provider and its mappings.
    pub fn remove_provider(&self, id: &str) {
        self.swap(|old| Snapshot {
            by_issuer: with(&old.by_issuer, |map| map.retain(|_, p| p.id.as_str() != id)),
            mappings: with(&old.mappings, |map| map.retain(|p, _| p.as_str() != id)),
        });
    }

    pub fn insert_mapping(&self, mapping: IdentityMapping) {
        let mapping = Arc::new(mapping);
        self.swap(|old| Snapshot {
            by_issuer: old.by_issuer.clone(),
            mappings: with(&old.mappings, |map| {
                let list = map.entry(mapping.provider.clone()).or_default();
                list.retain(|m| m.id != mapping.id);
                list.push(mapping.clone());
            }),
        });
    }

    pub fn remove_mapping(&self, id: &str) {
        self.swap(|old| Snapshot {
            by_issuer: old.by_issuer.clone(),
            mappings: with(&old.mappings, |map| {
                for list in map.values_mut() {
                    list.retain(|m| m.id.as_str() != id);
                }
            }),
        });
    }

    /// Swaps in a new snapshot and moves the generation, so that no cached verdict made
    /// under the old one is used again. The next full load then replaces it whatever it
    /// reads (another replica may have undone this change meanwhile).
    fn swap(&self, next: impl Fn(&Snapshot) -> Snapshot) {
        *self.loaded.lock() = vec![(String::new(), i64::MIN)];
        self.snapshot.rcu(|old| next(old));
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    /// The identities seen lately, most recent first.
    pub fn recent(&self) -> Vec<RecentIdentity> {
        self.verified.recent()
    }

    /// Authenticates a JWT caller from `client`: its key entry (scopes, rate limit) named
    /// `<provider>:<subject>`, or why not.
    pub async fn authenticate(
        &self,
        token: &str,
        client: Option<IpAddr>,
    ) -> Result<Arc<KeyEntry>, IdentityRefusal> {
        let hash = hash_key(token);
        let now = self.clock.now();
        let generation = self.generation.load(Ordering::SeqCst);
        let identity = match self.verified.get(&hash, generation, now.timestamp()) {
            Some(identity) => identity,
            None => {
                let (identity, exp) = self.verify(token).await.inspect_err(|refusal| {
                    if let IdentityRefusal::Invalid(reason, provider) = refusal {
                        let provider = provider.as_ref().map_or("unknown", TenantId::as_str);
                        self.metrics.count_identity_auth(provider, "invalid");
                        tracing::info!(reason, provider, "refused a workload identity token");
                    }
                })?;
                let identity = Arc::new(identity);
                self.verified
                    .insert(hash, generation, exp, identity.clone(), now.timestamp());
                identity
            }
        };
        self.verified.seen(&identity, now);
        let entry = identity.entry_for(client);
        let outcome = if entry.is_some() {
            "accepted"
        } else {
            "forbidden"
        };
        self.metrics
            .count_identity_auth(identity.provider.as_str(), outcome);
        entry.ok_or_else(|| IdentityRefusal::NoMapping(identity.caller_id.clone()))
    }

    /// Checks the token fully (signature, claims) and finds its mappings; returns the
    /// identity and the token's `exp`.
    async fn verify(&self, token: &str) -> Result<(Identity, i64), IdentityRefusal> {
        let invalid = |reason| IdentityRefusal::Invalid(reason, None);
        let header = decode_header(token).map_err(|_| invalid("unreadable header"))?;
        if !IDENTITY_ALLOWED.contains(&header.alg) {
            return Err(invalid("algorithm not allowed"));
        }
        let claims = claims::unverified_payload(token).ok_or(invalid("unreadable claims"))?;
        let issuer = claims
            .get("iss")
            .and_then(Value::as_str)
            .ok_or(invalid("no iss"))?;
        let snapshot = self.snapshot.load_full();
        let provider = snapshot
            .by_issuer
            .get(issuer)
            .cloned()
            .ok_or(invalid("unknown issuer"))?;
        let invalid = |reason| IdentityRefusal::Invalid(reason, Some(provider.id.clone()));
        let signed = match &provider.keys {
            ProviderKeys::Inline(set) => verifies_with_set(set, &header, token, &IDENTITY_ALLOWED),
            ProviderKeys::Url(url) => {
                self.jwks
                    .verifies(url, &header, token, &IDENTITY_ALLOWED)
                    .await
            }
        };
        if !signed {
            return Err(invalid(
                "signature does not verify with the provider's keys",
            ));
        }
        let checked =
            claims::check(&claims, &provider, self.clock.now().timestamp()).map_err(invalid)?;
        let matched: Vec<Arc<IdentityMapping>> = snapshot
            .mappings
            .get(&provider.id)
            .into_iter()
            .flatten()
            .filter(|m| m.matches.iter().all(|c| c.holds(&claims)))
            .cloned()
            .collect();
        let caller_id = format!("{}:{}", provider.id, checked.subject);
        let limiter = self.limiter_for(&caller_id);
        Ok((
            Identity::new(
                provider.id.clone(),
                checked.subject,
                caller_id,
                matched,
                limiter,
            ),
            checked.exp,
        ))
    }

    /// The identity's rate-limit bucket, shared by all its tokens.
    fn limiter_for(&self, caller_id: &str) -> Option<Arc<KeyLimiter>> {
        let rate = self.default_rate?;
        let mut limiters = self.limiters.lock();
        if limiters.len() >= MAX_LIMITERS && !limiters.contains_key(caller_id) {
            limiters.clear();
        }
        Some(
            limiters
                .entry(caller_id.to_owned())
                .or_insert_with(|| Arc::new(KeyLimiter::new(rate, &self.sharing)))
                .clone(),
        )
    }
}

/// Whether a presented credential is a JWT rather than a `tv_` key.
pub fn looks_like_jwt(presented: &str) -> bool {
    !presented.starts_with(KEY_PREFIX) && presented.bytes().filter(|b| *b == b'.').count() == 2
}

/// Admits a JWT caller: its entry within its rate, a refusal counted against `client`'s
/// failure budget (401, or 429 past the budget), or `403` when no mapping applies.
pub async fn admit(
    identities: &IdentityRegistry,
    ring: &KeyRing,
    token: &str,
    client: Option<IpAddr>,
) -> Result<Result<Arc<KeyEntry>, Refusal>, ApiError> {
    match identities.authenticate(token, client).await {
        Ok(entry) => Ok(entry.admit().map(|()| entry).map_err(Refusal::OverRate)),
        Err(IdentityRefusal::Invalid(..)) => Ok(Err(ring.fail(client))),
        Err(IdentityRefusal::NoMapping(caller)) => {
            tracing::Span::current().record("caller", caller.as_str());
            Err(ApiError::Forbidden {
                needed: "an identity mapping that matches this token".to_owned(),
            })
        }
    }
}

/// A copy of `map` changed by `change`.
fn with<K: Clone + Eq + std::hash::Hash, V: Clone>(
    map: &HashMap<K, V>,
    change: impl FnOnce(&mut HashMap<K, V>),
) -> HashMap<K, V> {
    let mut map = map.clone();
    change(&mut map);
    map
}
