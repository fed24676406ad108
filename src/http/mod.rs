//! The HTTP face: a handler extracts, calls one service or the engine, and renders.

/// Caller keys, scopes and the extractor that checks them.
pub mod auth;
/// `ApiError` and its application/problem+json rendering.
pub mod error;
/// Request extractors that answer with problem+json on bad input.
pub mod extract;
/// HTTP routes, one module per resource.
pub mod routes;
/// Shared handler state.
pub mod state;
