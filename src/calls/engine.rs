//! The call engine (SPEC §2, DESIGN.md "Calls: channels, bridges, verbs"), a sans-IO state
//! machine in the shape of quinn-proto and str0m.
//!
//! - A **channel** is one SIP dialog leg: a UAS channel for an INVITE voxgate received, a
//!   UAC channel for one voxgate sent. Each has its own dialog, SDP side and media side.
//!   voxgate can answer a UAS channel itself ([`Command::Answer`], [`Route::Answer`]) with
//!   its own SDP answer, or bridge it.
//! - A **dial** rings one or more UAC channels at once on behalf of a call (today: the
//!   registered contacts of an agent, for the caller's UAS channel). The first 2xx wins,
//!   the others are cancelled; every fork carries the dial's ring deadline.
//! - A **bridge** joins two channels' media (the relay, kernel fast path included) and
//!   relays in-dialog offers between them (re-INVITE, UPDATE: hold, resume, codec change).
//!
//! Inputs: `on_invite`/`on_response`/`on_cancel`/`on_ack`/`on_in_dialog`/`on_client_failure`
//! (SIP, from the transaction layer), [`CallEngine::handle_command`], and
//! [`CallEngine::handle_timeout`]. Outputs: SIP through the sans-IO transaction layer it is
//! handed, media through the [`MediaPort`] interface (never blocking), call records and
//! events from [`CallEngine::poll_output`]. The clock (`now`, and wall time anchored to it),
//! randomness (a seeded generator) and ids are the engine's inputs, so tests run it on a
//! virtual clock with simulated phones (`tests.rs`).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use voxgate_sip::dialog::session_timer::{
    negotiate_uas, Refresher, SessionTimer, SessionTimerConfig, SessionTimerEvent, UasDecision,
};
use voxgate_sip::dialog::{
    AckCache, AckWait, AckWaitEvent, Branch, Dialog, DialogId, Dialogs, InDialogRequest, LocalVia,
    UacInviteOutcome,
};
use voxgate_sip::message::{Message, MessageBuilder, Method, SipUri};
use voxgate_sip::sdp::{
    answer_offer, forward_offer, Codec as SdpCodec, Direction, LegMedia, LegSdp, LocalMedia,
    LocalSession, NegotiationError, PayloadMap, PendingOffer, PtTranslation, SdpConfig,
    SessionDescription,
};
use voxgate_sip::transaction::{ClientTxId, Peer, ServerTxId, TransactionLayer, Transport};

use super::control::ControlError;
use super::control::RecordingAction;
use super::env::{Caller, Clock, Credentials, Directory, MediaPort, Route, Target, TrunkDial};
use super::env::{PromptPlay, RecordingStart};
use super::pacer::Pacer;
use super::record::{
    CallChange, CallStatus, DtmfPress, LegDirection, MediaChange, NewCall, NewLeg,
};
use super::types::{AgentId, CallDirection, CallId, HangupBy, LegId};
use crate::ids::{IdGen, IdKind};
use crate::media::ListenEvent;
use crate::media::{Digit, DtmfMethod};
use crate::media::{LegRemote, MediaDirection, PtMap, SessionId, Side};
use crate::registrar::Reply;
use crate::store::{NewRecording, RecordingChannels};
use voxgate_media::codec::Codec as MediaCodec;
use voxgate_media::dtmf::info::{InfoBody, InfoContentType};
use voxgate_media::dtmf::DtmfSource;
use voxgate_media::listen::ListenConfig;
use voxgate_media::tone::{Law, TonePlayer, ToneSpec};
use voxgate_media::transcode::TranscodeSpec;
use voxgate_media::ClockRate;

mod outbound;
mod program;

const ALLOW: &str = "INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE, INFO, REGISTER";

/// Session timers on the caller's leg (RFC 4028): the caller's request decides; 1800 s at
/// most, Min-SE 90 s, the caller refreshes when it supports the extension.
const SESSION_TIMER: SessionTimerConfig = SessionTimerConfig {
    interval: 1800,
    min_se: 90,
    impose: false,
    prefer: Refresher::Uac,
};

/// What the engine needs to know about itself.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Written into Via, Contact and SDP.
    pub public_ip: IpAddr,
    /// The UDP/TCP port, written into Via and Contact of legs on those transports.
    pub sip_port: u16,
    /// The TLS listener's port (`sip.listen_tls`), for Via and Contact of TLS legs; without
    /// a listener TLS legs show `sip_port` (their requests still go over the connection).
    pub tls_port: Option<u16>,
    pub sdp: SdpConfig,
    /// How long a dial rings before its forks are cancelled (the caller gets 480).
    pub ring_timeout: Duration,
}

/// The codecs voxgate's calls use: the relay carries all of them between legs that
/// share one, the media engine decodes and encodes each (recording, DTMF, prompts) and
/// transcodes between legs that share none. G.711 first: every carrier has it, and it
/// costs nothing to record.
#[must_use]
pub fn sdp_config() -> SdpConfig {
    let voice = [
        SdpCodec::pcmu(),
        SdpCodec::pcma(),
        SdpCodec::new("G722", 8000, 1),
        SdpCodec::new("opus", 48_000, 2),
    ];
    let events = [
        SdpCodec::telephone_event(),
        SdpCodec {
            clock_rate: 48_000,
            ..SdpCodec::telephone_event()
        },
    ];
    SdpConfig {
        codecs: voice.iter().chain(&events).cloned().collect(),
        transcode: voice.to_vec(),
        ..SdpConfig::default()
    }
}

impl EngineConfig {
    /// Our Via for requests sent over `transport`.
    pub(crate) fn via(&self, transport: Transport) -> LocalVia {
        LocalVia::new(
            transport,
            format!("{}:{}", host(self.public_ip), self.port(transport)),
        )
    }

    /// The port a peer reaches us on over `transport` (RFC 3261 §18.2.1: the Via sent-by
    /// and the Contact must name where responses and new requests can come back).
    fn port(&self, transport: Transport) -> u16 {
        match (transport, self.tls_port) {
            (Transport::Tls, Some(p)) => p,
            _ => self.sip_port,
        }
    }

    /// Our Contact URI for dialogs over `transport`.
    fn contact(&self, transport: Transport) -> String {
        let t = match transport {
            Transport::Udp => "",
            Transport::Tcp => ";transport=tcp",
            Transport::Tls => ";transport=tls",
            Transport::Ws => ";transport=ws",
            Transport::Wss => ";transport=wss",
        };
        format!(
            "sip:voxgate@{}:{}{t}",
            host(self.public_ip),
            self.port(transport)
        )
    }
}

/// A command from the control API (or, later, a call program).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// End the call: BYE to answered channels, CANCEL to ringing ones, 487 to an
    /// unanswered caller; recorded with `hangup_by = "api"`.
    Hangup { call: CallId },
    /// voxgate answers a ringing UAS channel itself, with its own SDP answer.
    Answer { leg: LegId },
    /// Click-to-call: see [`Originate`].
    Originate(Box<Originate>),
}

/// Click-to-call (SPEC §4 `POST /v1/calls` with `agent` and `to`): ring the agent's
/// phones with voxgate's own offer; when one answers, dial `to` through `trunk` with the
/// codec the agent's phone chose, and bridge the two when the lead answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Originate {
    /// The call's id: the API has stored the call (`queued`) before asking.
    pub call: CallId,
    /// The agent's id or username.
    pub agent: String,
    /// The lead's number (E.164).
    pub to: String,
    /// The trunk's id or name.
    pub trunk: String,
    /// Shown to the lead (the trunk's own caller ID when absent).
    pub caller_id: Option<String>,
    /// How long each side rings (the engine's default when absent).
    pub ring_timeout: Option<Duration>,
    /// The longest the call may last once bridged.
    pub time_limit: Option<Duration>,
    /// Record from the lead's answer (`record: true`), with these channels.
    pub record: Option<RecordingChannels>,
    /// Listen to the call for key presses even when no webhook subscribes to `call.dtmf`:
    /// the call's own `status_callback` gets them (SPEC §5: its `call.*` events).
    pub listen: bool,
}

/// A change in a call's life, for whoever reports it (webhooks, later).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallEvent {
    Ringing { call: CallId },
    Answered { call: CallId },
    Ended { call: CallId, status: CallStatus },
}

/// What the engine hands back to its driver.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// A change for the call-record store, in order.
    Record(CallChange),
    Event(CallEvent),
    /// voxgate sent the 2xx that set up the inbound channel with this SIP Call-ID (the
    /// driver times the set-up from the call's first INVITE, 407 round trip included).
    Answered {
        sip_call_id: String,
    },
    /// A call program's HTTP request (a `redirect`): send it off the SIP loop, and hand
    /// the reply to [`CallEngine::on_program_reply`].
    ProgramRequest(super::fetch::ProgramRequest),
}

/// The UAS half of a channel: an INVITE voxgate received.
struct Uas {
    tx: ServerTxId,
    invite: Message,
    local_tag: String,
    /// Our 2xx, retransmitted until the ACK (RFC 3261 §13.3.1.4).
    ack_wait: Option<AckWait>,
    /// RFC 4028, when the caller asked for a session timer.
    session: Option<UasDecision>,
    timer: Option<SessionTimer>,
}

/// The UAC half of a channel: an INVITE voxgate sent.
struct Uac {
    tx: ClientTxId,
    invite: Message,
    /// Our ACK for the 2xx, resent when the 2xx is retransmitted.
    ack_cache: Option<AckCache>,
    /// CANCEL sent (or to be sent when a provisional arrives, RFC 3261 §9.1).
    canceled: bool,
    /// When the dial gives up on this fork.
    ring_deadline: Option<Instant>,
    /// A carrier's credentials, for its 401/407 (answered once: a second challenge fails).
    auth: Option<Credentials>,
    authed: bool,
    /// Where to try next when this target times out or fails at the transport
    /// (RFC 3263 §4.3): the trunk's other addresses.
    fallback: Vec<Peer>,
}

enum Role {
    Uas(Box<Uas>),
    Uac(Box<Uac>),
}

/// One SIP dialog leg of a call.
struct Channel {
    id: LegId,
    call: CallId,
    peer: Peer,
    dialog: Option<DialogId>,
    /// Its side of the call's media session (and of the call's SDP state).
    side: Side,
    /// `ringing` until answered; a fork's final outcome once it failed.
    status: CallStatus,
    role: Role,
    /// The call's time limit, kept on the channel that carries it.
    hangup_at: Option<Instant>,
    /// Key presses waiting to go to this channel's remote by SIP INFO, one at a time.
    info_keys: Option<Box<InfoKeys>>,
}

/// Key presses for a channel whose remote takes them by INFO: sent one per
/// [`INFO_KEY_GAP`], so the phone sees presses, not a burst of overlapping requests.
struct InfoKeys {
    waiting: VecDeque<Digit>,
    /// When the next one may go.
    next: Instant,
}

impl Channel {
    fn uas(&self) -> Option<&Uas> {
        match &self.role {
            Role::Uas(u) => Some(u),
            Role::Uac(_) => None,
        }
    }

    fn uas_mut(&mut self) -> Option<&mut Uas> {
        match &mut self.role {
            Role::Uas(u) => Some(u),
            Role::Uac(_) => None,
        }
    }

    fn uac_mut(&mut self) -> Option<&mut Uac> {
        match &mut self.role {
            Role::Uac(u) => Some(u),
            Role::Uas(_) => None,
        }
    }

    fn is_ringing(&self) -> bool {
        self.status == CallStatus::Ringing
    }

    /// The earliest of this channel's timers.
    fn next_timeout(&self) -> Option<Instant> {
        match &self.role {
            Role::Uas(u) => [
                u.ack_wait.as_ref().and_then(AckWait::poll_timeout),
                u.timer.as_ref().and_then(SessionTimer::poll_timeout),
                self.hangup_at,
                self.info_keys.as_ref().map(|k| k.next),
            ]
            .into_iter()
            .flatten()
            .min(),
            Role::Uac(u) => [
                u.ack_cache.as_ref().map(AckCache::poll_timeout),
                u.ring_deadline.filter(|_| self.is_ringing() && !u.canceled),
                self.hangup_at,
                self.info_keys.as_ref().map(|k| k.next),
            ]
            .into_iter()
            .flatten()
            .min(),
        }
    }
}

/// Forks ringing on behalf of a call.
struct Dial {
    /// The channel waiting for the outcome: a caller's UAS channel, or the agent's
    /// answered channel of a click-to-call. Absent while voxgate rings the agent.
    origin: Option<LegId>,
    forks: Vec<LegId>,
    /// The side of the call's media the forks are on.
    side: Side,
    offer: DialOffer,
}

/// What the forks were offered, waiting for the winner's answer.
enum DialOffer {
    /// The origin's offer, forwarded: the winner's answer becomes the origin's answer.
    Forwarded(PendingOffer),
    /// voxgate's own offer (it originates): the answer only sets up the forks' side.
    Own(PendingOffer),
}

/// One INVITE a dial sends: where, and how it may be retried.
struct Fork {
    uri: String,
    peer: Peer,
    fallback: Vec<Peer>,
    auth: Option<Credentials>,
}

impl From<&Target> for Fork {
    fn from(t: &Target) -> Fork {
        Fork {
            uri: t.uri.clone(),
            peer: t.peer,
            fallback: Vec::new(),
            auth: None,
        }
    }
}

