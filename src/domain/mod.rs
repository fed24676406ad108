//! Parse-don't-validate types: each is checked once at the edge, then trusted inside.

mod expires_in;
mod patch;
mod scope;
mod tenant;
mod tenant_id;
mod tenant_patch;
mod time;
mod token_url;

pub use expires_in::parse_expires_in;
pub use patch::Patch;
pub use scope::{Scope, ScopeSet, TenantAccess};
pub use tenant::{
    validate_client_id, validate_client_secret, validate_name, validate_scope, Tenant, TenantUid,
    TokenType,
};
pub use tenant_id::TenantId;
pub use tenant_patch::{drops_token, TenantPatch, TOKEN_FIELDS};
pub use time::rfc3339;
pub use token_url::{is_public_ip, parse_outbound_url, UrlPolicy};

/// A field that failed validation, with a message safe to show the caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}
