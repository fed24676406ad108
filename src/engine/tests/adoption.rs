//! Stored tokens after a start-up (adopted in the background, or at once for a tenant
//! asked for first) and at the fleet's periodic reload (only the newer ones are read).

use std::sync::atomic::Ordering;

use super::*;

#[tokio::test]
async fn a_tenant_asked_for_before_the_adoption_takes_its_stored_token_without_edx() {
    let e = engine(FakeEdx::new(LIFETIME));
    let tenant = e.tenant("acme", "client-a");
    e.add(&tenant);
    let first = e.token(&tenant.id).await.unwrap();
    settle().await;
    assert!(e.store.saved(&tenant.id).is_some(), "stored");

    // As after a restart: the tenant is held without its token, which is still stored.
    let restart = |e: &Engine| {
        e.vendor.registry().remove_tenant(&tenant.id);
        e.vendor.registry().upsert_tenant(&tenant);
        assert_eq!(
            e.vendor.status_view().status(&tenant.id).unwrap().state,
            TokenState::Missing
        );
    };
    restart(&e);
    e.vendor.registry().expect_adoption();
    assert!(e.vendor.registry().adopting());
    let served = e.token(&tenant.id).await.unwrap();
    assert_eq!(served.fingerprint, first.fingerprint, "the stored token");
    assert_eq!(e.edx.calls(), 1, "no second edX call");

    // Once the background adoption has run, a tenant without a token asks edX again (the
    // store is not read on every miss).
    assert_eq!(
        e.vendor.registry().adopt_stored_tokens().await.unwrap(),
        0,
        "already held"
    );
    assert!(!e.vendor.registry().adopting());
    restart(&e);
    let fetched = e.token(&tenant.id).await.unwrap();
    assert_ne!(fetched.fingerprint, first.fingerprint);
    assert_eq!(e.edx.calls(), 2);
}

#[tokio::test]
async fn the_background_adoption_pages_through_every_stored_token() {
    let e = engine(FakeEdx::new(LIFETIME));
    let tenants: Vec<Tenant> = (0..2_500)
        .map(|n| e.tenant(&format!("t{n:05}"), "client"))
        .collect();
    e.add(&tenants[0]);
    let token = e.token(&tenants[0].id).await.unwrap();
    e.vendor.registry().remove_tenant(&tenants[0].id);
    // Stored by an earlier run: more than two pages of them.
    for tenant in &tenants {
        e.add(tenant);
        let key = e.store.tenants.lock()[&tenant.id].clone();
        let stored = HeldToken::clone(&token);
        e.store.rows.lock().insert(tenant.id.clone(), (key, stored));
    }
    e.vendor.registry().expect_adoption();
    assert_eq!(
        e.vendor.registry().adopt_stored_tokens().await.unwrap(),
        2_500
    );
    assert!(tenants
        .iter()
        .all(|t| e.vendor.status_view().status(&t.id).unwrap().state == TokenState::Valid));
    assert_eq!(e.edx.calls(), 1, "none asked again");
    assert_eq!(
        e.store.reads.load(Ordering::SeqCst),
        0,
        "read a page at a time"
    );
}

#[tokio::test]
async fn a_reload_reads_only_the_stored_tokens_newer_than_the_held_ones() {
    let e = engine(FakeEdx::new(LIFETIME));
    let tenants: Vec<Tenant> = ["a", "b", "c"]
        .into_iter()
        .map(|id| e.tenant(id, "client"))
        .collect();
    for tenant in &tenants {
        e.add(tenant);
        e.token(&tenant.id).await.unwrap();
    }
    settle().await;
    assert_eq!(
        e.vendor
            .registry()
            .adopt_newer_stored_tokens()
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        e.store.reads.load(Ordering::SeqCst),
        0,
        "nothing newer, nothing read"
    );

    // Another replica stored a newer token for `b`.
    let b = &tenants[1].id;
    let held = e.vendor.token(b, Duration::ZERO).await.unwrap();
    let (key, _) = e.store.saved(b).unwrap();
    e.clock.advance(Duration::from_secs(5));
    let mut newer = HeldToken::clone(&held);
    newer.fetched_at = e.clock.now();
    newer.fingerprint = "0123456789abcdef".to_owned();
    e.store.rows.lock().insert(b.clone(), (key, newer));
    assert_eq!(
        e.vendor
            .registry()
            .adopt_newer_stored_tokens()
            .await
            .unwrap(),
        1
    );
    assert_eq!(e.store.reads.load(Ordering::SeqCst), 1, "only b's was read");
    let status = e.vendor.status_view().status(b).unwrap();
    assert_eq!(status.fingerprint.as_deref(), Some("0123456789abcdef"));
}

#[tokio::test]
async fn a_reload_skips_tenants_held_at_their_row_version() {
    let e = engine(FakeEdx::new(LIFETIME));
    let mut tenant = e.tenant("acme", "client");
    e.add(&tenant);
    let uid = tenant.uid.to_string();
    assert!(e.vendor.registry().holds_version("acme", &uid, 1));
    assert!(
        !e.vendor.registry().holds_version("acme", &uid, 2),
        "a newer row"
    );
    assert!(
        !e.vendor
            .registry()
            .holds_version("acme", &TenantUid::generate().to_string(), 1),
        "another identity under the same id"
    );
    assert!(!e.vendor.registry().holds_version("other", &uid, 1));
    tenant.version = 2;
    e.vendor.registry().upsert_tenant(&tenant);
    assert!(e.vendor.registry().holds_version("acme", &uid, 2));
}
