//! A WAV (RIFF, PCM 16-bit) writer that keeps the file readable while it grows, and the
//! repair of a file a crash left behind.
//!
//! The canonical 44-byte header (RIFF `WAVE`, a 16-byte `fmt ` chunk with format 1 =
//! PCM, then `data`) holds two sizes: the RIFF chunk's and the data chunk's. A writer
//! that only fills them in at the end leaves a file that says "no audio" if the process
//! dies. [`WavWriter::update_header`] rewrites both after flushing the samples, so the
//! header never claims more than is written; the caller decides how often (each second of
//! audio is the recording worker's choice: a crash loses at most that much to a reader
//! that trusts the header, and nothing once [`repair_header`] has run).
//!
//! Generic over `Write + Seek` (and `Read` for repair): no file system here. Truncating
//! a file to the length [`Repair::truncate_to`] gives is the caller's job.

use std::io::{self, Read, Seek, SeekFrom, Write};

use thiserror::Error;

use crate::recorder::SampleRate;

/// Length of the header [`WavWriter`] writes.
pub const HEADER_LEN: u64 = 44;
/// Offsets of the two size fields in that header.
const RIFF_SIZE_AT: u64 = 4;
const DATA_SIZE_AT: u64 = 40;
const BITS_PER_SAMPLE: u16 = 16;

/// What a WAV file holds: 16-bit PCM at `rate` with `channels` interleaved channels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WavSpec {
    pub channels: u16,
    pub rate: SampleRate,
}

impl WavSpec {
    /// Bytes per sample frame (one sample of every channel).
    #[must_use]
    pub fn block_align(&self) -> u16 {
        self.channels * (BITS_PER_SAMPLE / 8)
    }
}

#[derive(Debug, Error)]
pub enum WavError {
    #[error("I/O: {0}")]
    Io(#[from] io::Error),
    #[error("not a RIFF/WAVE file")]
    NotWav,
    #[error("no fmt chunk before the data chunk")]
    NoFormat,
    #[error("no data chunk")]
    NoData,
    #[error("format chunk is not 16-bit PCM with 1 or 2 channels")]
    UnsupportedFormat,
    #[error("{0} samples is not a whole number of {1}-channel frames")]
    PartialFrame(usize, u16),
    #[error("the data would pass the 4 GiB a RIFF size field can hold")]
    TooLong,
}

/// Writes a WAV file sample frame by sample frame (see the module docs).
#[derive(Debug)]
pub struct WavWriter<W: Write + Seek> {
    inner: W,
    spec: WavSpec,
    data_bytes: u64,
}

impl<W: Write + Seek> WavWriter<W> {
    /// Writes the header (sizes zero: an empty, valid file) at the start of `inner`.
    pub fn new(mut inner: W, spec: WavSpec) -> Result<WavWriter<W>, WavError> {
        if !(1..=2).contains(&spec.channels) || spec.rate.0 == 0 {
            return Err(WavError::UnsupportedFormat);
        }
        inner.seek(SeekFrom::Start(0))?;
        inner.write_all(&header(spec, 0))?;
        Ok(WavWriter {
            inner,
            spec,
            data_bytes: 0,
        })
    }

    #[must_use]
    pub fn spec(&self) -> WavSpec {
        self.spec
    }

    /// Bytes of audio written so far.
    #[must_use]
    pub fn data_bytes(&self) -> u64 {
        self.data_bytes
    }

    /// Sample frames written so far.
    #[must_use]
    pub fn frames(&self) -> u64 {
        self.data_bytes / u64::from(self.spec.block_align())
    }

    /// Appends interleaved samples (a whole number of sample frames).
    pub fn write_samples(&mut self, samples: &[i16]) -> Result<(), WavError> {
        let ch = usize::from(self.spec.channels);
        if !samples.len().is_multiple_of(ch) {
            return Err(WavError::PartialFrame(samples.len(), self.spec.channels));
        }
        let bytes = 2 * samples.len() as u64;
        if HEADER_LEN - 8 + self.data_bytes + bytes > u64::from(u32::MAX) {
            return Err(WavError::TooLong);
        }
        let mut buf = [0u8; 4096];
        for chunk in samples.chunks(buf.len() / 2) {
            for (b, s) in buf.chunks_exact_mut(2).zip(chunk) {
                b.copy_from_slice(&s.to_le_bytes());
            }
            self.inner.write_all(&buf[..2 * chunk.len()])?;
        }
        self.data_bytes += bytes;
        Ok(())
    }

