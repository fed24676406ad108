//! The edX-compatible token endpoint (`POST /oauth2/access_token`, `/oauth2/v1/access_token`).

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use edx_issuer::Failure;
use reqwest::{Response, StatusCode};
use serde_json::Value;

use crate::helpers::{captured_logs, json_body, TestApp};

const PATHS: [&str; 2] = ["/oauth2/access_token", "/oauth2/v1/access_token"];

/// Posts `form` as an edX client does.
async fn post_form(app: &TestApp, path: &str, form: &[(&str, &str)]) -> Response {
    app.client
        .post(app.url(path))
        .form(form)
        .send()
        .await
        .unwrap()
}

fn edx_form<'a>(tenant: &'a str, key: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("grant_type", "client_credentials"),
        ("client_id", tenant),
        ("client_secret", key),
        ("token_type", "jwt"),
    ]
}

/// Asserts an RFC 6749 error answer and returns its `error` code.
async fn oauth_error(resp: Response, status: StatusCode) -> String {
    assert_eq!(resp.status(), status);
    assert_eq!(resp.headers()["cache-control"], "no-store");
    assert_eq!(resp.headers()["content-type"], "application/json");
    let body: Value = resp.json().await.unwrap();
    assert!(body["error_description"].is_string(), "{body}");
    body["error"].as_str().unwrap().to_owned()
}

async fn answers_like_edx_from_the_same_cache(app: TestApp) {
    let client = app.issuer_tenant("acme").await;
    let key = app.create_key(&["token:acme"]).await;
    let cached = json_body(app.get_token("acme").await, StatusCode::OK).await;
    for path in PATHS {
        let resp = post_form(&app, path, &edx_form("acme", &key)).await;
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
        assert_eq!(resp.headers()["cache-control"], "no-store");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["access_token"], cached["access_token"]);
        assert_eq!(body["token_type"], "JWT");
        assert_eq!(body["scope"], "read write");
        assert!(body["expires_in"].as_i64().unwrap() > 3500, "{body}");
        let fields: Vec<&String> = body.as_object().unwrap().keys().collect();
        assert_eq!(fields.len(), 4, "exactly edX's fields: {fields:?}");
    }
    assert_eq!(app.issuer.calls(&client), 1, "served from the cache");
    app.advance(100);
    let resp = post_form(&app, PATHS[0], &edx_form("acme", &key)).await;
    let body: Value = json_body(resp, StatusCode::OK).await;
    let left = body["expires_in"].as_i64().unwrap();
    assert!(
        (3490..=3500).contains(&left),
        "expires_in counts down: {left}"
    );
}

async fn accepts_client_credentials_in_basic_auth(app: TestApp) {
    app.issuer_tenant("acme").await;
    let key = app.create_key(&["token:acme"]).await;
    let credentials = STANDARD.encode(format!("acme:{key}"));
    let resp = app
        .client
        .post(app.url(PATHS[1]))
        .header("authorization", format!("Basic {credentials}"))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    let body = json_body(resp, StatusCode::OK).await;
    assert!(body["access_token"].is_string());

    // Both methods at once is refused (RFC 6749 2.3).
    let resp = app
        .client
        .post(app.url(PATHS[1]))
        .header("authorization", format!("Basic {credentials}"))
        .form(&edx_form("acme", &key))
        .send()
        .await
        .unwrap();
    assert_eq!(
        oauth_error(resp, StatusCode::BAD_REQUEST).await,
        "invalid_request"
    );
}

async fn malformed_requests_get_rfc_6749_errors(app: TestApp) {
    app.issuer_tenant("acme").await;
    let key = app.create_key(&["token:acme"]).await;
    let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
        (
            vec![
                ("grant_type", "password"),
                ("client_id", "acme"),
                ("client_secret", &key),
            ],
            "unsupported_grant_type",
        ),
        (
            vec![("client_id", "acme"), ("client_secret", &key)],
            "invalid_request",
        ),
        (
            vec![("grant_type", "client_credentials"), ("client_id", "acme")],
            "invalid_request",
        ),
        (
            vec![("grant_type", "client_credentials")],
            "invalid_request",
        ),
        (
            vec![
                ("grant_type", "client_credentials"),
                ("client_id", "acme"),
                ("client_secret", &key),
                ("token_type", "saml"),
            ],
            "invalid_request",
        ),
        (
            vec![
                ("grant_type", "client_credentials"),
                ("grant_type", "client_credentials"),
                ("client_id", "acme"),
                ("client_secret", &key),
            ],
            "invalid_request",
        ),
    ];
    for (form, expected) in cases {
        let resp = post_form(&app, PATHS[0], &form).await;
        assert_eq!(
            oauth_error(resp, StatusCode::BAD_REQUEST).await,
            expected,
            "{form:?}"
        );
    }
    let resp = app
        .client
        .post(app.url(PATHS[0]))
        .json(&serde_json::json!({"grant_type": "client_credentials"}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        oauth_error(resp, StatusCode::BAD_REQUEST).await,
        "invalid_request"
    );
}

