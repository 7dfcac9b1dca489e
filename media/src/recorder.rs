//! The recording timeline of one call: two sides' decoded audio placed on one clock by
//! their RTP timestamps, handed out as the frames of a WAV file in order.
//!
//! Sans-IO: [`Recorder::handle_frame`] takes one decoded frame of a side with its arrival
//! `now`; [`Recorder::poll_output`] appends the samples whose place can no longer change
//! (older than the late window) to the caller's buffer; the driver writes them to disk.
//!
//! # The timeline
//!
//! Positions are output samples since the recording started (`start` + position / rate is
//! wall-clock time). A side's first frame *anchors* its RTP clock: the frame is taken to
//! end where its arrival time falls, and every later frame of that stream lands at
//! `anchor + (timestamp − anchor timestamp)` converted to output samples (RFC 3550 §5.1:
//! the timestamp is the sampling instant of the first sample, and advances by the
//! samples sent, whether or not they were sent). So:
//! - loss and discontinuous transmission (RFC 3551 §4.1, RFC 3389) leave the place of
//!   the missing frames silent, and nothing after them moves;
//! - a late or reordered frame still lands at its place if it arrives within
//!   [`RecorderConfig::late_window`]; after that the file is final there and the frame
//!   is dropped and counted;
//! - a new SSRC (RFC 3550 §8.2: a new source), a new clock rate, or a timestamp that does
//!   not fit arrival time by more than [`RecorderConfig::jump_threshold`] (a sender that
//!   restarted its clock, a re-INVITE to another media source) re-anchors from arrival
//!   time. A single frame out of place is taken for a straggler and dropped; a jump is
//!   believed when the next frame agrees with it;
//! - a sender whose clock runs fast or slow against ours drifts away from arrival time;
//!   the least delay seen over each couple of seconds is watched, and the anchor is moved
//!   when it strays beyond [`RecorderConfig::realign_threshold`] (one short gap or overlap
//!   instead of an ever-growing offset and, later, every frame dropped as late).
//!
//! Timestamps wrap at 2^32 (RFC 3550 §5.1); they are unwrapped against the highest seen.
//!
//! # Memory
//!
//! Each side is a ring of `late_window + jump_threshold + 500 ms` of output samples: a
//! frame can land at most `jump_threshold` ahead of arrival time (else it is a jump) and
//! the ring's tail is freed as output is polled. Call [`Recorder::poll_output`] at least
//! every 500 ms; samples that would land beyond the ring are dropped and counted.
//!
//! # Output rate
//!
//! Fixed per recording: 8 kHz when both sides are narrowband (G.711: nothing above
//! 4 kHz to keep), 16 kHz as soon as one side is wideband (G.722, Opus decoded at 16 kHz
//! or more), see [`SampleRate::for_recording`]. Speech above 8 kHz adds little to a
//! call recording and would double the file again. A side at another rate is converted
//! per frame (linear interpolation up, averaging down): good enough for 8↔16 kHz; the
//! engine may hand audio already resampled to the recording's rate for better quality.
//!
//! # Pause
//!
//! [`Recorder::pause`] / [`Recorder::resume`] (card payments): audio whose place falls in
//! a paused interval is never kept, whichever order the frames and the command arrive in.
//! By default ([`PauseBehavior::Silence`], Twilio's `pauseBehavior=silence`) the interval
//! stays in the file as silence, so the file's time matches the call's; with
//! [`PauseBehavior::Skip`] it is left out.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::mixer;
use crate::rewrite::ClockRate;
use crate::rtp::{RtpTimestamp, Ssrc};

/// Which party of the call a frame belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    /// The agent (our side of the call): the left channel of a dual recording.
    Internal,
    /// The lead (the carrier side): the right channel of a dual recording.
    External,
}

impl Side {
    fn index(self) -> usize {
        match self {
            Side::Internal => 0,
            Side::External => 1,
        }
    }
}

/// Decoded PCM sample rate in Hz. Not the RTP clock rate ([`ClockRate`]): G.722 is
/// 16 kHz audio on an 8 kHz RTP clock (RFC 3551 §4.5.2), Opus a 48 kHz clock whatever
/// rate it is decoded at (RFC 7587 §4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SampleRate(pub u32);

