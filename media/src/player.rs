//! Audio voxgate plays into a leg itself, as paced RTP: prompts (decoded PCM), DTMF
//! (RFC 4733 telephone-events, or in-band tones in the leg's codec) and the ringback
//! tone.
//!
//! Sans-IO like the rest of the crate: a [`Source`] is started at `now`, then asked for
//! its packets with [`Source::poll_transmit`] whenever [`Source::poll_timeout`] is due,
//! and writes each one into a buffer the driver owns. Nothing is allocated per packet:
//! the encoder and the frame buffer are allocated by the constructor.
//!
//! A source numbers its packets in an RTP space of its own (SSRC, sequence and timestamp
//! from [`RtpIdentity`]). The driver passes them through the leg's outgoing rewriter
//! ([`crate::relay::LegPolicy::own_packet`]), which splices them into one continuous
//! stream with the audio it relays to that leg: one SSRC, the sequence continuing, the
//! timestamp following the wall clock across each switch (as for any source switch,
//! [`crate::rewrite`]). While a source [`Source::replaces_audio`], the relay drops the
//! audio it would forward to the leg: the source replaces it, it is not mixed in.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use thiserror::Error;

use crate::codec::{Codec, CodecError, Encoder, SampleRate, MAX_FRAME_SAMPLES, MAX_PAYLOAD_LEN};
use crate::dtmf::{Digit, Rfc4733Sender, SenderConfig, ToneGenerator, ToneLevels};
use crate::relay::LegPolicy;
use crate::rewrite::ClockRate;
use crate::rtp::{write_header, RtpTimestamp, SeqNo, Ssrc, HEADER_LEN};
use crate::tone::TonePlayer;

/// One packet's length in time: the `ptime` every carrier and softphone we meet uses
/// (RFC 3551 §4.5 default for these codecs).
pub const FRAME: Duration = Duration::from_millis(20);

/// A source this far behind its schedule (the driver stalled) skips to the present
/// rather than send a burst the receiver's jitter buffer would drop: its timestamp
/// jumps with the wall clock, its audio carries on where it was.
pub const LATE: Duration = Duration::from_millis(200);

/// A buffer this long takes any packet a source writes.
pub const MAX_PACKET_LEN: usize = HEADER_LEN + MAX_PAYLOAD_LEN;

/// Where a source's own RTP numbering starts (RFC 3550 §5.1: all three random).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpIdentity {
    pub ssrc: Ssrc,
    pub seq: SeqNo,
    pub timestamp: RtpTimestamp,
}

impl RtpIdentity {
    /// From three random words (SSRC, sequence number, timestamp).
    #[must_use]
    pub fn from_random(r: [u32; 3]) -> RtpIdentity {
        RtpIdentity {
            ssrc: Ssrc(r[0]),
            seq: SeqNo(u16::try_from(r[1] & 0xffff).unwrap_or(0)),
            timestamp: RtpTimestamp(r[2]),
        }
    }
}

/// How many times a prompt plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loops {
    Count(NonZeroU32),
    /// Until stopped (hold music).
    Forever,
}

impl Loops {
    pub const ONCE: Loops = Loops::Count(NonZeroU32::MIN);
}

/// How long each DTMF digit sounds and the pause after it. Both are raised to 40 ms,
/// ITU-T Q.24's shortest digit and pause a receiver must accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DtmfTiming {
    pub tone: Duration,
    pub gap: Duration,
}

impl Default for DtmfTiming {
    /// 100 ms on, 100 ms off: well inside every receiver's limits.
    fn default() -> Self {
        DtmfTiming {
            tone: Duration::from_millis(100),
            gap: Duration::from_millis(100),
        }
    }
}

/// One packet written by [`Source::poll_transmit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transmit {
    /// Its length at the front of the buffer.
    pub len: usize,
    /// How far the stream's clock at `now` is past this packet's timestamp, in ticks:
    /// 0 for audio (sent when its frame starts), the press's length so far for a
    /// telephone-event (every packet of a press carries its start, RFC 4733 §2.5.1.2).
    /// The driver hands it to [`crate::relay::LegPolicy::own_packet`].
    pub clock_ahead: u32,
}

/// Why a source cannot be made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum PlayerError {
    #[error("the prompt holds no samples")]
    Empty,
    #[error("{codec:?} plays PCM at {want} Hz, the prompt is at {got} Hz")]
    RateMismatch { codec: Codec, want: u32, got: u32 },
    #[error("no digits to send")]
    NoDigits,
    #[error("codec: {0}")]
    Codec(#[from] CodecError),
}

