//! The listening side of one leg, sans-IO: what the relay's tap copies of a leg's RTP
//! become when somebody listens (a recording, the DTMF reporter, later an IVR gather).
//!
//! [`LegListener::handle_rtp`] takes one packet as the relay forwarded it and its
//! arrival `now`, and
//! - decodes audio payloads with the leg's codec into 16-bit PCM and hands the frame
//!   back with its SSRC and RTP timestamp, for the recorder to place;
//! - feeds telephone-event payloads to an RFC 4733 receiver;
//! - runs the in-band (Goertzel) detector over the decoded audio when asked to;
//!
//! and every digit goes through one [`DtmfArbiter`] with the leg's SIP INFO digits
//! ([`LegListener::handle_info`]), so a press is reported once however many ways it
//! arrived ([`LegListener::poll_digit`]).
//!
//! Audio is decoded in arrival order, without a jitter buffer of its own: the recorder
//! places every frame by its RTP timestamp within its late window (its timeline *is* the
//! jitter buffer of a recording), and a reordered packet costs the in-band detector one
//! 13 ms block at most.

use std::collections::VecDeque;
use std::time::Instant;

use crate::codec::{Codec, Decoder, MAX_FRAME_SAMPLES};
use crate::dtmf::arbiter::DtmfArbiter;
use crate::dtmf::inband::{DetectorConfig, InbandDetector};
use crate::dtmf::info::InfoBody;
use crate::dtmf::rfc4733::{ReceiverConfig, Rfc4733Receiver};
use crate::dtmf::{DtmfEvent, DtmfSignal};
use crate::rewrite::ClockRate;
use crate::rtp::{RtpPacket, RtpTimestamp, Ssrc};

/// What the leg negotiated, as the packets the listener sees are numbered.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ListenConfig {
    /// Audio payload types and their codecs.
    pub codecs: Vec<(u8, Codec)>,
    /// The `telephone-event` payload type and its clock (RFC 4733 §7.1.1).
    pub telephone_event: Option<(u8, ClockRate)>,
    /// Look for DTMF tones in the audio (carriers that send digits in-band).
    pub inband: bool,
}

/// One decoded audio frame, borrowed from the listener until the next packet.
#[derive(Debug, Clone, Copy)]
pub struct HeardFrame<'a> {
    pub ssrc: Ssrc,
    /// RTP timestamp of the first sample.
    pub timestamp: RtpTimestamp,
    /// The RTP clock of `timestamp`.
    pub clock: ClockRate,
    pub codec: Codec,
    /// Mono PCM at `codec.sample_rate()`.
    pub samples: &'a [i16],
}

/// What [`LegListener::handle_rtp`] made of a packet.
#[derive(Debug, Clone, Copy)]
pub enum Heard<'a> {
    Audio(HeardFrame<'a>),
    /// A telephone-event packet (its digit, if new, waits in [`LegListener::poll_digit`]).
    Event,
    /// Not RTP, a payload type the leg did not negotiate, or a payload that would not
    /// decode: counted and ignored.
    Ignored,
}

/// Counters, for the call's stats and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ListenStats {
    pub frames: u64,
    pub events: u64,
    pub ignored: u64,
    pub decode_errors: u64,
    pub digits: u64,
}

/// One leg's decoders and DTMF receivers.
#[derive(Debug)]
pub struct LegListener {
    config: ListenConfig,
    /// One decoder per negotiated audio payload type, made when first needed.
    decoders: Vec<(u8, Decoder)>,
    rfc4733: Option<Rfc4733Receiver>,
    inband: Option<InbandDetector>,
    arbiter: DtmfArbiter,
    pcm: Vec<i16>,
    narrow: Vec<i16>,
    digits: VecDeque<DtmfEvent>,
    stats: ListenStats,
}

