//! An adaptive, bounded jitter buffer for one leg's RTP stream, sans-IO: the driver
//! [`push`](JitterBuffer::push)es packets as they arrive and calls
//! [`pop`](JitterBuffer::pop) once per 20 ms playout tick, passing `now` to both.
//!
//! What it guarantees:
//! - **One frame per tick.** Every `pop` after the stream starts returns exactly one
//!   20 ms [`Playout`]: the packet due ([`Playout::Audio`]), a frame to conceal because a
//!   packet is missing or did not come in time ([`Playout::Lost`]), or a frame the sender
//!   did not send on purpose ([`Playout::Silence`]: discontinuous transmission, a gap in
//!   timestamps with no gap in sequence numbers, RFC 3551 §4.1). A recorder writing one
//!   frame per tick therefore keeps the leg on the wall clock: loss, DTX and late
//!   packets become silence (or concealment) at their place, never a shift.
//! - **Order.** Packets play in sequence order whatever order they came in;
//!   duplicates play once; a packet whose playout time has passed is counted and
//!   dropped ([`JitterStats::late`]). Sequence numbers and timestamps are extended
//!   past their wrap (RFC 3550 §A.1).
//! - **Resync.** A new SSRC, a sequence jump confirmed by the next packet (RFC 3550
//!   §A.1's probation), a timestamp that runs ahead of the arrival clock by more than a
//!   second, or 200 ms of packets that are all late (timestamps that went back, a long
//!   network stall) restart the stream's mapping onto the playout timeline after what
//!   is already buffered: nothing buffered is lost, the new stream plays after the
//!   target delay.
//! - **Adaptive delay.** The target delay follows the interarrival jitter of RFC 3550
//!   §A.8 (four times it, plus a frame), between [`JitterConfig::min_delay`] and
//!   [`JitterConfig::max_delay`]. Once a second the buffer compares the least margin
//!   with which packets came before their playout time with the target: a frame
//!   short, it inserts a
//!   concealment frame ([`JitterStats::inserted`]); more than a frame over, it drops the
//!   frame due ([`JitterStats::discarded`]). So a leg's alignment moves by at most
//!   one frame a second, and never by more than the delay range.
//! - **Bounded.** A fixed number of slots, each with a payload buffer, all allocated by
//!   [`JitterBuffer::new`]; `push` and `pop` allocate nothing. A packet that does not
//!   fit is counted ([`JitterStats::overflow`], [`JitterStats::too_long`]) and dropped.

use crate::rewrite::ClockRate;
use crate::rtp::{RtpPacket, RtpTimestamp, SeqNo, Ssrc};
use std::time::{Duration, Instant};

/// RFC 3550 §A.1: a jump forward larger than this, or back by more than
/// [`MAX_MISORDER`], is not reordering; it needs the next packet to confirm it.
const MAX_DROPOUT: i64 = 3000;
const MAX_MISORDER: i64 = 100;

/// How many ticks an empty buffer is taken for loss (worth concealing) before it is
/// taken for a sender that stopped sending (silence): 60 ms, past which concealment
/// would only be invented sound.
const LOSS_GUESS_FRAMES: i64 = 3;

/// Pops between two adaptation decisions (one second of 20 ms ticks).
const ADAPT_WINDOW: u32 = 50;

/// Consecutive late packets (200 ms of them) after which the stream is resynced.
const LATE_RESYNC: u32 = 10;

/// How the buffer is sized and how far its delay may move.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JitterConfig {
    /// The stream's RTP clock.
    pub clock: ClockRate,
    /// Timestamp ticks in one 20 ms frame (`Codec::ticks_per_frame`).
    pub frame_ticks: u32,
    /// Packets held at most.
    pub capacity: usize,
    /// Largest payload kept (octets).
    pub max_payload: usize,
    /// The target delay never goes below this…
    pub min_delay: Duration,
    /// …nor above this.
    pub max_delay: Duration,
}

impl JitterConfig {
    /// 40 ms to 200 ms of delay, 32 packets (640 ms of 20 ms frames), payloads up to
    /// 1275 octets (an Opus frame's limit).
    #[must_use]
    pub fn new(clock: ClockRate, frame_ticks: u32) -> JitterConfig {
        JitterConfig {
            clock,
            frame_ticks,
            capacity: 32,
            max_payload: 1275,
            min_delay: Duration::from_millis(40),
            max_delay: Duration::from_millis(200),
        }
    }
}

/// One packet as it arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Incoming<'a> {
    pub ssrc: Ssrc,
    pub seq: SeqNo,
    pub timestamp: RtpTimestamp,
    pub marker: bool,
    pub payload: &'a [u8],
}

impl<'a> Incoming<'a> {
    /// The fields of a checked RTP packet.
    pub fn from_rtp(p: &'a RtpPacket<&'a [u8]>) -> Incoming<'a> {
        Incoming {
            ssrc: p.ssrc(),
            seq: p.seq(),
            timestamp: p.timestamp(),
            marker: p.marker(),
            payload: p.payload(),
        }
    }
}

