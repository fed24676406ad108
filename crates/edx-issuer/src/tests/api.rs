//! The edX-like API: only tokens this issuer issued, in edX's scheme, not revoked, not
//! expired; what it received, echoed.

use axum::http::StatusCode;
use serde_json::Value;

use super::{client, creds, post_json, setup, ID};

async fn get(url: &str, authorization: Option<&str>) -> (StatusCode, Value) {
    let mut request = client().get(url);
    if let Some(value) = authorization {
        request = request.header("authorization", value);
    }
    let response = request.send().await.expect("answer");
    let status = StatusCode::from_u16(response.status().as_u16()).expect("status");
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn the_api_takes_only_live_tokens_it_issued_in_edx_scheme() {
    let (issuer, running, clock) = setup().await;
    let url = format!(
        "{}/api/enterprise/v1/enterprise-customer/?a=1+2",
        running.api_base_url()
    );
    let (_, token) = post_json(&running.token_url(), &creds(&[("token_type", "jwt")])).await;
    let jwt = token["access_token"].as_str().unwrap().to_owned();

    let (status, echo) = get(&url, Some(&format!("JWT {jwt}"))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(echo["query"], "a=1+2");
    assert_eq!(echo["client_id"], ID);
    assert_eq!(echo["body_length"], 0);

    for (authorization, why) in [
        (None, "no token"),
        (Some(format!("Bearer {jwt}")), "a JWT in the Bearer scheme"),
        (Some("JWT a.b.c".to_owned()), "a token it never issued"),
    ] {
        let (status, _) = get(&url, authorization.as_deref()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{why}");
    }

    let (_, opaque) = post_json(&running.token_url(), &creds(&[])).await;
    let opaque = opaque["access_token"].as_str().unwrap().to_owned();
    let (status, _) = get(&url, Some(&format!("Bearer {opaque}"))).await;
    assert_eq!(status, StatusCode::OK, "an opaque token as a bearer token");

    assert!(issuer.revoke(&opaque));
    let (status, _) = get(&url, Some(&format!("Bearer {opaque}"))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "revoked");
    assert_eq!(issuer.revoke_tokens_of(ID), 1, "the JWT, still live");
    let (status, _) = get(&url, Some(&format!("JWT {jwt}"))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let (_, fresh) = post_json(&running.token_url(), &creds(&[("token_type", "jwt")])).await;
    let fresh = fresh["access_token"].as_str().unwrap().to_owned();
    *clock.lock() += chrono::Duration::seconds(3601);
    let (status, _) = get(&url, Some(&format!("JWT {fresh}"))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "expired");
    assert_eq!(
        issuer.api_calls(),
        8,
        "every call counted, refused ones too"
    );
}
