//! `/v1/agents`: SIP users who take calls.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::openapi::schema::Schema;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::Authed;
use super::error::{ApiError, ApiJson, FieldError, Problem};
use super::pagination::{PageQuery, Pagination};
use super::rules::{self, Chars, Int, Text};
use super::{time_format, AppState};
use crate::events::AppEvent;
use crate::store::{
    Agent, AgentCallCounts, AgentPatch, Credentials, NewAgent, Presence, Registration,
};

pub fn router() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .routes(routes!(create_agent, list_agents))
        .routes(routes!(get_agent, patch_agent, delete_agent))
        .routes(routes!(set_agent_status))
}

/// What an agent is doing, derived from live calls, registrations and presence.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AgentState {
    Offline,
    Available,
    Ringing,
    Busy,
    WrapUp,
    Away,
}

/// A live contact binding of an agent's softphone.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct AgentRegistration {
    /// The Contact URI the agent registered.
    pub contact: String,
    /// `udp`, `tcp`, `tls`, `ws` or `wss`.
    pub transport: String,
    /// `ip:port` the registration came from.
    pub source: String,
    #[serde(with = "time_format")]
    pub expires_at: DateTime<Utc>,
    pub user_agent: Option<String>,
}

/// An agent as the API shows it (never the password or its digests).
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct AgentView {
    #[schema(example = "agt_01JD3N5V8K2Q4R6T8W0Y2A4C6E")]
    pub id: String,
    #[schema(example = "alice")]
    pub username: String,
    pub display_name: Option<String>,
    pub skills: Vec<String>,
    pub max_concurrent_calls: i64,
    pub wrap_up_seconds: i64,
    /// The agent's own setting (`POST /v1/agents/{id}/status`).
    pub presence: Presence,
    /// Derived: `busy` while on a live call (talking or placing one), else `ringing`
    /// while a call rings the agent, else `offline` without a live registration, else
    /// `away`, else `wrap_up` until the after-call work time ends, else `available`.
    pub state: AgentState,
    pub registrations: Vec<AgentRegistration>,
    #[serde(with = "time_format")]
    pub created_at: DateTime<Utc>,
    #[serde(with = "time_format")]
    pub updated_at: DateTime<Utc>,
}

/// A page of agents.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct AgentList {
    pub data: Vec<AgentView>,
    /// Pass as `after` to get the next page; null on the last page.
    pub next: Option<String>,
}

/// Body of `POST /v1/agents`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateAgent {
    /// SIP username: 1-64 characters from `A-Z a-z 0-9 . _ -`. Immutable.
    #[schema(schema_with = username_schema, example = "alice")]
    pub username: String,
    /// SIP password, 8-128 characters, no control characters. Write-only: only digests
    /// are stored.
    #[schema(schema_with = password_schema, write_only, example = "correct horse battery")]
    pub password: String,
    /// At most 128 characters, no control characters.
    #[schema(schema_with = display_name_schema)]
    pub display_name: Option<String>,
    /// Up to 64 skills, each 1-64 characters from `A-Z a-z 0-9 . _ -`; repeats are
    /// dropped.
    #[serde(default)]
    #[schema(schema_with = skills_schema)]
    pub skills: Vec<String>,
    /// 1..=100, default 1.
    #[schema(schema_with = max_calls_schema, default = 1)]
    pub max_concurrent_calls: Option<i64>,
    /// Seconds of after-call work before the next call, 0..=3600, default 0.
    #[schema(schema_with = wrap_up_schema, default = 0)]
    pub wrap_up_seconds: Option<i64>,
}

