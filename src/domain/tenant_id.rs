//! Tenant identifiers: `^[a-z0-9][a-z0-9-]{0,62}$`.

use std::borrow::Borrow;
use std::fmt;
use std::sync::Arc;

/// Shared, not copied: the engine keys its maps and slots by the same id, so each tenant's
/// id is held once (a clone is a reference count).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(transparent)]
pub struct TenantId(Arc<str>);

impl TenantId {
    pub const MAX_LEN: usize = 63;

    pub fn parse(raw: &str) -> Result<Self, String> {
        let mut chars = raw.chars();
        let first = chars.next().ok_or_else(|| "must not be empty".to_owned())?;
        if raw.len() > Self::MAX_LEN {
            return Err(format!("must be at most {} characters", Self::MAX_LEN));
        }
        if !(first.is_ascii_lowercase() || first.is_ascii_digit()) {
            return Err("must start with a lowercase letter or a digit".to_owned());
        }
        if !chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-') {
            return Err("may contain only lowercase letters, digits and '-'".to_owned());
        }
        Ok(Self(Arc::from(raw)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Hashes and orders as its text does, so maps keyed by ids can be searched by any string.
impl Borrow<str> for TenantId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for TenantId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn valid_and_invalid_ids() {
        let valid = [
            "a",
            "0",
            "acme",
            "acme-corp",
            "a-",
            "9lives",
            &"a".repeat(63),
        ];
        for id in valid {
            assert!(TenantId::parse(id).is_ok(), "{id:?} should be valid");
        }
        let invalid = [
            ("", "empty"),
            ("-acme", "leading dash"),
            ("Acme", "uppercase"),
            ("acme_corp", "underscore"),
            ("acme corp", "space"),
            ("acmé", "non-ascii"),
            ("acme/../x", "path characters"),
        ];
        for (id, why) in invalid {
            assert!(
                TenantId::parse(id).is_err(),
                "{why}: {id:?} should be invalid"
            );
        }
        assert!(TenantId::parse(&"a".repeat(64)).is_err(), "64 characters");
    }

    proptest! {
        #[test]
        fn every_string_matching_the_pattern_parses(id in "[a-z0-9][a-z0-9-]{0,62}") {
            let parsed = TenantId::parse(&id).unwrap();
            prop_assert_eq!(parsed.as_str(), id.as_str());
        }

        #[test]
        fn parse_never_panics_and_accepts_only_the_pattern(id in "\\PC{0,80}") {
            let ok = TenantId::parse(&id).is_ok();
            let matches = !id.is_empty()
                && id.len() <= 63
                && id.chars().next().is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
                && id.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
            prop_assert_eq!(ok, matches);
        }
    }
}
