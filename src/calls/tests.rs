//! The engine in-process, on a virtual clock: a gateway (engine + transaction layer, wired
//! as the SIP core wires them) and simulated phones that speak SIP through the gateway's
//! layer. Routing and media are the engine's interfaces, here an in-memory directory and
//! a media port that only counts sessions. Every test ends with the invariants a real
//! gateway must reach: no call, channel or dialog left, every media session released,
//! every transaction gone once its timers ran out.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use voxgate_sip::message::{HeaderName, Message, MessageBuilder, Method};
use voxgate_sip::sdp::SdpConfig;
use voxgate_sip::transaction::{
    Incoming, Peer, TimerConfig, TransactionLayer, Transport, TxEvent, TxId,
};

use super::engine::{CallEngine, Command, EngineConfig, Originate, Output};
use super::env::{
    Caller, Clock, Credentials, DialOutError, Directory, MediaPort, Party, Route, Target, TrunkDial,
};
use super::record::{CallChange, CallStatus};
use super::types::{AgentId, HangupBy, LegId};
use crate::media::{Endpoint, LegRemote, MediaError, Session, SessionId, Side};
use crate::registrar::Reply;

const GATEWAY: &str = "127.0.0.1:5060";
const RING_TIMEOUT: Duration = Duration::from_secs(30);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Media sessions the engine holds, and what it told the relay.
#[derive(Default)]
struct MediaLog {
    next: u64,
    live: HashSet<SessionId>,
    updates: Vec<(SessionId, Side, LegRemote)>,
    /// Tones started (true) and stopped (false), with their payload type when started.
    tones: Vec<(Side, bool, Option<u8>)>,
}

struct TestMedia(Arc<Mutex<MediaLog>>);

impl MediaPort for TestMedia {
    fn create_session(&mut self) -> Result<Session, MediaError> {
        let mut log = self.0.lock().unwrap();
        log.next += 1;
        let id = SessionId(log.next);
        log.live.insert(id);
        let port = u16::try_from(20_000 + 4 * log.next).unwrap();
        let ep = |p: u16| Endpoint {
            rtp: SocketAddr::from(([127, 0, 0, 1], p)),
            rtcp: SocketAddr::from(([127, 0, 0, 1], p + 1)),
        };
        Ok(Session {
            id,
            a: ep(port),
            b: ep(port + 2),
        })
    }

    fn update_leg(&mut self, session: SessionId, side: Side, remote: LegRemote) {
        self.0.lock().unwrap().updates.push((session, side, remote));
    }

    fn play_tone(
        &mut self,
        _session: SessionId,
        side: Side,
        tone: Option<voxgate_media::tone::TonePlayer>,
    ) {
        let pt = tone.map(|mut t| {
            let mut pkt = [0u8; voxgate_media::tone::PACKET_LEN];
            t.next_packet(&mut pkt);
            pkt[1] & 0x7f
        });
        self.0.lock().unwrap().tones.push((side, pt.is_some(), pt));
    }

    fn release_session(&mut self, session: SessionId) {
        assert!(
            self.0.lock().unwrap().live.remove(&session),
            "released twice or unknown: {session}"
        );
    }
}

/// Agents by username, each with the phones it is registered from. Everyone who calls
/// is authenticated as the From user (digest auth has its own tests).
#[derive(Default)]
struct TestDirectory {
    agents: HashMap<String, (Party, Vec<Target>)>,
    /// Trunks by name: the number is put into `uri` where it says `{n}`.
    trunks: HashMap<String, TrunkDial>,
    /// Carriers' source addresses, and the trunk each belongs to.
    carriers: HashMap<IpAddr, String>,
    /// Inbound numbers and the agent each rings.
    numbers: HashMap<String, String>,
    /// Where agents' calls to numbers (`+…`) go.
    default_trunk: Option<String>,
}

impl Directory for TestDirectory {
    fn authenticate(
        &mut self,
        invite: &Message,
        source: IpAddr,
        _wall: DateTime<Utc>,
        _random: [u8; 8],
    ) -> Result<Caller, Reply> {
        let from = invite.from().uri.to_owned();
        if let Some(trunk) = self.carriers.get(&source) {
            let number = from
                .trim_start_matches("sip:")
                .split('@')
                .next()
                .unwrap_or_default();
            return Ok(Caller::Trunk {
                trunk_id: trunk.clone(),
                number: number.to_owned(),
            });
        }
        let user = from
            .trim_start_matches("sip:")
            .split('@')
            .next()
            .unwrap_or_default();
        self.agents
            .get(user)
            .map(|(p, _)| Caller::Agent(p.clone()))
            .ok_or_else(|| Reply::new(403, "Forbidden"))
    }

    fn route(&self, caller: &Caller, user: &str) -> Route {
        match caller {
            Caller::Trunk { .. } => match self.numbers.get(user) {
                Some(agent) => self.agent(agent),
                None => Route::NotFound,
            },
            Caller::Agent(_) if user.starts_with('+') => {
                match self
                    .default_trunk
                    .as_deref()
                    .map(|t| self.dial_out(t, user, None))
                {
                    Some(Ok(d)) => Route::Trunk(Box::new(d)),
                    _ => Route::NotFound,
                }
            }
            Caller::Agent(_) => self.agent(user),
        }
    }

    fn agent(&self, user: &str) -> Route {
        if user == "park" {
            return Route::Answer;
        }
        if user == "app" {
            let url = "http://app.test/voice".to_owned();
            return Route::Program(crate::calls::env::ProgramRoute::Webhook(url));
        }
        match self.agents.get(user) {
            None => Route::NotFound,
            Some((_, t)) if t.is_empty() => Route::Offline,
            Some((party, targets)) => Route::Agent {
                party: party.clone(),
                targets: targets.clone(),
                record: None,
            },
        }
    }

    fn dial_out(
        &self,
        trunk: &str,
        number: &str,
        _caller_id: Option<&str>,
    ) -> Result<TrunkDial, DialOutError> {
        let t = self.trunks.get(trunk).ok_or(DialOutError::NoTrunk)?;
        Ok(TrunkDial {
            uri: t.uri.replace("{n}", number),
            ..t.clone()
        })
    }
}

/// A phone: where it is, and the requests and responses the gateway sent it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Phone {
    peer: Peer,
}

impl Phone {
    fn udp(port: u16) -> Phone {
        Phone::at([127, 0, 0, 1], port)
    }

    fn at(ip: [u8; 4], port: u16) -> Phone {
        Phone {
            peer: Peer {
                transport: Transport::Udp,
                addr: SocketAddr::from((ip, port)),
                conn: None,
            },
        }
    }

    fn tcp(port: u16, conn: u64) -> Phone {
        Phone {
            peer: Peer {
                transport: Transport::Tcp,
                addr: SocketAddr::from(([127, 0, 0, 1], port)),
                conn: Some(conn),
            },
        }
    }

    fn uri(&self, user: &str) -> String {
        match self.peer.transport {
            Transport::Tcp => format!("sip:{user}@{};transport=tcp", self.peer.addr),
            _ => format!("sip:{user}@{}", self.peer.addr),
        }
    }

    fn via(&self, branch: &str) -> String {
        let t = if self.peer.transport == Transport::Tcp {
            "TCP"
        } else {
            "UDP"
        };
        format!("SIP/2.0/{t} {};branch=z9hG4bK{branch}", self.peer.addr)
    }
}

fn offer_sdp(port: u16, direction: &str) -> String {
    format!(
        "v=0\r\no=phone 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
         m=audio {port} RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n\
         a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na={direction}\r\n"
    )
}

fn answer_sdp(port: u16) -> String {
    format!(
        "v=0\r\no=phone 2 2 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
         m=audio {port} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n\
         a=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\n"
    )
}

/// A dialog as a simulated phone keeps it (just enough for BYE, ACK and re-INVITE).
#[derive(Clone, Debug)]
struct PhoneDialog {
    phone: Phone,
    call_id: String,
    local: String,
    remote: String,
    remote_target: String,
    cseq: u32,
}

