//! `/v1/queues`: call queues (ACD, SPEC §4). This is the control-plane side: settings
//! stored and checked (a hold prompt or overflow target that does not exist is a 422
//! naming it). Distributing waiting calls to agents is the engine's; docs/queues.md says
//! what each setting will mean.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::agents::check_skills_at;
use super::auth::Authed;
use super::error::{parse_json, ApiError, ApiJson, FieldError, Problem};
use super::numbers::{resolve_route, NumberRouteSpec};
use super::pagination::{PageQuery, Pagination};
use super::rules::Int;
use super::trunks::{check_patch_members, merge, schema_fields};
use super::{time_format, AppState};
use crate::store::{QueueRow, QueueSpec, StoreError};

pub fn router() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .routes(routes!(create_queue, list_queues))
        .routes(routes!(get_queue, patch_queue, delete_queue))
}

/// Route types a queue may overflow to.
const OVERFLOW_TYPES: [&str; 4] = ["agent", "queue", "ivr", "webhook"];
const NAME_MAX: usize = 64;
const MAX_WAIT: Int = Int::new(1, 86_400);
const RING_TIMEOUT: Int = Int::new(5, 300);
const DEFAULT_RING_TIMEOUT: i64 = 20;

/// How a queue picks the agent for its longest-waiting caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Agents in turn, starting after the one who got the last call.
    RoundRobin,
    /// The agent idle the longest since their last call ended.
    LongestIdle,
    /// The agent with the fewest calls answered today.
    LeastCalls,
    /// Every free agent at once; the first to answer gets the call.
    RingAll,
}

impl Strategy {
    fn as_str(self) -> &'static str {
        match self {
            Strategy::RoundRobin => "round_robin",
            Strategy::LongestIdle => "longest_idle",
            Strategy::LeastCalls => "least_calls",
            Strategy::RingAll => "ring_all",
        }
    }

    fn parse(s: &str) -> Option<Strategy> {
        [
            Strategy::RoundRobin,
            Strategy::LongestIdle,
            Strategy::LeastCalls,
            Strategy::RingAll,
        ]
        .into_iter()
        .find(|x| x.as_str() == s)
    }
}

/// Body of `POST /v1/queues` (and, merged onto the queue, of `PATCH`).
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateQueue {
    /// Unique, 1-64 characters from `A-Z a-z 0-9 . _ -`.
    #[schema(
        example = "support",
        min_length = 1,
        max_length = 64,
        pattern = "^[A-Za-z0-9._-]{1,64}$"
    )]
    pub name: String,
    pub strategy: Strategy,
    /// Skills an agent must all have to be offered this queue's calls.
    #[serde(default)]
    #[schema(max_items = 64)]
    pub required_skills: Vec<String>,
    /// A prompt (id or name) looped while the caller waits; absent: silence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(min_length = 1, max_length = 64)]
    pub hold_prompt: Option<String>,
    /// Seconds a caller waits before the `overflow` route, 1..=86400; absent: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 86400)]
    pub max_wait_seconds: Option<i64>,
    /// Where a caller goes after `max_wait_seconds` (agent, queue, ivr or webhook);
    /// absent: the call is hung up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overflow: Option<NumberRouteSpec>,
    /// Tell waiting callers their position.
    #[serde(default)]
    pub announce_position: bool,
    /// Seconds an offered agent rings before the next is tried, 5..=300, default 20.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 5, maximum = 300, default = 20)]
    pub ring_timeout_seconds: Option<i64>,
}

/// Body of `PATCH /v1/queues/{id}`: only the fields present change; null clears
/// `hold_prompt`, `max_wait_seconds` and `overflow`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // The OpenAPI shape: the handler merges the raw JSON.
pub struct PatchQueue {
    /// A new name; it cannot be cleared (null is a 422).
    #[schema(
        nullable = false,
        min_length = 1,
        max_length = 64,
        pattern = "^[A-Za-z0-9._-]{1,64}$"
    )]
    pub name: Option<String>,
    /// A new strategy; it cannot be cleared (null is a 422).
    #[schema(nullable = false)]
    pub strategy: Option<Strategy>,
    #[schema(max_items = 64)]
    pub required_skills: Option<Vec<String>>,
    #[schema(min_length = 1, max_length = 64)]
    pub hold_prompt: Option<String>,
    #[schema(minimum = 1, maximum = 86400)]
    pub max_wait_seconds: Option<i64>,
    pub overflow: Option<NumberRouteSpec>,
    pub announce_position: Option<bool>,
    #[schema(minimum = 5, maximum = 300)]
    pub ring_timeout_seconds: Option<i64>,
}

