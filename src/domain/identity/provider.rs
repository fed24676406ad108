//! Identity providers: whose JWTs are trusted, and the public keys (fetched or inline)
//! their signatures are checked against.

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet};
use serde::Deserialize;
use serde_json::Value;
use url::Url;

use super::fields::{parse_claim_name, present, required_text, string_field};
use crate::domain::{FieldError, TenantId, UrlRules};

/// `max_lifetime_seconds` when none is given, and the most it may be.
pub const DEFAULT_MAX_LIFETIME: u32 = 3600;
pub const MAX_MAX_LIFETIME: u32 = 86_400;
/// Keys in one inline JWK Set at most.
const MAX_KEYS: usize = 20;
/// The members of a JWK that only a private key has.
const PRIVATE_MEMBERS: [&str; 6] = ["d", "p", "q", "dp", "dq", "qi"];

/// Where a provider's public keys come from.
#[derive(Debug, Clone)]
pub enum ProviderKeys {
    /// Fetched (outbound rules apply), cached and refetched on an unknown `kid`.
    Url(Url),
    /// An inline JWK Set of public RSA, EC or OKP keys.
    Inline(JwkSet),
}

/// A trusted identity provider.
#[derive(Debug, Clone)]
pub struct IdentityProvider {
    pub id: TenantId,
    pub issuer: String,
    pub audience: String,
    pub keys: ProviderKeys,
    pub max_lifetime_seconds: u32,
    /// A claim name, or a JSON Pointer when it starts with `/`.
    pub subject_claim: String,
}

/// The body of `POST /identity/providers` (every field optional here, so that each
/// missing one gets its own message).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderFields {
    pub id: Option<String>,
    pub issuer: Option<String>,
    pub audience: Option<String>,
    #[serde(default, deserialize_with = "present")]
    pub jwks_url: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    pub jwks: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    pub max_lifetime_seconds: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    pub subject_claim: Option<Value>,
}

impl IdentityProvider {
    pub fn parse(fields: ProviderFields, policy: impl UrlRules) -> Result<Self, FieldError> {
        let id = fields
            .id
            .ok_or_else(|| FieldError::new("id", "is required"))?;
        let id = TenantId::parse(&id).map_err(|m| FieldError::new("id", m))?;
        let issuer = required_text("issuer", fields.issuer)?;
        let audience = required_text("audience", fields.audience)?;
        let jwks_url = string_field("jwks_url", fields.jwks_url)?;
        let keys = match (jwks_url, fields.jwks) {
            (Some(url), None) => ProviderKeys::Url(
                policy
                    .outbound_url(&url)
                    .map_err(|m| FieldError::new("jwks_url", m))?,
            ),
            (None, Some(set)) => ProviderKeys::Inline(parse_public_jwks(set)?),
            _ => {
                return Err(FieldError::new(
                    "jwks",
                    "exactly one of jwks_url and jwks is required",
                ))
            }
        };
        let max_lifetime_seconds = match fields.max_lifetime_seconds {
            None => DEFAULT_MAX_LIFETIME,
            Some(raw) => raw
                .as_u64()
                .filter(|n| (1..=u64::from(MAX_MAX_LIFETIME)).contains(n))
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| {
                    FieldError::new(
                        "max_lifetime_seconds",
                        format!("must be a whole number of seconds from 1 to {MAX_MAX_LIFETIME}"),
                    )
                })?,
        };
        let subject_claim = match string_field("subject_claim", fields.subject_claim)? {
            None => "sub".to_owned(),
            Some(raw) => parse_claim_name(&raw).map_err(|m| FieldError::new("subject_claim", m))?,
        };
        Ok(Self {
            id,
            issuer,
            audience,
            keys,
            max_lifetime_seconds,
            subject_claim,
        })
    }

    /// The inline key set as stored (`None` for a `jwks_url` provider).
    pub fn inline_jwks(&self) -> Option<&JwkSet> {
        match &self.keys {
            ProviderKeys::Inline(set) => Some(set),
            ProviderKeys::Url(_) => None,
        }
    }

    pub fn jwks_url(&self) -> Option<&Url> {
        match &self.keys {
            ProviderKeys::Url(url) => Some(url),
            ProviderKeys::Inline(_) => None,
        }
    }
}

/// An inline JWK Set: public RSA, EC (P-256, P-384) or OKP (Ed25519) keys only.
pub fn parse_public_jwks(raw: Value) -> Result<JwkSet, FieldError> {
    let invalid = |m: String| FieldError::new("jwks", m);
    let keys = raw
        .get("keys")
        .and_then(Value::as_array)
        .ok_or_else(|| invalid("must be a JWK Set: an object with a `keys` array".to_owned()))?;
    if keys.is_empty() || keys.len() > MAX_KEYS {
        return Err(invalid(format!("must hold from 1 to {MAX_KEYS} keys")));
    }
    for (i, key) in keys.iter().enumerate() {
        let object = key
            .as_object()
            .ok_or_else(|| invalid(format!("keys[{i}] is not an object")))?;
        if object.get("kty").and_then(Value::as_str) == Some("oct") {
            return Err(invalid(format!(
                "keys[{i}] is a symmetric (oct) key; only public keys are accepted"
            )));
        }
        if PRIVATE_MEMBERS.iter().any(|m| object.contains_key(*m)) {
            return Err(invalid(format!(
                "keys[{i}] is a private key; give only its public part"
            )));
        }
    }
    let set: JwkSet = serde_json::from_value(raw)
        .map_err(|e| invalid(format!("is not a valid JWK Set ({e})")))?;
    for (i, jwk) in set.keys.iter().enumerate() {
        let supported = match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => true,
            AlgorithmParameters::EllipticCurve(ec) => {
                matches!(ec.curve, EllipticCurve::P256 | EllipticCurve::P384)
            }
            AlgorithmParameters::OctetKeyPair(okp) => okp.curve == EllipticCurve::Ed25519,
            AlgorithmParameters::OctetKey(_) => false,
        };
        if !supported || jsonwebtoken::DecodingKey::from_jwk(jwk).is_err() {
            return Err(invalid(format!(
                "keys[{i}] is not a usable RSA, EC (P-256, P-384) or Ed25519 public key"
            )));
        }
    }
    Ok(set)
}
