//! The command line: `tokenvend [serve]`, `migrate`, `rekey`, `demo` (only with the `demo`
//! feature), and the operator commands (`tenants`, `keys`, `token`) that talk to a running service.

use std::process::ExitCode;

use clap::{CommandFactory as _, Parser, Subcommand};

#[cfg(feature = "demo")]
use crate::commands::demo::DemoArgs;
use crate::commands::operator::identity::IdentityCommand;
use crate::commands::operator::{self, Connection, KeysCommand, TenantsCommand};
use crate::commands::rekey;
use crate::config::{self, ConfigError, Settings, SettingsArgs, MASTER_KEY_VAR};
use crate::startup::{self, Application};
use crate::telemetry;

#[derive(Debug, Parser)]
#[command(
    name = "tokenvend",
    version,
    about = "Holds edX API credentials and vends cached edX access tokens"
)]
pub struct Cli {
    #[command(flatten)]
    pub settings: SettingsArgs,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Run the HTTP service (the default).
    Serve,
    /// Apply database migrations, then exit.
    Migrate,
    /// Re-seal every stored client secret and token under the current master key, while
    /// the service runs. After a rotation: TOKENVEND_MASTER_KEY is the new key,
    /// TOKENVEND_OLD_MASTER_KEYS the old ones (restart every replica with both first).
    /// Prints the counts; exits 1 if a stored value cannot be opened.
    Rekey,
    /// Try tokenvend in a minute: the service on a fresh embedded store with a local
    /// edX-like issuer, demo tenants and a caller key. Ctrl-C stops it.
    #[cfg(feature = "demo")]
    Demo(DemoArgs),
    /// Manage tenants on a running service (TOKENVEND_URL, TOKENVEND_KEY).
    Tenants {
        #[command(subcommand)]
        command: TenantsCommand,
        #[command(flatten)]
        connection: Connection,
    },
    /// Manage caller keys on a running service (needs an admin key).
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
        #[command(flatten)]
        connection: Connection,
    },
    /// Manage workload identity on a running service: identity providers and mappings
    /// (needs an admin key).
    Identity {
        #[command(subcommand)]
        command: IdentityCommand,
        #[command(flatten)]
        connection: Connection,
    },
    /// Print a tenant's access token (for scripts: TOKEN=$(tokenvend token acme)).
    Token {
        tenant: String,
        /// Ask for a token with at least this many seconds left.
        #[arg(long)]
        min_ttl: Option<u64>,
        #[command(flatten)]
        connection: Connection,
    },
}

/// The commands that run the service itself, with its settings and its log.
enum ServiceCommand {
    Serve,
    Migrate,
    #[cfg(feature = "demo")]
    Demo(DemoArgs),
}

/// The command line of this process; a setting's value that clap refuses stops here with
/// one line naming its variable (exit 2, as a bad setting does at start-up); clap reports
/// its other errors (and `--help`, `--version`) itself.
pub fn parse() -> Result<Cli, ExitCode> {
    Cli::try_parse().or_else(
        |error| match config::config_error(&error, &Cli::command()) {
            // The operator commands are HTTP clients: a service setting in their
            // environment that they never read does not stop them.
            Some(setting) => operator_without_service_env().ok_or_else(|| fail(&setting)),
            None => error.exit(),
        },
    )
}

/// The command line read again with the service's settings taken from flags only (the
/// data directory, where the admin key file is, still from the environment), if it is
/// an operator command.
fn operator_without_service_env() -> Option<Cli> {
    use clap::{Args as _, FromArgMatches as _};
    let settings = SettingsArgs::augment_args(clap::Command::new("settings"));
    let mut command = Cli::command();
    for arg in settings.get_arguments() {
        if arg.get_env().is_some_and(|env| env != config::DATA_DIR_VAR) {
            command = command.mut_arg(arg.get_id().clone(), |a| a.env(None));
        }
    }
    let cli = Cli::from_arg_matches(&command.try_get_matches().ok()?).ok()?;
    matches!(
        cli.command,
        Some(Command::Tenants { .. } | Command::Keys { .. })
            | Some(Command::Identity { .. } | Command::Token { .. })
    )
    .then_some(cli)
}

