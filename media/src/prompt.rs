//! Prompts: an uploaded audio file decoded once, down-mixed to mono and resampled to
//! the three rates calls play at (8 kHz for G.711 legs, 16 kHz for G.722, 48 kHz for
//! Opus), so playback costs nothing but a copy (SPEC §3 "Prompts").
//!
//! Bytes in, PCM out: no file system. WAV, MP3, OGG/Vorbis and FLAC through symphonia
//! (only those formats are compiled in); anything else is a [`PromptError`] whose message
//! says why, for the API's 422.

use std::io::Cursor;

use rubato::audioadapter_buffers::direct::InterleavedSlice;
use rubato::{Fft, FixedSync, Resampler as _};
use symphonia::core::audio::SampleBuffer;
use symphonia::core::codecs::{
    CodecType, DecoderOptions, CODEC_TYPE_FLAC, CODEC_TYPE_MP1, CODEC_TYPE_MP2, CODEC_TYPE_MP3,
    CODEC_TYPE_NULL, CODEC_TYPE_VORBIS,
};
use symphonia::core::errors::Error as SymError;
use symphonia::core::formats::FormatOptions;
use symphonia::core::io::{MediaSourceStream, MediaSourceStreamOptions};
use symphonia::core::meta::MetadataOptions;
use symphonia::core::probe::Hint;
use thiserror::Error;

use crate::recorder::SampleRate;

/// Longest prompt accepted: hold music loops, so ten minutes is plenty, and it bounds
/// the memory one upload can take (10 min at 48 kHz stereo f32 is 230 MB before the
/// down-mix; mono f32 is kept, 115 MB at most).
pub const MAX_SECONDS: u64 = 600;

/// Why an upload is not a usable prompt.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum PromptError {
    #[error("not a WAV, MP3, OGG/Vorbis or FLAC file ({0})")]
    NotAudio(String),
    #[error("the file has no audio track")]
    NoAudioTrack,
    #[error("the audio codec is not supported: {0}")]
    UnsupportedCodec(String),
    #[error("the file is truncated: {decoded} of {expected} sample frames present")]
    Truncated { decoded: u64, expected: u64 },
    #[error("the audio data is corrupt: {0}")]
    Corrupt(String),
    #[error("the file holds no audio samples")]
    Empty,
    #[error("the audio is longer than {MAX_SECONDS} s")]
    TooLong,
    #[error("the file does not give its sample rate")]
    NoSampleRate,
}

/// The container an upload came in (one of the four symphonia is built with here).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Wav,
    Mp3,
    Ogg,
    Flac,
}

impl Format {
    /// The name the API and the store use.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Wav => "wav",
            Format::Mp3 => "mp3",
            Format::Ogg => "ogg",
            Format::Flac => "flac",
        }
    }

    /// From the container's magic bytes, else the codec symphonia found: an MP3 has no
    /// container (it may open with an ID3 tag or straight with a frame), and a FLAC file
    /// may too (ID3 before `fLaC`).
    fn detect(bytes: &[u8], codec: CodecType) -> Format {
        if bytes.len() >= 12 && &bytes[0..4] == b"RIFF" && &bytes[8..12] == b"WAVE" {
            Format::Wav
        } else if bytes.starts_with(b"OggS") || codec == CODEC_TYPE_VORBIS {
            Format::Ogg
        } else if bytes.starts_with(b"fLaC") || codec == CODEC_TYPE_FLAC {
            Format::Flac
        } else if [CODEC_TYPE_MP1, CODEC_TYPE_MP2, CODEC_TYPE_MP3].contains(&codec) {
            Format::Mp3
        } else {
            // PCM in a container other than RIFF: only WAV's reader yields PCM here.
            Format::Wav
        }
    }
}

/// A decoded prompt at the three playback rates.
#[derive(Debug, Clone)]
pub struct Prompt {
    /// Mono 16-bit PCM at 8 kHz.
    pub pcm_8k: Vec<i16>,
    /// Mono 16-bit PCM at 16 kHz.
    pub pcm_16k: Vec<i16>,
    /// Mono 16-bit PCM at 48 kHz.
    pub pcm_48k: Vec<i16>,
    /// What the upload was.
    pub format: Format,
    pub source_rate: SampleRate,
    pub source_channels: usize,
}

impl Prompt {
    /// Playback length in milliseconds.
    #[must_use]
    pub fn duration_ms(&self) -> u64 {
        self.pcm_8k.len() as u64 / 8
    }

    /// The samples for a leg playing at `rate` (8 kHz unless wideband: 16 kHz from
    /// 16 kHz, 48 kHz from 48 kHz).
    #[must_use]
    pub fn pcm(&self, rate: SampleRate) -> &[i16] {
        if rate.0 >= 48_000 {
            &self.pcm_48k
        } else if rate.0 >= 16_000 {
            &self.pcm_16k
        } else {
            &self.pcm_8k
        }
    }
}

