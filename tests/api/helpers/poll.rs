//! Waiting for background work: poll a check until it holds, never sleep and hope.

use std::time::Duration;

/// How long `eventually` waits for background work.
const EVENTUALLY: Duration = Duration::from_secs(5);

/// The pause between two checks of a poll.
const POLL_INTERVAL: Duration = Duration::from_millis(10);

/// Polls `check` until it holds (background work), failing after 5 s with `what` in the
/// message: `eventually("the refresh", async || app.issuer.calls(&id) == 2).await`
/// (`|| async { ... }` works too).
pub async fn eventually(what: &str, check: impl AsyncFnMut() -> bool) {
    eventually_within(EVENTUALLY, what, check).await;
}

/// Like `eventually`, failing after `limit`; returns how long it took.
pub async fn eventually_within(
    limit: Duration,
    what: &str,
    check: impl AsyncFnMut() -> bool,
) -> Duration {
    poll_until(limit, check)
        .await
        .unwrap_or_else(|| panic!("timed out after {limit:?} waiting for: {what}"))
}

/// Polls `check` every 10 ms until it holds and returns how long that took, or `None`
/// once `limit` has passed, for callers that say themselves what went wrong. A check
/// begun in time may finish a little late (a loaded machine) and still count, but one
/// that hangs is abandoned a further `limit` on.
pub async fn poll_until(limit: Duration, mut check: impl AsyncFnMut() -> bool) -> Option<Duration> {
    let started = tokio::time::Instant::now();
    let deadline = started + limit;
    loop {
        match tokio::time::timeout_at(deadline + limit, check()).await {
            Ok(true) => return Some(started.elapsed()),
            Ok(false) if tokio::time::Instant::now() < deadline => {}
            Ok(false) | Err(_) => return None,
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}
