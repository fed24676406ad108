use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::helpers::{assert_problem, json_body, tenant_body, Backend, TestApp};

async fn healthz_answers_ok_without_a_key(app: TestApp) {
    let resp = app.request(Method::GET, "/healthz", None, None).await;
    let body = json_body(resp, StatusCode::OK).await;
    assert_eq!(body["status"], "ok");
}

async fn readyz_is_ready_while_the_store_answers(app: TestApp) {
    let resp = app.request(Method::GET, "/readyz", None, None).await;
    let body: Value = json_body(resp, StatusCode::OK).await;
    assert_eq!(body["status"], "ready");
    let expected = match app.backend {
        Backend::Postgres => "postgres",
        Backend::Sqlite => "sqlite",
    };
    assert_eq!(body["store"], expected);
}

async fn without_a_store_readyz_and_writes_answer_503_and_health_stays_ok(app: TestApp) {
    let built = tokenvend::startup::Application::build(app.settings.clone())
        .await
        .expect("builds");
    let address = format!("http://{}", built.local_addr());
    built.state().store.close().await;
    tokio::spawn(built.run_until_stopped(std::future::pending()));

    let resp = app
        .client
        .get(format!("{address}/readyz"))
        .send()
        .await
        .expect("request");
    assert!(resp.headers().contains_key("retry-after"));
    let body = assert_problem(resp, StatusCode::SERVICE_UNAVAILABLE).await;
    assert_eq!(body["type"], "urn:tokenvend:problem:store-unavailable");

    let resp = app
        .client
        .post(format!("{address}/tenants"))
        .bearer_auth(&app.admin_key)
        .json(&tenant_body("acme"))
        .send()
        .await
        .expect("request");
    assert_problem(resp, StatusCode::SERVICE_UNAVAILABLE).await;

    let resp = app
        .client
        .get(format!("{address}/healthz"))
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), StatusCode::OK, "the process is still alive");
}

crate::on_both_backends!(
    readyz_is_ready_while_the_store_answers,
    without_a_store_readyz_and_writes_answer_503_and_health_stays_ok,
);

// HTTP behaviour alone: the backend cannot change these.
crate::on_sqlite_only!(healthz_answers_ok_without_a_key);
