//! Non-INVITE client transaction: RFC 3261 §17.1.2.

use std::time::{Duration, Instant};

use bytes::Bytes;

use super::timers::{Timer, TimerConfig};
use super::{Failure, Out, TxState};

/// RFC 3261 figure 6, plus a Waiting state for a CANCEL held back until its INVITE gets a
/// provisional response (§9.1):
///
/// ```text
///                                |Request from TU
///                                |send request
///            Timer E             V
///            send request  +-----------+
///                +---------|           |-------------------+
///                |         |  Trying   |  Timer F          |
///                +-------->|           |  or Transport Err.|
///                          +-----------+  inform TU        |
///             200-699         |  |                         |
///             resp. to TU     |  |1xx                      |
///             +---------------+  |resp. to TU              |
///             |                  |                         |
///             |   Timer E        V       Timer F           |
///             |   send req +-----------+ or Transport Err. |
///             |  +---------|           | inform TU         |
///             |  |         |Proceeding |------------------>|
///             |  +-------->|           |-----+             |
///             |            +-----------+     |1xx          |
///             |              |      ^        |resp to TU   |
///             | 200-699      |      +--------+             |
///             | resp. to TU  |                             |
///             |              |                             |
///             |              V                             |
///             |            +-----------+                   |
///             |            |           |                   |
///             |            | Completed |                   |
///             |            |           |                   |
///             |            +-----------+                   |
///             |              ^   |                         |
///             |              |   | Timer K                 |
///             +--------------+   | -                       |
///                                |                         |
///                                V                         |
///          NOTE:           +-----------+                   |
///                          |           |                   |
///      transitions         | Terminated|<------------------+
///      labeled with        |           |
///      the event           +-----------+
///      over the action
///      to take
/// ```
#[derive(Debug)]
pub(crate) enum State {
    /// A CANCEL whose INVITE has no provisional yet (§9.1: "MUST NOT be sent").
    Waiting,
    /// Request sent; Timer E interval doubles up to T2 (§17.1.2.2).
    Trying {
        interval: Duration,
    },
    /// A provisional arrived; Timer E keeps firing every T2.
    Proceeding,
    /// A final arrived; absorb its retransmissions until Timer K.
    Completed,
    Terminated,
}

#[derive(Debug)]
pub(crate) struct ClientNonInvite {
    pub(crate) state: State,
    request: Bytes,
    reliable: bool,
}

impl ClientNonInvite {
    /// A transaction that has not sent its request yet (a CANCEL waiting, §9.1).
    pub(crate) fn waiting(request: Bytes, reliable: bool) -> ClientNonInvite {
        ClientNonInvite {
            state: State::Waiting,
            request,
            reliable,
        }
    }

    /// §17.1.2.2: send the request, start Timer E (unreliable only) and Timer F.
    pub(crate) fn start(
        request: Bytes,
        reliable: bool,
        now: Instant,
        cfg: &TimerConfig,
        out: &mut Out,
    ) -> ClientNonInvite {
        let mut tx = Self::waiting(request, reliable);
        tx.send_now(now, cfg, out);
        tx
    }

    /// Leaves Waiting: send and arm E/F. No-op in any other state.
    pub(crate) fn send_now(&mut self, now: Instant, cfg: &TimerConfig, out: &mut Out) {
        if !matches!(self.state, State::Waiting) {
            return;
        }
        out.send = Some(self.request.clone());
        if !self.reliable {
            out.arm(Timer::E, now + cfg.t1);
        }
        out.arm(Timer::F, now + cfg.t1_x64());
        self.state = State::Trying { interval: cfg.t1 };
    }

    pub(crate) fn state(&self) -> TxState {
        match self.state {
            State::Waiting => TxState::Waiting,
            State::Trying { .. } => TxState::Trying,
            State::Proceeding => TxState::Proceeding,
            State::Completed => TxState::Completed,
            State::Terminated => TxState::Terminated,
        }
    }

    pub(crate) fn on_response(
        &mut self,
        status: u16,
        now: Instant,
        cfg: &TimerConfig,
        out: &mut Out,
    ) {
        if !matches!(self.state, State::Trying { .. } | State::Proceeding) {
            // Completed absorbs retransmitted finals (§17.1.2.2); Waiting has sent nothing.
            return;
        }
        match status {
            100..=199 => {
                out.deliver = true;
                self.state = State::Proceeding;
            }
            200..=699 => {
                out.deliver = true;
                self.state = State::Completed;
                out.arm_or_terminate(Timer::K, now, cfg.t4_unless_reliable(self.reliable));
                if out.terminate {
                    self.state = State::Terminated;
                }
            }
            _ => {}
        }
    }

    pub(crate) fn on_timer(
        &mut self,
        timer: Timer,
        now: Instant,
        cfg: &TimerConfig,
        out: &mut Out,
    ) {
        match (&mut self.state, timer) {
            (State::Trying { interval }, Timer::E) => {
                // §17.1.2.2: MIN(2*interval, T2).
                out.send = Some(self.request.clone());
                *interval = interval.saturating_mul(2).min(cfg.t2);
                out.arm(Timer::E, now + *interval);
            }
            (State::Proceeding, Timer::E) => {
                // §17.1.2.2: in Proceeding, Timer E is reset to T2.
                out.send = Some(self.request.clone());
                out.arm(Timer::E, now + cfg.t2);
            }
            (State::Trying { .. } | State::Proceeding, Timer::F) => {
                out.fail = Some(Failure::Timeout);
                out.terminate = true;
            }
            (State::Completed, Timer::K) => out.terminate = true,
            _ => {}
        }
        if out.terminate {
            self.state = State::Terminated;
        }
    }

    /// §17.1.4: a transport failure before a final response ends the transaction.
    pub(crate) fn on_transport_error(&mut self, out: &mut Out) {
        if matches!(self.state, State::Trying { .. } | State::Proceeding) {
            out.fail = Some(Failure::Transport);
            out.terminate = true;
            self.state = State::Terminated;
        }
    }
}
