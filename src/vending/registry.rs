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
    if let Some(slot) = slots.get(&config.key.id) {
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
    let mut map = SlotMap::clone(&slots);
    if let Some(old) = map.insert(Arc::new(Slot::new(config, core.now()))) {
        forget(&old);
    }
    core.slots.store(Arc::new(map));
}

/// Adds or updates the tenant of a stored row; a row that does not parse keeps its
/// tenant as failing with the reason. Returns the tenant's id, if it has a valid one
/// (a row whose id does not parse cannot be asked for: it is only logged).
pub fn upsert_row(core: &Core, row: TenantRow) -> Option<TenantId> {
    match Tenant::try_from(row) {
        Ok(tenant) => {
            upsert_tenant(core, &tenant);
            Some(tenant.id)
        }
        Err(invalid) => match TenantId::parse(&invalid.id) {
            Ok(id) => {
                install_config(core, TenantConfig::invalid(id.clone(), &invalid));
                Some(id)
            }
            Err(_) => {
                tracing::error!(error = %invalid, "ignoring a stored tenant");
                None
            }
        },
    }
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
/// updates them, forgets the others. A row that does not parse keeps its tenant, as
/// failing with the reason, and nothing is ever sent for it.
pub fn replace_tenants(core: &Core, rows: impl IntoIterator<Item = TenantRow>) {
    let mut keep = HashSet::new();
    for row in rows {
        keep.extend(upsert_row(core, row));
    }
    let gone: Vec<TenantId> = core
        .slots
        .load()
        .keys()
        .filter(|id| !keep.contains(*id))
        .cloned()
        .collect();
    for id in gone {
        remove_tenant(core, &id);
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
