//! `GET /dashboard`: the ops status page. The page itself needs no key and holds no data;
//! in the browser it asks for a caller key with `tenants:read` (kept in session storage
//! only) and reads `GET /tokens/status` with it. It never asks for a token.

use std::sync::OnceLock;

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use sha2::{Digest, Sha256};

use crate::state::AppState;

const PAGE: &str = include_str!("../../assets/dashboard.html");

pub fn router() -> Router<AppState> {
    Router::new().route("/dashboard", get(dashboard))
}

/// The CSP hashes ('sha256-…') of the page's inline `<tag>` blocks.
fn inline_hashes(tag: &str) -> String {
    let open = format!("<{tag}");
    let close = format!("</{tag}>");
    let mut hashes = Vec::new();
    let mut rest = PAGE;
    while let Some(start) = rest.find(&open) {
        let after = &rest[start..];
        let Some(body_start) = after.find('>').map(|i| i + 1) else {
            break;
        };
        let Some(body_len) = after[body_start..].find(&close) else {
            break;
        };
        let body = &after[body_start..body_start + body_len];
        hashes.push(format!(
            "'sha256-{}'",
            STANDARD.encode(Sha256::digest(body))
        ));
        rest = &after[body_start + body_len..];
    }
    hashes.join(" ")
}

/// Only the page's own inline script and style run; it may talk to this origin only.
fn content_security_policy() -> &'static str {
    static CSP: OnceLock<String> = OnceLock::new();
    CSP.get_or_init(|| {
        format!(
            "default-src 'none'; script-src {}; style-src {}; connect-src 'self'; \
             img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
            inline_hashes("script"),
            inline_hashes("style"),
        )
    })
}

async fn dashboard() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, content_security_policy()),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        PAGE,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_allows_exactly_the_pages_inline_script_and_style() {
        let csp = content_security_policy();
        assert!(PAGE.contains("<script"), "the page has its script inline");
        assert!(csp.contains("script-src 'sha256-"), "{csp}");
        assert!(csp.contains("style-src 'sha256-"), "{csp}");
        assert!(!csp.contains("unsafe-inline"));
    }
}