    /// Flushes the samples, then rewrites the two sizes to cover them, then flushes the
    /// header: a reader (or a crash) sees sizes no larger than the data behind them.
    pub fn update_header(&mut self) -> Result<(), WavError> {
        self.inner.flush()?;
        write_sizes(&mut self.inner, self.data_bytes)?;
        self.inner
            .seek(SeekFrom::Start(HEADER_LEN + self.data_bytes))?;
        self.inner.flush()?;
        Ok(())
    }

    /// Final sizes, flushed; hands back the writer.
    pub fn finalize(mut self) -> Result<W, WavError> {
        self.update_header()?;
        Ok(self.inner)
    }

    /// The underlying writer (a test copies a file "mid-write" through it).
    pub fn get_ref(&self) -> &W {
        &self.inner
    }
}

fn header(spec: WavSpec, data_bytes: u32) -> [u8; 44] {
    let mut h = [0u8; 44];
    let align = spec.block_align();
    h[0..4].copy_from_slice(b"RIFF");
    h[4..8].copy_from_slice(&(36u32.saturating_add(data_bytes)).to_le_bytes());
    h[8..12].copy_from_slice(b"WAVE");
    h[12..16].copy_from_slice(b"fmt ");
    h[16..20].copy_from_slice(&16u32.to_le_bytes());
    h[20..22].copy_from_slice(&1u16.to_le_bytes()); // WAVE_FORMAT_PCM
    h[22..24].copy_from_slice(&spec.channels.to_le_bytes());
    h[24..28].copy_from_slice(&spec.rate.0.to_le_bytes());
    h[28..32].copy_from_slice(&(spec.rate.0 * u32::from(align)).to_le_bytes());
    h[32..34].copy_from_slice(&align.to_le_bytes());
    h[34..36].copy_from_slice(&BITS_PER_SAMPLE.to_le_bytes());
    h[36..40].copy_from_slice(b"data");
    h[40..44].copy_from_slice(&data_bytes.to_le_bytes());
    h
}

/// Rewrites the RIFF and data sizes of a file with the canonical 44-byte header.
fn write_sizes<W: Write + Seek>(w: &mut W, data_bytes: u64) -> Result<(), WavError> {
    let data = u32::try_from(data_bytes).map_err(|_| WavError::TooLong)?;
    w.seek(SeekFrom::Start(RIFF_SIZE_AT))?;
    w.write_all(&36u32.saturating_add(data).to_le_bytes())?;
    w.seek(SeekFrom::Start(DATA_SIZE_AT))?;
    w.write_all(&data.to_le_bytes())?;
    Ok(())
}

/// What [`inspect`] found in a WAV file's header against its length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repair {
    /// Offset of the first audio byte.
    pub data_offset: u64,
    /// The data size the header declares.
    pub declared_data: u64,
    /// Whole sample frames of audio actually present after `data_offset`, in bytes.
    pub data_len: u64,
    /// Where the file should end: after the last whole sample frame.
    pub truncate_to: u64,
    /// The file's length as found.
    pub file_len: u64,
    /// The header's sizes did not match the data, or a partial sample frame trails it (a
    /// crash, or a file still being written).
    pub stale: bool,
}

