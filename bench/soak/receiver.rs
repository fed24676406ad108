//! The local webhook receiver: answers every delivery 204 and remembers each event id
//! (deliveries of one event counted once), its type, and whether its signature verified.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use parking_lot::Mutex;

#[derive(Default)]
pub struct Received {
    /// Event id → (type, deliveries received).
    pub events: HashMap<String, (String, u64)>,
    pub bad_signatures: u64,
}

#[derive(Clone, Default)]
pub struct Receiver {
    received: Arc<Mutex<Received>>,
    secret: Arc<OnceLock<standardwebhooks::Webhook>>,
}

impl Receiver {
    /// Serves on 127.0.0.1:0; returns the URL to subscribe.
    pub async fn start(&self) -> anyhow::Result<String> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}/hook", listener.local_addr()?);
        let router = Router::new()
            .route("/hook", post(receive))
            .with_state(self.clone());
        tokio::spawn(async move {
            if let Err(error) = axum::serve(listener, router).await {
                eprintln!("webhook receiver stopped: {error}");
            }
        });
        Ok(url)
    }

    /// The `whsec_…` secret from the webhook's creation: signatures are checked from now on.
    pub fn set_secret(&self, secret: &str) -> anyhow::Result<()> {
        let webhook = standardwebhooks::Webhook::new(secret)
            .map_err(|e| anyhow::anyhow!("webhook secret: {e:?}"))?;
        let _ = self.secret.set(webhook);
        Ok(())
    }

    pub fn take(&self) -> Received {
        std::mem::take(&mut *self.received.lock())
    }

    pub fn unique(&self) -> usize {
        self.received.lock().events.len()
    }
}

async fn receive(State(receiver): State<Receiver>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let signed = receiver
        .secret
        .get()
        .is_some_and(|webhook| webhook.verify(&body, &headers).is_ok());
    let id = headers
        .get("webhook-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let kind = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["type"].as_str().map(str::to_owned))
        .unwrap_or_default();
    let mut received = receiver.received.lock();
    if !signed {
        received.bad_signatures += 1;
    }
    received.events.entry(id).or_insert((kind, 0)).1 += 1;
    StatusCode::NO_CONTENT
}
