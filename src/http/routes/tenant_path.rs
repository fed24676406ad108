//! The tenant id in a request path (`/tenants/{id}/…`).

use std::borrow::Cow;

use crate::domain::TenantId;
use crate::http::error::{ApiError, Result};

/// Parses a tenant id from the path; an id that cannot exist is simply not found. The id
/// joins the request's span.
pub fn path_tenant_id(raw: &str) -> Result<TenantId> {
    let id = TenantId::parse(raw).map_err(|_| ApiError::TenantNotFound)?;
    tracing::Span::current().record("tenant", id.as_str());
    Ok(id)
}

/// The `{id}` of a `/tenants/{id}/…` request path, percent-decoded as axum's `Path` does,
/// without copying it unless it had escapes (the hot path reads it so). Not UTF-8 once
/// decoded: 404, as `Path` answers.
pub fn raw_tenant_id(path: &str) -> Result<Cow<'_, str>> {
    let segment = path
        .strip_prefix("/tenants/")
        .and_then(|rest| rest.split('/').next())
        .unwrap_or_default();
    percent_encoding::percent_decode_str(segment)
        .decode_utf8()
        .map_err(|_| ApiError::NotFound("not found".to_owned()))
}
