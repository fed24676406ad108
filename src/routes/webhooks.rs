//! Webhook endpoints: register (the signing secret is shown once), list, show, delete,
//! their recent deliveries, and a `webhook.test` event on demand. All need `admin`.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Router;
use chrono::{DateTime, SubsecRound, Utc};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::auth::{Admin, Authorized};
use crate::crypto::Purpose;
use crate::domain::{rfc3339, FieldError};
use crate::error::{ApiError, OnConflict, Result};
use crate::extract::{Json, Path, Query};
use crate::outbound::parse_outbound_url;
use crate::routes::audit_entry::audit;
use crate::routes::pagination::{
    decode_created_cursor, encode_created_cursor, page_size, PageParams,
};
use crate::state::AppState;
use crate::store::{DeliveryRecord, WebhookRecord, MAX_WEBHOOKS};
use crate::telemetry::RequestId;
use crate::webhooks::{generate_secret, Event, EventType};

/// The longest `description` accepted, in characters.
const MAX_DESCRIPTION: usize = 500;

/// How many deliveries `GET /webhooks/{id}/deliveries` shows, newest first.
const DELIVERIES_SHOWN: i64 = 100;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/webhooks", post(create_webhook).get(list_webhooks))
        .route("/webhooks/{id}", get(get_webhook).delete(delete_webhook))
        .route("/webhooks/{id}/deliveries", get(list_deliveries))
        .route("/webhooks/{id}/test", post(test_webhook))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateWebhook {
    url: Option<String>,
    events: Option<Vec<String>>,
    description: Option<String>,
}

#[derive(Serialize)]
struct WebhookView {
    id: String,
    url: String,
    events: Vec<String>,
    description: String,
    created_at: String,
    /// Deliveries to this endpoint that failed for good (within the retention period).
    failed_deliveries: i64,
}

impl WebhookView {
    fn new(w: &WebhookRecord, failed_deliveries: i64) -> Self {
        Self {
            id: w.id.clone(),
            url: w.url.clone(),
            events: w.events.clone(),
            description: w.description.clone(),
            created_at: rfc3339(w.created_at),
            failed_deliveries,
        }
    }
}

#[derive(Serialize)]
struct CreatedWebhook {
    #[serde(flatten)]
    view: WebhookView,
    /// The signing secret: returned here only.
    secret: String,
}

#[derive(Serialize)]
struct WebhookPage {
    items: Vec<WebhookView>,
    next_cursor: Option<String>,
}

#[derive(Serialize)]
struct DeliveryView {
    event_id: String,
    #[serde(rename = "type")]
    kind: String,
    status: String,
    attempts: i32,
    last_status_code: Option<i32>,
    next_attempt_at: Option<String>,
}

impl From<DeliveryRecord> for DeliveryView {
    fn from(d: DeliveryRecord) -> Self {
        Self {
            event_id: d.event_id,
            kind: d.kind,
            status: d.status,
            attempts: d.attempts,
            last_status_code: d.last_status_code,
            next_attempt_at: d
                .next_attempt_ms
                .and_then(DateTime::<Utc>::from_timestamp_millis)
                .map(rfc3339),
        }
    }
}

