//! AES-256-GCM sealing of secrets and tokens at rest, bound to their tenant and purpose.
//!
//! Each sealed value is `version (1 byte) || nonce (12 bytes) || ciphertext+tag`, stored
//! next to the id of the master key that sealed it, so that the key can be rotated later
//! and a wrong key is reported as such instead of as corruption.
//!
//! A `MasterKey` is a key ring: the current key, which seals, and any earlier keys
//! (`TOKENVEND_OLD_MASTER_KEYS`), which only open. Opening picks the key by the id stored
//! with the value, so a rotation needs no change anywhere else.

use aes_gcm::aead::{Aead, KeyInit, OsRng, Payload};
use aes_gcm::{AeadCore, Aes256Gcm, Key, Nonce};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use rand::RngCore;
use sha2::{Digest, Sha256};

const ENVELOPE_VERSION: u8 = 1;
const NONCE_LEN: usize = 12;

/// What a sealed value is for; part of the associated data so that a sealed client
/// secret can never be opened as a token (or the other way round).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    ClientSecret,
    /// A tenant's client secret from before its last change, kept for a while as a
    /// fallback (see `domain::PreviousSecret`).
    PreviousClientSecret,
    AccessToken,
    /// A webhook endpoint's signing secret (sealed with the webhook id as the owner).
    WebhookSecret,
}

impl Purpose {
    fn label(self) -> &'static str {
        match self {
            Purpose::ClientSecret => "client_secret",
            Purpose::PreviousClientSecret => "previous_client_secret",
            Purpose::AccessToken => "access_token",
            Purpose::WebhookSecret => "webhook_secret",
        }
    }
}

/// A value sealed under a master key.
#[derive(Clone, PartialEq, Eq)]
pub struct Sealed {
    pub key_id: String,
    pub bytes: Vec<u8>,
}

impl std::fmt::Debug for Sealed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealed")
            .field("key_id", &self.key_id)
            .field("len", &self.bytes.len())
            .finish()
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    #[error(
        "must be the base64 encoding of 32 bytes (generate one with `openssl rand -base64 32`)"
    )]
    Malformed,
    #[error("must not be all zeros (generate one with `openssl rand -base64 32`)")]
    AllZero,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CryptoError {
    /// The value was sealed under a key the ring does not hold (`expected` is the
    /// current key's id).
    #[error(
        "value was sealed with master key {found}, which is neither the configured master \
         key {expected} nor one of the old master keys"
    )]
    WrongKey { expected: String, found: String },
    #[error("sealed value is malformed")]
    Malformed,
    #[error("sealed value failed authentication: it was altered or belongs to another tenant")]
    Tampered,
}

/// The master key ring: the current key seals every secret and token at rest; earlier
/// keys are held for opening values sealed before a rotation.
#[derive(Clone)]
pub struct MasterKey {
    current: RingKey,
    /// Earlier keys, for opening only; never the current key's id.
    old: Vec<RingKey>,
}

/// One AES-256-GCM key of the ring and its public id.
#[derive(Clone)]
struct RingKey {
    cipher: Aes256Gcm,
    id: String,
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MasterKey {{ id: {}, ", self.current.id)?;
        if !self.old.is_empty() {
            let old: Vec<&str> = self.old.iter().map(|k| k.id.as_str()).collect();
            write!(f, "old: [{}], ", old.join(", "))?;
        }
        write!(f, "key: [redacted] }}")
    }
}

impl MasterKey {
    /// Parses the base64 form of `TOKENVEND_MASTER_KEY` (or of one old key).
    pub fn from_base64(encoded: &str) -> Result<Self, KeyError> {
        let bytes = BASE64
            .decode(encoded.trim())
            .map_err(|_| KeyError::Malformed)?;
        let bytes: [u8; 32] = bytes.try_into().map_err(|_| KeyError::Malformed)?;
        Self::from_bytes(bytes)
    }

