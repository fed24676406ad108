//! The settings' environment variables, by name, and `ConfigError`, which names the one
//! that is wrong.

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

/// Every variable a flag of `SettingsArgs` reads.
pub const ALL_VARS: &[&str] = &[
    LISTEN_VAR,
    DATABASE_URL_VAR,
    DATA_DIR_VAR,
    INSECURE_URLS_VAR,
    LOG_FORMAT_VAR,
    DATABASE_URL_FILE_VAR,
    MASTER_KEY_FILE_VAR,
    ADMIN_KEY_FILE_VAR,
    BOOTSTRAP_ADMIN_VAR,
    HEADER_TIMEOUT_VAR,
    MIN_REFRESH_INTERVAL_VAR,
    MAX_CONNECTIONS_VAR,
    METRICS_LISTEN_VAR,
    KEY_RATE_VAR,
    AUTH_FAILURES_VAR,
    UPSTREAM_RATE_VAR,
    CALLER_FETCH_RATE_VAR,
    PROXY_TIMEOUT_VAR,
    AUDIT_RETENTION_DAYS_VAR,
];

/// A setting that is missing or wrong, named by its environment variable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
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