/// Decodes an uploaded file (see the module docs).
pub fn decode(bytes: &[u8]) -> Result<Prompt, PromptError> {
    let (mono, rate, channels, codec) = decode_mono(bytes)?;
    Ok(Prompt {
        pcm_8k: resample(&mono, rate, 8000)?,
        pcm_16k: resample(&mono, rate, 16_000)?,
        pcm_48k: resample(&mono, rate, 48_000)?,
        format: Format::detect(bytes, codec),
        source_rate: SampleRate(rate),
        source_channels: channels,
    })
}

/// Decodes to mono f32 (the mean of the channels) at the file's own rate; also gives
/// the channel count and the codec.
fn decode_mono(bytes: &[u8]) -> Result<(Vec<f32>, u32, usize, CodecType), PromptError> {
    let mss = MediaSourceStream::new(
        Box::new(Cursor::new(bytes.to_vec())),
        MediaSourceStreamOptions::default(),
    );
    let probed = symphonia::default::get_probe()
        .format(
            &Hint::new(),
            mss,
            // Gapless: the encoder's delay and padding (LAME's tag in an MP3) are
            // trimmed, so a prompt lasts what was encoded.
            &FormatOptions {
                enable_gapless: true,
                ..FormatOptions::default()
            },
            &MetadataOptions::default(),
        )
        .map_err(|e| PromptError::NotAudio(e.to_string()))?;
    let mut format = probed.format;
    let track = format
        .tracks()
        .iter()
        .find(|t| t.codec_params.codec != CODEC_TYPE_NULL)
        .ok_or(PromptError::NoAudioTrack)?;
    let track_id = track.id;
    let codec = track.codec_params.codec;
    let expected = track.codec_params.n_frames;
    let rate = track
        .codec_params
        .sample_rate
        .filter(|r| *r > 0)
        .ok_or(PromptError::NoSampleRate)?;
    let mut decoder = symphonia::default::get_codecs()
        .make(&track.codec_params, &DecoderOptions::default())
        .map_err(|e| PromptError::UnsupportedCodec(e.to_string()))?;
    let max_frames = MAX_SECONDS * u64::from(rate);
    let mut mono: Vec<f32> = Vec::new();
    let mut channels = 0;
    let mut sb: Option<SampleBuffer<f32>> = None;
    loop {
        let packet = match format.next_packet() {
            Ok(p) => p,
            // The normal end of the stream.
            Err(SymError::IoError(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(SymError::ResetRequired) => break,
            Err(e) => return Err(PromptError::Corrupt(e.to_string())),
        };
        if packet.track_id() != track_id {
            continue;
        }
        let buf = match decoder.decode(&packet) {
            Ok(b) => b,
            Err(SymError::DecodeError(e)) if !mono.is_empty() => {
                // One bad packet in the middle of a long file: skip it, as players do.
                let _ = e;
                continue;
            }
            Err(e) => return Err(PromptError::Corrupt(e.to_string())),
        };
        let spec = *buf.spec();
        let ch = spec.channels.count().max(1);
        channels = ch;
        let need = buf.capacity() as u64;
        let sbuf = match sb.as_mut() {
            Some(s) if s.capacity() as u64 >= need * ch as u64 => s,
            _ => sb.insert(SampleBuffer::new(need, spec)),
        };
        sbuf.copy_interleaved_ref(buf);
        let scale = 1.0 / ch as f32;
        mono.extend(
            sbuf.samples()
                .chunks_exact(ch)
                .map(|f| f.iter().sum::<f32>() * scale),
        );
        if mono.len() as u64 > max_frames {
            return Err(PromptError::TooLong);
        }
    }
    if let Some(n) = expected {
        // A header that promises more than the file holds: cut off in transfer. (A
        // few frames short is codec padding, e.g. MP3 and Vorbis priming.)
        let decoded = mono.len() as u64;
        if decoded + u64::from(rate) / 10 < n {
            return Err(PromptError::Truncated {
                decoded,
                expected: n,
            });
        }
    }
    if mono.is_empty() {
        return Err(PromptError::Empty);
    }
    Ok((mono, rate, channels, codec))
}

/// Resamples mono f32 to `to` Hz and converts to i16, band-limited (rubato's FFT
/// resampler: the anti-aliasing filter a down-sample to 8 kHz needs).
fn resample(x: &[f32], from: u32, to: u32) -> Result<Vec<i16>, PromptError> {
    let to_i16 = |v: f32| (v.clamp(-1.0, 1.0) * 32767.0).round() as i16;
    if from == to {
        return Ok(x.iter().map(|&v| to_i16(v)).collect());
    }
    let chunk = 1024;
    let mut r = Fft::<f32>::new(from as usize, to as usize, chunk, 1, FixedSync::Input)
        .map_err(|e| PromptError::UnsupportedCodec(format!("sample rate {from} Hz: {e}")))?;
    let err = |e: rubato::ResampleError| PromptError::Corrupt(e.to_string());
    let input = InterleavedSlice::new(x, 1, x.len())
        .map_err(|e| PromptError::Corrupt(format!("resampler input: {e}")))?;
    let mut out = vec![0.0_f32; r.process_all_needed_output_len(x.len())];
    let out_len = out.len();
    let mut output = InterleavedSlice::new_mut(&mut out[..], 1, out_len)
        .map_err(|e| PromptError::Corrupt(format!("resampler output: {e}")))?;
    // The whole clip at once: rubato feeds it chunk by chunk, flushes the filter and
    // drops its delay, so `produced` samples are the prompt, aligned.
    let (_, produced) = r
        .process_all_into_buffer(&input, &mut output, x.len(), None)
        .map_err(err)?;
    Ok(out[..produced.min(out_len)]
        .iter()
        .map(|&v| to_i16(v))
        .collect())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    // Fixtures, 0.2 s of a 1 kHz tone at half scale, stereo 22.05 kHz (made with sox 14.4,
    // libsox-fmt-mp3 for the MP3), in media/tests/fixtures/prompt/:
    //   sox -n -r 22050 -c 2 -b 16 tone.wav synth 0.2 sine 1000 vol 0.5
    //   sox tone.wav tone.flac
    //   sox tone.wav -C 0 tone.ogg
    //   sox tone.wav -C 32 tone.mp3
    const WAV: &[u8] = include_bytes!("../tests/fixtures/prompt/tone.wav");
    const FLAC: &[u8] = include_bytes!("../tests/fixtures/prompt/tone.flac");
    const OGG: &[u8] = include_bytes!("../tests/fixtures/prompt/tone.ogg");
    const MP3: &[u8] = include_bytes!("../tests/fixtures/prompt/tone.mp3");

    fn amplitude(x: &[i16], freq: f64, rate: f64) -> f64 {
        let w = 2.0 * std::f64::consts::PI * freq / rate;
        let c = 2.0 * w.cos();
        let (mut s1, mut s2) = (0.0, 0.0);
        for &v in x {
            let s0 = f64::from(v) + c * s1 - s2;
            s2 = s1;
            s1 = s0;
        }
        2.0 * (s1 * s1 + s2 * s2 - c * s1 * s2).max(0.0).sqrt() / x.len() as f64
    }

    fn check(bytes: &[u8], what: &str) {
        let p = decode(bytes).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(p.format.as_str(), what);
        assert_eq!(p.source_rate, SampleRate(22_050), "{what}");
        assert_eq!(p.source_channels, 2, "{what}");
        // 0.2 s, give or take the encoders' padding.
        let ms = p.duration_ms();
        assert!((190..=300).contains(&ms), "{what}: {ms} ms");
        for (pcm, rate) in [
            (&p.pcm_8k, 8000.0),
            (&p.pcm_16k, 16_000.0),
            (&p.pcm_48k, 48_000.0),
        ] {
            let expected = p.duration_ms() as f64 * rate / 1000.0;
            assert!(
                (pcm.len() as f64 - expected).abs() <= rate / 100.0,
                "{what} at {rate}"
            );
            let mid = &pcm[pcm.len() / 4..3 * pcm.len() / 4];
            let a = amplitude(mid, 1000.0, rate);
            // Half scale is 16384; lossy codecs lose a little.
            assert!((13_000.0..18_000.0).contains(&a), "{what} at {rate}: {a}");
            assert!(amplitude(mid, 2500.0, rate) < 500.0, "{what} at {rate}");
        }
    }

    #[test]
    fn each_format_decodes_to_the_tone_at_8_16_and_48_khz() {
        check(WAV, "wav");
        check(FLAC, "flac");
        check(OGG, "ogg");
        check(MP3, "mp3");
    }

    #[test]
    fn a_text_file_is_not_audio() {
        let e = decode(b"hello, this is not a prompt\n").unwrap_err();
        assert!(matches!(e, PromptError::NotAudio(_)), "{e:?}");
        assert!(e
            .to_string()
            .starts_with("not a WAV, MP3, OGG/Vorbis or FLAC file"));
        assert!(matches!(decode(b"").unwrap_err(), PromptError::NotAudio(_)));
    }

    #[test]
    fn a_truncated_file_says_so() {
        // Half the WAV: its header promises twice what is there.
        let e = decode(&WAV[..WAV.len() / 2]).unwrap_err();
        assert!(matches!(e, PromptError::Truncated { .. }), "{e:?}");
        assert!(e.to_string().contains("truncated"));
        // Cut inside the header.
        assert!(decode(&WAV[..20]).is_err());
        // Half the FLAC: its STREAMINFO gives the total.
        let e = decode(&FLAC[..FLAC.len() / 2]).unwrap_err();
        assert!(
            matches!(e, PromptError::Truncated { .. } | PromptError::Corrupt(_)),
            "{e:?}"
        );
    }
}
