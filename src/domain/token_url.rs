//! Outbound URLs (token and JWKS endpoints) and the server-side request forgery guard.
//!
//! Unless insecure URLs are allowed, an outbound URL must be `https://` and must not name
//! a loopback, private, link-local, shared or metadata address, nor a host name that only
//! resolves inside a private network. This checks the URL as written; the upstream client
//! also checks the addresses a name resolves to before it connects.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use url::{Host, Url};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UrlPolicy {
    /// Only `https://` to public hosts (the default).
    PublicHttpsOnly,
    /// `http://` and private or loopback hosts too (tests, local issuers).
    AllowInsecure,
}

pub const MAX_URL_LEN: usize = 2048;

pub fn parse_outbound_url(raw: &str, policy: UrlPolicy) -> Result<Url, String> {
    if raw.len() > MAX_URL_LEN {
        return Err(format!("must be at most {MAX_URL_LEN} characters"));
    }
    let url = Url::parse(raw).map_err(|e| format!("is not a valid absolute URL ({e})"))?;
    match (url.scheme(), policy) {
        ("https", _) | ("http", UrlPolicy::AllowInsecure) => {}
        ("http", UrlPolicy::PublicHttpsOnly) => {
            return Err(
                "must use https:// (set TOKENVEND_ALLOW_INSECURE_TOKEN_URLS=1 to allow http://)"
                    .to_owned(),
            )
        }
        (other, _) => return Err(format!("must use https://, not {other}://")),
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not contain credentials".to_owned());
    }
    if url.fragment().is_some() {
        return Err("must not contain a fragment".to_owned());
    }
    let host = url.host().ok_or_else(|| "must name a host".to_owned())?;
    if policy == UrlPolicy::PublicHttpsOnly {
        check_public_host(&host)?;
    }
    Ok(url)
}

