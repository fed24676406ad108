//! Signature checks of fetched JWTs against a tenant's JWKS, with the key sets cached.
//!
//! Only the asymmetric algorithms in [`ALLOWED`] are checked, each against keys of its own
//! type (RSA for RS*/PS*, the matching curve for ES*), never on the header's word alone. A
//! token with a `kid` is checked against that key; one without (edX's default) against
//! every fitting key, since a JWKS lists several keys while one is being rotated.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet, PublicKeyUse};
use jsonwebtoken::{decode, decode_header, Algorithm, DecodingKey, Header, Validation};
use parking_lot::Mutex;
use serde_json::Value;
use url::Url;

use super::token::SignatureState;
use crate::clock::{Clock, SystemClock};
use crate::outbound::upstream::UpstreamClient;

/// How long a fetched key set is trusted before it is fetched again.
const JWKS_TTL: Duration = Duration::from_secs(600);
/// A token naming an unknown key id refetches the set, at most this often.
const REFETCH_AFTER: Duration = Duration::from_secs(30);

/// The algorithms a signature may be checked with. Never HMAC (anyone holding the public
/// key could forge it) and never `none`.
const ALLOWED: [Algorithm; 8] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
];

/// The algorithms a workload identity token may use: those of [`ALLOWED`] and EdDSA
/// (Ed25519), which some platforms sign with.
pub const IDENTITY_ALLOWED: [Algorithm; 9] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

pub struct JwksCache {
    upstream: UpstreamClient,
    /// Reads the time of fetches (tests of the refetch rules move a manual clock).
    clock: Arc<dyn Clock>,
    sets: Mutex<HashMap<String, Fetched>>,
}

/// A key set and when it was fetched.
type Fetched = (DateTime<Utc>, Arc<JwkSet>);

impl JwksCache {
    pub fn new(upstream: UpstreamClient) -> Self {
        Self::with_clock(upstream, Arc::new(SystemClock))
    }

    pub fn with_clock(upstream: UpstreamClient, clock: Arc<dyn Clock>) -> Self {
        Self {
            upstream,
            clock,
            sets: Mutex::new(HashMap::new()),
        }
    }

    /// Whether `token` (with `header`, whose algorithm is one of `allowed`) verifies with
    /// a key of the set at `url`; an unknown key refetches the set (at most every 30 s).
    /// Unlike [`JwksCache::verify`], a check that cannot be made is a failure.
    pub async fn verifies(
        &self,
        url: &Url,
        header: &Header,
        token: &str,
        allowed: &[Algorithm],
    ) -> bool {
        if !allowed.contains(&header.alg) {
            return false;
        }
        let Some(set) = self.key_set(url, false).await else {
            return false;
        };
        if check(&set, header, token, allowed) == Check::Valid {
            return true;
        }
        match self.key_set(url, true).await {
            Some(fresh) if !Arc::ptr_eq(&fresh, &set) => {
                check(&fresh, header, token, allowed) == Check::Valid
            }
            _ => false,
        }
    }

    /// `Unverified` when the check cannot be made (edX's default HS256, whose secret only
    /// edX holds; JWKS unreachable), `Invalid` when it was made and failed or when the
    /// token's algorithm is not one of [`ALLOWED`].
    pub async fn verify(&self, url: &Url, token: &str) -> SignatureState {
        let Ok(header) = decode_header(token) else {
            return SignatureState::Invalid;
        };
        if let Some(verdict) = verdict_without_keys(header.alg) {
            return verdict;
        }
        let Some(set) = self.key_set(url, false).await else {
            return SignatureState::Unverified;
        };
        let first = check(&set, &header, token, &ALLOWED);
        if first == Check::Valid {
            return SignatureState::Valid;
        }
        // A key we have not seen (a rotation since the set was fetched): fetch it again,
        // at most every `REFETCH_AFTER`.
        let outcome = match self.key_set(url, true).await {
            Some(fresh) if !Arc::ptr_eq(&fresh, &set) => check(&fresh, &header, token, &ALLOWED),
            _ => first,
        };
        match outcome {
            Check::Valid => SignatureState::Valid,
            Check::Invalid | Check::NoKey => SignatureState::Invalid,
        }
    }

