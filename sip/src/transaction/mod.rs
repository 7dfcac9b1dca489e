//! RFC 3261 §17 transactions (with the RFC 6026 corrections) as a sans-IO layer.
//!
//! One [`TransactionLayer`] per SIP endpoint owns every client and server transaction, one
//! timer heap and two output queues. Like quinn-proto it never touches a socket or the
//! clock: the driver feeds it received messages, `now` and transport failures, and drains
//! datagrams to send ([`TransactionLayer::poll_transmit`]), the next wake-up
//! ([`TransactionLayer::poll_timeout`]) and events for the transaction user
//! ([`TransactionLayer::poll_event`]).
//!
//! What the layer does by itself: retransmit requests (Timers A, E) and non-2xx INVITE
//! responses (Timer G) on unreliable transports, answer retransmitted requests with the last
//! response, send 100 Trying for an INVITE the TU leaves unanswered for 200 ms, ACK non-2xx
//! final responses, time out (B, F, H), and forget each transaction after its linger timer
//! (D, I, J, K, L, M). Responses go back to the [`Peer`] the request came from (symmetric
//! response routing, as RFC 3581 asks for; the connection id keeps stream responses on
//! their connection).
//!
//! What stays with the TU: answering requests, the ACK for a 2xx and 2xx retransmissions
//! (RFC 3261 §13, a dialog matter), responding 200/481 to a CANCEL and 487 to the INVITE it
//! cancels (§9.2), and stray responses and ACKs, handed up as [`Incoming::Response`] and
//! [`Incoming::Ack`].
//!
//! ```no_run
//! use std::time::Instant;
//! use voxgate_sip::transaction::{Incoming, Peer, TimerConfig, TransactionLayer, Transport, TxEvent};
//! use voxgate_sip::{Message, MessageBuilder};
//!
//! # fn recv() -> (bytes::Bytes, std::net::SocketAddr) { unimplemented!() }
//! # fn send(_: &Peer, _: &[u8]) {}
//! let mut layer = TransactionLayer::new(TimerConfig::default());
//! loop {
//!     // 1. Input: a datagram arrived (the driver waits for it or for poll_timeout()).
//!     let (bytes, src) = recv();
//!     let now = Instant::now();
//!     let from = Peer { transport: Transport::Udp, addr: src, conn: None };
//!     let Ok(msg) = Message::parse(bytes) else { continue }; // count and drop
//!     match layer.handle_incoming(msg, from, now) {
//!         // 2. A new REGISTER: answer it once; retransmissions are answered by the layer.
//!         Some(Incoming::Request { tx, msg, .. }) => {
//!             let ok = MessageBuilder::response_to(&msg, 200, "OK", Some("reg1")).build();
//!             layer.send_response(tx, ok, now).ok();
//!         }
//!         Some(_) | None => {}
//!     }
//!     layer.handle_timeout(Instant::now()); // also whenever poll_timeout() is due
//!     // 3. Output: send what is queued, then hand events to the TU.
//!     while let Some(t) = layer.poll_transmit() {
//!         send(&t.to, &t.bytes);
//!     }
//!     while let Some(ev) = layer.poll_event() {
//!         if let TxEvent::Response { tx, msg } = ev { let _ = (tx, msg.status()); }
//!     }
//! }
//! ```
//!
//! Timers live in one binary heap of `(deadline, transaction, timer)` with lazy
//! invalidation: `poll_timeout` is O(1) and may report a deadline whose timer has become
//! moot (the wake-up then does nothing); `handle_timeout` is O(k log n) for k due timers.
//!
//! Matching (§17.1.3, §17.2.3) uses the top Via branch; server transactions also key on
//! sent-by and method (ACK → INVITE). Requests whose branch lacks the `z9hG4bK` cookie
//! (RFC 2543) are keyed on branch, Request-URI, From tag, Call-ID, CSeq number and sent-by,
//! a simplification of §17.2.3's legacy rules that leaves out the To tag so the ACK still
//! matches its INVITE.

mod client_invite;
mod client_non_invite;
mod key;
mod server_invite;
mod server_non_invite;
mod timers;

#[cfg(test)]
mod tests;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::Instant;

use bytes::Bytes;

use crate::message::{HeaderName, Message, MessageBuilder, Method, ParseError, Via};

