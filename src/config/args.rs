//! The raw settings as clap reads them from flags and the environment (`SettingsArgs`),
//! and the refusal of keys given as flags.

use std::path::PathBuf;

use super::vars::{
    ConfigError, ADMIN_KEY_FILE_VAR, ADMIN_KEY_VAR, AUDIT_RETENTION_DAYS_VAR, AUTH_FAILURES_VAR,
    BOOTSTRAP_ADMIN_VAR, CALLER_FETCH_RATE_VAR, DATABASE_URL_FILE_VAR, DATABASE_URL_VAR,
    DATA_DIR_VAR, HEADER_TIMEOUT_VAR, INSECURE_URLS_VAR, KEY_RATE_VAR, LISTEN_VAR, LOG_FORMAT_VAR,
    MASTER_KEY_FILE_VAR, MASTER_KEY_VAR, MAX_CONNECTIONS_VAR, METRICS_LISTEN_VAR,
    MIN_REFRESH_INTERVAL_VAR, OLD_MASTER_KEYS_VAR, PROXY_TIMEOUT_VAR, UPSTREAM_RATE_VAR,
};

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
