//! Webhooks: registration, Standard Webhooks signatures, at-least-once delivery with
//! retries, restarts and replicas, the lifecycle events and the outbound rules — checked
//! with a real receiver on loopback.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode as AxumStatus};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use edx_issuer::Failure;
use hmac::{Hmac, Mac};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use sha2::Sha256;
use tokenvend::clock::Clock;
use tokio::net::TcpListener;

use crate::helpers::{
    assert_problem, contains, eventually, json_body, spawn_app_with, Backend, TestApp,
};

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    pub headers: HashMap<String, String>,
    pub body: String,
}

impl Received {
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).map_or("", String::as_str)
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).expect("webhook body is JSON")
    }
}

/// A webhook receiver on 127.0.0.1: records every request and answers with the statuses
/// it is told to, in order (then `200`).
#[derive(Clone, Default)]
pub struct Receiver {
    received: Arc<Mutex<Vec<Received>>>,
    answers: Arc<Mutex<VecDeque<u16>>>,
}

impl Receiver {
    /// Starts receiving on `listener`; stops when the returned handle is aborted.
    pub fn serve(&self, listener: TcpListener) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: HeaderMap, body: Bytes| {
                let me = me.clone();
                async move {
                    let headers = headers
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_owned()))
                        .collect();
                    let body = String::from_utf8_lossy(&body).into_owned();
                    me.received.lock().unwrap().push(Received { headers, body });
                    let status = me.answers.lock().unwrap().pop_front().unwrap_or(200);
                    AxumStatus::from_u16(status).unwrap()
                }
            }),
        );
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        })
    }

    /// A receiver on a fresh port, and its URL.
    pub async fn start() -> (Self, String, tokio::task::JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let receiver = Self::default();
        let server = receiver.serve(listener);
        (receiver, url, server)
    }

    pub fn answer_next(&self, statuses: &[u16]) {
        self.answers.lock().unwrap().extend(statuses);
    }

    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.received.lock().unwrap().len()
    }

    /// The `type` of every event received, in order.
    pub fn types(&self) -> Vec<String> {
        self.received()
            .iter()
            .map(|r| r.json()["type"].as_str().unwrap_or("").to_owned())
            .collect()
    }
}

