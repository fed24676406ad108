//! Reading one raw setting: addresses, counts and rates in their ranges, secrets given
//! directly or as a file, the old master keys. Each failure is a `ConfigError` naming the
//! variable, never the secret.

use std::num::NonZeroU32;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};

use clap::ValueEnum;
use secrecy::{ExposeSecret, SecretString};

use super::vars::{ConfigError, OLD_MASTER_KEYS_VAR};
use crate::crypto::MasterKey;

/// One of a `ValueEnum`'s names (surrounding blanks ignored), as a clap value parser:
/// otherwise why not, naming the choices (`"xml" is not text or json`).
pub(super) fn choice<E: ValueEnum>(raw: &str) -> Result<E, String> {
    let value = raw.trim();
    E::from_str(value, false).map_err(|_| {
        let names: Vec<String> = E::value_variants()
            .iter()
            .filter_map(|v| Some(v.to_possible_value()?.get_name().to_owned()))
            .collect();
        format!("{value:?} is not {}", names.join(" or "))
    })
}

pub(super) fn non_empty(value: &Option<String>) -> Option<&str> {
    value.as_deref().map(str::trim).filter(|v| !v.is_empty())
}

/// A `host:port` address, or why not.
pub(super) fn check_address(variable: &'static str, raw: &str) -> Result<String, ConfigError> {
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

/// A clap value parser of whole numbers in `range`: otherwise why not.
pub(super) fn count(
    range: RangeInclusive<u64>,
) -> impl Fn(&str) -> Result<u64, String> + Clone + Send + Sync + 'static {
    move |raw| match raw.trim().parse::<u64>() {
        Ok(n) if range.contains(&n) => Ok(n),
        _ => Err(format!(
            "{raw:?} is not a whole number from {} to {}",
            range.start(),
            range.end()
        )),
    }
}

/// A rate (a count its parser kept in `u32`), where 0 means none.
pub(super) fn rate(n: u64) -> Option<NonZeroU32> {
    u32::try_from(n).ok().and_then(NonZeroU32::new)
}

/// A secret given either directly or as a file to read (`…_FILE`, as Docker and
/// Kubernetes secrets are mounted), with the variable it came from. Both at once is an
/// error naming both.
pub(super) fn secret_setting(
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
pub(super) fn read_secret_file(path: &Path) -> Result<SecretString, String> {
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

/// `TOKENVEND_OLD_MASTER_KEYS`: comma-separated keys, each validated as the master key
/// is; a bad one is named by its position, never shown.
pub(super) fn parse_old_master_keys(raw: Option<&str>) -> Result<Vec<MasterKey>, ConfigError> {
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