use client_invite::{CancelLink, ClientInvite};
use client_non_invite::ClientNonInvite;
use key::{ClientKey, ServerKey, TxRef, MAGIC_COOKIE};
use server_invite::ServerInvite;
use server_non_invite::ServerNonInvite;
use timers::{Timer, TimerHeap};

pub use key::{ClientTxId, ServerTxId, TxId};
pub use timers::TimerConfig;

/// The transport a message travels on (RFC 3261 §18, RFC 7118 for WebSocket).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    Udp,
    Tcp,
    Tls,
    Ws,
    Wss,
}

impl Transport {
    /// Reliable transports get no retransmissions and zero linger timers (§17.1.1.2 ff.).
    pub fn is_reliable(self) -> bool {
        !matches!(self, Transport::Udp)
    }
}

/// The other end of a message: where a request came from or where to send one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Peer {
    pub transport: Transport,
    pub addr: SocketAddr,
    /// The stream connection a message arrived on, so responses use the same one (§18.2.2).
    pub conn: Option<u64>,
}

impl Peer {
    /// Whether a failure reported for `other` concerns messages sent to `self`: the same
    /// connection for streams that have one, else the same transport and address.
    fn same_path(&self, other: &Peer) -> bool {
        self.transport == other.transport
            && match (self.conn, other.conn) {
                (Some(a), Some(b)) => a == b,
                _ => self.addr == other.addr,
            }
    }
}

/// Bytes to send and where to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    pub to: Peer,
    pub bytes: Bytes,
}

/// A transaction's state (RFC 3261 §17 and RFC 6026 names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TxState {
    /// A CANCEL held back until its INVITE has a provisional response (§9.1).
    Waiting,
    Calling,
    Trying,
    Proceeding,
    Completed,
    Confirmed,
    Accepted,
    Terminated,
}

/// What [`TransactionLayer::handle_incoming`] hands to the TU.
#[derive(Debug, Clone)]
pub enum Incoming {
    /// A new request (neither ACK nor CANCEL). Answer it with
    /// [`TransactionLayer::send_response`]; its retransmissions never show up here.
    Request {
        tx: ServerTxId,
        msg: Message,
        from: Peer,
    },
    /// A new CANCEL (§9.2), in its own transaction `tx`, and the INVITE server transaction it
    /// cancels if that still exists. The TU answers `tx` (200, or 481 when `invite` is
    /// `None`) and, if the INVITE is still proceeding, answers it 487.
    Cancel {
        tx: ServerTxId,
        invite: Option<ServerTxId>,
        msg: Message,
        from: Peer,
    },
    /// An ACK no transaction absorbed: the ACK for a 2xx (its own transaction, §17.1.1.3;
    /// RFC 6026 §7.1 also passes up ACKs matching an Accepted INVITE). For the dialog layer.
    Ack { msg: Message, from: Peer },
    /// A response that matches no client transaction, e.g. a 2xx retransmitted after Timer M
    /// (RFC 6026 §7.2: the TU decides; a UA core discards it).
    Response { msg: Message, from: Peer },
}

/// What the layer tells the TU about its transactions, via [`TransactionLayer::poll_event`].
// Events are short-lived; boxing the Message would cost an allocation per response.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum TxEvent {
    /// A response for a client transaction: provisionals, the final, and in Accepted further
    /// 2xx (retransmissions or forks, RFC 6026 §7.2) that the TU must ACK.
    Response { tx: ClientTxId, msg: Message },
    /// No final response in time (Timer B, F, or 64*T1 after a CANCEL, §9.1), or no ACK for
    /// a non-2xx INVITE response (Timer H). A client TU treats it as 408 (§8.1.3.1).
    Timeout { tx: TxId },
    /// The transport failed towards this transaction's peer (§17.1.4, §17.2.4). A client TU
    /// treats it as 503 (§8.1.3.1).
    TransportError { tx: TxId },
    /// The transaction is gone; its id is no longer valid. Raised exactly once each.
    Terminated { tx: TxId },
}