/// Reads a WAV header and measures it against the file's length. Only the layout this
/// module writes is expected, but any chunk order with `fmt ` before `data` is accepted.
pub fn inspect<R: Read + Seek>(r: &mut R) -> Result<Repair, WavError> {
    let file_len = r.seek(SeekFrom::End(0))?;
    r.seek(SeekFrom::Start(0))?;
    let mut riff = [0u8; 12];
    r.read_exact(&mut riff).map_err(|_| WavError::NotWav)?;
    if &riff[0..4] != b"RIFF" || &riff[8..12] != b"WAVE" {
        return Err(WavError::NotWav);
    }
    let declared_riff = u64::from(u32::from_le_bytes([riff[4], riff[5], riff[6], riff[7]]));
    let mut block_align: Option<u16> = None;
    let mut pos = 12u64;
    loop {
        let mut ch = [0u8; 8];
        r.seek(SeekFrom::Start(pos))?;
        r.read_exact(&mut ch).map_err(|_| WavError::NoData)?;
        let size = u64::from(u32::from_le_bytes([ch[4], ch[5], ch[6], ch[7]]));
        match &ch[0..4] {
            b"fmt " => {
                let mut f = [0u8; 16];
                r.read_exact(&mut f).map_err(|_| WavError::NoFormat)?;
                let format = u16::from_le_bytes([f[0], f[1]]);
                let channels = u16::from_le_bytes([f[2], f[3]]);
                let align = u16::from_le_bytes([f[12], f[13]]);
                let bits = u16::from_le_bytes([f[14], f[15]]);
                if format != 1 || bits != BITS_PER_SAMPLE || !(1..=2).contains(&channels) {
                    return Err(WavError::UnsupportedFormat);
                }
                if align != channels * 2 {
                    return Err(WavError::UnsupportedFormat);
                }
                block_align = Some(align);
            }
            b"data" => {
                let align = u64::from(block_align.ok_or(WavError::NoFormat)?);
                let data_offset = pos + 8;
                let present = file_len.saturating_sub(data_offset);
                let max = (u64::from(u32::MAX) - 36) / align * align;
                let data_len = (present - present % align).min(max);
                let stale = size != data_len
                    || declared_riff != data_offset - 8 + data_len
                    || file_len != data_offset + data_len;
                return Ok(Repair {
                    data_offset,
                    declared_data: size,
                    data_len,
                    truncate_to: data_offset + data_len,
                    file_len,
                    stale,
                });
            }
            _ => {}
        }
        // RIFF chunks are padded to an even length.
        pos += 8 + size + (size & 1);
    }
}