impl PhoneDialog {
    fn request(&mut self, method: &str, branch: &str) -> MessageBuilder {
        self.cseq += 1;
        let m = Method::from_token(method);
        MessageBuilder::request(&m, &self.remote_target)
            .header("Via", &self.phone.via(branch))
            .header("Max-Forwards", "70")
            .header("From", &self.local)
            .header("To", &self.remote)
            .header("Call-ID", &self.call_id)
            .header("CSeq", &format!("{} {method}", self.cseq))
            .header("Contact", &format!("<{}>", self.phone.uri("phone")))
    }
}

fn contact_uri(msg: &Message) -> String {
    let c = msg.header(HeaderName::Contact).unwrap();
    let start = c.find('<').map_or(0, |i| i + 1);
    let end = c.find('>').unwrap_or(c.len());
    c[start..end].to_owned()
}

struct Sim {
    engine: CallEngine,
    layer: TransactionLayer,
    dir: TestDirectory,
    media: Arc<Mutex<MediaLog>>,
    now: Instant,
    /// What the gateway sent, not yet looked at by the test: (to, message).
    sent: Vec<(Peer, Message)>,
    records: Vec<CallChange>,
    answered: Vec<String>,
    /// Call programs' HTTP requests, not yet answered by the test.
    requests: Vec<crate::calls::fetch::ProgramRequest>,
    /// Stream connections that are closed: sending on them fails.
    dead_conns: HashSet<u64>,
    branches: u64,
}

impl Sim {
    fn new() -> Sim {
        let media = Arc::new(Mutex::new(MediaLog::default()));
        let start = Instant::now();
        let engine = CallEngine::new(
            EngineConfig {
                public_ip: "127.0.0.1".parse().unwrap(),
                sip_port: 5060,
                tls_port: None,
                sdp: SdpConfig::default(),
                ring_timeout: RING_TIMEOUT,
            },
            Box::new(TestMedia(media.clone())),
            Clock::new(start, "2026-12-05T12:00:00Z".parse().unwrap()),
            7,
        );
        Sim {
            engine,
            layer: TransactionLayer::new(TimerConfig::default()),
            dir: TestDirectory::default(),
            media,
            now: start,
            sent: Vec::new(),
            records: Vec::new(),
            answered: Vec::new(),
            requests: Vec::new(),
            dead_conns: HashSet::new(),
            branches: 0,
        }
    }

    fn agent(&mut self, username: &str, max_calls: usize, phones: &[Phone]) {
        let party = Party {
            agent: AgentId::new(format!("agt_{username}")),
            username: username.to_owned(),
            max_concurrent_calls: max_calls,
        };
        let targets = phones
            .iter()
            .map(|p| Target {
                uri: p.uri(username),
                peer: p.peer,
            })
            .collect();
        self.dir
            .agents
            .insert(username.to_owned(), (party, targets));
    }

    fn branch(&mut self) -> String {
        self.branches += 1;
        format!("sim{}", self.branches)
    }

    /// A datagram (or stream message) from a phone, handled as the SIP core handles it.
    fn deliver(&mut self, from: Phone, bytes: Bytes) {
        let msg = Message::parse(bytes).expect("the test sends valid SIP");
        let now = self.now;
        match self.layer.handle_incoming(msg, from.peer, now) {
            Some(Incoming::Request { tx, msg, .. }) => {
                if msg.method() == Some(&Method::Ack) {
                } else if msg.to().tag().is_some() {
                    if !self
                        .engine
                        .on_in_dialog(&mut self.layer, tx, msg.clone(), now)
                    {
                        let r = MessageBuilder::response_to(&msg, 481, "No Dialog", Some("x"));
                        let _ = self.layer.send_response(tx, r.build(), now);
                    }
                } else if msg.method() == Some(&Method::Invite) {
                    let reply = self.engine.on_invite(
                        &mut self.layer,
                        &mut self.dir,
                        tx,
                        msg.clone(),
                        from.peer.addr.ip(),
                        from.peer,
                        now,
                    );
                    if let Some(reply) = reply {
                        let mut b =
                            MessageBuilder::response_to(&msg, reply.code, reply.reason, Some("gw"));
                        for (name, value) in &reply.headers {
                            b = b.header(name, value);
                        }
                        let _ = self.layer.send_response(tx, b.build(), now);
                    }
                }
            }
            Some(Incoming::Cancel {
                tx, invite, msg, ..
            }) => {
                let known = invite.is_some_and(|i| self.engine.knows_invite(i));
                let (code, reason) = if known {
                    (200, "OK")
                } else {
                    (481, "Call/Transaction Does Not Exist")
                };
                let r = MessageBuilder::response_to(&msg, code, reason, Some("gw")).build();
                let _ = self.layer.send_response(tx, r, now);
                if let (true, Some(inv)) = (known, invite) {
                    self.engine.on_cancel(&mut self.layer, inv, now);
                }
            }
            Some(Incoming::Ack { msg, .. }) => self.engine.on_ack(&msg),
            Some(Incoming::Response { .. }) | None => {}
        }
        self.pump();
    }

    /// Layer events into the engine, transmits out to the phones, engine output collected.
    fn pump(&mut self) {
        let now = self.now;
        loop {
            while let Some(ev) = self.layer.poll_event() {
                match ev {
                    TxEvent::Response { tx, msg } => {
                        self.engine.on_response(&mut self.layer, tx, msg, now);
                    }
                    TxEvent::Timeout {
                        tx: TxId::Client(tx),
                    } => self.engine.on_client_failure(&mut self.layer, tx, 408, now),
                    TxEvent::TransportError {
                        tx: TxId::Client(tx),
                    } => self.engine.on_client_failure(&mut self.layer, tx, 503, now),
                    TxEvent::Terminated {
                        tx: TxId::Client(tx),
                    } => self.engine.on_client_terminated(tx),
                    _ => {}
                }
            }
            let mut failed = false;
            while let Some(t) = self.layer.poll_transmit() {
                if t.to.conn.is_some_and(|c| self.dead_conns.contains(&c)) {
                    self.layer.handle_transport_error(&t.to, now);
                    failed = true;
                    continue;
                }
                self.sent.push((t.to, Message::parse(t.bytes).unwrap()));
            }
            if !failed {
                break;
            }
        }
        while let Some(out) = self.engine.poll_output() {
            match out {
                Output::Record(c) => self.records.push(c),
                Output::Answered { sip_call_id } => self.answered.push(sip_call_id),
                Output::ProgramRequest(r) => self.requests.push(r),
                Output::Event(_) => {}
            }
        }
    }

    /// Advances the virtual clock by `d`, firing every timer on the way.
    fn advance(&mut self, d: Duration) {
        let until = self.now + d;
        loop {
            let next = [self.layer.poll_timeout(), self.engine.poll_timeout()]
                .into_iter()
                .flatten()
                .min();
            match next {
                Some(at) if at <= until => {
                    self.now = self.now.max(at);
                    self.layer.handle_timeout(self.now);
                    self.engine
                        .handle_timeout(&mut self.layer, &mut self.dir, self.now);
                    self.pump();
                }
                _ => break,
            }
        }
        self.now = until;
    }

    /// Takes the messages sent to `phone` so far.
    fn take(&mut self, phone: Phone) -> Vec<Message> {
        let (mine, rest): (Vec<_>, Vec<_>) = self
            .sent
            .drain(..)
            .partition(|(to, _)| to.addr == phone.peer.addr);
        self.sent = rest;
        mine.into_iter().map(|(_, m)| m).collect()
    }

    /// The one request with `method` sent to `phone` (others stay), or a panic.
    fn expect_request(&mut self, phone: Phone, method: &Method) -> Message {
        let i = self
            .sent
            .iter()
            .position(|(to, m)| to.addr == phone.peer.addr && m.method() == Some(method))
            .unwrap_or_else(|| panic!("no {method:?} to {phone:?}; sent: {:?}", self.summary()));
        self.sent.remove(i).1
    }

