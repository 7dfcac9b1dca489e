//! Call records (SPEC §4 `calls`; the CDRs): a row per call from its first INVITE and a row
//! per leg, written by the call engine through [`Store::apply_call_changes`] and read by
//! the API. Rows are never deleted by call cleanup; an agent's deletion sets their
//! `agent_id` to NULL.
//!
//! Lists are newest first: `ORDER BY id DESC` (ids are time-ordered, so this is creation
//! order reversed), and the cursor `after=<id>` means "older than that call".

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use sqlx::any::AnyRow;
use sqlx::AnyConnection;

use super::webhooks::{Outbox, Subscription};
use super::{
    fmt_time, get_enum, get_opt_i64, get_opt_str, get_opt_time, get_str, get_time, into_page,
    limit_plus_one, now, Page, Store, StoreError,
};
use crate::calls::record::{CallChange, CallStatus, LegDirection, MediaChange, NewCall, NewLeg};

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
    /// The trunk the call went through (id); `None` for agent-to-agent calls or when the
    /// trunk was deleted.
    pub trunk_id: Option<String>,
    /// What the call cost, in micro-units of `currency` (set for priced trunk calls).
    pub cost_micros: Option<i64>,
    pub currency: Option<String>,
    /// The call's own webhook URL (SPEC §5).
    pub status_callback: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// In creation order. Filled by [`Store::get_call`] and [`Store::list_calls`].
    pub legs: Vec<Leg>,
    /// The call's recordings (ids), oldest first. Filled by [`Store::get_call`] and
    /// [`Store::list_calls`].
    pub recording_ids: Vec<String>,
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
    /// As `agent`, with the agent's id already resolved (the API has looked it up): no
    /// lookup, an id that names no agent matches nothing. Wins over `agent`.
    pub agent_id: Option<String>,
    /// Exact `from`, or the user part of a `sip:`/`sips:` URI or a `tel:` number:
    /// `1001` matches `sip:1001@pbx.example;transport=tcp`.
    pub from: Option<String>,
    /// As `from`, for `to`.
    pub to: Option<String>,
    /// `started_at >= since`.
    pub since: Option<DateTime<Utc>>,
    /// `started_at < until`.
    pub until: Option<DateTime<Utc>>,
    /// Only calls through this trunk (its id).
    pub trunk_id: Option<String>,
    /// Only calls that have ended (the CDRs).
    pub finished: bool,
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
     answered_at, ended_at, duration_seconds, hangup_cause, hangup_by, metadata, trunk_id, cost, \
     currency, status_callback, created_at, updated_at";

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
        trunk_id: get_opt_str(row, "trunk_id")?,
        cost_micros: get_opt_i64(row, "cost")?,
        currency: get_opt_str(row, "currency")?,
        status_callback: get_opt_str(row, "status_callback")?,
        created_at: get_time(row, "created_at")?,
        updated_at: get_time(row, "updated_at")?,
        legs: Vec::new(),
        recording_ids: Vec::new(),
    })
}

/// The fields of a leg in [`page_sql`]'s JSON, in [`FoldedLeg`]'s order.
const FOLDED_LEG_FIELDS: &str = "l.id, l.direction, l.agent_id, l.uri, l.sip_call_id, \
     l.status, l.started_at, l.answered_at, l.ended_at, l.hangup_cause";

/// The fields of a call in [`page_sql`]'s JSON, in [`FoldedCall`]'s order (its legs and
/// recording ids follow).
const FOLDED_CALL_FIELDS: &str = "p.id, p.direction, p.from_uri, p.to_uri, p.agent_id, \
     p.status, p.started_at, p.answered_at, p.ended_at, p.duration_seconds, p.hangup_cause, \
     p.hangup_by, p.metadata, p.trunk_id, p.cost, p.currency, p.status_callback, \
     p.created_at, p.updated_at";

/// A page of calls as ONE value: `page_json`, a JSON array (newest first) of one array per
/// call, its fields ([`FOLDED_CALL_FIELDS`]), then its legs (by id, each
/// [`FOLDED_LEG_FIELDS`]), then its recording ids (by id). `calls` is a query of the
/// page's calls (`SELECT … FROM calls c …`, ordered and limited).
///
/// A page was three statements (calls, their legs, their recording ids) and 150 rows of
/// 10 to 19 columns. sqlx copies every value of every row on SQLite's worker thread
/// (sqlite3_value_dup), hands the row to the async side, copies it again into the `Any`
/// driver's values and frees the first copy there: a profile under load had 40 % of the
/// time in the kernel (threads waking each other, malloc's arena locks contended by the
/// worker threads and the async ones) and most of the rest in malloc and sqlx, with
/// SQLite's own work and JSON a small part. One value per page leaves one copy.
fn page_sql(backend: super::Backend, calls: &str) -> String {
    match backend {
        // json() marks a subquery's text as JSON, for json_array to embed it rather than
        // quote it (a JSON subtype does not survive a subquery). SQLite ≥ 3.44 orders an
        // aggregate's input (`ORDER BY` in the call).
        super::Backend::Sqlite => format!(
            "SELECT json_group_array(json_array({FOLDED_CALL_FIELDS}, \
             json((SELECT json_group_array(json_array({FOLDED_LEG_FIELDS}) ORDER BY l.id) \
                   FROM legs l WHERE l.call_id = p.id)), \
             json((SELECT json_group_array(r.id ORDER BY r.id) \
                   FROM recordings r WHERE r.call_id = p.id))) ORDER BY p.id DESC) \
             AS page_json FROM ({calls}) p"
        ),
        // json_agg is NULL over no rows. The page is text for sqlx's Any driver, which
        // has no JSON type.
        super::Backend::Postgres => format!(
            "SELECT CAST(COALESCE(json_agg(json_build_array({FOLDED_CALL_FIELDS}, \
             (SELECT COALESCE(json_agg(json_build_array({FOLDED_LEG_FIELDS}) ORDER BY l.id), \
                     CAST('[]' AS json)) FROM legs l WHERE l.call_id = p.id), \
             (SELECT COALESCE(json_agg(r.id ORDER BY r.id), CAST('[]' AS json)) \
              FROM recordings r WHERE r.call_id = p.id)) ORDER BY p.id DESC), \
             CAST('[]' AS json)) AS TEXT) AS page_json FROM ({calls}) p"
        ),
    }
}

/// One leg in [`page_sql`]'s JSON.
type FoldedLeg = (
    String,
    String,
    Option<String>,
    String,
    String,
    String,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
);

/// One call in [`page_sql`]'s JSON (an array: serde reads a struct from one, in order).
#[derive(serde::Deserialize)]
struct FoldedCall {
    id: String,
    direction: String,
    from: String,
    to: String,
    agent_id: Option<String>,
    status: String,
    started_at: String,
    answered_at: Option<String>,
    ended_at: Option<String>,
    duration_seconds: Option<i64>,
    hangup_cause: Option<String>,
    hangup_by: Option<String>,
    metadata: Option<String>,
    trunk_id: Option<String>,
    cost: Option<i64>,
    currency: Option<String>,
    status_callback: Option<String>,
    created_at: String,
    updated_at: String,
    legs: Vec<FoldedLeg>,
    recording_ids: Vec<String>,
}

/// The calls of a [`page_sql`] row.
fn calls_from_page(row: &AnyRow) -> Result<Vec<Call>, StoreError> {
    let json = get_str(row, "page_json")?;
    let calls: Vec<FoldedCall> = serde_json::from_str(&json).map_err(|e| StoreError::Corrupt {
        column: "calls",
        reason: e.to_string(),
    })?;
    calls.into_iter().map(call_from_folded).collect()
}

