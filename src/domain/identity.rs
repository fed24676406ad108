//! Workload identity: identity providers (whose JWTs are trusted) and identity mappings
//! (which of their tokens' claims earn which scopes), parsed once at the edge.

use std::net::IpAddr;

use ipnet::IpNet;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet};
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};
use url::Url;

use super::{parse_outbound_url, FieldError, Scope, ScopeSet, TenantId, UrlPolicy};

/// `max_lifetime_seconds` when none is given, and the most it may be.
pub const DEFAULT_MAX_LIFETIME: u32 = 3600;
pub const MAX_MAX_LIFETIME: u32 = 86_400;
/// Bounds on what one provider or mapping may hold.
const MAX_TEXT: usize = 1000;
const MAX_KEYS: usize = 20;
const MAX_MATCHES: usize = 20;
const MAX_CIDRS: usize = 50;
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

/// An optional field as given: `Some(Value::Null)` for an explicit `null`, which these
/// fields refuse (leave a field out for its default).
fn present<'de, D: Deserializer<'de>>(raw: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(raw).map(Some)
}

/// A field that must be a string when given.
fn string_field(field: &str, raw: Option<Value>) -> Result<Option<String>, FieldError> {
    match raw {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(FieldError::new(
            field,
            "must be a string (leave it out for the default)",
        )),
    }
}

fn required_text(field: &str, raw: Option<String>) -> Result<String, FieldError> {
    let text = raw.ok_or_else(|| FieldError::new(field, "is required"))?;
    if text.trim().is_empty() || text.len() > MAX_TEXT || text.chars().any(char::is_control) {
        return Err(FieldError::new(
            field,
            format!("must be a non-empty string of at most {MAX_TEXT} bytes, without control characters"),
        ));
    }
    Ok(text)
}

impl IdentityProvider {
    pub fn parse(fields: ProviderFields, policy: UrlPolicy) -> Result<Self, FieldError> {
        let id = fields
            .id
            .ok_or_else(|| FieldError::new("id", "is required"))?;
        let id = TenantId::parse(&id).map_err(|m| FieldError::new("id", m))?;
        let issuer = required_text("issuer", fields.issuer)?;
        let audience = required_text("audience", fields.audience)?;
        let jwks_url = string_field("jwks_url", fields.jwks_url)?;
        let keys = match (jwks_url, fields.jwks) {
            (Some(url), None) => ProviderKeys::Url(
                parse_outbound_url(&url, policy).map_err(|m| FieldError::new("jwks_url", m))?,
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

/// A claim name, or a JSON Pointer (`/a/b`) into nested claims.
fn parse_claim_name(raw: &str) -> Result<String, String> {
    if raw.is_empty() || raw.len() > 200 || raw.chars().any(char::is_control) {
        return Err(
            "must be a claim name or JSON Pointer of 1 to 200 bytes, without control characters"
                .to_owned(),
        );
    }
    Ok(raw.to_owned())
}

/// Reads `claim` (a name, or a JSON Pointer when it starts with `/`) from `claims`.
pub fn claim_value<'a>(claims: &'a Value, claim: &str) -> Option<&'a Value> {
    if claim.starts_with('/') {
        claims.pointer(claim)
    } else {
        claims.get(claim)
    }
}

/// One entry of a mapping's `match`: the claim must hold `value` (or start with it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimMatch {
    pub claim: String,
    pub value: String,
    pub prefix: bool,
}

impl ClaimMatch {
    pub fn holds(&self, claims: &Value) -> bool {
        let Some(found) = claim_value(claims, &self.claim).and_then(Value::as_str) else {
            return false;
        };
        if self.prefix {
            found.starts_with(&self.value)
        } else {
            found == self.value
        }
    }

    /// The value as written (with its `*` for a prefix).
    pub fn written(&self) -> String {
        if self.prefix {
            format!("{}*", self.value)
        } else {
            self.value.clone()
        }
    }
}

/// An identity mapping: tokens of `provider` whose claims match get `scopes`.
#[derive(Debug, Clone)]
pub struct IdentityMapping {
    pub id: TenantId,
    pub provider: TenantId,
    pub matches: Vec<ClaimMatch>,
    /// Unbound (as parsed) or bound to tenants (as stored).
    pub scopes: ScopeSet,
    pub cidrs: Vec<IpNet>,
}

/// The body of `POST /identity/mappings`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MappingFields {
    pub id: Option<String>,
    pub provider: Option<String>,
    #[serde(rename = "match")]
    pub matches: Option<Value>,
    pub scopes: Option<Vec<String>>,
    #[serde(default, deserialize_with = "present")]
    pub cidrs: Option<Value>,
}