impl SampleRate {
    pub const NARROWBAND: SampleRate = SampleRate(8000);
    pub const WIDEBAND: SampleRate = SampleRate(16_000);

    /// The output rate of a recording of two sides: 16 kHz if either side carries more
    /// than narrowband audio, else 8 kHz (see the module docs).
    #[must_use]
    pub fn for_recording(internal: SampleRate, external: SampleRate) -> SampleRate {
        if internal.0 > 8000 || external.0 > 8000 {
            SampleRate::WIDEBAND
        } else {
            SampleRate::NARROWBAND
        }
    }

    /// Whole samples in `d` (floor).
    #[must_use]
    pub fn samples_in(self, d: Duration) -> i64 {
        let n = d.as_nanos() * u128::from(self.0) / 1_000_000_000;
        i64::try_from(n).unwrap_or(i64::MAX)
    }
}

/// `mono` (both parties mixed) or `dual` (stereo, left = internal, right = external),
/// as `recording_channels` in the API (SPEC §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Channels {
    Mono,
    Dual,
}

impl Channels {
    /// Channels in the file.
    #[must_use]
    pub fn count(self) -> u16 {
        match self {
            Channels::Mono => 1,
            Channels::Dual => 2,
        }
    }
}

/// What a paused interval becomes in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum PauseBehavior {
    /// Silence of the paused length (Twilio's default `pauseBehavior=silence`).
    #[default]
    Silence,
    /// Nothing: the file jumps from the pause to the resume.
    Skip,
}

/// How a recording is laid out and how long it waits for late audio.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecorderConfig {
    pub rate: SampleRate,
    pub channels: Channels,
    pub pause_behavior: PauseBehavior,
    /// How long after its place a frame is still accepted; the file trails the call by
    /// this much.
    pub late_window: Duration,
    /// A frame further than this from where arrival time puts it is a timestamp jump.
    pub jump_threshold: Duration,
    /// Drift of a side's least delay beyond which its anchor is moved.
    pub realign_threshold: Duration,
}

impl RecorderConfig {
    /// Defaults for a recording at `rate`: 250 ms late window (covers the jitter of
    /// mobile and Wi-Fi legs), 1 s jump threshold, 20 ms (one frame) realign threshold.
    #[must_use]
    pub fn new(rate: SampleRate, channels: Channels) -> RecorderConfig {
        RecorderConfig {
            rate,
            channels,
            pause_behavior: PauseBehavior::Silence,
            late_window: Duration::from_millis(250),
            jump_threshold: Duration::from_secs(1),
            realign_threshold: Duration::from_millis(20),
        }
    }
}

/// One decoded frame of one side.
#[derive(Debug, Clone, Copy)]
pub struct Frame<'a> {
    pub ssrc: Ssrc,
    /// RTP timestamp of the first sample (RFC 3550 §5.1).
    pub timestamp: RtpTimestamp,
    /// The RTP clock `timestamp` counts in.
    pub clock: ClockRate,
    /// The rate of `samples`.
    pub rate: SampleRate,
    /// Mono 16-bit linear PCM.
    pub samples: &'a [i16],
}

/// Why a side's stream was re-anchored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reanchor {
    /// A new SSRC (RFC 3550 §8.2).
    Ssrc,
    /// A new RTP clock rate (a codec change).
    Clock,
    /// The timestamp jumped away from arrival time, confirmed by a second frame.
    Jump,
}

/// What [`Recorder::handle_frame`] did with a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// The side's first frame: it anchored the side's clock.
    Anchored,
    /// Placed by its timestamp.
    Placed,
    /// The stream was re-anchored at this frame.
    Reanchored(Reanchor),
    /// Its place is already in the file (older than the late window): dropped.
    Late,
    /// Its whole place is paused: dropped.
    Paused,
    /// Out of place by more than the jump threshold; dropped unless the next frame agrees.
    JumpSuspected,
    /// Zero clock or sample rate, or no samples: ignored.
    Invalid,
}

/// Per side counters, for metrics and the `recording.completed` event.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SideStats {
    pub frames_placed: u64,
    pub frames_late: u64,
    pub frames_paused: u64,
    pub frames_invalid: u64,
    /// Frames dropped as suspected jumps that the next frame did not confirm.
    pub frames_out_of_place: u64,
    pub reanchors: u64,
    pub realigns: u64,
    /// Samples dropped because they fell beyond the ring (output polled too rarely).
    pub samples_overflowed: u64,
}

