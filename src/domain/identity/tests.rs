//! Claim matches, mapping and key-set refusals, CIDRs.

use serde_json::{json, Value};

use super::provider::parse_public_jwks;
use super::*;
use crate::domain::{ScopeSet, TenantId};

#[test]
fn claim_matches_follow_pointers_and_prefixes() {
    let claims = json!({"sub": "system:serviceaccount:jobs:worker",
        "kubernetes.io": {"namespace": "jobs"}, "a/b": "x"});
    let parse = |m: Value| parse_matches(Some(m)).unwrap();
    let holds = |m: Value| parse(m).iter().all(|c| c.holds(&claims));
    assert!(holds(json!({"/kubernetes.io/namespace": "jobs"})));
    assert!(!holds(json!({"/kubernetes.io/namespace": "job"})));
    assert!(holds(json!({"sub": "system:serviceaccount:jobs:*"})));
    assert!(!holds(json!({"sub": "system:serviceaccount:other:*"})));
    assert!(holds(json!({"/a~1b": "x"})), "an escaped `/` in a pointer");
    assert!(!holds(
        json!({"sub": "system:serviceaccount:jobs:worker", "missing": "*"})
    ));
}

#[test]
fn invalid_mappings_are_refused_with_a_message_each() {
    let base = || json!({"id": "m", "provider": "p", "match": {"sub": "x"}, "scopes": ["token:*"]});
    let cases: [(&str, Value, &str); 6] = [
        ("admin scope", json!({"scopes": ["admin"]}), "scopes[0]"),
        ("no scopes", json!({"scopes": []}), "scopes"),
        ("empty match", json!({"match": {}}), "match"),
        ("non-string value", json!({"match": {"sub": 1}}), "match"),
        ("bad cidr", json!({"cidrs": ["10.0.0.0/33"]}), "cidrs[0]"),
        ("bad id", json!({"id": "Not_An_Id"}), "id"),
    ];
    for (what, patch, field) in cases {
        let mut body = base();
        for (k, v) in patch.as_object().unwrap() {
            body[k] = v.clone();
        }
        let fields: MappingFields = serde_json::from_value(body).unwrap();
        let err = IdentityMapping::parse(fields).expect_err(what);
        assert_eq!(err.field, field, "{what}");
    }
}

#[test]
fn cidrs_admit_only_addresses_inside() {
    let mapping = IdentityMapping {
        id: TenantId::parse("m").unwrap(),
        provider: TenantId::parse("p").unwrap(),
        matches: vec![],
        scopes: ScopeSet::default(),
        cidrs: parse_cidrs(vec!["127.0.0.0/8".into(), "::1/128".into()]).unwrap(),
    };
    for (ip, inside) in [
        ("127.0.0.1", true),
        ("::ffff:127.0.0.1", true),
        ("::1", true),
        ("192.0.2.1", false),
    ] {
        assert_eq!(mapping.admits(Some(ip.parse().unwrap())), inside, "{ip}");
    }
    assert!(!mapping.admits(None));
}

#[test]
fn private_and_symmetric_keys_are_refused() {
    let oct = json!({"keys": [{"kty": "oct", "k": "c2VjcmV0"}]});
    assert!(parse_public_jwks(oct)
        .unwrap_err()
        .message
        .contains("symmetric"));
    let private = json!({"keys": [{"kty": "EC", "crv": "P-256", "x": "a", "y": "b", "d": "c"}]});
    assert!(parse_public_jwks(private)
        .unwrap_err()
        .message
        .contains("private"));
    assert!(parse_public_jwks(json!({"keys": []})).is_err());
}
