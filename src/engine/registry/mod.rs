//! The tenants the engine serves, kept in step with the store (`Registry`: start-up, the
//! tenant writes and the fleet's reloads), and the adoption of tokens stored by another
//! replica or an earlier run (`adoption.rs`).

mod adoption;
mod state;

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::config::{SharedUrls, TenantConfig};
use super::core::Core;
use super::invalidate;
use super::port::{StoreFault, StoredToken};
use super::slot::{Health, Slot};
use super::slot_map::Batch;
use crate::domain::{Tenant, TenantId, TenantUid};
use crate::store::InvalidTenantRow;

pub use adoption::adopt_stored_token;
pub use state::RegistryState;

/// A tenant as read back from the store: parsed (`Tenant::try_from(row)`), or why it does
/// not parse. The registry keeps an unparseable tenant as failing with the reason, and
/// nothing is ever sent for it.
pub type StoredTenant = Result<Tenant, InvalidTenantRow>;

/// The engine's tenants, for start-up, the tenant writes and the fleet
/// (`Vendor::registry`): which tenants are served, with what settings, and which stored
/// tokens they take over.
#[derive(Clone, Copy)]
pub struct Registry<'a> {
    core: &'a Arc<Core>,
}

impl<'a> Registry<'a> {
    pub(super) fn new(core: &'a Arc<Core>) -> Self {
        Self { core }
    }

    /// Adds a tenant or applies a change to it (see `upsert_tenant`).
    pub fn upsert_tenant(&self, tenant: &Tenant) {
        upsert_tenant(self.core, tenant);
    }

    /// Adds or updates a tenant read back from the store, valid or not; returns its id
    /// (`None` when even that does not parse).
    pub fn upsert_stored(&self, tenant: StoredTenant) -> Option<TenantId> {
        let config = config_of_stored(self.core, tenant, &mut SharedUrls::default())?;
        let id = config.key.id.clone();
        install_config(self.core, config);
        Some(id)
    }

    /// Adds or updates the tenants of a page of the store at once. Their secrets are
    /// opened before the write lock is taken: it is held only for the map.
    pub fn apply_stored(&self, tenants: impl IntoIterator<Item = StoredTenant>) {
        let mut urls = SharedUrls::default();
        let configs = tenants
            .into_iter()
            .filter_map(|tenant| config_of_stored(self.core, tenant, &mut urls))
            .collect();
        apply_configs(self.core, configs);
    }

    /// Serves exactly `tenants` (the whole store): adds and updates them, forgets the
    /// others.
    pub fn replace_tenants(&self, tenants: impl IntoIterator<Item = StoredTenant>) {
        let mut urls = SharedUrls::default();
        let configs: Vec<TenantConfig> = tenants
            .into_iter()
            .filter_map(|tenant| config_of_stored(self.core, tenant, &mut urls))
            .collect();
        let ids: Vec<TenantId> = configs.iter().map(|c| c.key.id.clone()).collect();
        apply_configs(self.core, configs);
        self.retain_tenants(&ids.iter().map(TenantId::as_str).collect());
    }

    /// Forgets a tenant and its token at once.
    pub fn remove_tenant(&self, id: &TenantId) {
        let _writing = self.core.registry.writes.lock();
        let mut batch = self.core.slots.batch();
        if let Some(slot) = batch.remove(id) {
            forget(&slot);
        }
        batch.publish();
        self.core.metrics.forget_tenant(id.as_str());
    }

    /// Forgets every tenant whose id is not in `present` (the whole store's ids).
    pub fn retain_tenants(&self, present: &HashSet<&str>) {
        let core = self.core;
        let _writing = core.registry.writes.lock();
        let gone: Vec<TenantId> = core
            .slots
            .ordered()
            .keys()
            .filter(|id| !present.contains(id.as_str()))
            .cloned()
            .collect();
        let mut batch = core.slots.batch();
        for id in &gone {
            if let Some(slot) = batch.remove(id) {
                forget(&slot);
            }
        }
        batch.publish();
        for id in &gone {
            core.metrics.forget_tenant(id.as_str());
        }
    }

    /// Whether the tenant held under `id` has identity `uid` and was built from the row
    /// at `version`: a reload then has nothing to read for it.
    pub fn holds_version(&self, id: &str, uid: &str, version: i64) -> bool {
        self.core.slots.get(id).is_some_and(|slot| {
            let config = slot.config.load();
            config.version == version && config.key.uid.to_string() == uid
        })
    }

    /// The identity of the tenant that holds `id` now, if any.
    pub fn uid_of(&self, id: &TenantId) -> Option<TenantUid> {
        Some(self.core.slot(id)?.config.load().key.uid)
    }

