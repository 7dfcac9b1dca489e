//! INVITE client transaction: RFC 3261 §17.1.1 as corrected by RFC 6026 §7.2.

use std::time::{Duration, Instant};

use bytes::Bytes;

use super::timers::{Timer, TimerConfig};
use super::{Failure, Out, TxRef, TxState};

/// RFC 3261 figure 5 with RFC 6026 figure 5's Accepted state:
///
/// ```text
///                                |INVITE from TU
///              Timer A fires     |INVITE sent      Timer B fires
///              Reset A,          V                 or Transport Err.
///              INVITE sent +-----------+           inform TU
///                +---------|           |---------------------------+
///                |         |  Calling  |                           |
///                +-------->|           |-----------+               |
///   300-699                +-----------+ 2xx       |               |
///   ACK sent                  |  |       2xx to TU |               |
///   resp. to TU               |  |1xx              |               |
///   +-------------------------+  |1xx to TU        |               |
///   |                            |                 |               |
///   |             1xx            V                 |               |
///   |        1xx to TU     +-----------+           |               |
///   |        +-------------|           |           |               |
///   |        |             |Proceeding |           |               |
///   |        +------------>|           |---------->+               |
///   |                      +-----------+ 2xx       |               |
///   |         300-699         |          2xx to TU |               |
///   |         ACK sent        |                    V               |
///   |         resp. to TU     |              +-----------+         |
///   |  +----------------------+              |           |         |
///   |  |                                     | Accepted  |<-+ 2xx  |
///   |  |                                     |           |--+ to TU|
///   |  |  300-699                            +-----------+         |
///   |  |  ACK sent                                 |               |
///   V  V  +------+                                 |Timer M fires  |
///  +-----------+ |                                 |-              |
///  |           |<+                                 |               |
///  | Completed |                                   |               |
///  |           |                                   |               |
///  +-----------+                                   |               |
///        |  Timer D fires                          |               |
///        |  -                                      |               |
///        V                                         V               |
///  +---------------------------------------------------------+    |
///  |                       Terminated                        |<---+
///  +---------------------------------------------------------+
/// ```
#[derive(Debug)]
pub(crate) enum State {
    /// Request sent; retransmitting (unreliable) every `interval`, doubling (Timer A).
    Calling {
        interval: Duration,
    },
    /// A provisional arrived: no more retransmissions, no Timer B (§17.1.1.2).
    Proceeding,
    /// A 300-699 arrived and was ACKed; retransmitted finals get the same ACK until Timer D.
    Completed {
        ack: Option<Bytes>,
    },
    /// A 2xx arrived: further 2xx (retransmissions, forks) go to the TU until Timer M
    /// (RFC 6026 §7.2); the TU sends the ACK for 2xx itself (§13.2.2.4).
    Accepted,
    Terminated,
}

/// Where a CANCEL for this INVITE stands (RFC 3261 §9.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CancelLink {
    None,
    /// Asked for before any provisional: the CANCEL transaction waits (§9.1).
    Waiting(TxRef),
    Sent(TxRef),
}

#[derive(Debug)]
pub(crate) struct ClientInvite {
    pub(crate) state: State,
    request: Bytes,
    reliable: bool,
    pub(crate) cancel: CancelLink,
}

impl ClientInvite {
    /// §17.1.1.2: send the INVITE, start Timer A (unreliable only) and Timer B.
    pub(crate) fn start(
        request: Bytes,
        reliable: bool,
        now: Instant,
        cfg: &TimerConfig,
        out: &mut Out,
    ) -> ClientInvite {
        out.send = Some(request.clone());
        if !reliable {
            out.arm(Timer::A, now + cfg.t1);
        }
        out.arm(Timer::B, now + cfg.t1_x64());
        ClientInvite {
            state: State::Calling { interval: cfg.t1 },
            request,
            reliable,
            cancel: CancelLink::None,
        }
    }

    pub(crate) fn state(&self) -> TxState {
        match self.state {
            State::Calling { .. } => TxState::Calling,
            State::Proceeding => TxState::Proceeding,
            State::Completed { .. } => TxState::Completed,
            State::Accepted => TxState::Accepted,
            State::Terminated => TxState::Terminated,
        }
    }

    /// A response matched this transaction. `build_ack` is only called on the first
    /// 300-699 (§17.1.1.3).
    pub(crate) fn on_response(
        &mut self,
        status: u16,
        now: Instant,
        cfg: &TimerConfig,
        build_ack: impl FnOnce() -> Option<Bytes>,
        out: &mut Out,
    ) {
        let live = matches!(self.state, State::Calling { .. } | State::Proceeding);
        match status {
            100..=199 if live => {
                out.deliver = true;
                self.state = State::Proceeding;
            }
            200..=299 if live => {
                // RFC 6026 §7.2: Accepted, not Terminated, so 2xx retransmissions reach the TU
                // through this transaction instead of looking like strays.
                out.deliver = true;
                self.state = State::Accepted;
                out.arm(Timer::M, now + cfg.t1_x64());
            }
            300..=699 if live => {
                // §17.1.1.2: ACK, pass the response up, then Completed for Timer D.
                let ack = build_ack();
                out.send.clone_from(&ack);
                out.deliver = true;
                self.state = State::Completed { ack };
                out.arm_or_terminate(Timer::D, now, cfg.timer_d(self.reliable));
            }
            300..=699 => {
                // §17.1.1.2: a retransmitted final in Completed is ACKed again, not passed up.
                if let State::Completed { ack } = &self.state {
                    out.send.clone_from(ack);
                }
            }
            // RFC 6026 §7.2: "2xx / 2xx to TU" in Accepted.
            200..=299 if matches!(self.state, State::Accepted) => out.deliver = true,
            // Late provisionals and out-of-range codes are absorbed.
            _ => {}
        }
        if out.terminate {
            self.state = State::Terminated;
        }
    }

    pub(crate) fn on_timer(&mut self, timer: Timer, now: Instant, out: &mut Out) {
        match (&mut self.state, timer) {
            (State::Calling { interval }, Timer::A) => {
                // §17.1.1.2: retransmit and double the interval (no T2 cap for INVITE).
                out.send = Some(self.request.clone());
                *interval = interval.saturating_mul(2);
                out.arm(Timer::A, now + *interval);
            }
            (State::Calling { .. }, Timer::B) => {
                out.fail = Some(Failure::Timeout);
                out.terminate = true;
            }
            (State::Proceeding, Timer::CancelGuard) => {
                // §9.1: no final response 64*T1 after the CANCEL: consider it cancelled.
                out.fail = Some(Failure::Timeout);
                out.terminate = true;
            }
            (State::Completed { .. }, Timer::D) | (State::Accepted, Timer::M) => {
                out.terminate = true;
            }
            _ => {}
        }
        if out.terminate {
            self.state = State::Terminated;
        }
    }

    /// §17.1.4: a transport failure before a final response ends the transaction.
    pub(crate) fn on_transport_error(&mut self, out: &mut Out) {
        if matches!(self.state, State::Calling { .. } | State::Proceeding) {
            out.fail = Some(Failure::Transport);
            out.terminate = true;
            self.state = State::Terminated;
        }
    }
}
