//! Timer values (RFC 3261 §17 and table 4 of Appendix A, RFC 6026 §8) and the layer's timer
//! heap.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

use super::TxRef;

/// The protocol timer base values. Every transaction timer is derived from these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimerConfig {
    /// RTT estimate (RFC 3261 §17.1.1.1), default 500 ms.
    pub t1: Duration,
    /// Maximum retransmit interval for non-INVITE requests and INVITE responses, default 4 s.
    pub t2: Duration,
    /// Maximum time a message stays in the network, default 5 s.
    pub t4: Duration,
    /// RFC 3261 §17.2.1: an INVITE server transaction sends 100 Trying itself when the TU has
    /// not sent a provisional response within this time (default 200 ms).
    pub trying_delay: Duration,
}

impl Default for TimerConfig {
    fn default() -> Self {
        TimerConfig {
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            t4: Duration::from_secs(5),
            trying_delay: Duration::from_millis(200),
        }
    }
}

impl TimerConfig {
    /// 64*T1: Timers B, F, H, J (unreliable), L, M.
    pub(crate) fn t1_x64(&self) -> Duration {
        self.t1.saturating_mul(64)
    }

    /// Timer D: "at least 32 s" on unreliable transports, 0 on reliable ones (§17.1.1.2).
    /// It must also outlast the server's Timer H retransmissions, hence the max with 64*T1.
    pub(crate) fn timer_d(&self, reliable: bool) -> Duration {
        if reliable {
            Duration::ZERO
        } else {
            self.t1_x64().max(Duration::from_secs(32))
        }
    }

    /// Timers I and K: T4 on unreliable transports, 0 on reliable ones (§17.1.2.2, §17.2.1).
    pub(crate) fn t4_unless_reliable(&self, reliable: bool) -> Duration {
        if reliable {
            Duration::ZERO
        } else {
            self.t4
        }
    }

    /// Timer J: 64*T1 on unreliable transports, 0 on reliable ones (§17.2.2).
    pub(crate) fn timer_j(&self, reliable: bool) -> Duration {
        if reliable {
            Duration::ZERO
        } else {
            self.t1_x64()
        }
    }
}

/// Which timer fired. Named after RFC 3261 §17 (A–K), RFC 6026 (L, M), plus two of ours.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Timer {
    /// INVITE client: request retransmit (unreliable only).
    A,
    /// INVITE client: transaction timeout in Calling.
    B,
    /// INVITE client: wait for response retransmissions in Completed.
    D,
    /// INVITE client: wait for 2xx retransmissions in Accepted (RFC 6026 §7.2).
    M,
    /// Non-INVITE client: request retransmit (unreliable only).
    E,
    /// Non-INVITE client: transaction timeout.
    F,
    /// Non-INVITE client: wait for response retransmissions in Completed.
    K,
    /// INVITE server: final response retransmit (unreliable only).
    G,
    /// INVITE server: wait for ACK in Completed.
    H,
    /// INVITE server: absorb ACK retransmissions in Confirmed.
    I,
    /// INVITE server: absorb INVITE retransmissions in Accepted (RFC 6026 §7.1).
    L,
    /// Non-INVITE server: absorb request retransmissions in Completed.
    J,
    /// INVITE server: send 100 Trying if the TU has not (§17.2.1).
    Trying,
    /// INVITE client: give up 64*T1 after a CANCEL when no final response came (§9.1).
    CancelGuard,
}

/// One armed timer. Field order gives the heap order: earliest deadline first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Entry {
    deadline: Instant,
    tx: TxRef,
    timer: Timer,
}

/// All armed timers of a layer in one min-heap with lazy invalidation: entries are never
/// removed when a transaction changes state or ends. An entry whose transaction slot holds
/// another generation is skipped, and a state machine ignores timers its current state does
/// not run, so disarming is free and firing is O(log n).
#[derive(Debug, Default)]
pub(crate) struct TimerHeap {
    heap: BinaryHeap<Reverse<Entry>>,
}

impl TimerHeap {
    pub(crate) fn arm(&mut self, tx: TxRef, timer: Timer, deadline: Instant) {
        self.heap.push(Reverse(Entry {
            deadline,
            tx,
            timer,
        }));
    }

    /// The earliest deadline, possibly of a stale entry (then the wake-up finds nothing to
    /// do, which is harmless).
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse(e)| e.deadline)
    }

    /// Pops the earliest entry due at `now`.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<(TxRef, Timer)> {
        match self.heap.peek() {
            Some(Reverse(e)) if e.deadline <= now => {
                let e = *e;
                self.heap.pop();
                Some((e.tx, e.timer))
            }
            _ => None,
        }
    }

    /// Entries still held, stale ones included (for tests).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.heap.len()
    }
}
