//! The soak's markdown report: RSS over time and its growth after warm-up, latency per
//! minute, 5xx per fault window, edX token calls against the ideal, and webhook events
//! committed against delivered.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::receiver::Received;
use crate::stats::{quantile_ms, Counts, Inner, Kind, RssSample, KINDS};
use crate::traffic::{Rates, Tally};

pub struct Input<'a> {
    pub replicas: usize,
    pub tenants: usize,
    pub lifetime: Duration,
    pub duration: Duration,
    pub rates: &'a Rates,
    pub fault_every: Duration,
    pub warm_up: Duration,
    pub edx_calls: u64,
    pub tally: Tally,
    pub recorded: Inner,
    pub received: Received,
    /// (event id, type, delivery status) from the outbox.
    pub committed: Vec<(String, String, String)>,
    pub pending: i64,
    /// Why the fault schedule stopped early, if it did.
    pub fault_error: Option<String>,
}

pub fn print(mut input: Input<'_>) -> anyhow::Result<()> {
    let date = chrono::Utc::now().format("%Y-%m-%d");
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "Soak on {date}, {cores} cores: {} replicas, {} tenants, token lifetime {} s, {} s of traffic",
        input.replicas,
        input.tenants,
        input.lifetime.as_secs(),
        input.duration.as_secs()
    );
    println!();
    let r = input.rates;
    println!(
        "Traffic: {:.0} token hits/s and {:.0} proxied calls/s on random tenants, {:.0} tenant \
         PATCH/s (name only), a tenant created and one deleted every {} s, an invalidation \
         every {} s; a fault every {} s; warm-up {} s; `TOKENVEND_UPSTREAM_RATE={}`; \
         tally: {:?}",
        r.token_per_second,
        r.proxy_per_second,
        r.patch_per_second,
        r.churn_every.as_secs(),
        r.invalidate_every.as_secs(),
        input.fault_every.as_secs(),
        input.warm_up.as_secs(),
        crate::setup::UPSTREAM_RATE,
        TallyView(&input.tally),
    );
    if let Some(error) = &input.fault_error {
        println!("\n**The fault schedule stopped early: {error}**");
    }
    rss(&input);
    per_minute(&mut input);
    per_fault(&input);
    edx_calls(&input);
    events(&input);
    Ok(())
}

struct TallyView<'a>(&'a Tally);

impl std::fmt::Debug for TallyView<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let t = self.0;
        write!(
            f,
            "{} PATCHes, {} tenants created ({} with a token), {} deleted, {} invalidations \
             ({} fingerprint mismatches, {} refused 429)",
            t.patched,
            t.created,
            t.created_with_token,
            t.deleted,
            t.invalidated,
            t.invalidate_mismatch,
            t.invalidate_refused
        )
    }
}

fn rss(input: &Input<'_>) {
    let samples = &input.recorded.rss;
    println!("\n#### RSS per replica (MiB; the last 10-second sample of each minute; * a restarted process)\n");
    let header: Vec<String> = (0..input.replicas)
        .map(|i| format!("replica {i}"))
        .collect();
    println!("| minute | {} |", header.join(" | "));
    println!("| --- |{}", " --- |".repeat(input.replicas));
    let minutes = input.duration.as_secs().div_ceil(60);
    for minute in 0..minutes {
        let cells: Vec<String> = (0..input.replicas)
            .map(|replica| {
                samples
                    .iter()
                    .rev()
                    .find(|s| s.replica == replica && s.at / 60 == minute)
                    .map_or("–".to_owned(), |s| {
                        format!("{:.1}{}", s.mib, if s.generation > 0 { "*" } else { "" })
                    })
            })
            .collect();
        println!("| {} | {} |", minute + 1, cells.join(" | "));
    }
    println!(
        "\nGrowth after warm-up: the median of a process's first three samples from {} s \
         after the run's (or its own) start against the median of its last three.\n",
        input.warm_up.as_secs()
    );
    println!("| replica | process | after warm-up (MiB) | at the end (MiB) | growth |");
    println!("| --- | --- | --- | --- | --- |");
    let mut processes: BTreeMap<(usize, u32), Vec<&RssSample>> = BTreeMap::new();
    for sample in samples {
        processes
            .entry((sample.replica, sample.generation))
            .or_default()
            .push(sample);
    }
    for ((replica, generation), series) in processes {
        let born = series.first().map_or(0, |s| s.at);
        let from = if generation == 0 { 0 } else { born } + input.warm_up.as_secs();
        let steady: Vec<f64> = series
            .iter()
            .filter(|s| s.at >= from)
            .map(|s| s.mib)
            .collect();
        let process = if generation == 0 {
            "first".to_owned()
        } else {
            format!("restart {generation} (at {born} s)")
        };
        if steady.len() < 6 {
            println!("| {replica} | {process} | too short | | |");
            continue;
        }
        let start = median(&steady[..3]);
        let end = median(&steady[steady.len() - 3..]);
        println!(
            "| {replica} | {process} | {start:.1} | {end:.1} | {:+.1} % |",
            100.0 * (end / start - 1.0)
        );
    }
}

