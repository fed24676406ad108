//! The upstream budget: every token request to edX, whatever triggered it, is taken from a
//! token bucket per token-endpoint host (`TOKENVEND_UPSTREAM_RATE` per minute, a minute's
//! worth of burst). The bucket lives in the store where a fleet shares it (PostgreSQL)
//! and in this process otherwise (SQLite, or while the store is unreachable).
//!
//! When it runs short, tenants with no servable token go first: they may reserve a
//! request that comes due before their caller's deadline (and wait for it), while every
//! other fetch (refresh-ahead, scheduled, a caller-triggered fetch over a servable token)
//! leaves a quarter of the bucket to them and is put off when it would dip into it.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use parking_lot::Mutex;
use serde::Serialize;

use super::breaker::{Breakers, Circuit};
use crate::telemetry::metrics::Metrics;

/// The bucket of one host: a minute's worth of requests, refilled continuously.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BudgetRule {
    /// Requests the bucket holds at most (the burst).
    pub capacity: f64,
    /// Requests added per second.
    pub per_second: f64,
}

impl BudgetRule {
    /// The rule of `per_minute` requests a minute; `None` for `0` (no budget).
    pub fn per_minute(per_minute: u32) -> Option<Self> {
        (per_minute > 0).then(|| Self {
            capacity: f64::from(per_minute),
            per_second: f64::from(per_minute) / 60.0,
        })
    }

    /// What is left for fetches that can wait: a quarter of the bucket (rounded down) is
    /// kept for tenants with no servable token.
    pub fn reserve(&self) -> f64 {
        (self.capacity / 4.0).floor()
    }

    /// The level after refilling `level` for `elapsed` seconds.
    pub fn refilled(&self, level: f64, elapsed: f64) -> f64 {
        (level + elapsed.max(0.0) * self.per_second).min(self.capacity)
    }

    /// How long until a bucket at `level` can give one request leaving at least `floor`.
    pub fn wait_until_above(&self, level: f64, floor: f64) -> Duration {
        let missing = (floor + 1.0 - level).max(0.0);
        Duration::from_secs_f64(missing / self.per_second)
    }
}

/// Who asks, and so how deep into the bucket it may reach.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Priority {
    /// The tenant has no servable token: its callers are failing without one.
    Urgent,
    /// A caller asks for more than the servable token held (a forced refresh, `min_ttl`):
    /// it stays out of the reserve and is refused when the bucket is that low.
    Caller,
    /// A refresh ahead of time (on a request, or scheduled): it stays out of the reserve
    /// and is put off when the bucket is that low.
    Background,
}

impl Priority {
    fn label(self) -> &'static str {
        match self {
            Priority::Urgent => "urgent",
            Priority::Caller => "caller",
            Priority::Background => "background",
        }
    }
}

/// What the bucket said to one ask.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Take {
    /// Taken; the level left (below zero: a reservation, due once the debt is refilled).
    Granted { level: f64 },
    /// Not taken: the level now is too low for the ask.
    Short { level: f64 },
}

/// One host's bucket kept in this process.
#[derive(Debug, Clone, Copy)]
pub struct Bucket {
    level: f64,
    at: DateTime<Utc>,
}

impl Bucket {
    pub fn full(rule: &BudgetRule, now: DateTime<Utc>) -> Self {
        Self {
            level: rule.capacity,
            at: now,
        }
    }

    /// Takes one request if that leaves at least `floor` (the same rule the store's SQL
    /// applies to the fleet's bucket).
    pub fn take(&mut self, rule: &BudgetRule, now: DateTime<Utc>, floor: f64) -> Take {
        let elapsed = (now - self.at).num_milliseconds() as f64 / 1000.0;
        let level = rule.refilled(self.level, elapsed);
        if level - 1.0 >= floor {
            self.level = level - 1.0;
            self.at = now.max(self.at);
            Take::Granted { level: self.level }
        } else {
            Take::Short { level }
        }
    }
}

/// What the budget did for one host, for `/metrics`, `/upstream/budget` and the dashboard.
#[derive(Debug, Clone, Default, Serialize)]
pub struct HostBudget {
    pub host: String,
    /// Requests left in the bucket when last seen (0 while reservations are owed).
    pub remaining: f64,
    /// Requests that waited for their turn.
    pub waits: u64,
    /// Background refreshes put off for later.
    pub deferred: u64,
    /// Fetches refused (their callers got `503` with `Retry-After`).
    pub refused: u64,
    /// edX's clock minus ours, from the last token fetched from this host (see
    /// `skew.rs`); `None` until measured.
    pub clock_offset_seconds: Option<f64>,
    /// The host's circuit breaker (`breaker.rs`): `open` while edX is failing every
    /// token request and none is sent, `probing` while one tests it.
    pub circuit: Circuit,
}

