//! `/v1/calls`: call records (newest first) and live call control.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::openapi::schema::Schema;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::Authed;
use super::error::{ApiError, ApiJson, FieldError, Problem};
use super::pagination::{PageQuery, Pagination};
use super::rules::{Chars, Int, Text, E164};
use super::{time_format, AppState};
use crate::calls::control::ControlError;
use crate::calls::engine::Originate;
use crate::calls::record::{CallChange, CallStatus, LegDirection, NewCall};
use crate::calls::types::{CallDirection, CallId, HangupBy};
use crate::store::{Call, CallFilter, Leg, StoreError};

/// How long a hangup waits for the call engine's answer before reporting it unavailable.
pub(super) const HANGUP_TIMEOUT: Duration = Duration::from_secs(5);

/// A text filter (`agent`, `from`, `to`) and an agent reference in a body.
pub const FILTER: Text = Text::new(1, 256, Chars::Printable);

pub(super) fn filter_schema() -> Schema {
    FILTER.schema()
}

/// A time parameter: RFC 3339 (JSON Schema's `date-time`).
pub(crate) fn time_schema() -> Schema {
    Schema::Object(
        utoipa::openapi::schema::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(
                utoipa::openapi::KnownFormat::DateTime,
            )))
            .build(),
    )
}

pub fn router() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .routes(routes!(list_calls, create_call))
        .routes(routes!(get_call))
        .routes(routes!(hangup_call))
}

/// One SIP dialog of a call: the caller's (`inbound`) or one the gateway placed
/// (`outbound`).
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct LegView {
    #[schema(example = "leg_01JD3N5V8K2Q4R6T8W0Y2A4C6E")]
    pub id: String,
    pub direction: LegDirection,
    /// The agent on this leg (id), if it is an agent's phone.
    pub agent: Option<String>,
    /// Request-URI (outbound) or From URI (inbound) of the leg.
    #[schema(example = "sip:bob@192.0.2.10:5062")]
    pub uri: String,
    pub status: CallStatus,
    #[serde(with = "time_format")]
    pub started_at: DateTime<Utc>,
    #[serde(with = "time_format::option")]
    pub answered_at: Option<DateTime<Utc>>,
    #[serde(with = "time_format::option")]
    pub ended_at: Option<DateTime<Utc>>,
    /// Why the leg ended, e.g. `BYE`, `CANCEL`, `486 Busy Here`, `gateway-restart`.
    pub hangup_cause: Option<String>,
}

/// A call (its record lasts beyond the call: a CDR).
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct CallView {
    #[schema(example = "call_01JD3N5V8K2Q4R6T8W0Y2A4C6E")]
    pub id: String,
    pub status: CallStatus,
    /// `internal` (agent to agent), `inbound` or `outbound` (trunk calls).
    #[schema(example = "internal")]
    pub direction: String,
    #[schema(example = "sip:alice@voxgate")]
    pub from: String,
    #[schema(example = "sip:bob@voxgate")]
    pub to: String,
    /// The agent who placed the call (id); null if none, or if the agent was deleted.
    pub agent: Option<String>,
    /// In creation order.
    pub legs: Vec<LegView>,
    /// Answering machine detection result (`human`, `machine_start`, …); null when AMD
    /// did not run.
    pub answered_by: Option<String>,
    #[serde(with = "time_format")]
    pub started_at: DateTime<Utc>,
    #[serde(with = "time_format::option")]
    pub answered_at: Option<DateTime<Utc>>,
    #[serde(with = "time_format::option")]
    pub ended_at: Option<DateTime<Utc>>,
    /// Seconds from answer to end (0 if never answered); null while the call lasts.
    pub duration_seconds: Option<i64>,
    /// Why the call ended, e.g. `BYE`, `CANCEL`, `486 Busy Here`, `gateway-restart`.
    pub hangup_cause: Option<String>,
    /// `caller`, `callee`, `api` or `system`.
    pub hangup_by: Option<String>,
    pub recording_ids: Vec<String>,
    /// What the call's program gathered (IVR menus and `gather`), oldest first, as each
    /// `ivr.input` event reported it. Only on `GET /v1/calls/{id}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ivr_inputs: Option<Vec<IvrInputView>>,
    /// The trunk the call went through (id); null for calls between agents.
    #[schema(example = "trk_01JD3N5V8K2Q4R6T8W0Y2A4C6E")]
    pub trunk: Option<String>,
    /// What the call cost at the trunk's `rate`, as a decimal string in `currency`
    /// (`"0.026"`; at least two decimals, at most six); null for calls not priced.
    #[schema(example = "0.026")]
    pub cost: Option<String>,
    /// ISO 4217 currency of `cost`.
    #[schema(example = "USD")]
    pub currency: Option<String>,
    /// Free JSON given when the call was created through the API.
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<serde_json::Value>,
    /// The call's own webhook URL: it gets the call's `call.*` events, signed with
    /// `webhooks.secret`.
    pub status_callback: Option<String>,
}

