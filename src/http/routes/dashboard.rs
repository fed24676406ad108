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

use crate::http::state::AppState;

const PAGE: &str = include_str!("../../../assets/dashboard.html");

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
    use std::collections::BTreeSet;

    use super::*;

    /// The CSP sources the page's inline `<tag>` blocks need, found apart from the server's
    /// walk: split at each closing tag, and hash what follows the last opening tag before it.
    fn expected_sources(html: &str, tag: &str) -> BTreeSet<String> {
        let open = format!("<{tag}");
        let close = format!("</{tag}>");
        let pieces: Vec<&str> = html.split(close.as_str()).collect();
        pieces[..pieces.len() - 1]
            .iter()
            .map(|piece| {
                let opened = piece
                    .rfind(&open)
                    .expect("a closing tag has an opening one");
                let body_start = opened + piece[opened..].find('>').expect("the tag ends") + 1;
                let digest = Sha256::digest(&piece.as_bytes()[body_start..]);
                format!("'sha256-{}'", STANDARD.encode(digest))
            })
            .collect()
    }

    /// The sources of one directive of a policy.
    fn directive(csp: &str, name: &str) -> BTreeSet<String> {
        let mut words = csp
            .split(';')
            .map(|d| d.split_whitespace())
            .find(|words| words.clone().next() == Some(name))
            .unwrap_or_else(|| panic!("no {name} in {csp}"));
        words.next();
        words.map(str::to_owned).collect()
    }

    #[test]
    fn the_tests_own_hashing_matches_known_digests() {
        let html = "<p>x</p><script type=\"module\">alert(1)</script>\n\
                    <style>\nbody { color: red }\n</style>";
        assert_eq!(
            expected_sources(html, "script"),
            BTreeSet::from(["'sha256-bhHHL3z2vDgxUt0W3dWQOrprscmda2Y5pLsLg4GF+pI='".to_owned()])
        );
        assert_eq!(
            expected_sources(html, "style"),
            BTreeSet::from(["'sha256-SNPkr2rrmHBg5BfR2QoMG2IsNaep0QNmJSgjB3zcBcc='".to_owned()])
        );
    }

    #[tokio::test]
    async fn the_policy_allows_exactly_the_pages_inline_script_and_style() {
        let response = dashboard().await.into_response();
        let csp = response.headers()[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap()
            .to_owned();
        let on_disk = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/assets/dashboard.html"
        ))
        .unwrap();
        assert_eq!(on_disk, PAGE, "the page served is the one on disk");
        for tag in ["script", "style"] {
            let expected = expected_sources(&on_disk, tag);
            assert!(!expected.is_empty(), "the page has its {tag} inline");
            assert_eq!(
                directive(&csp, &format!("{tag}-src")),
                expected,
                "{tag}-src of {csp}"
            );
        }
        assert!(PAGE.contains("<script"), "the page has its script inline");
        assert!(csp.contains("script-src 'sha256-"), "{csp}");
        assert!(csp.contains("style-src 'sha256-"), "{csp}");
        assert!(!csp.contains("unsafe-inline"));
    }
}
