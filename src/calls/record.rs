//! Call records as the engine reports them. The engine never waits on the database: it
//! queues [`CallChange`]s, and a worker applies them in order, batched, through
//! `Store::apply_call_changes` (one transaction per batch). A call is in the store from its
//! first INVITE, so a crash leaves it open and the next start closes it as `failed` with
//! hangup cause `gateway-restart` (`Store::close_orphaned_calls`).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::mpsc;

use crate::store::Store;

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
    /// The call's own webhook URL: it gets the call's `call.*` events, signed with
    /// `webhooks.secret` (SPEC §5). `None` for calls the engine creates on its own.
    pub status_callback: Option<String>,
    /// Free JSON from the API caller, shown on the call and in its events.
    pub metadata: Option<serde_json::Value>,
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
    /// A `queued` call (click-to-call, stored by the API) started ringing its first leg.
    CallRinging {
        call_id: String,
        at: DateTime<Utc>,
    },
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
    /// The call goes out (or came in) through this trunk (its id). The trunk may have been
    /// deleted meanwhile: the call then keeps no trunk.
    CallTrunk {
        call_id: String,
        trunk_id: String,
    },
    /// What the call cost at its trunk's rate (`Trunk::cost`): integer micro-units of
    /// `currency` (ISO 4217). Sent once the call has ended; a later one replaces it.
    CallCost {
        call_id: String,
        cost_micros: i64,
        currency: String,
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
    /// What the media side did: recordings and key presses. Rare next to call changes,
    /// so a batch applies them one by one after its call changes (whose rows they
    /// reference), in order.
    Media(MediaChange),
}

/// A recording's life and the digits a call's legs sent.
#[derive(Debug, Clone, PartialEq)]
pub enum MediaChange {
    /// Recording began: its row, status `recording`.
    RecordingStarted(crate::store::NewRecording),
    RecordingPaused {
        id: String,
        paused: bool,
    },
    /// The file is closed: `recording.completed` (or the row is marked failed).
    RecordingEnded {
        id: String,
        end: crate::store::RecordingEnd,
    },
    /// A key press on a leg: `call.dtmf`.
    Dtmf(DtmfPress),
    /// A call program's input attempt: `ivr.input` with `data` as its payload.
    IvrInput {
        call_id: String,
        data: serde_json::Value,
    },
}

/// One key press as `call.dtmf` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DtmfPress {
    pub call_id: String,
    pub leg_id: String,
    /// `0`-`9`, `*`, `#`, `A`-`D`.
    pub digit: char,
    /// `rfc4733`, `info` or `inband`.
    pub source: &'static str,
    /// How long the key had been down when the press was reported.
    pub duration_ms: i64,
    pub at: DateTime<Utc>,
}

/// The most changes written in one transaction.
const MAX_BATCH: usize = 2048;

/// How long the first change of a batch waits for others. Nothing waits on a call
/// record's commit (the API reads what is there), so this costs no call any time.
const LINGER: Duration = Duration::from_millis(100);

/// Queued-but-uncommitted changes above which new calls are shed (SIP 503): enough for
/// minutes of a database outage at hundreds of call set-ups a second (a call is ~6
/// changes), small enough (~tens of MB) that the queue cannot eat the machine.
pub const BACKLOG_BOUND: usize = 100_000;

/// First wait after a write failed for a connection-level reason; doubles up to
/// [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// Longest wait between two attempts while the database is down: how late records land
/// after it returns.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// The recorder's state as the SIP core and the metrics see it: cheap to read from any
/// thread (two atomics), written only by [`run_recorder`].
#[derive(Debug)]
pub struct RecorderHealth {
    /// Changes received from the engine and not yet committed (or dropped as rejected).
    backlog: AtomicUsize,
    /// See [`db_down`](Self::db_down).
    db_down: AtomicBool,
    bound: usize,
}

impl RecorderHealth {
    /// `bound`: the backlog above which [`overloaded`](Self::overloaded) holds.
    pub fn new(bound: usize) -> Arc<RecorderHealth> {
        Arc::new(RecorderHealth {
            backlog: AtomicUsize::new(0),
            db_down: AtomicBool::new(false),
            bound,
        })
    }

    /// Changes waiting to be committed.
    pub fn backlog(&self) -> usize {
        self.backlog.load(Ordering::Relaxed)
    }

    /// The last write attempt failed for a connection-level reason, or the one in flight
    /// has hung for [`STALLED_AFTER`].
    pub fn db_down(&self) -> bool {
        self.db_down.load(Ordering::Relaxed)
    }

    /// The backlog is over its bound: new calls must be refused so that the records of
    /// calls already admitted are never lost.
    pub fn overloaded(&self) -> bool {
        self.backlog() > self.bound
    }

    fn add(&self, n: usize) {
        self.backlog.fetch_add(n, Ordering::Relaxed);
    }

    fn remove(&self, n: usize) {
        self.backlog.fetch_sub(n, Ordering::Relaxed);
    }

    fn set_db_down(&self, down: bool) {
        self.db_down.store(down, Ordering::Relaxed);
    }

