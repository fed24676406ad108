//! Start-up: open and migrate the store, resolve the master and admin keys, load caller
//! keys into memory, bind the listeners (port 0 allowed) and serve until shutdown.

mod deadline;
mod fd_limit;
mod files;
pub mod fleet;
mod identities;
pub mod serve; // the accept loop, public for the hit-path cost ladder (`bench/ladder.rs`)

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use secrecy::{ExposeSecret, SecretString};
use tokio::net::TcpListener;

use crate::clock::{Clock, SystemClock};
use crate::config::{
    check_admin_key, ConfigError, ServingSettings, Settings, ADMIN_KEY_VAR, BOOTSTRAP_ADMIN_VAR,
    DATABASE_URL_VAR, DATA_DIR_VAR, INSECURE_URLS_VAR, LISTEN_VAR, MASTER_KEY_VAR,
    METRICS_LISTEN_VAR, OLD_MASTER_KEYS_VAR,
};
use crate::crypto::MasterKey;
use crate::engine::proxy::Proxy;
use crate::engine::{SealedTokenStore, Vendor, VendorParts};
use crate::http::auth::{generate_bootstrap_key, KeyRing};
use crate::http::routes;
use crate::http::state::{AppState, Shared};
use crate::outbound::webhooks::{Deliverer, Events};
use crate::outbound::UrlPolicy;
use crate::startup::fleet::follow_changes;
use crate::startup::fleet::heartbeat::Heartbeat;
use crate::store::{AuditPruner, DatabaseUrl, Store};
use crate::telemetry::metrics::Metrics;
use files::{ensure_private_dir, prepare_sqlite_files, read_or_create_secret};

pub const MASTER_KEY_FILE: &str = "master.key";
pub const ADMIN_KEY_FILE: &str = "admin.key";

