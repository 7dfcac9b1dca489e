//! Transcoding one direction of a bridged call: the two legs negotiated no codec in
//! common (SPEC §3: "transcode only when the legs share no codec"), so the voice one leg
//! sends is decoded, resampled to the other codec's rate and encoded again, and its
//! RFC 4733 telephone-events are carried across with their timestamps and durations
//! rescaled to the other leg's clock.
//!
//! Sans-IO, one [`Transcoder`] per direction, owned by the receiving leg's
//! [`crate::relay::LegPolicy`]: [`Transcoder::push`] takes each packet that arrives from
//! the sending leg, [`Transcoder::pop`] writes the packets that are ready for the
//! receiving leg, numbered in an RTP space of the transcoder's own (the leg's outgoing
//! rewriter then splices them into the stream the leg receives, as it does for any
//! source). Nothing is allocated per packet: codec state, resampler and buffers come
//! with [`Transcoder::new`].
//!
//! Timing follows the sender, not a clock of ours: the output timestamp of each frame is
//! the input timestamp of its first sample, rescaled to the output clock. Packet loss and
//! silence suppression (a jump in the input timestamps) become the same jump in the
//! output; late or duplicated packets are dropped (a transcoder has no jitter buffer:
//! the receiving phone has one, and the relay's job is to add no delay). Output frames are
//! 20 ms whatever the sender's packet time (RFC 3551 §4.5's default for these codecs).

use thiserror::Error;

use crate::codec::{Codec, CodecError, Decoder, Encoder, SampleRate, MAX_FRAME_SAMPLES};
use crate::resample::{ResampleError, Resampler};
use crate::rewrite::ClockRate;
use crate::rtp::{write_header, RtpPacket, RtpTimestamp, SeqNo, Ssrc, HEADER_LEN};

/// Decoded samples a transcoder holds at most: a partial frame plus the largest packet
/// we accept (60 ms at 48 kHz, the longest `ptime` phones use).
const PENDING_SAMPLES: usize = MAX_FRAME_SAMPLES - 1 + 3 * MAX_FRAME_SAMPLES;

/// An RFC 4733 payload is 4 octets per event (§2.3); a packet carries a few at most.
const MAX_EVENT_PACKET: usize = HEADER_LEN + 64;

/// A jump ahead in the sender's timestamps larger than this is a new stream (a restart,
/// a new SSRC), not loss: the output re-anchors instead of jumping as far.
const MAX_GAP_SECONDS: u32 = 10;

/// What the engine tells the relay about a transcoded direction, from the SDP of both
/// legs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TranscodeSpec {
    /// The voice formats the sending leg may use, by the payload type its packets carry.
    pub from: Vec<(u8, Codec)>,
    /// The payload type and codec the receiving leg gets.
    pub to: (u8, Codec),
    /// telephone-event on both legs: (payload type, clock) in, and out.
    pub events: Option<((u8, ClockRate), (u8, ClockRate))>,
}

/// Why a transcoder could not be made.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TranscodeError {
    #[error("codec: {0}")]
    Codec(#[from] CodecError),
    #[error("resampler: {0}")]
    Resample(#[from] ResampleError),
}

/// What became of a packet given to [`Transcoder::push`]. Everything but `Accepted`
/// means it was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// Decoded (or, for an event, made ready); [`Transcoder::pop`] gives what it yields.
    Accepted,
    /// A payload type the spec does not name (comfort noise, a codec not negotiated).
    UnknownPayload,
    /// Older than what was already transcoded: late, or a duplicate.
    Late,
    /// The codec could not decode it, or it is longer than a transcoder buffers.
    Undecodable,
}

/// Counters of one transcoded direction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TranscodeStats {
    pub frames_out: u64,
    pub events_out: u64,
    pub dropped: u64,
}

/// One decoder per voice format the sender may switch between.
struct Input {
    payload_type: u8,
    decoder: Decoder,
}

/// Transcodes the packets of one direction. See the module documentation.
pub struct Transcoder {
    inputs: Vec<Input>,
    /// Index into `inputs` of the format being decoded; the resampler is built for it.
    current: Option<usize>,
    resampler: Option<Resampler>,
    encoder: Encoder,
    out_pt: u8,
    events: Option<((u8, ClockRate), (u8, ClockRate))>,
    pending: Box<[i16; PENDING_SAMPLES]>,
    pending_len: usize,
    /// The input timestamp of `pending[0]`, and the output timestamp it maps to.
    pending_in_ts: u32,
    pending_out_ts: u32,
    /// The input timestamp just past the last decoded sample; `None` before the first.
    in_next: Option<u32>,
    ssrc: Ssrc,
    seq: SeqNo,
    /// The next voice packet starts a talkspurt (RFC 3551 §4.1 marker bit).
    marker: bool,
    resampled: Box<[i16; MAX_FRAME_SAMPLES]>,
    event: [u8; MAX_EVENT_PACKET],
    event_len: usize,
    stats: TranscodeStats,
}

