//! The caller fetch rate (`TOKENVEND_CALLER_FETCH_RATE`): how many edX fetches one caller
//! (a key or a workload identity) may trigger a minute through forced refreshes,
//! invalidations, the proxy's retries after a `401`, `min_ttl` and verifies together.
//! Without it one `token:*` or `proxy:*` key could spend the whole upstream budget that
//! every tenant shares. A governor GCRA bucket per caller, read on the engine's clock so
//! that tests move time instead of sleeping; on PostgreSQL each replica keeps its share
//! of the rate (`crate::share`), so the fleet together holds to it.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use governor::clock::Clock as GovernorClock;
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DashMapStateStore;
use governor::{Quota, RateLimiter};

use crate::clock::RateClock as EngineClock;
use crate::share::{FleetRate, Share, Sharing};

type Buckets =
    RateLimiter<String, DashMapStateStore<String>, EngineClock, NoOpMiddleware<Duration>>;

/// After this many charges, buckets that have refilled are dropped, so that the map holds
/// only the callers that triggered fetches within about the last minute.
const PRUNE_EVERY: u32 = 256;

pub struct CallerFetchRate {
    /// `None`: no limit (`0`).
    buckets: Option<Share<Buckets>>,
    charged: AtomicU32,
}

impl CallerFetchRate {
    /// `per_minute` fetches a minute per caller for the fleet, in bursts of as many; this
    /// replica keeps its share. `None` is no limit.
    pub fn new(per_minute: Option<NonZeroU32>, sharing: &Sharing) -> Self {
        fn build(quota: Quota, clock: EngineClock) -> Buckets {
            RateLimiter::new(quota, DashMapStateStore::default(), clock)
        }
        Self {
            buckets: per_minute.map(|n| sharing.share(FleetRate::per_minute(n), build)),
            charged: AtomicU32::new(0),
        }
    }

    /// Counts one fetch that `caller` triggers: `Ok` while it is within its rate, else how
    /// long until it may trigger another (nothing is counted then).
    pub fn charge(&self, caller: &str) -> Result<(), Duration> {
        let Some(buckets) = &self.buckets else {
            return Ok(());
        };
        let prune = self.charged.fetch_add(1, Ordering::Relaxed) % PRUNE_EVERY == PRUNE_EVERY - 1;
        buckets.with(|buckets, clock| {
            if prune {
                buckets.retain_recent();
                buckets.shrink_to_fit();
            }
            buckets.check_key(&caller.to_owned()).map_err(|not_until| {
                let wait: Duration = not_until.wait_time_from(clock.now());
                wait.max(Duration::from_secs(1))
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use std::sync::Arc;

    #[test]
    fn each_caller_has_its_own_minute_of_fetches_on_the_engine_clock() {
        let clock = Arc::new(ManualClock::starting_now());
        let rate = CallerFetchRate::new(NonZeroU32::new(3), &Sharing::alone(clock.clone()));
        for n in 0..3 {
            assert!(
                rate.charge("key-a").is_ok(),
                "fetch {n} is within the burst"
            );
        }
        let wait = rate
            .charge("key-a")
            .expect_err("the fourth is over the rate");
        assert!(
            wait >= Duration::from_secs(1) && wait <= Duration::from_secs(20),
            "{wait:?}"
        );
        assert!(
            rate.charge("key-b").is_ok(),
            "another caller is not affected"
        );
        clock.advance(Duration::from_secs(20));
        assert!(
            rate.charge("key-a").is_ok(),
            "one fetch refilled after 20 s"
        );
        assert!(rate.charge("key-a").is_err());
    }

    #[test]
    fn no_rate_is_no_limit() {
        let rate =
            CallerFetchRate::new(None, &Sharing::alone(Arc::new(ManualClock::starting_now())));
        for _ in 0..1000 {
            assert!(rate.charge("key").is_ok());
        }
    }
}