fn call_from_folded(c: FoldedCall) -> Result<Call, StoreError> {
    let time = |column: &'static str, s: Option<String>| {
        s.map(|s| super::parse_time(column, &s)).transpose()
    };
    let metadata = c
        .metadata
        .map(|s| {
            serde_json::from_str(&s).map_err(|e| StoreError::Corrupt {
                column: "metadata",
                reason: e.to_string(),
            })
        })
        .transpose()?;
    let legs = c
        .legs
        .into_iter()
        .map(|l| leg_from_folded(&c.id, l))
        .collect::<Result<_, _>>()?;
    Ok(Call {
        direction: c.direction,
        from: c.from,
        to: c.to,
        agent_id: c.agent_id,
        status: parse_enum("status", c.status)?,
        started_at: super::parse_time("started_at", &c.started_at)?,
        answered_at: time("answered_at", c.answered_at)?,
        ended_at: time("ended_at", c.ended_at)?,
        duration_seconds: c.duration_seconds,
        hangup_cause: c.hangup_cause,
        hangup_by: c.hangup_by,
        metadata,
        trunk_id: c.trunk_id,
        cost_micros: c.cost,
        currency: c.currency,
        status_callback: c.status_callback,
        created_at: super::parse_time("created_at", &c.created_at)?,
        updated_at: super::parse_time("updated_at", &c.updated_at)?,
        legs,
        recording_ids: c.recording_ids,
        id: c.id,
    })
}

fn parse_enum<T: std::str::FromStr>(column: &'static str, s: String) -> Result<T, StoreError> {
    s.parse().map_err(|_| StoreError::Corrupt {
        column,
        reason: format!("unexpected value {s:?}"),
    })
}

fn leg_from_folded(call_id: &str, l: FoldedLeg) -> Result<Leg, StoreError> {
    let (id, direction, agent_id, uri, sip_call_id, status, started, answered, ended, cause) = l;
    let time = |column: &'static str, s: Option<String>| {
        s.map(|s| super::parse_time(column, &s)).transpose()
    };
    Ok(Leg {
        id,
        call_id: call_id.to_owned(),
        direction: parse_enum("legs.direction", direction)?,
        agent_id,
        uri,
        sip_call_id,
        status: parse_enum("legs.status", status)?,
        started_at: super::parse_time("legs.started_at", &started)?,
        answered_at: time("legs.answered_at", answered)?,
        ended_at: time("legs.ended_at", ended)?,
        hangup_cause: cause,
    })
}

/// A WHERE clause under construction: string parameters numbered in order of appearance.
#[derive(Default)]
pub(super) struct Where {
    pub(super) clauses: Vec<String>,
    pub(super) binds: Vec<String>,
}

impl Where {
    /// A new placeholder bound to `v`.
    pub(super) fn param(&mut self, v: impl Into<String>) -> String {
        self.binds.push(v.into());
        format!("${}", self.binds.len())
    }

    /// `column` equals `v`, or `v` is the user part of a sip:/sips: URI in `column`, or
    /// `column` is `tel:v`: one condition per way of matching, any of which may hold.
    /// The URI cases are byte ranges (`'sip:v@' <= column < 'sip:vA'`, as `'A'` follows
    /// `'@'`), so they use the column's index on both backends and need no LIKE escaping.
    fn party_ways(&mut self, column: &str, v: &str) -> Vec<String> {
        let exact = self.param(v);
        let tel = self.param(format!("tel:{v}"));
        let mut ways = vec![format!("{column} IN ({exact}, {tel})")];
        for scheme in ["sip", "sips"] {
            let lo = self.param(format!("{scheme}:{v}@"));
            let hi = self.param(format!("{scheme}:{v}A"));
            ways.push(format!("{column} >= {lo} AND {column} < {hi}"));
        }
        ways
    }

    /// The calls of `agent_id`: placed by them, or with a leg of theirs. Each way is a
    /// `(FROM, condition, order column)` of a branch.
    fn agent_ways(&mut self, agent_id: &str) -> Vec<(String, String, String)> {
        let a = self.param(agent_id);
        vec![
            (
                "calls c".to_owned(),
                format!("c.agent_id = {a}"),
                "c.id".to_owned(),
            ),
            (
                "legs l JOIN calls c ON c.id = l.call_id".to_owned(),
                format!("l.agent_id = {a}"),
                "l.call_id".to_owned(),
            ),
        ]
    }

    pub(super) fn sql(&self) -> String {
        if self.clauses.is_empty() {
            "1 = 1".to_owned()
        } else {
            self.clauses.join(" AND ")
        }
    }
}