    pub fn from_bytes(bytes: [u8; 32]) -> Result<Self, KeyError> {
        if bytes.iter().all(|b| *b == 0) {
            return Err(KeyError::AllZero);
        }
        let digest = Sha256::new_with_prefix(b"tokenvend master key id\0")
            .chain_update(bytes)
            .finalize();
        Ok(Self {
            current: RingKey {
                cipher: Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&bytes)),
                id: hex::encode(&digest[..4]),
            },
            old: Vec::new(),
        })
    }

    /// A fresh random key and its base64 form (for writing to the data dir).
    pub fn generate() -> (Self, String) {
        let mut bytes = [0u8; 32];
        OsRng.fill_bytes(&mut bytes);
        let encoded = BASE64.encode(bytes);
        // 32 random bytes are all zero with probability 2^-256.
        let key = Self::from_bytes(bytes).expect("random key is not all zeros");
        (key, encoded)
    }

    /// This ring with `old` keys added for opening (each one's current key; the old
    /// keys of a ring passed in are added too). A key already held is not added again.
    pub fn with_old_keys(mut self, old: impl IntoIterator<Item = MasterKey>) -> Self {
        for ring in old {
            for key in std::iter::once(ring.current).chain(ring.old) {
                if !self.holds(&key.id) {
                    self.old.push(key);
                }
            }
        }
        self
    }

    /// The id of the current key: the one that seals, stored next to each ciphertext.
    pub fn id(&self) -> &str {
        &self.current.id
    }

    /// The ids of every key the ring holds, the current key's first.
    pub fn key_ids(&self) -> impl Iterator<Item = &str> {
        std::iter::once(&self.current)
            .chain(&self.old)
            .map(|k| k.id.as_str())
    }

    /// Whether the ring can open a value sealed under the key `id`.
    pub fn holds(&self, id: &str) -> bool {
        self.key_ids().any(|held| held == id)
    }

    /// Seals under the current key.
    pub fn seal(&self, purpose: Purpose, tenant_id: &str, plaintext: &[u8]) -> Sealed {
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let aad = associated_data(purpose, tenant_id);
        let ciphertext = self
            .current
            .cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: plaintext,
                    aad: &aad,
                },
            )
            // aes-gcm only fails for inputs beyond 64 GiB.
            .expect("AES-GCM encryption of a small value");
        let mut bytes = Vec::with_capacity(1 + NONCE_LEN + ciphertext.len());
        bytes.push(ENVELOPE_VERSION);
        bytes.extend_from_slice(&nonce);
        bytes.extend_from_slice(&ciphertext);
        Sealed {
            key_id: self.current.id.clone(),
            bytes,
        }
    }

    /// Opens a value with the key of the ring that sealed it (named by its key id).
    pub fn open(
        &self,
        purpose: Purpose,
        tenant_id: &str,
        sealed: &Sealed,
    ) -> Result<Vec<u8>, CryptoError> {
        let key = std::iter::once(&self.current)
            .chain(&self.old)
            .find(|k| k.id == sealed.key_id)
            .ok_or_else(|| CryptoError::WrongKey {
                expected: self.current.id.clone(),
                found: sealed.key_id.clone(),
            })?;
        let (version, rest) = sealed.bytes.split_first().ok_or(CryptoError::Malformed)?;
        if *version != ENVELOPE_VERSION || rest.len() < NONCE_LEN + 16 {
            return Err(CryptoError::Malformed);
        }
        let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
        let aad = associated_data(purpose, tenant_id);
        key.cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: &aad,
                },
            )
            .map_err(|_| CryptoError::Tampered)
    }
}

