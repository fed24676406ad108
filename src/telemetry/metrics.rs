//! Prometheus metrics (`tokenvend_*`), one registry per app so that tests stay isolated.
//! Hot-path counters are resolved once, so counting a cache hit is one atomic add.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

mod labels;

use labels::{
    BudgetLabels, HostLabels, IdentityLabels, OutcomeLabels, ProxyLabels, ResultLabels,
    StateLabels, TenantLabels,
};

/// What a webhook delivery attempt came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryOutcome {
    /// A 2xx answer.
    Delivered,
    /// Failed; tried again later.
    Retried,
    /// Failed for good (no retry left).
    Failed,
}

impl DeliveryOutcome {
    const ALL: [DeliveryOutcome; 3] = [Self::Delivered, Self::Retried, Self::Failed];

    fn label(self) -> &'static str {
        match self {
            Self::Delivered => "delivered",
            Self::Retried => "retried",
            Self::Failed => "failed",
        }
    }
}

/// One tenant as `render` sees it.
pub struct TenantReading<'a> {
    pub tenant: &'a str,
    /// Seconds its held token has left; `None` when it holds none.
    pub seconds_left: Option<f64>,
    /// Its token state's label (one of the `states` given to `render`).
    pub state: &'static str,
    /// Whether it asks edX for opaque Bearer tokens.
    pub bearer: bool,
}

/// How a token request was answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenResult {
    /// Served from the cache.
    Hit,
    /// Served from the cache, and a background refresh was started.
    RefreshAhead,
    /// Waited for a new token from edX.
    Miss,
    /// No token could be served.
    Error,
}

