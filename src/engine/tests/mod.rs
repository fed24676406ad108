//! The engine's rules, tested in memory with a manual clock and a scripted edX: no
//! database, no HTTP.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;

use super::memory::{FakeEdx, MemoryEvents, MemoryTokenStore};
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
    events: Arc<MemoryEvents>,
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
    let events = Arc::new(MemoryEvents::default());
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
        self.vendor.registry().upsert_tenant(tenant);
    }

    fn delete(&self, id: &TenantId) {
        self.store.tenants.lock().remove(id);
        self.store.rows.lock().remove(id);
        self.vendor.registry().remove_tenant(id);
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

mod adoption;
mod events;
mod invalidation;
mod registry;
mod serving;
mod status;
mod store_faults;
