//! The key ring: authentication, revocation and the rate limits it applies.

use super::*;

fn ring() -> (KeyRing, SecretString) {
    let bootstrap = generate_bootstrap_key();
    (
        KeyRing::new(
            &bootstrap,
            RateLimitSettings::default(),
            crate::share::Sharing::alone(Arc::new(crate::clock::SystemClock)),
        ),
        bootstrap,
    )
}

#[test]
fn generated_keys_are_recognisable_and_unique() {
    let a = generate_key();
    let b = generate_key();
    assert!(a.key.expose_secret().starts_with("tv_"));
    assert_eq!(key_id_of(a.key.expose_secret()), Some(a.id.as_str()));
    assert_ne!(a.key.expose_secret(), b.key.expose_secret());
    assert!(a.key.expose_secret().len() >= 3 + ID_LEN + 1 + SECRET_LEN);
}

#[test]
fn a_known_key_authenticates_and_a_revoked_one_does_not() {
    let (ring, _) = ring();
    let key = generate_key();
    ring.insert(KeyEntry::new(
        key.id.clone(),
        ScopeSet::new([Scope::TenantsRead]),
        key.hash,
    ));
    let entry = ring
        .authenticate(key.key.expose_secret())
        .expect("valid key");
    assert_eq!(entry.id, key.id);
    ring.remove(&key.id);
    assert!(ring.authenticate(key.key.expose_secret()).is_none());
}

#[test]
fn a_key_with_a_known_id_but_wrong_secret_is_refused() {
    let (ring, _) = ring();
    let key = generate_key();
    ring.insert(KeyEntry::new(key.id.clone(), ScopeSet::default(), key.hash));
    let forged = format!("tv_{}_{}", key.id, "x".repeat(SECRET_LEN));
    assert!(ring.authenticate(&forged).is_none());
}

#[test]
fn a_limited_key_is_refused_over_its_rate_and_a_reload_keeps_its_bucket() {
    let (ring, bootstrap) = ring();
    let key = generate_key();
    let record = ApiKeyRecord {
        id: key.id.clone(),
        name: "limited".into(),
        scopes: "tenants:read".into(),
        key_hash: key.hash.to_vec(),
        created_at: chrono::Utc::now(),
        rate_limit: Some(1),
    };
    ring.replace_all(std::slice::from_ref(&record));
    let presented = key.key.expose_secret();
    assert!(ring.admit(presented, None).is_ok());
    assert!(matches!(
        ring.admit(presented, None),
        Err(Refusal::OverRate(_))
    ));
    ring.replace_all(std::slice::from_ref(&record));
    assert!(
        matches!(ring.admit(presented, None), Err(Refusal::OverRate(_))),
        "a reload does not refill the bucket"
    );
    for _ in 0..10 {
        assert!(
            ring.admit(bootstrap.expose_secret(), None).is_ok(),
            "unlimited by default"
        );
    }
}

#[test]
fn failures_count_per_address_only_when_the_address_is_known() {
    let limits = RateLimitSettings {
        key_rate: None,
        auth_failures: NonZeroU32::new(2),
    };
    let bootstrap = generate_bootstrap_key();
    let ring = KeyRing::new(
        &bootstrap,
        limits,
        crate::share::Sharing::alone(Arc::new(crate::clock::SystemClock)),
    );
    let client: IpAddr = "192.0.2.7".parse().expect("ip");
    assert_eq!(
        ring.admit("wrong", Some(client)).err(),
        Some(Refusal::Unknown)
    );
    assert_eq!(
        ring.admit("wrong", Some(client)).err(),
        Some(Refusal::Unknown)
    );
    assert!(matches!(
        ring.admit("wrong", Some(client)),
        Err(Refusal::TooManyFailures(_))
    ));
    assert_eq!(ring.admit("wrong", None).err(), Some(Refusal::Unknown));
    assert!(
        ring.admit(bootstrap.expose_secret(), Some(client)).is_ok(),
        "a valid key from the address still works"
    );
}

#[test]
fn the_bootstrap_key_is_admin_whatever_its_form() {
    let custom = SecretString::from("an-operator-chosen-admin-key-of-40-chars!".to_owned());
    let ring = KeyRing::new(
        &custom,
        RateLimitSettings::default(),
        crate::share::Sharing::alone(Arc::new(crate::clock::SystemClock)),
    );
    let entry = ring
        .authenticate(custom.expose_secret())
        .expect("bootstrap");
    assert_eq!(entry.id, BOOTSTRAP_KEY_ID);
    assert!(entry.scopes.allows(&Scope::Admin));
    assert!(ring
        .authenticate("an-operator-chosen-admin-key-of-40-chars?")
        .is_none());
    assert!(ring.authenticate("").is_none());
}
