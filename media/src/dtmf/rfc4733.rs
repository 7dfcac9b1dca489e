//! RFC 4733 telephone-events: the payload view, a per-stream receiver that reports each
//! key press once, and a sender that turns a digit into its packets.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |     event     |E|R| volume    |          duration             |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//!
//! An event is named by its RTP timestamp (RFC 4733 §2.5.1.2): every packet of one key
//! press carries the timestamp of the press's start, with a growing duration; the last
//! one has the E bit and is sent three times (§2.5.1.4). Sequence numbers differ on every
//! packet, retransmissions included (§2.5.1.6), so they cannot name the event.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use thiserror::Error;

use super::{Digit, DtmfEvent, DtmfSignal, DtmfSource};
use crate::rewrite::ClockRate;
use crate::rtp::{self, RtpPacket, RtpTimestamp, SeqNo, Ssrc};

/// Length of one event report (RFC 4733 §2.3).
pub const EVENT_LEN: usize = 4;

/// The largest duration one report can carry; longer events are split into segments
/// (RFC 4733 §2.5.1.3).
pub const MAX_SEGMENT: u32 = 0xFFFF;

/// Why a payload is not a telephone-event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum TelephoneEventError {
    #[error("telephone-event payload is {0} bytes, shorter than one 4-byte event report")]
    TooShort(usize),
    #[error("RTP packet: {0}")]
    Rtp(#[from] rtp::RtpError),
}

/// A borrowed view of a telephone-event payload (RFC 4733 §2.3), smoltcp style.
#[derive(Debug, Clone, Copy)]
pub struct TelephoneEvent<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> TelephoneEvent<T> {
    /// Wraps without checking; accessors panic on fewer than [`EVENT_LEN`] bytes.
    pub fn new_unchecked(buffer: T) -> TelephoneEvent<T> {
        TelephoneEvent { buffer }
    }

    /// Wraps and checks that one event report fits. Bytes after the first report are
    /// ignored: §2.3 defines one report per payload (several only come through RFC 2198
    /// redundancy, a payload type of its own), and a few gateways pad.
    pub fn new_checked(buffer: T) -> Result<TelephoneEvent<T>, TelephoneEventError> {
        let len = buffer.as_ref().len();
        if len < EVENT_LEN {
            return Err(TelephoneEventError::TooShort(len));
        }
        Ok(TelephoneEvent { buffer })
    }

    /// Event code (RFC 4733 §3.2 for DTMF: 0-15; 16 is flash).
    pub fn event(&self) -> u8 {
        self.buffer.as_ref()[0]
    }
    /// The key press is over (E bit).
    pub fn end(&self) -> bool {
        self.buffer.as_ref()[1] & 0x80 != 0
    }
    /// Reserved (R bit); senders set it to zero, receivers ignore it (§2.3).
    pub fn reserved(&self) -> bool {
        self.buffer.as_ref()[1] & 0x40 != 0
    }
    /// Power level in -dBm0 (0-63; §2.3 "volume").
    pub fn volume(&self) -> u8 {
        self.buffer.as_ref()[1] & 0x3f
    }
    /// Duration so far in RTP timestamp units, since the event's (segment's) timestamp.
    pub fn duration(&self) -> u16 {
        let b = self.buffer.as_ref();
        u16::from_be_bytes([b[2], b[3]])
    }
}

/// Encodes one event report.
#[must_use]
pub fn encode(event: u8, end: bool, volume: u8, duration: u16) -> [u8; EVENT_LEN] {
    let d = duration.to_be_bytes();
    [
        event,
        (if end { 0x80 } else { 0 }) | (volume & 0x3f),
        d[0],
        d[1],
    ]
}

fn units_to_duration(clock: ClockRate, units: u64) -> Duration {
    if clock.0 == 0 {
        return Duration::ZERO;
    }
    let nanos = u128::from(units) * 1_000_000_000 / u128::from(clock.0);
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

/// Receiver settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReceiverConfig {
    /// The telephone-event clock (its `a=rtpmap` rate: 8000, or 48000 beside Opus).
    pub clock: ClockRate,
    /// An event whose packets stop without an end packet (all three lost, or the
    /// stream stopped) is closed this long after its last packet. Updates come every
    /// 50 ms or faster (§2.5.1.2), so 300 ms is six lost updates in a row.
    pub timeout: Duration,
}

