//! Typed settings from the environment (or flags of the same name), validated once at
//! start-up. A bad value stops start-up with one line naming the variable.

mod key_strength;
pub mod otel;

use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};

pub use key_strength::check_admin_key;

use crate::auth::limits::{RateLimitSettings, MAX_KEY_RATE};
use crate::crypto::MasterKey;
use crate::share::HeartbeatSettings;
use crate::store::{AuditRetention, DatabaseUrl};
use crate::telemetry::LogFormat;
use crate::vending::VendingSettings;
use crate::webhooks::WebhookSettings;

pub const LISTEN_VAR: &str = "TOKENVEND_LISTEN";
pub const DATABASE_URL_VAR: &str = "TOKENVEND_DATABASE_URL";
pub const DATA_DIR_VAR: &str = "TOKENVEND_DATA_DIR";
pub const MASTER_KEY_VAR: &str = "TOKENVEND_MASTER_KEY";
pub const OLD_MASTER_KEYS_VAR: &str = "TOKENVEND_OLD_MASTER_KEYS";
pub const ADMIN_KEY_VAR: &str = "TOKENVEND_ADMIN_KEY";
pub const INSECURE_URLS_VAR: &str = "TOKENVEND_ALLOW_INSECURE_TOKEN_URLS";
pub const LOG_FORMAT_VAR: &str = "TOKENVEND_LOG_FORMAT";
pub const DATABASE_URL_FILE_VAR: &str = "TOKENVEND_DATABASE_URL_FILE";
pub const MASTER_KEY_FILE_VAR: &str = "TOKENVEND_MASTER_KEY_FILE";
pub const ADMIN_KEY_FILE_VAR: &str = "TOKENVEND_ADMIN_KEY_FILE";
pub const BOOTSTRAP_ADMIN_VAR: &str = "TOKENVEND_BOOTSTRAP_ADMIN";
pub const HEADER_TIMEOUT_VAR: &str = "TOKENVEND_HEADER_TIMEOUT";
pub const MIN_REFRESH_INTERVAL_VAR: &str = "TOKENVEND_MIN_REFRESH_INTERVAL";
pub const MAX_CONNECTIONS_VAR: &str = "TOKENVEND_MAX_CONNECTIONS";
pub const METRICS_LISTEN_VAR: &str = "TOKENVEND_METRICS_LISTEN";
pub const KEY_RATE_VAR: &str = "TOKENVEND_KEY_RATE";
pub const AUTH_FAILURES_VAR: &str = "TOKENVEND_AUTH_FAILURES";
pub const UPSTREAM_RATE_VAR: &str = "TOKENVEND_UPSTREAM_RATE";
pub const CALLER_FETCH_RATE_VAR: &str = "TOKENVEND_CALLER_FETCH_RATE";
pub const PROXY_TIMEOUT_VAR: &str = "TOKENVEND_PROXY_TIMEOUT";
pub const AUDIT_RETENTION_DAYS_VAR: &str = "TOKENVEND_AUDIT_RETENTION_DAYS";

/// A setting that is missing or wrong, named by its environment variable.
#[derive(Debug, thiserror::Error)]
#[error("{variable}: {message}")]
pub struct ConfigError {
    pub variable: &'static str,
    pub message: String,
}

impl ConfigError {
    pub fn new(variable: &'static str, message: impl Into<String>) -> Self {
        Self {
            variable,
            message: message.into(),
        }
    }
}

