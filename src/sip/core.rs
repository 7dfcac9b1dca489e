//! The SIP core task: one task owns the UDP socket, the transaction layer, the registrar and
//! the per-source guards, so none of them needs a lock. Stream connections feed it through
//! a channel. Every wake-up drains all ready datagrams before it yields (fewer wake-ups
//! under load), then flushes what the transaction layer wants to send.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use tokio::net::UdpSocket;
use tokio::sync::{broadcast, mpsc, watch};
use voxgate_sip::message::{HeaderName, Message, MessageBuilder, Method, SipUri, Via};
use voxgate_sip::transaction::{
    Incoming, Peer, ServerTxId, TransactionLayer, Transport, TxEvent, TxId,
};

use super::agents::{AgentLookup, AgentUpdate};
use super::guard::{BanGuard, RateGuard};
use super::overload::{Overload, Refusal};
use super::persist::PersistOp;
use super::streams::{Delivery, Streams};
use super::transport::{Connector, Inbound};
use crate::calls::control::CallCommand;
use crate::calls::engine::{CallEngine, Command, Output};
use crate::calls::env::{AgentDirectory, Clock};
use crate::calls::record::{RecordSender, RecorderHealth};
use crate::events::AppEvent;
use crate::media::MediaEngine;
use crate::registrar::{Registrar, Reply};
use crate::sip::registration::{RegistrationStates, Registrations};
use crate::trunks::runtime::{GatewayDirectory, TrunkTable};

/// `Retry-After` of a 503 for a new call shed while call records back up (RFC 3261
/// §21.5.4): long enough for a recovering database to work off a backlog.
const SHED_RETRY_AFTER_SECONDS: u32 = 30;

/// Methods we answer outside a dialog, for Allow headers (grows with the call engine).
pub const ALLOW: &str = "INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE, INFO, REGISTER";

pub struct Core {
    /// `None` when `sip.listen_udp` is off.
    pub udp: Option<Arc<UdpSocket>>,
    pub layer: TransactionLayer,
    pub registrar: Registrar,
    pub rate: RateGuard,
    pub bans: BanGuard,
    /// Agent lookups for the worker that reads them off this loop (`sip::agents`).
    pub agent_lookups: mpsc::UnboundedSender<AgentLookup>,
    /// What that worker read, to apply to the registrar in event order.
    pub agent_updates: mpsc::UnboundedReceiver<AgentUpdate>,
    /// The call record worker's backlog: new calls are shed while it is over its bound.
    pub record_health: Arc<RecorderHealth>,
    pub max_message_bytes: usize,
    pub server_header: String,
    /// Open stream connections, and the ones being opened.
    pub streams: Streams,
    /// Opens TCP and TLS connections for requests that have none (RFC 3261 §18.1.1).
    pub connector: Connector,
    pub engine: CallEngine,
    /// The relay (for its gauges; the engine drives it).
    pub media: Arc<MediaEngine>,
    /// The call-record queue (the engine's records go here, in order).
    pub records: RecordSender,
    /// Commands from the control API.
    pub commands: mpsc::Receiver<CallCommand>,
    /// Key presses the media listeners heard.
    pub dtmf: mpsc::UnboundedReceiver<crate::media::ListenEvent>,
    /// Ends of playbacks the engine waits for (call programs).
    pub playbacks: mpsc::UnboundedReceiver<crate::media::PlaybackEvent>,
    /// Sends call programs' HTTP requests; their replies come back on `program_replies`.
    pub fetcher: crate::calls::fetch::Fetcher,
    pub program_replies: mpsc::UnboundedReceiver<crate::calls::fetch::ProgramReply>,
    /// How long live calls may go on after SIGTERM before they are hung up.
    pub shutdown_grace: Duration,
    /// The registration store queue (shared with the registrar, so barriers stay in order).
    pub persist: mpsc::UnboundedSender<PersistOp>,
    /// Barriers the persistence worker has committed.
    pub committed: mpsc::UnboundedReceiver<u64>,
    /// Responses waiting for their barrier's commit, in barrier order.
    pub pending: VecDeque<(u64, ServerTxId, Bytes)>,
    pub next_barrier: u64,
    /// Admission of new calls: `sip.max_cps` and the queue-delay limit.
    pub overload: Overload,
    /// Trunks, their addresses and registrations (swapped in by `trunks::runtime::run`).
    pub trunks: Arc<TrunkTable>,
    pub trunk_updates: mpsc::UnboundedReceiver<Arc<TrunkTable>>,
    /// voxgate's own registrations to carriers.
    pub registrations: Registrations,
    /// Their state, for the API.
    pub registration_states: RegistrationStates,
}