impl Default for ReceiverConfig {
    fn default() -> Self {
        ReceiverConfig {
            clock: ClockRate::G711,
            timeout: Duration::from_millis(300),
        }
    }
}

/// Counters for the leg's stats.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReceiverStats {
    /// Key presses reported (`Begin`s, non-digit events excluded).
    pub digits: u64,
    /// Packets of an event already over: the redundant end packets and duplicates.
    pub duplicates: u64,
    /// Packets older than the current event (reordered behind a newer press).
    pub stale: u64,
    /// Events closed by [`ReceiverConfig::timeout`] rather than an end packet.
    pub timed_out: u64,
}

/// The event being (or last) received on the stream.
#[derive(Debug, Clone, Copy)]
struct Current {
    /// Timestamp of the segment being received (RFC 4733 §2.5.1.3: a long event's later
    /// segments carry later timestamps).
    ts: RtpTimestamp,
    code: u8,
    digit: Option<Digit>,
    /// Units in the event's earlier segments.
    earlier: u64,
    /// Largest duration reported in this segment.
    duration: u16,
    ended: bool,
    /// Ended by the timeout, not by an end packet: its packets may still come.
    timed_out: bool,
    last_seen: Instant,
}

/// One stream's telephone-event receiver (RFC 4733 §2.5.2).
///
/// Reporting rule: a key press is reported (`Begin`) on the first packet that arrives
/// for it, whichever that is: normally the marked start packet; when the start and the
/// updates were lost, the first end packet, and then `Begin` and `End` come together.
/// Every later packet with that timestamp (updates, the three end packets,
/// duplicates, retransmissions) only lengthens it or ends it. So each press gives one
/// `Begin`, as early as the receiver can know of it, and never a second one.
///
/// A press is `End`ed by its end packet, by a packet of a newer press (its end packets
/// were lost), by [`Rfc4733Receiver::handle_timeout`] after [`ReceiverConfig::timeout`]
/// without packets, or by a new SSRC (a new stream, RFC 3550 §8).
#[derive(Debug)]
pub struct Rfc4733Receiver {
    config: ReceiverConfig,
    ssrc: Option<Ssrc>,
    current: Option<Current>,
    out: VecDeque<DtmfSignal>,
    stats: ReceiverStats,
}

impl Rfc4733Receiver {
    #[must_use]
    pub fn new(config: ReceiverConfig) -> Rfc4733Receiver {
        Rfc4733Receiver {
            config,
            ssrc: None,
            current: None,
            out: VecDeque::new(),
            stats: ReceiverStats::default(),
        }
    }

    /// A telephone-event RTP packet (the caller has matched its payload type against
    /// the negotiated `telephone-event` one).
    pub fn handle_rtp<T: AsRef<[u8]>>(
        &mut self,
        packet: &RtpPacket<T>,
        now: Instant,
    ) -> Result<(), TelephoneEventError> {
        let ev = TelephoneEvent::new_checked(packet.payload())?;
        self.handle_event(packet.ssrc(), packet.timestamp(), &ev, now);
        Ok(())
    }

