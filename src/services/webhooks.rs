//! Webhook endpoints: register (the signing secret is shown once, stored sealed) and
//! delete, each with its audit entry in the row's transaction.

use std::sync::Arc;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::json;

use super::change::{now, Actor, OnConflict, Result, ServiceError};
use crate::crypto::{MasterKey, Purpose};
use crate::domain::FieldError;
use crate::outbound::webhooks::{generate_secret, EventType};
use crate::outbound::{parse_outbound_url, UrlPolicy};
use crate::store::{Store, WebhookRecord, MAX_WEBHOOKS};

/// The longest `description` accepted, in characters.
const MAX_DESCRIPTION: usize = 500;

/// A `POST /webhooks` body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookFields {
    pub url: Option<String>,
    pub events: Option<Vec<String>>,
    pub description: Option<String>,
}

/// A stored endpoint and its signing secret (for the one answer that shows it).
pub struct CreatedWebhook {
    pub record: WebhookRecord,
    pub secret: SecretString,
}

/// The one write path of webhook endpoints.
#[derive(Clone)]
pub struct WebhookService {
    pub store: Store,
    pub master_key: Arc<MasterKey>,
    pub url_policy: UrlPolicy,
}

/// `events`: subscribable event types, or `["*"]` for all; duplicates are dropped.
fn parse_events(raw: Option<Vec<String>>) -> Result<Vec<String>, FieldError> {
    let raw = raw.ok_or_else(|| FieldError::new("events", "is required"))?;
    if raw.is_empty() {
        return Err(FieldError::new(
            "events",
            "must name at least one event type",
        ));
    }
    if raw.iter().any(|e| e == "*") {
        return if raw.iter().all(|e| e == "*") {
            Ok(vec!["*".to_owned()])
        } else {
            Err(FieldError::new("events", "\"*\" must stand alone"))
        };
    }
    let mut events: Vec<String> = Vec::new();
    for (i, name) in raw.iter().enumerate() {
        let kind = EventType::parse_subscribable(name).ok_or_else(|| {
            let known: Vec<&str> = EventType::SUBSCRIBABLE.iter().map(|t| t.as_str()).collect();
            FieldError::new(
                format!("events[{i}]"),
                format!("must be one of {} or \"*\"", known.join(", ")),
            )
        })?;
        if !events.iter().any(|e| e == kind.as_str()) {
            events.push(kind.as_str().to_owned());
        }
    }
    Ok(events)
}

fn parse_description(raw: Option<String>) -> Result<String, FieldError> {
    let description = raw.unwrap_or_default().trim().to_owned();
    if description.chars().count() > MAX_DESCRIPTION {
        return Err(FieldError::new(
            "description",
            format!("must be at most {MAX_DESCRIPTION} characters"),
        ));
    }
    if description.chars().any(char::is_control) {
        return Err(FieldError::new(
            "description",
            "must not contain control characters",
        ));
    }
    Ok(description)
}

impl WebhookService {
    /// Registers an endpoint from `fields`, unless `MAX_WEBHOOKS` are registered already.
    pub async fn create(&self, actor: &Actor, fields: WebhookFields) -> Result<CreatedWebhook> {
        let raw_url = fields
            .url
            .ok_or_else(|| FieldError::new("url", "is required"))?;
        let url =
            parse_outbound_url(&raw_url, self.url_policy).map_err(|m| FieldError::new("url", m))?;
        let events = parse_events(fields.events)?;
        let description = parse_description(fields.description)?;
        let id = format!("wh_{}", uuid::Uuid::new_v4().simple());
        let secret = generate_secret();
        let record = WebhookRecord {
            secret: self.master_key.seal(
                Purpose::WebhookSecret,
                &id,
                secret.expose_secret().as_bytes(),
            ),
            id,
            url: url.to_string(),
            events,
            description,
            created_at: now(),
        };
        let entry = actor.audit(
            "webhook.create",
            &record.id,
            json!({ "url": record.url, "events": record.events }),
        );
        let stored = self
            .store
            .insert_webhook(&record, &entry)
            .await
            .on_conflict(|| "webhook id collision; retry".to_owned())?;
        if !stored {
            return Err(ServiceError::LimitReached(format!(
                "at most {MAX_WEBHOOKS} webhook endpoints can be registered; delete one first"
            )));
        }
        tracing::info!(webhook = %record.id, events = ?record.events, "webhook created");
        Ok(CreatedWebhook { record, secret })
    }

    /// Deletes endpoint `id` and its deliveries.
    pub async fn delete(&self, actor: &Actor, id: &str) -> Result<()> {
        let entry = actor.audit("webhook.delete", id, json!({}));
        if !self.store.delete_webhook(id, &entry).await? {
            return Err(ServiceError::NotFound("webhook not found"));
        }
        tracing::info!(webhook = %id, "webhook deleted");
        Ok(())
    }
}
