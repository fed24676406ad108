//! A tenant's settings as vending needs them: the client secret opened, the URLs checked
//! against the outbound rules in force now (not only when they were written), or the
//! reason the tenant cannot be asked a token for.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use secrecy::SecretString;
use url::Url;

use super::port::TenantKey;
use crate::crypto::{MasterKey, Purpose};
use crate::domain::{origin_of, parse_api_base_url, Tenant, TenantId, TenantUid, TokenType};
use crate::outbound::upstream::{TokenRequest, DEFAULT_TOKEN_URL};
use crate::outbound::{parse_outbound_url, UrlPolicy};
use crate::store::InvalidTenantRow;

pub struct TenantConfig {
    pub key: TenantKey,
    /// The version of the stored row it was built from (`-1`: a row that does not parse,
    /// built again at every reload): a reload skips rows at the version held.
    pub version: i64,
    pub jwks_url: Option<Arc<Url>>,
    /// Where the proxy sends API calls (checked against the rules in force now), or why
    /// it may not.
    pub api_base: Result<Arc<Url>, String>,
    /// What a token request sends, or why none may be sent (shown in the token status).
    pub upstream: Result<UpstreamParams, String>,
    /// The token type asked of edX (shown in the token status: edX is retiring Bearer).
    pub token_type: TokenType,
}

pub struct UpstreamParams {
    token_url: Arc<Url>,
    client_id: String,
    client_secret: SecretString,
    scope: Option<String>,
    token_type: TokenType,
    asymmetric_jwt: bool,
    /// The client secret from before its last change, and until when it may be used
    /// (boxed: few tenants have one, and every tenant's settings are held in memory).
    previous_secret: Option<Box<(SecretString, DateTime<Utc>)>>,
}

impl UpstreamParams {
    pub fn request(&self) -> TokenRequest<'_> {
        self.request_with(&self.client_secret)
    }

    /// The same request with the previous client secret, while it may still be used:
    /// the safety net of a rotation whose new secret edX refuses.
    pub fn previous_request(
        &self,
        now: DateTime<Utc>,
    ) -> Option<(TokenRequest<'_>, DateTime<Utc>)> {
        let (secret, until) = self.previous_secret.as_deref()?;
        (now < *until).then(|| (self.request_with(secret), *until))
    }

    fn request_with<'a>(&'a self, secret: &'a SecretString) -> TokenRequest<'a> {
        TokenRequest {
            token_url: &self.token_url,
            client_id: &self.client_id,
            client_secret: secret,
            scope: self.scope.as_deref(),
            token_type: self.token_type,
            asymmetric_jwt: self.asymmetric_jwt,
        }
    }
}

/// The previous client secret, opened; one that cannot be opened is only logged (the
/// current secret is what counts).
fn open_previous(tenant: &Tenant, key: &MasterKey) -> Option<(SecretString, DateTime<Utc>)> {
    let previous = tenant.previous_secret.as_ref()?;
    let opened = key
        .open(
            Purpose::PreviousClientSecret,
            tenant.id.as_str(),
            &previous.sealed,
        )
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok());
    if opened.is_none() {
        tracing::warn!(tenant = %tenant.id, "the stored previous client secret cannot be opened; it is not used");
    }
    Some((SecretString::from(opened?), previous.until))
}

/// URLs many tenants share (edX's token URL, its API base), held once: the engine keeps
/// every tenant's settings in memory.
#[derive(Default)]
pub struct SharedUrls(HashMap<String, Arc<Url>>);

impl SharedUrls {
    pub fn share(&mut self, url: Url) -> Arc<Url> {
        self.0
            .entry(url.as_str().to_owned())
            .or_insert_with(|| Arc::new(url))
            .clone()
    }
}

/// Checks a stored URL against the rules in force now.
fn allowed(field: &str, url: &Url, policy: UrlPolicy) -> Result<Url, String> {
    parse_outbound_url(url.as_str(), policy).map_err(|problem| format!("{field} {problem}"))
}