/// Counters of a recording.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecorderStats {
    pub internal: SideStats,
    pub external: SideStats,
    /// Sample frames handed out so far (one per instant, whatever the channel count).
    pub frames_out: u64,
}

/// How often a side's least delay is checked against the realign threshold.
const REALIGN_WINDOW: Duration = Duration::from_secs(2);
/// Headroom of the ring for a driver that polls output late.
const POLL_SLACK: Duration = Duration::from_millis(500);

#[derive(Debug, Clone, Copy)]
struct Anchor {
    ssrc: Ssrc,
    clock: u32,
    /// Highest timestamp seen, raw and unwrapped.
    last_ts: u32,
    last_ext: i64,
    /// Unwrapped timestamp and position of the anchoring frame's first sample.
    anchor_ext: i64,
    anchor_pos: i64,
}

impl Anchor {
    /// Unwraps `ts` against the highest timestamp seen (RFC 3550 §A.1 does the same for
    /// sequence numbers): a difference of less than 2^31 either way is taken as the
    /// shorter way round.
    fn unwrap(&mut self, ts: RtpTimestamp) -> i64 {
        let diff = i64::from(ts.0.wrapping_sub(self.last_ts) as i32);
        let ext = self.last_ext + diff;
        if diff > 0 {
            self.last_ts = ts.0;
            self.last_ext = ext;
        }
        ext
    }
}

#[derive(Debug)]
struct SideState {
    ring: Vec<i16>,
    anchor: Option<Anchor>,
    /// Delay (arrival − place) of a frame suspected of a jump, waiting for a second.
    suspected_jump: Option<i64>,
    /// Least delay over the current realign window, and when the window ends.
    min_delay: Option<i64>,
    window_end: i64,
    /// Until this position an anchor is provisional (see [`Recorder::handle_frame`]),
    /// and the span the stream has written since it was anchored.
    settle_until: i64,
    first_pos: i64,
    placed_end: i64,
    /// The previous frame came early for the provisional anchor by this much.
    early: Option<i64>,
    stats: SideStats,
}

#[derive(Debug, Clone, Copy)]
struct PauseRange {
    start: i64,
    /// `None` while paused.
    end: Option<i64>,
}

impl PauseRange {
    fn end_or_max(&self) -> i64 {
        self.end.unwrap_or(i64::MAX)
    }
}

/// The recording timeline of one call (see the module docs).
#[derive(Debug)]
pub struct Recorder {
    config: RecorderConfig,
    start: Instant,
    /// Ring length in samples, the same for both sides.
    cap: i64,
    /// Everything before this position has been handed out.
    cursor: i64,
    sides: [SideState; 2],
    pauses: VecDeque<PauseRange>,
    /// Reused buffer for a frame converted to the output rate.
    scratch: Vec<i16>,
    frames_out: u64,
    late: i64,
    jump: i64,
    realign: i64,
    window: i64,
}

impl Recorder {
    /// A recording that starts at `now` (position 0).
    #[must_use]
    pub fn new(config: RecorderConfig, now: Instant) -> Recorder {
        let rate = SampleRate(config.rate.0.max(1));
        let config = RecorderConfig { rate, ..config };
        let late = rate.samples_in(config.late_window);
        let jump = rate.samples_in(config.jump_threshold).max(1);
        let cap = late + jump + rate.samples_in(POLL_SLACK);
        let len = usize::try_from(cap).unwrap_or(0);
        let side = || SideState {
            ring: vec![0; len],
            anchor: None,
            suspected_jump: None,
            min_delay: None,
            window_end: 0,
            settle_until: 0,
            first_pos: 0,
            placed_end: 0,
            early: None,
            stats: SideStats::default(),
        };
        Recorder {
            config,
            start: now,
            cap,
            cursor: 0,
            sides: [side(), side()],
            pauses: VecDeque::new(),
            scratch: Vec::new(),
            frames_out: 0,
            late,
            jump,
            realign: rate.samples_in(config.realign_threshold),
            window: rate.samples_in(REALIGN_WINDOW),
        }
    }

