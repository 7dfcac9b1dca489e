//! `/v1/stats`: call statistics over a window, in total or per agent, trunk or day
//! (SPEC §4).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{FromRequestParts, Query, State};
use axum::http::request::Parts;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::Authed;
use super::calls::{check_period, parse_time};
use super::error::{ApiError, FieldError, Problem};
use super::{time_format, AppState};
use crate::store::{StatsGroup, StatsGroupBy};
use crate::trunks::cost::format_amount;

pub fn router() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new().routes(routes!(get_stats))
}

/// The parameters of `GET /v1/stats`, as documented.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct StatsQueryDoc {
    /// Calls started at or after this time (RFC 3339); default: all.
    #[param(schema_with = super::calls::time_schema)]
    since: Option<String>,
    /// Calls started before this time (RFC 3339), later than `since`; default: all.
    #[param(schema_with = super::calls::time_schema)]
    until: Option<String>,
    /// `agent`, `trunk` or `day` (UTC); default: totals only. (`campaign` comes with
    /// campaigns.)
    #[param(schema_with = group_by_schema)]
    group_by: Option<String>,
}

/// The accepted `group_by` values, for the check and the document.
const GROUP_BY: [(&str, StatsGroupBy); 3] = [
    ("agent", StatsGroupBy::Agent),
    ("trunk", StatsGroupBy::Trunk),
    ("day", StatsGroupBy::Day),
];

fn group_by_schema() -> utoipa::openapi::schema::Schema {
    utoipa::openapi::schema::Schema::Object(
        utoipa::openapi::schema::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .enum_values(Some(GROUP_BY.iter().map(|(name, _)| *name)))
            .build(),
    )
}

#[derive(Debug)]
pub struct StatsQuery {
    since: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
    group_by: StatsGroupBy,
}

impl<S: Send + Sync> FromRequestParts<S> for StatsQuery {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        let Query(pairs) = Query::<Vec<(String, String)>>::try_from_uri(&parts.uri)
            .map_err(|e| ApiError::field(".", format!("bad query string: {}", e.body_text())))?;
        let mut q = StatsQuery {
            since: None,
            until: None,
            group_by: StatsGroupBy::None,
        };
        let mut errors = Vec::new();
        for (k, v) in pairs {
            match k.as_str() {
                "since" => q.since = parse_time("since", &v, &mut errors),
                "until" => q.until = parse_time("until", &v, &mut errors),
                "group_by" => match GROUP_BY.iter().find(|(name, _)| *name == v) {
                    Some((_, g)) => q.group_by = *g,
                    None if v == "campaign" => errors.push(FieldError::new(
                        "group_by",
                        "campaign is not supported yet (there are no campaigns)",
                    )),
                    None => errors.push(FieldError::new(
                        "group_by",
                        format!("must be agent, trunk or day, got {v:?}"),
                    )),
                },
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

/// The statistics of one group of calls.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct StatsView {
    /// The agent id, trunk id or day (`YYYY-MM-DD`, UTC) of the group; null for calls
    /// with no agent or trunk, and for the totals.
    pub key: Option<String>,
    /// The agent's username or the trunk's name, when the group has one.
    pub name: Option<String>,
    /// Calls started in the window.
    pub calls: i64,
    /// Calls by status (`completed`, `busy`, …; statuses with no calls left out).
    pub by_status: BTreeMap<String, i64>,
    /// Ended calls that were answered.
    pub answered: i64,
    /// Answered over ended calls (0..1); null before any call ended.
    pub answer_rate: Option<f64>,
    /// Seconds from answer to end, summed over ended calls.
    pub total_talk_seconds: i64,
    /// Average talk time of the answered calls; null without any.
    pub average_talk_seconds: Option<f64>,
    /// Cost by currency, decimal strings (`{"USD": "1.30"}`).
    pub cost: BTreeMap<String, String>,
}

/// Body of `GET /v1/stats`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct Stats {
    #[serde(with = "time_format::option")]
    pub since: Option<DateTime<Utc>>,
    #[serde(with = "time_format::option")]
    pub until: Option<DateTime<Utc>>,
    /// `agent`, `trunk`, `day`, or null (totals only).
    pub group_by: Option<String>,
    /// Every call in the window.
    pub totals: StatsView,
    /// One entry per group, in key order (empty without `group_by`).
    pub groups: Vec<StatsView>,
}

fn stats_view(g: &StatsGroup, name: Option<String>) -> StatsView {
    StatsView {
        key: g.key.clone(),
        name,
        calls: g.calls,
        by_status: g
            .by_status
            .iter()
            .map(|(k, v)| ((*k).to_owned(), *v))
            .collect(),
        answered: g.answered,
        answer_rate: g.answer_rate(),
        total_talk_seconds: g.talk_seconds,
        average_talk_seconds: g.average_talk_seconds(),
        cost: g
            .cost
            .iter()
            .map(|c| (c.currency.clone(), format_amount(c.micros)))
            .collect(),
    }
}

/// All groups folded into one.
fn total(groups: &[StatsGroup]) -> StatsGroup {
    let mut t = StatsGroup::default();
    for g in groups {
        t.calls += g.calls;
        t.finished += g.finished;
        t.answered += g.answered;
        t.talk_seconds += g.talk_seconds;
        for (k, v) in &g.by_status {
            *t.by_status.entry(k).or_default() += v;
        }
        for c in &g.cost {
            match t.cost.iter_mut().find(|x| x.currency == c.currency) {
                Some(x) => x.micros += c.micros,
                None => t.cost.push(c.clone()),
            }
        }
    }
    t.cost.sort_by(|a, b| a.currency.cmp(&b.currency));
    t
}

/// Call statistics: totals by status, answer rate, talk time and cost.
#[utoipa::path(
    get, path = "/v1/stats", tag = "calls",
    params(StatsQueryDoc),
    responses(
        (status = 200, description = "Statistics of the calls started in the window", body = Stats),
        (status = 401, description = "Missing or bad API key", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Bad parameter (the problem names it)", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
async fn get_stats(
    _auth: Authed,
    State(state): State<Arc<AppState>>,
    query: StatsQuery,
) -> Result<Json<Stats>, ApiError> {
    let groups = state
        .store
        .call_stats(query.since, query.until, query.group_by)
        .await?;
    let totals = stats_view(&total(&groups), None);
    let mut views = Vec::new();
    if query.group_by != StatsGroupBy::None {
        for g in &groups {
            let name = match (&g.key, query.group_by) {
                (Some(id), StatsGroupBy::Agent) => {
                    state.store.get_agent(id).await.ok().map(|a| a.username)
                }
                (Some(id), StatsGroupBy::Trunk) => {
                    state.store.get_trunk(id).await.ok().map(|t| t.config.name)
                }
                _ => None,
            };
            views.push(stats_view(g, name));
        }
    }
    Ok(Json(Stats {
        since: query.since,
        until: query.until,
        group_by: match query.group_by {
            StatsGroupBy::None => None,
            StatsGroupBy::Agent => Some("agent".to_owned()),
            StatsGroupBy::Trunk => Some("trunk".to_owned()),
            StatsGroupBy::Day => Some("day".to_owned()),
        },
        totals,
        groups: views,
    }))
}
