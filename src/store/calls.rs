//! Call records (SPEC §4 `calls`; the CDRs): a row per call from its first INVITE and a row
//! per leg, written by the call engine through [`Store::apply_call_changes`] and read by
//! the API. Rows are never deleted by call cleanup; an agent's deletion sets their
//! `agent_id` to NULL.
//!
//! Lists are newest first: `ORDER BY id DESC` (ids are time-ordered, so this is creation
//! order reversed), and the cursor `after=<id>` means "older than that call".

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sqlx::any::AnyRow;

use super::{
    fmt_time, get_enum, get_opt_i64, get_opt_str, get_opt_time, get_str, get_time, into_page,
    limit_plus_one, now, Page, Store, StoreError,
};
use crate::calls::record::{CallChange, CallStatus, LegDirection};

/// The statuses of a call that has not ended, as an SQL list.
const OPEN: &str = "('queued', 'ringing', 'in-progress')";

/// `hangup_cause` of calls and legs closed at start-up because the process that ran them
/// is gone.
pub const GATEWAY_RESTART: &str = "gateway-restart";

/// One row of `calls`, with its legs.
#[derive(Clone, Debug, PartialEq)]
pub struct Call {
    pub id: String,
    /// `internal` (agent to agent), `inbound`, `outbound`.
    pub direction: String,
    pub from: String,
    pub to: String,
    /// The agent who placed the call (or is its subject, for click-to-call).
    pub agent_id: Option<String>,
    pub status: CallStatus,
    pub started_at: DateTime<Utc>,
    pub answered_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
    /// From answer to end; 0 for an unanswered call; `None` while it lasts.
    pub duration_seconds: Option<i64>,
    pub hangup_cause: Option<String>,
    /// `caller`, `callee`, `api`, `system`.
    pub hangup_by: Option<String>,
    pub metadata: Option<serde_json::Value>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// In creation order.
    pub legs: Vec<Leg>,
}

/// One row of `legs`: one SIP dialog of a call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Leg {
    pub id: String,
    pub call_id: String,
    pub direction: LegDirection,
    pub agent_id: Option<String>,
    pub uri: String,
    pub sip_call_id: String,
    pub status: CallStatus,
    pub started_at: DateTime<Utc>,
    pub answered_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
    pub hangup_cause: Option<String>,
}

/// Filters of `list_calls`; every one given must hold.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CallFilter {
    pub status: Option<CallStatus>,
    /// An agent id or username. Matches calls the agent placed (`calls.agent_id`) and
    /// calls where one of the legs is theirs. An unknown agent matches nothing.
    pub agent: Option<String>,
    /// Exact `from`, or the user part of a `sip:`/`sips:` URI or a `tel:` number:
    /// `1001` matches `sip:1001@pbx.example;transport=tcp`.
    pub from: Option<String>,
    /// As `from`, for `to`.
    pub to: Option<String>,
    /// `started_at >= since`.
    pub since: Option<DateTime<Utc>>,
    /// `started_at < until`.
    pub until: Option<DateTime<Utc>>,
}

/// How many live calls an agent is on, for the agent's derived `state`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AgentCallCounts {
    /// Calls ringing the agent's phone (and not yet answered on it).
    pub ringing: u32,
    /// Calls the agent is talking on or placing.
    pub in_progress: u32,
}

const CALL_COLUMNS: &str = "id, direction, from_uri, to_uri, agent_id, status, started_at, \
     answered_at, ended_at, duration_seconds, hangup_cause, hangup_by, metadata, created_at, \
     updated_at";

const LEG_COLUMNS: &str = "id, call_id, direction, agent_id, uri, sip_call_id, status, \
     started_at, answered_at, ended_at, hangup_cause";

