//! `POST /v1/calls/{id}/play` and `POST /v1/calls/{id}/dtmf`: audio voxgate puts into a
//! live call's legs. A prompt replaces what a leg hears from the other side until it
//! ends, then the legs hear each other again; digits go out in the method the leg
//! negotiated (RFC 4733 events when its SDP has `telephone-event`, else SIP INFO to a
//! phone that sends its keys by INFO, else tones).

use std::num::NonZeroU32;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::Authed;
use super::calls::{ended, engine_reply, find, Refusals};
use super::error::{ApiError, ApiJson, Problem};
use super::AppState;
use crate::calls::control::PlayPrompt;
use crate::media::{Digit, Loops};
use crate::store::StoreError;

pub fn router() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .routes(routes!(play))
        .routes(routes!(send_dtmf))
}

/// Body of `POST /v1/calls/{id}/play`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlayRequest {
    /// The prompt: its id or name.
    #[schema(example = "welcome", min_length = 1, max_length = 64)]
    pub prompt: String,
    /// One leg of the call (its id); both answered legs when absent.
    #[schema(example = "leg_01JD3N5V8K2Q4R6T8W0Y2A4C6E")]
    pub leg: Option<String>,
    /// How many times to play it, 1-100 (default 1); 0 plays it until the call ends or
    /// another prompt takes its place (hold music).
    #[schema(minimum = 0, maximum = 100)]
    #[serde(rename = "loop")]
    pub loops: Option<u32>,
}

/// What `play` started.
#[derive(Debug, Serialize, ToSchema)]
pub struct PlayReply {
    /// The legs the prompt plays to.
    pub legs: Vec<String>,
}

/// Body of `POST /v1/calls/{id}/dtmf`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DtmfRequest {
    /// Up to 64 keys from `0-9`, `*`, `#` and `A-D`.
    #[schema(
        example = "1234#",
        min_length = 1,
        max_length = 64,
        pattern = "^[0-9*#A-Da-d]{1,64}$"
    )]
    pub digits: String,
    /// The leg to send them to (its id); by default the leg that is not the agent's (the
    /// lead, or the callee of an agent-to-agent call).
    #[schema(example = "leg_01JD3N5V8K2Q4R6T8W0Y2A4C6E")]
    pub leg: Option<String>,
}

/// What `dtmf` started.
#[derive(Debug, Serialize, ToSchema)]
pub struct DtmfReply {
    /// The leg the digits go to.
    pub leg: String,
}

/// Most loops a request may ask for (0 means "until replaced").
const MAX_LOOPS: u32 = 100;

/// Play a prompt into a live call: to one leg or both. It replaces what the leg hears
/// from the other side until it ends; then the legs hear each other again.
#[utoipa::path(
    post, path = "/v1/calls/{id}/play", tag = "calls",
    params(("id" = String, Path, description = "Call id")),
    request_body = PlayRequest,
    responses(
        (status = 202, description = "Playing", body = PlayReply),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or bad API key", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such call (or leg in it), or it is not live on this gateway", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The call has ended or is not answered yet, or the leg is not answered", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid field or unknown prompt (the problem names it)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The call engine is not running or cannot play", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
async fn play(
    _auth: Authed,
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<PlayRequest>,
) -> Result<(StatusCode, Json<PlayReply>), ApiError> {
    let loops = match body.loops {
        None | Some(1) => Loops::ONCE,
        Some(0) => Loops::Forever,
        Some(n) if n <= MAX_LOOPS => NonZeroU32::new(n).map_or(Loops::ONCE, Loops::Count),
        Some(_) => {
            return Err(ApiError::field(
                "loop",
                format!("must be 0 (until replaced) to {MAX_LOOPS}"),
            ))
        }
    };
    // The call (the path) first: an unknown call is a 404 whatever the body names.
    let call = find(&state, &id).await?;
    if call.status.is_final() {
        return Err(ended(&call));
    }
    let prompt = match state.store.find_prompt(&body.prompt).await {
        Ok(p) => p,
        Err(StoreError::NotFound) => {
            return Err(ApiError::field(
                "prompt",
                format!("no prompt with id or name {:?}", body.prompt),
            ))
        }
        Err(e) => return Err(e.into()),
    };
    let asked = state
        .calls
        .play(&call.id, body.leg.as_deref(), PlayPrompt { prompt, loops });
    let legs = engine_reply(&state, &id, asked, refusals(&id, body.leg.as_deref())).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(PlayReply {
            legs: legs.into_iter().map(|l| l.into_string()).collect(),
        }),
    ))
}

/// Send DTMF digits into a live call, to one leg: RFC 4733 events when the leg
/// negotiated `telephone-event`, else SIP INFO (one per key, 250 ms apart) when the leg's
/// phone sends its own keys by INFO or has no codec for tones, else tones in its audio.
#[utoipa::path(
    post, path = "/v1/calls/{id}/dtmf", tag = "calls",
    params(("id" = String, Path, description = "Call id")),
    request_body = DtmfRequest,
    responses(
        (status = 202, description = "Sending", body = DtmfReply),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or bad API key", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such call (or leg in it), or it is not live on this gateway", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The call has ended or is not answered yet, or the leg is not answered", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid field (the problem names it)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The call engine is not running or cannot send", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
async fn send_dtmf(
    _auth: Authed,
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<DtmfRequest>,
) -> Result<(StatusCode, Json<DtmfReply>), ApiError> {
    let digits: Option<Vec<Digit>> = body.digits.chars().map(Digit::from_char).collect();
    let digits = match digits {
        Some(d) if !d.is_empty() && d.len() <= 64 => d,
        _ => {
            return Err(ApiError::field(
                "digits",
                "must be 1 to 64 keys from 0-9, *, # and A-D",
            ))
        }
    };
    let call = find(&state, &id).await?;
    if call.status.is_final() {
        return Err(ended(&call));
    }
    let asked = state.calls.dtmf(&call.id, body.leg.as_deref(), digits);
    let leg = engine_reply(&state, &id, asked, refusals(&id, body.leg.as_deref())).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(DtmfReply {
            leg: leg.into_string(),
        }),
    ))
}

/// What the play and dtmf routes say when the engine refuses.
fn refusals(id: &str, leg: Option<&str>) -> Refusals {
    Refusals {
        not_live: match leg {
            Some(leg) => format!("call {id} is not live on this gateway or has no leg {leg}"),
            None => format!("call {id} is not live on this gateway"),
        },
        conflict: format!("call {id} is not answered yet (or that leg is not)"),
        unavailable: "the call engine is not running or cannot do it for this call",
    }
}
