//! ITU-T G.722 at 64 kbit/s (mode 1): a 24-tap quadrature mirror filter splits 16 kHz
//! audio into two 8 kHz sub-bands, the lower coded with 6-bit ADPCM, the upper with
//! 2-bit ADPCM; one octet per pair of input samples, upper band in the two high bits
//! (RFC 3551 §4.5.2).
//!
//! Written from the recommendation's block descriptions (§3 encoder, §4 decoder, §6
//! arithmetic): the names in comments (LOGSCL, UPPOL2, FILTEZ…) are the spec's blocks.
//! The arithmetic is the spec's 16-bit fixed point, so our bitstream is the one any
//! conforming encoder produces for the same input: the tests check it against an
//! independent implementation's (ffmpeg's) encoder output bit for bit.

use super::CodecError;

/// QMF coefficients h0..h23 (§3.1.2 table), scaled by 2^13; symmetric.
const QMF: [i32; 24] = [
    3, -11, -11, 53, 12, -156, 32, 362, -210, -805, 951, 3876, 3876, 951, -805, -210, 362, 32,
    -156, 12, 53, -11, -11, 3,
];

/// Lower band, 6-bit quantiser decision levels (§3.3.1 table 6), in units of DETL/4096.
const Q6: [i32; 31] = [
    0, 35, 72, 110, 150, 190, 233, 276, 323, 370, 422, 473, 530, 587, 650, 714, 786, 858, 940,
    1023, 1121, 1219, 1339, 1458, 1612, 1765, 1980, 2195, 2557, 2919, 0,
];
/// Codes for a negative and a positive difference in each interval of [`Q6`].
const ILN: [u8; 32] = [
    0, 63, 62, 31, 30, 29, 28, 27, 26, 25, 24, 23, 22, 21, 20, 19, 18, 17, 16, 15, 14, 13, 12, 11,
    10, 9, 8, 7, 6, 5, 4, 0,
];
const ILP: [u8; 32] = [
    0, 61, 60, 59, 58, 57, 56, 55, 54, 53, 52, 51, 50, 49, 48, 47, 46, 45, 44, 43, 42, 41, 40, 39,
    38, 37, 36, 35, 34, 33, 32, 0,
];
/// 6-bit inverse quantiser outputs (§4.2.1, QQ6), scaled by 2^15 / DETL.
const QM6: [i32; 64] = [
    -136, -136, -136, -136, -24808, -21904, -19008, -16704, -14984, -13512, -12280, -11192, -10232,
    -9360, -8576, -7856, -7192, -6576, -6000, -5456, -4944, -4464, -4008, -3576, -3168, -2776,
    -2400, -2032, -1688, -1360, -1040, -728, 24808, 21904, 19008, 16704, 14984, 13512, 12280,
    11192, 10232, 9360, 8576, 7856, 7192, 6576, 6000, 5456, 4944, 4464, 4008, 3576, 3168, 2776,
    2400, 2032, 1688, 1360, 1040, 728, 432, 136, -432, -136,
];
/// 4-bit inverse quantiser outputs (§3.3.2, QQ4): the predictor sees only the top four
/// bits of the code, so a decoder that lost the two low bits stays in step.
const QM4: [i32; 16] = [
    0, -20456, -12896, -8968, -6288, -4240, -2584, -1200, 20456, 12896, 8968, 6288, 4240, 2584,
    1200, 0,
];
/// LOGSCL: log scale factor multipliers, indexed through [`RL42`].
const WL: [i32; 8] = [-60, -30, 58, 172, 334, 538, 1198, 3042];
const RL42: [usize; 16] = [0, 7, 6, 5, 4, 3, 2, 1, 7, 6, 5, 4, 3, 2, 1, 0];
/// SCALEL/SCALEH: the antilog table.
const ILB: [i32; 32] = [
    2048, 2093, 2139, 2186, 2233, 2282, 2332, 2383, 2435, 2489, 2543, 2599, 2656, 2714, 2774, 2834,
    2896, 2960, 3025, 3091, 3158, 3228, 3298, 3371, 3444, 3520, 3597, 3676, 3756, 3838, 3922, 4008,
];
/// Upper band: 2-bit inverse quantiser (QQ2), LOGSCH multipliers, code mapping.
const QM2: [i32; 4] = [-7408, -1616, 7408, 1616];
const WH: [i32; 3] = [0, -214, 798];
const RH2: [usize; 4] = [2, 1, 2, 1];
const IHN: [u8; 3] = [0, 1, 0];
const IHP: [u8; 3] = [0, 3, 2];