pub struct Metrics {
    registry: Registry,
    hit: Counter,
    refresh_ahead: Counter,
    miss: Counter,
    error: Counter,
    upstream_calls: Family<OutcomeLabels, Counter>,
    upstream_latency: Histogram,
    seconds_left: Family<TenantLabels, Gauge<f64, AtomicU64>>,
    cached_tokens: Gauge,
    tenants: Gauge,
    budget_remaining: Family<HostLabels, Gauge<f64, AtomicU64>>,
    budget_asks: Family<BudgetLabels, Counter>,
    proxy_calls: Family<ProxyLabels, Counter>,
    proxy_latency: Histogram,
    token_latency: Histogram,
    proxy_retries: Family<TenantLabels, Counter>,
    clock_offset: Family<HostLabels, Gauge<f64, AtomicU64>>,
    circuit_open: Family<HostLabels, Gauge>,
    tenants_by_state: Family<StateLabels, Gauge>,
    bearer_tenants: Gauge,
    webhook_deliveries: Family<OutcomeLabels, Counter>,
    webhook_pending: Gauge,
    ready: Gauge,
    fleet_replicas: Gauge,
    identity_auths: Family<IdentityLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("tokenvend");
        let token_requests = Family::<ResultLabels, Counter>::default();
        registry.register(
            "token_requests",
            "Token requests by result (hit, refresh_ahead, miss, error)",
            token_requests.clone(),
        );
        let upstream_calls = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "upstream_requests",
            "HTTP requests to edX token endpoints by outcome",
            upstream_calls.clone(),
        );
        let upstream_latency = Histogram::new(exponential_buckets(0.005, 2.0, 12));
        registry.register(
            "upstream_request_duration_seconds",
            "Latency of HTTP requests to edX token endpoints",
            upstream_latency.clone(),
        );
        let seconds_left = Family::<TenantLabels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "token_seconds_remaining",
            "Seconds until each tenant's held token expires",
            seconds_left.clone(),
        );
        let cached_tokens = Gauge::default();
        registry.register(
            "cached_tokens",
            "Tokens held in memory",
            cached_tokens.clone(),
        );
        let tenants = Gauge::default();
        registry.register("tenants", "Tenants configured", tenants.clone());
        let budget_remaining = Family::<HostLabels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "upstream_budget_remaining",
            "Token requests left in the upstream budget of each edX host, when last asked",
            budget_remaining.clone(),
        );
        let budget_asks = Family::<BudgetLabels, Counter>::default();
        registry.register(
            "upstream_budget_asks",
            "Asks to the upstream budget by host and outcome (granted, waited, deferred, refused)",
            budget_asks.clone(),
        );
        let proxy_calls = Family::<ProxyLabels, Counter>::default();
        registry.register(
            "proxy_requests",
            "Proxied edX API calls by tenant and status class (2xx..5xx, or error: tokenvend's own)",
            proxy_calls.clone(),
        );
        let proxy_latency = Histogram::new(exponential_buckets(0.005, 2.0, 14));
        registry.register(
            "proxy_request_duration_seconds",
            "Time until a proxied edX API call's answer began (token included)",
            proxy_latency.clone(),
        );
        // From 50 µs: a hit is answered in tens of microseconds, a miss waits for edX.
        let token_latency = Histogram::new(exponential_buckets(0.000_05, 2.0, 16));
        registry.register(
            "token_request_duration_seconds",
            "Time GET /tenants/{id}/token took to get its token once the caller was \
             authenticated: from memory on a hit, or waiting for edX",
            token_latency.clone(),
        );
        let proxy_retries = Family::<TenantLabels, Counter>::default();
        registry.register(
            "proxy_401_retries",
            "Proxied calls retried with a new token after the API answered 401",
            proxy_retries.clone(),
        );
        let clock_offset = Family::<HostLabels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "upstream_clock_offset_seconds",
            "edX's clock minus ours per token-endpoint host, from the last token fetched (JWT iat, else the Date header)",
            clock_offset.clone(),
        );
        let circuit_open = Family::<HostLabels, Gauge>::default();
        registry.register(
            "upstream_circuit_open",
            "1 while a token-endpoint host's circuit breaker is open (edX failing every token request; none sent but a probe)",
            circuit_open.clone(),
        );
        let tenants_by_state = Family::<StateLabels, Gauge>::default();
        registry.register(
            "tenants_by_state",
            "Tenants by token state (valid, expiring, expired, missing, failing)",
            tenants_by_state.clone(),
        );
        let bearer_tenants = Gauge::default();
        registry.register(
            "bearer_tenants",
            "Tenants still asking edX for opaque Bearer tokens (edX is retiring them)",
            bearer_tenants.clone(),
        );
        let webhook_deliveries = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "webhook_deliveries",
            "Webhook delivery attempts by outcome (delivered, retried, failed: for good)",
            webhook_deliveries.clone(),
        );
        for outcome in DeliveryOutcome::ALL {
            // Every outcome shows from the start, at 0.
            drop(webhook_deliveries.get_or_create(&OutcomeLabels {
                outcome: outcome.label(),
            }));
        }
        let webhook_pending = Gauge::default();
        registry.register(
            "webhook_pending",
            "Webhook deliveries neither delivered nor failed for good, fleet-wide, when the delivery worker last looked",
            webhook_pending.clone(),
        );
        let ready = Gauge::default();
        registry.register(
            "ready",
            "1 if the store answered the last readiness check (or start-up), else 0",
            ready.clone(),
        );
        let fleet_replicas = Gauge::default();
        fleet_replicas.set(1);
        registry.register(
            "fleet_replicas",
            "Live replicas this one counts (itself included); each keeps 1/n of the fleet-wide limits",
            fleet_replicas.clone(),
        );
        let counter = |result| {
            token_requests
                .get_or_create(&ResultLabels { result })
                .clone()
        };
        let identity_auths = Family::<IdentityLabels, Counter>::default();
        registry.register(
            "identity_authentications",
            "Workload identity (JWT) authentications by provider and outcome",
            identity_auths.clone(),
        );
        Self {
            hit: counter("hit"),
            refresh_ahead: counter("refresh_ahead"),
            miss: counter("miss"),
            error: counter("error"),
            registry,
            upstream_calls,
            upstream_latency,
            seconds_left,
            cached_tokens,
            tenants,
            budget_remaining,
            budget_asks,
            proxy_calls,
            proxy_latency,
            token_latency,
            proxy_retries,
            clock_offset,
            circuit_open,
            tenants_by_state,
            bearer_tenants,
            webhook_deliveries,
            webhook_pending,
            ready,
            fleet_replicas,
            identity_auths,
        }
    }

    /// The clock offset measured against `host` (positive: edX's clock is ahead).
    pub fn set_clock_offset(&self, host: &str, seconds: f64) {
        self.clock_offset
            .get_or_create(&HostLabels {
                host: host.to_owned(),
            })
            .set(seconds);
    }

    /// Whether `host`'s circuit breaker is open (or probing).
    pub fn set_circuit_open(&self, host: &str, open: bool) {
        self.circuit_open
            .get_or_create(&HostLabels {
                host: host.to_owned(),
            })
            .set(i64::from(open));
    }

    pub fn count_webhook_delivery(&self, outcome: DeliveryOutcome) {
        self.webhook_deliveries
            .get_or_create(&OutcomeLabels {
                outcome: outcome.label(),
            })
            .inc();
    }

    pub fn set_webhook_pending(&self, pending: i64) {
        self.webhook_pending.set(pending);
    }

    /// Whether the store answered the last readiness check.
    pub fn set_ready(&self, ready: bool) {
        self.ready.set(i64::from(ready));
    }

    /// The live replicas the heartbeat counted.
    pub fn set_fleet_replicas(&self, live: u32) {
        self.fleet_replicas.set(i64::from(live));
    }

    /// Counts an ask to the upstream budget of `host` (`granted`, `waited`, `deferred`
    /// or `refused`) and the requests it left.
    pub fn observe_budget(&self, host: &str, outcome: &'static str, remaining: f64) {
        self.budget_asks
            .get_or_create(&BudgetLabels {
                host: host.to_owned(),
                outcome,
            })
            .inc();
        self.budget_remaining
            .get_or_create(&HostLabels {
                host: host.to_owned(),
            })
            .set(remaining);
    }

    /// A proxied call answered with `status` (`None`: tokenvend's own failure) after
    /// `seconds`.
    pub fn observe_proxy(&self, tenant: &str, status: Option<u16>, seconds: f64) {
        let class = match status {
            Some(200..=299) => "2xx",
            Some(300..=399) => "3xx",
            Some(400..=499) => "4xx",
            Some(500..=599) => "5xx",
            Some(_) => "other",
            None => "error",
        };
        self.proxy_calls
            .get_or_create(&ProxyLabels {
                tenant: tenant.to_owned(),
                class,
            })
            .inc();
        self.proxy_latency.observe(seconds);
    }

    /// How long a token request took to get its token (the hot path's latency).
    pub fn observe_token_request(&self, seconds: f64) {
        self.token_latency.observe(seconds);
    }

    /// Drops a deleted tenant's series, so that tenants coming and going do not grow the
    /// registry (and `/metrics`) for ever.
    pub fn forget_tenant(&self, tenant: &str) {
        let labels = TenantLabels {
            tenant: tenant.to_owned(),
        };
        self.proxy_retries.remove(&labels);
        self.seconds_left.remove(&labels);
        for class in ["2xx", "3xx", "4xx", "5xx", "other", "error"] {
            self.proxy_calls.remove(&ProxyLabels {
                tenant: labels.tenant.clone(),
                class,
            });
        }
    }

    pub fn count_proxy_retry(&self, tenant: &str) {
        self.proxy_retries
            .get_or_create(&TenantLabels {
                tenant: tenant.to_owned(),
            })
            .inc();
    }

    pub fn count_token_request(&self, result: TokenResult) {
        match result {
            TokenResult::Hit => self.hit.inc(),
            TokenResult::RefreshAhead => self.refresh_ahead.inc(),
            TokenResult::Miss => self.miss.inc(),
            TokenResult::Error => self.error.inc(),
        };
    }

    pub fn observe_upstream(&self, outcome: &'static str, seconds: f64) {
        self.upstream_calls
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
        self.upstream_latency.observe(seconds);
    }

    /// Renders the registry after setting the per-tenant gauges and the tenant counts from
    /// `tenants`; every label of `states` is shown, 0 when no tenant is in it.
    pub fn render<'a>(
        &self,
        states: &[&'static str],
        tenants: impl Iterator<Item = TenantReading<'a>>,
    ) -> String {
        self.seconds_left.clear();
        let (mut count, mut cached, mut bearer) = (0, 0, 0);
        let mut by_state = vec![0_i64; states.len()];
        for reading in tenants {
            count += 1;
            bearer += i64::from(reading.bearer);
            if let Some(n) = states.iter().position(|s| *s == reading.state) {
                by_state[n] += 1;
            }
            if let Some(left) = reading.seconds_left {
                cached += 1;
                self.seconds_left
                    .get_or_create(&TenantLabels {
                        tenant: reading.tenant.to_owned(),
                    })
                    .set(left);
            }
        }
        for (state, n) in states.iter().copied().zip(by_state) {
            self.tenants_by_state
                .get_or_create(&StateLabels { state })
                .set(n);
        }
        self.tenants.set(count);
        self.cached_tokens.set(cached);
        self.bearer_tenants.set(bearer);
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

impl Metrics {
    pub fn count_identity_auth(&self, provider: &str, outcome: &'static str) {
        self.identity_auths
            .get_or_create(&IdentityLabels {
                provider: provider.to_owned(),
                outcome,
            })
            .inc();
    }
}