/// Body of `PATCH /v1/agents/{id}`: only the fields present change. `username` is
/// immutable.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchAgent {
    /// null clears it.
    #[serde(default, deserialize_with = "present")]
    #[schema(schema_with = display_name_schema)]
    pub display_name: Option<Option<String>>,
    /// null leaves it unchanged.
    #[schema(schema_with = password_nullable_schema, write_only)]
    pub password: Option<String>,
    /// Replaces the list; null leaves it unchanged.
    #[schema(schema_with = skills_nullable_schema)]
    pub skills: Option<Vec<String>>,
    #[schema(schema_with = max_calls_schema)]
    pub max_concurrent_calls: Option<i64>,
    #[schema(schema_with = wrap_up_schema)]
    pub wrap_up_seconds: Option<i64>,
    /// Accepted only to report that it cannot change.
    #[serde(default)]
    #[schema(ignore)]
    pub username: Option<serde_json::Value>,
}

/// Body of `POST /v1/agents/{id}/status`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentStatus {
    pub status: Presence,
}

/// Distinguish an absent field (`None`) from an explicit null (`Some(None)`).
fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// SIP username, immutable.
pub const USERNAME: Text = Text::new(1, 64, Chars::Token);
/// SIP password: only its digests are stored.
pub const PASSWORD: Text = Text::new(8, 128, Chars::Printable);
pub const DISPLAY_NAME: Text = Text::new(0, 128, Chars::Printable);
pub const SKILL: Text = Text::new(1, 64, Chars::Token);
pub const SKILLS_MAX: usize = 64;
pub const MAX_CALLS: Int = Int::new(1, 100);
pub const WRAP_UP: Int = Int::new(0, 3600);

fn username_schema() -> Schema {
    USERNAME.schema()
}
fn password_schema() -> Schema {
    PASSWORD.schema()
}
fn password_nullable_schema() -> Schema {
    PASSWORD.nullable_schema()
}
fn display_name_schema() -> Schema {
    DISPLAY_NAME.nullable_schema()
}
fn skills_schema() -> Schema {
    rules::text_array(&SKILL, SKILLS_MAX, false)
}
fn skills_nullable_schema() -> Schema {
    rules::text_array(&SKILL, SKILLS_MAX, true)
}
fn max_calls_schema() -> Schema {
    MAX_CALLS.nullable_schema()
}
fn wrap_up_schema() -> Schema {
    WRAP_UP.nullable_schema()
}

fn check_skills(skills: &[String], errors: &mut Vec<FieldError>) -> Vec<String> {
    check_skills_at("skills", skills, errors)
}

/// Skills (an agent's, a queue's `required_skills`), deduplicated; `field` names them.
pub(super) fn check_skills_at(
    field: &str,
    skills: &[String],
    errors: &mut Vec<FieldError>,
) -> Vec<String> {
    if skills.len() > SKILLS_MAX {
        errors.push(FieldError::new(
            field,
            format!("at most {SKILLS_MAX} skills"),
        ));
    }
    let mut out: Vec<String> = Vec::with_capacity(skills.len());
    for (i, s) in skills.iter().enumerate() {
        if !SKILL.is_valid(s) {
            errors.push(FieldError::new(format!("{field}[{i}]"), SKILL.message()));
        } else if !out.contains(s) {
            out.push(s.clone());
        }
    }
    out
}

/// Calls first: an agent on a live call is `busy` (or `ringing`) whatever their presence,
/// and even if their registration lapsed mid-call (the call is still up). Otherwise
/// `offline` without a live registration, else their presence.
fn view(
    agent: Agent,
    registrations: Vec<Registration>,
    calls: AgentCallCounts,
    now: DateTime<Utc>,
) -> AgentView {
    let state = if calls.in_progress > 0 {
        AgentState::Busy
    } else if calls.ringing > 0 {
        AgentState::Ringing
    } else if registrations.is_empty() {
        AgentState::Offline
    } else if agent.presence == Presence::Away {
        AgentState::Away
    } else if agent.wrap_up_until.is_some_and(|t| t > now) {
        AgentState::WrapUp
    } else {
        AgentState::Available
    };
    AgentView {
        id: agent.id,
        username: agent.username,
        display_name: agent.display_name,
        skills: agent.skills,
        max_concurrent_calls: agent.max_concurrent_calls,
        wrap_up_seconds: agent.wrap_up_seconds,
        presence: agent.presence,
        state,
        registrations: registrations
            .into_iter()
            .map(|r| AgentRegistration {
                contact: r.contact,
                transport: r.transport,
                source: r.source,
                expires_at: r.expires_at,
                user_agent: r.user_agent,
            })
            .collect(),
        created_at: agent.created_at,
        updated_at: agent.updated_at,
    }
}

