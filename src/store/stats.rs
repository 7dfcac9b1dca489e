//! Call statistics (SPEC §4 `stats`): counts by status, answers, talk time and cost over
//! the calls started in a window, in total or per agent, trunk or day. One grouped query;
//! the database sums, Rust only folds statuses and currencies into groups.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use super::{fmt_time, get_enum, get_i64, get_opt_str, Store, StoreError};
use crate::calls::record::CallStatus;

/// What statistics are grouped by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatsGroupBy {
    /// One group of every call.
    None,
    /// The agent who placed the call, else the first agent who answered a leg of it.
    Agent,
    Trunk,
    /// The UTC day the call started (`YYYY-MM-DD`).
    Day,
}

/// One `(group, status, currency)` row as the database sums it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatsRow {
    pub key: Option<String>,
    pub status: CallStatus,
    pub currency: Option<String>,
    pub calls: i64,
    pub answered: i64,
    pub talk_seconds: i64,
    pub cost_micros: i64,
}

/// A cost total in one currency.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CostTotal {
    pub currency: String,
    pub micros: i64,
}

/// The statistics of one group.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StatsGroup {
    /// The agent id, trunk id or day; `None` for calls with no agent or trunk (and for
    /// the single group of [`StatsGroupBy::None`]).
    pub key: Option<String>,
    pub calls: i64,
    /// Calls by status (only statuses with calls).
    pub by_status: BTreeMap<&'static str, i64>,
    /// Calls that have ended.
    pub finished: i64,
    /// Ended calls that were answered.
    pub answered: i64,
    /// Seconds from answer to end, summed over ended calls.
    pub talk_seconds: i64,
    /// By currency, in currency order.
    pub cost: Vec<CostTotal>,
}

impl StatsGroup {
    fn add(&mut self, r: &StatsRow) {
        self.calls += r.calls;
        *self.by_status.entry(r.status.as_str()).or_default() += r.calls;
        if r.status.is_final() {
            self.finished += r.calls;
            self.answered += r.answered;
            self.talk_seconds += r.talk_seconds;
        }
        if let Some(currency) = &r.currency {
            match self.cost.iter_mut().find(|c| &c.currency == currency) {
                Some(c) => c.micros += r.cost_micros,
                None => {
                    self.cost.push(CostTotal {
                        currency: currency.clone(),
                        micros: r.cost_micros,
                    });
                    self.cost.sort_by(|a, b| a.currency.cmp(&b.currency));
                }
            }
        }
    }

    /// Answered over ended calls; `None` before any call ended.
    pub fn answer_rate(&self) -> Option<f64> {
        (self.finished > 0).then(|| self.answered as f64 / self.finished as f64)
    }

    /// Average talk time of the answered ended calls; `None` without any.
    pub fn average_talk_seconds(&self) -> Option<f64> {
        (self.answered > 0).then(|| self.talk_seconds as f64 / self.answered as f64)
    }
}

impl Store {
    /// Statistics of the calls started in `[since, until)` (either end open), grouped;
    /// groups in key order (calls without a key first).
    pub async fn call_stats(
        &self,
        since: Option<DateTime<Utc>>,
        until: Option<DateTime<Utc>>,
        group_by: StatsGroupBy,
    ) -> Result<Vec<StatsGroup>, StoreError> {
        let key = match group_by {
            StatsGroupBy::None => "CAST(NULL AS TEXT)",
            StatsGroupBy::Trunk => "trunk_id",
            StatsGroupBy::Day => "SUBSTR(started_at, 1, 10)",
            StatsGroupBy::Agent => {
                "COALESCE(agent_id, (SELECT MIN(l.agent_id) FROM legs l \
                 WHERE l.call_id = calls.id AND l.answered_at IS NOT NULL))"
            }
        };
        let mut clauses = Vec::new();
        let mut binds = Vec::new();
        if let Some(s) = since {
            binds.push(fmt_time(s));
            clauses.push(format!("started_at >= ${}", binds.len()));
        }
        if let Some(u) = until {
            binds.push(fmt_time(u));
            clauses.push(format!("started_at < ${}", binds.len()));
        }
        let filter = if clauses.is_empty() {
            "1 = 1".to_owned()
        } else {
            clauses.join(" AND ")
        };
        let sql = format!(
            "SELECT k, status, currency, COUNT(*) AS n, \
             CAST(SUM(CASE WHEN answered_at IS NOT NULL THEN 1 ELSE 0 END) AS BIGINT) AS answered, \
             CAST(SUM(COALESCE(duration_seconds, 0)) AS BIGINT) AS talk, \
             CAST(SUM(COALESCE(cost, 0)) AS BIGINT) AS cost \
             FROM (SELECT {key} AS k, status, currency, answered_at, duration_seconds, cost \
                   FROM calls WHERE {filter}) AS c \
             GROUP BY k, status, currency"
        );
        let mut q = sqlx::query(&sql);
        for b in &binds {
            q = q.bind(b.as_str());
        }
        let rows = q
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|row| {
                Ok(StatsRow {
                    key: get_opt_str(row, "k")?,
                    status: get_enum(row, "status")?,
                    currency: get_opt_str(row, "currency")?,
                    calls: get_i64(row, "n")?,
                    answered: get_i64(row, "answered")?,
                    talk_seconds: get_i64(row, "talk")?,
                    cost_micros: get_i64(row, "cost")?,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        let mut groups: BTreeMap<Option<String>, StatsGroup> = BTreeMap::new();
        for r in &rows {
            groups
                .entry(r.key.clone())
                .or_insert_with(|| StatsGroup {
                    key: r.key.clone(),
                    ..StatsGroup::default()
                })
                .add(r);
        }
        if group_by == StatsGroupBy::None && groups.is_empty() {
            groups.insert(None, StatsGroup::default());
        }
        Ok(groups.into_values().collect())
    }
}