/// The raw settings as clap reads them from flags and the environment.
#[derive(Debug, Clone, clap::Args)]
pub struct SettingsArgs {
    /// Address to bind, host:port.
    #[arg(long, env = LISTEN_VAR, default_value = "127.0.0.1:8080", global = true)]
    pub listen: String,
    /// postgres://… or sqlite://… (default: sqlite://tokenvend.db in the data dir).
    /// DATABASE_URL is read when this is unset.
    #[arg(long, env = DATABASE_URL_VAR, hide_env_values = true, global = true)]
    pub database_url: Option<String>,
    /// Read the database URL (which may hold a password) from this file instead.
    #[arg(long, env = DATABASE_URL_FILE_VAR, global = true)]
    pub database_url_file: Option<PathBuf>,
    /// Where the embedded default keeps its files.
    #[arg(long, env = DATA_DIR_VAR, default_value = "./data", global = true)]
    pub data_dir: PathBuf,
    /// TOKENVEND_MASTER_KEY, TOKENVEND_OLD_MASTER_KEYS and TOKENVEND_ADMIN_KEY are read
    /// from the environment only: as flags, every user of the host would see them (`ps`).
    #[arg(skip = std::env::var(MASTER_KEY_VAR).ok())]
    pub master_key: Option<String>,
    #[arg(skip = std::env::var(OLD_MASTER_KEYS_VAR).ok())]
    pub old_master_keys: Option<String>,
    #[arg(skip = std::env::var(ADMIN_KEY_VAR).ok())]
    pub admin_key: Option<String>,
    /// `--master-key`, `--old-master-keys`, `--admin-key`: accepted by the parser only to
    /// be refused with a message saying what to use instead.
    #[arg(long = "master-key", hide = true, global = true, num_args = 0..=1, default_missing_value = "", allow_hyphen_values = true)]
    pub master_key_flag: Option<String>,
    #[arg(long = "old-master-keys", hide = true, global = true, num_args = 0..=1, default_missing_value = "", allow_hyphen_values = true)]
    pub old_master_keys_flag: Option<String>,
    #[arg(long = "admin-key", hide = true, global = true, num_args = 0..=1, default_missing_value = "", allow_hyphen_values = true)]
    pub admin_key_flag: Option<String>,
    /// Read the master key (base64 of 32 random bytes; TOKENVEND_MASTER_KEY otherwise)
    /// from this file (Docker or Kubernetes secrets).
    #[arg(long, env = MASTER_KEY_FILE_VAR, global = true)]
    pub master_key_file: Option<PathBuf>,
    /// Read the bootstrap admin key (TOKENVEND_ADMIN_KEY otherwise) from this file.
    #[arg(long, env = ADMIN_KEY_FILE_VAR, global = true)]
    pub admin_key_file: Option<PathBuf>,
    /// enabled or disabled: whether the bootstrap admin key is accepted at all.
    #[arg(long, env = BOOTSTRAP_ADMIN_VAR, default_value = "enabled", global = true)]
    pub bootstrap_admin: String,
    /// Seconds a client may take to send its request headers (and to start its next
    /// request on a kept-alive connection).
    #[arg(long, env = HEADER_TIMEOUT_VAR, default_value = "10", global = true)]
    pub header_timeout: String,
    /// Seconds between two caller-triggered token fetches for one tenant (forced
    /// refresh, min_ttl) at the least.
    #[arg(long, env = MIN_REFRESH_INTERVAL_VAR, default_value = "30", global = true)]
    pub min_refresh_interval: String,
    /// Open client connections at most (per listener); further ones wait to be accepted.
    #[arg(long, env = MAX_CONNECTIONS_VAR, default_value = "10000", global = true)]
    pub max_connections: String,
    /// Requests per second per caller key without a rate_limit of its own; 0: unlimited.
    #[arg(long, env = KEY_RATE_VAR, default_value = "0", global = true)]
    pub key_rate: String,
    /// Token requests per minute per edX token-endpoint host (fleet-wide on PostgreSQL);
    /// 0: no limit.
    #[arg(long, env = UPSTREAM_RATE_VAR, default_value = "60", global = true)]
    pub upstream_rate: String,
    /// edX fetches per minute one caller may trigger (forced refreshes, invalidations,
    /// proxy 401 retries, min_ttl, verifies together); 0: no limit.
    #[arg(long, env = CALLER_FETCH_RATE_VAR, default_value = "10", global = true)]
    pub caller_fetch_rate: String,
    /// Failed authentications per minute per client address before 429s; 0: no limit.
    #[arg(long, env = AUTH_FAILURES_VAR, default_value = "60", global = true)]
    pub auth_failures: String,
    /// Seconds one proxied edX API call may take to answer (and to send each part of
    /// its body).
    #[arg(long, env = PROXY_TIMEOUT_VAR, default_value = "30", global = true)]
    pub proxy_timeout: String,
    /// Days audit events are kept before they are pruned; 0 keeps them forever.
    #[arg(long, env = AUDIT_RETENTION_DAYS_VAR, default_value = "400", global = true)]
    pub audit_retention_days: String,
    /// A second address, host:port, serving only /metrics without a key.
    #[arg(long, env = METRICS_LISTEN_VAR, global = true)]
    pub metrics_listen: Option<String>,
    /// 1 allows http:// and loopback or private token URLs (tests, local issuers).
    #[arg(long, env = INSECURE_URLS_VAR, global = true, num_args = 0..=1, default_missing_value = "1")]
    pub allow_insecure_token_urls: Option<String>,
    /// text or json.
    #[arg(long, env = LOG_FORMAT_VAR, default_value = "text", global = true)]
    pub log_format: String,
}

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

