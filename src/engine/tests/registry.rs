//! The registry: tenant changes, deletions and re-creations under the same id, and
//! tenants that cannot be asked a token for.

use super::*;

#[tokio::test]
async fn a_fetch_finishing_after_its_tenant_was_deleted_and_recreated_is_discarded() {
    let (edx, gate) = FakeEdx::gated(LIFETIME);
    let e = engine(edx);
    let old = e.tenant("acme", "client-a");
    e.add(&old);
    let in_flight = {
        let vendor = e.vendor.clone();
        let id = old.id.clone();
        tokio::spawn(async move { vendor.token(&id, Duration::ZERO).await })
    };
    settle().await;
    assert_eq!(e.edx.calls(), 1, "the first fetch is under way");

    e.delete(&old.id);
    let new = e.tenant("acme", "client-b");
    assert_ne!(new.uid, old.uid);
    e.add(&new);
    gate.add_permits(1);
    let outcome = in_flight.await.unwrap();
    assert!(
        matches!(outcome, Err(VendError::UnknownTenant)),
        "the deleted tenant's token is not handed out: {outcome:?}"
    );
    settle().await;
    assert!(
        e.store.saved(&new.id).is_none(),
        "the deleted tenant's token is not stored for its successor"
    );

    gate.add_permits(1);
    let token = e.token(&new.id).await.unwrap();
    assert!(
        secret(&token).starts_with("client-b-"),
        "the new tenant gets a token of its own client, got {}",
        secret(&token)
    );
    assert_eq!(*e.edx.clients.lock(), ["client-a", "client-b"]);
}

#[tokio::test]
async fn a_stored_token_of_another_identity_is_never_adopted() {
    let e = engine(FakeEdx::new(LIFETIME));
    let old = e.tenant("acme", "client-a");
    e.add(&old);
    e.token(&old.id).await.unwrap();
    settle().await;
    let (key, token) = e.store.saved(&old.id).expect("stored");
    assert_eq!(key.uid, old.uid);

    // Re-created under the same id; the old row is still in the store (another replica's
    // late write, or a row not yet deleted).
    e.vendor.registry().remove_tenant(&old.id);
    let new = e.tenant("acme", "client-b");
    e.vendor.registry().upsert_tenant(&new);
    let adopted = e.vendor.registry().adopt(StoredToken {
        tenant_id: old.id.clone(),
        tenant_uid: old.uid,
        token: Some(token.clone()),
    });
    assert!(!adopted);
    assert_eq!(
        e.vendor.status_view().status(&new.id).unwrap().state,
        TokenState::Missing
    );
    // The same token under the current identity is adopted.
    assert!(e.vendor.registry().adopt(StoredToken {
        tenant_id: new.id.clone(),
        tenant_uid: new.uid,
        token: Some(token),
    }));
}

#[tokio::test]
async fn a_credentials_change_drops_the_held_token_and_other_changes_keep_it() {
    let e = engine(FakeEdx::new(LIFETIME));
    let mut acme = e.tenant("acme", "client-a");
    e.add(&acme);
    let first = e.token(&acme.id).await.unwrap();
    acme.name = "Acme Corp".to_owned();
    acme.version = 2;
    e.add(&acme);
    assert_eq!(secret(&e.token(&acme.id).await.unwrap()), secret(&first));
    acme.client_id = "client-a2".to_owned();
    acme.credentials_version = 2;
    e.add(&acme);
    let second = e.token(&acme.id).await.unwrap();
    assert!(secret(&second).starts_with("client-a2-"));
    assert_eq!(e.edx.calls(), 2);
}

#[tokio::test]
async fn a_tenant_the_outbound_rules_refuse_now_fails_without_a_call() {
    let e = engine(FakeEdx::new(LIFETIME));
    let mut local = e.tenant("local", "client-l");
    // Stored while insecure URLs were allowed; they are not any more.
    local.token_url = Some("http://127.0.0.1:9/token".parse().unwrap());
    e.add(&local);
    let error = e.token(&local.id).await.expect_err("refused");
    assert!(matches!(error, VendError::Unusable(ref why) if why.contains("token_url")));
    let status = e.vendor.status_view().status(&local.id).unwrap();
    assert_eq!(status.state, TokenState::Failing);
    assert!(status.last_error.unwrap().message.contains("https"));
    assert_eq!(e.edx.calls(), 0);
}

#[tokio::test]
async fn an_invalid_stored_row_shows_as_failing_and_is_never_sent_anywhere() {
    let e = engine(FakeEdx::new(LIFETIME));
    let good = e.tenant("good", "client-g");
    let sealed = e.key.seal(Purpose::ClientSecret, "bad", b"secret");
    let row = |id: &str, token_url: &str, secret: &crate::crypto::Sealed| {
        Tenant::try_from(TenantRow {
            uid: TenantUid::generate().to_string(),
            id: id.to_owned(),
            name: id.to_owned(),
            client_id: format!("client-{id}"),
            secret_key_id: secret.key_id.clone(),
            secret_ciphertext: secret.bytes.clone(),
            token_url: Some(token_url.to_owned()),
            scope: None,
            token_type: "jwt".to_owned(),
            asymmetric_jwt: false,
            jwks_url: None,
            api_base_url: None,
            previous_secret_key_id: None,
            previous_secret_ciphertext: None,
            previous_secret_until: None,
            version: 1,
            credentials_version: 1,
            created_at: Utc::now(),
            updated_at: Utc::now(),
        })
    };
    e.vendor.registry().replace_tenants([
        row("bad", "not a url", &sealed),
        row(
            "good",
            good.token_url.as_ref().unwrap().as_str(),
            &good.secret,
        ),
    ]);
    let error = e
        .token(&TenantId::parse("bad").unwrap())
        .await
        .expect_err("unusable");
    assert!(matches!(error, VendError::Unusable(_)));
    let status = e
        .vendor
        .status_view()
        .status(&TenantId::parse("bad").unwrap())
        .unwrap();
    assert_eq!(status.state, TokenState::Failing);
    assert!(status.last_error.unwrap().message.contains("token_url"));
    assert_eq!(e.edx.calls(), 0);
    e.token(&good.id).await.expect("the valid tenant is served");

    e.vendor.registry().replace_tenants([]);
    assert!(
        e.vendor.status_view().status(&good.id).is_none(),
        "tenants gone from the store are forgotten"
    );
}