    /// One event report with its packet's SSRC and timestamp.
    pub fn handle_event<T: AsRef<[u8]>>(
        &mut self,
        ssrc: Ssrc,
        ts: RtpTimestamp,
        ev: &TelephoneEvent<T>,
        now: Instant,
    ) {
        if self.ssrc != Some(ssrc) {
            // RFC 3550 §8: a new SSRC is a new stream; its timestamps say nothing about
            // the old one's, so the old press ends here.
            self.finish(now, false);
            self.current = None;
            self.ssrc = Some(ssrc);
        }
        let stale_window = self.stale_window();
        let Some(cur) = self.current.as_mut() else {
            self.start(ts, ev, now);
            return;
        };
        if ts == cur.ts && ev.event() == cur.code {
            if cur.ended {
                // The redundant end packets (§2.5.1.4), or a duplicate.
                self.stats.duplicates += 1;
                return;
            }
            cur.duration = cur.duration.max(ev.duration());
            cur.last_seen = now;
            if ev.end() {
                self.finish(now, false);
            }
            return;
        }
        let delta = ts.0.wrapping_sub(cur.ts.0);
        // Serial-number comparison (RFC 1982), as for RTP timestamps. Behind the current
        // event by up to a stale window: a late packet of an older event. Farther
        // behind: a sender that restarted its timestamps, so a new event.
        let behind = 0u32.wrapping_sub(delta);
        if (delta >= 0x8000_0000 || delta == 0) && behind <= stale_window {
            if delta == 0 {
                // Same timestamp, other event code: a sender that reuses the timestamp
                // for a new press (not RFC 4733, but seen); a new event.
                self.finish(now, false);
                self.start(ts, ev, now);
            } else {
                self.stats.stale += 1;
            }
            return;
        }
        // RFC 4733 §2.5.2.3: the same event continuing in a new segment starts where the
        // previous segment's duration ends (0xFFFF units later, §2.5.1.3; a few segments
        // later if whole segments were lost). A new press of the same key cannot start
        // exactly there: it needs a pause first.
        let next_segment = ev.event() == cur.code
            && ((delta % MAX_SEGMENT == 0 && delta / MAX_SEGMENT <= 8)
                || (cur.duration > 0 && delta == u32::from(cur.duration)));
        if next_segment && cur.timed_out {
            // A long press whose packets stalled past the timeout and came back: its
            // End is already out, so follow it silently rather than begin it again.
            cur.earlier += u64::from(delta);
            cur.ts = ts;
            cur.duration = ev.duration();
            self.stats.duplicates += 1;
            return;
        }
        if next_segment && !cur.ended {
            cur.earlier += u64::from(delta);
            cur.ts = ts;
            cur.duration = ev.duration();
            cur.last_seen = now;
            if ev.end() {
                self.finish(now, false);
            }
            return;
        }
        // A newer press: the current one's end packets were lost if it had not ended.
        self.finish(now, false);
        self.start(ts, ev, now);
    }

    fn stale_window(&self) -> u32 {
        // Ten seconds of the clock: far longer than any reordering.
        self.config.clock.0.saturating_mul(10)
    }

    fn start<T: AsRef<[u8]>>(&mut self, ts: RtpTimestamp, ev: &TelephoneEvent<T>, now: Instant) {
        let digit = Digit::from_event_code(ev.event());
        self.current = Some(Current {
            ts,
            code: ev.event(),
            digit,
            earlier: 0,
            duration: ev.duration(),
            ended: false,
            timed_out: false,
            last_seen: now,
        });
        if let Some(digit) = digit {
            self.stats.digits += 1;
            self.out.push_back(DtmfSignal::Begin(DtmfEvent {
                digit,
                duration: units_to_duration(self.config.clock, u64::from(ev.duration())),
                source: DtmfSource::Rfc4733,
            }));
        }
        if ev.end() {
            self.finish(now, false);
        }
    }

    /// Ends the current event if it is open.
    fn finish(&mut self, _now: Instant, timed_out: bool) {
        let Some(cur) = self.current.as_mut() else {
            return;
        };
        if cur.ended {
            return;
        }
        cur.ended = true;
        cur.timed_out = timed_out;
        if timed_out {
            self.stats.timed_out += 1;
        }
        if let Some(digit) = cur.digit {
            let units = cur.earlier + u64::from(cur.duration);
            self.out.push_back(DtmfSignal::End(DtmfEvent {
                digit,
                duration: units_to_duration(self.config.clock, units),
                source: DtmfSource::Rfc4733,
            }));
        }
    }

    /// Closes an event whose packets stopped coming.
    pub fn handle_timeout(&mut self, now: Instant) {
        if let Some(at) = self.poll_timeout() {
            if now >= at {
                self.finish(now, true);
            }
        }
    }

