//! A held token's answer, kept for the second it is good for: its `expires_in` changes
//! once a second, so every hit within that second shares one buffer (a reference count),
//! where each built its own.

use std::fmt;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use parking_lot::Mutex;

use super::HeldToken;

/// The last answer built: its `expires_in`, its bytes and their length in decimal (for
/// a `content-length`); empty until the first hit.
#[derive(Default)]
pub struct AnswerCache(Mutex<Option<(i64, Bytes, Bytes)>>);

/// A changed copy of a token builds its own answers.
impl Clone for AnswerCache {
    fn clone(&self) -> Self {
        Self::default()
    }
}

/// It holds the token: nothing of it is shown.
impl fmt::Debug for AnswerCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AnswerCache")
    }
}

impl HeldToken {
    /// `response_json` for `tenant_id` at `now`, shared with every other hit of the same
    /// second.
    pub fn answer_bytes(&self, tenant_id: &str, now: DateTime<Utc>) -> Bytes {
        self.answer_and_length(tenant_id, now).0
    }

    /// `answer_bytes`, and their length in decimal (shared likewise).
    pub fn answer_and_length(&self, tenant_id: &str, now: DateTime<Utc>) -> (Bytes, Bytes) {
        let remaining = self.remaining(now);
        // `{"tenant_id":"<id>",…`: a cached answer is reused only for the same id.
        let prefix = br#"{"tenant_id":""#.len();
        let is_for = |bytes: &Bytes| {
            bytes.get(prefix..prefix + tenant_id.len()) == Some(tenant_id.as_bytes())
                && bytes.get(prefix + tenant_id.len()) == Some(&b'"')
        };
        let mut cached = self.answer_cache.0.lock();
        if let Some((at, bytes, length)) = cached.as_ref() {
            if *at == remaining && is_for(bytes) {
                return (bytes.clone(), length.clone());
            }
        }
        let bytes = Bytes::from(self.response_json(tenant_id, now));
        let length = Bytes::copy_from_slice(itoa::Buffer::new().format(bytes.len()).as_bytes());
        *cached = Some((remaining, bytes.clone(), length.clone()));
        (bytes, length)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_is_shared_within_its_second_and_rebuilt_after() {
        let fetched = crate::upstream::FetchedToken {
            access_token: secrecy::SecretString::from("opaque-token".to_owned()),
            token_type: Some("Bearer".into()),
            expires_in: Some(std::time::Duration::from_secs(60)),
            scope: None,
            timing: None,
        };
        let t0 = DateTime::from_timestamp(1_800_000_000, 0).expect("t0");
        let held =
            HeldToken::from_fetch(fetched, t0, std::time::Duration::from_secs(10)).expect("held");
        // 59 seconds left, all through this second.
        let at = |ms| t0 + chrono::Duration::milliseconds(ms);
        let first = held.answer_bytes("acme", at(100));
        let again = held.answer_bytes("acme", at(900));
        assert_eq!(first.as_ptr(), again.as_ptr(), "shared within the second");
        assert_eq!(&first[..], &held.response_json("acme", at(100))[..]);
        let later = at(1100);
        let next = held.answer_bytes("acme", later);
        assert_eq!(&next[..], &held.response_json("acme", later)[..]);
        assert_ne!(first, next, "expires_in moved on");
        let (_, length) = held.answer_and_length("acme", later);
        assert_eq!(&length[..], next.len().to_string().as_bytes());
        let other = held.answer_bytes("acm", later);
        assert_eq!(
            &other[..],
            &held.response_json("acm", later)[..],
            "another id"
        );
    }
}
