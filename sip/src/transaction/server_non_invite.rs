//! Non-INVITE server transaction: RFC 3261 §17.2.2.

use std::time::Instant;

use bytes::Bytes;

use super::timers::{Timer, TimerConfig};
use super::{Failure, Out, TxState};

/// RFC 3261 figure 8:
///
/// ```text
///                                   |Request received
///                                   |pass to TU
///                                   V
///                             +-----------+
///                             |           |
///                             | Trying    |-------------+
///                             |           |             |
///                             +-----------+             |200-699 from TU
///                                   |                   |send response
///                                   |1xx from TU        |
///                                   |send response      |
///                                   |                   |
///                Request            V      1xx from TU  |
///                send response+-----------+send response|
///                    +--------|           |--------+    |
///                    |        | Proceeding|        |    |
///                    +------->|           |<-------+    |
///             +<--------------|           |             |
///             |Trnsprt Err    +-----------+             |
///             |Inform TU            |                   |
///             |                     |                   |
///             |                     |200-699 from TU    |
///             |                     |send response      |
///             |  Request            V                   |
///             |  send response+-----------+             |
///             |      +--------|           |             |
///             |      |        | Completed |<------------+
///             |      +------->|           |
///             +<--------------|           |
///             |Trnsprt Err    +-----------+
///             |Inform TU            |
///             |                     |Timer J fires
///             |                     |-
///             |                     |
///             |                     V
///             |               +-----------+
///             |               |           |
///             +-------------->| Terminated|
///                             |           |
///                             +-----------+
/// ```
#[derive(Debug)]
pub(crate) enum State {
    /// Passed to the TU; retransmitted requests are absorbed silently.
    Trying,
    /// A provisional was sent; retransmitted requests get it again.
    Proceeding {
        last: Bytes,
    },
    /// The final was sent; retransmitted requests get it again until Timer J.
    Completed {
        response: Bytes,
    },
    Terminated,
}

#[derive(Debug)]
pub(crate) struct ServerNonInvite {
    pub(crate) state: State,
    reliable: bool,
}

impl ServerNonInvite {
    pub(crate) fn start(reliable: bool) -> Self {
        ServerNonInvite {
            state: State::Trying,
            reliable,
        }
    }

    pub(crate) fn state(&self) -> TxState {
        match self.state {
            State::Trying => TxState::Trying,
            State::Proceeding { .. } => TxState::Proceeding,
            State::Completed { .. } => TxState::Completed,
            State::Terminated => TxState::Terminated,
        }
    }

    /// A retransmission of the request (§17.2.2).
    pub(crate) fn on_request(&mut self, out: &mut Out) {
        match &self.state {
            State::Proceeding { last: r } | State::Completed { response: r } => {
                out.send = Some(r.clone());
            }
            State::Trying | State::Terminated => {}
        }
    }

    pub(crate) fn on_tu_response(
        &mut self,
        status: u16,
        response: Bytes,
        now: Instant,
        cfg: &TimerConfig,
        out: &mut Out,
    ) -> Result<(), TxState> {
        if !matches!(self.state, State::Trying | State::Proceeding { .. }) {
            // §17.2.2: other finals from the TU are discarded in Completed.
            return Err(self.state());
        }
        out.send = Some(response.clone());
        if status < 200 {
            self.state = State::Proceeding { last: response };
        } else {
            self.state = State::Completed { response };
            out.arm_or_terminate(Timer::J, now, cfg.timer_j(self.reliable));
            if out.terminate {
                self.state = State::Terminated;
            }
        }
        Ok(())
    }

    pub(crate) fn on_timer(&mut self, timer: Timer, out: &mut Out) {
        if let (State::Completed { .. }, Timer::J) = (&self.state, timer) {
            out.terminate = true;
            self.state = State::Terminated;
        }
    }

    /// §17.2.4: a failure sending a response ends the transaction and informs the TU.
    pub(crate) fn on_transport_error(&mut self, out: &mut Out) {
        if matches!(
            self.state,
            State::Proceeding { .. } | State::Completed { .. }
        ) {
            out.fail = Some(Failure::Transport);
            out.terminate = true;
            self.state = State::Terminated;
        }
    }
}