/// A queue as the API shows it (references as ids).
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct QueueView {
    #[schema(example = "que_01JD3N5V8K2Q4R6T8W0Y2A4C6E")]
    pub id: String,
    pub name: String,
    pub strategy: Strategy,
    pub required_skills: Vec<String>,
    /// The hold prompt's id.
    pub hold_prompt: Option<String>,
    pub max_wait_seconds: Option<i64>,
    pub overflow: Option<NumberRouteSpec>,
    pub announce_position: bool,
    pub ring_timeout_seconds: i64,
    #[serde(with = "time_format")]
    pub created_at: DateTime<Utc>,
    #[serde(with = "time_format")]
    pub updated_at: DateTime<Utc>,
}

/// A page of queues, in creation order.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct QueueList {
    pub data: Vec<QueueView>,
    /// Pass as `after` to get the next page; null on the last page.
    pub next: Option<String>,
}

fn view(q: QueueRow) -> Result<QueueView, ApiError> {
    let strategy = Strategy::parse(&q.spec.strategy).ok_or(ApiError::Internal)?;
    Ok(QueueView {
        id: q.id,
        name: q.spec.name,
        strategy,
        required_skills: q.spec.required_skills,
        hold_prompt: q.spec.hold_prompt,
        max_wait_seconds: q.spec.max_wait_seconds,
        overflow: q
            .spec
            .overflow
            .map(|(route_type, target)| NumberRouteSpec { route_type, target }),
        announce_position: q.spec.announce_position,
        ring_timeout_seconds: q.spec.ring_timeout_seconds,
        created_at: q.created_at,
        updated_at: q.updated_at,
    })
}

fn body_of(v: &QueueView) -> CreateQueue {
    CreateQueue {
        name: v.name.clone(),
        strategy: v.strategy,
        required_skills: v.required_skills.clone(),
        hold_prompt: v.hold_prompt.clone(),
        max_wait_seconds: v.max_wait_seconds,
        overflow: v.overflow.clone(),
        announce_position: v.announce_position,
        ring_timeout_seconds: Some(v.ring_timeout_seconds),
    }
}

fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= NAME_MAX
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// Check a body and resolve its references (each missing one is a 422 naming it).
async fn resolve(state: &AppState, body: CreateQueue) -> Result<QueueSpec, ApiError> {
    let mut errors = Vec::new();
    if !is_name(&body.name) {
        errors.push(FieldError::new(
            "name",
            format!("must be 1-{NAME_MAX} characters from A-Z a-z 0-9 . _ -"),
        ));
    }
    let skills = check_skills_at("required_skills", &body.required_skills, &mut errors);
    MAX_WAIT.check("max_wait_seconds", body.max_wait_seconds, &mut errors);
    RING_TIMEOUT.check(
        "ring_timeout_seconds",
        body.ring_timeout_seconds,
        &mut errors,
    );
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let hold_prompt = match &body.hold_prompt {
        Some(p) => match state.store.find_prompt(p).await {
            Ok(p) => Some(p.id),
            Err(StoreError::NotFound) => {
                return Err(ApiError::field(
                    "hold_prompt",
                    format!("no prompt with id or name {p:?}"),
                ))
            }
            Err(e) => return Err(e.into()),
        },
        None => None,
    };
    let overflow = match &body.overflow {
        Some(r) => Some(resolve_route(state, "overflow", r, &OVERFLOW_TYPES).await?),
        None => None,
    };
    Ok(QueueSpec {
        name: body.name,
        strategy: body.strategy.as_str().to_owned(),
        required_skills: skills,
        hold_prompt,
        max_wait_seconds: body.max_wait_seconds,
        overflow,
        announce_position: body.announce_position,
        ring_timeout_seconds: body.ring_timeout_seconds.unwrap_or(DEFAULT_RING_TIMEOUT),
    })
}