/// A dial to a trunk waiting for its limits (`max_cps`, `max_calls_per_minute`, a free
/// slot of `max_concurrent_calls`): sent in order when they allow.
struct HeldDial {
    call: CallId,
    origin: Option<LegId>,
    parties: Parties,
    forks: Vec<Fork>,
    side: Side,
    sdp: SessionDescription,
    offer: DialOffer,
    /// The call already holds a slot on the trunk (click-to-call takes it when it starts).
    has_slot: bool,
}

/// One trunk's pacer and the work waiting for it, in arrival order.
#[derive(Default)]
struct TrunkQueue {
    pacer: Pacer,
    dials: VecDeque<HeldDial>,
    /// Click-to-calls waiting for a slot (still `queued`).
    starts: VecDeque<Originate>,
}

/// Who a dial's INVITEs say is calling whom, and the agent the forks ring (if any).
struct Parties {
    /// From URI (our tag is added).
    from: String,
    /// To URI.
    to: String,
    agent: Option<AgentId>,
}

/// A fork of an ended call whose INVITE transaction is still alive.
struct Orphan {
    invite: Message,
    peer: Peer,
}

/// Two channels whose media and in-dialog offers are joined.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Bridge {
    a: LegId,
    b: LegId,
}

impl Bridge {
    fn other(&self, leg: &LegId) -> Option<&LegId> {
        if *leg == self.a {
            Some(&self.b)
        } else if *leg == self.b {
            Some(&self.a)
        } else {
            None
        }
    }
}

/// A re-INVITE or UPDATE with an offer, relayed from one bridged channel to the other.
struct Renegotiation {
    from: LegId,
    server_tx: ServerTxId,
    request: Message,
    client_tx: ClientTxId,
    client_request: Message,
    pending: PendingOffer,
}

struct Call {
    id: CallId,
    /// The call program running on the caller's channel (an IVR flow), if any.
    program: Option<Box<program::Running>>,
    /// Agents this call counts against (`max_concurrent_calls`).
    agents: Vec<AgentId>,
    /// Every channel, in creation order; the first is the one the call came in on.
    channels: Vec<LegId>,
    dial: Option<Dial>,
    bridge: Option<Bridge>,
    media: SessionId,
    /// voxgate's SDP state towards side A and side B.
    sdp: [LegSdp; 2],
    answered_at: Option<DateTime<Utc>>,
    renegotiation: Option<Renegotiation>,
    /// Click-to-call: the lead, dialled once the agent answers.
    lead: Option<Box<super::env::TrunkDial>>,
    /// How long this call's dials ring.
    ring_timeout: Duration,
    /// Click-to-call's `time_limit_seconds`, from the bridge.
    time_limit: Option<Duration>,
    /// The trunk this call holds a slot on (released when it ends).
    trunk: Option<String>,
    /// The rate of the trunk its outbound leg went through: what it costs once ended.
    rate: Option<crate::trunks::cost::Rate>,
    /// voxgate plays ringback to side A (a click-to-call's agent while the lead rings).
    ringback: bool,
    /// The agent's side: the left channel of a dual recording (B on a carrier's call).
    internal: Side,
    /// Record from the answer on (`record: true`).
    record: Option<RecordingChannels>,
    /// The live recording, if any.
    recording: Option<LiveRecording>,
    /// Sides whose remote has sent key presses by SIP INFO: relayed presses reach them
    /// by INFO too unless they negotiated telephone-event.
    info_dtmf: [bool; 2],
}

/// A call's recording while it runs.
struct LiveRecording {
    id: String,
    paused: bool,
}

impl Call {
    fn sdp_mut(&mut self, side: Side) -> &mut LegSdp {
        &mut self.sdp[side_index(side)]
    }

    /// Both sides' SDP, the given side first.
    fn sdp_pair(&mut self, first: Side) -> (&mut LegSdp, &mut LegSdp) {
        let [a, b] = &mut self.sdp;
        match first {
            Side::A => (a, b),
            Side::B => (b, a),
        }
    }

    fn answered(&self) -> bool {
        self.answered_at.is_some()
    }

    /// A dialled channel's answer (side B) to the dial's offer: the answer for side A
    /// (`None` for voxgate's own offer: side A has its media already).
    fn answer_dial(
        &mut self,
        cfg: &SdpConfig,
        answer: &SessionDescription,
    ) -> Option<Result<Option<SessionDescription>, NegotiationError>> {
        let Call { dial, sdp, .. } = self;
        let dial = dial.as_ref()?;
        let [a, b] = sdp;
        let (forks, other) = match dial.side {
            Side::A => (a, b),
            Side::B => (b, a),
        };
        Some(match &dial.offer {
            DialOffer::Forwarded(p) => p.answer(cfg, answer, forks, other).map(Some),
            DialOffer::Own(p) => p.accept(cfg, answer, forks).map(|()| None),
        })
    }
}

fn side_index(side: Side) -> usize {
    match side {
        Side::A => 0,
        Side::B => 1,
    }
}

/// How a call ends: status, cause and who, and what an unanswered caller is told.
struct Ending<'a> {
    status: CallStatus,
    cause: &'a str,
    by: HangupBy,
    reply: Option<(u16, &'static str)>,
}

pub struct CallEngine {
    cfg: EngineConfig,
    media: Box<dyn MediaPort + Send>,
    dialogs: Dialogs,
    calls: HashMap<CallId, Call>,
    channels: HashMap<LegId, Channel>,
    by_server_tx: HashMap<ServerTxId, LegId>,
    /// Each call's media session, for what the media side reports.
    by_session: HashMap<SessionId, CallId>,
    /// The last token given to a playback a call program waits for.
    next_tag: u64,
    by_client_tx: HashMap<ClientTxId, LegId>,
    by_dialog: HashMap<DialogId, LegId>,
    /// Forks of ended calls until their INVITE transaction ends (bounded by Timer B/D).
    orphans: HashMap<ClientTxId, Orphan>,
    /// Live calls per agent, for `max_concurrent_calls`.
    active: HashMap<AgentId, usize>,
    output: VecDeque<Output>,
    /// Channel timers, earliest first; an entry may be stale (the channel is gone or its
    /// timer moved): it is checked against the channel when it comes due.
    timers: BinaryHeap<Reverse<(Instant, LegId)>>,
    /// Trunks' pacers and queues, by trunk id.
    trunks: HashMap<String, TrunkQueue>,
    /// A trunk slot was freed: its queue is served at the next timeout (now).
    wake: Option<Instant>,
    clock: Clock,
    rng: StdRng,
    ids: IdGen,
    draining: bool,
}

impl CallEngine {
    /// `clock` anchors wall time to the monotonic clock the engine is driven with; `seed`
    /// seeds every random value it draws (tags, branches, Call-IDs, nonces, ids).
    pub fn new(
        cfg: EngineConfig,
        media: Box<dyn MediaPort + Send>,
        clock: Clock,
        seed: u64,
    ) -> CallEngine {
        CallEngine {
            cfg,
            media,
            dialogs: Dialogs::new(),
            calls: HashMap::new(),
            channels: HashMap::new(),
            by_server_tx: HashMap::new(),
            by_session: HashMap::new(),
            next_tag: 0,
            by_client_tx: HashMap::new(),
            by_dialog: HashMap::new(),
            orphans: HashMap::new(),
            active: HashMap::new(),
            output: VecDeque::new(),
            timers: BinaryHeap::new(),
            trunks: HashMap::new(),
            wake: None,
            clock,
            rng: StdRng::seed_from_u64(seed),
            ids: IdGen::default(),
            draining: false,
        }
    }

    /// Re-anchors wall time (the driver calls it now and then, to follow NTP).
    pub fn set_clock(&mut self, clock: Clock) {
        self.clock = clock;
    }

    pub fn active_calls(&self) -> usize {
        self.calls.len()
    }

    /// Channels held (a metric and a test invariant: it must come back to 0).
    pub fn channel_count(&self) -> usize {
        self.channels.len()
    }

    /// Forks of ended calls still waiting for their INVITE transaction to end.
    pub fn orphan_count(&self) -> usize {
        self.orphans.len()
    }

    /// Dialogs held, early ones included (a metric: it must come back to 0).
    pub fn dialog_count(&self) -> usize {
        self.dialogs.len()
    }

    /// Is this server transaction the INVITE of a live channel (for CANCEL)?
    pub fn knows_invite(&self, tx: ServerTxId) -> bool {
        self.by_server_tx.contains_key(&tx)
    }

