//! Replicas on one PostgreSQL database: each applies the others' tenant, caller-key and
//! token changes as the database announces them, and reloads periodically (reading only
//! the rows that changed) so that a missed announcement heals by itself. Also the
//! start-up load: tenants first, stored tokens adopted in the background. Invalidated
//! tokens are dropped fleet-wide: on their announcement, and from the recent
//! invalidations read every second, so that a lost announcement delays it that long at
//! most. (Refreshes are coordinated by per-tenant locks: see `engine/obtain.rs`; the
//! fleet-wide limits by the heartbeat, `heartbeat.rs`.)

pub mod heartbeat;

use std::future::Future;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Deserialize;

use crate::domain::{Tenant, TenantId, TenantUid};
use crate::engine::Vendor;
use crate::http::state::AppState;
use crate::store::{InvalidationRecord, Store, TenantVersion};

/// How often everything is reloaded, announcements or not.
pub const FULL_RELOAD_INTERVAL: Duration = Duration::from_secs(30);

/// An announcement: `{"table", "id", "uid"}` (the uid of the tenant row, or of the tenant a
/// token row belongs to; the engine checks identities itself on what it reads back).
#[derive(Deserialize)]
struct Change {
    table: String,
    id: String,
}

/// Follows the store's change announcements until `stop` resolves (returns at once on
/// SQLite). `early` is a listener made before the start-up load, if one could be.
pub async fn follow_changes(
    state: AppState,
    early: Option<sqlx::postgres::PgListener>,
    stop: impl Future<Output = ()>,
) {
    tokio::pin!(stop);
    let listened_before_the_load = early.is_some();
    let mut early = early;
    let mut listener = loop {
        if let Some(listener) = early.take() {
            break listener;
        }
        match state.store.change_listener().await {
            Ok(Some(listener)) => break listener,
            Ok(None) => return,
            Err(error) => {
                tracing::warn!(%error, "cannot listen for changes; retrying");
                tokio::select! {
                    () = tokio::time::sleep(RETRY_INTERVAL) => continue,
                    () = &mut stop => return,
                }
            }
        }
    };
    let mut reload = tokio::time::interval(FULL_RELOAD_INTERVAL);
    reload.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    reload.tick().await;
    let mut heal = tokio::time::interval(RETRY_INTERVAL);
    heal.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut invalidations = Invalidations::default();
    let mut read_invalidations = tokio::time::interval(INVALIDATION_READ_INTERVAL);
    read_invalidations.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Set when announcements may have been missed (a lost connection, a failed reload):
    // everything is then reloaded every second until a reload succeeds. Changes made
    // between the start-up load and a LISTEN made after it were announced before it: one
    // reload now catches them (reading only what changed), not the 30 s one. A listener
    // made before the load has them queued instead, and a reload now would race the
    // first requests (a snapshot read before a caller's change replacing it in memory).
    let mut stale = !listened_before_the_load && !reload_all(&state).await;
    loop {
        tokio::select! {
            received = listener.try_recv() => match received {
                Ok(Some(notification)) => {
                    apply(&state, notification.payload(), &mut invalidations).await
                }
                Ok(None) => {
                    // The connection dropped (and is re-made on the next call).
                    tracing::warn!("lost the change listener connection; reloading");
                    stale = !reload_all(&state).await;
                }
                Err(error) => {
                    tracing::warn!(%error, "change listener failed; retrying");
                    stale = true;
                    tokio::select! {
                        () = tokio::time::sleep(RETRY_INTERVAL) => {},
                        () = &mut stop => return,
                    }
                }
            },
            _ = heal.tick(), if stale => stale = !reload_all(&state).await,
            _ = read_invalidations.tick() => invalidations.catch_up(&state).await,
            _ = reload.tick() => stale = !reload_all(&state).await,
            () = &mut stop => return,
        }
    }
}

/// How long the follower waits before trying a failed connection or reload again.
const RETRY_INTERVAL: Duration = Duration::from_secs(1);

async fn apply(state: &AppState, payload: &str, invalidations: &mut Invalidations) {
    let Ok(change) = serde_json::from_str::<Change>(payload) else {
        tracing::warn!("ignoring an unreadable change announcement");
        return;
    };
    let tenant = || TenantId::parse(&change.id).ok();
    let result = match (change.table.as_str(), tenant()) {
        ("tenants", Some(id)) => match state.store.get_tenant_row(&id).await {
            Ok(Some(row)) => {
                state.vendor.registry().upsert_stored(Tenant::try_from(row));
                Ok(())
            }
            Ok(None) => {
                state.vendor.registry().remove_tenant(&id);
                Ok(())
            }
            Err(e) => Err(e.to_string()),
        },
        ("tokens", Some(id)) => state
            .vendor
            .registry()
            .adopt_stored_token(&id)
            .await
            .map(drop)
            .map_err(|e| e.to_string()),
        ("token_invalidations", _) => {
            invalidations.catch_up(state).await;
            Ok(())
        }
        ("api_keys", _) => reload_keys(state).await.map_err(|e| e.to_string()),
        ("identity_providers" | "identity_mappings", _) => {
            reload_identities(state).await.map_err(|e| e.to_string())
        }
        _ => Ok(()),
    };
    if let Err(error) = result {
        tracing::warn!(%error, table = %change.table, "could not apply a change; the next reload will");
    }
}

/// How often the recent invalidations are read, announced or not: the most a lost
/// announcement delays dropping an invalidated token (the contract allows 5 s).
const INVALIDATION_READ_INTERVAL: Duration = Duration::from_secs(1);