/// Why the service could not start. Each is reported on one line, and the process exits
/// with status 2.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// A setting is missing or wrong (a taken port, an unreachable database, a key that
    /// did not seal the stored secrets): the line names its variable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The store was opened but could not be read. The cause is part of the message, not
    /// chained: a sqlx error already repeats its own source in its message.
    #[error("cannot read {what} from the store: {cause}")]
    Store {
        what: &'static str,
        cause: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The outbound HTTP client could not be built (no setting is to blame).
    #[error("cannot build the HTTP client")]
    HttpClient(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl StartupError {
    fn store<E: Into<Box<dyn std::error::Error + Send + Sync>>>(
        what: &'static str,
    ) -> impl FnOnce(E) -> Self {
        move |cause| StartupError::Store {
            what,
            cause: cause.into(),
        }
    }
}

pub struct Application {
    listener: TcpListener,
    /// `TOKENVEND_METRICS_LISTEN`: `/metrics` without a key.
    metrics_listener: Option<TcpListener>,
    serving: ServingSettings,
    state: AppState,
    /// Sends webhook deliveries while the app runs (unless `webhooks.send` is off).
    deliverer: Option<Deliverer>,
    /// Prunes the audit trail while the app runs.
    audit_pruner: AuditPruner,
    /// Keeps the fleet's size (PostgreSQL) while the app runs.
    heartbeat: Heartbeat,
    changes: Option<sqlx::postgres::PgListener>,
}

impl Application {
    pub async fn build(settings: Settings) -> Result<Self, StartupError> {
        Self::build_with_clock(settings, Arc::new(SystemClock)).await
    }

    /// Builds the app on `clock` (tests and benchmarks move a manual clock).
    pub async fn build_with_clock(
        settings: Settings,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, StartupError> {
        // Bind first: a taken port is the commonest start-up error and needs no files.
        let listener = bind(LISTEN_VAR, &settings.listen).await?;
        let metrics_listener = match &settings.serving.metrics_listen {
            Some(address) => Some(bind(METRICS_LISTEN_VAR, address).await?),
            None => None,
        };
        let store = open_store(&settings).await?;
        let changes = store.change_listener().await.ok().flatten(); // before the load
        let master_key = master_key_ring(&settings)?;
        check_sealed_key_ids(&store, &master_key).await?;

        let metrics = Arc::new(Metrics::new());
        let (heartbeat, sharing) = Heartbeat::join(&store, &clock, &settings, &metrics).await;
        let limits = settings.serving.rate_limits;
        let keys = match resolve_admin_key(&settings)? {
            Some(admin_key) => KeyRing::new(&admin_key, limits, sharing.clone()),
            None => KeyRing::without_bootstrap(limits, sharing.clone()),
        };
        store
            .bind_legacy_token_scopes()
            .await
            .map_err(StartupError::store("caller keys"))?;
        let records = store
            .list_api_keys()
            .await
            .map_err(StartupError::store("caller keys"))?;
        keys.replace_all(&records);

        let url_policy = if settings.allow_insecure_token_urls {
            tracing::warn!(
                "{INSECURE_URLS_VAR}=1: token and JWKS URLs may use plain http and name \
                 loopback and private addresses; tenant secrets can be sent unencrypted. \
                 For tests and local issuers only"
            );
            UrlPolicy::AllowInsecure
        } else {
            UrlPolicy::PublicHttpsOnly
        };
        let master_key = Arc::new(master_key);
        let audit_pruner = AuditPruner::new(store.clone(), clock.clone(), settings.audit.clone());
        let events = Events::new(store.clone(), clock.clone());
        let tokens =
            SealedTokenStore::new(store.clone(), master_key.clone(), settings.vending.skew);
        let identities = identities::registry(&settings, url_policy, &clock, &metrics, &sharing)
            .map_err(|e| StartupError::HttpClient(e.into()))?;
        identities::load(&identities, &store)
            .await
            .map_err(StartupError::store("identity providers"))?;
        let parts = VendorParts {
            master_key: master_key.clone(),
            clock,
            settings: settings.vending.clone(),
            policy: url_policy,
            metrics: metrics.clone(),
            events: Arc::new(events.clone()),
            fleet: sharing.fleet.clone(),
        };
        let vendor =
            Vendor::new(parts, Arc::new(tokens)).map_err(|e| StartupError::HttpClient(e.into()))?;
        // Ready once the tenants are loaded; their stored tokens are adopted in the
        // background (see `run_until_stopped`).
        crate::startup::fleet::load_tenants(&store, &vendor)
            .await
            .map_err(StartupError::store("tenants"))?;
        vendor.registry().expect_adoption();
        // The store just answered; the readiness check keeps this up to date.
        metrics.set_ready(true);

        let deliverer = Deliverer::new(
            store.clone(),
            master_key.clone(),
            events.clone(),
            url_policy,
            settings.webhooks.clone(),
            metrics.clone(),
        )
        .map_err(|e| StartupError::HttpClient(e.into()))?;
        let deliverer = settings.webhooks.send.then_some(deliverer);
        let proxy = Proxy::new(
            vendor.clone(),
            metrics.clone(),
            url_policy,
            settings.serving.proxy_timeout,
        )
        .map_err(|e| StartupError::HttpClient(e.into()))?;
        let state = AppState::new(Shared {
            store,
            keys: Arc::new(keys),
            identities: Arc::new(identities),
            master_key,
            url_policy,
            vendor,
            events,
            proxy: Arc::new(proxy),
            metrics,
        });
        Ok(Self {
            listener,
            metrics_listener,
            serving: settings.serving.clone(),
            state,
            deliverer,
            audit_pruner,
            heartbeat,
            changes,
        })
    }

    /// The audit trail's pruner, for running one pass by hand (tests).
    pub fn audit_pruner(&self) -> AuditPruner {
        self.audit_pruner.clone()
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has a local address")
    }

    /// The address serving `/metrics` without a key, when `TOKENVEND_METRICS_LISTEN` is set.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listener.as_ref().map(|listener| {
            listener
                .local_addr()
                .expect("a bound listener has a local address")
        })
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `shutdown` resolves, then stops accepting, closes idle connections and
    /// lets in-flight requests finish.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let addr = self.local_addr();
        let listeners = 1 + usize::from(self.metrics_listener.is_some());
        let serving = ServingSettings {
            max_connections: fd_limit::fit_connections(self.serving.max_connections, listeners),
            ..self.serving.clone()
        };
        let store = self.state.store.clone();
        tracing::info!(%addr, backend = store.backend_name(), "tokenvend listening");
        if let Some(addr) = self.metrics_addr() {
            tracing::info!(%addr, "serving /metrics without a key");
        }
        let (stop_scheduler, scheduler_stopped) = tokio::sync::oneshot::channel::<()>();
        let scheduler = tokio::spawn(self.state.vendor.scheduler().run(async {
            let _ = scheduler_stopped.await;
        }));
        let adoption = tokio::spawn(crate::startup::fleet::adopt_stored_tokens(
            self.state.vendor.clone(),
        ));
        let pruning = tokio::spawn(self.audit_pruner.run());
        let (stop_follower, follower_stopped) = tokio::sync::oneshot::channel::<()>();
        let following = async {
            let _ = follower_stopped.await;
        };
        let follower = tokio::spawn(follow_changes(self.state.clone(), self.changes, following));
        let (stop_deliverer, deliverer_stopped) = tokio::sync::oneshot::channel::<()>();
        let deliverer = self.deliverer.map(|deliverer| {
            tokio::spawn(deliverer.run(async {
                let _ = deliverer_stopped.await;
            }))
        });
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let heartbeat = tokio::spawn(self.heartbeat.run(stopped.clone()));
        let metrics = self.metrics_listener.map(|listener| {
            (
                listener,
                serve::with_peer(routes::metrics_only::router().with_state(self.state.clone())),
            )
        });
        let hot = routes::hot::HotPath::new(routes::router(self.state.clone()), self.state);
        let main = serve::serve(self.listener, hot.per_peer(), &serving, stopped.clone());
        let metrics = async {
            match metrics {
                Some((listener, router)) => serve::serve(listener, router, &serving, stopped).await,
                None => Ok(()),
            }
        };
        let signal = async move {
            shutdown.await;
            let _ = stop.send(true);
        };
        let (served, metrics_served, ()) = tokio::join!(main, metrics, signal);
        let served = served.and(metrics_served);
        adoption.abort();
        pruning.abort();
        let _ = stop_scheduler.send(());
        let _ = stop_follower.send(());
        let _ = stop_deliverer.send(());
        let _ = scheduler.await;
        let _ = follower.await;
        let _ = heartbeat.await;
        if let Some(deliverer) = deliverer {
            let _ = deliverer.await;
        }
        store.close().await;
        tracing::info!("tokenvend stopped");
        served
    }
}