/// How a source ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// Played to its end, or stopped.
    Done,
    /// The encoder refused a frame (or the driver's buffer was too short); nothing more
    /// was sent.
    Failed(CodecError),
}

/// What a source plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    /// The ringback (or test) tone.
    Tone,
    Prompt,
    Dtmf,
}

/// Frame `k` is due at `start + k·FRAME`.
#[derive(Debug, Clone, Copy, Default)]
struct Pacer {
    next: Option<Instant>,
}

impl Pacer {
    fn start(&mut self, now: Instant) {
        self.next.get_or_insert(now);
    }

    /// Whether a frame is due at `now`, and if so how many frames' time to skip first
    /// (behind by more than [`LATE`]).
    fn due(&mut self, now: Instant) -> Option<u32> {
        let next = *self.next.get_or_insert(now);
        if now < next {
            return None;
        }
        let late = now - next;
        if late <= LATE {
            return Some(0);
        }
        let skipped = u32::try_from(late.as_nanos() / FRAME.as_nanos()).unwrap_or(u32::MAX);
        self.next = FRAME
            .checked_mul(skipped)
            .and_then(|d| next.checked_add(d))
            .or(Some(now));
        Some(skipped)
    }

    fn sent(&mut self) {
        if let Some(n) = &mut self.next {
            *n += FRAME;
        }
    }
}

/// Where a [`Player`]'s PCM comes from.
#[derive(Debug)]
enum Feed {
    Pcm {
        pcm: Arc<[i16]>,
        pos: usize,
        loops: Loops,
        /// Loops played to their end.
        played: u32,
    },
    Tones(ToneGenerator),
}

impl Feed {
    /// Fills `out` (a loop wraps inside a frame, so looped audio joins without a
    /// gap); returns the samples written, fewer than `out.len()` only at the end.
    fn fill(&mut self, out: &mut [i16]) -> usize {
        match self {
            Feed::Pcm {
                pcm,
                pos,
                loops,
                played,
            } => {
                let mut n = 0;
                while n < out.len() {
                    if *pos >= pcm.len() {
                        *played = played.saturating_add(1);
                        let more = match loops {
                            Loops::Forever => true,
                            Loops::Count(c) => *played < c.get(),
                        };
                        if !more || pcm.is_empty() {
                            break;
                        }
                        *pos = 0;
                    }
                    let k = (pcm.len() - *pos).min(out.len() - n);
                    out[n..n + k].copy_from_slice(&pcm[*pos..*pos + k]);
                    n += k;
                    *pos += k;
                }
                n
            }
            Feed::Tones(g) => g.fill(out),
        }
    }

    fn is_done(&self) -> bool {
        match self {
            Feed::Pcm {
                pcm,
                pos,
                loops,
                played,
            } => {
                *pos >= pcm.len()
                    && match loops {
                        Loops::Forever => pcm.is_empty(),
                        Loops::Count(c) => played.saturating_add(1) >= c.get(),
                    }
            }
            Feed::Tones(g) => g.is_idle(),
        }
    }
}

/// Encodes PCM into paced 20 ms RTP packets for one leg: a prompt, or DTMF as in-band
/// tones (for a leg that negotiated no telephone-event).
#[derive(Debug)]
pub struct Player {
    feed: Feed,
    kind: SourceKind,
    encoder: Encoder,
    pt: u8,
    ssrc: Ssrc,
    seq: SeqNo,
    ts: RtpTimestamp,
    /// The next packet starts a talkspurt (RFC 3551 §4.1): the first, and after a skip.
    marker: bool,
    pace: Pacer,
    frame: Box<[i16; MAX_FRAME_SAMPLES]>,
    ending: Option<Ending>,
}

impl Player {
    /// Plays `pcm`, mono at `rate` (which must be `codec`'s [`Codec::sample_rate`]:
    /// 8 kHz for G.711, 16 kHz for G.722, 48 kHz for Opus), `loops` times, as `codec`
    /// under payload type `pt`. The last frame is padded with silence.
    pub fn prompt(
        pcm: Arc<[i16]>,
        rate: SampleRate,
        codec: Codec,
        pt: u8,
        loops: Loops,
        id: RtpIdentity,
    ) -> Result<Player, PlayerError> {
        if pcm.is_empty() {
            return Err(PlayerError::Empty);
        }
        if rate != codec.sample_rate() {
            return Err(PlayerError::RateMismatch {
                codec,
                want: codec.sample_rate().hz(),
                got: rate.hz(),
            });
        }
        let feed = Feed::Pcm {
            pcm,
            pos: 0,
            loops,
            played: 0,
        };
        Player::new(feed, SourceKind::Prompt, codec, pt, id)
    }

