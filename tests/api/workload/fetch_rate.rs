//! `TOKENVEND_CALLER_FETCH_RATE` applies per workload identity: every token of one
//! identity shares its allowance, and another identity has its own.

use std::num::NonZeroU32;

use reqwest::{Method, StatusCode};

use super::{setup, token, WORKER};
use crate::helpers::{assert_problem, json_body, TestApp};
use crate::on_both_backends_with;

async fn the_caller_fetch_rate_applies_per_identity(app: TestApp) {
    app.issuer_tenant("acme").await;
    setup(&app).await;
    let path = "/tenants/acme/token/refresh";
    for _ in 0..2 {
        app.advance(6);
        // A fresh token each time: the allowance is the identity's, not the token's.
        let jwt = token(&app, WORKER);
        json_body(
            app.request(Method::POST, path, Some(&jwt), None).await,
            StatusCode::OK,
        )
        .await;
    }
    app.advance(6);
    let resp = app
        .request(Method::POST, path, Some(&token(&app, WORKER)), None)
        .await;
    let problem = assert_problem(resp, StatusCode::TOO_MANY_REQUESTS).await;
    assert_eq!(problem["type"], "urn:tokenvend:problem:rate-limited");

    let other = token(&app, "system:serviceaccount:jobs:other");
    let resp = app.request(Method::POST, path, Some(&other), None).await;
    json_body(resp, StatusCode::OK).await;
}

on_both_backends_with! {
    the_caller_fetch_rate_applies_per_identity: |s| {
        s.vending.caller_fetch_rate = NonZeroU32::new(2);
        s.vending.upstream_rate = None;
    };
}