    /// The next record, event or measurement for the driver.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.output.pop_front()
    }

    /// New INVITEs get 503 from now on (SIGTERM, SPEC §1).
    pub fn start_draining(&mut self) {
        self.draining = true;
    }

    /// Ends every call (end of the shutdown grace period).
    pub fn hangup_all(&mut self, layer: &mut TransactionLayer, now: Instant) {
        let ids: Vec<CallId> = self.calls.keys().cloned().collect();
        for id in ids {
            let answered = self.calls.get(&id).is_some_and(Call::answered);
            let ending = if answered {
                Ending {
                    status: CallStatus::Completed,
                    cause: "gateway shutdown",
                    by: HangupBy::System,
                    reply: None,
                }
            } else {
                Ending {
                    status: CallStatus::Canceled,
                    cause: "gateway shutdown",
                    by: HangupBy::System,
                    reply: Some((503, "Service Unavailable")),
                }
            };
            self.end_call(layer, &id, &ending, now);
        }
    }

    /// A command from the API.
    pub fn handle_command(
        &mut self,
        layer: &mut TransactionLayer,
        directory: &mut dyn Directory,
        cmd: Command,
        now: Instant,
    ) -> Result<(), ControlError> {
        match cmd {
            Command::Hangup { call } => {
                let Some(c) = self.calls.get(&call) else {
                    return Err(ControlError::NotFound);
                };
                let ending = if c.answered() {
                    Ending {
                        status: CallStatus::Completed,
                        cause: "api hangup",
                        by: HangupBy::Api,
                        reply: None,
                    }
                } else {
                    Ending {
                        status: CallStatus::Canceled,
                        cause: "api hangup",
                        by: HangupBy::Api,
                        reply: Some((487, "Request Terminated")),
                    }
                };
                self.end_call(layer, &call, &ending, now);
                Ok(())
            }
            Command::Answer { leg } => self.answer_locally(layer, &leg, now),
            Command::Originate(o) => {
                self.originate(layer, directory, *o, now);
                Ok(())
            }
        }
    }

    /// `POST /v1/calls/{id}/recording`: start, pause, resume or stop; the recording's id.
    pub fn recording(
        &mut self,
        call_id: &CallId,
        action: RecordingAction,
        now: Instant,
    ) -> Result<String, ControlError> {
        let Some(call) = self.calls.get_mut(call_id) else {
            return Err(ControlError::NotFound);
        };
        match action {
            RecordingAction::Start(channels) => self.start_recording(call_id, channels, now),
            RecordingAction::Pause | RecordingAction::Resume => {
                let paused = action == RecordingAction::Pause;
                let Some(rec) = call.recording.as_mut() else {
                    return Err(ControlError::Conflict);
                };
                let id = rec.id.clone();
                if rec.paused != paused {
                    rec.paused = paused;
                    self.media.pause_recording(call.media, paused);
                    self.emit(CallChange::Media(MediaChange::RecordingPaused {
                        id: id.clone(),
                        paused,
                    }));
                }
                Ok(id)
            }
            RecordingAction::Stop => {
                let Some(rec) = call.recording.take() else {
                    return Err(ControlError::Conflict);
                };
                self.media.stop_recording(call.media);
                Ok(rec.id)
            }
        }
    }

    /// The answered sides of a call a command targets: `leg`'s, or (when `None`) every
    /// answered side. `NotFound` for a leg not in the call, `Conflict` for a call (or leg)
    /// not answered yet.
    fn target_sides(
        &self,
        call_id: &CallId,
        leg: Option<&LegId>,
    ) -> Result<(SessionId, Vec<(Side, LegId)>), ControlError> {
        let call = self.calls.get(call_id).ok_or(ControlError::NotFound)?;
        if !call.answered() {
            return Err(ControlError::Conflict);
        }
        let answered: Vec<(Side, LegId)> = call
            .channels
            .iter()
            .filter_map(|l| self.channels.get(l))
            .filter(|c| c.status == CallStatus::InProgress)
            .filter(|c| call.sdp[side_index(c.side)].media.is_some())
            .map(|c| (c.side, c.id.clone()))
            .collect();
        match leg {
            None => Ok((call.media, answered)),
            Some(l) => match answered.into_iter().find(|(_, id)| id == l) {
                Some(x) => Ok((call.media, vec![x])),
                None if call.channels.contains(l) => Err(ControlError::Conflict),
                None => Err(ControlError::NotFound),
            },
        }
    }

    /// `POST /v1/calls/{id}/play`: the prompt replaces what the leg(s) hear until it
    /// ends, in each leg's own codec.
    pub fn play(
        &mut self,
        call_id: &CallId,
        leg: Option<&LegId>,
        play: super::control::PlayPrompt,
    ) -> Result<Vec<LegId>, ControlError> {
        let (session, sides) = self.target_sides(call_id, leg)?;
        let mut played = Vec::new();
        for (side, leg) in sides {
            let Some(call) = self.calls.get(call_id) else {
                break;
            };
            let Some(m) = &call.sdp[side_index(side)].media else {
                continue;
            };
            let Some((payload_type, codec)) = audio_codec(m) else {
                continue;
            };
            let req = PromptPlay {
                prompt: play.prompt.clone(),
                codec,
                payload_type,
                loops: play.loops,
                tag: None,
            };
            if self.media.play(session, side, req) {
                played.push(leg);
            }
        }
        if played.is_empty() {
            return Err(ControlError::Unavailable);
        }
        Ok(played)
    }

    /// `POST /v1/calls/{id}/dtmf`: digits to a leg (by default the one that is not the
    /// agent's), as RFC 4733 events when its SDP has `telephone-event`, else as tones.
    pub fn send_digits(
        &mut self,
        layer: &mut TransactionLayer,
        call_id: &CallId,
        leg: Option<&LegId>,
        digits: Vec<Digit>,
        now: Instant,
    ) -> Result<LegId, ControlError> {
        let (session, sides) = self.target_sides(call_id, leg)?;
        let Some(call) = self.calls.get(call_id) else {
            return Err(ControlError::NotFound);
        };
        let external = match call.internal {
            Side::A => Side::B,
            Side::B => Side::A,
        };
        let Some((side, leg)) = sides
            .iter()
            .find(|(s, _)| leg.is_some() || *s == external)
            .cloned()
        else {
            return Err(ControlError::Conflict);
        };
        let Some(m) = &call.sdp[side_index(side)].media else {
            return Err(ControlError::Conflict);
        };
        let method = match relay_method(m, call.info_dtmf[side_index(side)]) {
            Relay::Media(method) => method,
            Relay::Info => {
                self.info_keys(layer, &leg, &digits, now);
                return Ok(leg);
            }
        };
        if self.media.send_dtmf(session, side, digits, method) {
            Ok(leg)
        } else {
            Err(ControlError::Unavailable)
        }
    }

    /// Starts recording a bridged call (both sides' media negotiated).
    fn start_recording(
        &mut self,
        call_id: &CallId,
        channels: RecordingChannels,
        now: Instant,
    ) -> Result<String, ControlError> {
        let wall = self.wall(now);
        let id = self.new_id(IdKind::Recording, now);
        let Some(call) = self.calls.get_mut(call_id) else {
            return Err(ControlError::NotFound);
        };
        // Bridged, or a caller answered by voxgate (a call program's voicemail).
        let bridged = call.answered() && call.sdp.iter().all(|s| s.media.is_some());
        let alone = call.answered() && call.program.is_some() && call.sdp[0].media.is_some();
        if !(bridged || alone) || call.recording.is_some() {
            return Err(ControlError::Conflict);
        }
        let rate = recording_rate(call);
        let start = RecordingStart {
            id: id.clone(),
            channels,
            internal: call.internal,
            rate,
            started_at: wall,
        };
        if !self.media.start_recording(call.media, start) {
            return Err(ControlError::Unavailable);
        }
        call.recording = Some(LiveRecording {
            id: id.clone(),
            paused: false,
        });
        let agent_id = call.agents.first().map(ToString::to_string);
        self.emit(CallChange::Media(MediaChange::RecordingStarted(
            NewRecording {
                id: id.clone(),
                call_id: call_id.to_string(),
                agent_id,
                channels,
                sample_rate: rate,
                started_at: wall,
            },
        )));
        Ok(id)
    }

    /// A key press the media side heard on one of a call's legs: `call.dtmf`.
    pub fn on_dtmf(
        &mut self,
        layer: &mut TransactionLayer,
        directory: &mut dyn Directory,
        press: ListenEvent,
        now: Instant,
    ) {
        let Some(call_id) = self.by_session.get(&press.session).cloned() else {
            return;
        };
        let Some(call) = self.calls.get(&call_id) else {
            return;
        };
        // The answered channel on that side (a ringing fork sends no media we tap).
        let Some(leg) = self.answered_on(call, press.side).map(|c| c.id.to_string()) else {
            return;
        };
        let wall = self.wall(now);
        self.emit(CallChange::Media(MediaChange::Dtmf(DtmfPress {
            call_id: call_id.to_string(),
            leg_id: leg,
            digit: press.event.digit.as_char(),
            source: match press.event.source {
                DtmfSource::Rfc4733 => "rfc4733",
                DtmfSource::Info => "info",
                DtmfSource::InBand => "inband",
            },
            duration_ms: i64::try_from(press.event.duration.as_millis()).unwrap_or(i64::MAX),
            at: wall,
        })));
        // Relay the press to the other leg where the relay cannot: an INFO is answered
        // here and goes no further, and telephone-events reach only a leg that
        // negotiated them (tones in the audio pass through as they are).
        let Some(call) = self.calls.get(&call_id) else {
            return;
        };
        if call.program.is_some() && call.bridge.is_none() {
            let digit = press.event.digit.as_char();
            self.program_digit(layer, directory, &call_id, press.side, digit, now);
            return;
        }
        if call.bridge.is_none() {
            return;
        }
        let other = match press.side {
            Side::A => Side::B,
            Side::B => Side::A,
        };
        let Some(m) = &call.sdp[side_index(other)].media else {
            return;
        };
        let method = relay_method(m, call.info_dtmf[side_index(other)]);
        let relay = match press.event.source {
            DtmfSource::Info => true,
            DtmfSource::Rfc4733 => !matches!(method, Relay::Media(DtmfMethod::Rfc4733 { .. })),
            DtmfSource::InBand => false,
        };
        match (relay, method) {
            (false, _) => {}
            (true, Relay::Media(method)) => {
                let session = call.media;
                self.media
                    .send_dtmf(session, other, vec![press.event.digit], method);
            }
            (true, Relay::Info) => {
                if let Some(leg) = self.answered_on(call, other).map(|c| c.id.clone()) {
                    self.info_keys(layer, &leg, &[press.event.digit], now);
                }
            }
        }
    }

    /// `call`'s answered channel on `side`.
    fn answered_on(&self, call: &Call, side: Side) -> Option<&Channel> {
        call.channels
            .iter()
            .filter_map(|l| self.channels.get(l))
            .find(|c| c.side == side && c.status == CallStatus::InProgress)
    }

    /// Queues `digits` for `leg`'s remote by INFO; the first goes now unless one went
    /// less than [`INFO_KEY_GAP`] ago.
    fn info_keys(
        &mut self,
        layer: &mut TransactionLayer,
        leg: &LegId,
        digits: &[Digit],
        now: Instant,
    ) {
        let Some(channel) = self.channels.get_mut(leg) else {
            return;
        };
        let keys = channel.info_keys.get_or_insert_with(|| {
            Box::new(InfoKeys {
                waiting: VecDeque::new(),
                next: now,
            })
        });
        keys.waiting.extend(digits.iter().copied());
        self.info_keys_due(layer, leg, now);
        self.arm(leg);
    }

    /// Sends the channel's next INFO key if its time has come.
    fn info_keys_due(&mut self, layer: &mut TransactionLayer, leg: &LegId, now: Instant) {
        let Some(channel) = self.channels.get_mut(leg) else {
            return;
        };
        let Some(keys) = channel.info_keys.as_mut() else {
            return;
        };
        if keys.next > now {
            return;
        }
        let Some(digit) = keys.waiting.pop_front() else {
            channel.info_keys = None;
            return;
        };
        keys.next = now + INFO_KEY_GAP;
        self.send_info_digit(layer, leg, digit, now);
    }

    /// Sends `digit` to `leg`'s remote as an in-dialog INFO (RFC 6086) with an
    /// `application/dtmf-relay` body, the de-facto format (Cisco's, which SIP phones and
    /// carriers read): `Signal=5` and a `Duration` in ms. Its answer needs nothing from us.
    fn send_info_digit(
        &mut self,
        layer: &mut TransactionLayer,
        leg: &LegId,
        digit: Digit,
        now: Instant,
    ) {
        let Some((Some(id), peer)) = self.channels.get(leg).map(|c| (c.dialog.clone(), c.peer))
        else {
            return;
        };
        let body = format!(
            "Signal={}\r\nDuration={}\r\n",
            digit.as_char(),
            INFO_DIGIT_MS
        );
        let body = ("application/dtmf-relay", body.as_bytes());
        self.send_in_dialog(layer, &id, peer, Method::Info, Some(body), now);
    }

    /// An INFO carrying a key press (RFC 6086; `application/dtmf-relay` or
    /// `application/dtmf`) goes to the media side, which reports each press once.
    fn info_digits(&mut self, leg: &LegId, req: &Message) {
        let Some(kind) = req
            .content_type()
            .and_then(InfoContentType::from_content_type)
        else {
            return;
        };
        let Ok(body) = InfoBody::parse(kind, req.body()) else {
            tracing::debug!("INFO with an unreadable DTMF body");
            return;
        };
        let Some(channel) = self.channels.get(leg) else {
            return;
        };
        let side = channel.side;
        let Some(call) = self.calls.get_mut(&channel.call) else {
            return;
        };
        call.info_dtmf[side_index(side)] = true;
        let session = call.media;
        self.media.dtmf_info(session, side, body);
    }

    fn wall(&self, now: Instant) -> DateTime<Utc> {
        self.clock.wall(now)
    }

    fn emit(&mut self, change: CallChange) {
        self.output.push_back(Output::Record(change));
    }

    fn new_id(&mut self, kind: IdKind, now: Instant) -> String {
        let ms = self.wall(now).timestamp_millis();
        let random = self.rng.random::<u128>();
        self.ids.next(kind, ms, random)
    }

    fn branch(&mut self) -> Branch {
        Branch::from_random(&self.rng.random::<[u8; 12]>())
    }

    fn tag(&mut self) -> String {
        hex::encode(self.rng.random::<[u8; 6]>())
    }

    fn via(&self, transport: Transport) -> LocalVia {
        self.cfg.via(transport)
    }

    fn contact(&self, transport: Transport) -> String {
        self.cfg.contact(transport)
    }

    /// Schedules the channel's next timer, if it has one.
    fn arm(&mut self, leg: &LegId) {
        if let Some(at) = self.leg_timeout(leg) {
            self.timers.push(Reverse((at, leg.clone())));
        }
        // Stale entries pile up when timers move often; rebuild before the heap outgrows
        // the live channels by much (memory stays bounded under any load).
        if self.timers.len() > 4 * self.channels.len() + 1024 {
            let live: Vec<Reverse<(Instant, LegId)>> = self
                .channels
                .keys()
                .filter_map(|id| Some(Reverse((self.leg_timeout(id)?, id.clone()))))
                .collect();
            self.timers = BinaryHeap::from(live);
        }
    }

    /// When `leg` needs the clock next: its channel's timers, and the timer of a call
    /// program running on it.
    fn leg_timeout(&self, leg: &LegId) -> Option<Instant> {
        let channel = self.channels.get(leg).and_then(Channel::next_timeout);
        match (channel, self.program_timeout(leg)) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    // ---------------------------------------------------------------------------------
    // New calls

    /// An INVITE outside any dialog. Answers it (error, challenge), or starts a call and
    /// answers it later.
    #[allow(clippy::too_many_arguments)]
    pub fn on_invite(
        &mut self,
        layer: &mut TransactionLayer,
        directory: &mut dyn Directory,
        tx: ServerTxId,
        invite: Message,
        source: IpAddr,
        peer: Peer,
        now: Instant,
    ) -> Option<Reply> {
        if self.draining {
            return Some(
                Reply::new(503, "Service Unavailable").with("Retry-After", "30".to_owned()),
            );
        }
        let wall = self.wall(now);
        let caller = match directory.authenticate(&invite, source, wall, self.rng.random()) {
            Ok(party) => party,
            Err(reply) => return Some(reply),
        };
        match self.start_call(layer, directory, tx, &invite, peer, &caller, now) {
            Ok(()) => None,
            Err(reply) => {
                self.record_refused(&caller, &invite, &reply, now);
                Some(reply)
            }
        }
    }

    /// Every call attempt leaves a record, a refused one too (SPEC §4): `busy` for 486,
    /// else `failed`, with the response as hangup cause.
    fn record_refused(&mut self, caller: &Caller, invite: &Message, reply: &Reply, now: Instant) {
        let wall = self.wall(now);
        let call_id = self.new_id(IdKind::Call, now);
        let leg_id = self.new_id(IdKind::Leg, now);
        let status = if reply.code == 486 {
            CallStatus::Busy
        } else {
            CallStatus::Failed
        };
        let cause = format!("{} {}", reply.code, reply.reason);
        let from = invite.from().uri.to_owned();
        self.emit(CallChange::CreateCall(NewCall {
            id: call_id.clone(),
            direction: match caller {
                Caller::Agent(_) => CallDirection::Internal,
                Caller::Trunk { .. } => CallDirection::Inbound,
            },
            from: from.clone(),
            to: invite.to().uri.to_owned(),
            agent_id: caller.agent().map(|p| p.agent.to_string()),
            status: CallStatus::Ringing,
            started_at: wall,
            status_callback: None,
            metadata: None,
        }));
        self.emit(CallChange::CreateLeg(NewLeg {
            id: leg_id.clone(),
            call_id: call_id.clone(),
            direction: LegDirection::Inbound,
            agent_id: caller.agent().map(|p| p.agent.to_string()),
            uri: from,
            sip_call_id: invite.call_id().to_owned(),
            status: CallStatus::Ringing,
            started_at: wall,
        }));
        self.emit(CallChange::LegStatus {
            leg_id,
            status,
            at: wall,
            hangup_cause: Some(cause.clone()),
        });
        self.emit(CallChange::CallEnded {
            call_id,
            status,
            at: wall,
            duration_seconds: 0,
            hangup_cause: cause,
            hangup_by: HangupBy::System,
        });
        metrics::counter!("voxgate_calls_refused_total", "code" => reply.code.to_string())
            .increment(1);
    }

    /// Routes an authenticated INVITE: creates the call and its UAS channel, then dials
    /// or answers; or says why not.
    #[allow(clippy::too_many_arguments)]
    fn start_call(
        &mut self,
        layer: &mut TransactionLayer,
        directory: &mut dyn Directory,
        tx: ServerTxId,
        invite: &Message,
        peer: Peer,
        caller: &Caller,
        now: Instant,
    ) -> Result<(), Reply> {
        let Some(user) = invite
            .request_uri()
            .and_then(|u| SipUri::parse(u).ok())
            .and_then(|u| u.user.map(str::to_owned))
        else {
            return Err(Reply::new(404, "Not Found"));
        };
        let route = directory.route(caller, &user);
        match &route {
            Route::NotFound => return Err(Reply::new(404, "Not Found")),
            Route::Offline => return Err(Reply::new(480, "Temporarily Unavailable")),
            Route::Agent { party, .. }
                if self.active.get(&party.agent).copied().unwrap_or(0)
                    >= party.max_concurrent_calls =>
            {
                return Err(Reply::new(486, "Busy Here"));
            }
            Route::Trunk(d) if d.targets.is_empty() => {
                return Err(
                    Reply::new(503, "Service Unavailable").with("Retry-After", "5".to_owned())
                )
            }
            _ => {}
        }
        let (callee, record) = match &route {
            Route::Agent { party, record, .. } => (Some(party.clone()), *record),
            _ => (None, None),
        };
        // RFC 4028 §9: only when the caller asks (we do not impose a timer).
        let session_timer = match negotiate_uas(&SESSION_TIMER, invite) {
            Ok(UasDecision::TooSmall { min_se }) => {
                return Err(Reply::new(422, "Session Interval Too Small")
                    .with("Min-SE", min_se.to_string()))
            }
            Ok(UasDecision::NoTimer) | Err(_) => None,
            Ok(accept) => Some(accept),
        };
        // The offer. An INVITE without SDP (delayed offer) is not supported yet.
        if !is_sdp(invite) {
            return Err(Reply::new(488, "Not Acceptable Here"));
        }
        let offer = SessionDescription::parse(invite.body()).map_err(|e| {
            tracing::debug!(error = %e, "unparseable SDP offer");
            Reply::new(e.sip_status(), reason_for(e.sip_status()))
        })?;
        let session = self.media.create_session().map_err(|e| {
            tracing::warn!(error = %e, "no media for a new call");
            Reply::new(503, "Service Unavailable").with("Retry-After", "5".to_owned())
        })?;
        let mut sdp = [
            LegSdp::new(
                LocalSession::new(self.rng.random::<u32>().into()),
                LocalMedia {
                    address: self.cfg.public_ip,
                    rtp_port: session.a.rtp.port(),
                },
            ),
            LegSdp::new(
                LocalSession::new(self.rng.random::<u32>().into()),
                LocalMedia {
                    address: self.cfg.public_ip,
                    rtp_port: session.b.rtp.port(),
                },
            ),
        ];
        // Check the offer before anything is recorded: an offer we cannot use is a 488.
        let forwarded = match &route {
            Route::Agent { .. } | Route::Trunk(_) => {
                match forward_offer(&self.cfg.sdp, &offer, &mut sdp[1]) {
                    Ok(x) => Some(x),
                    Err(e) => {
                        self.media.release_session(session.id);
                        tracing::debug!(error = %e, "offer not acceptable");
                        return Err(Reply::new(e.sip_status(), reason_for(e.sip_status())));
                    }
                }
            }
            _ => {
                let mut probe = sdp[0].clone();
                if let Err(e) = answer_offer(&self.cfg.sdp, &offer, &mut probe) {
                    self.media.release_session(session.id);
                    return Err(Reply::new(e.sip_status(), reason_for(e.sip_status())));
                }
                None
            }
        };

        let wall = self.wall(now);
        let call_id = CallId::new(self.new_id(IdKind::Call, now));
        // 100 Trying at once: forking to several phones may take a moment.
        let trying = MessageBuilder::response_to(invite, 100, "Trying", None).build();
        let _ = layer.send_response(tx, trying, now);
        let from_uri = invite.from().uri.to_owned();
        let direction = match (caller, &route) {
            (Caller::Trunk { .. }, _) => CallDirection::Inbound,
            (Caller::Agent(_), Route::Trunk(_)) => CallDirection::Outbound,
            (Caller::Agent(_), _) => CallDirection::Internal,
        };
        let caller_agent = caller.agent().map(|p| p.agent.to_string());
        self.emit(CallChange::CreateCall(NewCall {
            id: call_id.to_string(),
            direction,
            from: from_uri.clone(),
            to: invite.to().uri.to_owned(),
            // The agent on the call: the caller, or for a carrier's call the one it rings.
            agent_id: caller_agent
                .clone()
                .or_else(|| callee.as_ref().map(|c| c.agent.to_string())),
            status: CallStatus::Ringing,
            started_at: wall,
            status_callback: None,
            metadata: None,
        }));
        let carrier = match (caller, &route) {
            (Caller::Trunk { trunk_id, .. }, _) => Some(trunk_id.clone()),
            (_, Route::Trunk(d)) => Some(d.trunk_id.clone()),
            _ => None,
        };
        if let Some(trunk_id) = carrier {
            self.emit(CallChange::CallTrunk {
                call_id: call_id.to_string(),
                trunk_id,
            });
        }
        let inbound = LegId::new(self.new_id(IdKind::Leg, now));
        self.emit(CallChange::CreateLeg(NewLeg {
            id: inbound.to_string(),
            call_id: call_id.to_string(),
            direction: LegDirection::Inbound,
            agent_id: caller_agent,
            uri: from_uri,
            sip_call_id: invite.call_id().to_owned(),
            status: CallStatus::Ringing,
            started_at: wall,
        }));
        let local_tag = self.tag();
        self.channels.insert(
            inbound.clone(),
            Channel {
                id: inbound.clone(),
                call: call_id.clone(),
                peer,
                dialog: None,
                side: Side::A,
                status: CallStatus::Ringing,
                role: Role::Uas(Box::new(Uas {
                    tx,
                    invite: invite.clone(),
                    local_tag,
                    ack_wait: None,
                    session: session_timer,
                    timer: None,
                })),
                hangup_at: None,
                info_keys: None,
            },
        );
        self.by_server_tx.insert(tx, inbound.clone());
        let agents: Vec<AgentId> = caller
            .agent()
            .into_iter()
            .chain(callee.as_ref())
            .map(|p| p.agent.clone())
            .collect();
        for agent in &agents {
            *self.active.entry(agent.clone()).or_default() += 1;
        }
        self.calls.insert(
            call_id.clone(),
            Call {
                id: call_id.clone(),
                agents,
                channels: vec![inbound.clone()],
                dial: None,
                bridge: None,
                media: session.id,
                sdp,
                answered_at: None,
                renegotiation: None,
                lead: None,
                ring_timeout: self.cfg.ring_timeout,
                time_limit: None,
                trunk: None,
                rate: None,
                ringback: false,
                internal: if direction == CallDirection::Inbound {
                    Side::B
                } else {
                    Side::A
                },
                record,
                recording: None,
                info_dtmf: [false; 2],
                program: None,
            },
        );
        self.by_session.insert(session.id, call_id.clone());
        metrics::counter!("voxgate_calls_total").increment(1);

        if let Route::Program(program) = &route {
            self.start_program(layer, directory, &call_id, &inbound, program, now);
            return Ok(());
        }
        let ip = host(self.cfg.public_ip);
        let dialled = match route {
            Route::Agent { party, targets, .. } => {
                let from = match caller {
                    Caller::Agent(p) => &p.username,
                    // The agent's phone shows the lead's number.
                    Caller::Trunk { number, .. } => number,
                };
                let parties = Parties {
                    from: format!("sip:{from}@{ip}"),
                    to: format!("sip:{}@{ip}", party.username),
                    agent: Some(party.agent),
                };
                Some((parties, targets.iter().map(Fork::from).collect()))
            }
            Route::Trunk(d) => {
                let trunk = d.trunk_id.clone();
                let limits = d.limits;
                if let Some(call) = self.calls.get_mut(&call_id) {
                    call.rate = d.rate.clone();
                }
                let (parties, forks) = trunk_fork(*d, &ip);
                if let Some((offer_b, pending)) = forwarded {
                    let held = HeldDial {
                        call: call_id.clone(),
                        origin: Some(inbound.clone()),
                        parties,
                        forks,
                        side: Side::B,
                        sdp: offer_b,
                        offer: DialOffer::Forwarded(pending),
                        has_slot: false,
                    };
                    self.send_trunk_dial(layer, &trunk, limits, held, now);
                }
                return Ok(());
            }
            _ => None,
        };
        match (dialled, forwarded) {
            (Some((parties, forks)), Some((offer_b, pending))) => {
                self.dial(
                    layer,
                    &call_id,
                    Some(&inbound),
                    &parties,
                    forks,
                    Side::B,
                    &offer_b,
                    DialOffer::Forwarded(pending),
                    now,
                );
            }
            _ => {
                let _ = self.answer_locally(layer, &inbound, now);
            }
        }
        Ok(())
    }

    /// Rings every fork at once (RFC 3261 §16.7 style) with `offer`, each with the call's
    /// ring deadline. A dial that could send no INVITE ends the call with 480.
    #[allow(clippy::too_many_arguments)]
    fn dial(
        &mut self,
        layer: &mut TransactionLayer,
        call_id: &CallId,
        origin: Option<&LegId>,
        parties: &Parties,
        forks: Vec<Fork>,
        side: Side,
        sdp: &SessionDescription,
        offer: DialOffer,
        now: Instant,
    ) {
        let body = sdp.to_string();
        let ring = self
            .calls
            .get(call_id)
            .map_or(self.cfg.ring_timeout, |c| c.ring_timeout);
        let deadline = now + ring;
        let wall = self.wall(now);
        let mut legs = Vec::with_capacity(forks.len());
        for fork in forks {
            let request = self.outbound_invite(parties, &fork.uri, fork.peer, &body);
            let Ok(parsed) = Message::parse(request.clone()) else {
                tracing::error!("built an unparseable INVITE");
                continue;
            };
            match layer.send_request(request, fork.peer, now) {
                Ok(client_tx) => {
                    let leg = LegId::new(self.new_id(IdKind::Leg, now));
                    self.emit(CallChange::CreateLeg(NewLeg {
                        id: leg.to_string(),
                        call_id: call_id.to_string(),
                        direction: LegDirection::Outbound,
                        agent_id: parties.agent.as_ref().map(ToString::to_string),
                        uri: fork.uri.clone(),
                        sip_call_id: parsed.call_id().to_owned(),
                        status: CallStatus::Ringing,
                        started_at: wall,
                    }));
                    self.by_client_tx.insert(client_tx, leg.clone());
                    self.channels.insert(
                        leg.clone(),
                        Channel {
                            id: leg.clone(),
                            call: call_id.clone(),
                            peer: fork.peer,
                            dialog: None,
                            side,
                            status: CallStatus::Ringing,
                            role: Role::Uac(Box::new(Uac {
                                tx: client_tx,
                                invite: parsed,
                                ack_cache: None,
                                canceled: false,
                                ring_deadline: Some(deadline),
                                auth: fork.auth,
                                authed: false,
                                fallback: fork.fallback,
                            })),
                            hangup_at: None,
                            info_keys: None,
                        },
                    );
                    self.arm(&leg);
                    legs.push(leg);
                }
                Err(e) => tracing::warn!(error = %e, uri = %fork.uri, "INVITE not sent"),
            }
        }
        let no_forks = legs.is_empty();
        if let Some(call) = self.calls.get_mut(call_id) {
            call.channels.extend(legs.iter().cloned());
            call.dial = Some(Dial {
                origin: origin.cloned(),
                forks: legs,
                side,
                offer,
            });
        }
        if no_forks && self.program_dialing(call_id) {
            self.program_dial_failed(call_id, voxgate_ivr::DialOutcome::Failed, now);
        } else if no_forks {
            let ending = Ending {
                status: CallStatus::Failed,
                cause: "no contact reachable",
                by: HangupBy::System,
                reply: Some((480, "Temporarily Unavailable")),
            };
            self.end_call(layer, call_id, &ending, now);
        }
    }

    fn outbound_invite(&mut self, parties: &Parties, uri: &str, peer: Peer, sdp: &str) -> Bytes {
        let branch = self.branch();
        let from_tag = self.tag();
        let call_id = hex::encode(self.rng.random::<[u8; 12]>());
        let ip = host(self.cfg.public_ip);
        MessageBuilder::request(&Method::Invite, uri)
            .header("Via", &self.via(peer.transport).value(&branch))
            .header("Max-Forwards", "70")
            .header("From", &format!("<{}>;tag={from_tag}", parties.from))
            .header("To", &format!("<{}>", parties.to))
            .header("Call-ID", &format!("{call_id}@{ip}"))
            .header("CSeq", "1 INVITE")
            .header("Contact", &format!("<{}>", self.contact(peer.transport)))
            .header("Allow", ALLOW)
            .body("application/sdp", sdp.as_bytes())
            .build()
    }

    /// The UAS channel's dialog, created with our To tag at the first response that needs
    /// it (RFC 3261 §12.1.1).
    fn uas_dialog(&mut self, leg: &LegId) -> Option<DialogId> {
        let contact = self.contact(self.channels.get(leg)?.peer.transport);
        let channel = self.channels.get_mut(leg)?;
        if channel.dialog.is_none() {
            let uas = channel.uas()?;
            let d = Dialog::new_uas(&uas.invite, &uas.local_tag, &contact).ok()?;
            let id = d.id().clone();
            self.dialogs.insert(d).ok()?;
            self.by_dialog.insert(id.clone(), leg.clone());
            channel.dialog = Some(id);
        }
        channel.dialog.clone()
    }

    /// Sends a 2xx with `sdp` on a UAS channel and waits for its ACK.
    fn send_uas_2xx(
        &mut self,
        layer: &mut TransactionLayer,
        leg: &LegId,
        sdp: &SessionDescription,
        now: Instant,
    ) -> Option<()> {
        let id = self.uas_dialog(leg)?;
        let channel = self.channels.get_mut(leg)?;
        let uas = channel.uas_mut()?;
        let b = self
            .dialogs
            .get_mut(&id)?
            .response(&uas.invite, 200, "OK")
            .ok()?;
        let b = match &uas.session {
            Some(decision) => decision.apply(b),
            None => b,
        };
        let ok = b
            .header("Allow", ALLOW)
            .body("application/sdp", sdp.to_string().as_bytes())
            .build();
        let _ = layer.send_response(uas.tx, ok.clone(), now);
        uas.ack_wait = Some(AckWait::new(uas.invite.cseq().seq, ok, now, layer.config()));
        if let Some(UasDecision::Accept {
            session_expires, ..
        }) = &uas.session
        {
            uas.timer = Some(SessionTimer::new(session_expires, Refresher::Uas, now));
        }
        let sip_call_id = uas.invite.call_id().to_owned();
        channel.status = CallStatus::InProgress;
        self.output.push_back(Output::Answered { sip_call_id });
        self.arm(leg);
        Some(())
    }

    /// voxgate answers a ringing UAS channel itself: its own SDP answer, no bridge.
    fn answer_locally(
        &mut self,
        layer: &mut TransactionLayer,
        leg: &LegId,
        now: Instant,
    ) -> Result<(), ControlError> {
        let wall = self.wall(now);
        let Some(channel) = self.channels.get(leg) else {
            return Err(ControlError::NotFound);
        };
        let (Some(uas), true) = (channel.uas(), channel.is_ringing()) else {
            return Err(ControlError::Conflict);
        };
        let call_id = channel.call.clone();
        let offer = SessionDescription::parse(uas.invite.body()).ok();
        let Some(call) = self.calls.get_mut(&call_id) else {
            return Err(ControlError::NotFound);
        };
        if call.dial.is_some() {
            return Err(ControlError::Conflict);
        }
        let answer =
            offer.and_then(|o| answer_offer(&self.cfg.sdp, &o, call.sdp_mut(Side::A)).ok());
        let Some(answer) = answer else {
            let ending = Ending {
                status: CallStatus::Failed,
                cause: "488 Not Acceptable Here",
                by: HangupBy::System,
                reply: Some((488, "Not Acceptable Here")),
            };
            self.end_call(layer, &call_id, &ending, now);
            return Ok(());
        };
        call.answered_at = Some(wall);
        let media = call.media;
        if let Some(m) = &call.sdp[0].media {
            // Nothing to relay to yet: side A's remote, with no other side to translate from.
            self.media.update_leg(media, Side::A, leg_remote(m, m));
        }
        self.send_uas_2xx(layer, leg, &answer, now);
        self.emit(CallChange::CallAnswered {
            call_id: call_id.to_string(),
            at: wall,
        });
        self.emit(CallChange::LegStatus {
            leg_id: leg.to_string(),
            status: CallStatus::InProgress,
            at: wall,
            hangup_cause: None,
        });
        self.output
            .push_back(Output::Event(CallEvent::Answered { call: call_id }));
        metrics::counter!("voxgate_calls_answered_total").increment(1);
        Ok(())
    }

    // ---------------------------------------------------------------------------------
    // Responses on UAC channels

    /// A response for one of our client transactions. Returns false if it is not ours.
    pub fn on_response(
        &mut self,
        layer: &mut TransactionLayer,
        tx: ClientTxId,
        resp: Message,
        now: Instant,
    ) -> bool {
        let Some(leg) = self.by_client_tx.get(&tx).cloned() else {
            if self.orphans.contains_key(&tx) {
                self.on_orphan_response(layer, tx, &resp, now);
                return true;
            }
            return false;
        };
        let Some(call_id) = self.channels.get(&leg).map(|c| c.call.clone()) else {
            return true;
        };
        let renegotiating = self
            .calls
            .get(&call_id)
            .and_then(|c| c.renegotiation.as_ref())
            .is_some_and(|r| r.client_tx == tx);
        if renegotiating {
            self.on_renegotiation_response(layer, &call_id, resp, now);
            return true;
        }
        let is_invite_tx = self
            .channels
            .get_mut(&leg)
            .and_then(Channel::uac_mut)
            .is_some_and(|u| u.tx == tx);
        if is_invite_tx && resp.cseq().method == Method::Invite {
            self.on_invite_response(layer, &call_id, &leg, &resp, now);
        }
        true
    }

    /// A 2xx that crossed the CANCEL of a call that has ended: ACK it and hang it up, or
    /// the phone would hold a call nobody is on (RFC 3261 §9.1, §15).
    fn on_orphan_response(
        &mut self,
        layer: &mut TransactionLayer,
        tx: ClientTxId,
        resp: &Message,
        now: Instant,
    ) {
        if !resp.status().is_some_and(|s| (200..300).contains(&s)) {
            return;
        }
        let Some(orphan) = self.orphans.get(&tx) else {
            return;
        };
        let peer = orphan.peer;
        let id = match self.dialogs.handle_uac_response(&orphan.invite, resp) {
            Ok(UacInviteOutcome::Confirmed { id } | UacInviteOutcome::ExtraFork { id }) => id,
            _ => return,
        };
        self.hang_up_stray(layer, &id, peer, resp.cseq().seq, now);
    }

    /// A dialog nobody wants (an orphaned or an extra fork's 2xx): ACK it and send BYE.
    fn hang_up_stray(
        &mut self,
        layer: &mut TransactionLayer,
        id: &DialogId,
        peer: Peer,
        cseq: u32,
        now: Instant,
    ) {
        let branch = self.branch();
        if let Some(d) = self.dialogs.get(id) {
            let ack = d.ack(cseq, &self.via(peer.transport), &branch).build();
            layer.send_stateless(ack, peer);
        }
        self.bye_dialog(layer, id, peer, now);
    }

    /// A client transaction is gone: an orphaned fork can no longer answer.
    pub fn on_client_terminated(&mut self, tx: ClientTxId) {
        self.orphans.remove(&tx);
    }

    fn on_invite_response(
        &mut self,
        layer: &mut TransactionLayer,
        call_id: &CallId,
        leg: &LegId,
        resp: &Message,
        now: Instant,
    ) {
        let status = resp.status().unwrap_or(500);
        let Some(channel) = self.channels.get_mut(leg) else {
            return;
        };
        let Role::Uac(uac) = &mut channel.role else {
            return;
        };
        let outcome = match self.dialogs.handle_uac_response(&uac.invite, resp) {
            Ok(o) => o,
            Err(e) => {
                tracing::debug!(error = %e, "response outside dialog rules");
                return;
            }
        };
        match outcome {
            UacInviteOutcome::NoDialog => {}
            UacInviteOutcome::Early { id, .. } => {
                self.by_dialog.insert(id.clone(), leg.clone());
                channel.dialog.get_or_insert(id);
                if uac.canceled {
                    // CANCEL waits for a provisional (RFC 3261 §9.1): now it can go.
                    let _ = layer.cancel(uac.tx, now);
                    return;
                }
                if status == 180 || status == 183 {
                    self.relay_provisional(layer, call_id, resp, now);
                }
            }
            UacInviteOutcome::Confirmed { id } => {
                self.by_dialog.insert(id.clone(), leg.clone());
                channel.dialog = Some(id.clone());
                let lost = uac.canceled || !channel.is_ringing();
                self.ack_uac(layer, leg, &id, now);
                let won = !lost
                    && self
                        .calls
                        .get(call_id)
                        // A call program's caller is answered before its dial rings.
                        .is_some_and(|c| {
                            (!c.answered() || c.program.is_some()) && c.dial.is_some()
                        });
                if won {
                    self.fork_answered(layer, call_id, leg, resp, now);
                } else {
                    // Lost the race (another fork answered, or we cancelled): hang it up.
                    self.bye_channel(layer, leg, now);
                }
            }
            UacInviteOutcome::ExtraFork { id } => {
                // A second dialog from one INVITE (a forking proxy behind the phone).
                let peer = channel.peer;
                self.hang_up_stray(layer, &id, peer, resp.cseq().seq, now);
            }
            UacInviteOutcome::Retransmitted2xx { .. } => {
                if let Some(ack) = uac.ack_cache.as_mut().and_then(|c| c.on_response(resp)) {
                    layer.send_stateless(ack, channel.peer);
                }
            }
            UacInviteOutcome::Failed { status, .. } => {
                // A final error ends the fork's early dialog (RFC 3261 §12.3).
                if let Some(id) = channel.dialog.take() {
                    self.dialogs.remove(&id);
                    self.by_dialog.remove(&id);
                }
                if self.retry_fork(layer, leg, resp, now) {
                    return;
                }
                let reason = resp.reason().unwrap_or_default().to_owned();
                self.fork_failed(layer, leg, status, &reason, now);
            }
        }
    }

    /// A fork ended without a dialog (a final error, a timeout, a transport failure, its
    /// ring deadline): record it, and when no fork is left ringing, fail the dial.
    fn fork_failed(
        &mut self,
        layer: &mut TransactionLayer,
        leg: &LegId,
        code: u16,
        reason: &str,
        now: Instant,
    ) {
        let wall = self.wall(now);
        let Some(channel) = self.channels.get_mut(leg) else {
            return;
        };
        if !channel.is_ringing() {
            return;
        }
        let canceled = channel.uac_mut().is_some_and(|u| u.canceled);
        channel.status = fork_status(code, canceled);
        let status = channel.status;
        let call_id = channel.call.clone();
        self.emit(CallChange::LegStatus {
            leg_id: leg.to_string(),
            status,
            at: wall,
            hangup_cause: Some(format!("{code} {reason}")),
        });
        self.dial_failed_if_done(layer, &call_id, now);
    }

    /// Every fork has failed: the caller gets the best failure (RFC 3261 §16.7 step 6,
    /// simplified: busy wins, then no-answer, then the rest).
    fn dial_failed_if_done(
        &mut self,
        layer: &mut TransactionLayer,
        call_id: &CallId,
        now: Instant,
    ) {
        let Some(call) = self.calls.get(call_id) else {
            return;
        };
        let Some(dial) = &call.dial else {
            return;
        };
        let statuses: Vec<CallStatus> = dial
            .forks
            .iter()
            .filter_map(|l| self.channels.get(l).map(|c| c.status))
            .collect();
        if statuses.contains(&CallStatus::Ringing) {
            return;
        }
        if self.program_dialing(call_id) {
            // A call program's dial: its outcome is the program's next step.
            let outcome = if statuses.contains(&CallStatus::Busy) {
                voxgate_ivr::DialOutcome::Busy
            } else if statuses.contains(&CallStatus::NoAnswer) {
                voxgate_ivr::DialOutcome::NoAnswer
            } else {
                voxgate_ivr::DialOutcome::Failed
            };
            return self.program_dial_failed(call_id, outcome, now);
        }
        if call.answered() {
            return;
        }
        let (status, code, reason) = if statuses.contains(&CallStatus::Busy) {
            (CallStatus::Busy, 486, "Busy Here")
        } else if statuses.contains(&CallStatus::NoAnswer) {
            (CallStatus::NoAnswer, 480, "Temporarily Unavailable")
        } else {
            (CallStatus::Failed, 480, "Temporarily Unavailable")
        };
        let cause = format!("{code} {reason}");
        let ending = Ending {
            status,
            cause: &cause,
            by: HangupBy::Callee,
            reply: Some((code, reason)),
        };
        self.end_call(layer, call_id, &ending, now);
    }

    fn ack_uac(&mut self, layer: &mut TransactionLayer, leg: &LegId, id: &DialogId, now: Instant) {
        let branch = self.branch();
        let Some(channel) = self.channels.get_mut(leg) else {
            return;
        };
        let peer = channel.peer;
        let Some(uac) = channel.uac_mut() else {
            return;
        };
        let Some(d) = self.dialogs.get(id) else {
            return;
        };
        let seq = uac.invite.cseq().seq;
        let via = self.cfg.via(peer.transport);
        let ack = d.ack(seq, &via, &branch).build();
        layer.send_stateless(ack.clone(), peer);
        uac.ack_cache = Some(AckCache::new(seq, ack, now, layer.config()));
        self.arm(leg);
    }

    /// 180/183 from a fork: the caller hears ringing (and early media with 183's SDP).
    /// A click-to-call agent, already answered, hears the lead's early media.
    fn relay_provisional(
        &mut self,
        layer: &mut TransactionLayer,
        call_id: &CallId,
        resp: &Message,
        now: Instant,
    ) {
        let status = resp.status().unwrap_or(180);
        let Some(origin) = self
            .calls
            .get(call_id)
            .filter(|c| !c.answered())
            .and_then(|c| c.dial.as_ref()?.origin.clone())
        else {
            return;
        };
        let early_sdp = (status == 183 && is_sdp(resp))
            .then(|| SessionDescription::parse(resp.body()).ok())
            .flatten();
        if self
            .channels
            .get(&origin)
            .is_some_and(|c| c.uas().is_none())
        {
            if let (Some(call), Some(answer)) = (self.calls.get_mut(call_id), early_sdp) {
                if let Some(Ok(_)) = call.answer_dial(&self.cfg.sdp, &answer) {
                    update_media(self.media.as_mut(), call);
                    // The carrier's early media (its ringback, an announcement)
                    // replaces ours.
                    stop_ringback(self.media.as_mut(), call);
                }
            }
            return;
        }
        let Some(id) = self.uas_dialog(&origin) else {
            return;
        };
        let (Some(call), Some(channel), Some(d)) = (
            self.calls.get_mut(call_id),
            self.channels.get(&origin),
            self.dialogs.get_mut(&id),
        ) else {
            return;
        };
        let Some(uas) = channel.uas() else {
            return;
        };
        let Ok(mut b) = d.response(&uas.invite, status, resp.reason().unwrap_or("Ringing")) else {
            return;
        };
        if let Some(answer) = early_sdp {
            if let Some(Ok(Some(sdp))) = call.answer_dial(&self.cfg.sdp, &answer) {
                update_media(self.media.as_mut(), call);
                b = b.body("application/sdp", sdp.to_string().as_bytes());
            }
        }
        let _ = layer.send_response(uas.tx, b.build(), now);
        self.output.push_back(Output::Event(CallEvent::Ringing {
            call: call_id.clone(),
        }));
    }

    /// The first 2xx of a dial: bridge the winner with the origin, cancel the other forks.
    fn fork_answered(
        &mut self,
        layer: &mut TransactionLayer,
        call_id: &CallId,
        leg: &LegId,
        resp: &Message,
        now: Instant,
    ) {
        let wall = self.wall(now);
        let Some(call) = self.calls.get_mut(call_id) else {
            return;
        };
        let Some(dial) = call.dial.take() else {
            return;
        };
        // Negotiate first: a 2xx whose SDP we cannot use ends the call.
        let answer = SessionDescription::parse(resp.body())
            .map_err(|e| e.to_string())
            .and_then(|a| {
                let (forks, other) = call.sdp_pair(dial.side);
                match &dial.offer {
                    DialOffer::Forwarded(p) => p.answer(&self.cfg.sdp, &a, forks, other).map(Some),
                    DialOffer::Own(p) => p.accept(&self.cfg.sdp, &a, forks).map(|()| None),
                }
                .map_err(|e| e.to_string())
            });
        let answer_sdp = match answer {
            Ok(sdp) => sdp,
            Err(e) => {
                tracing::info!(error = %e, "callee's answer unusable");
                call.dial = Some(dial);
                if let Some(c) = self.channels.get_mut(leg) {
                    c.status = CallStatus::InProgress;
                }
                let ending = Ending {
                    status: CallStatus::Failed,
                    cause: "488 Not Acceptable Here",
                    by: HangupBy::System,
                    reply: Some((488, "Not Acceptable Here")),
                };
                self.end_call(layer, call_id, &ending, now);
                return;
            }
        };
        // Click-to-call's first dial (the agent) answered: dial the lead next; the call is
        // answered when the lead is.
        let agent_answered = call.lead.is_some();
        let mut limited = None;
        let mut record = None;
        if agent_answered {
            if let Some(m) = &call.sdp[side_index(dial.side)].media {
                // Nothing to relay to yet: the agent's remote, translated from itself.
                self.media
                    .update_leg(call.media, dial.side, leg_remote(m, m));
            }
        } else {
            // A call program's caller was answered already (by voxgate).
            call.answered_at.get_or_insert(wall);
            stop_ringback(self.media.as_mut(), call);
            update_media(self.media.as_mut(), call);
            record = call.record;
            if let Some(origin) = &dial.origin {
                call.bridge = Some(Bridge {
                    a: origin.clone(),
                    b: leg.clone(),
                });
                if let Some(limit) = call.time_limit {
                    if let Some(c) = self.channels.get_mut(origin) {
                        c.hangup_at = Some(now + limit);
                        limited = Some(origin.clone());
                    }
                }
            }
        }
        if let Some(origin) = limited {
            self.arm(&origin);
        }
        if let Some(channels) = record {
            if let Err(e) = self.start_recording(call_id, channels, now) {
                tracing::warn!(error = %e, "recording not started");
            }
        }
        for other in dial.forks.iter().filter(|l| *l != leg) {
            let Some(c) = self.channels.get_mut(other) else {
                continue;
            };
            if !c.is_ringing() {
                continue;
            }
            c.status = CallStatus::Canceled;
            if let Some(uac) = c.uac_mut() {
                uac.canceled = true;
                let _ = layer.cancel(uac.tx, now);
            }
            self.emit(CallChange::LegStatus {
                leg_id: other.to_string(),
                status: CallStatus::Canceled,
                at: wall,
                hangup_cause: Some("answered elsewhere".to_owned()),
            });
        }
        if let Some(c) = self.channels.get_mut(leg) {
            c.status = CallStatus::InProgress;
        }
        self.emit(CallChange::LegStatus {
            leg_id: leg.to_string(),
            status: CallStatus::InProgress,
            at: wall,
            hangup_cause: None,
        });
        if agent_answered {
            self.arm(leg);
            self.dial_lead(layer, call_id, leg, now);
            return;
        }
        if self.program_dialing(call_id) {
            // The call was answered when its program began; the program goes on.
            self.program_dial_answered(call_id, now);
            return;
        }
        self.emit(CallChange::CallAnswered {
            call_id: call_id.to_string(),
            at: wall,
        });
        if let Some(origin) = dial
            .origin
            .as_ref()
            .filter(|o| self.channels.get(*o).is_some_and(|c| c.uas().is_some()))
        {
            self.emit(CallChange::LegStatus {
                leg_id: origin.to_string(),
                status: CallStatus::InProgress,
                at: wall,
                hangup_cause: None,
            });
            if let Some(sdp) = &answer_sdp {
                self.send_uas_2xx(layer, origin, sdp, now);
            }
        }
        self.output.push_back(Output::Event(CallEvent::Answered {
            call: call_id.clone(),
        }));
        metrics::counter!("voxgate_calls_answered_total").increment(1);
    }

    // ---------------------------------------------------------------------------------
    // Requests from the phones

    /// CANCEL of a pending INVITE we received: 487 to it, CANCEL every fork.
    pub fn on_cancel(
        &mut self,
        layer: &mut TransactionLayer,
        invite_tx: ServerTxId,
        now: Instant,
    ) -> bool {
        let Some(leg) = self.by_server_tx.get(&invite_tx).cloned() else {
            return false;
        };
        let Some(channel) = self.channels.get(&leg) else {
            return true;
        };
        if channel.is_ringing() {
            let call_id = channel.call.clone();
            let ending = Ending {
                status: CallStatus::Canceled,
                cause: "CANCEL",
                by: HangupBy::Caller,
                reply: Some((487, "Request Terminated")),
            };
            self.end_call(layer, &call_id, &ending, now);
        }
        true
    }

    /// ACK for a 2xx (or a stray one): stops the 2xx retransmissions.
    pub fn on_ack(&mut self, ack: &Message) {
        let Some(d) = self.dialogs.find_for_request(ack) else {
            return;
        };
        let Ok(InDialogRequest::Ack { cseq }) = d.handle_request(ack) else {
            return;
        };
        let id = d.id().clone();
        let Some(leg) = self.by_dialog.get(&id) else {
            return;
        };
        if let Some(w) = self
            .channels
            .get_mut(leg)
            .and_then(Channel::uas_mut)
            .and_then(|u| u.ack_wait.as_mut())
        {
            w.handle_ack(cseq);
        }
    }

    /// A request inside a dialog (it has a To tag). Returns false when no dialog matches
    /// (the core answers 481).
    pub fn on_in_dialog(
        &mut self,
        layer: &mut TransactionLayer,
        tx: ServerTxId,
        req: Message,
        now: Instant,
    ) -> bool {
        let Some(d) = self.dialogs.find_for_request(&req) else {
            return false;
        };
        let id = d.id().clone();
        let handled = d.handle_request(&req);
        let Some(leg) = self.by_dialog.get(&id).cloned() else {
            // A dialog of a call that is gone (e.g. a lost fork we are hanging up).
            if let Ok(b) = d.response(&req, 200, "OK") {
                let _ = layer.send_response(tx, b.build(), now);
            }
            return true;
        };
        match handled {
            Err(rejection) => {
                let _ = layer.send_response(tx, rejection.response(&req).build(), now);
            }
            Ok(InDialogRequest::Ack { .. }) => {}
            Ok(InDialogRequest::Bye) => {
                if let Ok(b) = d.response(&req, 200, "OK") {
                    let _ = layer.send_response(tx, b.build(), now);
                }
                self.dialogs.remove(&id);
                self.by_dialog.remove(&id);
                if let Some(c) = self.channels.get_mut(&leg) {
                    c.dialog = None;
                }
                let Some(channel) = self.channels.get(&leg) else {
                    return true;
                };
                if channel.side == Side::B && self.program_dialing(&channel.call) {
                    // The agent a call program dialled hung up: the program goes on.
                    let call_id = channel.call.clone();
                    self.program_bridge_ended(&call_id, &leg, now);
                    return true;
                }
                // Side A is the caller's (or, for click-to-call, the agent's) side.
                let by = match channel.side {
                    Side::A => HangupBy::Caller,
                    Side::B => HangupBy::Callee,
                };
                let call_id = channel.call.clone();
                let ending = Ending {
                    status: CallStatus::Completed,
                    cause: "BYE",
                    by,
                    reply: None,
                };
                self.end_call(layer, &call_id, &ending, now);
            }
            Ok(InDialogRequest::Request { .. }) => {
                let method = req.method().cloned();
                if matches!(method, Some(Method::Invite | Method::Update)) {
                    self.session_refresh(&leg, &req, now);
                }
                match method {
                    Some(Method::Invite | Method::Update) if is_sdp(&req) => {
                        self.relay_offer(layer, &leg, tx, req, now);
                    }
                    Some(Method::Invite) => {
                        // An offerless re-INVITE would need us to offer; not supported yet.
                        self.respond_in_dialog(layer, &req, tx, 488, "Not Acceptable Here", now);
                    }
                    _ => {
                        if method == Some(Method::Info) {
                            self.info_digits(&leg, &req);
                        }
                        // OPTIONS, INFO, UPDATE without SDP (session refresh): answered here.
                        let session = self
                            .channels
                            .get(&leg)
                            .and_then(Channel::uas)
                            .and_then(|u| u.session);
                        if let Some(b) = self
                            .dialogs
                            .get_mut(&id)
                            .and_then(|d| d.response(&req, 200, "OK").ok())
                        {
                            let b = match (&method, session) {
                                (Some(Method::Update), Some(decision)) => decision.apply(b),
                                _ => b,
                            };
                            let _ = layer.send_response(tx, b.header("Allow", ALLOW).build(), now);
                        }
                    }
                }
            }
        }
        true
    }

    fn respond_in_dialog(
        &mut self,
        layer: &mut TransactionLayer,
        req: &Message,
        tx: ServerTxId,
        code: u16,
        reason: &'static str,
        now: Instant,
    ) {
        if let Some(b) = self
            .dialogs
            .find_for_request(req)
            .and_then(|d| d.response(req, code, reason).ok())
        {
            let _ = layer.send_response(tx, b.build(), now);
        }
    }

    /// A re-INVITE or UPDATE from the caller refreshes its session timer (RFC 4028 §10).
    fn session_refresh(&mut self, leg: &LegId, req: &Message, now: Instant) {
        let Some(uas) = self.channels.get_mut(leg).and_then(Channel::uas_mut) else {
            return;
        };
        let Some(timer) = &mut uas.timer else {
            return;
        };
        if let Ok(
            decision @ UasDecision::Accept {
                session_expires, ..
            },
        ) = negotiate_uas(&SESSION_TIMER, req)
        {
            timer.refreshed(&session_expires, Refresher::Uas, now);
            uas.session = Some(decision);
            self.arm(leg);
        }
    }

    /// re-INVITE or UPDATE with an offer on a bridged channel: forward it to the other
    /// channel as voxgate's own offer (hold, resume, codec change).
    fn relay_offer(
        &mut self,
        layer: &mut TransactionLayer,
        from: &LegId,
        tx: ServerTxId,
        req: Message,
        now: Instant,
    ) {
        let branch = self.branch();
        let Some(call_id) = self.channels.get(from).map(|c| c.call.clone()) else {
            return;
        };
        let Some(call) = self.calls.get_mut(&call_id) else {
            return;
        };
        let Some(other) = call.bridge.as_ref().and_then(|b| b.other(from)).cloned() else {
            self.respond_in_dialog(layer, &req, tx, 491, "Request Pending", now);
            return;
        };
        if call.renegotiation.is_some() {
            self.respond_in_dialog(layer, &req, tx, 491, "Request Pending", now);
            return;
        }
        let offer = match SessionDescription::parse(req.body()) {
            Ok(o) => o,
            Err(e) => {
                let code = e.sip_status();
                self.respond_in_dialog(layer, &req, tx, code, reason_for(code), now);
                return;
            }
        };
        let Some((other_side, other_dialog, other_peer)) = self
            .channels
            .get(&other)
            .map(|c| (c.side, c.dialog.clone(), c.peer))
        else {
            return;
        };
        let (offer_out, pending) =
            match forward_offer(&self.cfg.sdp, &offer, call.sdp_mut(other_side)) {
                Ok(x) => x,
                Err(e) => {
                    let code = e.sip_status();
                    self.respond_in_dialog(layer, &req, tx, code, reason_for(code), now);
                    return;
                }
            };
        let Some(d) = other_dialog.and_then(|id| self.dialogs.get_mut(&id)) else {
            return;
        };
        let method = req.method().cloned().unwrap_or(Method::Invite);
        let via = self.cfg.via(other_peer.transport);
        let Ok(b) = d.request(method, &via, &branch) else {
            self.respond_in_dialog(layer, &req, tx, 491, "Request Pending", now);
            return;
        };
        let bytes = b
            .body("application/sdp", offer_out.to_string().as_bytes())
            .build();
        let Ok(client_request) = Message::parse(bytes.clone()) else {
            return;
        };
        match layer.send_request(bytes, other_peer, now) {
            Ok(client_tx) => {
                self.by_client_tx.insert(client_tx, other);
                call.renegotiation = Some(Renegotiation {
                    from: from.clone(),
                    server_tx: tx,
                    request: req,
                    client_tx,
                    client_request,
                    pending,
                });
            }
            Err(e) => tracing::warn!(error = %e, "re-offer not sent"),
        }
    }

    fn on_renegotiation_response(
        &mut self,
        layer: &mut TransactionLayer,
        call_id: &CallId,
        resp: Message,
        now: Instant,
    ) {
        let status = resp.status().unwrap_or(500);
        if status < 200 {
            return;
        }
        let branch = self.branch();
        let Some(call) = self.calls.get_mut(call_id) else {
            return;
        };
        let Some(r) = call.renegotiation.take() else {
            return;
        };
        self.by_client_tx.remove(&r.client_tx);
        let success = (200..300).contains(&status);
        let Some(to) = call.bridge.as_ref().and_then(|b| b.other(&r.from)).cloned() else {
            return;
        };
        let (Some(from_side), Some((to_side, to_peer))) = (
            self.channels.get(&r.from).map(|c| c.side),
            self.channels.get(&to).map(|c| (c.side, c.peer)),
        ) else {
            return;
        };
        if let Some(d) = self.dialogs.find_for_response(&resp) {
            let _ = d.handle_response(&resp);
            // ACK the other channel's 2xx to our re-INVITE.
            if success && r.client_request.method() == Some(&Method::Invite) {
                let via = self.cfg.via(to_peer.transport);
                let ack = d.ack(r.client_request.cseq().seq, &via, &branch).build();
                layer.send_stateless(ack, to_peer);
            }
        }
        let answer = if success {
            let (answerer, offerer) = call.sdp_pair(to_side);
            debug_assert_ne!(to_side, from_side);
            SessionDescription::parse(resp.body())
                .ok()
                .and_then(|a| r.pending.answer(&self.cfg.sdp, &a, answerer, offerer).ok())
        } else {
            None
        };
        if answer.is_some() {
            update_media(self.media.as_mut(), call);
        }
        let session = self
            .channels
            .get(&r.from)
            .and_then(Channel::uas)
            .and_then(|u| u.session);
        let Some(d) = self.dialogs.find_for_request(&r.request) else {
            return;
        };
        let reply = match (answer, success) {
            (Some(sdp), true) => d.response(&r.request, 200, "OK").map(|b| {
                let b = match session {
                    Some(decision) => decision.apply(b),
                    None => b,
                };
                b.body("application/sdp", sdp.to_string().as_bytes())
            }),
            (None, true) => d.response(&r.request, 488, "Not Acceptable Here"),
            (_, false) => d.response(&r.request, status, resp.reason().unwrap_or("Error")),
        };
        let Ok(b) = reply else {
            return;
        };
        let bytes = b.build();
        let _ = layer.send_response(r.server_tx, bytes.clone(), now);
        if r.request.method() == Some(&Method::Invite) && success {
            if let Some(uas) = self.channels.get_mut(&r.from).and_then(Channel::uas_mut) {
                uas.ack_wait = Some(AckWait::new(
                    r.request.cseq().seq,
                    bytes,
                    now,
                    layer.config(),
                ));
                self.arm(&r.from);
            }
        }
    }

    // ---------------------------------------------------------------------------------
    // Ending calls

    /// Ends a call everywhere: BYE to every confirmed channel still up (but the one whose
    /// party hung up), CANCEL to ringing forks, `reply` to an unanswered caller; releases
    /// media; records the end.
    fn end_call(
        &mut self,
        layer: &mut TransactionLayer,
        call_id: &CallId,
        ending: &Ending<'_>,
        now: Instant,
    ) {
        let wall = self.wall(now);
        let Some(call) = self.calls.remove(call_id) else {
            return;
        };
        for leg in &call.channels {
            let Some(channel) = self.channels.remove(leg) else {
                continue;
            };
            let confirmed = channel
                .dialog
                .as_ref()
                .and_then(|id| self.dialogs.get(id))
                .is_some_and(|d| d.state().is_confirmed());
            match &channel.role {
                Role::Uas(uas) => {
                    self.by_server_tx.remove(&uas.tx);
                    if channel.is_ringing() {
                        if let Some((code, reason)) = ending.reply {
                            let response = match channel
                                .dialog
                                .as_ref()
                                .and_then(|id| self.dialogs.get_mut(id))
                            {
                                Some(d) => d
                                    .response(&uas.invite, code, reason)
                                    .map(|b| b.build())
                                    .ok(),
                                None => Some(
                                    MessageBuilder::response_to(
                                        &uas.invite,
                                        code,
                                        reason,
                                        Some(&uas.local_tag),
                                    )
                                    .build(),
                                ),
                            };
                            if let Some(r) = response {
                                let _ = layer.send_response(uas.tx, r, now);
                            }
                        }
                    }
                }
                Role::Uac(uac) => {
                    self.by_client_tx.remove(&uac.tx);
                    if !confirmed && channel.is_ringing() && !uac.canceled {
                        let _ = layer.cancel(uac.tx, now);
                    }
                    if !confirmed && layer.state(uac.tx).is_some() {
                        self.orphans.insert(
                            uac.tx,
                            Orphan {
                                invite: uac.invite.clone(),
                                peer: channel.peer,
                            },
                        );
                    }
                }
            }
            // The channel whose party sent BYE has no dialog any more.
            if confirmed {
                if let Some(id) = &channel.dialog {
                    self.bye_dialog(layer, id, channel.peer, now);
                }
            }
            let final_status = match channel.status {
                CallStatus::Ringing => match channel.role {
                    Role::Uas(_) => ending.status,
                    Role::Uac(_) => CallStatus::Canceled,
                },
                CallStatus::InProgress => ending.status,
                s => s,
            };
            if channel.status == CallStatus::Ringing || channel.status == CallStatus::InProgress {
                self.emit(CallChange::LegStatus {
                    leg_id: leg.to_string(),
                    status: final_status,
                    at: wall,
                    hangup_cause: Some(ending.cause.to_owned()),
                });
            }
            // Whatever dialog is left (a confirmed one got BYE above and is gone) is early
            // or terminated: it dies with the call, since the forks' 487s (to the CANCELs
            // sent above) no longer reach this call (RFC 3261 §12.3).
            if let Some(id) = &channel.dialog {
                self.dialogs.remove(id);
                self.by_dialog.remove(id);
            }
        }
        let duration = call
            .answered_at
            .map_or(0, |a| (wall - a).num_seconds().max(0));
        // The cost first: the call's end (and its `call.completed`) carries it.
        if let (Some(rate), Some(_)) = (&call.rate, call.answered_at) {
            self.emit(CallChange::CallCost {
                call_id: call.id.to_string(),
                cost_micros: rate.cost_micros(u64::try_from(duration).unwrap_or(0)),
                currency: rate.currency.clone(),
            });
        }
        self.emit(CallChange::CallEnded {
            call_id: call.id.to_string(),
            status: ending.status,
            at: wall,
            duration_seconds: duration,
            hangup_cause: ending.cause.to_owned(),
            hangup_by: ending.by,
        });
        self.output.push_back(Output::Event(CallEvent::Ended {
            call: call.id.clone(),
            status: ending.status,
        }));
        self.by_session.remove(&call.media);
        self.media.release_session(call.media);
        if let Some(q) = call.trunk.as_ref().and_then(|t| self.trunks.get_mut(t)) {
            q.pacer.release_slot();
            self.wake = Some(now);
        }
        for agent in &call.agents {
            if let Some(n) = self.active.get_mut(agent) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    self.active.remove(agent);
                }
            }
        }
        if let Some(r) = &call.renegotiation {
            self.by_client_tx.remove(&r.client_tx);
        }
        tracing::info!(
            call = %call.id,
            status = ending.status.as_str(),
            cause = ending.cause,
            by = ending.by.as_str(),
            "call ended"
        );
    }

    fn bye_channel(&mut self, layer: &mut TransactionLayer, leg: &LegId, now: Instant) {
        let Some((Some(id), peer)) = self.channels.get(leg).map(|c| (c.dialog.clone(), c.peer))
        else {
            return;
        };
        self.bye_dialog(layer, &id, peer, now);
    }

    fn bye_dialog(
        &mut self,
        layer: &mut TransactionLayer,
        id: &DialogId,
        peer: Peer,
        now: Instant,
    ) {
        self.send_in_dialog(layer, id, peer, Method::Bye, None, now);
        // The BYE's transaction needs no dialog; a request crossing it gets 481.
        self.dialogs.remove(id);
    }

    /// Sends a `method` request in dialog `id` to `peer`, with `body` (content type,
    /// bytes) if any. Its answer needs nothing from us: failures are only logged.
    fn send_in_dialog(
        &mut self,
        layer: &mut TransactionLayer,
        id: &DialogId,
        peer: Peer,
        method: Method,
        body: Option<(&str, &[u8])>,
        now: Instant,
    ) {
        let via = self.via(peer.transport);
        let branch = self.branch();
        let Some(d) = self.dialogs.get_mut(id) else {
            return;
        };
        match d.request(method.clone(), &via, &branch) {
            Ok(mut b) => {
                if let Some((content_type, bytes)) = body {
                    b = b.body(content_type, bytes);
                }
                if let Err(e) = layer.send_request(b.build(), peer, now) {
                    tracing::debug!(error = %e, %method, "in-dialog request not sent");
                }
            }
            Err(e) => tracing::debug!(error = %e, %method, "no such request for this dialog"),
        }
    }

    // ---------------------------------------------------------------------------------
    // Timers

    pub fn poll_timeout(&self) -> Option<Instant> {
        let paced = self
            .trunks
            .values()
            .filter(|q| !q.dials.is_empty())
            .filter_map(|q| q.pacer.next_send());
        self.timers
            .peek()
            .map(|Reverse((at, _))| *at)
            .into_iter()
            .chain(self.wake)
            .chain(paced)
            .min()
    }

    pub fn handle_timeout(
        &mut self,
        layer: &mut TransactionLayer,
        directory: &mut dyn Directory,
        now: Instant,
    ) {
        self.serve_trunks(layer, directory, now);
        let mut due = Vec::new();
        while let Some(Reverse((at, _))) = self.timers.peek() {
            if *at > now {
                break;
            }
            if let Some(Reverse((_, leg))) = self.timers.pop() {
                if !due.contains(&leg) {
                    due.push(leg);
                }
            }
        }
        for leg in due {
            self.info_keys_due(layer, &leg, now);
            self.channel_timeout(layer, &leg, now);
            self.program_tick(layer, directory, &leg, now);
            self.arm(&leg);
        }
    }

    fn channel_timeout(&mut self, layer: &mut TransactionLayer, leg: &LegId, now: Instant) {
        let Some(channel) = self.channels.get_mut(leg) else {
            return;
        };
        let call_id = channel.call.clone();
        let peer = channel.peer;
        let ringing = channel.is_ringing();
        let mut ending = None;
        if channel.hangup_at.is_some_and(|t| t <= now) {
            channel.hangup_at = None;
            ending = Some("time limit");
        }
        let mut refresh = false;
        let mut ring_timeout = false;
        match &mut channel.role {
            Role::Uas(uas) => {
                if let Some(t) = &mut uas.timer {
                    t.handle_timeout(now);
                    match t.poll_event() {
                        // RFC 4028 §10: nobody refreshed the session in time.
                        Some(SessionTimerEvent::Expired) => ending = Some("session expired"),
                        Some(SessionTimerEvent::Refresh) => refresh = true,
                        None => {}
                    }
                }
                if let Some(w) = &mut uas.ack_wait {
                    w.handle_timeout(now);
                    while let Some(bytes) = w.poll_transmit() {
                        layer.send_stateless(bytes, peer);
                    }
                    if let Some(AckWaitEvent::NoAck) = w.poll_event() {
                        // RFC 3261 §13.3.1.4: no ACK for our 2xx: the session is over.
                        ending = Some("no ACK");
                    }
                    if w.is_done() {
                        uas.ack_wait = None;
                    }
                }
            }
            Role::Uac(uac) => {
                if uac.ack_cache.as_ref().is_some_and(|c| c.is_expired(now)) {
                    uac.ack_cache = None;
                }
                if ringing && !uac.canceled && uac.ring_deadline.is_some_and(|d| d <= now) {
                    uac.canceled = true;
                    uac.ring_deadline = None;
                    let _ = layer.cancel(uac.tx, now);
                    ring_timeout = true;
                }
            }
        }
        if ring_timeout {
            // The fork is cancelled and counts as not answered (Twilio's `no-answer`).
            if let Some(c) = self.channels.get_mut(leg) {
                c.status = CallStatus::NoAnswer;
            }
            self.emit(CallChange::LegStatus {
                leg_id: leg.to_string(),
                status: CallStatus::NoAnswer,
                at: self.wall(now),
                hangup_cause: Some("ring timeout".to_owned()),
            });
            self.dial_failed_if_done(layer, &call_id, now);
        }
        if let Some(cause) = ending {
            let ending = Ending {
                status: CallStatus::Completed,
                cause,
                by: HangupBy::System,
                reply: None,
            };
            self.end_call(layer, &call_id, &ending, now);
        } else if refresh {
            self.refresh_session(layer, leg, now);
        }
    }

    /// We are the refresher (the caller does not support timers): an UPDATE without SDP
    /// refreshes the session (RFC 4028 §10, RFC 3311).
    fn refresh_session(&mut self, layer: &mut TransactionLayer, leg: &LegId, now: Instant) {
        let branch = self.branch();
        let Some(channel) = self.channels.get_mut(leg) else {
            return;
        };
        let via = self.cfg.via(channel.peer.transport);
        let peer = channel.peer;
        let (Some(id), Some(uas)) = (channel.dialog.clone(), channel.uas_mut()) else {
            return;
        };
        let Some(UasDecision::Accept {
            session_expires, ..
        }) = uas.session
        else {
            return;
        };
        let Some(d) = self.dialogs.get_mut(&id) else {
            return;
        };
        if let Ok(b) = d.request(Method::Update, &via, &branch) {
            let b = b.header("Session-Expires", &session_expires.to_string());
            if layer.send_request(b.build(), peer, now).is_ok() {
                if let Some(t) = &mut uas.timer {
                    t.refreshed(&session_expires, Refresher::Uas, now);
                }
            }
        }
    }

    /// A client transaction ended without a final response: Timer B/F (treated as 408,
    /// RFC 3261 §8.1.3.1) or a transport failure (treated as 503, §8.1.3.1 and §17.1.4).
    pub fn on_client_failure(
        &mut self,
        layer: &mut TransactionLayer,
        tx: ClientTxId,
        code: u16,
        now: Instant,
    ) {
        let Some(leg) = self.by_client_tx.get(&tx).cloned() else {
            return;
        };
        let is_fork = self
            .channels
            .get_mut(&leg)
            .and_then(Channel::uac_mut)
            .is_some_and(|u| u.tx == tx);
        if is_fork {
            if self.fail_over(layer, &leg, now) {
                return;
            }
            let reason = if code == 408 {
                "Request Timeout"
            } else {
                "Service Unavailable"
            };
            self.fork_failed(layer, &leg, code, reason, now);
        }
    }
}