/// The budget as `GET /upstream/budget` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct BudgetReport {
    /// `TOKENVEND_UPSTREAM_RATE`; `null` when unlimited.
    pub rate_per_minute: Option<u32>,
    pub hosts: Vec<HostBudget>,
}

/// Where the engine asks: the rule, the buckets kept in this process, and the counts.
pub struct UpstreamBudget {
    rule: Option<BudgetRule>,
    metrics: Arc<Metrics>,
    local: Mutex<HashMap<String, Bucket>>,
    hosts: Mutex<HashMap<String, HostBudget>>,
    /// Whether each host is failing every token request (asked before the bucket).
    pub breakers: Breakers,
}

/// Why a fetch could not be made now, and when to ask again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Short {
    pub retry_after: Duration,
}

impl UpstreamBudget {
    pub fn new(per_minute: Option<NonZeroU32>, metrics: Arc<Metrics>) -> Self {
        Self {
            rule: per_minute.and_then(|n| BudgetRule::per_minute(n.get())),
            metrics,
            local: Mutex::new(HashMap::new()),
            hosts: Mutex::new(HashMap::new()),
            breakers: Breakers::default(),
        }
    }

    pub fn rule(&self) -> Option<BudgetRule> {
        self.rule
    }

    /// The lowest level an ask may leave: the reserve for deferrable ones; for urgent ones
    /// a debt that is refilled by `deadline` (a reservation its caller can wait for).
    pub fn floor(rule: &BudgetRule, priority: Priority, deadline: Instant) -> f64 {
        match priority {
            Priority::Caller | Priority::Background => rule.reserve(),
            Priority::Urgent => {
                // A second is left for the request itself.
                let wait = deadline
                    .saturating_duration_since(Instant::now())
                    .saturating_sub(Duration::from_secs(1));
                -(wait.as_secs_f64() * rule.per_second)
            }
        }
    }

    /// Takes one request from this process's bucket of `host`.
    pub fn take_local(
        &self,
        rule: &BudgetRule,
        host: &str,
        now: DateTime<Utc>,
        floor: f64,
    ) -> Take {
        let mut buckets = self.local.lock();
        let bucket = buckets
            .entry(host.to_owned())
            .or_insert_with(|| Bucket::full(rule, now));
        bucket.take(rule, now, floor)
    }

    /// Turns what the bucket said into a wait (for a reservation) or a refusal, and counts.
    pub fn settle(
        &self,
        rule: &BudgetRule,
        host: &str,
        priority: Priority,
        floor: f64,
        take: Take,
    ) -> Result<Duration, Short> {
        let mut hosts = self.hosts.lock();
        let stats = hosts.entry(host.to_owned()).or_insert_with(|| HostBudget {
            host: host.to_owned(),
            ..HostBudget::default()
        });
        match take {
            Take::Granted { level } => {
                stats.remaining = level.max(0.0);
                let wait = rule.wait_until_above(level, -1.0);
                let outcome = if wait.is_zero() {
                    "granted"
                } else {
                    stats.waits += 1;
                    "waited"
                };
                self.metrics.observe_budget(host, outcome, stats.remaining);
                Ok(wait)
            }
            Take::Short { level } => {
                stats.remaining = level.max(0.0);
                let outcome = match priority {
                    Priority::Background => {
                        stats.deferred += 1;
                        "deferred"
                    }
                    Priority::Urgent | Priority::Caller => {
                        stats.refused += 1;
                        "refused"
                    }
                };
                self.metrics.observe_budget(host, outcome, stats.remaining);
                tracing::debug!(
                    host,
                    priority = priority.label(),
                    remaining = level,
                    "upstream budget short"
                );
                let retry_after = rule
                    .wait_until_above(level, floor)
                    .max(Duration::from_secs(1));
                Err(Short { retry_after })
            }
        }
    }

    /// Records the clock offset measured against `host`; returns the one before.
    pub fn record_clock_offset(&self, host: &str, offset: f64) -> Option<f64> {
        self.metrics.set_clock_offset(host, offset);
        let mut hosts = self.hosts.lock();
        let stats = hosts.entry(host.to_owned()).or_insert_with(|| HostBudget {
            host: host.to_owned(),
            ..HostBudget::default()
        });
        stats.clock_offset_seconds.replace(offset)
    }

