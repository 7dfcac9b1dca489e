//! The B2BUA (SPEC §2): a call is an inbound leg (the caller's INVITE, answered by us as a
//! UAS) and outbound legs (our INVITEs to each registered contact of the callee, sent in
//! parallel). Each leg is its own dialog; the engine alone joins them: it relays
//! provisional and final responses, the SDP offer/answer (rewritten to voxgate's RTP
//! ports), re-INVITE/UPDATE, BYE and CANCEL, and drives the media relay.
//!
//! It runs inside the SIP core task and is sans-IO in spirit: every entry point takes the
//! transaction layer and `now`, and all I/O happens through the layer's transmit queue,
//! the media engine's control calls and the call-record queue.

use std::cell::Cell;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use tokio::sync::mpsc::UnboundedSender;
use voxgate_sip::dialog::session_timer::{
    negotiate_uas, Refresher, SessionTimer, SessionTimerConfig, SessionTimerEvent, UasDecision,
};
use voxgate_sip::dialog::{
    AckCache, AckWait, AckWaitEvent, Branch, Dialog, DialogId, Dialogs, InDialogRequest, LocalVia,
    TerminationReason, UacInviteOutcome,
};
use voxgate_sip::message::{Message, MessageBuilder, Method, SipUri};
use voxgate_sip::sdp::{
    forward_offer, Direction, LegMedia, LegSdp, LocalMedia, LocalSession, PendingOffer,
    PtTranslation, SdpConfig, SessionDescription,
};
use voxgate_sip::transaction::{ClientTxId, Peer, ServerTxId, TransactionLayer, Transport};

use super::control::ControlError;
use super::record::{CallChange, CallStatus, HangupBy, LegDirection, NewCall, NewLeg};
use crate::ids::{new_id, IdKind};
use crate::media::{self, LegRemote, MediaDirection, MediaEngine, PtMap, Side};
use crate::registrar::{Binding, Challenger, Registrar, Reply};
use crate::store::AgentAuth;

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
    pub sip_port: u16,
    pub sdp: SdpConfig,
}

/// Which leg of a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum LegRef {
    Inbound,
    Outbound(usize),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Ringing,
    Answered,
}

struct InboundLeg {
    id: String,
    tx: ServerTxId,
    invite: Message,
    peer: Peer,
    local_tag: String,
    dialog: Option<DialogId>,
    ack_wait: Option<AckWait>,
    /// RFC 4028, when the caller asked for a session timer.
    session: Option<UasDecision>,
    timer: Option<SessionTimer>,
}

struct OutboundLeg {
    id: String,
    tx: ClientTxId,
    invite: Message,
    peer: Peer,
    dialog: Option<DialogId>,
    status: CallStatus,
    ack_cache: Option<AckCache>,
    /// CANCEL sent (or to be sent when a provisional arrives).
    canceled: bool,
}

/// A re-INVITE or UPDATE with an offer, relayed from one leg to the other.
struct Renegotiation {
    from: LegRef,
    server_tx: ServerTxId,
    request: Message,
    client_tx: ClientTxId,
    client_request: Message,
    pending: PendingOffer,
}

struct Call {
    id: String,
    caller: AgentAuth,
    callee: AgentAuth,
    inbound: InboundLeg,
    outbound: Vec<OutboundLeg>,
    winner: Option<usize>,
    media: media::Session,
    /// Voxgate's SDP state towards the caller (A) and the callee (B).
    sdp_a: LegSdp,
    sdp_b: LegSdp,
    pending: Option<PendingOffer>,
    phase: Phase,
    answered_at: Option<DateTime<Utc>>,
    renegotiation: Option<Renegotiation>,
}

pub struct CallEngine {
    cfg: EngineConfig,
    media: Arc<MediaEngine>,
    dialogs: Dialogs,
    calls: HashMap<String, Call>,
    by_server_tx: HashMap<ServerTxId, String>,
    by_client_tx: HashMap<ClientTxId, String>,
    by_dialog: HashMap<DialogId, (String, LegRef)>,
    /// Live calls per agent (as caller or callee), for `max_concurrent_calls`.
    active: HashMap<String, usize>,
    records: UnboundedSender<CallChange>,
    draining: bool,
    /// The earliest call timer, recomputed only after call state may have changed: the
    /// core asks on every wake-up, and most wake-ups (REGISTERs) touch no call.
    next_timer: Cell<Option<Instant>>,
    timers_dirty: Cell<bool>,
}

impl CallEngine {
    pub fn new(
        cfg: EngineConfig,
        media: Arc<MediaEngine>,
        records: UnboundedSender<CallChange>,
    ) -> CallEngine {
        CallEngine {
            cfg,
            media,
            dialogs: Dialogs::new(),
            calls: HashMap::new(),
            by_server_tx: HashMap::new(),
            by_client_tx: HashMap::new(),
            by_dialog: HashMap::new(),
            active: HashMap::new(),
            records,
            draining: false,
            next_timer: Cell::new(None),
            timers_dirty: Cell::new(false),
        }
    }

    pub fn active_calls(&self) -> usize {
        self.calls.len()
    }

    /// Dialogs held, early ones included (a metric: it must come back to 0).
    pub fn dialog_count(&self) -> usize {
        self.dialogs.len()
    }

    pub fn media(&self) -> &MediaEngine {
        &self.media
    }

    /// Is this server transaction the INVITE of a live call (for CANCEL)?
    pub fn knows_invite(&self, tx: ServerTxId) -> bool {
        self.by_server_tx.contains_key(&tx)
    }

    /// Ends every call (end of the shutdown grace period).
    pub fn hangup_all(&mut self, layer: &mut TransactionLayer, now: Instant) {
        self.timers_dirty.set(true);
        let ids: Vec<String> = self.calls.keys().cloned().collect();
        for id in ids {
            let reply = self
                .calls
                .get(&id)
                .and_then(|c| (c.phase == Phase::Ringing).then_some((503, "Service Unavailable")));
            let status = if reply.is_some() {
                CallStatus::Canceled
            } else {
                CallStatus::Completed
            };
            self.end_call(layer, &id, status, "gateway shutdown", "system", reply, now);
        }
    }

    /// New INVITEs get 503 from now on (SIGTERM, SPEC §1).
    pub fn start_draining(&mut self) {
        self.draining = true;
    }

    fn record(&self, change: CallChange) {
        // The recorder outlives the core; a send error means we are shutting down.
        let _ = self.records.send(change);
    }

