//! What the binary does besides serving: its command line, the operator commands over
//! the HTTP API, the demo and the re-sealing of stored secrets.

/// Command-line interface: subcommands and their arguments.
pub mod cli;
/// `tokenvend demo`: the service with the local edX-like issuer (`edx-issuer`) and demo
/// tenants; only with the `demo` feature (on by default).
#[cfg(feature = "demo")]
pub mod demo;
/// The operator CLI (`tenants`, `keys`, `token`) over the HTTP API.
pub mod operator;
/// `tokenvend rekey`: re-seals every stored secret and token under the current master key.
pub mod rekey;
