//! How much randomness an operator-chosen admin key carries, estimated conservatively, so
//! that `TOKENVEND_ADMIN_KEY=aaaa…` or a repeated word is refused at start-up.
//!
//! No dictionary is consulted (a well-known crate such as zxcvbn rates a truly random
//! 32-character key below 128 bits, since it assumes ten symbols per unknown character):
//! the estimate counts only the characters an attacker could not predict from the ones
//! before them, each worth log2 of the number of distinct characters in the key. That
//! undercounts a random key slightly (a 44-character base64 key scores about 210 bits)
//! and gives nothing for repeats, runs and repeated blocks.

/// The fewest estimated bits an admin key must carry.
pub const MIN_ADMIN_KEY_BITS: f64 = 128.0;
/// The shortest admin key accepted.
pub const MIN_ADMIN_KEY_LEN: usize = 32;

/// Why an admin key is refused, in words that never repeat the key.
pub fn check_admin_key(key: &str) -> Result<(), String> {
    if key.len() < MIN_ADMIN_KEY_LEN {
        return Err(format!("must be at least {MIN_ADMIN_KEY_LEN} characters"));
    }
    if key.chars().any(|c| !c.is_ascii_graphic()) {
        return Err("must be printable ASCII without spaces".to_owned());
    }
    let bits = estimated_bits(key.as_bytes());
    if bits < MIN_ADMIN_KEY_BITS {
        return Err(format!(
            "is too predictable (about {bits:.0} bits of randomness, at least \
             {MIN_ADMIN_KEY_BITS:.0} needed: repeated, sequential or low-variety characters); \
             generate one with `openssl rand -base64 32`"
        ));
    }
    Ok(())
}

/// A lower estimate of the bits of randomness in `key`.
pub fn estimated_bits(key: &[u8]) -> f64 {
    let mut seen = [false; 256];
    for &b in key {
        seen[usize::from(b)] = true;
    }
    let distinct = seen.iter().filter(|s| **s).count();
    if distinct < 2 {
        return 0.0;
    }
    let unpredictable = (0..key.len()).filter(|&i| !predictable(key, i)).count();
    // Both counts are far below 2^52, so the conversions are exact.
    unpredictable as f64 * (distinct as f64).log2()
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

    #[test]
    fn weak_keys_are_refused_whatever_their_length() {
        let cases = [
            ("a".repeat(40), "one character repeated"),
            ("ab".repeat(24), "two characters alternating"),
            ("password1234".repeat(4), "a repeated word"),
            ("Xk9#mQ2!".repeat(6), "a repeated random-looking block"),
            (
                "abcdefghijklmnopqrstuvwxyz0123456789".to_owned(),
                "the alphabet in order",
            ),
            ("01".repeat(20) + "10".repeat(20).as_str(), "binary digits"),
            ("short-but-random-Q7".to_owned(), "too short"),
            (format!("{} {}", "x".repeat(20), "y".repeat(20)), "spaces"),
        ];
        for (key, why) in cases {
            assert!(check_admin_key(&key).is_err(), "{why}: {key} was accepted");
        }
    }

    #[test]
    fn random_keys_of_the_documented_forms_are_accepted() {
        for _ in 0..200 {
            let mut bytes = [0u8; 32];
            rand::thread_rng().fill_bytes(&mut bytes);
            let base64 = base64::engine::general_purpose::STANDARD.encode(bytes);
            let hex = hex::encode(&bytes[..24]);
            for key in [base64, hex] {
                check_admin_key(&key).unwrap_or_else(|e| panic!("{key}: {e}"));
            }
        }
    }

    #[test]
    fn the_refusal_never_repeats_the_key() {
        let key = "password1234".repeat(4);
        let message = check_admin_key(&key).unwrap_err();
        assert!(!message.contains("password"), "{message}");
    }
}