/// The one fork of a number dialled through a trunk: its first address, the others to
/// fail over to, its credentials; From is the caller ID the trunk shows.
fn trunk_fork(d: TrunkDial, ip: &str) -> (Parties, Vec<Fork>) {
    let mut targets = d.targets.into_iter();
    let parties = Parties {
        from: format!("sip:{}@{ip}", d.from_user),
        to: d.uri.clone(),
        agent: None,
    };
    let forks = targets
        .next()
        .map(|peer| Fork {
            uri: d.uri,
            peer,
            fallback: targets.collect(),
            auth: d.credentials,
        })
        .into_iter()
        .collect();
    (parties, forks)
}

/// Plays ringback to side A (a click-to-call's agent, whose phone answered and hears
/// nothing else until the lead answers or sends early media), in the agent's G.711
/// codec; agents on other codecs hear silence.
fn start_ringback(media: &mut (dyn MediaPort + Send), call: &mut Call, random: [u32; 3]) {
    let Some(m) = call.sdp[0].media.as_ref() else {
        return;
    };
    let g711 = m.send.iter().find_map(|(pt, c)| {
        if c.name.eq_ignore_ascii_case("PCMU") {
            Some((pt, Law::Ulaw))
        } else if c.name.eq_ignore_ascii_case("PCMA") {
            Some((pt, Law::Alaw))
        } else {
            None
        }
    });
    let Some((pt, law)) = g711 else {
        return;
    };
    let player = TonePlayer::new(ToneSpec::RINGBACK, law, pt, random);
    media.play_tone(call.media, Side::A, Some(player));
    call.ringback = true;
}