    /// Plays `digits` as DTMF tones (ITU-T Q.23, at the generator's default levels)
    /// encoded in `codec`, each followed by its pause.
    pub fn inband_dtmf(
        digits: &[Digit],
        timing: DtmfTiming,
        codec: Codec,
        pt: u8,
        id: RtpIdentity,
    ) -> Result<Player, PlayerError> {
        if digits.is_empty() {
            return Err(PlayerError::NoDigits);
        }
        let mut g = ToneGenerator::new(codec.sample_rate().hz(), ToneLevels::default());
        for d in digits {
            g.push(*d, timing.tone, timing.gap);
        }
        Player::new(Feed::Tones(g), SourceKind::Dtmf, codec, pt, id)
    }

    fn new(
        feed: Feed,
        kind: SourceKind,
        codec: Codec,
        pt: u8,
        id: RtpIdentity,
    ) -> Result<Player, PlayerError> {
        Ok(Player {
            feed,
            kind,
            encoder: Encoder::new(codec)?,
            pt: pt & 0x7f,
            ssrc: id.ssrc,
            seq: id.seq,
            ts: id.timestamp,
            marker: true,
            pace: Pacer::default(),
            frame: Box::new([0; MAX_FRAME_SAMPLES]),
            ending: None,
        })
    }

    #[must_use]
    pub fn codec(&self) -> Codec {
        self.encoder.codec()
    }

    /// The first frame is due at `now` (else at the first [`Player::poll_transmit`]).
    pub fn start(&mut self, now: Instant) {
        self.pace.start(now);
    }

    /// When the next packet is due; `None` once ended.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.ending.is_some() {
            return None;
        }
        self.pace.next
    }

    /// Writes the packet due at `now` into `out` (at least [`MAX_PACKET_LEN`] bytes);
    /// call until `None`.
    pub fn poll_transmit(&mut self, now: Instant, out: &mut [u8]) -> Option<Transmit> {
        if self.ending.is_some() {
            return None;
        }
        let skipped = self.pace.due(now)?;
        if skipped > 0 {
            let ticks = self.codec().ticks_per_frame();
            self.ts = self.ts.wrapping_add(ticks.wrapping_mul(skipped));
            self.marker = true;
        }
        let n = self.codec().samples_per_frame();
        let frame = &mut self.frame[..n];
        let got = self.feed.fill(frame);
        if got == 0 {
            self.ending = Some(Ending::Done);
            return None;
        }
        frame[got..].fill(0);
        let Some((header, payload)) = out.split_at_mut_checked(HEADER_LEN) else {
            self.ending = Some(Ending::Failed(CodecError::OutputTooSmall {
                need: MAX_PACKET_LEN,
                have: out.len(),
            }));
            return None;
        };
        let len = match self.encoder.encode(frame, payload) {
            Ok(len) => len,
            Err(e) => {
                self.ending = Some(Ending::Failed(e));
                return None;
            }
        };
        // `header` is HEADER_LEN long, so this cannot fail.
        let _ = write_header(header, self.pt, self.marker, self.seq, self.ts, self.ssrc);
        self.marker = false;
        self.seq = self.seq.wrapping_add(1);
        self.ts = self.ts.wrapping_add(self.codec().ticks_per_frame());
        self.pace.sent();
        if self.feed.is_done() {
            // Over with this packet; the rewriter starts whatever follows no earlier
            // than this frame's end (it knows the frame length).
            self.ending = Some(Ending::Done);
        }
        Some(Transmit {
            len: HEADER_LEN + len,
            clock_ahead: 0,
        })
    }

    /// Sends nothing more.
    pub fn stop(&mut self) {
        self.ending.get_or_insert(Ending::Done);
    }

    #[must_use]
    pub fn ending(&self) -> Option<Ending> {
        self.ending
    }
}

