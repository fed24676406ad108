//! The engine's limits: serving margin, deadlines, scheduler pace, fleet lock wait.

use std::num::NonZeroU32;
use std::time::Duration;

use crate::outbound::upstream::UpstreamSettings;

#[derive(Debug, Clone)]
pub struct VendingSettings {
    /// A token this close to expiry is never served (at most a third of its lifetime).
    pub skew: Duration,
    /// How long a request waits for a new token (retries included).
    pub request_deadline: Duration,
    /// How often the scheduler looks for tokens to refresh.
    pub scheduler_interval: Duration,
    /// The least time between two caller-triggered fetches for one tenant
    /// (`TOKENVEND_MIN_REFRESH_INTERVAL`): a forced refresh sooner is refused, and a
    /// token fetched this recently is not fetched again for a `min_ttl` it cannot meet.
    pub min_refresh_interval: Duration,
    /// Token requests per minute per token-endpoint host (`TOKENVEND_UPSTREAM_RATE`),
    /// fleet-wide on PostgreSQL; `None`: no limit.
    pub upstream_rate: Option<NonZeroU32>,
    /// edX fetches per minute one caller may trigger (`TOKENVEND_CALLER_FETCH_RATE`:
    /// forced refreshes, invalidations, proxy retries, `min_ttl`, verifies); `None`: no
    /// limit.
    pub caller_fetch_rate: Option<NonZeroU32>,
    /// On PostgreSQL, how long a refresh waits for another replica refreshing the same
    /// tenant before it asks edX itself (at most half the request deadline).
    pub lock_wait: Duration,
    pub upstream: UpstreamSettings,
}

impl Default for VendingSettings {
    fn default() -> Self {
        Self {
            skew: Duration::from_secs(10),
            request_deadline: Duration::from_secs(12),
            scheduler_interval: Duration::from_secs(1),
            min_refresh_interval: Duration::from_secs(30),
            upstream_rate: NonZeroU32::new(60),
            caller_fetch_rate: NonZeroU32::new(10),
            lock_wait: Duration::from_secs(6),
            upstream: UpstreamSettings::default(),
        }
    }
}