    /// The first response with `code` sent to `phone` (others stay).
    fn expect_response(&mut self, phone: Phone, code: u16) -> Message {
        let i = self
            .sent
            .iter()
            .position(|(to, m)| to.addr == phone.peer.addr && m.status() == Some(code))
            .unwrap_or_else(|| panic!("no {code} to {phone:?}; sent: {:?}", self.summary()));
        self.sent.remove(i).1
    }

    fn summary(&self) -> Vec<String> {
        self.sent
            .iter()
            .map(|(to, m)| {
                let what = m
                    .method()
                    .map_or_else(|| format!("{:?}", m.status()), |x| x.as_str().to_owned());
                format!("{what} {} -> {}", m.cseq().method.as_str(), to.addr)
            })
            .collect()
    }

    /// `caller` (an agent's phone) calls `user`: the INVITE, and the dialog the caller
    /// will keep (its remote tag filled in when the gateway answers).
    fn call(&mut self, caller: Phone, from_user: &str, user: &str, sdp: &str) -> PhoneDialog {
        let branch = self.branch();
        let call_id = format!("{branch}@phone");
        let local = format!("<sip:{from_user}@127.0.0.1>;tag=c{branch}");
        let invite = MessageBuilder::request(&Method::Invite, &format!("sip:{user}@{GATEWAY}"))
            .header("Via", &caller.via(&branch))
            .header("Max-Forwards", "70")
            .header("From", &local)
            .header("To", &format!("<sip:{user}@{GATEWAY}>"))
            .header("Call-ID", &call_id)
            .header("CSeq", "1 INVITE")
            .header("Contact", &format!("<{}>", caller.uri(from_user)))
            .body("application/sdp", sdp.as_bytes())
            .build();
        self.deliver(caller, invite);
        PhoneDialog {
            phone: caller,
            call_id,
            local,
            remote: String::new(),
            remote_target: String::new(),
            cseq: 1,
        }
    }

    /// The caller got the gateway's 2xx: learn the dialog and ACK it.
    fn caller_acks(&mut self, d: &mut PhoneDialog, ok: &Message) {
        d.remote = ok.header(HeaderName::To).unwrap().to_owned();
        d.remote_target = contact_uri(ok);
        let branch = self.branch();
        let ack = MessageBuilder::request(&Method::Ack, &d.remote_target)
            .header("Via", &d.phone.via(&branch))
            .header("Max-Forwards", "70")
            .header("From", &d.local)
            .header("To", &d.remote)
            .header("Call-ID", &d.call_id)
            .header("CSeq", &format!("{} ACK", ok.cseq().seq))
            .build();
        self.deliver(d.phone, ack);
    }

    /// A rung phone answers the gateway's INVITE with `code` (a 2xx carries SDP); the
    /// dialog it keeps when it answered 2xx.
    fn respond(&mut self, phone: Phone, invite: &Message, code: u16, tag: &str) -> PhoneDialog {
        let reason = match code {
            180 => "Ringing",
            200 => "OK",
            486 => "Busy Here",
            _ => "Whatever",
        };
        let mut b = MessageBuilder::response_to(invite, code, reason, Some(tag))
            .header("Contact", &format!("<{}>", phone.uri("callee")));
        if (200..300).contains(&code) {
            b = b.body("application/sdp", answer_sdp(40_000).as_bytes());
        }
        self.deliver(phone, b.build());
        PhoneDialog {
            phone,
            call_id: invite.call_id().to_owned(),
            local: format!("{};tag={tag}", invite.header(HeaderName::To).unwrap()),
            remote: invite.header(HeaderName::From).unwrap().to_owned(),
            remote_target: contact_uri(invite),
            cseq: 100,
        }
    }

    /// A phone answers a request in a dialog (BYE, re-INVITE) with `code`.
    fn reply(&mut self, phone: Phone, req: &Message, code: u16, body: Option<String>) {
        let mut b = MessageBuilder::response_to(req, code, "OK", None)
            .header("Contact", &format!("<{}>", phone.uri("phone")));
        if let Some(sdp) = body {
            b = b.body("application/sdp", sdp.as_bytes());
        }
        self.deliver(phone, b.build());
    }

    /// A phone sends BYE in its dialog and gets 200.
    fn bye(&mut self, d: &mut PhoneDialog) {
        let branch = self.branch();
        let bye = d.request("BYE", &branch).build();
        self.deliver(d.phone, bye);
        self.expect_response(d.phone, 200);
    }

    /// Statuses recorded for the call's end and legs, in order.
    fn ended(&self) -> Vec<(CallStatus, String, HangupBy)> {
        self.records
            .iter()
            .filter_map(|c| match c {
                CallChange::CallEnded {
                    status,
                    hangup_cause,
                    hangup_by,
                    ..
                } => Some((*status, hangup_cause.clone(), *hangup_by)),
                _ => None,
            })
            .collect()
    }

    fn leg_statuses(&self) -> Vec<(String, CallStatus)> {
        self.records
            .iter()
            .filter_map(|c| match c {
                CallChange::LegStatus { leg_id, status, .. } => Some((leg_id.clone(), *status)),
                _ => None,
            })
            .collect()
    }

    /// The invariants every scenario must end in, after every timer has run out.
    fn assert_clean(&mut self) {
        self.advance(Duration::from_secs(64));
        assert_eq!(self.engine.active_calls(), 0, "calls left");
        assert_eq!(self.engine.channel_count(), 0, "channels left");
        assert_eq!(self.engine.dialog_count(), 0, "dialogs left");
        assert_eq!(self.engine.orphan_count(), 0, "orphaned forks left");
        assert!(self.media.lock().unwrap().live.is_empty(), "media left");
        assert_eq!(self.layer.len(), 0, "transactions left");
        assert!(
            self.engine.poll_timeout().is_none(),
            "a timer is still armed"
        );
        let mut open: HashSet<String> = HashSet::new();
        for c in &self.records {
            match c {
                CallChange::CreateCall(n) => {
                    open.insert(n.id.clone());
                }
                CallChange::CallEnded { call_id, .. } => {
                    open.remove(call_id);
                }
                _ => {}
            }
        }
        assert!(open.is_empty(), "calls never recorded as ended: {open:?}");
    }
}

/// alice on one phone, bob on two: the first 2xx wins and the other fork is cancelled;
/// the caller's BYE ends the call and the bridged fork gets BYE.
#[test]
fn forking_first_answer_wins_and_the_other_fork_is_cancelled() {
    let mut sim = Sim::new();
    let (alice, bob1, bob2) = (Phone::udp(5061), Phone::udp(5062), Phone::udp(5063));
    sim.agent("alice", 1, &[alice]);
    sim.agent("bob", 1, &[bob1, bob2]);
    let mut caller = sim.call(alice, "alice", "bob", &offer_sdp(30_000, "sendrecv"));
    sim.expect_response(alice, 100);
    let inv1 = sim.expect_request(bob1, &Method::Invite);
    let inv2 = sim.expect_request(bob2, &Method::Invite);
    sim.respond(bob1, &inv1, 180, "b1");
    sim.expect_response(alice, 180);
    sim.advance(ms(1_500));
    sim.respond(bob2, &inv2, 200, "b2");
    sim.expect_request(bob2, &Method::Ack);
    let cancel = sim.expect_request(bob1, &Method::Cancel);
    sim.reply(bob1, &cancel, 200, None);
    sim.deliver(
        bob1,
        MessageBuilder::response_to(&inv1, 487, "Request Terminated", Some("b1")).build(),
    );
    let ok = sim.expect_response(alice, 200);
    assert!(String::from_utf8_lossy(ok.body()).contains("m=audio"));
    sim.caller_acks(&mut caller, &ok);
    assert_eq!(
        sim.answered,
        [caller.call_id.clone()],
        "one set-up reported"
    );
    // Media: both sides told where to send.
    assert!(sim.media.lock().unwrap().updates.len() >= 2);

    sim.advance(Duration::from_secs(10));
    sim.bye(&mut caller);
    let bye = sim.expect_request(bob2, &Method::Bye);
    sim.reply(bob2, &bye, 200, None);
    assert_eq!(
        sim.ended(),
        [(CallStatus::Completed, "BYE".to_owned(), HangupBy::Caller)]
    );
    let statuses = sim.leg_statuses();
    assert!(statuses.contains(&(statuses[0].0.clone(), CallStatus::Canceled)));
    sim.assert_clean();
}