impl TenantConfig {
    pub fn new(tenant: &Tenant, key: &MasterKey, policy: UrlPolicy) -> Self {
        Self::sharing(tenant, key, policy, &mut SharedUrls::default())
    }

    /// As `new`, holding the URLs it has in common with others built with `urls` once.
    pub fn sharing(
        tenant: &Tenant,
        key: &MasterKey,
        policy: UrlPolicy,
        urls: &mut SharedUrls,
    ) -> Self {
        let upstream = (|| {
            let default_url;
            let token_url = match &tenant.token_url {
                Some(url) => url,
                None => {
                    default_url = Url::parse(DEFAULT_TOKEN_URL).map_err(|e| e.to_string())?;
                    &default_url
                }
            };
            let token_url = allowed("token_url", token_url, policy)?;
            let secret = key
                .open(Purpose::ClientSecret, tenant.id.as_str(), &tenant.secret)
                .map_err(|e| format!("the stored client secret cannot be opened: {e}"))?;
            let secret = String::from_utf8(secret)
                .map_err(|_| "the stored client secret is not text".to_owned())?;
            Ok(UpstreamParams {
                token_url: urls.share(token_url),
                client_id: tenant.client_id.clone(),
                client_secret: SecretString::from(secret),
                scope: tenant.scope.clone(),
                token_type: tenant.token_type,
                asymmetric_jwt: tenant.asymmetric_jwt,
                previous_secret: open_previous(tenant, key).map(Box::new),
            })
        })();
        let jwks_url = tenant
            .jwks_url
            .as_ref()
            .map(|url| allowed("jwks_url", url, policy).map(|url| urls.share(url)));
        let (jwks_url, upstream) = match jwks_url.transpose() {
            Ok(jwks_url) => (jwks_url, upstream),
            Err(problem) => (None, upstream.and(Err(problem))),
        };
        let api_base = api_base_of(tenant)
            .and_then(|url| parse_api_base_url(url.as_str(), policy))
            .map(|url| urls.share(url))
            .map_err(|problem| format!("api_base_url {problem}"));
        // A token goes to the API base: when the rules refuse it, no token is had at all.
        let upstream = match &api_base {
            Ok(_) => upstream,
            Err(problem) => upstream.and(Err(problem.clone())),
        };
        if let Err(problem) = &upstream {
            tracing::error!(tenant = %tenant.id, %problem, "the tenant cannot be asked a token for");
        }
        Self {
            key: TenantKey {
                id: tenant.id.clone(),
                uid: tenant.uid,
                credentials_version: tenant.credentials_version,
            },
            version: tenant.version,
            jwks_url,
            api_base,
            upstream,
            token_type: tenant.token_type,
        }
    }

    /// A stored row that does not parse: the tenant is kept (so that it shows as failing
    /// with the reason) but nothing is ever sent for it.
    pub fn invalid(id: TenantId, row: &InvalidTenantRow) -> Self {
        tracing::error!(tenant = %id, error = %row, "the stored tenant is invalid");
        Self {
            key: TenantKey {
                id,
                // A row without an identity gets one of its own that nothing else shares.
                uid: row.uid.unwrap_or_else(TenantUid::generate),
                credentials_version: 0,
            },
            version: -1,
            jwks_url: None,
            api_base: Err("the stored tenant is invalid".to_owned()),
            upstream: Err(format!(
                "the stored tenant is invalid: {} {}",
                row.field, row.problem
            )),
            // Unknown; nothing is asked of edX for it anyway.
            token_type: TokenType::Jwt,
        }
    }
}

/// A tenant's API base: its own, or the origin of its token URL (of edX's default one).
pub fn api_base_of(tenant: &Tenant) -> Result<Url, String> {
    match (&tenant.api_base_url, &tenant.token_url) {
        (Some(base), _) => Ok(base.clone()),
        (None, Some(token_url)) => Ok(origin_of(token_url)),
        (None, None) => Url::parse(DEFAULT_TOKEN_URL)
            .map(|url| origin_of(&url))
            .map_err(|e| e.to_string()),
    }
}
