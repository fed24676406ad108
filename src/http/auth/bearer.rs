//! The credential a request presents, read one way by the extractor and the hot path.

use axum::http::header::AUTHORIZATION;
use axum::http::HeaderMap;

/// The credential of a request's `Authorization: Bearer …` (a `tv_` key or a JWT);
/// `None` (401) without one. The hot path (`routes::hot`) reads it the same way.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let header = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, key) = header.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then_some(key.trim())
}
