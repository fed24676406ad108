//! Why no token could be served.

use std::time::Duration;

use crate::outbound::upstream::UpstreamError;

/// Why no token could be served.
#[derive(Debug, Clone, thiserror::Error)]
pub enum VendError {
    #[error("tenant not found")]
    UnknownTenant,
    #[error("{cause}")]
    Upstream {
        cause: UpstreamError,
        /// When edX may be asked again for this tenant.
        retry_after: Option<Duration>,
    },
    /// The tenant's stored settings cannot be used (an unreadable secret, a URL the
    /// outbound rules refuse, an invalid row): nothing is sent anywhere.
    #[error("the tenant cannot be asked a token for: {0}")]
    Unusable(String),
    /// A caller-triggered fetch (a forced refresh) asked for too soon after the last one,
    /// or during a failure cool-down: refused without calling edX.
    #[error("a refresh was asked for too soon; edX is not asked again yet")]
    TooSoon { retry_after: Duration },
    /// The caller has triggered its `TOKENVEND_CALLER_FETCH_RATE` of edX fetches this
    /// minute: refused without calling edX.
    #[error("this caller has triggered its TOKENVEND_CALLER_FETCH_RATE of edX fetches for now; try again after Retry-After")]
    CallerOverRate { retry_after: Duration },
    /// edX refused this client id at a verify moments ago: it is not asked again before
    /// the cool-down ends (no guessing secrets through tokenvend).
    #[error("edX refused these credentials moments ago; this client_id is not verified again before Retry-After")]
    VerifyCoolingDown { retry_after: Duration },
    #[error("the token fetch failed unexpectedly")]
    Internal,
}
