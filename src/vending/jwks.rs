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
use crate::upstream::UpstreamClient;

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
mod tests {
    use std::sync::OnceLock;

    use jsonwebtoken::{encode, EncodingKey};
    use serde_json::json;

    use super::*;

    /// Signing keys generated for these tests: two RSA keys, one P-256, one P-384.
    struct Keys {
        rsa: [EncodingKey; 2],
        p256: EncodingKey,
        p384: EncodingKey,
    }

    fn keys() -> &'static Keys {
        static KEYS: OnceLock<Keys> = OnceLock::new();
        KEYS.get_or_init(|| {
            use p256::pkcs8::EncodePrivateKey;
            use rsa::pkcs1::EncodeRsaPrivateKey;
            let mut rng = rand::thread_rng();
            let rsa = || {
                let key = rsa::RsaPrivateKey::new(&mut rand::thread_rng(), 2048).unwrap();
                EncodingKey::from_rsa_der(key.to_pkcs1_der().unwrap().as_bytes())
            };
            let p256 = p256::SecretKey::random(&mut rng).to_pkcs8_der().unwrap();
            let p384 = p384::SecretKey::random(&mut rng).to_pkcs8_der().unwrap();
            Keys {
                rsa: [rsa(), rsa()],
                p256: EncodingKey::from_ec_der(p256.as_bytes()),
                p384: EncodingKey::from_ec_der(p384.as_bytes()),
            }
        })
    }

    /// The public JWK of `key` for `alg`, with `kid`; `alg` left out of the JWK when
    /// `declare_alg` is false (edX's JWKS may name it or not).
    fn jwk(key: &EncodingKey, alg: Algorithm, kid: &str, declare_alg: bool) -> Jwk {
        let mut jwk = Jwk::from_encoding_key(key, alg).unwrap();
        jwk.common.key_id = Some(kid.to_owned());
        jwk.common.public_key_use = Some(PublicKeyUse::Signature);
        if !declare_alg {
            jwk.common.key_algorithm = None;
        }
        jwk
    }

    fn sign(key: &EncodingKey, alg: Algorithm, kid: Option<&str>) -> String {
        let mut header = Header::new(alg);
        header.kid = kid.map(str::to_owned);
        let claims = json!({"iss": "https://lms.example.com/oauth2", "sub": "worker", "exp": 4_000_000_000u64});
        encode(&header, &claims, key).unwrap()
    }

    fn verdict(set: &[Jwk], token: &str) -> SignatureState {
        let header = decode_header(token).unwrap();
        if let Some(verdict) = verdict_without_keys(header.alg) {
            return verdict;
        }
        let set = JwkSet { keys: set.to_vec() };
        match check(&set, &header, token, &ALLOWED) {
            Check::Valid => SignatureState::Valid,
            Check::Invalid | Check::NoKey => SignatureState::Invalid,
        }
    }

    #[test]
    fn a_token_without_kid_is_checked_against_every_key_of_its_type() {
        let k = keys();
        let old = jwk(&k.rsa[0], Algorithm::RS256, "retired", true);
        let ec = jwk(&k.p256, Algorithm::ES256, "ec", true);
        let current = jwk(&k.rsa[1], Algorithm::RS256, "current", true);
        let token = sign(&k.rsa[1], Algorithm::RS256, None);
        assert_eq!(
            verdict(&[old.clone(), ec, current.clone()], &token),
            SignatureState::Valid
        );
        assert_eq!(
            verdict(&[current, old.clone()], &token),
            SignatureState::Valid
        );
        assert_eq!(
            verdict(&[old], &token),
            SignatureState::Invalid,
            "no key signed it"
        );
    }

    #[test]
    fn a_token_with_kid_is_checked_against_that_key_only() {
        let k = keys();
        let a = jwk(&k.rsa[0], Algorithm::RS256, "a", true);
        let b = jwk(&k.rsa[1], Algorithm::RS256, "b", true);
        let set = [a, b];
        assert_eq!(
            verdict(&set, &sign(&k.rsa[1], Algorithm::RS256, Some("b"))),
            SignatureState::Valid
        );
        assert_eq!(
            verdict(&set, &sign(&k.rsa[1], Algorithm::RS256, Some("a"))),
            SignatureState::Invalid
        );
        assert_eq!(
            verdict(&set, &sign(&k.rsa[1], Algorithm::RS256, Some("c"))),
            SignatureState::Invalid
        );
    }

    #[test]
    fn every_allowed_algorithm_verifies_with_a_key_of_its_family() {
        let k = keys();
        let cases = [
            (&k.rsa[0], Algorithm::RS256),
            (&k.rsa[0], Algorithm::RS384),
            (&k.rsa[0], Algorithm::RS512),
            (&k.rsa[0], Algorithm::PS256),
            (&k.rsa[0], Algorithm::PS384),
            (&k.rsa[0], Algorithm::PS512),
            (&k.p256, Algorithm::ES256),
            (&k.p384, Algorithm::ES384),
        ];
        for (key, alg) in cases {
            let token = sign(key, alg, None);
            for declare_alg in [true, false] {
                let set = [jwk(key, alg, "k", declare_alg)];
                assert_eq!(verdict(&set, &token), SignatureState::Valid, "{alg:?}");
            }
        }
    }

    #[test]
    fn the_header_alone_never_picks_the_algorithm() {
        let k = keys();
        // A key published for RS256 does not check a PS256 signature made with it.
        let rs256 = [jwk(&k.rsa[0], Algorithm::RS256, "k", true)];
        assert_eq!(
            verdict(&rs256, &sign(&k.rsa[0], Algorithm::PS256, None)),
            SignatureState::Invalid
        );
        // A P-384 key does not check ES256, nor a P-256 key ES384.
        let p384 = [jwk(&k.p384, Algorithm::ES384, "k", false)];
        assert_eq!(
            verdict(&p384, &sign(&k.p256, Algorithm::ES256, None)),
            SignatureState::Invalid
        );
        // A key meant for encryption checks nothing.
        let mut enc = jwk(&k.rsa[0], Algorithm::RS256, "k", false);
        enc.common.public_key_use = Some(PublicKeyUse::Encryption);
        assert_eq!(
            verdict(&[enc], &sign(&k.rsa[0], Algorithm::RS256, None)),
            SignatureState::Invalid
        );
    }

    #[test]
    fn hmac_and_unlisted_algorithms_are_never_valid() {
        let k = keys();
        // The classic confusion: HS256 "signed" with bytes of the published RSA key, and a
        // JWKS that even lists an HMAC key.
        let public = serde_json::to_value(jwk(&k.rsa[0], Algorithm::RS256, "k", true)).unwrap();
        let secret = public["n"].as_str().unwrap().as_bytes().to_vec();
        let hmac = EncodingKey::from_secret(&secret);
        let oct = serde_json::from_value::<Jwk>(json!({
            "kty": "oct", "kid": "k", "k": base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, &secret),
        }))
        .unwrap();
        let rsa = jwk(&k.rsa[0], Algorithm::RS256, "k", false);
        for alg in [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512] {
            let token = sign(&hmac, alg, Some("k"));
            assert_eq!(
                verdict(&[oct.clone(), rsa.clone()], &token),
                SignatureState::Unverified
            );
            let header = decode_header(&token).unwrap();
            let set = JwkSet {
                keys: vec![oct.clone(), rsa.clone()],
            };
            assert_eq!(
                check(&set, &header, &token, &ALLOWED),
                Check::NoKey,
                "{alg:?} never fits a key"
            );
        }
        assert_eq!(
            verdict_without_keys(Algorithm::EdDSA),
            Some(SignatureState::Invalid)
        );
        // `alg: none` is not even a header jsonwebtoken reads: `verify` calls that invalid.
        let none = format!(
            "{}.{}.",
            base64::Engine::encode(
                &base64::engine::general_purpose::URL_SAFE_NO_PAD,
                r#"{"alg":"none","typ":"JWT"}"#
            ),
            base64::Engine::encode(
                &base64::engine::general_purpose::URL_SAFE_NO_PAD,
                r#"{"sub":"x"}"#
            ),
        );
        assert!(decode_header(&none).is_err());
    }
}