    fn via(&self, transport: Transport) -> LocalVia {
        LocalVia::new(
            transport,
            format!("{}:{}", host(self.cfg.public_ip), self.cfg.sip_port),
        )
    }

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
            host(self.cfg.public_ip),
            self.cfg.sip_port
        )
    }

    // ---------------------------------------------------------------------------------
    // New calls

    /// An INVITE outside any dialog. Answers it (error, challenge) or starts a call.
    #[allow(clippy::too_many_arguments)]
    pub fn on_invite(
        &mut self,
        layer: &mut TransactionLayer,
        registrar: &mut Registrar,
        conns: &HashMap<SocketAddr, u64>,
        tx: ServerTxId,
        invite: Message,
        peer: Peer,
        now: Instant,
    ) -> Option<Reply> {
        self.timers_dirty.set(true);
        let wall = Utc::now();
        if self.draining {
            return Some(
                Reply::new(503, "Service Unavailable").with("Retry-After", "30".to_owned()),
            );
        }
        let caller = match registrar.authenticate(&invite, Challenger::Proxy, wall, rand::random())
        {
            Ok(agent) => agent,
            Err(reply) => return Some(reply),
        };
        let from = invite.from().uri.to_owned();
        let to = invite.to().uri.to_owned();
        let sip_call_id = invite.call_id().to_owned();
        let caller_id = caller.id.clone();
        match self.start_call(layer, registrar, conns, tx, invite, peer, caller, now, wall) {
            Ok(()) => None,
            Err(reply) => {
                self.record_refused(&caller_id, from, to, sip_call_id, &reply, wall);
                Some(reply)
            }
        }
    }

    /// Every call leaves a record, a refused one too (SPEC §4): `busy` for 486, else
    /// `failed`, with the response as hangup cause.
    fn record_refused(
        &self,
        caller_id: &str,
        from: String,
        to: String,
        sip_call_id: String,
        reply: &Reply,
        wall: DateTime<Utc>,
    ) {
        let call_id = new_id(IdKind::Call);
        let status = if reply.code == 486 {
            CallStatus::Busy
        } else {
            CallStatus::Failed
        };
        let cause = format!("{} {}", reply.code, reply.reason);
        self.record(CallChange::CreateCall(NewCall {
            id: call_id.clone(),
            direction: "internal",
            from: from.clone(),
            to,
            agent_id: Some(caller_id.to_owned()),
            status: CallStatus::Ringing,
            started_at: wall,
        }));
        let leg_id = new_id(IdKind::Leg);
        self.record(CallChange::CreateLeg(NewLeg {
            id: leg_id.clone(),
            call_id: call_id.clone(),
            direction: LegDirection::Inbound,
            agent_id: Some(caller_id.to_owned()),
            uri: from,
            sip_call_id,
            status: CallStatus::Ringing,
            started_at: wall,
        }));
        self.record(CallChange::LegStatus {
            leg_id,
            status,
            at: wall,
            hangup_cause: Some(cause.clone()),
        });
        self.record(CallChange::CallEnded {
            call_id,
            status,
            at: wall,
            duration_seconds: 0,
            hangup_cause: cause,
            hangup_by: "system",
        });
        metrics::counter!("voxgate_calls_refused_total", "code" => reply.code.to_string())
            .increment(1);
    }

    /// Routes an authenticated INVITE and starts ringing, or says why not.
    #[allow(clippy::too_many_arguments)]
    fn start_call(
        &mut self,
        layer: &mut TransactionLayer,
        registrar: &mut Registrar,
        conns: &HashMap<SocketAddr, u64>,
        tx: ServerTxId,
        invite: Message,
        peer: Peer,
        caller: AgentAuth,
        now: Instant,
        wall: DateTime<Utc>,
    ) -> Result<(), Reply> {
        // Routing in this issue: the Request-URI user is an agent's username.
        let Some(target) = invite
            .request_uri()
            .and_then(|u| SipUri::parse(u).ok())
            .and_then(|u| u.user.map(str::to_owned))
        else {
            return Err(Reply::new(404, "Not Found"));
        };
        let Some(callee) = registrar.agent(&target).cloned() else {
            return Err(Reply::new(404, "Not Found"));
        };
        let bindings: Vec<Binding> = registrar.bindings(&callee.id).to_vec();
        if bindings.is_empty() {
            return Err(Reply::new(480, "Temporarily Unavailable"));
        }
        if self.active.get(&callee.id).copied().unwrap_or(0)
            >= usize::try_from(callee.max_concurrent_calls).unwrap_or(1)
        {
            return Err(Reply::new(486, "Busy Here"));
        }
        // RFC 4028 §9: only when the caller asks (we do not impose a timer).
        let session_timer = match negotiate_uas(&SESSION_TIMER, &invite) {
            Ok(UasDecision::TooSmall { min_se }) => {
                return Err(Reply::new(422, "Session Interval Too Small")
                    .with("Min-SE", min_se.to_string()))
            }
            Ok(UasDecision::NoTimer) | Err(_) => None,
            Ok(accept) => Some(accept),
        };
        // The offer. An INVITE without SDP (delayed offer) is not supported yet.
        if !is_sdp(&invite) {
            return Err(Reply::new(488, "Not Acceptable Here"));
        }
        let offer = match SessionDescription::parse(invite.body()) {
            Ok(o) => o,
            Err(e) => {
                tracing::debug!(error = %e, "unparseable SDP offer");
                return Err(Reply::new(e.sip_status(), reason_for(e.sip_status())));
            }
        };
        let session = match self.media.create_session() {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "no media for a new call");
                return Err(
                    Reply::new(503, "Service Unavailable").with("Retry-After", "5".to_owned())
                );
            }
        };
        let sdp_a = LegSdp::new(
            LocalSession::new(rand::random::<u32>().into()),
            LocalMedia {
                address: self.cfg.public_ip,
                rtp_port: session.a.rtp.port(),
            },
        );
        let mut sdp_b = LegSdp::new(
            LocalSession::new(rand::random::<u32>().into()),
            LocalMedia {
                address: self.cfg.public_ip,
                rtp_port: session.b.rtp.port(),
            },
        );
        let (offer_b, pending) = match forward_offer(&self.cfg.sdp, &offer, &mut sdp_b) {
            Ok(x) => x,
            Err(e) => {
                let _ = self.media.destroy_session(session.id);
                tracing::debug!(error = %e, "offer not acceptable");
                return Err(Reply::new(e.sip_status(), reason_for(e.sip_status())));
            }
        };

        let call_id = new_id(IdKind::Call);
        let local_tag = random_tag();
        // 100 Trying at once: forking to several phones may take a moment.
        let trying = MessageBuilder::response_to(&invite, 100, "Trying", None).build();
        let _ = layer.send_response(tx, trying, now);

        let from_uri = invite.from().uri.to_owned();
        let to_uri = invite.to().uri.to_owned();
        self.record(CallChange::CreateCall(NewCall {
            id: call_id.clone(),
            direction: "internal",
            from: from_uri.clone(),
            to: to_uri,
            agent_id: Some(caller.id.clone()),
            status: CallStatus::Ringing,
            started_at: wall,
        }));
        let inbound_id = new_id(IdKind::Leg);
        self.record(CallChange::CreateLeg(NewLeg {
            id: inbound_id.clone(),
            call_id: call_id.clone(),
            direction: LegDirection::Inbound,
            agent_id: Some(caller.id.clone()),
            uri: from_uri,
            sip_call_id: invite.call_id().to_owned(),
            status: CallStatus::Ringing,
            started_at: wall,
        }));

        // Fork to every contact of the callee, in parallel (RFC 3261 §16.7 style).
        let body = offer_b.to_string();
        let mut outbound = Vec::new();
        for b in &bindings {
            let transport = match b.transport.as_str() {
                "tcp" => Transport::Tcp,
                _ => Transport::Udp,
            };
            let to = Peer {
                transport,
                addr: binding_target(b, transport),
                conn: conns.get(&b.source).copied(),
            };
            let request = self.outbound_invite(&caller, &callee, &b.contact, transport, &body);
            let Ok(parsed) = Message::parse(request.clone()) else {
                tracing::error!("built an unparseable INVITE");
                continue;
            };
            match layer.send_request(request, to, now) {
                Ok(client_tx) => {
                    let leg_id = new_id(IdKind::Leg);
                    self.record(CallChange::CreateLeg(NewLeg {
                        id: leg_id.clone(),
                        call_id: call_id.clone(),
                        direction: LegDirection::Outbound,
                        agent_id: Some(callee.id.clone()),
                        uri: b.contact.clone(),
                        sip_call_id: parsed.call_id().to_owned(),
                        status: CallStatus::Ringing,
                        started_at: wall,
                    }));
                    self.by_client_tx.insert(client_tx, call_id.clone());
                    outbound.push(OutboundLeg {
                        id: leg_id,
                        tx: client_tx,
                        invite: parsed,
                        peer: to,
                        dialog: None,
                        status: CallStatus::Ringing,
                        ack_cache: None,
                        canceled: false,
                    });
                }
                Err(e) => tracing::warn!(error = %e, contact = %b.contact, "INVITE not sent"),
            }
        }

        for agent in [&caller.id, &callee.id] {
            *self.active.entry(agent.clone()).or_default() += 1;
        }
        self.by_server_tx.insert(tx, call_id.clone());
        let call = Call {
            id: call_id.clone(),
            caller,
            callee,
            inbound: InboundLeg {
                id: inbound_id,
                tx,
                invite,
                peer,
                local_tag,
                dialog: None,
                ack_wait: None,
                session: session_timer,
                timer: None,
            },
            outbound,
            winner: None,
            media: session,
            sdp_a,
            sdp_b,
            pending: Some(pending),
            phase: Phase::Ringing,
            answered_at: None,
            renegotiation: None,
        };
        let no_legs = call.outbound.is_empty();
        self.calls.insert(call_id.clone(), call);
        metrics::counter!("voxgate_calls_total").increment(1);
        if no_legs {
            self.end_call(
                layer,
                &call_id,
                CallStatus::Failed,
                "no contact reachable",
                "system",
                Some((480, "Temporarily Unavailable")),
                now,
            );
        }
        Ok(())
    }

    fn outbound_invite(
        &self,
        caller: &AgentAuth,
        callee: &AgentAuth,
        contact: &str,
        transport: Transport,
        sdp: &str,
    ) -> Bytes {
        let branch = Branch::from_random(&rand::random::<[u8; 12]>());
        let ip = host(self.cfg.public_ip);
        MessageBuilder::request(&Method::Invite, contact)
            .header("Via", &self.via(transport).value(&branch))
            .header("Max-Forwards", "70")
            .header(
                "From",
                &format!("<sip:{}@{ip}>;tag={}", caller.username, random_tag()),
            )
            .header("To", &format!("<sip:{}@{ip}>", callee.username))
            .header(
                "Call-ID",
                &format!("{}@{ip}", hex::encode(rand::random::<[u8; 12]>())),
            )
            .header("CSeq", "1 INVITE")
            .header("Contact", &format!("<{}>", self.contact(transport)))
            .header("Allow", ALLOW)
            .body("application/sdp", sdp.as_bytes())
            .build()
    }

    // ---------------------------------------------------------------------------------
    // Responses on outbound legs

    /// A response for one of our client transactions. Returns false if it is not ours.
    pub fn on_response(
        &mut self,
        layer: &mut TransactionLayer,
        tx: ClientTxId,
        resp: Message,
        now: Instant,
    ) -> bool {
        self.timers_dirty.set(true);
        let Some(call_id) = self.by_client_tx.get(&tx).cloned() else {
            return false;
        };
        let Some(call) = self.calls.get(&call_id) else {
            return true;
        };
        if let Some(r) = &call.renegotiation {
            if r.client_tx == tx {
                self.on_renegotiation_response(layer, &call_id, resp, now);
                return true;
            }
        }
        let Some(idx) = call.outbound.iter().position(|l| l.tx == tx) else {
            // A BYE's or re-INVITE's response we no longer track.
            return true;
        };
        if resp.cseq().method != Method::Invite {
            return true;
        }
        self.on_invite_response(layer, &call_id, idx, resp, now);
        true
    }

    fn on_invite_response(
        &mut self,
        layer: &mut TransactionLayer,
        call_id: &str,
        idx: usize,
        resp: Message,
        now: Instant,
    ) {
        let status = resp.status().unwrap_or(500);
        let Some(call) = self.calls.get_mut(call_id) else {
            return;
        };
        let outcome = self
            .dialogs
            .handle_uac_response(&call.outbound[idx].invite, &resp);
        let outcome = match outcome {
            Ok(o) => o,
            Err(e) => {
                tracing::debug!(error = %e, "response outside dialog rules");
                return;
            }
        };
        match outcome {
            UacInviteOutcome::NoDialog => {}
            UacInviteOutcome::Early { id, .. } => {
                self.by_dialog
                    .insert(id.clone(), (call_id.to_owned(), LegRef::Outbound(idx)));
                call.outbound[idx].dialog.get_or_insert(id);
                if call.outbound[idx].canceled {
                    // CANCEL waits for a provisional (RFC 3261 §9.1): now it can go.
                    let _ = layer.cancel(call.outbound[idx].tx, now);
                    return;
                }
                if call.phase == Phase::Ringing && (status == 180 || status == 183) {
                    self.relay_provisional(layer, call_id, &resp, now);
                }
            }
            UacInviteOutcome::Confirmed { id } => {
                self.by_dialog
                    .insert(id.clone(), (call_id.to_owned(), LegRef::Outbound(idx)));
                call.outbound[idx].dialog = Some(id.clone());
                self.ack_outbound(layer, call_id, idx, &id, now);
                let won = self.calls.get(call_id).is_some_and(|c| {
                    c.winner.is_none() && c.phase == Phase::Ringing && !c.outbound[idx].canceled
                });
                if won {
                    self.answer_call(layer, call_id, idx, &resp, now);
                } else {
                    // Lost the race (another fork answered, or we cancelled): hang it up.
                    self.bye_leg(layer, call_id, LegRef::Outbound(idx), now);
                }
            }
            UacInviteOutcome::ExtraFork { id } => {
                let peer = call.outbound[idx].peer;
                self.by_dialog
                    .insert(id.clone(), (call_id.to_owned(), LegRef::Outbound(idx)));
                self.ack_outbound(layer, call_id, idx, &id, now);
                self.bye_dialog(layer, &id, peer, now);
            }
            UacInviteOutcome::Retransmitted2xx { .. } => {
                let leg = &mut call.outbound[idx];
                if let Some(cache) = &mut leg.ack_cache {
                    if let Some(ack) = cache.on_response(&resp) {
                        layer.send_stateless(ack, leg.peer);
                    }
                }
            }
            UacInviteOutcome::Failed { status, .. } => {
                let leg = &mut call.outbound[idx];
                leg.status = fork_status(status, leg.canceled);
                let leg_id = leg.id.clone();
                let leg_status = leg.status;
                self.record(CallChange::LegStatus {
                    leg_id,
                    status: leg_status,
                    at: Utc::now(),
                    hangup_cause: Some(format!("{status} {}", resp.reason().unwrap_or_default())),
                });
                self.fork_failed(layer, call_id, now);
            }
        }
    }

    /// Every fork has failed: the caller gets the best failure (RFC 3261 §16.7 step 6,
    /// simplified: busy wins, then the first final response).
    fn fork_failed(&mut self, layer: &mut TransactionLayer, call_id: &str, now: Instant) {
        let Some(call) = self.calls.get(call_id) else {
            return;
        };
        if call.winner.is_some()
            || call.phase != Phase::Ringing
            || call
                .outbound
                .iter()
                .any(|l| l.status == CallStatus::Ringing)
        {
            return;
        }
        let statuses: Vec<CallStatus> = call.outbound.iter().map(|l| l.status).collect();
        let (status, code, reason) = if statuses.contains(&CallStatus::Busy) {
            (CallStatus::Busy, 486, "Busy Here")
        } else if statuses.contains(&CallStatus::NoAnswer) {
            (CallStatus::NoAnswer, 480, "Temporarily Unavailable")
        } else {
            (CallStatus::Failed, 480, "Temporarily Unavailable")
        };
        self.end_call(
            layer,
            call_id,
            status,
            &format!("{code} {reason}"),
            "callee",
            Some((code, reason)),
            now,
        );
    }

    fn ack_outbound(
        &mut self,
        layer: &mut TransactionLayer,
        call_id: &str,
        idx: usize,
        id: &DialogId,
        now: Instant,
    ) {
        let Some(leg) = self.calls.get_mut(call_id).map(|c| &mut c.outbound[idx]) else {
            return;
        };
        let Some(d) = self.dialogs.get(id) else {
            return;
        };
        let seq = leg.invite.cseq().seq;
        let branch = Branch::from_random(&rand::random::<[u8; 12]>());
        let ack = d
            .ack(seq, &self_via(&self.cfg, leg.peer.transport), &branch)
            .build();
        layer.send_stateless(ack.clone(), leg.peer);
        leg.ack_cache = Some(AckCache::new(seq, ack, now, layer.config()));
    }

    /// 180/183 from a fork: the caller hears ringing (and early media with 183's SDP).
    fn relay_provisional(
        &mut self,
        layer: &mut TransactionLayer,
        call_id: &str,
        resp: &Message,
        now: Instant,
    ) {
        let status = resp.status().unwrap_or(180);
        let Some(id) = self.inbound_dialog(call_id) else {
            return;
        };
        let (Some(call), Some(d)) = (self.calls.get_mut(call_id), self.dialogs.get_mut(&id)) else {
            return;
        };
        let Ok(mut b) = d.response(
            &call.inbound.invite,
            status,
            resp.reason().unwrap_or("Ringing"),
        ) else {
            return;
        };
        if status == 183 && is_sdp(resp) {
            if let (Some(pending), Ok(answer)) =
                (&call.pending, SessionDescription::parse(resp.body()))
            {
                if let Ok(sdp) =
                    pending.answer(&self.cfg.sdp, &answer, &mut call.sdp_b, &mut call.sdp_a)
                {
                    update_media(&self.media, call);
                    b = b.body("application/sdp", sdp.to_string().as_bytes());
                }
            }
        }
        let _ = layer.send_response(call.inbound.tx, b.build(), now);
    }

    /// The caller's UAS dialog, created with our To tag at the first response that needs
    /// it (RFC 3261 §12.1.1).
    fn inbound_dialog(&mut self, call_id: &str) -> Option<DialogId> {
        let call = self.calls.get_mut(call_id)?;
        if call.inbound.dialog.is_none() {
            let contact = contact_uri(&self.cfg, call.inbound.peer.transport);
            let d =
                Dialog::new_uas(&call.inbound.invite, &call.inbound.local_tag, &contact).ok()?;
            let id = d.id().clone();
            self.dialogs.insert(d).ok()?;
            self.by_dialog
                .insert(id.clone(), (call_id.to_owned(), LegRef::Inbound));
            call.inbound.dialog = Some(id);
        }
        call.inbound.dialog.clone()
    }

    /// The first 2xx: bridge. CANCEL the other forks, answer the caller with voxgate's SDP.
    fn answer_call(
        &mut self,
        layer: &mut TransactionLayer,
        call_id: &str,
        idx: usize,
        resp: &Message,
        now: Instant,
    ) {
        let wall = Utc::now();
        let cfg = self.cfg.sdp.clone();
        // Negotiate first: a 2xx whose SDP we cannot use ends the call.
        let answer_sdp = {
            let Some(call) = self.calls.get_mut(call_id) else {
                return;
            };
            let answer = SessionDescription::parse(resp.body())
                .map_err(|e| e.to_string())
                .and_then(|a| {
                    call.pending
                        .as_ref()
                        .ok_or_else(|| "no pending offer".to_owned())
                        .and_then(|p| {
                            p.answer(&cfg, &a, &mut call.sdp_b, &mut call.sdp_a)
                                .map_err(|e| e.to_string())
                        })
                });
            match answer {
                Ok(sdp) => sdp,
                Err(e) => {
                    tracing::info!(error = %e, "callee's answer unusable");
                    call.winner = Some(idx);
                    self.end_call(
                        layer,
                        call_id,
                        CallStatus::Failed,
                        "488 Not Acceptable Here",
                        "system",
                        Some((488, "Not Acceptable Here")),
                        now,
                    );
                    return;
                }
            }
        };
        let Some(call) = self.calls.get_mut(call_id) else {
            return;
        };
        call.winner = Some(idx);
        call.phase = Phase::Answered;
        call.answered_at = Some(wall);
        call.pending = None;
        update_media(&self.media, call);
        call.outbound[idx].status = CallStatus::InProgress;
        let winner_leg = call.outbound[idx].id.clone();
        let inbound_leg = call.inbound.id.clone();
        let others: Vec<usize> = (0..call.outbound.len())
            .filter(|&i| i != idx && call.outbound[i].status == CallStatus::Ringing)
            .collect();
        for i in others {
            let leg = &mut call.outbound[i];
            leg.canceled = true;
            leg.status = CallStatus::Canceled;
            let _ = layer.cancel(leg.tx, now);
        }
        self.record(CallChange::CallAnswered {
            call_id: call_id.to_owned(),
            at: wall,
        });
        self.record(CallChange::LegStatus {
            leg_id: winner_leg,
            status: CallStatus::InProgress,
            at: wall,
            hangup_cause: None,
        });
        self.record(CallChange::LegStatus {
            leg_id: inbound_leg,
            status: CallStatus::InProgress,
            at: wall,
            hangup_cause: None,
        });

        let Some(id) = self.inbound_dialog(call_id) else {
            return;
        };
        let (Some(call), Some(d)) = (self.calls.get(call_id), self.dialogs.get_mut(&id)) else {
            return;
        };
        let Ok(b) = d.response(&call.inbound.invite, 200, "OK") else {
            return;
        };
        let b = match &call.inbound.session {
            Some(decision) => decision.apply(b),
            None => b,
        };
        let ok = b
            .header("Allow", ALLOW)
            .body("application/sdp", answer_sdp.to_string().as_bytes())
            .build();
        let seq = call.inbound.invite.cseq().seq;
        let tx = call.inbound.tx;
        let _ = layer.send_response(tx, ok.clone(), now);
        if let Some(call) = self.calls.get_mut(call_id) {
            call.inbound.ack_wait = Some(AckWait::new(seq, ok, now, layer.config()));
            if let Some(UasDecision::Accept {
                session_expires, ..
            }) = &call.inbound.session
            {
                call.inbound.timer = Some(SessionTimer::new(session_expires, Refresher::Uas, now));
            }
        }
        metrics::counter!("voxgate_calls_answered_total").increment(1);
    }

    // ---------------------------------------------------------------------------------
    // Requests from the caller or the callee

    /// CANCEL of a pending inbound INVITE: 487 to it, CANCEL every fork.
    pub fn on_cancel(
        &mut self,
        layer: &mut TransactionLayer,
        invite_tx: ServerTxId,
        now: Instant,
    ) -> bool {
        self.timers_dirty.set(true);
        let Some(call_id) = self.by_server_tx.get(&invite_tx).cloned() else {
            return false;
        };
        if self
            .calls
            .get(&call_id)
            .is_some_and(|c| c.phase == Phase::Ringing)
        {
            self.end_call(
                layer,
                &call_id,
                CallStatus::Canceled,
                "CANCEL",
                "caller",
                Some((487, "Request Terminated")),
                now,
            );
        }
        true
    }

    /// ACK for a 2xx (or a stray one): stops the 2xx retransmissions.
    pub fn on_ack(&mut self, ack: &Message) {
        self.timers_dirty.set(true);
        let Some(d) = self.dialogs.find_for_request(ack) else {
            return;
        };
        if let Ok(InDialogRequest::Ack { cseq }) = d.handle_request(ack) {
            let id = d.id().clone();
            if let Some((call_id, LegRef::Inbound)) = self.by_dialog.get(&id) {
                if let Some(w) = self
                    .calls
                    .get_mut(call_id)
                    .and_then(|c| c.inbound.ack_wait.as_mut())
                {
                    w.handle_ack(cseq);
                }
            }
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
        self.timers_dirty.set(true);
        let Some(d) = self.dialogs.find_for_request(&req) else {
            return false;
        };
        let id = d.id().clone();
        let handled = d.handle_request(&req);
        let Some((call_id, leg)) = self.by_dialog.get(&id).cloned() else {
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
                let by: HangupBy = match leg {
                    LegRef::Inbound => "caller",
                    LegRef::Outbound(_) => "callee",
                };
                self.end_call(layer, &call_id, CallStatus::Completed, "BYE", by, None, now);
            }
            Ok(InDialogRequest::Request { .. }) => {
                let method = req.method().cloned();
                if matches!(method, Some(Method::Invite | Method::Update)) {
                    self.session_refresh(&call_id, leg, &req, now);
                }
                let session = match leg {
                    LegRef::Inbound => self.calls.get(&call_id).and_then(|c| c.inbound.session),
                    LegRef::Outbound(_) => None,
                };
                let Some(d) = self.dialogs.get_mut(&id) else {
                    return true;
                };
                match method {
                    Some(Method::Invite | Method::Update) if is_sdp(&req) => {
                        self.relay_offer(layer, &call_id, leg, tx, req, now);
                    }
                    Some(Method::Invite) => {
                        // An offerless re-INVITE would need us to offer; not supported yet.
                        if let Ok(b) = d.response(&req, 488, "Not Acceptable Here") {
                            let _ = layer.send_response(tx, b.build(), now);
                        }
                    }
                    _ => {
                        // OPTIONS, INFO, UPDATE without SDP (session refresh): answered here.
                        if let Ok(b) = d.response(&req, 200, "OK") {
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

    /// A re-INVITE or UPDATE from the caller refreshes its session timer (RFC 4028 §10).
    fn session_refresh(&mut self, call_id: &str, leg: LegRef, req: &Message, now: Instant) {
        let Some(call) = self.calls.get_mut(call_id) else {
            return;
        };
        if leg != LegRef::Inbound || call.inbound.timer.is_none() {
            return;
        }
        if let Ok(
            decision @ UasDecision::Accept {
                session_expires, ..
            },
        ) = negotiate_uas(&SESSION_TIMER, req)
        {
            if let Some(t) = &mut call.inbound.timer {
                t.refreshed(&session_expires, Refresher::Uas, now);
            }
            call.inbound.session = Some(decision);
        }
    }

    /// re-INVITE or UPDATE with an offer from one leg: forward it to the other leg as
    /// voxgate's own offer (hold, resume, codec change).
    fn relay_offer(
        &mut self,
        layer: &mut TransactionLayer,
        call_id: &str,
        from: LegRef,
        tx: ServerTxId,
        req: Message,
        now: Instant,
    ) {
        let cfg = self.cfg.sdp.clone();
        let via_cfg = self.cfg.clone();
        let Some(call) = self.calls.get_mut(call_id) else {
            return;
        };
        let reply_err = |dialogs: &mut Dialogs, layer: &mut TransactionLayer, code, reason| {
            if let Some(d) = dialogs.find_for_request(&req) {
                if let Ok(b) = d.response(&req, code, reason) {
                    let _ = layer.send_response(tx, b.build(), now);
                }
            }
        };
        let (Some(winner), Phase::Answered) = (call.winner, call.phase) else {
            reply_err(&mut self.dialogs, layer, 491, "Request Pending");
            return;
        };
        if call.renegotiation.is_some() {
            reply_err(&mut self.dialogs, layer, 491, "Request Pending");
            return;
        }
        let offer = match SessionDescription::parse(req.body()) {
            Ok(o) => o,
            Err(e) => {
                reply_err(
                    &mut self.dialogs,
                    layer,
                    e.sip_status(),
                    reason_for(e.sip_status()),
                );
                return;
            }
        };
        let (other, other_sdp) = match from {
            LegRef::Inbound => (LegRef::Outbound(winner), &mut call.sdp_b),
            LegRef::Outbound(_) => (LegRef::Inbound, &mut call.sdp_a),
        };
        let (offer_out, pending) = match forward_offer(&cfg, &offer, other_sdp) {
            Ok(x) => x,
            Err(e) => {
                reply_err(
                    &mut self.dialogs,
                    layer,
                    e.sip_status(),
                    reason_for(e.sip_status()),
                );
                return;
            }
        };
        let (other_dialog, other_peer) = match other {
            LegRef::Inbound => (call.inbound.dialog.clone(), call.inbound.peer),
            LegRef::Outbound(i) => (call.outbound[i].dialog.clone(), call.outbound[i].peer),
        };
        let Some(d) = other_dialog.and_then(|id| self.dialogs.get_mut(&id)) else {
            return;
        };
        let method = req.method().cloned().unwrap_or(Method::Invite);
        let branch = Branch::from_random(&rand::random::<[u8; 12]>());
        let Ok(b) = d.request(method, &self_via(&via_cfg, other_peer.transport), &branch) else {
            reply_err(&mut self.dialogs, layer, 491, "Request Pending");
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
                self.by_client_tx.insert(client_tx, call_id.to_owned());
                call.renegotiation = Some(Renegotiation {
                    from,
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
        call_id: &str,
        resp: Message,
        now: Instant,
    ) {
        let status = resp.status().unwrap_or(500);
        if status < 200 {
            return;
        }
        let cfg = self.cfg.sdp.clone();
        let via_cfg = self.cfg.clone();
        let Some(call) = self.calls.get_mut(call_id) else {
            return;
        };
        let Some(r) = call.renegotiation.take() else {
            return;
        };
        self.by_client_tx.remove(&r.client_tx);
        let is_invite = r.client_request.method() == Some(&Method::Invite);
        // ACK the other leg's 2xx to our re-INVITE.
        if is_invite && (200..300).contains(&status) {
            if let Some(d) = self.dialogs.find_for_response(&resp) {
                let _ = d.handle_response(&resp);
                let branch = Branch::from_random(&rand::random::<[u8; 12]>());
                let peer = match r.from {
                    LegRef::Inbound => call.winner.map(|w| call.outbound[w].peer),
                    LegRef::Outbound(_) => Some(call.inbound.peer),
                };
                if let Some(peer) = peer {
                    let ack = d
                        .ack(
                            r.client_request.cseq().seq,
                            &self_via(&via_cfg, peer.transport),
                            &branch,
                        )
                        .build();
                    layer.send_stateless(ack, peer);
                }
            }
        } else if let Some(d) = self.dialogs.find_for_response(&resp) {
            let _ = d.handle_response(&resp);
        }
        let answer = if (200..300).contains(&status) {
            let (answerer, offerer) = match r.from {
                LegRef::Inbound => (&mut call.sdp_b, &mut call.sdp_a),
                LegRef::Outbound(_) => (&mut call.sdp_a, &mut call.sdp_b),
            };
            SessionDescription::parse(resp.body())
                .ok()
                .and_then(|a| r.pending.answer(&cfg, &a, answerer, offerer).ok())
        } else {
            None
        };
        if answer.is_some() {
            update_media(&self.media, call);
        }
        let session = match r.from {
            LegRef::Inbound => self.calls.get(call_id).and_then(|c| c.inbound.session),
            LegRef::Outbound(_) => None,
        };
        let Some(d) = self.dialogs.find_for_request(&r.request) else {
            return;
        };
        let reply = match (answer, (200..300).contains(&status)) {
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
        if let Ok(b) = reply {
            let bytes = b.build();
            let _ = layer.send_response(r.server_tx, bytes.clone(), now);
            let seq = r.request.cseq().seq;
            if r.request.method() == Some(&Method::Invite) && (200..300).contains(&status) {
                if let (LegRef::Inbound, Some(call)) = (r.from, self.calls.get_mut(call_id)) {
                    call.inbound.ack_wait = Some(AckWait::new(seq, bytes, now, layer.config()));
                }
            }
        }
    }

    // ---------------------------------------------------------------------------------
    // Ending calls

    /// API hangup (SPEC §4 `POST /v1/calls/{id}/hangup`).
    pub fn hangup(
        &mut self,
        layer: &mut TransactionLayer,
        call_id: &str,
        now: Instant,
    ) -> Result<(), ControlError> {
        self.timers_dirty.set(true);
        let Some(call) = self.calls.get(call_id) else {
            return Err(ControlError::NotFound);
        };
        let (status, reply) = match call.phase {
            Phase::Ringing => (CallStatus::Canceled, Some((487, "Request Terminated"))),
            Phase::Answered => (CallStatus::Completed, None),
        };
        self.end_call(layer, call_id, status, "api hangup", "api", reply, now);
        Ok(())
    }

    /// Ends a call everywhere: BYE to every confirmed leg still up, CANCEL to ringing
    /// forks, `reply` to an unanswered caller; releases media; records the end.
    #[allow(clippy::too_many_arguments)]
    fn end_call(
        &mut self,
        layer: &mut TransactionLayer,
        call_id: &str,
        status: CallStatus,
        cause: &str,
        by: HangupBy,
        reply: Option<(u16, &'static str)>,
        now: Instant,
    ) {
        let wall = Utc::now();
        let Some(call) = self.calls.remove(call_id) else {
            return;
        };
        // The caller.
        match (call.phase, reply) {
            (Phase::Ringing, Some((code, reason))) => {
                let response = match call
                    .inbound
                    .dialog
                    .as_ref()
                    .and_then(|id| self.dialogs.get_mut(id))
                {
                    Some(d) => d
                        .response(&call.inbound.invite, code, reason)
                        .map(|b| b.build())
                        .ok(),
                    None => Some(
                        MessageBuilder::response_to(
                            &call.inbound.invite,
                            code,
                            reason,
                            Some(&call.inbound.local_tag),
                        )
                        .build(),
                    ),
                };
                if let Some(r) = response {
                    let _ = layer.send_response(call.inbound.tx, r, now);
                }
            }
            _ => {
                if by != "caller" {
                    if let Some(id) = &call.inbound.dialog {
                        if self
                            .dialogs
                            .get(id)
                            .is_some_and(|d| d.state().is_confirmed())
                        {
                            self.bye_dialog(layer, id, call.inbound.peer, now);
                        }
                    }
                }
            }
        }
        // The callee's forks.
        for (i, leg) in call.outbound.iter().enumerate() {
            let confirmed = leg
                .dialog
                .as_ref()
                .and_then(|id| self.dialogs.get(id))
                .is_some_and(|d| d.state().is_confirmed());
            if confirmed {
                if by != "callee" || call.winner != Some(i) {
                    if let Some(id) = &leg.dialog {
                        self.bye_dialog(layer, id, leg.peer, now);
                    }
                }
            } else if leg.status == CallStatus::Ringing && !leg.canceled {
                let _ = layer.cancel(leg.tx, now);
            }
            let final_status = match leg.status {
                CallStatus::Ringing => CallStatus::Canceled,
                CallStatus::InProgress => status,
                s => s,
            };
            self.record(CallChange::LegStatus {
                leg_id: leg.id.clone(),
                status: final_status,
                at: wall,
                hangup_cause: Some(cause.to_owned()),
            });
            self.by_client_tx.remove(&leg.tx);
        }
        self.record(CallChange::LegStatus {
            leg_id: call.inbound.id.clone(),
            status,
            at: wall,
            hangup_cause: Some(cause.to_owned()),
        });
        let duration = call
            .answered_at
            .map_or(0, |a| (wall - a).num_seconds().max(0));
        self.record(CallChange::CallEnded {
            call_id: call.id.clone(),
            status,
            at: wall,
            duration_seconds: duration,
            hangup_cause: cause.to_owned(),
            hangup_by: by,
        });
        if let Err(e) = self.media.destroy_session(call.media.id) {
            tracing::warn!(error = %e, "media session not released cleanly");
        }
        for agent in [&call.caller.id, &call.callee.id] {
            if let Some(n) = self.active.get_mut(agent) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    self.active.remove(agent);
                }
            }
        }
        self.by_server_tx.remove(&call.inbound.tx);
        if let Some(r) = &call.renegotiation {
            self.by_client_tx.remove(&r.client_tx);
        }
        // Early dialogs die with the call: the forks' 487s (to the CANCELs sent above) no
        // longer reach this call, and nothing else would end them (RFC 3261 §12.3).
        let early = call
            .outbound
            .iter()
            .filter_map(|l| l.dialog.as_ref())
            .chain(call.inbound.dialog.as_ref())
            .filter(|id| self.dialogs.get(id).is_some_and(|d| d.state().is_early()))
            .cloned()
            .collect::<Vec<_>>();
        for id in early {
            self.dialogs.remove(&id);
        }
        // Dialogs we sent BYE on are terminated already; forget them and the mapping.
        self.by_dialog.retain(|_, (c, _)| c != call_id);
        self.dialogs.remove_terminated();
        tracing::info!(call = %call.id, status = status.as_str(), cause, by, "call ended");
    }

    fn bye_leg(&mut self, layer: &mut TransactionLayer, call_id: &str, leg: LegRef, now: Instant) {
        let Some(call) = self.calls.get(call_id) else {
            return;
        };
        let (id, peer) = match leg {
            LegRef::Inbound => (call.inbound.dialog.clone(), call.inbound.peer),
            LegRef::Outbound(i) => (call.outbound[i].dialog.clone(), call.outbound[i].peer),
        };
        if let Some(id) = id {
            self.bye_dialog(layer, &id, peer, now);
        }
    }

    fn bye_dialog(
        &mut self,
        layer: &mut TransactionLayer,
        id: &DialogId,
        peer: Peer,
        now: Instant,
    ) {
        let via = self_via(&self.cfg, peer.transport);
        let Some(d) = self.dialogs.get_mut(id) else {
            return;
        };
        let branch = Branch::from_random(&rand::random::<[u8; 12]>());
        match d.request(Method::Bye, &via, &branch) {
            Ok(b) => {
                if let Err(e) = layer.send_request(b.build(), peer, now) {
                    tracing::debug!(error = %e, "BYE not sent");
                }
            }
            Err(e) => tracing::debug!(error = %e, "no BYE for this dialog"),
        }
        d.terminate(TerminationReason::LocalBye);
    }

    // ---------------------------------------------------------------------------------
    // Timers

    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.timers_dirty.replace(false) {
            self.next_timer.set(self.earliest_timer());
        }
        self.next_timer.get()
    }

    fn earliest_timer(&self) -> Option<Instant> {
        self.calls
            .values()
            .flat_map(|c| {
                c.inbound
                    .ack_wait
                    .as_ref()
                    .and_then(AckWait::poll_timeout)
                    .into_iter()
                    .chain(
                        c.inbound
                            .timer
                            .as_ref()
                            .and_then(SessionTimer::poll_timeout),
                    )
                    .chain(
                        c.outbound
                            .iter()
                            .filter_map(|l| l.ack_cache.as_ref().map(AckCache::poll_timeout)),
                    )
            })
            .min()
    }

    pub fn handle_timeout(&mut self, layer: &mut TransactionLayer, now: Instant) {
        self.timers_dirty.set(true);
        let mut no_ack = Vec::new();
        let mut expired = Vec::new();
        let mut refresh = Vec::new();
        for call in self.calls.values_mut() {
            if let Some(t) = &mut call.inbound.timer {
                t.handle_timeout(now);
                match t.poll_event() {
                    Some(SessionTimerEvent::Expired) => expired.push(call.id.clone()),
                    Some(SessionTimerEvent::Refresh) => refresh.push(call.id.clone()),
                    None => {}
                }
            }
            if let Some(w) = &mut call.inbound.ack_wait {
                w.handle_timeout(now);
                while let Some(bytes) = w.poll_transmit() {
                    layer.send_stateless(bytes, call.inbound.peer);
                }
                if let Some(AckWaitEvent::NoAck) = w.poll_event() {
                    no_ack.push(call.id.clone());
                }
                if w.is_done() {
                    call.inbound.ack_wait = None;
                }
            }
            for leg in &mut call.outbound {
                if leg.ack_cache.as_ref().is_some_and(|c| c.is_expired(now)) {
                    leg.ack_cache = None;
                }
            }
        }
        for id in no_ack {
            // RFC 3261 §13.3.1.4: no ACK for our 2xx: the session is over.
            self.end_call(
                layer,
                &id,
                CallStatus::Completed,
                "no ACK",
                "system",
                None,
                now,
            );
        }
        for id in expired {
            // RFC 4028 §10: nobody refreshed the session in time.
            self.end_call(
                layer,
                &id,
                CallStatus::Completed,
                "session expired",
                "system",
                None,
                now,
            );
        }
        for id in refresh {
            self.refresh_caller(layer, &id, now);
        }
    }

    /// We are the refresher (the caller does not support timers): an UPDATE without SDP
    /// refreshes the session (RFC 4028 §10, RFC 3311).
    fn refresh_caller(&mut self, layer: &mut TransactionLayer, call_id: &str, now: Instant) {
        let via = |t| self_via(&self.cfg, t);
        let Some(call) = self.calls.get_mut(call_id) else {
            return;
        };
        let (
            Some(id),
            Some(UasDecision::Accept {
                session_expires, ..
            }),
        ) = (call.inbound.dialog.clone(), call.inbound.session)
        else {
            return;
        };
        let Some(d) = self.dialogs.get_mut(&id) else {
            return;
        };
        let branch = Branch::from_random(&rand::random::<[u8; 12]>());
        if let Ok(b) = d.request(Method::Update, &via(call.inbound.peer.transport), &branch) {
            let b = b.header("Session-Expires", &session_expires.to_string());
            if layer
                .send_request(b.build(), call.inbound.peer, now)
                .is_ok()
            {
                if let Some(t) = &mut call.inbound.timer {
                    t.refreshed(&session_expires, Refresher::Uas, now);
                }
            }
        }
    }

    /// A client transaction timed out (Timer B/F): a fork that never answered.
    pub fn on_client_timeout(
        &mut self,
        layer: &mut TransactionLayer,
        tx: ClientTxId,
        now: Instant,
    ) {
        self.timers_dirty.set(true);
        let Some(call_id) = self.by_client_tx.get(&tx).cloned() else {
            return;
        };
        let Some(call) = self.calls.get_mut(&call_id) else {
            return;
        };
        if let Some(leg) = call.outbound.iter_mut().find(|l| l.tx == tx) {
            if leg.status == CallStatus::Ringing {
                leg.status = CallStatus::NoAnswer;
                self.fork_failed(layer, &call_id, now);
            }
        }
    }
}

fn update_media(media: &MediaEngine, call: &Call) {
    let (Some(a), Some(b)) = (&call.sdp_a.media, &call.sdp_b.media) else {
        return;
    };
    for (side, this, other) in [(Side::A, a, b), (Side::B, b, a)] {
        let remote = leg_remote(this, other);
        if let Err(e) = media.update_leg(call.media.id, side, remote) {
            tracing::warn!(error = %e, "media update failed");
        }
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
        direction: match this.direction {
            Direction::SendRecv => MediaDirection::SendRecv,
            Direction::SendOnly => MediaDirection::SendOnly,
            Direction::RecvOnly => MediaDirection::RecvOnly,
            Direction::Inactive => MediaDirection::Inactive,
        },
        ..LegRemote::default()
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

fn self_via(cfg: &EngineConfig, transport: Transport) -> LocalVia {
    LocalVia::new(
        transport,
        format!("{}:{}", host(cfg.public_ip), cfg.sip_port),
    )
}

fn contact_uri(cfg: &EngineConfig, transport: Transport) -> String {
    let t = if transport == Transport::Tcp {
        ";transport=tcp"
    } else {
        ""
    };
    format!("sip:voxgate@{}:{}{t}", host(cfg.public_ip), cfg.sip_port)
}

fn host(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("[{v6}]"),
    }
}

fn random_tag() -> String {
    hex::encode(rand::random::<[u8; 6]>())
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
        488 => "Not Acceptable Here",
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