async fn find(state: &AppState, reference: &str) -> Result<QueueRow, ApiError> {
    match state.store.find_queue(reference).await {
        Ok(q) => Ok(q),
        Err(StoreError::NotFound) => Err(ApiError::NotFound(format!("no queue {reference:?}"))),
        Err(e) => Err(e.into()),
    }
}

/// Create a queue.
#[utoipa::path(
    post, path = "/v1/queues", tag = "queues",
    request_body = CreateQueue,
    responses(
        (status = 201, description = "Created", body = QueueView),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or bad API key", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The name exists", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid field; a missing hold prompt or overflow target is named", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
async fn create_queue(
    _auth: Authed,
    State(state): State<Arc<AppState>>,
    ApiJson(body): ApiJson<CreateQueue>,
) -> Result<impl IntoResponse, ApiError> {
    let spec = resolve(&state, body).await?;
    let row = state.store.create_queue(&spec).await?;
    let location = format!("/v1/queues/{}", row.id);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(view(row)?),
    ))
}

/// List queues in creation order.
#[utoipa::path(
    get, path = "/v1/queues", tag = "queues",
    params(PageQuery),
    responses(
        (status = 200, description = "A page of queues", body = QueueList),
        (status = 401, description = "Missing or bad API key", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Bad limit or cursor", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
async fn list_queues(
    _auth: Authed,
    State(state): State<Arc<AppState>>,
    page: Pagination,
) -> Result<Json<QueueList>, ApiError> {
    let p = state
        .store
        .list_queues(page.limit, page.after.as_deref())
        .await?;
    Ok(Json(QueueList {
        data: p.data.into_iter().map(view).collect::<Result<_, _>>()?,
        next: p.next,
    }))
}

/// Get a queue.
#[utoipa::path(
    get, path = "/v1/queues/{id}", tag = "queues",
    params(("id" = String, Path, description = "Queue id or name")),
    responses(
        (status = 200, description = "The queue", body = QueueView),
        (status = 401, description = "Missing or bad API key", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such queue", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
async fn get_queue(
    _auth: Authed,
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Json<QueueView>, ApiError> {
    Ok(Json(view(find(&state, &id).await?)?))
}

/// Change a queue's settings.
#[utoipa::path(
    patch, path = "/v1/queues/{id}", tag = "queues",
    params(("id" = String, Path, description = "Queue id or name")),
    request_body = PatchQueue,
    responses(
        (status = 200, description = "The updated queue", body = QueueView),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or bad API key", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such queue", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The new name exists", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid field; a missing hold prompt or overflow target is named", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
async fn patch_queue(
    _auth: Authed,
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<Value>,
) -> Result<Json<QueueView>, ApiError> {
    let Value::Object(patch) = body else {
        return Err(ApiError::field(".", "must be a JSON object"));
    };
    check_patch_members(
        &patch,
        &schema_fields::<PatchQueue>(),
        &[("overflow", schema_fields::<NumberRouteSpec>())],
    )?;
    let queue = find(&state, &id).await?;
    let current = view(queue.clone())?;
    let mut merged = serde_json::to_value(body_of(&current)).map_err(|_| ApiError::Internal)?;
    merge(&mut merged, Value::Object(patch));
    let bytes = serde_json::to_vec(&merged).map_err(|_| ApiError::Internal)?;
    let body: CreateQueue = parse_json(&bytes)?;
    let spec = resolve(&state, body).await?;
    let updated = state.store.update_queue(&queue.id, &spec).await?;
    Ok(Json(view(updated)?))
}

/// Delete a queue that no number, flow or other queue's overflow uses.
#[utoipa::path(
    delete, path = "/v1/queues/{id}", tag = "queues",
    params(("id" = String, Path, description = "Queue id or name")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = "Missing or bad API key", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such queue", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "A number, ivr flow or queue overflow uses it (named)", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
async fn delete_queue(
    _auth: Authed,
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let queue = find(&state, &id).await?;
    state.store.delete_queue(&queue.id).await?;
    Ok(StatusCode::NO_CONTENT)
}