fn sat16(x: i32) -> i32 {
    x.clamp(-32_768, 32_767)
}

/// Arithmetic sign bit, as the spec's SG: 0 for zero and positive, -1 for negative.
fn sg(x: i32) -> i32 {
    x >> 15
}

/// One sub-band's adaptive predictor and scale factor (the blocks shared by encoder and
/// decoder, §3.6 for the lower band, §3.7 for the upper).
#[derive(Debug, Clone, Default)]
struct Band {
    /// Predicted value SL/SH, and its zero-section part SZL/SZH.
    s: i32,
    sz: i32,
    /// Reconstructed signal RLT1, RLT2 (delayed).
    r: [i32; 2],
    /// Partially reconstructed signal PLT1, PLT2 (delayed).
    p: [i32; 2],
    /// Pole coefficients AL1, AL2.
    a: [i32; 2],
    /// Zero coefficients BL1..BL6.
    b: [i32; 6],
    /// Quantised difference signal DLT1..DLT6 (delayed).
    d: [i32; 6],
    /// Log scale factor NBL/NBH and scale factor DETL/DETH.
    nb: i32,
    det: i32,
}

impl Band {
    fn new(det: i32) -> Band {
        Band {
            det,
            ..Band::default()
        }
    }

    /// LOGSCL/LOGSCH then SCALEL/SCALEH: adapt the scale factor to the code just sent.
    fn adapt_scale(&mut self, w: i32, max_nb: i32, shift_base: i32) {
        self.nb = ((self.nb * 127) >> 7) + w;
        self.nb = self.nb.clamp(0, max_nb);
        let wd1 = ((self.nb >> 6) & 31) as usize;
        let wd2 = shift_base - (self.nb >> 11);
        let wd3 = if wd2 < 0 {
            ILB[wd1] << -wd2
        } else {
            ILB[wd1] >> wd2
        };
        self.det = wd3 << 2;
    }

    /// RECONS, PARREC, UPPOL2, UPPOL1, UPZERO, DELAYA, FILTEP, FILTEZ, PREDIC: update
    /// the predictor with the quantised difference `d` and predict the next sample.
    fn update(&mut self, d: i32) {
        let r0 = sat16(self.s + d);
        let p0 = sat16(self.sz + d);

        // UPPOL2: second pole coefficient.
        let wd1 = sat16(self.a[0] << 2);
        let wd2 = if sg(p0) == sg(self.p[0]) { -wd1 } else { wd1 }.min(32_767);
        let wd3 = if sg(p0) == sg(self.p[1]) { 128 } else { -128 };
        let a2 = (wd3 + (wd2 >> 7) + ((self.a[1] * 32_512) >> 15)).clamp(-12_288, 12_288);

        // UPPOL1: first pole coefficient, limited by the new second (stability).
        let wd1 = if sg(p0) == sg(self.p[0]) { 192 } else { -192 };
        let a1 = sat16(wd1 + ((self.a[0] * 32_640) >> 15));
        let lim = sat16(15_360 - a2);
        let a1 = a1.clamp(-lim, lim);

        // UPZERO: sign-sign update of the zero coefficients.
        let step = if d == 0 { 0 } else { 128 };
        for (b, dl) in self.b.iter_mut().zip(self.d) {
            let wd2 = if sg(d) == sg(dl) { step } else { -step };
            *b = sat16(wd2 + ((*b * 32_640) >> 15));
        }

        // DELAYA: shift the delay lines.
        self.d.copy_within(0..5, 1);
        self.d[0] = d;
        self.r = [r0, self.r[0]];
        self.p = [p0, self.p[0]];
        self.a = [a1, a2];

        // FILTEP, FILTEZ, PREDIC.
        let sp = sat16(
            ((self.a[0] * sat16(self.r[0] + self.r[0])) >> 15)
                + ((self.a[1] * sat16(self.r[1] + self.r[1])) >> 15),
        );
        let mut sz = 0;
        for (b, dl) in self.b.iter().zip(self.d).rev() {
            sz = sat16(sz + ((b * sat16(dl + dl)) >> 15));
        }
        self.sz = sz;
        self.s = sat16(sp + sz);
    }
}