/// Fixes the sizes of a WAV file left by a crash to cover the whole sample frames it
/// holds (only the header is written; truncate to [`Repair::truncate_to`] after).
/// Only files with the canonical 44-byte layout are rewritten; others are reported.
pub fn repair_header<F: Read + Write + Seek>(f: &mut F) -> Result<Repair, WavError> {
    let rep = inspect(f)?;
    if rep.stale {
        if rep.data_offset != HEADER_LEN {
            return Err(WavError::UnsupportedFormat);
        }
        write_sizes(f, rep.data_len)?;
        f.flush()?;
    }
    Ok(rep)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::io::Cursor;

    use super::*;

    fn ramp(n: usize, channels: usize) -> Vec<i16> {
        (0..n * channels)
            .map(|i| (i % 30_000) as i16 - 15_000)
            .collect()
    }

    fn read(bytes: &[u8]) -> (hound::WavSpec, Vec<i16>) {
        let mut r = hound::WavReader::new(Cursor::new(bytes)).unwrap();
        let spec = r.spec();
        let s = r.samples::<i16>().collect::<Result<Vec<_>, _>>().unwrap();
        (spec, s)
    }

    #[test]
    fn a_finalized_file_reads_back() {
        let spec = WavSpec {
            channels: 2,
            rate: SampleRate(8000),
        };
        let mut w = WavWriter::new(Cursor::new(Vec::new()), spec).unwrap();
        let samples = ramp(8000 * 3, 2);
        w.write_samples(&samples).unwrap();
        assert_eq!(w.frames(), 24_000);
        let bytes = w.finalize().unwrap().into_inner();
        assert_eq!(bytes.len() as u64, HEADER_LEN + 4 * 24_000);
        let (hs, s) = read(&bytes);
        assert_eq!(
            (hs.channels, hs.sample_rate, hs.bits_per_sample),
            (2, 8000, 16)
        );
        assert_eq!(s, samples);
        assert!(!inspect(&mut Cursor::new(&bytes)).unwrap().stale);
    }

    #[test]
    fn a_crash_mid_write_is_readable_up_to_the_last_update_and_repairable_to_the_end() {
        let spec = WavSpec {
            channels: 2,
            rate: SampleRate(8000),
        };
        let mut w = WavWriter::new(Cursor::new(Vec::new()), spec).unwrap();
        let samples = ramp(8000 * 5 / 2, 2);
        // Each second of audio, as the recording worker does, then half a second more.
        for sec in samples.chunks(2 * 8000) {
            w.write_samples(sec).unwrap();
            if sec.len() == 2 * 8000 {
                w.update_header().unwrap();
            }
        }
        // The "crash": the bytes as they are now, plus half a sample frame that the
        // kernel had taken when the process died.
        let mut bytes = w.get_ref().get_ref().clone();
        drop(w);
        bytes.extend_from_slice(&[0x12, 0x34]);

        // Before repair, a reader trusts the header: the first two seconds.
        let (_, s) = read(&bytes);
        assert_eq!(s.len(), 2 * 2 * 8000);
        assert_eq!(s, samples[..s.len()]);

        let mut f = Cursor::new(bytes);
        let rep = repair_header(&mut f).unwrap();
        assert!(rep.stale);
        assert_eq!(rep.declared_data, 2 * 4 * 8000);
        assert_eq!(rep.data_len, 4 * 20_000);
        assert_eq!(rep.truncate_to, HEADER_LEN + 4 * 20_000);
        let mut bytes = f.into_inner();
        bytes.truncate(usize::try_from(rep.truncate_to).unwrap());
        let (hs, s) = read(&bytes);
        assert_eq!(hs.channels, 2);
        assert_eq!(s, samples);
        // Repaired is no longer stale, and a second repair changes nothing.
        let mut f = Cursor::new(bytes.clone());
        assert!(!repair_header(&mut f).unwrap().stale);
        assert_eq!(f.into_inner(), bytes);
    }

    #[test]
    fn a_crash_before_the_first_update_is_repaired() {
        let spec = WavSpec {
            channels: 1,
            rate: SampleRate(16_000),
        };
        let mut w = WavWriter::new(Cursor::new(Vec::new()), spec).unwrap();
        w.write_samples(&ramp(1234, 1)).unwrap();
        let mut f = Cursor::new(w.get_ref().get_ref().clone());
        assert_eq!(read(f.get_ref()).1.len(), 0);
        let rep = repair_header(&mut f).unwrap();
        assert_eq!(rep.data_len, 2 * 1234);
        let (hs, s) = read(f.get_ref());
        assert_eq!((hs.channels, hs.sample_rate), (1, 16_000));
        assert_eq!(s, ramp(1234, 1));
    }

    #[test]
    fn what_is_not_our_wav_is_an_error() {
        let err = |b: &[u8]| repair_header(&mut Cursor::new(b.to_vec())).unwrap_err();
        assert!(matches!(err(b"hello, world"), WavError::NotWav));
        assert!(matches!(err(b""), WavError::NotWav));
        // A header cut inside the fmt chunk.
        let mut h = header(
            WavSpec {
                channels: 1,
                rate: SampleRate(8000),
            },
            0,
        );
        assert!(matches!(err(&h[..30]), WavError::NoFormat));
        // 8-bit audio is not ours.
        h[34] = 8;
        assert!(matches!(err(&h), WavError::UnsupportedFormat));
        // Data before fmt.
        let mut odd = b"RIFF\0\0\0\0WAVEdata\0\0\0\0".to_vec();
        odd.extend_from_slice(&[0; 8]);
        assert!(matches!(err(&odd), WavError::NoFormat));
        let w = WavWriter::new(
            Cursor::new(Vec::new()),
            WavSpec {
                channels: 2,
                rate: SampleRate(8000),
            },
        );
        assert!(matches!(
            w.unwrap().write_samples(&[1, 2, 3]),
            Err(WavError::PartialFrame(3, 2))
        ));
    }
}
