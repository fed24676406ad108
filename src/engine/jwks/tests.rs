//! The signature checks against key sets, for every allowed algorithm and the refusals.

use std::sync::OnceLock;

use jsonwebtoken::{encode, EncodingKey};
use serde_json::json;

use super::*;

/// Signing keys generated for these tests: two RSA keys, one P-256, one P-384.
struct Keys {
    rsa: [EncodingKey; 2],
    p256: EncodingKey,
    p384: EncodingKey,
}

fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| {
        use p256::pkcs8::EncodePrivateKey;
        use rsa::pkcs1::EncodeRsaPrivateKey;
        let mut rng = rand::thread_rng();
        let rsa = || {
            let key = rsa::RsaPrivateKey::new(&mut rand::thread_rng(), 2048).unwrap();
            EncodingKey::from_rsa_der(key.to_pkcs1_der().unwrap().as_bytes())
        };
        let p256 = p256::SecretKey::random(&mut rng).to_pkcs8_der().unwrap();
        let p384 = p384::SecretKey::random(&mut rng).to_pkcs8_der().unwrap();
        Keys {
            rsa: [rsa(), rsa()],
            p256: EncodingKey::from_ec_der(p256.as_bytes()),
            p384: EncodingKey::from_ec_der(p384.as_bytes()),
        }
    })
}

/// The public JWK of `key` for `alg`, with `kid`; `alg` left out of the JWK when
/// `declare_alg` is false (edX's JWKS may name it or not).
fn jwk(key: &EncodingKey, alg: Algorithm, kid: &str, declare_alg: bool) -> Jwk {
    let mut jwk = Jwk::from_encoding_key(key, alg).unwrap();
    jwk.common.key_id = Some(kid.to_owned());
    jwk.common.public_key_use = Some(PublicKeyUse::Signature);
    if !declare_alg {
        jwk.common.key_algorithm = None;
    }
    jwk
}

fn sign(key: &EncodingKey, alg: Algorithm, kid: Option<&str>) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    let claims =
        json!({"iss": "https://lms.example.com/oauth2", "sub": "worker", "exp": 4_000_000_000u64});
    encode(&header, &claims, key).unwrap()
}

fn verdict(set: &[Jwk], token: &str) -> SignatureState {
    let header = decode_header(token).unwrap();
    if let Some(verdict) = verdict_without_keys(header.alg) {
        return verdict;
    }
    let set = JwkSet { keys: set.to_vec() };
    match check(&set, &header, token, &ALLOWED) {
        Check::Valid => SignatureState::Valid,
        Check::Invalid | Check::NoKey => SignatureState::Invalid,
    }
}

#[test]
fn a_token_without_kid_is_checked_against_every_key_of_its_type() {
    let k = keys();
    let old = jwk(&k.rsa[0], Algorithm::RS256, "retired", true);
    let ec = jwk(&k.p256, Algorithm::ES256, "ec", true);
    let current = jwk(&k.rsa[1], Algorithm::RS256, "current", true);
    let token = sign(&k.rsa[1], Algorithm::RS256, None);
    assert_eq!(
        verdict(&[old.clone(), ec, current.clone()], &token),
        SignatureState::Valid
    );
    assert_eq!(
        verdict(&[current, old.clone()], &token),
        SignatureState::Valid
    );
    assert_eq!(
        verdict(&[old], &token),
        SignatureState::Invalid,
        "no key signed it"
    );
}

#[test]
fn a_token_with_kid_is_checked_against_that_key_only() {
    let k = keys();
    let a = jwk(&k.rsa[0], Algorithm::RS256, "a", true);
    let b = jwk(&k.rsa[1], Algorithm::RS256, "b", true);
    let set = [a, b];
    assert_eq!(
        verdict(&set, &sign(&k.rsa[1], Algorithm::RS256, Some("b"))),
        SignatureState::Valid
    );
    assert_eq!(
        verdict(&set, &sign(&k.rsa[1], Algorithm::RS256, Some("a"))),
        SignatureState::Invalid
    );
    assert_eq!(
        verdict(&set, &sign(&k.rsa[1], Algorithm::RS256, Some("c"))),
        SignatureState::Invalid
    );
}

