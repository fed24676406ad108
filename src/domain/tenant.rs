//! A tenant as the service holds it, its identity, and the validation of its fields
//! (other than its id and URLs).

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use url::Url;

use super::TenantId;
use crate::crypto::Sealed;

/// The identity of one tenant row. A tenant deleted and later re-created under the same
/// id gets a new one, so nothing held for the deleted tenant (a token, a fetch under way,
/// a caller key's scope) carries over to its successor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TenantUid(uuid::Uuid);

impl TenantUid {
    pub fn generate() -> Self {
        Self(uuid::Uuid::new_v4())
    }

    pub fn parse(raw: &str) -> Result<Self, String> {
        uuid::Uuid::parse_str(raw)
            .map(Self)
            .map_err(|_| "is not a tenant identity (a UUID)".to_owned())
    }
}

impl fmt::Display for TenantUid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

/// A tenant: a company's edX client credentials and settings. The client secret is only
/// ever held sealed; vending opens it when it builds the request.
#[derive(Debug, Clone)]
pub struct Tenant {
    pub uid: TenantUid,
    pub id: TenantId,
    pub name: String,
    pub client_id: String,
    pub secret: Sealed,
    /// `None`: the default edX token endpoint.
    pub token_url: Option<Url>,
    pub scope: Option<String>,
    pub token_type: TokenType,
    pub asymmetric_jwt: bool,
    pub jwks_url: Option<Url>,
    /// Where the proxy sends API calls; `None`: the origin of the token URL.
    pub api_base_url: Option<Url>,
    /// The client secret from before the last change of it, while it may still be used
    /// as a fallback.
    pub previous_secret: Option<PreviousSecret>,
    /// Bumped by every change (optimistic concurrency).
    pub version: i64,
    /// Bumped when a change makes held tokens stale (credentials, URL, scope, type).
    pub credentials_version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// How long a changed client secret is kept (sealed) as a fallback: an unverified
/// rotation whose new secret edX refuses keeps working with the old one meanwhile.
pub const PREVIOUS_SECRET_KEPT: chrono::Duration = chrono::Duration::hours(24);

/// The client secret a tenant had before its last change of it, sealed under its own
/// purpose (`Purpose::PreviousClientSecret`), and until when it may be sent to edX.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreviousSecret {
    pub sealed: Sealed,
    pub until: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenType {
    #[default]
    Jwt,
    Bearer,
}

impl TokenType {
    pub fn as_str(self) -> &'static str {
        match self {
            TokenType::Jwt => "jwt",
            TokenType::Bearer => "bearer",
        }
    }
}

impl fmt::Display for TokenType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for TokenType {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "jwt" => Ok(TokenType::Jwt),
            "bearer" => Ok(TokenType::Bearer),
            _ => Err("must be \"jwt\" or \"bearer\"".to_owned()),
        }
    }
}

pub fn validate_name(name: &str) -> Result<String, String> {
    let trimmed = name.trim();
    if trimmed.is_empty() {
        return Err("must not be empty".to_owned());
    }
    if trimmed.chars().count() > 200 {
        return Err("must be at most 200 characters".to_owned());
    }
    if trimmed.chars().any(char::is_control) {
        return Err("must not contain control characters".to_owned());
    }
    Ok(trimmed.to_owned())
}

/// A client id or client secret: printable ASCII without spaces, as OAuth2 clients send them.
pub fn validate_client_id(value: &str) -> Result<(), String> {
    validate_credential(value, 255)
}

/// A client secret: the same rules as a client id, longer.
pub fn validate_client_secret(value: &str) -> Result<(), String> {
    validate_credential(value, 1024)
}

fn validate_credential(value: &str, max: usize) -> Result<(), String> {
    if value.is_empty() {
        return Err("must not be empty".to_owned());
    }
    if value.len() > max {
        return Err(format!("must be at most {max} characters"));
    }
    if !value.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("must be printable ASCII without spaces".to_owned());
    }
    Ok(())
}

/// An OAuth2 scope: space-separated scope tokens (RFC 6749 §3.3).
pub fn validate_scope(scope: &str) -> Result<String, String> {
    if scope.len() > 1024 {
        return Err("must be at most 1024 characters".to_owned());
    }
    let tokens: Vec<&str> = scope.split(' ').filter(|t| !t.is_empty()).collect();
    if tokens.is_empty() {
        return Err(
            "must name at least one scope (omit the field or send null for none)".to_owned(),
        );
    }
    let valid_char = |c: char| c == '!' || ('#'..='[').contains(&c) || (']'..='~').contains(&c);
    if !tokens.iter().all(|t| t.chars().all(valid_char)) {
        return Err("may contain only printable ASCII scope names separated by spaces".to_owned());
    }
    Ok(tokens.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_are_normalised_and_checked() {
        assert_eq!(validate_scope("read  write").unwrap(), "read write");
        assert!(validate_scope("   ").is_err());
        assert!(validate_scope("read \"write\"").is_err());
        assert!(validate_scope("read\twrite").is_err());
    }

    #[test]
    fn client_ids_are_printable_without_spaces() {
        assert!(validate_client_id("abc-DEF_123.x").is_ok());
        for (bad, why) in [
            ("", "empty"),
            ("a b", "space"),
            ("a\nb", "newline"),
            ("é", "non-ascii"),
        ] {
            assert!(validate_client_id(bad).is_err(), "{why}");
        }
        assert!(validate_client_id(&"x".repeat(256)).is_err());
    }

    #[test]
    fn names_are_trimmed_and_bounded() {
        assert_eq!(validate_name("  Acme Corp ").unwrap(), "Acme Corp");
        assert!(validate_name("   ").is_err());
        assert!(validate_name(&"n".repeat(201)).is_err());
        assert!(validate_name("a\u{0}b").is_err());
    }
}
