//! Fleet-wide rates kept by each replica as its share: the number of live replicas this
//! one sees (`FleetSize`, kept up to date by the fleet's heartbeat in `fleet::heartbeat`)
//! and governor rate limiters built for `1/n` of a rate (`Share`), rebuilt when `n`
//! changes. Deciding never waits on the database: the count is one atomic read.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use governor::Quota;

use crate::clock::{Clock, RateClock};

/// How often a replica tells the others it is alive, and how long the others count it
/// after its last word (PostgreSQL only; one process owns a SQLite store).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeartbeatSettings {
    pub interval: Duration,
    /// A replica not heard from for this long (on the service's clock) is not counted.
    pub window: Duration,
}

impl Default for HeartbeatSettings {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(5),
            window: Duration::from_secs(20),
        }
    }
}

/// The live replicas this one sees, itself included (at least 1).
#[derive(Debug)]
pub struct FleetSize {
    live: AtomicU32,
}

impl Default for FleetSize {
    fn default() -> Self {
        Self {
            live: AtomicU32::new(1),
        }
    }
}

impl FleetSize {
    pub fn live(&self) -> u32 {
        self.live.load(Ordering::Relaxed).max(1)
    }

    pub fn set(&self, live: u32) {
        self.live.store(live.max(1), Ordering::Relaxed);
    }
}

/// A rate meant for the whole fleet: `burst` requests per `per`, refilled evenly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FleetRate {
    pub burst: NonZeroU32,
    pub per: Duration,
}

impl FleetRate {
    pub fn per_second(burst: NonZeroU32) -> Self {
        Self {
            burst,
            per: Duration::from_secs(1),
        }
    }

    pub fn per_minute(burst: NonZeroU32) -> Self {
        Self {
            burst,
            per: Duration::from_secs(60),
        }
    }

    /// One replica's share while `replicas` are live: the refill spread over them (so the
    /// fleet together refills at the full rate) and the burst divided among them, rounded
    /// to the nearest and at least one (so `n` replicas allow `burst ± n/2` at once).
    pub fn share(&self, replicas: u32) -> Quota {
        let n = replicas.max(1);
        let burst = (f64::from(self.burst.get()) / f64::from(n)).round() as u32;
        let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
        Quota::with_period(self.per * n / self.burst.get())
            .unwrap_or_else(|| Quota::per_second(self.burst))
            .allow_burst(burst)
    }
}

/// What a replica's limiters are built on: the service's injectable clock (tests move
/// it) and the fleet's size.
#[derive(Clone)]
pub struct Sharing {
    pub clock: RateClock,
    pub fleet: Arc<FleetSize>,
}

impl Sharing {
    pub fn new(clock: Arc<dyn Clock>, fleet: Arc<FleetSize>) -> Self {
        Self {
            clock: RateClock(clock),
            fleet,
        }
    }

    /// A process alone (SQLite, unit tests).
    pub fn alone(clock: Arc<dyn Clock>) -> Self {
        Self::new(clock, Arc::default())
    }

    /// A limiter of this replica's share of `rate`, built by `build` from a quota.
    pub fn share<L>(&self, rate: FleetRate, build: fn(Quota, RateClock) -> L) -> Share<L> {
        let replicas = self.fleet.live();
        Share {
            current: ArcSwap::from_pointee(Built {
                replicas,
                limiter: build(rate.share(replicas), self.clock.clone()),
            }),
            rate,
            build,
            sharing: self.clone(),
        }
    }
}

struct Built<L> {
    replicas: u32,
    limiter: L,
}

/// A limiter (direct or keyed) for this replica's share of a fleet-wide rate. When the
/// fleet's size changes it is rebuilt for the new share, and starts full: a change of
/// size lets each caller one burst of the new share through early.
pub struct Share<L> {
    rate: FleetRate,
    build: fn(Quota, RateClock) -> L,
    sharing: Sharing,
    current: ArcSwap<Built<L>>,
}

impl<L> Share<L> {
    pub fn rate(&self) -> FleetRate {
        self.rate
    }

    /// Calls `check` with the limiter for the fleet's size now, and the clock.
    pub fn with<R>(&self, check: impl FnOnce(&L, &RateClock) -> R) -> R {
        let replicas = self.sharing.fleet.live();
        let current = self.current.load();
        if current.replicas == replicas {
            return check(&current.limiter, &self.sharing.clock);
        }
        let rebuilt = Arc::new(Built {
            replicas,
            limiter: (self.build)(self.rate.share(replicas), self.sharing.clock.clone()),
        });
        // Whoever swaps first wins; a request racing it checks the winner's limiter.
        let previous = self.current.compare_and_swap(&current, rebuilt.clone());
        if Arc::ptr_eq(&previous, &current) {
            check(&rebuilt.limiter, &self.sharing.clock)
        } else {
            check(&self.current.load().limiter, &self.sharing.clock)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(n: u32) -> NonZeroU32 {
        NonZeroU32::new(n).expect("non-zero")
    }

    #[test]
    fn a_share_refills_at_its_part_of_the_rate_with_a_rounded_burst_of_at_least_one() {
        let ten = FleetRate::per_second(rate(10));
        assert_eq!(ten.share(1), Quota::per_second(rate(10)));
        let third = ten.share(3);
        assert_eq!(third.burst_size(), rate(3));
        assert_eq!(third.replenish_interval(), Duration::from_millis(300));
        assert_eq!(ten.share(4).burst_size(), rate(3), "2.5 rounds up");
        assert_eq!(ten.share(30).burst_size(), rate(1), "never zero");
        let sixty = FleetRate::per_minute(rate(60)).share(3);
        assert_eq!(sixty.burst_size(), rate(20));
        assert_eq!(sixty.replenish_interval(), Duration::from_secs(3));
    }

    #[test]
    fn a_share_is_rebuilt_when_the_fleet_changes_size() {
        type Direct = governor::RateLimiter<
            governor::state::NotKeyed,
            governor::state::InMemoryState,
            RateClock,
            governor::middleware::NoOpMiddleware<Duration>,
        >;
        let clock = Arc::new(crate::clock::ManualClock::starting_now());
        let sharing = Sharing::alone(clock);
        let share: Share<Direct> =
            sharing.share(FleetRate::per_second(rate(9)), Direct::direct_with_clock);
        let burst = |share: &Share<Direct>| {
            (0..20)
                .take_while(|_| share.with(|l, _| l.check().is_ok()))
                .count()
        };
        assert_eq!(burst(&share), 9);
        sharing.fleet.set(3);
        assert_eq!(burst(&share), 3, "a third of the rate once three are live");
        sharing.fleet.set(0);
        assert_eq!(sharing.fleet.live(), 1, "a replica counts itself");
    }
}