    async fn key_set(&self, url: &Url, refetch: bool) -> Option<Arc<JwkSet>> {
        let cached = self.sets.lock().get(url.as_str()).cloned();
        let now = self.clock.now();
        if let Some((fetched, set)) = &cached {
            let age = (now - *fetched).to_std().unwrap_or_default();
            if age < JWKS_TTL && !(refetch && age >= REFETCH_AFTER) {
                return Some(set.clone());
            }
        }
        let timeout = self.upstream.settings().attempt_timeout;
        let fetched = tokio::time::timeout(timeout, self.upstream.fetch_json(url)).await;
        let parsed = match fetched {
            Ok(Ok(value)) => serde_json::from_value::<JwkSet>(value).ok(),
            _ => None,
        };
        match parsed {
            Some(set) => {
                let set = Arc::new(set);
                self.sets.lock().insert(url.to_string(), (now, set.clone()));
                Some(set)
            }
            None => {
                tracing::warn!(jwks_url = %url, "could not fetch the JWKS; signature left unverified");
                cached.map(|(_, set)| set)
            }
        }
    }
}

/// The verdict on an algorithm that is never checked against keys: edX's default HS256
/// cannot be checked (only edX holds the secret), anything else outside [`ALLOWED`] is
/// refused.
fn verdict_without_keys(alg: Algorithm) -> Option<SignatureState> {
    match alg {
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => Some(SignatureState::Unverified),
        alg if !ALLOWED.contains(&alg) => Some(SignatureState::Invalid),
        _ => None,
    }
}

/// What one key set says of a token's signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Check {
    Valid,
    /// Fitting keys were found and none verified it.
    Invalid,
    /// No key fits the token's `kid` and algorithm.
    NoKey,
}

/// Whether `token` verifies with a key of `set` (an inline key set), with an algorithm
/// of `allowed`.
pub fn verifies_with_set(
    set: &JwkSet,
    header: &Header,
    token: &str,
    allowed: &[Algorithm],
) -> bool {
    allowed.contains(&header.alg) && check(set, header, token, allowed) == Check::Valid
}

/// Checks `token` (whose `header` was decoded from it, with an algorithm in `allowed`)
/// against the keys of `set` that fit it.
fn check(set: &JwkSet, header: &Header, token: &str, allowed: &[Algorithm]) -> Check {
    let mut validation = Validation::new(header.alg);
    validation.validate_exp = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    let mut candidates = set
        .keys
        .iter()
        .filter(|jwk| match &header.kid {
            Some(kid) => jwk.common.key_id.as_deref() == Some(kid.as_str()),
            None => true,
        })
        .filter(|jwk| fits(jwk, header.alg, allowed))
        .peekable();
    if candidates.peek().is_none() {
        return Check::NoKey;
    }
    let verifies = |jwk: &Jwk| {
        DecodingKey::from_jwk(jwk)
            .is_ok_and(|key| decode::<Value>(token, &key, &validation).is_ok())
    };
    if candidates.any(verifies) {
        Check::Valid
    } else {
        Check::Invalid
    }
}

/// Whether `jwk` may check a signature made with `alg`: its type matches the algorithm's
/// family, and its `alg` and `use`, when given, allow it.
fn fits(jwk: &Jwk, alg: Algorithm, allowed: &[Algorithm]) -> bool {
    let type_fits = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => matches!(
            alg,
            Algorithm::RS256
                | Algorithm::RS384
                | Algorithm::RS512
                | Algorithm::PS256
                | Algorithm::PS384
                | Algorithm::PS512
        ),
        AlgorithmParameters::EllipticCurve(ec) => matches!(
            (&ec.curve, alg),
            (EllipticCurve::P256, Algorithm::ES256) | (EllipticCurve::P384, Algorithm::ES384)
        ),
        AlgorithmParameters::OctetKeyPair(okp) => {
            okp.curve == EllipticCurve::Ed25519 && alg == Algorithm::EdDSA
        }
        AlgorithmParameters::OctetKey(_) => false,
    };
    let alg_fits = jwk
        .common
        .key_algorithm
        .is_none_or(|declared| declared.to_string().parse::<Algorithm>().ok() == Some(alg));
    let use_fits = matches!(
        jwk.common.public_key_use,
        None | Some(PublicKeyUse::Signature)
    );
    type_fits && alg_fits && use_fits && allowed.contains(&alg)
}

#[cfg(test)]
mod tests;