async fn views(state: &AppState, agents: Vec<Agent>) -> Result<Vec<AgentView>, ApiError> {
    let ids: Vec<&str> = agents.iter().map(|a| a.id.as_str()).collect();
    let now = crate::store::now();
    let mut regs = state.store.live_registrations_for_agents(&ids, now).await?;
    let mut calls = state.store.live_call_counts_for_agents(&ids).await?;
    Ok(agents
        .into_iter()
        .map(|a| {
            let r = regs.remove(&a.id).unwrap_or_default();
            let c = calls.remove(&a.id).unwrap_or_default();
            view(a, r, c, now)
        })
        .collect())
}

async fn one_view(state: &AppState, agent: Agent) -> Result<AgentView, ApiError> {
    views(state, vec![agent])
        .await?
        .pop()
        .ok_or(ApiError::Internal)
}

async fn find(state: &AppState, reference: &str) -> Result<Agent, ApiError> {
    match state.store.find_agent(reference).await {
        Err(crate::store::StoreError::NotFound) => Err(ApiError::NotFound(format!(
            "no agent with id or username {reference:?}"
        ))),
        other => Ok(other?),
    }
}

fn changed(state: &AppState, agent: &Agent) {
    // No receiver (SIP not subscribed yet) is fine.
    let _ = state.events.send(AppEvent::AgentChanged {
        id: agent.id.clone(),
        username: agent.username.clone(),
    });
}

/// Create an agent.
#[utoipa::path(
    post, path = "/v1/agents", tag = "agents",
    request_body = CreateAgent,
    responses(
        (status = 201, description = "Created", body = AgentView),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or bad API key", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The username exists", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid field", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
async fn create_agent(
    _auth: Authed,
    State(state): State<Arc<AppState>>,
    ApiJson(body): ApiJson<CreateAgent>,
) -> Result<impl IntoResponse, ApiError> {
    let mut errors = Vec::new();
    USERNAME.check("username", &body.username, &mut errors);
    PASSWORD.check("password", &body.password, &mut errors);
    if let Some(d) = &body.display_name {
        DISPLAY_NAME.check("display_name", d, &mut errors);
    }
    let skills = check_skills(&body.skills, &mut errors);
    MAX_CALLS.check(
        "max_concurrent_calls",
        body.max_concurrent_calls,
        &mut errors,
    );
    WRAP_UP.check("wrap_up_seconds", body.wrap_up_seconds, &mut errors);
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let new = NewAgent {
        credentials: Credentials::new(&body.username, &state.config.sip.realm, &body.password),
        username: body.username,
        display_name: body.display_name,
        skills,
        max_concurrent_calls: body.max_concurrent_calls.unwrap_or(1),
        wrap_up_seconds: body.wrap_up_seconds.unwrap_or(0),
    };
    let agent = state.store.create_agent(&new).await?;
    changed(&state, &agent);
    let location = format!("/v1/agents/{}", agent.id);
    let view = one_view(&state, agent).await?;
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(view),
    ))
}

