//! What the call engine needs from outside, as interfaces it is handed: who may call and
//! where a target is (the [`Directory`]: the registrar today, trunks next), the media
//! endpoints (the [`MediaPort`]: the relay), and the wall clock anchored to the monotonic
//! one ([`Clock`]). The engine itself never reads a clock, draws randomness from the OS or
//! touches a socket, so tests drive it with a virtual clock and in-memory stand-ins.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use chrono::{DateTime, Utc};
use voxgate_sip::message::{Message, SipUri};
use voxgate_sip::transaction::{Peer, Transport};

use super::types::AgentId;
use crate::media::{
    Digit, DtmfMethod, LegRemote, Loops, MediaEngine, MediaError, Session, SessionId, Side,
};
use crate::registrar::{Binding, Challenger, Registrar, Reply};
use crate::store::RecordingChannels;
use voxgate_media::dtmf::info::InfoBody;
use voxgate_media::listen::ListenConfig;

/// An agent as the engine sees it: who, and how many calls they may have at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Party {
    pub agent: AgentId,
    pub username: String,
    pub max_concurrent_calls: usize,
}

impl Party {
    /// The engine's view of an agent the registrar authenticated.
    pub fn of(a: crate::store::AgentAuth) -> Party {
        Party {
            agent: AgentId::new(a.id),
            username: a.username,
            max_concurrent_calls: usize::try_from(a.max_concurrent_calls).unwrap_or(1),
        }
    }
}

/// Who is calling, once authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// An agent's softphone (digest-authenticated).
    Agent(Party),
    /// A carrier, admitted by its trunk's allowed sources or credentials.
    Trunk {
        trunk_id: String,
        /// The calling number (E.164 when it could be read as one): shown to the agent.
        number: String,
    },
}

impl Caller {
    pub fn agent(&self) -> Option<&Party> {
        match self {
            Caller::Agent(p) => Some(p),
            Caller::Trunk { .. } => None,
        }
    }
}

/// One place to ring: the Request-URI to put in the INVITE and where to send it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub uri: String,
    pub peer: Peer,
}

/// Where a call for a Request-URI user goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// Ring every target of this agent at once; record the call from the answer when
    /// `record` says so (a number that records its calls).
    Agent {
        party: Party,
        targets: Vec<Target>,
        record: Option<RecordingChannels>,
    },
    /// A known agent with no live registration (480).
    Offline,
    /// Nobody by that name (404).
    NotFound,
    /// voxgate answers the call itself (its own SDP answer) and holds it: the channel a
    /// call program (IVR, queue) will run on. No production route leads here yet.
    Answer,
    /// A number out through a trunk (an agent dialling a lead).
    Trunk(Box<TrunkDial>),
    /// voxgate answers the call itself and runs a call program on it (a number routed to
    /// an IVR flow).
    Program(ProgramRoute),
}

/// The program a number runs.
#[derive(Debug, Clone)]
pub enum ProgramRoute {
    /// An IVR flow, compiled once and shared by every call that runs it.
    Flow(std::sync::Arc<voxgate_ivr::Blocks>),
    /// The operator's app at this URL: asked for the verbs, and again with each outcome.
    Webhook(String),
}

impl PartialEq for ProgramRoute {
    /// The same compiled flow (two compilations are two), or the same URL.
    fn eq(&self, other: &ProgramRoute) -> bool {
        match (self, other) {
            (ProgramRoute::Flow(a), ProgramRoute::Flow(b)) => std::sync::Arc::ptr_eq(a, b),
            (ProgramRoute::Webhook(a), ProgramRoute::Webhook(b)) => a == b,
            _ => false,
        }
    }
}

impl Eq for ProgramRoute {}

