//! Delivery: signed per the specification, retried on the documented schedule, failed
//! after the last retry, kept across restarts, pruned after seven days.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokenvend::clock::Clock;
use tokio::net::TcpListener;

use super::{deliveries, expected_signature, leases, register, worker_pass, Receiver};
use crate::helpers::{eventually, json_body, TestApp};

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

    // Not before its time: the retry waits about five seconds. A pass of the worker
    // three seconds on leaves it alone.
    let leased = leases(&app, &id).await;
    app.advance(3);
    worker_pass(&app).await;
    assert_eq!(
        leases(&app, &id).await,
        leased,
        "not claimed before the 5 s wait"
    );
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
    let leased = leases(&app, &id).await;
    app.advance(7200);
    worker_pass(&app).await;
    assert_eq!(leases(&app, &id).await, leased, "not claimed after failing");
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
    let event_id = deliveries(&app, &id).await[0]["event_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let stored = "SELECT COUNT(*) FROM webhook_events WHERE id = $1";
    assert_eq!(app.raw_count(stored, &[&event_id]).await, 1);

    // Six days on, a restart (the worker prunes when it starts, before its first pass,
    // then hourly) keeps it.
    app.advance(6 * 24 * 3600);
    app.restart().await;
    worker_pass(&app).await;
    assert_eq!(deliveries(&app, &id).await.len(), 1, "kept for 7 days");
    assert_eq!(app.raw_count(stored, &[&event_id]).await, 1);
    // Past seven days it is gone, with its event.
    app.advance(2 * 24 * 3600);
    app.restart().await;
    eventually("the delivery pruned", async || {
        deliveries(&app, &id).await.is_empty()
    })
    .await;
    eventually("the event pruned", async || {
        app.raw_count(stored, &[&event_id]).await == 0
    })
    .await;
    assert_eq!(receiver.count(), 1, "nothing was sent again");
}

crate::on_both_backends!(
    a_test_event_arrives_signed_per_the_specification,
    a_receiver_answering_500_gets_the_event_again_after_five_seconds,
    an_event_raised_while_the_receiver_is_down_arrives_after_a_restart,
    finished_deliveries_are_pruned_after_seven_days,
);

crate::on_sqlite_only!(a_delivery_is_marked_failed_after_the_last_retry);
