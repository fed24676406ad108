//! A local edX-like OAuth2 issuer: a client-credentials token endpoint and a JWKS document
//! that imitate edX's LMS closely enough for tokenvend's tests, benchmarks and demo, so that
//! nothing but production ever talks to the real edX.
//!
//! What it imitates (edX's OAuth2 client-credentials grant, as tokenvend's README and
//! openapi.yaml describe the upstream):
//!
//! - `POST /oauth2/access_token` (Open edX) and `POST /oauth2/v1/access_token` (api.edx.org),
//!   same handler: an `application/x-www-form-urlencoded` body with `grant_type`,
//!   `client_id`, `client_secret`, optional `scope`, `token_type` and `asymmetric_jwt`.
//! - `token_type=jwt` gives an RS256 JWT with edX's claims; anything else gives an opaque
//!   40-character bearer token. `expires_in` can be sent as an integer, a numeric string,
//!   a float, or left out, per client.
//! - Every edX failure mode tokenvend must survive can be switched on per client
//!   ([`Failure`]), plus an artificial latency.
//! - `GET /oauth2/jwks.json` publishes the public half of the signing key; with
//!   [`KeyPublishing`] it imitates a key rotation (a retired key listed first) and edX's
//!   default of JWTs without `kid`.
//!
//! Every token request is counted and its form recorded before anything else happens, so
//! tests can assert how frugal tokenvend is with upstream calls, failures included.
//!
//! The issuer reads the time from a function it is given ([`Issuer::new`]), so a test can
//! share one manual clock between the service under test and the issuer.

mod api;
mod behaviour;
mod jwt;
mod server;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use chrono::{DateTime, Utc};
use jsonwebtoken::EncodingKey;
use parking_lot::Mutex;
use serde_json::Value;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use api::{large_body_byte, REDIRECT_TARGET};
pub use behaviour::{ClientBehaviour, ExpiresInFormat, Failure};
pub use jwt::{KeyPublishing, AUDIENCE, DECOY_KEY_ID, KEY_ID};

/// Where the issuer reads the current time: `iat` and `exp` of the JWTs it signs.
pub type Now = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

/// A local edX-like OAuth2 issuer. Cheap to clone: clones share clients and counters.
#[derive(Clone)]
pub struct Issuer {
    core: Arc<IssuerCore>,
}

/// What every clone of an [`Issuer`] and every request handler share.
struct IssuerCore {
    now: Now,
    key: EncodingKey,
    publishing: Mutex<KeyPublishing>,
    registry: Mutex<Registry>,
    api: Mutex<api::ApiRegistry>,
}

/// The registered clients and what they were sent.
#[derive(Default)]
struct Registry {
    clients: HashMap<String, Client>,
    /// Per `client_id` named in a request, registered or not.
    calls: HashMap<String, CallRecord>,
    total_calls: u64,
}

struct Client {
    secret: String,
    behaviour: ClientBehaviour,
}

#[derive(Default)]
struct CallRecord {
    calls: u64,
    last_form: Vec<(String, String)>,
    last_traceparent: Option<String>,
}

impl std::fmt::Debug for Issuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issuer")
            .field("total_calls", &self.total_calls())
            .finish_non_exhaustive()
    }
}

impl Issuer {
    /// An issuer that reads the time from `now`: `Issuer::new(chrono::Utc::now)` for the
    /// system clock, or a closure reading the manual clock the service under test reads.
    pub fn new(now: impl Fn() -> DateTime<Utc> + Send + Sync + 'static) -> Self {
        Self {
            core: Arc::new(IssuerCore {
                now: Arc::new(now),
                key: jwt::signing_key(),
                publishing: Mutex::new(KeyPublishing::default()),
                registry: Mutex::new(Registry::default()),
                api: Mutex::new(api::ApiRegistry::default()),
            }),
        }
    }

    /// Routes: `POST /oauth2/access_token` and `POST /oauth2/v1/access_token` (both edX
    /// paths, same handler), `GET /oauth2/jwks.json`, and the edX-like API `/api/...`
    /// that accepts only the tokens this issuer issued (see the `api` module).
    pub fn router(&self) -> Router {
        server::router(Arc::clone(&self.core), None)
    }

    /// Binds `127.0.0.1:0` and serves in a spawned tokio task, until the returned
    /// [`RunningIssuer`] is dropped.
    pub async fn start(&self) -> std::io::Result<RunningIssuer> {
        let listener = tokio::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let (shutdown_tx, shutdown_rx) = watch::channel(());
        let router = server::router(Arc::clone(&self.core), Some(shutdown_rx));
        let task = tokio::spawn(async move {
            if let Err(error) = axum::serve(listener, router).await {
                tracing::warn!(%error, "local issuer stopped serving");
            }
        });
        tracing::debug!(%addr, "local issuer listening");
        Ok(RunningIssuer {
            addr,
            task,
            _shutdown: shutdown_tx,
        })
    }

