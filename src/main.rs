use std::process::ExitCode;

use clap::Parser;

/// mimalloc rather than the system allocator: the hot path allocates a few small buffers
/// per request, which it serves faster, and a process holding 100,000 tenants' tokens
/// keeps less memory to fragmentation (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    tokenvend::cli::run(tokenvend::cli::Cli::parse()).await
}
