//! Call records as the engine reports them. The engine never waits on the database: it
//! queues [`CallChange`]s, and a worker applies them in order, batched, through
//! `Store::apply_call_changes` (one transaction per batch). A call is in the store from its
//! first INVITE, so a crash leaves it open and the next start closes it as `failed` with
//! hangup cause `gateway-restart` (`Store::close_orphaned_calls`).

use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::mpsc;

use crate::store::{Store, StoreError};

/// SPEC §4 call and leg statuses. `queued` is for click-to-call and campaigns (later).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "kebab-case")]
#[schema(
    description = "`queued`, `ringing` and `in-progress` while the call lasts; the others are final."
)]
pub enum CallStatus {
    Queued,
    Ringing,
    InProgress,
    Completed,
    Busy,
    Failed,
    NoAnswer,
    Canceled,
}

impl CallStatus {
    pub const fn as_str(self) -> &'static str {
        match self {
            CallStatus::Queued => "queued",
            CallStatus::Ringing => "ringing",
            CallStatus::InProgress => "in-progress",
            CallStatus::Completed => "completed",
            CallStatus::Busy => "busy",
            CallStatus::Failed => "failed",
            CallStatus::NoAnswer => "no-answer",
            CallStatus::Canceled => "canceled",
        }
    }

    pub fn is_final(self) -> bool {
        !matches!(
            self,
            CallStatus::Queued | CallStatus::Ringing | CallStatus::InProgress
        )
    }

    /// Every status, open ones first.
    pub const ALL: [CallStatus; 8] = [
        CallStatus::Queued,
        CallStatus::Ringing,
        CallStatus::InProgress,
        CallStatus::Completed,
        CallStatus::Busy,
        CallStatus::Failed,
        CallStatus::NoAnswer,
        CallStatus::Canceled,
    ];
}

impl std::str::FromStr for CallStatus {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        CallStatus::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or(())
    }
}

/// Which side of a call a leg is (inbound = the leg the call came in on).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum LegDirection {
    Inbound,
    Outbound,
}

impl LegDirection {
    pub const fn as_str(self) -> &'static str {
        match self {
            LegDirection::Inbound => "inbound",
            LegDirection::Outbound => "outbound",
        }
    }
}

impl std::str::FromStr for LegDirection {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "inbound" => Ok(LegDirection::Inbound),
            "outbound" => Ok(LegDirection::Outbound),
            _ => Err(()),
        }
    }
}

pub use super::types::{CallDirection, HangupBy};

#[derive(Debug, Clone, PartialEq)]
pub struct NewCall {
    pub id: String,
    pub direction: CallDirection,
    pub from: String,
    pub to: String,
    /// The calling agent, when an agent placed the call.
    pub agent_id: Option<String>,
    pub status: CallStatus,
    pub started_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct NewLeg {
    pub id: String,
    pub call_id: String,
    pub direction: LegDirection,
    /// The agent on this leg, if it is an agent's softphone.
    pub agent_id: Option<String>,
    /// Request-URI (outbound) or From URI (inbound) of the leg.
    pub uri: String,
    /// The SIP Call-ID of the leg's dialog.
    pub sip_call_id: String,
    pub status: CallStatus,
    pub started_at: DateTime<Utc>,
}

/// One change for the store, applied in queue order.
#[derive(Debug, Clone, PartialEq)]
pub enum CallChange {
    CreateCall(NewCall),
    CreateLeg(NewLeg),
    /// A leg or the call was answered.
    CallAnswered {
        call_id: String,
        at: DateTime<Utc>,
    },
    LegStatus {
        leg_id: String,
        status: CallStatus,
        at: DateTime<Utc>,
        /// e.g. "486 Busy Here", "BYE", "CANCEL".
        hangup_cause: Option<String>,
    },
    /// The call ended: final status, `ended_at`, `duration_seconds` (from answer to end,
    /// 0 if never answered), cause and who hung up.
    CallEnded {
        call_id: String,
        status: CallStatus,
        at: DateTime<Utc>,
        duration_seconds: i64,
        hangup_cause: String,
        hangup_by: HangupBy,
    },
}

/// The most changes written in one transaction.
const MAX_BATCH: usize = 257;

/// How often a batch that failed for a connection-level reason is retried.
const RETRIES: u32 = 5;

/// Applies the engine's queued [`CallChange`]s in order, as a group commit: it waits for
/// one change, takes whatever else is queued (up to 256 more) and writes them in one
/// transaction. Ends when every sender is dropped and the queue is drained, so a graceful
/// shutdown loses nothing.
///
/// A batch the database rejects (a constraint violation: an engine bug such as a leg for
/// an unknown call) is applied again change by change, so one bad change costs only
/// itself. A database that stays unreachable through the retries (~6 s) costs the batch.
/// Either loss is logged and counted in `voxgate_call_record_dropped_total`; the engine
/// never waits on any of it.
pub async fn run_recorder(store: Store, mut rx: mpsc::UnboundedReceiver<CallChange>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = rx.recv().await {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(c) => batch.push(c),
                Err(_) => break,
            }
        }
        apply(&store, &batch).await;
        batch.clear();
    }
}

async fn apply(store: &Store, batch: &[CallChange]) {
    let mut attempt = 0;
    loop {
        match store.apply_call_changes(batch).await {
            Ok(()) => {
                metrics::counter!("voxgate_call_record_changes_persisted_total")
                    .increment(batch.len() as u64);
                return;
            }
            Err(e) if is_rejected(&e) => {
                if batch.len() == 1 {
                    tracing::error!(error = %e, change = ?batch[0], "call record change rejected; dropped");
                    metrics::counter!("voxgate_call_record_dropped_total").increment(1);
                    return;
                }
                tracing::warn!(error = %e, changes = batch.len(), "call record batch rejected; applying one by one");
                for change in batch {
                    Box::pin(apply(store, std::slice::from_ref(change))).await;
                }
                return;
            }
            Err(e) if attempt < RETRIES => {
                attempt += 1;
                tracing::warn!(error = %e, attempt, "writing call records failed; retrying");
                tokio::time::sleep(Duration::from_millis(100 << attempt)).await;
            }
            Err(e) => {
                tracing::error!(error = %e, dropped = batch.len(), "giving up writing call records");
                metrics::counter!("voxgate_call_record_dropped_total")
                    .increment(batch.len() as u64);
                return;
            }
        }
    }
}

/// The database refused a change for breaking a constraint (an engine bug such as a leg
/// of an unknown call): retrying the same batch cannot help, unlike a lost connection, a
/// busy database or a serialization failure.
fn is_rejected(e: &StoreError) -> bool {
    match e {
        StoreError::Db(sqlx::Error::Database(db)) => {
            !matches!(db.kind(), sqlx::error::ErrorKind::Other)
        }
        StoreError::Corrupt { .. } | StoreError::Conflict { .. } | StoreError::NotFound => true,
        _ => false,
    }
}