fn associated_data(purpose: Purpose, tenant_id: &str) -> Vec<u8> {
    format!("tokenvend\0{}\0{}", purpose.label(), tenant_id).into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> MasterKey {
        MasterKey::generate().0
    }

    #[test]
    fn sealed_bytes_do_not_contain_the_plaintext() {
        let sealed = key().seal(Purpose::ClientSecret, "acme", b"very-secret-value");
        assert!(!sealed
            .bytes
            .windows(b"very-secret-value".len())
            .any(|w| w == b"very-secret-value"));
    }

    #[test]
    fn sealing_twice_uses_fresh_nonces() {
        let k = key();
        let a = k.seal(Purpose::ClientSecret, "acme", b"same");
        let b = k.seal(Purpose::ClientSecret, "acme", b"same");
        assert_ne!(a.bytes, b.bytes);
    }

    #[test]
    fn a_sealed_value_opens_for_its_own_tenant_and_purpose() {
        let k = key();
        let sealed = k.seal(Purpose::ClientSecret, "acme", b"s3cret");
        assert_eq!(
            k.open(Purpose::ClientSecret, "acme", &sealed).unwrap(),
            b"s3cret"
        );
    }

    #[test]
    fn every_flipped_byte_fails_closed() {
        let k = key();
        let sealed = k.seal(Purpose::ClientSecret, "acme", b"s3cret");
        for i in 0..sealed.bytes.len() {
            let mut bad = sealed.clone();
            bad.bytes[i] ^= 0x01;
            let err = k.open(Purpose::ClientSecret, "acme", &bad).unwrap_err();
            assert!(
                matches!(err, CryptoError::Tampered | CryptoError::Malformed),
                "byte {i}: {err:?}"
            );
        }
    }

    #[test]
    fn a_truncated_value_is_malformed_not_a_panic() {
        let k = key();
        for len in 0..(1 + NONCE_LEN + 16) {
            let bad = Sealed {
                key_id: k.id().to_owned(),
                bytes: vec![ENVELOPE_VERSION; len],
            };
            assert_eq!(
                k.open(Purpose::ClientSecret, "acme", &bad),
                Err(CryptoError::Malformed)
            );
        }
    }

    #[test]
    fn a_value_moved_to_another_tenant_fails() {
        let k = key();
        let sealed = k.seal(Purpose::ClientSecret, "acme", b"s3cret");
        assert_eq!(
            k.open(Purpose::ClientSecret, "globex", &sealed),
            Err(CryptoError::Tampered)
        );
    }

    #[test]
    fn a_secret_cannot_be_opened_as_a_token() {
        let k = key();
        let sealed = k.seal(Purpose::ClientSecret, "acme", b"s3cret");
        assert_eq!(
            k.open(Purpose::AccessToken, "acme", &sealed),
            Err(CryptoError::Tampered)
        );
    }

    #[test]
    fn another_master_key_is_reported_as_a_wrong_key() {
        let sealed = key().seal(Purpose::ClientSecret, "acme", b"s3cret");
        let other = key();
        assert!(matches!(
            other.open(Purpose::ClientSecret, "acme", &sealed),
            Err(CryptoError::WrongKey { .. })
        ));
    }

    #[test]
    fn a_value_sealed_under_an_old_key_opens_with_the_ring_and_new_values_use_the_new_key() {
        let k1 = key();
        let sealed = k1.seal(Purpose::ClientSecret, "acme", b"s3cret");
        let k2 = key();
        let ring = k2.clone().with_old_keys([k1.clone()]);
        assert_eq!(ring.id(), k2.id());
        assert_eq!(
            ring.open(Purpose::ClientSecret, "acme", &sealed).unwrap(),
            b"s3cret"
        );
        let resealed = ring.seal(Purpose::ClientSecret, "acme", b"s3cret");
        assert_eq!(resealed.key_id, k2.id());
        assert_eq!(
            k2.open(Purpose::ClientSecret, "acme", &resealed).unwrap(),
            b"s3cret"
        );
        assert!(ring.holds(k1.id()) && ring.holds(k2.id()));
        assert_eq!(ring.key_ids().collect::<Vec<_>>(), [k2.id(), k1.id()]);
        // The old key still binds the value to its tenant and purpose.
        assert_eq!(
            ring.open(Purpose::AccessToken, "acme", &sealed),
            Err(CryptoError::Tampered)
        );
    }

    #[test]
    fn a_value_under_a_key_the_ring_lacks_fails_naming_that_key() {
        let k1 = key();
        let sealed = k1.seal(Purpose::ClientSecret, "acme", b"s3cret");
        let ring = key().with_old_keys([key()]);
        let err = ring
            .open(Purpose::ClientSecret, "acme", &sealed)
            .unwrap_err();
        assert_eq!(
            err,
            CryptoError::WrongKey {
                expected: ring.id().to_owned(),
                found: k1.id().to_owned(),
            }
        );
        assert!(err.to_string().contains(k1.id()), "{err}");
    }

    #[test]
    fn adding_a_key_the_ring_holds_changes_nothing() {
        let k = key();
        let ring = k.clone().with_old_keys([k.clone(), k.clone()]);
        assert_eq!(ring.key_ids().count(), 1);
        let old = key();
        let ring = k.clone().with_old_keys([old.clone(), old.clone()]);
        assert_eq!(ring.key_ids().count(), 2);
        let shown = format!("{ring:?}");
        assert!(
            shown.contains(old.id()) && shown.contains("[redacted]"),
            "{shown}"
        );
    }

    #[test]
    fn malformed_and_all_zero_master_keys_are_refused() {
        let cases = [
            ("", KeyError::Malformed, "empty"),
            ("not base64!", KeyError::Malformed, "not base64"),
            ("AAAA", KeyError::Malformed, "too short"),
            (
                "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
                KeyError::Malformed,
                "36 bytes",
            ),
            (
                "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
                KeyError::AllZero,
                "all zero",
            ),
        ];
        for (input, expected, why) in cases {
            assert_eq!(
                MasterKey::from_base64(input).unwrap_err(),
                expected,
                "{why}"
            );
        }
    }

    #[test]
    fn the_key_id_is_stable_for_a_key_and_differs_between_keys() {
        let (_, encoded) = MasterKey::generate();
        let a = MasterKey::from_base64(&encoded).unwrap();
        let b = MasterKey::from_base64(&encoded).unwrap();
        assert_eq!(a.id(), b.id());
        assert_ne!(a.id(), key().id());
        assert!(!format!("{a:?}").contains(&encoded));
    }
}
