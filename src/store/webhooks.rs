//! Webhooks (SPEC §5): subscriptions, the outbox and the delivery log.
//!
//! Events are written to `webhook_events` in the same transaction as the state change
//! they report ([`Outbox`], used by `apply_call_changes`, `create_call`, `update_agent`),
//! and delivered by the worker in `src/webhooks/` through [`Store::claim_webhook_events`]
//! and [`Store::finish_webhook_attempt`].
//!
//! The recorder writes thousands of calls a second, so whether anyone listens must cost
//! nothing per call: the subscriptions are cached in memory ([`Hooks`]), dropped when the
//! API changes them through this store and reloaded at most every [`SUBSCRIPTION_TTL`]
//! (so changes made by another node on the same PostgreSQL are seen within it).

use std::collections::HashSet;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use rand::Rng as _;
use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::AnyConnection;
use tokio::sync::Notify;

use super::{
    fmt_time, get_i64, get_opt_i64, get_opt_str, get_str, get_time, into_page, limit_plus_one, now,
    Backend, Page, Store, StoreError,
};
use crate::ids::{new_id, IdKind};

/// How long a cached subscription list is trusted without a reload.
pub const SUBSCRIPTION_TTL: Duration = Duration::from_secs(5);

/// Event types of SPEC §5, plus `webhook.test` (sent only by `POST /v1/webhooks/{id}/test`).
pub const EVENT_TYPES: &[&str] = &[
    "call.initiated",
    "call.ringing",
    "call.answered",
    "call.completed",
    "call.dtmf",
    "ivr.input",
    "queue.joined",
    "queue.left",
    "agent.state_changed",
    "recording.completed",
    "transcript.completed",
    "analysis.completed",
    "campaign.lead_completed",
    "masking.call_completed",
    "webhook.test",
];

/// The `call.*` events a status_callback gets.
pub const CALL_EVENTS: [&str; 4] = [
    "call.initiated",
    "call.ringing",
    "call.answered",
    "call.completed",
];

/// `webhook.test`: never matched by subscriptions, sent to one webhook on request.
pub const TEST_EVENT: &str = "webhook.test";

/// Key of the generated status_callback secret in `settings`.
pub const STATUS_CALLBACK_SECRET_KEY: &str = "webhooks.status_callback_secret";

/// Does `pattern` (`*`, `call.*`, `call.completed`) select `event_type`?
pub fn pattern_matches(pattern: &str, event_type: &str) -> bool {
    if event_type == TEST_EVENT {
        return false;
    }
    if pattern == "*" || pattern == event_type {
        return true;
    }
    pattern.strip_suffix(".*").is_some_and(|prefix| {
        event_type
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('.'))
    })
}

/// Is `pattern` one a webhook may subscribe with: `*`, a known type, or `<prefix>.*` for a
/// known prefix?
pub fn pattern_is_known(pattern: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    if let Some(prefix) = pattern.strip_suffix(".*") {
        return EVENT_TYPES
            .iter()
            .filter(|t| **t != TEST_EVENT)
            .any(|t| t.split_once('.').is_some_and(|(p, _)| p == prefix));
    }
    pattern != TEST_EVENT && EVENT_TYPES.contains(&pattern)
}

/// A new webhook secret: `whsec_` and 32 random bytes in hex.
pub fn generate_webhook_secret() -> String {
    let bytes: [u8; 32] = rand::rng().random();
    format!("whsec_{}", hex::encode(bytes))
}

/// One row of `webhooks`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Webhook {
    pub id: String,
    pub url: String,
    pub events: Vec<String>,
    pub secret: String,
    pub description: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewWebhook {
    pub url: String,
    pub events: Vec<String>,
    pub secret: String,
    pub description: Option<String>,
}

/// Fields to change; `None` keeps the stored value.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WebhookPatch {
    pub url: Option<String>,
    pub events: Option<Vec<String>>,
    pub description: Option<Option<String>>,
}

