//! One write path per change (tenants, caller keys, webhooks, identities): parse, check,
//! seal, then write the row, its audit entry and (for tenants) its outbox event in ONE
//! transaction, and only once that has committed tell what holds the change in memory
//! (the engine, the key ring, the identity registry) and wake the webhook worker.
//!
//! Handlers extract, call one service and render; a service never sees HTTP. Each
//! service takes only the handles it needs; `state.rs` builds them from the app's state.

mod change;
mod identities;
mod keys;
mod tenants;
mod verify;
mod webhooks;

pub use change::{Actor, Result, ServiceError};
pub use identities::{IdentityDirectory, IdentityService};
pub use keys::{CallerKeys, CreatedKey, KeyFields, KeyService, NewKey, MAX_KEY_RATE};
pub use tenants::TenantService;
pub use webhooks::{CreatedWebhook, WebhookFields, WebhookService};
