//! The field rules identity providers and mappings share: text fields, fields that may be
//! left out but not sent as `null`, claim names.

use serde::{Deserialize, Deserializer};
use serde_json::Value;

use crate::domain::FieldError;

/// The most bytes a text field of a provider or mapping may hold.
pub(super) const MAX_TEXT: usize = 1000;

/// An optional field as given: `Some(Value::Null)` for an explicit `null`, which these
/// fields refuse (leave a field out for its default).
pub(super) fn present<'de, D: Deserializer<'de>>(raw: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(raw).map(Some)
}

/// A field that must be a string when given.
pub(super) fn string_field(field: &str, raw: Option<Value>) -> Result<Option<String>, FieldError> {
    match raw {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(FieldError::new(
            field,
            "must be a string (leave it out for the default)",
        )),
    }
}

pub(super) fn required_text(field: &str, raw: Option<String>) -> Result<String, FieldError> {
    let text = raw.ok_or_else(|| FieldError::new(field, "is required"))?;
    if text.trim().is_empty() || text.len() > MAX_TEXT || text.chars().any(char::is_control) {
        return Err(FieldError::new(
            field,
            format!("must be a non-empty string of at most {MAX_TEXT} bytes, without control characters"),
        ));
    }
    Ok(text)
}

/// A claim name, or a JSON Pointer (`/a/b`) into nested claims.
pub(super) fn parse_claim_name(raw: &str) -> Result<String, String> {
    if raw.is_empty() || raw.len() > 200 || raw.chars().any(char::is_control) {
        return Err(
            "must be a claim name or JSON Pointer of 1 to 200 bytes, without control characters"
                .to_owned(),
        );
    }
    Ok(raw.to_owned())
}