/// Digest credentials voxgate answers a carrier's 401/407 with.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// A number dialled out through a trunk, as the trunk's entry says to reach it: the
/// engine only sends what it is given (number formats, caller IDs and host resolution
/// are the directory's business).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrunkDial {
    pub trunk_id: String,
    /// Request-URI and To URI: the number in the trunk's format at the carrier's host.
    pub uri: String,
    /// Where to send the INVITE, in RFC 3263 order; the next one is tried when a target
    /// times out or fails at the transport (RFC 3263 §4.3).
    pub targets: Vec<Peer>,
    /// The From user part: the caller ID in the trunk's format.
    pub from_user: String,
    /// Answer 401/407 with these (once per challenge, RFC 3261 §22.2).
    pub credentials: Option<Credentials>,
    /// Codecs the trunk accepts, in its preference order (empty: voxgate's own list).
    pub codecs: Vec<voxgate_sip::sdp::Codec>,
    pub limits: super::pacer::TrunkLimits,
    /// What the call costs once answered (the trunk's `rate`).
    pub rate: Option<crate::trunks::cost::Rate>,
}

/// Why a number cannot be dialled out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DialOutError {
    #[error("no such trunk")]
    NoTrunk,
    #[error("the number is not valid for this trunk: {0}")]
    BadNumber(String),
    /// The carrier's host has no address (yet): DNS failed or is still resolving.
    #[error("the trunk's host has no address")]
    Unresolved,
}

/// Authentication and routing, behind one interface.
pub trait Directory {
    /// Who sent an INVITE arriving from `source`: a carrier whose trunk allows that
    /// source, or an agent by digest (RFC 3261 §22.3); else what to answer instead (407
    /// challenge, 403, 400). `random` seeds a fresh nonce.
    fn authenticate(
        &mut self,
        invite: &Message,
        source: IpAddr,
        wall: DateTime<Utc>,
        random: [u8; 8],
    ) -> Result<Caller, Reply>;

    /// Where a call from `caller` to `user` (the Request-URI user part) goes: an agent's
    /// username, a number out through the default trunk, or (from a carrier) a number's
    /// route. Click-to-call asks for its agent with an agent caller.
    fn route(&self, caller: &Caller, user: &str) -> Route;

    /// An agent by id or username, with the phones to ring (click-to-call).
    fn agent(&self, agent: &str) -> Route;

    /// How to dial `number` (E.164) through `trunk` (its id or name), showing
    /// `caller_id` (or the trunk's own) as the caller.
    fn dial_out(
        &self,
        trunk: &str,
        number: &str,
        caller_id: Option<&str>,
    ) -> Result<TrunkDial, DialOutError> {
        let _ = (trunk, number, caller_id);
        Err(DialOutError::NoTrunk)
    }

    /// A prompt by id or unique name (what a call program plays).
    fn prompt(&self, reference: &str) -> Option<crate::store::PromptRow> {
        let _ = reference;
        None
    }
}

/// The registrar as a [`Directory`]: agents call agents by username.
pub struct AgentDirectory<'a> {
    pub registrar: &'a mut Registrar,
    /// Open stream connections by peer address (a TCP-registered phone is reached on its own).
    pub conns: &'a HashMap<SocketAddr, u64>,
}

impl Directory for AgentDirectory<'_> {
    fn authenticate(
        &mut self,
        invite: &Message,
        _source: IpAddr,
        wall: DateTime<Utc>,
        random: [u8; 8],
    ) -> Result<Caller, Reply> {
        self.registrar
            .authenticate(invite, Challenger::Proxy, wall, random)
            .map(|a| Caller::Agent(Party::of(a)))
    }

    fn route(&self, _caller: &Caller, user: &str) -> Route {
        self.agent(user)
    }

    fn agent(&self, user: &str) -> Route {
        let Some(agent) = self.registrar.find_agent(user) else {
            return Route::NotFound;
        };
        // Away: registered but not taking calls; callers get what an unregistered
        // agent gives (480), so the phone does not ring.
        if agent.away {
            return Route::Offline;
        }
        let targets: Vec<Target> = self
            .registrar
            .bindings(&agent.id)
            .iter()
            .filter_map(|b| {
                let transport = match b.transport.as_str() {
                    "tcp" => Transport::Tcp,
                    "tls" => Transport::Tls,
                    _ => Transport::Udp,
                };
                let conn = self.conns.get(&b.source).copied();
                // A phone on a stream is reached over its own connection only: once that
                // is gone (until it registers again) the binding cannot be rung, and the
                // core must not try to open a connection to its ephemeral source port.
                if transport.is_reliable() && conn.is_none() {
                    return None;
                }
                Some(Target {
                    uri: b.contact.clone(),
                    peer: Peer {
                        transport,
                        addr: binding_target(b, transport),
                        conn,
                    },
                })
            })
            .collect();
        if targets.is_empty() {
            return Route::Offline;
        }
        Route::Agent {
            party: Party {
                agent: AgentId::new(agent.id.clone()),
                username: agent.username.clone(),
                max_concurrent_calls: usize::try_from(agent.max_concurrent_calls).unwrap_or(1),
            },
            targets,
            record: None,
        }
    }
}

