//! Typed settings from the environment (or flags of the same name), validated once at
//! start-up. A bad value stops start-up with one line naming the variable.

use std::path::PathBuf;

use secrecy::{ExposeSecret, SecretString};

use crate::auth::MIN_ADMIN_KEY_LEN;
use crate::crypto::MasterKey;
use crate::store::DatabaseUrl;
use crate::telemetry::LogFormat;
use crate::vending::VendingSettings;

pub const LISTEN_VAR: &str = "TOKENVEND_LISTEN";
pub const DATABASE_URL_VAR: &str = "TOKENVEND_DATABASE_URL";
pub const DATA_DIR_VAR: &str = "TOKENVEND_DATA_DIR";
pub const MASTER_KEY_VAR: &str = "TOKENVEND_MASTER_KEY";
pub const OLD_MASTER_KEYS_VAR: &str = "TOKENVEND_OLD_MASTER_KEYS";
pub const ADMIN_KEY_VAR: &str = "TOKENVEND_ADMIN_KEY";
pub const INSECURE_URLS_VAR: &str = "TOKENVEND_ALLOW_INSECURE_TOKEN_URLS";
pub const LOG_FORMAT_VAR: &str = "TOKENVEND_LOG_FORMAT";

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
    /// Where the embedded default keeps its files.
    #[arg(long, env = DATA_DIR_VAR, default_value = "./data", global = true)]
    pub data_dir: PathBuf,
    /// Base64 of 32 random bytes; encrypts secrets and tokens at rest.
    #[arg(long, env = MASTER_KEY_VAR, hide_env_values = true, global = true)]
    pub master_key: Option<String>,
    /// Comma-separated earlier master keys, accepted for opening only (rotation).
    #[arg(long, env = OLD_MASTER_KEYS_VAR, hide_env_values = true, global = true)]
    pub old_master_keys: Option<String>,
    /// A bootstrap caller key with scope admin (at least 32 characters).
    #[arg(long, env = ADMIN_KEY_VAR, hide_env_values = true, global = true)]
    pub admin_key: Option<String>,
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
    pub allow_insecure_token_urls: bool,
    pub log_format: LogFormat,
    /// Token lifecycle and upstream limits (the documented defaults; tests shorten them).
    pub vending: VendingSettings,
}

fn non_empty(value: &Option<String>) -> Option<&str> {
    value.as_deref().map(str::trim).filter(|v| !v.is_empty())
}