impl IdentityMapping {
    pub fn parse(fields: MappingFields) -> Result<Self, FieldError> {
        let id = fields
            .id
            .ok_or_else(|| FieldError::new("id", "is required"))?;
        let id = TenantId::parse(&id).map_err(|m| FieldError::new("id", m))?;
        let provider = fields
            .provider
            .ok_or_else(|| FieldError::new("provider", "is required"))?;
        let provider = TenantId::parse(&provider).map_err(|m| FieldError::new("provider", m))?;
        let matches = parse_matches(fields.matches)?;
        let scopes = parse_mapping_scopes(fields.scopes)?;
        let cidrs = match fields.cidrs {
            None => Vec::new(),
            Some(Value::Array(list)) => parse_cidrs(
                list.into_iter()
                    .map(|c| match c {
                        Value::String(c) => Ok(c),
                        _ => Err(FieldError::new("cidrs", "must be a list of CIDR strings")),
                    })
                    .collect::<Result<_, _>>()?,
            )?,
            Some(_) => return Err(FieldError::new("cidrs", "must be a list of CIDR strings")),
        };
        Ok(Self {
            id,
            provider,
            matches,
            scopes,
            cidrs,
        })
    }

    /// Whether a token with `claims`, from `client`, earns this mapping's scopes.
    pub fn applies(&self, claims: &Value, client: Option<IpAddr>) -> bool {
        self.matches.iter().all(|m| m.holds(claims)) && self.admits(client)
    }

    /// Whether `client` is inside one of the CIDRs (always, without CIDRs).
    pub fn admits(&self, client: Option<IpAddr>) -> bool {
        if self.cidrs.is_empty() {
            return true;
        }
        let Some(client) = client.map(unmapped) else {
            return false;
        };
        self.cidrs.iter().any(|net| net.contains(&client))
    }

    /// `match` as written: claim → value.
    pub fn match_object(&self) -> Map<String, Value> {
        self.matches
            .iter()
            .map(|m| (m.claim.clone(), Value::String(m.written())))
            .collect()
    }
}

/// An IPv4 address written as IPv4-mapped IPv6 is that IPv4 address.
fn unmapped(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

pub fn parse_matches(raw: Option<Value>) -> Result<Vec<ClaimMatch>, FieldError> {
    let invalid = |m: &str| FieldError::new("match", m);
    let object = raw
        .as_ref()
        .ok_or_else(|| invalid("is required"))?
        .as_object()
        .ok_or_else(|| invalid("must be an object of claim → required string"))?;
    if object.is_empty() || object.len() > MAX_MATCHES {
        return Err(invalid("must hold from 1 to 20 entries"));
    }
    object
        .iter()
        .map(|(claim, value)| {
            let claim = parse_claim_name(claim).map_err(|m| invalid(&m))?;
            let value = value
                .as_str()
                .filter(|v| {
                    !v.is_empty() && v.len() <= MAX_TEXT && !v.chars().any(char::is_control)
                })
                .ok_or_else(|| {
                    invalid("every value must be a non-empty string without control characters")
                })?;
            Ok(match value.strip_suffix('*') {
                Some(prefix) => ClaimMatch {
                    claim,
                    value: prefix.to_owned(),
                    prefix: true,
                },
                None => ClaimMatch {
                    claim,
                    value: value.to_owned(),
                    prefix: false,
                },
            })
        })
        .collect()
}

fn parse_mapping_scopes(raw: Option<Vec<String>>) -> Result<ScopeSet, FieldError> {
    let raw = raw.ok_or_else(|| FieldError::new("scopes", "is required"))?;
    let scopes = raw
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let scope = s
                .parse::<Scope>()
                .map_err(|m| FieldError::new(format!("scopes[{i}]"), m))?;
            if scope == Scope::Admin {
                return Err(FieldError::new(
                    format!("scopes[{i}]"),
                    "admin cannot be granted to a workload identity",
                ));
            }
            Ok(scope)
        })
        .collect::<Result<Vec<_>, _>>()?;
    let set = ScopeSet::new(scopes);
    if set.is_empty() {
        return Err(FieldError::new("scopes", "must name at least one scope"));
    }
    Ok(set)
}

pub fn parse_cidrs(raw: Vec<String>) -> Result<Vec<IpNet>, FieldError> {
    if raw.len() > MAX_CIDRS {
        return Err(FieldError::new(
            "cidrs",
            format!("at most {MAX_CIDRS} entries"),
        ));
    }
    raw.iter()
        .enumerate()
        .map(|(i, c)| {
            c.parse::<IpNet>().map(|n| n.trunc()).map_err(|_| {
                FieldError::new(format!("cidrs[{i}]"), "is not a CIDR (e.g. 10.0.0.0/8)")
            })
        })
        .collect()
}

#[cfg(test)]
mod tests;