/// Why an operation on the layer was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TxError {
    #[error("unknown transaction (never existed, or terminated)")]
    UnknownTransaction,
    #[error("not allowed in transaction state {0:?}")]
    WrongState(TxState),
    #[error("message not usable here: {0}")]
    InvalidMessage(#[from] InvalidMessage),
    #[error("unparseable message: {0}")]
    Parse(#[from] ParseError),
    #[error("a client transaction with this branch and method already exists")]
    DuplicateTransaction,
    #[error("only an INVITE client transaction can be cancelled")]
    NotInvite,
    #[error("the INVITE already has a CANCEL")]
    AlreadyCancelled,
}

/// The way a message handed to the layer does not fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InvalidMessage {
    #[error("expected a request")]
    NotARequest,
    #[error("expected a response with a status code 100-699")]
    NotAResponse,
    #[error("an ACK is not sent in a transaction: use send_stateless (RFC 3261 §17.1.1.3)")]
    Ack,
    #[error("top Via has no branch starting with z9hG4bK (RFC 3261 §8.1.1.7)")]
    Branch,
}

/// What a state machine asks of the layer after one input. Filled by the machine, applied
/// by [`TransactionLayer::finish`].
#[derive(Debug, Default)]
pub(crate) struct Out {
    /// Bytes for the transaction's peer.
    send: Option<Bytes>,
    /// Timers to arm: no step arms more than two.
    timers: [Option<(Timer, Instant)>; 2],
    /// Pass the input message up to the TU.
    deliver: bool,
    fail: Option<Failure>,
    /// The machine reached Terminated: remove the transaction.
    terminate: bool,
}

impl Out {
    fn arm(&mut self, timer: Timer, at: Instant) {
        if let Some(slot) = self.timers.iter_mut().find(|t| t.is_none()) {
            *slot = Some((timer, at));
        } else {
            debug_assert!(
                false,
                "a state machine armed more than two timers in one step"
            );
        }
    }

