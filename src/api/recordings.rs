//! `/v1/recordings`: call recordings (SPEC §4). The audio is served as `audio/wav` with
//! HTTP Range support (RFC 9110 §14), so players can seek and downloads can resume.

use std::sync::Arc;

use axum::extract::{FromRequestParts, Path, Query, Request, State};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tower::ServiceExt as _;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::Authed;
use super::calls::{agent_filter, check_period, filter_schema, parse_time, time_schema, FILTER};
use super::calls::{engine_reply, Refusals};
use super::error::{ApiError, ApiJson, FieldError, Problem};
use super::pagination::{PageQuery, Pagination};
use super::{time_format, AppState};
use crate::calls::control::RecordingAction;
use crate::store::{Recording, RecordingChannels, RecordingFilter, RecordingStorage, StoreError};

pub fn router() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .routes(routes!(list_recordings))
        .routes(routes!(get_recording, delete_recording))
        .routes(routes!(get_recording_audio))
        .routes(routes!(call_recording))
}

/// `mono` (both parties mixed) or `dual` (left = agent/internal, right = lead/external).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ChannelsParam {
    Mono,
    Dual,
}

impl From<ChannelsParam> for RecordingChannels {
    fn from(c: ChannelsParam) -> RecordingChannels {
        match c {
            ChannelsParam::Mono => RecordingChannels::Mono,
            ChannelsParam::Dual => RecordingChannels::Dual,
        }
    }
}

/// What to do with a live call's recording.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RecordingActionParam {
    /// Start recording (the call must be answered and not already recorded).
    Start,
    /// Leave out what follows until `resume` (card payments): silence in the file.
    Pause,
    Resume,
    /// Finish the file; `recording.completed` follows.
    Stop,
}

/// Body of `POST /v1/calls/{id}/recording`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CallRecordingRequest {
    pub action: RecordingActionParam,
    /// For `start`: `dual` (default) or `mono`; the other actions ignore it.
    pub channels: Option<ChannelsParam>,
}

/// The recording acted on.
#[derive(Debug, Serialize, ToSchema)]
pub struct CallRecordingReply {
    #[schema(example = "rec_01JD3N5V8K2Q4R6T8W0Y2A4C6E")]
    pub recording_id: String,
    /// `recording`, `paused` or `stopped` (its file is being finished).
    #[schema(value_type = String, example = "recording")]
    pub status: &'static str,
}

/// Start, pause, resume or stop a live call's recording. The recording's row appears in
/// `GET /v1/recordings` within moments (it is written with the call's records); `stop`
/// (or the call's end) finishes the file and sends `recording.completed`.
#[utoipa::path(
    post, path = "/v1/calls/{id}/recording", tag = "calls",
    params(("id" = String, Path, description = "Call id")),
    request_body = CallRecordingRequest,
    responses(
        (status = 200, description = "Done", body = CallRecordingReply),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or bad API key", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such call, or it is not live on this gateway", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The call has ended, is not answered yet, is already recorded (start) or has no recording (pause, resume, stop)", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid field (the problem names it)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The call engine is not running", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
async fn call_recording(
    _auth: Authed,
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<CallRecordingRequest>,
) -> Result<Json<CallRecordingReply>, ApiError> {
    let call = super::calls::find(&state, &id).await?;
    if call.status.is_final() {
        return Err(super::calls::ended(&call));
    }
    let (action, status) = match body.action {
        RecordingActionParam::Start => (
            RecordingAction::Start(body.channels.map_or_else(Default::default, Into::into)),
            "recording",
        ),
        RecordingActionParam::Pause => (RecordingAction::Pause, "paused"),
        RecordingActionParam::Resume => (RecordingAction::Resume, "recording"),
        RecordingActionParam::Stop => (RecordingAction::Stop, "stopped"),
    };
    let refusals = Refusals {
        not_live: format!("call {id} is not live on this gateway"),
        conflict: match body.action {
            RecordingActionParam::Start => {
                format!("call {id} is not answered yet or is already being recorded")
            }
            _ => format!("call {id} has no recording in progress"),
        },
        unavailable: "the call engine is not running or cannot record",
    };
    let recording_id = engine_reply(
        &state,
        &id,
        state.calls.recording(&call.id, action),
        refusals,
    )
    .await?;
    Ok(Json(CallRecordingReply {
        recording_id,
        status,
    }))
}

/// A call recording.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct RecordingView {
    #[schema(example = "rec_01JD3N5V8K2Q4R6T8W0Y2A4C6E")]
    pub id: String,
    /// The call it records.
    pub call: String,
    /// The agent on the call, if any.
    pub agent: Option<String>,
    /// `dual`: left = agent/internal party, right = lead/external party; `mono`: mixed.
    #[schema(value_type = String, example = "dual")]
    pub channels: &'static str,
    /// `recording`, `paused`, `completed` or `failed`.
    #[schema(value_type = String, example = "completed")]
    pub status: &'static str,
    /// `local` (under the data dir) or `s3`.
    #[schema(value_type = String, example = "local")]
    pub storage: &'static str,
    /// Samples per second of the WAV file.
    #[schema(example = 8000)]
    pub sample_rate: u32,
    /// Length of the audio, once completed.
    pub duration_ms: Option<i64>,
    /// Size of the WAV file, once completed.
    pub size_bytes: Option<i64>,
    #[serde(with = "time_format")]
    pub started_at: DateTime<Utc>,
    #[serde(with = "time_format::option")]
    pub ended_at: Option<DateTime<Utc>>,
    /// Where to fetch the audio.
    #[schema(example = "/v1/recordings/rec_01JD3N5V8K2Q4R6T8W0Y2A4C6E/audio")]
    pub audio_url: String,
}

