//! The soak's mixed traffic against the replicas: token hits, proxied API calls, admin
//! writes (a tenant's name, tenants created and deleted) and invalidations, each at a
//! fixed rate, open loop (a slow answer does not slow the sending) up to an in-flight cap.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use edx_issuer::{ClientBehaviour, Failure, Issuer};
use parking_lot::Mutex;
use serde_json::{json, Value};
use tokio::sync::Semaphore;
use tokio::time::MissedTickBehavior;

use crate::fleet::Fleet;
use crate::setup::Prepared;
use crate::stats::{Kind, Stats};

/// How many requests of one kind may wait for an answer at once.
const IN_FLIGHT_CAP: usize = 2000;
/// A tenant made by the churn lives this many churn periods (less than its token's
/// refresh point, so it costs exactly one edX call).
const CHURN_LIFE: usize = 3;

pub struct Rates {
    pub token_per_second: f64,
    pub proxy_per_second: f64,
    pub patch_per_second: f64,
    pub churn_every: Duration,
    pub invalidate_every: Duration,
}

/// What the admin writes and invalidations achieved (the edX-call ideal adds some).
#[derive(Default, Clone)]
pub struct Tally {
    pub patched: u64,
    pub created: u64,
    /// Created tenants whose first token request answered 200 (one edX call each).
    pub created_with_token: u64,
    pub deleted: u64,
    pub invalidated: u64,
    pub invalidate_mismatch: u64,
    pub invalidate_refused: u64,
}

/// The state edX is in for every client (the faults change it).
#[derive(Clone, Default)]
pub struct EdxMode {
    pub latency: Duration,
    pub failure: Option<Failure>,
}

pub struct Traffic {
    pub client: reqwest::Client,
    pub fleet: Arc<Fleet>,
    pub stats: Arc<Stats>,
    pub issuer: Issuer,
    pub token_url: String,
    pub admin_key: String,
    pub caller_key: String,
    pub invalidator_key: String,
    pub tenants: usize,
    pub lifetime: Duration,
    pub deadline: Instant,
    pub tally: Mutex<Tally>,
    clients: Mutex<(Vec<String>, EdxMode)>,
}

/// The base tenants' ids: `s0000` … (sorted as created).
pub fn tenant_id(i: usize) -> String {
    format!("s{i:04}")
}