async fn a_key_without_token_scope_for_the_tenant_is_an_invalid_client(app: TestApp) {
    let client = app.issuer_tenant("acme").await;
    app.issuer_tenant("beta").await;
    let other_tenant = app.create_key(&["token:beta"]).await;
    let no_token_scope = app.create_key(&["tenants:read"]).await;
    let bogus = format!("{}x", &other_tenant[..other_tenant.len() - 1]);
    let mut bodies = Vec::new();
    for (tenant, key) in [
        ("acme", other_tenant.as_str()),
        ("acme", no_token_scope.as_str()),
        ("acme", bogus.as_str()),
        ("nobody", app.admin_key.as_str()),
        ("Not A Tenant", app.admin_key.as_str()),
    ] {
        let resp = post_form(&app, PATHS[0], &edx_form(tenant, key)).await;
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{tenant}");
        assert!(resp.headers().contains_key("www-authenticate"));
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"], "invalid_client");
        bodies.push(body);
    }
    assert!(
        bodies.windows(2).all(|w| w[0] == w[1]),
        "every refusal looks the same, so tenant ids cannot be probed"
    );
    assert_eq!(app.issuer.calls(&client), 0);
    let logs = captured_logs();
    assert!(
        logs.contains("request finished"),
        "sanity: this test's requests were logged"
    );
    for key in [&other_tenant, &no_token_scope, &bogus] {
        assert!(!logs.contains(key.as_str()), "a client_secret was logged");
    }
}

async fn upstream_trouble_is_a_502_or_a_503_with_retry_after(app: TestApp) {
    let down = app.issuer_tenant("down").await;
    app.issuer
        .configure(&down, |b| b.failure = Some(Failure::Unavailable));
    let rejected = app.issuer_tenant("rejected").await;
    app.issuer
        .configure(&rejected, |b| b.failure = Some(Failure::InvalidClient));
    let key = app.create_key(&["token:*"]).await;

    let resp = post_form(&app, PATHS[0], &edx_form("down", &key)).await;
    assert!(resp.headers().contains_key("retry-after"));
    assert_eq!(
        oauth_error(resp, StatusCode::SERVICE_UNAVAILABLE).await,
        "temporarily_unavailable"
    );
    let resp = post_form(&app, PATHS[0], &edx_form("rejected", &key)).await;
    assert_eq!(
        oauth_error(resp, StatusCode::BAD_GATEWAY).await,
        "server_error"
    );
}

async fn concurrent_edx_clients_on_a_cold_tenant_share_one_upstream_call(app: TestApp) {
    let client = app.issuer_tenant("acme").await;
    let key = app.create_key(&["token:acme"]).await;
    let form = edx_form("acme", &key);
    let requests = (0..50).map(|_| post_form(&app, PATHS[0], &form));
    for resp in futures::future::join_all(requests).await {
        assert_eq!(resp.status(), StatusCode::OK);
    }
    assert_eq!(app.issuer.calls(&client), 1);
}

/// Credentials in the URL end up in access logs: any query string is refused before the
/// body or the key is looked at, on both paths, and the key is not logged.
async fn a_query_string_is_refused_before_anything_is_read(app: TestApp) {
    let client = app.issuer_tenant("acme").await;
    let key = app.create_key(&["token:acme"]).await;
    let bogus = format!("tv_nosuchkey123_{}", uuid::Uuid::new_v4().simple());
    for path in PATHS {
        let queries = [
            format!("client_id=acme&client_secret={key}"),
            format!("client_secret={bogus}"),
            "page=1".to_owned(),
        ];
        for query in &queries {
            // A valid form, which alone would get the token.
            let resp = post_form(&app, &format!("{path}?{query}"), &edx_form("acme", &key)).await;
            let body = oauth_body(resp, StatusCode::BAD_REQUEST).await;
            assert_eq!(body["error"], "invalid_request", "{path}?{query}");
            let description = body["error_description"].as_str().unwrap();
            assert!(description.contains("query"), "{description}");
            assert!(!body.to_string().contains(&key), "{body}");
        }
        // Not a form, a wrong key: the query string is what is refused, nothing else.
        let resp = app
            .client
            .post(app.url(&format!("{path}?client_secret={bogus}")))
            .json(&serde_json::json!({ "client_id": "acme", "client_secret": bogus }))
            .send()
            .await
            .unwrap();
        let body = oauth_body(resp, StatusCode::BAD_REQUEST).await;
        assert!(
            body["error_description"]
                .as_str()
                .unwrap()
                .contains("query"),
            "{body}"
        );
    }
    assert_eq!(app.issuer.calls(&client), 0, "no token was fetched");
    let logs = captured_logs();
    assert!(
        logs.contains("request finished"),
        "sanity: this test's requests were logged"
    );
    assert!(!logs.contains(&key), "a client_secret was logged");
    assert!(!logs.contains(&bogus), "a client_secret was logged");
}

/// Asserts an RFC 6749 error answer with `status` and returns its body.
async fn oauth_body(resp: Response, status: StatusCode) -> Value {
    assert_eq!(resp.status(), status);
    assert_eq!(resp.headers()["cache-control"], "no-store");
    assert_eq!(resp.headers()["content-type"], "application/json");
    resp.json().await.unwrap()
}

crate::on_both_backends!(
    answers_like_edx_from_the_same_cache,
    upstream_trouble_is_a_502_or_a_503_with_retry_after,
    concurrent_edx_clients_on_a_cold_tenant_share_one_upstream_call,
);

// HTTP behaviour alone: the backend cannot change these.
crate::on_sqlite_only!(
    accepts_client_credentials_in_basic_auth,
    malformed_requests_get_rfc_6749_errors,
    a_key_without_token_scope_for_the_tenant_is_an_invalid_client,
    a_query_string_is_refused_before_anything_is_read,
);
