//! The tenant id in a request path (`/tenants/{id}/…`).

use crate::domain::TenantId;
use crate::error::{ApiError, Result};

/// Parses a tenant id from the path; an id that cannot exist is simply not found. The id
/// joins the request's span.
pub fn path_tenant_id(raw: &str) -> Result<TenantId> {
    let id = TenantId::parse(raw).map_err(|_| ApiError::TenantNotFound)?;
    tracing::Span::current().record("tenant", id.as_str());
    Ok(id)
}
