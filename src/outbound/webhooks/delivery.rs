//! The delivery worker: claims due deliveries from the outbox, signs and sends them, and
//! records each attempt, retrying on the schedule until delivered or failed for good. It
//! wakes when this process writes an event and polls for the rest (retries, events other
//! replicas wrote, deliveries a crashed claimer left). Finished deliveries are pruned
//! after the retention period.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use secrecy::SecretString;
use tracing::Instrument;

use super::raise::Events;
use super::settings::WebhookSettings;
use super::signing::sign;
use crate::crypto::{MasterKey, Purpose};
use crate::outbound::{self, parse_outbound_url, Timeouts, UrlPolicy};
use crate::store::{ClaimedDelivery, DeliveryStatus, Store};
use crate::telemetry::metrics::{DeliveryOutcome, Metrics};

/// How often finished deliveries past the retention period are deleted.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

pub struct Deliverer {
    store: Store,
    master_key: Arc<MasterKey>,
    events: Events,
    policy: UrlPolicy,
    settings: WebhookSettings,
    client: reqwest::Client,
    metrics: Arc<Metrics>,
}

/// What one attempt came to.
enum Attempt {
    /// A 2xx answer.
    Delivered(u16),
    /// Any other answer, or none (`None`: timeout, refused connection, refused URL).
    Failed(Option<u16>),
}

impl Deliverer {
    pub fn new(
        store: Store,
        master_key: Arc<MasterKey>,
        events: Events,
        policy: UrlPolicy,
        settings: WebhookSettings,
        metrics: Arc<Metrics>,
    ) -> reqwest::Result<Self> {
        let timeouts = Timeouts {
            connect: settings.attempt_timeout.min(Duration::from_secs(5)),
            total: settings.attempt_timeout,
        };
        Ok(Self {
            client: outbound::client(policy, timeouts)?,
            store,
            master_key,
            events,
            policy,
            settings,
            metrics,
        })
    }

    fn now_ms(&self) -> i64 {
        self.events.clock().now().timestamp_millis()
    }

    /// Delivers until `stop` resolves.
    pub async fn run(self, stop: impl Future<Output = ()>) {
        tokio::pin!(stop);
        let mut last_prune: Option<tokio::time::Instant> = None;
        loop {
            if last_prune.is_none_or(|at| at.elapsed() >= PRUNE_EVERY) {
                self.prune().await;
                last_prune = Some(tokio::time::Instant::now());
            }
            // Keep going while full batches come back: more may be due.
            while self.deliver_due().await >= self.settings.batch {}
            self.count_pending().await;
            tokio::select! {
                () = self.events.written() => {}
                () = tokio::time::sleep(self.settings.poll_interval) => {}
                () = &mut stop => break,
            }
        }
    }

    /// Claims and sends one batch of due deliveries; returns how many were claimed.
    pub async fn deliver_due(&self) -> usize {
        let now = self.now_ms();
        let lease = now + millis(self.settings.lease);
        let claimed = match self
            .store
            .claim_deliveries(
                now,
                lease,
                i64::try_from(self.settings.batch).unwrap_or(i64::MAX),
            )
            .await
        {
            Ok(claimed) => claimed,
            Err(error) => {
                tracing::warn!(%error, "cannot claim webhook deliveries");
                return 0;
            }
        };
        let count = claimed.len();
        futures::future::join_all(claimed.into_iter().map(|d| self.deliver(d))).await;
        count
    }

    async fn deliver(&self, delivery: ClaimedDelivery) {
        let span = tracing::info_span!(
            "webhook_delivery",
            webhook = %delivery.webhook_id,
            event = %delivery.event_id,
            attempt = delivery.attempts + 1,
        );
        self.deliver_in_span(delivery).instrument(span).await;
    }

