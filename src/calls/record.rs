//! Call records as the engine reports them. The engine never waits on the database: it
//! queues [`CallChange`]s, and a worker applies them in order, batched, through
//! `Store::apply_call_changes` (one transaction per batch). A call is in the store from its
//! first INVITE, so a crash leaves it open and the next start closes it as `failed` with
//! hangup cause `gateway-restart` (`Store::close_orphaned_calls`).

use chrono::{DateTime, Utc};

/// SPEC §4 call and leg statuses. `queued` is for click-to-call and campaigns (later).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
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
}

/// Which side of a call a leg is (inbound = the leg the call came in on).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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

/// Who ended a call: `caller`, `callee`, `api`, `system`.
pub type HangupBy = &'static str;

#[derive(Debug, Clone, PartialEq)]
pub struct NewCall {
    pub id: String,
    /// `internal` (agent to agent), later `inbound`/`outbound` for trunk calls.
    pub direction: &'static str,
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
