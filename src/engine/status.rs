//! Token status as ops dashboards see it (never the token itself), the per-tenant
//! metrics and the upstream budget's report: `StatusView`, what is read of the engine
//! for people (`Vendor::status_view`).

use std::str::FromStr;
use std::sync::atomic::Ordering;

use serde::Serialize;
use serde_json::Value;

use chrono::{DateTime, Utc};

use super::budget::BudgetReport;
use super::core::{Core, SlotMap};
use super::slot::{LastError, ProxyStats, Slot};
use super::token::{HeldToken, SignatureState};
use crate::domain::{rfc3339, TenantId, TokenType};
use crate::telemetry::metrics::TenantReading;

/// What is read of the engine for people: token statuses, metrics, the upstream budget;
/// and the proxy's record of its calls, which the status shows.
#[derive(Clone, Copy)]
pub struct StatusView<'a> {
    core: &'a Core,
}

impl<'a> StatusView<'a> {
    pub(super) fn new(core: &'a Core) -> Self {
        Self { core }
    }

    pub fn status(&self, id: &TenantId) -> Option<TokenStatus> {
        let slot = self.core.slot(id)?;
        Some(status_of(&slot, self.core.now()))
    }

    /// Up to `limit` token statuses after the tenant id `after` (any string: the tenants
    /// sorting after it in byte order), in id order, of the given states (all when
    /// empty), and whether more follow.
    pub fn statuses(&self, after: Option<&str>, states: &[TokenState], limit: usize) -> StatusPage {
        statuses(self.core, after, states, limit)
    }

    /// The upstream budget: its rate, and what it did for each token-endpoint host.
    pub fn upstream_budget(&self) -> BudgetReport {
        BudgetReport {
            rate_per_minute: self.core.settings.upstream_rate.map(|n| n.get()),
            hosts: self.core.budget.hosts(),
        }
    }

    /// Prometheus text, with the per-tenant seconds-left gauges brought up to date.
    pub fn render_metrics(&self) -> String {
        render_metrics(self.core)
    }

    /// Records a proxied call's answer (`None`: tokenvend's own failure) for the status.
    pub fn record_proxy_call(&self, id: &TenantId, status: Option<u16>) {
        let Some(slot) = self.core.slot(id) else {
            return;
        };
        let now = self.core.now();
        slot.seldom(|seldom| {
            let stats = &mut seldom.proxy;
            stats.calls += 1;
            stats.last_status = status;
            if status == Some(401) {
                stats.last_401_at = Some(rfc3339(now));
            }
        });
    }
}

/// The warning on a tenant still asking for opaque Bearer tokens, which edX is retiring
/// in favour of JWTs.
pub const BEARER_RETIRING: &str = "bearer-token-retiring";

/// Where a tenant's token stands, worst first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenState {
    /// The last fetch failed (whatever token is still held).
    Failing,
    /// The held token can no longer be served.
    Expired,
    /// No token yet.
    Missing,
    /// Servable, and in its refresh window.
    Expiring,
    Valid,
}

impl TokenState {
    pub const ALL: [TokenState; 5] = [
        TokenState::Valid,
        TokenState::Expiring,
        TokenState::Expired,
        TokenState::Missing,
        TokenState::Failing,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TokenState::Failing => "failing",
            TokenState::Expired => "expired",
            TokenState::Missing => "missing",
            TokenState::Expiring => "expiring",
            TokenState::Valid => "valid",
        }
    }
}

impl FromStr for TokenState {
    type Err = String;

    fn from_str(raw: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|state| state.as_str() == raw)
            .ok_or_else(|| {
                // The value is not repeated: callers' mistakes can hold anything.
                let names: Vec<&str> = Self::ALL.iter().map(|s| s.as_str()).collect();
                format!("must be one of {}", names.join(", "))
            })
    }
}

fn state_of(
    token: Option<&HeldToken>,
    last_attempt_failed: bool,
    now: DateTime<Utc>,
) -> TokenState {
    match token {
        _ if last_attempt_failed => TokenState::Failing,
        None => TokenState::Missing,
        Some(t) if !t.servable(now) => TokenState::Expired,
        Some(t) if t.in_refresh_window(now) => TokenState::Expiring,
        Some(_) => TokenState::Valid,
    }
}

fn warnings(token_type: TokenType) -> Vec<&'static str> {
    match token_type {
        TokenType::Bearer => vec![BEARER_RETIRING],
        TokenType::Jwt => Vec::new(),
    }
}