    #[must_use]
    pub fn config(&self) -> &RecorderConfig {
        &self.config
    }

    /// Is the recording paused now?
    #[must_use]
    pub fn is_paused(&self) -> bool {
        self.pauses.back().is_some_and(|p| p.end.is_none())
    }

    #[must_use]
    pub fn stats(&self) -> RecorderStats {
        RecorderStats {
            internal: self.sides[0].stats,
            external: self.sides[1].stats,
            frames_out: self.frames_out,
        }
    }

    /// The timeline position of `now`.
    fn wall(&self, now: Instant) -> i64 {
        self.config
            .rate
            .samples_in(now.saturating_duration_since(self.start))
    }

    /// Places one decoded frame of `side` that arrived at `now`.
    pub fn handle_frame(&mut self, side: Side, frame: &Frame<'_>, now: Instant) -> Placement {
        let out_rate = self.config.rate.0;
        if frame.clock.0 == 0 || frame.rate.0 == 0 || frame.samples.is_empty() {
            self.sides[side.index()].stats.frames_invalid += 1;
            return Placement::Invalid;
        }
        convert_rate(frame.samples, frame.rate.0, out_rate, &mut self.scratch);
        let n = i64::try_from(self.scratch.len()).unwrap_or(i64::MAX);
        let wall = self.wall(now);
        let s = &mut self.sides[side.index()];

        // Where the frame's first sample lands, and how the stream was anchored.
        let mut pull = 0;
        let (start, outcome) = match s.anchor.as_mut() {
            Some(a) if a.ssrc == frame.ssrc && a.clock == frame.clock.0 => {
                let ext = a.unwrap(frame.timestamp);
                let mut start = a.anchor_pos
                    + (ext - a.anchor_ext) * i64::from(out_rate) / i64::from(frame.clock.0);
                let mut delay = wall - (start + n);
                if delay < 0 && delay.abs() <= self.jump && wall < s.settle_until {
                    // Earlier than the anchor allows, twice in a row: the anchoring
                    // frame itself was late (a sender or a network that took a moment
                    // to get going), not one frame overtaking another. While what was
                    // placed is still open, move the stream back to where its
                    // timestamps put it, so its start is not a frame or two late for
                    // good (the realign would later shift only what follows).
                    if let Some(prev) = s.early.replace(delay) {
                        pull = -prev.max(delay);
                        a.anchor_pos -= pull;
                        start -= pull;
                        delay += pull;
                        s.min_delay = s.min_delay.map(|m| m + pull);
                        s.early = None;
                    }
                } else {
                    s.early = None;
                }
                if delay.abs() > self.jump {
                    match s.suspected_jump {
                        Some(prev) if (prev - delay).abs() <= self.late.max(n) => {
                            s.stats.reanchors += 1;
                            (wall - n, Placement::Reanchored(Reanchor::Jump))
                        }
                        _ => {
                            s.suspected_jump = Some(delay);
                            s.stats.frames_out_of_place += 1;
                            return Placement::JumpSuspected;
                        }
                    }
                } else {
                    s.min_delay = Some(s.min_delay.map_or(delay, |m| m.min(delay)));
                    (start, Placement::Placed)
                }
            }
            Some(a) => {
                let why = if a.ssrc == frame.ssrc {
                    Reanchor::Clock
                } else {
                    Reanchor::Ssrc
                };
                s.stats.reanchors += 1;
                (wall - n, Placement::Reanchored(why))
            }
            None => (wall - n, Placement::Anchored),
        };
        s.suspected_jump = None;
        if outcome != Placement::Placed {
            s.anchor = Some(Anchor {
                ssrc: frame.ssrc,
                clock: frame.clock.0,
                last_ts: frame.timestamp.0,
                last_ext: 0,
                anchor_ext: 0,
                anchor_pos: start,
            });
            s.min_delay = None;
            s.window_end = wall + self.window;
            s.settle_until = wall + self.late / 2;
            s.early = None;
            s.first_pos = start;
            s.placed_end = start;
        } else if wall >= s.window_end {
            // Drift: move the anchor so that the least delay is about zero again.
            if let (Some(m), Some(a)) = (s.min_delay, s.anchor.as_mut()) {
                if m.abs() > self.realign {
                    a.anchor_pos += m;
                    s.stats.realigns += 1;
                }
            }
            s.min_delay = None;
            s.window_end = wall + self.window;
        }

        if pull > 0 {
            let from = s.first_pos.max(self.cursor);
            let to = s.placed_end;
            if to > from {
                let mut moved = vec![0; usize::try_from(to - from).unwrap_or(0)];
                ring_read(&s.ring, self.cap, from, &mut moved);
                ring_zero(&mut s.ring, self.cap, from, to);
                let dst = from - pull;
                let skip = usize::try_from((self.cursor - dst).max(0)).unwrap_or(0);
                if let Some(rest) = moved.get(skip..) {
                    ring_copy(
                        &mut s.ring,
                        self.cap,
                        dst + i64::try_from(skip).unwrap_or(0),
                        rest,
                    );
                }
            }
            s.first_pos -= pull;
            s.placed_end -= pull;
            s.stats.realigns += 1;
        }

        // Clip to the part of the timeline that is still open and fits the ring.
        let end = start + n;
        let lo = start.max(self.cursor);
        let hi = end.min(self.cursor + self.cap);
        if end <= self.cursor {
            s.stats.frames_late += 1;
            return Placement::Late;
        }
        if hi < end {
            s.stats.samples_overflowed += u64::try_from(end - hi).unwrap_or(0);
        }
        if lo >= hi {
            return outcome;
        }
        let skip = usize::try_from(lo - start).unwrap_or(0);
        let len = usize::try_from(hi - lo).unwrap_or(0);
        ring_copy(&mut s.ring, self.cap, lo, &self.scratch[skip..skip + len]);
        s.placed_end = s.placed_end.max(hi);

        // Nothing said while paused is kept, whenever it arrives.
        let mut paused = 0;
        for p in &self.pauses {
            let (a, b) = (lo.max(p.start), hi.min(p.end_or_max()));
            if a < b {
                ring_zero(&mut s.ring, self.cap, a, b);
                paused += b - a;
            }
        }
        if paused == hi - lo {
            s.stats.frames_paused += 1;
            return Placement::Paused;
        }
        s.stats.frames_placed += 1;
        outcome
    }

