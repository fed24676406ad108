//! Which headers a proxied call passes on, each way, and the fingerprint it adds (the trace
//! context comes from `crate::telemetry::propagation`).

use axum::http::header::{self, HeaderMap, HeaderName};

/// Hop-by-hop headers (RFC 9110 §7.6.1), never passed on either way.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// The caller's headers that reach the API (openapi.yaml, "The proxy"): content negotiation,
/// the body's framing and conditional requests. Everything else stays behind: the
/// caller's credentials and cookies, the host, claims about the client's address or the
/// request's origin (`X-Forwarded-*`, `True-Client-IP`, ...) that only a trusted proxy may
/// make, and headers no one has thought of yet. tokenvend adds `Authorization`,
/// `X-Request-ID` and the trace context (`crate::telemetry::propagation`) itself.
const SENT: &[HeaderName] = &[
    header::ACCEPT,
    header::ACCEPT_ENCODING,
    header::ACCEPT_LANGUAGE,
    header::CONTENT_TYPE,
    header::CONTENT_ENCODING,
    header::IF_MATCH,
    header::IF_NONE_MATCH,
    header::IF_MODIFIED_SINCE,
    header::IF_UNMODIFIED_SINCE,
    header::RANGE,
    header::USER_AGENT,
];

/// The fingerprint of the token a proxied call was made with.
pub const FINGERPRINT_HEADER: &str = "x-tokenvend-token-fingerprint";

fn is_tokenvend(name: &HeaderName) -> bool {
    name.as_str().starts_with("x-tokenvend-")
}

/// The headers named by `Connection` (also hop-by-hop).
fn connection_listed(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|name| name.trim().to_ascii_lowercase())
        .filter(|name| !name.is_empty())
        .collect()
}

fn without(headers: &HeaderMap, drop: impl Fn(&HeaderName) -> bool) -> HeaderMap {
    let listed = connection_listed(headers);
    let mut out = HeaderMap::with_capacity(headers.len());
    for (name, value) in headers {
        let hop = HOP_BY_HOP.contains(&name.as_str()) || listed.iter().any(|l| l == name.as_str());
        if !hop && !drop(name) {
            out.append(name.clone(), value.clone());
        }
    }
    out
}

/// The caller's headers as the API gets them, before tokenvend adds its own: only the
/// allowed ones, and `Content-Length` when the body is sent as it came.
pub fn request_headers(incoming: &HeaderMap, keep_content_length: bool) -> HeaderMap {
    without(incoming, |name| {
        let framing = keep_content_length && name == header::CONTENT_LENGTH;
        !(framing || SENT.contains(name))
    })
}

/// The API's headers as the caller gets them: no cookies are set on the caller's side
/// (they would be the API's session for the tenant), nothing claims to be tokenvend's.
pub fn response_headers(incoming: &HeaderMap) -> HeaderMap {
    without(incoming, |name| {
        name == header::SET_COOKIE || is_tokenvend(name)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        map
    }

    #[test]
    fn only_allowed_headers_go_and_hop_by_hop_ones_never() {
        let incoming = headers(&[
            ("authorization", "Bearer caller-key"),
            ("proxy-authorization", "Basic x"),
            ("cookie", "sessionid=1"),
            ("host", "tokenvend"),
            ("connection", "keep-alive, x-private"),
            ("x-private", "1"),
            ("transfer-encoding", "chunked"),
            ("x-tokenvend-anything", "1"),
            ("accept", "application/json"),
            ("content-length", "3"),
            ("x-custom", "a"),
            ("x-forwarded-prefix", "/admin"),
            ("true-client-ip", "203.0.113.7"),
            ("accept-language", "fr"),
            ("accept-language", "en"),
            // Named by `Connection`: hop-by-hop even though it is on the list.
            ("connection", "range"),
            ("range", "bytes=0-1"),
        ]);
        let sent = request_headers(&incoming, true);
        let names: Vec<&str> = sent.keys().map(HeaderName::as_str).collect();
        assert_eq!(names, ["accept", "content-length", "accept-language"]);
        assert_eq!(sent.get_all("accept-language").iter().count(), 2);
        assert!(request_headers(&incoming, false)
            .get("content-length")
            .is_none());
    }

    #[test]
    fn set_cookie_never_comes_back() {
        let incoming = headers(&[
            ("set-cookie", "a=1"),
            ("content-type", "application/json"),
            ("keep-alive", "timeout=5"),
            ("x-tokenvend-token-fingerprint", "spoofed"),
        ]);
        let names: Vec<String> = response_headers(&incoming)
            .keys()
            .map(|k| k.to_string())
            .collect();
        assert_eq!(names, ["content-type"]);
    }
}