/// The lower band's scale factor and predictor state starts at DETL = 32 (§6.2 reset).
fn lower_band() -> Band {
    Band::new(32)
}

/// The upper band's at DETH = 8.
fn upper_band() -> Band {
    Band::new(8)
}

/// G.722 encoder, 64 kbit/s. Takes 16 kHz PCM (an even number of samples), gives one
/// octet per two samples.
#[derive(Debug, Clone)]
pub struct G722Encoder {
    low: Band,
    high: Band,
    /// Input history for the transmit QMF, newest last.
    x: [i32; 24],
}

impl Default for G722Encoder {
    fn default() -> Self {
        G722Encoder {
            low: lower_band(),
            high: upper_band(),
            x: [0; 24],
        }
    }
}

impl G722Encoder {
    /// Encodes `pcm` (even length) into `out`; returns the octets written.
    pub fn encode(&mut self, pcm: &[i16], out: &mut [u8]) -> Result<usize, CodecError> {
        let n = pcm.len() / 2;
        if !pcm.len().is_multiple_of(2) {
            return Err(CodecError::WrongFrameLen {
                want: pcm.len() + 1,
                got: pcm.len(),
            });
        }
        let have = out.len();
        let out = out
            .get_mut(..n)
            .ok_or(CodecError::OutputTooSmall { need: n, have })?;
        for (o, pair) in out.iter_mut().zip(pcm.chunks_exact(2)) {
            *o = self.encode_pair(pair[0], pair[1]);
        }
        Ok(n)
    }

    fn encode_pair(&mut self, first: i16, second: i16) -> u8 {
        // §3.1.2 transmit QMF: xA sums h(2i)·x(j−2i) from the newest sample back,
        // xB sums h(2i+1)·x(j−2i−1).
        self.x.copy_within(2.., 0);
        self.x[22] = i32::from(first);
        self.x[23] = i32::from(second);
        let (mut xa, mut xb) = (0i32, 0i32);
        for i in 0..12 {
            xa += QMF[2 * i] * self.x[23 - 2 * i];
            xb += QMF[2 * i + 1] * self.x[22 - 2 * i];
        }
        // 16-bit input, coefficients ×2^13: the sub-band signals come out at half scale,
        // the 15-bit range the ADPCM stages work in.
        let xl = sat16((xa + xb) >> 14);
        let xh = sat16((xa - xb) >> 14);

        // Lower band: SUBTRA, QUANTL (6-bit).
        let el = sat16(xl - self.low.s);
        let wd = if el >= 0 { el } else { -(el + 1) };
        let mut i = 1;
        while i < 30 && wd >= (Q6[i] * self.low.det) >> 12 {
            i += 1;
        }
        let il = if el < 0 { ILN[i] } else { ILP[i] };
        // INVQAL: the predictor works from the 4-bit code.
        let ril = usize::from(il >> 2);
        let dlt = (self.low.det * QM4[ril]) >> 15;
        self.low.adapt_scale(WL[RL42[ril]], 18_432, 8);
        self.low.update(dlt);

        // Upper band: SUBTRA, QUANTH (2-bit), INVQAH.
        let eh = sat16(xh - self.high.s);
        let wd = if eh >= 0 { eh } else { -(eh + 1) };
        let mih = if wd >= (564 * self.high.det) >> 12 {
            2
        } else {
            1
        };
        let ih = if eh < 0 { IHN[mih] } else { IHP[mih] };
        let dh = (self.high.det * QM2[usize::from(ih)]) >> 15;
        self.high.adapt_scale(WH[RH2[usize::from(ih)]], 22_528, 10);
        self.high.update(dh);

        (ih << 6) | il
    }
}