/// Where to send requests for a binding: its Contact (RFC 3261 §10.2.1), unless the
/// Contact names another host than the one the REGISTER came from — a phone behind NAT
/// advertising its private address — or the binding is on a stream, whose connection is
/// the only way back: then the REGISTER's source.
fn binding_target(b: &Binding, transport: Transport) -> SocketAddr {
    if transport.is_reliable() {
        return b.source;
    }
    let contact = SipUri::parse(&b.contact).ok().and_then(|u| {
        let ip: IpAddr = u.host.trim_matches(['[', ']']).parse().ok()?;
        Some(SocketAddr::new(ip, u.port.unwrap_or(5060)))
    });
    match contact {
        Some(addr) if addr.ip() == b.source.ip() => addr,
        _ => b.source,
    }
}

/// Media endpoints for calls. Every call is a relay session with two sides: A for the
/// channel the call came in on (or that voxgate answered), B for the dialled channels.
/// None of these may block: the engine runs on the SIP loop.
pub trait MediaPort {
    /// Allocates both sides' ports.
    fn create_session(&mut self) -> Result<Session, MediaError>;
    /// New negotiated media for one side (answer, re-INVITE, hold).
    fn update_leg(&mut self, session: SessionId, side: Side, remote: LegRemote);
    /// Stops relaying and frees the ports, without waiting for the relay.
    fn release_session(&mut self, session: SessionId);
    /// Starts (`Some`) or stops (`None`) a tone towards one side (ringback).
    fn play_tone(
        &mut self,
        session: SessionId,
        side: Side,
        tone: Option<voxgate_media::tone::TonePlayer>,
    ) {
        let _ = (session, side, tone);
    }
    /// What a side's packets carry (its negotiated codecs, as the relay forwards them),
    /// each time that changes; the port taps the side only while somebody listens (a
    /// recording, the DTMF reporter).
    fn listen(&mut self, session: SessionId, side: Side, config: ListenConfig) {
        let _ = (session, side, config);
    }
    /// Starts recording the session's two sides; false if it cannot.
    fn start_recording(&mut self, session: SessionId, rec: RecordingStart) -> bool {
        let _ = (session, rec);
        false
    }
    fn pause_recording(&mut self, session: SessionId, paused: bool) {
        let _ = (session, paused);
    }
    /// Ends the session's recording (the file is finished off the call path).
    fn stop_recording(&mut self, session: SessionId) {
        let _ = session;
    }
    /// Digits a side sent by SIP INFO, merged with those its RTP carries.
    fn dtmf_info(&mut self, session: SessionId, side: Side, body: InfoBody) {
        let _ = (session, side, body);
    }
    /// Plays a prompt to a side: it replaces what the side hears from the other until
    /// it ends. False if it cannot start.
    fn play(&mut self, session: SessionId, side: Side, play: PromptPlay) -> bool {
        let _ = (session, side, play);
        false
    }
    /// Plays fetched audio to a side: `say`'s speech (the `[tts]` service) or a `play`
    /// URL's file, fetched off the SIP loop; its end (or failure) is reported like a
    /// prompt's. False if it cannot start.
    fn say(&mut self, session: SessionId, side: Side, say: SpeechPlay) -> bool {
        let _ = (session, side, say);
        false
    }
    /// Plays the record beep (a short 1 kHz tone, as voicemail systems do) to a side, in
    /// `codec`; its end is not reported.
    fn beep(
        &mut self,
        session: SessionId,
        side: Side,
        codec: voxgate_media::Codec,
        payload_type: u8,
    ) {
        let _ = (session, side, codec, payload_type);
    }
    /// Stops what plays into a side (a prompt a caller's key interrupted).
    fn stop_play(&mut self, session: SessionId, side: Side) {
        let _ = (session, side);
    }
    /// Someone waits for a session's key presses (a call program's `gather`): tap it
    /// whoever else listens.
    fn need_digits(&mut self, session: SessionId) {
        let _ = session;
    }
    /// Sends digits to a side, in the method its SDP allows. False if it cannot start.
    fn send_dtmf(
        &mut self,
        session: SessionId,
        side: Side,
        digits: Vec<Digit>,
        method: DtmfMethod,
    ) -> bool {
        let _ = (session, side, digits, method);
        false
    }
}