    /// Registers a client, or replaces the secret of an existing one; an existing client keeps
    /// its behaviour, a new one gets [`ClientBehaviour::default()`].
    pub fn register(&self, client_id: &str, client_secret: &str) {
        let mut registry = self.core.registry.lock();
        match registry.clients.get_mut(client_id) {
            Some(client) => client.secret = client_secret.to_owned(),
            None => {
                registry.clients.insert(
                    client_id.to_owned(),
                    Client {
                        secret: client_secret.to_owned(),
                        behaviour: ClientBehaviour::default(),
                    },
                );
            }
        }
    }

    /// Changes a client's behaviour. Never panics: an unknown client is registered with an
    /// empty secret, which no request can match (an empty `client_secret` is answered
    /// `400 invalid_request`), so until [`Issuer::register`] gives it a secret only its
    /// `failure` and `latency` matter. `configure` and `register` can come in either order.
    pub fn configure(&self, client_id: &str, f: impl FnOnce(&mut ClientBehaviour)) {
        let mut registry = self.core.registry.lock();
        let client = registry
            .clients
            .entry(client_id.to_owned())
            .or_insert_with(|| Client {
                secret: String::new(),
                behaviour: ClientBehaviour::default(),
            });
        f(&mut client.behaviour);
    }

    /// Token requests received that named this `client_id` in their form (any outcome,
    /// including rejected ones).
    pub fn calls(&self, client_id: &str) -> u64 {
        self.core
            .registry
            .lock()
            .calls
            .get(client_id)
            .map_or(0, |record| record.calls)
    }

    /// All token requests received, including those whose body could not be parsed.
    pub fn total_calls(&self) -> u64 {
        self.core.registry.lock().total_calls
    }

    /// The form fields of the last token request that named this `client_id`, in the order
    /// received.
    pub fn last_form(&self, client_id: &str) -> Option<Vec<(String, String)>> {
        self.core
            .registry
            .lock()
            .calls
            .get(client_id)
            .map(|record| record.last_form.clone())
    }

    /// Revokes every token issued so far to `client_id` (the API answers `401` to them);
    /// returns how many were revoked.
    pub fn revoke_tokens_of(&self, client_id: &str) -> usize {
        self.core.api.lock().revoke_client(client_id)
    }

    /// Revokes one issued token; false if this issuer never issued it.
    pub fn revoke(&self, access_token: &str) -> bool {
        self.core.api.lock().revoke(access_token)
    }

    /// Calls received by the API (`/api/...`), answered or refused.
    pub fn api_calls(&self) -> u64 {
        self.core.api.lock().calls
    }

    /// The W3C `traceparent` header of the last token request that named this
    /// `client_id`, if it carried one (tests check that traces reach edX).
    pub fn last_traceparent(&self, client_id: &str) -> Option<String> {
        self.core
            .registry
            .lock()
            .calls
            .get(client_id)
            .and_then(|record| record.last_traceparent.clone())
    }

    /// The JWKS document published at `GET /oauth2/jwks.json`.
    pub fn jwks(&self) -> Value {
        jwt::jwks(*self.core.publishing.lock())
    }

    /// Changes how the key is published and named in JWTs signed from now on (default:
    /// the signing key alone, `kid` in every header).
    pub fn set_key_publishing(&self, publishing: KeyPublishing) {
        *self.core.publishing.lock() = publishing;
    }
}

impl IssuerCore {
    /// Counts a token request and records its form and `traceparent`; returns the named client's behaviour
    /// and secret if it is registered.
    fn record(
        &self,
        form: Option<&[(String, String)]>,
        traceparent: Option<&str>,
    ) -> Option<(ClientBehaviour, String)> {
        let mut registry = self.registry.lock();
        registry.total_calls += 1;
        let form = form?;
        let client_id = server::field(form, "client_id")?;
        let record = registry.calls.entry(client_id.to_owned()).or_default();
        record.calls += 1;
        record.last_form = form.to_vec();
        record.last_traceparent = traceparent.map(str::to_owned);
        registry
            .clients
            .get(client_id)
            .map(|client| (client.behaviour.clone(), client.secret.clone()))
    }
}

/// A served [`Issuer`]. Dropping it stops the server: no new connections, idle keep-alive
/// connections are closed, and requests waiting on `latency` or [`Failure::Hang`] are cut
/// short with a 503.
#[derive(Debug)]
pub struct RunningIssuer {
    pub addr: SocketAddr,
    task: JoinHandle<()>,
    /// Dropped with the `RunningIssuer`, which wakes the handlers that are waiting.
    _shutdown: watch::Sender<()>,
}

impl RunningIssuer {
    /// `http://{addr}/oauth2/access_token` (the Open edX path).
    pub fn token_url(&self) -> String {
        format!("http://{}/oauth2/access_token", self.addr)
    }

    /// `http://{addr}/oauth2/v1/access_token` (the api.edx.org path).
    pub fn v1_token_url(&self) -> String {
        format!("http://{}/oauth2/v1/access_token", self.addr)
    }

    /// `http://{addr}`: the base of its edX-like API (`/api/...`).
    pub fn api_base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `http://{addr}/oauth2/jwks.json`
    pub fn jwks_url(&self) -> String {
        format!("http://{}/oauth2/jwks.json", self.addr)
    }
}

impl Drop for RunningIssuer {
    fn drop(&mut self) {
        self.task.abort();
    }
}