/// A page of recordings.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct RecordingList {
    pub data: Vec<RecordingView>,
    pub next: Option<String>,
}

fn view(r: Recording) -> RecordingView {
    RecordingView {
        audio_url: format!("/v1/recordings/{}/audio", r.id),
        id: r.id,
        call: r.call_id,
        agent: r.agent_id,
        channels: r.channels.as_str(),
        status: r.status.as_str(),
        storage: r.storage.as_str(),
        sample_rate: r.sample_rate,
        duration_ms: r.duration_ms,
        size_bytes: r.size_bytes,
        started_at: r.started_at,
        ended_at: r.ended_at,
    }
}

/// Filters of `GET /v1/recordings` (for the document; [`RecordingQuery`] parses them).
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct RecordingListQuery {
    /// Only recordings of this call (its id; an unknown id matches nothing).
    #[param(schema_with = filter_schema)]
    call: Option<String>,
    /// Only recordings of this agent (id or username). An unknown agent is a 422 naming
    /// `agent`.
    #[param(schema_with = filter_schema)]
    agent: Option<String>,
    /// Only recordings started at or after this time (RFC 3339).
    #[param(schema_with = time_schema)]
    since: Option<String>,
    /// Only recordings started before this time (RFC 3339); must be later than `since`.
    #[param(schema_with = time_schema)]
    until: Option<String>,
}

/// The validated filters.
#[derive(Debug, Default)]
pub struct RecordingQuery {
    call: Option<String>,
    agent: Option<String>,
    since: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
}

/// A reference filter, by the calls' [`FILTER`] rule.
fn reference(field: &str, v: String, errors: &mut Vec<FieldError>) -> Option<String> {
    if FILTER.is_valid(&v) {
        Some(v)
    } else {
        errors.push(FieldError::new(field, FILTER.message()));
        None
    }
}

impl<S: Send + Sync> FromRequestParts<S> for RecordingQuery {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        let Query(pairs) = Query::<Vec<(String, String)>>::try_from_uri(&parts.uri)
            .map_err(|e| ApiError::field(".", format!("bad query string: {}", e.body_text())))?;
        let mut q = RecordingQuery::default();
        let mut errors = Vec::new();
        for (k, v) in pairs {
            match k.as_str() {
                "call" => q.call = reference("call", v, &mut errors),
                "agent" => q.agent = reference("agent", v, &mut errors),
                "since" => q.since = parse_time("since", &v, &mut errors),
                "until" => q.until = parse_time("until", &v, &mut errors),
                _ => {}
            }
        }
        check_period(q.since, q.until, &mut errors);
        if errors.is_empty() {
            Ok(q)
        } else {
            Err(ApiError::Validation(errors))
        }
    }
}

fn not_found(id: &str) -> ApiError {
    ApiError::NotFound(format!("no recording with id {id:?}"))
}

async fn find(state: &AppState, id: &str) -> Result<Recording, ApiError> {
    match state.store.get_recording(id).await {
        Ok(r) => Ok(r),
        Err(StoreError::NotFound) => Err(not_found(id)),
        Err(e) => Err(e.into()),
    }
}