/// `$start, $start+1, …` for `n` values.
pub(super) fn placeholders(start: usize, n: usize) -> String {
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
    /// - `CallRinging` moves a `queued` call to `ringing`.
    /// - `CallAnswered` sets `answered_at` once and the status `in-progress`, unless the
    ///   call has already ended.
    /// - `LegStatus` sets the status and cause, `answered_at` (once) when `in-progress`,
    ///   `ended_at` (once) when final.
    /// - `CallTrunk` sets the call's trunk (NULL if no such trunk: deleted meanwhile);
    ///   `CallCost` sets `cost` and `currency` (the last one wins).
    /// - `CallEnded` sets the final fields, and closes the call's legs that are still open
    ///   (`in-progress` → `completed`, otherwise `canceled`) so no leg outlives its call.
    ///
    /// Updates of unknown ids change nothing.
    ///
    /// A batch costs a few multi-row statements, not one per change (at 200 call set-ups
    /// a second, statement-per-change kept the SQLite worker thread at ~42 % of the
    /// process's CPU): all creates first, then each kind of update grouped, with every
    /// row's updates folded in order ([`GroupedBatch`]). A batch whose order the grouping
    /// could not reproduce (an update before its row's create, a call answered or given a
    /// leg after its end, two ends of one call) is applied change by change instead.
    pub async fn apply_call_changes(&self, changes: &[CallChange]) -> Result<(), StoreError> {
        if changes.is_empty() {
            return Ok(());
        }
        let t = fmt_time(now());
        let subs = self.subscriptions().await?;
        let mut tx = self.begin_write().await?;
        // Outbox rows only when somebody listens: a webhook subscribed to call events, or
        // calls with a status_callback. Otherwise this costs nothing per call.
        let any_sub = CALL_EVENT_TYPES
            .iter()
            .any(|t| subs.iter().any(|s| s.wants(t)));
        let creates_callback = changes
            .iter()
            .any(|c| matches!(c, CallChange::CreateCall(n) if n.status_callback.is_some()));
        let events = if any_sub || creates_callback || self.hooks.callback_calls_open() {
            Some(plan_call_events(&mut tx, changes, subs.clone(), any_sub, &self.hooks).await?)
        } else {
            None
        };
        match GroupedBatch::plan(changes) {
            Some(batch) => batch.apply(&mut tx, &t, self.backend).await?,
            None => apply_in_order(&mut tx, changes, &t).await?,
        }
        if let Some(ev) = &events {
            ev.outbox.write(&mut tx).await?;
        }
        let media_outbox = apply_media_changes(&mut tx, changes, &subs, &self.hooks, &t).await?;
        tx.commit().await?;
        let media_events = !media_outbox.is_empty();
        if let Some(ev) = events {
            self.hooks
                .track_callbacks(&ev.callbacks_opened, &ev.callbacks_ended);
            if !ev.outbox.is_empty() {
                self.notify_webhooks();
                return Ok(());
            }
        }
        if media_events {
            self.notify_webhooks();
        }
        Ok(())
    }

    /// Insert one call as given (e.g. a click-to-call `queued` call made by
    /// `POST /v1/calls`), with its `call.initiated` event (and `call.ringing` if it starts
    /// ringing) in the same transaction. The engine's later changes of the call go through
    /// [`apply_call_changes`](Self::apply_call_changes) as usual. An existing id is a
    /// conflict.
    pub async fn create_call(&self, new: &NewCall) -> Result<Call, StoreError> {
        let t = fmt_time(now());
        let subs = self.subscriptions().await?;
        let mut tx = self.begin_write().await?;
        let n = insert_call(&mut tx, new, &t).await?;
        if n == 0 {
            return Err(StoreError::Conflict { field: "id" });
        }
        let row = sqlx::query(&format!("SELECT {CALL_COLUMNS} FROM calls WHERE id = $1"))
            .bind(&new.id)
            .fetch_one(&mut *tx)
            .await?;
        let call = call_from_row(&row)?;
        let mut outbox = Outbox::new(subs);
        push_created(&mut outbox, &call);
        outbox.write(&mut tx).await?;
        tx.commit().await?;
        if call.status_callback.is_some() && !call.status.is_final() {
            self.hooks
                .track_callbacks(std::slice::from_ref(&call.id), &[]);
        }
        if !outbox.is_empty() {
            self.notify_webhooks();
        }
        Ok(call)
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
        let subs = self.subscriptions().await?;
        let mut outbox = Outbox::new(subs);
        let mut tx = self.begin_write().await?;
        let rows = sqlx::query(&format!(
            "SELECT {CALL_COLUMNS} FROM calls WHERE status IN {OPEN} ORDER BY id"
        ))
        .fetch_all(&mut *tx)
        .await?;
        let mut closed = 0;
        for row in &rows {
            let mut call = call_from_row(row)?;
            let id = call.id.clone();
            let duration = call
                .answered_at
                .map_or(0, |a| (now - a).num_seconds().max(0));
            call.status = CallStatus::Failed;
            call.ended_at = Some(now);
            call.duration_seconds = Some(duration);
            call.hangup_cause = Some(GATEWAY_RESTART.to_owned());
            call.hangup_by = Some("system".to_owned());
            push_call_event(&mut outbox, "call.completed", &call);
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
        outbox.write(&mut tx).await?;
        tx.commit().await?;
        if !outbox.is_empty() {
            self.notify_webhooks();
        }
        Ok(closed)
    }

    /// One call with its legs and recording ids.
    pub async fn get_call(&self, id: &str) -> Result<Call, StoreError> {
        let sql = page_sql(
            self.backend,
            &format!("SELECT {CALL_COLUMNS} FROM calls c WHERE c.id = $1"),
        );
        let row = sqlx::query(&sql).bind(id).fetch_one(&self.pool).await?;
        calls_from_page(&row)?.pop().ok_or(StoreError::NotFound)
    }

    /// The inputs a call program gathered on call `id`, oldest first: each the `data`
    /// of its `ivr.input` event. Empty for an unknown call.
    pub async fn ivr_inputs(&self, id: &str) -> Result<Vec<serde_json::Value>, StoreError> {
        let rows = sqlx::query("SELECT data FROM call_ivr_inputs WHERE call_id = $1 ORDER BY seq")
            .bind(id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| {
                let text = get_str(row, "data")?;
                serde_json::from_str(&text).map_err(|e| StoreError::Corrupt {
                    column: "call_ivr_inputs.data",
                    reason: e.to_string(),
                })
            })
            .collect()
    }

    /// Calls matching `filter`, newest first, with their legs and recording ids. `after` (a call id, the
    /// `next` of the previous page) continues with the calls older than it.
    pub async fn list_calls(
        &self,
        filter: &CallFilter,
        limit: usize,
        after: Option<&str>,
    ) -> Result<Page<Call>, StoreError> {
        let agent_id = match (&filter.agent_id, &filter.agent) {
            (Some(id), _) => Some(id.clone()),
            (None, Some(reference)) => match self.find_agent(reference).await {
                Ok(a) => Some(a.id),
                Err(StoreError::NotFound) => {
                    return Ok(Page {
                        data: Vec::new(),
                        next: None,
                    })
                }
                Err(e) => return Err(e),
            },
            (None, None) => None,
        };
        // Filters that are a plain AND on the columns of `calls` (aliased `c`) go into
        // `cond`. The agent, `from` and `to` filters are each an OR of ways to match;
        // the first of them present drives the query as one branch per way (below), any
        // other becomes an OR in `cond`.
        let mut w = Where::default();
        let mut ways: Option<Vec<(String, String, String)>> = None;
        if let Some(agent_id) = &agent_id {
            ways = Some(w.agent_ways(agent_id));
        }
        for (column, v) in [("c.from_uri", &filter.from), ("c.to_uri", &filter.to)] {
            let Some(v) = v else { continue };
            let party = w.party_ways(column, v);
            if ways.is_none() {
                ways = Some(
                    party
                        .into_iter()
                        .map(|cond| ("calls c".to_owned(), cond, "c.id".to_owned()))
                        .collect(),
                );
            } else {
                w.clauses.push(format!("(({}))", party.join(") OR (")));
            }
        }
        let mut after_param = None;
        if let Some(after) = after {
            let p = w.param(after);
            w.clauses.push(format!("c.id < {p}"));
            after_param = Some(p);
        }
        if let Some(status) = filter.status {
            let p = w.param(status.as_str());
            w.clauses.push(format!("c.status = {p}"));
        }
        // With a status, a time window is checked while walking the status's index in
        // page order (migration 0008). SQLite's planner prefers the started_at range and
        // then sorts all of the window's matches (13 ms for a 10-day window of 100,000
        // calls, against 0.5 ms); a unary `+` keeps it off that index for these terms
        // (https://sqlite.org/optoverview.html#disqualifying_where_clause_terms_using_unary_).
        // PostgreSQL chooses the walk by itself, and has no unary `+` for text.
        let started_at = if filter.status.is_some() && self.backend == super::Backend::Sqlite {
            "+c.started_at"
        } else {
            "c.started_at"
        };
        if let Some(since) = filter.since {
            let p = w.param(fmt_time(since));
            w.clauses.push(format!("{started_at} >= {p}"));
        }
        if let Some(until) = filter.until {
            let p = w.param(fmt_time(until));
            w.clauses.push(format!("{started_at} < {p}"));
        }
        if let Some(trunk) = &filter.trunk_id {
            let p = w.param(trunk.clone());
            w.clauses.push(format!("c.trunk_id = {p}"));
        }
        if filter.finished {
            w.clauses.push(format!("c.status NOT IN {OPEN}"));
        }
        let cond = w.sql();
        let lim = format!("${}", w.binds.len() + 1);
        let calls = match ways {
            // With a status, the page's ids come from an index-only walk of calls_status
            // (migration 0008) and only then are their rows read. Asked for every column
            // at once, PostgreSQL walked the primary key instead, reading each newer
            // call's row to test it (6 ms against 0.5 ms for a 10-day window in the middle
            // of 100,000 calls).
            None if filter.status.is_some() => format!(
                "SELECT {CALL_COLUMNS} FROM calls c WHERE c.id IN \
                 (SELECT c.id FROM calls c WHERE {cond} ORDER BY c.id DESC LIMIT {lim}) \
                 ORDER BY c.id DESC LIMIT {lim}"
            ),
            None => format!(
                "SELECT {CALL_COLUMNS} FROM calls c WHERE {cond} ORDER BY c.id DESC LIMIT {lim}"
            ),
            Some(ways) => {
                // Each way walks its own index newest first and stops after a page; only
                // those pages are merged and sorted. (One OR over the ways made both
                // backends collect every match, e.g. all of an agent's calls, and sort
                // them on every request: 15 ms for 5,000 matches on SQLite.)
                let branches = ways
                    .iter()
                    .enumerate()
                    .map(|(i, (from, way, order))| {
                        // The cursor also on the column the branch walks (the leg's
                        // call_id, equal to c.id): PostgreSQL does not carry `c.id < $n`
                        // over the join, and walked an agent's legs from the newest down
                        // to the cursor (5,000 index entries, 10 ms, in the middle of
                        // 100,000 calls) instead of starting there.
                        let cursor = match &after_param {
                            Some(p) if order != "c.id" => format!(" AND {order} < {p}"),
                            _ => String::new(),
                        };
                        format!(
                            "SELECT id FROM (SELECT c.id AS id FROM {from} WHERE {way}{cursor} \
                             AND {cond} ORDER BY {order} DESC LIMIT {lim}) w{i}"
                        )
                    })
                    .collect::<Vec<_>>()
                    .join(" UNION ");
                format!(
                    "SELECT {CALL_COLUMNS} FROM calls c WHERE c.id IN ({branches}) \
                     ORDER BY c.id DESC LIMIT {lim}"
                )
            }
        };
        let sql = page_sql(self.backend, &calls);
        let mut q = sqlx::query(&sql);
        for b in &w.binds {
            q = q.bind(b.as_str());
        }
        let row = q.bind(limit_plus_one(limit)).fetch_one(&self.pool).await?;
        Ok(into_page(calls_from_page(&row)?, limit, |c| &c.id))
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

/// `call.*` event types, in the order a call goes through them.
const CALL_EVENT_TYPES: [&str; 4] = super::webhooks::CALL_EVENTS;

fn metadata_text(v: Option<&serde_json::Value>) -> Option<String> {
    v.map(serde_json::Value::to_string)
}

/// A call as the `data` of its `call.*` events: the fields of the API's call resource
/// (without legs), as they are at that event.
pub fn call_event_data(c: &Call) -> serde_json::Value {
    serde_json::json!({
        "id": c.id,
        "status": c.status.as_str(),
        "direction": c.direction,
        "from": c.from,
        "to": c.to,
        "agent": c.agent_id,
        "started_at": fmt_time(c.started_at),
        "answered_at": c.answered_at.map(fmt_time),
        "ended_at": c.ended_at.map(fmt_time),
        "duration_seconds": c.duration_seconds,
        "hangup_cause": c.hangup_cause,
        "hangup_by": c.hangup_by,
        "metadata": c.metadata,
        "status_callback": c.status_callback,
        "trunk": c.trunk_id,
        "cost": c.cost_micros.map(crate::trunks::cost::format_amount),
        "currency": c.currency,
    })
}

/// One `call.*` event of `call` for its subscribers and its status_callback.
fn push_call_event(outbox: &mut Outbox, event_type: &str, call: &Call) {
    if call.status_callback.is_none() && !outbox.subscribed(event_type) {
        return;
    }
    outbox.push(
        event_type,
        Some(&call.id),
        &call_event_data(call),
        call.status_callback.as_deref(),
    );
}

/// A new call's events: `call.initiated`, and `call.ringing` if it starts ringing.
fn push_created(outbox: &mut Outbox, call: &Call) {
    push_call_event(outbox, "call.initiated", call);
    if call.status == CallStatus::Ringing {
        push_call_event(outbox, "call.ringing", call);
    }
}

fn call_from_new(n: &NewCall, t: DateTime<Utc>) -> Call {
    Call {
        id: n.id.clone(),
        direction: n.direction.as_str().to_owned(),
        from: n.from.clone(),
        to: n.to.clone(),
        agent_id: n.agent_id.clone(),
        status: n.status,
        started_at: n.started_at,
        answered_at: None,
        ended_at: None,
        duration_seconds: None,
        hangup_cause: None,
        hangup_by: None,
        metadata: n.metadata.clone(),
        trunk_id: None,
        cost_micros: None,
        currency: None,
        status_callback: n.status_callback.clone(),
        created_at: t,
        updated_at: t,
        legs: Vec::new(),
        recording_ids: Vec::new(),
    }
}

/// The outbox rows of a batch, and the status_callback calls it opens and ends.
struct CallEvents {
    outbox: Outbox,
    callbacks_opened: Vec<String>,
    callbacks_ended: Vec<String>,
}

/// The `call.*` events of a batch, found by replaying it (in order, as
/// [`apply_in_order`] would) over the calls' stored state, read in one query before the
/// batch is applied: `call.initiated` (+ `call.ringing` for a call created ringing) for a
/// new call, `call.ringing` when a `queued` call starts ringing, `call.answered` on the
/// first answer of an open call, `call.completed` when an open call ends. With
/// `all_calls` false (nobody subscribes), only calls with a status_callback are replayed.
async fn plan_call_events(
    conn: &mut AnyConnection,
    changes: &[CallChange],
    subs: Arc<Vec<Subscription>>,
    all_calls: bool,
    hooks: &super::webhooks::Hooks,
) -> Result<CallEvents, StoreError> {
    let t = now();
    let mut created: HashSet<&str> = HashSet::new();
    let mut wanted: BTreeSet<&str> = BTreeSet::new();
    for c in changes {
        match c {
            CallChange::CreateCall(n) => {
                created.insert(n.id.as_str());
            }
            CallChange::CallRinging { call_id, .. }
            | CallChange::CallAnswered { call_id, .. }
            | CallChange::CallEnded { call_id, .. } => {
                if !created.contains(call_id.as_str()) && (all_calls || hooks.has_callback(call_id))
                {
                    wanted.insert(call_id.as_str());
                }
            }
            CallChange::CreateLeg(_)
            | CallChange::LegStatus { .. }
            | CallChange::CallTrunk { .. }
            | CallChange::CallCost { .. }
            | CallChange::Media(_) => {}
        }
    }
    let mut calls: HashMap<String, Call> = HashMap::new();
    let wanted: Vec<&str> = wanted.into_iter().collect();
    for chunk in wanted.chunks(IDS_PER_LOOKUP) {
        let sql = format!(
            "SELECT {CALL_COLUMNS} FROM calls WHERE id IN ({})",
            placeholders(1, chunk.len())
        );
        let mut q = sqlx::query(&sql);
        for id in chunk {
            q = q.bind(*id);
        }
        for row in q.fetch_all(&mut *conn).await? {
            let c = call_from_row(&row)?;
            calls.insert(c.id.clone(), c);
        }
    }
    let mut ev = CallEvents {
        outbox: Outbox::new(subs),
        callbacks_opened: Vec::new(),
        callbacks_ended: Vec::new(),
    };
    for change in changes {
        match change {
            CallChange::CreateCall(n) => {
                if calls.contains_key(&n.id) || !(all_calls || n.status_callback.is_some()) {
                    continue;
                }
                let call = call_from_new(n, t);
                push_created(&mut ev.outbox, &call);
                if call.status_callback.is_some() {
                    ev.callbacks_opened.push(call.id.clone());
                }
                calls.insert(call.id.clone(), call);
            }
            CallChange::CallRinging { call_id, .. } => {
                if let Some(call) = calls.get_mut(call_id) {
                    if call.status == CallStatus::Queued {
                        call.status = CallStatus::Ringing;
                        push_call_event(&mut ev.outbox, "call.ringing", call);
                    }
                }
            }
            CallChange::CallAnswered { call_id, at } => {
                if let Some(call) = calls.get_mut(call_id) {
                    if !call.status.is_final() {
                        call.status = CallStatus::InProgress;
                        if call.answered_at.is_none() {
                            call.answered_at = Some(*at);
                            push_call_event(&mut ev.outbox, "call.answered", call);
                        }
                    }
                }
            }
            CallChange::CallEnded {
                call_id,
                status,
                at,
                duration_seconds,
                hangup_cause,
                hangup_by,
            } => {
                if let Some(call) = calls.get_mut(call_id) {
                    if !call.status.is_final() {
                        call.status = *status;
                        call.ended_at = Some(*at);
                        call.duration_seconds = Some(*duration_seconds);
                        call.hangup_cause = Some(hangup_cause.clone());
                        call.hangup_by = Some(hangup_by.as_str().to_owned());
                        push_call_event(&mut ev.outbox, "call.completed", call);
                        if call.status_callback.is_some() {
                            ev.callbacks_ended.push(call.id.clone());
                        }
                    }
                }
            }
            // What the events carry: the engine sends a call's cost before its end.
            CallChange::CallTrunk { call_id, trunk_id } => {
                if let Some(call) = calls.get_mut(call_id) {
                    call.trunk_id = Some(trunk_id.clone());
                }
            }
            CallChange::CallCost {
                call_id,
                cost_micros,
                currency,
            } => {
                if let Some(call) = calls.get_mut(call_id) {
                    call.cost_micros = Some(*cost_micros);
                    call.currency = Some(currency.clone());
                }
            }
            CallChange::CreateLeg(_) | CallChange::LegStatus { .. } | CallChange::Media(_) => {}
        }
    }
    Ok(ev)
}

/// The batch's [`MediaChange`]s, in order, after its call changes: recording rows and
/// their `recording.completed`, and `call.dtmf`. Returns the outbox written.
async fn apply_media_changes(
    conn: &mut AnyConnection,
    changes: &[CallChange],
    subs: &Arc<Vec<Subscription>>,
    hooks: &super::webhooks::Hooks,
    t: &str,
) -> Result<Outbox, StoreError> {
    let mut outbox = Outbox::new(subs.clone());
    for change in changes {
        let CallChange::Media(m) = change else {
            continue;
        };
        match m {
            MediaChange::RecordingStarted(r) => {
                let _ = super::recordings::insert_recording_row(conn, r, t).await?;
            }
            MediaChange::RecordingPaused { id, paused } => {
                let _ = super::recordings::set_paused_row(conn, id, *paused, t).await?;
            }
            MediaChange::RecordingEnded { id, end } => {
                if let Some(rec) = super::recordings::end_recording_row(conn, id, *end, t).await? {
                    outbox.push(
                        "recording.completed",
                        Some(&rec.call_id),
                        &super::recordings::recording_event_data(&rec),
                        None,
                    );
                }
            }
            MediaChange::Dtmf(d) => {
                // A call.* event: the call's own status_callback gets it too.
                let callback = if hooks.has_callback(&d.call_id) {
                    status_callback(conn, &d.call_id).await?
                } else {
                    None
                };
                if outbox.subscribed("call.dtmf") || callback.is_some() {
                    outbox.push(
                        "call.dtmf",
                        Some(&d.call_id),
                        &serde_json::json!({
                            "call_id": d.call_id,
                            "leg_id": d.leg_id,
                            "digit": d.digit.to_string(),
                            "source": d.source,
                            "duration_ms": d.duration_ms,
                            "at": fmt_time(d.at),
                        }),
                        callback.as_deref(),
                    );
                }
            }
            MediaChange::IvrInput { call_id, data } => {
                insert_ivr_input(conn, call_id, data).await?;
                if outbox.subscribed("ivr.input") {
                    outbox.push("ivr.input", Some(call_id), data, None);
                }
            }
        }
    }
    if !outbox.is_empty() {
        outbox.write(conn).await?;
    }
    Ok(outbox)
}

/// The `status_callback` URL of call `id`, if it has one.
async fn status_callback(conn: &mut AnyConnection, id: &str) -> Result<Option<String>, StoreError> {
    let row = sqlx::query("SELECT status_callback FROM calls WHERE id = $1")
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?;
    row.map_or(Ok(None), |r| get_opt_str(&r, "status_callback"))
}

/// Appends one call-program input to its call's record (after the call's others; none if
/// the call's row is missing, which a batch must survive).
async fn insert_ivr_input(
    conn: &mut AnyConnection,
    call_id: &str,
    data: &serde_json::Value,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO call_ivr_inputs (call_id, seq, data) \
         SELECT c.id, (SELECT COALESCE(MAX(i.seq), 0) + 1 FROM call_ivr_inputs i \
                       WHERE i.call_id = c.id), $2 \
         FROM calls c WHERE c.id = $1",
    )
    .bind(call_id)
    .bind(data.to_string())
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Inserts one call (unless its id exists); the rows inserted (0 or 1).
async fn insert_call(conn: &mut AnyConnection, c: &NewCall, t: &str) -> Result<u64, StoreError> {
    Ok(sqlx::query(
        "INSERT INTO calls (id, direction, from_uri, to_uri, agent_id, status, \
         started_at, created_at, updated_at, status_callback, metadata) \
         VALUES ($1, $2, $3, $4, (SELECT id FROM agents WHERE id = $5), $6, $7, $8, $9, \
         $10, $11) ON CONFLICT (id) DO NOTHING",
    )
    .bind(&c.id)
    .bind(c.direction.as_str())
    .bind(&c.from)
    .bind(&c.to)
    .bind(&c.agent_id)
    .bind(c.status.as_str())
    .bind(fmt_time(c.started_at))
    .bind(t)
    .bind(t)
    .bind(&c.status_callback)
    .bind(metadata_text(c.metadata.as_ref()))
    .execute(&mut *conn)
    .await?
    .rows_affected())
}

/// The changes one statement each, in order: the exact semantics, for batches
/// [`GroupedBatch`] cannot reproduce.
async fn apply_in_order(
    conn: &mut AnyConnection,
    changes: &[CallChange],
    t: &str,
) -> Result<(), StoreError> {
    for change in changes {
        let affected = match change {
            // Applied after the call changes (`apply_media_changes`).
            CallChange::Media(_) => continue,
            CallChange::CreateCall(c) => insert_call(conn, c, t).await?,
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
            .execute(&mut *conn)
            .await?
            .rows_affected(),
            CallChange::CallRinging { call_id, at: _ } => sqlx::query(
                "UPDATE calls SET status = $1, updated_at = $2 WHERE id = $3 AND status = $4",
            )
            .bind(CallStatus::Ringing.as_str())
            .bind(t)
            .bind(call_id)
            .bind(CallStatus::Queued.as_str())
            .execute(&mut *conn)
            .await?
            .rows_affected(),
            CallChange::CallTrunk { call_id, trunk_id } => sqlx::query(
                "UPDATE calls SET trunk_id = (SELECT id FROM trunks WHERE id = $1), \
                 updated_at = $2 WHERE id = $3",
            )
            .bind(trunk_id)
            .bind(t)
            .bind(call_id)
            .execute(&mut *conn)
            .await?
            .rows_affected(),
            CallChange::CallCost {
                call_id,
                cost_micros,
                currency,
            } => sqlx::query(
                "UPDATE calls SET cost = $1, currency = $2, updated_at = $3 WHERE id = $4",
            )
            .bind(*cost_micros)
            .bind(currency)
            .bind(t)
            .bind(call_id)
            .execute(&mut *conn)
            .await?
            .rows_affected(),
            CallChange::CallAnswered { call_id, at } => sqlx::query(&format!(
                "UPDATE calls SET answered_at = COALESCE(answered_at, $1), status = $2, \
                 updated_at = $3 WHERE id = $4 AND status IN {OPEN}"
            ))
            .bind(fmt_time(*at))
            .bind(CallStatus::InProgress.as_str())
            .bind(t)
            .bind(call_id)
            .execute(&mut *conn)
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
                .execute(&mut *conn)
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
                .bind(t)
                .bind(call_id)
                .execute(&mut *conn)
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
                .execute(&mut *conn)
                .await?;
                n
            }
        };
        if affected == 0 {
            tracing::debug!(?change, "call record change matched nothing");
        }
    }
    Ok(())
}

/// Ids per `IN (…)` lookup: far below SQLite's 32766 bound parameters and PostgreSQL's
/// 65535 (sqlx's parameter-name lookup on SQLite is quadratic in the count).
const IDS_PER_LOOKUP: usize = 512;

/// One leg's `LegStatus` changes folded into the one update that has the same effect as
/// applying them in order: the last status, the first `answered_at` and `ended_at` (the
/// columns are set once), the last cause given.
#[derive(Debug)]
struct LegFold<'a> {
    status: CallStatus,
    answered_at: Option<String>,
    ended_at: Option<String>,
    hangup_cause: Option<&'a str>,
}

impl<'a> LegFold<'a> {
    fn fold(&mut self, status: CallStatus, at: DateTime<Utc>, cause: Option<&'a str>) {
        self.status = status;
        if status == CallStatus::InProgress && self.answered_at.is_none() {
            self.answered_at = Some(fmt_time(at));
        }
        if status.is_final() && self.ended_at.is_none() {
            self.ended_at = Some(fmt_time(at));
        }
        if cause.is_some() {
            self.hangup_cause = cause;
        }
    }
}

/// Leg updates, one per leg, in order of first appearance (deterministic statements).
#[derive(Debug, Default)]
struct LegFolds<'a> {
    rows: Vec<(&'a str, LegFold<'a>)>,
    index: HashMap<&'a str, usize>,
}

