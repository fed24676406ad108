//! The settings as clap reads them from flags and the environment (`SettingsArgs`), each
//! value parsed by its value parser; a value clap refuses as the `ConfigError` naming its
//! variable; and the refusal of keys given as flags.

use std::path::PathBuf;

use super::parse::{choice, count};
use super::vars::{
    ConfigError, ADMIN_KEY_FILE_VAR, ADMIN_KEY_VAR, ALL_VARS, AUDIT_RETENTION_DAYS_VAR,
    AUTH_FAILURES_VAR, BOOTSTRAP_ADMIN_VAR, CALLER_FETCH_RATE_VAR, DATABASE_URL_FILE_VAR,
    DATABASE_URL_VAR, DATA_DIR_VAR, HEADER_TIMEOUT_VAR, INSECURE_URLS_VAR, KEY_RATE_VAR,
    LISTEN_VAR, LOG_FORMAT_VAR, MASTER_KEY_FILE_VAR, MASTER_KEY_VAR, MAX_CONNECTIONS_VAR,
    METRICS_LISTEN_VAR, MIN_REFRESH_INTERVAL_VAR, OLD_MASTER_KEYS_VAR, PROXY_TIMEOUT_VAR,
    UPSTREAM_RATE_VAR,
};
use crate::http::auth::limits::MAX_KEY_RATE;
use crate::telemetry::LogFormat;

/// `TOKENVEND_BOOTSTRAP_ADMIN`: whether the bootstrap admin key is accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BootstrapAdmin {
    Enabled,
    Disabled,
}

/// An on/off setting: `1` (or `true`) or `0` (or `false`, or empty).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Switch {
    #[value(name = "1", alias = "true")]
    On,
    #[value(name = "0", alias = "false")]
    Off,
}

fn switch(raw: &str) -> Result<Switch, String> {
    if raw.trim().is_empty() {
        return Ok(Switch::Off);
    }
    choice(raw)
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
    #[arg(long, env = BOOTSTRAP_ADMIN_VAR, default_value = "enabled", global = true, value_parser = choice::<BootstrapAdmin>)]
    pub bootstrap_admin: BootstrapAdmin,
    /// Seconds a client may take to send its request headers (and to start its next
    /// request on a kept-alive connection).
    #[arg(long, env = HEADER_TIMEOUT_VAR, default_value = "10", global = true, value_parser = count(1..=3600))]
    pub header_timeout: u64,
    /// Seconds between two caller-triggered token fetches for one tenant (forced
    /// refresh, min_ttl) at the least.
    #[arg(long, env = MIN_REFRESH_INTERVAL_VAR, default_value = "30", global = true, value_parser = count(1..=86_400))]
    pub min_refresh_interval: u64,
    /// Open client connections at most (per listener); further ones wait to be accepted.
    #[arg(long, env = MAX_CONNECTIONS_VAR, default_value = "10000", global = true, value_parser = count(1..=1_000_000))]
    pub max_connections: u64,
    /// Requests per second per caller key without a rate_limit of its own; 0: unlimited.
    #[arg(long, env = KEY_RATE_VAR, default_value = "0", global = true, value_parser = count(0..=u64::from(MAX_KEY_RATE)))]
    pub key_rate: u64,
    /// Token requests per minute per edX token-endpoint host (fleet-wide on PostgreSQL);
    /// 0: no limit.
    #[arg(long, env = UPSTREAM_RATE_VAR, default_value = "60", global = true, value_parser = count(0..=1_000_000))]
    pub upstream_rate: u64,
    /// edX fetches per minute one caller may trigger (forced refreshes, invalidations,
    /// proxy 401 retries, min_ttl, verifies together); 0: no limit.
    #[arg(long, env = CALLER_FETCH_RATE_VAR, default_value = "10", global = true, value_parser = count(0..=1_000_000))]
    pub caller_fetch_rate: u64,
    /// Failed authentications per minute per client address before 429s; 0: no limit.
    #[arg(long, env = AUTH_FAILURES_VAR, default_value = "60", global = true, value_parser = count(0..=1_000_000))]
    pub auth_failures: u64,
    /// Seconds one proxied edX API call may take to answer (and to send each part of
    /// its body).
    #[arg(long, env = PROXY_TIMEOUT_VAR, default_value = "30", global = true, value_parser = count(1..=3600))]
    pub proxy_timeout: u64,
    /// Days audit events are kept before they are pruned; 0 keeps them forever.
    #[arg(long, env = AUDIT_RETENTION_DAYS_VAR, default_value = "400", global = true, value_parser = count(0..=36_500))]
    pub audit_retention_days: u64,
    /// A second address, host:port, serving only /metrics without a key.
    #[arg(long, env = METRICS_LISTEN_VAR, global = true)]
    pub metrics_listen: Option<String>,
    /// 1 allows http:// and loopback or private token URLs (tests, local issuers).
    #[arg(long, env = INSECURE_URLS_VAR, global = true, num_args = 0..=1, default_missing_value = "1", value_parser = switch)]
    pub allow_insecure_token_urls: Option<Switch>,
    /// text or json.
    #[arg(long, env = LOG_FORMAT_VAR, default_value = "text", global = true, value_parser = choice::<LogFormat>)]
    pub log_format: LogFormat,
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

/// A value that clap refused (one of its value parsers said why), as the `ConfigError` that
/// names the variable, so that a bad setting reads the same from a flag or the
/// environment: one line, `VARIABLE: why`. `None` for any other error of clap's (an
/// unknown flag, `--help`), which clap reports itself.
pub fn config_error(error: &clap::Error, command: &clap::Command) -> Option<ConfigError> {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    if error.kind() != ErrorKind::ValueValidation {
        return None;
    }
    let Some(ContextValue::String(arg)) = error.get(ContextKind::InvalidArg) else {
        return None;
    };
    // `--log-format <LOG_FORMAT>`, `--allow-insecure-token-urls [<…>]`
    let long = arg.split_whitespace().next()?.strip_prefix("--")?;
    let env = command
        .get_arguments()
        .find(|a| a.get_long() == Some(long))?
        .get_env()?;
    let variable = ALL_VARS.iter().find(|v| env == **v)?;
    let message = std::error::Error::source(error)?.to_string();
    Some(ConfigError::new(variable, message))
}
