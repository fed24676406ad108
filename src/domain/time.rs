//! How times are written in answers: RFC 3339, UTC, whole seconds.

use chrono::{DateTime, SecondsFormat, Utc};

pub fn rfc3339(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}