fn call_from_row(row: &AnyRow) -> Result<Call, StoreError> {
    let metadata = get_opt_str(row, "metadata")?
        .map(|s| {
            serde_json::from_str(&s).map_err(|e| StoreError::Corrupt {
                column: "metadata",
                reason: e.to_string(),
            })
        })
        .transpose()?;
    Ok(Call {
        id: get_str(row, "id")?,
        direction: get_str(row, "direction")?,
        from: get_str(row, "from_uri")?,
        to: get_str(row, "to_uri")?,
        agent_id: get_opt_str(row, "agent_id")?,
        status: get_enum(row, "status")?,
        started_at: get_time(row, "started_at")?,
        answered_at: get_opt_time(row, "answered_at")?,
        ended_at: get_opt_time(row, "ended_at")?,
        duration_seconds: get_opt_i64(row, "duration_seconds")?,
        hangup_cause: get_opt_str(row, "hangup_cause")?,
        hangup_by: get_opt_str(row, "hangup_by")?,
        metadata,
        created_at: get_time(row, "created_at")?,
        updated_at: get_time(row, "updated_at")?,
        legs: Vec::new(),
    })
}

fn leg_from_row(row: &AnyRow) -> Result<Leg, StoreError> {
    Ok(Leg {
        id: get_str(row, "id")?,
        call_id: get_str(row, "call_id")?,
        direction: get_enum(row, "direction")?,
        agent_id: get_opt_str(row, "agent_id")?,
        uri: get_str(row, "uri")?,
        sip_call_id: get_str(row, "sip_call_id")?,
        status: get_enum(row, "status")?,
        started_at: get_time(row, "started_at")?,
        answered_at: get_opt_time(row, "answered_at")?,
        ended_at: get_opt_time(row, "ended_at")?,
        hangup_cause: get_opt_str(row, "hangup_cause")?,
    })
}

/// A WHERE clause under construction: string parameters numbered in order of appearance.
#[derive(Default)]
struct Where {
    clauses: Vec<String>,
    binds: Vec<String>,
}

impl Where {
    /// A new placeholder bound to `v`.
    fn param(&mut self, v: impl Into<String>) -> String {
        self.binds.push(v.into());
        format!("${}", self.binds.len())
    }

    /// `column` equals `v`, or `v` is the user part of a sip:/sips: URI in `column`, or
    /// `column` is `tel:v`. The URI cases are byte ranges (`'sip:v@' <= column <
    /// 'sip:vA'`, as `'A'` follows `'@'`), so they use the column's index on both backends
    /// and need no LIKE escaping.
    fn party(&mut self, column: &str, v: &str) {
        let exact = self.param(v);
        let tel = self.param(format!("tel:{v}"));
        let mut ranges = Vec::new();
        for scheme in ["sip", "sips"] {
            let lo = self.param(format!("{scheme}:{v}@"));
            let hi = self.param(format!("{scheme}:{v}A"));
            ranges.push(format!("({column} >= {lo} AND {column} < {hi})"));
        }
        self.clauses.push(format!(
            "({column} IN ({exact}, {tel}) OR {})",
            ranges.join(" OR ")
        ));
    }

    fn sql(&self) -> String {
        if self.clauses.is_empty() {
            "1 = 1".to_owned()
        } else {
            self.clauses.join(" AND ")
        }
    }
}