/// The caller cancels while both forks ring: 487 to the caller, CANCEL to each fork.
/// A fork whose 200 crosses the CANCEL is ACKed and hung up (RFC 3261 §9.1 race).
#[test]
fn cancel_racing_a_fork_answer_hangs_the_late_fork_up() {
    let mut sim = Sim::new();
    let (alice, bob1, bob2) = (Phone::udp(5061), Phone::udp(5062), Phone::udp(5063));
    sim.agent("alice", 1, &[alice]);
    sim.agent("bob", 1, &[bob1, bob2]);
    let caller = sim.call(alice, "alice", "bob", &offer_sdp(30_000, "sendrecv"));
    let inv1 = sim.expect_request(bob1, &Method::Invite);
    let inv2 = sim.expect_request(bob2, &Method::Invite);
    sim.respond(bob1, &inv1, 180, "b1");
    sim.respond(bob2, &inv2, 180, "b2");
    // alice cancels.
    let invite_via = invite_via(&caller);
    let cancel = MessageBuilder::request(&Method::Cancel, &format!("sip:bob@{GATEWAY}"))
        .header("Via", &invite_via)
        .header("Max-Forwards", "70")
        .header("From", &caller.local)
        .header("To", &format!("<sip:bob@{GATEWAY}>"))
        .header("Call-ID", &caller.call_id)
        .header("CSeq", "1 CANCEL")
        .build();
    sim.deliver(alice, cancel);
    sim.expect_response(alice, 487);
    let c1 = sim.expect_request(bob1, &Method::Cancel);
    let c2 = sim.expect_request(bob2, &Method::Cancel);
    sim.reply(bob1, &c1, 200, None);
    sim.deliver(
        bob1,
        MessageBuilder::response_to(&inv1, 487, "Request Terminated", Some("b1")).build(),
    );
    // bob2 answered before it saw the CANCEL.
    sim.reply(bob2, &c2, 200, None);
    let _late = sim.respond(bob2, &inv2, 200, "b2");
    sim.expect_request(bob2, &Method::Ack);
    let bye = sim.expect_request(bob2, &Method::Bye);
    sim.reply(bob2, &bye, 200, None);
    assert_eq!(
        sim.ended(),
        [(CallStatus::Canceled, "CANCEL".to_owned(), HangupBy::Caller)]
    );
    sim.assert_clean();
}

/// The Via the caller's INVITE carried (a CANCEL must repeat it, RFC 3261 §9.1).
fn invite_via(caller: &PhoneDialog) -> String {
    let branch = caller.call_id.trim_end_matches("@phone");
    caller.phone.via(branch)
}

/// Nobody answers: after the ring timeout every fork is cancelled and the caller gets
/// 480; the call is `no-answer`.
#[test]
fn ring_timeout_cancels_the_forks_and_answers_480() {
    let mut sim = Sim::new();
    let (alice, bob1, bob2) = (Phone::udp(5061), Phone::udp(5062), Phone::udp(5063));
    sim.agent("alice", 1, &[alice]);
    sim.agent("bob", 1, &[bob1, bob2]);
    let _caller = sim.call(alice, "alice", "bob", &offer_sdp(30_000, "sendrecv"));
    let inv1 = sim.expect_request(bob1, &Method::Invite);
    let inv2 = sim.expect_request(bob2, &Method::Invite);
    sim.respond(bob1, &inv1, 180, "b1");
    sim.respond(bob2, &inv2, 180, "b2");
    sim.advance(RING_TIMEOUT - ms(1));
    assert!(sim.take(bob1).is_empty(), "nothing before the deadline");
    sim.advance(ms(1));
    for (phone, inv, tag) in [(bob1, &inv1, "b1"), (bob2, &inv2, "b2")] {
        let cancel = sim.expect_request(phone, &Method::Cancel);
        sim.reply(phone, &cancel, 200, None);
        sim.deliver(
            phone,
            MessageBuilder::response_to(inv, 487, "Request Terminated", Some(tag)).build(),
        );
    }
    let r = sim.expect_response(alice, 480);
    assert!(r.to().tag().is_some());
    assert_eq!(sim.ended()[0].0, CallStatus::NoAnswer);
    sim.assert_clean();
}

/// A fork to a phone registered over TCP whose connection has closed fails at once
/// (transport error = 503, RFC 3261 §8.1.3.1); the other fork still rings and answers.
/// Before the fix the core dropped the error and such a fork rang forever.
#[test]
fn a_fork_whose_transport_fails_does_not_hold_the_call() {
    let mut sim = Sim::new();
    let (alice, bob_udp, bob_tcp) = (Phone::udp(5061), Phone::udp(5062), Phone::tcp(5063, 9));
    sim.agent("alice", 1, &[alice]);
    sim.agent("bob", 1, &[bob_tcp, bob_udp]);
    sim.dead_conns.insert(9);
    let mut caller = sim.call(alice, "alice", "bob", &offer_sdp(30_000, "sendrecv"));
    let failed: Vec<_> = sim
        .leg_statuses()
        .into_iter()
        .filter(|(_, s)| *s == CallStatus::Failed)
        .collect();
    assert_eq!(failed.len(), 1, "the TCP fork failed at once: {failed:?}");
    let inv = sim.expect_request(bob_udp, &Method::Invite);
    let mut callee = sim.respond(bob_udp, &inv, 200, "b");
    let ok = sim.expect_response(alice, 200);
    sim.caller_acks(&mut caller, &ok);
    sim.bye(&mut callee);
    let bye = sim.expect_request(alice, &Method::Bye);
    sim.reply(alice, &bye, 200, None);
    assert_eq!(
        sim.ended(),
        [(CallStatus::Completed, "BYE".to_owned(), HangupBy::Callee)]
    );
    sim.assert_clean();
}

/// Every fork's transport fails: the caller gets 480 at once, not after 32 s.
#[test]
fn all_forks_failing_on_transport_answers_the_caller_at_once() {
    let mut sim = Sim::new();
    let (alice, bob_tcp) = (Phone::udp(5061), Phone::tcp(5063, 9));
    sim.agent("alice", 1, &[alice]);
    sim.agent("bob", 1, &[bob_tcp]);
    sim.dead_conns.insert(9);
    let _caller = sim.call(alice, "alice", "bob", &offer_sdp(30_000, "sendrecv"));
    sim.expect_response(alice, 480);
    assert_eq!(sim.ended()[0].0, CallStatus::Failed);
    sim.assert_clean();
}

/// Hold and resume: a re-INVITE from the callee is relayed to the caller as voxgate's own
/// offer, the answer comes back, the media is updated, and both sides ACK.
#[test]
fn re_invite_is_relayed_between_bridged_channels() {
    let mut sim = Sim::new();
    let (alice, bob) = (Phone::udp(5061), Phone::udp(5062));
    sim.agent("alice", 1, &[alice]);
    sim.agent("bob", 1, &[bob]);
    let mut caller = sim.call(alice, "alice", "bob", &offer_sdp(30_000, "sendrecv"));
    let inv = sim.expect_request(bob, &Method::Invite);
    let mut callee = sim.respond(bob, &inv, 200, "b");
    let ok = sim.expect_response(alice, 200);
    sim.caller_acks(&mut caller, &ok);
    let updates_before = sim.media.lock().unwrap().updates.len();

    let branch = sim.branch();
    let reinvite = callee
        .request("INVITE", &branch)
        .body("application/sdp", offer_sdp(40_000, "sendonly").as_bytes())
        .build();
    sim.deliver(bob, reinvite);
    let relayed = sim.expect_request(alice, &Method::Invite);
    assert!(String::from_utf8_lossy(relayed.body()).contains("a=sendonly"));
    sim.reply(alice, &relayed, 200, Some(offer_sdp(30_000, "recvonly")));
    sim.expect_request(alice, &Method::Ack);
    let ok = sim.expect_response(bob, 200);
    assert!(String::from_utf8_lossy(ok.body()).contains("a=recvonly"));
    assert!(sim.media.lock().unwrap().updates.len() > updates_before);
    // A second offer while one is pending would be a 491; this one completed, so a
    // resume goes through the same way.
    let branch = sim.branch();
    let ack = callee.request("ACK", &branch).build();
    sim.deliver(bob, ack);
    sim.bye(&mut callee);
    let bye = sim.expect_request(alice, &Method::Bye);
    sim.reply(alice, &bye, 200, None);
    sim.assert_clean();
}

