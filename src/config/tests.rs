//! The settings' validation: every bad value names its variable, key files are read.

use std::num::NonZeroU32;

use super::*;
use clap::{CommandFactory as _, Parser};

#[derive(Parser)]
struct Wrapper {
    #[command(flatten)]
    args: SettingsArgs,
}

fn parse(flags: &[&str]) -> Result<Settings, ConfigError> {
    parse_env(flags, &[])
}

/// With keys as the environment gives them (flags cannot).
fn parse_env(flags: &[&str], env: &[(&str, &str)]) -> Result<Settings, ConfigError> {
    let mut argv = vec!["tokenvend"];
    argv.extend_from_slice(flags);
    let mut args = match Wrapper::try_parse_from(argv) {
        Ok(parsed) => parsed.args,
        Err(error) => {
            return Err(config_error(&error, &Wrapper::command()).expect("a setting's error"))
        }
    };
    for (variable, value) in env {
        let field = match *variable {
            MASTER_KEY_VAR => &mut args.master_key,
            OLD_MASTER_KEYS_VAR => &mut args.old_master_keys,
            ADMIN_KEY_VAR => &mut args.admin_key,
            other => panic!("{other} is not an environment-only key"),
        };
        *field = Some((*value).to_owned());
    }
    Settings::from_args(&args, None)
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
fn rate_limits_default_to_unlimited_keys_and_sixty_failures_a_minute() {
    let defaults = parse(&[]).expect("defaults").serving.rate_limits;
    assert_eq!(defaults.key_rate, None);
    assert_eq!(defaults.auth_failures, NonZeroU32::new(60));
    let set = parse(&["--key-rate", "5", "--auth-failures", "0"])
        .expect("valid")
        .serving
        .rate_limits;
    assert_eq!(set.key_rate, NonZeroU32::new(5));
    assert_eq!(set.auth_failures, None);
}

#[test]
fn the_upstream_budget_defaults_to_sixty_a_minute_and_zero_lifts_it() {
    let vending = |args: &[&str]| parse(args).expect("valid").vending;
    assert_eq!(vending(&[]).upstream_rate, NonZeroU32::new(60));
    assert_eq!(
        vending(&["--upstream-rate", "600"]).upstream_rate,
        NonZeroU32::new(600)
    );
    assert_eq!(vending(&["--upstream-rate", "0"]).upstream_rate, None);
}

#[test]
fn audit_retention_defaults_to_400_days_and_zero_keeps_every_event() {
    let days = |args: &[&str]| parse(args).map(|s| s.audit.retention_days);
    assert_eq!(days(&[]).expect("defaults"), 400);
    assert_eq!(days(&["--audit-retention-days", "0"]).expect("valid"), 0);
    for bad in [
        "--audit-retention-days=-1",
        "--audit-retention-days=1.5",
        "--audit-retention-days=36501",
    ] {
        let err = days(&[bad]).expect_err(bad);
        assert_eq!(err.variable, AUDIT_RETENTION_DAYS_VAR, "{bad}");
    }
}

#[test]
fn each_bad_setting_names_its_variable() {
    let zero_key = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
    let weak = "a".repeat(40);
    let env_cases: &[(&str, &str)] = &[
        (MASTER_KEY_VAR, zero_key),
        (MASTER_KEY_VAR, "short"),
        (OLD_MASTER_KEYS_VAR, "short"),
        (OLD_MASTER_KEYS_VAR, zero_key),
        (ADMIN_KEY_VAR, "too-short"),
        (ADMIN_KEY_VAR, &weak),
    ];
    for (variable, value) in env_cases {
        let err = parse_env(&[], &[(variable, value)]).expect_err("should be refused");
        assert_eq!(err.variable, *variable, "{value}");
    }
    let cases: &[(&[&str], &str)] = &[
        (&["--listen", "8080"], LISTEN_VAR),
        (&["--database-url", "mysql://x"], DATABASE_URL_VAR),
        (
            &["--database-url", "postgres://postgres@127.0.0.1/x"],
            MASTER_KEY_VAR,
        ),
        // Keys as flags are refused whatever their value.
        (&["--master-key", zero_key], MASTER_KEY_VAR),
        (&["--admin-key=x"], ADMIN_KEY_VAR),
        (&["--old-master-keys"], OLD_MASTER_KEYS_VAR),
        (&["--bootstrap-admin", "off"], BOOTSTRAP_ADMIN_VAR),
        (&["--header-timeout", "0"], HEADER_TIMEOUT_VAR),
        (&["--header-timeout", "1.5"], HEADER_TIMEOUT_VAR),
        (&["--proxy-timeout", "0"], PROXY_TIMEOUT_VAR),
        (&["--proxy-timeout", "soon"], PROXY_TIMEOUT_VAR),
        (&["--max-connections", "0"], MAX_CONNECTIONS_VAR),
        (&["--max-connections", "many"], MAX_CONNECTIONS_VAR),
        (&["--metrics-listen", "9090"], METRICS_LISTEN_VAR),
        (&["--key-rate=-1"], KEY_RATE_VAR),
        (&["--key-rate", "2.5"], KEY_RATE_VAR),
        (&["--key-rate", "100001"], KEY_RATE_VAR),
        (&["--auth-failures", "many"], AUTH_FAILURES_VAR),
        (&["--upstream-rate", "sixty"], UPSTREAM_RATE_VAR),
        (&["--upstream-rate=-1"], UPSTREAM_RATE_VAR),
        (&["--upstream-rate", "1000001"], UPSTREAM_RATE_VAR),
        (
            &["--master-key-file", "/nonexistent/master.key"],
            MASTER_KEY_FILE_VAR,
        ),
        (
            &["--admin-key-file", "/nonexistent/admin.key"],
            ADMIN_KEY_FILE_VAR,
        ),
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
    let settings = parse_env(&[], &[(OLD_MASTER_KEYS_VAR, &format!(" {a64} ,{b64},"))]).unwrap();
    let ids: Vec<&str> = settings.old_master_keys.iter().map(MasterKey::id).collect();
    assert_eq!(ids, [a.id(), b.id()]);
    assert!(parse(&[]).unwrap().old_master_keys.is_empty());

    let err = parse_env(&[], &[(OLD_MASTER_KEYS_VAR, &format!("{a64},{b64}x"))]).unwrap_err();
    assert_eq!(err.variable, OLD_MASTER_KEYS_VAR);
    assert!(err.message.starts_with("key 2 must be"), "{err}");
    assert!(!err.to_string().contains(&b64), "{err}");
}

#[test]
fn debug_never_shows_keys() {
    let (_, encoded) = MasterKey::generate();
    let (_, old) = MasterKey::generate();
    let admin = "9Vq2LrXe7TzKwPa4sYhN3mBdFgJ6cU8x";
    let settings = parse_env(
        &[],
        &[
            (MASTER_KEY_VAR, &encoded),
            (OLD_MASTER_KEYS_VAR, &old),
            (ADMIN_KEY_VAR, admin),
        ],
    )
    .unwrap();
    let shown = format!("{settings:?}");
    assert!(
        !shown.contains(&encoded) && !shown.contains(&old) && !shown.contains(admin),
        "{shown}"
    );
}

#[test]
fn keys_are_read_from_their_files_trimmed() {
    let dir = tempfile::tempdir().unwrap();
    let (_, master) = MasterKey::generate();
    let admin = "tv_bootstrap_Zr8Qm2XkP4wLs9TfVb7nHc3JyGd6Ea5U8pRt2WqY";
    let master_path = dir.path().join("master");
    let admin_path = dir.path().join("admin");
    std::fs::write(&master_path, format!("{master}\n")).unwrap();
    std::fs::write(&admin_path, format!("  {admin}\n")).unwrap();
    let settings = parse(&[
        "--master-key-file",
        master_path.to_str().unwrap(),
        "--admin-key-file",
        admin_path.to_str().unwrap(),
    ])
    .expect("keys from files");
    let from_env = parse_env(&[], &[(MASTER_KEY_VAR, &master)]).unwrap();
    assert_eq!(
        settings.master_key.as_ref().map(MasterKey::id),
        from_env.master_key.as_ref().map(MasterKey::id)
    );
    assert_eq!(settings.admin_key.unwrap().expose_secret(), admin);

    let url_path = dir.path().join("url");
    std::fs::write(&url_path, "postgres://tokenvend:pw@db:5432/tokenvend\n").unwrap();
    let settings = parse_env(
        &["--database-url-file", url_path.to_str().unwrap()],
        &[(MASTER_KEY_VAR, &master)],
    )
    .expect("database URL from a file");
    assert!(settings.database_url.is_some_and(|url| url.is_postgres()));
}

#[test]
fn a_key_and_its_file_together_are_refused_naming_both() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("key");
    let (_, master) = MasterKey::generate();
    std::fs::write(&path, &master).unwrap();
    let path = path.to_str().unwrap();
    let admin = "Zr8Qm2XkP4wLs9TfVb7nHc3JyGd6Ea5U";
    for (variable, value, file_variable, file_flag) in [
        (
            MASTER_KEY_VAR,
            master.as_str(),
            MASTER_KEY_FILE_VAR,
            "--master-key-file",
        ),
        (ADMIN_KEY_VAR, admin, ADMIN_KEY_FILE_VAR, "--admin-key-file"),
    ] {
        let shown = parse_env(&[file_flag, path], &[(variable, value)])
            .expect_err("both set")
            .to_string();
        assert!(
            shown.starts_with(variable) && shown.contains(file_variable),
            "{shown}"
        );
        assert!(
            !shown.contains(&master) && !shown.contains(admin),
            "{shown}"
        );
    }
}

#[test]
fn a_weak_key_in_a_file_is_refused_naming_the_file_variable() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("admin");
    std::fs::write(&path, "a".repeat(48)).unwrap();
    let err = parse(&["--admin-key-file", path.to_str().unwrap()]).unwrap_err();
    assert_eq!(err.variable, ADMIN_KEY_FILE_VAR);
    assert!(!err.to_string().contains("aaaa"), "{err}");
}