    /// When [`Rfc4733Receiver::handle_timeout`] next has work.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let cur = self.current.as_ref()?;
        (!cur.ended).then(|| cur.last_seen + self.config.timeout)
    }

    /// The next signal, in order.
    pub fn poll_signal(&mut self) -> Option<DtmfSignal> {
        self.out.pop_front()
    }

    #[must_use]
    pub fn stats(&self) -> ReceiverStats {
        self.stats
    }
}

/// Sender settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SenderConfig {
    /// The telephone-event clock (the leg's negotiated rate).
    pub clock: ClockRate,
    /// Between updates of a press (RFC 4733 §2.5.1.2 suggests the audio packet rate;
    /// 50 ms is what most phones use for events).
    pub update_interval: Duration,
    /// End packets per press (§2.5.1.4: three).
    pub end_repeats: u8,
    /// Between the end packets: spread out, so one burst of loss does not take all.
    pub end_spacing: Duration,
    /// Silence between two queued presses (ITU-T Q.24 wants at least 40 ms).
    pub gap: Duration,
    /// Reported power, -dBm0 (§2.3); 10 is a typical phone's level.
    pub volume: u8,
}

impl Default for SenderConfig {
    fn default() -> Self {
        SenderConfig {
            clock: ClockRate::G711,
            update_interval: Duration::from_millis(50),
            end_repeats: 3,
            end_spacing: Duration::from_millis(20),
            gap: Duration::from_millis(100),
            volume: 10,
        }
    }
}

/// One telephone-event packet to send: the caller numbers it with the audio stream's
/// next sequence number and SSRC (§2.5.1.6, every packet its own number) and sends it
/// with the negotiated payload type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventPacket {
    pub marker: bool,
    pub timestamp: RtpTimestamp,
    pub payload: [u8; EVENT_LEN],
}

impl EventPacket {
    /// Writes the RTP packet into `buf`; returns its length, or `None` if `buf` is short.
    pub fn write(&self, buf: &mut [u8], pt: u8, seq: SeqNo, ssrc: Ssrc) -> Option<usize> {
        let len = rtp::HEADER_LEN + EVENT_LEN;
        let out = buf.get_mut(..len)?;
        rtp::write_header(out, pt, self.marker, seq, self.timestamp, ssrc)?;
        out[rtp::HEADER_LEN..].copy_from_slice(&self.payload);
        Some(len)
    }
}

/// A press being sent.
#[derive(Debug, Clone, Copy)]
struct Sending {
    digit: Digit,
    start: Instant,
    start_ts: RtpTimestamp,
    /// Whole length in clock units.
    total: u64,
    length: Duration,
    /// Packets sent so far (updates, then end packets).
    sent: u32,
    updates: u32,
}

/// Sends digits as telephone-events (RFC 4733 §2.5.1), sans-IO: queue digits with
/// [`Rfc4733Sender::send_digit`], then call [`Rfc4733Sender::poll_transmit`] whenever
/// [`Rfc4733Sender::poll_timeout`] is due.
///
/// Per press: a marked first packet at the start, updates every `update_interval`,
/// each reporting the length up to the end of the interval it starts (like an audio
/// frame, so no report says zero), then `end_repeats` end packets with the exact length.
/// Presses longer than 0xFFFF units are sent in segments (§2.5.1.3).
#[derive(Debug)]
pub struct Rfc4733Sender {
    config: SenderConfig,
    queue: VecDeque<(Digit, Duration)>,
    sending: Option<Sending>,
    /// The earliest start of the next press (after the gap).
    next_free: Option<Instant>,
}

impl Rfc4733Sender {
    #[must_use]
    pub fn new(config: SenderConfig) -> Rfc4733Sender {
        Rfc4733Sender {
            config,
            queue: VecDeque::new(),
            sending: None,
            next_free: None,
        }
    }

