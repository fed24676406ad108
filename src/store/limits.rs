//! Limits both backends share.

use std::time::Duration;

/// How long a request waits for a database connection before the store counts as down.
pub const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(1);