    /// Shows a change of `host`'s circuit breaker in the metrics and the report.
    pub fn note_circuit(&self, host: &str, circuit: Circuit) {
        self.metrics
            .set_circuit_open(host, circuit != Circuit::Closed);
        self.hosts
            .lock()
            .entry(host.to_owned())
            .or_insert_with(|| HostBudget {
                host: host.to_owned(),
                ..HostBudget::default()
            });
    }

    /// Every host asked about or measured so far, by name.
    pub fn hosts(&self) -> Vec<HostBudget> {
        let mut hosts: Vec<HostBudget> = self
            .hosts
            .lock()
            .values()
            .cloned()
            .map(|host| HostBudget {
                circuit: self.breakers.circuit(&host.host),
                ..host
            })
            .collect();
        hosts.sort_by(|a, b| a.host.cmp(&b.host));
        hosts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + secs, 0).expect("time")
    }

    #[test]
    fn a_bucket_gives_its_burst_then_one_request_per_interval() {
        let rule = BudgetRule::per_minute(10).expect("rule");
        let mut bucket = Bucket::full(&rule, at(0));
        let granted = (0..30)
            .filter(|_| matches!(bucket.take(&rule, at(0), 0.0), Take::Granted { .. }))
            .count();
        assert_eq!(granted, 10, "a minute's worth at once");
        assert!(matches!(bucket.take(&rule, at(5), 0.0), Take::Short { .. }));
        assert!(matches!(
            bucket.take(&rule, at(6), 0.0),
            Take::Granted { .. }
        ));
        assert!(matches!(bucket.take(&rule, at(7), 0.0), Take::Short { .. }));
    }

    #[test]
    fn deferrable_asks_leave_the_reserve_to_urgent_ones() {
        let rule = BudgetRule::per_minute(8).expect("rule");
        assert_eq!(rule.reserve(), 2.0);
        let mut bucket = Bucket::full(&rule, at(0));
        for _ in 0..6 {
            assert!(matches!(
                bucket.take(&rule, at(0), rule.reserve()),
                Take::Granted { .. }
            ));
        }
        assert!(
            matches!(bucket.take(&rule, at(0), rule.reserve()), Take::Short { level } if level == 2.0),
            "a deferrable ask stops at the reserve"
        );
        assert!(matches!(
            bucket.take(&rule, at(0), 0.0),
            Take::Granted { .. }
        ));
        assert!(matches!(
            bucket.take(&rule, at(0), 0.0),
            Take::Granted { .. }
        ));
        assert!(matches!(bucket.take(&rule, at(0), 0.0), Take::Short { .. }));
    }

    #[test]
    fn an_urgent_ask_reserves_a_request_due_before_its_deadline() {
        let rule = BudgetRule::per_minute(60).expect("rule");
        let mut bucket = Bucket {
            level: 0.0,
            at: at(0),
        };
        // Three seconds of debt allowed: three reservations, due in 1, 2 and 3 s.
        let waits: Vec<f64> = (0..4)
            .map(|_| match bucket.take(&rule, at(0), -3.0) {
                Take::Granted { level } => rule.wait_until_above(level, -1.0).as_secs_f64(),
                Take::Short { .. } => f64::INFINITY,
            })
            .collect();
        assert_eq!(waits, vec![1.0, 2.0, 3.0, f64::INFINITY]);
    }

    #[test]
    fn a_refusal_says_when_to_ask_again() {
        let budget = UpstreamBudget::new(NonZeroU32::new(6), Arc::new(Metrics::new()));
        let rule = budget.rule().expect("rule");
        let short = budget.settle(
            &rule,
            "edx.example",
            Priority::Urgent,
            0.0,
            Take::Short { level: 0.5 },
        );
        assert_eq!(
            short,
            Err(Short {
                retry_after: Duration::from_secs(5)
            })
        );
        let granted = budget.settle(
            &rule,
            "edx.example",
            Priority::Urgent,
            -1.0,
            Take::Granted { level: -0.5 },
        );
        assert_eq!(granted, Ok(Duration::from_secs(5)));
        let hosts = budget.hosts();
        assert_eq!((hosts[0].refused, hosts[0].waits), (1, 1));
        let metrics = budget.metrics.render(&[], std::iter::empty());
        assert!(metrics.contains(
            "tokenvend_upstream_budget_asks_total{host=\"edx.example\",outcome=\"waited\"} 1"
        ));
        assert!(BudgetRule::per_minute(0).is_none(), "0 means no budget");
    }
}
