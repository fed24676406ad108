//! Workload identity: identity providers (whose JWTs are trusted) and identity mappings
//! (which of their tokens' claims earn which scopes), parsed once at the edge.
//! `provider.rs` and `mapping.rs` hold each, `fields.rs` the field rules both share.

mod fields;
mod mapping;
mod provider;

pub use mapping::{
    claim_value, parse_cidrs, parse_matches, ClaimMatch, IdentityMapping, MappingFields,
};
pub use provider::{IdentityProvider, ProviderFields, ProviderKeys};

#[cfg(test)]
mod tests;
