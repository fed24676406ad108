//! How times appear in answers: RFC 3339 in UTC, to the second.

use chrono::{DateTime, SecondsFormat, Utc};

/// `2024-05-01T12:00:00Z`: whole seconds, `Z` for UTC.
pub fn rfc3339(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    #[test]
    fn times_are_whole_seconds_in_utc_with_a_z() {
        let at = Utc.with_ymd_and_hms(2024, 5, 1, 12, 0, 7).unwrap()
            + chrono::Duration::microseconds(123_456);
        assert_eq!(rfc3339(at), "2024-05-01T12:00:07Z");
    }
}