/// One input a call program gathered (SPEC §6): the `data` of its `ivr.input` event.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct IvrInputView {
    /// The channel the digits came from.
    pub leg_id: String,
    /// The IVR flow's node that gathered; null for a webhook program's `gather`.
    pub node: Option<String>,
    /// The keys pressed, without the finish key; empty when nothing was pressed.
    pub digits: String,
    /// The variable the digits were stored in, if any.
    pub variable: Option<String>,
    /// `matched` (a menu option), `accepted` (a gather without options), `invalid` or
    /// `no_input`.
    #[schema(example = "matched")]
    pub result: String,
    /// 0 for the first try of the node, 1 for its first retry, …
    pub attempt: u32,
    #[serde(with = "time_format")]
    pub at: DateTime<Utc>,
}

/// A page of calls, newest first.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct CallList {
    pub data: Vec<CallView>,
    /// Pass as `after` to get the next (older) page; null on the last page.
    pub next: Option<String>,
}

/// Body of `POST /v1/calls`: click-to-call. voxgate rings the agent's phones first and,
/// when the agent answers, dials `to` through the trunk and bridges the two.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateCall {
    /// The agent to ring first (id or username).
    #[schema(schema_with = filter_schema, example = "alice")]
    pub agent: String,
    /// The lead's number, E.164.
    #[schema(schema_with = E164::schema)]
    pub to: String,
    /// The trunk to dial the lead through (id or name); the default outbound trunk when
    /// absent.
    #[schema(example = "twilio-us")]
    pub trunk: Option<String>,
    /// The number shown to the lead (E.164); the trunk's `caller_id` when absent.
    #[schema(schema_with = E164::nullable_schema)]
    pub caller_id: Option<String>,
    /// An http(s) URL that receives this call's `call.*` events, signed.
    pub status_callback: Option<String>,
    /// A JSON object of your own, stored with the call and sent back in its events (at
    /// most 16 KiB serialised).
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<serde_json::Value>,
    /// How long each side may ring, 1-600 seconds (default: `sip.ring_timeout_seconds`).
    #[schema(schema_with = ring_timeout_schema)]
    pub ring_timeout_seconds: Option<u32>,
    /// The longest the call may last once the lead answers, 1-86400 seconds.
    #[schema(schema_with = time_limit_schema)]
    pub time_limit_seconds: Option<u32>,
    /// Record the call from the lead's answer (a recording per call; see
    /// `recording_ids`).
    pub record: Option<bool>,
    /// `dual` (the default: left = agent, right = lead) or `mono` (mixed).
    pub recording_channels: Option<super::recordings::ChannelsParam>,
}

pub const RING_TIMEOUT: Int = Int::new(1, 600);
pub const TIME_LIMIT: Int = Int::new(1, 86_400);

fn ring_timeout_schema() -> Schema {
    RING_TIMEOUT.nullable_schema()
}

fn time_limit_schema() -> Schema {
    TIME_LIMIT.nullable_schema()
}

/// Largest `metadata`, serialised.
const METADATA_MAX: usize = 16 * 1024;

/// Body of `POST /v1/calls/{id}/hangup`: optional, and has no fields yet (an empty body
/// or `{}`).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HangupCall {}

/// The filters of `GET /v1/calls`, as documented.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct CallListQuery {
    /// Only calls with this status.
    #[param(inline)]
    status: Option<CallStatus>,
    /// Only calls of this agent (id or username): placed by them or with a leg of theirs.
    /// An unknown agent is a 422 naming `agent`.
    #[param(schema_with = filter_schema)]
    agent: Option<String>,
    // `campaign` (SPEC §4) is not documented until campaigns exist: the server answers
    // any value with a 422 "no campaign", and a document listing it would promise a
    // filter that cannot match.
    /// Only calls from this party: the exact `from`, or the user part of a `sip:`/`sips:`
    /// URI or a `tel:` number (`1001` matches `sip:1001@pbx.example`).
    #[param(schema_with = filter_schema)]
    from: Option<String>,
    /// Only calls to this party, matched as `from` is.
    #[param(schema_with = filter_schema)]
    to: Option<String>,
    /// Only calls started at or after this time (RFC 3339).
    #[param(schema_with = time_schema)]
    since: Option<String>,
    /// Only calls started before this time (RFC 3339); must be later than `since`.
    #[param(schema_with = time_schema)]
    until: Option<String>,
}