/// One attempt to deliver an event (a row of `webhook_deliveries`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    pub id: String,
    pub event_id: String,
    pub webhook_id: Option<String>,
    pub event_type: String,
    pub url: String,
    /// 1 for the first attempt.
    pub attempt: i64,
    /// The HTTP status, `None` when there was no answer (timeout, connection refused).
    pub status_code: Option<i64>,
    /// `None` when the attempt succeeded.
    pub error: Option<String>,
    pub duration_ms: i64,
    pub at: DateTime<Utc>,
}

/// An outbox row leased to a worker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClaimedEvent {
    pub id: String,
    pub event_type: String,
    pub created_at: DateTime<Utc>,
    /// The exact body to POST.
    pub payload: String,
    pub webhook_id: Option<String>,
    /// Where to POST: the webhook's URL or the status_callback.
    pub url: String,
    /// The webhook's secret; `None` for a status_callback (signed with `webhooks.secret`).
    pub secret: Option<String>,
    pub order_key: Option<String>,
    /// Attempts made before this one.
    pub attempts: i64,
}

/// An outbox row as the store and tests see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboxEvent {
    pub id: String,
    pub event_type: String,
    pub payload: String,
    pub webhook_id: Option<String>,
    pub target: String,
    pub order_key: Option<String>,
    /// `pending`, `delivered` or `failed`.
    pub state: String,
    pub attempts: i64,
    pub next_attempt_at: DateTime<Utc>,
    pub last_error: Option<String>,
}

/// What became of an attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttemptResult {
    pub status_code: Option<u16>,
    /// `None` on success.
    pub error: Option<String>,
    pub duration_ms: i64,
    pub at: DateTime<Utc>,
}

/// What the event does next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NextStep {
    Delivered,
    RetryAt(DateTime<Utc>),
    /// Given up (retried for `webhooks.retry_for_seconds`).
    Failed,
}

/// A webhook's subscription, as cached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subscription {
    pub webhook_id: String,
    pub patterns: Vec<String>,
}

impl Subscription {
    pub fn wants(&self, event_type: &str) -> bool {
        self.patterns.iter().any(|p| pattern_matches(p, event_type))
    }
}

/// Shared by every clone of a [`Store`]: the subscription cache, the calls of this process
/// that have a status_callback (so calls without one cost nothing when nobody subscribes),
/// and the worker's wake-up.
#[derive(Debug, Default)]
pub struct Hooks {
    subscriptions: RwLock<Option<(Instant, Arc<Vec<Subscription>>)>>,
    callback_calls: Mutex<HashSet<String>>,
    notify: Notify,
}

impl Hooks {
    fn invalidate(&self) {
        if let Ok(mut s) = self.subscriptions.write() {
            *s = None;
        }
    }

    /// Calls (of this process) with a status_callback that have not ended.
    pub(crate) fn callback_calls_open(&self) -> bool {
        self.callback_calls
            .lock()
            .map(|s| !s.is_empty())
            .unwrap_or(true)
    }

    pub(crate) fn has_callback(&self, call_id: &str) -> bool {
        self.callback_calls
            .lock()
            .map(|s| s.contains(call_id))
            .unwrap_or(false)
    }

    pub(crate) fn track_callbacks(&self, opened: &[String], ended: &[String]) {
        if opened.is_empty() && ended.is_empty() {
            return;
        }
        if let Ok(mut s) = self.callback_calls.lock() {
            for id in opened {
                s.insert(id.clone());
            }
            for id in ended {
                s.remove(id);
            }
        }
    }
}

#[derive(Serialize)]
struct Envelope<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    event_type: &'a str,
    created_at: &'a str,
    data: &'a serde_json::Value,
}

#[derive(Clone, Debug)]
struct OutboxRow {
    id: String,
    event_type: String,
    payload: String,
    webhook_id: Option<String>,
    target: String,
    order_key: Option<String>,
}

/// Outbox rows being gathered for one transaction.
#[derive(Debug)]
pub(crate) struct Outbox {
    subs: Arc<Vec<Subscription>>,
    rows: Vec<OutboxRow>,
    created_at: String,
}

impl Outbox {
    pub(crate) fn new(subs: Arc<Vec<Subscription>>) -> Outbox {
        Outbox {
            subs,
            rows: Vec::new(),
            created_at: fmt_time(now()),
        }
    }

