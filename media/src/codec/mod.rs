//! Audio codecs for the decode side of a leg: PCMU and PCMA (ITU-T G.711), G.722 at
//! 64 kbit/s (ITU-T G.722) and Opus (RFC 6716, RTP payload RFC 7587).
//!
//! What this module guarantees:
//! - [`Codec`] is named from the SDP encoding name (RFC 4566 `a=rtpmap`, matched without
//!   regard to case, RFC 4855 §3) and keeps the two rates apart that SDP conflates: the
//!   RTP clock rate ([`ClockRate`], what timestamps count) and the real sample rate of
//!   the PCM ([`SampleRate`]). They differ for G.722 (clock 8000, audio at 16 kHz, RFC 3551
//!   §4.5.2) and may for Opus (clock always 48000, RFC 7587 §4.1).
//! - [`Encoder`] and [`Decoder`] work on one 20 ms frame (the packet time every carrier and
//!   softphone we meet uses) of mono 16-bit PCM at the codec's [`SampleRate`], writing into
//!   a buffer the caller owns. Nothing is allocated per frame: every state (the Opus one
//!   included) is allocated once, by the constructor.
//! - A malformed payload is an error ([`CodecError`]), never a panic: payloads come from
//!   the network.
//! - [`Decoder::conceal`] fills a lost frame (silence for G.711 and G.722, libopus-style
//!   concealment for Opus), so a playout clock never has a hole.

mod g711;
mod g722;
mod opus;

pub use g711::{alaw_to_linear, linear_to_alaw, linear_to_ulaw, ulaw_to_linear};
pub use g722::{G722Decoder, G722Encoder};
pub use opus::{OpusDecoder, OpusEncoder};

use crate::rewrite::ClockRate;
use thiserror::Error;

/// Real sampling rate of PCM audio in Hz: how many 16-bit samples make a second.
/// Kept apart from [`ClockRate`] (RTP timestamp units) by its type: the two are equal
/// for G.711 and differ for G.722.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SampleRate(u32);

impl SampleRate {
    /// Narrowband telephony (G.711).
    pub const HZ_8000: SampleRate = SampleRate(8000);
    /// Wideband (G.722).
    pub const HZ_16000: SampleRate = SampleRate(16_000);
    /// Fullband (Opus' internal rate).
    pub const HZ_48000: SampleRate = SampleRate(48_000);

    /// One of the rates this crate handles (8, 16 or 48 kHz).
    #[must_use]
    pub fn new(hz: u32) -> Option<SampleRate> {
        matches!(hz, 8000 | 16_000 | 48_000).then_some(SampleRate(hz))
    }

    #[must_use]
    pub fn hz(self) -> u32 {
        self.0
    }

    /// Samples in one 20 ms frame at this rate.
    #[must_use]
    pub fn samples_per_frame(self) -> usize {
        // 8000..48000 / 50 fits any usize.
        (self.0 / 50) as usize
    }
}

/// Length of a frame: 20 ms, the `ptime` default of RFC 3551 §4.5 for these codecs.
pub const FRAME_MS: u32 = 20;

/// Samples in a 20 ms frame at the highest rate: a buffer this long takes any frame.
pub const MAX_FRAME_SAMPLES: usize = 960;

/// Largest payload an [`Encoder`] writes for one frame: G.711 160 octets, G.722 160,
/// Opus (RFC 6716 §3.4 R5 caps one frame at 1275 octets; we ask for far less).
pub const MAX_PAYLOAD_LEN: usize = 1275;

/// A codec we can decode and encode, as named in SDP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Codec {
    /// G.711 μ-law, static payload type 0 (RFC 3551 §4.5.14).
    Pcmu,
    /// G.711 A-law, static payload type 8 (RFC 3551 §4.5.14).
    Pcma,
    /// G.722 64 kbit/s, static payload type 9 (RFC 3551 §4.5.2).
    G722,
    /// Opus, dynamic payload type, `opus/48000/2` in SDP (RFC 7587 §7), sent mono here.
    Opus,
}

