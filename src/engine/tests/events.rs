//! The `token.*` webhook events: raised on a tenant's transitions, never on every retry.

use super::*;
use crate::outbound::webhooks::EventType;

fn kinds(e: &Engine) -> Vec<&'static str> {
    e.events
        .raised()
        .iter()
        .map(|ev| ev.kind.as_str())
        .collect()
}

fn unavailable() -> UpstreamError {
    UpstreamError::Unavailable {
        status: Some(503),
        detail: "HTTP 503".to_owned(),
        retry_after: None,
    }
}

#[tokio::test]
async fn a_failing_spell_raises_one_refresh_failed_and_one_recovered() {
    let e = engine(FakeEdx::new(LIFETIME));
    let acme = e.tenant("acme", "client-a");
    e.add(&acme);
    e.token(&acme.id).await.expect("a token");
    assert!(kinds(&e).is_empty(), "a healthy fetch raises nothing");

    e.clock.advance(LIFETIME);
    for _ in 0..3 {
        e.edx.fail_next(unavailable());
        e.token(&acme.id).await.expect_err("edX is down");
        e.clock.advance(Duration::from_secs(120));
    }
    assert_eq!(e.edx.calls(), 4);
    assert_eq!(kinds(&e), ["token.refresh_failed"], "once, not per retry");
    let failed = &e.events.raised()[0];
    assert_eq!(failed.data["tenant_id"], "acme");
    assert_eq!(failed.data["error"]["status"], 503);

    e.token(&acme.id).await.expect("edX is back");
    assert_eq!(kinds(&e), ["token.refresh_failed", "token.recovered"]);
    e.clock.advance(LIFETIME);
    e.token(&acme.id).await.expect("another healthy fetch");
    assert_eq!(kinds(&e).len(), 2, "nothing while healthy");
}

#[tokio::test]
async fn rejected_credentials_raise_credentials_rejected_once() {
    let e = engine(FakeEdx::new(LIFETIME));
    let acme = e.tenant("acme", "client-a");
    e.add(&acme);
    for _ in 0..3 {
        e.edx.fail_next(rejected());
        e.token(&acme.id).await.expect_err("rejected");
        e.clock.advance(Duration::from_secs(700));
    }
    assert_eq!(e.edx.calls(), 3);
    assert_eq!(
        kinds(&e),
        ["token.refresh_failed", "token.credentials_rejected"]
    );
    let rejected = e
        .events
        .raised()
        .into_iter()
        .find(|ev| ev.kind == EventType::CredentialsRejected)
        .unwrap();
    assert_eq!(rejected.data["status"], 401);
    assert_eq!(rejected.data["error"], "invalid_client");
}

#[tokio::test]
async fn a_failing_tenant_whose_token_runs_out_raises_expired_once() {
    let e = engine(FakeEdx::new(LIFETIME));
    let acme = e.tenant("acme", "client-a");
    e.add(&acme);
    e.token(&acme.id).await.expect("a token");
    // Unused and expired: no event, its next caller simply fetches.
    e.clock.advance(LIFETIME);
    e.vendor.scheduler().run_due_refreshes();
    assert!(kinds(&e).is_empty(), "{:?}", kinds(&e));

    e.edx.fail_next(unavailable());
    e.token(&acme.id).await.expect_err("edX is down");
    for _ in 0..3 {
        e.vendor.scheduler().run_due_refreshes();
    }
    assert_eq!(kinds(&e), ["token.refresh_failed", "token.expired"]);
}

#[tokio::test]
async fn a_refused_new_secret_is_reported_once_while_the_previous_one_serves() {
    let e = engine(FakeEdx::new(LIFETIME));
    let mut acme = e.tenant("acme", "client-a");
    acme.previous_secret = Some(crate::domain::PreviousSecret {
        sealed: e
            .key
            .seal(Purpose::PreviousClientSecret, "acme", b"the-old-secret"),
        until: e.clock.now() + chrono::Duration::days(1),
    });
    e.add(&acme);
    for _ in 0..3 {
        e.edx.fail_next(rejected());
        e.token(&acme.id)
            .await
            .expect("served with the previous secret");
        let status = e.vendor.status_view().status(&acme.id).unwrap();
        assert_eq!(status.state, TokenState::Valid);
        let notice = status.last_error.expect("a notice");
        assert!(
            notice
                .message
                .starts_with("the new client secret was refused by edX (invalid_client)"),
            "{notice:?}"
        );
        e.clock.advance(LIFETIME);
    }
    assert_eq!(
        e.edx.calls(),
        6,
        "the new secret, then the previous one, on each fetch"
    );
    assert_eq!(
        kinds(&e),
        ["token.credentials_rejected"],
        "said once while the previous secret serves, not on every refresh"
    );
}
