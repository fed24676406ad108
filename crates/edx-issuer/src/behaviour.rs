//! How the issuer answers a registered client: lifetime, `expires_in` format, latency,
//! allowed scopes, and the edX failure it is told to imitate.

use std::time::Duration;

/// How a registered client's token requests are answered.
#[derive(Debug, Clone)]
pub struct ClientBehaviour {
    /// Token lifetime: `expires_in`, and `exp - iat` in JWTs. Default 3600 s.
    pub lifetime: Duration,
    /// How `expires_in` is written in the answer. Default [`ExpiresInFormat::Integer`].
    pub expires_in: ExpiresInFormat,
    /// Waited before every answer to this client (successes and failures alike). Default 0.
    pub latency: Duration,
    /// When set, every request naming this client gets this failure (after `latency`),
    /// before the grant type or the secret are even looked at. Default `None`.
    pub failure: Option<Failure>,
    /// The scopes the client is allowed, space-separated: answered when the request names
    /// no `scope`; a requested scope outside this set gets `400 invalid_scope`, as on edX.
    /// Default `"read write profile email"`.
    pub scope: String,
    /// How far this client's edX clock is from the issuer's (positive: ahead): added to
    /// the time in its JWTs (`iat`, and so `exp`) and in the `Date` header of the answers
    /// to its requests. Default 0.
    pub clock_offset: chrono::TimeDelta,
}

impl Default for ClientBehaviour {
    fn default() -> Self {
        Self {
            lifetime: Duration::from_secs(3600),
            expires_in: ExpiresInFormat::Integer,
            latency: Duration::ZERO,
            failure: None,
            scope: "read write profile email".to_owned(),
            clock_offset: chrono::TimeDelta::zero(),
        }
    }
}

/// How `expires_in` appears in a successful answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpiresInFormat {
    /// `"expires_in": 3600`
    Integer,
    /// `"expires_in": "3600"`
    String,
    /// `"expires_in": 3600.0`
    Float,
    /// No `expires_in` field at all.
    Missing,
}

/// A failure the issuer can be told to answer with, per client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// `500` with Django's small HTML error page.
    ServerError,
    /// `503` with a small HTML page (a load balancer with no healthy LMS behind it).
    Unavailable,
    /// `429` with `Retry-After: <retry_after_secs>` and a JSON body
    /// `{"error": "rate_limited", "detail": "Request was throttled. ..."}`.
    RateLimited { retry_after_secs: u64 },
    /// A bare `403` with an HTML body: edX's own rate limiter. Throttling, not a rejected
    /// credential.
    ForbiddenHtml,
    /// `401 {"error": "invalid_client"}`, whatever the secret.
    InvalidClient,
    /// `400 {"error": "invalid_scope"}`, whatever the scope.
    InvalidScope,
    /// `200` whose body is not JSON (although it claims to be `application/json`).
    Garbage,
    /// `200 {"error": "server_error", "error_description": ...}`: an error without an error
    /// status.
    ErrorIn200,
    /// Never answers (waits an hour; ends early, with a 503, when the
    /// [`RunningIssuer`](crate::RunningIssuer) serving it is dropped).
    Hang,
}