    /// Pauses the recording from `now` (no effect if already paused).
    pub fn pause(&mut self, now: Instant) {
        if self.is_paused() {
            return;
        }
        let start = self.wall(now).max(self.cursor);
        for s in &mut self.sides {
            ring_zero(&mut s.ring, self.cap, start, self.cursor + self.cap);
        }
        self.pauses.push_back(PauseRange { start, end: None });
    }

    /// Resumes a paused recording from `now` (no effect if not paused).
    pub fn resume(&mut self, now: Instant) {
        let wall = self.wall(now);
        if let Some(p) = self.pauses.back_mut() {
            if p.end.is_none() {
                let end = wall.max(p.start);
                p.end = Some(end);
                if end == p.start {
                    self.pauses.pop_back();
                }
            }
        }
    }

    /// Appends to `out` every sample frame whose place is older than the late window at
    /// `now` (interleaved for dual), and returns how many sample frames it appended.
    pub fn poll_output(&mut self, now: Instant, out: &mut Vec<i16>) -> usize {
        let target = self.wall(now) - self.late;
        self.emit_until(target, out)
    }

    /// Ends the recording at `now`: appends everything up to `now` without waiting for
    /// late frames, and returns how many sample frames it appended. Audio placed after
    /// `now` is not part of the recording.
    pub fn finish(&mut self, now: Instant, out: &mut Vec<i16>) -> usize {
        let target = self.wall(now);
        self.emit_until(target, out)
    }