impl LegListener {
    #[must_use]
    pub fn new(config: ListenConfig) -> LegListener {
        let (rfc4733, inband) = (receiver(&config), detector(&config));
        LegListener {
            config,
            decoders: Vec::new(),
            rfc4733,
            inband,
            arbiter: DtmfArbiter::default(),
            pcm: vec![0; MAX_FRAME_SAMPLES * 3],
            narrow: Vec::with_capacity(MAX_FRAME_SAMPLES),
            digits: VecDeque::new(),
            stats: ListenStats::default(),
        }
    }

    /// New negotiation (re-INVITE): codecs and payload types may have changed. The DTMF
    /// state carries over (a press does not end because the SDP did).
    pub fn reconfigure(&mut self, config: ListenConfig) {
        if config.telephone_event.map(|t| t.1) != self.config.telephone_event.map(|t| t.1) {
            self.rfc4733 = receiver(&config);
        }
        if config.inband != self.inband.is_some() {
            self.inband = detector(&config);
        }
        self.decoders
            .retain(|(pt, d)| config.codecs.contains(&(*pt, d.codec())));
        self.config = config;
    }

    #[must_use]
    pub fn stats(&self) -> ListenStats {
        self.stats
    }

    /// One RTP packet of the leg, as forwarded, that arrived at `now`.
    pub fn handle_rtp(&mut self, packet: &[u8], now: Instant) -> Heard<'_> {
        let Ok(p) = RtpPacket::new_checked(packet) else {
            self.stats.ignored += 1;
            return Heard::Ignored;
        };
        let pt = p.payload_type();
        if let (Some((te, _)), Some(rx)) = (self.config.telephone_event, self.rfc4733.as_mut()) {
            if pt == te {
                self.stats.events += 1;
                if rx.handle_rtp(&p, now).is_err() {
                    self.stats.ignored += 1;
                }
                self.collect(now);
                return Heard::Event;
            }
        }
        let Some(&(_, codec)) = self.config.codecs.iter().find(|(c, _)| *c == pt) else {
            self.stats.ignored += 1;
            return Heard::Ignored;
        };
        let i = match self.decoders.iter().position(|(c, _)| *c == pt) {
            Some(i) => i,
            None => match Decoder::new(codec) {
                Ok(d) => {
                    self.decoders.push((pt, d));
                    self.decoders.len() - 1
                }
                Err(_) => {
                    self.stats.decode_errors += 1;
                    return Heard::Ignored;
                }
            },
        };
        let Some((_, decoder)) = self.decoders.get_mut(i) else {
            return Heard::Ignored;
        };
        let n = match decoder.decode(p.payload(), &mut self.pcm) {
            Ok(n) => n,
            Err(_) => {
                self.stats.decode_errors += 1;
                return Heard::Ignored;
            }
        };
        self.stats.frames += 1;
        if let Some(det) = self.inband.as_mut() {
            // The detector works at 8 kHz: wideband audio is averaged down (DTMF tones
            // lie below 1.7 kHz, far under the new Nyquist frequency).
            let step = (codec.sample_rate().hz() / 8000).max(1) as usize;
            if step == 1 {
                det.process(&self.pcm[..n]);
            } else {
                self.narrow.clear();
                let divisor = i32::try_from(step).unwrap_or(1);
                self.narrow
                    .extend(self.pcm[..n].chunks_exact(step).map(|c| {
                        let sum: i32 = c.iter().map(|&s| i32::from(s)).sum();
                        // The mean of i16s fits an i16.
                        i16::try_from(sum / divisor).unwrap_or(0)
                    }));
                det.process(&self.narrow);
            }
            self.collect(now);
        }
        Heard::Audio(HeardFrame {
            ssrc: p.ssrc(),
            timestamp: p.timestamp(),
            clock: codec.clock_rate(),
            codec,
            samples: &self.pcm[..n],
        })
    }

    /// Digits of a SIP INFO the leg sent (RFC 6086 with `application/dtmf-relay` or
    /// `application/dtmf` bodies).
    pub fn handle_info(&mut self, body: &InfoBody, now: Instant) {
        for s in body.signals() {
            self.signal(&s, now);
        }
    }

    /// Closes RFC 4733 presses whose end packets never came.
    pub fn handle_timeout(&mut self, now: Instant) {
        if let Some(rx) = self.rfc4733.as_mut() {
            rx.handle_timeout(now);
        }
        self.collect(now);
    }

    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.rfc4733
            .as_ref()
            .and_then(Rfc4733Receiver::poll_timeout)
    }

    /// The next new key press, once per press whichever way it came.
    pub fn poll_digit(&mut self) -> Option<DtmfEvent> {
        self.digits.pop_front()
    }

    fn collect(&mut self, now: Instant) {
        while let Some(s) = self.rfc4733.as_mut().and_then(Rfc4733Receiver::poll_signal) {
            self.signal(&s, now);
        }
        while let Some(s) = self.inband.as_mut().and_then(InbandDetector::poll_signal) {
            self.signal(&s, now);
        }
    }

    fn signal(&mut self, s: &DtmfSignal, now: Instant) {
        if self.arbiter.accept(s, now) {
            if let DtmfSignal::Begin(e) = s {
                self.stats.digits += 1;
                self.digits.push_back(*e);
            }
        }
    }
}

