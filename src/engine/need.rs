//! What a caller of a fetch needs, and whether a token answers it; checked again under the
//! flight lock and the fleet lock, so that a token fetched meanwhile is used instead of
//! fetching another.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::settings::VendingSettings;
use super::slot::{LastError, Slot};
use super::token::HeldToken;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// A servable token with at least this much time left.
    Serve(Duration),
    /// A token outside its (scheduled) refresh point.
    Refresh { scheduled: bool },
    /// A new token whatever is held (operators' forced refresh).
    Force,
}

/// A new token, whether it is already in the store, and what the token status should
/// say about how it was had (served with the previous client secret).
pub struct Obtained {
    pub token: Arc<HeldToken>,
    pub stored: bool,
    pub notice: Option<LastError>,
}

impl Need {
    /// Why a fetch for this need happens: the `tokenvend.trigger` attribute of its span.
    /// `held` says whether a servable token was held (then a caller's fetch is for its
    /// `min_ttl`).
    pub fn trigger(self, held: bool) -> &'static str {
        match self {
            Need::Serve(min_ttl) if held && !min_ttl.is_zero() => "min_ttl",
            Need::Serve(_) => "caller",
            Need::Refresh { scheduled: false } => "refresh_ahead",
            Need::Refresh { scheduled: true } => "scheduled",
            Need::Force => "forced",
        }
    }

    /// Whether `token` answers this need; a forced refresh takes only a token fetched
    /// since it `started`.
    pub fn met_by(
        self,
        token: &HeldToken,
        slot: &Slot,
        settings: &VendingSettings,
        now: DateTime<Utc>,
        started: Option<DateTime<Utc>>,
    ) -> bool {
        if slot.is_invalidated(token) {
            return false;
        }
        match self {
            Need::Serve(min_ttl) => {
                let recently = now - token.fetched_at
                    < chrono::Duration::from_std(settings.min_refresh_interval).unwrap_or_default();
                token.satisfies(now, min_ttl) || (token.servable(now) && recently)
            }
            Need::Refresh { scheduled: true } => now < slot.scheduled_refresh(token),
            Need::Refresh { scheduled: false } => !token.in_refresh_window(now),
            Need::Force => started.is_some_and(|started| token.fetched_at >= started),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_need_names_why_it_fetches() {
        let cases = [
            (Need::Serve(Duration::ZERO), false, "caller"),
            (Need::Serve(Duration::ZERO), true, "caller"),
            (Need::Serve(Duration::from_secs(60)), false, "caller"),
            (Need::Serve(Duration::from_secs(60)), true, "min_ttl"),
            (Need::Refresh { scheduled: false }, true, "refresh_ahead"),
            (Need::Refresh { scheduled: true }, true, "scheduled"),
            (Need::Force, true, "forced"),
        ];
        for (need, held, trigger) in cases {
            assert_eq!(need.trigger(held), trigger, "{need:?} held={held}");
        }
    }
}