#[derive(Serialize)]
struct DeliveryList {
    items: Vec<DeliveryView>,
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

/// A path id that cannot be a webhook id is answered like an unknown one.
fn webhook_id(raw: &str) -> Result<&str> {
    let well_formed = raw.strip_prefix("wh_").is_some_and(|hex| {
        hex.len() == 32 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    });
    if well_formed {
        Ok(raw)
    } else {
        Err(not_found())
    }
}

fn not_found() -> ApiError {
    ApiError::NotFound("webhook not found".to_owned())
}

async fn failures_of(state: &AppState) -> Result<std::collections::HashMap<String, i64>> {
    Ok(state.store.failed_deliveries().await?.into_iter().collect())
}

async fn create_webhook(
    State(state): State<AppState>,
    Authorized(caller, _): Authorized<Admin>,
    request_id: RequestId,
    Json(body): Json<CreateWebhook>,
) -> Result<impl IntoResponse> {
    let raw_url = body
        .url
        .ok_or_else(|| FieldError::new("url", "is required"))?;
    let url =
        parse_outbound_url(&raw_url, state.url_policy).map_err(|m| FieldError::new("url", m))?;
    let events = parse_events(body.events)?;
    let description = parse_description(body.description)?;
    let id = format!("wh_{}", uuid::Uuid::new_v4().simple());
    let secret = generate_secret();
    let record = WebhookRecord {
        secret: state.master_key.seal(
            Purpose::WebhookSecret,
            &id,
            secret.expose_secret().as_bytes(),
        ),
        id: id.clone(),
        url: url.to_string(),
        events,
        description,
        created_at: Utc::now().trunc_subsecs(6),
    };
    let entry = audit(
        &caller,
        &request_id,
        "webhook.create",
        &id,
        json!({ "url": record.url, "events": record.events }),
    );
    let stored = state
        .store
        .insert_webhook(&record, &entry)
        .await
        .on_conflict(|| "webhook id collision; retry".to_owned())?;
    if !stored {
        return Err(ApiError::LimitReached(format!(
            "at most {MAX_WEBHOOKS} webhook endpoints can be registered; delete one first"
        )));
    }
    tracing::info!(webhook = %id, events = ?record.events, "webhook created");
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, format!("/webhooks/{id}"))],
        axum::Json(CreatedWebhook {
            view: WebhookView::new(&record, 0),
            secret: secret.expose_secret().to_owned(),
        }),
    ))
}

/// Oldest first, paged like `GET /tenants`.
async fn list_webhooks(
    State(state): State<AppState>,
    _: Authorized<Admin>,
    Query(params): Query<PageParams>,
) -> Result<axum::Json<WebhookPage>> {
    let limit = page_size(params.limit)?;
    let after = params
        .cursor
        .as_deref()
        .map(decode_created_cursor)
        .transpose()?;
    let failures = failures_of(&state).await?;
    let mut records = state
        .store
        .list_webhooks_page(after.as_ref(), i64::from(limit) + 1)
        .await?;
    let next_cursor = if records.len() > limit as usize {
        records.truncate(limit as usize);
        records
            .last()
            .map(|w| encode_created_cursor(w.created_at, &w.id))
    } else {
        None
    };
    let items = records
        .iter()
        .map(|w| WebhookView::new(w, failures.get(&w.id).copied().unwrap_or(0)))
        .collect();
    Ok(axum::Json(WebhookPage { items, next_cursor }))
}

async fn get_webhook(
    State(state): State<AppState>,
    _: Authorized<Admin>,
    Path(raw_id): Path<String>,
) -> Result<axum::Json<WebhookView>> {
    let id = webhook_id(&raw_id)?;
    let record = state.store.get_webhook(id).await?.ok_or_else(not_found)?;
    let failures = failures_of(&state).await?;
    Ok(axum::Json(WebhookView::new(
        &record,
        failures.get(id).copied().unwrap_or(0),
    )))
}

async fn delete_webhook(
    State(state): State<AppState>,
    Authorized(caller, _): Authorized<Admin>,
    request_id: RequestId,
    Path(raw_id): Path<String>,
) -> Result<StatusCode> {
    let id = webhook_id(&raw_id)?;
    let entry = audit(&caller, &request_id, "webhook.delete", id, json!({}));
    if state.store.delete_webhook(id, &entry).await? {
        tracing::info!(webhook = %id, "webhook deleted");
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(not_found())
    }
}

async fn list_deliveries(
    State(state): State<AppState>,
    _: Authorized<Admin>,
    Path(raw_id): Path<String>,
) -> Result<axum::Json<DeliveryList>> {
    let id = webhook_id(&raw_id)?;
    state.store.get_webhook(id).await?.ok_or_else(not_found)?;
    let items = state
        .store
        .list_deliveries(id, DELIVERIES_SHOWN)
        .await?
        .into_iter()
        .map(DeliveryView::from)
        .collect();
    Ok(axum::Json(DeliveryList { items }))
}

async fn test_webhook(
    State(state): State<AppState>,
    _: Authorized<Admin>,
    Path(raw_id): Path<String>,
) -> Result<impl IntoResponse> {
    let id = webhook_id(&raw_id)?;
    let event_id = state
        .events
        .raise_to(id, Event::test(id))
        .await?
        .ok_or_else(not_found)?;
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(json!({ "event_id": event_id })),
    ))
}