fn per_minute(input: &mut Input<'_>) {
    println!("\n#### Latency per minute (answered requests; F = a fault started in that minute)\n");
    println!("| minute | fault | token req | token p50 ms | token p99 ms | proxy req | proxy p50 ms | proxy p99 ms | 5xx | no answer | edX calls |");
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    let seconds = &input.recorded.seconds;
    let faults = &input.recorded.faults;
    for (minute, lat) in input.recorded.minutes.iter_mut().enumerate() {
        let range = minute as u64 * 60..(minute as u64 + 1) * 60;
        let all = total(seconds, range.clone(), &KINDS);
        let fault = faults
            .iter()
            .position(|f| range.contains(&f.at))
            .map_or(String::new(), |n| format!("F{}", n + 1));
        let fmt = |v: Option<f64>| v.map_or("–".to_owned(), |v| format!("{v:.2}"));
        println!(
            "| {} | {fault} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            minute + 1,
            lat.token.len(),
            fmt(quantile_ms(&mut lat.token, 0.5)),
            fmt(quantile_ms(&mut lat.token, 0.99)),
            lat.proxy.len(),
            fmt(quantile_ms(&mut lat.proxy, 0.5)),
            fmt(quantile_ms(&mut lat.proxy, 0.99)),
            all.server_errors,
            all.no_answer,
            edx_between(seconds, range.start, range.end),
        );
    }
}

fn per_fault(input: &Input<'_>) {
    println!("\n#### 5xx per fault window (from a fault's start to the next one's; back = when the fault was over)\n");
    println!("| window | fault | back after (s) | requests | token 5xx | proxy 5xx | admin 5xx | invalidate 5xx | no answer | 429 | dropped | edX calls |");
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    let seconds = &input.recorded.seconds;
    let end = input.duration.as_secs() + 1;
    let faults = &input.recorded.faults;
    let mut starts: Vec<(String, u64, String)> =
        vec![("none (baseline)".to_owned(), 0, "–".to_owned())];
    starts.extend(
        faults
            .iter()
            .map(|f| (f.name.clone(), f.at, (f.over - f.at).to_string())),
    );
    for (n, (name, at, back)) in starts.iter().enumerate() {
        let until = starts.get(n + 1).map_or(end, |next| next.1);
        let of = |kind: Kind| total(seconds, *at..until, &[kind]).server_errors;
        let all = total(seconds, *at..until, &KINDS);
        println!(
            "| {at}–{until} s | {name} | {back} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            all.requests,
            of(Kind::Token),
            of(Kind::Proxy),
            of(Kind::Admin),
            of(Kind::Invalidate),
            all.no_answer,
            all.too_many,
            all.dropped,
            edx_between(seconds, *at, until),
        );
    }
    let all = total(seconds, 0..end, &KINDS);
    println!(
        "\nWhole run: {} requests, {} 2xx, {} 5xx, {} without an answer, {} 429, {} other 4xx, {} dropped.",
        all.requests, all.ok, all.server_errors, all.no_answer, all.too_many, all.other_4xx, all.dropped
    );
}

