//! The provider and mapping endpoints: create, list, show, delete, audit entries, and
//! every refusal of a body.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use super::{add_mapping, add_provider, jwk, jwks, keys, post, setup, AUDIENCE, ISSUER};
use crate::helpers::{assert_problem, json_body, tenant_body, TestApp};
use crate::{on_both_backends, on_sqlite_only};

async fn providers_and_mappings_are_kept_listed_and_deleted_with_audit_entries(app: TestApp) {
    setup(&app).await;
    let provider = json_body(
        app.admin(Method::GET, "/identity/providers/k8s", None)
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(provider["issuer"], ISSUER);
    assert_eq!(provider["audience"], AUDIENCE);
    assert_eq!(provider["max_lifetime_seconds"], 3600, "the default");
    assert_eq!(provider["subject_claim"], "sub", "the default");
    assert_eq!(provider["jwks"]["keys"].as_array().unwrap().len(), 4);
    assert!(provider["created_at"].is_string());

    let mapping = json_body(
        app.admin(Method::GET, "/identity/mappings/jobs", None)
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(mapping["provider"], "k8s");
    assert_eq!(
        mapping["match"],
        json!({"sub": "system:serviceaccount:jobs:*"})
    );
    assert_eq!(mapping["scopes"], json!(["tenants:read", "tenants:write"]));
    assert_eq!(mapping["cidrs"], json!([]));

    // Paged lists, oldest first.
    add_mapping(&app, "second", json!({"sub": "x"}), &["metrics"]).await;
    let first = json_body(
        app.admin(Method::GET, "/identity/mappings?limit=1", None)
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(first["items"][0]["id"], "jobs");
    let cursor = first["next_cursor"].as_str().expect("a next page");
    let rest = json_body(
        app.admin(
            Method::GET,
            &format!("/identity/mappings?cursor={cursor}"),
            None,
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(rest["items"][0]["id"], "second");
    assert!(rest["next_cursor"].is_null());
    let providers = json_body(
        app.admin(Method::GET, "/identity/providers", None).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(providers["items"].as_array().unwrap().len(), 1);

    // Deleting the provider takes its mappings along.
    let resp = app
        .admin(Method::DELETE, "/identity/providers/k8s", None)
        .await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    for path in ["/identity/providers/k8s", "/identity/mappings/jobs"] {
        assert_problem(
            app.admin(Method::GET, path, None).await,
            StatusCode::NOT_FOUND,
        )
        .await;
    }
    let resp = app
        .admin(Method::DELETE, "/identity/mappings/second", None)
        .await;
    assert_problem(resp, StatusCode::NOT_FOUND).await;

    let events = json_body(
        app.admin(Method::GET, "/audit-events", None).await,
        StatusCode::OK,
    )
    .await;
    let actions: Vec<&str> = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "identity_provider.delete",
            "identity_mapping.create",
            "identity_mapping.create",
            "identity_provider.create"
        ]
    );
    assert_eq!(events["items"][0]["target"], "k8s");
}

async fn a_provider_with_a_taken_id_or_issuer_is_a_conflict(app: TestApp) {
    add_provider(&app).await;
    let set = jwks(&[jwk(&keys().rsa[0], jsonwebtoken::Algorithm::RS256, "a")]);
    let same_id =
        json!({"id": "k8s", "issuer": "https://other.example", "audience": "a", "jwks": set});
    let same_issuer = json!({"id": "other", "issuer": ISSUER, "audience": "a", "jwks": set});
    for body in [same_id, same_issuer] {
        assert_problem(
            post(&app, "/identity/providers", &body).await,
            StatusCode::CONFLICT,
        )
        .await;
    }
    add_mapping(&app, "m", json!({"sub": "x"}), &["metrics"]).await;
    let again = json!({"id": "m", "provider": "k8s", "match": {"sub": "y"}, "scopes": ["metrics"]});
    assert_problem(
        post(&app, "/identity/mappings", &again).await,
        StatusCode::CONFLICT,
    )
    .await;
}

on_both_backends! {
    providers_and_mappings_are_kept_listed_and_deleted_with_audit_entries,
    a_provider_with_a_taken_id_or_issuer_is_a_conflict,
}

/// Applies `patch` (field → value; `null` removes the field) to `base`.
fn patched(base: &Value, patch: &Value) -> Value {
    let mut body = base.clone();
    for (field, value) in patch.as_object().unwrap() {
        if value.is_null() {
            body.as_object_mut().unwrap().remove(field);
        } else {
            body[field] = value.clone();
        }
    }
    body
}

async fn invalid_providers_are_refused_each_with_its_field(app: TestApp) {
    let public = jwk(&keys().rsa[0], jsonwebtoken::Algorithm::RS256, "a");
    let mut private = public.clone();
    private["d"] = json!("AQAB");
    let base = json!({"id": "p", "issuer": "https://issuer.example", "audience": "tokenvend",
                      "jwks": jwks(&[public])});
    let cases = [
        ("no issuer", json!({"issuer": null}), "issuer"),
        ("no audience", json!({"audience": null}), "audience"),
        ("an empty audience", json!({"audience": ""}), "audience"),
        (
            "an id outside the pattern",
            json!({"id": "Not_An_Id"}),
            "id",
        ),
        ("neither jwks nor jwks_url", json!({"jwks": null}), "jwks"),
        (
            "both jwks and jwks_url",
            json!({"jwks_url": "https://issuer.example/jwks"}),
            "jwks",
        ),
        (
            "a private key",
            json!({"jwks": {"keys": [private]}}),
            "jwks",
        ),
        (
            "a symmetric key",
            json!({"jwks": {"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}}),
            "jwks",
        ),
        ("an empty key set", json!({"jwks": {"keys": []}}), "jwks"),
        (
            "a jwks_url that is no URL",
            json!({"jwks": null, "jwks_url": "not a url"}),
            "jwks_url",
        ),
        (
            "a lifetime of 0",
            json!({"max_lifetime_seconds": 0}),
            "max_lifetime_seconds",
        ),
        (
            "a lifetime over a day",
            json!({"max_lifetime_seconds": 86_401}),
            "max_lifetime_seconds",
        ),
    ];
    for (what, patch, field) in cases {
        let resp = post(&app, "/identity/providers", &patched(&base, &patch)).await;
        let body = assert_problem(resp, StatusCode::UNPROCESSABLE_ENTITY).await;
        assert_eq!(body["field"], field, "{what}: {body}");
    }
}

async fn invalid_mappings_are_refused_each_with_its_field(app: TestApp) {
    add_provider(&app).await;
    let base = json!({"id": "m", "provider": "k8s", "match": {"sub": "x"}, "scopes": ["token:*"]});
    let cases = [
        (
            "an unknown provider",
            json!({"provider": "nobody"}),
            "provider",
        ),
        ("the admin scope", json!({"scopes": ["admin"]}), "scopes[0]"),
        ("no scope", json!({"scopes": []}), "scopes"),
        (
            "a tenant that does not exist",
            json!({"scopes": ["token:ghost"]}),
            "scopes",
        ),
        ("no match", json!({"match": null}), "match"),
        ("an empty match", json!({"match": {}}), "match"),
        (
            "a match value that is no string",
            json!({"match": {"sub": true}}),
            "match",
        ),
        (
            "a CIDR that is none",
            json!({"cidrs": ["10.0.0.0/40"]}),
            "cidrs[0]",
        ),
    ];
    for (what, patch, field) in cases {
        let resp = post(&app, "/identity/mappings", &patched(&base, &patch)).await;
        let body = assert_problem(resp, StatusCode::UNPROCESSABLE_ENTITY).await;
        assert_eq!(body["field"], field, "{what}: {body}");
    }
    // A tenant scope binds to the tenant that exists.
    app.create_tenant(&tenant_body("acme")).await;
    let body = patched(&base, &json!({"scopes": ["token:acme"]}));
    let made = json_body(
        post(&app, "/identity/mappings", &body).await,
        StatusCode::CREATED,
    )
    .await;
    assert_eq!(made["scopes"], json!(["token:acme"]));
}

async fn the_identity_endpoints_need_admin(app: TestApp) {
    let key = app.create_key(&["tenants:write"]).await;
    for (method, path) in [
        (Method::GET, "/identity/providers"),
        (Method::POST, "/identity/providers"),
        (Method::DELETE, "/identity/providers/k8s"),
        (Method::GET, "/identity/mappings/m"),
        (Method::POST, "/identity/mappings"),
    ] {
        let resp = app
            .request(method.clone(), path, Some(&key), Some(&json!({})))
            .await;
        assert_problem(resp, StatusCode::FORBIDDEN).await;
        let resp = app.request(method, path, None, None).await;
        assert_problem(resp, StatusCode::UNAUTHORIZED).await;
    }
}

on_sqlite_only! {
    invalid_providers_are_refused_each_with_its_field,
    invalid_mappings_are_refused_each_with_its_field,
    the_identity_endpoints_need_admin,
}
