//! A provider whose keys are at a `jwks_url`: fetched when first needed, refetched for an
//! unknown `kid` at most every 30 s (by the app's clock), so a key rotation is picked up.

use jsonwebtoken::Algorithm;
use reqwest::StatusCode;
use serde_json::json;

use super::{add_mapping, claims, jwk, jwks, keys, list_with, mint, post, JwksServer, AUDIENCE};
use super::{ISSUER, WORKER};
use crate::helpers::{json_body, TestApp};
use crate::on_both_backends;

async fn a_key_rotation_at_the_jwks_url_is_picked_up_within_30_seconds(app: TestApp) {
    let k = keys();
    let server = JwksServer::start(jwks(&[jwk(&k.rsa[0], Algorithm::RS256, "old")])).await;
    let body = json!({"id": "k8s", "issuer": ISSUER, "audience": AUDIENCE, "jwks_url": server.url});
    json_body(
        post(&app, "/identity/providers", &body).await,
        StatusCode::CREATED,
    )
    .await;
    add_mapping(&app, "jobs", json!({"sub": WORKER}), &["tenants:read"]).await;
    assert_eq!(server.hits(), 0, "fetched when first needed, not before");

    let old = mint(
        &k.rsa[0],
        Algorithm::RS256,
        Some("old"),
        &claims(&app, WORKER),
    );
    assert_eq!(list_with(&app, &old).await, StatusCode::OK);
    assert_eq!(server.hits(), 1);

    // The cluster rotates: the new key is published, the old one kept for a while.
    server.publish(jwks(&[
        jwk(&k.rsa[0], Algorithm::RS256, "old"),
        jwk(&k.rsa[1], Algorithm::RS256, "new"),
    ]));
    app.advance(5);
    let new = mint(
        &k.rsa[1],
        Algorithm::RS256,
        Some("new"),
        &claims(&app, WORKER),
    );
    // Fetched 5 s ago: an unknown kid does not refetch yet.
    assert_eq!(list_with(&app, &new).await, StatusCode::UNAUTHORIZED);
    assert_eq!(list_with(&app, &new).await, StatusCode::UNAUTHORIZED);
    assert_eq!(server.hits(), 1, "no refetch within 30 s");

    app.advance(25);
    assert_eq!(list_with(&app, &new).await, StatusCode::OK);
    assert_eq!(server.hits(), 2, "one refetch for the unknown kid");
    let another = mint(&k.rsa[1], Algorithm::RS256, Some("new"), &claims(&app, "x"));
    assert_eq!(list_with(&app, &another).await, StatusCode::FORBIDDEN);
    assert_eq!(server.hits(), 2, "a known kid needs no fetch");

    // Once the old key is withdrawn (and 10 minutes on, the set fetched again), its
    // tokens stop verifying.
    server.publish(jwks(&[jwk(&k.rsa[1], Algorithm::RS256, "new")]));
    app.advance(600);
    let late_old = mint(
        &k.rsa[0],
        Algorithm::RS256,
        Some("old"),
        &claims(&app, WORKER),
    );
    assert_eq!(list_with(&app, &late_old).await, StatusCode::UNAUTHORIZED);
    assert_eq!(server.hits(), 3);
}

async fn an_unreachable_jwks_url_refuses_the_token(app: TestApp) {
    let server = JwksServer::start(json!({"keys": "not a key set"})).await;
    let body = json!({"id": "k8s", "issuer": ISSUER, "audience": AUDIENCE, "jwks_url": server.url});
    json_body(
        post(&app, "/identity/providers", &body).await,
        StatusCode::CREATED,
    )
    .await;
    add_mapping(&app, "jobs", json!({"sub": WORKER}), &["tenants:read"]).await;
    let jwt = mint(
        &keys().rsa[0],
        Algorithm::RS256,
        Some("a"),
        &claims(&app, WORKER),
    );
    assert_eq!(list_with(&app, &jwt).await, StatusCode::UNAUTHORIZED);
    assert!(server.hits() >= 1);
}

on_both_backends! {
    a_key_rotation_at_the_jwks_url_is_picked_up_within_30_seconds,
    an_unreachable_jwks_url_refuses_the_token,
}