/// Connects to the configured (or embedded) database and applies pending migrations.
pub async fn open_store(settings: &Settings) -> Result<Store, StartupError> {
    let url = settings.effective_database_url();
    if settings.database_url.is_none() {
        ensure_data_dir(&settings.data_dir)?;
    }
    let variable = if settings.database_url.is_some() {
        DATABASE_URL_VAR
    } else {
        DATA_DIR_VAR
    };
    if let DatabaseUrl::Sqlite(sqlite) = &url {
        prepare_sqlite_files(sqlite).map_err(|e| ConfigError::new(variable, e))?;
    }
    let store = Store::connect(&url)
        .await
        .map_err(|e| ConfigError::new(variable, format!("cannot open {}: {e}", url.redacted())))?;
    store.migrate().await.map_err(|e| {
        ConfigError::new(variable, format!("cannot migrate {}: {e}", url.redacted()))
    })?;
    Ok(store)
}

fn resolve_master_key(settings: &Settings) -> Result<MasterKey, ConfigError> {
    if let Some(key) = &settings.master_key {
        return Ok(key.clone());
    }
    if matches!(settings.effective_database_url(), DatabaseUrl::Postgres(_)) {
        return Err(ConfigError::new(
            MASTER_KEY_VAR,
            "is required with a PostgreSQL database",
        ));
    }
    ensure_data_dir(&settings.data_dir)?;
    let path = settings.data_dir.join(MASTER_KEY_FILE);
    let encoded = read_or_create_secret(&path, || MasterKey::generate().1)
        .map_err(|e| ConfigError::new(MASTER_KEY_VAR, e))?;
    MasterKey::from_base64(encoded.expose_secret())
        .map_err(|e| ConfigError::new(MASTER_KEY_VAR, format!("{} {e}", path.display())))
}