/// The engine's directory over the core's registrar, connections and trunk table (a
/// macro, so that the borrows stay on disjoint fields of the core).
macro_rules! directory {
    ($core:expr) => {
        GatewayDirectory {
            agents: AgentDirectory {
                registrar: &mut $core.registrar,
                conns: &$core.streams.by_addr,
            },
            trunks: &$core.trunks,
        }
    };
}

/// Datagrams read per wake-up at most, before the core looks at its other inputs.
const UDP_BATCH: usize = 256;

/// A new out-of-dialog INVITE held back until the rest of its batch is handled.
struct Deferred {
    msg: Message,
    peer: Peer,
    arrived: Instant,
}

impl Core {
    pub async fn run(
        mut self,
        mut inbound: mpsc::Receiver<Inbound>,
        mut events: broadcast::Receiver<AppEvent>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut buf = vec![0u8; 65_536];
        let mut cmsg = nix::cmsg_space!(nix::sys::time::TimeSpec);
        let mut deferred: Vec<Deferred> = Vec::with_capacity(UDP_BATCH);
        for reason in [Refusal::MaxCps, Refusal::QueueDelay] {
            metrics::counter!("voxgate_sip_overload_rejected_total", "reason" => reason.label())
                .increment(0);
        }
        let mut drain_until: Option<Instant> = None;
        let mut housekeeping = tokio::time::interval(Duration::from_secs(1));
        housekeeping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let timer = [
                self.layer.poll_timeout(),
                self.engine.poll_timeout(),
                self.registrations.poll_timeout(),
            ]
            .into_iter()
            .flatten()
            .min();
            let sleep = async {
                match timer {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                r = udp_readable(self.udp.clone()) => {
                    if r.is_ok() {
                        self.drain_udp(&mut buf, &mut cmsg, &mut deferred);
                    }
                }
                Some(msg) = inbound.recv() => self.on_inbound(msg),
                () = sleep => {
                    let now = Instant::now();
                    self.layer.handle_timeout(now);
                    let mut directory = directory!(self);
                    self.engine
                        .handle_timeout(&mut self.layer, &mut directory, now);
                    self.registrations.handle_timeout(&mut self.layer, now);
                }
                Some(table) = self.trunk_updates.recv() => self.on_trunks(table),
                Some(cmd) = self.commands.recv() => self.on_command(cmd),
                Some(press) = self.dtmf.recv() => {
                    let mut directory = directory!(self);
                    self.engine.on_dtmf(&mut self.layer, &mut directory, press, Instant::now());
                }
                Some(reply) = self.program_replies.recv() => {
                    let mut directory = directory!(self);
                    self.engine.on_program_reply(&mut self.layer, &mut directory, reply, Instant::now());
                }
                Some(ended) = self.playbacks.recv() => {
                    let mut directory = directory!(self);
                    self.engine.on_playback(&mut self.layer, &mut directory, ended, Instant::now());
                }
                ev = events.recv() => self.on_event(ev),
                Some(update) = self.agent_updates.recv() => self.on_agent_update(update),
                Some(n) = self.committed.recv() => self.release(n),
                _ = housekeeping.tick() => self.housekeeping(),
                _ = shutdown.changed(), if drain_until.is_none() => {
                    // SPEC §1: refuse new calls, give live ones a grace period.
                    self.engine.start_draining();
                    drain_until = Some(Instant::now() + self.shutdown_grace);
                    tracing::info!(calls = self.engine.active_calls(), "draining");
                }
            }
            self.flush().await;
            if let Some(until) = drain_until {
                if self.engine.active_calls() == 0 {
                    break;
                }
                if Instant::now() >= until {
                    self.engine.hangup_all(&mut self.layer, Instant::now());
                    self.flush().await;
                    break;
                }
            }
        }
        // Answer what is already on its way to the store, then let the worker drain:
        // dropping our sender (and the registrar's) closes its queue.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        while !self.pending.is_empty() {
            match tokio::time::timeout_at(deadline, self.committed.recv()).await {
                Ok(Some(n)) => self.release(n),
                _ => break,
            }
        }
        self.flush().await;
        tracing::info!("sip core stopped");
    }

    /// Reads what is ready on the UDP socket (at most [`UDP_BATCH`] datagrams), then handles
    /// it: everything but new INVITEs at once, in arrival order; the new INVITEs of the
    /// batch last. Under load this answers ACKs, BYEs, CANCELs, responses and REGISTERs
    /// before taking on more calls (issue 11; RFC 6357 §4: favour work that completes
    /// calls already admitted), and each INVITE's queue delay then includes the batch.
    fn drain_udp(&mut self, buf: &mut [u8], cmsg: &mut [u8], deferred: &mut Vec<Deferred>) {
        let Some(udp) = self.udp.clone() else { return };
        deferred.clear();
        for _ in 0..UDP_BATCH {
            match recv_stamped(&udp, buf, cmsg) {
                Ok((n, from, stamp)) => {
                    let arrived = arrival(stamp, Instant::now(), SystemTime::now());
                    if let Some(data) = buf.get(..n) {
                        self.on_datagram(data, from, arrived, Some(deferred));
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    // ICMP errors surface here on Linux (ECONNREFUSED from an earlier send);
                    // the socket stays usable.
                    tracing::debug!(error = %e, "udp receive failed");
                    break;
                }
            }
        }
        for d in deferred.drain(..) {
            self.on_message(d.msg, d.peer, d.arrived);
        }
    }

    fn on_datagram(
        &mut self,
        data: &[u8],
        from: SocketAddr,
        arrived: Instant,
        defer: Option<&mut Vec<Deferred>>,
    ) {
        if data.len() > self.max_message_bytes {
            metrics::counter!("voxgate_sip_malformed_total", "transport" => "udp").increment(1);
            return;
        }
        // Keep-alive CRLFs (RFC 5626 §3.5.1) are not messages.
        if data.iter().all(|b| matches!(b, b'\r' | b'\n')) {
            return;
        }
        let peer = Peer {
            transport: Transport::Udp,
            addr: from,
            conn: None,
        };
        self.on_bytes(Bytes::copy_from_slice(data), peer, arrived, defer);
    }

    fn on_inbound(&mut self, msg: Inbound) {
        match msg {
            Inbound::Stream {
                conn,
                from,
                transport,
                bytes,
            } => {
                let peer = Peer {
                    transport,
                    addr: from,
                    conn: Some(conn),
                };
                // No kernel timestamp on a stream: the core's lag since the reader task
                // handed the message over is not measured (the channel is bounded).
                self.on_bytes(bytes, peer, Instant::now(), None);
            }
            Inbound::Opened {
                conn,
                out,
                from,
                transport,
            } => {
                self.streams.opened(conn, from, transport, out);
            }
            Inbound::Closed { conn } => self.streams.closed(conn),
            Inbound::Malformed { transport, .. } => {
                let label = transport_name(transport);
                metrics::counter!("voxgate_sip_malformed_total", "transport" => label).increment(1);
            }
            Inbound::ConnectFailed { transport, addr } => {
                // RFC 3263 §4.3 / RFC 3261 §8.1.3.1: the transactions waiting for this
                // connection fail at the transport; the engine tries the next address or
                // answers 503.
                self.streams.connect_failed(transport, addr);
                metrics::counter!("voxgate_sip_connect_failed_total").increment(1);
                let peer = Peer {
                    transport,
                    addr,
                    conn: None,
                };
                self.layer.handle_transport_error(&peer, Instant::now());
            }
        }
    }

    fn on_bytes(
        &mut self,
        bytes: Bytes,
        peer: Peer,
        arrived: Instant,
        defer: Option<&mut Vec<Deferred>>,
    ) {
        let now = Instant::now();
        let ip = peer.addr.ip();
        if self.bans.is_banned(ip, now) {
            metrics::counter!("voxgate_sip_banned_dropped_total").increment(1);
            return;
        }
        if !self.rate.allow(ip, now) {
            metrics::counter!("voxgate_sip_rate_limited_total").increment(1);
            return;
        }
        let msg = match Message::parse(bytes) {
            Ok(m) => m,
            Err(e) => {
                metrics::counter!("voxgate_sip_malformed_total", "transport" => transport_name(peer.transport))
                    .increment(1);
                tracing::debug!(from = %peer.addr, error = %e, "dropped unparseable SIP message");
                return;
            }
        };
        match defer {
            Some(later) if is_new_invite(&msg) => later.push(Deferred { msg, peer, arrived }),
            _ => self.on_message(msg, peer, arrived),
        }
    }

    fn on_message(&mut self, msg: Message, peer: Peer, arrived: Instant) {
        let now = Instant::now();
        // RFC 3261 §18.2.2 / RFC 3581: answers go where the request really came from.
        let reply_to = response_peer(&msg, &peer);
        match self.layer.handle_incoming(msg, reply_to, now) {
            Some(Incoming::Request { tx, msg, .. }) => {
                self.on_request(tx, msg, &peer, reply_to, now, arrived);
            }
            Some(Incoming::Cancel {
                tx, invite, msg, ..
            }) => {
                // RFC 3261 §9.2: 200 to the CANCEL, then 487 to the INVITE it cancels; a
                // CANCEL that matches nothing gets 481.
                let known = invite.is_some_and(|inv| self.engine.knows_invite(inv));
                let reply = if known {
                    Reply::new(200, "OK")
                } else {
                    Reply::new(481, "Call/Transaction Does Not Exist")
                };
                let response = self.build_response(&msg, &peer, &reply);
                let _ = self.layer.send_response(tx, response, now);
                if let (true, Some(inv)) = (known, invite) {
                    self.engine.on_cancel(&mut self.layer, inv, now);
                }
            }
            Some(Incoming::Ack { msg, .. }) => self.engine.on_ack(&msg),
            // A 2xx retransmitted after its transaction is gone: re-ACK from the dialog's
            // cache if we still have it; otherwise nothing to do.
            Some(Incoming::Response { .. }) | None => {}
        }
    }

    fn on_request(
        &mut self,
        tx: ServerTxId,
        req: Message,
        peer: &Peer,
        reply_to: Peer,
        now: Instant,
        arrived: Instant,
    ) {
        if req.method() == Some(&Method::Ack) {
            return;
        }
        if let Some(reply) = precheck(&req) {
            self.respond(tx, &req, peer, &reply, now);
            return;
        }
        let in_dialog = req.to().tag().is_some() && req.method() != Some(&Method::Register);
        if in_dialog {
            if !self
                .engine
                .on_in_dialog(&mut self.layer, tx, req.clone(), now)
            {
                let reply = Reply::new(481, "Call/Transaction Does Not Exist");
                self.respond(tx, &req, peer, &reply, now);
            }
            return;
        }
        if req.method() == Some(&Method::Invite) {
            // Decided before the engine spends anything on it; the 503 goes out on the
            // INVITE's server transaction, which absorbs the caller's retransmissions
            // (RFC 3261 §17.2.1) and resends the 503 itself.
            if let Err(refusal) = self.overload.admit(req.call_id(), arrived, now) {
                metrics::counter!("voxgate_sip_overload_rejected_total", "reason" => refusal.label())
                    .increment(1);
                let reply = Reply::new(503, "Service Unavailable").with(
                    "Retry-After",
                    refusal.retry_after(rand::random()).to_string(),
                );
                self.respond(tx, &req, peer, &reply, now);
                return;
            }
            if let Some(reply) = self.shed_for_records() {
                self.respond(tx, &req, peer, &reply, now);
                return;
            }
            let mut directory = directory!(self);
            let answered = self.engine.on_invite(
                &mut self.layer,
                &mut directory,
                tx,
                req.clone(),
                peer.addr.ip(),
                reply_to,
                now,
            );
            if let Some(reply) = answered {
                self.count_auth_failure(&reply, peer, now);
                self.respond(tx, &req, peer, &reply, now);
            }
            return;
        }
        let reply = self.dispatch(&req, peer, now);
        self.respond(tx, &req, peer, &reply, now);
    }

    /// A new call is refused with 503 while the call records cannot keep up (the database
    /// is down or too slow and the recorder's backlog passed its bound): admitting it
    /// would mean its record might be lost, and the records are what must stay durable.
    /// Calls already up go on.
    fn shed_for_records(&self) -> Option<Reply> {
        if !self.record_health.overloaded() {
            return None;
        }
        metrics::counter!("voxgate_calls_shed_total", "reason" => "records").increment(1);
        Some(
            Reply::new(503, "Service Unavailable")
                .with("Retry-After", SHED_RETRY_AFTER_SECONDS.to_string()),
        )
    }

    fn count_auth_failure(&mut self, reply: &Reply, peer: &Peer, now: Instant) {
        if reply.auth_failure && self.bans.record_failure(peer.addr.ip(), now) {
            tracing::warn!(source = %peer.addr.ip(), "banning source after repeated authentication failures");
            metrics::counter!("voxgate_sip_bans_total").increment(1);
        }
    }

    fn respond(&mut self, tx: ServerTxId, req: &Message, peer: &Peer, reply: &Reply, now: Instant) {
        let response = self.build_response(req, peer, reply);
        if reply.durable {
            // Group commit: the 200 goes out once the binding is in the store.
            let n = self.next_barrier;
            self.next_barrier += 1;
            if self.persist.send(PersistOp::Barrier(n)).is_ok() {
                self.pending.push_back((n, tx, response));
                return;
            }
        }
        if let Err(e) = self.layer.send_response(tx, response, now) {
            tracing::debug!(error = %e, "response not sent");
        }
    }

    /// Sends the responses whose changes are committed up to barrier `n`.
    fn release(&mut self, n: u64) {
        let now = Instant::now();
        while self.pending.front().is_some_and(|(b, _, _)| *b <= n) {
            if let Some((_, tx, response)) = self.pending.pop_front() {
                if let Err(e) = self.layer.send_response(tx, response, now) {
                    tracing::debug!(error = %e, "response not sent");
                }
            }
        }
    }

    fn dispatch(&mut self, req: &Message, peer: &Peer, now: Instant) -> Reply {
        match req.method() {
            Some(Method::Register) => {
                let reply = self.registrar.handle_register(
                    req,
                    transport_name(peer.transport),
                    peer.addr,
                    chrono::Utc::now(),
                    rand::random(),
                );
                self.count_auth_failure(&reply, peer, now);
                metrics::counter!("voxgate_sip_register_total", "code" => reply.code.to_string())
                    .increment(1);
                reply
            }
            Some(Method::Options) => Reply::new(200, "OK")
                .with("Allow", ALLOW.to_owned())
                .with("Accept", "application/sdp".to_owned()),
            _ => Reply::new(501, "Not Implemented").with("Allow", ALLOW.to_owned()),
        }
    }

    fn build_response(&self, req: &Message, peer: &Peer, reply: &Reply) -> Bytes {
        let tag = format!("{:08x}", rand::random::<u32>());
        let mut b = MessageBuilder::response(reply.code, reply.reason);
        for (i, via) in req.vias().filter_map(Result::ok).enumerate() {
            if i == 0 {
                b = b.header("Via", &stamp_via(&via, peer.addr));
            } else {
                b = b.header("Via", &format_via(&via));
            }
        }
        let to = req.to();
        let to_value = req.header(HeaderName::To).unwrap_or_default();
        let to_value = if to.tag().is_none() {
            format!("{to_value};tag={tag}")
        } else {
            to_value.to_owned()
        };
        b = b
            .header("From", req.header(HeaderName::From).unwrap_or_default())
            .header("To", &to_value)
            .header("Call-ID", req.call_id())
            .header(
                "CSeq",
                &format!("{} {}", req.cseq().seq, req.cseq().method.as_str()),
            );
        for (name, value) in &reply.headers {
            b = b.header(name, value);
        }
        b = b.header("Server", &self.server_header);
        b.build()
    }

    fn on_command(&mut self, cmd: CallCommand) {
        match cmd {
            CallCommand::Hangup { call_id, reply } => {
                let mut directory = directory!(self);
                let result = self.engine.handle_command(
                    &mut self.layer,
                    &mut directory,
                    Command::Hangup { call: call_id },
                    Instant::now(),
                );
                let _ = reply.send(result);
            }
            CallCommand::Originate(o) => {
                let mut directory = directory!(self);
                let _ = self.engine.handle_command(
                    &mut self.layer,
                    &mut directory,
                    Command::Originate(o),
                    Instant::now(),
                );
            }
            CallCommand::Play {
                call_id,
                leg,
                play,
                reply,
            } => {
                let _ = reply.send(self.engine.play(&call_id, leg.as_ref(), *play));
            }
            CallCommand::Dtmf {
                call_id,
                leg,
                digits,
                reply,
            } => {
                let sent = self.engine.send_digits(
                    &mut self.layer,
                    &call_id,
                    leg.as_ref(),
                    digits,
                    Instant::now(),
                );
                let _ = reply.send(sent);
            }
            CallCommand::Recording {
                call_id,
                action,
                reply,
            } => {
                let _ = reply.send(self.engine.recording(&call_id, action, Instant::now()));
            }
        }
    }

    /// Hands the engine's records to the recorder and its measurements to /metrics.
    fn drain_engine(&mut self) {
        while let Some(out) = self.engine.poll_output() {
            match out {
                Output::Record(change) => self.records.send(change),
                // Set-up latency (issue 11): first INVITE in (kernel timestamp) to 2xx out.
                Output::Answered { sip_call_id } => {
                    if let Some(d) = self.overload.answered(&sip_call_id, Instant::now()) {
                        metrics::histogram!("voxgate_call_setup_seconds").record(d.as_secs_f64());
                    }
                }
                Output::ProgramRequest(req) => self.fetcher.spawn(req),
                Output::Event(_) => {}
            }
        }
    }

    /// Agent events: the lookups they need go to the agent worker (never awaited here);
    /// its answers come back through `agent_updates`.
    fn on_event(&mut self, ev: Result<AppEvent, broadcast::error::RecvError>) {
        let lookup = match ev {
            Ok(AppEvent::AgentChanged { username, .. }) => AgentLookup::Changed { username },
            Ok(AppEvent::AgentDeleted { id, .. }) => AgentLookup::Deleted { id },
            // The trunk directory is reloaded by whoever changed it.
            Ok(AppEvent::TrunksChanged) => return,
            // Missed some: reload everything.
            Err(broadcast::error::RecvError::Lagged(_)) => AgentLookup::All,
            Err(broadcast::error::RecvError::Closed) => return,
        };
        if self.agent_lookups.send(lookup).is_err() {
            tracing::warn!("agent worker gone; agent change not applied");
        }
    }

    fn on_agent_update(&mut self, update: AgentUpdate) {
        match update {
            AgentUpdate::Upsert(a) => self.registrar.upsert_agent(a),
            AgentUpdate::Remove { id } => self.registrar.remove_agent(&id),
            AgentUpdate::Replace(all) => self.registrar.load_agents(all),
        }
    }

    /// A new trunk table: the engine routes with it from now on, and the registrations to
    /// carriers follow it.
    fn on_trunks(&mut self, table: Arc<TrunkTable>) {
        self.registrations
            .set(table.registrations.clone(), &mut self.layer, Instant::now());
        self.trunks = table;
    }

    fn housekeeping(&mut self) {
        let now = Instant::now();
        let clock = Clock::new(now, chrono::Utc::now());
        self.engine.set_clock(clock);
        let views = self.registrations.views(&clock, now);
        if let Ok(mut states) = self.registration_states.write() {
            *states = views;
        }
        let removed = self.registrar.sweep(chrono::Utc::now());
        if removed > 0 {
            tracing::debug!(removed, "expired registrations swept");
        }
        self.bans.prune(now);
        metrics::gauge!("voxgate_sip_transactions").set(self.layer.len() as f64);
        metrics::gauge!("voxgate_registrations").set(self.registrar.binding_count() as f64);
        metrics::gauge!("voxgate_calls_active").set(self.engine.active_calls() as f64);
        metrics::gauge!("voxgate_sip_dialogs").set(self.engine.dialog_count() as f64);
        let media = self.media.stats();
        metrics::gauge!("voxgate_rtp_ports_allocated").set((media.allocated_port_pairs * 2) as f64);
    }

    async fn flush(&mut self) {
        let now = Instant::now();
        // A transport error while sending raises events that need the engine, whose
        // answers may need sending again: loop until both queues are empty.
        loop {
            self.handle_layer_events(now);
            if !self.transmit().await {
                break;
            }
        }
        self.drain_engine();
        // One wake-up per turn for the relay workers, carrying this turn's commands.
        self.media.flush_wakes();
    }

    fn handle_layer_events(&mut self, now: Instant) {
        while let Some(ev) = self.layer.poll_event() {
            match ev {
                TxEvent::Response { tx, msg } => {
                    let registration =
                        self.registrations
                            .on_response(&mut self.layer, tx, &msg, now);
                    if !registration {
                        self.engine.on_response(&mut self.layer, tx, msg, now);
                    }
                }
                // RFC 3261 §8.1.3.1: a timeout is a 408, a transport failure a 503.
                TxEvent::Timeout {
                    tx: TxId::Client(tx),
                } => {
                    let registration =
                        self.registrations
                            .on_failure(&mut self.layer, tx, "timeout", now);
                    if !registration {
                        self.engine.on_client_failure(&mut self.layer, tx, 408, now);
                    }
                }
                TxEvent::TransportError {
                    tx: TxId::Client(tx),
                } => {
                    let registration =
                        self.registrations
                            .on_failure(&mut self.layer, tx, "transport error", now);
                    if !registration {
                        self.engine.on_client_failure(&mut self.layer, tx, 503, now);
                    }
                }
                TxEvent::Terminated {
                    tx: TxId::Client(tx),
                } => self.engine.on_client_terminated(tx),
                _ => {}
            }
        }
    }

    /// Sends what the layer queued; true if a transport failure raised new events.
    async fn transmit(&mut self) -> bool {
        let mut failed = false;
        while let Some(t) = self.layer.poll_transmit() {
            match (t.to.transport, &self.udp) {
                (Transport::Udp, None) => {}
                (Transport::Udp, Some(udp)) => {
                    if let Err(e) = udp.try_send_to(&t.bytes, t.to.addr) {
                        if e.kind() == std::io::ErrorKind::WouldBlock {
                            let _ = udp.send_to(&t.bytes, t.to.addr).await;
                        } else {
                            tracing::debug!(to = %t.to.addr, error = %e, "udp send failed");
                        }
                    }
                }
                _ => {
                    let sent = match self.streams.send(&t.to, t.bytes) {
                        Delivery::Dial(transport, addr) => {
                            self.connector.connect(transport, addr);
                            true
                        }
                        Delivery::Sent | Delivery::Waiting => true,
                        Delivery::Failed => false,
                    };
                    if !sent {
                        metrics::counter!("voxgate_sip_stream_send_failed_total").increment(1);
                        self.layer.handle_transport_error(&t.to, Instant::now());
                        failed = true;
                    }
                }
            }
        }
        failed
    }
}