impl std::fmt::Debug for Transcoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transcoder")
            .field("to", &self.encoder.codec())
            .field("out_pt", &self.out_pt)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl Transcoder {
    /// A transcoder for `spec`, its packets numbered from `ssrc`, `seq` and `timestamp`
    /// (RFC 3550 §5.1: random; the leg's rewriter renumbers them anyway).
    pub fn new(
        spec: &TranscodeSpec,
        ssrc: Ssrc,
        seq: SeqNo,
        timestamp: RtpTimestamp,
    ) -> Result<Transcoder, TranscodeError> {
        // Opus codes at whatever rate it is given (RFC 6716 §2): at the other leg's rate
        // it needs no resampler, and at 8 kHz it is SILK-only narrowband, several times
        // cheaper than fullband, and all a G.711 leg can carry anyway.
        let other_rate = |codec: Codec| {
            if codec == Codec::Opus {
                None
            } else {
                Some(codec.sample_rate())
            }
        };
        let encoder = match spec.to.1 {
            Codec::Opus => {
                let rate = spec.from.iter().find_map(|&(_, c)| other_rate(c));
                Encoder::with_rate(Codec::Opus, rate.unwrap_or(SampleRate::HZ_48000))?
            }
            codec => Encoder::new(codec)?,
        };
        let inputs = spec
            .from
            .iter()
            .map(|&(payload_type, codec)| {
                let decoder = match codec {
                    Codec::Opus => Decoder::with_rate(Codec::Opus, encoder.sample_rate())?,
                    codec => Decoder::new(codec)?,
                };
                Ok(Input {
                    payload_type,
                    decoder,
                })
            })
            .collect::<Result<Vec<_>, CodecError>>()?;
        Ok(Transcoder {
            inputs,
            current: None,
            resampler: None,
            encoder,
            out_pt: spec.to.0,
            events: spec.events,
            pending: Box::new([0; PENDING_SAMPLES]),
            pending_len: 0,
            pending_in_ts: 0,
            pending_out_ts: timestamp.0,
            in_next: None,
            ssrc,
            seq,
            marker: true,
            resampled: Box::new([0; MAX_FRAME_SAMPLES]),
            event: [0; MAX_EVENT_PACKET],
            event_len: 0,
            stats: TranscodeStats::default(),
        })
    }

    #[must_use]
    pub fn stats(&self) -> TranscodeStats {
        self.stats
    }

    /// The codec the receiving leg gets.
    #[must_use]
    pub fn output_codec(&self) -> Codec {
        self.encoder.codec()
    }

    /// Takes one packet from the sending leg.
    pub fn push<T: AsRef<[u8]>>(&mut self, pkt: &RtpPacket<T>) -> Pushed {
        let pt = pkt.payload_type();
        let verdict = if self.events.is_some_and(|((p, _), _)| p == pt) {
            self.push_event(pkt)
        } else if let Some(i) = self.inputs.iter().position(|x| x.payload_type == pt) {
            self.push_voice(i, pkt)
        } else {
            Pushed::UnknownPayload
        };
        if verdict != Pushed::Accepted {
            self.stats.dropped += 1;
        }
        verdict
    }

    fn push_voice<T: AsRef<[u8]>>(&mut self, input: usize, pkt: &RtpPacket<T>) -> Pushed {
        let ts = pkt.timestamp().0;
        if self.current != Some(input) {
            // A new format (or the first packet): a fresh resampler for its rate, and the
            // stream re-anchored where this packet starts.
            let from = self.inputs[input].decoder.sample_rate();
            match Resampler::new(from, self.encoder.sample_rate()) {
                Ok(r) => self.resampler = Some(r),
                Err(_) => return Pushed::Undecodable,
            }
            self.current = Some(input);
            self.restart_at(ts);
        }
        let in_clock = self.input_clock();
        if let Some(next) = self.in_next {
            // RFC 3550 §5.1 timestamps wrap: compare by signed distance.
            let ahead = ts.wrapping_sub(next).cast_signed();
            if ahead < 0 {
                return Pushed::Late;
            }
            if ahead > 0 {
                if ahead.unsigned_abs() > MAX_GAP_SECONDS * in_clock.0 {
                    self.restart_at(ts);
                } else {
                    self.skip_to(ts);
                }
            }
        } else {
            self.restart_at(ts);
        }
        let Some(Input { decoder, .. }) = self.inputs.get_mut(input) else {
            return Pushed::UnknownPayload;
        };
        let Some(room) = self.pending.get_mut(self.pending_len..) else {
            return Pushed::Undecodable;
        };
        let Ok(n) = decoder.decode(pkt.payload(), room) else {
            return Pushed::Undecodable;
        };
        self.pending_len += n;
        let rate = decoder.sample_rate().hz();
        let ticks = u64::try_from(n).unwrap_or(0) * u64::from(in_clock.0) / u64::from(rate);
        self.in_next = Some(ts.wrapping_add(u32::try_from(ticks).unwrap_or(0)));
        Pushed::Accepted
    }

    /// The RTP clock of the format being decoded.
    fn input_clock(&self) -> ClockRate {
        self.current
            .and_then(|i| self.inputs.get(i))
            .map_or(ClockRate::G711, |x| x.decoder.codec().clock_rate())
    }

    /// Input ticks → output ticks (signed: an event may start before the pending audio).
    fn scale(&self, ticks: i64) -> i64 {
        ticks * i64::from(self.encoder.codec().clock_rate().0) / i64::from(self.input_clock().0)
    }

    /// The sender's stream jumped ahead to `ts` (loss, silence suppression): the partial
    /// frame is dropped (its samples would otherwise be sent at the wrong time) and the
    /// output jumps by as much.
    fn skip_to(&mut self, ts: u32) {
        let gap = i64::from(ts.wrapping_sub(self.pending_in_ts));
        self.pending_out_ts = self.pending_out_ts.wrapping_add(wrap(self.scale(gap)));
        self.pending_in_ts = ts;
        self.pending_len = 0;
        self.in_next = Some(ts);
        self.marker = true;
    }

    /// A new input stream starting at `ts`: its first frame takes the place of the next
    /// frame of the old one, so the receiver sees a continuous timeline.
    fn restart_at(&mut self, ts: u32) {
        self.pending_in_ts = ts;
        self.pending_len = 0;
        self.in_next = Some(ts);
        self.marker = true;
        if let Some(r) = self.resampler.as_mut() {
            r.reset();
        }
    }

    /// A telephone-event packet (RFC 4733 §2.3): the same events, its timestamp mapped
    /// onto the output timeline and its durations rescaled to the output clock.
    fn push_event<T: AsRef<[u8]>>(&mut self, pkt: &RtpPacket<T>) -> Pushed {
        let Some(((_, in_clock), (out_pt, out_clock))) = self.events else {
            return Pushed::UnknownPayload;
        };
        let payload = pkt.payload();
        let len = HEADER_LEN + payload.len();
        if payload.is_empty() || !payload.len().is_multiple_of(4) || len > self.event.len() {
            return Pushed::Undecodable;
        }
        let scale = |t: i64| t * i64::from(out_clock.0) / i64::from(in_clock.0);
        // Before any voice the event anchors the timeline itself.
        if self.in_next.is_none() {
            self.pending_in_ts = pkt.timestamp().0;
            self.in_next = Some(pkt.timestamp().0);
        }
        let since = i64::from(
            pkt.timestamp()
                .0
                .wrapping_sub(self.pending_in_ts)
                .cast_signed(),
        );
        let ts = self.pending_out_ts.wrapping_add(wrap(scale(since)));
        let _ = write_header(
            &mut self.event,
            out_pt,
            pkt.marker(),
            self.seq,
            RtpTimestamp(ts),
            self.ssrc,
        );
        self.seq = self.seq.wrapping_add(1);
        let body = &mut self.event[HEADER_LEN..len];
        body.copy_from_slice(payload);
        for ev in body.chunks_exact_mut(4) {
            let d = u16::from_be_bytes([ev[2], ev[3]]);
            let d = u16::try_from(scale(i64::from(d))).unwrap_or(u16::MAX);
            ev[2..4].copy_from_slice(&d.to_be_bytes());
        }
        self.event_len = len;
        Pushed::Accepted
    }

    /// Writes the next packet for the receiving leg into `out` and returns its length;
    /// `None` when nothing is ready. Call until `None` after each [`push`](Self::push).
    pub fn pop(&mut self, out: &mut [u8]) -> Option<usize> {
        if self.event_len > 0 {
            let len = std::mem::take(&mut self.event_len);
            out.get_mut(..len)?.copy_from_slice(&self.event[..len]);
            self.stats.events_out += 1;
            return Some(len);
        }
        let decoder = &self.inputs.get(self.current?)?.decoder;
        let (codec, frame) = (decoder.codec(), decoder.sample_rate().samples_per_frame());
        if self.pending_len < frame {
            return None;
        }
        let resampler = self.resampler.as_mut()?;
        let encoded = resampler
            .process(&self.pending[..frame], &mut self.resampled[..])
            .ok()
            .and_then(|n| {
                let room = out.get_mut(HEADER_LEN..)?;
                self.encoder.encode(&self.resampled[..n], room).ok()
            });
        // The frame is used up either way: one the codec refused is dropped, not retried.
        self.pending.copy_within(frame..self.pending_len, 0);
        self.pending_len -= frame;
        let ts = self.pending_out_ts;
        self.pending_in_ts = self.pending_in_ts.wrapping_add(codec.ticks_per_frame());
        self.pending_out_ts = self
            .pending_out_ts
            .wrapping_add(self.encoder.codec().ticks_per_frame());
        let Some(payload_len) = encoded else {
            self.stats.dropped += 1;
            return None;
        };
        write_header(
            out,
            self.out_pt,
            std::mem::take(&mut self.marker),
            self.seq,
            RtpTimestamp(ts),
            self.ssrc,
        )?;
        self.seq = self.seq.wrapping_add(1);
        self.stats.frames_out += 1;
        Some(HEADER_LEN + payload_len)
    }
}

/// A signed tick count as a (wrapping) RTP timestamp offset.
fn wrap(ticks: i64) -> u32 {
    u32::try_from(ticks.rem_euclid(1 << 32)).unwrap_or(0)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