/// What became of a pushed packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// Stored, to be played in its turn.
    Buffered,
    /// Stored, as the first packet of a new mapping (new SSRC or a jump).
    Resynced,
    /// Already buffered or played.
    Duplicate,
    /// Its playout time has passed.
    Late,
    /// Too far ahead of the playout point for the slots we have.
    Overflow,
    /// Payload larger than [`JitterConfig::max_payload`].
    TooLong,
    /// A sequence jump waiting for the next packet to confirm it (RFC 3550 §A.1).
    Probation,
}

/// One playout tick's frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Playout<'a> {
    /// No packet yet, or still filling up to the target delay: the stream has not
    /// started and there is nothing to place.
    Idle,
    /// The packet due now.
    Audio {
        seq: SeqNo,
        timestamp: RtpTimestamp,
        marker: bool,
        payload: &'a [u8],
    },
    /// A packet for this frame is missing or was late: conceal it
    /// (`Decoder::conceal`). `timestamp` is where it would have been.
    Lost { timestamp: RtpTimestamp },
    /// The sender sent nothing for this frame (DTX, or the stream stopped): silence.
    Silence { timestamp: RtpTimestamp },
}

/// Counters, for the leg's statistics and for tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JitterStats {
    pub received: u64,
    pub played: u64,
    pub lost_frames: u64,
    pub silence_frames: u64,
    pub late: u64,
    pub duplicate: u64,
    pub overflow: u64,
    pub too_long: u64,
    pub resyncs: u64,
    /// Concealment frames added to grow the delay.
    pub inserted: u64,
    /// Frames dropped to shrink the delay.
    pub discarded: u64,
}

#[derive(Debug)]
struct Slot {
    /// Timeline sequence number held, `None` if free.
    seq: Option<i64>,
    /// Timeline timestamp.
    ts: i64,
    rtp_seq: SeqNo,
    rtp_ts: RtpTimestamp,
    marker: bool,
    len: usize,
    payload: Box<[u8]>,
}

/// One source's numbering and where it sits on the playout timeline.
#[derive(Debug, Clone, Copy)]
struct Source {
    ssrc: Ssrc,
    /// Highest extended sequence number and timestamp seen (RFC 3550 §A.1).
    max_seq: i64,
    max_ts: i64,
    /// The next sequence number that would confirm a jump.
    bad_seq: Option<u16>,
    /// Timeline value = extended value + offset.
    seq_offset: i64,
    ts_offset: i64,
    /// RFC 3550 §A.8: the previous packet's relative transit time, in ticks.
    last_transit: Option<f64>,
}

/// The jitter buffer of one stream. See the module documentation.
#[derive(Debug)]
pub struct JitterBuffer {
    cfg: JitterConfig,
    slots: Box<[Slot]>,
    /// Buffered packets.
    count: usize,
    source: Option<Source>,
    /// Arrival clock origin for transit times.
    epoch: Option<Instant>,
    /// When the first packet came (playout starts a target delay later).
    first_arrival: Option<Instant>,
    started: bool,
    /// Lowest timeline sequence number that may still play.
    floor: i64,
    /// Timeline timestamp of the next frame to play.
    next_ts: i64,
    /// Last played packet (timeline seq, ts).
    last_played: Option<(i64, i64)>,
    /// Bit i set: timeline sequence `floor - 1 - i` was played (for duplicates).
    played_mask: u64,
    /// Highest timeline seq and ts accepted.
    high: Option<(i64, i64)>,
    /// RFC 3550 §A.8 interarrival jitter, in ticks.
    jitter: f64,
    /// Adaptation: pops in this window, least margin seen, and what to do next.
    window_pops: u32,
    low_water: i64,
    grow: bool,
    shrink: bool,
    /// Consecutive late packets.
    late_run: u32,
    stats: JitterStats,
}

impl JitterBuffer {
    /// A buffer with every slot allocated.
    #[must_use]
    pub fn new(cfg: JitterConfig) -> JitterBuffer {
        let cfg = JitterConfig {
            capacity: cfg.capacity.max(2),
            frame_ticks: cfg.frame_ticks.max(1),
            max_delay: cfg.max_delay.max(cfg.min_delay),
            ..cfg
        };
        let slots = (0..cfg.capacity)
            .map(|_| Slot {
                seq: None,
                ts: 0,
                rtp_seq: SeqNo(0),
                rtp_ts: RtpTimestamp(0),
                marker: false,
                len: 0,
                payload: vec![0u8; cfg.max_payload].into_boxed_slice(),
            })
            .collect();
        JitterBuffer {
            cfg,
            slots,
            count: 0,
            source: None,
            epoch: None,
            first_arrival: None,
            started: false,
            floor: 0,
            next_ts: 0,
            last_played: None,
            played_mask: 0,
            high: None,
            jitter: 0.0,
            window_pops: 0,
            low_water: i64::MAX,
            grow: false,
            shrink: false,
            late_run: 0,
            stats: JitterStats::default(),
        }
    }

