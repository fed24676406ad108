//! How a failed token fetch shows over HTTP: the one mapping from upstream failures to
//! statuses and problem slugs. The API's problem+json, the edX-compatible endpoint's RFC
//! 6749 errors and the audit trail's `tenant.verify_failed` entries all read it.

use std::time::Duration;

use axum::http::StatusCode;

use super::UpstreamError;

/// How a failed token fetch shows over HTTP. The one mapping from upstream failures to
/// statuses: the API's problem+json and the edX-compatible endpoint's RFC 6749 errors
/// both render from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpstreamFailure {
    /// 502 when edX rejected the credentials or answered garbage, 503 when it is down or
    /// throttling, 504 when it did not answer in time.
    pub status: StatusCode,
    /// The problem type's slug.
    pub slug: &'static str,
    /// When edX may be asked again for this tenant (a second when nobody said).
    pub retry_after: Duration,
}

impl UpstreamFailure {
    pub fn new(cause: &UpstreamError, retry_after: Option<Duration>) -> Self {
        let (status, slug) = match cause {
            UpstreamError::Rejected { .. } => (StatusCode::BAD_GATEWAY, "upstream-rejected"),
            UpstreamError::InvalidResponse { .. } => {
                (StatusCode::BAD_GATEWAY, "upstream-invalid-response")
            }
            UpstreamError::Throttled { .. } => {
                (StatusCode::SERVICE_UNAVAILABLE, "upstream-throttled")
            }
            UpstreamError::Unavailable { .. } | UpstreamError::HostFailing { .. } => {
                (StatusCode::SERVICE_UNAVAILABLE, "upstream-unavailable")
            }
            UpstreamError::Timeout(_) => (StatusCode::GATEWAY_TIMEOUT, "upstream-timeout"),
            UpstreamError::OverBudget { .. } => {
                (StatusCode::SERVICE_UNAVAILABLE, "upstream-budget")
            }
        };
        Self {
            status,
            slug,
            retry_after: retry_after.unwrap_or(Duration::from_secs(1)),
        }
    }

    /// Whether asking again later may succeed: edX was down, slow or throttling rather
    /// than refusing the credentials or answering garbage.
    pub fn is_transient(&self) -> bool {
        self.status != StatusCode::BAD_GATEWAY
    }
}
