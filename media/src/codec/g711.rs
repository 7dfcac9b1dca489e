//! ITU-T G.711 μ-law and A-law: encode by computing the segment, decode by a table of
//! 256 entries built at compile time. Stateless, one octet per sample.

use super::CodecError;

/// G.711 μ-law encoding of one sample (ITU-T G.711 §2, with the usual bias of 0x84).
#[must_use]
pub fn linear_to_ulaw(sample: i16) -> u8 {
    const BIAS: i32 = 0x84;
    const CLIP: i32 = 32_635;
    let mut s = i32::from(sample);
    let sign = if s < 0 {
        s = -s;
        0x80
    } else {
        0
    };
    s = s.min(CLIP) + BIAS;
    // s < 2^15: the exponent is the position of its highest bit above bit 7.
    let exponent =
        7 - i32::try_from(s.unsigned_abs().wrapping_shl(17).leading_zeros().min(7)).unwrap_or(7);
    let mantissa = (s >> (exponent + 3)) & 0x0f;
    !u8::try_from(sign | (exponent << 4) | mantissa).unwrap_or(0)
}

/// G.711 A-law encoding of one sample (ITU-T G.711 §3: 13-bit magnitude, even bits
/// inverted).
#[must_use]
pub fn linear_to_alaw(sample: i16) -> u8 {
    let mut s = i32::from(sample) >> 3;
    let sign = if s >= 0 {
        0x80
    } else {
        s = -s - 1;
        0
    };
    let s = s.min(0x0fff);
    let code = if s < 32 {
        s >> 1
    } else {
        let exponent = 31 - i32::try_from(s.unsigned_abs().leading_zeros()).unwrap_or(31) - 4;
        (exponent << 4) | ((s >> exponent) & 0x0f)
    };
    u8::try_from(sign | code).unwrap_or(0) ^ 0x55
}

/// μ-law octet to the middle of its decision interval, scaled to 16 bits.
const fn ulaw_decode(code: u8) -> i16 {
    let u = !code;
    let exponent = (u >> 4) & 0x07;
    let mantissa = (u & 0x0f) as i32;
    // Undo the bias of 0x84 added before the segment search.
    let t = (((mantissa << 3) + 0x84) << exponent) - 0x84;
    if u & 0x80 != 0 {
        -t as i16
    } else {
        t as i16
    }
}

/// A-law octet to the middle of its decision interval, scaled to 16 bits.
const fn alaw_decode(code: u8) -> i16 {
    let a = code ^ 0x55;
    let exponent = (a >> 4) & 0x07;
    let mantissa = (a & 0x0f) as i32;
    let t = if exponent == 0 {
        (mantissa << 4) + 8
    } else {
        ((mantissa << 4) + 0x108) << (exponent - 1)
    };
    // A set sign bit is positive in A-law.
    if a & 0x80 != 0 {
        t as i16
    } else {
        -t as i16
    }
}

const fn table(ulaw: bool) -> [i16; 256] {
    let mut t = [0i16; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = if ulaw {
            ulaw_decode(i as u8)
        } else {
            alaw_decode(i as u8)
        };
        i += 1;
    }
    t
}

static ULAW: [i16; 256] = table(true);
static ALAW: [i16; 256] = table(false);

/// G.711 μ-law decoding of one octet.
#[must_use]
pub fn ulaw_to_linear(code: u8) -> i16 {
    ULAW[usize::from(code)]
}

/// G.711 A-law decoding of one octet.
#[must_use]
pub fn alaw_to_linear(code: u8) -> i16 {
    ALAW[usize::from(code)]
}

pub(super) fn decode(
    payload: &[u8],
    out: &mut [i16],
    f: fn(u8) -> i16,
) -> Result<usize, CodecError> {
    let have = out.len();
    let out = out
        .get_mut(..payload.len())
        .ok_or(CodecError::OutputTooSmall {
            need: payload.len(),
            have,
        })?;
    for (o, b) in out.iter_mut().zip(payload) {
        *o = f(*b);
    }
    Ok(payload.len())
}

pub(super) fn encode(pcm: &[i16], out: &mut [u8], f: fn(i16) -> u8) -> Result<usize, CodecError> {
    let have = out.len();
    let out = out.get_mut(..pcm.len()).ok_or(CodecError::OutputTooSmall {
        need: pcm.len(),
        have,
    })?;
    for (o, s) in out.iter_mut().zip(pcm) {
        *o = f(*s);
    }
    Ok(pcm.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ulaw_matches_the_reference_points() {
        assert_eq!(linear_to_ulaw(0), 0xff);
        assert_eq!(linear_to_ulaw(-1), 0x7f);
        assert_eq!(linear_to_ulaw(32_767), 0x80);
        assert_eq!(linear_to_ulaw(-32_768), 0x00);
        assert_eq!(ulaw_to_linear(0xff), 0);
        assert_eq!(ulaw_to_linear(0x80), 32_124);
        assert_eq!(ulaw_to_linear(0x00), -32_124);
    }

    #[test]
    fn alaw_matches_the_reference_points() {
        assert_eq!(linear_to_alaw(0), 0xd5);
        assert_eq!(linear_to_alaw(-1), 0x55);
        assert_eq!(linear_to_alaw(32_767), 0xaa);
        assert_eq!(linear_to_alaw(-32_768), 0x2a);
        assert_eq!(alaw_to_linear(0xd5), 8);
        assert_eq!(alaw_to_linear(0x55), -8);
        assert_eq!(alaw_to_linear(0xaa), 32_256);
        assert_eq!(alaw_to_linear(0x2a), -32_256);
    }

    /// Every code decodes to a value that encodes back to the same code (the decoder
    /// gives a point inside each decision interval), except μ-law's negative zero.
    #[test]
    fn decode_then_encode_is_the_identity_on_codes() {
        for c in 0..=255u8 {
            if c != 0x7f {
                assert_eq!(linear_to_ulaw(ulaw_to_linear(c)), c, "ulaw {c:#x}");
            }
            assert_eq!(linear_to_alaw(alaw_to_linear(c)), c, "alaw {c:#x}");
        }
    }

    /// G.711's quantisation error is at most half a step of the segment: below 1/16 of
    /// the magnitude above the first segments (about 38 dB SNR for loud signals).
    #[test]
    fn error_is_bounded_by_the_segment_step() {
        for s in (-32_768i32..=32_767).step_by(7) {
            let s16 = i16::try_from(s).unwrap_or(0);
            for (enc, dec) in [
                (
                    linear_to_ulaw as fn(i16) -> u8,
                    ulaw_to_linear as fn(u8) -> i16,
                ),
                (linear_to_alaw, alaw_to_linear),
            ] {
                let back = i32::from(dec(enc(s16)));
                let err = (back - s).abs();
                let bound = (s.abs() / 16).max(16) + 8;
                // Beyond the top decision level both laws clip (μ-law 32124, A-law 32256).
                if s.abs() < 31_000 {
                    assert!(err <= bound, "{s} -> {back}");
                }
            }
        }
    }
}
