//! Every rule a JWT caller must pass, each refusal its own case (401, counted against the
//! address's failure budget), and the acceptances at the edges of the rules.

use std::num::NonZeroU32;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use super::{claims, keys, list_with, mint, setup, WORKER};
use crate::helpers::{assert_problem, TestApp};
use crate::on_both_backends_with;

/// A token with `change` applied to the usual claims, signed as given.
fn with_claims(
    app: &TestApp,
    key: &EncodingKey,
    alg: Algorithm,
    kid: Option<&str>,
    change: impl FnOnce(&mut Value, i64),
) -> String {
    let mut c = claims(app, WORKER);
    let now = c["iat"].as_i64().unwrap();
    change(&mut c, now);
    mint(key, alg, kid, &c)
}

/// An unsigned token (`alg: none`).
fn unsigned(claims: &Value) -> String {
    let part = |v: &Value| URL_SAFE_NO_PAD.encode(v.to_string());
    format!(
        "{}.{}.",
        part(&json!({"alg": "none", "typ": "JWT"})),
        part(claims)
    )
}

async fn every_refusal_rule_is_a_401_of_its_own(app: TestApp) {
    setup(&app).await;
    let k = keys();
    let rs = Algorithm::RS256;
    let a = Some("a");
    let hmac = EncodingKey::from_secret(b"the public key is no secret");
    let cases: Vec<(&str, String)> = vec![
        ("alg none", unsigned(&claims(&app, WORKER))),
        (
            "HS256, never accepted",
            with_claims(&app, &hmac, Algorithm::HS256, a, |_, _| {}),
        ),
        (
            "an issuer no provider has",
            with_claims(&app, &k.rsa[0], rs, a, |c, _| {
                c["iss"] = json!("https://attacker.example");
            }),
        ),
        (
            "a signature by another key under kid a",
            with_claims(&app, &k.rsa[1], rs, a, |_, _| {}),
        ),
        (
            "a kid the provider does not have",
            with_claims(&app, &k.rsa[0], rs, Some("zz"), |_, _| {}),
        ),
        ("no kid, and no key of the set signed it", {
            let stranger = EncodingKey::from_ec_der(&{
                use p256::pkcs8::EncodePrivateKey;
                p256::SecretKey::random(&mut rand::thread_rng())
                    .to_pkcs8_der()
                    .unwrap()
                    .as_bytes()
                    .to_vec()
            });
            with_claims(&app, &stranger, Algorithm::ES256, None, |_, _| {})
        }),
        (
            "an aud without the provider's audience",
            with_claims(&app, &k.rsa[0], rs, a, |c, _| {
                c["aud"] = json!(["kubernetes", "vault"]);
            }),
        ),
        (
            "no aud",
            with_claims(&app, &k.rsa[0], rs, a, |c, _| {
                c.as_object_mut().unwrap().remove("aud");
            }),
        ),
        (
            "expired beyond the 30 s leeway",
            with_claims(&app, &k.rsa[0], rs, a, |c, now| {
                c["iat"] = json!(now - 600);
                c["nbf"] = json!(now - 600);
                c["exp"] = json!(now - 30);
            }),
        ),
        (
            "no exp",
            with_claims(&app, &k.rsa[0], rs, a, |c, _| {
                c.as_object_mut().unwrap().remove("exp");
            }),
        ),
        (
            "no iat",
            with_claims(&app, &k.rsa[0], rs, a, |c, _| {
                c.as_object_mut().unwrap().remove("iat");
            }),
        ),
        (
            "iat in the future beyond the leeway",
            with_claims(&app, &k.rsa[0], rs, a, |c, now| {
                c["iat"] = json!(now + 31);
                c["exp"] = json!(now + 600);
            }),
        ),
        (
            "nbf in the future beyond the leeway",
            with_claims(&app, &k.rsa[0], rs, a, |c, now| {
                c["nbf"] = json!(now + 31);
            }),
        ),
        (
            "a lifetime over max_lifetime_seconds (a year-long token)",
            with_claims(&app, &k.rsa[0], rs, a, |c, now| {
                c["exp"] = json!(now + 365 * 86_400);
            }),
        ),
        (
            "a lifetime one second over the cap",
            with_claims(&app, &k.rsa[0], rs, a, |c, now| {
                c["exp"] = json!(now + 3601);
            }),
        ),
        (
            "no subject claim",
            with_claims(&app, &k.rsa[0], rs, a, |c, _| {
                c.as_object_mut().unwrap().remove("sub");
            }),
        ),
        (
            "an empty subject",
            with_claims(&app, &k.rsa[0], rs, a, |c, _| c["sub"] = json!("")),
        ),
        (
            "a subject that is no string",
            with_claims(&app, &k.rsa[0], rs, a, |c, _| c["sub"] = json!(42)),
        ),
        ("a tampered payload", {
            let good = with_claims(&app, &k.rsa[0], rs, a, |_, _| {});
            let parts: Vec<&str> = good.split('.').collect();
            let mut c = claims(&app, "system:serviceaccount:kube-system:admin");
            c["sub"] = json!("system:serviceaccount:jobs:root");
            format!(
                "{}.{}.{}",
                parts[0],
                URL_SAFE_NO_PAD.encode(c.to_string()),
                parts[2]
            )
        }),
    ];
    for (what, token) in cases {
        let resp = app
            .request(Method::GET, "/tenants", Some(&token), None)
            .await;
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{what}");
        let body = assert_problem(resp, StatusCode::UNAUTHORIZED).await;
        assert!(
            !body.to_string().contains(&token),
            "{what}: the token is not echoed"
        );
    }
}