    /// Another replica invalidated that token: dropped here too if held (`invalidate.rs`).
    pub fn fleet_invalidated(&self, id: &TenantId, uid: TenantUid, fingerprint: &str) -> bool {
        self.core
            .slot(id)
            .is_some_and(|slot| invalidate::fleet_invalidated(&slot, uid, fingerprint))
    }

    /// Marks the stored tokens as not adopted yet (start-up): until `adopt_stored_tokens`
    /// has run, a request for a tenant without a token first takes its stored one.
    pub fn expect_adoption(&self) {
        self.core.registry.adopting.store(true, Ordering::Release);
    }

    /// Whether stored tokens are still being adopted (see `expect_adoption`).
    pub fn adopting(&self) -> bool {
        self.core.registry.adopting()
    }

    /// Serves every stored token newer than the one held (another replica's, or an
    /// earlier run's), a page at a time; returns how many.
    pub async fn adopt_stored_tokens(&self) -> Result<usize, StoreFault> {
        let adopted = adoption::adopt_stored_tokens(self.core).await?;
        self.core.registry.adopting.store(false, Ordering::Release);
        Ok(adopted)
    }

    /// Serves the stored tokens newer than the held ones, reading only those (the
    /// periodic reload); returns how many.
    pub async fn adopt_newer_stored_tokens(&self) -> Result<usize, StoreFault> {
        adoption::adopt_newer_stored_tokens(self.core).await
    }

    /// Serves the tenant's stored token if it is its own and newer than the one held.
    pub async fn adopt_stored_token(&self, id: &TenantId) -> Result<bool, StoreFault> {
        adoption::adopt_stored_token(self.core, id).await
    }

    /// Serves a stored token if it belongs to the tenant held under its id (the same
    /// identity), is servable and is newer than the one held.
    pub fn adopt(&self, stored: StoredToken) -> bool {
        adoption::adopt(self.core, stored)
    }
}

/// Adds a tenant or applies a change to it. A change of credentials, URL, scope or
/// token type drops its token at once; other changes keep it. A tenant with another
/// identity than the one held (deleted and re-created under the same id) replaces it
/// whole: nothing of its predecessor is kept.
fn upsert_tenant(core: &Core, tenant: &Tenant) {
    let config = TenantConfig::new(tenant, &core.master_key, core.policy);
    install_config(core, config);
}

fn install_config(core: &Core, config: TenantConfig) {
    let _writing = core.registry.writes.lock();
    let mut batch = core.slots.batch();
    apply_config(core, &mut batch, config);
    batch.publish();
}

/// Applies `config` to the tenant's slot: in place when it holds the same identity, else
/// as a new slot in `batch`.
fn apply_config(core: &Core, batch: &mut Batch<'_>, config: TenantConfig) {
    if let Some(slot) = batch.get(config.key.id.as_str()) {
        let old = slot.config.load();
        if old.key.uid == config.key.uid {
            if old.key.credentials_version == config.key.credentials_version
                && old.upstream.is_ok() == config.upstream.is_ok()
            {
                slot.config.store(Arc::new(config));
            } else {
                let mut inflight = slot.inflight.lock();
                slot.epoch.fetch_add(1, Ordering::SeqCst);
                slot.token.store(None);
                *slot.health.lock() = Health::for_config(&config, core.now());
                slot.config.store(Arc::new(config));
                *inflight = None;
            }
            return;
        }
    }
    if let Some(old) = batch.insert(Arc::new(Slot::new(config, core.now()))) {
        forget(&old);
    }
}

/// The settings of a stored tenant; one that does not parse gives its tenant as failing
/// with the reason. `None` when its id does not parse (it cannot be asked for: it is only
/// logged).
fn config_of_stored(
    core: &Core,
    tenant: StoredTenant,
    urls: &mut SharedUrls,
) -> Option<TenantConfig> {
    match tenant {
        Ok(tenant) => Some(TenantConfig::sharing(
            &tenant,
            &core.master_key,
            core.policy,
            urls,
        )),
        Err(invalid) => match TenantId::parse(&invalid.id) {
            Ok(id) => Some(TenantConfig::invalid(id, &invalid)),
            Err(_) => {
                tracing::error!(error = %invalid, "ignoring a stored tenant");
                None
            }
        },
    }
}

fn apply_configs(core: &Core, configs: Vec<TenantConfig>) {
    let _writing = core.registry.writes.lock();
    let mut batch = core.slots.batch();
    for config in configs {
        apply_config(core, &mut batch, config);
    }
    batch.publish();
}

/// Drops what a slot that is no longer served holds.
fn forget(slot: &Slot) {
    let mut inflight = slot.inflight.lock();
    slot.epoch.fetch_add(1, Ordering::SeqCst);
    slot.token.store(None);
    *slot.health.lock() = Health::default();
    *inflight = None;
}
