//! Typed settings from the environment (or flags of the same name), validated once at
//! start-up. A bad value stops start-up with one line naming the variable.
//!
//! `vars.rs` names the variables and holds the one `ConfigError`; `args.rs` is what clap
//! reads (`SettingsArgs`), each value through its value parser (a `ValueEnum`, a count in
//! its range) and a refused one reported as a `ConfigError`; `parse.rs` holds the parsers
//! and reads secrets; `otel.rs` reads the standard OpenTelemetry variables;
//! `Settings::from_args` here puts them together.

mod args;
mod key_strength;
pub mod otel;
mod parse;
mod vars;

use std::path::PathBuf;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};

pub use args::SettingsArgs;
pub use args::{config_error, BootstrapAdmin, Switch};
pub use key_strength::check_admin_key;
use parse::{check_address, non_empty, parse_old_master_keys, rate, secret_setting};
pub use vars::*;

use crate::crypto::MasterKey;
use crate::engine::VendingSettings;
use crate::http::auth::limits::RateLimitSettings;
use crate::outbound::webhooks::WebhookSettings;
use crate::share::HeartbeatSettings;
use crate::store::{AuditRetention, DatabaseUrl};
use crate::telemetry::LogFormat;

/// Validated settings. Tests build this directly.
#[derive(Clone)]
pub struct Settings {
    pub listen: String,
    /// `None` means the embedded SQLite file in the data dir.
    pub database_url: Option<DatabaseUrl>,
    pub data_dir: PathBuf,
    /// `None` means: read or generate `master.key` in the data dir (SQLite only).
    pub master_key: Option<MasterKey>,
    /// Earlier master keys: they open values sealed before a rotation, never seal.
    pub old_master_keys: Vec<MasterKey>,
    /// `None` means: read or generate `admin.key` in the data dir.
    pub admin_key: Option<SecretString>,
    /// Whether the bootstrap admin key is accepted (`TOKENVEND_BOOTSTRAP_ADMIN`); when it
    /// is not, only stored caller keys work and no `admin.key` is generated.
    pub bootstrap_admin: bool,
    /// Connection limits and the listeners' addresses besides the main one.
    pub serving: ServingSettings,
    pub allow_insecure_token_urls: bool,
    pub log_format: LogFormat,
    /// Token lifecycle and upstream limits (the documented defaults; tests shorten them).
    pub vending: VendingSettings,
    /// Webhook delivery: retry schedule, timeouts, retention (the documented defaults;
    /// tests shorten them).
    pub webhooks: WebhookSettings,
    /// `TOKENVEND_AUDIT_RETENTION_DAYS` and how often pruning runs (tests shorten it).
    pub audit: AuditRetention,
}

/// How the listeners treat their connections.
#[derive(Debug, Clone)]
pub struct ServingSettings {
    /// How long a client may take to send a request's headers, from the moment the
    /// connection is ready for one (so also how long a kept-alive connection may idle).
    pub header_timeout: Duration,
    /// Open connections at most, per listener; further ones wait in the accept queue.
    pub max_connections: usize,
    /// `TOKENVEND_METRICS_LISTEN`: where `/metrics` is served without a key.
    pub metrics_listen: Option<String>,
    /// `TOKENVEND_KEY_RATE` and `TOKENVEND_AUTH_FAILURES`.
    pub rate_limits: RateLimitSettings,
    /// `TOKENVEND_PROXY_TIMEOUT`: how long one proxied edX API call may take to answer.
    pub proxy_timeout: Duration,
    /// The fleet's heartbeat (PostgreSQL): not a setting users make; tests shorten it.
    pub heartbeat: HeartbeatSettings,
}

impl Default for ServingSettings {
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(10),
            max_connections: 10_000,
            metrics_listen: None,
            rate_limits: RateLimitSettings::default(),
            proxy_timeout: Duration::from_secs(30),
            heartbeat: HeartbeatSettings::default(),
        }
    }
}

