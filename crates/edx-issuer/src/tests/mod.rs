//! The issuer's own tests: real HTTP against a started issuer on loopback.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod api;
mod endpoint;
mod jwt;

use std::sync::Arc;

use axum::http::{HeaderMap, StatusCode};
use chrono::{DateTime, Utc};
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use parking_lot::Mutex;
use serde_json::Value;

use crate::{Issuer, RunningIssuer, AUDIENCE, KEY_ID};

const ID: &str = "tenant-a";
const SECRET: &str = "s3cret";

/// A manual clock: the issuer reads it on every request, and only the test moves it.
type ManualTime = Arc<Mutex<DateTime<Utc>>>;

async fn setup() -> (Issuer, RunningIssuer, ManualTime) {
    let now = Utc::now();
    let clock: ManualTime = Arc::new(Mutex::new(
        DateTime::from_timestamp(now.timestamp(), 0).unwrap_or(now),
    ));
    let time = Arc::clone(&clock);
    let issuer = Issuer::new(move || *time.lock());
    issuer.register(ID, SECRET);
    let running = issuer.start().await.expect("issuer starts");
    (issuer, running, clock)
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

fn creds<'a>(extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut form = vec![
        ("grant_type", "client_credentials"),
        ("client_id", ID),
        ("client_secret", SECRET),
    ];
    form.extend_from_slice(extra);
    form
}

async fn post(url: &str, form: &[(&str, &str)]) -> (StatusCode, HeaderMap, String) {
    let response = client().post(url).form(form).send().await.expect("answer");
    let status = StatusCode::from_u16(response.status().as_u16()).expect("status");
    let headers = response.headers().clone();
    (status, headers, response.text().await.expect("body"))
}

async fn post_json(url: &str, form: &[(&str, &str)]) -> (StatusCode, Value) {
    let (status, _, body) = post(url, form).await;
    (status, serde_json::from_str(&body).expect("JSON body"))
}

async fn decoding_key(running: &RunningIssuer) -> DecodingKey {
    let jwks: JwkSet = client()
        .get(running.jwks_url())
        .send()
        .await
        .expect("jwks answer")
        .json()
        .await
        .expect("jwks JSON");
    DecodingKey::from_jwk(jwks.find(KEY_ID).expect("kid published")).expect("usable jwk")
}

fn validation(running: &RunningIssuer) -> Validation {
    let mut validation = Validation::new(Algorithm::RS256);
    validation.set_audience(&[AUDIENCE]);
    validation.set_issuer(&[format!("http://{}/oauth2", running.addr)]);
    validation.set_required_spec_claims(&["exp", "iat", "aud", "iss", "sub"]);
    validation
}
