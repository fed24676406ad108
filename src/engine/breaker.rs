//! The circuit breaker of each edX token host: when edX fails every token request, stop
//! asking it for every tenant at once instead of each tenant retrying on its own.
//!
//! Per-tenant cool-downs and the upstream budget bound what one tenant, and all of them
//! together, may ask; neither notices that the host itself is down, so during an outage
//! a thousand tenants each spent their attempts and the fleet spent its whole budget on
//! failures (the soak in BENCHMARKS.md: ~2,700 calls in a 40-second outage). After
//! [`TRIP_AFTER`] fetches in a row failed (each after its own retries: a timeout, a
//! connection error, a 5xx) the host is *open*: no token request is sent to it until the
//! open period ends; then exactly one request (the probe) goes, and the others wait for
//! its answer. A probe that succeeds closes the breaker; one that fails opens it again
//! for twice as long ([`FIRST_OPEN`] doubling up to [`LONGEST_OPEN`]; a 503's
//! `Retry-After` when longer). edX refusing a tenant's credentials is an answer, not an
//! outage: it counts as a success here (and as that tenant's own failure elsewhere); a
//! 429 or an answer that is not a token counts neither way (usually one client's or one
//! URL's trouble, which that tenant's cool-down handles).
//!
//! Hand-written rather than a crate's: the one circuit-breaker crate in wide use
//! (`failsafe`) lets every call through while half-open (a burst of failures when edX is
//! still down) and reads `std::time::Instant`, which the engine's injectable clock cannot
//! move in tests. Each replica keeps its own breakers: a fleet of n sends at most n
//! probes per open period.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use parking_lot::Mutex;
use serde::Serialize;

use crate::outbound::upstream::UpstreamError;

/// Failed fetches in a row (each after its retries) that open a host's breaker.
pub const TRIP_AFTER: u32 = 5;
/// How long a breaker first stays open.
pub const FIRST_OPEN: Duration = Duration::from_secs(2);
/// The longest a breaker stays open before probing again.
pub const LONGEST_OPEN: Duration = Duration::from_secs(30);
/// A probe not heard of within this long (its fetch was dropped) lets another one go.
const PROBE_LOST_AFTER: Duration = Duration::from_secs(30);

/// A breaker's state as `GET /upstream/budget` shows it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Circuit {
    /// Token requests go to the host.
    #[default]
    Closed,
    /// None goes until the open period ends.
    Open,
    /// One request (the probe) is out; the others wait for its answer.
    Probing,
}

#[derive(Debug, Clone, Copy)]
struct HostBreaker {
    failures_in_a_row: u32,
    /// The last open period (doubled at each failed probe); zero while closed.
    open_for: Duration,
    state: State,
}

#[derive(Debug, Clone, Copy)]
enum State {
    Closed,
    Open { until: DateTime<Utc> },
    Probing { since: DateTime<Utc> },
}

impl Default for HostBreaker {
    fn default() -> Self {
        Self {
            failures_in_a_row: 0,
            open_for: Duration::ZERO,
            state: State::Closed,
        }
    }
}

/// Whether an attempt may go to the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Yes; `probe` when it is the one request that tests an open host.
    Go { probe: bool },
    /// Not now: the host is failing; ask again after `retry_after`.
    Refused { retry_after: Duration },
}

/// The breakers of every token host this process has asked.
#[derive(Debug, Default)]
pub struct Breakers {
    hosts: Mutex<HashMap<String, HostBreaker>>,
}

impl Breakers {
    /// Asked before every attempt to `host`.
    pub fn admit(&self, host: &str, now: DateTime<Utc>) -> Admission {
        let mut hosts = self.hosts.lock();
        let Some(breaker) = hosts.get_mut(host) else {
            return Admission::Go { probe: false };
        };
        match breaker.state {
            State::Closed => Admission::Go { probe: false },
            State::Open { until } if now < until => Admission::Refused {
                retry_after: seconds_until(now, until),
            },
            State::Probing { since } if now < since + chrono_of(PROBE_LOST_AFTER) => {
                Admission::Refused {
                    retry_after: Duration::from_secs(1),
                }
            }
            State::Open { .. } | State::Probing { .. } => {
                breaker.state = State::Probing { since: now };
                Admission::Go { probe: true }
            }
        }
    }

