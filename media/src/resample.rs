//! Sample-rate conversion between 8, 16 and 48 kHz, one 20 ms frame at a time, for
//! transcoding between legs whose codecs sample at different rates (G.711 at 8 kHz,
//! G.722 at 16 kHz, Opus at 48 kHz) and for mixing them into one recording.
//!
//! What it guarantees:
//! - One 20 ms frame in, one 20 ms frame out, always: the stream keeps its timing, so a
//!   frame placed by its RTP timestamp stays in place after conversion.
//! - Band-limited: rubato's synchronous FFT resampler (a windowed-sinc anti-aliasing
//!   filter applied in the frequency domain), so downsampling does not fold the upper
//!   band into speech and upsampling adds no images.
//! - A fixed delay of 10 ms (half a frame) at any pair of rates, stated by
//!   [`Resampler::delay`]; zero when the rates are equal (the frame is copied).
//! - No allocation per frame: rubato's buffers and our two f32 frames are allocated by
//!   [`Resampler::new`].

use crate::codec::SampleRate;
use rubato::audioadapter_buffers::direct::InterleavedSlice;
use rubato::{Fft, FixedSync, Resampler as _};
use std::time::Duration;
use thiserror::Error;

/// Why a resampler could not be made or a frame converted.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ResampleError {
    #[error("resampler construction failed: {0}")]
    Construction(String),
    #[error("input frame has {got} samples, a 20 ms frame has {want}")]
    WrongFrameLen { want: usize, got: usize },
    #[error("output buffer holds {have} samples, the frame needs {need}")]
    OutputTooSmall { need: usize, have: usize },
    #[error("the resampler refused the frame")]
    Process,
}

/// Converts a stream of 20 ms mono frames from one rate to another. One per stream: it
/// carries the filter's overlap from frame to frame.
pub struct Resampler {
    from: SampleRate,
    to: SampleRate,
    /// `None` when `from == to`.
    inner: Option<Fft<f32>>,
    input: Vec<f32>,
    output: Vec<f32>,
}

impl std::fmt::Debug for Resampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resampler")
            .field("from", &self.from)
            .field("to", &self.to)
            .finish_non_exhaustive()
    }
}

impl Resampler {
    /// A resampler from `from` to `to`; allocates all it will need.
    pub fn new(from: SampleRate, to: SampleRate) -> Result<Resampler, ResampleError> {
        let n_in = from.samples_per_frame();
        let n_out = to.samples_per_frame();
        let inner = if from == to {
            None
        } else {
            let fft = Fft::<f32>::new(
                from.hz() as usize,
                to.hz() as usize,
                n_in,
                1,
                FixedSync::Both,
            )
            .map_err(|e| ResampleError::Construction(e.to_string()))?;
            // FixedSync::Both with a chunk of whole 20 ms at rates that divide 48 kHz
            // gives exactly one frame each way; anything else would break the timing.
            if fft.input_frames_next() != n_in || fft.output_frames_next() != n_out {
                return Err(ResampleError::Construction(format!(
                    "chunks of {} in, {} out instead of {n_in}, {n_out}",
                    fft.input_frames_next(),
                    fft.output_frames_next()
                )));
            }
            Some(fft)
        };
        Ok(Resampler {
            from,
            to,
            inner,
            input: vec![0.0; n_in],
            output: vec![0.0; n_out],
        })
    }

    #[must_use]
    pub fn from_rate(&self) -> SampleRate {
        self.from
    }

    #[must_use]
    pub fn to_rate(&self) -> SampleRate {
        self.to
    }

    /// How much later a sound comes out than it went in, in output samples.
    #[must_use]
    pub fn delay_samples(&self) -> usize {
        self.inner
            .as_ref()
            .map_or(0, rubato::Resampler::output_delay)
    }

    /// The same delay as a duration: 10 ms between any two different rates.
    #[must_use]
    pub fn delay(&self) -> Duration {
        let d = self.delay_samples() as u64;
        Duration::from_micros(d * 1_000_000 / u64::from(self.to.hz()))
    }

