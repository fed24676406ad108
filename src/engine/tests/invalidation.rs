//! Invalidation: a token edX refused is dropped only while it is held, no more often than
//! caller-triggered fetches may happen, and never comes back.

use std::sync::Arc;
use std::time::Duration;

use super::{engine, settle, LIFETIME};
use crate::engine::memory::FakeEdx;
use crate::engine::{Invalidation, StoredToken, TokenState, VendError, VendingSettings};

#[tokio::test]
async fn an_invalidation_drops_only_the_token_it_names_and_never_brings_it_back() {
    let e = engine(FakeEdx::new(LIFETIME));
    let acme = e.tenant("acme", "client-a");
    e.add(&acme);
    let first = e.token(&acme.id).await.unwrap();
    settle().await;
    let (_, stored_copy) = e.store.saved(&acme.id).expect("stored");
    e.clock
        .advance(VendingSettings::default().min_refresh_interval);

    assert_eq!(
        e.vendor
            .invalidate(&acme.id, "0123456789abcdef", "test-caller")
            .unwrap(),
        Invalidation::FingerprintMismatch,
        "another token's fingerprint drops nothing"
    );
    assert_eq!(
        e.vendor
            .invalidate(&acme.id, &first.fingerprint, "test-caller")
            .unwrap(),
        Invalidation::Dropped
    );
    assert_eq!(e.edx.calls(), 1, "dropping asks edX for nothing");
    assert_eq!(
        e.vendor.status_view().status(&acme.id).unwrap().state,
        TokenState::Missing
    );
    assert!(
        !e.vendor.registry().adopt(StoredToken {
            tenant_id: acme.id.clone(),
            tenant_uid: acme.uid,
            token: Some(stored_copy),
        }),
        "the stored copy of a dropped token is not served again"
    );

    let second = e.token(&acme.id).await.unwrap();
    assert_ne!(second.fingerprint, first.fingerprint);
    assert_eq!(e.edx.calls(), 2);
    e.clock
        .advance(VendingSettings::default().min_refresh_interval);
    assert_eq!(
        e.vendor
            .invalidate(&acme.id, &first.fingerprint, "test-caller")
            .unwrap(),
        Invalidation::FingerprintMismatch,
        "a late report about the old token keeps the new one"
    );
    assert_eq!(
        e.token(&acme.id).await.unwrap().fingerprint,
        second.fingerprint
    );
    assert_eq!(e.edx.calls(), 2);
}

#[tokio::test]
async fn an_invalidation_within_the_refresh_interval_is_refused() {
    let e = engine(FakeEdx::new(LIFETIME));
    let acme = e.tenant("acme", "client-a");
    e.add(&acme);
    let held = e.token(&acme.id).await.unwrap();
    let refused = e
        .vendor
        .invalidate(&acme.id, &held.fingerprint, "test-caller")
        .expect_err("too soon");
    let VendError::TooSoon { retry_after } = refused else {
        panic!("too soon, got {refused:?}");
    };
    assert!(retry_after > Duration::ZERO);
    assert_eq!(
        e.token(&acme.id).await.unwrap().fingerprint,
        held.fingerprint,
        "kept"
    );
    assert!(
        e.vendor
            .replace_refused(&acme.id, &held, "test-caller")
            .await
            .is_none(),
        "no replacement either"
    );
    assert_eq!(e.edx.calls(), 1);
}

#[tokio::test]
async fn concurrent_callers_refused_with_one_token_share_one_replacement() {
    let e = engine(FakeEdx::new(LIFETIME));
    let acme = e.tenant("acme", "client-a");
    e.add(&acme);
    let refused = e.token(&acme.id).await.unwrap();
    e.clock
        .advance(VendingSettings::default().min_refresh_interval);
    let callers: Vec<_> = (0..20)
        .map(|_| {
            let vendor = e.vendor.clone();
            let id = acme.id.clone();
            let refused = Arc::clone(&refused);
            tokio::spawn(async move { vendor.replace_refused(&id, &refused, "test-caller").await })
        })
        .collect();
    let mut fingerprints = Vec::new();
    for caller in callers {
        let fresh = caller.await.unwrap().expect("a replacement");
        fingerprints.push(fresh.fingerprint.clone());
    }
    fingerprints.dedup();
    assert_eq!(fingerprints.len(), 1, "one new token for all");
    assert_ne!(fingerprints[0], refused.fingerprint);
    assert_eq!(e.edx.calls(), 2, "one fetch");
}

#[tokio::test]
async fn another_replicas_invalidation_drops_only_that_token_and_it_never_comes_back() {
    let e = engine(FakeEdx::new(LIFETIME));
    let acme = e.tenant("acme", "client-a");
    e.add(&acme);
    let first = e.token(&acme.id).await.unwrap();
    settle().await;
    let (_, stored_copy) = e.store.saved(&acme.id).expect("stored");

    let other = crate::domain::TenantUid::parse(&uuid::Uuid::new_v4().to_string()).unwrap();
    assert!(
        !e.vendor
            .registry()
            .fleet_invalidated(&acme.id, other, &first.fingerprint),
        "another tenant identity's invalidation drops nothing"
    );
    assert!(
        !e.vendor
            .registry()
            .fleet_invalidated(&acme.id, acme.uid, "0123456789abcdef"),
        "another token's invalidation drops nothing"
    );
    assert_eq!(
        e.vendor.status_view().status(&acme.id).unwrap().state,
        TokenState::Valid
    );
    // No interval rule here: the replica that accepted the report applied it.
    assert!(e
        .vendor
        .registry()
        .fleet_invalidated(&acme.id, acme.uid, &first.fingerprint));
    assert_eq!(
        e.vendor.status_view().status(&acme.id).unwrap().state,
        TokenState::Missing
    );
    assert!(
        !e.vendor.registry().adopt(StoredToken {
            tenant_id: acme.id.clone(),
            tenant_uid: acme.uid,
            token: Some(stored_copy),
        }),
        "a stored copy of it is not served again"
    );

    let second = e.token(&acme.id).await.unwrap();
    assert_ne!(second.fingerprint, first.fingerprint);
    assert!(
        !e.vendor
            .registry()
            .fleet_invalidated(&acme.id, acme.uid, &first.fingerprint),
        "the same invalidation read again keeps the newer token"
    );
    let held = e.token(&acme.id).await.unwrap();
    assert_eq!(held.fingerprint, second.fingerprint);
    assert_eq!(e.edx.calls(), 2);
}
