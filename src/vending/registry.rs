//! The tenants the engine serves, kept in step with the store, and the adoption of tokens
//! stored by another replica or an earlier run.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::config::TenantConfig;
use super::core::{Core, SlotMap};
use super::port::{StoreFault, StoredToken};
use super::slot::{Health, Slot};
use crate::domain::{Tenant, TenantId};
use crate::store::TenantRow;

/// Adds a tenant or applies a change to it. A change of credentials, URL, scope or
/// token type drops its token at once; other changes keep it. A tenant with another
/// identity than the one held (deleted and re-created under the same id) replaces it
/// whole: nothing of its predecessor is kept.
pub fn upsert_tenant(core: &Core, tenant: &Tenant) {
    let config = TenantConfig::new(tenant, &core.master_key, core.policy);
    install_config(core, config);
}

fn install_config(core: &Core, config: TenantConfig) {
    let _writing = core.writes.lock();
    let slots = core.slots.load();
    let mut changed = None;
    apply_config(core, &slots, &mut changed, config);
    if let Some(map) = changed {
        core.slots.store(Arc::new(map));
    }
}

/// Applies `config` to the tenant's slot: in place when it holds the same identity,
/// else as a new slot in `changed`, a copy of `slots` made at the first such need (so
/// that a batch of changes copies the map once, not once per tenant).
fn apply_config(core: &Core, slots: &SlotMap, changed: &mut Option<SlotMap>, config: TenantConfig) {
    let current = changed.as_ref().unwrap_or(slots);
    if let Some(slot) = current.get(&config.key.id) {
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
    let map = changed.get_or_insert_with(|| SlotMap::clone(slots));
    if let Some(old) = map.insert(Arc::new(Slot::new(config, core.now()))) {
        forget(&old);
    }
}

/// The settings of a stored row's tenant; a row that does not parse gives its tenant as
/// failing with the reason. `None` for a row whose id does not parse (it cannot be asked
/// for: it is only logged).
fn config_of_row(core: &Core, row: TenantRow) -> Option<TenantConfig> {
    match Tenant::try_from(row) {
        Ok(tenant) => Some(TenantConfig::new(&tenant, &core.master_key, core.policy)),
        Err(invalid) => match TenantId::parse(&invalid.id) {
            Ok(id) => Some(TenantConfig::invalid(id, &invalid)),
            Err(_) => {
                tracing::error!(error = %invalid, "ignoring a stored tenant");
                None
            }
        },
    }
}

/// Adds or updates the tenant of a stored row; a row that does not parse keeps its
/// tenant as failing with the reason. Returns the tenant's id, if it has a valid one.
pub fn upsert_row(core: &Core, row: TenantRow) -> Option<TenantId> {
    let config = config_of_row(core, row)?;
    let id = config.key.id.clone();
    install_config(core, config);
    Some(id)
}

/// Forgets a tenant and its token at once.
pub fn remove_tenant(core: &Core, id: &TenantId) {
    let _writing = core.writes.lock();
    let slots = core.slots.load();
    if slots.contains_key(id) {
        let mut map = SlotMap::clone(&slots);
        if let Some(slot) = map.remove(id) {
            forget(&slot);
        }
        core.slots.store(Arc::new(map));
    }
}

/// Serves exactly the tenants of `rows` (the whole store, read page by page): adds and
/// updates them, forgets the others, and publishes the new map once. A row that does not
/// parse keeps its tenant, as failing with the reason, and nothing is ever sent for it.
pub fn replace_tenants(core: &Core, rows: impl IntoIterator<Item = TenantRow>) {
    // Secrets are opened before the write lock is taken: it is held only for the map.
    let configs: Vec<TenantConfig> = rows
        .into_iter()
        .filter_map(|row| config_of_row(core, row))
        .collect();
    let keep: HashSet<TenantId> = configs.iter().map(|c| c.key.id.clone()).collect();
    let _writing = core.writes.lock();
    let slots = core.slots.load();
    let mut changed = None;
    for config in configs {
        apply_config(core, &slots, &mut changed, config);
    }
    let gone: Vec<TenantId> = changed
        .as_ref()
        .unwrap_or(&slots)
        .keys()
        .filter(|id| !keep.contains(*id))
        .cloned()
        .collect();
    if !gone.is_empty() {
        let map = changed.get_or_insert_with(|| SlotMap::clone(&slots));
        for id in &gone {
            if let Some(slot) = map.remove(id) {
                forget(&slot);
            }
        }
    }
    if let Some(map) = changed {
        core.slots.store(Arc::new(map));
    }
}

/// Serves every stored token that is newer than the one held (stored by another
/// replica, or by an earlier run).
pub async fn adopt_stored_tokens(core: &Arc<Core>) -> Result<(), StoreFault> {
    for stored in core.tokens.all().await? {
        adopt(core, stored);
    }
    Ok(())
}

/// Serves the tenant's stored token if it is newer than the one held.
pub async fn adopt_stored_token(core: &Arc<Core>, id: &TenantId) -> Result<bool, StoreFault> {
    Ok(match core.tokens.stored(id).await? {
        Some(stored) => adopt(core, stored),
        None => false,
    })
}

/// Serves a stored token from now on if it belongs to the tenant held under its id
/// (the same identity), is servable, and is newer than the one held. Returns whether
/// it was adopted.
pub fn adopt(core: &Arc<Core>, stored: StoredToken) -> bool {
    let Some(slot) = core.slot(&stored.tenant_id) else {
        return false;
    };
    if slot.config.load().key.uid != stored.tenant_uid {
        tracing::debug!(tenant = %slot.id, "ignoring a stored token of another tenant identity");
        return false;
    }
    let Some(token) = stored.token else {
        tracing::warn!(tenant = %slot.id, "ignoring an unreadable stored token");
        return false;
    };
    if !token.servable(core.now()) {
        return false;
    }
    let token = Arc::new(token);
    {
        // Under the flight lock, as a fetch's own result is installed.
        let _inflight = slot.inflight.lock();
        let held = slot.token.load();
        if held.as_ref().is_some_and(|held| {
            held.fingerprint == token.fingerprint || held.fetched_at > token.fetched_at
        }) {
            return false;
        }
        if !slot.install(token.clone()) {
            return false;
        }
    }
    tracing::debug!(tenant = %slot.id, fingerprint = %token.fingerprint, "serving a stored token");
    core.verify_in_background(&slot, token);
    true
}

/// Drops what a slot that is no longer served holds.
fn forget(slot: &Slot) {
    let mut inflight = slot.inflight.lock();
    slot.epoch.fetch_add(1, Ordering::SeqCst);
    slot.token.store(None);
    *slot.health.lock() = Health::default();
    *inflight = None;
}
