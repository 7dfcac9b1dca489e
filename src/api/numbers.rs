//! `/v1/numbers`: inbound numbers (DIDs) and where their calls go (SPEC §4). A number is
//! stored in E.164; it is read with its trunk's country code, so `09876543210` on an
//! Exotel trunk is `+919876543210`. Route types `agent`, `queue`, `ivr`
//! and `webhook` are accepted; only `agent` routes calls yet (the others answer 404 until
//! the engine runs call programs).

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::Authed;
use super::error::{ApiError, ApiJson, FieldError, Problem};
use super::pagination::{PageQuery, Pagination};
use super::trunks::changed;
use super::webhooks::check_callback_url;
use super::{time_format, AppState};
use crate::store::RecordingChannels;
use crate::store::{NumberRow, StoreError, TrunkRow};
use crate::trunks::number;

pub fn router() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .routes(routes!(create_number, list_numbers))
        .routes(routes!(get_number, patch_number, delete_number))
}

/// The route types a number accepts (SPEC §4's `masking` comes with masking sessions).
/// Only `agent` routes calls yet; the engine runs the others later.
const ROUTE_TYPES: [&str; 4] = ["agent", "queue", "ivr", "webhook"];

fn route_type_schema() -> utoipa::openapi::schema::Schema {
    utoipa::openapi::schema::Schema::Object(
        utoipa::openapi::schema::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .enum_values(Some(ROUTE_TYPES))
            .build(),
    )
}

/// Where a number's inbound calls go.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NumberRouteSpec {
    /// `agent`, `queue`, `ivr` or `webhook` (only `agent` routes calls yet).
    #[serde(rename = "type")]
    #[schema(schema_with = route_type_schema)]
    pub route_type: String,
    /// For `agent`, `queue` and `ivr`: its id or unique name (stored and shown as the
    /// id); for `webhook`: an absolute http(s) URL.
    #[schema(example = "alice", min_length = 1, max_length = 2048)]
    pub target: String,
}

/// Body of `POST /v1/numbers`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateNumber {
    /// The number, read as E.164 with the trunk's country code.
    #[schema(example = "+14155550100")]
    pub number: String,
    /// The trunk its calls arrive on: id or name.
    #[schema(example = "twilio-us")]
    pub trunk: String,
    pub route: NumberRouteSpec,
    /// Record this number's calls from the answer (default false).
    pub record: Option<bool>,
    /// With `record`: `dual` (default: agent left, caller right) or `mono`.
    pub recording_channels: Option<super::recordings::ChannelsParam>,
}

/// Body of `PATCH /v1/numbers/{number}`: only the fields present change.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchNumber {
    pub trunk: Option<String>,
    pub route: Option<NumberRouteSpec>,
    /// Start (true) or stop (false) recording this number's calls.
    pub record: Option<bool>,
    /// `dual` or `mono`, for a number that records (or starts to).
    pub recording_channels: Option<super::recordings::ChannelsParam>,
    /// Accepted only to report that it cannot change.
    #[serde(default)]
    #[schema(ignore)]
    pub number: Option<serde_json::Value>,
}

/// The filter of `GET /v1/numbers`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct NumberListQuery {
    /// Only the numbers of this trunk (id or name); an unknown trunk is a 422.
    #[param(schema_with = super::calls::filter_schema)]
    pub trunk: Option<String>,
}

/// A number as the API shows it.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct NumberView {
    /// E.164.
    #[schema(example = "+14155550100")]
    pub number: String,
    /// The trunk (id).
    pub trunk: String,
    /// The route; for `agent` the target is the agent's id.
    pub route: NumberRouteSpec,
    /// Its calls are recorded.
    pub record: bool,
    /// The recordings' channels (`dual` unless set to `mono`).
    pub recording_channels: super::recordings::ChannelsParam,
    #[serde(with = "time_format")]
    pub created_at: DateTime<Utc>,
    #[serde(with = "time_format")]
    pub updated_at: DateTime<Utc>,
}

/// A page of numbers, in text order.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct NumberList {
    pub data: Vec<NumberView>,
    /// Pass as `after` to get the next page; null on the last page.
    pub next: Option<String>,
}

fn view(n: NumberRow) -> NumberView {
    NumberView {
        number: n.number,
        trunk: n.trunk_id,
        route: NumberRouteSpec {
            route_type: n.route_type,
            target: n.route_target,
        },
        record: n.record.is_some(),
        recording_channels: match n.record {
            Some(RecordingChannels::Mono) => super::recordings::ChannelsParam::Mono,
            _ => super::recordings::ChannelsParam::Dual,
        },
        created_at: n.created_at,
        updated_at: n.updated_at,
    }
}