    /// Does any webhook subscribe to `event_type`?
    pub(crate) fn subscribed(&self, event_type: &str) -> bool {
        self.subs.iter().any(|s| s.wants(event_type))
    }

    /// One row per subscribed webhook, and one for `callback` (a status_callback URL).
    pub(crate) fn push(
        &mut self,
        event_type: &str,
        order_key: Option<&str>,
        data: &serde_json::Value,
        callback: Option<&str>,
    ) {
        let subs = Arc::clone(&self.subs);
        for s in subs.iter().filter(|s| s.wants(event_type)) {
            self.push_to(
                event_type,
                order_key,
                data,
                Some(&s.webhook_id),
                &s.webhook_id,
            );
        }
        if let Some(url) = callback {
            self.push_to(event_type, order_key, data, None, url);
        }
    }

    fn push_to(
        &mut self,
        event_type: &str,
        order_key: Option<&str>,
        data: &serde_json::Value,
        webhook_id: Option<&str>,
        target: &str,
    ) {
        let id = new_id(IdKind::Event);
        let payload = serde_json::to_string(&Envelope {
            id: &id,
            event_type,
            created_at: &self.created_at,
            data,
        })
        .unwrap_or_default();
        self.rows.push(OutboxRow {
            id,
            event_type: event_type.to_owned(),
            payload,
            webhook_id: webhook_id.map(str::to_owned),
            target: target.to_owned(),
            order_key: order_key.map(str::to_owned),
        });
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Insert the rows (a few multi-row statements).
    pub(crate) async fn write(&self, conn: &mut AnyConnection) -> Result<(), StoreError> {
        const PER_ROW: usize = 9;
        for chunk in self.rows.chunks(ROWS_PER_STATEMENT) {
            let values = (0..chunk.len())
                .map(|r| {
                    let p = r * PER_ROW;
                    let cols: Vec<String> = (1..=PER_ROW).map(|i| format!("${}", p + i)).collect();
                    format!("({})", cols.join(", "))
                })
                .collect::<Vec<_>>()
                .join(", ");
            let sql = format!(
                "INSERT INTO webhook_events (id, type, created_at, payload, webhook_id, target, \
                 order_key, next_attempt_at, updated_at) VALUES {values}"
            );
            let mut q = sqlx::query(&sql);
            for r in chunk {
                q = q
                    .bind(r.id.as_str())
                    .bind(r.event_type.as_str())
                    .bind(self.created_at.as_str())
                    .bind(r.payload.as_str())
                    .bind(r.webhook_id.as_deref())
                    .bind(r.target.as_str())
                    .bind(r.order_key.as_deref())
                    .bind(self.created_at.as_str())
                    .bind(self.created_at.as_str());
            }
            q.execute(&mut *conn).await?;
        }
        Ok(())
    }
}

const ROWS_PER_STATEMENT: usize = 64;

const WEBHOOK_COLUMNS: &str = "id, url, events, secret, description, created_at, updated_at";

fn webhook_from_row(row: &AnyRow) -> Result<Webhook, StoreError> {
    let events =
        serde_json::from_str(&get_str(row, "events")?).map_err(|e| StoreError::Corrupt {
            column: "events",
            reason: e.to_string(),
        })?;
    Ok(Webhook {
        id: get_str(row, "id")?,
        url: get_str(row, "url")?,
        events,
        secret: get_str(row, "secret")?,
        description: get_opt_str(row, "description")?,
        created_at: get_time(row, "created_at")?,
        updated_at: get_time(row, "updated_at")?,
    })
}

const DELIVERY_COLUMNS: &str =
    "id, event_id, webhook_id, event_type, url, attempt, status_code, error, duration_ms, at";

fn delivery_from_row(row: &AnyRow) -> Result<Delivery, StoreError> {
    Ok(Delivery {
        id: get_str(row, "id")?,
        event_id: get_str(row, "event_id")?,
        webhook_id: get_opt_str(row, "webhook_id")?,
        event_type: get_str(row, "event_type")?,
        url: get_str(row, "url")?,
        attempt: get_i64(row, "attempt")?,
        status_code: get_opt_i64(row, "status_code")?,
        error: get_opt_str(row, "error")?,
        duration_ms: get_i64(row, "duration_ms")?,
        at: get_time(row, "at")?,
    })
}

const EVENT_COLUMNS: &str = "id, type, payload, webhook_id, target, order_key, state, attempts, \
     next_attempt_at, last_error";

fn outbox_event_from_row(row: &AnyRow) -> Result<OutboxEvent, StoreError> {
    Ok(OutboxEvent {
        id: get_str(row, "id")?,
        event_type: get_str(row, "type")?,
        payload: get_str(row, "payload")?,
        webhook_id: get_opt_str(row, "webhook_id")?,
        target: get_str(row, "target")?,
        order_key: get_opt_str(row, "order_key")?,
        state: get_str(row, "state")?,
        attempts: get_i64(row, "attempts")?,
        next_attempt_at: get_time(row, "next_attempt_at")?,
        last_error: get_opt_str(row, "last_error")?,
    })
}

impl Store {
    /// The webhook subscriptions (cached; see the module docs).
    pub async fn subscriptions(&self) -> Result<Arc<Vec<Subscription>>, StoreError> {
        if let Ok(guard) = self.hooks.subscriptions.read() {
            if let Some((at, subs)) = guard.as_ref() {
                if at.elapsed() < SUBSCRIPTION_TTL {
                    return Ok(Arc::clone(subs));
                }
            }
        }
        let loaded_at = Instant::now();
        let rows = sqlx::query("SELECT id, events FROM webhooks ORDER BY id")
            .fetch_all(&self.pool)
            .await?;
        let mut subs = Vec::with_capacity(rows.len());
        for row in &rows {
            let patterns = serde_json::from_str(&get_str(row, "events")?).map_err(|e| {
                StoreError::Corrupt {
                    column: "events",
                    reason: e.to_string(),
                }
            })?;
            subs.push(Subscription {
                webhook_id: get_str(row, "id")?,
                patterns,
            });
        }
        let subs = Arc::new(subs);
        if let Ok(mut guard) = self.hooks.subscriptions.write() {
            *guard = Some((loaded_at, Arc::clone(&subs)));
        }
        Ok(subs)
    }