/// The validated filters, before the agent reference is resolved.
#[derive(Debug, Default)]
pub struct CallQuery {
    status: Option<CallStatus>,
    agent: Option<String>,
    from: Option<String>,
    to: Option<String>,
    since: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
}

pub(crate) fn parse_time(
    field: &str,
    v: &str,
    errors: &mut Vec<FieldError>,
) -> Option<DateTime<Utc>> {
    match DateTime::parse_from_rfc3339(v.trim()) {
        Ok(t) => Some(t.with_timezone(&Utc)),
        Err(_) => {
            errors.push(FieldError::new(
                field,
                format!(
                    "must be an RFC 3339 time such as 2026-01-31T09:00:00Z, got {v:?} \
                     (encode a + offset as %2B)"
                ),
            ));
            None
        }
    }
}

/// An `agent` filter (id or username) as the agent's id; an unknown agent is a 422
/// naming `agent` (SPEC §4: a reference to a missing resource).
pub(super) async fn agent_filter(
    state: &AppState,
    reference: Option<&str>,
) -> Result<Option<String>, ApiError> {
    let Some(reference) = reference else {
        return Ok(None);
    };
    match state.store.find_agent(reference).await {
        Ok(a) => Ok(Some(a.id)),
        Err(StoreError::NotFound) => Err(ApiError::field(
            "agent",
            format!("no agent with id or username {reference:?}"),
        )),
        Err(e) => Err(e.into()),
    }
}

/// A `since`/`until` pair must be in order.
pub(super) fn check_period(
    since: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
    errors: &mut Vec<FieldError>,
) {
    if let (Some(since), Some(until)) = (since, until) {
        if until <= since {
            errors.push(FieldError::new("until", "must be later than since"));
        }
    }
}

pub(super) fn text(field: &str, v: String, errors: &mut Vec<FieldError>) -> Option<String> {
    if FILTER.is_valid(&v) {
        Some(v)
    } else {
        errors.push(FieldError::new(field, FILTER.message()));
        None
    }
}

