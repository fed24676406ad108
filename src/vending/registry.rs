//! The tenants the engine serves, kept in step with the store, and the adoption of tokens
//! stored by another replica or an earlier run.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::config::{SharedUrls, TenantConfig};
use super::core::Core;
use super::port::{StoreFault, StoredToken};
use super::slot::{Health, Slot};
use super::slot_map::Batch;
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

/// The settings of a stored row's tenant; a row that does not parse gives its tenant as
/// failing with the reason. `None` for a row whose id does not parse (it cannot be asked
/// for: it is only logged).
fn config_of_row(core: &Core, row: TenantRow, urls: &mut SharedUrls) -> Option<TenantConfig> {
    match Tenant::try_from(row) {
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

/// Adds or updates the tenant of a stored row; a row that does not parse keeps its
/// tenant as failing with the reason. Returns the tenant's id, if it has a valid one.
pub fn upsert_row(core: &Core, row: TenantRow) -> Option<TenantId> {
    let config = config_of_row(core, row, &mut SharedUrls::default())?;
    let id = config.key.id.clone();
    install_config(core, config);
    Some(id)
}

/// Forgets a tenant and its token at once.
pub fn remove_tenant(core: &Core, id: &TenantId) {
    let _writing = core.writes.lock();
    let mut batch = core.slots.batch();
    if let Some(slot) = batch.remove(id) {
        forget(&slot);
    }
    batch.publish();
    core.metrics.forget_tenant(id.as_str());
}

/// Adds or updates the tenants of `rows` (a page of the store) in one batch. Their
/// secrets are opened before the write lock is taken: it is held only for the map.
pub fn apply_rows(core: &Core, rows: Vec<TenantRow>) {
    let mut urls = SharedUrls::default();
    let configs = rows
        .into_iter()
        .filter_map(|row| config_of_row(core, row, &mut urls))
        .collect();
    apply_configs(core, configs);
}

fn apply_configs(core: &Core, configs: Vec<TenantConfig>) {
    let _writing = core.writes.lock();
    let mut batch = core.slots.batch();
    for config in configs {
        apply_config(core, &mut batch, config);
    }
    batch.publish();
}

/// Forgets every tenant whose id is not in `present` (the whole store's ids).
pub fn retain_tenants(core: &Core, present: &HashSet<&str>) {
    let _writing = core.writes.lock();
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

/// Whether the tenant held under `id` has identity `uid` and was built from the row at
/// `version`: a reload then has nothing to read for it.
pub fn holds_version(core: &Core, id: &str, uid: &str, version: i64) -> bool {
    core.slots.get(id).is_some_and(|slot| {
        let config = slot.config.load();
        config.version == version && config.key.uid.to_string() == uid
    })
}

/// Serves exactly the tenants of `rows` (the whole store): adds and updates them,
/// forgets the others. A row that does not parse keeps its tenant, as failing with the
/// reason, and nothing is ever sent for it.
pub fn replace_tenants(core: &Core, rows: impl IntoIterator<Item = TenantRow>) {
    let mut urls = SharedUrls::default();
    let configs: Vec<TenantConfig> = rows
        .into_iter()
        .filter_map(|row| config_of_row(core, row, &mut urls))
        .collect();
    let ids: Vec<TenantId> = configs.iter().map(|c| c.key.id.clone()).collect();
    apply_configs(core, configs);
    retain_tenants(core, &ids.iter().map(TenantId::as_str).collect());
}

/// How many stored tokens are read and opened at a time.
const ADOPTION_PAGE: usize = 1000;

/// Serves every stored token that is newer than the one held (stored by another replica,
/// or by an earlier run), reading and opening them a page at a time (the next page is
/// read while one is adopted). Returns how many were adopted.
pub async fn adopt_stored_tokens(core: &Arc<Core>) -> Result<usize, StoreFault> {
    let read = |after: String| {
        let tokens = core.tokens.clone();
        tokio::spawn(async move { tokens.page(&after, ADOPTION_PAGE).await })
    };
    let mut adopted = 0;
    let mut next = Some(read(String::new()));
    while let Some(reading) = next.take() {
        let page = reading
            .await
            .map_err(|e| StoreFault::Other(format!("reading stored tokens failed: {e}")))??;
        if let (true, Some(last)) = (page.full, page.last) {
            next = Some(read(last));
        }
        for stored in page.tokens {
            adopted += usize::from(adopt(core, stored));
        }
    }
    Ok(adopted)
}

/// Serves the stored tokens that are newer than the held ones, reading only those: the
/// fleet's periodic reload, which must not open every token again.
pub async fn adopt_newer_stored_tokens(core: &Arc<Core>) -> Result<usize, StoreFault> {
    let now = core.now();
    let mut adopted = 0;
    for version in core.tokens.versions().await? {
        if version.expires_at <= now {
            continue;
        }
        let Some(slot) = core.slot(&version.tenant_id) else {
            continue;
        };
        let newer = slot.config.load().key.uid == version.tenant_uid
            && slot
                .token
                .load()
                .as_ref()
                .is_none_or(|held| held.fetched_at < version.fetched_at);
        if newer && adopt_stored_token(core, &version.tenant_id).await? {
            adopted += 1;
        }
    }
    Ok(adopted)
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
