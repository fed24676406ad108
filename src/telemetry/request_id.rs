//! New request ids without an allocation each: a thread makes them 64 at a time into one
//! buffer, and each id is a shared slice of it (a reference count). An id is a random
//! (v4) UUID as before; the buffer lives until the last of its ids is dropped.

use std::cell::RefCell;

use axum::body::Bytes;
use axum::http::HeaderValue;
use bytes::BytesMut;

const LEN: usize = uuid::fmt::Hyphenated::LENGTH;

/// Ids made at once: two allocations (the buffer and its shared header) per this many.
pub const BATCH: usize = 64;

thread_local! {
    /// The ids made and not handed out yet.
    static MADE: RefCell<Bytes> = const { RefCell::new(Bytes::new()) };
}

/// A new request id (a v4 UUID, lowercase and hyphenated).
pub fn fresh() -> HeaderValue {
    let id = MADE.with_borrow_mut(|made| {
        if made.is_empty() {
            *made = batch();
        }
        made.split_to(LEN)
    });
    HeaderValue::from_maybe_shared(id).expect("a hyphenated UUID is a valid header value")
}

fn batch() -> Bytes {
    let mut buffer = BytesMut::with_capacity(BATCH * LEN);
    let mut text = [0_u8; LEN];
    for _ in 0..BATCH {
        uuid::Uuid::new_v4().hyphenated().encode_lower(&mut text);
        buffer.extend_from_slice(&text);
    }
    buffer.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_distinct_uuids_across_batches() {
        let ids: Vec<_> = (0..BATCH * 2 + 3).map(|_| fresh()).collect();
        let mut seen = std::collections::HashSet::new();
        for id in &ids {
            let text = id.to_str().expect("text");
            let parsed = uuid::Uuid::parse_str(text).expect("a uuid");
            assert_eq!(parsed.get_version_num(), 4);
            assert_eq!(
                parsed.hyphenated().to_string(),
                text,
                "lowercase, hyphenated"
            );
            assert!(seen.insert(text.to_owned()), "{text} twice");
        }
    }
}
