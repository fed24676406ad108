//! The `tokenvend` binary: jemalloc as the global allocator, then the command line
//! (`tokenvend::commands::cli`); everything else lives in the library.

use std::process::ExitCode;

/// jemalloc rather than the system allocator: a process holding 100,000 tenants' tokens
/// fetched one by one (each beside the short-lived buffers of its fetch) keeps far less
/// memory to fragmentation with its size classes and its return of unused pages to the
/// system (BENCHMARKS.md, "Memory and start-up at scale").
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> ExitCode {
    // Pages freed after a burst (a start-up, a wave of refreshes) go back to the system
    // over jemalloc's decay time even when no allocation follows; without its background
    // thread they would wait for the next allocations.
    if let Err(error) = tikv_jemalloc_ctl::background_thread::write(true) {
        eprintln!("tokenvend: jemalloc's background thread is off: {error}");
    }
    match tokenvend::commands::cli::parse() {
        Ok(cli) => tokenvend::commands::cli::run(cli).await,
        Err(code) => code,
    }
}
