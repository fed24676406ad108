//! What only the registry changes in the engine's shared state (kept in a file of its
//! own, which imports nothing of the engine: `Core` holds it).

use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::Mutex;

/// The registry's part of `Core`: its fields are the registry's alone.
#[derive(Default)]
pub struct RegistryState {
    /// Serialises changes to the slot map (the hot path's reads never wait).
    pub(super) writes: Mutex<()>,
    /// Set while stored tokens are adopted in the background after start-up.
    pub(super) adopting: AtomicBool,
}

impl RegistryState {
    /// Whether stored tokens are still being adopted (see `Registry::expect_adoption`).
    pub fn adopting(&self) -> bool {
        self.adopting.load(Ordering::Acquire)
    }
}
