//! The 2xx/ACK exchange of an INVITE, which belongs to the TU, not to a transaction
//! (RFC 3261 §13.2.2.4, §13.3.1.4; RFC 6026 §7).

use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::message::{Message, Method};
use crate::transaction::TimerConfig;

/// What an [`AckWait`] reports once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckWaitEvent {
    /// 64*T1 passed without an ACK (§13.3.1.4): the dialog is confirmed but the session
    /// should end: send BYE ([`TerminationReason::NoAck`](super::TerminationReason::NoAck)).
    NoAck,
}

/// UAS side: retransmits our 2xx to an INVITE until its ACK arrives (§13.3.1.4, RFC 6026
/// §8.1). Send the 2xx once through the INVITE server transaction, then create this: it
/// asks for retransmissions at T1, 2*T1, 4*T1, … capped at T2 (0.5, 1.5, 3.5, 7.5,
/// 11.5 s … with the defaults) and gives up at 64*T1 (32 s).
///
/// It retransmits on every transport: the 2xx is retransmitted end to end, and a proxy
/// on the path may forward it over UDP although our hop is reliable (§13.3.1.4).
#[derive(Debug, Clone)]
pub struct AckWait {
    invite_seq: u32,
    ok: Bytes,
    t2: Duration,
    interval: Duration,
    /// Next retransmission; `None` once done.
    next: Option<Instant>,
    give_up: Instant,
    pending: bool,
    event: Option<AckWaitEvent>,
    acked: bool,
}

impl AckWait {
    /// `ok` is the 2xx already sent at `now` to the INVITE with CSeq number `invite_seq`.
    pub fn new(invite_seq: u32, ok: Bytes, now: Instant, cfg: &TimerConfig) -> AckWait {
        AckWait {
            invite_seq,
            ok,
            t2: cfg.t2,
            interval: cfg.t1,
            next: Some(now + cfg.t1),
            give_up: now + cfg.t1.saturating_mul(64),
            pending: false,
            event: None,
            acked: false,
        }
    }

    /// The CSeq number of the INVITE whose ACK we wait for.
    pub fn invite_seq(&self) -> u32 {
        self.invite_seq
    }

    /// An in-dialog ACK arrived with this CSeq number ([`InDialogRequest::Ack`]
    /// (super::InDialogRequest::Ack)). Returns whether it was ours; then retransmissions
    /// stop.
    pub fn handle_ack(&mut self, cseq: u32) -> bool {
        if cseq != self.invite_seq || self.is_done() {
            return cseq == self.invite_seq && self.acked;
        }
        self.acked = true;
        self.next = None;
        self.pending = false;
        true
    }

    /// The next deadline; `None` when done (acked or given up).
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.next.map(|n| n.min(self.give_up))
    }

    /// Advances to `now`: queues at most one retransmission, even when several were due
    /// (a late wake-up does not burst), and reports [`AckWaitEvent::NoAck`] at 64*T1.
    pub fn handle_timeout(&mut self, now: Instant) {
        let Some(mut next) = self.next else { return };
        if now >= self.give_up {
            self.next = None;
            self.pending = false;
            self.event = Some(AckWaitEvent::NoAck);
            return;
        }
        if now < next {
            return;
        }
        self.pending = true;
        // Keep the RFC schedule (each interval from the previous deadline), skipping
        // deadlines a late wake-up missed.
        // §13.3.1.4: the wait doubles after each send, T1 first, capped at T2.
        while next <= now {
            self.interval = (self.interval * 2).min(self.t2);
            next += self.interval;
        }
        self.next = Some(next);
    }

    /// The 2xx to send again, if one is due.
    pub fn poll_transmit(&mut self) -> Option<Bytes> {
        std::mem::take(&mut self.pending).then(|| self.ok.clone())
    }

    pub fn poll_event(&mut self) -> Option<AckWaitEvent> {
        self.event.take()
    }

    /// Whether the ACK came.
    pub fn is_acked(&self) -> bool {
        self.acked
    }

    /// Acked or given up: nothing more will happen.
    pub fn is_done(&self) -> bool {
        self.next.is_none()
    }
}

/// UAC side: the ACK we sent for a 2xx, kept to answer retransmissions of that 2xx
/// (§13.2.2.4) for 64*T1 after the first one (RFC 6026 §7.2, Timer M's span).
/// Retransmitted 2xx reach the TU as `TxEvent::Response` while the INVITE client
/// transaction is Accepted and as `Incoming::Response` after it.
#[derive(Debug, Clone)]
pub struct AckCache {
    invite_seq: u32,
    ack: Bytes,
    until: Instant,
}

impl AckCache {
    /// `ack` answered the first 2xx to the INVITE with CSeq number `invite_seq` at `now`.
    pub fn new(invite_seq: u32, ack: Bytes, now: Instant, cfg: &TimerConfig) -> AckCache {
        AckCache {
            invite_seq,
            ack,
            until: now + cfg.t1.saturating_mul(64),
        }
    }

    /// The ACK to send again if `resp` is a 2xx to the same INVITE; call only with
    /// responses matched to this dialog (same To tag).
    pub fn on_response(&self, resp: &Message) -> Option<Bytes> {
        let cseq = resp.cseq();
        let is_2xx = resp.status().is_some_and(|s| (200..300).contains(&s));
        (is_2xx && cseq.method == Method::Invite && cseq.seq == self.invite_seq)
            .then(|| self.ack.clone())
    }

    pub fn invite_seq(&self) -> u32 {
        self.invite_seq
    }

    /// When the cache may be dropped.
    pub fn poll_timeout(&self) -> Instant {
        self.until
    }

    pub fn is_expired(&self, now: Instant) -> bool {
        now >= self.until
    }
}