impl Codec {
    /// The codec an `a=rtpmap` encoding name names, case-insensitively (RFC 4855 §3).
    #[must_use]
    pub fn from_encoding_name(name: &str) -> Option<Codec> {
        [Codec::Pcmu, Codec::Pcma, Codec::G722, Codec::Opus]
            .into_iter()
            .find(|c| c.encoding_name().eq_ignore_ascii_case(name))
    }

    /// The encoding name to put in `a=rtpmap` (the registered spelling).
    #[must_use]
    pub fn encoding_name(self) -> &'static str {
        match self {
            Codec::Pcmu => "PCMU",
            Codec::Pcma => "PCMA",
            Codec::G722 => "G722",
            Codec::Opus => "opus",
        }
    }

    /// Static payload type (RFC 3551 §6, table 4); Opus has none.
    #[must_use]
    pub fn static_payload_type(self) -> Option<u8> {
        match self {
            Codec::Pcmu => Some(0),
            Codec::Pcma => Some(8),
            Codec::G722 => Some(9),
            Codec::Opus => None,
        }
    }

    /// The RTP timestamp clock (what `a=rtpmap` states). G.722 says 8000 although it
    /// samples at 16 kHz, an error kept for compatibility (RFC 3551 §4.5.2); Opus always
    /// says 48000 whatever the audio bandwidth (RFC 7587 §4.1).
    #[must_use]
    pub fn clock_rate(self) -> ClockRate {
        match self {
            Codec::Pcmu | Codec::Pcma | Codec::G722 => ClockRate::G711,
            Codec::Opus => ClockRate(48_000),
        }
    }

    /// The rate of the PCM the [`Decoder`] gives and the [`Encoder`] takes.
    #[must_use]
    pub fn sample_rate(self) -> SampleRate {
        match self {
            Codec::Pcmu | Codec::Pcma => SampleRate::HZ_8000,
            Codec::G722 => SampleRate::HZ_16000,
            Codec::Opus => SampleRate::HZ_48000,
        }
    }

    /// PCM samples in one 20 ms frame.
    #[must_use]
    pub fn samples_per_frame(self) -> usize {
        self.sample_rate().samples_per_frame()
    }

    /// RTP timestamp ticks in one 20 ms frame (160 for G.722 as for G.711).
    #[must_use]
    pub fn ticks_per_frame(self) -> u32 {
        self.clock_rate().0 / 50
    }
}

/// Why a frame could not be decoded or encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum CodecError {
    #[error("output buffer holds {have} samples or octets, the frame needs {need}")]
    OutputTooSmall { need: usize, have: usize },
    #[error("input frame has {got} samples, the codec takes {want}")]
    WrongFrameLen { want: usize, got: usize },
    #[error("empty payload")]
    EmptyPayload,
    #[error("payload of {0} octets is larger than one 20 ms frame may be")]
    PayloadTooLong(usize),
    #[error("{codec:?} has no {rate:?} mode")]
    UnsupportedRate { codec: Codec, rate: SampleRate },
    #[error("the Opus codec refused the frame: {0}")]
    Opus(&'static str),
}

/// Decodes one stream's payloads into 20 ms frames of PCM at [`Codec::sample_rate`].
/// One per stream: G.722 and Opus carry state from frame to frame.
pub enum Decoder {
    Pcmu,
    Pcma,
    G722(Box<G722Decoder>),
    Opus(Box<OpusDecoder>),
}

impl std::fmt::Debug for Decoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Decoder({:?})", self.codec())
    }
}

impl Decoder {
    /// A decoder in its initial state. Allocates (the codec state) once, here.
    pub fn new(codec: Codec) -> Result<Decoder, CodecError> {
        Ok(match codec {
            Codec::Pcmu => Decoder::Pcmu,
            Codec::Pcma => Decoder::Pcma,
            Codec::G722 => Decoder::G722(Box::default()),
            Codec::Opus => Decoder::Opus(Box::new(OpusDecoder::new()?)),
        })
    }