    #[must_use]
    pub fn stats(&self) -> JitterStats {
        self.stats
    }

    /// Packets held now.
    #[must_use]
    pub fn len(&self) -> usize {
        self.count
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The RFC 3550 §A.8 interarrival jitter.
    #[must_use]
    pub fn jitter(&self) -> Duration {
        self.ticks_to_duration(self.jitter)
    }

    /// The delay the buffer aims for now.
    #[must_use]
    pub fn target_delay(&self) -> Duration {
        self.ticks_to_duration(self.target_ticks() as f64)
    }

    fn frame(&self) -> i64 {
        i64::from(self.cfg.frame_ticks)
    }

    fn ticks_to_duration(&self, ticks: f64) -> Duration {
        Duration::from_secs_f64(ticks.max(0.0) / f64::from(self.cfg.clock.0.max(1)))
    }

    fn duration_ticks(&self, d: Duration) -> i64 {
        i64::from(self.cfg.clock.ticks(d))
    }

    /// Four times the jitter plus a frame, rounded up to whole frames, within bounds.
    fn target_ticks(&self) -> i64 {
        let f = self.frame();
        #[allow(clippy::cast_possible_truncation)]
        let want = (4.0 * self.jitter) as i64 + f;
        let want = (want + f - 1) / f * f;
        want.clamp(
            self.duration_ticks(self.cfg.min_delay),
            self.duration_ticks(self.cfg.max_delay),
        )
    }

    fn slot_index(&self, seq: i64) -> usize {
        // capacity >= 2 and seq's remainder is below it.
        usize::try_from(seq.rem_euclid(self.slots.len() as i64)).unwrap_or(0)
    }

    /// Stores a packet that arrived at `now`.
    pub fn push(&mut self, p: Incoming<'_>, now: Instant) -> Pushed {
        self.stats.received += 1;
        if p.payload.len() > self.cfg.max_payload {
            self.stats.too_long += 1;
            return Pushed::TooLong;
        }
        let epoch = *self.epoch.get_or_insert(now);
        let arrival =
            now.saturating_duration_since(epoch).as_secs_f64() * f64::from(self.cfg.clock.0);

        let resyncs = self.stats.resyncs;
        let (seq, ts) = match self.source {
            Some(src) if src.ssrc == p.ssrc => match self.extend(src, p, arrival) {
                Some(v) => v,
                None => return Pushed::Probation,
            },
            Some(_) => {
                self.stats.resyncs += 1;
                self.remap(p)
            }
            None => self.remap(p),
        };
        let mut resynced = self.stats.resyncs != resyncs;

        // Jitter (RFC 3550 §A.8) on the stream's own timestamps.
        if let Some(src) = self.source.as_mut() {
            let transit = arrival - (ts - src.ts_offset) as f64;
            if let Some(last) = src.last_transit {
                let d = (transit - last).abs();
                // A second's jump is a timeline change (resynced or dropped as late),
                // not jitter; letting it in would pin the target at the maximum.
                if d <= f64::from(self.cfg.clock.0) {
                    self.jitter += (d - self.jitter) / 16.0;
                }
            }
            src.last_transit = Some(transit);
        }

        // Already played, or its time has passed.
        let (seq, ts) = match self.lateness(seq, ts) {
            None => {
                self.late_run = 0;
                (seq, ts)
            }
            Some(Pushed::Duplicate) => {
                self.stats.duplicate += 1;
                return Pushed::Duplicate;
            }
            Some(_) if self.late_run + 1 < LATE_RESYNC => {
                self.late_run += 1;
                self.stats.late += 1;
                self.note_margin(ts);
                return Pushed::Late;
            }
            Some(_) => {
                // Every packet late for a while: the sender's timestamps went back, or
                // the network stalled for longer than we buffer. Start over after
                // what is buffered rather than drop the stream for good.
                self.late_run = 0;
                self.stats.resyncs += 1;
                resynced = true;
                self.remap(p)
            }
        };
        // Room: sequence numbers within the slots from the lowest that may play.
        let lowest = if self.started {
            self.floor
        } else {
            self.lowest_buffered().map_or(seq, |(s, _)| s.min(seq))
        };
        if seq >= lowest + self.slots.len() as i64 {
            self.stats.overflow += 1;
            return Pushed::Overflow;
        }
        if !self.started && seq < lowest {
            // Before start, an earlier packet lowers the start; it must still fit.
            let highest = self.high.map_or(seq, |(s, _)| s);
            if highest >= seq + self.slots.len() as i64 {
                self.stats.overflow += 1;
                return Pushed::Overflow;
            }
        }
        if !resynced {
            self.note_margin(ts);
        }
        let idx = self.slot_index(seq);
        let slot = &mut self.slots[idx];
        if slot.seq == Some(seq) {
            self.stats.duplicate += 1;
            return Pushed::Duplicate;
        }
        if slot.seq.is_some() {
            // Unreachable while seq is within capacity of the floor; count it anyway.
            self.stats.overflow += 1;
            return Pushed::Overflow;
        }
        slot.seq = Some(seq);
        slot.ts = ts;
        slot.rtp_seq = p.seq;
        slot.rtp_ts = p.timestamp;
        slot.marker = p.marker;
        slot.len = p.payload.len();
        slot.payload[..p.payload.len()].copy_from_slice(p.payload);
        self.count += 1;
        self.high = Some(match self.high {
            Some((s, t)) => (s.max(seq), t.max(ts)),
            None => (seq, ts),
        });
        if self.first_arrival.is_none() {
            self.first_arrival = Some(now);
        }
        if resynced {
            Pushed::Resynced
        } else {
            Pushed::Buffered
        }
    }

    /// Records how long before its playout a packet came (its margin): the least
    /// margin of a window drives the adaptation. Jumps beyond the delay range are not
    /// jitter and are left out.
    fn note_margin(&mut self, ts: i64) {
        if !self.started {
            return;
        }
        let margin = ts - self.next_ts;
        if margin.abs() <= self.duration_ticks(self.cfg.max_delay) {
            self.low_water = self.low_water.min(margin);
        }
    }

    /// Whether a packet at timeline (`seq`, `ts`) comes too late: `Duplicate` if it was
    /// played, `Late` if its time has passed, `None` if it may still play.
    fn lateness(&self, seq: i64, ts: i64) -> Option<Pushed> {
        if !self.started {
            return None;
        }
        if seq < self.floor {
            let back = self.floor - 1 - seq;
            if back < 64 && self.played_mask & (1 << back) != 0 {
                return Some(Pushed::Duplicate);
            }
            return Some(Pushed::Late);
        }
        (ts < self.next_ts - self.frame() / 2).then_some(Pushed::Late)
    }

    /// Extends a packet's numbers within its source (RFC 3550 §A.1) and maps them onto
    /// the timeline; `None` while a jump is on probation. A confirmed jump, or a
    /// timestamp jump that the arrival time does not explain, resyncs.
    fn extend(&mut self, src: Source, p: Incoming<'_>, arrival: f64) -> Option<(i64, i64)> {
        let dseq = i64::from(p.seq.0.wrapping_sub(low16(src.max_seq)) as i16);
        if !(-MAX_MISORDER..=MAX_DROPOUT).contains(&dseq) {
            if src.bad_seq == Some(p.seq.0) {
                self.stats.resyncs += 1;
                return Some(self.remap(p));
            }
            if let Some(s) = self.source.as_mut() {
                s.bad_seq = Some(p.seq.0.wrapping_add(1));
            }
            return None;
        }
        let dts = i64::from(p.timestamp.0.wrapping_sub(low32(src.max_ts)) as i32);
        let seq = src.max_seq + dseq;
        let ts = src.max_ts + dts;
        // A timestamp that ran a second ahead of the arrival clock is a new timeline
        // (a sender restart behind the same SSRC), not jitter or DTX, whose timestamps
        // move with the clock. (Timestamps that went back show as late packets.)
        if let Some(last) = src.last_transit {
            let transit = arrival - ts as f64;
            if last - transit > f64::from(self.cfg.clock.0) {
                self.stats.resyncs += 1;
                return Some(self.remap(p));
            }
        }
        if let Some(s) = self.source.as_mut() {
            s.bad_seq = None;
            s.max_seq = s.max_seq.max(seq);
            s.max_ts = s.max_ts.max(ts);
        }
        Some((seq + src.seq_offset, ts + src.ts_offset))
    }

    /// Places `p`'s source on the timeline: sequence numbers go on from the highest
    /// accepted, the first frame plays a target delay after the playout point (and
    /// after everything buffered).
    fn remap(&mut self, p: Incoming<'_>) -> (i64, i64) {
        let seq = i64::from(p.seq.0);
        let ts = i64::from(p.timestamp.0);
        let f = self.frame();
        let (tseq, tts) = match self.high {
            None => (seq, ts),
            Some((hs, ht)) => {
                let after_buffer = ht + f;
                let after_delay = if self.started {
                    self.next_ts + self.target_ticks()
                } else {
                    after_buffer
                };
                (hs + 1, after_buffer.max(after_delay))
            }
        };
        self.source = Some(Source {
            ssrc: p.ssrc,
            max_seq: seq,
            max_ts: ts,
            bad_seq: None,
            seq_offset: tseq - seq,
            ts_offset: tts - ts,
            last_transit: None,
        });
        (tseq, tts)
    }

    fn lowest_buffered(&self) -> Option<(i64, i64)> {
        self.slots
            .iter()
            .filter_map(|s| s.seq.map(|q| (q, s.ts)))
            .min_by_key(|(q, _)| *q)
    }

    /// The lowest buffered slot at or above the floor.
    fn head(&self) -> Option<usize> {
        if self.count == 0 {
            return None;
        }
        (0..self.slots.len() as i64)
            .map(|i| self.slot_index(self.floor + i))
            .find(|&idx| self.slots[idx].seq.is_some())
    }

    /// Takes the slot at `idx` out as played.
    fn consume(&mut self, idx: usize) -> (i64, i64) {
        let seq = self.slots[idx].seq.unwrap_or(self.floor);
        let ts = self.slots[idx].ts;
        self.slots[idx].seq = None;
        self.count -= 1;
        let shift = seq + 1 - self.floor;
        self.played_mask = if shift >= 64 {
            0
        } else {
            self.played_mask << shift
        } | 1;
        self.floor = seq + 1;
        self.last_played = Some((seq, ts));
        // Re-anchor on the packet (absorbs senders whose steps are not exact frames),
        // never backwards.
        let f = self.frame();
        self.next_ts = if ts + f > self.next_ts {
            ts + f
        } else {
            self.next_ts + f
        };
        (seq, ts)
    }

    /// The RTP timestamp that the timeline position `ts` stands for in the current
    /// source.
    fn rtp_ts(&self, ts: i64) -> RtpTimestamp {
        let off = self.source.map_or(0, |s| s.ts_offset);
        RtpTimestamp(low32(ts - off))
    }

    /// The frame for this playout tick. Call once per 20 ms.
    pub fn pop(&mut self, now: Instant) -> Playout<'_> {
        if !self.started {
            let Some(first) = self.first_arrival else {
                return Playout::Idle;
            };
            if now < first + self.target_delay() {
                return Playout::Idle;
            }
            let Some((seq, ts)) = self.lowest_buffered() else {
                return Playout::Idle;
            };
            self.started = true;
            self.floor = seq;
            self.next_ts = ts;
        }
        let f = self.frame();

        // Adaptation, decided once a window from the least margin packets came with.
        self.window_pops += 1;
        if self.window_pops >= ADAPT_WINDOW {
            let target = self.target_ticks();
            if self.low_water != i64::MAX {
                if self.low_water + f <= target {
                    self.grow = true;
                } else if self.low_water > target + f {
                    self.shrink = true;
                }
            }
            self.window_pops = 0;
            self.low_water = i64::MAX;
        }
        if self.grow {
            self.grow = false;
            self.shrink = false;
            self.stats.inserted += 1;
            self.stats.lost_frames += 1;
            // Conceal in place; the playout point does not move.
            return Playout::Lost {
                timestamp: self.rtp_ts(self.next_ts),
            };
        }
        self.grow = false;
        if self.shrink {
            self.shrink = false;
            self.stats.discarded += 1;
            match self.head() {
                Some(idx) if self.slots[idx].ts <= self.next_ts + f / 2 => {
                    self.consume(idx);
                }
                _ => self.next_ts += f,
            }
        }

        match self.head() {
            Some(idx) if self.slots[idx].ts <= self.next_ts + f / 2 => {
                self.consume(idx);
                self.stats.played += 1;
                let s = &self.slots[idx];
                Playout::Audio {
                    seq: s.rtp_seq,
                    timestamp: s.rtp_ts,
                    marker: s.marker,
                    payload: &s.payload[..s.len],
                }
            }
            Some(idx) => {
                // Packets known missing before the head are taken to be the frames
                // right after the last one played; past them is DTX.
                let missing = self.slots[idx].seq.unwrap_or(self.floor) - self.floor;
                let lost = match self.last_played {
                    Some((_, lts)) => (self.next_ts - lts) / f <= missing,
                    None => false,
                };
                self.frame_gap(lost)
            }
            None => {
                let lost = self
                    .last_played
                    .is_some_and(|(_, lts)| (self.next_ts - lts) / f <= LOSS_GUESS_FRAMES);
                self.frame_gap(lost)
            }
        }
    }