/// List agents in creation order.
#[utoipa::path(
    get, path = "/v1/agents", tag = "agents",
    params(PageQuery),
    responses(
        (status = 200, description = "A page of agents", body = AgentList),
        (status = 401, description = "Missing or bad API key", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Bad limit or cursor", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
async fn list_agents(
    _auth: Authed,
    State(state): State<Arc<AppState>>,
    page: Pagination,
) -> Result<Json<AgentList>, ApiError> {
    let p = state
        .store
        .list_agents(page.limit, page.after.as_deref())
        .await?;
    Ok(Json(AgentList {
        data: views(&state, p.data).await?,
        next: p.next,
    }))
}

/// Get an agent by id or username.
#[utoipa::path(
    get, path = "/v1/agents/{id}", tag = "agents",
    params(("id" = String, Path, description = "Agent id or username")),
    responses(
        (status = 200, description = "The agent", body = AgentView),
        (status = 401, description = "Missing or bad API key", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such agent", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
async fn get_agent(
    _auth: Authed,
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Json<AgentView>, ApiError> {
    let agent = find(&state, &id).await?;
    Ok(Json(one_view(&state, agent).await?))
}

/// Change an agent's display name, password, skills or limits.
#[utoipa::path(
    patch, path = "/v1/agents/{id}", tag = "agents",
    params(("id" = String, Path, description = "Agent id or username")),
    request_body = PatchAgent,
    responses(
        (status = 200, description = "The updated agent", body = AgentView),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or bad API key", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such agent", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid field (username is immutable)", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
async fn patch_agent(
    _auth: Authed,
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<PatchAgent>,
) -> Result<Json<AgentView>, ApiError> {
    let mut errors = Vec::new();
    if body.username.is_some() {
        errors.push(FieldError::new(
            "username",
            "is immutable; create a new agent",
        ));
    }
    if let Some(p) = &body.password {
        PASSWORD.check("password", p, &mut errors);
    }
    if let Some(Some(d)) = &body.display_name {
        DISPLAY_NAME.check("display_name", d, &mut errors);
    }
    let skills = body.skills.as_deref().map(|s| check_skills(s, &mut errors));
    MAX_CALLS.check(
        "max_concurrent_calls",
        body.max_concurrent_calls,
        &mut errors,
    );
    WRAP_UP.check("wrap_up_seconds", body.wrap_up_seconds, &mut errors);
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let agent = find(&state, &id).await?;
    let patch = AgentPatch {
        display_name: body.display_name,
        credentials: body
            .password
            .map(|p| Credentials::new(&agent.username, &state.config.sip.realm, &p)),
        skills,
        max_concurrent_calls: body.max_concurrent_calls,
        wrap_up_seconds: body.wrap_up_seconds,
        presence: None,
    };
    let updated = state.store.update_agent(&agent.id, &patch).await?;
    if !patch.is_empty() {
        changed(&state, &updated);
    }
    Ok(Json(one_view(&state, updated).await?))
}

/// Delete an agent and its registrations.
#[utoipa::path(
    delete, path = "/v1/agents/{id}", tag = "agents",
    params(("id" = String, Path, description = "Agent id or username")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = "Missing or bad API key", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such agent", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
async fn delete_agent(
    _auth: Authed,
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let agent = find(&state, &id).await?;
    let deleted = state.store.delete_agent(&agent.id).await?;
    let _ = state.events.send(AppEvent::AgentDeleted {
        id: deleted.id,
        username: deleted.username,
    });
    Ok(StatusCode::NO_CONTENT)
}

/// Set an agent's presence: `available` or `away`.
#[utoipa::path(
    post, path = "/v1/agents/{id}/status", tag = "agents",
    params(("id" = String, Path, description = "Agent id or username")),
    request_body = AgentStatus,
    responses(
        (status = 200, description = "The updated agent", body = AgentView),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or bad API key", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such agent", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid status", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
async fn set_agent_status(
    _auth: Authed,
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<AgentStatus>,
) -> Result<Json<AgentView>, ApiError> {
    let agent = find(&state, &id).await?;
    let patch = AgentPatch {
        presence: Some(body.status),
        ..AgentPatch::default()
    };
    let updated = state.store.update_agent(&agent.id, &patch).await?;
    changed(&state, &updated);
    Ok(Json(one_view(&state, updated).await?))
}