/// The caller asked for a session timer and never refreshes: the session expires and
/// voxgate ends the call with BYE to both (RFC 4028 §10).
#[test]
fn session_timer_expiry_ends_the_call() {
    let mut sim = Sim::new();
    let (alice, bob) = (Phone::udp(5061), Phone::udp(5062));
    sim.agent("alice", 1, &[alice]);
    sim.agent("bob", 1, &[bob]);
    let branch = sim.branch();
    let call_id = format!("{branch}@phone");
    let local = format!("<sip:alice@127.0.0.1>;tag=c{branch}");
    let invite = MessageBuilder::request(&Method::Invite, &format!("sip:bob@{GATEWAY}"))
        .header("Via", &alice.via(&branch))
        .header("Max-Forwards", "70")
        .header("From", &local)
        .header("To", &format!("<sip:bob@{GATEWAY}>"))
        .header("Call-ID", &call_id)
        .header("CSeq", "1 INVITE")
        .header("Supported", "timer")
        .header("Session-Expires", "120;refresher=uac")
        .header("Contact", &format!("<{}>", alice.uri("alice")))
        .body("application/sdp", offer_sdp(30_000, "sendrecv").as_bytes())
        .build();
    sim.deliver(alice, invite);
    let mut caller = PhoneDialog {
        phone: alice,
        call_id,
        local,
        remote: String::new(),
        remote_target: String::new(),
        cseq: 1,
    };
    let inv = sim.expect_request(bob, &Method::Invite);
    sim.respond(bob, &inv, 200, "b");
    let ok = sim.expect_response(alice, 200);
    assert!(
        ok.header_named("Session-Expires").is_some(),
        "timer accepted"
    );
    sim.caller_acks(&mut caller, &ok);
    sim.take(alice);
    sim.take(bob);
    // RFC 4028 §10: the side that does not refresh ends the session at the interval
    // minus min(32 s, a third of it): 120 - 32 = 88 s.
    sim.advance(Duration::from_secs(87));
    assert_eq!(sim.engine.active_calls(), 1, "alive before expiry");
    sim.advance(Duration::from_secs(2));
    let bye_a = sim.expect_request(alice, &Method::Bye);
    let bye_b = sim.expect_request(bob, &Method::Bye);
    sim.reply(alice, &bye_a, 200, None);
    sim.reply(bob, &bye_b, 200, None);
    assert_eq!(
        sim.ended(),
        [(
            CallStatus::Completed,
            "session expired".to_owned(),
            HangupBy::System
        )]
    );
    sim.assert_clean();
}

/// voxgate answers a call itself (the channel a menu will run on): its own SDP answer
/// with one voice codec, a set-up measured, an API hangup sends BYE.
#[test]
fn voxgate_answers_a_channel_itself() {
    let mut sim = Sim::new();
    let alice = Phone::udp(5061);
    sim.agent("alice", 1, &[alice]);
    let mut caller = sim.call(alice, "alice", "park", &offer_sdp(30_000, "sendrecv"));
    let ok = sim.expect_response(alice, 200);
    let body = String::from_utf8_lossy(ok.body()).into_owned();
    assert!(body.contains("m=audio 20004 RTP/AVP 0 101"), "{body}");
    sim.caller_acks(&mut caller, &ok);
    let (session, side, remote) = sim.media.lock().unwrap().updates[0].clone();
    assert_eq!((session, side), (SessionId(1), Side::A));
    assert_eq!(remote.rtp, Some("127.0.0.1:30000".parse().unwrap()));
    let call = sim
        .records
        .iter()
        .find_map(|c| match c {
            CallChange::CreateCall(n) => Some(n.id.clone()),
            _ => None,
        })
        .unwrap();
    sim.engine
        .handle_command(
            &mut sim.layer,
            &mut sim.dir,
            Command::Hangup {
                call: super::types::CallId::new(call),
            },
            sim.now,
        )
        .unwrap();
    sim.pump();
    let bye = sim.expect_request(alice, &Method::Bye);
    sim.reply(alice, &bye, 200, None);
    assert_eq!(
        sim.ended(),
        [(
            CallStatus::Completed,
            "api hangup".to_owned(),
            HangupBy::Api
        )]
    );
    sim.assert_clean();
}