/// How far back each read of the invalidations reaches before the previous one: a
/// transaction that recorded one may commit that much later than it began.
const LATE_COMMIT_MARGIN: chrono::TimeDelta = chrono::TimeDelta::seconds(10);

/// The fleet's invalidations this replica has applied: those recorded since `since` are
/// read again (applying one twice changes nothing).
#[derive(Default)]
struct Invalidations {
    /// `None` until the first read, which takes every invalidation kept.
    since: Option<DateTime<Utc>>,
    failing: bool,
}

impl Invalidations {
    /// Drops every token invalidated on another replica since the last read.
    async fn catch_up(&mut self, state: &AppState) {
        match state.store.invalidations_since(self.since).await {
            Ok((records, read_at)) => {
                for record in &records {
                    apply_invalidation(state, record);
                }
                self.since = Some(read_at - LATE_COMMIT_MARGIN);
                self.failing = false;
            }
            Err(error) => {
                // Said once per outage, not every second.
                if !std::mem::replace(&mut self.failing, true) {
                    tracing::warn!(%error, "cannot read the fleet's invalidations; retrying");
                }
            }
        }
    }
}

fn apply_invalidation(state: &AppState, record: &InvalidationRecord) {
    // A row whose id does not parse names no tenant served here.
    let (Ok(id), Ok(uid)) = (
        TenantId::parse(&record.tenant_id),
        TenantUid::parse(&record.tenant_uid),
    ) else {
        return;
    };
    state
        .vendor
        .registry()
        .fleet_invalidated(&id, uid, &record.fingerprint);
}

async fn reload_keys(state: &AppState) -> Result<(), sqlx::Error> {
    let records = state.store.list_api_keys().await?;
    state.keys.replace_all(&records);
    Ok(())
}

async fn reload_identities(state: &AppState) -> Result<(), sqlx::Error> {
    let providers = state.store.list_identity_providers().await?;
    let mappings = state.store.list_identity_mappings().await?;
    state.identities.replace_all(providers, mappings);
    Ok(())
}

/// Tenants read from the store at a time.
const TENANT_PAGE: i64 = 2000;

/// More changed tenants than this in a reload and every row is read again (page by page),
/// rather than one row at a time.
const ROW_BY_ROW_LIMIT: usize = 200;

type LoadError = Box<dyn std::error::Error + Send + Sync>;

/// Adds or updates every tenant of the store, a page at a time (the next page is read
/// while the secrets of one are opened); returns the ids read.
pub async fn load_tenants(store: &Store, vendor: &Vendor) -> Result<Vec<String>, LoadError> {
    let registry = vendor.registry();
    let mut ids = Vec::new();
    let mut page = store.list_tenants("", TENANT_PAGE).await?;
    while let Some(last) = page.last() {
        let after = last.id.clone();
        let full = page.len() >= TENANT_PAGE as usize;
        ids.extend(page.iter().map(|row| row.id.clone()));
        let next = async {
            match full {
                true => store.list_tenants(&after, TENANT_PAGE).await,
                false => Ok(Vec::new()),
            }
        };
        let applying = async { registry.apply_stored(page.into_iter().map(Tenant::try_from)) };
        let (next, ()) = tokio::join!(next, applying);
        page = next?;
    }
    Ok(ids)
}

/// Brings the engine's tenants up to date with the store, forgetting those it no longer
/// has: only the rows whose version differs from the one held are read (and their
/// secrets opened).
pub async fn reload_tenants(store: &Store, vendor: &Vendor) -> Result<(), LoadError> {
    let registry = vendor.registry();
    let listed = store.list_tenant_versions().await?;
    let changed: Vec<&TenantVersion> = listed
        .iter()
        .filter(|v| !registry.holds_version(&v.id, &v.uid, v.version))
        .collect();
    if changed.len() > ROW_BY_ROW_LIMIT {
        let ids = load_tenants(store, vendor).await?;
        registry.retain_tenants(&ids.iter().map(String::as_str).collect());
        return Ok(());
    }
    let mut rows = Vec::with_capacity(changed.len());
    for version in changed {
        // A row whose id does not parse was logged when it was first read.
        let Ok(id) = TenantId::parse(&version.id) else {
            continue;
        };
        if let Some(row) = store.get_tenant_row(&id).await? {
            rows.push(Tenant::try_from(row));
        }
    }
    registry.apply_stored(rows);
    registry.retain_tenants(&listed.iter().map(|v| v.id.as_str()).collect());
    Ok(())
}

/// Adopts the stored tokens after start-up, in the background (requests are served
/// meanwhile, and a tenant asked for first takes its own at once); retries every second
/// while the store cannot be read.
pub async fn adopt_stored_tokens(vendor: Vendor) {
    let started = std::time::Instant::now();
    loop {
        match vendor.registry().adopt_stored_tokens().await {
            Ok(adopted) => {
                let ms = started.elapsed().as_millis() as u64;
                tracing::info!(adopted, ms, "adopted the stored tokens");
                return;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot read the stored tokens yet; retrying");
                tokio::time::sleep(RETRY_INTERVAL).await;
            }
        }
    }
}

/// Reloads every tenant, stored token and caller key from the store (reading only what
/// changed); returns whether all of it could be read.
pub async fn reload_all(state: &AppState) -> bool {
    let reloaded = async {
        reload_tenants(&state.store, &state.vendor).await?;
        state.vendor.registry().adopt_newer_stored_tokens().await?;
        reload_keys(state).await?;
        reload_identities(state).await?;
        Ok::<_, LoadError>(())
    };
    match reloaded.await {
        Ok(()) => true,
        Err(error) => {
            tracing::warn!(%error, "could not reload from the store");
            false
        }
    }
}