    /// What an attempt to `host` came to; returns the new state when it changed.
    pub fn record(
        &self,
        host: &str,
        outcome: &Result<(), &UpstreamError>,
        now: DateTime<Utc>,
    ) -> Option<Circuit> {
        let heard = match outcome {
            Ok(()) => Heard::Answer,
            Err(error) => heard(error),
        };
        let mut hosts = self.hosts.lock();
        let failure = match heard {
            Heard::Nothing => return None,
            Heard::Failure(at_least) => at_least,
            Heard::Answer => {
                // An answer: the host works.
                let breaker = hosts.get_mut(host)?;
                let was = breaker.circuit();
                *breaker = HostBreaker::default();
                return (was != Circuit::Closed).then_some(Circuit::Closed);
            }
        };
        let breaker = hosts.entry(host.to_owned()).or_default();
        breaker.failures_in_a_row = breaker.failures_in_a_row.saturating_add(1);
        let open_for = match breaker.state {
            // The probe failed: twice as long.
            State::Probing { .. } => (breaker.open_for * 2).min(LONGEST_OPEN),
            State::Closed if breaker.failures_in_a_row >= TRIP_AFTER => FIRST_OPEN,
            // Already open (an attempt sent before it opened), or not yet enough failures.
            State::Open { .. } | State::Closed => return None,
        };
        // edX's own `Retry-After` is honoured, within reason.
        let open_for = open_for.max(failure.min(Duration::from_secs(600)));
        breaker.open_for = open_for;
        breaker.state = State::Open {
            until: now + chrono_of(open_for),
        };
        Some(Circuit::Open)
    }

    /// A probe admitted but never sent (the budget refused it): the next ask probes.
    pub fn release(&self, host: &str, now: DateTime<Utc>) {
        if let Some(breaker) = self.hosts.lock().get_mut(host) {
            if matches!(breaker.state, State::Probing { .. }) {
                breaker.state = State::Open { until: now };
            }
        }
    }

    /// The state of `host`'s breaker (closed for a host never asked).
    pub fn circuit(&self, host: &str) -> Circuit {
        self.hosts
            .lock()
            .get(host)
            .map_or(Circuit::Closed, HostBreaker::circuit)
    }
}

impl HostBreaker {
    fn circuit(&self) -> Circuit {
        match self.state {
            State::Closed => Circuit::Closed,
            State::Open { .. } => Circuit::Open,
            State::Probing { .. } => Circuit::Probing,
        }
    }
}

/// What an attempt's error says of its host.
enum Heard {
    /// It answered: refusing a credential or a request's form is an answer.
    Answer,
    /// It is failing, and asks to be left alone at least this long (a 503's
    /// `Retry-After`; zero when it said nothing).
    Failure(Duration),
    /// Nothing was sent (tokenvend's own budget or breaker).
    Nothing,
}

fn heard(error: &UpstreamError) -> Heard {
    match error {
        UpstreamError::Unavailable { retry_after, .. } => {
            Heard::Failure(retry_after.unwrap_or_default())
        }
        UpstreamError::Timeout(_) => Heard::Failure(Duration::ZERO),
        UpstreamError::Rejected { .. } => Heard::Answer,
        // A throttle or a non-token answer is most often about one client or one token
        // URL (edX limits each client; a wrong path answers HTML): that tenant's own
        // cool-down deals with it, and it neither opens the host nor vouches for it.
        UpstreamError::Throttled { .. }
        | UpstreamError::InvalidResponse { .. }
        | UpstreamError::OverBudget { .. }
        | UpstreamError::HostFailing { .. } => Heard::Nothing,
    }
}

fn chrono_of(duration: Duration) -> chrono::Duration {
    chrono::Duration::from_std(duration).unwrap_or(chrono::Duration::MAX)
}

