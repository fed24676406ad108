//! The URL and address rules of outbound calls (token, JWKS, API and webhook URLs): the
//! server-side request forgery guard.
//!
//! Unless insecure URLs are allowed, an outbound URL must be `https://` on port 443 and
//! must not name a loopback, private, link-local, shared, metadata or otherwise non-public
//! address (IPv6 forms that embed an IPv4 address are judged by that address), nor a host
//! name that only resolves inside a private network. This checks the URL as written; the
//! outbound clients (`super`) check the addresses a name resolves to with the same
//! [`is_public_ip`] before they connect. The domain parses its URLs through these rules
//! ([`UrlRules`]).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use url::{Host, Url};

use crate::domain::UrlRules;

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
        // `Url` drops the default port, so an explicit `:443` reads as none.
        if let Some(port) = url.port() {
            return Err(format!(
                "must use the https port 443, not {port} (set TOKENVEND_ALLOW_INSECURE_TOKEN_URLS=1 for local issuers)"
            ));
        }
    }
    Ok(url)
}

impl UrlRules for UrlPolicy {
    fn outbound_url(self, raw: &str) -> Result<Url, String> {
        parse_outbound_url(raw, self)
    }
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
    let [a, b, c, _] = ip.octets();
    !(ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local() // includes 169.254.169.254, the cloud metadata address
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_documentation()
        || ip.is_multicast()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // shared address space (CGNAT)
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 192 && b == 88 && c == 99) // 6to4 relay anycast
        || (a == 198 && (b == 18 || b == 19)) // benchmarking
        || a >= 240) // reserved
}

