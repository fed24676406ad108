//! The one outbound policy: every call tokenvend makes to another service (token and JWKS
//! requests, proxied API calls, webhook deliveries) goes to a URL the rules of
//! `url_rules.rs` allow, through a client built here; the edX token client (`upstream/`)
//! is one of those calls.
//!
//! The clients: environment proxies (`HTTP_PROXY`, `HTTPS_PROXY`, `ALL_PROXY`) are ignored,
//! since a proxy would resolve and connect in our place, past the address check; redirects
//! are not followed; every call has a connect and a total timeout; and unless insecure URLs
//! are allowed, only `https` is spoken and a host name is only ever connected to at the
//! public addresses it resolves to ([`is_public_ip`], the predicate that also checks URLs
//! when they are stored and loaded).

/// The edX token client.
pub mod upstream;
mod url_rules;
/// Lifecycle events, Standard Webhooks signatures, at-least-once delivery from the outbox.
pub mod webhooks;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

pub use url_rules::{is_public_ip, parse_outbound_url, UrlPolicy, MAX_URL_LEN};

/// How long one outbound call may take.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub connect: Duration,
    /// For a whole call, connection included.
    pub total: Duration,
}

/// A client that follows the outbound policy under `policy`.
pub fn client(policy: UrlPolicy, timeouts: Timeouts) -> reqwest::Result<reqwest::Client> {
    with_policy(policy, builder(timeouts.connect).timeout(timeouts.total)).build()
}

/// A client for proxied API calls: the same policy, connections kept per host, but no
/// total timeout (a large body streams for as long as it flows): `read_timeout` bounds
/// each wait for more data instead.
pub fn streaming_client(
    policy: UrlPolicy,
    connect: Duration,
    read_timeout: Duration,
) -> reqwest::Result<reqwest::Client> {
    with_policy(policy, builder(connect).read_timeout(read_timeout)).build()
}

fn builder(connect: Duration) -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(connect)
        .user_agent(concat!("tokenvend/", env!("CARGO_PKG_VERSION")))
        .pool_idle_timeout(Duration::from_secs(60))
}

fn with_policy(policy: UrlPolicy, builder: reqwest::ClientBuilder) -> reqwest::ClientBuilder {
    match policy {
        UrlPolicy::PublicHttpsOnly => builder
            .https_only(true)
            .dns_resolver(Arc::new(PublicOnlyResolver)),
        UrlPolicy::AllowInsecure => builder,
    }
}

/// Resolves names like the system does, but only to public addresses: a URL whose name
/// points into the private network is refused at connect time too (DNS rebinding included).
struct PublicOnlyResolver;

impl reqwest::dns::Resolve for PublicOnlyResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let addrs = public_addrs(tokio::net::lookup_host((host.as_str(), 0)).await?);
            if addrs.is_empty() {
                return Err(format!("{host} resolves to no public address").into());
            }
            let addrs: reqwest::dns::Addrs = Box::new(addrs.into_iter());
            Ok(addrs)
        })
    }
}

fn public_addrs(resolved: impl Iterator<Item = SocketAddr>) -> Vec<SocketAddr> {
    resolved.filter(|addr| is_public_ip(addr.ip())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_resolver_keeps_only_public_addresses() {
        let resolved = [
            "127.0.0.1:0",
            "[::7f00:1]:0",
            "[2002:7f00:1::]:0",
            "[fec0::1]:0",
            "[::ffff:10.0.0.1]:0",
            "[64:ff9b::a9fe:a9fe]:0",
            "93.184.216.34:0",
            "[2606:4700::1111]:0",
        ]
        .map(|a| a.parse::<SocketAddr>().unwrap());
        let kept: Vec<String> = public_addrs(resolved.into_iter())
            .iter()
            .map(|a| a.ip().to_string())
            .collect();
        assert_eq!(kept, ["93.184.216.34", "2606:4700::1111"]);
    }

    #[tokio::test]
    async fn a_name_that_resolves_only_to_loopback_is_refused_at_connect_time() {
        let timeouts = Timeouts {
            connect: Duration::from_secs(1),
            total: Duration::from_secs(2),
        };
        let client = client(UrlPolicy::PublicHttpsOnly, timeouts).unwrap();
        // `localhost` resolves without DNS; the URL check would refuse it, the resolver
        // refuses it again.
        let error = client
            .get("https://localhost/oauth2/jwks.json")
            .send()
            .await
            .unwrap_err();
        assert!(error.is_connect(), "{error:?}");
        let text = format!("{error:?}");
        assert!(text.contains("no public address"), "{text}");
    }

    #[tokio::test]
    async fn the_proxys_streaming_client_keeps_to_the_same_policy() {
        let client = streaming_client(
            UrlPolicy::PublicHttpsOnly,
            Duration::from_secs(1),
            Duration::from_secs(2),
        )
        .unwrap();
        let error = client
            .get("https://localhost/api/enterprise/v1/enterprise-customer/")
            .send()
            .await
            .unwrap_err();
        assert!(error.is_connect(), "{error:?}");
        assert!(format!("{error:?}").contains("no public address"));
        let error = client
            .get("http://edx.example.invalid/")
            .send()
            .await
            .unwrap_err();
        assert!(error.is_builder(), "https only: {error:?}");
    }
}
