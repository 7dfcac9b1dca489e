//! `/v1/webhooks`: subscriptions to voxgate's events (SPEC §5, docs/webhooks.md).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::Authed;
use super::error::{ApiError, ApiJson, FieldError, Problem};
use super::pagination::{PageQuery, Pagination};
use super::{time_format, AppState};
use crate::store::{
    generate_webhook_secret, pattern_is_known, Delivery, NewWebhook, StoreError, Webhook,
    WebhookPatch,
};

pub fn router() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .routes(routes!(create_webhook, list_webhooks))
        .routes(routes!(get_webhook, patch_webhook, delete_webhook))
        .routes(routes!(list_deliveries))
        .routes(routes!(test_webhook))
}

const URL_MAX: usize = 2048;
const PATTERNS_MAX: usize = 32;
const SECRET_MIN: usize = 16;
const SECRET_MAX: usize = 256;
const DESCRIPTION_MAX: usize = 256;

/// A webhook as the API shows it (the secret only once, on creation).
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct WebhookView {
    #[schema(example = "whk_01JD3N5V8K2Q4R6T8W0Y2A4C6E")]
    pub id: String,
    /// Where the events are POSTed (an absolute http or https URL).
    pub url: String,
    /// Event type patterns: `*`, `call.*`, `call.completed`, …
    #[schema(example = json!(["call.*", "agent.state_changed"]))]
    pub events: Vec<String>,
    pub description: Option<String>,
    #[serde(with = "time_format")]
    pub created_at: DateTime<Utc>,
    #[serde(with = "time_format")]
    pub updated_at: DateTime<Utc>,
}

/// The answer to `POST /v1/webhooks`: the webhook and its signing secret, shown only here.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct WebhookCreated {
    #[schema(example = "whk_01JD3N5V8K2Q4R6T8W0Y2A4C6E")]
    pub id: String,
    pub url: String,
    pub events: Vec<String>,
    pub description: Option<String>,
    /// Key of the `Voxgate-Signature` HMAC. Shown only in this response.
    #[schema(example = "whsec_5f1c…")]
    pub secret: String,
    #[serde(with = "time_format")]
    pub created_at: DateTime<Utc>,
    #[serde(with = "time_format")]
    pub updated_at: DateTime<Utc>,
}

/// A page of webhooks, in creation order.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct WebhookList {
    pub data: Vec<WebhookView>,
    /// Pass as `after` to get the next page; null on the last page.
    pub next: Option<String>,
}

/// One attempt to deliver an event.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct DeliveryView {
    #[schema(example = "dlv_01JD3N5V8K2Q4R6T8W0Y2A4C6E")]
    pub id: String,
    #[schema(example = "evt_01JD3N5V8K2Q4R6T8W0Y2A4C6E")]
    pub event_id: String,
    #[schema(example = "call.completed")]
    pub event_type: String,
    pub url: String,
    /// 1 for the first attempt of the event.
    pub attempt: i64,
    /// The HTTP status; null when there was none (timeout, connection refused).
    pub status_code: Option<i64>,
    /// Why the attempt failed; null when it succeeded (2xx).
    pub error: Option<String>,
    pub duration_ms: i64,
    #[serde(with = "time_format")]
    pub at: DateTime<Utc>,
}

/// A page of delivery attempts, newest first.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct DeliveryList {
    pub data: Vec<DeliveryView>,
    /// Pass as `after` to get the next (older) page; null on the last page.
    pub next: Option<String>,
}

/// The answer to `POST /v1/webhooks/{id}/test`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct TestQueued {
    /// The `webhook.test` event queued for delivery (its `Voxgate-Event-Id`).
    #[schema(example = "evt_01JD3N5V8K2Q4R6T8W0Y2A4C6E")]
    pub event_id: String,
}

/// Body of `POST /v1/webhooks`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWebhook {
    /// Absolute http or https URL the events are POSTed to, at most 2048 characters.
    pub url: String,
    /// Non-empty list of `*`, `<prefix>.*` (e.g. `call.*`) or event types.
    #[schema(example = json!(["call.*"]))]
    pub events: Vec<String>,
    /// 16-256 characters, no whitespace; generated when absent.
    #[schema(write_only)]
    pub secret: Option<String>,
    pub description: Option<String>,
}

/// Body of `POST /v1/webhooks/{id}/test`: optional, and has no fields yet (an empty body
/// or `{}`).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TestWebhook {}

/// Body of `PATCH /v1/webhooks/{id}`: only the fields present change. The secret cannot
/// change (create a new webhook to rotate it).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchWebhook {
    pub url: Option<String>,
    pub events: Option<Vec<String>>,
    /// null clears it.
    #[serde(default, deserialize_with = "present")]
    pub description: Option<Option<String>>,
}

fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// A URL voxgate may POST events to: absolute `http`/`https` with a host, at most 2048
/// characters. Also for a call's `status_callback`.
pub fn check_callback_url(field: &str, url: &str) -> Result<(), FieldError> {
    let bad = |why: &str| Err(FieldError::new(field, why.to_owned()));
    if url.len() > URL_MAX {
        return bad("must be at most 2048 characters");
    }
    match reqwest::Url::parse(url) {
        Ok(u) if !matches!(u.scheme(), "http" | "https") => {
            bad("must be an http:// or https:// URL")
        }
        Ok(u) if u.host_str().is_none_or(str::is_empty) => bad("must name a host"),
        Ok(u) if !u.username().is_empty() || u.password().is_some() => {
            bad("must not carry credentials")
        }
        Ok(_) => Ok(()),
        Err(e) => Err(FieldError::new(
            field,
            format!("must be an http:// or https:// URL ({e})"),
        )),
    }
}

fn check_events(events: &[String], errors: &mut Vec<FieldError>) -> Vec<String> {
    if events.is_empty() {
        errors.push(FieldError::new("events", "must list at least one pattern"));
    }
    if events.len() > PATTERNS_MAX {
        errors.push(FieldError::new(
            "events",
            format!("at most {PATTERNS_MAX} patterns"),
        ));
    }
    let mut out: Vec<String> = Vec::with_capacity(events.len());
    for (i, p) in events.iter().enumerate() {
        if !pattern_is_known(p) {
            errors.push(FieldError::new(
                format!("events[{i}]"),
                format!(
                    "unknown event pattern {p:?}: use \"*\", a prefix such as \"call.*\", or an event type such as \"call.completed\""
                ),
            ));
        } else if !out.contains(p) {
            out.push(p.clone());
        }
    }
    out
}

fn check_description(v: Option<&str>, errors: &mut Vec<FieldError>) {
    if let Some(v) = v {
        if v.chars().count() > DESCRIPTION_MAX || v.chars().any(char::is_control) {
            errors.push(FieldError::new(
                "description",
                format!("must be at most {DESCRIPTION_MAX} characters, no control characters"),
            ));
        }
    }
}

fn view(h: Webhook) -> WebhookView {
    WebhookView {
        id: h.id,
        url: h.url,
        events: h.events,
        description: h.description,
        created_at: h.created_at,
        updated_at: h.updated_at,
    }
}

fn delivery_view(d: Delivery) -> DeliveryView {
    DeliveryView {
        id: d.id,
        event_id: d.event_id,
        event_type: d.event_type,
        url: d.url,
        attempt: d.attempt,
        status_code: d.status_code,
        error: d.error,
        duration_ms: d.duration_ms,
        at: d.at,
    }
}

async fn find(state: &AppState, id: &str) -> Result<Webhook, ApiError> {
    match state.store.get_webhook(id).await {
        Err(StoreError::NotFound) => Err(ApiError::NotFound(format!("no webhook with id {id:?}"))),
        other => Ok(other?),
    }
}

/// Subscribe a URL to events.
#[utoipa::path(
    post, path = "/v1/webhooks", tag = "webhooks",
    request_body = CreateWebhook,
    responses(
        (status = 201, description = "Created; the secret is shown only here", body = WebhookCreated),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or bad API key", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid field", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
async fn create_webhook(
    _auth: Authed,
    State(state): State<Arc<AppState>>,
    ApiJson(body): ApiJson<CreateWebhook>,
) -> Result<impl IntoResponse, ApiError> {
    let mut errors = Vec::new();
    if let Err(e) = check_callback_url("url", &body.url) {
        errors.push(e);
    }
    let events = check_events(&body.events, &mut errors);
    if let Some(s) = &body.secret {
        if !(SECRET_MIN..=SECRET_MAX).contains(&s.len())
            || s.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            errors.push(FieldError::new(
                "secret",
                format!("must be {SECRET_MIN}-{SECRET_MAX} characters with no whitespace"),
            ));
        }
    }
    check_description(body.description.as_deref(), &mut errors);
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let hook = state
        .store
        .create_webhook(&NewWebhook {
            url: body.url,
            events,
            secret: body.secret.unwrap_or_else(generate_webhook_secret),
            description: body.description,
        })
        .await?;
    let location = format!("/v1/webhooks/{}", hook.id);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(WebhookCreated {
            id: hook.id,
            url: hook.url,
            events: hook.events,
            description: hook.description,
            secret: hook.secret,
            created_at: hook.created_at,
            updated_at: hook.updated_at,
        }),
    ))
}