pub async fn run(cli: Cli) -> ExitCode {
    // Before any command: a key given as a flag is already in `ps` for the operator
    // commands too.
    if let Err(err) = cli.settings.refuse_key_flags() {
        return fail(&err);
    }
    // The operator commands are HTTP clients: no service settings, no log lines.
    let data_dir = &cli.settings.data_dir;
    let operated = match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => return run_service(ServiceCommand::Serve, &cli.settings).await,
        Command::Migrate => return run_service(ServiceCommand::Migrate, &cli.settings).await,
        Command::Rekey => return run_rekey(&cli.settings).await,
        #[cfg(feature = "demo")]
        Command::Demo(args) => return run_service(ServiceCommand::Demo(args), &cli.settings).await,
        Command::Tenants {
            command,
            connection,
        } => operator::tenants(&command, &connection, data_dir).await,
        Command::Keys {
            command,
            connection,
        } => operator::keys(&command, &connection, data_dir).await,
        Command::Identity {
            command,
            connection,
        } => operator::identity::run(&command, &connection, data_dir).await,
        Command::Token {
            tenant,
            min_ttl,
            connection,
        } => operator::token(&tenant, min_ttl, &connection, data_dir).await,
    };
    match operated {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("tokenvend: {err}");
            ExitCode::from(1)
        }
    }
}

async fn run_service(command: ServiceCommand, args: &SettingsArgs) -> ExitCode {
    let settings = match Settings::from_args(args, std::env::var("DATABASE_URL").ok()) {
        Ok(settings) => settings,
        Err(err) => return fail(&err),
    };
    // Traces are for the running service; `migrate` only logs.
    let traces = match &command {
        ServiceCommand::Migrate => None,
        _ => match config::otel::from_env() {
            Ok(traces) => traces,
            Err(err) => return fail(&err),
        },
    };
    let telemetry = match telemetry::init_with_traces(settings.log_format, traces.as_ref()) {
        Ok(telemetry) => telemetry,
        Err(err) => return fail(&err),
    };
    let outcome = match command {
        ServiceCommand::Serve => serve(settings).await,
        ServiceCommand::Migrate => startup::open_store(&settings)
            .await
            .map(|store| tracing::info!(backend = store.backend_name(), "migrations applied"))
            .map_err(anyhow::Error::from),
        #[cfg(feature = "demo")]
        ServiceCommand::Demo(args) => {
            crate::commands::demo::run(&args, settings, shutdown_signal()).await
        }
    };
    telemetry.shutdown().await;
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => fail(&err),
    }
}

/// `tokenvend rekey`: a setting that is wrong exits 2 (as for `serve`); a value that
/// cannot be opened, or a store that fails midway, exits 1.
async fn run_rekey(args: &SettingsArgs) -> ExitCode {
    let settings = match Settings::from_args(args, std::env::var("DATABASE_URL").ok()) {
        Ok(settings) => settings,
        Err(err) => return fail(&err),
    };
    telemetry::init(settings.log_format);
    let key_file = settings.data_dir.join(startup::MASTER_KEY_FILE);
    if settings.master_key.is_none() && !key_file.exists() {
        // Never generate a key here: nothing sealed under it could be read back.
        return fail(&ConfigError::new(
            MASTER_KEY_VAR,
            format!(
                "is not set and {} does not exist; rekey re-seals under the key the service uses",
                key_file.display()
            ),
        ));
    }
    let key = match startup::master_key_ring(&settings) {
        Ok(key) => key,
        Err(err) => return fail(&err),
    };
    let store = match startup::open_store(&settings).await {
        Ok(store) => store,
        Err(err) => return fail(&err),
    };
    let outcome = rekey::rekey(&store, &key).await;
    store.close().await;
    match outcome {
        Ok(report) => {
            println!("{}", report.summary());
            for failure in &report.failures {
                eprintln!("tokenvend: {failure}");
            }
            if report.failures.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(err) => {
            eprintln!("tokenvend: rekey stopped: {err}; values not yet re-sealed keep their old key, run it again");
            ExitCode::from(1)
        }
    }
}

async fn serve(settings: Settings) -> anyhow::Result<()> {
    let stop = shutdown_signal();
    let app = Application::build(settings).await?;
    app.run_until_stopped(stop).await?;
    Ok(())
}

fn fail(err: &dyn std::fmt::Display) -> ExitCode {
    eprintln!("tokenvend: {err:#}");
    ExitCode::from(2)
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM. The handlers are installed when this is
/// called, not when it is first polled, so that a signal sent as soon as the service
/// answers (it may answer before the future is polled) is never the default, fatal one.
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    let (interrupt, terminate) = {
        use tokio::signal::unix::{signal, SignalKind};
        (
            signal(SignalKind::interrupt()).ok(),
            signal(SignalKind::terminate()).ok(),
        )
    };
    async move {
        #[cfg(unix)]
        {
            let wait = |s: Option<tokio::signal::unix::Signal>| async move {
                match s {
                    Some(mut s) => {
                        s.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                () = wait(interrupt) => {},
                () = wait(terminate) => {},
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
        tracing::info!("shutdown signal received; finishing in-flight requests");
    }
}
