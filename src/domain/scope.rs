//! Caller-key scopes and their access rules: `403` versus `404` (`TenantAccess`).

use std::fmt;
use std::str::FromStr;

use super::{TenantId, TenantUid};

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Scope {
    Admin,
    TenantsRead,
    TenantsWrite,
    TokenAll,
    /// One tenant's token, bound to the tenant that held the id when the key was created
    /// (`None` until bound: such a scope grants nothing). A tenant created later under the
    /// same id is another tenant, which the scope does not cover.
    Token(TenantId, Option<TenantUid>),
    /// Every tenant's edX API through the proxy (never the token itself).
    ProxyAll,
    /// One tenant's edX API through the proxy, bound like `Token`.
    Proxy(TenantId, Option<TenantUid>),
    /// `/metrics` (Prometheus scrapes).
    Metrics,
}

impl FromStr for Scope {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "admin" => Ok(Scope::Admin),
            "tenants:read" => Ok(Scope::TenantsRead),
            "tenants:write" => Ok(Scope::TenantsWrite),
            "token:*" => Ok(Scope::TokenAll),
            "proxy:*" => Ok(Scope::ProxyAll),
            "metrics" => Ok(Scope::Metrics),
            other => {
                let tenant_scope = |bound: &str| -> Result<(TenantId, Option<TenantUid>), String> {
                    // The stored form carries the binding: `token:<id>@<tenant uid>`.
                    let (id, uid) = match bound.split_once('@') {
                        Some((id, uid)) => (id, Some(TenantUid::parse(uid)?)),
                        None => (bound, None),
                    };
                    TenantId::parse(id)
                        .map(|id| (id, uid))
                        .map_err(|e| format!("{s:?}: tenant id {e}"))
                };
                if let Some(bound) = other.strip_prefix("token:") {
                    tenant_scope(bound).map(|(id, uid)| Scope::Token(id, uid))
                } else if let Some(bound) = other.strip_prefix("proxy:") {
                    tenant_scope(bound).map(|(id, uid)| Scope::Proxy(id, uid))
                } else {
                    Err(format!(
                        "{s:?} is not a scope (admin, tenants:read, tenants:write, token:*, \
                         token:<tenant id>, proxy:*, proxy:<tenant id>, metrics)"
                    ))
                }
            }
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
            Scope::Token(id, _) => write!(f, "token:{id}"),
            Scope::ProxyAll => f.write_str("proxy:*"),
            Scope::Proxy(id, _) => write!(f, "proxy:{id}"),
            Scope::Metrics => f.write_str("metrics"),
        }
    }
}

impl Scope {
    /// The tenant a tenant scope names while it is not bound yet.
    pub fn unbound_tenant(&self) -> Option<&TenantId> {
        match self {
            Scope::Token(id, None) | Scope::Proxy(id, None) => Some(id),
            _ => None,
        }
    }