fn stop_ringback(media: &mut (dyn MediaPort + Send), call: &mut Call) {
    if std::mem::take(&mut call.ringback) {
        media.play_tone(call.media, Side::A, None);
    }
}

fn update_media(media: &mut (dyn MediaPort + Send), call: &Call) {
    let (Some(a), Some(b)) = (&call.sdp[0].media, &call.sdp[1].media) else {
        return;
    };
    for (side, this, other) in [(Side::A, a, b), (Side::B, b, a)] {
        let remote = leg_remote(this, other);
        if let Some(t) = &remote.transcode {
            tracing::debug!(call = %call.id, to = ?side, from = ?t.from, into = ?t.to, "media: transcoding");
        }
        media.update_leg(call.media, side, remote);
    }
    media.listen(call.media, Side::A, listen_as(a, b));
    media.listen(call.media, Side::B, listen_as(b, a));
}

/// What listening to `sender`'s packets on their way to `receiver` needs to know.
/// Telephone-events the receiver did not negotiate are not renumbered (nothing maps
/// them): they are heard by the sender's own payload type, unless the receiver uses that
/// number for something else.
fn listen_as(sender: &LegMedia, receiver: &LegMedia) -> ListenConfig {
    let map = heard_as(sender, receiver);
    let mut config = listen_config(map);
    if config.telephone_event.is_none() {
        config.telephone_event =
            telephone_event(&sender.recv).filter(|(pt, _)| map.codec(*pt).is_none());
    }
    config
}

