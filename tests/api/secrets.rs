use reqwest::{Method, StatusCode};
use serde_json::json;
use tokenvend::crypto::{CryptoError, MasterKey, Purpose, Sealed};
use tokenvend::startup::StartupError;

use crate::helpers::{captured_logs, contains, tenant_body, TestApp};

fn secret_of(body: &serde_json::Value) -> String {
    body["client_secret"].as_str().unwrap().to_owned()
}

async fn no_response_ever_contains_a_client_secret(app: TestApp) {
    let body = tenant_body("acme");
    let secret = secret_of(&body);
    let rotated = format!("rotated-{}", uuid::Uuid::new_v4().simple());
    let misplaced = format!("misplaced-{}", uuid::Uuid::new_v4().simple());
    let mut bodies = Vec::new();

    let mut responses = vec![
        app.create_tenant(&body).await,
        app.create_tenant(&body).await, // 409
        app.admin(Method::GET, "/tenants/acme", None).await,
        app.admin(Method::GET, "/tenants", None).await,
        app.admin(
            Method::PATCH,
            "/tenants/acme",
            Some(&json!({"client_secret": rotated})),
        )
        .await,
        app.admin(
            Method::PATCH,
            "/tenants/acme",
            Some(&json!({"asymmetric_jwt": misplaced})),
        )
        .await,
        app.admin(
            Method::PATCH,
            "/tenants/acme",
            Some(&json!({"client_secret": format!("{misplaced} x")})),
        )
        .await,
        app.admin(Method::GET, "/audit-events", None).await,
    ];
    let mut wrong = tenant_body("globex");
    wrong["token_type"] = json!(misplaced);
    responses.push(app.create_tenant(&wrong).await);
    let statuses: Vec<u16> = responses.iter().map(|r| r.status().as_u16()).collect();
    assert_eq!(statuses, [201, 409, 200, 200, 200, 422, 422, 200, 422]);
    for resp in responses {
        bodies.push(resp.text().await.unwrap());
    }
    for (i, text) in bodies.iter().enumerate() {
        for s in [&secret, &rotated, &misplaced] {
            assert!(
                !text.contains(s.as_str()),
                "response {i} leaks a secret: {text}"
            );
        }
    }
    assert!(
        bodies[2].contains("client-acme"),
        "sanity: the tenant body is there"
    );
}

async fn the_database_holds_no_secret_in_plain_text(app: TestApp) {
    let body = tenant_body("acme");
    let secret = secret_of(&body);
    let rotated = format!("rotated-{}", uuid::Uuid::new_v4().simple());
    app.create_tenant(&body).await;
    let resp = app
        .admin(
            Method::PATCH,
            "/tenants/acme",
            Some(&json!({"client_secret": rotated})),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let key = app.create_key(&["token:acme"]).await;

    let dump = app.dump().await;
    assert!(
        contains(&dump, "client-acme"),
        "sanity: the dump holds the tenant row"
    );
    for plain in [&secret, &rotated, &key, &app.admin_key] {
        assert!(!contains(&dump, plain), "plain text stored");
        assert!(
            !contains(&dump, &hex::encode(plain.as_bytes())),
            "hex of plain text stored"
        );
    }
}

async fn no_log_line_contains_a_secret_or_a_key(app: TestApp) {
    let body = tenant_body("logged-tenant");
    let secret = secret_of(&body);
    app.create_tenant(&body).await;
    app.admin(
        Method::PATCH,
        "/tenants/logged-tenant",
        Some(&json!({"client_secret": "logged-rotated-secret"})),
    )
    .await;
    let key = app.create_key(&["token:logged-tenant"]).await;
    app.request(Method::GET, "/tenants", Some(&key), None).await;
    app.request(
        Method::GET,
        "/tenants",
        Some("tv_wrongwrong_wrongkey"),
        None,
    )
    .await;

    let logs = captured_logs();
    assert!(
        logs.contains("logged-tenant"),
        "sanity: this test's requests were logged"
    );
    for s in [
        secret.as_str(),
        "logged-rotated-secret",
        &key,
        &app.admin_key,
        "tv_wrongwrong_wrongkey",
    ] {
        assert!(!logs.contains(s), "a log line contains {s}");
    }
}

async fn start_up_refuses_a_master_key_that_did_not_seal_the_stored_secrets(app: TestApp) {
    app.create_tenant(&tenant_body("acme")).await;
    let mut settings = app.settings.clone();
    settings.master_key = Some(MasterKey::generate().0);
    let err = tokenvend::startup::Application::build(settings)
        .await
        .err()
        .expect("start-up refused");
    let StartupError::Config(err) = err else {
        panic!("a configuration error, not {err:?}")
    };
    assert_eq!(err.variable, "TOKENVEND_MASTER_KEY");
    assert!(err
        .to_string()
        .contains(app.settings.master_key.as_ref().unwrap().id()));
}

async fn a_stored_secret_opens_only_for_its_own_tenant(app: TestApp) {
    let a = tenant_body("a");
    app.create_tenant(&a).await;
    app.create_tenant(&tenant_body("b")).await;
    let store = tokenvend::startup::open_store(&app.settings).await.unwrap();
    let id = tokenvend::domain::TenantId::parse("a").unwrap();
    let sealed: Sealed = store.get_tenant(&id).await.unwrap().unwrap().secret;
    let key = app.settings.master_key.as_ref().unwrap();
    let opened = key.open(Purpose::ClientSecret, "a", &sealed).unwrap();
    assert_eq!(String::from_utf8(opened).unwrap(), secret_of(&a));
    assert_eq!(
        key.open(Purpose::ClientSecret, "b", &sealed),
        Err(CryptoError::Tampered)
    );
    let mut flipped = sealed.clone();
    let last = flipped.bytes.len() - 1;
    flipped.bytes[last] ^= 0x80;
    assert_eq!(
        key.open(Purpose::ClientSecret, "a", &flipped),
        Err(CryptoError::Tampered)
    );
    store.close().await;
}

crate::on_both_backends!(
    no_response_ever_contains_a_client_secret,
    the_database_holds_no_secret_in_plain_text,
    no_log_line_contains_a_secret_or_a_key,
    start_up_refuses_a_master_key_that_did_not_seal_the_stored_secrets,
    a_stored_secret_opens_only_for_its_own_tenant,
);