fn non_empty(value: &Option<String>) -> Option<&str> {
    value.as_deref().map(str::trim).filter(|v| !v.is_empty())
}

/// A `host:port` address, or why not.
fn check_address(variable: &'static str, raw: &str) -> Result<String, ConfigError> {
    let address = raw.trim().to_owned();
    let port_ok = address
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
    if port_ok {
        Ok(address)
    } else {
        Err(ConfigError::new(
            variable,
            format!("{address:?} is not host:port (for example 127.0.0.1:8080)"),
        ))
    }
}

/// A whole number in `range`, or why not.
fn parse_count(
    variable: &'static str,
    raw: &str,
    range: std::ops::RangeInclusive<u64>,
) -> Result<u64, ConfigError> {
    match raw.trim().parse::<u64>() {
        Ok(n) if range.contains(&n) => Ok(n),
        _ => Err(ConfigError::new(
            variable,
            format!(
                "{raw:?} is not a whole number from {} to {}",
                range.start(),
                range.end()
            ),
        )),
    }
}

/// A rate from 0 to `max`, where 0 means none.
fn parse_rate(
    variable: &'static str,
    raw: &str,
    max: u32,
) -> Result<Option<NonZeroU32>, ConfigError> {
    let n = parse_count(variable, raw, 0..=u64::from(max))?;
    Ok(u32::try_from(n).ok().and_then(NonZeroU32::new))
}

/// A secret given either directly or as a file to read (`…_FILE`, as Docker and
/// Kubernetes secrets are mounted), with the variable it came from. Both at once is an
/// error naming both.
fn secret_setting(
    value: &Option<String>,
    file: &Option<PathBuf>,
    variable: &'static str,
    file_variable: &'static str,
) -> Result<Option<(SecretString, &'static str)>, ConfigError> {
    let file = file.as_deref().filter(|p| !p.as_os_str().is_empty());
    match (non_empty(value), file) {
        (Some(_), Some(_)) => Err(ConfigError::new(
            variable,
            format!("is set together with {file_variable}; set only one of them"),
        )),
        (Some(raw), None) => Ok(Some((SecretString::from(raw.to_owned()), variable))),
        (None, Some(path)) => read_secret_file(path)
            .map(|secret| Some((secret, file_variable)))
            .map_err(|message| ConfigError::new(file_variable, message)),
        (None, None) => Ok(None),
    }
}

/// The trimmed content of a secret file; the message names the path, never the content.
fn read_secret_file(path: &Path) -> Result<SecretString, String> {
    let content = SecretString::from(
        std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?,
    );
    let value = content.expose_secret().trim();
    if value.is_empty() {
        return Err(format!("{} is empty", path.display()));
    }
    Ok(SecretString::from(value.to_owned()))
}