impl<'a> LegFolds<'a> {
    fn add(&mut self, leg: &'a str, status: CallStatus, at: DateTime<Utc>, cause: Option<&'a str>) {
        let i = *self.index.entry(leg).or_insert_with(|| {
            self.rows.push((
                leg,
                LegFold {
                    status,
                    answered_at: None,
                    ended_at: None,
                    hangup_cause: None,
                },
            ));
            self.rows.len() - 1
        });
        if let Some((_, fold)) = self.rows.get_mut(i) {
            fold.fold(status, at, cause);
        }
    }
}

/// A `LegStatus` change: (position in the batch, leg, status, at, cause).
type LegChange<'a> = (usize, &'a str, CallStatus, DateTime<Utc>, Option<&'a str>);

/// A `CallEnded`, as its row of the grouped update.
#[derive(Debug)]
struct CallEnd<'a> {
    call_id: &'a str,
    status: CallStatus,
    at: String,
    duration_seconds: i64,
    hangup_cause: &'a str,
    hangup_by: &'static str,
}

/// A batch of [`CallChange`]s as a few grouped statements, in this order:
///
/// 1. one multi-row INSERT of the calls, 2. one of the legs (creates first: an update
///    later in the batch must find its row); then `CallTrunk` and `CallCost`, the last of
///    each per call (nothing else in a batch writes those columns);
/// 3. `CallAnswered`, one row per call (the first answer: `answered_at` is set once);
/// 4. the `LegStatus` changes of each leg made before its call's end in this batch;
/// 5. `CallEnded`, then 6. the closing of those calls' open legs;
/// 7. the `LegStatus` changes made after their call's end in this batch.
///
/// That is the in-order result as long as no row is updated before its create, no call is
/// answered or given a leg after its end, and no call ends twice: [`plan`](Self::plan)
/// returns `None` for any other batch. Where a leg's call is not in the batch, the leg is
/// looked up (one SELECT) to know on which side of its call's end each change falls.
#[derive(Debug, Default)]
struct GroupedBatch<'a> {
    calls: Vec<&'a NewCall>,
    legs: Vec<&'a NewLeg>,
    answered: Vec<(&'a str, String)>,
    ends: Vec<CallEnd<'a>>,
    /// Position of each call's end in the batch.
    end_at: HashMap<&'a str, usize>,
    /// Position of the batch's first end (changes before it precede every end).
    first_end: Option<usize>,
    /// Each leg's call, for the legs created in the batch.
    leg_call: HashMap<&'a str, &'a str>,
    leg_changes: Vec<LegChange<'a>>,
    /// `CallTrunk` and `CallCost`, the last of each per call (they set columns nothing
    /// else in a batch touches, so only the last value matters).
    trunks: Vec<(&'a str, &'a str)>,
    costs: Vec<(&'a str, i64, &'a str)>,
}