    /// A decoder giving PCM at `rate` instead of [`Codec::sample_rate`]: Opus decodes
    /// to 8, 16 or 48 kHz whatever bandwidth was coded (RFC 6716 §2), so a leg bridged
    /// to G.711 asks for 8 kHz and needs no resampler. The other codecs have one rate;
    /// asking for another is [`CodecError::UnsupportedRate`].
    pub fn with_rate(codec: Codec, rate: SampleRate) -> Result<Decoder, CodecError> {
        match codec {
            Codec::Opus => Ok(Decoder::Opus(Box::new(OpusDecoder::with_rate(rate)?))),
            _ if rate == codec.sample_rate() => Decoder::new(codec),
            _ => Err(CodecError::UnsupportedRate { codec, rate }),
        }
    }

    /// The rate of the PCM this decoder gives.
    #[must_use]
    pub fn sample_rate(&self) -> SampleRate {
        match self {
            Decoder::Opus(d) => d.sample_rate(),
            _ => self.codec().sample_rate(),
        }
    }

    #[must_use]
    pub fn codec(&self) -> Codec {
        match self {
            Decoder::Pcmu => Codec::Pcmu,
            Decoder::Pcma => Codec::Pcma,
            Decoder::G722(_) => Codec::G722,
            Decoder::Opus(_) => Codec::Opus,
        }
    }

    /// Decodes one RTP payload into `out` and returns the number of samples written.
    /// G.711 and G.722 payloads decode whole (one octet per sample or sample pair, so a
    /// 10 or 30 ms packet works too, if `out` is long enough); an Opus payload gives the
    /// duration its TOC states (RFC 6716 §3.1), at most 20 ms here.
    pub fn decode(&mut self, payload: &[u8], out: &mut [i16]) -> Result<usize, CodecError> {
        if payload.is_empty() {
            return Err(CodecError::EmptyPayload);
        }
        match self {
            Decoder::Pcmu => g711::decode(payload, out, ulaw_to_linear),
            Decoder::Pcma => g711::decode(payload, out, alaw_to_linear),
            Decoder::G722(d) => d.decode(payload, out),
            Decoder::Opus(d) => d.decode(payload, out),
        }
    }

    /// Fills `out` with one 20 ms frame standing in for a lost packet and returns its
    /// length: silence for the stateless G.711 and for G.722 (whose ADPCM state simply
    /// goes on from the next packet), Opus' packet-loss concealment otherwise.
    pub fn conceal(&mut self, out: &mut [i16]) -> Result<usize, CodecError> {
        let n = self.sample_rate().samples_per_frame();
        let have = out.len();
        let frame = out
            .get_mut(..n)
            .ok_or(CodecError::OutputTooSmall { need: n, have })?;
        match self {
            Decoder::Opus(d) => d.conceal(frame),
            _ => {
                frame.fill(0);
                Ok(n)
            }
        }
    }
}

/// Encodes 20 ms frames of PCM at [`Codec::sample_rate`] into RTP payloads.
pub enum Encoder {
    Pcmu,
    Pcma,
    G722(Box<G722Encoder>),
    Opus(Box<OpusEncoder>),
}

impl std::fmt::Debug for Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Encoder({:?})", self.codec())
    }
}

impl Encoder {
    /// An encoder in its initial state. Allocates (the codec state) once, here.
    pub fn new(codec: Codec) -> Result<Encoder, CodecError> {
        Ok(match codec {
            Codec::Pcmu => Encoder::Pcmu,
            Codec::Pcma => Encoder::Pcma,
            Codec::G722 => Encoder::G722(Box::default()),
            Codec::Opus => Encoder::Opus(Box::new(OpusEncoder::new()?)),
        })
    }

    /// An encoder taking PCM at `rate` instead of [`Codec::sample_rate`]: Opus codes
    /// from 8 kHz (narrowband), 16 kHz (wideband) or 48 kHz (fullband), and the cheap
    /// SILK-only narrowband is all a leg bridged to G.711 can fill. The other codecs
    /// have one rate; asking for another is [`CodecError::UnsupportedRate`].
    pub fn with_rate(codec: Codec, rate: SampleRate) -> Result<Encoder, CodecError> {
        match codec {
            Codec::Opus => Ok(Encoder::Opus(Box::new(OpusEncoder::with_rate(rate)?))),
            _ if rate == codec.sample_rate() => Encoder::new(codec),
            _ => Err(CodecError::UnsupportedRate { codec, rate }),
        }
    }