    /// Arms a linger timer, or terminates now when it is zero (reliable transports: "Timer
    /// D/I/J/K = 0 s", RFC 3261 §17).
    fn arm_or_terminate(&mut self, timer: Timer, now: Instant, after: std::time::Duration) {
        if after.is_zero() {
            self.terminate = true;
        } else {
            self.arm(timer, now + after);
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failure {
    Timeout,
    Transport,
}

/// The four machines of §17. Messages kept by INVITE transactions are boxed so that the
/// slab's slots stay small for the (far more numerous) non-INVITE transactions.
#[allow(clippy::enum_variant_names)]
#[derive(Debug)]
enum Kind {
    /// The request is kept to build the ACK (§17.1.1.3) and CANCEL (§9.1) from.
    ClientInvite {
        m: ClientInvite,
        key: ClientKey,
        request: Box<Message>,
    },
    ClientNonInvite {
        m: ClientNonInvite,
        key: ClientKey,
    },
    /// The INVITE is kept until the first response, to build a 100 Trying from.
    ServerInvite {
        m: ServerInvite,
        key: ServerKey,
        request: Option<Box<Message>>,
    },
    ServerNonInvite {
        m: ServerNonInvite,
        key: ServerKey,
    },
}

#[derive(Debug)]
struct Transaction {
    peer: Peer,
    kind: Kind,
}

impl Transaction {
    fn is_client(&self) -> bool {
        matches!(
            self.kind,
            Kind::ClientInvite { .. } | Kind::ClientNonInvite { .. }
        )
    }

    fn state(&self) -> TxState {
        match &self.kind {
            Kind::ClientInvite { m, .. } => m.state(),
            Kind::ClientNonInvite { m, .. } => m.state(),
            Kind::ServerInvite { m, .. } => m.state(),
            Kind::ServerNonInvite { m, .. } => m.state(),
        }
    }
}

#[derive(Debug, Default)]
struct Slot {
    gen: u32,
    tx: Option<Transaction>,
}

/// All transactions of one SIP endpoint. See the [module docs](self).
#[derive(Debug)]
pub struct TransactionLayer {
    cfg: TimerConfig,
    /// Slab: ids index it directly; `free` recycles slots (generation-checked).
    slots: Vec<Slot>,
    free: Vec<u32>,
    live: usize,
    clients: HashMap<ClientKey, TxRef>,
    servers: HashMap<ServerKey, TxRef>,
    timers: TimerHeap,
    transmits: VecDeque<Transmit>,
    events: VecDeque<TxEvent>,
}

impl TransactionLayer {
    pub fn new(cfg: TimerConfig) -> Self {
        TransactionLayer {
            cfg,
            slots: Vec::new(),
            free: Vec::new(),
            live: 0,
            clients: HashMap::new(),
            servers: HashMap::new(),
            timers: TimerHeap::default(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    /// The timer configuration this layer runs with.
    pub fn config(&self) -> &TimerConfig {
        &self.cfg
    }

    /// A received message. Returns what the TU must see now: a new request (with the
    /// server transaction to answer it on), or a response/ACK no transaction claims.
    /// Retransmissions are absorbed here (`None`); responses matching a client transaction
    /// come out of [`poll_event`](Self::poll_event) as [`TxEvent::Response`].
    pub fn handle_incoming(&mut self, msg: Message, from: Peer, now: Instant) -> Option<Incoming> {
        if msg.is_request() {
            self.incoming_request(msg, from, now)
        } else {
            self.incoming_response(msg, from, now)
        }
    }

    fn incoming_request(&mut self, msg: Message, from: Peer, now: Instant) -> Option<Incoming> {
        let key = ServerKey::of(&msg)?;
        let is_ack = matches!(msg.method(), Some(Method::Ack));
        let cfg = self.cfg;
        if let Some(&r) = self.servers.get(&key) {
            // §17.2.3: a retransmission, or the ACK of an INVITE server transaction.
            let mut out = Out::default();
            match self.tx_mut(r).map(|tx| &mut tx.kind) {
                Some(Kind::ServerInvite { m, request, .. }) => {
                    if is_ack {
                        m.on_ack(now, &cfg, &mut out);
                    } else {
                        m.on_invite(|| request.as_deref().map(build_trying), &mut out);
                        if !m.awaits_first_response() {
                            *request = None;
                        }
                    }
                }
                Some(Kind::ServerNonInvite { m, .. }) if !is_ack => m.on_request(&mut out),
                _ => {}
            }
            let deliver = out.deliver;
            self.finish(r, out, now);
            return deliver.then_some(Incoming::Ack { msg, from });
        }
        if is_ack {
            // No INVITE server transaction: the ACK for a 2xx, or a late one (§17.2.3).
            return Some(Incoming::Ack { msg, from });
        }

        let reliable = from.transport.is_reliable();
        let mut out = Out::default();
        let (kind, cancels) = match msg.method() {
            Some(Method::Invite) => {
                let m = ServerInvite::start(reliable, now, &cfg, &mut out);
                let request = Some(Box::new(msg.clone()));
                (
                    Kind::ServerInvite {
                        m,
                        key: key.clone(),
                        request,
                    },
                    None,
                )
            }
            method => {
                // §9.2: the CANCEL finds the INVITE it cancels by the same matching rules.
                let cancels = match method {
                    Some(Method::Cancel) => self.servers.get(&key.for_invite()).copied(),
                    _ => None,
                };
                let m = ServerNonInvite::start(reliable);
                (
                    Kind::ServerNonInvite {
                        m,
                        key: key.clone(),
                    },
                    cancels,
                )
            }
        };
        let r = self.insert(Transaction { peer: from, kind });
        self.servers.insert(key, r);
        self.finish(r, out, now);
        let tx = ServerTxId(r);
        Some(match msg.method() {
            Some(Method::Cancel) => Incoming::Cancel {
                tx,
                invite: cancels.map(ServerTxId),
                msg,
                from,
            },
            _ => Incoming::Request { tx, msg, from },
        })
    }

    fn incoming_response(&mut self, msg: Message, from: Peer, now: Instant) -> Option<Incoming> {
        let (Some(status), Some(key)) = (msg.status(), ClientKey::of(&msg)) else {
            return Some(Incoming::Response { msg, from });
        };
        let Some(&r) = self.clients.get(&key) else {
            return Some(Incoming::Response { msg, from });
        };
        let cfg = self.cfg;
        let mut out = Out::default();
        match self.tx_mut(r).map(|tx| &mut tx.kind) {
            Some(Kind::ClientInvite { m, request, .. }) => {
                m.on_response(
                    status,
                    now,
                    &cfg,
                    || Some(build_ack(request, &msg)),
                    &mut out,
                );
            }
            Some(Kind::ClientNonInvite { m, .. }) => m.on_response(status, now, &cfg, &mut out),
            _ => {}
        }
        if out.deliver {
            // Before `finish`, so the TU sees the final response before Terminated.
            self.events.push_back(TxEvent::Response {
                tx: ClientTxId(r),
                msg,
            });
        }
        self.finish(r, out, now);
        None
    }

    /// Starts a client transaction for `request` (built bytes, e.g. from
    /// [`MessageBuilder`]) towards `to`, and queues its first transmission. The top Via
    /// must carry a fresh `z9hG4bK` branch (§8.1.1.7). ACKs are not transactions: send
    /// them with [`send_stateless`](Self::send_stateless).
    pub fn send_request(
        &mut self,
        request: Bytes,
        to: Peer,
        now: Instant,
    ) -> Result<ClientTxId, TxError> {
        let msg = Message::parse(request)?;
        let method = msg.method().ok_or(InvalidMessage::NotARequest)?.clone();
        if method == Method::Ack {
            return Err(InvalidMessage::Ack.into());
        }
        let key = ClientKey::of(&msg).ok_or(InvalidMessage::Branch)?;
        if !key.branch.starts_with(MAGIC_COOKIE.as_bytes()) {
            return Err(InvalidMessage::Branch.into());
        }
        if self.clients.contains_key(&key) {
            return Err(TxError::DuplicateTransaction);
        }
        let cfg = self.cfg;
        let reliable = to.transport.is_reliable();
        let bytes = msg.as_bytes().clone();
        let mut out = Out::default();
        let kind = if method == Method::Invite {
            let m = ClientInvite::start(bytes, reliable, now, &cfg, &mut out);
            Kind::ClientInvite {
                m,
                key: key.clone(),
                request: Box::new(msg),
            }
        } else {
            let m = ClientNonInvite::start(bytes, reliable, now, &cfg, &mut out);
            Kind::ClientNonInvite {
                m,
                key: key.clone(),
            }
        };
        let r = self.insert(Transaction { peer: to, kind });
        self.clients.insert(key, r);
        self.finish(r, out, now);
        Ok(ClientTxId(r))
    }

    /// Sends the TU's response (built bytes) on server transaction `tx`. The layer keeps it
    /// to answer retransmitted requests and, for a 300-699 to an INVITE, retransmits it
    /// until the ACK (Timer G). Refused in states that take no response from the TU
    /// (e.g. a second final): [`TxError::WrongState`].
    pub fn send_response(
        &mut self,
        tx: ServerTxId,
        response: Bytes,
        now: Instant,
    ) -> Result<(), TxError> {
        let status = status_of(&response).ok_or(InvalidMessage::NotAResponse)?;
        let cfg = self.cfg;
        let r = tx.0;
        let mut out = Out::default();
        match self.tx_mut(r).map(|tx| &mut tx.kind) {
            Some(Kind::ServerInvite { m, request, .. }) => {
                m.on_tu_response(status, response, now, &cfg, &mut out)
                    .map_err(TxError::WrongState)?;
                if !m.awaits_first_response() {
                    *request = None;
                }
            }
            Some(Kind::ServerNonInvite { m, .. }) => {
                m.on_tu_response(status, response, now, &cfg, &mut out)
                    .map_err(TxError::WrongState)?;
            }
            _ => return Err(TxError::UnknownTransaction),
        }
        self.finish(r, out, now);
        Ok(())
    }

    /// Cancels a pending INVITE (§9.1): builds the CANCEL and starts its own client
    /// transaction, whose id is returned (its 200 comes as a [`TxEvent::Response`]; the
    /// INVITE's 487 follows on the INVITE). Before any provisional response the CANCEL
    /// waits ([`TxState::Waiting`]) and goes out with the first one; if the INVITE ends
    /// first, the CANCEL transaction just terminates. Once a final response has arrived it
    /// is too late: [`TxError::WrongState`].
    pub fn cancel(&mut self, tx: ClientTxId, now: Instant) -> Result<ClientTxId, TxError> {
        let invite = tx.0;
        let t = self.tx(invite).ok_or(TxError::UnknownTransaction)?;
        let peer = t.peer;
        let Kind::ClientInvite { m, key, request } = &t.kind else {
            return Err(TxError::NotInvite);
        };
        if m.cancel != CancelLink::None {
            return Err(TxError::AlreadyCancelled);
        }
        let state = m.state();
        if !matches!(state, TxState::Calling | TxState::Proceeding) {
            return Err(TxError::WrongState(state));
        }
        let cancel_key = ClientKey {
            branch: key.branch.clone(),
            method: Method::Cancel,
        };
        if self.clients.contains_key(&cancel_key) {
            return Err(TxError::AlreadyCancelled);
        }
        let bytes = build_cancel(request);
        let cm = ClientNonInvite::waiting(bytes, peer.transport.is_reliable());
        let c = self.insert(Transaction {
            peer,
            kind: Kind::ClientNonInvite {
                m: cm,
                key: cancel_key.clone(),
            },
        });
        self.clients.insert(cancel_key, c);
        if let Some(Kind::ClientInvite { m, .. }) = self.tx_mut(invite).map(|t| &mut t.kind) {
            m.cancel = CancelLink::Waiting(c);
        }
        // Sends it right away when the INVITE is already Proceeding.
        self.finish(invite, Out::default(), now);
        Ok(ClientTxId(c))
    }

    /// Queues bytes outside any transaction: the ACK for a 2xx (§13.2.2.4), its
    /// retransmissions, or a stateless response.
    pub fn send_stateless(&mut self, bytes: Bytes, to: Peer) {
        self.transmits.push_back(Transmit { to, bytes });
    }

    /// Fires every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        let cfg = self.cfg;
        while let Some((r, timer)) = self.timers.pop_due(now) {
            let mut out = Out::default();
            match self.tx_mut(r).map(|tx| &mut tx.kind) {
                Some(Kind::ClientInvite { m, .. }) => m.on_timer(timer, now, &mut out),
                Some(Kind::ClientNonInvite { m, .. }) => m.on_timer(timer, now, &cfg, &mut out),
                Some(Kind::ServerInvite { m, request, .. }) => {
                    m.on_timer(
                        timer,
                        now,
                        &cfg,
                        || request.as_deref().map(build_trying),
                        &mut out,
                    );
                    if !m.awaits_first_response() {
                        *request = None;
                    }
                }
                Some(Kind::ServerNonInvite { m, .. }) => m.on_timer(timer, &mut out),
                // A timer of a transaction that is gone (lazy invalidation).
                None => continue,
            }
            self.finish(r, out, now);
        }
    }

    /// When to call [`handle_timeout`](Self::handle_timeout) next. O(1); may be early.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next_deadline()
    }

    /// The next datagram or stream message to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next event for the TU.
    pub fn poll_event(&mut self) -> Option<TxEvent> {
        self.events.pop_front()
    }

    /// The transport could not deliver to `peer` (ICMP error, connection refused or
    /// closed). Every transaction towards it reacts per §17.1.4 / §17.2.4. O(live
    /// transactions): meant for failures, not for every datagram.
    pub fn handle_transport_error(&mut self, peer: &Peer, now: Instant) {
        let hit: Vec<TxRef> = self
            .slots
            .iter()
            .enumerate()
            .filter_map(|(idx, s)| {
                let tx = s.tx.as_ref()?;
                tx.peer.same_path(peer).then_some(TxRef {
                    idx: u32::try_from(idx).ok()?,
                    gen: s.gen,
                })
            })
            .collect();
        for r in hit {
            let mut out = Out::default();
            match self.tx_mut(r).map(|tx| &mut tx.kind) {
                Some(Kind::ClientInvite { m, .. }) => m.on_transport_error(&mut out),
                Some(Kind::ClientNonInvite { m, .. }) => m.on_transport_error(&mut out),
                Some(Kind::ServerInvite { m, .. }) => m.on_transport_error(&mut out),
                Some(Kind::ServerNonInvite { m, .. }) => m.on_transport_error(&mut out),
                None => continue,
            }
            self.finish(r, out, now);
        }
    }

    /// Live transactions (for metrics; 0 once every timer has run out).
    pub fn len(&self) -> usize {
        self.live
    }

    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// The state of a live transaction; `None` once it has terminated.
    pub fn state(&self, tx: impl Into<TxId>) -> Option<TxState> {
        let (r, client) = match tx.into() {
            TxId::Client(ClientTxId(r)) => (r, true),
            TxId::Server(ServerTxId(r)) => (r, false),
        };
        self.tx(r)
            .filter(|t| t.is_client() == client)
            .map(Transaction::state)
    }

    fn tx(&self, r: TxRef) -> Option<&Transaction> {
        let slot = self.slots.get(r.idx as usize)?;
        if slot.gen == r.gen {
            slot.tx.as_ref()
        } else {
            None
        }
    }

    fn tx_mut(&mut self, r: TxRef) -> Option<&mut Transaction> {
        let slot = self.slots.get_mut(r.idx as usize)?;
        if slot.gen == r.gen {
            slot.tx.as_mut()
        } else {
            None
        }
    }

    fn insert(&mut self, tx: Transaction) -> TxRef {
        self.live += 1;
        if let Some(idx) = self.free.pop() {
            if let Some(slot) = self.slots.get_mut(idx as usize) {
                slot.tx = Some(tx);
                return TxRef { idx, gen: slot.gen };
            }
        }
        // u32::MAX slots would be 4 billion live transactions; saturate rather than panic.
        let idx = u32::try_from(self.slots.len()).unwrap_or(u32::MAX);
        self.slots.push(Slot {
            gen: 0,
            tx: Some(tx),
        });
        TxRef { idx, gen: 0 }
    }

    fn remove(&mut self, r: TxRef) {
        let Some(slot) = self
            .slots
            .get_mut(r.idx as usize)
            .filter(|s| s.gen == r.gen)
        else {
            return;
        };
        let Some(tx) = slot.tx.take() else { return };
        slot.gen = slot.gen.wrapping_add(1);
        self.free.push(r.idx);
        self.live -= 1;
        let id = match tx.kind {
            Kind::ClientInvite { key, .. } | Kind::ClientNonInvite { key, .. } => {
                if self.clients.get(&key) == Some(&r) {
                    self.clients.remove(&key);
                }
                TxId::Client(ClientTxId(r))
            }
            Kind::ServerInvite { key, .. } | Kind::ServerNonInvite { key, .. } => {
                if self.servers.get(&key) == Some(&r) {
                    self.servers.remove(&key);
                }
                TxId::Server(ServerTxId(r))
            }
        };
        self.events.push_back(TxEvent::Terminated { tx: id });
    }

    /// Applies a machine's [`Out`] for transaction `r`: queue, arm, report, remove, and
    /// move a waiting CANCEL along with its INVITE (§9.1).
    fn finish(&mut self, r: TxRef, out: Out, now: Instant) {
        let cfg = self.cfg;
        let Some(tx) = self.tx_mut(r) else { return };
        let peer = tx.peer;
        let id = if tx.is_client() {
            TxId::Client(ClientTxId(r))
        } else {
            TxId::Server(ServerTxId(r))
        };
        let mut cancel_start = None;
        let mut cancel_drop = None;
        if let Kind::ClientInvite { m, .. } = &mut tx.kind {
            if let CancelLink::Waiting(c) = m.cancel {
                match m.state() {
                    TxState::Calling => {}
                    TxState::Proceeding => {
                        m.cancel = CancelLink::Sent(c);
                        cancel_start = Some(c);
                    }
                    _ => {
                        m.cancel = CancelLink::None;
                        cancel_drop = Some(c);
                    }
                }
            }
        }
        if let Some(bytes) = out.send {
            self.transmits.push_back(Transmit { to: peer, bytes });
        }
        if !out.terminate {
            for (timer, at) in out.timers.into_iter().flatten() {
                self.timers.arm(r, timer, at);
            }
        }
        match out.fail {
            Some(Failure::Timeout) => self.events.push_back(TxEvent::Timeout { tx: id }),
            Some(Failure::Transport) => self.events.push_back(TxEvent::TransportError { tx: id }),
            None => {}
        }
        if out.terminate {
            self.remove(r);
        }
        if let Some(c) = cancel_start {
            // §9.1: the INVITE now has a provisional; send the CANCEL. If no final arrives
            // within 64*T1 of it, the INVITE transaction is given up (CancelGuard).
            self.timers.arm(r, Timer::CancelGuard, now + cfg.t1_x64());
            let mut out = Out::default();
            if let Some(Kind::ClientNonInvite { m, .. }) = self.tx_mut(c).map(|t| &mut t.kind) {
                m.send_now(now, &cfg, &mut out);
            }
            self.finish(c, out, now);
        }
        if let Some(c) = cancel_drop {
            self.remove(c);
        }
    }

    /// Armed timer entries, stale ones included (tests: the heap drains).
    #[cfg(test)]
    pub(crate) fn timer_entries(&self) -> usize {
        self.timers.len()
    }
}

/// The status code of a built response ("SIP/2.0 200 OK"), without a full parse.
fn status_of(bytes: &[u8]) -> Option<u16> {
    let rest = bytes.strip_prefix(b"SIP/2.0 ")?;
    let digits = rest.get(..3)?;
    if !digits.iter().all(u8::is_ascii_digit) || !matches!(rest.get(3), Some(b' ' | b'\r' | b'\n'))
    {
        return None;
    }
    let code = digits
        .iter()
        .fold(0u16, |acc, d| acc * 10 + u16::from(d - b'0'));
    (100..=699).contains(&code).then_some(code)
}

/// The top Via value as sent: the raw header when it holds one value, else rebuilt.
fn top_via_value(req: &Message) -> String {
    match req.header(HeaderName::Via) {
        Some(raw) if !raw.contains(',') => raw.to_owned(),
        _ => format_via(&req.top_via()),
    }
}

fn format_via(via: &Via<'_>) -> String {
    let ipv6 = via.host.contains(':') && !via.host.starts_with('[');
    let mut s = String::with_capacity(16 + via.host.len() + via.params.len());
    s.push_str("SIP/2.0/");
    s.push_str(via.transport);
    s.push(' ');
    if ipv6 {
        s.push('[');
    }
    s.push_str(via.host);
    if ipv6 {
        s.push(']');
    }
    if let Some(port) = via.port {
        s.push(':');
        s.push_str(&port.to_string());
    }
    s.push_str(via.params);
    s
}

/// RFC 3261 §17.1.1.3: the ACK for a non-2xx final response. Same Request-URI, Call-ID,
/// From and CSeq number as the INVITE (method ACK), its top Via only, its Route headers,
/// and the To of the response (with the UAS's tag).
fn build_ack(invite: &Message, response: &Message) -> Bytes {
    let mut b = MessageBuilder::request(&Method::Ack, invite.request_uri().unwrap_or_default())
        .header("Via", &top_via_value(invite));
    for route in invite.header_values(HeaderName::Route) {
        b = b.header("Route", route);
    }
    b.header("Max-Forwards", "70")
        .header("From", invite.header(HeaderName::From).unwrap_or_default())
        .header("To", response.header(HeaderName::To).unwrap_or_default())
        .header("Call-ID", invite.call_id())
        .header("CSeq", &format!("{} ACK", invite.cseq().seq))
        .build()
}

/// RFC 3261 §9.1: the CANCEL for a pending INVITE. Same Request-URI, Call-ID, From, To and
/// CSeq number (method CANCEL), the INVITE's top Via (same branch) and its Route headers.
fn build_cancel(invite: &Message) -> Bytes {
    let mut b = MessageBuilder::request(&Method::Cancel, invite.request_uri().unwrap_or_default())
        .header("Via", &top_via_value(invite));
    for route in invite.header_values(HeaderName::Route) {
        b = b.header("Route", route);
    }
    b.header("Max-Forwards", "70")
        .header("From", invite.header(HeaderName::From).unwrap_or_default())
        .header("To", invite.header(HeaderName::To).unwrap_or_default())
        .header("Call-ID", invite.call_id())
        .header("CSeq", &format!("{} CANCEL", invite.cseq().seq))
        .build()
}

/// RFC 3261 §17.2.1 / §8.2.6.1: the transaction's own 100 Trying, with the request's
/// Timestamp copied and no To tag.
fn build_trying(invite: &Message) -> Bytes {
    let mut b = MessageBuilder::response_to(invite, 100, "Trying", None);
    if let Some(ts) = invite.header_named("Timestamp") {
        b = b.header("Timestamp", ts);
    }
    b.build()
}
