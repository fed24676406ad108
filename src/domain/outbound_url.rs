//! The URLs tokenvend calls out to, as tenants and identity providers hold them. Which URLs
//! may be called is the outbound policy's to say (`crate::outbound::UrlPolicy`, a layer
//! above): the domain parses through it by way of [`UrlRules`].

use url::Url;

/// The outbound URL rules, as the domain needs them when it parses a URL it will call.
pub trait UrlRules: Copy {
    /// `raw` as an outbound URL, or why the rules refuse it (a phrase that follows the
    /// field's name, e.g. "must use https://").
    fn outbound_url(self, raw: &str) -> Result<Url, String>;
}

/// Where a tenant's proxied API calls go: an outbound URL (the same rules) without a
/// query; proxied paths go below its path.
pub fn parse_api_base_url(raw: &str, rules: impl UrlRules) -> Result<Url, String> {
    let url = rules.outbound_url(raw)?;
    if url.query().is_some() {
        return Err("must not contain a query".to_owned());
    }
    Ok(url)
}

/// The origin of `url` (`scheme://host[:port]/`): the default API base of a token URL.
pub fn origin_of(url: &Url) -> Url {
    let mut origin = url.clone();
    origin.set_path("/");
    origin.set_query(None);
    origin.set_fragment(None);
    origin
}

/// A URL as tenants show it: an origin without its trailing `/`.
pub fn display_url(url: &Url) -> String {
    let text = url.as_str();
    if url.path() == "/" && url.query().is_none() {
        text.trim_end_matches('/').to_owned()
    } else {
        text.to_owned()
    }
}

/// A stand-in for the outbound rules in the domain's tests (`crate::outbound`'s own are
/// tested there): `https://` to a host name.
#[cfg(test)]
#[derive(Clone, Copy)]
pub(super) struct HttpsToNames;

#[cfg(test)]
impl UrlRules for HttpsToNames {
    fn outbound_url(self, raw: &str) -> Result<Url, String> {
        let url = Url::parse(raw).map_err(|e| e.to_string())?;
        match (url.scheme(), url.host()) {
            ("https", Some(url::Host::Domain(_))) => Ok(url),
            _ => Err("must use https:// to a host name".to_owned()),
        }
    }
}
