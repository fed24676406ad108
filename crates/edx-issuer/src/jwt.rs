//! The issuer's signing key, the JWTs it signs with edX's claims, and the JWKS document
//! that publishes the key's public half.

use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// The issuer's RSA signing key (PKCS#1 PEM, 2048 bits).
///
/// This is a PUBLIC TEST KEY for the local issuer only. It is committed to the repository on
/// purpose and never protects anything: a token it signs proves nothing outside tests.
/// Builds without tokenvend's `demo` feature do not contain this crate, and so not this key.
const SIGNING_KEY_PEM: &str = include_str!("test_key.pem");

/// The `kid` of the signing key, in every JWT header and in the JWKS.
pub const KEY_ID: &str = "tokenvend-local-issuer";

/// The `aud` claim edX puts in its JWTs by default.
pub const AUDIENCE: &str = "lms-key";

/// RSA modulus of [`SIGNING_KEY_PEM`], base64url without padding (checked by a test).
pub(crate) const JWK_N: &str = "1VkJ_H2ZTajzdbVYyAnCQ_KTcAWSTAnsh-tWkckkw5-Yyelwh1QAy_C_bZTzhxFg2vxR4gxwf1Bt6MviFailZcoUXkv9PDxvAlLwoAUaZlu8Axuqg0IuShOCQ9cczUpQllBgmIePK5z2Ibkq_gqxadqfm7eCncwbwIq6qO-sAlpFMz759UEyl715E7_1qnZQYXFh8fYqG4rZ1gp001DgcvrqWNjz2isodkVjowmeytirOW0HrA4j3WTjVD4qSAvnLtASBAwsWGzz3V29GsBysjSP-nxzhqXF5_-hTGSZK2bjppTrTLYN8NsOzh6tebTuyxigz4iQUvWfFETBlvOdbQ";

/// RSA public exponent of [`SIGNING_KEY_PEM`] (65537), base64url without padding.
pub(crate) const JWK_E: &str = "AQAB";

/// The `kid` of the decoy key, published before the signing key when
/// [`KeyPublishing::decoy_key_first`] is on.
pub const DECOY_KEY_ID: &str = "tokenvend-local-issuer-retired";

/// RSA modulus of a 2048-bit key that signs nothing (its private half was thrown away):
/// the retired key a JWKS still lists during a rotation.
const DECOY_JWK_N: &str = "piXGfAgdDhhXUupCGiGTI5q_mrUipzLteNW6TOShbu3Xkfifw5RExdCGcO8M8hg5yW_3_XhGe9cO7JQljk2H2dGZCzDAErDX8_mHuj9JzDJcmeJddUoWUsJSXHVzQyDvodrLrvQKuG8lPoUtALrciaU5s7PLhlgYm3KTHuKsjlllS6aOlo9GVMAxKsJK6qie2rUCKTULM8LLGOg6e57FSfSRKt_k7BpU4EhiEmDJobRKmcoAlBD0i66HSzft_Gcg9z7DwwJZoNerBuQoUtcrFJcOm-4Dizmz0FwVJAId8N2eVux4erYqfKTwKajofCkucdVEISue_FXQ_Be5iyyJ0w";

/// How the issuer publishes its key and names it in the JWTs it signs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KeyPublishing {
    /// The JWKS lists a decoy RSA key before the signing key, as edX's does while a key is
    /// being rotated.
    pub decoy_key_first: bool,
    /// JWT headers carry no `kid`, as edX's do unless the LMS turns it on.
    pub omit_kid: bool,
}

/// The JWT `version` claim edX currently sends.
const JWT_VERSION: &str = "1.2.0";

/// The parsed signing key.
pub(crate) fn signing_key() -> EncodingKey {
    // The PEM is a constant compiled into the binary, and a test parses it: failing here
    // is a build defect, not bad input.
    #[allow(clippy::expect_used)]
    EncodingKey::from_rsa_pem(SIGNING_KEY_PEM.as_bytes())
        .expect("the embedded issuer test key is a valid RSA PEM")
}