/// List webhooks in creation order.
#[utoipa::path(
    get, path = "/v1/webhooks", tag = "webhooks",
    params(PageQuery),
    responses(
        (status = 200, description = "A page of webhooks", body = WebhookList),
        (status = 401, description = "Missing or bad API key", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Bad limit or cursor", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
async fn list_webhooks(
    _auth: Authed,
    State(state): State<Arc<AppState>>,
    page: Pagination,
) -> Result<Json<WebhookList>, ApiError> {
    let p = state
        .store
        .list_webhooks(page.limit, page.after.as_deref())
        .await?;
    Ok(Json(WebhookList {
        data: p.data.into_iter().map(view).collect(),
        next: p.next,
    }))
}

/// Get a webhook (without its secret).
#[utoipa::path(
    get, path = "/v1/webhooks/{id}", tag = "webhooks",
    params(("id" = String, Path, description = "Webhook id")),
    responses(
        (status = 200, description = "The webhook", body = WebhookView),
        (status = 401, description = "Missing or bad API key", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such webhook", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
async fn get_webhook(
    _auth: Authed,
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Json<WebhookView>, ApiError> {
    Ok(Json(view(find(&state, &id).await?)))
}

/// Change a webhook's URL, events or description.
#[utoipa::path(
    patch, path = "/v1/webhooks/{id}", tag = "webhooks",
    params(("id" = String, Path, description = "Webhook id")),
    request_body = PatchWebhook,
    responses(
        (status = 200, description = "The updated webhook", body = WebhookView),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or bad API key", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such webhook", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid field", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
async fn patch_webhook(
    _auth: Authed,
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<PatchWebhook>,
) -> Result<Json<WebhookView>, ApiError> {
    let hook = find(&state, &id).await?;
    let mut errors = Vec::new();
    if let Some(u) = &body.url {
        if let Err(e) = check_callback_url("url", u) {
            errors.push(e);
        }
    }
    let events = body.events.as_deref().map(|e| check_events(e, &mut errors));
    if let Some(d) = &body.description {
        check_description(d.as_deref(), &mut errors);
    }
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let patch = WebhookPatch {
        url: body.url,
        events,
        description: body.description,
    };
    Ok(Json(view(
        state.store.update_webhook(&hook.id, &patch).await?,
    )))
}

/// Delete a webhook with its undelivered events and its delivery log.
#[utoipa::path(
    delete, path = "/v1/webhooks/{id}", tag = "webhooks",
    params(("id" = String, Path, description = "Webhook id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = "Missing or bad API key", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such webhook", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
async fn delete_webhook(
    _auth: Authed,
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    match state.store.delete_webhook(&id).await {
        Ok(()) => Ok(StatusCode::NO_CONTENT),
        Err(StoreError::NotFound) => Err(ApiError::NotFound(format!("no webhook with id {id:?}"))),
        Err(e) => Err(e.into()),
    }
}

/// The attempts to deliver events to this webhook, newest first.
#[utoipa::path(
    get, path = "/v1/webhooks/{id}/deliveries", tag = "webhooks",
    params(("id" = String, Path, description = "Webhook id"), PageQuery),
    responses(
        (status = 200, description = "A page of attempts", body = DeliveryList),
        (status = 401, description = "Missing or bad API key", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such webhook", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Bad limit or cursor", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
async fn list_deliveries(
    _auth: Authed,
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    page: Pagination,
) -> Result<Json<DeliveryList>, ApiError> {
    let hook = find(&state, &id).await?;
    let p = state
        .store
        .list_webhook_deliveries(&hook.id, page.limit, page.after.as_deref())
        .await?;
    Ok(Json(DeliveryList {
        data: p.data.into_iter().map(delivery_view).collect(),
        next: p.next,
    }))
}

/// Send a `webhook.test` event to this webhook, through the outbox like any event (signed,
/// retried, logged in its deliveries).
#[utoipa::path(
    post, path = "/v1/webhooks/{id}/test", tag = "webhooks",
    params(("id" = String, Path, description = "Webhook id")),
    request_body(content = Option<TestWebhook>, description = "Optional; no fields yet", content_type = "application/json"),
    responses(
        (status = 202, description = "Queued", body = TestQueued),
        (status = 401, description = "Missing or bad API key", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such webhook", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Unknown field", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
async fn test_webhook(
    _auth: Authed,
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    _body: Option<ApiJson<Option<TestWebhook>>>,
) -> Result<(StatusCode, Json<TestQueued>), ApiError> {
    let hook = find(&state, &id).await?;
    let event_id = state.store.enqueue_test_event(&hook).await?;
    Ok((StatusCode::ACCEPTED, Json(TestQueued { event_id })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn callback_urls() {
        assert!(check_callback_url("url", "https://example.com/hook").is_ok());
        assert!(check_callback_url("url", "http://127.0.0.1:8000/x?y=1").is_ok());
        for bad in [
            "ftp://example.com/",
            "example.com/hook",
            "",
            "https://user:pw@example.com/",
            "javascript:alert(1)",
        ] {
            let e = check_callback_url("url", bad).err();
            assert_eq!(e.map(|e| e.field), Some("url".to_owned()), "{bad:?}");
        }
    }
}