/// A prompt to play into a leg, in the leg's codec.
#[derive(Debug, Clone)]
pub struct PromptPlay {
    pub prompt: crate::store::PromptRow,
    pub codec: voxgate_media::Codec,
    pub payload_type: u8,
    pub loops: Loops,
    /// Report the playback's end to the engine with this token (a call program waits
    /// for it); `None`: nobody waits.
    pub tag: Option<u64>,
}

/// Text to speak into a leg, in the leg's codec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpeechPlay {
    pub audio: FetchedAudio,
    /// How many times (a URL's file; speech is said once).
    pub loops: Loops,
    pub codec: voxgate_media::Codec,
    pub payload_type: u8,
    /// Reported back with the end of the speech.
    pub tag: u64,
}

/// Audio the media side fetches before it plays it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchedAudio {
    /// `text` from the `[tts]` service, in `voice` (`None`: the configured one).
    Speech { text: String, voice: Option<String> },
    /// The audio file at an http(s) URL (`play` with a `url`).
    Url(String),
}

/// A recording the engine starts: where the media side files it and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordingStart {
    /// `rec_…`: also the file's name.
    pub id: String,
    pub channels: RecordingChannels,
    /// The agent's side: the left channel of a dual recording.
    pub internal: Side,
    /// Output rate (8 kHz narrowband, 16 kHz once a side is wideband).
    pub rate: u32,
    /// Chooses the folder, `recordings/YYYY/MM/DD/`.
    pub started_at: DateTime<Utc>,
}

impl MediaPort for std::sync::Arc<MediaEngine> {
    fn create_session(&mut self) -> Result<Session, MediaError> {
        MediaEngine::create_session(self)
    }

    fn update_leg(&mut self, session: SessionId, side: Side, remote: LegRemote) {
        if let Err(e) = MediaEngine::update_leg(self, session, side, remote) {
            tracing::warn!(error = %e, "media update failed");
        }
    }

    fn release_session(&mut self, session: SessionId) {
        if let Err(e) = MediaEngine::release_session(self, session) {
            tracing::warn!(error = %e, "media session not released cleanly");
        }
    }

    fn play_tone(
        &mut self,
        session: SessionId,
        side: Side,
        tone: Option<voxgate_media::tone::TonePlayer>,
    ) {
        if let Err(e) = MediaEngine::play_tone(self, session, side, tone) {
            tracing::debug!(error = %e, "tone not started");
        }
    }
}

/// Wall-clock time derived from the monotonic `now` the engine is driven with, anchored
/// by the driver (and re-anchored from time to time, so NTP steps are followed).
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    mono: Instant,
    wall: DateTime<Utc>,
}

impl Clock {
    pub fn new(mono: Instant, wall: DateTime<Utc>) -> Clock {
        Clock { mono, wall }
    }

    pub fn wall(&self, now: Instant) -> DateTime<Utc> {
        let since = now.saturating_duration_since(self.mono);
        chrono::Duration::from_std(since).map_or(self.wall, |d| self.wall + d)
    }
}