impl Settings {
    /// Validates the raw settings; `fallback_database_url` is the value of `DATABASE_URL`.
    pub fn from_args(
        args: &SettingsArgs,
        fallback_database_url: Option<String>,
    ) -> Result<Self, ConfigError> {
        args.refuse_key_flags()?;
        let listen = check_address(LISTEN_VAR, &args.listen)?;

        let given_url = secret_setting(
            &args.database_url,
            &args.database_url_file,
            DATABASE_URL_VAR,
            DATABASE_URL_FILE_VAR,
        )?;
        let database_url = match given_url {
            Some((raw, variable)) => Some(
                DatabaseUrl::parse(raw.expose_secret())
                    .map_err(|m| ConfigError::new(variable, m))?,
            ),
            None => match non_empty(&fallback_database_url) {
                Some(raw) => {
                    Some(DatabaseUrl::parse(raw).map_err(|m| ConfigError::new("DATABASE_URL", m))?)
                }
                None => None,
            },
        };

        let master_key = secret_setting(
            &args.master_key,
            &args.master_key_file,
            MASTER_KEY_VAR,
            MASTER_KEY_FILE_VAR,
        )?
        .map(|(raw, variable)| {
            MasterKey::from_base64(raw.expose_secret())
                .map_err(|e| ConfigError::new(variable, e.to_string()))
        })
        .transpose()?;
        let old_master_keys = parse_old_master_keys(non_empty(&args.old_master_keys))?;
        if master_key.is_none() && database_url.as_ref().is_some_and(DatabaseUrl::is_postgres) {
            return Err(ConfigError::new(
                MASTER_KEY_VAR,
                "is required with a PostgreSQL database (base64 of 32 random bytes; \
                 generate one with `openssl rand -base64 32`; or set \
                 TOKENVEND_MASTER_KEY_FILE)",
            ));
        }

        let admin_key = secret_setting(
            &args.admin_key,
            &args.admin_key_file,
            ADMIN_KEY_VAR,
            ADMIN_KEY_FILE_VAR,
        )?
        .map(|(key, variable)| {
            check_admin_key(key.expose_secret())
                .map(|()| key)
                .map_err(|m| ConfigError::new(variable, m))
        })
        .transpose()?;
        let bootstrap_admin = args.bootstrap_admin == BootstrapAdmin::Enabled;

        let serving = ServingSettings {
            header_timeout: Duration::from_secs(args.header_timeout),
            max_connections: usize::try_from(args.max_connections)
                .map_err(|_| ConfigError::new(MAX_CONNECTIONS_VAR, "is too large"))?,
            metrics_listen: non_empty(&args.metrics_listen)
                .map(|raw| check_address(METRICS_LISTEN_VAR, raw))
                .transpose()?,
            rate_limits: RateLimitSettings {
                key_rate: rate(args.key_rate),
                auth_failures: rate(args.auth_failures),
            },
            proxy_timeout: Duration::from_secs(args.proxy_timeout),
            heartbeat: HeartbeatSettings::default(),
        };

        let allow_insecure_token_urls = args.allow_insecure_token_urls == Some(Switch::On);
        let log_format = args.log_format;

        if args.data_dir.as_os_str().is_empty() {
            return Err(ConfigError::new(DATA_DIR_VAR, "must not be empty"));
        }

        Ok(Self {
            listen,
            database_url,
            data_dir: args.data_dir.clone(),
            master_key,
            old_master_keys,
            admin_key,
            bootstrap_admin,
            serving,
            allow_insecure_token_urls,
            log_format,
            vending: VendingSettings {
                min_refresh_interval: Duration::from_secs(args.min_refresh_interval),
                upstream_rate: rate(args.upstream_rate),
                caller_fetch_rate: rate(args.caller_fetch_rate),
                ..VendingSettings::default()
            },
            webhooks: WebhookSettings::default(),
            audit: AuditRetention {
                retention_days: u32::try_from(args.audit_retention_days)
                    .map_err(|_| ConfigError::new(AUDIT_RETENTION_DAYS_VAR, "is too large"))?,
                ..AuditRetention::default()
            },
        })
    }

    /// The database to use: the configured one, or the embedded SQLite file.
    pub fn effective_database_url(&self) -> DatabaseUrl {
        self.database_url.clone().unwrap_or_else(|| {
            DatabaseUrl::Sqlite(format!(
                "sqlite://{}",
                self.data_dir.join("tokenvend.db").display()
            ))
        })
    }
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("listen", &self.listen)
            .field("database_url", &self.database_url)
            .field("data_dir", &self.data_dir)
            .field("master_key", &self.master_key.as_ref().map(MasterKey::id))
            .field(
                "old_master_keys",
                &self
                    .old_master_keys
                    .iter()
                    .map(MasterKey::id)
                    .collect::<Vec<_>>(),
            )
            .field(
                "admin_key",
                &self.admin_key.as_ref().map(|k| {
                    let _ = k.expose_secret();
                    "[redacted]"
                }),
            )
            .field("bootstrap_admin", &self.bootstrap_admin)
            .field("serving", &self.serving)
            .field("allow_insecure_token_urls", &self.allow_insecure_token_urls)
            .field("log_format", &self.log_format)
            .field("webhooks", &self.webhooks)
            .field("audit", &self.audit)
            .finish()
    }
}

#[cfg(test)]
mod tests;