async fn udp_readable(udp: Option<Arc<UdpSocket>>) -> std::io::Result<()> {
    match udp {
        Some(udp) => udp.readable().await,
        None => std::future::pending().await,
    }
}

/// One datagram with the kernel's receive timestamp (`SO_TIMESTAMPNS`, set on the socket
/// at start) when there is one.
fn recv_stamped(
    udp: &UdpSocket,
    buf: &mut [u8],
    cmsg: &mut [u8],
) -> std::io::Result<(usize, SocketAddr, Option<SystemTime>)> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags, SockaddrStorage};
    use std::os::fd::AsRawFd as _;
    udp.try_io(tokio::io::Interest::READABLE, || {
        let mut iov = [std::io::IoSliceMut::new(buf)];
        let msg = recvmsg::<SockaddrStorage>(
            udp.as_raw_fd(),
            &mut iov,
            Some(&mut *cmsg),
            MsgFlags::MSG_DONTWAIT,
        )
        .map_err(std::io::Error::from)?;
        let mut stamp = None;
        if let Ok(cmsgs) = msg.cmsgs() {
            for c in cmsgs {
                if let ControlMessageOwned::ScmTimestampns(ts) = c {
                    let secs = u64::try_from(ts.tv_sec()).unwrap_or(0);
                    let nanos = u32::try_from(ts.tv_nsec()).unwrap_or(0);
                    stamp = Some(SystemTime::UNIX_EPOCH + Duration::new(secs, nanos));
                }
            }
        }
        let from = msg.address.as_ref().and_then(|a| {
            a.as_sockaddr_in()
                .map(|v4| SocketAddr::from(std::net::SocketAddrV4::from(*v4)))
                .or_else(|| {
                    a.as_sockaddr_in6()
                        .map(|v6| SocketAddr::from(std::net::SocketAddrV6::from(*v6)))
                })
        });
        match from {
            Some(from) => Ok((msg.bytes, from, stamp)),
            None => Err(std::io::Error::other("datagram without a source address")),
        }
    })
}

