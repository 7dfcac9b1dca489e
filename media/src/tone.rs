//! Tones voxgate sends itself, as G.711 RTP: the ringback an agent hears while the lead
//! it is connected to rings (no early media), and the simulated carrier's test tone.
//! Sans-IO: a [`TonePlayer`] writes the next 20 ms packet into a buffer when asked; the
//! driver decides when and where to send it.

// One G.711 implementation for the whole crate: the codec module's.
pub use crate::codec::{linear_to_alaw, linear_to_ulaw};

/// A tone: frequencies summed, and an on/off cadence.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ToneSpec {
    /// Up to two frequencies in Hz (0: none), each at `amplitude`.
    pub freqs: [f64; 2],
    /// Peak of each frequency, in 16-bit sample units.
    pub amplitude: f64,
    /// Milliseconds on, then off (`off_ms` 0: continuous).
    pub on_ms: u32,
    pub off_ms: u32,
}

impl ToneSpec {
    /// North American ringback (440 + 480 Hz, 2 s on, 4 s off), what Twilio and most US
    /// carriers play; about -19 dBm0 per frequency.
    pub const RINGBACK: ToneSpec = ToneSpec {
        freqs: [440.0, 480.0],
        amplitude: 3000.0,
        on_ms: 2000,
        off_ms: 4000,
    };

    /// A continuous 440 Hz test tone.
    pub const TEST: ToneSpec = ToneSpec {
        freqs: [440.0, 0.0],
        amplitude: 6000.0,
        on_ms: 1000,
        off_ms: 0,
    };
}

/// Which G.711 law a stream carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Law {
    /// PCMU, static payload type 0.
    Ulaw,
    /// PCMA, static payload type 8.
    Alaw,
}

/// Samples (and RTP timestamp units) in one 20 ms packet at 8 kHz.
pub const SAMPLES_PER_PACKET: usize = 160;
/// An RTP header and one packet of G.711.
pub const PACKET_LEN: usize = 12 + SAMPLES_PER_PACKET;

/// One tone stream's state: its RTP identity and where in the tone it is.
#[derive(Debug, Clone)]
pub struct TonePlayer {
    spec: ToneSpec,
    law: Law,
    payload_type: u8,
    ssrc: u32,
    seq: u16,
    timestamp: u32,
    /// Samples generated so far.
    sample: u64,
}

impl TonePlayer {
    /// A stream of `spec` in `law` with payload type `payload_type`, starting at the
    /// given (random) SSRC, sequence number and timestamp.
    #[must_use]
    pub fn new(spec: ToneSpec, law: Law, payload_type: u8, random: [u32; 3]) -> TonePlayer {
        TonePlayer {
            spec,
            law,
            payload_type,
            ssrc: random[0],
            seq: u16::try_from(random[1] & 0xffff).unwrap_or(0),
            timestamp: random[2],
            sample: 0,
        }
    }

    /// Writes the next 20 ms packet into `out` (at least [`PACKET_LEN`] bytes) and
    /// returns its length.
    pub fn next_packet(&mut self, out: &mut [u8]) -> usize {
        let Some(out) = out.get_mut(..PACKET_LEN) else {
            return 0;
        };
        let (header, payload) = out.split_at_mut(12);
        // The marker starts the stream (RFC 3551 §4.1).
        let marker = if self.sample == 0 { 0x80 } else { 0 };
        header[0] = 0x80;
        header[1] = marker | (self.payload_type & 0x7f);
        header[2..4].copy_from_slice(&self.seq.to_be_bytes());
        header[4..8].copy_from_slice(&self.timestamp.to_be_bytes());
        header[8..12].copy_from_slice(&self.ssrc.to_be_bytes());
        let period = u64::from(self.spec.on_ms + self.spec.off_ms) * 8;
        let on = u64::from(self.spec.on_ms) * 8;
        for byte in payload.iter_mut() {
            let n = self.sample;
            let sounding = self.spec.off_ms == 0 || period == 0 || n % period < on;
            let v = if sounding {
                #[allow(clippy::cast_precision_loss)]
                let t = (n % 8000) as f64 / 8000.0;
                self.spec
                    .freqs
                    .iter()
                    .filter(|f| **f > 0.0)
                    .map(|f| (std::f64::consts::TAU * f * t).sin())
                    .sum::<f64>()
                    * self.spec.amplitude
            } else {
                0.0
            };
            #[allow(clippy::cast_possible_truncation)]
            let s = v.clamp(-32_768.0, 32_767.0) as i16;
            *byte = match self.law {
                Law::Ulaw => linear_to_ulaw(s),
                Law::Alaw => linear_to_alaw(s),
            };
            self.sample += 1;
        }
        self.seq = self.seq.wrapping_add(1);
        self.timestamp = self.timestamp.wrapping_add(160);
        PACKET_LEN
    }

    /// Skips `packets` packets' worth of time without sending them (the sender stalled):
    /// the timestamp and the cadence move on with the wall clock, the sequence number
    /// does not (nothing was sent, RFC 3550 §5.1).
    pub fn skip(&mut self, packets: u32) {
        let n = packets.saturating_mul(160);
        self.timestamp = self.timestamp.wrapping_add(n);
        self.sample += u64::from(n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ringback_packets_follow_the_cadence() {
        let mut p = TonePlayer::new(ToneSpec::RINGBACK, Law::Ulaw, 0, [7, 100, 1000]);
        let mut buf = [0u8; PACKET_LEN];
        let mut loud = Vec::new();
        for i in 0..300u32 {
            assert_eq!(p.next_packet(&mut buf), PACKET_LEN);
            if i == 0 {
                assert_eq!(buf[1], 0x80, "marker on the first packet");
            }
            assert_eq!(
                u16::from_be_bytes([buf[2], buf[3]]),
                100u16.wrapping_add(u16::try_from(i).unwrap_or(0))
            );
            assert_eq!(
                u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]),
                1000 + 160 * i
            );
            // μ-law silence is 0xff (and 0x7f): anything else is sound.
            loud.push(buf[12..].iter().any(|b| *b != 0xff && *b != 0x7f));
        }
        // 2 s on (100 packets), 4 s off (200 packets).
        assert!(loud[..100].iter().all(|l| *l));
        assert!(loud[100..300].iter().all(|l| !*l));
    }
}