/// The trunk a body names, or a 422 naming `trunk`.
async fn trunk_field(state: &AppState, reference: &str) -> Result<TrunkRow, ApiError> {
    match state.store.find_trunk(reference).await {
        Ok(t) => Ok(t),
        Err(StoreError::NotFound) => Err(ApiError::field(
            "trunk",
            format!("no trunk with id or name {reference:?}"),
        )),
        Err(e) => Err(e.into()),
    }
}

/// A route, validated, with an agent reference resolved to the agent's id.
async fn route_of(state: &AppState, r: &NumberRouteSpec) -> Result<(String, String), ApiError> {
    resolve_route(state, "route", r, &ROUTE_TYPES).await
}

/// A route (`field` is where it sits in the body: `route`, `overflow`), validated against
/// `allowed` types: an agent, queue or ivr flow reference resolved to its id (a 422
/// naming it when it does not exist), a webhook's http(s) URL kept as given.
pub(super) async fn resolve_route(
    state: &AppState,
    field: &str,
    r: &NumberRouteSpec,
    allowed: &[&str],
) -> Result<(String, String), ApiError> {
    let target_field = format!("{field}.target");
    let missing = |what: &str, how: &str| {
        ApiError::field(
            target_field.clone(),
            format!("no {what} with id or {how} {:?}", r.target),
        )
    };
    let found = |id: String| Ok((r.route_type.clone(), id));
    match r.route_type.as_str() {
        t if !allowed.contains(&t) => Err(ApiError::field(
            format!("{field}.type"),
            format!("must be one of {}, got {t:?}", allowed.join(", ")),
        )),
        "agent" => match state.store.find_agent(&r.target).await {
            Ok(a) => found(a.id),
            Err(StoreError::NotFound) => Err(missing("agent", "username")),
            Err(e) => Err(e.into()),
        },
        "queue" => match state.store.find_queue(&r.target).await {
            Ok(q) => found(q.id),
            Err(StoreError::NotFound) => Err(missing("queue", "name")),
            Err(e) => Err(e.into()),
        },
        "ivr" => match state.store.find_ivr_flow(&r.target).await {
            Ok(f) => found(f.id),
            Err(StoreError::NotFound) => Err(missing("ivr flow", "name")),
            Err(e) => Err(e.into()),
        },
        "webhook" => match check_callback_url(&target_field, &r.target) {
            Ok(()) => found(r.target.clone()),
            Err(e) => Err(ApiError::Validation(vec![e])),
        },
        t => Err(ApiError::field(
            format!("{field}.type"),
            format!("{t} routes are not supported yet"),
        )),
    }
}

