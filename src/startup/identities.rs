//! The workload identity registry at start-up: its JWKS URLs are fetched under the
//! outbound rules, on the app's clock; providers and mappings come from the store.

use std::sync::Arc;

use crate::clock::Clock;
use crate::config::Settings;
use crate::engine::jwks::JwksCache;
use crate::http::auth::identity::IdentityRegistry;
use crate::outbound::upstream::UpstreamClient;
use crate::outbound::UrlPolicy;
use crate::share::Sharing;
use crate::store::Store;
use crate::telemetry::metrics::Metrics;

pub(super) fn registry(
    settings: &Settings,
    policy: UrlPolicy,
    clock: &Arc<dyn Clock>,
    metrics: &Arc<Metrics>,
    sharing: &Sharing,
) -> anyhow::Result<IdentityRegistry> {
    let client = UpstreamClient::new(settings.vending.upstream.clone(), policy, metrics.clone())?;
    Ok(IdentityRegistry::new(
        JwksCache::with_clock(client, clock.clone()),
        clock.clone(),
        settings.serving.rate_limits.key_rate,
        sharing.clone(),
        metrics.clone(),
    ))
}

pub(super) async fn load(registry: &IdentityRegistry, store: &Store) -> Result<(), sqlx::Error> {
    let providers = store.list_identity_providers().await?;
    let mappings = store.list_identity_mappings().await?;
    registry.replace_all(providers, mappings);
    Ok(())
}