impl<'a> GroupedBatch<'a> {
    fn plan(changes: &'a [CallChange]) -> Option<GroupedBatch<'a>> {
        let mut b = GroupedBatch::default();
        // Last position of each create, and each call's end.
        let mut call_created: HashMap<&str, usize> = HashMap::new();
        let mut leg_created: HashMap<&str, usize> = HashMap::new();
        for (i, change) in changes.iter().enumerate() {
            match change {
                CallChange::CreateCall(c) => {
                    call_created.insert(c.id.as_str(), i);
                }
                CallChange::CreateLeg(l) => {
                    leg_created.insert(l.id.as_str(), i);
                }
                CallChange::CallEnded { call_id, .. } => {
                    if b.end_at.insert(call_id.as_str(), i).is_some() {
                        return None;
                    }
                    if b.first_end.is_none() {
                        b.first_end = Some(i);
                    }
                }
                CallChange::CallAnswered { .. }
                | CallChange::LegStatus { .. }
                | CallChange::CallTrunk { .. }
                | CallChange::CallCost { .. }
                | CallChange::Media(_) => {}
                // Rare (click-to-call only): not worth a grouped statement of its own.
                CallChange::CallRinging { .. } => return None,
            }
        }
        let created_later =
            |map: &HashMap<&str, usize>, id: &str, i: usize| map.get(id).is_some_and(|&c| c > i);
        let ended_before = |call: &str, i: usize| b.end_at.get(call).is_some_and(|&e| e < i);
        let mut calls_seen = HashSet::new();
        let mut legs_seen = HashSet::new();
        let mut answers_seen = HashSet::new();
        let mut calls = Vec::new();
        let mut legs = Vec::new();
        let mut answered = Vec::new();
        let mut ends = Vec::new();
        let mut leg_call = HashMap::new();
        let mut leg_changes = Vec::new();
        let mut last_trunk: std::collections::BTreeMap<&str, &str> =
            std::collections::BTreeMap::new();
        let mut last_cost: std::collections::BTreeMap<&str, (i64, &str)> =
            std::collections::BTreeMap::new();
        for (i, change) in changes.iter().enumerate() {
            match change {
                CallChange::CreateCall(c) => {
                    if calls_seen.insert(c.id.as_str()) {
                        calls.push(c);
                    }
                }
                CallChange::CreateLeg(l) => {
                    if ended_before(&l.call_id, i) {
                        return None;
                    }
                    if legs_seen.insert(l.id.as_str()) {
                        legs.push(l);
                        leg_call.insert(l.id.as_str(), l.call_id.as_str());
                    }
                }
                CallChange::CallRinging { .. } => return None,
                // Applied after the grouped statements (`apply_media_changes`).
                CallChange::Media(_) => {}
                CallChange::CallTrunk { call_id, trunk_id } => {
                    if created_later(&call_created, call_id, i) {
                        return None;
                    }
                    last_trunk.insert(call_id.as_str(), trunk_id.as_str());
                }
                CallChange::CallCost {
                    call_id,
                    cost_micros,
                    currency,
                } => {
                    if created_later(&call_created, call_id, i) {
                        return None;
                    }
                    last_cost.insert(call_id.as_str(), (*cost_micros, currency.as_str()));
                }
                CallChange::CallAnswered { call_id, at } => {
                    if ended_before(call_id, i) || created_later(&call_created, call_id, i) {
                        return None;
                    }
                    if answers_seen.insert(call_id.as_str()) {
                        answered.push((call_id.as_str(), fmt_time(*at)));
                    }
                }
                CallChange::LegStatus {
                    leg_id,
                    status,
                    at,
                    hangup_cause,
                } => {
                    if created_later(&leg_created, leg_id, i) {
                        return None;
                    }
                    leg_changes.push((i, leg_id.as_str(), *status, *at, hangup_cause.as_deref()));
                }
                CallChange::CallEnded {
                    call_id,
                    status,
                    at,
                    duration_seconds,
                    hangup_cause,
                    hangup_by,
                } => {
                    if created_later(&call_created, call_id, i) {
                        return None;
                    }
                    ends.push(CallEnd {
                        call_id: call_id.as_str(),
                        status: *status,
                        at: fmt_time(*at),
                        duration_seconds: *duration_seconds,
                        hangup_cause: hangup_cause.as_str(),
                        hangup_by: hangup_by.as_str(),
                    });
                }
            }
        }
        b.calls = calls;
        b.legs = legs;
        b.answered = answered;
        b.ends = ends;
        b.leg_call = leg_call;
        b.leg_changes = leg_changes;
        b.trunks = last_trunk.into_iter().collect();
        b.costs = last_cost
            .into_iter()
            .map(|(call, (micros, currency))| (call, micros, currency))
            .collect();
        Some(b)
    }

    async fn apply(
        &self,
        conn: &mut AnyConnection,
        t: &str,
        backend: super::Backend,
    ) -> Result<(), StoreError> {
        let rows = JsonRows::new(backend);
        self.insert_calls(conn, t, &rows).await?;
        self.insert_legs(conn, &rows).await?;
        self.update_trunks_and_costs(conn, t, &rows).await?;
        self.update_answered(conn, t, &rows).await?;
        let (before, after) = self.split_leg_changes(conn).await?;
        update_legs(conn, &before, &rows).await?;
        self.update_ends(conn, t, &rows).await?;
        self.close_legs(conn, &rows).await?;
        update_legs(conn, &after, &rows).await?;
        Ok(())
    }

    async fn insert_calls(
        &self,
        conn: &mut AnyConnection,
        t: &str,
        rows: &JsonRows,
    ) -> Result<(), StoreError> {
        if self.calls.is_empty() {
            return Ok(());
        }
        let sql = format!(
            "INSERT INTO calls (id, direction, from_uri, to_uri, agent_id, status, \
             started_at, created_at, updated_at, status_callback, metadata) \
             SELECT v.column1, v.column2, v.column3, v.column4, \
             (SELECT id FROM agents WHERE id = v.column5), v.column6, v.column7, $2, $2, \
             v.column8, v.column9 FROM ({}) AS v WHERE true ON CONFLICT (id) DO NOTHING",
            rows.select(1, &["TEXT"; 9])
        );
        for chunk in self.calls.chunks(JSON_ROWS_PER_STATEMENT) {
            let json = to_json(chunk.iter().map(|c| {
                (
                    c.id.as_str(),
                    c.direction.as_str(),
                    c.from.as_str(),
                    c.to.as_str(),
                    c.agent_id.as_deref(),
                    c.status.as_str(),
                    fmt_time(c.started_at),
                    c.status_callback.as_deref(),
                    metadata_text(c.metadata.as_ref()),
                )
            }))?;
            sqlx::query(&sql)
                .bind(json)
                .bind(t)
                .execute(&mut *conn)
                .await?;
        }
        Ok(())
    }

    async fn insert_legs(
        &self,
        conn: &mut AnyConnection,
        rows: &JsonRows,
    ) -> Result<(), StoreError> {
        if self.legs.is_empty() {
            return Ok(());
        }
        let sql = format!(
            "INSERT INTO legs (id, call_id, direction, agent_id, uri, sip_call_id, status, \
             started_at) SELECT v.column1, v.column2, v.column3, \
             (SELECT id FROM agents WHERE id = v.column4), v.column5, v.column6, v.column7, \
             v.column8 FROM ({}) AS v WHERE true ON CONFLICT (id) DO NOTHING",
            rows.select(1, &["TEXT"; 8])
        );
        for chunk in self.legs.chunks(JSON_ROWS_PER_STATEMENT) {
            let json = to_json(chunk.iter().map(|l| {
                (
                    l.id.as_str(),
                    l.call_id.as_str(),
                    l.direction.as_str(),
                    l.agent_id.as_deref(),
                    l.uri.as_str(),
                    l.sip_call_id.as_str(),
                    l.status.as_str(),
                    fmt_time(l.started_at),
                )
            }))?;
            sqlx::query(&sql).bind(json).execute(&mut *conn).await?;
        }
        Ok(())
    }

    async fn update_trunks_and_costs(
        &self,
        conn: &mut AnyConnection,
        t: &str,
        rows: &JsonRows,
    ) -> Result<(), StoreError> {
        if !self.trunks.is_empty() {
            let sql = format!(
                "UPDATE calls SET trunk_id = (SELECT id FROM trunks WHERE id = v.column2), \
                 updated_at = $1 FROM ({}) AS v WHERE calls.id = v.column1",
                rows.select(2, &["TEXT", "TEXT"])
            );
            for chunk in self.trunks.chunks(JSON_ROWS_PER_STATEMENT) {
                sqlx::query(&sql)
                    .bind(t)
                    .bind(to_json(chunk.iter())?)
                    .execute(&mut *conn)
                    .await?;
            }
        }
        if !self.costs.is_empty() {
            let sql = format!(
                "UPDATE calls SET cost = v.column2, currency = v.column3, updated_at = $1 \
                 FROM ({}) AS v WHERE calls.id = v.column1",
                rows.select(2, &["TEXT", "BIGINT", "TEXT"])
            );
            for chunk in self.costs.chunks(JSON_ROWS_PER_STATEMENT) {
                sqlx::query(&sql)
                    .bind(t)
                    .bind(to_json(chunk.iter())?)
                    .execute(&mut *conn)
                    .await?;
            }
        }
        Ok(())
    }

    async fn update_answered(
        &self,
        conn: &mut AnyConnection,
        t: &str,
        rows: &JsonRows,
    ) -> Result<(), StoreError> {
        if self.answered.is_empty() {
            return Ok(());
        }
        let sql = format!(
            "UPDATE calls SET answered_at = COALESCE(calls.answered_at, v.column2), \
             status = $1, updated_at = $2 FROM ({}) AS v \
             WHERE calls.id = v.column1 AND calls.status IN {OPEN}",
            rows.select(3, &["TEXT", "TEXT"])
        );
        for chunk in self.answered.chunks(JSON_ROWS_PER_STATEMENT) {
            let json = to_json(chunk.iter().map(|(call_id, at)| (*call_id, at.as_str())))?;
            sqlx::query(&sql)
                .bind(CallStatus::InProgress.as_str())
                .bind(t)
                .bind(json)
                .execute(&mut *conn)
                .await?;
        }
        Ok(())
    }

    /// The folded `LegStatus` updates before and after their call's end in the batch.
    async fn split_leg_changes(
        &self,
        conn: &mut AnyConnection,
    ) -> Result<(LegFolds<'a>, LegFolds<'a>), StoreError> {
        let mut before = LegFolds::default();
        let mut after = LegFolds::default();
        // The call of each leg changed after some end and not created in the batch.
        let unknown: Vec<&str> = self
            .leg_changes
            .iter()
            .filter(|(i, leg, ..)| {
                self.first_end.is_some_and(|e| e < *i) && !self.leg_call.contains_key(leg)
            })
            .map(|(_, leg, ..)| *leg)
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let mut looked_up: HashMap<String, String> = HashMap::new();
        for chunk in unknown.chunks(IDS_PER_LOOKUP) {
            let sql = format!(
                "SELECT id, call_id FROM legs WHERE id IN ({})",
                placeholders(1, chunk.len())
            );
            let mut q = sqlx::query(&sql);
            for id in chunk {
                q = q.bind(*id);
            }
            for row in q.fetch_all(&mut *conn).await? {
                looked_up.insert(get_str(&row, "id")?, get_str(&row, "call_id")?);
            }
        }
        for &(i, leg, status, at, cause) in &self.leg_changes {
            let after_end = self.first_end.is_some_and(|e| e < i) && {
                let call = self
                    .leg_call
                    .get(leg)
                    .copied()
                    .or_else(|| looked_up.get(leg).map(String::as_str));
                match call {
                    Some(call) => self.end_at.get(call).is_some_and(|&e| e < i),
                    // Not in the database: the update changes nothing either way.
                    None => continue,
                }
            };
            if after_end {
                after.add(leg, status, at, cause);
            } else {
                before.add(leg, status, at, cause);
            }
        }
        Ok((before, after))
    }

    async fn update_ends(
        &self,
        conn: &mut AnyConnection,
        t: &str,
        rows: &JsonRows,
    ) -> Result<(), StoreError> {
        if self.ends.is_empty() {
            return Ok(());
        }
        let sql = format!(
            "UPDATE calls SET status = v.column2, ended_at = v.column3, \
             duration_seconds = v.column4, hangup_cause = v.column5, \
             hangup_by = v.column6, updated_at = $1 FROM ({}) AS v \
             WHERE calls.id = v.column1",
            rows.select(2, &["TEXT", "TEXT", "TEXT", "BIGINT", "TEXT", "TEXT"])
        );
        for chunk in self.ends.chunks(JSON_ROWS_PER_STATEMENT) {
            let json = to_json(chunk.iter().map(|e| {
                (
                    e.call_id,
                    e.status.as_str(),
                    e.at.as_str(),
                    e.duration_seconds,
                    e.hangup_cause,
                    e.hangup_by,
                )
            }))?;
            sqlx::query(&sql)
                .bind(t)
                .bind(json)
                .execute(&mut *conn)
                .await?;
        }
        Ok(())
    }

    /// A call's end closes its legs still open: answered ones `completed`, the others
    /// `canceled`.
    async fn close_legs(
        &self,
        conn: &mut AnyConnection,
        rows: &JsonRows,
    ) -> Result<(), StoreError> {
        if self.ends.is_empty() {
            return Ok(());
        }
        let sql = format!(
            "UPDATE legs SET status = CASE WHEN legs.status = 'in-progress' \
             THEN 'completed' ELSE 'canceled' END, \
             ended_at = COALESCE(legs.ended_at, v.column2), \
             hangup_cause = COALESCE(legs.hangup_cause, v.column3) \
             FROM ({}) AS v WHERE legs.call_id = v.column1 AND legs.status IN {OPEN}",
            rows.select(1, &["TEXT", "TEXT", "TEXT"])
        );
        for chunk in self.ends.chunks(JSON_ROWS_PER_STATEMENT) {
            let json = to_json(
                chunk
                    .iter()
                    .map(|e| (e.call_id, e.at.as_str(), e.hangup_cause)),
            )?;
            sqlx::query(&sql).bind(json).execute(&mut *conn).await?;
        }
        Ok(())
    }
}

/// One grouped UPDATE of legs per [`JSON_ROWS_PER_STATEMENT`] folded legs.
async fn update_legs(
    conn: &mut AnyConnection,
    folds: &LegFolds<'_>,
    rows: &JsonRows,
) -> Result<(), StoreError> {
    if folds.rows.is_empty() {
        return Ok(());
    }
    let sql = format!(
        "UPDATE legs SET status = v.column2, \
         answered_at = COALESCE(legs.answered_at, v.column3), \
         ended_at = COALESCE(legs.ended_at, v.column4), \
         hangup_cause = COALESCE(v.column5, legs.hangup_cause) \
         FROM ({}) AS v WHERE legs.id = v.column1",
        rows.select(1, &["TEXT"; 5])
    );
    for chunk in folds.rows.chunks(JSON_ROWS_PER_STATEMENT) {
        let json = to_json(chunk.iter().map(|(leg, f)| {
            (
                *leg,
                f.status.as_str(),
                f.answered_at.as_deref(),
                f.ended_at.as_deref(),
                f.hangup_cause,
            )
        }))?;
        sqlx::query(&sql).bind(json).execute(&mut *conn).await?;
    }
    Ok(())
}

/// Rows per statement of the record writer. They travel as one JSON parameter, so the
/// bound is only the statement's memory, not a parameter count.
const JSON_ROWS_PER_STATEMENT: usize = 1024;

/// A batch's rows as one JSON parameter (an array of arrays) that the statement unpacks
/// with the database's own JSON functions, instead of a `VALUES` list with a parameter per
/// field. Under call load the parameters were the record writer's overhead: sqlx looks
/// each one's name up in SQLite's list of names (quadratic in the count), converts it
/// through the `Any` driver, and every row count was a different statement to prepare.
/// Now each statement has one text, prepared once per connection, and one parameter.
struct JsonRows {
    backend: super::Backend,
}

impl JsonRows {
    fn new(backend: super::Backend) -> JsonRows {
        JsonRows { backend }
    }