/// Registers a webhook for `events`; returns its id and secret.
pub async fn register(app: &TestApp, url: &str, events: &[&str]) -> (String, String) {
    let created = json_body(
        app.admin(
            Method::POST,
            "/webhooks",
            Some(&json!({ "url": url, "events": events, "description": "test receiver" })),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    (
        created["id"].as_str().unwrap().to_owned(),
        created["secret"].as_str().unwrap().to_owned(),
    )
}

async fn deliveries(app: &TestApp, id: &str) -> Vec<Value> {
    let body = json_body(
        app.admin(Method::GET, &format!("/webhooks/{id}/deliveries"), None)
            .await,
        StatusCode::OK,
    )
    .await;
    body["items"].as_array().unwrap().clone()
}

/// Recomputes the signature as the specification says: HMAC-SHA256 of
/// `{id}.{timestamp}.{body}` keyed with the bytes after `whsec_`, base64, after `v1,`.
pub fn expected_signature(secret: &str, received: &Received) -> String {
    let key = BASE64
        .decode(secret.strip_prefix("whsec_").unwrap())
        .unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(
        format!(
            "{}.{}.{}",
            received.header("webhook-id"),
            received.header("webhook-timestamp"),
            received.body
        )
        .as_bytes(),
    );
    format!("v1,{}", BASE64.encode(mac.finalize().into_bytes()))
}

async fn a_test_event_arrives_signed_per_the_specification(app: TestApp) {
    let (receiver, url, _server) = Receiver::start().await;
    let (id, secret) = register(&app, &url, &["*"]).await;
    let answer = json_body(
        app.admin(Method::POST, &format!("/webhooks/{id}/test"), None)
            .await,
        StatusCode::ACCEPTED,
    )
    .await;
    let event_id = answer["event_id"].as_str().unwrap().to_owned();
    eventually("the test event", async || receiver.count() == 1).await;

    let got = &receiver.received()[0];
    assert_eq!(got.header("webhook-id"), event_id);
    assert_eq!(got.header("content-type"), "application/json");
    let timestamp: i64 = got.header("webhook-timestamp").parse().unwrap();
    assert!((timestamp - app.clock.now().timestamp()).abs() <= 1);
    assert_eq!(
        got.header("webhook-signature"),
        expected_signature(&secret, got)
    );
    let body = got.json();
    assert_eq!(body["type"], "webhook.test");
    assert_eq!(body["data"], json!({ "webhook_id": id }));
    assert!(body["timestamp"].as_str().unwrap().ends_with('Z'), "{body}");

    eventually("the delivery recorded", async || {
        deliveries(&app, &id)
            .await
            .first()
            .map(|d| d["status"].clone())
            == Some(json!("delivered"))
    })
    .await;
    assert_eq!(
        deliveries(&app, &id).await,
        vec![json!({
            "event_id": event_id, "type": "webhook.test", "status": "delivered",
            "attempts": 1, "last_status_code": 200, "next_attempt_at": null,
        })]
    );
}

async fn a_receiver_answering_500_gets_the_event_again_after_five_seconds(app: TestApp) {
    let (receiver, url, _server) = Receiver::start().await;
    receiver.answer_next(&[500]);
    let (id, _) = register(&app, &url, &["tenant.created"]).await;
    app.issuer_tenant("acme").await;
    eventually("the first attempt", async || receiver.count() == 1).await;
    eventually("the failed attempt recorded", async || {
        deliveries(&app, &id)
            .await
            .first()
            .map(|d| d["attempts"].clone())
            == Some(json!(1))
    })
    .await;
    let pending = deliveries(&app, &id).await;
    assert_eq!(pending[0]["status"], "pending");
    assert_eq!(pending[0]["last_status_code"], 500);
    assert!(pending[0]["next_attempt_at"].is_string(), "{pending:?}");

    // Not before its time: the retry waits about five seconds.
    app.advance(3);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(receiver.count(), 1, "no retry before the 5 s wait");
    app.advance(3);
    eventually("the second attempt", async || receiver.count() == 2).await;
    eventually("the delivery recorded", async || {
        deliveries(&app, &id).await[0]["status"] == "delivered"
    })
    .await;
    let delivered = deliveries(&app, &id).await;
    assert_eq!(delivered[0]["attempts"], 2);
    assert_eq!(delivered[0]["last_status_code"], 200);
    assert_eq!(delivered[0]["next_attempt_at"], Value::Null);
    let [first, second] = &receiver.received()[..] else {
        panic!("two attempts")
    };
    assert_eq!(first.header("webhook-id"), second.header("webhook-id"));
    assert_eq!(first.body, second.body, "the same event both times");
    assert_eq!(second.json()["data"]["tenant_id"], "acme");
}

async fn a_delivery_is_marked_failed_after_the_last_retry(app: TestApp) {
    let (receiver, url, _server) = Receiver::start().await;
    receiver.answer_next(&[503; 6]);
    let (id, _) = register(&app, &url, &["tenant.deleted"]).await;
    app.issuer_tenant("acme").await;
    let resp = app.admin(Method::DELETE, "/tenants/acme", None).await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    // About 5 s, 30 s, 2 min, 10 min and 1 h apart: six attempts in all.
    for (attempt, wait) in [(1, 5), (2, 30), (3, 120), (4, 600), (5, 3600)] {
        eventually("an attempt", async || receiver.count() == attempt).await;
        eventually("it is recorded", async || {
            deliveries(&app, &id).await[0]["attempts"] == attempt
        })
        .await;
        app.advance(wait + 1);
    }
    eventually("the last attempt", async || receiver.count() == 6).await;
    eventually("the delivery failed", async || {
        deliveries(&app, &id).await[0]["status"] == "failed"
    })
    .await;
    let failed = &deliveries(&app, &id).await[0];
    assert_eq!(failed["attempts"], 6);
    assert_eq!(failed["last_status_code"], 503);
    assert_eq!(failed["next_attempt_at"], Value::Null);
    let shown = json_body(
        app.admin(Method::GET, &format!("/webhooks/{id}"), None)
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(shown["failed_deliveries"], 1, "{shown}");
    app.advance(7200);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(receiver.count(), 6, "no attempt after failing");
}

async fn an_event_raised_while_the_receiver_is_down_arrives_after_a_restart(mut app: TestApp) {
    // A port with nobody listening: the connection is refused.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    drop(listener);
    let url = format!("http://{address}/hook");
    let (id, secret) = register(&app, &url, &["tenant.created"]).await;
    app.issuer_tenant("acme").await;
    eventually("the refused attempt recorded", async || {
        deliveries(&app, &id)
            .await
            .first()
            .map(|d| d["attempts"].clone())
            == Some(json!(1))
    })
    .await;
    let pending = deliveries(&app, &id).await;
    assert_eq!(pending[0]["status"], "pending");
    assert_eq!(pending[0]["last_status_code"], Value::Null);

    app.stop().await;
    let receiver = Receiver::default();
    let _server = receiver.serve(TcpListener::bind(address).await.unwrap());
    app.restart().await;
    app.advance(6);
    eventually("the event after the restart", async || {
        receiver.count() == 1
    })
    .await;
    let got = &receiver.received()[0];
    assert_eq!(got.json()["type"], "tenant.created");
    assert_eq!(got.json()["data"]["tenant_id"], "acme");
    assert_eq!(
        got.header("webhook-signature"),
        expected_signature(&secret, got)
    );
    eventually("the delivery recorded", async || {
        deliveries(&app, &id).await[0]["status"] == "delivered"
    })
    .await;
}

async fn finished_deliveries_are_pruned_after_seven_days(mut app: TestApp) {
    let (receiver, url, _server) = Receiver::start().await;
    let (id, _) = register(&app, &url, &["tenant.created"]).await;
    app.issuer_tenant("acme").await;
    eventually("the delivery", async || {
        deliveries(&app, &id)
            .await
            .first()
            .map(|d| d["status"].clone())
            == Some(json!("delivered"))
    })
    .await;
    assert_eq!(receiver.count(), 1);
    let stored = "SELECT COUNT(*) FROM webhook_events";
    assert_eq!(app.raw_count(stored, &[]).await, 1);

    // Six days on, a restart (the worker prunes when it starts, then hourly) keeps it.
    app.advance(6 * 24 * 3600);
    app.restart().await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(deliveries(&app, &id).await.len(), 1, "kept for 7 days");
    // Past seven days it is gone, with its event.
    app.advance(2 * 24 * 3600);
    app.restart().await;
    eventually("the delivery pruned", async || {
        deliveries(&app, &id).await.is_empty()
    })
    .await;
    eventually("the event pruned", async || {
        app.raw_count(stored, &[]).await == 0
    })
    .await;
    assert_eq!(receiver.count(), 1, "nothing was sent again");
}

async fn tenant_changes_and_token_transitions_raise_one_event_each(app: TestApp) {
    let (receiver, url, _server) = Receiver::start().await;
    register(&app, &url, &["*"]).await;
    let client = app.issuer_tenant("acme").await;
    assert_eq!(app.get_token("acme").await.status(), StatusCode::OK);
    let resp = app
        .admin(
            Method::PATCH,
            "/tenants/acme",
            Some(&json!({ "name": "Acme Inc." })),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::OK);

    // edX goes down and the token runs out: one refresh_failed however often it is
    // retried, and one expired.
    app.issuer
        .configure(&client, |b| b.failure = Some(Failure::Unavailable));
    app.advance(3600);
    assert_ne!(app.get_token("acme").await.status(), StatusCode::OK);
    app.advance(120);
    assert_ne!(app.get_token("acme").await.status(), StatusCode::OK);
    eventually("refresh_failed and expired", async || {
        let types = receiver.types();
        types.contains(&"token.refresh_failed".to_owned())
            && types.contains(&"token.expired".to_owned())
    })
    .await;

    // edX is back.
    app.issuer.configure(&client, |b| b.failure = None);
    app.advance(120);
    assert_eq!(app.get_token("acme").await.status(), StatusCode::OK);
    eventually("recovered", async || {
        receiver.types().contains(&"token.recovered".to_owned())
    })
    .await;

    // edX refuses the credentials.
    app.issuer
        .configure(&client, |b| b.failure = Some(Failure::InvalidClient));
    app.advance(3600);
    assert_ne!(app.get_token("acme").await.status(), StatusCode::OK);
    eventually("credentials_rejected", async || {
        receiver
            .types()
            .contains(&"token.credentials_rejected".to_owned())
    })
    .await;
    app.advance(600);
    assert_ne!(app.get_token("acme").await.status(), StatusCode::OK);
    eventually("expired again", async || {
        receiver
            .types()
            .iter()
            .filter(|t| *t == "token.expired")
            .count()
            == 2
    })
    .await;
    let resp = app.admin(Method::DELETE, "/tenants/acme", None).await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    eventually("tenant.deleted", async || {
        receiver.types().contains(&"tenant.deleted".to_owned())
    })
    .await;

    let mut types = receiver.types();
    types.sort();
    assert_eq!(
        types,
        [
            "tenant.created",
            "tenant.deleted",
            "tenant.updated",
            "token.credentials_rejected",
            // Once while edX was down, once while it refused the credentials.
            "token.expired",
            "token.expired",
            "token.recovered",
            "token.refresh_failed",
            "token.refresh_failed",
        ]
    );
    for got in receiver.received() {
        let body = got.json();
        assert_eq!(body["data"]["tenant_id"], "acme", "{body}");
        for field in ["access_token", "client_secret", "secret", "token"] {
            assert!(body["data"].get(field).is_none(), "{body}");
        }
    }
    let by_type = |kind: &str| {
        receiver
            .received()
            .into_iter()
            .map(|r| r.json())
            .find(|b| b["type"] == kind)
            .unwrap()
    };
    assert_eq!(
        by_type("tenant.updated")["data"]["changed"],
        json!(["name"])
    );
    assert_eq!(
        by_type("token.credentials_rejected")["data"],
        json!({ "tenant_id": "acme", "status": 401, "error": "invalid_client" })
    );
    assert_eq!(by_type("token.recovered")["data"]["state"], "valid");
}

async fn only_subscribed_events_are_delivered(app: TestApp) {
    let (all, all_url, _a) = Receiver::start().await;
    let (deletions, deletions_url, _d) = Receiver::start().await;
    register(&app, &all_url, &["*"]).await;
    register(&app, &deletions_url, &["tenant.deleted"]).await;
    app.issuer_tenant("acme").await;
    let resp = app.admin(Method::DELETE, "/tenants/acme", None).await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    eventually("both events to *", async || all.count() == 2).await;
    eventually("the deletion", async || deletions.count() == 1).await;
    assert_eq!(deletions.types(), ["tenant.deleted"]);
}

async fn webhooks_can_be_listed_shown_and_deleted_and_the_secret_is_shown_once(app: TestApp) {
    let created = json_body(
        app.admin(
            Method::POST,
            "/webhooks",
            Some(&json!({
                "url": "https://hooks.example.invalid/tokenvend",
                "events": ["token.refresh_failed", "token.recovered", "token.refresh_failed"],
                "description": "ops pager",
            })),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    let id = created["id"].as_str().unwrap().to_owned();
    let secret = created["secret"].as_str().unwrap().to_owned();
    let key = BASE64
        .decode(secret.strip_prefix("whsec_").expect("whsec_ prefix"))
        .unwrap();
    assert!((24..=64).contains(&key.len()), "{} bytes", key.len());
    assert_eq!(
        created["events"],
        json!(["token.refresh_failed", "token.recovered"])
    );
    assert_eq!(created["failed_deliveries"], 0);

    let resp = app.admin(Method::GET, "/webhooks", None).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let text = resp.text().await.unwrap();
    assert!(!text.contains(&secret), "the list never shows the secret");
    let list: Value = serde_json::from_str(&text).unwrap();
    let mut expected = created.clone();
    expected.as_object_mut().unwrap().remove("secret");
    assert_eq!(list["items"], json!([expected.clone()]));

    let resp = app
        .admin(Method::GET, &format!("/webhooks/{id}"), None)
        .await;
    let text = resp.text().await.unwrap();
    assert!(!text.contains(&secret));
    assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), expected);
    assert!(!contains(&app.dump().await, &secret), "stored sealed");
    assert!(!contains(&app.dump().await, &key_text(&key)));

    let resp = app
        .admin(Method::DELETE, &format!("/webhooks/{id}"), None)
        .await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    for (method, path) in [
        (Method::GET, format!("/webhooks/{id}")),
        (Method::DELETE, format!("/webhooks/{id}")),
        (Method::GET, format!("/webhooks/{id}/deliveries")),
        (Method::POST, format!("/webhooks/{id}/test")),
        (Method::GET, "/webhooks/not-a-webhook-id".to_owned()),
    ] {
        let resp = app.admin(method.clone(), &path, None).await;
        assert_problem(resp, StatusCode::NOT_FOUND).await;
    }
    let list = json_body(
        app.admin(Method::GET, "/webhooks", None).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(list["items"], json!([]));
    let audit = json_body(
        app.admin(Method::GET, "/audit-events", None).await,
        StatusCode::OK,
    )
    .await;
    let actions: Vec<&str> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["action"].as_str())
        .filter(|a| a.starts_with("webhook."))
        .collect();
    assert_eq!(actions, ["webhook.delete", "webhook.create"]);
}

/// The raw key bytes as lowercase hex (what a careless store might have written).
fn key_text(key: &[u8]) -> String {
    key.iter().map(|b| format!("{b:02x}")).collect()
}

async fn webhooks_need_the_admin_scope(app: TestApp) {
    let key = app
        .create_key(&["tenants:read", "tenants:write", "token:*", "metrics"])
        .await;
    let id = "wh_00000000000000000000000000000000";
    for (method, path, body) in [
        (
            Method::POST,
            "/webhooks".to_owned(),
            Some(json!({ "url": "https://hooks.example.invalid/x", "events": ["*"] })),
        ),
        (Method::GET, "/webhooks".to_owned(), None),
        (Method::GET, format!("/webhooks/{id}"), None),
        (Method::DELETE, format!("/webhooks/{id}"), None),
        (Method::GET, format!("/webhooks/{id}/deliveries"), None),
        (Method::POST, format!("/webhooks/{id}/test"), None),
    ] {
        let resp = app
            .request(method.clone(), &path, Some(&key), body.as_ref())
            .await;
        let problem = assert_problem(resp, StatusCode::FORBIDDEN).await;
        assert!(
            problem["detail"].as_str().unwrap().contains("admin"),
            "{method} {path}: {problem}"
        );
        let resp = app
            .request(method.clone(), &path, None, body.as_ref())
            .await;
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{method} {path}");
    }
}

async fn bad_webhook_input_is_a_problem_naming_the_field(app: TestApp) {
    let long = "d".repeat(501);
    let cases = [
        (json!({ "events": ["*"] }), "url", "a missing url"),
        (
            json!({ "url": "not a url", "events": ["*"] }),
            "url",
            "a relative url",
        ),
        (
            json!({ "url": "ftp://hooks.example.invalid/x", "events": ["*"] }),
            "url",
            "not http(s)",
        ),
        (
            json!({ "url": "https://hooks.example.invalid/x" }),
            "events",
            "no events",
        ),
        (
            json!({ "url": "https://hooks.example.invalid/x", "events": [] }),
            "events",
            "empty events",
        ),
        (
            json!({ "url": "https://hooks.example.invalid/x", "events": ["token.stolen"] }),
            "events[0]",
            "an unknown event",
        ),
        (
            json!({ "url": "https://hooks.example.invalid/x", "events": ["tenant.created", "webhook.test"] }),
            "events[1]",
            "webhook.test is not subscribable",
        ),
        (
            json!({ "url": "https://hooks.example.invalid/x", "events": ["*", "tenant.created"] }),
            "events",
            "* with others",
        ),
        (
            json!({ "url": "https://hooks.example.invalid/x", "events": ["*"], "description": long }),
            "description",
            "a long description",
        ),
        (
            json!({ "url": "https://hooks.example.invalid/x", "events": ["*"], "secret": "whsec_x" }),
            "secret",
            "an unknown field",
        ),
        (
            json!({ "url": 7, "events": ["*"] }),
            "url",
            "a number for the url",
        ),
    ];
    for (body, field, what) in cases {
        let resp = app.admin(Method::POST, "/webhooks", Some(&body)).await;
        let problem = assert_problem(resp, StatusCode::UNPROCESSABLE_ENTITY).await;
        assert_eq!(problem["field"], field, "{what}: {problem}");
    }
    let resp = app
        .client
        .post(app.url("/webhooks"))
        .bearer_auth(&app.admin_key)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_problem(resp, StatusCode::BAD_REQUEST).await;
    let list = json_body(
        app.admin(Method::GET, "/webhooks", None).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(list["items"], json!([]), "nothing was stored");
}

#[tokio::test]
async fn webhook_urls_obey_the_outbound_rules() {
    let app = spawn_app_with(Backend::Sqlite, |s| s.allow_insecure_token_urls = false).await;
    for url in [
        "https://10.0.0.1/hook",
        "https://[::ffff:192.168.1.1]/hook",
        "https://169.254.169.254/latest",
        "https://localhost/hook",
        "https://hooks.internal/hook",
        "http://hooks.example.invalid/hook",
        "https://hooks.example.invalid:8443/hook",
    ] {
        let resp = app
            .admin(
                Method::POST,
                "/webhooks",
                Some(&json!({ "url": url, "events": ["*"] })),
            )
            .await;
        let problem = assert_problem(resp, StatusCode::UNPROCESSABLE_ENTITY).await;
        assert_eq!(problem["field"], "url", "{url}: {problem}");
    }
    let resp = app
        .admin(
            Method::POST,
            "/webhooks",
            Some(&json!({ "url": "https://hooks.example.invalid/hook", "events": ["*"] })),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::CREATED, "a public https URL");
}

/// A URL stored while insecure URLs were allowed is checked again before each attempt:
/// without the flag it is never called.
#[tokio::test]
async fn a_stored_webhook_url_is_checked_again_before_every_attempt() {
    let mut app = spawn_app_with(Backend::Sqlite, |_| {}).await;
    let (receiver, url, _server) = Receiver::start().await;
    let (id, _) = register(&app, &url, &["tenant.created"]).await;
    app.settings.allow_insecure_token_urls = false;
    app.restart().await;
    let mut body = crate::helpers::tenant_body("acme");
    body["token_url"] = json!("https://edx.example.invalid/oauth2/access_token");
    assert_eq!(app.create_tenant(&body).await.status(), StatusCode::CREATED);
    eventually("the refused attempt recorded", async || {
        deliveries(&app, &id)
            .await
            .first()
            .map(|d| d["attempts"].clone())
            == Some(json!(1))
    })
    .await;
    let refused = &deliveries(&app, &id).await[0];
    assert_eq!(refused["status"], "pending");
    assert_eq!(refused["last_status_code"], Value::Null);
    assert_eq!(receiver.count(), 0, "a loopback URL is not called");
}

crate::on_both_backends!(
    a_test_event_arrives_signed_per_the_specification,
    a_receiver_answering_500_gets_the_event_again_after_five_seconds,
    an_event_raised_while_the_receiver_is_down_arrives_after_a_restart,
    finished_deliveries_are_pruned_after_seven_days,
    tenant_changes_and_token_transitions_raise_one_event_each,
    webhooks_can_be_listed_shown_and_deleted_and_the_secret_is_shown_once,
);

crate::on_sqlite_only!(
    a_delivery_is_marked_failed_after_the_last_retry,
    only_subscribed_events_are_delivered,
    webhooks_need_the_admin_scope,
    bad_webhook_input_is_a_problem_naming_the_field,
);
