//! The engine's rules, tested in memory with a manual clock and a scripted edX: no
//! database, no HTTP.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;

use super::memory::{FakeEdx, MemoryTokenStore};
use super::port::TenantKey;
use super::*;
use crate::clock::ManualClock;
use crate::crypto::{MasterKey, Purpose};
use crate::domain::{Tenant, TenantUid, TokenType};
use crate::outbound::upstream::UpstreamError;
use crate::store::TenantRow;

const LIFETIME: Duration = Duration::from_secs(3600);

struct Engine {
    vendor: Vendor,
    edx: Arc<FakeEdx>,
    store: Arc<MemoryTokenStore>,
    clock: Arc<ManualClock>,
    key: Arc<MasterKey>,
    /// The webhook events the engine raised.
    events: Events,
}

fn engine(edx: FakeEdx) -> Engine {
    let edx = Arc::new(edx);
    let store = Arc::new(MemoryTokenStore::default());
    let clock = Arc::new(ManualClock::starting_now());
    let key = Arc::new(MasterKey::generate().0);
    let metrics = Arc::new(Metrics::new());
    let settings = VendingSettings::default();
    let jwks_client = UpstreamClient::new(
        settings.upstream.clone(),
        UrlPolicy::PublicHttpsOnly,
        metrics.clone(),
    )
    .expect("http client");
    let events = Events::in_memory(clock.clone());
    let parts = VendorParts {
        master_key: key.clone(),
        clock: clock.clone(),
        settings,
        policy: UrlPolicy::PublicHttpsOnly,
        metrics,
        events: events.clone(),
        fleet: Arc::default(),
    };
    let vendor = Vendor::with_ports(parts, edx.clone(), store.clone(), jwks_client);
    Engine {
        vendor,
        edx,
        store,
        clock,
        key,
        events,
    }
}

impl Engine {
    fn tenant(&self, id: &str, client_id: &str) -> Tenant {
        let id = TenantId::parse(id).expect("tenant id");
        let now = Utc::now();
        Tenant {
            uid: TenantUid::generate(),
            secret: self
                .key
                .seal(Purpose::ClientSecret, id.as_str(), b"the-secret"),
            id,
            name: "Acme".to_owned(),
            client_id: client_id.to_owned(),
            token_url: Some(
                "https://edx.example.com/oauth2/access_token"
                    .parse()
                    .unwrap(),
            ),
            scope: None,
            token_type: TokenType::Jwt,
            asymmetric_jwt: false,
            jwks_url: None,
            api_base_url: None,
            previous_secret: None,
            version: 1,
            credentials_version: 1,
            created_at: now,
            updated_at: now,
        }
    }

    /// The tenant as both the store and the engine have it.
    fn add(&self, tenant: &Tenant) {
        self.store.tenants.lock().insert(
            tenant.id.clone(),
            TenantKey {
                id: tenant.id.clone(),
                uid: tenant.uid,
                credentials_version: tenant.credentials_version,
            },
        );
        self.vendor.upsert_tenant(tenant);
    }

    fn delete(&self, id: &TenantId) {
        self.store.tenants.lock().remove(id);
        self.store.rows.lock().remove(id);
        self.vendor.remove_tenant(id);
    }

    async fn token(&self, id: &TenantId) -> Result<Arc<HeldToken>, VendError> {
        self.vendor.token(id, Duration::ZERO).await
    }
}

fn secret(token: &HeldToken) -> &str {
    token.expose_token()
}

/// Lets spawned tasks (background refreshes, persistence) run to completion.
async fn settle() {
    for _ in 0..50 {
        tokio::task::yield_now().await;
    }
}

fn rejected() -> UpstreamError {
    UpstreamError::Rejected {
        status: 401,
        code: "invalid_client".to_owned(),
    }
}

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
    let status = e.vendor.status(&acme.id).unwrap();
    assert_eq!(status.state, TokenState::Failing);
    assert_eq!(status.last_error.unwrap().status, Some(401));

    e.clock.advance(Duration::from_secs(31));
    let token = e.token(&acme.id).await.expect("the cool-down is over");
    assert_eq!(e.edx.calls(), 2);
    assert_eq!(e.vendor.status(&acme.id).unwrap().state, TokenState::Valid);
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
    e.vendor.remove_tenant(&old.id);
    let new = e.tenant("acme", "client-b");
    e.vendor.upsert_tenant(&new);
    let adopted = e.vendor.adopt(StoredToken {
        tenant_id: old.id.clone(),
        tenant_uid: old.uid,
        token: Some(token.clone()),
    });
    assert!(!adopted);
    assert_eq!(e.vendor.status(&new.id).unwrap().state, TokenState::Missing);
    // The same token under the current identity is adopted.
    assert!(e.vendor.adopt(StoredToken {
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
    let status = e.vendor.status(&local.id).unwrap();
    assert_eq!(status.state, TokenState::Failing);
    assert!(status.last_error.unwrap().message.contains("https"));
    assert_eq!(e.edx.calls(), 0);
}

#[tokio::test]
async fn an_invalid_stored_row_shows_as_failing_and_is_never_sent_anywhere() {
    let e = engine(FakeEdx::new(LIFETIME));
    let good = e.tenant("good", "client-g");
    let sealed = e.key.seal(Purpose::ClientSecret, "bad", b"secret");
    let row = |id: &str, token_url: &str, secret: &crate::crypto::Sealed| TenantRow {
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
    };
    e.vendor.replace_tenants([
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
    let status = e.vendor.status(&TenantId::parse("bad").unwrap()).unwrap();
    assert_eq!(status.state, TokenState::Failing);
    assert!(status.last_error.unwrap().message.contains("token_url"));
    assert_eq!(e.edx.calls(), 0);
    e.token(&good.id).await.expect("the valid tenant is served");

    e.vendor.replace_tenants([]);
    assert!(
        e.vendor.status(&good.id).is_none(),
        "tenants gone from the store are forgotten"
    );
}

mod adoption;
mod events;
mod invalidation;
mod status;
mod store_faults;