    /// The rate of the PCM this encoder takes.
    #[must_use]
    pub fn sample_rate(&self) -> SampleRate {
        match self {
            Encoder::Opus(e) => e.sample_rate(),
            _ => self.codec().sample_rate(),
        }
    }

    #[must_use]
    pub fn codec(&self) -> Codec {
        match self {
            Encoder::Pcmu => Codec::Pcmu,
            Encoder::Pcma => Codec::Pcma,
            Encoder::G722(_) => Codec::G722,
            Encoder::Opus(_) => Codec::Opus,
        }
    }

    /// Encodes exactly one 20 ms frame (`pcm.len() == sample_rate().samples_per_frame()`)
    /// into `out` and returns the payload length.
    pub fn encode(&mut self, pcm: &[i16], out: &mut [u8]) -> Result<usize, CodecError> {
        let want = self.sample_rate().samples_per_frame();
        if pcm.len() != want {
            return Err(CodecError::WrongFrameLen {
                want,
                got: pcm.len(),
            });
        }
        match self {
            Encoder::Pcmu => g711::encode(pcm, out, linear_to_ulaw),
            Encoder::Pcma => g711::encode(pcm, out, linear_to_alaw),
            Encoder::G722(e) => e.encode(pcm, out),
            Encoder::Opus(e) => e.encode(pcm, out),
        }
    }
}

/// Signal helpers shared by the codec, resampler and jitter buffer tests.
#[cfg(test)]
pub(crate) mod testutil {
    /// `n` samples of a sine of `freq` Hz at `rate` Hz with peak `amp`, starting at
    /// sample `start` (so consecutive frames join without a click).
    pub fn tone(freq: f64, amp: f64, rate: u32, start: usize, n: usize) -> Vec<i16> {
        (start..start + n)
            .map(|i| {
                let t = i as f64 / f64::from(rate);
                (amp * (std::f64::consts::TAU * freq * t).sin()).round() as i16
            })
            .collect()
    }

    /// RMS level of `x`.
    pub fn rms(x: &[i16]) -> f64 {
        if x.is_empty() {
            return 0.0;
        }
        (x.iter().map(|s| f64::from(*s).powi(2)).sum::<f64>() / x.len() as f64).sqrt()
    }

    /// Goertzel power of `freq` in `x`, normalised so a sine of peak A gives about A/2.
    pub fn goertzel(x: &[i16], freq: f64, rate: u32) -> f64 {
        let w = std::f64::consts::TAU * freq / f64::from(rate);
        let c = 2.0 * w.cos();
        let (mut s1, mut s2) = (0.0, 0.0);
        for v in x {
            let s0 = f64::from(*v) + c * s1 - s2;
            s2 = s1;
            s1 = s0;
        }
        let p = s1 * s1 + s2 * s2 - c * s1 * s2;
        p.max(0.0).sqrt() / x.len() as f64
    }

    /// The frequency among `candidates` with the most energy in `x`.
    pub fn dominant(x: &[i16], rate: u32, candidates: &[f64]) -> f64 {
        candidates
            .iter()
            .copied()
            .max_by(|a, b| goertzel(x, *a, rate).total_cmp(&goertzel(x, *b, rate)))
            .unwrap_or(0.0)
    }

    /// Signal-to-noise ratio in dB of `got` against `want` (same length).
    pub fn snr_db(want: &[i16], got: &[i16]) -> f64 {
        let sig: f64 = want.iter().map(|s| f64::from(*s).powi(2)).sum();
        let noise: f64 = want
            .iter()
            .zip(got)
            .map(|(a, b)| (f64::from(*a) - f64::from(*b)).powi(2))
            .sum();
        10.0 * (sig / noise.max(1e-9)).log10()
    }