impl<S: Send + Sync> FromRequestParts<S> for CallQuery {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        let Query(pairs) = Query::<Vec<(String, String)>>::try_from_uri(&parts.uri)
            .map_err(|e| ApiError::field(".", format!("bad query string: {}", e.body_text())))?;
        let mut q = CallQuery::default();
        let mut errors = Vec::new();
        for (k, v) in pairs {
            match k.as_str() {
                "status" => match v.parse::<CallStatus>() {
                    Ok(s) => q.status = Some(s),
                    Err(()) => errors.push(FieldError::new(
                        "status",
                        format!(
                            "must be one of {}, got {v:?}",
                            CallStatus::ALL.map(CallStatus::as_str).join(", ")
                        ),
                    )),
                },
                "agent" => q.agent = text("agent", v, &mut errors),
                // There are no campaigns yet, so no reference can name one.
                "campaign" => errors.push(FieldError::new(
                    "campaign",
                    format!("no campaign with id or name {v:?}"),
                )),
                "from" => q.from = text("from", v, &mut errors),
                "to" => q.to = text("to", v, &mut errors),
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

fn leg_view(l: Leg) -> LegView {
    LegView {
        id: l.id,
        direction: l.direction,
        agent: l.agent_id,
        uri: l.uri,
        status: l.status,
        started_at: l.started_at,
        answered_at: l.answered_at,
        ended_at: l.ended_at,
        hangup_cause: l.hangup_cause,
    }
}

pub(crate) fn view(c: Call) -> CallView {
    CallView {
        id: c.id,
        status: c.status,
        direction: c.direction,
        from: c.from,
        to: c.to,
        agent: c.agent_id,
        legs: c.legs.into_iter().map(leg_view).collect(),
        answered_by: None,
        started_at: c.started_at,
        answered_at: c.answered_at,
        ended_at: c.ended_at,
        duration_seconds: c.duration_seconds,
        hangup_cause: c.hangup_cause,
        hangup_by: c.hangup_by,
        recording_ids: c.recording_ids,
        ivr_inputs: None,
        trunk: c.trunk_id,
        cost: c.cost_micros.map(crate::trunks::cost::format_amount),
        currency: c.currency,
        metadata: c.metadata,
        status_callback: c.status_callback,
    }
}

pub(super) async fn find(state: &AppState, id: &str) -> Result<Call, ApiError> {
    match state.store.get_call(id).await {
        Err(StoreError::NotFound) => Err(ApiError::NotFound(format!("no call with id {id:?}"))),
        other => Ok(other?),
    }
}

pub(super) fn ended(call: &Call) -> ApiError {
    ApiError::InvalidState(format!(
        "call {} has already ended ({})",
        call.id,
        call.status.as_str()
    ))
}

/// List calls, newest first.
#[utoipa::path(
    get, path = "/v1/calls", tag = "calls",
    params(PageQuery, CallListQuery),
    responses(
        (status = 200, description = "A page of calls, newest first; `after` continues with older calls", body = CallList),
        (status = 401, description = "Missing or bad API key", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Bad filter, limit or cursor (the problem names it)", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
async fn list_calls(
    _auth: Authed,
    State(state): State<Arc<AppState>>,
    page: Pagination,
    query: CallQuery,
) -> Result<Json<CallList>, ApiError> {
    let agent = agent_filter(&state, query.agent.as_deref()).await?;
    let filter = CallFilter {
        status: query.status,
        agent: None,
        agent_id: agent,
        from: query.from,
        to: query.to,
        since: query.since,
        until: query.until,
        trunk_id: None,
        finished: false,
    };
    let p = state
        .store
        .list_calls(&filter, page.limit, page.after.as_deref())
        .await?;
    Ok(Json(CallList {
        data: p.data.into_iter().map(view).collect(),
        next: p.next,
    }))
}

/// Click-to-call: ring the agent, then dial the lead through the trunk and bridge them.
///
/// The call is stored `queued` and answered at once; its progress (`ringing`,
/// `in-progress`, and the final status) shows on the call and in its `call.*` webhooks.
/// A call over a trunk's limits waits `queued` for its turn.
#[utoipa::path(
    post, path = "/v1/calls", tag = "calls",
    request_body = CreateCall,
    responses(
        (status = 201, description = "The call, `queued`", body = CallView),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or bad API key", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid field, unknown agent or trunk (the problem names it)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The call engine is not running or is draining", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
async fn create_call(
    _auth: Authed,
    State(state): State<Arc<AppState>>,
    ApiJson(body): ApiJson<CreateCall>,
) -> Result<(StatusCode, Json<CallView>), ApiError> {
    let mut errors = Vec::new();
    if !FILTER.is_valid(&body.agent) {
        errors.push(FieldError::new(
            "agent",
            format!("must be an agent's id or username ({})", FILTER.message()),
        ));
    }
    E164::check("to", &body.to, &mut errors);
    if let Some(c) = &body.caller_id {
        E164::check("caller_id", c, &mut errors);
    }
    if let Some(url) = &body.status_callback {
        if let Err(e) = super::webhooks::check_callback_url("status_callback", url) {
            errors.push(e);
        }
    }
    if let Some(m) = &body.metadata {
        if !m.is_object() {
            errors.push(FieldError::new("metadata", "must be a JSON object"));
        } else if serde_json::to_vec(m).map_or(true, |b| b.len() > METADATA_MAX) {
            errors.push(FieldError::new(
                "metadata",
                format!("must be at most {METADATA_MAX} bytes of JSON"),
            ));
        }
    }
    RING_TIMEOUT.check(
        "ring_timeout_seconds",
        body.ring_timeout_seconds.map(i64::from),
        &mut errors,
    );
    TIME_LIMIT.check(
        "time_limit_seconds",
        body.time_limit_seconds.map(i64::from),
        &mut errors,
    );
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let agent = match state.store.find_agent(&body.agent).await {
        Ok(a) => a,
        Err(StoreError::NotFound) => {
            return Err(ApiError::field(
                "agent",
                format!("no agent with id or username {:?}", body.agent),
            ))
        }
        Err(e) => return Err(e.into()),
    };
    let trunk = body.trunk.clone().unwrap_or_default();
    if state.draining.load(std::sync::atomic::Ordering::Relaxed) {
        return Err(ApiError::Unavailable(
            "the gateway is shutting down".to_owned(),
        ));
    }
    let id = crate::ids::new_id(crate::ids::IdKind::Call);
    let new = NewCall {
        id: id.clone(),
        direction: CallDirection::Outbound,
        from: body.caller_id.clone().unwrap_or_default(),
        to: body.to.clone(),
        agent_id: Some(agent.id.clone()),
        status: CallStatus::Queued,
        started_at: crate::store::now(),
        status_callback: body.status_callback.clone(),
        metadata: body.metadata.clone(),
    };
    // Stored with its `call.initiated` (and status_callback) in one transaction.
    let created = state.store.create_call(&new).await?;
    let originate = Originate {
        call: CallId::new(id.clone()),
        agent: agent.username,
        to: body.to,
        trunk,
        caller_id: body.caller_id,
        ring_timeout: body
            .ring_timeout_seconds
            .map(|s| Duration::from_secs(s.into())),
        time_limit: body
            .time_limit_seconds
            .map(|s| Duration::from_secs(s.into())),
        record: body.record.unwrap_or(false).then(|| {
            body.recording_channels
                .map_or_else(Default::default, Into::into)
        }),
        listen: body.status_callback.is_some(),
    };
    if state.calls.originate(originate).await.is_err() {
        // Never started: the record says so rather than staying queued.
        let end = CallChange::CallEnded {
            call_id: id.clone(),
            status: CallStatus::Failed,
            at: crate::store::now(),
            duration_seconds: 0,
            hangup_cause: "the call engine is not running".to_owned(),
            hangup_by: HangupBy::System,
        };
        state.store.apply_call_changes(&[end]).await?;
        return Err(ApiError::Unavailable(
            "the call engine is not running".to_owned(),
        ));
    }
    Ok((StatusCode::CREATED, Json(view(created))))
}

/// Get a call with its legs and what its program gathered (`ivr_inputs`).
#[utoipa::path(
    get, path = "/v1/calls/{id}", tag = "calls",
    params(("id" = String, Path, description = "Call id")),
    responses(
        (status = 200, description = "The call", body = CallView),
        (status = 401, description = "Missing or bad API key", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such call", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
async fn get_call(
    _auth: Authed,
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Json<CallView>, ApiError> {
    let call = find(&state, &id).await?;
    let inputs = state.store.ivr_inputs(&call.id).await?;
    let mut v = view(call);
    // A row this version cannot read (written by a newer one) is left out, not a 500.
    v.ivr_inputs = Some(
        inputs
            .into_iter()
            .filter_map(|d| serde_json::from_value(d).ok())
            .collect(),
    );
    Ok(Json(v))
}

/// End a live call: BYE to answered legs, CANCEL to ringing ones. Recorded with
/// `hangup_by` = `api`. The body is optional.
#[utoipa::path(
    post, path = "/v1/calls/{id}/hangup", tag = "calls",
    params(("id" = String, Path, description = "Call id")),
    request_body(content = Option<HangupCall>, description = "Optional; no fields yet", content_type = "application/json"),
    responses(
        (status = 204, description = "The call is being ended"),
        (status = 401, description = "Missing or bad API key", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such call, or it is not live on this gateway", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The call has already ended", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Unknown field in the body", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The call engine is not running", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
async fn hangup_call(
    _auth: Authed,
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    // `null` is the same as no body: the document shows the body as nullable.
    _body: Option<ApiJson<Option<HangupCall>>>,
) -> Result<StatusCode, ApiError> {
    let call = find(&state, &id).await?;
    if call.status.is_final() {
        return Err(ended(&call));
    }
    let refusals = Refusals {
        not_live: format!("call {id} is not live on this gateway"),
        conflict: ControlError::Conflict.to_string(),
        unavailable: "the call engine is not running",
    };
    engine_reply(&state, &id, state.calls.hangup(&call.id), refusals).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// What a route on a live call says when the engine refuses it.
pub(super) struct Refusals {
    /// The engine does not know the call (or the leg), and the call has not ended.
    pub not_live: String,
    /// The call (or leg) is not in a state that allows it.
    pub conflict: String,
    /// The engine is not running or cannot do it.
    pub unavailable: &'static str,
}

/// The engine's answer to a command on live call `id`, as the API reports it: a call
/// that ended between our read and the engine's answer is a 409 like any ended call.
pub(super) async fn engine_reply<T>(
    state: &AppState,
    id: &str,
    asked: impl std::future::Future<Output = Result<T, ControlError>>,
    refusals: Refusals,
) -> Result<T, ApiError> {
    match tokio::time::timeout(HANGUP_TIMEOUT, asked).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(ControlError::NotFound)) => {
            let now = find(state, id).await?;
            if now.status.is_final() {
                Err(ended(&now))
            } else {
                Err(ApiError::NotFound(refusals.not_live))
            }
        }
        Ok(Err(ControlError::Conflict)) => Err(ApiError::InvalidState(refusals.conflict)),
        Ok(Err(ControlError::Unavailable)) => {
            Err(ApiError::Unavailable(refusals.unavailable.to_owned()))
        }
        Err(_) => Err(ApiError::Unavailable(format!(
            "the call engine did not answer within {}s",
            HANGUP_TIMEOUT.as_secs()
        ))),
    }
}
