//! The standard OpenTelemetry variables, as tokenvend reads them: traces are exported only
//! when an OTLP endpoint is set, over OTLP/HTTP (`http/protobuf` by default, or
//! `http/json`). The exporter itself reads the rest of the standard set (endpoint paths,
//! headers, timeouts, `OTEL_BSP_*`); the values read here are checked first, so that a
//! wrong one stops start-up with one line naming it.

use clap::ValueEnum as _;

use super::parse::choice;
use super::vars::ConfigError;
use crate::telemetry::{OtelSettings, OtlpProtocol};

pub const ENDPOINT_VAR: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
pub const TRACES_ENDPOINT_VAR: &str = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT";
pub const PROTOCOL_VAR: &str = "OTEL_EXPORTER_OTLP_PROTOCOL";
pub const TRACES_PROTOCOL_VAR: &str = "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL";
pub const SERVICE_NAME_VAR: &str = "OTEL_SERVICE_NAME";
pub const SCHEDULE_DELAY_VAR: &str = "OTEL_BSP_SCHEDULE_DELAY";
pub const SDK_DISABLED_VAR: &str = "OTEL_SDK_DISABLED";

/// The service name spans carry when `OTEL_SERVICE_NAME` is unset.
pub const DEFAULT_SERVICE_NAME: &str = "tokenvend";

/// Trace export settings from the process environment; `None` means no export.
pub fn from_env() -> Result<Option<OtelSettings>, ConfigError> {
    from_lookup(|name| std::env::var(name).ok())
}

/// The same from any lookup of variables (tests pass a table).
pub fn from_lookup(
    var: impl Fn(&str) -> Option<String>,
) -> Result<Option<OtelSettings>, ConfigError> {
    let set = |name: &str| {
        var(name)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    };
    if set(SDK_DISABLED_VAR).is_some_and(|v| v.eq_ignore_ascii_case("true")) {
        return Ok(None);
    }
    if set(ENDPOINT_VAR).is_none() && set(TRACES_ENDPOINT_VAR).is_none() {
        return Ok(None);
    }
    let (protocol_var, protocol) = match set(TRACES_PROTOCOL_VAR) {
        Some(value) => (TRACES_PROTOCOL_VAR, Some(value)),
        None => (PROTOCOL_VAR, set(PROTOCOL_VAR)),
    };
    let protocol = match protocol.as_deref() {
        None => OtlpProtocol::HttpProtobuf,
        Some("grpc") => {
            let names = OtlpProtocol::value_variants()
                .iter()
                .filter_map(|p| Some(p.to_possible_value()?.get_name().to_owned()))
                .collect::<Vec<_>>()
                .join(" or ");
            return Err(ConfigError::new(
                protocol_var,
                format!("grpc is not supported; use {names}"),
            ));
        }
        Some(other) => choice(other).map_err(|m| ConfigError::new(protocol_var, m))?,
    };
    if let Some(delay) = set(SCHEDULE_DELAY_VAR) {
        if delay.parse::<u64>().is_err() {
            return Err(ConfigError::new(
                SCHEDULE_DELAY_VAR,
                format!("{delay:?} is not a whole number of milliseconds"),
            ));
        }
    }
    Ok(Some(OtelSettings {
        protocol,
        service_name: set(SERVICE_NAME_VAR).unwrap_or_else(|| DEFAULT_SERVICE_NAME.to_owned()),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(vars: &[(&str, &str)]) -> Result<Option<OtelSettings>, ConfigError> {
        from_lookup(|name| {
            vars.iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| (*v).to_owned())
        })
    }

    #[test]
    fn traces_are_exported_only_with_an_endpoint() {
        assert_eq!(settings(&[(PROTOCOL_VAR, "http/json")]), Ok(None));
        let on = settings(&[(ENDPOINT_VAR, "http://127.0.0.1:4318")])
            .unwrap()
            .unwrap();
        assert_eq!(on.protocol, OtlpProtocol::HttpProtobuf, "the default");
        assert_eq!(on.service_name, "tokenvend");
        let off = settings(&[
            (ENDPOINT_VAR, "http://127.0.0.1:4318"),
            (SDK_DISABLED_VAR, "true"),
        ]);
        assert_eq!(off, Ok(None), "OTEL_SDK_DISABLED=true turns export off");
    }

    #[test]
    fn the_protocol_and_service_name_are_read() {
        let json = settings(&[
            (ENDPOINT_VAR, "http://127.0.0.1:4318"),
            (PROTOCOL_VAR, "http/json"),
            (SERVICE_NAME_VAR, "tokenvend-eu"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(json.protocol, OtlpProtocol::HttpJson);
        assert_eq!(json.service_name, "tokenvend-eu");
    }

    #[test]
    fn a_wrong_value_names_its_variable() {
        for (vars, variable, why) in [
            (
                vec![(ENDPOINT_VAR, "http://x:4318"), (PROTOCOL_VAR, "http/xml")],
                PROTOCOL_VAR,
                "unknown protocol",
            ),
            (
                vec![(ENDPOINT_VAR, "http://x:4318"), (PROTOCOL_VAR, "grpc")],
                PROTOCOL_VAR,
                "grpc is not built in",
            ),
            (
                vec![
                    (TRACES_ENDPOINT_VAR, "http://x:4318/v1/traces"),
                    (TRACES_PROTOCOL_VAR, "json"),
                ],
                TRACES_PROTOCOL_VAR,
                "the traces-specific protocol",
            ),
            (
                vec![(ENDPOINT_VAR, "http://x:4318"), (SCHEDULE_DELAY_VAR, "5s")],
                SCHEDULE_DELAY_VAR,
                "a delay in milliseconds",
            ),
        ] {
            let err = settings(&vars).unwrap_err();
            assert_eq!(err.variable, variable, "{why}");
            assert!(err.to_string().starts_with(variable), "{why}: {err}");
        }
    }

    #[test]
    fn a_wrong_protocol_says_which_ones_there_are() {
        let with = |protocol| {
            settings(&[(ENDPOINT_VAR, "http://x:4318"), (PROTOCOL_VAR, protocol)])
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            with("grpc"),
            "OTEL_EXPORTER_OTLP_PROTOCOL: grpc is not supported; use http/protobuf or http/json"
        );
        assert_eq!(
            with(" http/xml "),
            "OTEL_EXPORTER_OTLP_PROTOCOL: \"http/xml\" is not http/protobuf or http/json"
        );
    }
}
