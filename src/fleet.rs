//! Replicas on one PostgreSQL database: each applies the others' tenant and caller-key
//! changes as the database announces them, and reloads everything periodically so that a
//! missed announcement heals by itself.

use std::future::Future;
use std::time::Duration;

use serde::Deserialize;

use crate::state::AppState;

/// How often everything is reloaded, announcements or not.
pub const FULL_RELOAD_INTERVAL: Duration = Duration::from_secs(30);

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
                    () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    () = &mut stop => return,
                }
            }
        }
    };
    let mut reload = tokio::time::interval(FULL_RELOAD_INTERVAL);
    reload.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    reload.tick().await;
    loop {
        tokio::select! {
            received = listener.try_recv() => match received {
                Ok(Some(notification)) => apply(&state, notification.payload()).await,
                Ok(None) => {
                    // The connection dropped (and is re-made on the next call): announcements
                    // may have been missed meanwhile.
                    tracing::warn!("lost the change listener connection; reloading");
                    reload_all(&state).await;
                }
                Err(error) => {
                    tracing::warn!(%error, "change listener failed; retrying");
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_secs(1)) => {},
                        () = &mut stop => return,
                    }
                }
            },
            _ = reload.tick() => reload_all(&state).await,
            () = &mut stop => return,
        }
    }
}

async fn apply(state: &AppState, payload: &str) {
    let Ok(change) = serde_json::from_str::<Change>(payload) else {
        tracing::warn!("ignoring an unreadable change announcement");
        return;
    };
    let result = match change.table.as_str() {
        "tenants" => match state.store.get_tenant(&change.id).await {
            Ok(Some(record)) => {
                state.vendor.upsert_tenant(&record);
                Ok(())
            }
            Ok(None) => {
                state.vendor.remove_tenant(&change.id);
                Ok(())
            }
            Err(e) => Err(e),
        },
        "api_keys" => reload_keys(state).await,
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

/// Reloads every tenant and caller key from the store.
pub async fn reload_all(state: &AppState) {
    if let Err(error) = state.vendor.reload_tenants().await {
        tracing::warn!(%error, "could not reload tenants");
    }
    if let Err(error) = reload_keys(state).await {
        tracing::warn!(%error, "could not reload caller keys");
    }
}