impl Settings {
    /// Validates the raw settings; `fallback_database_url` is the value of `DATABASE_URL`.
    pub fn from_args(
        args: &SettingsArgs,
        fallback_database_url: Option<String>,
    ) -> Result<Self, ConfigError> {
        let listen = args.listen.trim().to_owned();
        let port_ok = listen
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
        if !port_ok {
            return Err(ConfigError::new(
                LISTEN_VAR,
                format!("{listen:?} is not host:port (for example 127.0.0.1:8080)"),
            ));
        }

        let database_url = match non_empty(&args.database_url) {
            Some(raw) => {
                Some(DatabaseUrl::parse(raw).map_err(|m| ConfigError::new(DATABASE_URL_VAR, m))?)
            }
            None => match non_empty(&fallback_database_url) {
                Some(raw) => {
                    Some(DatabaseUrl::parse(raw).map_err(|m| ConfigError::new("DATABASE_URL", m))?)
                }
                None => None,
            },
        };

        let master_key = non_empty(&args.master_key)
            .map(|raw| {
                MasterKey::from_base64(raw)
                    .map_err(|e| ConfigError::new(MASTER_KEY_VAR, e.to_string()))
            })
            .transpose()?;
        let old_master_keys = parse_old_master_keys(non_empty(&args.old_master_keys))?;
        if master_key.is_none() && database_url.as_ref().is_some_and(DatabaseUrl::is_postgres) {
            return Err(ConfigError::new(
                MASTER_KEY_VAR,
                "is required with a PostgreSQL database (base64 of 32 random bytes; \
                 generate one with `openssl rand -base64 32`)",
            ));
        }

        let admin_key = match non_empty(&args.admin_key) {
            Some(raw) if raw.len() < MIN_ADMIN_KEY_LEN => {
                return Err(ConfigError::new(
                    ADMIN_KEY_VAR,
                    format!("must be at least {MIN_ADMIN_KEY_LEN} characters"),
                ))
            }
            Some(raw) if raw.chars().any(|c| !c.is_ascii_graphic()) => {
                return Err(ConfigError::new(
                    ADMIN_KEY_VAR,
                    "must be printable ASCII without spaces",
                ))
            }
            Some(raw) => Some(SecretString::from(raw.to_owned())),
            None => None,
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
            allow_insecure_token_urls,
            log_format,
            vending: VendingSettings::default(),
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
            .field("allow_insecure_token_urls", &self.allow_insecure_token_urls)
            .field("log_format", &self.log_format)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Wrapper {
        #[command(flatten)]
        args: SettingsArgs,
    }

    fn parse(flags: &[&str]) -> Result<Settings, ConfigError> {
        let mut argv = vec!["tokenvend"];
        argv.extend_from_slice(flags);
        let wrapper = Wrapper::try_parse_from(argv).expect("flags parse");
        Settings::from_args(&wrapper.args, None)
    }

    #[test]
    fn defaults_are_valid() {
        let settings = parse(&[]).expect("defaults");
        assert_eq!(settings.listen, "127.0.0.1:8080");
        assert!(settings.database_url.is_none());
        assert!(!settings.allow_insecure_token_urls);
        assert!(matches!(
            settings.effective_database_url(),
            DatabaseUrl::Sqlite(url) if url.ends_with("data/tokenvend.db")
        ));
    }

    #[test]
    fn each_bad_setting_names_its_variable() {
        let key = "--master-key=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
        let cases: &[(&[&str], &str)] = &[
            (&["--listen", "8080"], LISTEN_VAR),
            (&["--database-url", "mysql://x"], DATABASE_URL_VAR),
            (
                &["--database-url", "postgres://postgres@127.0.0.1/x"],
                MASTER_KEY_VAR,
            ),
            (&[key], MASTER_KEY_VAR),
            (&["--master-key", "short"], MASTER_KEY_VAR),
            (&["--old-master-keys", "short"], OLD_MASTER_KEYS_VAR),
            (
                &["--old-master-keys=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="],
                OLD_MASTER_KEYS_VAR,
            ),
            (&["--admin-key", "too-short"], ADMIN_KEY_VAR),
            (&["--allow-insecure-token-urls", "yes"], INSECURE_URLS_VAR),
            (&["--log-format", "xml"], LOG_FORMAT_VAR),
        ];
        for (flags, variable) in cases {
            let err = parse(flags).expect_err("should be refused");
            assert_eq!(err.variable, *variable, "{flags:?}");
            assert!(err.to_string().starts_with(variable));
        }
    }

    #[test]
    fn database_url_falls_back_to_the_plain_variable() {
        let wrapper = Wrapper::try_parse_from(["tokenvend"]).expect("flags parse");
        let settings =
            Settings::from_args(&wrapper.args, Some("sqlite://elsewhere.db".to_owned())).unwrap();
        assert!(
            matches!(settings.database_url, Some(DatabaseUrl::Sqlite(u)) if u == "sqlite://elsewhere.db")
        );
    }

    #[test]
    fn old_master_keys_are_a_comma_separated_list_and_a_bad_one_is_named_not_shown() {
        let (a, a64) = MasterKey::generate();
        let (b, b64) = MasterKey::generate();
        let settings = parse(&["--old-master-keys", &format!(" {a64} ,{b64},")]).unwrap();
        let ids: Vec<&str> = settings.old_master_keys.iter().map(MasterKey::id).collect();
        assert_eq!(ids, [a.id(), b.id()]);
        assert!(parse(&[]).unwrap().old_master_keys.is_empty());

        let err = parse(&["--old-master-keys", &format!("{a64},{b64}x")]).unwrap_err();
        assert_eq!(err.variable, OLD_MASTER_KEYS_VAR);
        assert!(err.message.starts_with("key 2 must be"), "{err}");
        assert!(!err.to_string().contains(&b64), "{err}");
    }

    #[test]
    fn debug_never_shows_keys() {
        let (_, encoded) = MasterKey::generate();
        let (_, old) = MasterKey::generate();
        let admin = "an-admin-key-that-is-long-enough-1234567";
        let settings = parse(&[
            "--master-key",
            &encoded,
            "--old-master-keys",
            &old,
            "--admin-key",
            admin,
        ])
        .unwrap();
        let shown = format!("{settings:?}");
        assert!(
            !shown.contains(&encoded) && !shown.contains(&old) && !shown.contains(admin),
            "{shown}"
        );
    }
}
