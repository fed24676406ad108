//! How start-up errors read.

use super::*;

/// How `tokenvend` prints a start-up error: one line, causes joined by `: `.
fn line(err: StartupError) -> String {
    format!("{:#}", anyhow::Error::from(err))
}

#[test]
fn a_bad_setting_names_its_variable_and_nothing_else_does() {
    let config = ConfigError::new(LISTEN_VAR, "cannot bind 203.0.113.1:1: refused");
    assert_eq!(
        line(config.into()),
        "TOKENVEND_LISTEN: cannot bind 203.0.113.1:1: refused"
    );

    let client = anyhow::anyhow!("no TLS roots").context("builder error");
    let shown = line(StartupError::HttpClient(client.into()));
    assert_eq!(
        shown,
        "cannot build the HTTP client: builder error: no TLS roots"
    );

    let shown = line(StartupError::Store {
        what: "caller keys",
        cause: sqlx::Error::PoolTimedOut.into(),
    });
    assert!(
        shown.starts_with("cannot read caller keys from the store: "),
        "{shown}"
    );
    for shown in [shown, line(StartupError::HttpClient("x".into()))] {
        assert!(!shown.contains("TOKENVEND_"), "{shown}");
        assert_eq!(shown.lines().count(), 1, "{shown}");
    }
}