/// `$start, $start+1, …` for `n` values.
fn placeholders(start: usize, n: usize) -> String {
    (start..start + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A leg's or call's contribution to an agent's state.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Involvement {
    None,
    Ringing,
    InProgress,
}

impl Store {
    /// Apply the engine's changes in order, in ONE transaction: on any error nothing is
    /// written.
    ///
    /// - `CreateCall`/`CreateLeg` insert (a repeated id is ignored, so a retried batch is
    ///   harmless; an agent deleted meanwhile is stored as NULL). A leg of an unknown call
    ///   is an error.
    /// - `CallAnswered` sets `answered_at` once and the status `in-progress`, unless the
    ///   call has already ended.
    /// - `LegStatus` sets the status and cause, `answered_at` (once) when `in-progress`,
    ///   `ended_at` (once) when final.
    /// - `CallEnded` sets the final fields, and closes the call's legs that are still open
    ///   (`in-progress` → `completed`, otherwise `canceled`) so no leg outlives its call.
    ///
    /// Updates of unknown ids change nothing.
    pub async fn apply_call_changes(&self, changes: &[CallChange]) -> Result<(), StoreError> {
        if changes.is_empty() {
            return Ok(());
        }
        let t = fmt_time(now());
        let mut tx = self.pool.begin().await?;
        for change in changes {
            let affected = match change {
                CallChange::CreateCall(c) => sqlx::query(
                    "INSERT INTO calls (id, direction, from_uri, to_uri, agent_id, status, \
                     started_at, created_at, updated_at) \
                     VALUES ($1, $2, $3, $4, (SELECT id FROM agents WHERE id = $5), $6, $7, $8, $9) \
                     ON CONFLICT (id) DO NOTHING",
                )
                .bind(&c.id)
                .bind(c.direction.as_str())
                .bind(&c.from)
                .bind(&c.to)
                .bind(&c.agent_id)
                .bind(c.status.as_str())
                .bind(fmt_time(c.started_at))
                .bind(&t)
                .bind(&t)
                .execute(&mut *tx)
                .await?
                .rows_affected(),
                CallChange::CreateLeg(l) => sqlx::query(
                    "INSERT INTO legs (id, call_id, direction, agent_id, uri, sip_call_id, \
                     status, started_at) \
                     VALUES ($1, $2, $3, (SELECT id FROM agents WHERE id = $4), $5, $6, $7, $8) \
                     ON CONFLICT (id) DO NOTHING",
                )
                .bind(&l.id)
                .bind(&l.call_id)
                .bind(l.direction.as_str())
                .bind(&l.agent_id)
                .bind(&l.uri)
                .bind(&l.sip_call_id)
                .bind(l.status.as_str())
                .bind(fmt_time(l.started_at))
                .execute(&mut *tx)
                .await?
                .rows_affected(),
                CallChange::CallAnswered { call_id, at } => sqlx::query(&format!(
                    "UPDATE calls SET answered_at = COALESCE(answered_at, $1), status = $2, \
                     updated_at = $3 WHERE id = $4 AND status IN {OPEN}"
                ))
                .bind(fmt_time(*at))
                .bind(CallStatus::InProgress.as_str())
                .bind(&t)
                .bind(call_id)
                .execute(&mut *tx)
                .await?
                .rows_affected(),
                CallChange::LegStatus {
                    leg_id,
                    status,
                    at,
                    hangup_cause,
                } => {
                    let answered = (*status == CallStatus::InProgress).then(|| fmt_time(*at));
                    let ended = status.is_final().then(|| fmt_time(*at));
                    sqlx::query(
                        "UPDATE legs SET status = $1, answered_at = COALESCE(answered_at, $2), \
                         ended_at = COALESCE(ended_at, $3), \
                         hangup_cause = COALESCE($4, hangup_cause) WHERE id = $5",
                    )
                    .bind(status.as_str())
                    .bind(answered)
                    .bind(ended)
                    .bind(hangup_cause)
                    .bind(leg_id)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected()
                }
                CallChange::CallEnded {
                    call_id,
                    status,
                    at,
                    duration_seconds,
                    hangup_cause,
                    hangup_by,
                } => {
                    let n = sqlx::query(
                        "UPDATE calls SET status = $1, ended_at = $2, duration_seconds = $3, \
                         hangup_cause = $4, hangup_by = $5, updated_at = $6 WHERE id = $7",
                    )
                    .bind(status.as_str())
                    .bind(fmt_time(*at))
                    .bind(*duration_seconds)
                    .bind(hangup_cause)
                    .bind(hangup_by.as_str())
                    .bind(&t)
                    .bind(call_id)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                    sqlx::query(&format!(
                        "UPDATE legs SET status = CASE WHEN status = 'in-progress' \
                         THEN 'completed' ELSE 'canceled' END, \
                         ended_at = COALESCE(ended_at, $1), \
                         hangup_cause = COALESCE(hangup_cause, $2) \
                         WHERE call_id = $3 AND status IN {OPEN}"
                    ))
                    .bind(fmt_time(*at))
                    .bind(hangup_cause)
                    .bind(call_id)
                    .execute(&mut *tx)
                    .await?;
                    n
                }
            };
            if affected == 0 {
                tracing::debug!(?change, "call record change matched nothing");
            }
        }
        tx.commit().await?;
        Ok(())
    }

    /// Close every call and leg left open by a previous run (a crash, or a stop that did
    /// not get to end its calls): status `failed`, hangup cause `gateway-restart`, hung up
    /// by `system`, ended `now`, duration from `answered_at` (0 if never answered). Returns
    /// how many calls were closed.
    ///
    /// Every open call in the database is assumed to belong to this node: with several
    /// nodes on one PostgreSQL this needs an owner column first.
    pub async fn close_orphaned_calls(&self, now: DateTime<Utc>) -> Result<u64, StoreError> {
        let at = fmt_time(now);
        let mut tx = self.pool.begin().await?;
        let rows = sqlx::query(&format!(
            "SELECT id, answered_at FROM calls WHERE status IN {OPEN} ORDER BY id"
        ))
        .fetch_all(&mut *tx)
        .await?;
        let mut closed = 0;
        for row in &rows {
            let id = get_str(row, "id")?;
            let duration =
                get_opt_time(row, "answered_at")?.map_or(0, |a| (now - a).num_seconds().max(0));
            closed += sqlx::query(
                "UPDATE calls SET status = $1, ended_at = $2, duration_seconds = $3, \
                 hangup_cause = $4, hangup_by = $5, updated_at = $6 WHERE id = $7",
            )
            .bind(CallStatus::Failed.as_str())
            .bind(&at)
            .bind(duration)
            .bind(GATEWAY_RESTART)
            .bind("system")
            .bind(&at)
            .bind(&id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        }
        sqlx::query(&format!(
            "UPDATE legs SET status = $1, ended_at = COALESCE(ended_at, $2), \
             hangup_cause = $3 WHERE status IN {OPEN}"
        ))
        .bind(CallStatus::Failed.as_str())
        .bind(&at)
        .bind(GATEWAY_RESTART)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(closed)
    }

    /// One call with its legs.
    pub async fn get_call(&self, id: &str) -> Result<Call, StoreError> {
        let row = sqlx::query(&format!("SELECT {CALL_COLUMNS} FROM calls WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::NotFound)?;
        let mut call = call_from_row(&row)?;
        let rows = sqlx::query(&format!(
            "SELECT {LEG_COLUMNS} FROM legs WHERE call_id = $1 ORDER BY id"
        ))
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        call.legs = rows.iter().map(leg_from_row).collect::<Result<_, _>>()?;
        Ok(call)
    }

    /// Calls matching `filter`, newest first, with their legs. `after` (a call id, the
    /// `next` of the previous page) continues with the calls older than it.
    pub async fn list_calls(
        &self,
        filter: &CallFilter,
        limit: usize,
        after: Option<&str>,
    ) -> Result<Page<Call>, StoreError> {
        let mut w = Where::default();
        if let Some(after) = after {
            let p = w.param(after);
            w.clauses.push(format!("id < {p}"));
        }
        if let Some(status) = filter.status {
            let p = w.param(status.as_str());
            w.clauses.push(format!("status = {p}"));
        }
        if let Some(reference) = &filter.agent {
            let agent_id = match self.find_agent(reference).await {
                Ok(a) => a.id,
                Err(StoreError::NotFound) => {
                    return Ok(Page {
                        data: Vec::new(),
                        next: None,
                    })
                }
                Err(e) => return Err(e),
            };
            let a = w.param(agent_id.clone());
            let b = w.param(agent_id);
            w.clauses.push(format!(
                "(agent_id = {a} OR id IN (SELECT call_id FROM legs WHERE agent_id = {b}))"
            ));
        }
        if let Some(from) = &filter.from {
            w.party("from_uri", from);
        }
        if let Some(to) = &filter.to {
            w.party("to_uri", to);
        }
        if let Some(since) = filter.since {
            let p = w.param(fmt_time(since));
            w.clauses.push(format!("started_at >= {p}"));
        }
        if let Some(until) = filter.until {
            let p = w.param(fmt_time(until));
            w.clauses.push(format!("started_at < {p}"));
        }
        let sql = format!(
            "SELECT {CALL_COLUMNS} FROM calls WHERE {} ORDER BY id DESC LIMIT ${}",
            w.sql(),
            w.binds.len() + 1
        );
        let mut q = sqlx::query(&sql);
        for b in &w.binds {
            q = q.bind(b.as_str());
        }
        let rows = q.bind(limit_plus_one(limit)).fetch_all(&self.pool).await?;
        let calls = rows
            .iter()
            .map(call_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        let mut page = into_page(calls, limit, |c| &c.id);
        self.attach_legs(&mut page.data).await?;
        Ok(page)
    }

    /// Fill in the legs of `calls` with one query.
    async fn attach_legs(&self, calls: &mut [Call]) -> Result<(), StoreError> {
        if calls.is_empty() {
            return Ok(());
        }
        let sql = format!(
            "SELECT {LEG_COLUMNS} FROM legs WHERE call_id IN ({}) ORDER BY id",
            placeholders(1, calls.len())
        );
        let mut q = sqlx::query(&sql);
        for c in calls.iter() {
            q = q.bind(c.id.as_str());
        }
        let mut by_call: HashMap<String, Vec<Leg>> = HashMap::new();
        for row in q.fetch_all(&self.pool).await? {
            let leg = leg_from_row(&row)?;
            by_call.entry(leg.call_id.clone()).or_default().push(leg);
        }
        for c in calls {
            c.legs = by_call.remove(&c.id).unwrap_or_default();
        }
        Ok(())
    }

    /// For each of `agent_ids` on at least one live call, how many calls are ringing them
    /// and how many they are on. Per call, the agent counts as on it (`in_progress`) when
    /// their leg or the call they placed is `in-progress`, or when the leg is theirs as
    /// the caller (an inbound leg: placing a call keeps the phone busy); as `ringing` when
    /// their leg or the call is `ringing`. `queued` does not count.
    pub async fn live_call_counts_for_agents(
        &self,
        agent_ids: &[&str],
    ) -> Result<HashMap<String, AgentCallCounts>, StoreError> {
        let mut out: HashMap<String, AgentCallCounts> = HashMap::new();
        if agent_ids.is_empty() {
            return Ok(out);
        }
        let n = agent_ids.len();
        let sql = format!(
            "SELECT agent_id, call_id, direction, status FROM legs \
             WHERE status IN {OPEN} AND agent_id IN ({}) \
             UNION ALL \
             SELECT agent_id, id AS call_id, 'call' AS direction, status FROM calls \
             WHERE status IN {OPEN} AND agent_id IN ({})",
            placeholders(1, n),
            placeholders(n + 1, n)
        );
        let mut q = sqlx::query(&sql);
        for id in agent_ids.iter().chain(agent_ids) {
            q = q.bind(*id);
        }
        let mut per_call: HashMap<(String, String), Involvement> = HashMap::new();
        for row in q.fetch_all(&self.pool).await? {
            let agent = get_str(&row, "agent_id")?;
            let call = get_str(&row, "call_id")?;
            let status: CallStatus = get_enum(&row, "status")?;
            let inbound_leg = get_str(&row, "direction")? == LegDirection::Inbound.as_str();
            let involvement = match status {
                CallStatus::InProgress => Involvement::InProgress,
                _ if inbound_leg => Involvement::InProgress,
                CallStatus::Ringing => Involvement::Ringing,
                _ => Involvement::None,
            };
            let e = per_call.entry((agent, call)).or_insert(Involvement::None);
            *e = (*e).max(involvement);
        }
        for ((agent, _), inv) in per_call {
            let counts = out.entry(agent).or_default();
            match inv {
                Involvement::InProgress => counts.in_progress += 1,
                Involvement::Ringing => counts.ringing += 1,
                Involvement::None => {}
            }
        }
        out.retain(|_, c| c.ringing + c.in_progress > 0);
        Ok(out)
    }
}
