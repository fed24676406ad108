//! Tenant changes: create, update and delete, each with its audit entry and its webhook
//! event in the transaction of the row; the engine learns of a change once it committed.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretSlice, SecretString};
use serde_json::json;
use url::Url;

use super::change::{now, Actor, OnConflict, Result, ServiceError};
use super::verify::verify_credentials;
use crate::crypto::{MasterKey, Purpose};
use crate::domain::{
    drops_token, NewTenant, PreviousSecret, Tenant, TenantId, TenantPatch, PREVIOUS_SECRET_KEPT,
};
use crate::engine::Vendor;
use crate::outbound::webhooks::{Event, Events};
use crate::outbound::UrlPolicy;
use crate::store::Store;

/// How many times an update is retried when another writer changed the tenant meanwhile.
const UPDATE_ATTEMPTS: usize = 3;

/// The one write path of tenants.
#[derive(Clone)]
pub struct TenantService {
    pub store: Store,
    pub master_key: Arc<MasterKey>,
    pub url_policy: UrlPolicy,
    pub vendor: Vendor,
    pub events: Events,
}

impl TenantService {
    /// Creates `new`; with `verify`, only once edX has given a token for its credentials
    /// (that token is then kept: no second call).
    pub async fn create(&self, actor: &Actor, new: NewTenant, verify: bool) -> Result<Tenant> {
        let seal = |id: &TenantId, secret: &SecretString| {
            self.master_key.seal(
                Purpose::ClientSecret,
                id.as_str(),
                secret.expose_secret().as_bytes(),
            )
        };
        let record = new.into_tenant(seal, now());
        let id = &record.id;
        let exists = || ServiceError::Conflict(format!("a tenant with id {id} already exists"));
        let verified = if verify {
            // edX is not asked about credentials that could not be stored anyway.
            if self.store.get_tenant_row(id).await?.is_some() {
                return Err(exists());
            }
            Some(verify_credentials(&self.store, &self.vendor, actor, &record, "create").await?)
        } else {
            None
        };
        let entry = actor.audit(
            "tenant.create",
            id.as_str(),
            json!({ "uid": record.uid.to_string() }),
        );
        let event = self.events.for_change(&Event::tenant_created(id.as_str()));
        self.store
            .insert_tenant(&record, &entry, &event)
            .await
            .on_conflict(|| exists().to_string())?;
        self.vendor.registry().upsert_tenant(&record);
        if let Some(verified) = verified {
            self.vendor.keep_verified(verified).await;
        }
        tracing::info!(tenant = %id, verified = verify, "tenant created");
        self.events.wake();
        Ok(record)
    }

    /// Applies `patch` to tenant `id` (retried when another writer got there first); with
    /// `verify`, new credentials are tried on edX first. A patch that changes nothing
    /// writes nothing and returns the tenant as it is.
    pub async fn update(
        &self,
        actor: &Actor,
        id: &TenantId,
        patch: &TenantPatch,
        verify: bool,
    ) -> Result<Tenant> {
        for _ in 0..UPDATE_ATTEMPTS {
            let current = self
                .store
                .get_tenant(id)
                .await?
                .ok_or(ServiceError::TenantNotFound)?;
            let seal = |secret: &SecretString| {
                self.master_key.seal(
                    Purpose::ClientSecret,
                    current.id.as_str(),
                    secret.expose_secret().as_bytes(),
                )
            };
            let at = now();
            let (mut next, changed) = current.patched(patch, self.url_policy, seal, at)?;
            if changed.is_empty() {
                return Ok(current);
            }
            let drop_token = drops_token(&changed);
            // Only new credentials need trying: a change of name or JWKS URL keeps them.
            let verified = if verify && drop_token {
                let store = &self.store;
                Some(verify_credentials(store, &self.vendor, actor, &next, "update").await?)
            } else {
                None
            };
            next.previous_secret =
                self.kept_previous_secret(&current, &changed, verified.is_some(), at);
            let details = change_details(&current, &next, &changed);
            let entry = actor.audit("tenant.update", id.as_str(), details);
            let event = self
                .events
                .for_change(&Event::tenant_updated(id.as_str(), &changed));
            if self
                .store
                .update_tenant(&next, current.version, drop_token, &entry, &event)
                .await?
            {
                tracing::info!(tenant = %id, ?changed, drop_token, verified = verified.is_some(), "tenant updated");
                self.vendor.registry().upsert_tenant(&next);
                if let Some(verified) = verified {
                    self.vendor.keep_verified(verified).await;
                }
                self.events.wake();
                return Ok(next);
            }
        }
        Err(ServiceError::Conflict(
            "the tenant was changed concurrently; retry the update".to_owned(),
        ))
    }

    /// Deletes tenant `id` and its token; its cached token is gone at once.
    pub async fn delete(&self, actor: &Actor, id: &TenantId) -> Result<()> {
        let entry = actor.audit(
            "tenant.delete",
            id.as_str(),
            // Which tenant under this id: a later one re-created under it is another.
            json!({ "uid": self.vendor.registry().uid_of(id).map(|uid| uid.to_string()) }),
        );
        let event = self.events.for_change(&Event::tenant_deleted(id.as_str()));
        if !self.store.delete_tenant(id, &entry, &event).await? {
            return Err(ServiceError::TenantNotFound);
        }
        self.vendor.registry().remove_tenant(id);
        tracing::info!(tenant = %id, "tenant deleted");
        self.events.wake();
        Ok(())
    }

    /// The previous client secret an update keeps. An unverified change of the secret
    /// alone (same client, same token endpoint, same API base) keeps the replaced one,
    /// sealed under its own purpose, for a day: if edX refuses the new one, tokens are
    /// still had with the old one meanwhile. A verified change, or a change of client,
    /// token endpoint or API base, keeps none: a secret, and a token had with it, only
    /// ever go to the URLs they were stored for (otherwise moving the API base with a
    /// garbage secret would have the safety net fetch a good token and the proxy hand it
    /// to the new base). Other changes keep what was kept, while it lasts.
    fn kept_previous_secret(
        &self,
        current: &Tenant,
        changed: &[&str],
        verified: bool,
        now: DateTime<Utc>,
    ) -> Option<PreviousSecret> {
        let credentials_moved = ["client_id", "token_url", "api_base_url"]
            .iter()
            .any(|field| changed.contains(field));
        if !changed.contains(&"client_secret") && !credentials_moved {
            return current.previous_secret.clone().filter(|p| p.until > now);
        }
        if verified || credentials_moved {
            return None;
        }
        let id = current.id.as_str();
        let secret = SecretSlice::from(
            self.master_key
                .open(Purpose::ClientSecret, id, &current.secret)
                .ok()?,
        );
        Some(PreviousSecret {
            sealed: self
                .master_key
                .seal(Purpose::PreviousClientSecret, id, secret.expose_secret()),
            until: now + PREVIOUS_SECRET_KEPT,
        })
    }
}

/// The audit details of an update: the names of the changed fields, and where the token
/// endpoint and the API base moved from and to (URLs are not secret; secrets never
/// appear).
fn change_details(current: &Tenant, next: &Tenant, changed: &[&str]) -> serde_json::Value {
    let mut details = json!({ "changed": changed, "uid": current.uid.to_string() });
    let shown = |url: &Option<Url>| url.as_ref().map(Url::as_str).map(str::to_owned);
    for (field, from, to) in [
        ("token_url", &current.token_url, &next.token_url),
        ("api_base_url", &current.api_base_url, &next.api_base_url),
    ] {
        if changed.contains(&field) {
            details[field] = json!({ "from": shown(from), "to": shown(to) });
        }
    }
    details
}
