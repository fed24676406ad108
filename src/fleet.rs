//! Replicas on one PostgreSQL database: each applies the others' tenant, caller-key and
//! token changes as the database announces them, and reloads everything periodically so
//! that a missed announcement heals by itself. (Refreshes are coordinated by per-tenant
//! locks: see `Vendor::obtain`.)

use std::future::Future;
use std::time::Duration;

use serde::Deserialize;

use crate::domain::TenantId;
use crate::state::AppState;
use crate::store::Store;
use crate::vending::Vendor;

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
/// SQLite).
pub async fn follow_changes(state: AppState, stop: impl Future<Output = ()>) {
    tokio::pin!(stop);
    let mut listener = loop {
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
    // Set when announcements may have been missed (a lost connection, a failed reload):
    // everything is then reloaded every second until a reload succeeds.
    let mut stale = false;
    loop {
        tokio::select! {
            received = listener.try_recv() => match received {
                Ok(Some(notification)) => apply(&state, notification.payload()).await,
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
            _ = reload.tick() => stale = !reload_all(&state).await,
            () = &mut stop => return,
        }
    }
}

/// How long the follower waits before trying a failed connection or reload again.
const RETRY_INTERVAL: Duration = Duration::from_secs(1);

async fn apply(state: &AppState, payload: &str) {
    let Ok(change) = serde_json::from_str::<Change>(payload) else {
        tracing::warn!("ignoring an unreadable change announcement");
        return;
    };
    let tenant = || TenantId::parse(&change.id).ok();
    let result = match (change.table.as_str(), tenant()) {
        ("tenants", Some(id)) => match state.store.get_tenant_row(&id).await {
            Ok(Some(row)) => {
                state.vendor.upsert_row(row);
                Ok(())
            }
            Ok(None) => {
                state.vendor.remove_tenant(&id);
                Ok(())
            }
            Err(e) => Err(e.to_string()),
        },
        ("tokens", Some(id)) => state
            .vendor
            .adopt_stored_token(&id)
            .await
            .map(drop)
            .map_err(|e| e.to_string()),
        ("api_keys", _) => reload_keys(state).await.map_err(|e| e.to_string()),
        _ => Ok(()),
    };
    if let Err(error) = result {
        tracing::warn!(%error, table = %change.table, "could not apply a change; the next reload will");
    }
}

async fn reload_keys(state: &AppState) -> Result<(), sqlx::Error> {
    let records = state.store.list_api_keys().await?;
    state.keys.replace_all(&records);
    Ok(())
}

/// Brings the engine's tenants up to date with the store (forgetting those it no longer
/// has), then serves every stored token newer than the one held.
pub async fn load_tenants_and_tokens(
    store: &Store,
    vendor: &Vendor,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let mut rows = Vec::new();
    let mut after = String::new();
    loop {
        let page = store.list_tenants(&after, 500).await?;
        let Some(last) = page.last() else { break };
        after = last.id.clone();
        rows.extend(page);
    }
    vendor.replace_tenants(rows);
    Ok(vendor.adopt_stored_tokens().await?)
}

/// Reloads every tenant, stored token and caller key from the store; returns whether all
/// of it could be read.
pub async fn reload_all(state: &AppState) -> bool {
    let reloaded = async {
        load_tenants_and_tokens(&state.store, &state.vendor).await?;
        reload_keys(state).await?;
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
    };
    match reloaded.await {
        Ok(()) => true,
        Err(error) => {
            tracing::warn!(%error, "could not reload from the store");
            false
        }
    }
}
