//! Identity mappings: which claims of a provider's tokens, from which addresses, earn
//! which scopes.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::Deserialize;
use serde_json::{Map, Value};

use super::fields::{parse_claim_name, present, MAX_TEXT};
use crate::domain::{FieldError, Scope, ScopeSet, TenantId};

/// Bounds on what one mapping may hold.
const MAX_MATCHES: usize = 20;
const MAX_CIDRS: usize = 50;

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