/// The JWKS document published at `GET /oauth2/jwks.json`.
pub(crate) fn jwks(publishing: KeyPublishing) -> Value {
    let key = |kid: &str, n: &str| json!({"kty": "RSA", "use": "sig", "alg": "RS256", "kid": kid, "n": n, "e": JWK_E});
    let mut keys = Vec::new();
    if publishing.decoy_key_first {
        keys.push(key(DECOY_KEY_ID, DECOY_JWK_N));
    }
    keys.push(key(KEY_ID, JWK_N));
    json!({ "keys": keys })
}

/// The JWT claims edX puts in a client-credentials token.
#[derive(Serialize)]
struct Claims<'a> {
    iss: String,
    aud: &'static str,
    iat: i64,
    exp: i64,
    sub: String,
    preferred_username: String,
    scopes: Vec<&'a str>,
    version: &'static str,
    filters: [&'static str; 0],
    is_restricted: bool,
    email_verified: bool,
    grant_type: &'static str,
    jti: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    email: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    administrator: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user_id: Option<u64>,
}

/// What one signed token says: who asked, through which host, for which scopes, from
/// when (`iat`, seconds since the epoch) and for how long.
pub(crate) struct Grant<'a> {
    pub client_id: &'a str,
    pub host: &'a str,
    pub scopes: &'a [&'a str],
    pub iat: i64,
    pub lifetime: Duration,
}

/// An RS256 JWT with edX's claims for `grant`, `kid` set to [`KEY_ID`] unless
/// `publishing` omits it.
pub(crate) fn sign(
    key: &EncodingKey,
    publishing: KeyPublishing,
    grant: &Grant<'_>,
) -> jsonwebtoken::errors::Result<String> {
    let Grant {
        client_id,
        host,
        scopes,
        iat,
        lifetime,
    } = *grant;
    let lifetime = i64::try_from(lifetime.as_secs()).unwrap_or(i64::MAX);
    let username = format!("{client_id}-worker");
    let has = |scope: &str| scopes.contains(&scope);
    let claims = Claims {
        iss: format!("http://{host}/oauth2"),
        aud: AUDIENCE,
        iat,
        exp: iat.saturating_add(lifetime),
        sub: stable_subject(client_id),
        scopes: scopes.to_vec(),
        version: JWT_VERSION,
        filters: [],
        is_restricted: false,
        email_verified: false,
        grant_type: "client-credentials",
        jti: uuid::Uuid::new_v4().to_string(),
        email: has("email").then(|| format!("{username}@example.invalid")),
        name: has("profile").then(String::new),
        administrator: has("profile").then_some(false),
        user_id: has("user_id").then(|| stable_user_id(client_id)),
        preferred_username: username,
    };
    let mut header = Header::new(Algorithm::RS256);
    header.kid = (!publishing.omit_kid).then(|| KEY_ID.to_owned());
    jsonwebtoken::encode(&header, &claims, key)
}

/// The first 128 bits of the SHA-256 of `client_id`: stable across builds and platforms
/// (unlike std's hasher).
fn digest_128(client_id: &str) -> u128 {
    let digest = Sha256::digest(client_id.as_bytes());
    let mut first = [0u8; 16];
    first.copy_from_slice(&digest[..16]);
    u128::from_be_bytes(first)
}

/// A `sub` like edX's anonymous user ids: 32 hex digits, stable per client.
pub(crate) fn stable_subject(client_id: &str) -> String {
    format!("{:032x}", digest_128(client_id))
}

/// A `user_id` stable per client, in edX's range of small positive integers.
pub(crate) fn stable_user_id(client_id: &str) -> u64 {
    // Below 9,000,000, so the cast cannot truncate.
    (digest_128(client_id) % 9_000_000) as u64 + 1_000_000
}
