//! `/v1/prompts`: audio played to callers (menus, hold music, announcements). An upload
//! (`POST /v1/prompts`, `multipart/form-data`) is decoded once — WAV, MP3, OGG/Vorbis or
//! FLAC — and kept as 16-bit mono WAV at 8, 16 and 48 kHz under the data dir
//! ([`crate::media::prompts`]); anything that is not decodable audio is a 422 naming the
//! reason. A prompt a queue or flow uses cannot be deleted (409 naming the user).

use std::sync::{Arc, LazyLock};

use axum::extract::{DefaultBodyLimit, FromRequest, Multipart, Path, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;
use tower::ServiceExt as _;
use utoipa::openapi::schema::Schema;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use voxgate_media::prompt::{self, PromptError};
use voxgate_media::SampleRate;

use super::auth::Authed;
use super::error::{ApiError, FieldError, Problem};
use super::pagination::{PageQuery, Pagination};
use super::rules::{Chars, Text};
use super::{time_format, AppState};
use crate::ids::{new_id, IdKind};
use crate::media::prompts as files;
use crate::store::{NewPrompt, PromptRow, StoreError};

/// A prompt's name: the same characters as a queue's, so that it can stand in a URL path
/// (`/v1/prompts/{name}`) and in a flow's `prompt` field as written.
pub const NAME: Text = Text::new(1, 64, Chars::Token);

/// The largest upload body: 20 MiB holds ten minutes of 16 kHz mono WAV or of any MP3,
/// OGG or FLAC a phone prompt needs; the audio itself is bounded at
/// [`prompt::MAX_SECONDS`] once decoded.
pub const MAX_UPLOAD_BYTES: usize = 20 << 20;

/// Uploads decoded at once. Decoding and resampling ten minutes of audio takes seconds
/// of CPU and up to a few hundred MB; two at a time keep the API and the relay alive
/// while a batch of uploads arrives (the others wait their turn).
static DECODES: LazyLock<Semaphore> = LazyLock::new(|| Semaphore::new(2));

pub fn router() -> OpenApiRouter<Arc<AppState>> {
    // The upload's own body limit: api.max_body_bytes (1 MiB by default) is for JSON.
    let (schemas, paths, methods) = routes!(list_prompts, upload_prompt);
    OpenApiRouter::new()
        .routes((
            schemas,
            paths,
            methods.layer(DefaultBodyLimit::max(MAX_UPLOAD_BYTES)),
        ))
        .routes(routes!(get_prompt, delete_prompt))
        .routes(routes!(get_prompt_audio))
}

fn name_schema() -> Schema {
    NAME.schema()
}

/// The `multipart/form-data` body of `POST /v1/prompts` (for the document; the handler
/// reads the parts as they come).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct PromptUpload {
    /// Unique; flows and queues may name the prompt by it.
    #[schema(schema_with = name_schema)]
    name: String,
    /// The audio: WAV (PCM or IEEE float), MP3, OGG/Vorbis or FLAC, any rate, mono or
    /// stereo (mixed down), at most 10 minutes; the whole body at most 20 MiB.
    #[schema(value_type = String, format = Binary)]
    file: Vec<u8>,
}

/// A prompt as the API shows it.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct PromptView {
    #[schema(example = "prm_01JD3N5V8K2Q4R6T8W0Y2A4C6E")]
    pub id: String,
    #[schema(example = "welcome")]
    pub name: String,
    /// The uploaded file's format (`wav`, `mp3`, `ogg`, `flac`).
    #[schema(example = "wav")]
    pub format: String,
    #[schema(minimum = 0)]
    pub duration_ms: i64,
    /// The uploaded audio's own rate. What calls play is stored at 8, 16 and 48 kHz
    /// (`GET /v1/prompts/{id}/audio?rate=`).
    #[schema(example = 44100, minimum = 1)]
    pub sample_rate: i64,
    #[serde(with = "time_format")]
    pub created_at: DateTime<Utc>,
}

