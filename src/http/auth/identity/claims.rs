//! The claim rules of a workload identity token: `aud`, `exp`/`iat`/`nbf` with 30 s of
//! leeway, the provider's lifetime cap and its subject claim.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::Value;

use crate::domain::{claim_value, IdentityProvider};

/// How far clocks may disagree, in seconds.
pub const LEEWAY: i64 = 30;

/// The payload of a compact JWS, not yet verified (to find its issuer's keys).
pub fn unverified_payload(token: &str) -> Option<Value> {
    let mut parts = token.split('.');
    let (_, payload, _) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let bytes = URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    serde_json::from_slice::<Value>(&bytes)
        .ok()
        .filter(Value::is_object)
}

/// What the checks found: the subject and the expiry.
#[derive(Debug, PartialEq, Eq)]
pub struct Checked {
    pub subject: String,
    pub exp: i64,
}

fn number(claims: &Value, name: &str) -> Option<i64> {
    let value = claims.get(name)?;
    value
        .as_i64()
        .or_else(|| value.as_f64().filter(|f| f.is_finite()).map(|f| f as i64))
}

/// Checks the verified `claims` against `provider`'s rules at `now` (Unix seconds).
pub fn check(
    claims: &Value,
    provider: &IdentityProvider,
    now: i64,
) -> Result<Checked, &'static str> {
    let audience_fits = match claims.get("aud") {
        Some(Value::String(aud)) => *aud == provider.audience,
        Some(Value::Array(auds)) => auds
            .iter()
            .any(|a| a.as_str() == Some(provider.audience.as_str())),
        _ => false,
    };
    if !audience_fits {
        return Err("aud does not contain the provider's audience");
    }
    let exp = number(claims, "exp").ok_or("no exp")?;
    let iat = number(claims, "iat").ok_or("no iat")?;
    if now >= exp.saturating_add(LEEWAY) {
        return Err("expired");
    }
    if iat > now.saturating_add(LEEWAY) {
        return Err("issued in the future");
    }
    if claims.get("nbf").is_some() {
        let nbf = number(claims, "nbf").ok_or("unreadable nbf")?;
        if nbf > now.saturating_add(LEEWAY) {
            return Err("not valid yet (nbf)");
        }
    }
    if exp.saturating_sub(iat) > i64::from(provider.max_lifetime_seconds) {
        return Err("lifetime longer than the provider's max_lifetime_seconds");
    }
    let subject = claim_value(claims, &provider.subject_claim)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or("no subject claim, or an empty one")?;
    Ok(Checked {
        subject: subject.to_owned(),
        exp,
    })
}

#[cfg(test)]
mod tests {
    use jsonwebtoken::jwk::JwkSet;
    use serde_json::json;

    use super::*;
    use crate::domain::{ProviderKeys, TenantId};

    fn provider() -> IdentityProvider {
        IdentityProvider {
            id: TenantId::parse("k8s").unwrap(),
            issuer: "https://issuer.example".into(),
            audience: "tokenvend".into(),
            keys: ProviderKeys::Inline(JwkSet { keys: vec![] }),
            max_lifetime_seconds: 3600,
            subject_claim: "sub".into(),
        }
    }

    #[test]
    fn each_claim_rule_refuses_on_its_own() {
        let now = 1_000_000;
        let ok = json!({"aud": ["x", "tokenvend"], "exp": now + 600, "iat": now - 10, "sub": "w"});
        assert_eq!(
            check(&ok, &provider(), now),
            Ok(Checked {
                subject: "w".into(),
                exp: now + 600
            })
        );
        let cases: [(&str, &str, Value); 9] = [
            ("wrong aud", "aud", json!("other")),
            ("no exp", "exp", Value::Null),
            ("expired past the leeway", "exp", json!(now - 30)),
            ("iat in the future", "iat", json!(now + 31)),
            ("nbf in the future", "nbf", json!(now + 31)),
            ("no iat", "iat", Value::Null),
            ("too long", "exp", json!(now - 10 + 3601)),
            ("empty subject", "sub", json!("")),
            ("subject not a string", "sub", json!(7)),
        ];
        for (what, claim, value) in cases {
            let mut claims = ok.clone();
            if value.is_null() {
                claims.as_object_mut().unwrap().remove(claim);
            } else {
                claims[claim] = value;
            }
            assert!(check(&claims, &provider(), now).is_err(), "{what}");
        }
        let mut within = ok.clone();
        within["exp"] = json!(now - 29);
        within["iat"] = json!(now - 100);
        assert!(
            check(&within, &provider(), now).is_ok(),
            "exp within the leeway"
        );
    }
}
