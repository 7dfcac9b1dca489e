//! The listening thread: where the relay's tap copies go when somebody listens to a
//! call's legs (a recording, the DTMF reporter).
//!
//! One thread owns a [`LegListener`] (decoders, RFC 4733 receiver, in-band detector,
//! the DTMF arbiter) per listened leg. It is fed by the relay's taps through one bounded
//! channel ([`Listening::tap`]: the relay drops and counts when it is full, never
//! waits) and by control messages from the call engine. Decoded frames of a recorded
//! call go on to the recording worker ([`RecordingTap`], bounded as well); each new key
//! press comes back to the engine as a [`ListenEvent`].
//!
//! Control messages are taken before tap packets, so a leg's configuration is in place
//! before its first packet is looked at (a packet of a leg not known yet makes the
//! thread look at control again).
//!
//! Packets are taken in batches: after a wake-up the thread handles everything queued,
//! then lets the next packets gather for [`BATCH_WAIT`] instead of waking per packet.

use std::collections::HashMap;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, SyncSender, TryRecvError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use voxgate_media::dtmf::info::InfoBody;
use voxgate_media::dtmf::DtmfEvent;
use voxgate_media::listen::{Heard, LegListener, ListenConfig};
use voxgate_media::recorder;

use super::recording::{OwnedFrame, RecordingTap};
use super::{SessionId, Side, TapPacket, TapSender};

/// A key press heard on a leg, for the call engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenEvent {
    pub session: SessionId,
    /// The leg whose remote pressed the key.
    pub side: Side,
    pub event: DtmfEvent,
}

enum Control {
    /// Start listening to a leg, or take its new negotiation.
    Listen {
        session: SessionId,
        side: Side,
        config: ListenConfig,
    },
    /// Send the session's decoded audio to a recording; `internal` is the side that is
    /// the agent's (the left channel of a dual recording).
    Record {
        session: SessionId,
        tap: RecordingTap,
        internal: Side,
    },
    Unrecord(SessionId),
    /// Digits a leg sent by SIP INFO, to be merged with what its RTP carries.
    Info {
        session: SessionId,
        side: Side,
        body: InfoBody,
        at: Instant,
    },
    Forget(SessionId),
    Stop,
}

#[derive(Default)]
struct Listened {
    legs: [Option<LegListener>; 2],
    recording: Option<(RecordingTap, Side)>,
}

/// The listening thread and its channels. Dropping it stops the thread.
pub struct Listening {
    control: Sender<Control>,
    taps: SyncSender<TapPacket>,
    thread: Option<JoinHandle<()>>,
}

/// Tap packets queued at most: about 2 s of 100 listened calls' two legs.
const TAP_QUEUE: usize = 16_384;

impl Listening {
    /// Starts the thread; key presses go to `events`.
    pub fn start(
        events: tokio::sync::mpsc::UnboundedSender<ListenEvent>,
    ) -> std::io::Result<Listening> {
        let (control, control_rx) = mpsc::channel();
        let (taps, taps_rx) = mpsc::sync_channel(TAP_QUEUE);
        let thread = std::thread::Builder::new()
            .name("media-listen".into())
            .spawn(move || run(&control_rx, &taps_rx, &events))?;
        Ok(Listening {
            control,
            taps,
            thread: Some(thread),
        })
    }

    /// The sender to give the relay ([`super::MediaEngine::set_tap`]).
    pub fn tap(&self) -> TapSender {
        self.taps.clone()
    }

    pub fn listen(&self, session: SessionId, side: Side, config: ListenConfig) {
        let _ = self.control.send(Control::Listen {
            session,
            side,
            config,
        });
    }

    pub fn record(&self, session: SessionId, tap: RecordingTap, internal: Side) {
        let _ = self.control.send(Control::Record {
            session,
            tap,
            internal,
        });
    }

    pub fn unrecord(&self, session: SessionId) {
        let _ = self.control.send(Control::Unrecord(session));
    }

    pub fn info(&self, session: SessionId, side: Side, body: InfoBody, at: Instant) {
        let _ = self.control.send(Control::Info {
            session,
            side,
            body,
            at,
        });
    }

    pub fn forget(&self, session: SessionId) {
        let _ = self.control.send(Control::Forget(session));
    }
}