/// How `sender`'s packets reach a listener: as the relay forwards them, numbered as
/// `receiver` receives them; or, when the direction is transcoded, as they arrived.
fn heard_as<'a>(sender: &'a LegMedia, receiver: &'a LegMedia) -> &'a PayloadMap {
    if transcode_spec(receiver, sender).is_some() {
        &sender.recv
    } else {
        &receiver.send
    }
}

/// The codecs of packets numbered as `map` says.
fn listen_config(map: &PayloadMap) -> ListenConfig {
    ListenConfig {
        inband: true,
        telephone_event: telephone_event(map),
        codecs: media_codecs(map).collect(),
    }
}

/// The voice codecs of `map` voxgate can decode and encode, with their payload types.
fn media_codecs(map: &PayloadMap) -> impl Iterator<Item = (u8, MediaCodec)> + '_ {
    map.iter().filter_map(|(pt, c)| {
        MediaCodec::from_encoding_name(&c.name)
            .filter(|codec| codec.clock_rate().0 == c.clock_rate)
            .map(|codec| (pt, codec))
    })
}

/// telephone-event in `map`: its payload type and clock.
fn telephone_event(map: &PayloadMap) -> Option<(u8, ClockRate)> {
    map.iter()
        .find(|(_, c)| c.is_telephone_event())
        .map(|(pt, c)| (pt, ClockRate(c.clock_rate)))
}