    /// Whether a webhook subscribes to `event_type`, from the cached subscriptions: no
    /// query, for callers that must not wait (the call engine's media port). The cache is
    /// refreshed by every batch of call records and by webhook changes; false before its
    /// first load.
    pub fn subscribed_now(&self, event_type: &str) -> bool {
        self.hooks.subscriptions.read().is_ok_and(|g| {
            g.as_ref()
                .is_some_and(|(_, subs)| subs.iter().any(|s| s.wants(event_type)))
        })
    }

    /// Webhooks changed: drop the cached subscriptions and load them at once, so that
    /// `subscribed_now` readers never see "nobody" meanwhile.
    async fn subscriptions_changed(&self) {
        self.hooks.invalidate();
        let _ = self.subscriptions().await;
    }

    /// Wakes the delivery worker: new outbox rows are committed.
    pub fn webhooks_notified(&self) -> impl std::future::Future<Output = ()> + '_ {
        self.hooks.notify.notified()
    }

    pub(crate) fn notify_webhooks(&self) {
        self.hooks.notify.notify_one();
    }

    pub async fn create_webhook(&self, new: &NewWebhook) -> Result<Webhook, StoreError> {
        let t = now();
        let hook = Webhook {
            id: new_id(IdKind::Webhook),
            url: new.url.clone(),
            events: new.events.clone(),
            secret: new.secret.clone(),
            description: new.description.clone(),
            created_at: t,
            updated_at: t,
        };
        sqlx::query(
            "INSERT INTO webhooks (id, url, events, secret, description, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&hook.id)
        .bind(&hook.url)
        .bind(serde_json::to_string(&hook.events).unwrap_or_else(|_| "[]".into()))
        .bind(&hook.secret)
        .bind(&hook.description)
        .bind(fmt_time(t))
        .bind(fmt_time(t))
        .execute(&self.pool)
        .await?;
        self.subscriptions_changed().await;
        Ok(hook)
    }

    pub async fn get_webhook(&self, id: &str) -> Result<Webhook, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or(StoreError::NotFound)?;
        webhook_from_row(&row)
    }