/// The bootstrap admin key: the configured one, or `admin.key` in the data dir (made on
/// first start); none at all when `TOKENVEND_BOOTSTRAP_ADMIN=disabled`.
fn resolve_admin_key(settings: &Settings) -> Result<Option<SecretString>, ConfigError> {
    if !settings.bootstrap_admin {
        if settings.admin_key.is_some() {
            tracing::warn!(
                "{ADMIN_KEY_VAR} is set but ignored: {BOOTSTRAP_ADMIN_VAR}=disabled, so only \
                 stored caller keys are accepted"
            );
        }
        return Ok(None);
    }
    if let Some(key) = &settings.admin_key {
        return Ok(Some(key.clone()));
    }
    ensure_data_dir(&settings.data_dir)?;
    let path = settings.data_dir.join(ADMIN_KEY_FILE);
    let key = read_or_create_secret(&path, || {
        generate_bootstrap_key().expose_secret().to_owned()
    })
    .map_err(|e| ConfigError::new(ADMIN_KEY_VAR, e))?;
    check_admin_key(key.expose_secret())
        .map_err(|e| ConfigError::new(ADMIN_KEY_VAR, format!("{}: {e}", path.display())))?;
    Ok(Some(key))
}

async fn bind(variable: &'static str, address: &str) -> Result<TcpListener, ConfigError> {
    TcpListener::bind(address)
        .await
        .map_err(|e| ConfigError::new(variable, format!("cannot bind {address}: {e}")))
}

/// The master key ring: the configured (or generated) key seals, the old keys
/// (`TOKENVEND_OLD_MASTER_KEYS`) only open.
pub fn master_key_ring(settings: &Settings) -> Result<MasterKey, ConfigError> {
    Ok(resolve_master_key(settings)?.with_old_keys(settings.old_master_keys.iter().cloned()))
}

/// Refuses to start when stored secrets or tokens were sealed under a key the ring does
/// not hold: serving would only fail later, one tenant at a time.
async fn check_sealed_key_ids(store: &Store, key: &MasterKey) -> Result<(), StartupError> {
    let ids = store
        .sealed_key_ids()
        .await
        .map_err(StartupError::store("the master key ids of stored secrets"))?;
    let missing: Vec<&str> = ids
        .iter()
        .map(String::as_str)
        .filter(|id| !key.holds(id))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let held: Vec<&str> = key.key_ids().collect();
    Err(StartupError::from(ConfigError::new(
        MASTER_KEY_VAR,
        format!(
            "the database holds secrets sealed with master key id {}, but the configured \
             keys have id {}; start with the key that sealed them (during a rotation, the \
             old one in {OLD_MASTER_KEYS_VAR})",
            missing.join(", "),
            held.join(", "),
        ),
    )))
}

fn ensure_data_dir(dir: &Path) -> Result<(), ConfigError> {
    ensure_private_dir(dir).map_err(|e| ConfigError::new(DATA_DIR_VAR, e))
}

#[cfg(test)]
mod tests;
