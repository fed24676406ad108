//! What the services tell the caller registries once a change committed: the key ring
//! learns of stored and revoked keys, the identity registry of providers and mappings.

use super::identity::IdentityRegistry;
use super::{generate_key, KeyEntry, KeyRing};
use crate::domain::{IdentityMapping, IdentityProvider, ScopeSet};
use crate::services::{CallerKeys, IdentityDirectory, NewKey};
use crate::store::ApiKeyRecord;

impl CallerKeys for KeyRing {
    fn generate(&self) -> NewKey {
        let generated = generate_key();
        NewKey {
            id: generated.id,
            key: generated.key,
            hash: generated.hash,
        }
    }

    fn added(&self, record: &ApiKeyRecord, scopes: ScopeSet, hash: [u8; 32]) {
        let rate = self.rate_for(record.rate_limit);
        let entry = KeyEntry::new(record.id.clone(), scopes, hash).with_rate(rate, self.sharing());
        self.insert(entry);
    }

    fn revoked(&self, id: &str) {
        self.remove(id);
    }
}

impl IdentityDirectory for IdentityRegistry {
    fn provider_added(&self, provider: IdentityProvider) {
        self.insert_provider(provider);
    }

    fn provider_removed(&self, id: &str) {
        self.remove_provider(id);
    }

    fn mapping_added(&self, mapping: IdentityMapping) {
        self.insert_mapping(mapping);
    }

    fn mapping_removed(&self, id: &str) {
        self.remove_mapping(id);
    }
}
