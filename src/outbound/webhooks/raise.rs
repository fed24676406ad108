//! `Events`: where the rest of the service raises lifecycle events. Raising writes the
//! event and one delivery per subscribed endpoint to the store's outbox, then wakes the
//! delivery worker; it never fails its caller (a store error is logged).

use std::sync::Arc;

use tokio::sync::Notify;

use super::event::Event;
use crate::clock::Clock;
use crate::store::{NewEvent, Store};

/// The handle that raises events: cheap to clone.
///
/// ```ignore
/// state.events.raise(Event::credentials_rejected(tenant_id, 401, "invalid_client")).await;
/// ```
#[derive(Clone)]
pub struct Events {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    clock: Arc<dyn Clock>,
    /// Wakes the delivery worker of this process when an event is written.
    wake: Notify,
}

impl Events {
    /// Events written to `store`'s outbox, timestamped by `clock`.
    pub fn new(store: Store, clock: Arc<dyn Clock>) -> Self {
        Self {
            inner: Arc::new(Inner {
                store,
                clock,
                wake: Notify::new(),
            }),
        }
    }

    /// Writes `event` for every endpoint subscribed to its type and wakes the worker.
    pub async fn raise(&self, event: Event) {
        self.write(event).await;
    }

    /// Raises `event` from code that cannot wait (the engine's synchronous paths): the
    /// write happens in a task of its own.
    pub fn raise_later(&self, event: Event) {
        let events = self.clone();
        tokio::spawn(async move { events.raise(event).await });
    }

    /// Writes `event` for the endpoint `webhook_id` alone (a `webhook.test`); returns the
    /// event id, or `None` when there is no such endpoint.
    pub async fn raise_to(
        &self,
        webhook_id: &str,
        event: Event,
    ) -> Result<Option<String>, sqlx::Error> {
        let new = self.new_event(&event);
        let store = &self.inner.store;
        let Some(webhook) = store.get_webhook(webhook_id).await? else {
            return Ok(None);
        };
        store.enqueue_event(&new, &[webhook]).await?;
        self.inner.wake.notify_one();
        Ok(Some(new.id))
    }

    /// `event` ready to be written in the transaction of the change it announces (the
    /// store's tenant writes take one), so that the change and its event commit together;
    /// call [`Events::wake`] once that has committed.
    pub fn for_change(&self, event: &Event) -> NewEvent {
        self.new_event(event)
    }

    /// Wakes the delivery worker of this process: a change has committed with its event.
    pub fn wake(&self) {
        self.inner.wake.notify_one();
    }

    /// Resolves when an event has been written since the last wake-up.
    pub async fn written(&self) {
        self.inner.wake.notified().await;
    }

    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.inner.clock
    }

    fn new_event(&self, event: &Event) -> NewEvent {
        let now = self.inner.clock.now();
        NewEvent {
            id: format!("evt_{}", uuid::Uuid::new_v4().simple()),
            kind: event.kind.as_str().to_owned(),
            payload: event.payload(now),
            created_ms: now.timestamp_millis(),
        }
    }

    async fn write(&self, event: Event) {
        let store = &self.inner.store;
        let kind = event.kind.as_str();
        let written = async {
            let to: Vec<_> = store
                .list_webhooks()
                .await?
                .into_iter()
                .filter(|w| w.subscribes_to(kind))
                .collect();
            store.enqueue_event(&self.new_event(&event), &to).await?;
            Ok::<_, sqlx::Error>(to.len())
        }
        .await;
        match written {
            Ok(0) => {}
            Ok(endpoints) => {
                tracing::debug!(event = kind, endpoints, "webhook event written");
                self.inner.wake.notify_one();
            }
            Err(error) => {
                tracing::error!(event = kind, %error, "cannot write a webhook event; it is lost")
            }
        }
    }
}