/// A page of prompts, in creation order.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct PromptList {
    pub data: Vec<PromptView>,
    /// Pass as `after` to get the next page; null on the last page.
    pub next: Option<String>,
}

fn view(p: PromptRow) -> PromptView {
    PromptView {
        id: p.id,
        name: p.name,
        format: p.format,
        duration_ms: p.duration_ms,
        sample_rate: p.sample_rate,
        created_at: p.created_at,
    }
}

async fn find(state: &AppState, reference: &str) -> Result<PromptRow, ApiError> {
    match state.store.find_prompt(reference).await {
        Ok(p) => Ok(p),
        Err(StoreError::NotFound) => Err(ApiError::NotFound(format!("no prompt {reference:?}"))),
        Err(e) => Err(e.into()),
    }
}

/// List prompts in creation order.
#[utoipa::path(
    get, path = "/v1/prompts", tag = "prompts",
    params(PageQuery),
    responses(
        (status = 200, description = "A page of prompts", body = PromptList),
        (status = 401, description = "Missing or bad API key", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Bad limit or cursor", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
async fn list_prompts(
    _auth: Authed,
    State(state): State<Arc<AppState>>,
    page: Pagination,
) -> Result<Json<PromptList>, ApiError> {
    let p = state
        .store
        .list_prompts(page.limit, page.after.as_deref())
        .await?;
    Ok(Json(PromptList {
        data: p.data.into_iter().map(view).collect(),
        next: p.next,
    }))
}

/// Get a prompt.
#[utoipa::path(
    get, path = "/v1/prompts/{id}", tag = "prompts",
    params(("id" = String, Path, description = "Prompt id or name")),
    responses(
        (status = 200, description = "The prompt", body = PromptView),
        (status = 401, description = "Missing or bad API key", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such prompt", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
async fn get_prompt(
    _auth: Authed,
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Json<PromptView>, ApiError> {
    Ok(Json(view(find(&state, &id).await?)))
}

/// Delete a prompt that no queue or flow uses.
#[utoipa::path(
    delete, path = "/v1/prompts/{id}", tag = "prompts",
    params(("id" = String, Path, description = "Prompt id or name")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = "Missing or bad API key", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such prompt", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "A queue or ivr flow uses it (named)", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
async fn delete_prompt(
    _auth: Authed,
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let p = find(&state, &id).await?;
    let removed = state.store.delete_prompt(&p.id).await?;
    super::trunks::changed(&state).await;
    // The audio goes with the row. The row is gone, so the API no longer offers the
    // audio; a folder that cannot be removed is only disk space, logged for the operator.
    if let Some(rel) = removed.path {
        let data_dir = state.config.data_dir.clone();
        let res = tokio::task::spawn_blocking(move || files::remove(&data_dir, &rel)).await;
        match res {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, prompt = %p.id, "cannot remove prompt audio"),
            Err(e) => tracing::warn!(error = %e, prompt = %p.id, "cannot remove prompt audio"),
        }
    }
    Ok(StatusCode::NO_CONTENT)
}

/// The parts of an upload, as read.
struct Upload {
    name: String,
    file: axum::body::Bytes,
}

/// Reads the two parts; every missing, repeated or unknown part is named in one 422.
async fn read_upload(req: Request, state: &Arc<AppState>) -> Result<Upload, ApiError> {
    const MULTIPART: &str = "multipart/form-data";
    let is_multipart = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case(MULTIPART));
    if !is_multipart {
        return Err(ApiError::WrongMediaType(MULTIPART));
    }
    let mut multipart = Multipart::from_request(req, state)
        .await
        .map_err(|e| ApiError::MalformedMultipart(e.body_text()))?;
    let part_error = |e: axum::extract::multipart::MultipartError| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge {
                limit: MAX_UPLOAD_BYTES,
            }
        } else {
            ApiError::MalformedMultipart(e.body_text())
        }
    };
    let mut name: Option<String> = None;
    let mut file: Option<axum::body::Bytes> = None;
    let mut errors = Vec::new();
    while let Some(field) = multipart.next_field().await.map_err(part_error)? {
        let part = field.name().unwrap_or_default().to_owned();
        match part.as_str() {
            "name" => {
                let bytes = field.bytes().await.map_err(part_error)?;
                if name.is_some() {
                    errors.push(FieldError::new("name", "given more than once"));
                }
                match String::from_utf8(bytes.to_vec()) {
                    Ok(v) => name = Some(v),
                    Err(_) => errors.push(FieldError::new("name", "must be UTF-8 text")),
                }
            }
            "file" => {
                let bytes = field.bytes().await.map_err(part_error)?;
                if file.is_some() {
                    errors.push(FieldError::new("file", "given more than once"));
                }
                file = Some(bytes);
            }
            _ => {
                // Drain it (the next part starts after it), then refuse it as JSON bodies
                // refuse unknown fields.
                field.bytes().await.map_err(part_error)?;
                errors.push(FieldError::new(
                    if part.is_empty() { "." } else { part.as_str() },
                    "unknown part (expected name and file)",
                ));
            }
        }
    }
    match &name {
        Some(n) => NAME.check("name", n, &mut errors),
        None => {
            if !errors.iter().any(|e| e.field == "name") {
                errors.push(FieldError::new("name", "missing"));
            }
        }
    }
    if file.is_none() {
        errors.push(FieldError::new("file", "missing: the audio file"));
    }
    match (name, file) {
        (Some(name), Some(file)) if errors.is_empty() => Ok(Upload { name, file }),
        _ => Err(ApiError::Validation(errors)),
    }
}

/// Upload a prompt: `multipart/form-data` with the parts `name` and `file`. The file is
/// decoded and resampled once, here; anything that is not decodable audio (text, a
/// truncated file, no audio track, an unsupported codec, longer than 10 minutes) is a
/// 422 whose `errors` say why, on the field `file`.
#[utoipa::path(
    post, path = "/v1/prompts", tag = "prompts",
    request_body(content = PromptUpload, content_type = "multipart/form-data",
        description = "The prompt's name and audio file"),
    responses(
        (status = 201, description = "Decoded and stored", body = PromptView,
            headers(("Location" = String, description = "The new prompt's URL"))),
        (status = 400, description = "A multipart body that does not parse (`/problems/malformed-multipart`)", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or bad API key", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "A prompt with this name exists (`/problems/conflict`)", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body larger than 20 MiB (`/problems/body-too-large`)", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not multipart/form-data (`/problems/unsupported-media-type`)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A missing, repeated, unknown or invalid part; a file that is not decodable audio, with the reason (`/problems/validation`)", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
async fn upload_prompt(
    _auth: Authed,
    State(state): State<Arc<AppState>>,
    req: Request,
) -> Result<impl IntoResponse, ApiError> {
    let upload = read_upload(req, &state).await?;
    // A taken name is known before the decoding work (the insert still decides a race).
    match state.store.find_prompt(&upload.name).await {
        Ok(_) => {
            return Err(ApiError::Conflict {
                field: "name".to_owned(),
            })
        }
        Err(StoreError::NotFound) => {}
        Err(e) => return Err(e.into()),
    }
    let decoded = {
        let _permit = DECODES.acquire().await.map_err(|_| ApiError::Internal)?;
        let file = upload.file;
        tokio::task::spawn_blocking(move || prompt::decode(&file))
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "prompt decoder panicked");
                ApiError::Internal
            })?
    };
    let decoded = decoded.map_err(|e: PromptError| ApiError::field("file", e.to_string()))?;
    let id = new_id(IdKind::Prompt);
    let new = NewPrompt {
        name: upload.name,
        format: decoded.format.as_str().to_owned(),
        duration_ms: i64::try_from(decoded.duration_ms()).unwrap_or(i64::MAX),
        sample_rate: i64::from(decoded.source_rate.0),
        path: None,
    };
    let data_dir = state.config.data_dir.clone();
    let id2 = id.clone();
    let rel = tokio::task::spawn_blocking(move || files::store(&data_dir, &id2, &decoded))
        .await
        .map_err(|_| ApiError::Internal)?
        .map_err(|e| {
            tracing::error!(error = %e, "cannot store prompt audio");
            ApiError::Internal
        })?;
    let new = NewPrompt {
        path: Some(rel.clone()),
        ..new
    };
    let row = match state.store.create_prompt_with_id(&id, &new).await {
        Ok(row) => row,
        Err(e) => {
            // No row: the audio goes too.
            let data_dir = state.config.data_dir.clone();
            let _ = tokio::task::spawn_blocking(move || files::remove(&data_dir, &rel)).await;
            return Err(e.into());
        }
    };
    tracing::info!(prompt = %row.id, name = %row.name, format = %row.format,
        duration_ms = row.duration_ms, "prompt uploaded");
    super::trunks::changed(&state).await;
    let location = format!("/v1/prompts/{}", row.id);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(view(row)),
    ))
}