/// The RFC 4733 receiver `config` asks for, at its telephone-event clock.
fn receiver(config: &ListenConfig) -> Option<Rfc4733Receiver> {
    config.telephone_event.map(|(_, clock)| {
        Rfc4733Receiver::new(ReceiverConfig {
            clock,
            ..ReceiverConfig::default()
        })
    })
}

/// The in-band detector `config` asks for.
fn detector(config: &ListenConfig) -> Option<InbandDetector> {
    config
        .inband
        .then(|| InbandDetector::new(DetectorConfig::default()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::codec::Encoder;
    use crate::dtmf::inband::{ToneGenerator, ToneLevels};
    use crate::dtmf::info::InfoContentType;
    use crate::dtmf::rfc4733;
    use crate::dtmf::{Digit, DtmfSource};
    use std::time::Duration;

    fn rtp(pt: u8, seq: u16, ts: u32, marker: bool, payload: &[u8]) -> Vec<u8> {
        let mut v = vec![0x80, pt | if marker { 0x80 } else { 0 }];
        v.extend_from_slice(&seq.to_be_bytes());
        v.extend_from_slice(&ts.to_be_bytes());
        v.extend_from_slice(&0x1234_5678u32.to_be_bytes());
        v.extend_from_slice(payload);
        v
    }

    fn config(inband: bool) -> ListenConfig {
        ListenConfig {
            codecs: vec![(0, Codec::Pcmu), (9, Codec::G722)],
            telephone_event: Some((101, ClockRate::G711)),
            inband,
        }
    }

    #[test]
    fn audio_is_decoded_with_its_timestamp_and_unknown_types_are_ignored() {
        let mut l = LegListener::new(config(false));
        let t0 = Instant::now();
        let mut enc = Encoder::new(Codec::Pcmu).unwrap();
        let pcm: Vec<i16> = (0..160).map(|i| ((i % 40) * 400 - 8000) as i16).collect();
        let mut payload = [0u8; 160];
        enc.encode(&pcm, &mut payload).unwrap();
        match l.handle_rtp(&rtp(0, 1, 8000, false, &payload), t0) {
            Heard::Audio(f) => {
                assert_eq!(f.timestamp, RtpTimestamp(8000));
                assert_eq!(f.samples.len(), 160);
                assert_eq!(f.codec, Codec::Pcmu);
                // µ-law keeps the waveform within a few percent.
                let err: i64 = f
                    .samples
                    .iter()
                    .zip(&pcm)
                    .map(|(a, b)| (i64::from(*a) - i64::from(*b)).abs())
                    .max()
                    .unwrap();
                assert!(err < 300, "max error {err}");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            l.handle_rtp(&rtp(8, 2, 8160, false, &payload), t0),
            Heard::Ignored
        ));
        assert!(matches!(l.handle_rtp(&[0x80, 0], t0), Heard::Ignored));
        assert_eq!(l.stats().frames, 1);
        assert_eq!(l.stats().ignored, 2);
    }

    #[test]
    fn one_digit_per_rfc4733_press_with_redundant_end_packets() {
        let mut l = LegListener::new(config(false));
        let t0 = Instant::now();
        let mut seq = 10;
        for (i, d) in [Digit::D1, Digit::Pound].into_iter().enumerate() {
            let ts = 16_000 + 8000 * i as u32;
            for step in 0..5u16 {
                let payload = rfc4733::encode(d.event_code(), false, 10, 400 * (step + 1));
                seq += 1;
                l.handle_rtp(&rtp(101, seq, ts, step == 0, &payload), t0);
            }
            for _ in 0..3 {
                let payload = rfc4733::encode(d.event_code(), true, 10, 2400);
                seq += 1;
                l.handle_rtp(&rtp(101, seq, ts, false, &payload), t0);
            }
        }
        let got: Vec<_> = std::iter::from_fn(|| l.poll_digit()).collect();
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!(got[0].digit, Digit::D1);
        assert_eq!(got[1].digit, Digit::Pound);
        assert!(got.iter().all(|e| e.source == DtmfSource::Rfc4733));
    }

    #[test]
    fn inband_tones_are_heard_and_an_info_of_the_same_press_is_not_a_second_digit() {
        let mut l = LegListener::new(config(true));
        let t0 = Instant::now();
        let mut gen = ToneGenerator::new(8000, ToneLevels::default());
        gen.push(
            Digit::D5,
            Duration::from_millis(100),
            Duration::from_millis(100),
        );
        gen.push(
            Digit::D9,
            Duration::from_millis(100),
            Duration::from_millis(100),
        );
        let mut enc = Encoder::new(Codec::Pcmu).unwrap();
        let mut frame = [0i16; 160];
        let mut payload = [0u8; 160];
        for i in 0..25u16 {
            frame.fill(0);
            gen.fill(&mut frame);
            enc.encode(&frame, &mut payload).unwrap();
            let now = t0 + Duration::from_millis(20 * u64::from(i));
            l.handle_rtp(&rtp(0, i, 160 * u32::from(i), false, &payload), now);
            if i == 3 {
                // The same press reported by SIP INFO as well.
                let body =
                    InfoBody::parse(InfoContentType::DtmfRelay, b"Signal=5\r\nDuration=100\r\n")
                        .unwrap();
                l.handle_info(&body, now);
            }
        }
        let got: Vec<_> = std::iter::from_fn(|| l.poll_digit())
            .map(|e| e.digit)
            .collect();
        assert_eq!(got, vec![Digit::D5, Digit::D9]);
    }

    #[test]
    fn wideband_audio_is_narrowed_for_the_inband_detector() {
        let mut l = LegListener::new(config(true));
        let t0 = Instant::now();
        let mut gen = ToneGenerator::new(16_000, ToneLevels::default());
        gen.push(
            Digit::Star,
            Duration::from_millis(120),
            Duration::from_millis(60),
        );
        let mut enc = Encoder::new(Codec::G722).unwrap();
        let mut frame = [0i16; 320];
        let mut payload = [0u8; 160];
        for i in 0..15u16 {
            frame.fill(0);
            gen.fill(&mut frame);
            let n = enc.encode(&frame, &mut payload).unwrap();
            let now = t0 + Duration::from_millis(20 * u64::from(i));
            l.handle_rtp(&rtp(9, i, 160 * u32::from(i), false, &payload[..n]), now);
        }
        let got: Vec<_> = std::iter::from_fn(|| l.poll_digit())
            .map(|e| e.digit)
            .collect();
        assert_eq!(got, vec![Digit::Star]);
    }
}
