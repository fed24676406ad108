//! Request extractors that turn bad input into problem+json instead of axum's plain text.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap};
use serde::de::DeserializeOwned;

use crate::domain::FieldError;
use crate::http::error::ApiError;

/// The largest request body accepted, in bytes.
pub const BODY_LIMIT: usize = 1024 * 1024;

/// A JSON body: 415 without a JSON content type, 413 over the limit, 400 for malformed
/// JSON and 422, naming the field, for JSON of the wrong shape.
pub struct Json<T>(pub T);

impl<S, T> FromRequest<S> for Json<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !has_json_content_type(req.headers()) {
            return Err(ApiError::UnsupportedMediaType);
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge { limit: BODY_LIMIT }
            } else {
                ApiError::BadRequest("could not read the request body".to_owned())
            }
        })?;
        parse_json(&bytes).map(Json)
    }
}

pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        let message = redact_quoted(&inner.to_string());
        match inner.classify() {
            serde_json::error::Category::Data => {
                let field = if path == "." {
                    unknown_field_name(&message).unwrap_or_else(|| "body".to_owned())
                } else {
                    path
                };
                ApiError::Validation(FieldError::new(field, message))
            }
            _ => ApiError::BadRequest(format!("request body is not valid JSON: {message}")),
        }
    })?;
    de.end()
        .map_err(|e| ApiError::BadRequest(format!("request body is not valid JSON: {e}")))?;
    Ok(value)
}

fn has_json_content_type(headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let mime = value
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))
}

/// serde quotes offending string values in its messages; a caller may have put a secret
/// in the wrong field, so error bodies never repeat them.
fn redact_quoted(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut chars = message.chars();
    while let Some(c) = chars.next() {
        if c == '"' {
            out.push_str("\"…\"");
            let mut escaped = false;
            for inner in chars.by_ref() {
                match (escaped, inner) {
                    (false, '\\') => escaped = true,
                    (false, '"') => break,
                    _ => escaped = false,
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn unknown_field_name(message: &str) -> Option<String> {
    let rest = message.strip_prefix("unknown field `")?;
    rest.split('`').next().map(str::to_owned)
}

/// Query parameters: 400 naming the parameter when they do not parse.
pub struct Query<T>(pub T);

impl<S, T> FromRequestParts<S> for Query<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::try_from_uri(&parts.uri)
            .map(|q| Query(q.0))
            .map_err(|rejection| ApiError::BadRequest(rejection.body_text()))
    }
}

/// Path parameters: a segment that does not even decode names nothing that exists (404).
pub struct Path<T>(pub T);

impl<S, T> FromRequestParts<S> for Path<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Send,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| Path(p.0))
            .map_err(|_| ApiError::NotFound("not found".to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Patch;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body {
        flag: Option<bool>,
        #[serde(default)]
        patch: Patch<String>,
    }

    #[test]
    fn wrong_types_name_the_field_without_repeating_the_value() {
        let err = parse_json::<Body>(br#"{"flag": "hunter2"}"#).unwrap_err();
        let ApiError::Validation(e) = err else {
            panic!("expected a validation error, got {err:?}")
        };
        assert_eq!(e.field, "flag");
        assert!(!e.message.contains("hunter2"), "{}", e.message);
    }

    #[test]
    fn unknown_fields_are_named() {
        let err = parse_json::<Body>(br#"{"flagg": true}"#).unwrap_err();
        let ApiError::Validation(e) = err else {
            panic!("expected a validation error, got {err:?}")
        };
        assert_eq!(e.field, "flagg");
    }

    #[test]
    fn malformed_json_and_trailing_bytes_are_bad_requests() {
        for body in [&b"{"[..], b"{} {}", b"", b"nul"] {
            assert!(matches!(
                parse_json::<Body>(body),
                Err(ApiError::BadRequest(_))
            ));
        }
    }

    #[test]
    fn patch_fields_tell_absent_from_null() {
        let absent: Body = parse_json(b"{}").unwrap();
        let null: Body = parse_json(br#"{"patch": null}"#).unwrap();
        let value: Body = parse_json(br#"{"patch": "x"}"#).unwrap();
        assert_eq!(absent.patch, Patch::Absent);
        assert_eq!(null.patch, Patch::Null);
        assert_eq!(value.patch, Patch::Value("x".to_owned()));
    }
}