    /// The lag (0..max_lag) at which `got` best matches `want`, by cross-correlation.
    pub fn best_lag(want: &[i16], got: &[i16], max_lag: usize) -> usize {
        (0..max_lag)
            .max_by(|a, b| xcorr(want, got, *a).total_cmp(&xcorr(want, got, *b)))
            .unwrap_or(0)
    }

    fn xcorr(want: &[i16], got: &[i16], lag: usize) -> f64 {
        want.iter()
            .zip(got.iter().skip(lag))
            .map(|(a, b)| f64::from(*a) * f64::from(*b))
            .sum()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::testutil::*;
    use super::*;

    #[test]
    fn names_and_rates_follow_the_rfcs() {
        assert_eq!(Codec::from_encoding_name("pcmu"), Some(Codec::Pcmu));
        assert_eq!(Codec::from_encoding_name("PCMA"), Some(Codec::Pcma));
        assert_eq!(Codec::from_encoding_name("g722"), Some(Codec::G722));
        assert_eq!(Codec::from_encoding_name("OPUS"), Some(Codec::Opus));
        assert_eq!(Codec::from_encoding_name("G729"), None);
        // RFC 3551 §4.5.2: G.722's clock is 8000 but it samples at 16 kHz.
        assert_eq!(Codec::G722.clock_rate(), ClockRate(8000));
        assert_eq!(Codec::G722.sample_rate(), SampleRate::HZ_16000);
        assert_eq!(Codec::G722.ticks_per_frame(), 160);
        assert_eq!(Codec::G722.samples_per_frame(), 320);
        // RFC 7587 §4.1: Opus' clock is 48000.
        assert_eq!(Codec::Opus.clock_rate(), ClockRate(48_000));
        assert_eq!(Codec::Opus.ticks_per_frame(), 960);
        assert_eq!(Codec::Pcmu.static_payload_type(), Some(0));
        assert_eq!(Codec::Pcma.static_payload_type(), Some(8));
        assert_eq!(Codec::G722.static_payload_type(), Some(9));
        assert_eq!(Codec::Opus.static_payload_type(), None);
        assert_eq!(SampleRate::new(44_100), None);
        assert_eq!(SampleRate::new(16_000), Some(SampleRate::HZ_16000));
    }

    #[test]
    fn every_codec_round_trips_a_tone_through_the_common_api() {
        for codec in [Codec::Pcmu, Codec::Pcma, Codec::G722, Codec::Opus] {
            let mut enc = Encoder::new(codec).unwrap();
            let mut dec = Decoder::new(codec).unwrap();
            let rate = codec.sample_rate().hz();
            let n = codec.samples_per_frame();
            let mut payload = [0u8; MAX_PAYLOAD_LEN];
            let mut frame = [0i16; MAX_FRAME_SAMPLES];
            let mut got = Vec::new();
            for k in 0..25 {
                let pcm = tone(1000.0, 8000.0, rate, k * n, n);
                let len = enc.encode(&pcm, &mut payload).unwrap();
                assert!(len > 0 && len <= MAX_PAYLOAD_LEN);
                let m = dec.decode(&payload[..len], &mut frame).unwrap();
                assert_eq!(m, n, "{codec:?}");
                got.extend_from_slice(&frame[..m]);
            }
            // Past the codecs' start-up (Opus' look-ahead, G.722's QMF delay).
            let tail = &got[got.len() / 2..];
            let f = dominant(tail, rate, &[300.0, 500.0, 1000.0, 2000.0, 3000.0]);
            assert_eq!(f, 1000.0, "{codec:?}");
            let level = rms(tail) / (8000.0 / 2f64.sqrt());
            assert!((0.85..1.15).contains(&level), "{codec:?}: level {level}");
        }
    }

    /// Opus at the G.711 rate: a 1 kHz tone goes through an 8 kHz Opus pair at its
    /// frequency and level with 160-sample frames and 48 kHz RTP ticks; the codecs with
    /// one rate refuse another.
    #[test]
    fn opus_works_at_the_other_legs_rate() {
        for rate in [SampleRate::HZ_8000, SampleRate::HZ_16000] {
            let mut enc = Encoder::with_rate(Codec::Opus, rate).unwrap();
            let mut dec = Decoder::with_rate(Codec::Opus, rate).unwrap();
            assert_eq!((enc.sample_rate(), dec.sample_rate()), (rate, rate));
            assert_eq!(enc.codec().ticks_per_frame(), 960);
            let n = rate.samples_per_frame();
            let mut payload = [0u8; MAX_PAYLOAD_LEN];
            let mut frame = [0i16; MAX_FRAME_SAMPLES];
            let mut got = Vec::new();
            for k in 0..25 {
                let pcm = tone(1000.0, 8000.0, rate.hz(), k * n, n);
                let len = enc.encode(&pcm, &mut payload).unwrap();
                let m = dec.decode(&payload[..len], &mut frame).unwrap();
                assert_eq!(m, n);
                got.extend_from_slice(&frame[..m]);
            }
            assert_eq!(dec.conceal(&mut frame), Ok(n));
            let tail = &got[got.len() / 2..];
            let f = dominant(tail, rate.hz(), &[300.0, 500.0, 1000.0, 2000.0, 3000.0]);
            assert_eq!(f, 1000.0, "{rate:?}");
            let level = rms(tail) / (8000.0 / 2f64.sqrt());
            assert!((0.85..1.15).contains(&level), "{rate:?}: level {level}");
            assert!(matches!(
                enc.encode(&[0i16; 960], &mut payload),
                Err(CodecError::WrongFrameLen { want, .. }) if want == n
            ));
        }
        for codec in [Codec::Pcmu, Codec::Pcma, Codec::G722] {
            assert!(Encoder::with_rate(codec, codec.sample_rate()).is_ok());
            assert!(matches!(
                Decoder::with_rate(codec, SampleRate::HZ_48000),
                Err(CodecError::UnsupportedRate { .. })
            ));
            assert!(matches!(
                Encoder::with_rate(codec, SampleRate::HZ_48000),
                Err(CodecError::UnsupportedRate { .. })
            ));
        }
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        for codec in [Codec::Pcmu, Codec::Pcma, Codec::G722, Codec::Opus] {
            let mut dec = Decoder::new(codec).unwrap();
            let mut small = [0i16; 10];
            assert_eq!(dec.decode(&[], &mut small), Err(CodecError::EmptyPayload));
            assert!(matches!(
                dec.decode(&[0x55; 160], &mut small),
                Err(CodecError::OutputTooSmall { .. })
            ));
            assert!(dec.conceal(&mut small).is_err());
            let mut enc = Encoder::new(codec).unwrap();
            let mut out = [0u8; MAX_PAYLOAD_LEN];
            assert!(matches!(
                enc.encode(&[0i16; 100], &mut out),
                Err(CodecError::WrongFrameLen { .. })
            ));
            let pcm = vec![0i16; codec.samples_per_frame()];
            assert!(matches!(
                enc.encode(&pcm, &mut out[..1]),
                Err(CodecError::OutputTooSmall { .. }) | Err(CodecError::Opus(_))
            ));
        }
        // Garbage Opus (a code-3 TOC claiming more frames than the bytes hold).
        let mut dec = Decoder::new(Codec::Opus).unwrap();
        let mut out = [0i16; MAX_FRAME_SAMPLES];
        for junk in [
            &[0xff_u8, 0xff, 0xff][..],
            &[0x0b, 0xbf, 0x01, 0x02],
            &[0xfc; 7],
        ] {
            let _ = dec.decode(junk, &mut out);
        }
    }

    #[test]
    fn conceal_gives_one_frame() {
        for codec in [Codec::Pcmu, Codec::Pcma, Codec::G722, Codec::Opus] {
            let mut dec = Decoder::new(codec).unwrap();
            let mut out = [1i16; MAX_FRAME_SAMPLES];
            assert_eq!(dec.conceal(&mut out), Ok(codec.samples_per_frame()));
        }
    }
}
