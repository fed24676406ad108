//! Caller keys: generation, hashing, the in-memory key ring and the `Caller` extractor.
//! The extractors take the key ring from any state through `FromRef`.
//!
//! A key looks like `tv_<id>_<secret>`: the `tv_` prefix lets secret scanners spot a
//! leaked key, the id finds the key's entry without a scan, and the secret carries about
//! 238 random bits. Only the SHA-256 of a key is stored; for long random keys a fast hash is
//! right (there is nothing to brute-force), and hashes are compared in constant time.

use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::Arc;

use arc_swap::ArcSwap;
use axum::extract::{FromRef, FromRequestParts};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use rand::distributions::{Alphanumeric, DistString};
use rand::rngs::OsRng;
use rand::Rng;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::domain::{Scope, ScopeSet, TenantAccess, TenantUid};
use crate::error::ApiError;
use crate::store::ApiKeyRecord;

pub const KEY_PREFIX: &str = "tv_";
const ID_LEN: usize = 12;
const SECRET_LEN: usize = 40;
/// The id under which the bootstrap admin key acts (and appears in the audit trail).
pub const BOOTSTRAP_KEY_ID: &str = "bootstrap";

pub type KeyHash = [u8; 32];

pub fn hash_key(key: &str) -> KeyHash {
    Sha256::digest(key.as_bytes()).into()
}

/// A newly generated key: shown once, then only its hash is kept.
pub struct GeneratedKey {
    pub id: String,
    pub key: SecretString,
    pub hash: KeyHash,
}

pub fn generate_key() -> GeneratedKey {
    const ID_CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let id: String = (0..ID_LEN)
        .map(|_| ID_CHARS[OsRng.gen_range(0..ID_CHARS.len())] as char)
        .collect();
    let secret = Alphanumeric.sample_string(&mut OsRng, SECRET_LEN);
    let key = format!("{KEY_PREFIX}{id}_{secret}");
    GeneratedKey {
        hash: hash_key(&key),
        id,
        key: SecretString::from(key),
    }
}

/// A fresh bootstrap admin key, for writing to the data dir.
pub fn generate_bootstrap_key() -> SecretString {
    let secret = Alphanumeric.sample_string(&mut OsRng, SECRET_LEN);
    SecretString::from(format!("{KEY_PREFIX}{BOOTSTRAP_KEY_ID}_{secret}"))
}

fn key_id_of(presented: &str) -> Option<&str> {
    presented
        .strip_prefix(KEY_PREFIX)?
        .split_once('_')
        .map(|(id, _)| id)
}

/// A caller key as the service knows it.
#[derive(Debug, Clone)]
pub struct KeyEntry {
    pub id: String,
    pub scopes: ScopeSet,
    hash: KeyHash,
}

impl KeyEntry {
    pub fn new(id: String, scopes: ScopeSet, hash: KeyHash) -> Self {
        Self { id, scopes, hash }
    }

    pub fn from_record(record: &ApiKeyRecord) -> Result<Self, String> {
        let hash: KeyHash = record
            .key_hash
            .as_slice()
            .try_into()
            .map_err(|_| "stored key hash is not 32 bytes".to_owned())?;
        let scopes = ScopeSet::parse_stored(&record.scopes)?;
        Ok(Self::new(record.id.clone(), scopes, hash))
    }
}

/// Every valid caller key, held in memory so that authentication never touches the store.
/// Reads are lock-free; the rare writes swap in a new map.
pub struct KeyRing {
    keys: ArcSwap<HashMap<String, Arc<KeyEntry>>>,
    bootstrap: Option<Arc<KeyEntry>>,
}

impl KeyRing {
    pub fn new(bootstrap_key: &SecretString) -> Self {
        Self {
            keys: ArcSwap::default(),
            bootstrap: Some(Arc::new(KeyEntry::new(
                BOOTSTRAP_KEY_ID.to_owned(),
                ScopeSet::new([Scope::Admin]),
                hash_key(bootstrap_key.expose_secret()),
            ))),
        }
    }

    /// A ring of stored keys only (`TOKENVEND_BOOTSTRAP_ADMIN=disabled`).
    pub fn without_bootstrap() -> Self {
        Self {
            keys: ArcSwap::default(),
            bootstrap: None,
        }
    }

    /// Replaces the whole ring with the stored keys; unreadable rows are skipped and logged.
    pub fn replace_all(&self, records: &[ApiKeyRecord]) {
        let mut map = HashMap::with_capacity(records.len());
        for record in records {
            match KeyEntry::from_record(record) {
                Ok(entry) => {
                    map.insert(entry.id.clone(), Arc::new(entry));
                }
                Err(error) => {
                    tracing::warn!(key_id = %record.id, %error, "skipping unreadable caller key")
                }
            }
        }
        self.keys.store(Arc::new(map));
    }

    pub fn insert(&self, entry: KeyEntry) {
        let entry = Arc::new(entry);
        self.keys.rcu(|keys| {
            let mut keys = HashMap::clone(keys);
            keys.insert(entry.id.clone(), entry.clone());
            keys
        });
    }

    pub fn remove(&self, id: &str) {
        self.keys.rcu(|keys| {
            let mut keys = HashMap::clone(keys);
            keys.remove(id);
            keys
        });
    }

