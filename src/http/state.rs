//! The state every handler shares: cloned per request (by each extractor that takes it),
//! so it is one `Arc` around the handles.

use std::ops::Deref;
use std::sync::Arc;

use axum::extract::FromRef;

use crate::crypto::MasterKey;
use crate::engine::proxy::Proxy;
use crate::engine::Vendor;
use crate::http::auth::identity::IdentityRegistry;
use crate::http::auth::KeyRing;
use crate::outbound::webhooks::Events;
use crate::outbound::UrlPolicy;
use crate::services::{IdentityService, KeyService, TenantService, WebhookService};
use crate::store::Store;
use crate::telemetry::metrics::Metrics;

#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl AppState {
    pub fn new(shared: Shared) -> Self {
        Self(Arc::new(shared))
    }
}

impl Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

pub struct Shared {
    pub store: Store,
    pub keys: Arc<KeyRing>,
    /// Identity providers and mappings (workload identity callers).
    pub identities: Arc<IdentityRegistry>,
    pub master_key: Arc<MasterKey>,
    pub url_policy: UrlPolicy,
    pub vendor: Vendor,
    /// Raises webhook events (`Events::raise`).
    pub events: Events,
    pub proxy: Arc<Proxy>,
    /// Where the readiness check records whether the store answered.
    pub metrics: Arc<Metrics>,
}

/// What the caller-key extractors take from the state.
impl FromRef<AppState> for Arc<KeyRing> {
    fn from_ref(state: &AppState) -> Self {
        state.keys.clone()
    }
}

impl FromRef<AppState> for Arc<IdentityRegistry> {
    fn from_ref(state: &AppState) -> Self {
        state.identities.clone()
    }
}

/// The services, each built from the handles it needs (not the whole state).
impl FromRef<AppState> for TenantService {
    fn from_ref(state: &AppState) -> Self {
        Self {
            store: state.store.clone(),
            master_key: state.master_key.clone(),
            url_policy: state.url_policy,
            vendor: state.vendor.clone(),
            events: state.events.clone(),
        }
    }
}

impl FromRef<AppState> for KeyService {
    fn from_ref(state: &AppState) -> Self {
        Self {
            store: state.store.clone(),
            keys: state.keys.clone(),
        }
    }
}

impl FromRef<AppState> for WebhookService {
    fn from_ref(state: &AppState) -> Self {
        Self {
            store: state.store.clone(),
            master_key: state.master_key.clone(),
            url_policy: state.url_policy,
        }
    }
}

impl FromRef<AppState> for IdentityService {
    fn from_ref(state: &AppState) -> Self {
        Self {
            store: state.store.clone(),
            url_policy: state.url_policy,
            directory: state.identities.clone(),
        }
    }
}
