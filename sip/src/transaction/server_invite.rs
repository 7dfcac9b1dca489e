//! INVITE server transaction: RFC 3261 §17.2.1 as corrected by RFC 6026 §7.1.

use std::time::{Duration, Instant};

use bytes::Bytes;

use super::timers::{Timer, TimerConfig};
use super::{Failure, Out, TxState};

/// RFC 6026 figure 7 (RFC 3261 figure 7 with the Accepted state):
///
/// ```text
///                                     |INVITE
///                                     |pass INV to TU
///                  INVITE             V send 100 if TU won't in 200 ms
///                  send response+------------+
///                      +--------|            |--------+ 101-199 from TU
///                      |        |            |        | send response
///                      +------->|            |<-------+
///                               | Proceeding |
///                               |            |--------+ Transport Err.
///                               |            |        | Inform TU
///                               |            |<-------+
///                               +------------+
///                  300-699 from TU |    |2xx from TU
///                  send response   |    |send response
///                   +--------------+    +------------+
///                   |                                |
///  INVITE           V          Timer G fires         |
///  send response +-----------+ send response         |
///       +--------|           |--------+              |
///       |        |           |        |              |
///       +------->| Completed |<-------+      INVITE  |  Transport Err.
///                |           |               -       |  Inform TU
///       +--------|           |----+          +-----+ |  +---+
///       |        +-----------+    | ACK      |     v v  |   v
///       |          ^   |          | -        |  +------------+
///       |          |   |          |          |  |            |---+ ACK
///       +----------+   |          |          +--|  Accepted  |   | to TU
///       Transport Err. |          |             |            |<--+
///       Inform TU      |          V             +------------+
///                      |      +-----------+        |  ^     |
///                      |      |           |        |  |     |
///                      |      | Confirmed |        |  +-----+
///                      |      |           |        |  2xx from TU
///        Timer H fires |      +-----------+        |  send response
///        -             |          |                |
///                      |          | Timer I fires  |
///                      |          | -              | Timer L fires
///                      |          V                | -
///                      |        +------------+     |
///                      |        |            |     |
///                      +------->| Terminated |<----+
///                               |            |
///                               +------------+
/// ```
///
/// A transport error in Proceeding or Completed ends the transaction (RFC 3261 §17.2.4);
/// in Accepted the TU is told and keeps its own 2xx retransmission going.
#[derive(Debug)]
pub(crate) enum State {
    /// Waiting for the TU; `last` is the most recent provisional sent (§17.2.1).
    Proceeding {
        last: Option<Bytes>,
    },
    /// A 300-699 was sent; retransmitted on Timer G until an ACK or Timer H.
    Completed {
        response: Bytes,
        interval: Duration,
    },
    /// The ACK arrived; absorb ACK retransmissions until Timer I.
    Confirmed,
    /// A 2xx was sent: absorb INVITE retransmissions, pass ACKs up, until Timer L
    /// (RFC 6026 §7.1). The TU retransmits the 2xx itself (§13.3.1.4).
    Accepted,
    Terminated,
}

#[derive(Debug)]
pub(crate) struct ServerInvite {
    pub(crate) state: State,
    reliable: bool,
}

impl ServerInvite {
    /// §17.2.1: the INVITE has been passed to the TU; arm the 100 Trying timer.
    pub(crate) fn start(reliable: bool, now: Instant, cfg: &TimerConfig, out: &mut Out) -> Self {
        out.arm(Timer::Trying, now + cfg.trying_delay);
        ServerInvite {
            state: State::Proceeding { last: None },
            reliable,
        }
    }

    pub(crate) fn state(&self) -> TxState {
        match self.state {
            State::Proceeding { .. } => TxState::Proceeding,
            State::Completed { .. } => TxState::Completed,
            State::Confirmed => TxState::Confirmed,
            State::Accepted => TxState::Accepted,
            State::Terminated => TxState::Terminated,
        }
    }

    /// Whether the TU has sent nothing yet (the layer then still needs the INVITE to build
    /// a 100 Trying).
    pub(crate) fn awaits_first_response(&self) -> bool {
        matches!(self.state, State::Proceeding { last: None })
    }

