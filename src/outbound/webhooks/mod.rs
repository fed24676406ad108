//! Webhooks: lifecycle events pushed to admin-registered endpoints, signed per the
//! Standard Webhooks specification and delivered at least once from the store's outbox.
//!
//! `event.rs` names the events and their bodies; `raise.rs` holds `Events`, the handle
//! the rest of the service raises them through (`Events::raise`); `signing.rs` makes
//! secrets and signatures; `delivery.rs` is the worker that sends, retries and prunes.

mod delivery;
mod event;
mod raise;
mod settings;
mod signing;

pub use delivery::Deliverer;
pub use event::{Event, EventType};
pub use raise::Events;
pub use settings::WebhookSettings;
pub use signing::{generate_secret, sign, MalformedSecret, SignedHeaders};
