//! Parse-don't-validate types: each is checked once at the edge, then trusted inside.

mod expires_in;
mod field_error;
mod identity;
mod new_tenant;
mod outbound_url;
mod patch;
mod proxy_path;
mod scope;
mod tenant;
mod tenant_id;
mod tenant_patch;
mod time;

pub use expires_in::parse_expires_in;
pub use field_error::FieldError;
pub use identity::{
    claim_value, parse_cidrs, parse_matches, ClaimMatch, IdentityMapping, IdentityProvider,
    MappingFields, ProviderFields, ProviderKeys,
};
pub use new_tenant::{NewTenant, TenantFields};
pub use outbound_url::{display_url, origin_of, parse_api_base_url, UrlRules};
pub use patch::Patch;
pub use proxy_path::ProxyPath;
pub use scope::{Scope, ScopeSet, TenantAccess};
pub use tenant::{
    validate_client_id, validate_client_secret, validate_name, validate_scope, PreviousSecret,
    Tenant, TenantUid, TokenType, PREVIOUS_SECRET_KEPT,
};
pub use tenant_id::TenantId;
pub use tenant_patch::{drops_token, TenantPatch, TOKEN_FIELDS};
pub use time::rfc3339;
