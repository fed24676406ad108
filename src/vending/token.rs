//! A held token and its validity window: effective expiry, refresh point, state.

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use chrono::{DateTime, SecondsFormat, Utc};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::upstream::{FetchedToken, UpstreamError};

/// The shortest refresh window, unless that would be more than half the lifetime.
const MIN_REFRESH_WINDOW: Duration = Duration::from_secs(30);
/// The share of a token's lifetime at its end in which it is refreshed ahead.
const REFRESH_SHARE: f64 = 0.2;

/// Whether a JWT's signature was checked against the tenant's JWKS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SignatureState {
    Unverified,
    Valid,
    Invalid,
}

/// A token in memory. The token itself is a secret; everything else is safe to show.
/// The token is held once: inside the prebuilt answer when it is written there as it is
/// (JWTs always are), and its claims are decoded from it when a status asks for them.
#[derive(Debug, Clone)]
pub struct HeldToken {
    pub token_type: String,
    pub scope: Option<String>,
    pub fetched_at: DateTime<Utc>,
    pub issued_at: DateTime<Utc>,
    pub not_before: Option<DateTime<Utc>>,
    pub expires_at: DateTime<Utc>,
    /// The moment refresh-ahead starts.
    pub refresh_at: DateTime<Utc>,
    /// The safety margin: inside it, the token is never served.
    pub skew: Duration,
    pub signature: SignatureState,
    pub fingerprint: String,
    /// Whether the token is a JWT with a claims object (see `claims`).
    is_jwt: bool,
    /// The token answer's JSON from `"access_token"` up to `"expires_in":`, then what
    /// follows the `expires_in` value (split at `split`): built once per token, so that a
    /// cache hit only writes the tenant id and the seconds left. Holds the token.
    answer: SecretString,
    split: u32,
    token: TokenText,
    /// The answer of the current second (`answer.rs`).
    pub(super) answer_cache: super::answer::AnswerCache,
}

/// Where the token itself is.
#[derive(Debug, Clone)]
enum TokenText {
    /// In the answer, at these bytes (it needed no escaping there).
    Within(u32, u32),
    /// Apart: it is escaped in the answer.
    Apart(SecretString),
}

