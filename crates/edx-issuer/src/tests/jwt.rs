//! Signed JWTs verify against the published JWKS and carry edX's claims.

use std::time::Duration;

use axum::http::{header, StatusCode};
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::Algorithm;
use serde_json::{json, Value};

use super::{client, creds, decoding_key, post_json, setup, validation, ID};
use crate::jwt::{stable_subject, stable_user_id, JWK_E, JWK_N};
use crate::{Issuer, KeyPublishing, DECOY_KEY_ID, KEY_ID};

#[tokio::test]
async fn issues_verifiable_jwts_at_both_paths() {
    let (issuer, running, clock) = setup().await;
    let key = decoding_key(&running).await;
    let mut tokens = Vec::new();
    for url in [running.token_url(), running.v1_token_url()] {
        let (status, body) = post_json(&url, &creds(&[("token_type", "jwt")])).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["token_type"], "JWT");
        assert_eq!(body["expires_in"], 3600);
        assert_eq!(body["scope"], "read write profile email");
        let jwt = body["access_token"].as_str().expect("token").to_owned();

        let data = jsonwebtoken::decode::<Value>(&jwt, &key, &validation(&running))
            .expect("signature and claims verify");
        assert_eq!(data.header.kid.as_deref(), Some(KEY_ID));
        assert_eq!(data.header.alg, Algorithm::RS256);
        let c = data.claims;
        let iat = clock.lock().timestamp();
        assert_eq!(c["iat"], iat);
        assert_eq!(c["exp"], iat + 3600);
        assert_eq!(c["aud"], "lms-key");
        assert_eq!(c["sub"], stable_subject(ID));
        assert_eq!(c["sub"].as_str().map(str::len), Some(32));
        assert_eq!(c["preferred_username"], "tenant-a-worker");
        assert_eq!(c["scopes"], json!(["read", "write", "profile", "email"]));
        assert_eq!(c["version"], "1.2.0");
        assert_eq!(c["filters"], json!([]));
        assert_eq!(c["is_restricted"], false);
        assert_eq!(c["email_verified"], false);
        assert_eq!(c["grant_type"], "client-credentials");
        assert!(uuid::Uuid::parse_str(c["jti"].as_str().expect("jti")).is_ok());
        tokens.push(jwt);
    }
    // Same second, same client: still two different tokens.
    assert_ne!(tokens[0], tokens[1]);
    assert_eq!(issuer.calls(ID), 2);
}

#[tokio::test]
async fn jwt_honours_lifetime_requested_scope_and_asymmetric_flag() {
    let (issuer, running, clock) = setup().await;
    issuer.configure(ID, |b| {
        b.lifetime = Duration::from_secs(30);
        b.scope = "read write user_id".to_owned();
    });
    let form = creds(&[
        ("token_type", "JWT"),
        ("asymmetric_jwt", "true"),
        ("scope", "read user_id"),
    ]);
    let (status, body) = post_json(&running.token_url(), &form).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["expires_in"], 30);
    assert_eq!(body["scope"], "read user_id");
    let jwt = body["access_token"].as_str().expect("token");
    let claims =
        jsonwebtoken::decode::<Value>(jwt, &decoding_key(&running).await, &validation(&running))
            .expect("verifies")
            .claims;
    assert_eq!(claims["exp"], clock.lock().timestamp() + 30);
    assert_eq!(claims["scopes"], json!(["read", "user_id"]));
    assert!(claims["user_id"].is_u64());

    let form = creds(&[("token_type", "jwt"), ("scope", "read admin")]);
    let (status, body) = post_json(&running.token_url(), &form).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "invalid_scope");
}

#[test]
fn published_jwk_matches_the_signing_key() {
    let issuer = Issuer::new(chrono::Utc::now);
    let derived = Jwk::from_encoding_key(&issuer.core.key, Algorithm::RS256).expect("jwk");
    let derived = serde_json::to_value(derived).expect("serialise");
    assert_eq!(derived["n"], JWK_N);
    assert_eq!(derived["e"], JWK_E);
    let published = &issuer.jwks()["keys"][0];
    for (k, v) in [
        ("kty", "RSA"),
        ("use", "sig"),
        ("alg", "RS256"),
        ("kid", KEY_ID),
    ] {
        assert_eq!(published[k], v);
    }
}

#[tokio::test]
async fn jwks_endpoint_serves_the_document() {
    let (issuer, running, _) = setup().await;
    let body: Value = client()
        .get(running.jwks_url())
        .send()
        .await
        .expect("answer")
        .json()
        .await
        .expect("JSON");
    assert_eq!(body, issuer.jwks());
    assert_eq!(issuer.total_calls(), 0, "JWKS fetches are not token calls");
}

