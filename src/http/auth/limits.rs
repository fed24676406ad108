//! Request rates: each caller key's token bucket, and the budget of failed
//! authentications per client address (governor's GCRA, one atomic word per bucket, on
//! the service's injectable clock). On PostgreSQL both hold for the whole fleet: each
//! replica keeps its share of them, `1/n` with `n` the live replicas it sees through the
//! heartbeat (`crate::share`), so deciding never waits on the database.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use governor::clock::Clock as _;
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DashMapStateStore;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};

use crate::clock::RateClock;
use crate::share::{FleetRate, Share, Sharing};

pub use crate::services::MAX_KEY_RATE;

/// The failed authentications per minute allowed per client address by default.
pub const DEFAULT_AUTH_FAILURES: u32 = 60;

/// The limits set at start-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimitSettings {
    /// `TOKENVEND_KEY_RATE`: requests per second for keys without a `rate_limit` of
    /// their own (and the bootstrap admin key); `None` is unlimited.
    pub key_rate: Option<NonZeroU32>,
    /// `TOKENVEND_AUTH_FAILURES`: failed authentications per minute per client address;
    /// `None` is no limit.
    pub auth_failures: Option<NonZeroU32>,
}

impl Default for RateLimitSettings {
    fn default() -> Self {
        Self {
            key_rate: None,
            auth_failures: NonZeroU32::new(DEFAULT_AUTH_FAILURES),
        }
    }
}

/// One bucket, on the injectable clock.
type Bucket = RateLimiter<NotKeyed, InMemoryState, RateClock, NoOpMiddleware<Duration>>;

/// One key's token bucket: `rate` requests per second for the fleet, in bursts of up to
/// `rate`; this replica keeps its share.
pub struct KeyLimiter {
    bucket: Share<Bucket>,
}

impl KeyLimiter {
    pub fn new(rate: NonZeroU32, sharing: &Sharing) -> Self {
        Self {
            bucket: sharing.share(FleetRate::per_second(rate), Bucket::direct_with_clock),
        }
    }

    /// The fleet's rate (requests per second).
    pub fn rate(&self) -> NonZeroU32 {
        self.bucket.rate().burst
    }

    /// Takes one request from the bucket, or says how long until one is there.
    pub fn check(&self) -> Result<(), Duration> {
        self.bucket.with(|bucket, clock| {
            bucket
                .check()
                .map_err(|not_until| not_until.wait_time_from(clock.now()))
        })
    }
}

/// After this many failures counted, buckets that have refilled are dropped, so that
/// the map holds only the addresses that failed within about the last minute.
const PRUNE_EVERY: u32 = 1024;

/// The failed authentications allowed per client address.
type AddressBuckets =
    RateLimiter<IpAddr, DashMapStateStore<IpAddr>, RateClock, NoOpMiddleware<Duration>>;

pub struct FailureBudget {
    buckets: Share<AddressBuckets>,
    counted: AtomicU32,
}

impl FailureBudget {
    /// `failures` a minute per address for the fleet; this replica keeps its share.
    pub fn per_minute(failures: NonZeroU32, sharing: &Sharing) -> Self {
        fn build(quota: Quota, clock: RateClock) -> AddressBuckets {
            RateLimiter::new(quota, DashMapStateStore::default(), clock)
        }
        Self {
            buckets: sharing.share(FleetRate::per_minute(failures), build),
            counted: AtomicU32::new(0),
        }
    }

    /// Counts one failed authentication from `client`: `Ok` while its address is within
    /// the budget, else how long until another failure is allowed.
    pub fn fail(&self, client: IpAddr) -> Result<(), Duration> {
        let prune = self.counted.fetch_add(1, Ordering::Relaxed) % PRUNE_EVERY == PRUNE_EVERY - 1;
        self.buckets.with(|buckets, clock| {
            if prune {
                buckets.retain_recent();
                buckets.shrink_to_fit();
            }
            buckets
                .check_key(&bucket_of(client))
                .map_err(|not_until| not_until.wait_time_from(clock.now()))
        })
    }

    /// How many addresses have a bucket now (for tests).
    pub fn tracked(&self) -> usize {
        self.buckets.with(|buckets, _| buckets.len())
    }
}

/// The bucket an address counts against: an IPv4 address itself (also when written as
/// IPv4-mapped IPv6), an IPv6 address by its /64, the least one host is usually given.
fn bucket_of(client: IpAddr) -> IpAddr {
    match client {
        IpAddr::V4(_) => client,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !u128::from(u64::MAX)).into()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(n: u32) -> NonZeroU32 {
        NonZeroU32::new(n).expect("non-zero")
    }

    fn alone() -> Sharing {
        Sharing::alone(std::sync::Arc::new(crate::clock::SystemClock))
    }

    #[test]
    fn a_key_gets_its_burst_then_waits_about_one_interval() {
        let limiter = KeyLimiter::new(rate(2), &alone());
        assert!(limiter.check().is_ok());
        assert!(limiter.check().is_ok());
        let wait = limiter.check().expect_err("the third is over the rate");
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_millis(500),
            "{wait:?}"
        );
    }

    #[test]
    fn failures_are_counted_per_address_and_per_ipv6_prefix() {
        let budget = FailureBudget::per_minute(rate(2), &alone());
        let a: IpAddr = "192.0.2.1".parse().expect("ip");
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().expect("ip");
        let b: IpAddr = "192.0.2.2".parse().expect("ip");
        assert!(budget.fail(a).is_ok());
        assert!(budget.fail(mapped).is_ok());
        let wait = budget.fail(a).expect_err("over the budget");
        assert!(
            wait > Duration::from_secs(20) && wait <= Duration::from_secs(30),
            "{wait:?}"
        );
        assert!(budget.fail(b).is_ok(), "another address has its own budget");

        let host: IpAddr = "2001:db8:1:2::1".parse().expect("ip");
        let same_prefix: IpAddr = "2001:db8:1:2:ffff::9".parse().expect("ip");
        assert!(budget.fail(host).is_ok());
        assert!(budget.fail(same_prefix).is_ok());
        assert!(budget.fail(host).is_err(), "one /64 shares one budget");
        assert_eq!(budget.tracked(), 3);
    }

    #[test]
    fn buckets_are_pruned_as_failures_are_counted() {
        let budget = FailureBudget::per_minute(rate(60), &alone());
        for i in 0..PRUNE_EVERY - 1 {
            let ip = IpAddr::V4((0x0A00_0000 + i).into());
            let _ = budget.fail(ip);
        }
        assert_eq!(budget.tracked(), (PRUNE_EVERY - 1) as usize);
        // Pruning drops only buckets that have refilled; these are all recent, so they
        // stay: the bound is "the addresses that failed within the last minute".
        let _ = budget.fail("10.255.0.1".parse().expect("ip"));
        assert_eq!(budget.tracked(), PRUNE_EVERY as usize);
    }
}
