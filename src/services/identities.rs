//! Workload identity: identity providers and mappings, created and deleted each with its
//! audit entry in the row's transaction; the identity registry learns of a change once it
//! committed.

use std::sync::Arc;

use serde_json::{json, Map, Value};

use super::change::{bind_tenant_scopes, now, Actor, OnConflict, Result, ServiceError};
use crate::domain::{FieldError, IdentityMapping, IdentityProvider, MappingFields, ProviderFields};
use crate::outbound::UrlPolicy;
use crate::store::{Store, StoredMapping, StoredProvider};

/// The identity providers and mappings a process holds in memory (its registry): what
/// must know at once that one was stored or deleted.
pub trait IdentityDirectory: Send + Sync {
    fn provider_added(&self, provider: IdentityProvider);
    /// Provider `id` and its mappings are gone.
    fn provider_removed(&self, id: &str);
    fn mapping_added(&self, mapping: IdentityMapping);
    fn mapping_removed(&self, id: &str);
}

/// The one write path of identity providers and mappings.
#[derive(Clone)]
pub struct IdentityService {
    pub store: Store,
    pub url_policy: UrlPolicy,
    pub directory: Arc<dyn IdentityDirectory>,
}

impl IdentityService {
    pub async fn create_provider(
        &self,
        actor: &Actor,
        fields: ProviderFields,
    ) -> Result<StoredProvider> {
        let stored = StoredProvider {
            provider: IdentityProvider::parse(fields, self.url_policy)?,
            created_at: now(),
        };
        let p = &stored.provider;
        let entry = actor.audit(
            "identity_provider.create",
            p.id.as_str(),
            json!({ "issuer": p.issuer, "audience": p.audience,
                    "jwks": if p.jwks_url().is_some() { "url" } else { "inline" } }),
        );
        self.store
            .insert_identity_provider(&stored, &entry)
            .await
            .on_conflict(|| "an identity provider with this id or issuer exists".to_owned())?;
        self.directory.provider_added(p.clone());
        tracing::info!(provider = %p.id, issuer = %p.issuer, "identity provider created");
        Ok(stored)
    }

    /// Deletes provider `id` with its mappings.
    pub async fn delete_provider(&self, actor: &Actor, id: &str) -> Result<()> {
        let entry = actor.audit("identity_provider.delete", id, json!({}));
        if !self.store.delete_identity_provider(id, &entry).await? {
            return Err(ServiceError::NotFound("identity provider not found"));
        }
        self.directory.provider_removed(id);
        tracing::info!(provider = %id, "identity provider deleted with its mappings");
        Ok(())
    }

    /// Creates a mapping; its tenant scopes are bound to the tenants holding those ids
    /// now, and its provider must exist when it is stored.
    pub async fn create_mapping(
        &self,
        actor: &Actor,
        fields: MappingFields,
    ) -> Result<StoredMapping> {
        let mut mapping = IdentityMapping::parse(fields)?;
        mapping.scopes = bind_tenant_scopes(&self.store, mapping.scopes).await?;
        let stored = StoredMapping {
            mapping,
            created_at: now(),
        };
        let m = &stored.mapping;
        let cidrs: Vec<String> = m.cidrs.iter().map(ToString::to_string).collect();
        let matches: Map<String, Value> = m.match_object();
        let entry = actor.audit(
            "identity_mapping.create",
            m.id.as_str(),
            json!({ "provider": m.provider.to_string(), "match": matches,
                    "scopes": m.scopes.to_public(), "cidrs": cidrs }),
        );
        let inserted = self
            .store
            .insert_identity_mapping(&stored, &entry)
            .await
            .on_conflict(|| "an identity mapping with this id exists".to_owned())?;
        if !inserted {
            return Err(FieldError::new("provider", "names no identity provider").into());
        }
        self.directory.mapping_added(m.clone());
        tracing::info!(mapping = %m.id, provider = %m.provider, "identity mapping created");
        Ok(stored)
    }

    pub async fn delete_mapping(&self, actor: &Actor, id: &str) -> Result<()> {
        let entry = actor.audit("identity_mapping.delete", id, json!({}));
        if !self.store.delete_identity_mapping(id, &entry).await? {
            return Err(ServiceError::NotFound("identity mapping not found"));
        }
        self.directory.mapping_removed(id);
        tracing::info!(mapping = %id, "identity mapping deleted");
        Ok(())
    }
}
