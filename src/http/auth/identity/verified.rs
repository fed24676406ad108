//! The verified-token cache (keyed by the token's SHA-256, bounded, each entry until the
//! token's `exp` and only under the generation it was made in) and the identities seen
//! lately, for the dashboard.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use parking_lot::Mutex;
use serde::Serialize;

use super::claims::LEEWAY;
use crate::domain::{IdentityMapping, ScopeSet, TenantId};
use crate::http::auth::limits::KeyLimiter;
use crate::http::auth::{KeyEntry, KeyHash};

/// The most verified tokens held; when full, expired and outdated ones are dropped, and
/// if that frees nothing the cache starts afresh.
const MAX_VERIFIED: usize = 4096;
/// The most identities the dashboard remembers.
const MAX_RECENT: usize = 200;

/// A verified caller: who it is and the mappings whose claim matches held.
pub struct Identity {
    pub provider: TenantId,
    pub subject: String,
    pub caller_id: String,
    matched: Vec<Arc<IdentityMapping>>,
    limiter: Option<Arc<KeyLimiter>>,
    /// The entry when no matched mapping has CIDRs (the same for every address).
    fixed: Option<Arc<KeyEntry>>,
}

impl Identity {
    pub fn new(
        provider: TenantId,
        subject: String,
        caller_id: String,
        matched: Vec<Arc<IdentityMapping>>,
        limiter: Option<Arc<KeyLimiter>>,
    ) -> Self {
        let fixed =
            (!matched.is_empty() && matched.iter().all(|m| m.cidrs.is_empty())).then(|| {
                let scopes = ScopeSet::new(matched.iter().flat_map(|m| m.scopes.iter().cloned()));
                identity_entry(&caller_id, scopes, limiter.clone())
            });
        Self {
            provider,
            subject,
            caller_id,
            matched,
            limiter,
            fixed,
        }
    }

    /// The caller's entry from `client`: the scopes of every matched mapping whose CIDRs
    /// admit the address; `None` when none does.
    pub fn entry_for(&self, client: Option<IpAddr>) -> Option<Arc<KeyEntry>> {
        if let Some(fixed) = &self.fixed {
            return Some(fixed.clone());
        }
        let scopes = ScopeSet::new(
            self.matched
                .iter()
                .filter(|m| m.admits(client))
                .flat_map(|m| m.scopes.iter().cloned()),
        );
        (!scopes.is_empty()).then(|| identity_entry(&self.caller_id, scopes, self.limiter.clone()))
    }
}

struct Verified {
    generation: u64,
    exp: i64,
    identity: Arc<Identity>,
}

/// One identity as the dashboard shows it.
#[derive(Debug, Clone, Serialize)]
pub struct RecentIdentity {
    pub provider: String,
    pub subject: String,
    pub last_seen: DateTime<Utc>,
}

#[derive(Default)]
pub struct VerifiedCache {
    tokens: Mutex<HashMap<KeyHash, Verified>>,
    recent: Mutex<HashMap<String, RecentIdentity>>,
}

impl VerifiedCache {
    /// The identity of a token verified under `generation` and not expired at `now`.
    pub fn get(&self, hash: &KeyHash, generation: u64, now: i64) -> Option<Arc<Identity>> {
        let tokens = self.tokens.lock();
        let held = tokens.get(hash)?;
        (held.generation == generation && now < held.exp.saturating_add(LEEWAY))
            .then(|| held.identity.clone())
    }

    pub fn insert(
        &self,
        hash: KeyHash,
        generation: u64,
        exp: i64,
        identity: Arc<Identity>,
        now: i64,
    ) {
        let mut tokens = self.tokens.lock();
        if tokens.len() >= MAX_VERIFIED {
            tokens.retain(|_, v| v.generation == generation && now < v.exp.saturating_add(LEEWAY));
            if tokens.len() >= MAX_VERIFIED {
                tokens.clear();
            }
        }
        tokens.insert(
            hash,
            Verified {
                generation,
                exp,
                identity,
            },
        );
    }

    /// Notes that `identity` called at `now`.
    pub fn seen(&self, identity: &Identity, now: DateTime<Utc>) {
        let mut recent = self.recent.lock();
        if let Some(entry) = recent.get_mut(&identity.caller_id) {
            entry.last_seen = now;
            return;
        }
        if recent.len() >= MAX_RECENT {
            let oldest = recent
                .iter()
                .min_by_key(|(_, r)| r.last_seen)
                .map(|(id, _)| id.clone());
            if let Some(oldest) = oldest {
                recent.remove(&oldest);
            }
        }
        recent.insert(
            identity.caller_id.clone(),
            RecentIdentity {
                provider: identity.provider.to_string(),
                subject: identity.subject.clone(),
                last_seen: now,
            },
        );
    }

    /// The identities seen lately, most recent first.
    pub fn recent(&self) -> Vec<RecentIdentity> {
        let mut list: Vec<RecentIdentity> = self.recent.lock().values().cloned().collect();
        list.sort_by_key(|r| std::cmp::Reverse(r.last_seen));
        list
    }
}

/// The key entry of an identity: its caller id, the scopes of the mappings that apply.
fn identity_entry(
    caller_id: &str,
    scopes: ScopeSet,
    limiter: Option<Arc<KeyLimiter>>,
) -> Arc<KeyEntry> {
    Arc::new(KeyEntry {
        id: caller_id.to_owned(),
        scopes,
        // Never compared: identities are not in the key ring.
        hash: [0; 32],
        limiter,
    })
}