    /// A retransmitted INVITE matched this transaction.
    pub(crate) fn on_invite(
        &mut self,
        build_trying: impl FnOnce() -> Option<Bytes>,
        out: &mut Out,
    ) {
        match &mut self.state {
            // §17.2.1: resend the most recent provisional. None sent yet: the peer is
            // retransmitting, so the 100 Trying is due now rather than at its timer.
            State::Proceeding { last } => {
                if last.is_none() {
                    *last = build_trying();
                }
                out.send.clone_from(last);
            }
            State::Completed { response, .. } => out.send = Some(response.clone()),
            // RFC 6026 §7.1: absorbed in Accepted; Confirmed absorbs too.
            State::Confirmed | State::Accepted | State::Terminated => {}
        }
    }

    /// An ACK matched this transaction.
    pub(crate) fn on_ack(&mut self, now: Instant, cfg: &TimerConfig, out: &mut Out) {
        match self.state {
            State::Completed { .. } => {
                // §17.2.1: Confirmed, Timer I = T4 (0 on reliable transports).
                self.state = State::Confirmed;
                out.arm_or_terminate(Timer::I, now, cfg.t4_unless_reliable(self.reliable));
                if out.terminate {
                    self.state = State::Terminated;
                }
            }
            // RFC 6026 §7.1: "ACK / to TU" in Accepted.
            State::Accepted => out.deliver = true,
            _ => {}
        }
    }

    /// The TU sends a response. `Err` carries the state that does not allow it.
    pub(crate) fn on_tu_response(
        &mut self,
        status: u16,
        response: Bytes,
        now: Instant,
        cfg: &TimerConfig,
        out: &mut Out,
    ) -> Result<(), TxState> {
        match (&mut self.state, status) {
            (State::Proceeding { last }, 100..=199) => {
                out.send = Some(response.clone());
                *last = Some(response);
            }
            (State::Proceeding { .. }, 200..=299) => {
                out.send = Some(response);
                self.state = State::Accepted;
                out.arm(Timer::L, now + cfg.t1_x64());
            }
            (State::Proceeding { .. }, _) => {
                out.send = Some(response.clone());
                if !self.reliable {
                    out.arm(Timer::G, now + cfg.t1);
                }
                out.arm(Timer::H, now + cfg.t1_x64());
                self.state = State::Completed {
                    response,
                    interval: cfg.t1,
                };
            }
            // RFC 6026 §7.1: 2xx retransmissions from the TU go out in Accepted.
            (State::Accepted, 200..=299) => out.send = Some(response),
            _ => return Err(self.state()),
        }
        Ok(())
    }

    pub(crate) fn on_timer(
        &mut self,
        timer: Timer,
        now: Instant,
        cfg: &TimerConfig,
        build_trying: impl FnOnce() -> Option<Bytes>,
        out: &mut Out,
    ) {
        match (&mut self.state, timer) {
            (State::Proceeding { last }, Timer::Trying) if last.is_none() => {
                *last = build_trying();
                out.send.clone_from(last);
            }
            (State::Completed { response, interval }, Timer::G) => {
                // §17.2.1: MIN(2*interval, T2).
                out.send = Some(response.clone());
                *interval = interval.saturating_mul(2).min(cfg.t2);
                out.arm(Timer::G, now + *interval);
            }
            (State::Completed { .. }, Timer::H) => {
                // §17.2.1: no ACK ever came: tell the TU the transaction failed.
                out.fail = Some(Failure::Timeout);
                out.terminate = true;
            }
            (State::Confirmed, Timer::I) | (State::Accepted, Timer::L) => out.terminate = true,
            _ => {}
        }
        if out.terminate {
            self.state = State::Terminated;
        }
    }

    pub(crate) fn on_transport_error(&mut self, out: &mut Out) {
        match self.state {
            State::Proceeding { .. } | State::Completed { .. } => {
                out.fail = Some(Failure::Transport);
                out.terminate = true;
                self.state = State::Terminated;
            }
            State::Accepted => out.fail = Some(Failure::Transport),
            State::Confirmed | State::Terminated => {}
        }
    }
}