    /// Queues a press of `length` (at least 40 ms, ITU-T Q.24's shortest digit); it
    /// starts at `now` if nothing is before it.
    pub fn send_digit(&mut self, digit: Digit, length: Duration, now: Instant) {
        if self.sending.is_none() && self.queue.is_empty() {
            self.next_free = Some(self.next_free.map_or(now, |t| t.max(now)));
        }
        self.queue
            .push_back((digit, length.max(Duration::from_millis(40))));
    }

    /// Drops the presses not started yet. A press already on the wire goes on to its
    /// end packets: a receiver that never sees the E bit holds the digit until its own
    /// timeout (receiver procedures, §2.5.2), so cutting it short would lengthen it.
    pub fn cancel_queued(&mut self) {
        self.queue.clear();
    }

    /// Nothing queued or being sent.
    #[must_use]
    pub fn is_idle(&self) -> bool {
        self.sending.is_none() && self.queue.is_empty()
    }

    /// True while a press is on the wire: the engine holds the leg's audio meanwhile
    /// (RFC 4733 §2.5.1.2 lets the event replace it).
    #[must_use]
    pub fn is_sending(&self) -> bool {
        self.sending.is_some()
    }

    fn interval(&self) -> Duration {
        self.config.update_interval.max(Duration::from_millis(5))
    }

    /// When packet `n` of `s` is due.
    fn due(&self, s: &Sending, n: u32) -> Instant {
        if n < s.updates {
            s.start + self.interval() * n
        } else {
            s.start + s.length + self.config.end_spacing * (n - s.updates)
        }
    }

    /// When the next packet is due.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        match &self.sending {
            Some(s) => Some(self.due(s, s.sent)),
            None if !self.queue.is_empty() => self.next_free,
            None => None,
        }
    }

    /// The next packet due at `now`, if any; call until `None`. `stream_ts` is the
    /// timestamp the leg's audio stream would carry at `now`: a new press takes it
    /// (§2.5.1.2: events share the audio stream's timestamp base).
    pub fn poll_transmit(&mut self, now: Instant, stream_ts: RtpTimestamp) -> Option<EventPacket> {
        if self.sending.is_none() {
            if self.next_free.is_some_and(|t| now < t) {
                return None;
            }
            let (digit, length) = self.queue.pop_front()?;
            let total = u64::from(self.config.clock.ticks(length)).max(1);
            // Updates at 0, I, 2I, … strictly before the end.
            let n = length
                .as_nanos()
                .div_ceil(self.interval().as_nanos().max(1));
            self.sending = Some(Sending {
                digit,
                start: now,
                start_ts: stream_ts,
                total,
                length,
                sent: 0,
                updates: u32::try_from(n).unwrap_or(u32::MAX).max(1),
            });
        }
        let s = self.sending?;
        let due = self.due(&s, s.sent);
        if now < due {
            return None;
        }
        let end = s.sent >= s.updates;
        let elapsed = if end {
            s.total
        } else {
            let upto = self.interval() * (s.sent + 1);
            u64::from(self.config.clock.ticks(upto)).min(s.total)
        };
        // §2.5.1.3: segment k starts k·0xFFFF units after the press and reports its own
        // duration; a report of exactly 0xFFFF closes a segment.
        let seg = (elapsed - 1) / u64::from(MAX_SEGMENT);
        let in_seg = elapsed - seg * u64::from(MAX_SEGMENT);
        let seg_ts = s
            .start_ts
            .wrapping_add(u32::try_from(seg * u64::from(MAX_SEGMENT)).unwrap_or(0));
        let packet = EventPacket {
            marker: s.sent == 0,
            timestamp: seg_ts,
            payload: encode(
                s.digit.event_code(),
                end,
                self.config.volume,
                u16::try_from(in_seg).unwrap_or(u16::MAX),
            ),
        };
        let sent = s.sent + 1;
        if sent >= s.updates + u32::from(self.config.end_repeats.max(1)) {
            self.sending = None;
            let last = self.due(&s, sent - 1);
            self.next_free =
                Some((s.start + s.length + self.config.gap).max(last + self.config.end_spacing));
        } else if let Some(cur) = self.sending.as_mut() {
            cur.sent = sent;
        }
        Some(packet)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
