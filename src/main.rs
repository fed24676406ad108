use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    tokenvend::cli::run(tokenvend::cli::Cli::parse()).await
}