    /// Webhooks in creation order, after the cursor `after`.
    pub async fn list_webhooks(
        &self,
        limit: usize,
        after: Option<&str>,
    ) -> Result<Page<Webhook>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE id > $1 ORDER BY id LIMIT $2"
        ))
        .bind(after.unwrap_or(""))
        .bind(limit_plus_one(limit))
        .fetch_all(&self.pool)
        .await?;
        let hooks = rows
            .iter()
            .map(webhook_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(into_page(hooks, limit, |h| &h.id))
    }

    pub async fn update_webhook(
        &self,
        id: &str,
        patch: &WebhookPatch,
    ) -> Result<Webhook, StoreError> {
        let mut tx = self.begin_write().await?;
        let row = sqlx::query(&format!(
            "SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(StoreError::NotFound)?;
        let mut hook = webhook_from_row(&row)?;
        if let Some(u) = &patch.url {
            hook.url.clone_from(u);
        }
        if let Some(e) = &patch.events {
            hook.events.clone_from(e);
        }
        if let Some(d) = &patch.description {
            hook.description.clone_from(d);
        }
        hook.updated_at = now();
        sqlx::query(
            "UPDATE webhooks SET url = $1, events = $2, description = $3, updated_at = $4 \
             WHERE id = $5",
        )
        .bind(&hook.url)
        .bind(serde_json::to_string(&hook.events).unwrap_or_else(|_| "[]".into()))
        .bind(&hook.description)
        .bind(fmt_time(hook.updated_at))
        .bind(&hook.id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        self.subscriptions_changed().await;
        Ok(hook)
    }

    /// Delete a webhook with its undelivered events and its delivery log.
    pub async fn delete_webhook(&self, id: &str) -> Result<(), StoreError> {
        let n = sqlx::query("DELETE FROM webhooks WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?
            .rows_affected();
        self.subscriptions_changed().await;
        if n == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    /// Attempts to deliver to this webhook, newest first; `after` continues with older ones.
    pub async fn list_webhook_deliveries(
        &self,
        webhook_id: &str,
        limit: usize,
        after: Option<&str>,
    ) -> Result<Page<Delivery>, StoreError> {
        // Ids are never empty strings: no cursor means "below every id".
        let rows = sqlx::query(&format!(
            "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries \
             WHERE webhook_id = $1 AND ($2 = '' OR id < $3) ORDER BY id DESC LIMIT $4"
        ))
        .bind(webhook_id)
        .bind(after.unwrap_or(""))
        .bind(after.unwrap_or(""))
        .bind(limit_plus_one(limit))
        .fetch_all(&self.pool)
        .await?;
        let list = rows
            .iter()
            .map(delivery_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(into_page(list, limit, |d| &d.id))
    }

    /// Queue a `webhook.test` event for this webhook only; returns its event id.
    pub async fn enqueue_test_event(&self, hook: &Webhook) -> Result<String, StoreError> {
        let mut outbox = Outbox::new(Arc::new(Vec::new()));
        let data = serde_json::json!({
            "webhook": hook.id,
            "url": hook.url,
            "message": "This is a test event from voxgate.",
        });
        outbox.push_to(TEST_EVENT, None, &data, Some(&hook.id), &hook.id);
        let id = outbox
            .rows
            .first()
            .map(|r| r.id.clone())
            .unwrap_or_default();
        let mut conn = self.pool.acquire().await?;
        outbox.write(&mut conn).await?;
        self.notify_webhooks();
        Ok(id)
    }

    /// Lease up to `limit` due events to `owner` until `now + lease`. An event is due when
    /// it is `pending`, its next attempt time has come, nobody holds a live lease on it,
    /// and no older event of its chain (same target and order key) is still pending: a
    /// call's events reach each destination in order, each one after the previous was
    /// delivered or given up.
    ///
    /// PostgreSQL: `FOR UPDATE SKIP LOCKED`, so workers of several nodes never lease one
    /// event twice. SQLite: the conditional UPDATE runs under the database's one write
    /// lock, which gives the same guarantee.
    pub async fn claim_webhook_events(
        &self,
        owner: &str,
        now: DateTime<Utc>,
        lease: Duration,
        limit: usize,
    ) -> Result<Vec<ClaimedEvent>, StoreError> {
        let t = fmt_time(now);
        let until = fmt_time(now + chrono::Duration::from_std(lease).unwrap_or_default());
        let lock = match self.backend {
            Backend::Postgres => "FOR UPDATE SKIP LOCKED",
            Backend::Sqlite => "",
        };
        let sql = format!(
            "UPDATE webhook_events SET lease_owner = $1, lease_until = $2 \
             WHERE id IN (SELECT e.id FROM webhook_events e \
               WHERE e.state = 'pending' AND e.next_attempt_at <= $3 \
               AND (e.lease_until IS NULL OR e.lease_until <= $3) \
               AND NOT EXISTS (SELECT 1 FROM webhook_events p WHERE p.state = 'pending' \
                 AND p.target = e.target AND p.order_key = e.order_key AND p.id < e.id) \
               ORDER BY e.id LIMIT $4 {lock}) \
             RETURNING id, type, created_at, payload, webhook_id, target, order_key, attempts"
        );
        let mut tx = self.begin_write().await?;
        let rows = sqlx::query(&sql)
            .bind(owner)
            .bind(&until)
            .bind(&t)
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(&mut *tx)
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        let mut hook_ids: Vec<String> = Vec::new();
        for row in &rows {
            let webhook_id = get_opt_str(row, "webhook_id")?;
            if let Some(w) = &webhook_id {
                if !hook_ids.contains(w) {
                    hook_ids.push(w.clone());
                }
            }
            out.push(ClaimedEvent {
                id: get_str(row, "id")?,
                event_type: get_str(row, "type")?,
                created_at: get_time(row, "created_at")?,
                payload: get_str(row, "payload")?,
                url: if webhook_id.is_some() {
                    String::new()
                } else {
                    get_str(row, "target")?
                },
                webhook_id,
                secret: None,
                order_key: get_opt_str(row, "order_key")?,
                attempts: get_i64(row, "attempts")?,
            });
        }
        if !hook_ids.is_empty() {
            let sql = format!(
                "SELECT id, url, secret FROM webhooks WHERE id IN ({})",
                (1..=hook_ids.len())
                    .map(|i| format!("${i}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            let mut q = sqlx::query(&sql);
            for id in &hook_ids {
                q = q.bind(id.as_str());
            }
            let rows = q.fetch_all(&mut *tx).await?;
            for row in &rows {
                let id = get_str(row, "id")?;
                let url = get_str(row, "url")?;
                let secret = get_str(row, "secret")?;
                for e in out
                    .iter_mut()
                    .filter(|e| e.webhook_id.as_deref() == Some(id.as_str()))
                {
                    e.url.clone_from(&url);
                    e.secret = Some(secret.clone());
                }
            }
        }
        tx.commit().await?;
        // A webhook deleted between the two statements: its rows are gone with it.
        out.retain(|e| e.webhook_id.is_none() || e.secret.is_some());
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    /// Log an attempt and move the event on (delivered, retry later, or failed), in one
    /// transaction. The event changes only while `owner` still holds its lease.
    pub async fn finish_webhook_attempt(
        &self,
        event: &ClaimedEvent,
        owner: &str,
        result: &AttemptResult,
        next: NextStep,
    ) -> Result<(), StoreError> {
        let t = fmt_time(now());
        let (state, next_at) = match next {
            NextStep::Delivered => ("delivered", t.clone()),
            NextStep::RetryAt(at) => ("pending", fmt_time(at)),
            NextStep::Failed => ("failed", t.clone()),
        };
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO webhook_deliveries (id, event_id, webhook_id, event_type, url, attempt, \
             status_code, error, duration_ms, at) \
             VALUES ($1, $2, (SELECT id FROM webhooks WHERE id = $3), $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(new_id(IdKind::Delivery))
        .bind(&event.id)
        .bind(event.webhook_id.as_deref())
        .bind(&event.event_type)
        .bind(&event.url)
        .bind(event.attempts + 1)
        .bind(result.status_code.map(i64::from))
        .bind(result.error.as_deref())
        .bind(result.duration_ms)
        .bind(fmt_time(result.at))
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE webhook_events SET state = $1, attempts = attempts + 1, next_attempt_at = $2, \
             lease_owner = NULL, lease_until = NULL, last_error = $3, updated_at = $4 \
             WHERE id = $5 AND lease_owner = $6",
        )
        .bind(state)
        .bind(&next_at)
        .bind(result.error.as_deref())
        .bind(&t)
        .bind(&event.id)
        .bind(owner)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Delete delivered and failed events last changed before `before`, with their
    /// delivery log; pending events are never deleted. Returns how many were deleted.
    pub async fn prune_webhook_events(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        const CHUNK: i64 = 5000;
        let before = fmt_time(before);
        let mut total = 0;
        loop {
            // In chunks: one huge DELETE would hold SQLite's write lock (and the
            // recorder) for long.
            let n = sqlx::query(
                "DELETE FROM webhook_events WHERE id IN (SELECT id FROM webhook_events \
                 WHERE state <> 'pending' AND updated_at < $1 LIMIT $2)",
            )
            .bind(&before)
            .bind(CHUNK)
            .execute(&self.pool)
            .await?
            .rows_affected();
            total += n;
            if n < u64::try_from(CHUNK).unwrap_or(0) {
                return Ok(total);
            }
        }
    }

    /// The outbox rows (all states) in id order, for tests and diagnostics.
    pub async fn list_outbox(&self) -> Result<Vec<OutboxEvent>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {EVENT_COLUMNS} FROM webhook_events ORDER BY id"
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(outbox_event_from_row).collect()
    }

    /// The earliest `next_attempt_at` after `now` of a pending event, to sleep until.
    pub async fn next_webhook_attempt_at(
        &self,
        now: DateTime<Utc>,
    ) -> Result<Option<DateTime<Utc>>, StoreError> {
        let row = sqlx::query(
            "SELECT MIN(next_attempt_at) AS t FROM webhook_events \
             WHERE state = 'pending' AND next_attempt_at > $1",
        )
        .bind(fmt_time(now))
        .fetch_one(&self.pool)
        .await?;
        get_opt_str(&row, "t")?
            .map(|s| super::parse_time("next_attempt_at", &s))
            .transpose()
    }

    /// The secret status_callback deliveries are signed with when `webhooks.secret` is not
    /// configured: generated on first use and kept in `settings`, so it survives restarts
    /// and every node sharing the database uses the same one.
    ///
    /// Returns the secret and whether this call generated it.
    pub async fn status_callback_secret(&self) -> Result<(String, bool), StoreError> {
        let generated = sqlx::query(
            "INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
        )
        .bind(STATUS_CALLBACK_SECRET_KEY)
        .bind(generate_webhook_secret())
        .execute(&self.pool)
        .await?
        .rows_affected()
            == 1;
        let row = sqlx::query("SELECT value FROM settings WHERE key = $1")
            .bind(STATUS_CALLBACK_SECRET_KEY)
            .fetch_one(&self.pool)
            .await?;
        Ok((get_str(&row, "value")?, generated))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns() {
        assert!(pattern_matches("*", "call.completed"));
        assert!(pattern_matches("call.*", "call.completed"));
        assert!(pattern_matches("call.completed", "call.completed"));
        assert!(!pattern_matches("call.*", "callx.completed"));
        assert!(!pattern_matches("call.answered", "call.completed"));
        assert!(!pattern_matches("agent.*", "call.completed"));
        assert!(!pattern_matches("*", TEST_EVENT));
        assert!(pattern_is_known("*"));
        assert!(pattern_is_known("call.*"));
        assert!(pattern_is_known("agent.state_changed"));
        assert!(!pattern_is_known("calls.*"));
        assert!(!pattern_is_known("call.exploded"));
        assert!(!pattern_is_known("webhook.test"));
        assert!(!pattern_is_known("webhook.*"));
        assert!(!pattern_is_known(""));
    }
}
