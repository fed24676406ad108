//! The edX client's parsing and failure classes, without HTTP.

use super::*;

fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (k, v) in pairs {
        map.insert(*k, v.parse().unwrap());
    }
    map
}

fn status(code: u16) -> StatusCode {
    StatusCode::from_u16(code).unwrap()
}

#[test]
fn success_answers_parse_with_every_expires_in_form() {
    for body in [
        r#"{"access_token":"a.b.c","token_type":"JWT","expires_in":36000,"scope":"read"}"#,
        r#"{"access_token":"a.b.c","token_type":"JWT","expires_in":"36000"}"#,
        r#"{"access_token":"a.b.c","expires_in":36000.0}"#,
    ] {
        let token = classify(status(200), &HeaderMap::new(), body.as_bytes())
            .unwrap_or_else(|e| panic!("{body}: {e}"));
        assert_eq!(token.expires_in, Some(Duration::from_secs(36000)));
        assert_eq!(token.access_token.expose_secret(), "a.b.c");
    }
    let no_lifetime = classify(status(200), &HeaderMap::new(), br#"{"access_token":"x"}"#).unwrap();
    assert_eq!(no_lifetime.expires_in, None);
}

#[test]
fn failures_are_classified_without_echoing_bodies() {
    let html = b"<html>Request was throttled. secret-ish page</html>";
    let cases: Vec<(u16, HeaderMap, &[u8], &str)> = vec![
        (
            401,
            HeaderMap::new(),
            br#"{"error":"invalid_client"}"#,
            "rejected",
        ),
        (
            400,
            HeaderMap::new(),
            br#"{"error":"invalid_scope"}"#,
            "rejected",
        ),
        (
            400,
            HeaderMap::new(),
            br#"{"error":"unauthorized_client"}"#,
            "rejected",
        ),
        (401, HeaderMap::new(), b"nope", "rejected"),
        (403, HeaderMap::new(), html, "throttled"),
        (
            403,
            HeaderMap::new(),
            br#"{"error":"invalid_client"}"#,
            "rejected",
        ),
        (429, headers(&[("retry-after", "17")]), b"", "throttled"),
        (500, HeaderMap::new(), b"oops", "unavailable"),
        (503, HeaderMap::new(), b"", "unavailable"),
        (302, HeaderMap::new(), b"", "invalid_response"),
        (404, HeaderMap::new(), b"not here", "invalid_response"),
        (
            200,
            HeaderMap::new(),
            b"<html>hello</html>",
            "invalid_response",
        ),
        (
            200,
            HeaderMap::new(),
            br#"{"error":"server_error"}"#,
            "invalid_response",
        ),
        (
            200,
            HeaderMap::new(),
            br#"{"access_token":""}"#,
            "invalid_response",
        ),
        (
            200,
            HeaderMap::new(),
            br#"{"access_token":"x","expires_in":0}"#,
            "invalid_response",
        ),
        (
            200,
            HeaderMap::new(),
            br#"{"access_token":"x","expires_in":"-3"}"#,
            "invalid_response",
        ),
        (200, HeaderMap::new(), b"[]", "invalid_response"),
    ];
    for (code, headers, body, expected) in cases {
        let err = match classify(status(code), &headers, body) {
            Err(e) => e,
            Ok(_) => panic!("{code} {:?} should fail", String::from_utf8_lossy(body)),
        };
        assert_eq!(
            err.outcome(),
            expected,
            "{code} {:?}",
            String::from_utf8_lossy(body)
        );
        assert!(!err.to_string().contains("secret-ish"));
    }
    let throttled = classify(status(429), &headers(&[("retry-after", "17")]), b"").unwrap_err();
    assert_eq!(
        throttled,
        UpstreamError::Throttled {
            status: 429,
            retry_after: Some(Duration::from_secs(17)),
        }
    );
}

#[test]
fn only_timeouts_and_server_errors_are_retried() {
    assert!(UpstreamError::Timeout(Duration::from_secs(1)).is_retryable());
    assert!(classify(status(502), &HeaderMap::new(), b"")
        .unwrap_err()
        .is_retryable());
    assert!(!classify(status(401), &HeaderMap::new(), b"")
        .unwrap_err()
        .is_retryable());
    assert!(!classify(status(429), &HeaderMap::new(), b"")
        .unwrap_err()
        .is_retryable());
}

#[test]
fn odd_error_codes_are_not_repeated() {
    let body = br#"{"error":"<script>alert(1)</script> my password is hunter2"}"#;
    let err = classify(status(401), &HeaderMap::new(), body).unwrap_err();
    assert!(!err.to_string().contains("hunter2"));
}
