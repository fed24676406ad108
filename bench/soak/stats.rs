//! What the soak records while it runs: answers per second by kind, latencies per minute,
//! edX calls per second, RSS samples and the faults injected.

use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// The kinds of request the driver sends.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Token = 0,
    Proxy = 1,
    Admin = 2,
    Invalidate = 3,
}

pub const KINDS: [Kind; 4] = [Kind::Token, Kind::Proxy, Kind::Admin, Kind::Invalidate];

/// Answers of one kind in one second (by the second the request was sent).
#[derive(Clone, Copy, Default)]
pub struct Counts {
    pub requests: u64,
    pub ok: u64,
    pub too_many: u64,
    pub other_4xx: u64,
    pub server_errors: u64,
    /// No HTTP answer: connection refused or reset, or the driver's 30 s timeout.
    pub no_answer: u64,
    /// Not sent: the driver's in-flight cap was reached (the service was slow).
    pub dropped: u64,
}

impl Counts {
    pub fn add(&mut self, other: &Counts) {
        self.requests += other.requests;
        self.ok += other.ok;
        self.too_many += other.too_many;
        self.other_4xx += other.other_4xx;
        self.server_errors += other.server_errors;
        self.no_answer += other.no_answer;
        self.dropped += other.dropped;
    }
}

#[derive(Clone, Default)]
pub struct Second {
    pub by_kind: [Counts; 4],
    /// The issuer's token calls so far, sampled at the end of this second.
    pub edx_calls: Option<u64>,
}

/// Latencies (microseconds) of answered token and proxy requests in one minute.
#[derive(Default)]
pub struct Minute {
    pub token: Vec<u32>,
    pub proxy: Vec<u32>,
}

pub struct RssSample {
    pub at: u64,
    pub replica: usize,
    pub generation: u32,
    pub mib: f64,
}

pub struct FaultRecord {
    pub name: String,
    pub at: u64,
    /// When the fault's action was over (replica back, database back, edX healthy).
    pub over: u64,
}

pub struct Stats {
    pub start: Instant,
    inner: Mutex<Inner>,
}

#[derive(Default)]
pub struct Inner {
    pub seconds: Vec<Second>,
    pub minutes: Vec<Minute>,
    pub rss: Vec<RssSample>,
    pub faults: Vec<FaultRecord>,
}

impl Stats {
    pub fn new() -> Self {
        Self {
            start: Instant::now(),
            inner: Mutex::new(Inner::default()),
        }
    }

    pub fn elapsed(&self) -> u64 {
        self.start.elapsed().as_secs()
    }

    /// Records one request sent at `sent`: its HTTP status, or `None` when none came back.
    pub fn record(&self, kind: Kind, sent: Instant, status: Option<u16>) {
        let latency = sent.elapsed();
        let second = sent.saturating_duration_since(self.start).as_secs() as usize;
        let mut inner = self.inner.lock();
        let counts = &mut slot(&mut inner.seconds, second).by_kind[kind as usize];
        counts.requests += 1;
        match status {
            None => counts.no_answer += 1,
            Some(200..=299) => counts.ok += 1,
            Some(429) => counts.too_many += 1,
            Some(400..=499) => counts.other_4xx += 1,
            Some(_) => counts.server_errors += 1,
        }
        if status.is_some() && matches!(kind, Kind::Token | Kind::Proxy) {
            let micros = latency.min(Duration::from_secs(3600)).as_micros() as u32;
            let minute = slot(&mut inner.minutes, second / 60);
            match kind {
                Kind::Token => minute.token.push(micros),
                _ => minute.proxy.push(micros),
            }
        }
    }

    pub fn dropped(&self, kind: Kind) {
        let second = self.elapsed() as usize;
        let mut inner = self.inner.lock();
        let counts = &mut slot(&mut inner.seconds, second).by_kind[kind as usize];
        counts.requests += 1;
        counts.dropped += 1;
    }

    pub fn edx_calls(&self, at: u64, calls: u64) {
        let mut inner = self.inner.lock();
        slot(&mut inner.seconds, at as usize).edx_calls = Some(calls);
    }

    pub fn rss(&self, sample: RssSample) {
        self.inner.lock().rss.push(sample);
    }

    pub fn fault(&self, fault: FaultRecord) {
        self.inner.lock().faults.push(fault);
    }

    pub fn take(&self) -> Inner {
        std::mem::take(&mut *self.inner.lock())
    }
}

fn slot<T: Default>(items: &mut Vec<T>, index: usize) -> &mut T {
    if items.len() <= index {
        items.resize_with(index + 1, T::default);
    }
    &mut items[index]
}

/// The `q` quantile (0..=1) of unsorted microsecond latencies, in milliseconds.
pub fn quantile_ms(values: &mut [u32], q: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_unstable();
    let rank = ((values.len() as f64 * q).ceil() as usize).clamp(1, values.len());
    Some(f64::from(values[rank - 1]) / 1000.0)
}