async fn tokens_at_the_edges_of_the_rules_are_accepted(app: TestApp) {
    setup(&app).await;
    let k = keys();
    let cases: Vec<(&str, String)> = vec![
        (
            "expired, but within the 30 s leeway",
            with_claims(&app, &k.rsa[0], Algorithm::RS256, Some("a"), |c, now| {
                c["iat"] = json!(now - 600);
                c["nbf"] = json!(now - 600);
                c["exp"] = json!(now - 29);
            }),
        ),
        (
            "iat and nbf within the leeway ahead",
            with_claims(&app, &k.rsa[0], Algorithm::RS256, Some("a"), |c, now| {
                c["iat"] = json!(now + 30);
                c["nbf"] = json!(now + 30);
            }),
        ),
        (
            "a lifetime of exactly max_lifetime_seconds, aud a string",
            with_claims(&app, &k.rsa[0], Algorithm::RS256, Some("a"), |c, now| {
                c["exp"] = json!(now + 3600);
                c["aud"] = json!("tokenvend");
            }),
        ),
        (
            "no kid, several RSA keys: the one that signed it",
            with_claims(&app, &k.rsa[1], Algorithm::RS256, None, |_, _| {}),
        ),
        (
            "ES256",
            with_claims(&app, &k.p256, Algorithm::ES256, Some("ec"), |_, _| {}),
        ),
        (
            "EdDSA (Ed25519)",
            with_claims(&app, &k.ed25519, Algorithm::EdDSA, Some("ed"), |_, _| {}),
        ),
        (
            "EdDSA without kid",
            with_claims(&app, &k.ed25519, Algorithm::EdDSA, None, |_, _| {}),
        ),
    ];
    for (what, token) in cases {
        assert_eq!(list_with(&app, &token).await, StatusCode::OK, "{what}");
    }
}

async fn refused_tokens_count_against_the_address_failure_budget(app: TestApp) {
    setup(&app).await;
    let stranger = with_claims(&app, &keys().rsa[1], Algorithm::RS256, Some("a"), |_, _| {});
    assert_eq!(list_with(&app, &stranger).await, StatusCode::UNAUTHORIZED);
    assert_eq!(list_with(&app, &stranger).await, StatusCode::UNAUTHORIZED);
    let resp = app
        .request(Method::GET, "/tenants", Some(&stranger), None)
        .await;
    let body = assert_problem(resp, StatusCode::TOO_MANY_REQUESTS).await;
    assert!(body["detail"]
        .as_str()
        .unwrap()
        .contains("failed authentications"));
}

async fn the_key_rate_applies_per_identity(app: TestApp) {
    setup(&app).await;
    // Two tokens of one identity share its bucket (a burst of 2); another identity has
    // its own.
    let first = super::token(&app, WORKER);
    app.advance(1);
    let second = super::token(&app, WORKER);
    assert_ne!(first, second);
    assert_eq!(list_with(&app, &first).await, StatusCode::OK);
    assert_eq!(list_with(&app, &second).await, StatusCode::OK);
    assert_eq!(list_with(&app, &first).await, StatusCode::TOO_MANY_REQUESTS);
    let other = super::token(&app, "system:serviceaccount:jobs:other");
    assert_eq!(list_with(&app, &other).await, StatusCode::OK);
}

on_both_backends_with! {
    every_refusal_rule_is_a_401_of_its_own: |s| s.serving.rate_limits.auth_failures = None;
    tokens_at_the_edges_of_the_rules_are_accepted: |_| {};
    refused_tokens_count_against_the_address_failure_budget: |s| {
        s.serving.rate_limits.auth_failures = NonZeroU32::new(2);
    };
    the_key_rate_applies_per_identity: |s| s.serving.rate_limits.key_rate = NonZeroU32::new(2);
}