/// When `other` sends `this` no voice codec `this` receives (the SDP gave each leg a
/// codec of its own): transcode what `other` may send, by the numbers it uses towards
/// voxgate, into the first codec of `this` voxgate can encode.
fn transcode_spec(this: &LegMedia, other: &LegMedia) -> Option<TranscodeSpec> {
    let shared = other
        .recv
        .iter()
        .any(|(_, c)| !c.is_auxiliary() && this.send.payload_type(c).is_some());
    if shared {
        return None;
    }
    let from: Vec<(u8, MediaCodec)> = media_codecs(&other.recv).collect();
    let to = audio_codec(this)?;
    if from.is_empty() {
        return None;
    }
    Some(TranscodeSpec {
        from,
        to,
        events: telephone_event(&other.recv).zip(telephone_event(&this.send)),
    })
}

/// The `Duration` an INFO-relayed key press reports: a press as phones send it.
const INFO_DIGIT_MS: u32 = 160;

/// Between two INFO key presses to one phone: the press and a pause, as a person keys.
const INFO_KEY_GAP: Duration = Duration::from_millis(250);

/// How a relayed key press reaches a leg.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Relay {
    /// On its media: telephone-events or tones.
    Media(DtmfMethod),
    /// As a SIP INFO.
    Info,
}

