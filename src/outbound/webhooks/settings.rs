//! How webhooks are delivered: the documented defaults, which tests shorten.

use std::time::Duration;

#[derive(Debug, Clone)]
pub struct WebhookSettings {
    /// The wait before each retry of a failed attempt; after the last one the delivery is
    /// marked failed (so at most `len + 1` attempts).
    pub retry_schedule: Vec<Duration>,
    /// How long one attempt may take (connection included).
    pub attempt_timeout: Duration,
    /// How often the worker looks for due deliveries besides being woken by new events.
    pub poll_interval: Duration,
    /// How long a claimed delivery stays with its claimer; a claimer that dies leaves it
    /// to be claimed again after this.
    pub lease: Duration,
    /// How long finished (delivered or failed) deliveries are kept.
    pub retention: Duration,
    /// Deliveries claimed (and sent concurrently) at a time.
    pub batch: usize,
    /// Whether this process sends deliveries at all. Off, events are still written and
    /// wait in the outbox (the contract test, whose fuzzer registers made-up URLs that
    /// must never be called).
    pub send: bool,
}

impl Default for WebhookSettings {
    fn default() -> Self {
        Self {
            retry_schedule: [5, 30, 120, 600, 3600].map(Duration::from_secs).to_vec(),
            attempt_timeout: Duration::from_secs(10),
            poll_interval: Duration::from_secs(2),
            lease: Duration::from_secs(60),
            retention: Duration::from_secs(7 * 24 * 3600),
            batch: 20,
            send: true,
        }
    }
}
