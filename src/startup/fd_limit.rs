//! Open files: at start-up the soft limit is raised to the hard limit, and the connection
//! cap (`TOKENVEND_MAX_CONNECTIONS`) is kept low enough that a flood of idle client
//! connections cannot take the descriptors the store and edX calls need.

use crate::config::MAX_CONNECTIONS_VAR;

/// Descriptors kept for everything but client connections: the store (PostgreSQL: a
/// pool of 10, the refresh-lock pool of 16 and the change listener; SQLite: 4
/// connections of up to three files each), the outbound clients' connections to edX
/// (token, JWKS), webhook receivers and the OTLP collector, the listeners, standard
/// streams and the runtime's own (epoll, eventfd, signal pipe), with room to spare.
pub const RESERVED_DESCRIPTORS: u64 = 256;

/// Raises the soft open-file limit to the hard limit and returns the connection cap per
/// listener that fits under it (with a warning naming both numbers when that is below
/// `configured`). `listeners` is 1, or 2 with `TOKENVEND_METRICS_LISTEN`.
pub fn fit_connections(configured: usize, listeners: usize) -> usize {
    let limit = match raise_soft_limit() {
        Ok(limit) => limit,
        Err(error) => {
            tracing::warn!(%error, "cannot read or raise the open-file limit; connections are not capped by it");
            return configured;
        }
    };
    match connection_cap(configured, limit, listeners) {
        Some(cap) => {
            tracing::warn!(
                "{MAX_CONNECTIONS_VAR} lowered from {configured} to {cap}: the open-file \
                 limit is {limit} (raise the hard limit, e.g. `ulimit -Hn` or the \
                 container's nofile, to allow more); {RESERVED_DESCRIPTORS} descriptors \
                 are kept for the store and outbound calls, and each connection may need a \
                 second one for a proxied edX call"
            );
            cap
        }
        None => configured,
    }
}

/// The soft limit after raising it as far as the hard limit allows.
fn raise_soft_limit() -> std::io::Result<u64> {
    let (soft, hard) = rlimit::getrlimit(rlimit::Resource::NOFILE)?;
    if soft >= hard {
        return Ok(soft);
    }
    match rlimit::setrlimit(rlimit::Resource::NOFILE, hard, hard) {
        Ok(()) => Ok(hard),
        // An unlimited hard limit may be above what the kernel allows a process
        // (fs.nr_open): keep the soft limit then, it still counts.
        Err(_) if hard == rlimit::INFINITY => Ok(soft),
        Err(error) => Err(error),
    }
}

/// The lower cap when `configured` does not fit under `limit`, else `None`. Each main
/// listener connection may hold a second descriptor for a proxied edX call; the metrics
/// listener's connections need one each.
pub fn connection_cap(configured: usize, limit: u64, listeners: usize) -> Option<usize> {
    if limit == rlimit::INFINITY {
        return None;
    }
    let per_connection = 2 + u64::try_from(listeners.saturating_sub(1)).unwrap_or(u64::MAX);
    let fits = limit.saturating_sub(RESERVED_DESCRIPTORS) / per_connection;
    let fits = usize::try_from(fits).unwrap_or(usize::MAX).max(1);
    (fits < configured).then_some(fits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_leaves_the_reserve_and_a_descriptor_per_proxied_call() {
        let cases = [
            // (configured, limit, listeners, cap)
            (10_000, 512, 1, Some(128)),
            (10_000, 1024, 1, Some(384)),
            (10_000, 1024, 2, Some(256)),
            (100, 1024, 1, None),
            (10_000, 1_048_576, 2, None),
            (10_000, rlimit::INFINITY, 1, None),
            // Below the reserve: one connection at a time rather than none.
            (10_000, 64, 1, Some(1)),
        ];
        for (configured, limit, listeners, cap) in cases {
            assert_eq!(
                connection_cap(configured, limit, listeners),
                cap,
                "{configured} under {limit} with {listeners} listener(s)"
            );
        }
    }
}