/// When a datagram stamped `stamp` (wall clock, by the kernel) arrived, on the monotonic
/// clock. Without a stamp, or with a wall clock that stepped, it arrived `now`; the
/// delay is capped so a clock step cannot stall admissions for long.
fn arrival(stamp: Option<SystemTime>, now: Instant, wall: SystemTime) -> Instant {
    const MAX_DELAY: Duration = Duration::from_secs(5);
    let waited = stamp
        .and_then(|s| wall.duration_since(s).ok())
        .unwrap_or(Duration::ZERO)
        .min(MAX_DELAY);
    now.checked_sub(waited).unwrap_or(now)
}

/// An INVITE outside any dialog (no To tag): a new call, the one kind of request the
/// core defers and may refuse under overload.
fn is_new_invite(msg: &Message) -> bool {
    msg.is_request() && msg.method() == Some(&Method::Invite) && msg.to().tag().is_none()
}

/// The UAS checks of RFC 3261 §8.2.2 that come before any method-specific processing.
fn precheck(req: &Message) -> Option<Reply> {
    // §8.2.2.1: only SIP URIs (sips arrives with TLS).
    let scheme_ok = req.request_uri().is_some_and(|uri| {
        SipUri::parse(uri).is_ok_and(|u| {
            u.scheme.eq_ignore_ascii_case("sip") || u.scheme.eq_ignore_ascii_case("sips")
        })
    });
    if !scheme_ok {
        return Some(Reply::new(416, "Unsupported URI Scheme"));
    }
    // §8.2.2.3: we implement no extension a client may require yet.
    let required: Vec<&str> = req.require().collect();
    if !required.is_empty() && req.method() != Some(&Method::Cancel) {
        return Some(Reply::new(420, "Bad Extension").with("Unsupported", required.join(", ")));
    }
    None
}