/// A number from the path: E.164 (`%2B14155550100` or `+14155550100`), or a national
/// form of a number on a trunk with a country code.
async fn find(state: &AppState, reference: &str) -> Result<NumberRow, ApiError> {
    let not_found = || ApiError::NotFound(format!("no number {reference:?}"));
    let e164 = match number::parse(reference, None) {
        Ok(n) => Some(n.into_string()),
        Err(_) => None,
    };
    if let Some(n) = &e164 {
        match state.store.get_number(n).await {
            Ok(row) => return Ok(row),
            Err(StoreError::NotFound) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let known = state
        .trunks
        .snapshot()
        .number(reference)
        .map(|e| e.number.clone());
    match known {
        Some(n) if Some(&n) != e164.as_ref() => match state.store.get_number(&n).await {
            Err(StoreError::NotFound) => Err(not_found()),
            other => Ok(other?),
        },
        _ => Err(not_found()),
    }
}

/// Add an inbound number.
#[utoipa::path(
    post, path = "/v1/numbers", tag = "numbers",
    request_body = CreateNumber,
    responses(
        (status = 201, description = "Created", body = NumberView),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or bad API key", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The number exists", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid field: a bad number, an unknown trunk, agent, queue or ivr flow (named), a bad webhook URL, an unknown route type", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
async fn create_number(
    _auth: Authed,
    State(state): State<Arc<AppState>>,
    ApiJson(body): ApiJson<CreateNumber>,
) -> Result<impl IntoResponse, ApiError> {
    let trunk = trunk_field(&state, &body.trunk).await?;
    let n = number::parse(&body.number, trunk.config.country_code.as_deref()).map_err(|e| {
        ApiError::Validation(vec![FieldError::new(
            "number",
            format!("{:?} {e}", body.number),
        )])
    })?;
    let (route_type, target) = route_of(&state, &body.route).await?;
    let record = match (body.record, body.recording_channels) {
        (Some(true), channels) => Some(channels.map_or_else(Default::default, Into::into)),
        (_, Some(_)) => return Err(ApiError::field("recording_channels", "needs record: true")),
        (_, None) => None,
    };
    let row = state
        .store
        .create_number(n.as_str(), &trunk.id, &route_type, &target, record)
        .await?;
    changed(&state).await;
    let location = format!("/v1/numbers/{}", row.number.replace('+', "%2B"));
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(view(row)),
    ))
}

/// List numbers in text order.
#[utoipa::path(
    get, path = "/v1/numbers", tag = "numbers",
    params(PageQuery, NumberListQuery),
    responses(
        (status = 200, description = "A page of numbers", body = NumberList),
        (status = 401, description = "Missing or bad API key", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Bad limit or cursor", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
async fn list_numbers(
    _auth: Authed,
    State(state): State<Arc<AppState>>,
    page: Pagination,
    Query(query): Query<NumberListQuery>,
) -> Result<Json<NumberList>, ApiError> {
    let trunk = match &query.trunk {
        Some(t) => Some(trunk_field(&state, t).await?.id),
        None => None,
    };
    let p = state
        .store
        .list_numbers(trunk.as_deref(), page.limit, page.after.as_deref())
        .await?;
    Ok(Json(NumberList {
        data: p.data.into_iter().map(view).collect(),
        next: p.next,
    }))
}

/// Get a number.
#[utoipa::path(
    get, path = "/v1/numbers/{number}", tag = "numbers",
    params(("number" = String, Path, description = "The number, E.164 (`+` encoded as %2B)")),
    responses(
        (status = 200, description = "The number", body = NumberView),
        (status = 401, description = "Missing or bad API key", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such number", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
async fn get_number(
    _auth: Authed,
    State(state): State<Arc<AppState>>,
    Path(n): Path<String>,
) -> Result<Json<NumberView>, ApiError> {
    Ok(Json(view(find(&state, &n).await?)))
}

/// Move a number to another trunk or route.
#[utoipa::path(
    patch, path = "/v1/numbers/{number}", tag = "numbers",
    params(("number" = String, Path, description = "The number, E.164 (`+` encoded as %2B)")),
    request_body = PatchNumber,
    responses(
        (status = 200, description = "The updated number", body = NumberView),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or bad API key", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such number", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid field (number is immutable)", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
async fn patch_number(
    _auth: Authed,
    State(state): State<Arc<AppState>>,
    Path(n): Path<String>,
    ApiJson(body): ApiJson<PatchNumber>,
) -> Result<Json<NumberView>, ApiError> {
    if body.number.is_some() {
        return Err(ApiError::field(
            "number",
            "is immutable; add the new number and delete this one",
        ));
    }
    let row = find(&state, &n).await?;
    let trunk = match &body.trunk {
        Some(t) => Some(trunk_field(&state, t).await?.id),
        None => None,
    };
    let route = match &body.route {
        Some(r) => Some(route_of(&state, r).await?),
        None => None,
    };
    let record = match (body.record, body.recording_channels) {
        (Some(false), Some(_)) => {
            return Err(ApiError::field("recording_channels", "needs record: true"))
        }
        (Some(false), None) => Some(None),
        (Some(true), channels) => Some(Some(
            channels.map_or_else(|| row.record.unwrap_or_default(), Into::into),
        )),
        (None, Some(c)) if row.record.is_some() => Some(Some(c.into())),
        (None, Some(_)) => {
            return Err(ApiError::field(
                "recording_channels",
                "the number does not record: set record: true",
            ))
        }
        (None, None) => None,
    };
    let updated = state
        .store
        .update_number(
            &row.number,
            trunk.as_deref(),
            route.as_ref().map(|(t, x)| (t.as_str(), x.as_str())),
            record,
        )
        .await?;
    if updated != row {
        changed(&state).await;
    }
    Ok(Json(view(updated)))
}

/// Delete a number: its calls are no longer routed (404).
#[utoipa::path(
    delete, path = "/v1/numbers/{number}", tag = "numbers",
    params(("number" = String, Path, description = "The number, E.164 (`+` encoded as %2B)")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = "Missing or bad API key", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such number", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
async fn delete_number(
    _auth: Authed,
    State(state): State<Arc<AppState>>,
    Path(n): Path<String>,
) -> Result<StatusCode, ApiError> {
    let row = find(&state, &n).await?;
    state.store.delete_number(&row.number).await?;
    changed(&state).await;
    Ok(StatusCode::NO_CONTENT)
}