/// Sends DTMF digits as RFC 4733 telephone-events in the leg's stream: per press a
/// marked start packet, updates every 50 ms, three end packets (§2.5.1), on the leg's
/// negotiated `telephone-event` payload type and clock. Only a press on the wire
/// replaces the relayed audio ([`Source::replaces_audio`]): in the pauses between
/// digits the leg hears the call again, as from a phone.
#[derive(Debug)]
pub struct EventPlayer {
    sender: Rfc4733Sender,
    digits: Vec<Digit>,
    tone: Duration,
    pt: u8,
    clock: ClockRate,
    ssrc: Ssrc,
    seq: SeqNo,
    /// Timestamp at `origin`; the stream's clock runs from there with the wall clock.
    ts0: RtpTimestamp,
    origin: Option<Instant>,
    ending: Option<Ending>,
}

impl EventPlayer {
    /// Sends `digits` on payload type `pt` at the telephone-event clock `clock` (its
    /// `a=rtpmap` rate: 8000, or 48000 beside Opus).
    pub fn new(
        digits: &[Digit],
        timing: DtmfTiming,
        pt: u8,
        clock: ClockRate,
        id: RtpIdentity,
    ) -> Result<EventPlayer, PlayerError> {
        if digits.is_empty() {
            return Err(PlayerError::NoDigits);
        }
        let sender = Rfc4733Sender::new(SenderConfig {
            clock,
            gap: timing.gap.max(Duration::from_millis(40)),
            ..SenderConfig::default()
        });
        Ok(EventPlayer {
            sender,
            digits: digits.to_vec(),
            tone: timing.tone,
            pt: pt & 0x7f,
            clock,
            ssrc: id.ssrc,
            seq: id.seq,
            ts0: id.timestamp,
            origin: None,
            ending: None,
        })
    }

    /// The first press starts at `now` (else at the first poll).
    pub fn start(&mut self, now: Instant) {
        if self.origin.is_some() {
            return;
        }
        self.origin = Some(now);
        for d in self.digits.drain(..) {
            self.sender.send_digit(d, self.tone, now);
        }
    }

    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.ending.is_some() {
            return None;
        }
        self.sender.poll_timeout()
    }

    /// Writes the packet due at `now` into `out`; call until `None`.
    pub fn poll_transmit(&mut self, now: Instant, out: &mut [u8]) -> Option<Transmit> {
        if self.ending.is_some() {
            return None;
        }
        self.start(now);
        let origin = self.origin?;
        // The audio stream's clock at `now`: a new press takes it (§2.5.1.2).
        let stream_ts = self
            .ts0
            .wrapping_add(self.clock.ticks(now.saturating_duration_since(origin)));
        let Some(ev) = self.sender.poll_transmit(now, stream_ts) else {
            if self.sender.is_idle() {
                self.ending = Some(Ending::Done);
            }
            return None;
        };
        let Some(len) = ev.write(out, self.pt, self.seq, self.ssrc) else {
            self.ending = Some(Ending::Failed(CodecError::OutputTooSmall {
                need: HEADER_LEN + crate::dtmf::rfc4733::EVENT_LEN,
                have: out.len(),
            }));
            return None;
        };
        // §2.5.1.6: every packet its own sequence number, retransmissions included.
        self.seq = self.seq.wrapping_add(1);
        if self.sender.is_idle() {
            self.ending = Some(Ending::Done);
        }
        Some(Transmit {
            len,
            clock_ahead: stream_ts.0.wrapping_sub(ev.timestamp.0),
        })
    }

    /// True while a press is on the wire.
    #[must_use]
    pub fn is_sending(&self) -> bool {
        self.sender.is_sending()
    }

    /// No more presses; one on the wire is finished with its end packets.
    pub fn stop(&mut self) {
        self.digits.clear();
        self.sender.cancel_queued();
        if self.sender.is_idle() {
            self.ending.get_or_insert(Ending::Done);
        }
    }

    #[must_use]
    pub fn ending(&self) -> Option<Ending> {
        self.ending
    }
}

/// A [`TonePlayer`] with its pacing: continuous until stopped.
#[derive(Debug)]
pub struct ToneSource {
    tone: TonePlayer,
    pace: Pacer,
    stopped: bool,
}

impl ToneSource {
    #[must_use]
    pub fn new(tone: TonePlayer) -> ToneSource {
        ToneSource {
            tone,
            pace: Pacer::default(),
            stopped: false,
        }
    }

