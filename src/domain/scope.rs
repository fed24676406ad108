//! Caller-key scopes and the access rules of DESIGN.md (403 versus 404).

use std::fmt;
use std::str::FromStr;

use super::TenantId;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Scope {
    Admin,
    TenantsRead,
    TenantsWrite,
    TokenAll,
    Token(TenantId),
}

impl FromStr for Scope {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "admin" => Ok(Scope::Admin),
            "tenants:read" => Ok(Scope::TenantsRead),
            "tenants:write" => Ok(Scope::TenantsWrite),
            "token:*" => Ok(Scope::TokenAll),
            other => match other.strip_prefix("token:") {
                Some(id) => TenantId::parse(id)
                    .map(Scope::Token)
                    .map_err(|e| format!("{s:?}: tenant id {e}")),
                None => Err(format!(
                    "{s:?} is not a scope (admin, tenants:read, tenants:write, token:*, token:<tenant id>)"
                )),
            },
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::Admin => f.write_str("admin"),
            Scope::TenantsRead => f.write_str("tenants:read"),
            Scope::TenantsWrite => f.write_str("tenants:write"),
            Scope::TokenAll => f.write_str("token:*"),
            Scope::Token(id) => write!(f, "token:{id}"),
        }
    }
}

/// What a caller may do with one tenant's token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TenantAccess {
    Granted,
    /// The key has token scope, but for other tenants: answer as for an unknown id.
    Hidden,
    /// The key has no token scope at all.
    Forbidden,
}

/// The scopes of one caller key, deduplicated and in a stable order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ScopeSet(Vec<Scope>);

impl ScopeSet {
    pub fn new(scopes: impl IntoIterator<Item = Scope>) -> Self {
        let mut out: Vec<Scope> = Vec::new();
        for scope in scopes {
            if !out.contains(&scope) {
                out.push(scope);
            }
        }
        Self(out)
    }

    /// Parses the space-separated form kept in the store.
    pub fn parse_stored(stored: &str) -> Result<Self, String> {
        stored
            .split_whitespace()
            .map(Scope::from_str)
            .collect::<Result<Vec<_>, _>>()
            .map(Self::new)
    }

    pub fn to_stored(&self) -> String {
        self.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(" ")
    }

    pub fn iter(&self) -> impl Iterator<Item = &Scope> {
        self.0.iter()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether the key holds `scope` (admin holds every scope).
    pub fn allows(&self, scope: &Scope) -> bool {
        self.0.iter().any(|s| s == &Scope::Admin || s == scope)
    }

    /// What the key may do with `tenant`'s token (a raw id: one that cannot exist is
    /// hidden from token-scoped keys like any other they do not cover).
    pub fn token_access(&self, tenant: &str) -> TenantAccess {
        let mut has_token_scope = false;
        for scope in &self.0 {
            match scope {
                Scope::Admin | Scope::TokenAll => return TenantAccess::Granted,
                Scope::Token(id) if id.as_str() == tenant => return TenantAccess::Granted,
                Scope::Token(_) => has_token_scope = true,
                _ => {}
            }
        }
        if has_token_scope {
            TenantAccess::Hidden
        } else {
            TenantAccess::Forbidden
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(s: &str) -> ScopeSet {
        ScopeSet::parse_stored(s).unwrap()
    }

    #[test]
    fn scopes_round_trip_through_their_text_form() {
        for s in [
            "admin",
            "tenants:read",
            "tenants:write",
            "token:*",
            "token:acme",
        ] {
            assert_eq!(s.parse::<Scope>().unwrap().to_string(), s);
        }
        for bad in ["", "root", "token:", "token:Acme", "tenants:*", "ADMIN"] {
            assert!(bad.parse::<Scope>().is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn admin_allows_everything_and_others_only_themselves() {
        assert!(set("admin").allows(&Scope::TenantsWrite));
        assert!(set("tenants:read").allows(&Scope::TenantsRead));
        assert!(!set("tenants:read").allows(&Scope::TenantsWrite));
        assert!(!set("token:*").allows(&Scope::TenantsRead));
    }

    #[test]
    fn token_access_hides_other_tenants_and_forbids_keys_without_token_scope() {
        assert_eq!(set("token:a").token_access("a"), TenantAccess::Granted);
        assert_eq!(set("token:a").token_access("b"), TenantAccess::Hidden);
        assert_eq!(set("token:*").token_access("b"), TenantAccess::Granted);
        assert_eq!(set("admin").token_access("b"), TenantAccess::Granted);
        assert_eq!(
            set("tenants:read tenants:write").token_access("a"),
            TenantAccess::Forbidden
        );
    }

    #[test]
    fn duplicates_collapse() {
        assert_eq!(set("admin admin token:a").to_stored(), "admin token:a");
    }
}
