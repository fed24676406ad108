//! Signing per the Standard Webhooks specification (with its own `standardwebhooks`
//! crate): `webhook-signature: v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`,
//! keyed with the bytes the secret `whsec_<base64>` encodes.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};

/// How many random bytes a signing secret holds (the specification asks for 24 to 64).
const SECRET_BYTES: usize = 32;

/// A fresh signing secret, `whsec_<base64 of 32 random bytes>`.
pub fn generate_secret() -> SecretString {
    let mut bytes = [0u8; SECRET_BYTES];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    SecretString::from(format!("whsec_{}", BASE64.encode(bytes)))
}

/// The three headers of one delivery attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedHeaders {
    pub id: String,
    pub timestamp: i64,
    pub signature: String,
}

#[derive(Debug, thiserror::Error)]
#[error("the stored webhook secret is malformed")]
pub struct MalformedSecret;

/// Signs `body` as the message `id` sent at `timestamp` (Unix seconds).
pub fn sign(
    secret: &SecretString,
    id: &str,
    timestamp: i64,
    body: &str,
) -> Result<SignedHeaders, MalformedSecret> {
    let webhook =
        standardwebhooks::Webhook::new(secret.expose_secret()).map_err(|_| MalformedSecret)?;
    let signature = webhook
        .sign(id, timestamp, body.as_bytes())
        .map_err(|_| MalformedSecret)?;
    Ok(SignedHeaders {
        id: id.to_owned(),
        timestamp,
        signature,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_is_whsec_and_32_random_bytes() {
        let secret = generate_secret();
        let encoded = secret.expose_secret().strip_prefix("whsec_").unwrap();
        assert_eq!(BASE64.decode(encoded).unwrap().len(), 32);
        assert_ne!(secret.expose_secret(), generate_secret().expose_secret());
    }

    #[test]
    fn the_signature_matches_the_specification_example() {
        // The example of the Standard Webhooks specification.
        let secret = SecretString::from("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_owned());
        let body = r#"{"test": 2432232314}"#;
        let signed = sign(&secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body).unwrap();
        assert_eq!(
            signed.signature,
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }
}