    pub fn start(&mut self, now: Instant) {
        self.pace.start(now);
    }

    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.stopped {
            return None;
        }
        self.pace.next
    }

    /// Writes the packet due at `now` into `out` (at least
    /// [`crate::tone::PACKET_LEN`] bytes); call until `None`.
    pub fn poll_transmit(&mut self, now: Instant, out: &mut [u8]) -> Option<Transmit> {
        if self.stopped {
            return None;
        }
        let skipped = self.pace.due(now)?;
        if skipped > 0 {
            self.tone.skip(skipped);
        }
        let len = self.tone.next_packet(out);
        if len == 0 {
            self.stopped = true;
            return None;
        }
        self.pace.sent();
        Some(Transmit {
            len,
            clock_ahead: 0,
        })
    }
}

/// Whatever plays into one leg: the driver's one slot per leg.
#[derive(Debug)]
pub enum Source {
    Tone(ToneSource),
    /// A prompt, or in-band DTMF.
    Audio(Player),
    /// RFC 4733 DTMF.
    Events(EventPlayer),
}

impl Source {
    #[must_use]
    pub fn kind(&self) -> SourceKind {
        match self {
            Source::Tone(_) => SourceKind::Tone,
            Source::Audio(p) => p.kind,
            Source::Events(_) => SourceKind::Dtmf,
        }
    }

    /// Starts the source's clock: its first packet is due at `now`.
    pub fn start(&mut self, now: Instant) {
        match self {
            Source::Tone(t) => t.start(now),
            Source::Audio(p) => p.start(now),
            Source::Events(e) => e.start(now),
        }
    }

    /// When [`Source::poll_transmit`] next has a packet; `None` once ended.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self {
            Source::Tone(t) => t.poll_timeout(),
            Source::Audio(p) => p.poll_timeout(),
            Source::Events(e) => e.poll_timeout(),
        }
    }

    /// Writes the next packet due at `now` into `out` (at least [`MAX_PACKET_LEN`]
    /// bytes); call until `None`, then check [`Source::ending`].
    pub fn poll_transmit(&mut self, now: Instant, out: &mut [u8]) -> Option<Transmit> {
        match self {
            Source::Tone(t) => t.poll_transmit(now, out),
            Source::Audio(p) => p.poll_transmit(now, out),
            Source::Events(e) => e.poll_transmit(now, out),
        }
    }

    /// Whether the audio relayed to the leg is dropped now. Audio sources replace it
    /// for as long as they play; telephone-events only while a press is on the wire.
    #[must_use]
    pub fn replaces_audio(&self) -> bool {
        match self {
            Source::Tone(t) => !t.stopped,
            Source::Audio(p) => p.ending.is_none(),
            Source::Events(e) => e.is_sending(),
        }
    }

    /// Stops the source. Audio stops at once; a telephone-event press on the wire is
    /// finished first (so [`Source::ending`] may still be `None`: keep polling).
    pub fn stop(&mut self) {
        match self {
            Source::Tone(t) => t.stopped = true,
            Source::Audio(p) => p.stop(),
            Source::Events(e) => e.stop(),
        }
    }

    /// `Some` once the source has sent its last packet.
    #[must_use]
    pub fn ending(&self) -> Option<Ending> {
        match self {
            Source::Tone(t) => t.stopped.then_some(Ending::Done),
            Source::Audio(p) => p.ending(),
            Source::Events(e) => e.ending(),
        }
    }
}

/// Sends what `src` has due at `now` into `leg`'s outgoing stream: each packet is
/// written into `buf` (at least [`MAX_PACKET_LEN`] bytes), spliced in by
/// [`LegPolicy::own_packet`] and handed to `send` with its destination (none while the
/// leg's remote does not receive). Keeps the leg's replacement of relayed audio in step
/// with the source, and lifts it when the source has ended. Returns the packets sent.
pub fn play_into(
    src: &mut Source,
    leg: &mut LegPolicy,
    now: Instant,
    buf: &mut [u8],
    mut send: impl FnMut(&[u8], SocketAddr),
) -> usize {
    let mut n = 0;
    while let Some(tx) = src.poll_transmit(now, buf) {
        // On before the packet is spliced (it re-anchors as the start of the source's
        // turn), off only after: a press's last end packet still belongs to the press.
        if src.replaces_audio() {
            leg.set_local_source(true);
        }
        let Some(pkt) = buf.get_mut(..tx.len) else {
            break;
        };
        if let Some(to) = leg.own_packet(pkt, tx.clock_ahead, now) {
            send(pkt, to);
            n += 1;
        }
    }
    leg.set_local_source(src.ending().is_none() && src.replaces_audio());
    n
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
