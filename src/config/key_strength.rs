//! What an operator-chosen admin key must be: random bytes written out, never a phrase.
//!
//! Accepted are at least [`MIN_ADMIN_KEY_BYTES`] random bytes written as base64 (standard
//! or url-safe, padded or not) or hex, and keys in tokenvend's own format
//! (`tv_<id>_<40 letters and digits>`, as `generate_key` and `generate_bootstrap_key`
//! make them). A phrase such as `tokenvend-production-admin-key-please-change` is made of
//! base64 characters too, so the encoded text must also look like random output:
//!
//! - base64 uses both upper- and lower-case letters (random base64 of 32 characters or
//!   more lacks one case less than once in ten million);
//! - enough different characters ([`MIN_DISTINCT_BASE64`], [`MIN_DISTINCT_HEX`]; a random
//!   24-byte key has fewer less than once in a million), so `AAAA…` is refused;
//! - few characters that follow from the ones before (a repeat, the next step of a run
//!   such as `abc`, or a three-character block seen before): at most a third in base64
//!   and tokenvend's keys, half in hex (random keys come nowhere near).

/// The fewest random bytes an admin key must carry.
pub const MIN_ADMIN_KEY_BYTES: usize = 24;
/// The fewest different characters in a base64 key (or a tokenvend key's secret part).
pub const MIN_DISTINCT_BASE64: usize = 16;
/// The fewest different characters in a hex key.
pub const MIN_DISTINCT_HEX: usize = 8;
/// The length of the secret part of tokenvend's own keys.
const TV_SECRET_LEN: usize = 40;

/// Why an admin key is refused, in words that never repeat the key.
pub fn check_admin_key(key: &str) -> Result<(), String> {
    const HOW: &str = "generate one with `openssl rand -base64 32` (or `openssl rand -hex 32`)";
    let bytes = key.as_bytes();
    let random_looking = if let Some(secret) = tokenvend_secret(key) {
        varied(secret, MIN_DISTINCT_BASE64, 3)
    } else if is_hex(key) {
        if key.len() < 2 * MIN_ADMIN_KEY_BYTES {
            return Err(format!(
                "is too short: hex must carry at least {MIN_ADMIN_KEY_BYTES} bytes ({} \
                 digits); {HOW}",
                2 * MIN_ADMIN_KEY_BYTES
            ));
        }
        varied(bytes, MIN_DISTINCT_HEX, 2)
    } else if let Some(decoded_len) = base64_len(key) {
        if decoded_len < MIN_ADMIN_KEY_BYTES {
            return Err(format!(
                "is too short: base64 must carry at least {MIN_ADMIN_KEY_BYTES} bytes (32 \
                 characters); {HOW}"
            ));
        }
        bytes.iter().any(u8::is_ascii_uppercase)
            && bytes.iter().any(u8::is_ascii_lowercase)
            && varied(bytes, MIN_DISTINCT_BASE64, 3)
    } else {
        return Err(format!(
            "must be at least {MIN_ADMIN_KEY_BYTES} random bytes written as base64 or hex \
             (or a key tokenvend generated); {HOW}"
        ));
    };
    if random_looking {
        Ok(())
    } else {
        Err(format!(
            "does not look like random bytes (a phrase, or repeated, sequential or \
             low-variety characters); {HOW}"
        ))
    }
}

/// The secret part of a key in tokenvend's own format, `tv_<id>_<secret>`.
fn tokenvend_secret(key: &str) -> Option<&[u8]> {
    let (id, secret) = key
        .strip_prefix(crate::http::auth::KEY_PREFIX)?
        .split_once('_')?;
    let id_ok = id == crate::http::auth::BOOTSTRAP_KEY_ID
        || (id.len() == 12
            && id
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()));
    let secret_ok =
        secret.len() == TV_SECRET_LEN && secret.bytes().all(|b| b.is_ascii_alphanumeric());
    (id_ok && secret_ok).then_some(secret.as_bytes())
}

/// Hex digits of one case, an even number of them.
fn is_hex(key: &str) -> bool {
    let digits = |upper: bool| {
        key.bytes().all(|b| {
            b.is_ascii_digit()
                || if upper {
                    (b'A'..=b'F').contains(&b)
                } else {
                    (b'a'..=b'f').contains(&b)
                }
        })
    };
    !key.is_empty() && key.len() % 2 == 0 && (digits(false) || digits(true))
}

/// The number of bytes `key` decodes to as base64 (standard or url-safe, one alphabet,
/// padded correctly or not at all), or `None` when it is not base64.
fn base64_len(key: &str) -> Option<usize> {
    let body = key.trim_end_matches('=');
    let padding = key.len() - body.len();
    let standard = body
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/');
    let url_safe = body
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    let tail = body.len() % 4;
    let padding_ok = padding == 0 || (tail != 0 && padding == 4 - tail);
    (!body.is_empty() && (standard || url_safe) && tail != 1 && padding_ok)
        .then_some(body.len() * 3 / 4)
}