/// How relayed presses reach `leg`: RFC 4733 events when its SDP has `telephone-event`;
/// else SIP INFO when its remote sends INFO itself (`sends_info`: that is how it speaks
/// DTMF, as Asterisk's `dtmf_mode=info` endpoints do) or when it has no codec voxgate
/// encodes (tones impossible); else tones in its audio.
fn relay_method(leg: &LegMedia, sends_info: bool) -> Relay {
    match dtmf_method(leg) {
        Some(m @ DtmfMethod::Rfc4733 { .. }) => Relay::Media(m),
        _ if sends_info => Relay::Info,
        Some(m) => Relay::Media(m),
        None => Relay::Info,
    }
}

/// How digits reach `leg`: RFC 4733 events when its SDP has `telephone-event`, else
/// tones in its first audio codec voxgate can encode.
fn dtmf_method(leg: &LegMedia) -> Option<DtmfMethod> {
    let event = leg
        .send
        .iter()
        .find(|(_, c)| c.name.eq_ignore_ascii_case("telephone-event"));
    match (event, audio_codec(leg)) {
        (Some((payload_type, c)), _) => Some(DtmfMethod::Rfc4733 {
            payload_type,
            clock: ClockRate(c.clock_rate),
        }),
        (None, Some((payload_type, codec))) => Some(DtmfMethod::InBand {
            codec,
            payload_type,
        }),
        (None, None) => None,
    }
}

/// The first audio codec voxgate can encode that `leg` receives, with its payload type
/// (in the leg's own numbering).
fn audio_codec(leg: &LegMedia) -> Option<(u8, MediaCodec)> {
    media_codecs(&leg.send).next()
}

/// The rate a recording of `call` is written at: 16 kHz once a side is wideband.
fn recording_rate(call: &Call) -> u32 {
    let side_rate = |m: &Option<LegMedia>| {
        m.as_ref()
            .and_then(audio_codec)
            .map_or(8000, |(_, codec)| codec.sample_rate().hz())
    };
    if side_rate(&call.sdp[0].media) > 8000 || side_rate(&call.sdp[1].media) > 8000 {
        16_000
    } else {
        8000
    }
}

/// What the relay needs about one leg: where it sends from SDP, its direction, and how to
/// renumber payload types of packets going out to it (from the other leg's numbering).
fn leg_remote(this: &LegMedia, other: &LegMedia) -> LegRemote {
    let translation = PtTranslation::new(other, this);
    let mut pt_out = PtMap::identity();
    for pt in 0..128u8 {
        if let Some(to) = translation.get(pt) {
            pt_out.set(pt, to);
        }
    }
    LegRemote {
        rtp: this.remote.map(|r| r.rtp),
        rtcp: this.remote.map(|r| r.rtcp),
        rtcp_mux: this.rtcp_mux,
        pt_out,
        clock: audio_codec(this).map(|(_, codec)| codec.clock_rate()),
        transcode: transcode_spec(this, other),
        direction: match this.direction {
            Direction::SendRecv => MediaDirection::SendRecv,
            Direction::SendOnly => MediaDirection::SendOnly,
            Direction::RecvOnly => MediaDirection::RecvOnly,
            Direction::Inactive => MediaDirection::Inactive,
        },
        ..LegRemote::default()
    }
}

fn host(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("[{v6}]"),
    }
}

fn is_sdp(msg: &Message) -> bool {
    !msg.body().is_empty()
        && msg
            .content_type()
            .is_some_and(|t| t.trim().to_ascii_lowercase().starts_with("application/sdp"))
}

fn reason_for(code: u16) -> &'static str {
    match code {
        400 => "Bad Request",
        _ => "Not Acceptable Here",
    }
}

/// A fork's final status from its final response code.
fn fork_status(code: u16, canceled: bool) -> CallStatus {
    match code {
        487 if canceled => CallStatus::Canceled,
        486 | 600 | 603 => CallStatus::Busy,
        408 | 480 => CallStatus::NoAnswer,
        _ => CallStatus::Failed,
    }
}

#[cfg(test)]
mod config_tests {
    use super::*;

    fn cfg(tls_port: Option<u16>) -> EngineConfig {
        EngineConfig {
            public_ip: IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 7)),
            sip_port: 5060,
            tls_port,
            sdp: SdpConfig::default(),
            ring_timeout: Duration::from_secs(60),
        }
    }

    #[test]
    fn tls_legs_name_the_tls_port() {
        let branch = Branch::from_random(&[1; 8]);
        let c = cfg(Some(5061));
        assert_eq!(
            c.via(Transport::Tls).value(&branch),
            format!(
                "SIP/2.0/TLS 192.0.2.7:5061;branch={};rport",
                branch.as_str()
            )
        );
        assert_eq!(
            c.contact(Transport::Tls),
            "sip:voxgate@192.0.2.7:5061;transport=tls"
        );
        assert_eq!(
            c.via(Transport::Tcp).value(&branch),
            format!(
                "SIP/2.0/TCP 192.0.2.7:5060;branch={};rport",
                branch.as_str()
            )
        );
        assert_eq!(c.contact(Transport::Udp), "sip:voxgate@192.0.2.7:5060");
        // No TLS listener: the shared port.
        assert_eq!(
            cfg(None).contact(Transport::Tls),
            "sip:voxgate@192.0.2.7:5060;transport=tls"
        );
    }
}
