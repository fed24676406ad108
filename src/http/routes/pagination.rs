//! Pagination shared by the list endpoints: `?limit=` bounds and opaque cursors.
//!
//! Cursors are unpadded base64url. openapi.yaml describes exactly the strings accepted
//! (the alphabet, a canonical last character, a length), and every string of that form
//! names a position in the list, so a request valid by the spec is never refused: a
//! cursor the service did not issue gives a page, possibly empty, never an error.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use serde::Deserialize;

use crate::domain::TenantId;
use crate::http::error::ApiError;

/// Page size bounds for list endpoints.
const DEFAULT_PAGE_SIZE: u32 = 100;
const MAX_PAGE_SIZE: u32 = 500;

/// The longest tenant cursor: what a tenant id of the greatest length encodes to.
pub const MAX_TENANT_CURSOR_LEN: usize = (TenantId::MAX_LEN * 4).div_ceil(3);

/// `?limit=&cursor=` of a list endpoint.
#[derive(Debug, Deserialize)]
pub struct PageParams {
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

pub fn page_size(limit: Option<u32>) -> Result<u32, ApiError> {
    page_size_within(limit, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
}

/// `limit`, or `default` without one; outside `1..=max` is `400`.
pub fn page_size_within(limit: Option<u32>, default: u32, max: u32) -> Result<u32, ApiError> {
    match limit {
        None => Ok(default),
        Some(n) if (1..=max).contains(&n) => Ok(n),
        Some(_) => Err(ApiError::BadRequest(format!(
            "limit must be between 1 and {max}"
        ))),
    }
}

fn not_issued() -> ApiError {
    ApiError::BadRequest("cursor is not one this service issued".to_owned())
}

/// Strictly unpadded base64url with canonical trailing bits, at most `max_len` long:
/// the length is checked first, so a huge cursor costs nothing.
fn cursor_bytes(cursor: &str, max_len: usize) -> Result<Vec<u8>, ApiError> {
    if cursor.len() > max_len {
        return Err(not_issued());
    }
    URL_SAFE_NO_PAD.decode(cursor).map_err(|_| not_issued())
}

/// The cursor of a list in tenant id order: after `id`.
pub fn encode_tenant_cursor(id: &str) -> String {
    URL_SAFE_NO_PAD.encode(id)
}

/// The position a tenant cursor names: the list continues with the ids that sort after
/// the returned key (byte order, as `COLLATE "C"` and `str` compare).
pub fn decode_tenant_cursor(cursor: &str) -> Result<String, ApiError> {
    cursor_bytes(cursor, MAX_TENANT_CURSOR_LEN).map(|bytes| tenant_position(&bytes))
}

/// An ASCII key with no NUL (which PostgreSQL refuses in text) that has exactly the
/// same tenant ids after it as `bytes` has. Ids hold only `-0-9a-z`, so comparing one
/// with `bytes` is decided at the first byte outside that alphabet, and a printable
/// stand-in on the same side of every id character decides it the same way.
fn tenant_position(bytes: &[u8]) -> String {
    let mut key = String::with_capacity(bytes.len());
    for &b in bytes {
        if b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' {
            key.push(char::from(b));
            continue;
        }
        if b > b'z' {
            key.push('{');
        } else if b > b'-' {
            key.push(char::from(b));
        }
        break;
    }
    key
}

/// The longest cursor of a list in creation order: 8 bytes of time and an id of up to
/// `MAX_ID_BYTES` bytes.
pub const MAX_CREATED_CURSOR_LEN: usize = ((8 + MAX_ID_BYTES) * 4).div_ceil(3);
const MAX_ID_BYTES: usize = 64;

/// The cursor of a list in creation order (caller keys, webhooks): after the item created
/// at `created_at` (microseconds since the epoch, 8 bytes big-endian) with id `id`.
pub fn encode_created_cursor(created_at: DateTime<Utc>, id: &str) -> String {
    let mut bytes = created_at.timestamp_micros().to_be_bytes().to_vec();
    bytes.extend_from_slice(id.as_bytes());
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The position a creation-order cursor names: a time (held within what both stores
/// can compare) and an ASCII key with the same ids after it as the cursor's id bytes.
pub fn decode_created_cursor(cursor: &str) -> Result<(DateTime<Utc>, String), ApiError> {
    let bytes = cursor_bytes(cursor, MAX_CREATED_CURSOR_LEN)?;
    let (time, id) = bytes.split_at_checked(8).ok_or_else(not_issued)?;
    let micros = i64::from_be_bytes(time.try_into().map_err(|_| not_issued())?);
    // Years 1 to 9999: both stores hold them, and SQLite's text compares them in order.
    const FIRST: i64 = -62_135_596_800_000_000;
    const LAST: i64 = 253_402_300_799_999_999;
    let at = DateTime::from_timestamp_micros(micros.clamp(FIRST, LAST)).ok_or_else(not_issued)?;
    Ok((at, id_position(id)))
}

/// Ids are printable ASCII: a byte past it sorts after every id character, and a NUL
/// (which PostgreSQL refuses in text) before every one, so the key stops there.
fn id_position(bytes: &[u8]) -> String {
    let mut key = String::with_capacity(bytes.len());
    for &b in bytes {
        match b {
            0 => break,
            1..=0x7e => key.push(char::from(b)),
            _ => {
                key.push('\u{7f}');
                break;
            }
        }
    }
    key
}

/// The cursor of the audit trail, newest first: before event `id` (its 8 bytes, big-endian).
pub fn encode_audit_cursor(id: i64) -> String {
    URL_SAFE_NO_PAD.encode(id.to_be_bytes())
}

/// The event id an audit cursor names; any 8 bytes are one (a negative id simply has
/// no events before it).
pub fn decode_audit_cursor(cursor: &str) -> Result<i64, ApiError> {
    let bytes = cursor_bytes(cursor, 11)?;
    let bytes: [u8; 8] = bytes.try_into().map_err(|_| not_issued())?;
    Ok(i64::from_be_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The patterns openapi.yaml gives cursors (without the anchors).
    const TENANT_CURSOR: &str =
        "(?:[A-Za-z0-9_-]{4})*(?:[A-Za-z0-9_-][AQgw]|[A-Za-z0-9_-]{2}[AEIMQUYcgkosw048])?";
    const AUDIT_CURSOR: &str = "[A-Za-z0-9_-]{10}[AEIMQUYcgkosw048]";

    #[test]
    fn page_sizes_outside_the_bounds_are_refused() {
        assert_eq!(page_size(None).unwrap(), DEFAULT_PAGE_SIZE);
        assert_eq!(page_size(Some(1)).unwrap(), 1);
        assert_eq!(page_size(Some(MAX_PAGE_SIZE)).unwrap(), MAX_PAGE_SIZE);
        for bad in [0, MAX_PAGE_SIZE + 1] {
            assert!(
                matches!(page_size(Some(bad)), Err(ApiError::BadRequest(_))),
                "{bad}"
            );
        }
        assert_eq!(page_size_within(None, 1000, 1000).unwrap(), 1000);
        assert!(page_size_within(Some(1001), 1000, 1000).is_err());
    }

    #[test]
    fn cursors_decode_to_their_key_and_malformed_ones_are_refused() {
        let longest = "a".repeat(TenantId::MAX_LEN);
        for id in ["acme-1", "a", longest.as_str()] {
            assert_eq!(decode_tenant_cursor(&encode_tenant_cursor(id)).unwrap(), id);
        }
        assert_eq!(MAX_TENANT_CURSOR_LEN, 84);
        assert_eq!(decode_audit_cursor(&encode_audit_cursor(41)).unwrap(), 41);
        let huge = "A".repeat(5000);
        let malformed = ["%%%", "A", "AB", "YWNtZQ==", huge.as_str(), "YWNtZQ.."];
        for forged in malformed {
            assert!(decode_tenant_cursor(forged).is_err(), "{forged}");
            assert!(decode_audit_cursor(forged).is_err(), "{forged}");
        }
        assert!(decode_audit_cursor("YWNtZQ").is_err(), "not 8 bytes");
    }

    #[test]
    fn creation_cursors_round_trip_and_any_of_their_form_is_a_position() {
        let at = DateTime::from_timestamp_micros(1_796_543_129_123_456).unwrap();
        let cursor = encode_created_cursor(at, "wh_0123456789abcdef0123456789abcdef");
        assert!(cursor.len() <= MAX_CREATED_CURSOR_LEN);
        assert_eq!(
            decode_created_cursor(&cursor).unwrap(),
            (at, "wh_0123456789abcdef0123456789abcdef".to_owned())
        );
        let (first, key) = decode_created_cursor("gAAAAAAAAAA").unwrap();
        assert_eq!(
            (first.to_rfc3339(), key.as_str()),
            ("0001-01-01T00:00:00+00:00".to_owned(), "")
        );
        let (last, key) = decode_created_cursor("f__________-gA").unwrap();
        assert!(
            last.to_rfc3339().starts_with("9999-12-31T23:59:59"),
            "{last}"
        );
        assert_eq!(key, "\u{7f}");
        for bad in ["YWNtZQ", "AAAAAAAAAAA=", "A", &"A".repeat(200)] {
            assert!(decode_created_cursor(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_cursor_of_nul_bytes_is_a_position_before_every_id() {
        assert_eq!(decode_tenant_cursor("AAAA").unwrap(), "");
        assert_eq!(decode_tenant_cursor("YWNtZQ").unwrap(), "acme");
        assert_eq!(decode_tenant_cursor("_w").unwrap(), "{");
    }

    proptest! {
        #[test]
        fn every_tenant_cursor_of_the_documented_form_is_accepted(
            cursor in TENANT_CURSOR.prop_filter("maxLength", |c| c.len() <= 84)
        ) {
            let key = decode_tenant_cursor(&cursor).unwrap();
            prop_assert!(key.bytes().all(|b| b.is_ascii_graphic()));
        }

        #[test]
        fn every_creation_cursor_of_the_documented_form_is_accepted(
            cursor in TENANT_CURSOR.prop_filter("length", |c| (11..=96).contains(&c.len()))
        ) {
            let (_, key) = decode_created_cursor(&cursor).unwrap();
            prop_assert!(!key.contains('\0'));
        }

        #[test]
        fn every_audit_cursor_of_the_documented_form_is_accepted(cursor in AUDIT_CURSOR) {
            prop_assert!(decode_audit_cursor(&cursor).is_ok());
        }

        #[test]
        fn a_position_has_the_same_ids_after_it_as_its_bytes(
            bytes in proptest::collection::vec(
                prop_oneof![Just(b'-'), b'0'..=b'9', b'a'..=b'z', any::<u8>()],
                0..6,
            ),
            id in "[a-z0-9][a-z0-9-]{0,5}",
        ) {
            let key = tenant_position(&bytes);
            prop_assert_eq!(id.as_bytes() > bytes.as_slice(), id.as_str() > key.as_str());
        }
    }
}
