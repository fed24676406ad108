//! Which tenant's API a call reaches: proxy scopes, and the API base (its default, a
//! move, an unreachable or no longer allowed one).

use reqwest::{Method, StatusCode};
use serde_json::json;

use super::{call, ENTERPRISE};
use crate::helpers::{assert_problem, json_body, TestApp};

async fn proxy_scopes_never_read_the_token_and_other_tenants_are_hidden(app: TestApp) {
    app.issuer_tenant("acme").await;
    app.issuer_tenant("other").await;
    let proxy_key = app.create_key(&["proxy:acme"]).await;
    let resp = app
        .request(Method::GET, "/tenants/acme/token", Some(&proxy_key), None)
        .await;
    assert_problem(resp, StatusCode::FORBIDDEN).await;
    let resp = call(&app, Method::GET, ENTERPRISE, &proxy_key).await;
    assert_eq!(resp.status(), StatusCode::OK);

    for (scopes, status) in [
        (vec!["proxy:other"], StatusCode::NOT_FOUND),
        (vec!["token:other"], StatusCode::NOT_FOUND),
        (vec!["tenants:read", "tenants:write"], StatusCode::FORBIDDEN),
    ] {
        let key = app.create_key(&scopes).await;
        let resp = call(&app, Method::GET, ENTERPRISE, &key).await;
        assert_eq!(resp.status(), status, "{scopes:?}");
        assert_problem(resp, status).await;
    }
    let resp = call(&app, Method::GET, "/tenants/ghost/proxy/api/x", &proxy_key).await;
    assert_problem(resp, StatusCode::NOT_FOUND).await;

    let resp = app
        .admin(
            Method::POST,
            "/api-keys",
            Some(&json!({ "name": "k", "scopes": ["proxy:ghost"] })),
        )
        .await;
    assert_problem(resp, StatusCode::UNPROCESSABLE_ENTITY).await;
    let listed = json_body(
        app.admin(Method::GET, "/api-keys", None).await,
        StatusCode::OK,
    )
    .await;
    assert!(listed.to_string().contains("\"proxy:acme\""), "{listed}");

    // The scope is bound to the tenant, not its id: a successor under the id is another.
    let resp = app.admin(Method::DELETE, "/tenants/acme", None).await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    app.issuer_tenant("acme").await;
    let resp = call(&app, Method::GET, ENTERPRISE, &proxy_key).await;
    assert_problem(resp, StatusCode::NOT_FOUND).await;
}

async fn an_unreachable_api_is_502(app: TestApp) {
    // A loopback port with nothing listening.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    app.issuer_tenant_with("acme", |body| {
        body["api_base_url"] = json!(format!("http://127.0.0.1:{port}"));
    })
    .await;
    let key = app.create_key(&["proxy:acme"]).await;
    let resp = call(&app, Method::GET, ENTERPRISE, &key).await;
    let problem = assert_problem(resp, StatusCode::BAD_GATEWAY).await;
    assert_eq!(problem["type"], "urn:tokenvend:problem:api-unreachable");
}

async fn the_api_base_defaults_to_the_token_urls_origin_and_moves_only_with_the_secret(
    app: TestApp,
) {
    app.issuer_tenant("acme").await;
    let tenant = json_body(
        app.admin(Method::GET, "/tenants/acme", None).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(tenant["api_base_url"], app.issuer_server.api_base_url());
    let resp = app
        .admin(
            Method::PATCH,
            "/tenants/acme",
            Some(&json!({ "api_base_url": "http://127.0.0.1:9/elsewhere" })),
        )
        .await;
    let problem = assert_problem(resp, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(problem["field"], "client_secret");
    for bad in [
        "ftp://api.example.com",
        "http://api.example.com/?q=1",
        "not a url",
    ] {
        let mut body = crate::helpers::tenant_body("bad");
        body["api_base_url"] = json!(bad);
        let problem = assert_problem(
            app.create_tenant(&body).await,
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
        assert_eq!(problem["field"], "api_base_url", "{bad}");
    }
}

async fn a_moved_api_base_is_where_calls_go(app: TestApp) {
    app.issuer_tenant("acme").await;
    let key = app.create_key(&["proxy:acme"]).await;
    let moved = format!("{}/api/enterprise", app.issuer_server.api_base_url());
    let secret = format!("moved-{}", uuid::Uuid::new_v4().simple());
    app.issuer.register("client-acme", &secret);
    let resp = app
        .admin(
            Method::PATCH,
            "/tenants/acme",
            Some(&json!({ "api_base_url": moved, "client_secret": secret })),
        )
        .await;
    let tenant = json_body(resp, StatusCode::OK).await;
    assert_eq!(tenant["api_base_url"], moved);
    let audit = json_body(
        app.admin(Method::GET, "/audit-events", None).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(
        audit["items"][0]["details"]["api_base_url"]["to"], moved,
        "the move is on the record: {audit}"
    );
    let echo = json_body(
        call(
            &app,
            Method::GET,
            "/tenants/acme/proxy/v1/enterprise-customer/",
            &key,
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(echo["path"], "/api/enterprise/v1/enterprise-customer/");
}

async fn an_api_base_stored_under_the_insecure_flag_is_not_called_after_a_restart_without_it(
    mut app: TestApp,
) {
    let client = app.issuer_tenant("acme").await;
    let key = app.create_key(&["proxy:acme"]).await;
    app.settings.allow_insecure_token_urls = false;
    app.restart().await;
    let resp = call(&app, Method::GET, ENTERPRISE, &key).await;
    let problem = assert_problem(resp, StatusCode::BAD_GATEWAY).await;
    assert_eq!(problem["type"], "urn:tokenvend:problem:tenant-unusable");
    assert_eq!(app.issuer.api_calls(), 0, "nothing was sent to the API");
    assert_eq!(app.issuer.calls(&client), 0, "nor to the token endpoint");
}

// HTTP behaviour alone: the backend cannot change these.
crate::on_sqlite_only!(
    proxy_scopes_never_read_the_token_and_other_tenants_are_hidden,
    an_unreachable_api_is_502,
    the_api_base_defaults_to_the_token_urls_origin_and_moves_only_with_the_secret,
    a_moved_api_base_is_where_calls_go,
    an_api_base_stored_under_the_insecure_flag_is_not_called_after_a_restart_without_it,
);