#[tokio::test]
async fn a_rotation_publishes_a_decoy_key_first_and_jwts_can_go_without_kid() {
    let (issuer, running, _) = setup().await;
    issuer.set_key_publishing(KeyPublishing {
        decoy_key_first: true,
        omit_kid: true,
    });
    let body: Value = client()
        .get(running.jwks_url())
        .send()
        .await
        .expect("answer")
        .json()
        .await
        .expect("JSON");
    let kids: Vec<&str> = body["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .filter_map(|k| k["kid"].as_str())
        .collect();
    assert_eq!(kids, [DECOY_KEY_ID, KEY_ID]);
    assert_ne!(body["keys"][0]["n"], body["keys"][1]["n"]);

    let (status, body) = post_json(&running.token_url(), &creds(&[("token_type", "jwt")])).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let jwt = body["access_token"].as_str().expect("token");
    let header = jsonwebtoken::decode_header(jwt).expect("header");
    assert_eq!(header.kid, None);
    // The signing key, second in the set, verifies it; the decoy does not.
    let data =
        jsonwebtoken::decode::<Value>(jwt, &decoding_key(&running).await, &validation(&running));
    assert!(data.is_ok(), "{data:?}");
    let decoy: Jwk = serde_json::from_value(issuer.jwks()["keys"][0].clone()).expect("jwk");
    let decoy = jsonwebtoken::DecodingKey::from_jwk(&decoy).expect("usable jwk");
    assert!(jsonwebtoken::decode::<Value>(jwt, &decoy, &validation(&running)).is_err());
}

#[tokio::test]
async fn iss_follows_the_host_header() {
    let (_issuer, running, _) = setup().await;
    let body: Value = client()
        .post(running.token_url())
        .header(header::HOST, "lms.example.org")
        .form(&creds(&[("token_type", "jwt")]))
        .send()
        .await
        .expect("answer")
        .json()
        .await
        .expect("JSON");
    let jwt = body["access_token"].as_str().expect("token");
    let mut validation = validation(&running);
    validation.set_issuer(&["http://lms.example.org/oauth2"]);
    jsonwebtoken::decode::<Value>(jwt, &decoding_key(&running).await, &validation)
        .expect("verifies with the Host-derived issuer");
}

#[tokio::test]
async fn iat_and_exp_follow_the_time_source_at_each_request() {
    let (_issuer, running, clock) = setup().await;
    let key = decoding_key(&running).await;
    let mut validation = validation(&running);
    // The manual time may lie in the past or the future of the system clock.
    validation.validate_exp = false;
    let mut issued = Vec::new();
    for step in [0, 1234] {
        *clock.lock() += chrono::Duration::seconds(step);
        let (status, body) =
            post_json(&running.token_url(), &creds(&[("token_type", "jwt")])).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let jwt = body["access_token"].as_str().expect("token");
        let claims = jsonwebtoken::decode::<Value>(jwt, &key, &validation)
            .expect("verifies")
            .claims;
        let now = clock.lock().timestamp();
        assert_eq!(
            (claims["iat"].clone(), claims["exp"].clone()),
            (json!(now), json!(now + 3600))
        );
        issued.push(now);
    }
    assert_eq!(issued[1] - issued[0], 1234);
}

#[tokio::test]
async fn a_skewed_client_gets_shifted_iat_exp_and_date() {
    let (issuer, running, clock) = setup().await;
    let key = decoding_key(&running).await;
    let mut validation = validation(&running);
    validation.validate_exp = false;
    let date = |headers: &axum::http::HeaderMap| {
        let raw = headers[header::DATE].to_str().expect("ASCII date");
        chrono::DateTime::parse_from_rfc2822(raw)
            .expect("an HTTP date")
            .timestamp()
    };
    let now = clock.lock().timestamp();
    for offset in [0, 45, -400] {
        issuer.configure(ID, |b| b.clock_offset = chrono::TimeDelta::seconds(offset));
        let (status, headers, body) = super::post(
            &running.token_url(),
            &creds(&[("token_type", "jwt")]),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(date(&headers), now + offset, "the Date header follows the skew");
        let body: Value = serde_json::from_str(&body).expect("JSON");
        let jwt = body["access_token"].as_str().expect("token");
        let claims = jsonwebtoken::decode::<Value>(jwt, &key, &validation)
            .expect("verifies")
            .claims;
        assert_eq!(
            (claims["iat"].clone(), claims["exp"].clone()),
            (json!(now + offset), json!(now + offset + 3600)),
            "offset {offset}"
        );
    }
    // A refusal, too, carries the client's skewed date.
    let (status, headers, _) = super::post(&running.token_url(), &creds(&[("grant_type", "x")])).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(date(&headers), now - 400);
}

#[test]
fn derived_claims_are_stable_per_client_and_shaped_like_edx_ones() {
    for client_id in ["tenant-a", "tenant-b", ""] {
        let sub = stable_subject(client_id);
        assert_eq!(sub.len(), 32, "{sub}");
        assert!(sub
            .chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        assert_eq!(sub, stable_subject(client_id), "stable");
        let user_id = stable_user_id(client_id);
        assert!((1_000_000..10_000_000).contains(&user_id), "{user_id}");
        assert_eq!(user_id, stable_user_id(client_id), "stable");
    }
    assert_ne!(stable_subject("tenant-a"), stable_subject("tenant-b"));
}