    async fn deliver_in_span(&self, delivery: ClaimedDelivery) {
        let attempt = self.attempt(&delivery).await;
        let now = self.now_ms();
        let made = usize::try_from(delivery.attempts).unwrap_or(0) + 1;
        let (status, code, next) = match attempt {
            Attempt::Delivered(code) => (DeliveryStatus::Delivered, Some(code), None),
            Attempt::Failed(code) => match self.settings.retry_schedule.get(made - 1) {
                Some(wait) => (DeliveryStatus::Pending, code, Some(now + millis(*wait))),
                None => (DeliveryStatus::Failed, code, None),
            },
        };
        let outcome = match status {
            DeliveryStatus::Delivered => {
                tracing::info!(status = ?code, "webhook delivered");
                DeliveryOutcome::Delivered
            }
            DeliveryStatus::Pending => {
                tracing::warn!(status = ?code, "webhook attempt failed; will retry");
                DeliveryOutcome::Retried
            }
            DeliveryStatus::Failed => {
                tracing::warn!(status = ?code, "webhook delivery failed for good");
                DeliveryOutcome::Failed
            }
        };
        self.metrics.count_webhook_delivery(outcome);
        if let Err(error) = self
            .store
            .record_attempt(&delivery.id, status, code, next, now)
            .await
        {
            // The lease runs out and the delivery is tried again: at least once.
            tracing::warn!(%error, "cannot record a webhook attempt");
        }
    }

    async fn attempt(&self, delivery: &ClaimedDelivery) -> Attempt {
        // The stored URL is checked again before every call, not only when written.
        let url = match parse_outbound_url(&delivery.url, self.policy) {
            Ok(url) => url,
            Err(problem) => {
                tracing::warn!(webhook = %delivery.webhook_id, %problem, "webhook URL refused");
                return Attempt::Failed(None);
            }
        };
        let secret = match self.master_key.open(
            Purpose::WebhookSecret,
            &delivery.webhook_id,
            &delivery.secret(),
        ) {
            Ok(bytes) => match String::from_utf8(bytes) {
                Ok(text) => SecretString::from(text),
                Err(_) => return Attempt::Failed(None),
            },
            Err(error) => {
                tracing::error!(webhook = %delivery.webhook_id, %error, "cannot open the webhook secret");
                return Attempt::Failed(None);
            }
        };
        let timestamp = self.events.clock().now().timestamp();
        let Ok(signed) = sign(&secret, &delivery.event_id, timestamp, &delivery.payload) else {
            tracing::error!(webhook = %delivery.webhook_id, "the stored webhook secret is malformed");
            return Attempt::Failed(None);
        };
        let sent = self
            .client
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("webhook-id", &signed.id)
            .header("webhook-timestamp", signed.timestamp.to_string())
            .header("webhook-signature", &signed.signature)
            .body(delivery.payload.clone())
            .send()
            .await;
        match sent {
            Ok(response) if response.status().is_success() => {
                Attempt::Delivered(response.status().as_u16())
            }
            Ok(response) => Attempt::Failed(Some(response.status().as_u16())),
            Err(error) => {
                tracing::debug!(error = %error.without_url(), "webhook endpoint not reached");
                Attempt::Failed(None)
            }
        }
    }

    /// Sets `tokenvend_webhook_pending` from the store (fleet-wide): one indexed count per
    /// round of the worker, not per scrape.
    async fn count_pending(&self) {
        match self.store.pending_deliveries().await {
            Ok(pending) => self.metrics.set_webhook_pending(pending),
            Err(error) => tracing::debug!(%error, "cannot count pending webhook deliveries"),
        }
    }

    async fn prune(&self) {
        let before = self.now_ms() - millis(self.settings.retention);
        match self.store.prune_deliveries(before).await {
            Ok(0) => {}
            Ok(pruned) => tracing::info!(pruned, "pruned finished webhook deliveries"),
            Err(error) => tracing::warn!(%error, "cannot prune webhook deliveries"),
        }
    }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}