    /// `SELECT CAST(j.value ->> 0 AS T1) AS column1, … FROM <the array in $param> AS j`:
    /// the rows as a subquery with the column names a `VALUES` list has. `->>` is the
    /// same on both databases (SQLite ≥ 3.38 and PostgreSQL); only the function that
    /// turns the array into rows differs. The casts give PostgreSQL each column's type
    /// (`->>` yields text); SQLite takes them as no-ops on these values.
    fn select(&self, param: usize, types: &[&str]) -> String {
        let cols = types
            .iter()
            .enumerate()
            .map(|(i, ty)| format!("CAST(j.value ->> {i} AS {ty}) AS column{}", i + 1))
            .collect::<Vec<_>>()
            .join(", ");
        let from = match self.backend {
            super::Backend::Sqlite => format!("json_each(${param}) AS j"),
            super::Backend::Postgres => {
                format!("json_array_elements(CAST(${param} AS json)) AS j(value)")
            }
        };
        format!("SELECT {cols} FROM {from}")
    }
}

/// The rows (tuples serialise as JSON arrays) as the parameter [`JsonRows`] unpacks.
fn to_json<T: serde::Serialize>(rows: impl Iterator<Item = T>) -> Result<String, StoreError> {
    let rows: Vec<T> = rows.collect();
    serde_json::to_string(&rows).map_err(|e| StoreError::Corrupt {
        column: "record batch",
        reason: e.to_string(),
    })
}
