//! Webhook endpoints: register (the signing secret is shown once), list, show, delete,
//! their recent deliveries, and a `webhook.test` event on demand. All need `admin`.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Router;
use chrono::{DateTime, Utc};
use secrecy::ExposeSecret;
use serde::Serialize;
use serde_json::json;

use crate::domain::rfc3339;
use crate::http::auth::{Admin, Authorized};
use crate::http::error::{ApiError, Result};
use crate::http::extract::{Json, Path, Query};
use crate::http::routes::audit_entry::actor;
use crate::http::routes::pagination::{
    decode_created_cursor, encode_created_cursor, page_size, PageParams,
};
use crate::http::state::AppState;
use crate::outbound::webhooks::Event;
use crate::services::{WebhookFields, WebhookService};
use crate::store::{DeliveryRecord, WebhookRecord};
use crate::telemetry::RequestId;

/// How many deliveries `GET /webhooks/{id}/deliveries` shows, newest first.
const DELIVERIES_SHOWN: i64 = 100;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/webhooks", post(create_webhook).get(list_webhooks))
        .route("/webhooks/{id}", get(get_webhook).delete(delete_webhook))
        .route("/webhooks/{id}/deliveries", get(list_deliveries))
        .route("/webhooks/{id}/test", post(test_webhook))
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
    State(webhooks): State<WebhookService>,
    Authorized(caller, _): Authorized<Admin>,
    request_id: RequestId,
    Json(body): Json<WebhookFields>,
) -> Result<impl IntoResponse> {
    let created = webhooks.create(&actor(&caller, &request_id), body).await?;
    let id = &created.record.id;
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, format!("/webhooks/{id}"))],
        axum::Json(CreatedWebhook {
            view: WebhookView::new(&created.record, 0),
            secret: created.secret.expose_secret().to_owned(),
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
    State(webhooks): State<WebhookService>,
    Authorized(caller, _): Authorized<Admin>,
    request_id: RequestId,
    Path(raw_id): Path<String>,
) -> Result<StatusCode> {
    let id = webhook_id(&raw_id)?;
    webhooks.delete(&actor(&caller, &request_id), id).await?;
    Ok(StatusCode::NO_CONTENT)
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