/// G.722 decoder, 64 kbit/s. Gives two 16 kHz samples per octet.
#[derive(Debug, Clone)]
pub struct G722Decoder {
    low: Band,
    high: Band,
    /// Receive QMF history: XD (difference) and XS (sum) signals, newest first.
    xd: [i32; 12],
    xs: [i32; 12],
}

impl Default for G722Decoder {
    fn default() -> Self {
        G722Decoder {
            low: lower_band(),
            high: upper_band(),
            xd: [0; 12],
            xs: [0; 12],
        }
    }
}

impl G722Decoder {
    /// Decodes `payload` into `out` (two samples per octet); returns the samples written.
    pub fn decode(&mut self, payload: &[u8], out: &mut [i16]) -> Result<usize, CodecError> {
        let need = payload.len() * 2;
        let have = out.len();
        let out = out
            .get_mut(..need)
            .ok_or(CodecError::OutputTooSmall { need, have })?;
        for (pair, code) in out.chunks_exact_mut(2).zip(payload) {
            let (a, b) = self.decode_octet(*code);
            pair[0] = a;
            pair[1] = b;
        }
        Ok(need)
    }

    fn decode_octet(&mut self, code: u8) -> (i16, i16) {
        let il = usize::from(code & 0x3f);
        let ih = usize::from(code >> 6);

        // Lower band, mode 1: INVQBL reconstructs from all six bits for the output…
        let dl = (self.low.det * QM6[il]) >> 15;
        let rl = (self.low.s + dl).clamp(-16_384, 16_383);
        // …while the predictor and scale factor follow the 4-bit code, as in the encoder.
        let ril = il >> 2;
        let dlt = (self.low.det * QM4[ril]) >> 15;
        self.low.adapt_scale(WL[RL42[ril]], 18_432, 8);
        self.low.update(dlt);

        // Upper band.
        let dh = (self.high.det * QM2[ih]) >> 15;
        let rh = (self.high.s + dh).clamp(-16_384, 16_383);
        self.high.adapt_scale(WH[RH2[ih]], 22_528, 10);
        self.high.update(dh);

        // §4.4 receive QMF: XOUT(j) = 2·Σ h(2i)·XD(j−i), XOUT(j+1) = 2·Σ h(2i+1)·XS(j−i).
        self.xd.copy_within(0..11, 1);
        self.xs.copy_within(0..11, 1);
        self.xd[0] = rl - rh;
        self.xs[0] = rl + rh;
        let (mut o1, mut o2) = (0i32, 0i32);
        for i in 0..12 {
            o1 += QMF[2 * i] * self.xd[i];
            o2 += QMF[2 * i + 1] * self.xs[i];
        }
        // Back to 16-bit scale (the encoder halved it; the coefficients are ×2^13).
        let to16 = |v: i32| i16::try_from(sat16(v >> 11)).unwrap_or(0);
        (to16(o1), to16(o2))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::testutil::*;
    use super::*;

    fn le16(b: &[u8]) -> Vec<i16> {
        b.chunks_exact(2)
            .map(|c| i16::from_le_bytes([c[0], c[1]]))
            .collect()
    }

    // Fixtures made by ffmpeg 5.1 (libavcodec's G.722, an independent implementation):
    //   python3 (see the commit) writes g722_in_16k.raw: 0.25 s of 440 Hz + 5 kHz + noise
    //   ffmpeg -f s16le -ar 16000 -ac 1 -i g722_in_16k.raw -c:a g722 -trellis 0 \
    //          -f g722 g722_ffmpeg.g722
    //   ffmpeg -f g722 -i g722_ffmpeg.g722 -f s16le -ar 16000 -ac 1 \
    //          g722_ffmpeg_decoded_16k.raw
    const INPUT: &[u8] = include_bytes!("../../tests/fixtures/g722_in_16k.raw");
    const BITSTREAM: &[u8] = include_bytes!("../../tests/fixtures/g722_ffmpeg.g722");
    const DECODED: &[u8] = include_bytes!("../../tests/fixtures/g722_ffmpeg_decoded_16k.raw");

    #[test]
    fn encoder_matches_an_independent_encoder_bit_for_bit() {
        let pcm = le16(INPUT);
        let mut enc = G722Encoder::default();
        let mut out = vec![0u8; pcm.len() / 2];
        // In 20 ms frames, as on the wire.
        for (pcm, out) in pcm.chunks(320).zip(out.chunks_mut(160)) {
            assert_eq!(enc.encode(pcm, out).unwrap(), out.len());
        }
        let first_diff = out.iter().zip(BITSTREAM).position(|(a, b)| a != b);
        assert_eq!(first_diff, None, "bitstreams differ");
        assert_eq!(out.len(), BITSTREAM.len());
    }

    #[test]
    fn decoder_matches_an_independent_decoder() {
        let want = le16(DECODED);
        let mut dec = G722Decoder::default();
        let mut got = vec![0i16; BITSTREAM.len() * 2];
        assert_eq!(dec.decode(BITSTREAM, &mut got).unwrap(), want.len());
        let worst = want
            .iter()
            .zip(&got)
            .map(|(a, b)| (i32::from(*a) - i32::from(*b)).abs())
            .max()
            .unwrap();
        assert!(worst <= 1, "largest difference {worst}");
    }

    /// The QMF pair's delay (two 24-tap filters, 11.5 samples each, less the half
    /// sample of the pairing), in 16 kHz samples.
    const DELAY: usize = 22;

    #[test]
    fn delay_is_22_samples_on_broadband_input() {
        let pcm = le16(INPUT);
        let mut back = vec![0i16; pcm.len()];
        let mut bits = vec![0u8; pcm.len() / 2];
        G722Encoder::default().encode(&pcm, &mut bits).unwrap();
        G722Decoder::default().decode(&bits, &mut back).unwrap();
        assert_eq!(best_lag(&pcm[500..3000], &back[500..], 60), DELAY);
        let snr = snr_db(&pcm[500..3500], &back[500 + DELAY..3500 + DELAY]);
        assert!(snr > 20.0, "SNR {snr:.1} dB");
    }

    /// Encode then decode tones across both sub-bands: the frequency is kept, the level
    /// within 1 dB, and the SNR (after the codec's delay) is what 64 kbit/s gives.
    #[test]
    fn tones_round_trip_with_frequency_level_and_snr() {
        let candidates = [300.0, 1000.0, 2000.0, 3000.0, 5000.0, 6000.0, 7000.0];
        for freq in [300.0, 1000.0, 3000.0, 6000.0] {
            for amp in [1000.0, 8000.0, 20_000.0] {
                let n = 16_000;
                let pcm = tone(freq, amp, 16_000, 0, n);
                let mut enc = G722Encoder::default();
                let mut dec = G722Decoder::default();
                let mut bits = vec![0u8; n / 2];
                let mut back = vec![0i16; n];
                enc.encode(&pcm, &mut bits).unwrap();
                dec.decode(&bits, &mut back).unwrap();
                let tail = &back[4000..];
                assert_eq!(dominant(tail, 16_000, &candidates), freq, "{freq} Hz");
                let db = 20.0 * (rms(tail) / rms(&pcm[4000..])).log10();
                assert!(db.abs() < 1.0, "{freq} Hz at {amp}: {db:.2} dB");
                let lag = DELAY;
                let snr = snr_db(&pcm[4000..n - lag], &back[4000 + lag..]);
                // Measured: 40-64 dB below 4 kHz, 26-27 dB for the 2-bit upper band.
                let floor = if freq > 4000.0 { 22.0 } else { 35.0 };
                assert!(snr > floor, "{freq} Hz at {amp}: SNR {snr:.1} dB");
            }
        }
    }

    #[test]
    fn odd_input_and_short_buffers_are_errors() {
        let mut enc = G722Encoder::default();
        assert!(enc.encode(&[0; 3], &mut [0; 4]).is_err());
        assert!(enc.encode(&[0; 4], &mut [0; 1]).is_err());
        let mut dec = G722Decoder::default();
        assert!(dec.decode(&[0; 4], &mut [0; 7]).is_err());
        // Any octet is a valid code: all 256 decode without a panic.
        let all: Vec<u8> = (0..=255).collect();
        let mut out = vec![0i16; 512];
        assert_eq!(dec.decode(&all, &mut out).unwrap(), 512);
    }
}