#[test]
fn serving_limits_default_as_documented() {
    let settings = parse(&[]).unwrap();
    assert_eq!(settings.serving.header_timeout, Duration::from_secs(10));
    assert_eq!(settings.serving.max_connections, 10_000);
    assert!(settings.serving.metrics_listen.is_none());
    assert_eq!(settings.serving.proxy_timeout, Duration::from_secs(30));
    assert!(settings.bootstrap_admin);
    let settings = parse(&[
        "--header-timeout",
        "3",
        "--max-connections",
        "2",
        "--metrics-listen",
        "127.0.0.1:9090",
        "--bootstrap-admin",
        "disabled",
        "--proxy-timeout",
        "5",
    ])
    .unwrap();
    assert_eq!(settings.serving.proxy_timeout, Duration::from_secs(5));
    assert_eq!(settings.serving.header_timeout, Duration::from_secs(3));
    assert_eq!(settings.serving.max_connections, 2);
    assert_eq!(
        settings.serving.metrics_listen.as_deref(),
        Some("127.0.0.1:9090")
    );
    assert!(!settings.bootstrap_admin);
}

#[test]
fn a_refused_value_reads_as_before_one_line_naming_the_variable() {
    for (flags, line) in [
        (
            &["--log-format", "xml"][..],
            "TOKENVEND_LOG_FORMAT: \"xml\" is not text or json",
        ),
        (
            &["--bootstrap-admin", "off"],
            "TOKENVEND_BOOTSTRAP_ADMIN: \"off\" is not enabled or disabled",
        ),
        (
            &["--allow-insecure-token-urls", "yes"],
            "TOKENVEND_ALLOW_INSECURE_TOKEN_URLS: \"yes\" is not 1 or 0",
        ),
        (
            &["--header-timeout", "1.5"],
            "TOKENVEND_HEADER_TIMEOUT: \"1.5\" is not a whole number from 1 to 3600",
        ),
        (
            &["--key-rate=-1"],
            "TOKENVEND_KEY_RATE: \"-1\" is not a whole number from 0 to 100000",
        ),
    ] {
        let err = parse(flags).expect_err("should be refused");
        assert_eq!(err.to_string(), line, "{flags:?}");
    }
}

#[test]
fn the_choices_accept_their_names_aliases_and_blanks_around_them() {
    let settings = parse(&["--log-format", " json ", "--bootstrap-admin", "disabled "]).unwrap();
    assert_eq!(settings.log_format, LogFormat::Json);
    assert!(!settings.bootstrap_admin);
    for (flags, insecure) in [
        (&["--allow-insecure-token-urls"][..], true),
        (&["--allow-insecure-token-urls", "true"], true),
        (&["--allow-insecure-token-urls", " 1"], true),
        (&["--allow-insecure-token-urls", "false"], false),
        (&["--allow-insecure-token-urls", "0"], false),
        (&["--allow-insecure-token-urls", ""], false),
        (&[], false),
    ] {
        let settings = parse(flags).unwrap();
        assert_eq!(settings.allow_insecure_token_urls, insecure, "{flags:?}");
    }
}
