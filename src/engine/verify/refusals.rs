//! Verify's part of `Core` (a file of its own, which imports nothing of the engine).

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use parking_lot::Mutex;

/// The client ids whose verify edX refused, and until when they are not verified again
/// (this replica's memory of them; the fleet's is in the store): verify's alone.
#[derive(Default)]
pub struct Refusals(pub(super) Mutex<HashMap<String, DateTime<Utc>>>);