#[test]
fn every_allowed_algorithm_verifies_with_a_key_of_its_family() {
    let k = keys();
    let cases = [
        (&k.rsa[0], Algorithm::RS256),
        (&k.rsa[0], Algorithm::RS384),
        (&k.rsa[0], Algorithm::RS512),
        (&k.rsa[0], Algorithm::PS256),
        (&k.rsa[0], Algorithm::PS384),
        (&k.rsa[0], Algorithm::PS512),
        (&k.p256, Algorithm::ES256),
        (&k.p384, Algorithm::ES384),
    ];
    for (key, alg) in cases {
        let token = sign(key, alg, None);
        for declare_alg in [true, false] {
            let set = [jwk(key, alg, "k", declare_alg)];
            assert_eq!(verdict(&set, &token), SignatureState::Valid, "{alg:?}");
        }
    }
}

#[test]
fn the_header_alone_never_picks_the_algorithm() {
    let k = keys();
    // A key published for RS256 does not check a PS256 signature made with it.
    let rs256 = [jwk(&k.rsa[0], Algorithm::RS256, "k", true)];
    assert_eq!(
        verdict(&rs256, &sign(&k.rsa[0], Algorithm::PS256, None)),
        SignatureState::Invalid
    );
    // A P-384 key does not check ES256, nor a P-256 key ES384.
    let p384 = [jwk(&k.p384, Algorithm::ES384, "k", false)];
    assert_eq!(
        verdict(&p384, &sign(&k.p256, Algorithm::ES256, None)),
        SignatureState::Invalid
    );
    // A key meant for encryption checks nothing.
    let mut enc = jwk(&k.rsa[0], Algorithm::RS256, "k", false);
    enc.common.public_key_use = Some(PublicKeyUse::Encryption);
    assert_eq!(
        verdict(&[enc], &sign(&k.rsa[0], Algorithm::RS256, None)),
        SignatureState::Invalid
    );
}

#[test]
fn hmac_and_unlisted_algorithms_are_never_valid() {
    let k = keys();
    // The classic confusion: HS256 "signed" with bytes of the published RSA key, and a
    // JWKS that even lists an HMAC key.
    let public = serde_json::to_value(jwk(&k.rsa[0], Algorithm::RS256, "k", true)).unwrap();
    let secret = public["n"].as_str().unwrap().as_bytes().to_vec();
    let hmac = EncodingKey::from_secret(&secret);
    let oct = serde_json::from_value::<Jwk>(json!({
        "kty": "oct", "kid": "k", "k": base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, &secret),
    }))
    .unwrap();
    let rsa = jwk(&k.rsa[0], Algorithm::RS256, "k", false);
    for alg in [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512] {
        let token = sign(&hmac, alg, Some("k"));
        assert_eq!(
            verdict(&[oct.clone(), rsa.clone()], &token),
            SignatureState::Unverified
        );
        let header = decode_header(&token).unwrap();
        let set = JwkSet {
            keys: vec![oct.clone(), rsa.clone()],
        };
        assert_eq!(
            check(&set, &header, &token, &ALLOWED),
            Check::NoKey,
            "{alg:?} never fits a key"
        );
    }
    assert_eq!(
        verdict_without_keys(Algorithm::EdDSA),
        Some(SignatureState::Invalid)
    );
    // `alg: none` is not even a header jsonwebtoken reads: `verify` calls that invalid.
    let none = format!(
        "{}.{}.",
        base64::Engine::encode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            r#"{"alg":"none","typ":"JWT"}"#
        ),
        base64::Engine::encode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            r#"{"sub":"x"}"#
        ),
    );
    assert!(decode_header(&none).is_err());
}