/// A number run by the operator's app: the engine asks it (an output the driver sends),
/// runs the verbs of its reply (pause answers the call first, then the program's timer
/// runs on the engine's clock) and hangs up; the app is not asked again after hangup.
#[test]
fn a_webhook_program_answers_pauses_on_the_engine_clock_and_hangs_up() {
    let mut sim = Sim::new();
    let alice = Phone::udp(5061);
    sim.agent("alice", 1, &[alice]);
    let mut caller = sim.call(alice, "alice", "app", &offer_sdp(30_000, "sendrecv"));
    let request = sim.requests.pop().expect("the app is asked for the verbs");
    assert!(sim.requests.is_empty());
    assert_eq!(request.url, "http://app.test/voice");
    assert_eq!(request.body["direction"], "inbound");
    assert_eq!(request.body["call_id"], request.call.to_string());
    // Nothing answered while the app thinks.
    assert!(sim.sent.iter().all(|(_, m)| m.status() != Some(200)));
    let reply = crate::calls::fetch::ProgramReply {
        call: request.call.clone(),
        request: request.request,
        result: Ok(br#"[{"verb": "pause", "seconds": 2}, {"verb": "hangup"}]"#.to_vec()),
    };
    sim.engine
        .on_program_reply(&mut sim.layer, &mut sim.dir, reply, sim.now);
    sim.pump();
    let ok = sim.expect_response(alice, 200);
    sim.caller_acks(&mut caller, &ok);
    // The pause: no BYE before 2 s, one right after.
    sim.advance(Duration::from_millis(1900));
    assert!(sim
        .sent
        .iter()
        .all(|(_, m)| m.method() != Some(&Method::Bye)));
    sim.advance(Duration::from_millis(200));
    let bye = sim.expect_request(alice, &Method::Bye);
    sim.reply(alice, &bye, 200, None);
    assert_eq!(
        sim.ended(),
        [(
            CallStatus::Completed,
            "program hangup".to_owned(),
            HangupBy::System
        )]
    );
    assert!(sim.requests.is_empty(), "not asked again after hangup");
    sim.assert_clean();
}

/// A program's dial bridges the agent with the caller voxgate answered; the agent's BYE
/// ends only the bridge, and the program goes on (the app is asked again with
/// `dial_status`) until its own hangup.
#[test]
fn a_program_dial_bridges_an_agent_and_the_program_outlives_the_bridge() {
    let mut sim = Sim::new();
    let (alice, bob) = (Phone::udp(5061), Phone::udp(5062));
    sim.agent("alice", 1, &[alice]);
    sim.agent("bob", 1, &[bob]);
    let mut caller = sim.call(alice, "alice", "app", &offer_sdp(30_000, "sendrecv"));
    let reply = |sim: &mut Sim, body: &str| {
        let request = sim.requests.pop().expect("the app is asked");
        let reply = crate::calls::fetch::ProgramReply {
            call: request.call.clone(),
            request: request.request,
            result: Ok(body.as_bytes().to_vec()),
        };
        sim.engine
            .on_program_reply(&mut sim.layer, &mut sim.dir, reply, sim.now);
        sim.pump();
        request
    };
    reply(
        &mut sim,
        r#"[{"verb": "dial", "targets": [{"type": "agent", "agent": "bob"}]}]"#,
    );
    // The caller is answered as the dial starts; bob rings with voxgate's own offer.
    let ok = sim.expect_response(alice, 200);
    sim.caller_acks(&mut caller, &ok);
    let inv = sim.expect_request(bob, &Method::Invite);
    let mut callee = sim.respond(bob, &inv, 200, "b");
    sim.advance(Duration::from_millis(1));
    assert!(sim.requests.is_empty(), "bridged: the app waits");
    let bridged = sim.media.lock().unwrap().updates.clone();
    assert!(
        bridged
            .iter()
            .any(|(_, side, r)| *side == Side::B && r.rtp.is_some()),
        "the relay got bob's side: {bridged:?}"
    );
    // Bob hangs up: the caller stays, and the app is asked what next.
    sim.bye(&mut callee);
    sim.advance(Duration::from_millis(1));
    assert!(
        sim.sent
            .iter()
            .all(|(_, m)| m.method() != Some(&Method::Bye)),
        "the caller is not hung up with the agent"
    );
    let asked = reply(&mut sim, r#"[{"verb": "hangup"}]"#);
    assert_eq!(asked.body["variables"]["dial_status"], "completed");
    let bye = sim.expect_request(alice, &Method::Bye);
    sim.reply(alice, &bye, 200, None);
    assert_eq!(
        sim.ended(),
        [(
            CallStatus::Completed,
            "program hangup".to_owned(),
            HangupBy::System
        )]
    );
    sim.assert_clean();
}

/// A leg that does not exist, or one that is not ringing, cannot be answered.
#[test]
fn answer_command_checks_the_channel() {
    let mut sim = Sim::new();
    let r = sim.engine.handle_command(
        &mut sim.layer,
        &mut sim.dir,
        Command::Answer {
            leg: LegId::new("leg_nope"),
        },
        sim.now,
    );
    assert_eq!(r, Err(super::control::ControlError::NotFound));
}

/// Refusals before ringing leave a record and no state: 404, 480, 486.
#[test]
fn refusals_leave_records_and_no_state() {
    let mut sim = Sim::new();
    let (alice, bob, carol) = (Phone::udp(5061), Phone::udp(5062), Phone::udp(5064));
    sim.agent("alice", 1, &[alice]);
    sim.agent("bob", 1, &[bob]);
    sim.agent("carol", 5, &[carol]);
    sim.agent("dave", 1, &[]);
    sim.call(alice, "alice", "nobody", &offer_sdp(30_000, "sendrecv"));
    sim.expect_response(alice, 404);
    sim.call(alice, "alice", "dave", &offer_sdp(30_000, "sendrecv"));
    sim.expect_response(alice, 480);
    // bob is on a call with carol: a second call to bob is busy.
    let _c = sim.call(carol, "carol", "bob", &offer_sdp(30_002, "sendrecv"));
    let inv = sim.expect_request(bob, &Method::Invite);
    sim.call(alice, "alice", "bob", &offer_sdp(30_000, "sendrecv"));
    sim.expect_response(alice, 486);
    sim.respond(bob, &inv, 486, "b");
    sim.expect_response(carol, 486);
    let statuses: Vec<CallStatus> = sim.ended().into_iter().map(|e| e.0).collect();
    assert_eq!(
        statuses,
        [
            CallStatus::Failed,
            CallStatus::Failed,
            CallStatus::Busy,
            CallStatus::Busy
        ]
    );
    sim.assert_clean();
}

// -------------------------------------------------------------------------------------
// Click-to-call

const LEAD: &str = "+14155550100";

/// A carrier with two addresses, asking for digest credentials.
fn with_carrier(sim: &mut Sim, first: Phone, second: Phone) {
    sim.dir.trunks.insert(
        "carrier".to_owned(),
        TrunkDial {
            trunk_id: "trk_carrier".to_owned(),
            uri: format!("sip:{{n}}@{}", first.peer.addr),
            targets: vec![first.peer, second.peer],
            from_user: "+15550001111".to_owned(),
            credentials: Some(Credentials {
                username: "acct".to_owned(),
                password: "secret".to_owned(),
            }),
            codecs: vec![
                voxgate_sip::sdp::Codec::pcmu(),
                voxgate_sip::sdp::Codec::pcma(),
            ],
            limits: super::pacer::TrunkLimits::default(),
            // 1.2 cents a minute, per second after the first minute.
            rate: Some(crate::trunks::cost::Rate {
                per_minute_micros: 12_000,
                currency: "USD".to_owned(),
                increment_seconds: 1,
                minimum_seconds: 60,
            }),
        },
    );
}

fn click_to_call(sim: &mut Sim, agent: &str, time_limit: Option<Duration>) {
    originate(sim, "call_c2c", agent, time_limit);
}

fn originate(sim: &mut Sim, call: &str, agent: &str, time_limit: Option<Duration>) {
    let r = sim.engine.handle_command(
        &mut sim.layer,
        &mut sim.dir,
        Command::Originate(Box::new(Originate {
            call: super::types::CallId::new(call),
            agent: agent.to_owned(),
            to: LEAD.to_owned(),
            trunk: "carrier".to_owned(),
            caller_id: None,
            ring_timeout: None,
            time_limit,
            record: None,
            listen: false,
        })),
        sim.now,
    );
    assert_eq!(r, Ok(()));
    sim.pump();
}

fn has_ringing_record(sim: &Sim) -> bool {
    sim.records
        .iter()
        .any(|c| matches!(c, CallChange::CallRinging { call_id, .. } if call_id == "call_c2c"))
}

fn answered_records(sim: &Sim) -> usize {
    sim.records
        .iter()
        .filter(|c| matches!(c, CallChange::CallAnswered { .. }))
        .count()
}

/// The agent's phone rings with voxgate's own offer and shows the lead's number; when it
/// answers, the lead is dialled through the trunk with the agent's codec only, the
/// carrier's 407 is answered with the trunk's credentials, and the 200 bridges them.
/// The lead's BYE ends the call and the agent gets BYE.
#[test]
fn click_to_call_rings_the_agent_then_the_lead_and_bridges() {
    let mut sim = Sim::new();
    let (alice, carrier, spare) = (Phone::udp(5061), Phone::udp(5090), Phone::udp(5091));
    sim.agent("alice", 1, &[alice]);
    with_carrier(&mut sim, carrier, spare);
    click_to_call(&mut sim, "alice", None);
    assert!(has_ringing_record(&sim));

    let inv = sim.expect_request(alice, &Method::Invite);
    assert!(
        inv.from().uri.contains(LEAD),
        "agent sees the lead: {}",
        inv.from().uri
    );
    let offer = String::from_utf8_lossy(inv.body()).into_owned();
    assert!(offer.contains("m=audio 20004 RTP/AVP 0 8 101"), "{offer}");
    assert!(sim.take(carrier).is_empty(), "the lead waits for the agent");
    sim.respond(alice, &inv, 180, "a1");
    let mut agent = sim.respond(alice, &inv, 200, "a1");
    sim.expect_request(alice, &Method::Ack);
    assert_eq!(answered_records(&sim), 0, "not answered until the lead is");
    assert_eq!(
        sim.media.lock().unwrap().tones,
        [(Side::A, true, Some(0))],
        "the agent hears ringback (PCMU) while the lead is dialled"
    );

    let first = sim.expect_request(carrier, &Method::Invite);
    assert_eq!(
        first.request_uri(),
        Some(format!("sip:{LEAD}@127.0.0.1:5090").as_str())
    );
    assert!(first.from().uri.contains("+15550001111"));
    let to_lead = String::from_utf8_lossy(first.body()).into_owned();
    assert!(
        to_lead.contains("m=audio 20006 RTP/AVP 0 101"),
        "agent's codec only: {to_lead}"
    );
    let challenge =
        MessageBuilder::response_to(&first, 407, "Proxy Authentication Required", Some("k1"))
            .header(
                "Proxy-Authenticate",
                "Digest realm=\"carrier\", nonce=\"abc123\", qop=\"auth\", algorithm=MD5",
            )
            .build();
    sim.deliver(carrier, challenge);
    sim.expect_request(carrier, &Method::Ack);
    let second = sim.expect_request(carrier, &Method::Invite);
    assert_eq!(second.call_id(), first.call_id());
    assert_eq!(second.cseq().seq, first.cseq().seq + 1);
    let auth = second.header(HeaderName::ProxyAuthorization).unwrap();
    assert!(
        auth.contains("username=\"acct\"") && auth.contains("nonce=\"abc123\""),
        "{auth}"
    );
    // The digest is the trunk password's, over the Request-URI.
    let parsed = voxgate_sip::auth::Authorization::parse(auth).unwrap();
    assert_eq!(Some(parsed.uri.as_str()), second.request_uri());
    let expected = voxgate_sip::auth::Challenge::parse(
        "Digest realm=\"carrier\", nonce=\"abc123\", qop=\"auth\", algorithm=MD5",
    )
    .unwrap()
    .answer(&voxgate_sip::auth::AnswerInput {
        username: "acct",
        secret: voxgate_sip::auth::ClientSecret::Password("secret"),
        method: "INVITE",
        uri: &parsed.uri,
        cnonce: &parsed.qop.as_ref().unwrap().cnonce,
        nc: 1,
    })
    .unwrap();
    assert_eq!(parsed.response, expected.response);

    sim.respond(carrier, &second, 180, "k2");
    let mut lead = sim.respond(carrier, &second, 200, "k2");
    sim.expect_request(carrier, &Method::Ack);
    assert_eq!(answered_records(&sim), 1);
    assert_eq!(
        sim.media.lock().unwrap().tones.last(),
        Some(&(Side::A, false, None)),
        "ringback stops when the lead answers"
    );
    {
        let log = sim.media.lock().unwrap();
        let sides: HashSet<Side> = log.updates.iter().map(|(_, side, _)| *side).collect();
        assert_eq!(sides.len(), 2, "both sides relayed");
    }
    sim.advance(Duration::from_secs(20));
    sim.bye(&mut lead);
    let bye = sim.expect_request(alice, &Method::Bye);
    sim.reply(alice, &bye, 200, None);
    let _ = &mut agent;
    assert_eq!(
        sim.ended(),
        [(CallStatus::Completed, "BYE".to_owned(), HangupBy::Callee)]
    );
    // The call is the trunk's, and its 20 s bill at the minimum of 60 s.
    let trunks: Vec<&str> = sim
        .records
        .iter()
        .filter_map(|r| match r {
            CallChange::CallTrunk { trunk_id, .. } => Some(trunk_id.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(trunks, ["trk_carrier"]);
    let costs: Vec<(i64, &str)> = sim
        .records
        .iter()
        .filter_map(|r| match r {
            CallChange::CallCost {
                cost_micros,
                currency,
                ..
            } => Some((*cost_micros, currency.as_str())),
            _ => None,
        })
        .collect();
    assert_eq!(costs, [(12_000, "USD")]);
    sim.assert_clean();
}

/// A busy lead ends the call `busy` and hangs the agent up.
#[test]
fn click_to_call_busy_lead() {
    let mut sim = Sim::new();
    let (alice, carrier, spare) = (Phone::udp(5061), Phone::udp(5090), Phone::udp(5091));
    sim.agent("alice", 1, &[alice]);
    with_carrier(&mut sim, carrier, spare);
    click_to_call(&mut sim, "alice", None);
    let inv = sim.expect_request(alice, &Method::Invite);
    sim.respond(alice, &inv, 200, "a1");
    sim.expect_request(alice, &Method::Ack);
    let to_lead = sim.expect_request(carrier, &Method::Invite);
    sim.respond(carrier, &to_lead, 486, "k1");
    let bye = sim.expect_request(alice, &Method::Bye);
    sim.reply(alice, &bye, 200, None);
    assert_eq!(sim.ended()[0].0, CallStatus::Busy);
    sim.assert_clean();
}

/// A 503 from the trunk's first address sends the INVITE to the next (RFC 3263 §4.3);
/// the API hangs up while the lead rings: CANCEL to the carrier, BYE to the agent,
/// `canceled`.
#[test]
fn click_to_call_fails_over_and_is_canceled_by_the_api() {
    let mut sim = Sim::new();
    let (alice, carrier, spare) = (Phone::udp(5061), Phone::udp(5090), Phone::udp(5091));
    sim.agent("alice", 1, &[alice]);
    with_carrier(&mut sim, carrier, spare);
    click_to_call(&mut sim, "alice", None);
    let inv = sim.expect_request(alice, &Method::Invite);
    sim.respond(alice, &inv, 200, "a1");
    sim.expect_request(alice, &Method::Ack);
    let first = sim.expect_request(carrier, &Method::Invite);
    sim.respond(carrier, &first, 503, "k1");
    let second = sim.expect_request(spare, &Method::Invite);
    assert_eq!(second.call_id(), first.call_id());
    sim.respond(spare, &second, 180, "s1");
    sim.engine
        .handle_command(
            &mut sim.layer,
            &mut sim.dir,
            Command::Hangup {
                call: super::types::CallId::new("call_c2c"),
            },
            sim.now,
        )
        .unwrap();
    sim.pump();
    let cancel = sim.expect_request(spare, &Method::Cancel);
    sim.reply(spare, &cancel, 200, None);
    sim.deliver(
        spare,
        MessageBuilder::response_to(&second, 487, "Request Terminated", Some("s1")).build(),
    );
    let bye = sim.expect_request(alice, &Method::Bye);
    sim.reply(alice, &bye, 200, None);
    assert_eq!(
        sim.ended(),
        [(CallStatus::Canceled, "api hangup".to_owned(), HangupBy::Api)]
    );
    sim.assert_clean();
}

/// Nobody answers the agent's phone: the lead is never dialled, the call is `no-answer`.
/// An unknown trunk fails the call at once.
#[test]
fn click_to_call_agent_does_not_answer_and_unknown_trunk() {
    let mut sim = Sim::new();
    let (alice, carrier, spare) = (Phone::udp(5061), Phone::udp(5090), Phone::udp(5091));
    sim.agent("alice", 1, &[alice]);
    with_carrier(&mut sim, carrier, spare);
    click_to_call(&mut sim, "alice", None);
    let inv = sim.expect_request(alice, &Method::Invite);
    sim.respond(alice, &inv, 180, "a1");
    sim.advance(RING_TIMEOUT + ms(100));
    let cancel = sim.expect_request(alice, &Method::Cancel);
    sim.reply(alice, &cancel, 200, None);
    sim.deliver(
        alice,
        MessageBuilder::response_to(&inv, 487, "Request Terminated", Some("a1")).build(),
    );
    assert!(sim.take(carrier).is_empty());
    assert_eq!(sim.ended()[0].0, CallStatus::NoAnswer);
    sim.assert_clean();

    sim.dir.trunks.clear();
    sim.records.clear();
    sim.sent.clear();
    click_to_call(&mut sim, "alice", None);
    assert!(sim.take(alice).is_empty());
    assert_eq!(sim.ended()[0].0, CallStatus::Failed);
    sim.assert_clean();
}

/// `time_limit_seconds`: the bridged call is ended by voxgate when the limit passes.
#[test]
fn click_to_call_time_limit() {
    let mut sim = Sim::new();
    let (alice, carrier, spare) = (Phone::udp(5061), Phone::udp(5090), Phone::udp(5091));
    sim.agent("alice", 1, &[alice]);
    with_carrier(&mut sim, carrier, spare);
    // Shorter than any other timer of the call: the limit alone must wake the engine.
    click_to_call(&mut sim, "alice", Some(Duration::from_secs(2)));
    let inv = sim.expect_request(alice, &Method::Invite);
    sim.respond(alice, &inv, 200, "a1");
    sim.expect_request(alice, &Method::Ack);
    let to_lead = sim.expect_request(carrier, &Method::Invite);
    sim.respond(carrier, &to_lead, 200, "k1");
    sim.expect_request(carrier, &Method::Ack);
    sim.advance(Duration::from_millis(1900));
    assert!(sim.ended().is_empty());
    sim.advance(Duration::from_millis(200));
    for phone in [alice, carrier] {
        let bye = sim.expect_request(phone, &Method::Bye);
        sim.reply(phone, &bye, 200, None);
    }
    assert_eq!(
        sim.ended(),
        [(
            CallStatus::Completed,
            "time limit".to_owned(),
            HangupBy::System
        )]
    );
    sim.assert_clean();
}

// -------------------------------------------------------------------------------------
// Trunks

fn created_call(sim: &Sim) -> super::record::NewCall {
    sim.records
        .iter()
        .find_map(|c| match c {
            CallChange::CreateCall(n) => Some(n.clone()),
            _ => None,
        })
        .expect("a call was recorded")
}

/// A carrier's INVITE from its allowed source to a number reaches the number's agent,
/// whose phone shows the lead's number; the call is `inbound`, on the agent.
#[test]
fn inbound_from_a_carrier_rings_the_numbers_agent() {
    let mut sim = Sim::new();
    let (alice, carrier) = (Phone::udp(5061), Phone::at([127, 0, 0, 2], 5090));
    sim.agent("alice", 1, &[alice]);
    sim.dir
        .carriers
        .insert(carrier.peer.addr.ip(), "trk_carrier".to_owned());
    sim.dir
        .numbers
        .insert("+15550009999".to_owned(), "alice".to_owned());
    let mut lead = sim.call(
        carrier,
        LEAD,
        "+15550009999",
        &offer_sdp(30_000, "sendrecv"),
    );
    sim.expect_response(carrier, 100);
    let inv = sim.expect_request(alice, &Method::Invite);
    assert!(inv.from().uri.contains(LEAD), "{}", inv.from().uri);
    sim.respond(alice, &inv, 200, "a1");
    sim.expect_request(alice, &Method::Ack);
    let ok = sim.expect_response(carrier, 200);
    sim.caller_acks(&mut lead, &ok);
    let call = created_call(&sim);
    assert_eq!(call.direction, super::types::CallDirection::Inbound);
    assert_eq!(call.agent_id.as_deref(), Some("agt_alice"));
    sim.bye(&mut lead);
    let bye = sim.expect_request(alice, &Method::Bye);
    sim.reply(alice, &bye, 200, None);

    // A number nobody has is 404, recorded as a failed inbound call.
    sim.records.clear();
    sim.call(
        carrier,
        LEAD,
        "+15550000000",
        &offer_sdp(30_002, "sendrecv"),
    );
    sim.expect_response(carrier, 404);
    assert_eq!(
        created_call(&sim).direction,
        super::types::CallDirection::Inbound
    );
    sim.assert_clean();
}

/// An agent dials a number: it goes out through the default trunk with the trunk's
/// caller ID, the carrier's 401 is answered, and the call is `outbound`.
#[test]
fn an_agent_dials_a_number_through_the_default_trunk() {
    let mut sim = Sim::new();
    let (alice, carrier, spare) = (Phone::udp(5061), Phone::udp(5090), Phone::udp(5091));
    sim.agent("alice", 1, &[alice]);
    with_carrier(&mut sim, carrier, spare);
    sim.dir.default_trunk = Some("carrier".to_owned());
    let mut caller = sim.call(alice, "alice", LEAD, &offer_sdp(30_000, "sendrecv"));
    let first = sim.expect_request(carrier, &Method::Invite);
    assert!(first.from().uri.contains("+15550001111"));
    let challenge = MessageBuilder::response_to(&first, 401, "Unauthorized", Some("k1"))
        .header(
            "WWW-Authenticate",
            "Digest realm=\"carrier\", nonce=\"n1\", qop=\"auth\"",
        )
        .build();
    sim.deliver(carrier, challenge);
    sim.expect_request(carrier, &Method::Ack);
    let second = sim.expect_request(carrier, &Method::Invite);
    assert!(second.header(HeaderName::Authorization).is_some());
    // A second challenge is not answered again: the call fails.
    let again = MessageBuilder::response_to(&second, 401, "Unauthorized", Some("k2"))
        .header("WWW-Authenticate", "Digest realm=\"carrier\", nonce=\"n2\"")
        .build();
    sim.deliver(carrier, again);
    sim.expect_request(carrier, &Method::Ack);
    assert!(sim
        .take(carrier)
        .iter()
        .all(|m| m.method() != Some(&Method::Invite)));
    sim.expect_response(alice, 480);
    assert_eq!(
        created_call(&sim).direction,
        super::types::CallDirection::Outbound
    );
    let _ = &mut caller;
    sim.assert_clean();
}

/// `max_concurrent_calls: 3` and `max_cps: 2` with four click-to-calls at once: three
/// ring their agent, the fourth waits (`queued`, no record change) for a slot; the
/// carrier's INVITEs go out 500 ms apart; when a call ends the waiting one starts.
#[test]
fn trunk_limits_queue_calls_in_order() {
    let mut sim = Sim::new();
    let (alice, carrier, spare) = (Phone::udp(5061), Phone::udp(5090), Phone::udp(5091));
    sim.agent("alice", 10, &[alice]);
    with_carrier(&mut sim, carrier, spare);
    if let Some(t) = sim.dir.trunks.get_mut("carrier") {
        t.limits = super::pacer::TrunkLimits {
            max_cps: Some(2),
            max_calls_per_minute: None,
            max_concurrent_calls: Some(3),
        };
    }
    for i in 1..=4 {
        originate(&mut sim, &format!("call_{i}"), "alice", None);
    }
    let invites: Vec<Message> = sim
        .take(alice)
        .into_iter()
        .filter(|m| m.method() == Some(&Method::Invite))
        .collect();
    assert_eq!(invites.len(), 3, "the fourth call waits for a slot");
    let ringing = sim
        .records
        .iter()
        .filter(|c| matches!(c, CallChange::CallRinging { .. }))
        .count();
    assert_eq!(ringing, 3);
    let mut agents = Vec::new();
    for (i, inv) in invites.iter().enumerate() {
        agents.push(sim.respond(alice, inv, 200, &format!("a{i}")));
    }
    // The carrier sees one INVITE now, the next 500 ms later, the third at 1 s.
    let mut seen = Vec::new();
    for step in 0..=10 {
        for m in sim.take(carrier) {
            // Retransmissions (T1 = 500 ms) are not new INVITEs.
            let new = seen
                .iter()
                .all(|(_, s): &(u64, Message)| s.call_id() != m.call_id());
            if m.method() == Some(&Method::Invite) && new {
                seen.push((step * 100, m));
            }
        }
        sim.advance(ms(100));
    }
    let at: Vec<u64> = seen.iter().map(|(t, _)| *t).collect();
    assert_eq!(at, [0, 500, 1000], "INVITEs spaced by max_cps");
    let mut leads = Vec::new();
    for (i, (_, inv)) in seen.iter().enumerate() {
        leads.push(sim.respond(carrier, inv, 200, &format!("k{i}")));
    }
    sim.take(carrier);
    sim.take(alice);
    // One call ends: the queued one starts ringing its agent.
    sim.bye(&mut leads[0]);
    let bye = sim.expect_request(alice, &Method::Bye);
    sim.reply(alice, &bye, 200, None);
    sim.advance(ms(1));
    let fourth = sim.expect_request(alice, &Method::Invite);
    assert!(sim
        .records
        .iter()
        .any(|c| matches!(c, CallChange::CallRinging { call_id, .. } if call_id == "call_4")));
    sim.respond(alice, &fourth, 486, "a4");
    for lead in leads.iter_mut().skip(1) {
        sim.bye(lead);
    }
    for _ in 0..2 {
        let bye = sim.expect_request(alice, &Method::Bye);
        sim.reply(alice, &bye, 200, None);
    }
    sim.assert_clean();
}