fn seconds(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

fn at(unix: Option<&Value>) -> Option<DateTime<Utc>> {
    let secs = unix?.as_f64()?;
    if !secs.is_finite() {
        return None;
    }
    DateTime::from_timestamp(secs.floor() as i64, 0)
}

/// The payload of a JWT, decoded without checking its signature (that is for JWKS).
pub fn decode_claims(token: &str) -> Option<Value> {
    let claims: Value = serde_json::from_slice(&payload_object(token)?).ok()?;
    claims.is_object().then_some(claims)
}

/// The JSON of a JWT's payload, if it looks like an object.
fn payload_object(token: &str) -> Option<Vec<u8>> {
    let mut parts = token.split('.');
    let (_header, payload, _signature) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let bytes = URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    (first == Some(&b'{')).then_some(bytes)
}

/// The time claims a held token is built from; the others are skipped unread (a token is
/// built for every fetch and every stored token adopted: no map of every claim).
#[derive(serde::Deserialize)]
struct TimeClaims {
    exp: Option<Value>,
    iat: Option<Value>,
    nbf: Option<Value>,
}

fn decode_time_claims(token: &str) -> Option<TimeClaims> {
    serde_json::from_slice(&payload_object(token)?).ok()
}

/// A JWT's `iat` (whole seconds), if it is a JWT that has one.
pub fn jwt_issued_at(token: &str) -> Option<DateTime<Utc>> {
    at(decode_time_claims(token)?.iat.as_ref())
}

/// The first 16 hex digits of the token's SHA-256: tells tokens apart without showing them.
pub fn fingerprint(token: &str) -> String {
    hex::encode(&Sha256::digest(token.as_bytes())[..8])
}

/// The answer without its tenant id and seconds left (see `HeldToken::answer`), where the
/// seconds left go, and where the token is in it if it is there as it is.
fn answer(
    token: &str,
    token_type: &str,
    issued_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
    scope: Option<&str>,
    fingerprint: &str,
) -> (String, usize, Option<(usize, usize)>) {
    let text = |s: &str| serde_json::to_string(s).unwrap_or_default();
    let time = |t: DateTime<Utc>| text(&t.to_rfc3339_opts(SecondsFormat::Secs, true));
    let quoted = text(token);
    let middle = format!(
        ",\"token_type\":{},\"issued_at\":{},\"expires_at\":{},\"expires_in\":",
        text(token_type),
        time(issued_at),
        time(expires_at),
    );
    let tail = format!(
        ",\"scope\":{},\"fingerprint\":{}}}",
        serde_json::to_string(&scope).unwrap_or_default(),
        text(fingerprint)
    );
    const HEAD: &str = "\"access_token\":";
    // Exactly the size it ends with: the answer is kept for the token's life, and a
    // buffer shrunk afterwards leaves a hole beside it.
    let mut out = String::with_capacity(HEAD.len() + quoted.len() + middle.len() + tail.len());
    out.push_str(HEAD);
    let start = out.len() + 1;
    out.push_str(&quoted);
    // Written as it is when quoting added only the two quotes.
    let within = (quoted.len() == token.len() + 2).then(|| (start, start + token.len()));
    out.push_str(&middle);
    let split = out.len();
    out.push_str(&tail);
    (out, split, within)
}

impl HeldToken {
    /// The token answer: `{"tenant_id", "access_token", "token_type", "issued_at",
    /// "expires_at", "expires_in" (whole seconds left at `now`), "scope", "fingerprint"}`.
    pub fn response_json(&self, tenant_id: &str, now: DateTime<Utc>) -> Vec<u8> {
        let (head, tail) = self.answer.expose_secret().split_at(self.split as usize);
        let mut out = Vec::with_capacity(head.len() + tail.len() + tenant_id.len() + 40);
        out.extend_from_slice(b"{\"tenant_id\":");
        // Tenant ids are [a-z0-9-]: nothing to escape.
        out.push(b'"');
        out.extend_from_slice(tenant_id.as_bytes());
        out.extend_from_slice(b"\",");
        out.extend_from_slice(head.as_bytes());
        out.extend_from_slice(itoa::Buffer::new().format(self.remaining(now)).as_bytes());
        out.extend_from_slice(tail.as_bytes());
        out
    }

    /// The token itself: a secret, for the one place that sends it.
    pub fn expose_token(&self) -> &str {
        match &self.token {
            TokenText::Within(start, end) => {
                &self.answer.expose_secret()[*start as usize..*end as usize]
            }
            TokenText::Apart(token) => token.expose_secret(),
        }
    }

    /// The JWT's claims, decoded from the token (not kept decoded: statuses are rare,
    /// tokens many).
    pub fn claims(&self) -> Option<Value> {
        self.is_jwt
            .then(|| decode_claims(self.expose_token()))
            .flatten()
    }

    /// Whether the token is a JWT (with claims).
    pub fn is_jwt(&self) -> bool {
        self.is_jwt
    }

    /// Interprets a fetched token: effective expiry is the earlier of `fetched_at +
    /// expires_in` and the JWT `exp`.
    pub fn from_fetch(
        fetched: FetchedToken,
        fetched_at: DateTime<Utc>,
        skew: Duration,
    ) -> Result<Self, UpstreamError> {
        Self::build(
            fetched.access_token,
            fetched.token_type.unwrap_or_else(|| "Bearer".to_owned()),
            fetched.scope,
            fetched_at,
            fetched.expires_in.map(|d| fetched_at + seconds(d)),
            skew,
        )
        .ok_or_else(|| UpstreamError::InvalidResponse {
            status: 200,
            detail: "the token has no future expiry (no expires_in and no JWT exp)".to_owned(),
        })
    }

    /// Rebuilds a token loaded from the store.
    pub fn restore(
        access_token: SecretString,
        token_type: String,
        scope: Option<String>,
        fetched_at: DateTime<Utc>,
        expires_at: DateTime<Utc>,
        skew: Duration,
    ) -> Option<Self> {
        Self::build(
            access_token,
            token_type,
            scope,
            fetched_at,
            Some(expires_at),
            skew,
        )
    }

    fn build(
        access_token: SecretString,
        token_type: String,
        scope: Option<String>,
        fetched_at: DateTime<Utc>,
        expires_by_lifetime: Option<DateTime<Utc>>,
        skew: Duration,
    ) -> Option<Self> {
        let claims = decode_time_claims(access_token.expose_secret());
        let claim =
            |pick: fn(&TimeClaims) -> Option<&Value>| claims.as_ref().and_then(|c| at(pick(c)));
        let expires_at = match (expires_by_lifetime, claim(|c| c.exp.as_ref())) {
            (Some(a), Some(b)) => a.min(b),
            (a, b) => a.or(b)?,
        };
        if expires_at <= fetched_at {
            return None;
        }
        let issued_at = claim(|c| c.iat.as_ref())
            .filter(|iat| *iat <= expires_at)
            .unwrap_or(fetched_at);
        let lifetime = (expires_at - fetched_at).to_std().ok()?;
        let window = lifetime
            .mul_f64(REFRESH_SHARE)
            .max(MIN_REFRESH_WINDOW)
            .min(lifetime / 2);
        let fingerprint = fingerprint(access_token.expose_secret());
        let (text, split, within) = answer(
            access_token.expose_secret(),
            &token_type,
            issued_at,
            expires_at,
            scope.as_deref(),
            &fingerprint,
        );
        let position = |n: usize| u32::try_from(n).ok();
        let token = match within {
            Some((start, end)) => TokenText::Within(position(start)?, position(end)?),
            None => TokenText::Apart(access_token),
        };
        Some(Self {
            answer: SecretString::from(text),
            split: position(split)?,
            token,
            fingerprint,
            is_jwt: claims.is_some(),
            token_type,
            scope,
            fetched_at,
            issued_at,
            not_before: claim(|c| c.nbf.as_ref()).or_else(|| claim(|c| c.iat.as_ref())),
            refresh_at: expires_at - seconds(window),
            // A token whose whole life is shorter than the margin would never be served:
            // the margin is at most a third of the lifetime.
            skew: skew.min(lifetime / 3),
            expires_at,
            signature: SignatureState::Unverified,
            answer_cache: Default::default(),
        })
    }

    /// Whole seconds left at `now` (never negative).
    pub fn remaining(&self, now: DateTime<Utc>) -> i64 {
        (self.expires_at - now).num_seconds().max(0)
    }

    /// Whether the token may be handed out at `now`: outside the safety margin.
    pub fn servable(&self, now: DateTime<Utc>) -> bool {
        now + seconds(self.skew) < self.expires_at
    }

    /// Servable with at least `min_ttl` left.
    pub fn satisfies(&self, now: DateTime<Utc>, min_ttl: Duration) -> bool {
        self.servable(now) && now + seconds(min_ttl) <= self.expires_at
    }

    pub fn in_refresh_window(&self, now: DateTime<Utc>) -> bool {
        now >= self.refresh_at
    }

    pub fn lifetime_seconds(&self) -> i64 {
        (self.expires_at - self.issued_at).num_seconds()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn jwt(claims: Value) -> String {
        let enc = |v: &Value| URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap());
        format!("{}.{}.sig", enc(&json!({"alg": "RS256"})), enc(&claims))
    }

    fn t0() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap()
    }

    fn fetched(token: String, expires_in: Option<u64>) -> FetchedToken {
        FetchedToken {
            access_token: SecretString::from(token),
            token_type: Some("JWT".into()),
            expires_in: expires_in.map(Duration::from_secs),
            scope: None,
            timing: None,
        }
    }

    const SKEW: Duration = Duration::from_secs(10);

    #[test]
    fn expiry_is_the_earlier_of_expires_in_and_exp() {
        let token = jwt(json!({"exp": t0().timestamp() + 100, "iat": t0().timestamp()}));
        let held = HeldToken::from_fetch(fetched(token.clone(), Some(3600)), t0(), SKEW).unwrap();
        assert_eq!(held.expires_at, t0() + chrono::Duration::seconds(100));
        let held = HeldToken::from_fetch(fetched(token, Some(50)), t0(), SKEW).unwrap();
        assert_eq!(held.expires_at, t0() + chrono::Duration::seconds(50));
    }

    #[test]
    fn a_missing_expires_in_falls_back_to_exp_and_neither_is_an_error() {
        let token = jwt(json!({"exp": t0().timestamp() + 600}));
        let held = HeldToken::from_fetch(fetched(token, None), t0(), SKEW).unwrap();
        assert_eq!(held.remaining(t0()), 600);
        assert!(HeldToken::from_fetch(fetched("opaque".into(), None), t0(), SKEW).is_err());
        let expired = jwt(json!({"exp": t0().timestamp() - 1}));
        assert!(HeldToken::from_fetch(fetched(expired, Some(3600)), t0(), SKEW).is_err());
    }

    #[test]
    fn the_refresh_window_is_a_fifth_at_least_30s_at_most_half() {
        let cases = [(3600, 720), (36000, 7200), (100, 30), (30, 15), (10, 5)];
        for (lifetime, window) in cases {
            let held = HeldToken::from_fetch(fetched("opaque".into(), Some(lifetime)), t0(), SKEW)
                .unwrap();
            let expected = t0() + chrono::Duration::seconds(lifetime as i64 - window);
            assert_eq!(held.refresh_at, expected, "lifetime {lifetime}");
        }
    }

    #[test]
    fn a_token_is_never_served_inside_the_skew() {
        let held = HeldToken::from_fetch(fetched("opaque".into(), Some(3600)), t0(), SKEW).unwrap();
        let at = |s: i64| t0() + chrono::Duration::seconds(s);
        assert!(held.servable(at(3589)));
        assert!(!held.servable(at(3590)));
        assert!(!held.servable(at(3600)));
        assert!(held.satisfies(at(0), Duration::from_secs(3600)));
        assert!(!held.satisfies(at(1), Duration::from_secs(3600)));
    }

    #[test]
    fn opaque_tokens_have_no_claims_and_jwts_expose_theirs() {
        let held = HeldToken::from_fetch(fetched("opaque".into(), Some(60)), t0(), SKEW).unwrap();
        assert!(held.claims().is_none());
        assert_eq!(held.issued_at, t0());
        let token =
            jwt(json!({"exp": t0().timestamp() + 60, "iat": t0().timestamp() - 5, "sub": "x"}));
        let held = HeldToken::from_fetch(fetched(token.clone(), Some(60)), t0(), SKEW).unwrap();
        assert_eq!(held.claims().unwrap()["sub"], "x");
        assert_eq!(held.expose_token(), token, "held once, inside the answer");
        assert_eq!(held.issued_at, t0() - chrono::Duration::seconds(5));
        assert_eq!(held.fingerprint, fingerprint(&token));
        assert_eq!(held.fingerprint.len(), 16);
        assert!(
            !format!("{held:?}").contains(&token),
            "Debug hides the token"
        );
    }

    #[test]
    fn the_prebuilt_answer_is_valid_json_with_every_field() {
        let token =
            jwt(json!({"exp": t0().timestamp() + 60, "iat": t0().timestamp() - 5, "sub": "x"}));
        let held = HeldToken::from_fetch(fetched(token.clone(), Some(60)), t0(), SKEW).unwrap();
        let answer: Value = serde_json::from_slice(
            &held.response_json("acme", t0() + chrono::Duration::seconds(20)),
        )
        .unwrap();
        assert_eq!(
            answer,
            json!({
                "tenant_id": "acme", "access_token": token, "token_type": "JWT",
                "issued_at": "2027-01-15T07:59:55Z", "expires_at": "2027-01-15T08:01:00Z",
                "expires_in": 40, "scope": null, "fingerprint": fingerprint(&token),
            })
        );
        let mut scoped = fetched("op\"aque".into(), Some(60));
        scoped.scope = Some("read \"write\"".into());
        let held = HeldToken::from_fetch(scoped, t0(), SKEW).unwrap();
        let answer: Value = serde_json::from_slice(&held.response_json("a", t0())).unwrap();
        assert_eq!(
            answer["access_token"], "op\"aque",
            "escaped once, correctly"
        );
        assert_eq!(held.expose_token(), "op\"aque", "kept apart, unescaped");
        assert_eq!(answer["scope"], "read \"write\"");
        assert_eq!(answer["expires_in"], 60);
    }

    #[test]
    fn malformed_jwts_decode_to_no_claims() {
        for token in ["a.b", "a.b.c.d", "a.!!!.c", "a.bm90IGpzb24.c", "a.WzFd.c"] {
            assert!(decode_claims(token).is_none(), "{token}");
        }
    }
}
