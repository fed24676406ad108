//! The `TokenStore` over the real store: tokens sealed under the master key on the way
//! in, opened on the way out, and the fleet's refresh lock on PostgreSQL.

use std::sync::Arc;
use std::time::Duration;

use futures::future::{BoxFuture, FutureExt};
use secrecy::SecretString;

use chrono::{DateTime, Utc};

use super::budget::{BudgetRule, Take};
use super::port::{
    RefreshGuard, StoreFault, StoredPage, StoredToken, StoredVersion, TenantKey, TokenStore,
};
use super::token::HeldToken;
use crate::crypto::{MasterKey, Purpose, Sealed};
use crate::domain::{TenantId, TenantUid};
use crate::store::{self, BudgetAnswer, RefreshLock, Store, TokenRecord};

pub struct SealedTokenStore {
    store: Store,
    master_key: Arc<MasterKey>,
    /// The serving margin restored tokens are rebuilt with.
    skew: Duration,
}

impl SealedTokenStore {
    pub fn new(store: Store, master_key: Arc<MasterKey>, skew: Duration) -> Self {
        Self {
            store,
            master_key,
            skew,
        }
    }

    /// A stored row as a token; `None` for a row that names no valid tenant.
    fn open(master_key: &MasterKey, skew: Duration, record: TokenRecord) -> Option<StoredToken> {
        let tenant_id = TenantId::parse(&record.tenant_id).ok()?;
        let tenant_uid = TenantUid::parse(&record.tenant_uid).ok()?;
        let sealed = Sealed {
            key_id: record.key_id,
            bytes: record.ciphertext,
        };
        let token = master_key
            .open(Purpose::AccessToken, tenant_id.as_str(), &sealed)
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .and_then(|token| {
                HeldToken::restore(
                    SecretString::from(token),
                    record.token_type,
                    record.scope,
                    record.fetched_at,
                    record.expires_at,
                    skew,
                )
            });
        Some(StoredToken {
            tenant_id,
            tenant_uid,
            token,
        })
    }
}

/// The token as a store row, sealed under the master key.
fn seal(master_key: &MasterKey, tenant: &TenantKey, token: &HeldToken) -> TokenRecord {
    let sealed = master_key.seal(
        Purpose::AccessToken,
        tenant.id.as_str(),
        token.expose_token().as_bytes(),
    );
    TokenRecord {
        tenant_id: tenant.id.to_string(),
        tenant_uid: tenant.uid.to_string(),
        key_id: sealed.key_id,
        ciphertext: sealed.bytes,
        token_type: token.token_type.clone(),
        scope: token.scope.clone(),
        fetched_at: token.fetched_at,
        expires_at: token.expires_at,
    }
}

/// `fault`, knowing whether the pool the step used had all its connections in use: a pool
/// timeout is then this replica's own load, not an unreachable database.
fn fault_in(all_in_use: bool) -> impl FnOnce(sqlx::Error) -> StoreFault {
    move |error| match error {
        sqlx::Error::PoolTimedOut if all_in_use => StoreFault::Busy,
        error => fault(error),
    }
}

fn fault(error: sqlx::Error) -> StoreFault {
    if store::is_lock_timeout(&error) {
        StoreFault::LockTimeout
    } else if store::is_unavailable(&error) {
        StoreFault::Unavailable(error.to_string())
    } else {
        StoreFault::Other(error.to_string())
    }
}