impl Drop for Listening {
    fn drop(&mut self) {
        let _ = self.control.send(Control::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// How long the thread waits for a packet when no DTMF timeout is due: bounds how late
/// a control message (and the stop) is seen on an idle machine.
const IDLE_WAIT: Duration = Duration::from_millis(50);

/// After a batch of packets, how long the thread lets the next ones gather before it
/// looks again. Waking for every packet cost a futex wake on the relay worker's send
/// and a context switch here, 40,000 times a second for 400 recorded calls: most of a
/// recorded call's CPU. A key press is reported at most this much later (the in-band
/// detector needs 27-40 ms of tone anyway); a control message still ends the wait at
/// once. The queue ([`TAP_QUEUE`]) holds far more than this much traffic. (For a while
/// this was 2 ms, after an IVR barge-in test seemed to see keys late; the test was
/// wrong: it read the prompt's packets only after sending the whole key press.)
const BATCH_WAIT: Duration = Duration::from_millis(10);

fn run(
    control: &Receiver<Control>,
    taps: &Receiver<TapPacket>,
    events: &tokio::sync::mpsc::UnboundedSender<ListenEvent>,
) {
    let mut sessions: HashMap<SessionId, Listened> = HashMap::new();
    loop {
        if drain_control(&mut sessions, control, events) {
            return;
        }
        // One look at every leg's DTMF timeout per batch, not per packet: with hundreds
        // of listened legs that scan cost more than the packet itself.
        let now = Instant::now();
        let wait = next_timeout(&sessions).map_or(IDLE_WAIT, |t| {
            t.saturating_duration_since(now).min(IDLE_WAIT)
        });
        let batch = match taps.recv_timeout(wait) {
            Ok(p) => {
                // Whatever else is queued goes in the same wake-up, in order; bounded so
                // control and timeouts are seen between two queues' worth under overload.
                for p in std::iter::once(p).chain(taps.try_iter().take(TAP_QUEUE)) {
                    if !heard(&mut sessions, &p, events) {
                        // A leg we do not know yet: its configuration may have been
                        // sent after we last looked (control is taken before packets).
                        if drain_control(&mut sessions, control, events) {
                            return;
                        }
                        heard(&mut sessions, &p, events);
                    }
                }
                true
            }
            Err(RecvTimeoutError::Timeout) => false,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        let now = Instant::now();
        for (id, s) in &mut sessions {
            for (i, leg) in s.legs.iter_mut().enumerate() {
                let Some(leg) = leg else { continue };
                if leg.poll_timeout().is_some_and(|t| t <= now) {
                    leg.handle_timeout(now);
                    report(*id, side_of(i), leg, events);
                }
            }
        }
        if batch {
            // Let the next packets gather (see BATCH_WAIT); a control message ends it.
            match control.recv_timeout(BATCH_WAIT) {
                Ok(Control::Stop) | Err(RecvTimeoutError::Disconnected) => return,
                Ok(c) => apply(&mut sessions, c, events),
                Err(RecvTimeoutError::Timeout) => {}
            }
        }
    }
}

/// Applies the control messages queued now; `true` to stop.
fn drain_control(
    sessions: &mut HashMap<SessionId, Listened>,
    control: &Receiver<Control>,
    events: &tokio::sync::mpsc::UnboundedSender<ListenEvent>,
) -> bool {
    loop {
        match control.try_recv() {
            Ok(Control::Stop) | Err(TryRecvError::Disconnected) => return true,
            Ok(c) => apply(sessions, c, events),
            Err(TryRecvError::Empty) => return false,
        }
    }
}

/// The earliest DTMF timeout of any leg.
fn next_timeout(sessions: &HashMap<SessionId, Listened>) -> Option<Instant> {
    sessions
        .values()
        .flat_map(|s| s.legs.iter().flatten())
        .filter_map(LegListener::poll_timeout)
        .min()
}

fn side_of(i: usize) -> Side {
    if i == 0 {
        Side::A
    } else {
        Side::B
    }
}

fn apply(
    sessions: &mut HashMap<SessionId, Listened>,
    c: Control,
    events: &tokio::sync::mpsc::UnboundedSender<ListenEvent>,
) {
    match c {
        Control::Listen {
            session,
            side,
            config,
        } => {
            let slot = &mut sessions.entry(session).or_default().legs[side.index()];
            match slot {
                Some(l) => l.reconfigure(config),
                None => *slot = Some(LegListener::new(config)),
            }
        }
        Control::Record {
            session,
            tap,
            internal,
        } => sessions.entry(session).or_default().recording = Some((tap, internal)),
        Control::Unrecord(session) => {
            if let Some(s) = sessions.get_mut(&session) {
                s.recording = None;
            }
        }
        Control::Info {
            session,
            side,
            body,
            at,
        } => {
            // A leg nobody taps still reports its INFO digits.
            let leg = sessions.entry(session).or_default().legs[side.index()]
                .get_or_insert_with(|| LegListener::new(ListenConfig::default()));
            leg.handle_info(&body, at);
            report(session, side, leg, events);
        }
        Control::Forget(session) => {
            sessions.remove(&session);
        }
        Control::Stop => {}
    }
}

/// Hands one tap packet to its leg's listener; `false` if nobody listens to that leg
/// (yet).
fn heard(
    sessions: &mut HashMap<SessionId, Listened>,
    p: &TapPacket,
    events: &tokio::sync::mpsc::UnboundedSender<ListenEvent>,
) -> bool {
    if p.rtcp {
        return true;
    }
    let Some(s) = sessions.get_mut(&p.session) else {
        return false;
    };
    let Some(leg) = s.legs[p.side.index()].as_mut() else {
        return false;
    };
    if let Heard::Audio(f) = leg.handle_rtp(&p.data, p.at) {
        if let Some((tap, internal)) = &s.recording {
            let side = if p.side == *internal {
                recorder::Side::Internal
            } else {
                recorder::Side::External
            };
            let frame = OwnedFrame {
                ssrc: f.ssrc,
                timestamp: f.timestamp,
                clock: f.clock,
                rate: recorder::SampleRate(f.codec.sample_rate().hz()),
                samples: f.samples.to_vec(),
            };
            tap.send(side, frame, p.at);
        }
    }
    report(p.session, p.side, leg, events);
    true
}

fn report(
    session: SessionId,
    side: Side,
    leg: &mut LegListener,
    events: &tokio::sync::mpsc::UnboundedSender<ListenEvent>,
) {
    while let Some(event) = leg.poll_digit() {
        let _ = events.send(ListenEvent {
            session,
            side,
            event,
        });
    }
}