    fn publish(&self) {
        metrics::gauge!("voxgate_call_record_backlog").set(self.backlog() as f64);
        metrics::gauge!("voxgate_call_record_db_down").set(if self.db_down() { 1.0 } else { 0.0 });
    }
}

/// How often the gauges are published while a write is in flight.
const PUBLISH_INTERVAL: Duration = Duration::from_secs(1);
/// A write in flight this long counts as the database being down (it is not answering),
/// although the attempt has not failed yet.
const STALLED_AFTER: Duration = Duration::from_secs(2);

/// Applies the engine's queued [`CallChange`]s in order, as a group commit: it takes
/// whatever is queued (up to [`MAX_BATCH`]) and writes it in one transaction. Ends when
/// every sender is dropped and the queue is drained, so a graceful shutdown loses nothing.
///
/// The backlog is counted as changes are queued ([`RecordSender`]) and as batches commit,
/// so `health` tells the truth even while a write hangs on a dead connection.
///
/// A database that cannot be reached is retried forever with capped backoff: a finished
/// call's record is never dropped for an outage. The backlog grows meanwhile, and the SIP
/// core refuses new calls once it passes its bound ([`RecorderHealth::overloaded`]). Only
/// a change the database *rejects* (a constraint violation: an engine bug such as a leg
/// of an unknown call) is dropped: the batch is applied again change by change, so one
/// bad change costs only itself, and it is logged and counted in
/// `voxgate_call_record_dropped_total`. The engine never waits on any of it.
pub async fn run_recorder(store: Store, rx: RecordReceiver, health: Arc<RecorderHealth>) {
    let RecordReceiver(mut rx) = rx;
    let mut batch: Vec<CallChange> = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = rx.recv().await {
        batch.push(first);
        // Group commit: let the rest of this moment's calls queue up (without waking us
        // per change) so one transaction carries them. A transaction per change or two
        // cost ~40 % of the gateway's CPU at 200 call set-ups a second.
        tokio::time::sleep(LINGER).await;
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(c) => batch.push(c),
                Err(_) => break,
            }
        }
        {
            let write = apply(&store, &batch, &health);
            tokio::pin!(write);
            let started = tokio::time::Instant::now();
            let mut tick = tokio::time::interval_at(started + PUBLISH_INTERVAL, PUBLISH_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    biased;
                    () = &mut write => break,
                    // A write can hang (the pool waits for a connection up to its acquire
                    // timeout): keep the gauges true meanwhile.
                    _ = tick.tick() => {
                        if started.elapsed() >= STALLED_AFTER {
                            health.set_db_down(true);
                        }
                        health.publish();
                    }
                }
            }
        }
        health.remove(batch.len());
        batch.clear();
        health.publish();
    }
}

/// The recorder's end of the queue.
#[derive(Debug)]
pub struct RecordReceiver(mpsc::UnboundedReceiver<CallChange>);

/// The engine's end of the recorder's queue: counts every change into the backlog as it
/// is queued, so the backlog is true however far behind the recorder is.
#[derive(Debug, Clone)]
pub struct RecordSender {
    tx: mpsc::UnboundedSender<CallChange>,
    health: Arc<RecorderHealth>,
}

impl RecordSender {
    /// The sender and the receiver [`run_recorder`] drains.
    /// Only through this pair, so every change is counted in and out.
    pub fn channel(health: Arc<RecorderHealth>) -> (RecordSender, RecordReceiver) {
        let (tx, rx) = mpsc::unbounded_channel();
        (RecordSender { tx, health }, RecordReceiver(rx))
    }

    pub fn send(&self, change: CallChange) {
        self.health.add(1);
        // The recorder outlives the core; an error means we are stopping.
        if self.tx.send(change).is_err() {
            self.health.remove(1);
        }
    }
}

/// Writes `batch` until it is committed, or (for a rejected change) dropped.
async fn apply(store: &Store, batch: &[CallChange], health: &RecorderHealth) {
    let mut backoff = FIRST_BACKOFF;
    let mut failures: u32 = 0;
    loop {
        match store.apply_call_changes(batch).await {
            Ok(()) => {
                if failures > 0 {
                    tracing::info!(
                        failures,
                        backlog = health.backlog(),
                        "writing call records again"
                    );
                }
                health.set_db_down(false);
                metrics::counter!("voxgate_call_record_changes_persisted_total")
                    .increment(batch.len() as u64);
                return;
            }
            Err(e) if e.is_rejected() => {
                health.set_db_down(false);
                if batch.len() == 1 {
                    tracing::error!(error = %e, change = ?batch[0], "call record change rejected; dropped");
                    metrics::counter!("voxgate_call_record_dropped_total").increment(1);
                    return;
                }
                tracing::warn!(error = %e, changes = batch.len(), "call record batch rejected; applying one by one");
                for change in batch {
                    Box::pin(apply(store, std::slice::from_ref(change), health)).await;
                }
                return;
            }
            Err(e) => {
                failures += 1;
                health.set_db_down(true);
                health.publish();
                tracing::warn!(
                    error = %e,
                    failures,
                    backlog = health.backlog(),
                    retry_in = ?backoff,
                    "writing call records failed; retrying (nothing is dropped)"
                );
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}