/// An IPv6 address is public when it is global unicast (`2000::/3`) outside the special
/// ranges, or when it stands for a public IPv4 address (IPv4-mapped, NAT64, 6to4). Every
/// form that embeds an IPv4 address is judged by that address, so that `::ffff:127.0.0.1`,
/// `64:ff9b::a00:1` or `2002:7f00:1::` cannot reach what `127.0.0.1` or `10.0.0.1` cannot.
fn is_public_ipv6(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    let embedded = |high: u16, low: u16| Ipv4Addr::from((u32::from(high) << 16) | u32::from(low));
    if let Some(v4) = ip.to_ipv4_mapped() {
        return is_public_ipv4(v4);
    }
    // IPv4-compatible (`::a.b.c.d`, deprecated by RFC 4291, never a real destination),
    // `::1` and `::` are all in `::/96`.
    if s[..6] == [0; 6] {
        return false;
    }
    // NAT64 well-known prefix (RFC 6052): the last 32 bits are the IPv4 address.
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return is_public_ipv4(embedded(s[6], s[7]));
    }
    // 6to4 (RFC 3056): bits 16..48 are the IPv4 address.
    if s[0] == 0x2002 {
        return is_public_ipv4(embedded(s[1], s[2]));
    }
    // Everything else outside global unicast: site-local (fec0::/10), unique local
    // (fc00::/7), link-local, multicast, discard-only (100::/64), the local-use NAT64
    // prefix (64:ff9b:1::/48) and the unassigned ranges.
    if (s[0] & 0xe000) != 0x2000 {
        return false;
    }
    let ietf = s[0] == 0x2001 && s[1] < 0x0200; // protocol assignments: Teredo, benchmarking, ORCHID
    let documentation = (s[0] == 0x2001 && s[1] == 0x0db8) || (s[0] & 0xfff0) == 0x3ff0; // 2001:db8::/32, 3fff::/20
    !(ietf || documentation)
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
            ("https://[::ffff:10.0.0.1]/x", "IPv4-mapped private"),
            ("https://[::7f00:1]/x", "IPv4-compatible loopback"),
            ("https://[::a00:1]/x", "IPv4-compatible private"),
            (
                "https://[::808:808]/x",
                "IPv4-compatible, deprecated even when public",
            ),
            ("https://[2002:7f00:1::]/x", "6to4 of loopback"),
            ("https://[2002:c0a8:101::1]/x", "6to4 of 192.168.1.1"),
            (
                "https://[2002:a9fe:a9fe::]/x",
                "6to4 of the metadata address",
            ),
            ("https://[64:ff9b::a00:1]/x", "NAT64 of 10.0.0.1"),
            ("https://[64:ff9b::7f00:1]/x", "NAT64 of loopback"),
            ("https://[64:ff9b:1::808:808]/x", "local-use NAT64 prefix"),
            ("https://[fec0::1]/x", "IPv6 site-local"),
            ("https://[feff::1]/x", "IPv6 site-local, top of the range"),
            ("https://[2001::1]/x", "Teredo"),
            ("https://[2001:db8::1]/x", "IPv6 documentation"),
            ("https://[3fff::1]/x", "IPv6 documentation (RFC 9637)"),
            ("https://[100::1]/x", "IPv6 discard-only"),
            ("https://[ff02::1]/x", "IPv6 multicast"),
            ("https://[::]/x", "IPv6 unspecified"),
            ("https://[4000::1]/x", "outside global unicast"),
            ("https://api.edx.org:8443/x", "a port other than 443"),
            ("https://api.edx.org:80/x", "port 80 over https"),
            ("https://93.184.216.34:22/x", "a port on a public address"),
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
            "https://lms.example.org:443/oauth2/access_token",
            "https://[::ffff:93.184.216.34]/oauth2/access_token",
            "https://[64:ff9b::5db8:d822]/oauth2/access_token",
            "https://[2002:5db8:d822::1]/oauth2/access_token",
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
        fn every_ipv6_form_of_an_ipv4_address_is_judged_by_that_address(v4: u32) {
            let v4 = Ipv4Addr::from(v4);
            let [a, b, c, d] = v4.octets();
            let (high, low) = (u16::from_be_bytes([a, b]), u16::from_be_bytes([c, d]));
            let public = is_public_ipv4(v4);
            let mapped = v4.to_ipv6_mapped();
            let nat64 = Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, high, low);
            let six_to_four = Ipv6Addr::new(0x2002, high, low, 0, 0, 0, 0, 1);
            for form in [mapped, nat64, six_to_four] {
                prop_assert_eq!(is_public_ip(IpAddr::V6(form)), public, "{}", form);
                let url = format!("https://[{form}]/oauth2/access_token");
                prop_assert_eq!(parse_outbound_url(&url, UrlPolicy::PublicHttpsOnly).is_ok(), public);
            }
            // IPv4-compatible addresses are deprecated: refused whatever they embed.
            prop_assert!(!is_public_ip(IpAddr::V6(v4.to_ipv6_compatible())));
        }

        #[test]
        fn no_ipv6_outside_global_unicast_passes(ip: u128) {
            let ip = Ipv6Addr::from(ip);
            let global_unicast = (ip.segments()[0] & 0xe000) == 0x2000;
            let embeds_ipv4 = ip.to_ipv4_mapped().is_some() || ip.segments()[..6] == [0x64, 0xff9b, 0, 0, 0, 0];
            if !global_unicast && !embeds_ipv4 {
                prop_assert!(!is_public_ip(IpAddr::V6(ip)), "{}", ip);
            }
        }

        #[test]
        fn only_port_443_passes_the_default_policy(port in 1u16..) {
            let url = format!("https://api.edx.org:{port}/oauth2/v1/access_token");
            prop_assert_eq!(parse_outbound_url(&url, UrlPolicy::PublicHttpsOnly).is_ok(), port == 443);
            let insecure = format!("http://127.0.0.1:{port}/oauth2/access_token");
            prop_assert!(parse_outbound_url(&insecure, UrlPolicy::AllowInsecure).is_ok());
        }

        #[test]
        fn arbitrary_input_never_panics(raw in "\\PC{0,100}") {
            let _ = parse_outbound_url(&raw, UrlPolicy::PublicHttpsOnly);
        }
    }
}