/// List recordings, newest first.
#[utoipa::path(
    get, path = "/v1/recordings", tag = "recordings",
    params(PageQuery, RecordingListQuery),
    responses(
        (status = 200, description = "A page of recordings, newest first", body = RecordingList),
        (status = 401, description = "Missing or bad API key", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Bad filter, limit or cursor (the problem names it)", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
async fn list_recordings(
    _auth: Authed,
    State(state): State<Arc<AppState>>,
    page: Pagination,
    query: RecordingQuery,
) -> Result<Json<RecordingList>, ApiError> {
    let agent_id = agent_filter(&state, query.agent.as_deref()).await?;
    let filter = RecordingFilter {
        call_id: query.call,
        agent_id,
        since: query.since,
        until: query.until,
    };
    let p = state
        .store
        .list_recordings(&filter, page.limit, page.after.as_deref())
        .await?;
    Ok(Json(RecordingList {
        data: p.data.into_iter().map(view).collect(),
        next: p.next,
    }))
}

/// One recording.
#[utoipa::path(
    get, path = "/v1/recordings/{id}", tag = "recordings",
    params(("id" = String, Path, description = "Recording id")),
    responses(
        (status = 200, description = "The recording", body = RecordingView),
        (status = 401, description = "Missing or bad API key", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such recording", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
async fn get_recording(
    _auth: Authed,
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Json<RecordingView>, ApiError> {
    Ok(Json(view(find(&state, &id).await?)))
}

/// The recording's audio (`audio/wav`). Honours `Range: bytes=…` (206 with
/// `Content-Range`; 416 when the range lies outside the file) and `HEAD`. A recording
/// still in progress is served as far as it has been written: its header is kept valid
/// while it grows.
#[utoipa::path(
    get, path = "/v1/recordings/{id}/audio", tag = "recordings",
    params(
        ("id" = String, Path, description = "Recording id"),
        ("Range" = Option<String>, Header, description = "A byte range, e.g. bytes=0-1023"),
    ),
    responses(
        (status = 200, description = "The whole WAV file", content_type = "audio/wav", body = Vec<u8>),
        (status = 206, description = "The requested byte range", content_type = "audio/wav", body = Vec<u8>),
        (status = 401, description = "Missing or bad API key", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such recording, or its audio is gone", body = Problem, content_type = "application/problem+json"),
        (status = 416, description = "The range lies outside the file"),
    ),
    security(("bearer" = []))
)]
async fn get_recording_audio(
    _auth: Authed,
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    request: Request,
) -> Result<Response, ApiError> {
    let rec = find(&state, &id).await?;
    if rec.storage != RecordingStorage::Local {
        return Err(ApiError::NotFound(format!(
            "recording {id} is stored in {}, which this node cannot read",
            rec.storage.as_str()
        )));
    }
    let path = state.config.data_dir.join(&rec.path);
    if !tokio::fs::try_exists(&path).await.unwrap_or(false) {
        return Err(ApiError::NotFound(format!(
            "the audio of recording {id} is missing"
        )));
    }
    let wav: mime::Mime = "audio/wav".parse().map_err(|_| ApiError::Internal)?;
    let served = tower_http::services::ServeFile::new_with_mime(path, &wav)
        .oneshot(request)
        .await
        .map_err(|e| {
            tracing::error!(error = %e, recording = %id, "cannot serve recording audio");
            ApiError::Internal
        })?;
    Ok(served.into_response())
}

/// Delete a recording: its row and its audio. A recording in progress is a 409 (stop it
/// first).
#[utoipa::path(
    delete, path = "/v1/recordings/{id}", tag = "recordings",
    params(("id" = String, Path, description = "Recording id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = "Missing or bad API key", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such recording", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The recording is still in progress", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
async fn delete_recording(
    _auth: Authed,
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let rec = match state.store.delete_recording(&id).await {
        Ok(r) => r,
        Err(StoreError::NotFound) => return Err(not_found(&id)),
        Err(e) => return Err(e.into()),
    };
    if rec.storage == RecordingStorage::Local {
        let path = state.config.data_dir.join(&rec.path);
        // The row is gone, so the API no longer offers the audio; a file that cannot be
        // removed is only disk space, logged for the operator.
        match tokio::fs::remove_file(&path).await {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(error = %e, path = %path.display(), "cannot remove recording audio");
            }
        }
    }
    Ok(StatusCode::NO_CONTENT)
}