impl TokenStore for SealedTokenStore {
    fn lock<'a>(
        &'a self,
        tenant: &'a TenantKey,
        wait: Duration,
    ) -> BoxFuture<'a, Result<Option<Box<dyn RefreshGuard>>, StoreFault>> {
        async move {
            let lock = self
                .store
                .refresh_lock(&tenant.id, tenant.uid, wait)
                .await
                .map_err(|e| fault_in(self.store.refresh_locks_all_in_use())(e))?;
            Ok(lock.map(|lock| {
                Box::new(SealedGuard {
                    lock,
                    tenant: tenant.clone(),
                    master_key: self.master_key.clone(),
                    skew: self.skew,
                }) as Box<dyn RefreshGuard>
            }))
        }
        .boxed()
    }

    fn save<'a>(
        &'a self,
        tenant: &'a TenantKey,
        token: &'a HeldToken,
    ) -> BoxFuture<'a, Result<bool, StoreFault>> {
        let record = seal(&self.master_key, tenant, token);
        async move {
            self.store
                .save_token(&record, tenant.credentials_version)
                .await
                .map_err(fault)
        }
        .boxed()
    }

    fn forget<'a>(
        &'a self,
        tenant: &'a TenantKey,
        token: &'a HeldToken,
    ) -> BoxFuture<'a, Result<bool, StoreFault>> {
        async move {
            self.store
                .invalidate_token(&tenant.id, tenant.uid, token.fetched_at, &token.fingerprint)
                .await
                .map_err(fault)
        }
        .boxed()
    }

    fn stored<'a>(
        &'a self,
        tenant: &'a TenantId,
    ) -> BoxFuture<'a, Result<Option<StoredToken>, StoreFault>> {
        async move {
            let record = self.store.get_token(tenant).await.map_err(fault)?;
            Ok(record.and_then(|r| Self::open(&self.master_key, self.skew, r)))
        }
        .boxed()
    }

    fn page<'a>(
        &'a self,
        after: &'a str,
        limit: usize,
    ) -> BoxFuture<'a, Result<StoredPage, StoreFault>> {
        async move {
            let limit_sql = i64::try_from(limit).unwrap_or(i64::MAX);
            let records = self
                .store
                .list_tokens_page(after, limit_sql)
                .await
                .map_err(fault)?;
            let full = records.len() >= limit;
            let last = records.last().map(|r| r.tenant_id.clone());
            // Opened here, on the task that adopts them: a page is a few milliseconds of
            // work, and opening tokens on other threads would leave the allocator's
            // per-thread caches of each of those threads partly used (more memory after
            // a restart).
            let tokens = records
                .into_iter()
                .filter_map(|r| Self::open(&self.master_key, self.skew, r))
                .collect();
            Ok(StoredPage { tokens, last, full })
        }
        .boxed()
    }

    fn versions(&self) -> BoxFuture<'_, Result<Vec<StoredVersion>, StoreFault>> {
        async move {
            let rows = self.store.list_token_versions().await.map_err(fault)?;
            Ok(rows
                .into_iter()
                .filter_map(|row| {
                    Some(StoredVersion {
                        tenant_id: TenantId::parse(&row.tenant_id).ok()?,
                        tenant_uid: TenantUid::parse(&row.tenant_uid).ok()?,
                        fetched_at: row.fetched_at,
                        expires_at: row.expires_at,
                    })
                })
                .collect())
        }
        .boxed()
    }

    fn take_budget<'a>(
        &'a self,
        host: &'a str,
        rule: BudgetRule,
        floor: f64,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<Option<Take>, StoreFault>> {
        async move {
            let answer = self
                .store
                .take_upstream_budget(host, rule.capacity, rule.per_second, floor, now)
                .await
                .map_err(|e| fault_in(self.store.queries_all_in_use())(e))?;
            Ok(answer.map(|answer| match answer {
                BudgetAnswer::Taken(level) => Take::Granted { level },
                BudgetAnswer::Short(level) => Take::Short { level },
            }))
        }
        .boxed()
    }

    fn verify_refused_until<'a>(
        &'a self,
        refusal: &'a str,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<Option<DateTime<Utc>>, StoreFault>> {
        async move {
            let until = self.store.verify_refused_until(refusal, now).await;
            until.map_err(fault)
        }
        .boxed()
    }

    fn refuse_verify<'a>(
        &'a self,
        refusal: &'a str,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<(), StoreFault>> {
        async move {
            let stored = self.store.refuse_verify(refusal, until, now).await;
            stored.map_err(fault)
        }
        .boxed()
    }
}

struct SealedGuard {
    lock: RefreshLock,
    tenant: TenantKey,
    master_key: Arc<MasterKey>,
    skew: Duration,
}

impl RefreshGuard for SealedGuard {
    fn stored(&mut self) -> BoxFuture<'_, Result<Option<StoredToken>, StoreFault>> {
        async move {
            let record = self.lock.stored_token().await.map_err(fault)?;
            Ok(record.and_then(|r| SealedTokenStore::open(&self.master_key, self.skew, r)))
        }
        .boxed()
    }

    fn save_and_release<'a>(
        self: Box<Self>,
        token: &'a HeldToken,
    ) -> BoxFuture<'a, Result<bool, StoreFault>> {
        let record = seal(&self.master_key, &self.tenant, token);
        let version = self.tenant.credentials_version;
        async move {
            self.lock
                .save_and_release(&record, version)
                .await
                .map_err(fault)
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pool_timeout_is_busy_only_when_every_connection_is_in_use() {
        assert!(matches!(
            fault_in(true)(sqlx::Error::PoolTimedOut),
            StoreFault::Busy
        ));
        // With connections missing, the pool could not open one: the database is down
        // (sqlx retries a refused connection until the acquire timeout).
        assert!(matches!(
            fault_in(false)(sqlx::Error::PoolTimedOut),
            StoreFault::Unavailable(_)
        ));
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert!(matches!(
            fault(sqlx::Error::Io(refused)),
            StoreFault::Unavailable(_)
        ));
    }
}