/// Whole seconds until `until`, at least one (a `Retry-After`).
fn seconds_until(now: DateTime<Utc>, until: DateTime<Utc>) -> Duration {
    let millis = (until - now).num_milliseconds().max(0).unsigned_abs();
    Duration::from_secs(millis.div_ceil(1000).max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOST: &str = "edx.example";

    fn at(millis: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(1_800_000_000_000 + millis).expect("time")
    }

    fn down() -> UpstreamError {
        UpstreamError::Unavailable {
            status: Some(500),
            detail: "HTTP 500".into(),
            retry_after: None,
        }
    }

    fn fail(breakers: &Breakers, now: DateTime<Utc>) -> Option<Circuit> {
        breakers.record(HOST, &Err(&down()), now)
    }

    #[test]
    fn five_failures_in_a_row_open_the_host_and_refuse_until_the_open_period_ends() {
        let breakers = Breakers::default();
        for _ in 1..TRIP_AFTER {
            assert_eq!(fail(&breakers, at(0)), None);
            assert_eq!(breakers.admit(HOST, at(0)), Admission::Go { probe: false });
        }
        assert_eq!(fail(&breakers, at(0)), Some(Circuit::Open));
        assert_eq!(
            breakers.admit(HOST, at(500)),
            Admission::Refused {
                retry_after: Duration::from_secs(2)
            }
        );
        assert_eq!(
            breakers.admit("other.example", at(500)),
            Admission::Go { probe: false },
            "another host is not affected"
        );
        // Attempts sent before it opened and failing afterwards change nothing, and
        // neither do fetches that were never sent.
        assert_eq!(fail(&breakers, at(600)), None);
        let refused = UpstreamError::HostFailing {
            retry_after: Duration::from_secs(2),
        };
        assert_eq!(breakers.record(HOST, &Err(&refused), at(700)), None);
        assert_eq!(breakers.circuit(HOST), Circuit::Open);
    }

    #[test]
    fn an_answer_between_failures_keeps_the_host_closed() {
        let breakers = Breakers::default();
        for n in 0..20 {
            fail(&breakers, at(n));
            if n % 4 == 3 {
                let rejected = UpstreamError::Rejected {
                    status: 401,
                    code: "invalid_client".into(),
                };
                breakers.record(HOST, &Err(&rejected), at(n));
            }
        }
        assert_eq!(breakers.circuit(HOST), Circuit::Closed);
    }

    #[test]
    fn throttles_and_garbage_answers_neither_open_the_host_nor_vouch_for_it() {
        let breakers = Breakers::default();
        let throttled = UpstreamError::Throttled {
            status: 429,
            retry_after: None,
        };
        let garbage = UpstreamError::InvalidResponse {
            status: 200,
            detail: "not JSON".into(),
        };
        for _ in 0..10 {
            breakers.record(HOST, &Err(&throttled), at(0));
            breakers.record(HOST, &Err(&garbage), at(0));
        }
        assert_eq!(breakers.circuit(HOST), Circuit::Closed);
        for _ in 1..TRIP_AFTER {
            fail(&breakers, at(0));
            breakers.record(HOST, &Err(&throttled), at(0));
        }
        assert_eq!(
            fail(&breakers, at(0)),
            Some(Circuit::Open),
            "failures still in a row"
        );
    }

    #[test]
    fn one_probe_at_a_time_and_a_failed_probe_doubles_the_open_period() {
        let breakers = Breakers::default();
        for _ in 0..TRIP_AFTER {
            fail(&breakers, at(0));
        }
        assert_eq!(
            breakers.admit(HOST, at(2_000)),
            Admission::Go { probe: true }
        );
        assert!(
            matches!(breakers.admit(HOST, at(2_001)), Admission::Refused { .. }),
            "the others wait for the probe"
        );
        assert_eq!(fail(&breakers, at(2_500)), Some(Circuit::Open));
        assert_eq!(
            breakers.admit(HOST, at(2_500)),
            Admission::Refused {
                retry_after: Duration::from_secs(4)
            }
        );
        // Doubling up to the longest open period.
        let mut now = 2_500;
        for _ in 0..10 {
            let Admission::Refused { retry_after } = breakers.admit(HOST, at(now)) else {
                panic!("open")
            };
            now += i64::try_from(retry_after.as_millis()).expect("millis");
            assert_eq!(breakers.admit(HOST, at(now)), Admission::Go { probe: true });
            fail(&breakers, at(now));
        }
        assert_eq!(
            breakers.admit(HOST, at(now)),
            Admission::Refused {
                retry_after: LONGEST_OPEN
            }
        );
    }

    #[test]
    fn a_probe_that_succeeds_closes_the_host() {
        let breakers = Breakers::default();
        for _ in 0..TRIP_AFTER {
            fail(&breakers, at(0));
        }
        assert_eq!(
            breakers.admit(HOST, at(2_000)),
            Admission::Go { probe: true }
        );
        assert_eq!(
            breakers.record(HOST, &Ok(()), at(2_100)),
            Some(Circuit::Closed)
        );
        assert_eq!(
            breakers.admit(HOST, at(2_100)),
            Admission::Go { probe: false }
        );
        // And it takes five failures again to open.
        for _ in 1..TRIP_AFTER {
            assert_eq!(fail(&breakers, at(2_200)), None);
        }
        assert_eq!(fail(&breakers, at(2_200)), Some(Circuit::Open));
    }

    #[test]
    fn a_lost_probe_lets_another_go_and_a_retry_after_is_honoured() {
        let breakers = Breakers::default();
        for _ in 0..TRIP_AFTER {
            fail(&breakers, at(0));
        }
        assert_eq!(
            breakers.admit(HOST, at(2_000)),
            Admission::Go { probe: true }
        );
        assert_eq!(
            breakers.admit(HOST, at(32_000)),
            Admission::Go { probe: true },
            "nobody heard of the first probe in 30 s"
        );
        let unavailable = UpstreamError::Unavailable {
            status: Some(503),
            detail: "HTTP 503".into(),
            retry_after: Some(Duration::from_secs(45)),
        };
        breakers.record(HOST, &Err(&unavailable), at(32_000));
        assert_eq!(
            breakers.admit(HOST, at(32_000)),
            Admission::Refused {
                retry_after: Duration::from_secs(45)
            }
        );
    }
}