impl SettingsArgs {
    /// Refuses a key given as a flag: any user of the host can read a process's arguments
    /// (`ps`, `/proc/<pid>/cmdline`). The message names the flag, never its value.
    pub fn refuse_key_flags(&self) -> Result<(), ConfigError> {
        let flags = [
            (&self.master_key_flag, "--master-key", MASTER_KEY_VAR),
            (&self.admin_key_flag, "--admin-key", ADMIN_KEY_VAR),
            (
                &self.old_master_keys_flag,
                "--old-master-keys",
                OLD_MASTER_KEYS_VAR,
            ),
        ];
        let Some((_, flag, variable)) = flags.into_iter().find(|(given, ..)| given.is_some())
        else {
            return Ok(());
        };
        let instead = match variable {
            MASTER_KEY_VAR => {
                format!("{MASTER_KEY_FILE_VAR} (a file holding the key) or {variable}")
            }
            ADMIN_KEY_VAR => format!("{ADMIN_KEY_FILE_VAR} (a file holding the key) or {variable}"),
            _ => variable.to_owned(),
        };
        Err(ConfigError::new(
            variable,
            format!(
                "{flag} is refused: every user of the host can read command-line flags \
                 (`ps`); set {instead} in the environment instead"
            ),
        ))
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
        let bootstrap_admin = match args.bootstrap_admin.trim() {
            "enabled" => true,
            "disabled" => false,
            other => {
                return Err(ConfigError::new(
                    BOOTSTRAP_ADMIN_VAR,
                    format!("{other:?} is not enabled or disabled"),
                ))
            }
        };

        let serving = ServingSettings {
            header_timeout: Duration::from_secs(parse_count(
                HEADER_TIMEOUT_VAR,
                &args.header_timeout,
                1..=3600,
            )?),
            max_connections: usize::try_from(parse_count(
                MAX_CONNECTIONS_VAR,
                &args.max_connections,
                1..=1_000_000,
            )?)
            .map_err(|_| ConfigError::new(MAX_CONNECTIONS_VAR, "is too large"))?,
            metrics_listen: non_empty(&args.metrics_listen)
                .map(|raw| check_address(METRICS_LISTEN_VAR, raw))
                .transpose()?,
            rate_limits: RateLimitSettings {
                key_rate: parse_rate(KEY_RATE_VAR, &args.key_rate, MAX_KEY_RATE)?,
                auth_failures: parse_rate(AUTH_FAILURES_VAR, &args.auth_failures, 1_000_000)?,
            },
            proxy_timeout: Duration::from_secs(parse_count(
                PROXY_TIMEOUT_VAR,
                &args.proxy_timeout,
                1..=3600,
            )?),
            heartbeat: HeartbeatSettings::default(),
        };

        let allow_insecure_token_urls = match non_empty(&args.allow_insecure_token_urls) {
            None | Some("0") | Some("false") => false,
            Some("1") | Some("true") => true,
            Some(other) => {
                return Err(ConfigError::new(
                    INSECURE_URLS_VAR,
                    format!("{other:?} is not 1 or 0"),
                ))
            }
        };

        let log_format = args
            .log_format
            .parse()
            .map_err(|m: String| ConfigError::new(LOG_FORMAT_VAR, m))?;

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
                min_refresh_interval: Duration::from_secs(parse_count(
                    MIN_REFRESH_INTERVAL_VAR,
                    &args.min_refresh_interval,
                    1..=86_400,
                )?),
                upstream_rate: parse_rate(UPSTREAM_RATE_VAR, &args.upstream_rate, 1_000_000)?,
                caller_fetch_rate: parse_rate(
                    CALLER_FETCH_RATE_VAR,
                    &args.caller_fetch_rate,
                    1_000_000,
                )?,
                ..VendingSettings::default()
            },
            webhooks: WebhookSettings::default(),
            audit: AuditRetention {
                retention_days: parse_count(
                    AUDIT_RETENTION_DAYS_VAR,
                    &args.audit_retention_days,
                    0..=36_500,
                )? as u32,
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

/// `TOKENVEND_OLD_MASTER_KEYS`: comma-separated keys, each validated as the master key
/// is; a bad one is named by its position, never shown.
fn parse_old_master_keys(raw: Option<&str>) -> Result<Vec<MasterKey>, ConfigError> {
    raw.into_iter()
        .flat_map(|raw| raw.split(','))
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
        .enumerate()
        .map(|(i, entry)| {
            MasterKey::from_base64(entry)
                .map_err(|e| ConfigError::new(OLD_MASTER_KEYS_VAR, format!("key {} {e}", i + 1)))
        })
        .collect()
}

#[cfg(test)]
mod tests;