/// At least `min_distinct` different characters, and fewer than one in `max_share` that
/// follows from the characters before it.
fn varied(key: &[u8], min_distinct: usize, max_share: usize) -> bool {
    let mut seen = [false; 256];
    for &b in key {
        seen[usize::from(b)] = true;
    }
    let distinct = seen.iter().filter(|s| **s).count();
    let predictable = (0..key.len()).filter(|&i| predictable(key, i)).count();
    distinct >= min_distinct && predictable * max_share < key.len()
}

/// Whether `key[i]` follows from what came before: a repeat of the previous character,
/// the next step of a run (`abc`, `2468`, `zyx`), or the end of a three-character block
/// that already appeared.
fn predictable(key: &[u8], i: usize) -> bool {
    if i >= 1 && key[i] == key[i - 1] {
        return true;
    }
    if i >= 2 {
        let step = i16::from(key[i]) - i16::from(key[i - 1]);
        if step.abs() <= 3 && step == i16::from(key[i - 1]) - i16::from(key[i - 2]) {
            return true;
        }
        let block = &key[i - 2..=i];
        if key[..i].windows(3).any(|w| w == block) {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use rand::RngCore;
    use secrecy::ExposeSecret;

    #[test]
    fn phrases_short_and_low_variety_keys_are_refused() {
        let cases = [
            (
                "tokenvend-production-admin-key-please-change".to_owned(),
                "a phrase in base64's url-safe alphabet",
            ),
            (
                "correct-horse-battery-staple-correct-horse".to_owned(),
                "a phrase",
            ),
            ("a".repeat(40), "one character repeated"),
            ("A".repeat(43) + "=", "AAAA… base64"),
            ("ab".repeat(24), "two characters alternating"),
            ("password1234".repeat(4), "a repeated word"),
            ("Xk9mQ2".repeat(8), "a repeated random-looking block"),
            (
                "abcdefghijklmnopqrstuvwxyz0123456789".to_owned(),
                "the alphabet in order",
            ),
            ("deadbeef".repeat(8), "repeated hex"),
            ("0123456789abcdef".repeat(4), "hex digits in order"),
            ("00".repeat(32), "zero bytes in hex"),
            (hex::encode([7u8; 16]), "too few hex bytes"),
            ("short-but-random-Q7".to_owned(), "too short"),
            (
                "Zr8Qm2XkP4wLs9TfVb7nHc3JyGd6Ea".to_owned(),
                "22 bytes of base64",
            ),
            (format!("{} {}", "x".repeat(20), "y".repeat(20)), "spaces"),
            (
                "Zr8Qm2XkP4wLs9TfVb7n+c3JyGd6Ea5U_abc".to_owned(),
                "two base64 alphabets mixed",
            ),
            (
                format!("tv_bootstrap_{}", "a1".repeat(20)),
                "tokenvend's format, low variety",
            ),
            (
                "9Vq2LrXe7TzKwPa4sYhN3mBdFgJ6cU8x=".to_owned(),
                "bad padding",
            ),
        ];
        for (key, why) in cases {
            assert!(check_admin_key(&key).is_err(), "{why}: {key} was accepted");
        }
    }

    #[test]
    fn random_keys_of_the_documented_forms_are_accepted() {
        let engines = [
            base64::engine::general_purpose::STANDARD,
            base64::engine::general_purpose::STANDARD_NO_PAD,
            base64::engine::general_purpose::URL_SAFE,
            base64::engine::general_purpose::URL_SAFE_NO_PAD,
        ];
        for _ in 0..200 {
            let mut bytes = [0u8; 32];
            rand::thread_rng().fill_bytes(&mut bytes);
            let mut keys = vec![
                hex::encode(bytes),
                hex::encode(&bytes[..24]),
                hex::encode_upper(&bytes[..24]),
                crate::http::auth::generate_key()
                    .key
                    .expose_secret()
                    .to_owned(),
                crate::http::auth::generate_bootstrap_key()
                    .expose_secret()
                    .to_owned(),
            ];
            for engine in &engines {
                keys.push(engine.encode(bytes));
                keys.push(engine.encode(&bytes[..24]));
            }
            for key in keys {
                check_admin_key(&key).unwrap_or_else(|e| panic!("{key}: {e}"));
            }
        }
    }

    #[test]
    fn the_refusal_never_repeats_the_key_and_says_how_to_make_one() {
        for key in [
            "password1234".repeat(4),
            "tokenvend-production-admin-key-please-change".to_owned(),
            "not base64 at all!".to_owned(),
        ] {
            let message = check_admin_key(&key).unwrap_err();
            assert!(!message.contains("password"), "{message}");
            assert!(!message.contains("please"), "{message}");
            assert!(!message.contains("base64 at all"), "{message}");
            assert!(message.contains("openssl rand -base64 32"), "{message}");
        }
    }
}