fn transport_name(transport: Transport) -> &'static str {
    match transport {
        Transport::Udp => "udp",
        Transport::Tcp => "tcp",
        Transport::Tls => "tls",
        Transport::Ws => "ws",
        Transport::Wss => "wss",
    }
}

/// Where responses to this request go (RFC 3261 §18.2.2, RFC 3581 §4). Streams answer on the
/// connection; datagrams go to the source address when the client asked for rport, else to
/// the received address and the Via's port.
fn response_peer(msg: &Message, peer: &Peer) -> Peer {
    if peer.transport != Transport::Udp || !msg.is_request() {
        return *peer;
    }
    let via = msg.top_via();
    if via.rport.is_some() {
        return *peer;
    }
    let port = via.port.unwrap_or(5060);
    Peer {
        addr: SocketAddr::new(peer.addr.ip(), port),
        ..*peer
    }
}

fn format_via(via: &Via<'_>) -> String {
    match via.port {
        Some(p) => format!("SIP/2.0/{} {}:{}{}", via.transport, via.host, p, via.params),
        None => format!("SIP/2.0/{} {}{}", via.transport, via.host, via.params),
    }
}

/// The top Via with `received` (when the sent-by differs from the source) and a filled-in
/// `rport` (RFC 3261 §18.2.1, RFC 3581 §4).
fn stamp_via(via: &Via<'_>, source: SocketAddr) -> String {
    let ip = source.ip();
    let mut out = match via.port {
        Some(p) => format!("SIP/2.0/{} {}:{}", via.transport, via.host, p),
        None => format!("SIP/2.0/{} {}", via.transport, via.host),
    };
    // Re-emit the parameters, dropping any received/rport we are about to set.
    for param in via
        .params
        .split(';')
        .map(str::trim)
        .filter(|p| !p.is_empty())
    {
        let name = param.split('=').next().unwrap_or("").trim();
        if name.eq_ignore_ascii_case("received") || name.eq_ignore_ascii_case("rport") {
            continue;
        }
        out.push(';');
        out.push_str(param);
    }
    let host_ip: Option<IpAddr> = via.host.trim_matches(['[', ']']).parse().ok();
    if via.rport.is_some() || host_ip != Some(ip) {
        out.push_str(";received=");
        out.push_str(&ip.to_string());
    }
    if via.rport.is_some() {
        out.push_str(";rport=");
        out.push_str(&source.port().to_string());
    }
    out
}