    fn frame_gap(&mut self, lost: bool) -> Playout<'static> {
        let timestamp = self.rtp_ts(self.next_ts);
        self.next_ts += self.frame();
        if lost {
            self.stats.lost_frames += 1;
            Playout::Lost { timestamp }
        } else {
            self.stats.silence_frames += 1;
            Playout::Silence { timestamp }
        }
    }
}

fn low16(x: i64) -> u16 {
    (x & 0xffff) as u16
}

fn low32(x: i64) -> u32 {
    (x & 0xffff_ffff) as u32
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const FRAME: Duration = Duration::from_millis(20);

    /// xorshift32: seeded, so every failure reproduces.
    struct Rng(u32);
    impl Rng {
        fn next(&mut self) -> u32 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 17;
            self.0 ^= self.0 << 5;
            self.0
        }
        /// Uniform in [0, 1).
        fn unit(&mut self) -> f64 {
            f64::from(self.next()) / 4_294_967_296.0
        }
    }

    /// One packet a sender emits: its index in the sender's media (frame number),
    /// carried in the payload so the test can tell which frame played.
    #[derive(Clone)]
    struct Sent {
        ssrc: u32,
        seq: u16,
        ts: u32,
        marker: bool,
        /// Frame number on the sender's wall clock (one per 20 ms).
        frame: u64,
    }

    fn payload(frame: u64) -> [u8; 8] {
        frame.to_be_bytes()
    }

    /// A sender of 20 ms G.711 frames from `seq0`/`ts0`, one per frame number.
    fn stream(ssrc: u32, seq0: u16, ts0: u32, frames: std::ops::Range<u64>) -> Vec<Sent> {
        frames
            .enumerate()
            .map(|(i, frame)| Sent {
                ssrc,
                seq: seq0.wrapping_add(i as u16),
                ts: ts0.wrapping_add(160 * i as u32),
                marker: i == 0,
                frame,
            })
            .collect()
    }

    /// What the playout gave at one tick.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Out {
        Idle,
        Audio(u64),
        Lost,
        Silence,
    }

    /// Runs packets through a network (per-packet delay from `delay`, `None`: lost;
    /// a second copy when `dup` says so) into a buffer popped every 20 ms, on a
    /// virtual clock. Returns the tick outputs and the buffer.
    fn run(
        sent: &[Sent],
        ticks: u64,
        cfg: JitterConfig,
        mut delay: impl FnMut(&Sent) -> Option<Duration>,
        mut dup: impl FnMut(&Sent) -> Option<Duration>,
    ) -> (Vec<Out>, JitterBuffer) {
        let t0 = Instant::now();
        let mut arrivals: Vec<(Instant, usize)> = Vec::new();
        for (i, s) in sent.iter().enumerate() {
            let at = t0 + FRAME * u32::try_from(s.frame).unwrap();
            if let Some(d) = delay(s) {
                arrivals.push((at + d, i));
            }
            if let Some(d) = dup(s) {
                arrivals.push((at + d, i));
            }
        }
        arrivals.sort_by_key(|(t, i)| (*t, *i));
        let mut jb = JitterBuffer::new(cfg);
        let mut out = Vec::new();
        let mut next = arrivals.iter().peekable();
        for k in 0..ticks {
            // Ticks at 5 ms past each frame boundary.
            let tick = t0 + FRAME * u32::try_from(k).unwrap() + Duration::from_millis(5);
            while let Some((at, i)) = next.next_if(|(at, _)| *at <= tick) {
                let s = &sent[*i];
                let pl = payload(s.frame);
                jb.push(
                    Incoming {
                        ssrc: Ssrc(s.ssrc),
                        seq: SeqNo(s.seq),
                        timestamp: RtpTimestamp(s.ts),
                        marker: s.marker,
                        payload: &pl,
                    },
                    *at,
                );
            }
            out.push(match jb.pop(tick) {
                Playout::Idle => Out::Idle,
                Playout::Audio { payload, .. } => {
                    Out::Audio(u64::from_be_bytes(payload.try_into().unwrap()))
                }
                Playout::Lost { .. } => Out::Lost,
                Playout::Silence { .. } => Out::Silence,
            });
        }
        (out, jb)
    }

    fn cfg() -> JitterConfig {
        JitterConfig::new(ClockRate::G711, 160)
    }

    fn audio(out: &[Out]) -> Vec<u64> {
        out.iter()
            .filter_map(|o| match o {
                Out::Audio(f) => Some(*f),
                _ => None,
            })
            .collect()
    }

    /// After the first frame played, where each output tick puts a frame of the sender's
    /// media: tick index minus frame number must stay constant (up to adaptation).
    fn offsets(out: &[Out]) -> Vec<i64> {
        out.iter()
            .enumerate()
            .filter_map(|(k, o)| match o {
                Out::Audio(f) => Some(k as i64 - *f as i64),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_clean_stream_plays_every_frame_in_order_across_both_wraps() {
        // Sequence numbers and timestamps both wrap within the run.
        let sent = stream(1, 65_500, u32::MAX - 160 * 20, 0..400);
        let (out, jb) = run(
            &sent,
            303,
            cfg(),
            |_| Some(Duration::from_millis(10)),
            |_| None,
        );
        // Idle only before the start (two frames of target delay), then every frame.
        assert_eq!(&out[..3], &[Out::Idle; 3]);
        assert_eq!(audio(&out), (0..300).collect::<Vec<_>>());
        assert_eq!(jb.target_delay(), Duration::from_millis(40));
        let st = jb.stats();
        assert_eq!(
            (st.played, st.late, st.duplicate, st.resyncs),
            (300, 0, 0, 0)
        );
        assert_eq!((st.inserted, st.discarded), (0, 0));
        // A constant offset: the leg is on the wall clock.
        let off = offsets(&out);
        assert!(off.iter().all(|o| *o == off[0]));
    }

    /// Seeded loss (5 %), duplication (3 %) and jitter up to 60 ms (which reorders):
    /// every frame that arrives in time plays once, in order; every missing one is a
    /// concealed or silent tick at its place, so the leg stays on the wall clock.
    #[test]
    fn loss_reordering_and_duplicates_keep_the_frames_in_place() {
        for seed in [1u32, 7, 42, 1234, 99_991] {
            let mut rng = Rng(seed);
            let mut rng2 = Rng(seed.wrapping_mul(31).wrapping_add(5));
            let sent = stream(5, 1000, 50_000, 0..1500);
            let (out, jb) = run(
                &sent,
                1530,
                cfg(),
                |_| {
                    (rng.unit() >= 0.05)
                        .then(|| Duration::from_micros(5_000 + (rng.unit() * 60_000.0) as u64))
                },
                |_| (rng2.unit() < 0.03).then(|| Duration::from_millis(30)),
            );
            let played = audio(&out);
            assert!(played.windows(2).all(|w| w[0] < w[1]), "seed {seed}: order");
            let st = jb.stats();
            // Every packet accounted for (a shrink may drop a due frame).
            let kept = st.played + st.late + st.duplicate + st.overflow;
            let kept = kept + u64::try_from(jb.len()).unwrap();
            assert!(kept <= st.received, "seed {seed}: {st:?}");
            assert!(kept + st.discarded >= st.received, "seed {seed}: {st:?}");
            assert!(st.duplicate > 0, "seed {seed}: duplicates were sent");
            // Between two played frames, exactly the missing frames' ticks, give or take
            // what the adaptation inserted or dropped.
            let off = offsets(&out);
            let drift = off.last().unwrap() - off[0];
            assert_eq!(
                drift,
                i64::try_from(st.inserted).unwrap() - i64::try_from(st.discarded).unwrap(),
                "seed {seed}: {st:?}"
            );
            // The jitter (uniform over 60 ms) raised the target above the minimum, within
            // the bounds, and the alignment moved by no more than the delay range.
            assert!(jb.target_delay() > Duration::from_millis(40), "seed {seed}");
            assert!(jb.target_delay() <= Duration::from_millis(200));
            assert!(drift.abs() <= 8, "seed {seed}: drift {drift}");
            // Most of what was sent played (5 % lost, a few late at the start).
            assert!(played.len() > 1300, "seed {seed}: {} played", played.len());
            let first = out.iter().position(|o| *o != Out::Idle).unwrap();
            assert!(out[first..].iter().all(|o| *o != Out::Idle));
        }
    }

    /// Discontinuous transmission: 2 s with no packets, timestamps moving on, sequence
    /// numbers not. The gap is silence of exactly its length, at its place.
    #[test]
    fn a_dtx_gap_is_silence_of_its_length() {
        let mut sent = stream(9, 40_000, 7, 0..50);
        // The sender stays silent for frames 50..150, then goes on with the next
        // sequence number and the timestamp of frame 150 (marker: a new talkspurt).
        let mut after = stream(9, 40_050, 7 + 160 * 150, 150..250);
        after[0].marker = true;
        sent.extend(after);
        let (out, jb) = run(
            &sent,
            270,
            cfg(),
            |_| Some(Duration::from_millis(10)),
            |_| None,
        );
        let off = offsets(&out);
        assert!(off.iter().all(|o| *o == off[0]), "no shift across the gap");
        assert_eq!(audio(&out).len(), 150);
        let before = out.iter().position(|o| *o == Out::Audio(49)).unwrap();
        let after = out.iter().position(|o| *o == Out::Audio(150)).unwrap();
        assert_eq!(after - before, 101);
        // At most the first 60 ms of an unannounced gap are taken for loss.
        let lost = out[before..after]
            .iter()
            .filter(|o| **o == Out::Lost)
            .count();
        assert!(lost <= 3, "{lost}");
        let st = jb.stats();
        assert_eq!(st.resyncs, 0);
    }

    #[test]
    fn a_late_packet_is_counted_dropped_and_concealed_in_place() {
        let sent = stream(3, 0, 0, 0..100);
        let (out, jb) = run(
            &sent,
            110,
            cfg(),
            |s| Some(Duration::from_millis(if s.frame == 40 { 300 } else { 10 })),
            |_| None,
        );
        let st = jb.stats();
        assert_eq!(st.late, 1);
        assert!(!audio(&out).contains(&40));
        let at = out.iter().position(|o| *o == Out::Audio(39)).unwrap();
        assert_eq!(out[at + 1], Out::Lost);
        assert_eq!(out[at + 2], Out::Audio(41));
    }

    /// A new SSRC (a re-INVITE to another source) with unrelated numbering: what was
    /// buffered of the old source still plays, the new one follows, nothing is late.
    #[test]
    fn an_ssrc_change_resyncs_without_dropping_audio() {
        let mut sent = stream(1, 100, 1000, 0..100);
        sent.extend(stream(2, 60_000, 3_000_000_000, 100..200));
        let (out, jb) = run(
            &sent,
            220,
            cfg(),
            |_| Some(Duration::from_millis(10)),
            |_| None,
        );
        assert_eq!(audio(&out), (0..200).collect::<Vec<_>>());
        let st = jb.stats();
        assert_eq!((st.resyncs, st.late, st.overflow), (1, 0, 0));
        // The new source starts a target delay after the playout point: a short gap.
        let off = offsets(&out);
        assert!(off.last().unwrap() - off[0] <= 3, "{off:?}");
    }

    /// Same SSRC, timestamps jump forward by hours (a sender restarted its clock): not
    /// hours of silence, a resync.
    #[test]
    fn a_timestamp_jump_resyncs() {
        let mut sent = stream(1, 100, 1000, 0..100);
        sent.extend(stream(1, 200, 1_000_000_000, 100..200));
        let (out, jb) = run(
            &sent,
            220,
            cfg(),
            |_| Some(Duration::from_millis(10)),
            |_| None,
        );
        assert_eq!(audio(&out), (0..200).collect::<Vec<_>>());
        assert_eq!(jb.stats().resyncs, 1);
        // And backwards: every packet would be late; after 200 ms of that, a resync.
        let mut sent = stream(1, 100, 1_000_000, 0..100);
        sent.extend(stream(1, 200, 1000, 100..200));
        let (out, jb) = run(
            &sent,
            220,
            cfg(),
            |_| Some(Duration::from_millis(10)),
            |_| None,
        );
        let st = jb.stats();
        assert_eq!((st.resyncs, st.late), (1, 9));
        assert_eq!(audio(&out).len(), 191);
    }

    /// RFC 3550 §A.1: one stray packet far off in sequence is ignored; two in a row
    /// are a new numbering.
    #[test]
    fn a_sequence_jump_needs_confirmation() {
        let mut jb = JitterBuffer::new(cfg());
        let t = Instant::now();
        let pkt = |seq: u16, ts: u32| Incoming {
            ssrc: Ssrc(1),
            seq: SeqNo(seq),
            timestamp: RtpTimestamp(ts),
            marker: false,
            payload: &[0u8; 4],
        };
        assert_eq!(jb.push(pkt(10, 0), t), Pushed::Buffered);
        assert_eq!(jb.push(pkt(11, 160), t + FRAME), Pushed::Buffered);
        assert_eq!(jb.push(pkt(20_000, 320), t + FRAME * 2), Pushed::Probation);
        assert_eq!(jb.push(pkt(12, 320), t + FRAME * 2), Pushed::Buffered);
        assert_eq!(jb.push(pkt(30_000, 480), t + FRAME * 3), Pushed::Probation);
        assert_eq!(jb.push(pkt(30_001, 640), t + FRAME * 4), Pushed::Resynced);
        assert_eq!(jb.stats().resyncs, 1);
        assert_eq!(jb.len(), 4);
    }

    /// A burst larger than the slots: the rest is counted and dropped, memory stays.
    #[test]
    fn a_burst_beyond_capacity_overflows_and_is_counted() {
        let mut jb = JitterBuffer::new(cfg());
        let t = Instant::now();
        let mut outcomes = Vec::new();
        for i in 0..100u16 {
            outcomes.push(jb.push(
                Incoming {
                    ssrc: Ssrc(1),
                    seq: SeqNo(i),
                    timestamp: RtpTimestamp(160 * u32::from(i)),
                    marker: false,
                    payload: &[1u8; 160],
                },
                t,
            ));
        }
        assert_eq!(jb.len(), 32);
        assert_eq!(jb.stats().overflow, 68);
        assert!(outcomes[..32].iter().all(|o| *o == Pushed::Buffered));
        let big = [0u8; 2000];
        let p = Incoming {
            ssrc: Ssrc(1),
            seq: SeqNo(5),
            timestamp: RtpTimestamp(0),
            marker: false,
            payload: &big,
        };
        assert_eq!(jb.push(p, t), Pushed::TooLong);
        assert_eq!(
            jb.pop(t),
            Playout::Idle,
            "still filling to the target delay"
        );
        let mut started = false;
        for k in 1..20 {
            match jb.pop(t + FRAME * k) {
                Playout::Idle => continue,
                first => {
                    assert!(matches!(first, Playout::Audio { seq: SeqNo(0), .. }));
                    started = true;
                    break;
                }
            }
        }
        assert!(started);
    }

    /// Low jitter keeps the delay at its minimum; a sender whose packets all arrive
    /// 100 ms late at once grows it; when the network calms down it shrinks back.
    #[test]
    fn the_delay_follows_the_jitter() {
        let sent = stream(4, 0, 0, 0..1500);
        let mut rng = Rng(3);
        let (out, jb) = run(
            &sent,
            1520,
            cfg(),
            |s| {
                // 10 s of 0-100 ms jitter, then 20 s of a clean network.
                let j = if s.frame < 500 {
                    rng.unit() * 100.0
                } else {
                    0.0
                };
                Some(Duration::from_micros(5_000 + (j * 1000.0) as u64))
            },
            |_| None,
        );
        let st = jb.stats();
        assert!(st.inserted > 0, "{st:?}");
        assert!(st.discarded > 0, "{st:?}");
        assert_eq!(jb.target_delay(), Duration::from_millis(40));
        // Late packets were few once the delay had grown: under 5 % of the noisy part.
        assert!(st.late < 25, "{st:?}");
        let played = audio(&out);
        assert!(played.windows(2).all(|w| w[0] < w[1]));
    }
}
