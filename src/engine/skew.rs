//! edX's clock against ours, measured on every token fetched: the offset per
//! token-endpoint host (positive: edX's clock is ahead), its warning, and the refusal of a
//! token issued too far in the future.
//!
//! A JWT's `iat` is compared with our clock halfway between sending the request and
//! receiving the answer (when edX most likely read its clock); an opaque (Bearer) token
//! has no `iat`, so the answer's `Date` header stands in for it. Both have whole-second
//! resolution, so the offset is good to about a second (less a little: both are rounded
//! down), plenty for the 30 s warning and the 300 s refusal. An answer with neither
//! leaves the last measurement as it was.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use super::core::Core;
use super::token::jwt_issued_at;
use crate::outbound::upstream::{FetchedToken, UpstreamError};
use secrecy::ExposeSecret;

/// An offset beyond this, either way, is logged as a warning.
pub const WARN_ABOVE: Duration = Duration::from_secs(30);

/// A token whose `iat` is further ahead of our clock than this is not used: edX's clock
/// (or ours) is wrong, and its expiry cannot be trusted.
pub const REFUSE_AHEAD: Duration = Duration::from_secs(300);

/// Measures edX's clock from `fetched` against the engine's, records the offset for
/// `host`, and refuses a token issued more than `REFUSE_AHEAD` in the future.
pub fn check(core: &Core, host: &str, fetched: &FetchedToken) -> Result<(), UpstreamError> {
    let Some(timing) = fetched.timing else {
        return Ok(());
    };
    let iat = jwt_issued_at(fetched.access_token.expose_secret());
    let Some(theirs) = iat.or(timing.date) else {
        return Ok(());
    };
    // Our clock at the midpoint: the engine's clock now, less the time since then.
    let since =
        chrono::Duration::from_std(Instant::now().saturating_duration_since(timing.midpoint))
            .unwrap_or_default();
    let offset = seconds_between(core.now() - since, theirs);
    let before = core.budget.record_clock_offset(host, offset);
    let limit = WARN_ABOVE.as_secs_f64();
    let source = if iat.is_some() { "iat" } else { "date" };
    if offset.abs() > limit && before.is_none_or(|b| b.abs() <= limit) {
        // Once as it goes out of bounds, not on every fetch of every tenant.
        tracing::warn!(
            host,
            offset_seconds = offset,
            source,
            "edX's clock is off from ours by more than {}s (positive: edX is ahead)",
            limit
        );
    } else if offset.abs() <= limit && before.is_some_and(|b| b.abs() > limit) {
        tracing::info!(
            host,
            offset_seconds = offset,
            source,
            "edX's clock agrees with ours again"
        );
    }
    if iat.is_some() && offset > REFUSE_AHEAD.as_secs_f64() {
        return Err(UpstreamError::InvalidResponse {
            status: 200,
            detail: format!(
                "the token was issued {}s in the future by our clock (more than {}s: edX's \
                 clock or ours is wrong); it is not used",
                offset.round(),
                REFUSE_AHEAD.as_secs()
            ),
        });
    }
    Ok(())
}

/// `theirs - ours` in seconds, to the millisecond.
fn seconds_between(ours: DateTime<Utc>, theirs: DateTime<Utc>) -> f64 {
    (theirs - ours).num_milliseconds() as f64 / 1000.0
}