/// `GET /v1/prompts/{id}/audio`'s query (for the document; the handler parses it).
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct AudioQuery {
    /// Sample rate of the WAV served: 8000 (default), 16000 or 48000.
    #[param(schema_with = rate_schema)]
    rate: Option<u32>,
}

fn rate_schema() -> Schema {
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    Schema::Object(
        ObjectBuilder::new()
            .schema_type(Type::Integer)
            .enum_values(Some(files::RATES.map(|r| r.hz())))
            .build(),
    )
}

/// The prompt's audio as stored: 16-bit mono WAV at 8 kHz (or `rate`), with Range
/// support as for recordings.
#[utoipa::path(
    get, path = "/v1/prompts/{id}/audio", tag = "prompts",
    params(
        ("id" = String, Path, description = "Prompt id or name"),
        AudioQuery,
        ("Range" = Option<String>, Header, description = "A byte range, e.g. bytes=0-1023"),
    ),
    responses(
        (status = 200, description = "The whole WAV file", content_type = "audio/wav", body = Vec<u8>),
        (status = 206, description = "The requested byte range", content_type = "audio/wav", body = Vec<u8>),
        (status = 401, description = "Missing or bad API key", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such prompt, or its audio is gone", body = Problem, content_type = "application/problem+json"),
        (status = 416, description = "The range lies outside the file"),
        (status = 422, description = "A rate other than 8000, 16000 or 48000", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
async fn get_prompt_audio(
    _auth: Authed,
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    request: Request,
) -> Result<Response, ApiError> {
    let Query(pairs) = Query::<Vec<(String, String)>>::try_from_uri(request.uri())
        .map_err(|e| ApiError::field(".", format!("bad query string: {}", e.body_text())))?;
    let mut rate = SampleRate::HZ_8000;
    for (k, v) in pairs {
        if k == "rate" {
            rate = v
                .parse::<u32>()
                .ok()
                .and_then(SampleRate::new)
                .ok_or_else(|| ApiError::field("rate", "must be 8000, 16000 or 48000"))?;
        }
    }
    let p = find(&state, &id).await?;
    let gone = || ApiError::NotFound(format!("the audio of prompt {} is missing", p.id));
    let rel = p.path.as_deref().ok_or_else(gone)?;
    let path = files::audio_path(&state.config.data_dir, rel, rate);
    if !tokio::fs::try_exists(&path).await.unwrap_or(false) {
        return Err(gone());
    }
    let wav: mime::Mime = "audio/wav".parse().map_err(|_| ApiError::Internal)?;
    let served = tower_http::services::ServeFile::new_with_mime(path, &wav)
        .oneshot(request)
        .await
        .map_err(|e| {
            tracing::error!(error = %e, prompt = %p.id, "cannot serve prompt audio");
            ApiError::Internal
        })?;
    Ok(served.into_response())
}