    pub fn authenticate(&self, presented: &str) -> Option<Arc<KeyEntry>> {
        let hash = hash_key(presented);
        let keys = self.keys.load();
        let candidate = key_id_of(presented)
            .and_then(|id| keys.get(id))
            .or(self.bootstrap.as_ref())?;
        bool::from(candidate.hash.ct_eq(&hash)).then(|| candidate.clone())
    }
}

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub struct Caller(pub Arc<KeyEntry>);

impl Caller {
    pub fn id(&self) -> &str {
        &self.0.id
    }

    /// 403 unless the key holds `scope`.
    pub fn require(&self, scope: Scope) -> Result<(), ApiError> {
        if self.0.scopes.allows(&scope) {
            Ok(())
        } else {
            Err(ApiError::Forbidden {
                needed: scope.to_string(),
            })
        }
    }

    /// 403 for a key without token scope, 404 (as for an unknown tenant) for a key whose
    /// token scope covers other tenants only.
    /// `current` is the identity of the tenant holding the id now, if any.
    pub fn require_token_access(
        &self,
        tenant: &str,
        current: Option<TenantUid>,
    ) -> Result<(), ApiError> {
        match self.0.scopes.token_access(tenant, current) {
            TenantAccess::Granted => Ok(()),
            TenantAccess::Hidden => Err(ApiError::TenantNotFound),
            TenantAccess::Forbidden => Err(ApiError::Forbidden {
                needed: format!("token:{tenant}"),
            }),
        }
    }
}

/// A scope an endpoint needs, checked before the request body is read.
pub trait RequiredScope {
    fn scope() -> Scope;
}

macro_rules! required_scopes {
    ($($marker:ident => $scope:expr),* $(,)?) => {
        $(
            #[doc = concat!("Marker for the `", stringify!($marker), "` scope.")]
            pub struct $marker;
            impl RequiredScope for $marker {
                fn scope() -> Scope {
                    $scope
                }
            }
        )*
    };
}

required_scopes! {
    Admin => Scope::Admin,
    TenantsRead => Scope::TenantsRead,
    TenantsWrite => Scope::TenantsWrite,
    MetricsRead => Scope::Metrics,
}

/// A caller holding scope `R`: 401 without a valid key, 403 without the scope, before any
/// body or query is parsed.
pub struct Authorized<R>(pub Caller, pub PhantomData<R>);

impl<R, S> FromRequestParts<S> for Authorized<R>
where
    R: RequiredScope,
    Arc<KeyRing>: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let caller = Caller::from_request_parts(parts, state).await?;
        caller.require(R::scope())?;
        Ok(Authorized(caller, PhantomData))
    }
}

impl<S> FromRequestParts<S> for Caller
where
    Arc<KeyRing>: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let header = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .ok_or(ApiError::MissingCredentials)?;
        let (scheme, key) = header.split_once(' ').ok_or(ApiError::MissingCredentials)?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(ApiError::MissingCredentials);
        }
        let entry = Arc::<KeyRing>::from_ref(state)
            .authenticate(key.trim())
            .ok_or(ApiError::InvalidCredentials)?;
        tracing::Span::current().record("caller", entry.id.as_str());
        Ok(Caller(entry))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring() -> (KeyRing, SecretString) {
        let bootstrap = generate_bootstrap_key();
        (KeyRing::new(&bootstrap), bootstrap)
    }

    #[test]
    fn generated_keys_are_recognisable_and_unique() {
        let a = generate_key();
        let b = generate_key();
        assert!(a.key.expose_secret().starts_with("tv_"));
        assert_eq!(key_id_of(a.key.expose_secret()), Some(a.id.as_str()));
        assert_ne!(a.key.expose_secret(), b.key.expose_secret());
        assert!(a.key.expose_secret().len() >= 3 + ID_LEN + 1 + SECRET_LEN);
    }

    #[test]
    fn a_known_key_authenticates_and_a_revoked_one_does_not() {
        let (ring, _) = ring();
        let key = generate_key();
        ring.insert(KeyEntry::new(
            key.id.clone(),
            ScopeSet::new([Scope::TenantsRead]),
            key.hash,
        ));
        let entry = ring
            .authenticate(key.key.expose_secret())
            .expect("valid key");
        assert_eq!(entry.id, key.id);
        ring.remove(&key.id);
        assert!(ring.authenticate(key.key.expose_secret()).is_none());
    }

    #[test]
    fn a_key_with_a_known_id_but_wrong_secret_is_refused() {
        let (ring, _) = ring();
        let key = generate_key();
        ring.insert(KeyEntry::new(key.id.clone(), ScopeSet::default(), key.hash));
        let forged = format!("tv_{}_{}", key.id, "x".repeat(SECRET_LEN));
        assert!(ring.authenticate(&forged).is_none());
    }

    #[test]
    fn the_bootstrap_key_is_admin_whatever_its_form() {
        let custom = SecretString::from("an-operator-chosen-admin-key-of-40-chars!".to_owned());
        let ring = KeyRing::new(&custom);
        let entry = ring
            .authenticate(custom.expose_secret())
            .expect("bootstrap");
        assert_eq!(entry.id, BOOTSTRAP_KEY_ID);
        assert!(entry.scopes.allows(&Scope::Admin));
        assert!(ring
            .authenticate("an-operator-chosen-admin-key-of-40-chars?")
            .is_none());
        assert!(ring.authenticate("").is_none());
    }
}