fn edx_calls(input: &Input<'_>) {
    let lifetime = input.lifetime.as_secs_f64();
    let elapsed = input.duration.as_secs_f64();
    let t = &input.tally;
    let extra = (t.created_with_token + t.invalidated) as f64;
    let ideal = input.tenants as f64 * elapsed / lifetime + extra;
    // tokenvend refreshes ahead: in the last fifth of the lifetime (at least 30 s, at most
    // half), the scheduler a further 0–25 % of that window earlier per tenant (12.5 % on
    // average).
    let window = (0.2 * lifetime).max(30.0).min(lifetime / 2.0);
    let refresh_age = lifetime - 1.125 * window;
    let by_design = input.tenants as f64 * elapsed / refresh_age + extra;
    println!("\n#### edX token calls against the ideal\n");
    println!("| figure | value |");
    println!("| --- | --- |");
    println!(
        "| edX token calls during the run (issuer counter, failed calls included) | {} |",
        input.edx_calls
    );
    println!(
        "| ideal: tenants × lifetimes elapsed + created tenants + invalidations = {} × {elapsed:.0} / {lifetime:.0} + {} + {} | {ideal:.0} |",
        input.tenants, t.created_with_token, t.invalidated
    );
    println!(
        "| calls / ideal | {:+.1} % |",
        100.0 * (input.edx_calls as f64 / ideal - 1.0)
    );
    println!(
        "| by design (refresh-ahead at {refresh_age:.2} s of a {lifetime:.0} s token): {} × {elapsed:.0} / {refresh_age:.2} + {extra:.0} | {by_design:.0} |",
        input.tenants
    );
    println!(
        "| calls / by design | {:+.1} % |",
        100.0 * (input.edx_calls as f64 / by_design - 1.0)
    );
}

fn events(input: &Input<'_>) {
    let received = &input.received.events;
    let mut by_type: BTreeMap<&str, [u64; 5]> = BTreeMap::new();
    for (id, kind, status) in &input.committed {
        let row = by_type.entry(kind).or_default();
        row[0] += 1;
        match received.get(id) {
            Some((_, times)) => {
                row[1] += 1;
                if *times > 1 {
                    row[2] += 1;
                }
            }
            None => row[3] += 1,
        }
        if status != "delivered" {
            row[4] += 1;
        }
    }
    let committed: std::collections::HashSet<&str> =
        input.committed.iter().map(|c| c.0.as_str()).collect();
    let strays = received
        .keys()
        .filter(|id| !committed.contains(id.as_str()))
        .count();
    println!("\n#### Webhook events committed (the outbox, set-up included) against delivered (the receiver, by event id)\n");
    println!("| type | committed | delivered | delivered more than once | not delivered | outbox not `delivered` |");
    println!("| --- | --- | --- | --- | --- | --- |");
    let mut sum = [0u64; 5];
    for (kind, row) in &by_type {
        println!(
            "| {kind} | {} | {} | {} | {} | {} |",
            row[0], row[1], row[2], row[3], row[4]
        );
        for (s, v) in sum.iter_mut().zip(row) {
            *s += v;
        }
    }
    println!(
        "| all | {} | {} | {} | {} | {} |",
        sum[0], sum[1], sum[2], sum[3], sum[4]
    );
    println!(
        "\nReceived but never committed: {strays}; bad signatures: {}; deliveries pending after the drain: {}.",
        input.received.bad_signatures, input.pending
    );
}

fn total(seconds: &[crate::stats::Second], range: std::ops::Range<u64>, kinds: &[Kind]) -> Counts {
    let mut sum = Counts::default();
    for second in seconds
        .iter()
        .skip(range.start as usize)
        .take((range.end - range.start) as usize)
    {
        for kind in kinds {
            sum.add(&second.by_kind[*kind as usize]);
        }
    }
    sum
}

/// edX calls counted between the samples at `from` and `until` (the nearest ones held).
fn edx_between(seconds: &[crate::stats::Second], from: u64, until: u64) -> u64 {
    let at = |s: u64| {
        seconds
            .iter()
            .take(s as usize + 1)
            .rev()
            .find_map(|second| second.edx_calls)
    };
    match (at(from), at(until)) {
        (Some(a), Some(b)) => b.saturating_sub(a),
        (None, Some(b)) => b.saturating_sub(seconds.iter().find_map(|s| s.edx_calls).unwrap_or(b)),
        _ => 0,
    }
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    }
}