    /// Converts one 20 ms frame (`input.len() == from.samples_per_frame()`) into `out`;
    /// returns the samples written (`to.samples_per_frame()`).
    pub fn process(&mut self, input: &[i16], out: &mut [i16]) -> Result<usize, ResampleError> {
        let n_in = self.from.samples_per_frame();
        let n_out = self.to.samples_per_frame();
        if input.len() != n_in {
            return Err(ResampleError::WrongFrameLen {
                want: n_in,
                got: input.len(),
            });
        }
        let have = out.len();
        let out = out
            .get_mut(..n_out)
            .ok_or(ResampleError::OutputTooSmall { need: n_out, have })?;
        let Some(fft) = self.inner.as_mut() else {
            out.copy_from_slice(input);
            return Ok(n_out);
        };
        for (f, s) in self.input.iter_mut().zip(input) {
            *f = f32::from(*s) / 32_768.0;
        }
        let adapter_in =
            InterleavedSlice::new(&self.input[..], 1, n_in).map_err(|_| ResampleError::Process)?;
        let mut adapter_out = InterleavedSlice::new_mut(&mut self.output[..], 1, n_out)
            .map_err(|_| ResampleError::Process)?;
        let (_, written) = fft
            .process_into_buffer(&adapter_in, &mut adapter_out, None)
            .map_err(|_| ResampleError::Process)?;
        if written != n_out {
            return Err(ResampleError::Process);
        }
        for (o, f) in out.iter_mut().zip(&self.output) {
            #[allow(clippy::cast_possible_truncation)]
            let s = (f * 32_768.0).round().clamp(-32_768.0, 32_767.0) as i16;
            *o = s;
        }
        Ok(n_out)
    }

    /// Forgets the filter's history (a new stream, after a resync).
    pub fn reset(&mut self) {
        if let Some(fft) = self.inner.as_mut() {
            fft.reset();
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::codec::testutil::*;

    const RATES: [SampleRate; 3] = [
        SampleRate::HZ_8000,
        SampleRate::HZ_16000,
        SampleRate::HZ_48000,
    ];

    fn run(from: SampleRate, to: SampleRate, freq: f64, frames: usize) -> (Vec<i16>, Resampler) {
        let mut r = Resampler::new(from, to).unwrap();
        let n = from.samples_per_frame();
        let mut out = Vec::new();
        let mut buf = [0i16; 960];
        for k in 0..frames {
            let frame = tone(freq, 10_000.0, from.hz(), k * n, n);
            let m = r.process(&frame, &mut buf).unwrap();
            assert_eq!(m, to.samples_per_frame());
            out.extend_from_slice(&buf[..m]);
        }
        (out, r)
    }

    /// Every pair of rates keeps a tone's frequency and level, and the output matches
    /// the ideal tone at the output rate delayed by exactly [`Resampler::delay`].
    #[test]
    fn tones_keep_frequency_level_and_phase_at_the_stated_delay() {
        for from in RATES {
            for to in RATES {
                // A tone both rates carry (below 4 kHz for 8 kHz).
                for freq in [440.0, 1000.0, 3000.0] {
                    let (out, r) = run(from, to, freq, 25);
                    let d = r.delay_samples();
                    if from == to {
                        assert_eq!(d, 0);
                    } else {
                        assert_eq!(r.delay(), Duration::from_millis(10), "{from:?}->{to:?}");
                    }
                    let body = &out[out.len() / 2..];
                    let cands = [300.0, 440.0, 1000.0, 2000.0, 3000.0];
                    assert_eq!(dominant(body, to.hz(), &cands), freq, "{from:?}->{to:?}");
                    let db = 20.0 * (rms(body) / (10_000.0 / 2f64.sqrt())).log10();
                    assert!(db.abs() < 0.5, "{from:?}->{to:?} {freq} Hz: {db:.2} dB");
                    let ideal = tone(freq, 10_000.0, to.hz(), 0, out.len());
                    let half = out.len() / 2;
                    let snr = snr_db(&ideal[half - d..out.len() - d], &out[half..]);
                    assert!(snr > 30.0, "{from:?}->{to:?} {freq} Hz: SNR {snr:.1} dB");
                }
            }
        }
    }

    /// Downsampling removes what the lower rate cannot carry instead of folding it
    /// back: 6 kHz at 16 or 48 kHz must not come out as 2 kHz at 8 kHz.
    #[test]
    fn downsampling_does_not_alias() {
        for from in [SampleRate::HZ_16000, SampleRate::HZ_48000] {
            let (out, _) = run(from, SampleRate::HZ_8000, 6000.0, 25);
            let body = &out[out.len() / 2..];
            let level = rms(body) / (10_000.0 / 2f64.sqrt());
            assert!(level < 0.01, "{from:?}: 6 kHz leaks at {level}");
        }
    }

    #[test]
    fn wrong_sizes_are_errors() {
        let mut r = Resampler::new(SampleRate::HZ_8000, SampleRate::HZ_48000).unwrap();
        let mut out = [0i16; 960];
        assert!(matches!(
            r.process(&[0; 100], &mut out),
            Err(ResampleError::WrongFrameLen { .. })
        ));
        assert!(matches!(
            r.process(&[0; 160], &mut out[..500]),
            Err(ResampleError::OutputTooSmall { .. })
        ));
        r.reset();
        assert_eq!(r.process(&[0; 160], &mut out), Ok(960));
    }
}