    fn emit_until(&mut self, target: i64, out: &mut Vec<i16>) -> usize {
        let mut emitted = 0;
        while self.cursor < target {
            let mut until = target;
            let mut skip = false;
            if self.config.pause_behavior == PauseBehavior::Skip {
                for p in &self.pauses {
                    if p.start <= self.cursor && self.cursor < p.end_or_max() {
                        skip = true;
                        until = until.min(p.end_or_max());
                    } else if p.start > self.cursor {
                        until = until.min(p.start);
                    }
                }
            }
            // Stop at the end of the ring's storage so each piece is one slice.
            let idx = self.cursor.rem_euclid(self.cap);
            until = until.min(self.cursor + (self.cap - idx));
            let (i, j) = (
                usize::try_from(idx).unwrap_or(0),
                usize::try_from(idx + until - self.cursor).unwrap_or(0),
            );
            if !skip {
                let (l, r) = (&self.sides[0].ring[i..j], &self.sides[1].ring[i..j]);
                match self.config.channels {
                    Channels::Dual => mixer::interleave_extend(l, r, out),
                    Channels::Mono => mixer::mix_extend(l, r, out),
                }
                emitted += j - i;
            }
            for s in &mut self.sides {
                s.ring[i..j].fill(0);
            }
            self.cursor = until;
            while self
                .pauses
                .front()
                .is_some_and(|p| p.end_or_max() <= self.cursor)
            {
                self.pauses.pop_front();
            }
        }
        self.frames_out += u64::try_from(emitted).unwrap_or(0);
        emitted
    }
}

/// Copies `data` into the ring at timeline position `pos` (the caller keeps it within
/// one ring length of the cursor).
fn ring_copy(ring: &mut [i16], cap: i64, pos: i64, data: &[i16]) {
    let idx = usize::try_from(pos.rem_euclid(cap)).unwrap_or(0);
    let first = data.len().min(ring.len() - idx);
    ring[idx..idx + first].copy_from_slice(&data[..first]);
    ring[..data.len() - first].copy_from_slice(&data[first..]);
}

/// Reads `out.len()` samples from timeline position `pos` (at most one ring length).
fn ring_read(ring: &[i16], cap: i64, pos: i64, out: &mut [i16]) {
    let idx = usize::try_from(pos.rem_euclid(cap)).unwrap_or(0);
    let len = out.len().min(ring.len());
    let first = len.min(ring.len() - idx);
    out[..first].copy_from_slice(&ring[idx..idx + first]);
    out[first..len].copy_from_slice(&ring[..len - first]);
}

/// Zeroes timeline positions `[from, to)` of the ring (at most one ring length).
fn ring_zero(ring: &mut [i16], cap: i64, from: i64, to: i64) {
    let len = usize::try_from((to - from).min(cap)).unwrap_or(0);
    let idx = usize::try_from(from.rem_euclid(cap)).unwrap_or(0);
    let first = len.min(ring.len() - idx);
    ring[idx..idx + first].fill(0);
    ring[..len - first].fill(0);
}

/// Converts one frame from `from` Hz to `to` Hz into `out` (cleared first): linear
/// interpolation up, the mean of the covered input samples down. Stateless per frame, so
/// reordered frames convert the same; the frame's length scales exactly for the usual
/// telephony rates (20 ms is a whole number of samples at 8, 16, 24, 32 and 48 kHz).
fn convert_rate(src: &[i16], from: u32, to: u32, out: &mut Vec<i16>) {
    out.clear();
    if from == to {
        out.extend_from_slice(src);
        return;
    }
    let (from, to) = (u64::from(from), u64::from(to));
    let len = src.len();
    let n_out = usize::try_from(len as u64 * to / from).unwrap_or(0);
    out.reserve(n_out);
    if to > from {
        for i in 0..n_out {
            let num = i as u64 * from;
            let k = usize::try_from(num / to).unwrap_or(0).min(len - 1);
            let frac = i64::try_from(num % to).unwrap_or(0);
            let a = i64::from(src[k]);
            let b = i64::from(*src.get(k + 1).unwrap_or(&src[k]));
            let v = a + (b - a) * frac / i64::try_from(to).unwrap_or(1);
            out.push(i16::try_from(v).unwrap_or(0));
        }
    } else {
        for i in 0..n_out {
            let lo = usize::try_from(i as u64 * from / to).unwrap_or(0);
            let hi = usize::try_from((i as u64 + 1) * from / to)
                .unwrap_or(0)
                .clamp(lo + 1, len);
            let sum: i64 = src[lo..hi].iter().map(|&x| i64::from(x)).sum();
            let v = sum / i64::try_from(hi - lo).unwrap_or(1);
            out.push(i16::try_from(v).unwrap_or(0));
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