impl Traffic {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        client: reqwest::Client,
        fleet: Arc<Fleet>,
        stats: Arc<Stats>,
        issuer: Issuer,
        token_url: String,
        admin_key: String,
        prepared: Prepared,
        lifetime: Duration,
        deadline: Instant,
    ) -> Self {
        Self {
            client,
            fleet,
            stats,
            issuer,
            token_url,
            admin_key,
            caller_key: prepared.caller_key,
            invalidator_key: prepared.invalidator_key,
            tenants: prepared.clients.len(),
            lifetime,
            deadline,
            tally: Mutex::new(Tally::default()),
            clients: Mutex::new((prepared.clients, EdxMode::default())),
        }
    }

    /// Registers an issuer client with the soak's lifetime and edX's current mode.
    pub fn register_client(&self, client_id: &str, secret: &str) {
        let mut clients = self.clients.lock();
        register(&self.issuer, client_id, secret, self.lifetime, &clients.1);
        clients.0.push(client_id.to_owned());
    }

    /// Puts every client (and those registered later) in `mode`.
    pub fn set_edx(&self, mode: EdxMode) {
        let mut clients = self.clients.lock();
        for client_id in &clients.0 {
            self.issuer
                .configure(client_id, |b| apply(b, self.lifetime, &mode));
        }
        clients.1 = mode;
    }

    /// One request, recorded; the status and body when an answer came.
    async fn send(&self, kind: Kind, request: reqwest::RequestBuilder) -> Option<(u16, Value)> {
        let sent = Instant::now();
        let answer = match request.send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                response.bytes().await.ok().map(|body| {
                    let value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                    (status, value)
                })
            }
            Err(_) => None,
        };
        self.stats.record(kind, sent, answer.as_ref().map(|a| a.0));
        answer
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.fleet.base(self.fleet.pick()))
    }

    fn random_tenant(&self) -> String {
        tenant_id(rand::random::<usize>() % self.tenants)
    }

    /// Runs every kind of traffic until the deadline.
    pub async fn run(self: Arc<Self>, rates: &Rates) {
        let token = paced(&self, Kind::Token, rates.token_per_second, |t| async move {
            let url = t.url(&format!("/tenants/{}/token", t.random_tenant()));
            t.send(Kind::Token, t.client.get(url).bearer_auth(&t.caller_key))
                .await;
        });
        let proxy = paced(&self, Kind::Proxy, rates.proxy_per_second, |t| async move {
            let path = format!(
                "/tenants/{}/proxy/api/enterprise/v1/enterprise-customer/?page=1",
                t.random_tenant()
            );
            t.send(
                Kind::Proxy,
                t.client.get(t.url(&path)).bearer_auth(&t.caller_key),
            )
            .await;
        });
        let patch = paced(&self, Kind::Admin, rates.patch_per_second, |t| async move {
            let id = t.random_tenant();
            let body = json!({"name": format!("Soak tenant {id} {}", rand::random::<u32>())});
            let request = t
                .client
                .patch(t.url(&format!("/tenants/{id}")))
                .bearer_auth(&t.admin_key)
                .json(&body);
            if let Some((200, _)) = t.send(Kind::Admin, request).await {
                t.tally.lock().patched += 1;
            }
        });
        tokio::join!(
            token,
            proxy,
            patch,
            self.churn(rates.churn_every),
            self.invalidations(rates.invalidate_every)
        );
    }

    /// Every `every`: creates a tenant, asks its token once, and deletes the tenant made
    /// `CHURN_LIFE` periods before.
    async fn churn(&self, every: Duration) {
        let mut ticker = tokio::time::interval(every);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut alive = std::collections::VecDeque::new();
        let mut n = 0usize;
        loop {
            ticker.tick().await;
            if Instant::now() >= self.deadline {
                break;
            }
            n += 1;
            let id = format!("c{n:04}");
            let (client_id, secret) = (format!("soak-{id}"), format!("secret-{id}"));
            self.register_client(&client_id, &secret);
            let body = json!({
                "id": id, "name": format!("Churn {n}"), "client_id": client_id,
                "client_secret": secret, "token_url": self.token_url,
            });
            let request = self
                .client
                .post(self.url("/tenants"))
                .bearer_auth(&self.admin_key)
                .json(&body);
            if let Some((201, _)) = self.send(Kind::Admin, request).await {
                self.tally.lock().created += 1;
                alive.push_back(id.clone());
                let url = self.url(&format!("/tenants/{id}/token"));
                let request = self.client.get(url).bearer_auth(&self.admin_key);
                if let Some((200, _)) = self.send(Kind::Admin, request).await {
                    self.tally.lock().created_with_token += 1;
                }
            }
            // Two at most per period, so that deletes refused while the database was
            // down are caught up.
            for _ in 0..2 {
                if alive.len() <= CHURN_LIFE {
                    break;
                }
                let Some(old) = alive.pop_front() else { break };
                let url = self.url(&format!("/tenants/{old}"));
                let request = self.client.delete(url).bearer_auth(&self.admin_key);
                if let Some((204, _)) = self.send(Kind::Admin, request).await {
                    self.tally.lock().deleted += 1;
                } else {
                    alive.push_front(old);
                    break;
                }
            }
        }
    }

    /// Every `every`: a caller that got a 401 with a token reports its fingerprint.
    async fn invalidations(&self, every: Duration) {
        let mut ticker = tokio::time::interval(every);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            if Instant::now() >= self.deadline {
                break;
            }
            let id = self.random_tenant();
            let url = self.url(&format!("/tenants/{id}/token"));
            let request = self.client.get(url).bearer_auth(&self.invalidator_key);
            let Some((200, token)) = self.send(Kind::Invalidate, request).await else {
                continue;
            };
            let fingerprint = token["fingerprint"].as_str().unwrap_or_default();
            let request = self
                .client
                .post(self.url(&format!("/tenants/{id}/token/invalidate")))
                .bearer_auth(&self.invalidator_key)
                .json(&json!({ "fingerprint": fingerprint }));
            let answer = self.send(Kind::Invalidate, request).await;
            let mut tally = self.tally.lock();
            match answer {
                Some((200, body)) if body["invalidated"] == true => tally.invalidated += 1,
                Some((200, _)) => tally.invalidate_mismatch += 1,
                Some((429, _)) => tally.invalidate_refused += 1,
                _ => {}
            }
        }
    }
}

/// Registers an issuer client whose tokens live `lifetime`, answered as `mode` says.
pub fn register(
    issuer: &Issuer,
    client_id: &str,
    secret: &str,
    lifetime: Duration,
    mode: &EdxMode,
) {
    issuer.register(client_id, secret);
    issuer.configure(client_id, |b| apply(b, lifetime, mode));
}

fn apply(behaviour: &mut ClientBehaviour, lifetime: Duration, mode: &EdxMode) {
    behaviour.lifetime = lifetime;
    behaviour.latency = mode.latency;
    behaviour.failure = mode.failure.clone();
}

/// Calls `make` `per_second` times a second until the deadline, each in its own task,
/// at most `IN_FLIGHT_CAP` at once (beyond it a request is counted as dropped).
async fn paced<F, Fut>(traffic: &Arc<Traffic>, kind: Kind, per_second: f64, make: F)
where
    F: Fn(Arc<Traffic>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    if per_second <= 0.0 {
        return;
    }
    let semaphore = Arc::new(Semaphore::new(IN_FLIGHT_CAP));
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / per_second));
    ticker.set_missed_tick_behavior(MissedTickBehavior::Burst);
    while Instant::now() < traffic.deadline {
        ticker.tick().await;
        match Arc::clone(&semaphore).try_acquire_owned() {
            Ok(permit) => {
                let request = make(Arc::clone(traffic));
                tokio::spawn(async move {
                    request.await;
                    drop(permit);
                });
            }
            Err(_) => traffic.stats.dropped(kind),
        }
    }
    // The requests still waiting finish (or time out) before the figures are read.
    let _ = semaphore.acquire_many(IN_FLIGHT_CAP as u32).await;
}
