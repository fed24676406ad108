//! Serving: one shared fetch per cold tenant, refresh ahead, the skew, `min_ttl`, the
//! cool-down after a failure, and forced refreshes.

use super::*;

#[tokio::test]
async fn concurrent_requests_on_a_cold_tenant_share_one_fetch() {
    let (edx, gate) = FakeEdx::gated(LIFETIME);
    let e = engine(edx);
    let acme = e.tenant("acme", "client-a");
    e.add(&acme);
    let waiters: Vec<_> = (0..50)
        .map(|_| {
            let vendor = e.vendor.clone();
            let id = acme.id.clone();
            tokio::spawn(async move { vendor.token(&id, Duration::ZERO).await })
        })
        .collect();
    settle().await;
    gate.add_permits(1);
    let mut tokens = Vec::new();
    for waiter in waiters {
        tokens.push(waiter.await.unwrap().expect("a token"));
    }
    assert_eq!(e.edx.calls(), 1, "one fetch for fifty callers");
    assert!(tokens.iter().all(|t| secret(t) == secret(&tokens[0])));
    settle().await;
    assert!(e.store.saved(&acme.id).is_some(), "the token is stored");
}

#[tokio::test]
async fn a_failure_cools_the_tenant_down_without_calling_edx_again() {
    let e = engine(FakeEdx::new(LIFETIME));
    let acme = e.tenant("acme", "client-a");
    e.add(&acme);
    e.edx.fail_next(rejected());
    for _ in 0..5 {
        let error = e.token(&acme.id).await.expect_err("rejected");
        let VendError::Upstream { retry_after, .. } = error else {
            panic!("an upstream error, got {error:?}");
        };
        assert!(retry_after.is_some_and(|after| after <= Duration::from_secs(30)));
    }
    assert_eq!(e.edx.calls(), 1, "no call during the cool-down");
    let status = e.vendor.status_view().status(&acme.id).unwrap();
    assert_eq!(status.state, TokenState::Failing);
    assert_eq!(status.last_error.unwrap().status, Some(401));

    e.clock.advance(Duration::from_secs(31));
    let token = e.token(&acme.id).await.expect("the cool-down is over");
    assert_eq!(e.edx.calls(), 2);
    assert_eq!(
        e.vendor.status_view().status(&acme.id).unwrap().state,
        TokenState::Valid
    );
    assert!(secret(&token).starts_with("client-a"));
}

#[tokio::test]
async fn a_token_in_its_refresh_window_is_served_at_once_and_refreshed_once() {
    let e = engine(FakeEdx::new(Duration::from_secs(100)));
    let acme = e.tenant("acme", "client-a");
    e.add(&acme);
    let first = e.token(&acme.id).await.unwrap();
    // A 100 s token is refreshed ahead in its last 30 s, and never served in its last 10.
    e.clock.advance(Duration::from_secs(75));
    for _ in 0..5 {
        let served = e.token(&acme.id).await.unwrap();
        assert_eq!(
            secret(&served),
            secret(&first),
            "served at once, not waited for"
        );
    }
    settle().await;
    assert_eq!(e.edx.calls(), 2, "exactly one refresh");
    let now_held = e.token(&acme.id).await.unwrap();
    assert_ne!(
        secret(&now_held),
        secret(&first),
        "the refreshed token is served next"
    );
    assert_eq!(e.edx.calls(), 2);
}

#[tokio::test]
async fn a_token_inside_the_skew_is_never_served() {
    let e = engine(FakeEdx::new(Duration::from_secs(100)));
    let acme = e.tenant("acme", "client-a");
    e.add(&acme);
    let first = e.token(&acme.id).await.unwrap();
    e.clock.advance(Duration::from_secs(95));
    let second = e.token(&acme.id).await.unwrap();
    assert_ne!(secret(&second), secret(&first));
    assert_eq!(e.edx.calls(), 2);
}

#[tokio::test]
async fn an_unmet_min_ttl_fetches_at_most_once_per_refresh_interval() {
    let e = engine(FakeEdx::new(Duration::from_secs(100)));
    let acme = e.tenant("acme", "client-a");
    e.add(&acme);
    let day = Duration::from_secs(86_400);
    let first = e.vendor.token(&acme.id, day).await.unwrap();
    assert_eq!(
        e.edx.calls(),
        1,
        "the best token there is, though short of min_ttl"
    );
    let again = e.vendor.token(&acme.id, day).await.unwrap();
    assert_eq!(secret(&again), secret(&first));
    assert_eq!(
        e.edx.calls(),
        1,
        "a token fetched moments ago is not fetched again"
    );
    e.clock
        .advance(VendingSettings::default().min_refresh_interval);
    e.vendor.token(&acme.id, day).await.unwrap();
    assert_eq!(e.edx.calls(), 2);
    // A min_ttl the held token meets needs no call at all.
    e.vendor
        .token(&acme.id, Duration::from_secs(50))
        .await
        .unwrap();
    assert_eq!(e.edx.calls(), 2);
}

#[tokio::test]
async fn a_forced_refresh_fetches_a_new_token_at_most_once_per_interval() {
    let e = engine(FakeEdx::new(LIFETIME));
    let acme = e.tenant("acme", "client-a");
    e.add(&acme);
    let first = e.token(&acme.id).await.unwrap();
    let interval = VendingSettings::default().min_refresh_interval;

    // Moments after the last fetch: refused, and edX is not asked.
    let refused = e
        .vendor
        .force_refresh(&acme.id, "test-caller")
        .await
        .expect_err("too soon");
    let VendError::TooSoon { retry_after } = refused else {
        panic!("too soon, got {refused:?}");
    };
    assert!(retry_after > Duration::ZERO && retry_after <= interval);
    assert_eq!(e.edx.calls(), 1);

    e.clock.advance(interval);
    let status = e
        .vendor
        .force_refresh(&acme.id, "test-caller")
        .await
        .unwrap();
    assert_eq!(e.edx.calls(), 2);
    assert_ne!(
        status.fingerprint.as_deref(),
        Some(first.fingerprint.as_str())
    );
    e.vendor
        .force_refresh(&acme.id, "test-caller")
        .await
        .expect_err("too soon again");
    assert_eq!(e.edx.calls(), 2);
}

#[tokio::test]
async fn a_forced_refresh_during_a_cool_down_is_refused_without_a_call() {
    let e = engine(FakeEdx::new(LIFETIME));
    let acme = e.tenant("acme", "client-a");
    e.add(&acme);
    let held = e.token(&acme.id).await.unwrap();
    e.clock
        .advance(VendingSettings::default().min_refresh_interval);
    for failure in [
        rejected(),
        UpstreamError::Throttled {
            status: 429,
            retry_after: Some(Duration::from_secs(60)),
        },
    ] {
        e.edx.fail_next(failure);
        e.vendor
            .force_refresh(&acme.id, "test-caller")
            .await
            .expect_err("edX refused");
        let calls = e.edx.calls();
        for _ in 0..3 {
            let refused = e
                .vendor
                .force_refresh(&acme.id, "test-caller")
                .await
                .expect_err("cooling");
            assert!(matches!(refused, VendError::TooSoon { .. }), "{refused:?}");
        }
        assert_eq!(e.edx.calls(), calls, "no call during the cool-down");
        let served = e
            .token(&acme.id)
            .await
            .expect("the held token is still served");
        assert_eq!(served.fingerprint, held.fingerprint);
        e.clock.advance(Duration::from_secs(600));
    }
}
