//! An edX-like API behind the issued tokens, for tokenvend's proxy tests and benchmarks:
//! every `/api/...` call must carry a token this issuer issued, not revoked nor expired, in
//! edX's scheme (`Authorization: JWT <jwt>`, `Bearer <opaque token>`); otherwise `401`
//! as edX's DRF views answer.
//!
//! Paths (any method):
//! - `/api/test/redirect`: `302` to `https://elsewhere.example.invalid/landing`.
//! - `/api/test/cookie`: `200` with a `Set-Cookie` header.
//! - `/api/test/slow?secs=N`: answers after `N` seconds.
//! - `/api/test/large?bytes=N`: `N` bytes, streamed; byte `i` is `i % 251`
//!   ([`large_body_byte`]).
//! - `/api/test/unauthorized`: always `401`.
//! - anything else (`/api/enterprise/v1/enterprise-customer/` for example): `200` with
//!   what it received as JSON: `method`, `path`, `query` (raw), `headers` (name to a list
//!   of values), `body_length`, `body_sha256` (hex), `client_id`.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::server::IssuerState;

/// The redirect target of `/api/test/redirect` (never to be called).
pub const REDIRECT_TARGET: &str = "https://elsewhere.example.invalid/landing";

/// Byte `i` of a `/api/test/large` answer.
pub fn large_body_byte(i: u64) -> u8 {
    (i % 251) as u8
}

/// The tokens this issuer handed out, and what the API saw.
#[derive(Default)]
pub(crate) struct ApiRegistry {
    issued: HashMap<String, Issued>,
    pub(crate) calls: u64,
}

struct Issued {
    client_id: String,
    expires_at: DateTime<Utc>,
    revoked: bool,
}

impl ApiRegistry {
    pub(crate) fn issue(&mut self, token: &str, client_id: &str, expires_at: DateTime<Utc>) {
        self.issued.insert(
            token.to_owned(),
            Issued {
                client_id: client_id.to_owned(),
                expires_at,
                revoked: false,
            },
        );
    }

    /// Revokes every token issued so far to `client_id`; returns how many.
    pub(crate) fn revoke_client(&mut self, client_id: &str) -> usize {
        let mut n = 0;
        for issued in self.issued.values_mut() {
            if issued.client_id == client_id && !issued.revoked {
                issued.revoked = true;
                n += 1;
            }
        }
        n
    }

    /// Revokes one token; false if it was never issued.
    pub(crate) fn revoke(&mut self, token: &str) -> bool {
        self.issued
            .get_mut(token)
            .map(|issued| issued.revoked = true)
            .is_some()
    }

    /// The client a presented `Authorization` value's token was issued to, if it is valid.
    fn check(&self, authorization: Option<&str>, now: DateTime<Utc>) -> Option<String> {
        let (scheme, token) = authorization?.split_once(' ')?;
        let is_jwt = token.split('.').count() == 3;
        let scheme_ok = if is_jwt {
            scheme == "JWT"
        } else {
            scheme.eq_ignore_ascii_case("bearer")
        };
        let issued = self.issued.get(token)?;
        (scheme_ok && !issued.revoked && now < issued.expires_at).then(|| issued.client_id.clone())
    }
}

pub(crate) async fn api_endpoint(State(app): State<IssuerState>, request: Request) -> Response {
    let now = (app.core.now)();
    let authorization = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let client_id = {
        let mut api = app.core.api.lock();
        api.calls += 1;
        api.check(authorization, now)
    };
    let path = request.uri().path().to_owned();
    let Some(client_id) = client_id else {
        return unauthorized();
    };
    let query = request.uri().query().map(str::to_owned);
    let param = |name: &str| -> u64 {
        query
            .as_deref()
            .and_then(|q| serde_urlencoded::from_str::<Vec<(String, String)>>(q).ok())
            .and_then(|pairs| pairs.into_iter().find(|(k, _)| k == name))
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0)
    };
    match path.as_str() {
        "/api/test/redirect" => {
            (StatusCode::FOUND, [(header::LOCATION, REDIRECT_TARGET)], "").into_response()
        }
        "/api/test/cookie" => (
            StatusCode::OK,
            [(
                header::SET_COOKIE,
                "sessionid=from-the-api; Path=/; HttpOnly",
            )],
            axum::Json(json!({ "cookie": "set" })),
        )
            .into_response(),
        "/api/test/slow" => {
            if !app.pause(Duration::from_secs(param("secs"))).await {
                return StatusCode::SERVICE_UNAVAILABLE.into_response();
            }
            axum::Json(json!({ "slow": true })).into_response()
        }
        "/api/test/large" => large(param("bytes")),
        "/api/test/unauthorized" => unauthorized(),
        _ => echo(request, client_id).await,
    }
}

fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "JWT realm=\"api\"")],
        axum::Json(json!({ "detail": "Authentication credentials were not provided." })),
    )
        .into_response()
}

fn large(bytes: u64) -> Response {
    const CHUNK: u64 = 64 * 1024;
    let chunks = (0..bytes.div_ceil(CHUNK)).map(move |n| {
        let start = n * CHUNK;
        let end = (start + CHUNK).min(bytes);
        Ok::<_, Infallible>(Bytes::from(
            (start..end).map(large_body_byte).collect::<Vec<u8>>(),
        ))
    });
    (
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_owned()),
            (header::CONTENT_LENGTH, bytes.to_string()),
        ],
        Body::from_stream(futures_util::stream::iter(chunks)),
    )
        .into_response()
}

async fn echo(request: Request, client_id: String) -> Response {
    let (parts, body) = request.into_parts();
    let mut hasher = Sha256::new();
    let mut length: u64 = 0;
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(chunk) => {
                length += chunk.len() as u64;
                hasher.update(&chunk);
            }
            Err(_) => return StatusCode::BAD_REQUEST.into_response(),
        }
    }
    axum::Json(json!({
        "method": parts.method.as_str(),
        "path": parts.uri.path(),
        "query": parts.uri.query(),
        "headers": headers_json(&parts.headers),
        "body_length": length,
        "body_sha256": hex(&hasher.finalize()),
        "client_id": client_id,
    }))
    .into_response()
}

fn headers_json(headers: &HeaderMap) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, value) in headers {
        out.entry(name.as_str().to_owned())
            .or_default()
            .push(String::from_utf8_lossy(value.as_bytes()).into_owned());
    }
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