/// One page of token statuses and whether tenants after it match too.
#[derive(Debug)]
pub struct StatusPage {
    pub items: Vec<TokenStatus>,
    pub more: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct TokenStatus {
    pub tenant_id: String,
    pub state: TokenState,
    /// What the tenant asks edX for: `jwt` or `bearer`.
    pub token_type: TokenType,
    /// Things to act on that do not stop the tenant from working (`bearer-token-retiring`).
    pub warnings: Vec<&'static str>,
    pub issued_at: Option<String>,
    pub expires_at: Option<String>,
    pub not_before: Option<String>,
    pub lifetime_seconds: Option<i64>,
    pub remaining_seconds: Option<i64>,
    pub fetched_at: Option<String>,
    pub next_refresh_at: Option<String>,
    pub claims: Option<Value>,
    pub signature: SignatureState,
    pub fingerprint: Option<String>,
    pub last_error: Option<LastError>,
    pub upstream_calls: u64,
    pub upstream_failures: u64,
    /// The tenant's calls through the proxy.
    pub proxy: ProxyStats,
}

pub fn status_of(slot: &Slot, now: DateTime<Utc>) -> TokenStatus {
    status_if(slot, now, |_| true).expect("every state is wanted")
}

/// The slot's status if its state is `wanted` (the state is read with the rest, so a
/// status never shows a state it was not selected by).
fn status_if(
    slot: &Slot,
    now: DateTime<Utc>,
    wanted: impl Fn(TokenState) -> bool,
) -> Option<TokenStatus> {
    let token = slot.token.load_full();
    let health = slot.health.lock();
    let state = state_of(token.as_deref(), health.last_attempt_failed, now);
    if !wanted(state) {
        return None;
    }
    let cooldown_until = health.cooldown_until.filter(|u| *u > now);
    let next_refresh_at = match (&token, cooldown_until) {
        (_, Some(until)) => Some(until),
        (Some(t), None) => Some(slot.scheduled_refresh(t).max(now)),
        (None, None) => None,
    };
    let t = token.as_deref();
    let token_type = slot.config.load().token_type;
    Some(TokenStatus {
        tenant_id: slot.id.to_string(),
        state,
        token_type,
        warnings: warnings(token_type),
        issued_at: t.map(|t| rfc3339(t.issued_at)),
        expires_at: t.map(|t| rfc3339(t.expires_at)),
        not_before: t.and_then(|t| t.not_before).map(rfc3339),
        lifetime_seconds: t.map(HeldToken::lifetime_seconds),
        remaining_seconds: t.map(|t| t.remaining(now)),
        fetched_at: t.map(|t| rfc3339(t.fetched_at)),
        next_refresh_at: next_refresh_at.map(rfc3339),
        claims: t.and_then(HeldToken::claims),
        signature: t.map_or(SignatureState::Unverified, |t| t.signature),
        fingerprint: t.map(|t| t.fingerprint.clone()),
        last_error: health.last_error.as_deref().cloned(),
        upstream_calls: slot.upstream_calls.load(Ordering::Relaxed),
        upstream_failures: slot.upstream_failures.load(Ordering::Relaxed),
        proxy: slot.proxy_stats(),
    })
}

/// Up to `limit` token statuses of the tenants whose id sorts after `after`, in id
/// order, of the given states (all when `states` is empty). Only the page's statuses
/// are built; the states of the tenants passed over are read, nothing more.
fn statuses(core: &Core, after: Option<&str>, states: &[TokenState], limit: usize) -> StatusPage {
    let now = core.now();
    let slots = core.slots.ordered();
    let wanted = |state| states.is_empty() || states.contains(&state);
    // One more than the page, to know whether another page follows.
    let mut items: Vec<TokenStatus> = SlotMap::after(&slots, after)
        .filter_map(|slot| status_if(slot, now, wanted))
        .take(limit.saturating_add(1))
        .collect();
    let more = items.len() > limit;
    items.truncate(limit);
    StatusPage { items, more }
}

/// Prometheus text, with the per-tenant seconds-left gauges and the tenant counts (by
/// state, on Bearer tokens) brought up to date.
fn render_metrics(core: &Core) -> String {
    let now = core.now();
    let slots = core.slots.ordered();
    let states = TokenState::ALL.map(TokenState::as_str);
    core.metrics.render(
        &states,
        slots.iter().map(|(id, slot)| {
            let token = slot.token.load();
            let failed = slot.health.lock().last_attempt_failed;
            TenantReading {
                tenant: id.as_str(),
                seconds_left: token
                    .as_ref()
                    .map(|t| (t.expires_at - now).num_milliseconds() as f64 / 1000.0),
                state: state_of(token.as_deref(), failed, now).as_str(),
                bearer: slot.config.load().token_type == TokenType::Bearer,
            }
        }),
    )
}
