//! `tokenvend rekey`: re-seals every stored client secret, token and webhook secret under the current
//! master key while the service keeps running (on one process or a fleet), so that the
//! old key can then be dropped.
//!
//! Each value is opened with the key ring, sealed under the current key and written back
//! only if it is still the value that was read: a value a running replica changed in
//! the meantime is read again and re-sealed (it usually already is under the current key,
//! since every replica seals with it), never overwritten.

use secrecy::{ExposeSecret, SecretSlice};
use serde_json::json;

use crate::crypto::{CryptoError, MasterKey, Purpose};
use crate::store::{AuditEntry, SealedKind, SealedValue, Store};

/// How often a value that keeps changing under the rekey is read again before it is
/// left for the next run (and counted as skipped).
const ATTEMPTS: usize = 3;

/// What a rekey did.
#[derive(Debug, Default)]
pub struct RekeyReport {
    /// The id of the key everything was re-sealed under.
    pub key_id: String,
    pub client_secrets: u64,
    /// Client secrets from before a tenant's last change of it (kept for a day).
    pub previous_secrets: u64,
    pub tokens: u64,
    pub webhook_secrets: u64,
    /// Values that kept changing under the rekey, still sealed under an old key.
    pub skipped: u64,
    /// Values no key of the ring opens.
    pub failures: Vec<Unopenable>,
}

/// A stored value the ring cannot open: it stays as it is.
#[derive(Debug, thiserror::Error)]
#[error("{owner}: cannot open its {what} sealed under master key {key_id}: {error}")]
pub struct Unopenable {
    /// `tenant <id>` or `webhook <id>`.
    pub owner: String,
    pub what: &'static str,
    pub key_id: String,
    pub error: CryptoError,
}

impl RekeyReport {
    /// One line for the operator: `re-sealed 12 client secrets and 9 tokens under key
    /// 1a2b3c4d; 0 skipped`, and what to do next.
    pub fn summary(&self) -> String {
        let mut line = format!(
            "re-sealed {} client secrets, {} tokens and {} webhook secrets under key {}; {} skipped",
            self.client_secrets, self.tokens, self.webhook_secrets, self.key_id, self.skipped
        );
        if self.previous_secrets > 0 {
            line = line.replacen(
                " client secrets",
                &format!(
                    " client secrets (and {} previous secrets)",
                    self.previous_secrets
                ),
                1,
            );
        }
        if !self.failures.is_empty() {
            line.push_str(&format!("; {} could not be opened", self.failures.len()));
        } else if self.skipped > 0 {
            line.push_str(" (they kept changing: run rekey again before dropping the old keys)");
        } else {
            line.push_str("; every stored value is sealed under it, the old keys can be dropped");
        }
        line
    }
}

/// Re-seals every stored client secret and token not yet under `key`'s current key, then
/// records the counts in the audit trail (actor `cli`, never a secret).
pub async fn rekey(store: &Store, key: &MasterKey) -> Result<RekeyReport, sqlx::Error> {
    let mut report = RekeyReport {
        key_id: key.id().to_owned(),
        ..RekeyReport::default()
    };
    for kind in [
        SealedKind::ClientSecret,
        SealedKind::PreviousSecret,
        SealedKind::Token,
        SealedKind::WebhookSecret,
    ] {
        for value in store.sealed_under_other_keys(kind, key.id()).await? {
            reseal(store, key, value, &mut report).await?;
        }
    }
    let audit = AuditEntry {
        actor: "cli".to_owned(),
        action: "master_key.rekey",
        target: key.id().to_owned(),
        request_id: None,
        details: json!({
            "key_id": report.key_id,
            "client_secrets": report.client_secrets,
            "previous_secrets": report.previous_secrets,
            "tokens": report.tokens,
            "webhook_secrets": report.webhook_secrets,
            "skipped": report.skipped,
            "failed": report.failures.len(),
        }),
    };
    store.record_audit(&audit).await?;
    Ok(report)
}

async fn reseal(
    store: &Store,
    key: &MasterKey,
    value: SealedValue,
    report: &mut RekeyReport,
) -> Result<(), sqlx::Error> {
    let (purpose, what, owner) = match value.kind {
        SealedKind::ClientSecret => (Purpose::ClientSecret, "client secret", "tenant"),
        SealedKind::PreviousSecret => (
            Purpose::PreviousClientSecret,
            "previous client secret",
            "tenant",
        ),
        SealedKind::Token => (Purpose::AccessToken, "token", "tenant"),
        SealedKind::WebhookSecret => (Purpose::WebhookSecret, "signing secret", "webhook"),
    };
    let mut current = Some(value);
    for _ in 0..ATTEMPTS {
        // Gone, or already re-sealed under the current key by whoever changed it.
        let Some(value) = current else { return Ok(()) };
        let plaintext = match key.open(purpose, &value.tenant_id, &value.sealed) {
            Ok(bytes) => SecretSlice::from(bytes),
            Err(error) => {
                report.failures.push(Unopenable {
                    owner: format!("{owner} {}", value.tenant_id),
                    what,
                    key_id: value.sealed.key_id,
                    error,
                });
                return Ok(());
            }
        };
        let sealed = key.seal(purpose, &value.tenant_id, plaintext.expose_secret());
        if store.reseal(&value, &sealed).await? {
            match value.kind {
                SealedKind::ClientSecret => report.client_secrets += 1,
                SealedKind::PreviousSecret => report.previous_secrets += 1,
                SealedKind::Token => report.tokens += 1,
                SealedKind::WebhookSecret => report.webhook_secrets += 1,
            }
            return Ok(());
        }
        current = store.still_sealed_under_other_key(&value, key.id()).await?;
    }
    if current.is_some() {
        report.skipped += 1;
    }
    Ok(())
}
