//! Token status as ops dashboards see it (never the token itself), and the per-tenant
//! metrics.

use serde::Serialize;
use serde_json::Value;
use std::sync::atomic::Ordering;

use chrono::{DateTime, Utc};

use super::core::Core;
use super::slot::{LastError, Slot};
use super::token::{HeldToken, SignatureState};
use crate::domain::rfc3339;

#[derive(Debug, Clone, Serialize)]
pub struct TokenStatus {
    pub tenant_id: String,
    pub state: &'static str,
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
}

pub fn status_of(slot: &Slot, now: DateTime<Utc>) -> TokenStatus {
    let token = slot.token.load_full();
    let health = slot.health.lock();
    let state = match &token {
        _ if health.last_attempt_failed => "failing",
        None => "missing",
        Some(t) if !t.servable(now) => "expired",
        Some(t) if t.in_refresh_window(now) => "expiring",
        Some(_) => "valid",
    };
    let cooldown_until = health.cooldown_until.filter(|u| *u > now);
    let next_refresh_at = match (&token, cooldown_until) {
        (_, Some(until)) => Some(until),
        (Some(t), None) => Some(slot.scheduled_refresh(t).max(now)),
        (None, None) => None,
    };
    let t = token.as_deref();
    TokenStatus {
        tenant_id: slot.id.to_string(),
        state,
        issued_at: t.map(|t| rfc3339(t.issued_at)),
        expires_at: t.map(|t| rfc3339(t.expires_at)),
        not_before: t.and_then(|t| t.not_before).map(rfc3339),
        lifetime_seconds: t.map(HeldToken::lifetime_seconds),
        remaining_seconds: t.map(|t| t.remaining(now)),
        fetched_at: t.map(|t| rfc3339(t.fetched_at)),
        next_refresh_at: next_refresh_at.map(rfc3339),
        claims: t.and_then(|t| t.claims.clone()),
        signature: t.map_or(SignatureState::Unverified, |t| t.signature),
        fingerprint: t.map(|t| t.fingerprint.clone()),
        last_error: health.last_error.clone(),
        upstream_calls: slot.upstream_calls.load(Ordering::Relaxed),
        upstream_failures: slot.upstream_failures.load(Ordering::Relaxed),
    }
}

/// Every tenant's token status, in tenant id order.
pub fn statuses(core: &Core) -> Vec<TokenStatus> {
    let now = core.now();
    let slots = core.slots.load();
    let mut items: Vec<TokenStatus> = slots.values().map(|s| status_of(s, now)).collect();
    items.sort_by(|a, b| a.tenant_id.cmp(&b.tenant_id));
    items
}

/// Prometheus text, with the per-tenant seconds-left gauges brought up to date.
pub fn render_metrics(core: &Core) -> String {
    let now = core.now();
    let slots = core.slots.load();
    core.metrics.render(slots.iter().map(|(id, slot)| {
        let left = slot
            .token
            .load()
            .as_ref()
            .map(|t| (t.expires_at - now).num_milliseconds() as f64 / 1000.0);
        (id.as_str(), left)
    }))
}