    /// This tenant scope bound to `uid` (other scopes unchanged).
    fn bound_to(self, uid: Option<TenantUid>) -> Scope {
        match self {
            Scope::Token(id, None) => Scope::Token(id, uid),
            Scope::Proxy(id, None) => Scope::Proxy(id, uid),
            other => other,
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

    /// Binds every unbound tenant scope to the identity `current` gives its tenant now;
    /// `Err` with the first id that names no tenant.
    pub fn bind(self, current: impl Fn(&TenantId) -> Option<TenantUid>) -> Result<Self, TenantId> {
        self.0
            .into_iter()
            .map(|scope| match scope.unbound_tenant().cloned() {
                Some(id) => match current(&id) {
                    Some(uid) => Ok(scope.bound_to(Some(uid))),
                    None => Err(id),
                },
                None => Ok(scope),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Self::new)
    }

    /// Binds the tenant scopes whose tenant `current` knows, and leaves the others unbound
    /// (granting nothing).
    pub fn bind_known(self, current: impl Fn(&TenantId) -> Option<TenantUid>) -> Self {
        Self::new(self.0.into_iter().map(|scope| {
            let uid = scope.unbound_tenant().and_then(&current);
            scope.bound_to(uid)
        }))
    }

    /// Whether some tenant scope is not bound yet.
    pub fn has_unbound(&self) -> bool {
        self.0.iter().any(|s| s.unbound_tenant().is_some())
    }

    /// Parses the space-separated form kept in the store.
    pub fn parse_stored(stored: &str) -> Result<Self, String> {
        stored
            .split_whitespace()
            .map(Scope::from_str)
            .collect::<Result<Vec<_>, _>>()
            .map(Self::new)
    }

    /// The form kept in the store: tenant scopes with their binding.
    pub fn to_stored(&self) -> String {
        self.iter()
            .map(|scope| match scope {
                Scope::Token(id, Some(uid)) => format!("token:{id}@{uid}"),
                Scope::Proxy(id, Some(uid)) => format!("proxy:{id}@{uid}"),
                other => other.to_string(),
            })
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// The form callers see: tenant ids without their binding.
    pub fn to_public(&self) -> Vec<String> {
        self.iter().map(ToString::to_string).collect()
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
    /// hidden from token-scoped keys like any other they do not cover). `current` is the
    /// identity of the tenant holding that id now, if any: a scope bound to a deleted
    /// tenant does not cover a tenant re-created under its id.
    pub fn token_access(&self, tenant: &str, current: Option<TenantUid>) -> TenantAccess {
        let mut has_token_scope = false;
        for scope in &self.0 {
            match scope {
                Scope::Admin | Scope::TokenAll => return TenantAccess::Granted,
                Scope::Token(id, Some(bound))
                    if id.as_str() == tenant && current == Some(*bound) =>
                {
                    return TenantAccess::Granted
                }
                Scope::Token(..) => has_token_scope = true,
                _ => {}
            }
        }
        if has_token_scope {
            TenantAccess::Hidden
        } else {
            TenantAccess::Forbidden
        }
    }

    /// What the key may do with `tenant`'s edX API through the proxy: a proxy or a token
    /// scope for it grants it; tenant scopes for other tenants only hide it (as for
    /// `token_access`).
    pub fn proxy_access(&self, tenant: &str, current: Option<TenantUid>) -> TenantAccess {
        let mut has_tenant_scope = false;
        for scope in &self.0 {
            match scope {
                Scope::ProxyAll => return TenantAccess::Granted,
                Scope::Proxy(id, Some(bound))
                    if id.as_str() == tenant && current == Some(*bound) =>
                {
                    return TenantAccess::Granted
                }
                Scope::Proxy(..) => has_tenant_scope = true,
                _ => {}
            }
        }
        match self.token_access(tenant, current) {
            TenantAccess::Forbidden if has_tenant_scope => TenantAccess::Hidden,
            access => access,
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
            "proxy:*",
            "proxy:acme",
            "metrics",
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
        let a = TenantUid::generate();
        let bound = set(&format!("token:a@{a}"));
        assert_eq!(bound.token_access("a", Some(a)), TenantAccess::Granted);
        assert_eq!(bound.token_access("b", None), TenantAccess::Hidden);
        assert_eq!(
            set("token:*").token_access("b", None),
            TenantAccess::Granted
        );
        assert_eq!(set("admin").token_access("b", None), TenantAccess::Granted);
        assert_eq!(
            set("tenants:read tenants:write").token_access("a", Some(a)),
            TenantAccess::Forbidden
        );
    }

    #[test]
    fn a_tenant_scope_covers_only_the_tenant_it_was_bound_to() {
        let (old, new) = (TenantUid::generate(), TenantUid::generate());
        let bound = set("token:a").bind(|_| Some(old)).unwrap();
        assert_eq!(bound.to_stored(), format!("token:a@{old}"));
        assert_eq!(bound.to_public(), ["token:a"]);
        assert_eq!(ScopeSet::parse_stored(&bound.to_stored()).unwrap(), bound);
        assert_eq!(bound.token_access("a", Some(old)), TenantAccess::Granted);
        assert_eq!(
            bound.token_access("a", Some(new)),
            TenantAccess::Hidden,
            "a tenant re-created under the id is another tenant"
        );
        assert_eq!(bound.token_access("a", None), TenantAccess::Hidden);
        assert_eq!(
            set("token:a").token_access("a", Some(old)),
            TenantAccess::Hidden,
            "an unbound scope grants nothing"
        );
        assert_eq!(
            set("token:a token:b").bind(|id| (id.as_str() == "a").then_some(old)),
            Err(TenantId::parse("b").unwrap()),
            "binding fails on an unknown tenant"
        );
    }

    #[test]
    fn proxy_scopes_cover_the_proxy_only_and_token_scopes_cover_both() {
        let a = TenantUid::generate();
        let proxy = set("proxy:a").bind(|_| Some(a)).unwrap();
        assert_eq!(proxy.to_stored(), format!("proxy:a@{a}"));
        assert_eq!(proxy.to_public(), ["proxy:a"]);
        assert_eq!(proxy.proxy_access("a", Some(a)), TenantAccess::Granted);
        assert_eq!(proxy.proxy_access("b", None), TenantAccess::Hidden);
        assert_eq!(
            proxy.token_access("a", Some(a)),
            TenantAccess::Forbidden,
            "a proxy scope never reads the token"
        );
        let token = set(&format!("token:a@{a}"));
        assert_eq!(token.proxy_access("a", Some(a)), TenantAccess::Granted);
        assert_eq!(token.proxy_access("b", None), TenantAccess::Hidden);
        assert_eq!(
            set("proxy:*").proxy_access("b", None),
            TenantAccess::Granted
        );
        assert_eq!(
            set("token:*").proxy_access("b", None),
            TenantAccess::Granted
        );
        assert_eq!(
            set("tenants:read").proxy_access("a", Some(a)),
            TenantAccess::Forbidden
        );
        assert_eq!(
            set("proxy:a").proxy_access("a", Some(a)),
            TenantAccess::Hidden,
            "an unbound scope grants nothing"
        );
    }

    #[test]
    fn duplicates_collapse() {
        assert_eq!(set("admin admin token:a").to_stored(), "admin token:a");
    }
}
