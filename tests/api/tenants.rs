use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::{assert_problem, json_body, spawn_app_with, tenant_body, TestApp};

async fn a_tenant_can_be_created_read_listed_updated_and_deleted(app: TestApp) {
    let body = tenant_body("acme");
    let resp = app.create_tenant(&body).await;
    assert_eq!(resp.headers()["location"], "/tenants/acme");
    let created = json_body(resp, StatusCode::CREATED).await;
    assert_eq!(created["id"], "acme");
    assert_eq!(created["name"], "Tenant acme");
    assert_eq!(created["client_id"], "client-acme");
    assert_eq!(created["scope"], "read write");
    assert_eq!(created["token_type"], "jwt");
    assert_eq!(created["asymmetric_jwt"], false);
    assert_eq!(created["token_url"], Value::Null);
    assert!(created.get("client_secret").is_none());
    assert!(created["created_at"].as_str().unwrap().ends_with('Z'));

    let read = json_body(
        app.admin(Method::GET, "/tenants/acme", None).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(read, created);

    let list = json_body(
        app.admin(Method::GET, "/tenants", None).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(list["items"], json!([created]));
    assert_eq!(list["next_cursor"], Value::Null);

    let patch = json!({
        "name": "Acme Corp",
        "token_url": "https://lms.example.com/oauth2/access_token",
        "client_secret": "the-secret-for-the-new-url",
        "token_type": "bearer",
        "scope": null,
    });
    let updated = json_body(
        app.admin(Method::PATCH, "/tenants/acme", Some(&patch))
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(updated["name"], "Acme Corp");
    assert_eq!(
        updated["token_url"],
        "https://lms.example.com/oauth2/access_token"
    );
    assert_eq!(updated["token_type"], "bearer");
    assert_eq!(updated["scope"], Value::Null, "null clears the scope");
    assert_eq!(
        updated["client_id"], "client-acme",
        "absent fields are kept"
    );
    let read = json_body(
        app.admin(Method::GET, "/tenants/acme", None).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(read, updated, "the update was stored");

    let resp = app.admin(Method::DELETE, "/tenants/acme", None).await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let resp = app.admin(Method::GET, "/tenants/acme", None).await;
    assert_problem(resp, StatusCode::NOT_FOUND).await;
    let resp = app.admin(Method::DELETE, "/tenants/acme", None).await;
    assert_problem(resp, StatusCode::NOT_FOUND).await;
}

async fn creating_an_existing_id_is_a_conflict_and_keeps_the_original(app: TestApp) {
    let first = tenant_body("acme");
    assert_eq!(
        app.create_tenant(&first).await.status(),
        StatusCode::CREATED
    );
    let mut second = tenant_body("acme");
    second["name"] = json!("Impostor");
    let body = assert_problem(app.create_tenant(&second).await, StatusCode::CONFLICT).await;
    assert_eq!(body["type"], "urn:tokenvend:problem:conflict");
    let read = json_body(
        app.admin(Method::GET, "/tenants/acme", None).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(read["name"], "Tenant acme");
}

async fn invalid_tenant_fields_are_422_naming_the_field(app: TestApp) {
    let cases: Vec<(&str, Value, &str)> = vec![
        ("missing id", json!({"id": null}), "id"),
        ("missing name", json!({"name": null}), "name"),
        ("missing client_id", json!({"client_id": null}), "client_id"),
        (
            "missing client_secret",
            json!({"client_secret": null}),
            "client_secret",
        ),
        ("uppercase id", json!({"id": "Acme"}), "id"),
        ("id too long", json!({"id": "a".repeat(64)}), "id"),
        ("id with underscore", json!({"id": "acme_corp"}), "id"),
        ("blank name", json!({"name": "   "}), "name"),
        (
            "client id with space",
            json!({"client_id": "a b"}),
            "client_id",
        ),
        (
            "empty client secret",
            json!({"client_secret": ""}),
            "client_secret",
        ),
        (
            "unknown token type",
            json!({"token_type": "mac"}),
            "token_type",
        ),
        (
            "token url not a url",
            json!({"token_url": "nope"}),
            "token_url",
        ),
        (
            "token url ftp",
            json!({"token_url": "ftp://lms.example.com/x"}),
            "token_url",
        ),
        (
            "jwks url with credentials",
            json!({"jwks_url": "https://u:p@lms.example.com/jwks"}),
            "jwks_url",
        ),
        ("blank scope", json!({"scope": " "}), "scope"),
        ("scope with quote", json!({"scope": "read \"x\""}), "scope"),
        (
            "asymmetric_jwt not a bool",
            json!({"asymmetric_jwt": "yes"}),
            "asymmetric_jwt",
        ),
        ("name not a string", json!({"name": 42}), "name"),
        (
            "unknown field",
            json!({"client_secrett": "x"}),
            "client_secrett",
        ),
    ];
    for (why, overrides, field) in cases {
        let mut body = tenant_body("acme");
        for (k, v) in overrides.as_object().unwrap() {
            body[k] = v.clone();
        }
        let resp = app.create_tenant(&body).await;
        let problem = assert_problem(resp, StatusCode::UNPROCESSABLE_ENTITY).await;
        assert_eq!(problem["field"], field, "{why}: {problem}");
        assert_eq!(problem["type"], "urn:tokenvend:problem:validation", "{why}");
    }
    let list = json_body(
        app.admin(Method::GET, "/tenants", None).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(list["items"], json!([]), "nothing was created");
}

async fn token_urls_must_be_public_https_unless_insecure_urls_are_allowed(app: TestApp) {
    let backend = app.backend;
    drop(app);
    let app = spawn_app_with(backend, |s| s.allow_insecure_token_urls = false).await;
    let rejected = [
        "http://lms.example.com/oauth2/access_token",
        "https://127.0.0.1/oauth2/access_token",
        "https://localhost:8000/oauth2/access_token",
        "https://169.254.169.254/latest/meta-data/",
        "https://10.0.0.5/oauth2/access_token",
        "https://[::1]/oauth2/access_token",
        "https://metadata.google.internal/computeMetadata/v1/",
    ];
    for url in rejected {
        let mut body = tenant_body("acme");
        body["token_url"] = json!(url);
        let problem = assert_problem(
            app.create_tenant(&body).await,
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
        assert_eq!(problem["field"], "token_url", "{url}");
    }
    let mut body = tenant_body("acme");
    body["token_url"] = json!("https://courses.example.com/oauth2/access_token");
    assert_eq!(app.create_tenant(&body).await.status(), StatusCode::CREATED);
    let patch = json!({ "jwks_url": "https://192.168.1.10/.well-known/jwks.json" });
    let problem = assert_problem(
        app.admin(Method::PATCH, "/tenants/acme", Some(&patch))
            .await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_eq!(problem["field"], "jwks_url");
}

async fn the_tenant_list_pages_in_id_order_with_an_opaque_cursor(app: TestApp) {
    for id in ["e", "a", "c-1", "b", "c", "d"] {
        assert_eq!(
            app.create_tenant(&tenant_body(id)).await.status(),
            StatusCode::CREATED
        );
    }
    let mut seen = Vec::new();
    let mut path = "/tenants?limit=4".to_owned();
    let mut pages = 0;
    loop {
        let page = json_body(app.admin(Method::GET, &path, None).await, StatusCode::OK).await;
        pages += 1;
        let items = page["items"].as_array().unwrap();
        assert!(items.len() <= 4);
        seen.extend(items.iter().map(|t| t["id"].as_str().unwrap().to_owned()));
        match page["next_cursor"].as_str() {
            Some(cursor) => path = format!("/tenants?limit=4&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(pages, 2);
    assert_eq!(seen, ["a", "b", "c", "c-1", "d", "e"]);

    for bad in [
        "/tenants?limit=0",
        "/tenants?limit=501",
        "/tenants?limit=x",
        "/tenants?cursor=%%%",
    ] {
        assert_problem(
            app.admin(Method::GET, bad, None).await,
            StatusCode::BAD_REQUEST,
        )
        .await;
    }
}

async fn patch_rules_null_required_fields_unknown_ids_and_no_op_updates(app: TestApp) {
    assert_eq!(
        app.create_tenant(&tenant_body("acme")).await.status(),
        StatusCode::CREATED
    );
    for field in [
        "name",
        "client_id",
        "client_secret",
        "token_type",
        "asymmetric_jwt",
    ] {
        let patch = json!({ field: null });
        let problem = assert_problem(
            app.admin(Method::PATCH, "/tenants/acme", Some(&patch))
                .await,
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
        assert_eq!(problem["field"], field);
    }
    let problem = assert_problem(
        app.admin(
            Method::PATCH,
            "/tenants/acme",
            Some(&json!({"id": "other"})),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_eq!(problem["field"], "id", "the id cannot be changed");

    let resp = app
        .admin(
            Method::PATCH,
            "/tenants/nobody",
            Some(&json!({"name": "x"})),
        )
        .await;
    assert_problem(resp, StatusCode::NOT_FOUND).await;

    let before = json_body(
        app.admin(Method::GET, "/tenants/acme", None).await,
        StatusCode::OK,
    )
    .await;
    let same = json!({ "name": before["name"], "scope": "read   write" });
    let after = json_body(
        app.admin(Method::PATCH, "/tenants/acme", Some(&same)).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(
        after, before,
        "an update that changes nothing writes nothing"
    );
    let events = app
        .raw_count(
            "SELECT COUNT(*) FROM audit_events WHERE action = 'tenant.update'",
            &[],
        )
        .await;
    assert_eq!(events, 0);
}

async fn changing_credentials_drops_the_stored_token_and_other_changes_keep_it(app: TestApp) {
    assert_eq!(
        app.create_tenant(&tenant_body("acme")).await.status(),
        StatusCode::CREATED
    );
    let insert_token = "INSERT INTO tokens (tenant_id, tenant_uid, key_id, ciphertext, \
         token_type, scope, fetched_at, expires_at) SELECT id, uid, 'k', 'x', 'jwt', NULL, \
         CURRENT_TIMESTAMP, CURRENT_TIMESTAMP FROM tenants WHERE id = $1";
    let count = "SELECT COUNT(*) FROM tokens WHERE tenant_id = $1";

    app.raw_execute(insert_token, &["acme"]).await;
    let resp = app
        .admin(
            Method::PATCH,
            "/tenants/acme",
            Some(&json!({"name": "Renamed"})),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        app.raw_count(count, &["acme"]).await,
        1,
        "a rename keeps the token"
    );

    for patch in [
        json!({"client_secret": "rotated-secret"}),
        json!({"client_id": "new-client"}),
        json!({"scope": "read"}),
        json!({"token_type": "bearer"}),
        json!({
            "token_url": "https://lms.example.com/oauth2/access_token",
            "client_secret": "secret-for-the-new-url",
        }),
        json!({"asymmetric_jwt": true}),
    ] {
        if app.raw_count(count, &["acme"]).await == 0 {
            app.raw_execute(insert_token, &["acme"]).await;
        }
        let resp = app
            .admin(Method::PATCH, "/tenants/acme", Some(&patch))
            .await;
        assert_eq!(resp.status(), StatusCode::OK, "{patch}");
        assert_eq!(
            app.raw_count(count, &["acme"]).await,
            0,
            "{patch} drops the token"
        );
    }

    app.raw_execute(insert_token, &["acme"]).await;
    assert_eq!(
        app.admin(Method::DELETE, "/tenants/acme", None)
            .await
            .status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        app.raw_count(count, &["acme"]).await,
        0,
        "a delete drops the token"
    );
}

async fn every_change_is_in_the_audit_trail_without_secrets(app: TestApp) {
    let body = tenant_body("acme");
    app.create_tenant(&body).await;
    app.admin(
        Method::PATCH,
        "/tenants/acme",
        Some(&json!({"client_secret": "rotated-s3cret"})),
    )
    .await;
    app.admin(Method::DELETE, "/tenants/acme", None).await;
    let key = app.create_key(&["tenants:read"]).await;
    let key_id = key.split('_').nth(1).unwrap().to_owned();
    app.admin(Method::DELETE, &format!("/api-keys/{key_id}"), None)
        .await;

    let resp = app.admin(Method::GET, "/audit-events?limit=3", None).await;
    let page = json_body(resp, StatusCode::OK).await;
    let mut events: Vec<Value> = page["items"].as_array().unwrap().clone();
    let cursor = page["next_cursor"]
        .as_str()
        .expect("a second page")
        .to_owned();
    let rest = json_body(
        app.admin(Method::GET, &format!("/audit-events?cursor={cursor}"), None)
            .await,
        StatusCode::OK,
    )
    .await;
    events.extend(rest["items"].as_array().unwrap().iter().cloned());
    let actions: Vec<&str> = events
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "api_key.revoke",
            "api_key.create",
            "tenant.delete",
            "tenant.update",
            "tenant.create"
        ],
        "newest first"
    );
    assert!(events.iter().all(|e| e["actor"] == "bootstrap"));
    assert!(events.iter().all(|e| e["request_id"].is_string()));
    // Tenant events name the tenant row's identity, the same through its life.
    let uid = events[4]["details"]["uid"]
        .as_str()
        .expect("a uid")
        .to_owned();
    assert_eq!(
        events[3]["details"],
        json!({"changed": ["client_secret"], "uid": uid})
    );
    assert_eq!(events[2]["details"], json!({ "uid": uid }));
    assert_eq!(events[0]["target"], key_id);
    let text = serde_json::to_string(&events).unwrap();
    assert!(
        !text.contains("rotated-s3cret") && !text.contains(body["client_secret"].as_str().unwrap())
    );
    assert!(!text.contains(&key));
}

crate::on_both_backends!(
    a_tenant_can_be_created_read_listed_updated_and_deleted,
    creating_an_existing_id_is_a_conflict_and_keeps_the_original,
    the_tenant_list_pages_in_id_order_with_an_opaque_cursor,
    patch_rules_null_required_fields_unknown_ids_and_no_op_updates,
    changing_credentials_drops_the_stored_token_and_other_changes_keep_it,
    every_change_is_in_the_audit_trail_without_secrets,
);

// HTTP behaviour alone: the backend cannot change these.
crate::on_sqlite_only!(
    invalid_tenant_fields_are_422_naming_the_field,
    token_urls_must_be_public_https_unless_insecure_urls_are_allowed,
);
