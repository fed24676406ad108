//! What every change shares: who makes it (`Actor`, for its audit entry), why one was
//! not made (`ServiceError`), the one mapping of a unique violation to a conflict, and
//! the binding of tenant scopes.

use std::collections::HashMap;

use serde_json::Value;

use crate::domain::{FieldError, ScopeSet};
use crate::engine::VendError;
use crate::store::{self, AuditEntry, Store};

pub type Result<T, E = ServiceError> = std::result::Result<T, E>;

/// Who makes a change, and in which request: what its audit entry records.
#[derive(Debug, Clone)]
pub struct Actor {
    /// The caller's id (a key id, or `<provider>:<subject>` for a workload identity).
    pub id: String,
    pub request_id: Option<String>,
}

impl Actor {
    /// The audit entry of a change `action` on `target` made by this actor.
    pub fn audit(&self, action: &'static str, target: &str, details: Value) -> AuditEntry {
        AuditEntry {
            actor: self.id.clone(),
            action,
            target: target.to_owned(),
            request_id: self.request_id.clone(),
            details,
        }
    }
}

/// Why a change was not made. Each variant is one answer the HTTP layer renders; a store
/// error keeps its cause for the log, never for the caller.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Invalid(#[from] FieldError),
    #[error("{0}")]
    Conflict(String),
    /// No such thing (the message names what: "caller key not found").
    #[error("{0}")]
    NotFound(&'static str),
    /// No such tenant (answered like a tenant the caller may not see).
    #[error("tenant not found")]
    TenantNotFound,
    /// A well-formed change that would pass a limit on stored things.
    #[error("{0}")]
    LimitReached(String),
    /// `?verify=true`: edX refused the new credentials; nothing was stored.
    #[error("edX refused these credentials (HTTP {status}, {code}); nothing was changed")]
    CredentialsRefused { status: u16, code: String },
    /// The credentials could not be tried (edX unreachable, a cool-down, a caller over
    /// its rate); nothing was stored.
    #[error(transparent)]
    Vend(VendError),
    #[error(transparent)]
    Store(#[from] sqlx::Error),
}

/// Turns a unique-constraint violation into a `Conflict` with `message`: the one place
/// that maps it (a duplicate id, issuer or key).
pub(super) trait OnConflict<T> {
    fn on_conflict(self, message: impl FnOnce() -> String) -> Result<T>;
}

impl<T> OnConflict<T> for std::result::Result<T, sqlx::Error> {
    fn on_conflict(self, message: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|err| {
            if store::is_unique_violation(&err) {
                ServiceError::Conflict(message())
            } else {
                err.into()
            }
        })
    }
}

/// Binds each `token:<id>`/`proxy:<id>` scope to the tenant that holds the id now; a
/// `scopes` field error naming the id when no tenant does (caller keys and identity
/// mappings alike).
pub(super) async fn bind_tenant_scopes(store: &Store, scopes: ScopeSet) -> Result<ScopeSet> {
    let mut current = HashMap::new();
    for scope in scopes.iter() {
        if let Some(id) = scope.unbound_tenant() {
            if let Some(tenant) = store.get_tenant(id).await? {
                current.insert(id.clone(), tenant.uid);
            }
        }
    }
    scopes.bind(|id| current.get(id).copied()).map_err(|id| {
        FieldError::new(
            "scopes",
            format!("a tenant scope names {id}, which is no tenant; create the tenant first"),
        )
        .into()
    })
}

/// Now, as both stores keep it (microseconds): answers are the same on both.
pub(super) fn now() -> chrono::DateTime<chrono::Utc> {
    use chrono::SubsecRound;
    chrono::Utc::now().trunc_subsecs(6)
}