fn check_public_host(host: &Host<&str>) -> Result<(), String> {
    const INSECURE_HINT: &str = "(set TOKENVEND_ALLOW_INSECURE_TOKEN_URLS=1 for local issuers)";
    match host {
        Host::Ipv4(ip) if !is_public_ipv4(*ip) => Err(format!(
            "must not name a loopback, private, link-local or reserved address {INSECURE_HINT}"
        )),
        Host::Ipv6(ip) if !is_public_ipv6(*ip) => Err(format!(
            "must not name a loopback, private, link-local or reserved address {INSECURE_HINT}"
        )),
        Host::Domain(name) => {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            let private_suffixes = [
                ".localhost",
                ".local",
                ".internal",
                ".localdomain",
                ".home.arpa",
            ];
            if name == "localhost" || private_suffixes.iter().any(|s| name.ends_with(s)) {
                return Err(format!("must name a public host {INSECURE_HINT}"));
            }
            if !name.contains('.') {
                return Err(format!(
                    "must name a fully qualified public host {INSECURE_HINT}"
                ));
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Whether an address may be the target of an outbound call under the default policy.
pub fn is_public_ip(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_ipv4(v4),
        IpAddr::V6(v6) => is_public_ipv6(v6),
    }
}

fn is_public_ipv4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    !(ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local() // includes 169.254.169.254, the cloud metadata address
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_documentation()
        || ip.is_multicast()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // shared address space (CGNAT)
        || (a == 192 && b == 0 && ip.octets()[2] == 0) // IETF protocol assignments
        || (a == 198 && (b == 18 || b == 19)) // benchmarking
        || a >= 240) // reserved
}

fn is_public_ipv6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return is_public_ipv4(v4);
    }
    let first = ip.segments()[0];
    !(ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || (first & 0xfe00) == 0xfc00 // unique local
        || (first & 0xffc0) == 0xfe80 // link-local
        || (first == 0x2001 && ip.segments()[1] == 0x0db8) // documentation
        || (first == 0x0064 && ip.segments()[1] == 0xff9b)) // NAT64 can reach private IPv4
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_default_policy_rejects_unsafe_urls() {
        let cases = [
            ("http://api.edx.org/oauth2/v1/access_token", "plain http"),
            ("ftp://api.edx.org/x", "other scheme"),
            ("https://localhost/oauth2/access_token", "localhost"),
            ("https://lms.localhost/oauth2/access_token", "*.localhost"),
            ("https://127.0.0.1/oauth2/access_token", "loopback"),
            ("https://127.1/x", "short loopback form"),
            ("https://2130706433/x", "decimal loopback form"),
            ("https://10.1.2.3/x", "private 10/8"),
            ("https://172.16.0.1/x", "private 172.16/12"),
            ("https://192.168.1.1/x", "private 192.168/16"),
            (
                "https://169.254.169.254/latest/meta-data",
                "metadata address",
            ),
            ("https://100.64.0.1/x", "shared address space"),
            ("https://0.0.0.0/x", "unspecified"),
            ("https://[::1]/x", "IPv6 loopback"),
            ("https://[fd00::1]/x", "IPv6 unique local"),
            ("https://[fe80::1]/x", "IPv6 link-local"),
            ("https://[::ffff:127.0.0.1]/x", "IPv4-mapped loopback"),
            ("https://metadata.google.internal/x", "*.internal"),
            ("https://printer.local/x", "*.local"),
            ("https://intranet/x", "single-label host"),
            ("https://user:pw@api.edx.org/x", "credentials in the URL"),
            ("https://api.edx.org/x#frag", "fragment"),
            ("not a url", "not a URL"),
            ("/oauth2/access_token", "relative"),
        ];
        for (url, why) in cases {
            assert!(
                parse_outbound_url(url, UrlPolicy::PublicHttpsOnly).is_err(),
                "{why}: {url} should be rejected"
            );
        }
    }

    #[test]
    fn the_default_policy_accepts_public_https_urls() {
        for url in [
            "https://api.edx.org/oauth2/v1/access_token",
            "https://courses.example.com/oauth2/access_token",
            "https://93.184.216.34/oauth2/access_token",
            "https://[2606:4700::1111]/oauth2/access_token",
            "https://lms.example.org:8443/oauth2/access_token",
        ] {
            assert!(
                parse_outbound_url(url, UrlPolicy::PublicHttpsOnly).is_ok(),
                "{url} should be accepted"
            );
        }
    }

    #[test]
    fn the_insecure_policy_allows_local_http_but_not_other_schemes() {
        assert!(parse_outbound_url(
            "http://127.0.0.1:9000/oauth2/access_token",
            UrlPolicy::AllowInsecure
        )
        .is_ok());
        assert!(parse_outbound_url("http://localhost/x", UrlPolicy::AllowInsecure).is_ok());
        assert!(parse_outbound_url("file:///etc/passwd", UrlPolicy::AllowInsecure).is_err());
        assert!(parse_outbound_url("https://u:p@localhost/x", UrlPolicy::AllowInsecure).is_err());
    }

    proptest! {
        #[test]
        fn no_private_ipv4_literal_passes_the_default_policy(
            a in prop::sample::select(vec![10u8, 127, 169, 172, 192]), b: u8, c: u8, d: u8
        ) {
            let ip = Ipv4Addr::new(a, b, c, d);
            let url = format!("https://{ip}/oauth2/access_token");
            let accepted = parse_outbound_url(&url, UrlPolicy::PublicHttpsOnly).is_ok();
            prop_assert_eq!(accepted, is_public_ipv4(ip));
            if ip.is_private() || ip.is_loopback() || ip.is_link_local() {
                prop_assert!(!accepted);
            }
        }

        #[test]
        fn arbitrary_input_never_panics(raw in "\\PC{0,100}") {
            let _ = parse_outbound_url(&raw, UrlPolicy::PublicHttpsOnly);
        }
    }
}
