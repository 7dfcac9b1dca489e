//! Opus (RFC 6716) through the pure-Rust `opus-rs` port of libopus 1.6: mono, 20 ms
//! frames, VoIP tuning, PCM at 8, 16 or 48 kHz. RTP payload format per RFC 7587 (one
//! Opus packet per RTP payload, clock 48000 whatever the audio bandwidth).
//!
//! The PCM rate is the caller's choice because Opus lets both ends pick it freely
//! (RFC 6716 §2: any decoder decodes any packet at any of its rates; the encoder's input
//! rate only bounds the bandwidth it codes). It decides the cost: at 48 kHz `opus-rs`
//! codes fullband hybrid (SILK at 16 kHz plus CELT above), at 16 kHz SILK-only wideband,
//! at 8 kHz SILK-only narrowband. A leg transcoded to G.711 carries nothing above 4 kHz,
//! so Opus at 8 kHz codes all there is, needs no resampler, and costs a fraction of
//! fullband: see "Codec cost" in `benches/README.md`.
//!
//! Interop with the reference libopus is proven in the tests below: an Ogg/Opus file
//! made by libopus' `opusenc` decodes here to the right tone and level (at every rate),
//! and our packets (at every rate), wrapped in Ogg by the test, decode with libopus'
//! `opusdec` to the tone we sent.

use super::{CodecError, SampleRate};

/// 20 ms at 48 kHz, the longest frame.
const MAX_FRAME: usize = 960;

/// Bit rate we encode at: wideband speech is transparent from about 24 kbit/s (RFC 7587
/// §3.1.1 recommends 28-40 kbit/s for fullband speech); 32 kbit/s is WebRTC's usual.
/// SILK-only narrowband and wideband spend what they need below this (VBR), about
/// 15 kbit/s for speech.
pub const OPUS_BITRATE_BPS: i32 = 32_000;

/// Encoder complexity at 48 kHz (0-10; libopus' default is 9, `opus-rs` follows it).
/// Transcoding encodes a frame per leg every 20 ms, so CPU decides how many calls a core
/// carries: measured per 20 ms frame at 48 kHz on the 2-core project machine (`cargo
/// bench -p voxgate-media --bench codecs -- opus_encode`), 9: ~390 µs, 5: ~265 µs,
/// 1: ~140 µs; at 1 libopus still decodes our 700 Hz test tone at 29 dB SNR (the interop
/// test).
pub const OPUS_COMPLEXITY: i32 = 1;

/// Encoder complexity at 8 and 16 kHz (SILK-only, the transcoding path). At 0 SILK
/// uses its cheapest pitch search and lowest-order noise shaping: 8 kHz encoding of
/// the bench's speech-like signal fell from 65 to 46 µs of CPU per frame against 1,
/// while the speech-like SNR test stayed at 13.3 dB and libopus decodes our 700 Hz
/// tone at 25 dB instead of 26.
pub const OPUS_SILK_COMPLEXITY: i32 = 0;

/// Opus encoder: one 20 ms frame of mono PCM to one packet.
pub struct OpusEncoder {
    inner: opus_rs::OpusEncoder,
    rate: SampleRate,
}

impl OpusEncoder {
    /// A 48 kHz encoder (fullband hybrid). Allocates the codec state (once).
    pub fn new() -> Result<OpusEncoder, CodecError> {
        OpusEncoder::with_rate(SampleRate::HZ_48000)
    }

    /// An encoder taking PCM at `rate` (8 kHz codes narrowband, 16 kHz wideband, both
    /// SILK-only). Allocates the codec state (once).
    pub fn with_rate(rate: SampleRate) -> Result<OpusEncoder, CodecError> {
        let hz = i32::try_from(rate.hz()).map_err(|_| CodecError::Opus("sample rate"))?;
        let mut inner = opus_rs::OpusEncoder::new(hz, 1, opus_rs::Application::Voip)
            .map_err(CodecError::Opus)?;
        inner.bitrate_bps = OPUS_BITRATE_BPS;
        inner.complexity = if rate == SampleRate::HZ_48000 {
            OPUS_COMPLEXITY
        } else {
            OPUS_SILK_COMPLEXITY
        };
        Ok(OpusEncoder { inner, rate })
    }

    /// The rate of the PCM [`OpusEncoder::encode`] takes.
    #[must_use]
    pub fn sample_rate(&self) -> SampleRate {
        self.rate
    }

    /// Encodes one 20 ms frame (`rate / 50` samples) into `out`; returns the packet
    /// length.
    pub fn encode(&mut self, pcm: &[i16], out: &mut [u8]) -> Result<usize, CodecError> {
        let frame = self.rate.samples_per_frame();
        if pcm.len() != frame {
            return Err(CodecError::WrongFrameLen {
                want: frame,
                got: pcm.len(),
            });
        }
        // The encoder needs room for at least the TOC and some payload.
        if out.len() < 8 {
            return Err(CodecError::OutputTooSmall {
                need: 8,
                have: out.len(),
            });
        }
        self.inner
            .encode_i16(pcm, frame, out)
            .map_err(CodecError::Opus)
    }
}

/// Opus decoder: a packet to mono PCM, with concealment of lost packets.
pub struct OpusDecoder {
    inner: opus_rs::OpusDecoder,
    rate: SampleRate,
    /// The port decodes to f32: one frame of scratch, allocated once.
    scratch: Box<[f32; MAX_FRAME]>,
}

impl OpusDecoder {
    /// A decoder giving 48 kHz PCM. Allocates the codec state (once).
    pub fn new() -> Result<OpusDecoder, CodecError> {
        OpusDecoder::with_rate(SampleRate::HZ_48000)
    }

    /// A decoder giving PCM at `rate`, whatever bandwidth the packets were coded at.
    /// Allocates the codec state (once).
    pub fn with_rate(rate: SampleRate) -> Result<OpusDecoder, CodecError> {
        let hz = i32::try_from(rate.hz()).map_err(|_| CodecError::Opus("sample rate"))?;
        Ok(OpusDecoder {
            inner: opus_rs::OpusDecoder::new(hz, 1).map_err(CodecError::Opus)?,
            rate,
            scratch: Box::new([0.0; MAX_FRAME]),
        })
    }

    /// The rate of the PCM [`OpusDecoder::decode`] gives.
    #[must_use]
    pub fn sample_rate(&self) -> SampleRate {
        self.rate
    }

    /// Decodes one packet (up to 20 ms of audio; longer packets are refused, the
    /// playout works in 20 ms frames) into `out`; returns the samples written.
    pub fn decode(&mut self, payload: &[u8], out: &mut [i16]) -> Result<usize, CodecError> {
        if payload.len() > super::MAX_PAYLOAD_LEN {
            return Err(CodecError::PayloadTooLong(payload.len()));
        }
        let frame = self.rate.samples_per_frame();
        if out.len() < frame {
            return Err(CodecError::OutputTooSmall {
                need: frame,
                have: out.len(),
            });
        }
        let n = self
            .inner
            .decode(payload, frame, &mut self.scratch[..frame])
            .map_err(CodecError::Opus)?;
        Ok(to_i16(&self.scratch[..n.min(frame)], out))
    }

    /// Packet-loss concealment for one 20 ms frame (RFC 6716 §4.4).
    pub fn conceal(&mut self, out: &mut [i16]) -> Result<usize, CodecError> {
        let frame = self.rate.samples_per_frame();
        let n = self
            .inner
            .decode(&[], frame, &mut self.scratch[..frame])
            .map_err(CodecError::Opus)?;
        Ok(to_i16(&self.scratch[..n.min(frame)], out))
    }
}

/// ±1.0 float to 16-bit, rounded and saturated (libopus' `opus_decode` convention).
fn to_i16(x: &[f32], out: &mut [i16]) -> usize {
    for (o, v) in out.iter_mut().zip(x) {
        #[allow(clippy::cast_possible_truncation)]
        let s = (v * 32_768.0).round().clamp(-32_768.0, 32_767.0) as i16;
        *o = s;
    }
    x.len().min(out.len())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::testutil::*;
    use super::*;
    use std::path::PathBuf;
    use std::process::Command;

    /// Made by libopus 1.3.1 (Debian's opus-tools 0.2) from 1 s of a 700 Hz sine, peak
    /// 8000, 48 kHz mono 16-bit (written by a three-line Python script):
    ///   opusenc --quiet --bitrate 24 --framesize 20 --comp 10 --padding 0 \
    ///           --discard-comments tone700.wav opusenc_700hz_48k.opus
    const OPUSENC_FIXTURE: &[u8] = include_bytes!("../../tests/fixtures/opusenc_700hz_48k.opus");

    /// 20 ms at 48 kHz.
    const FRAME: usize = 960;

    const RATES: [SampleRate; 3] = [
        SampleRate::HZ_8000,
        SampleRate::HZ_16000,
        SampleRate::HZ_48000,
    ];

    const CANDIDATES: [f64; 6] = [300.0, 500.0, 700.0, 1000.0, 1400.0, 2100.0];

    /// The packets of the one logical stream in an Ogg file (RFC 3533 §6): pages of
    /// segments, a lacing value below 255 ending a packet.
    fn ogg_packets(mut data: &[u8]) -> Vec<Vec<u8>> {
        let mut packets = Vec::new();
        let mut cur = Vec::new();
        while !data.is_empty() {
            assert_eq!(&data[..4], b"OggS", "page capture pattern");
            let nsegs = usize::from(data[26]);
            let lacing = &data[27..27 + nsegs];
            let mut body = &data[27 + nsegs..];
            for l in lacing {
                let l = usize::from(*l);
                cur.extend_from_slice(&body[..l]);
                body = &body[l..];
                if l < 255 {
                    packets.push(std::mem::take(&mut cur));
                }
            }
            let used = 27 + nsegs + lacing.iter().map(|l| usize::from(*l)).sum::<usize>();
            data = &data[used..];
        }
        packets
    }

    /// Ogg's CRC-32 (RFC 3533 §6: polynomial 0x04c11db7, no reflection, initial 0).
    fn ogg_crc(bytes: &[u8]) -> u32 {
        let mut crc = 0u32;
        for b in bytes {
            crc ^= u32::from(*b) << 24;
            for _ in 0..8 {
                crc = if crc & 0x8000_0000 != 0 {
                    (crc << 1) ^ 0x04c1_1db7
                } else {
                    crc << 1
                };
            }
        }
        crc
    }

    fn ogg_page(out: &mut Vec<u8>, flags: u8, granule: u64, seq: u32, packet: &[u8]) {
        assert!(packet.len() < 255 * 255);
        let start = out.len();
        out.extend_from_slice(b"OggS");
        out.push(0);
        out.push(flags);
        out.extend_from_slice(&granule.to_le_bytes());
        out.extend_from_slice(&0x766f_7867u32.to_le_bytes());
        out.extend_from_slice(&seq.to_le_bytes());
        out.extend_from_slice(&[0; 4]);
        let full = packet.len() / 255;
        out.push(u8::try_from(full + 1).unwrap());
        out.extend(std::iter::repeat_n(255u8, full));
        out.push(u8::try_from(packet.len() % 255).unwrap());
        out.extend_from_slice(packet);
        let crc = ogg_crc(&out[start..]);
        out[start + 22..start + 26].copy_from_slice(&crc.to_le_bytes());
    }

    /// An Ogg/Opus file (RFC 7845) around our packets: ID header, comment header, one
    /// audio packet per page.
    fn ogg_opus(packets: &[Vec<u8>]) -> Vec<u8> {
        let mut head = b"OpusHead".to_vec();
        head.push(1); // version
        head.push(1); // channels
        head.extend_from_slice(&0u16.to_le_bytes()); // pre-skip
        head.extend_from_slice(&48_000u32.to_le_bytes());
        head.extend_from_slice(&0i16.to_le_bytes()); // output gain
        head.push(0); // mapping family: mono/stereo
        let mut tags = b"OpusTags".to_vec();
        let vendor = b"voxgate test";
        tags.extend_from_slice(&u32::try_from(vendor.len()).unwrap().to_le_bytes());
        tags.extend_from_slice(vendor);
        tags.extend_from_slice(&0u32.to_le_bytes());
        let mut out = Vec::new();
        ogg_page(&mut out, 0x02, 0, 0, &head);
        ogg_page(&mut out, 0, 0, 1, &tags);
        for (i, p) in packets.iter().enumerate() {
            let last = i + 1 == packets.len();
            let granule = (i as u64 + 1) * FRAME as u64;
            let seq = u32::try_from(i + 2).unwrap();
            ogg_page(&mut out, if last { 0x04 } else { 0 }, granule, seq, p);
        }
        out
    }

    /// The samples of a 16-bit PCM WAV file.
    fn wav_samples(wav: &[u8]) -> Vec<i16> {
        assert_eq!(&wav[..4], b"RIFF");
        let mut at = 12;
        while at + 8 <= wav.len() {
            let id = &wav[at..at + 4];
            let len = u32::from_le_bytes(wav[at + 4..at + 8].try_into().unwrap()) as usize;
            if id == b"data" {
                let end = (at + 8 + len).min(wav.len());
                return wav[at + 8..end]
                    .chunks_exact(2)
                    .map(|c| i16::from_le_bytes([c[0], c[1]]))
                    .collect();
            }
            at += 8 + len + (len & 1);
        }
        panic!("no data chunk");
    }

    #[test]
    fn ogg_crc_matches_the_fixture_pages() {
        // The first page of the opusenc file carries a CRC libogg computed.
        let nsegs = usize::from(OPUSENC_FIXTURE[26]);
        let len = 27
            + nsegs
            + OPUSENC_FIXTURE[27..27 + nsegs]
                .iter()
                .map(|l| usize::from(*l))
                .sum::<usize>();
        let mut page = OPUSENC_FIXTURE[..len].to_vec();
        let want = u32::from_le_bytes(page[22..26].try_into().unwrap());
        page[22..26].fill(0);
        assert_eq!(ogg_crc(&page), want);
    }

    /// libopus → us: packets from the reference encoder decode to the tone, at its
    /// level, at every output rate; at 48 kHz in phase with the original once the
    /// pre-skip is dropped, at the lower rates (whose resampling delay differs) at the
    /// best lag.
    #[test]
    fn decodes_what_libopus_encoded() {
        let packets = ogg_packets(OPUSENC_FIXTURE);
        assert!(packets[0].starts_with(b"OpusHead"));
        assert!(packets[1].starts_with(b"OpusTags"));
        let pre_skip = usize::from(u16::from_le_bytes([packets[0][10], packets[0][11]]));
        for rate in RATES {
            let hz = rate.hz();
            let frame_len = rate.samples_per_frame();
            let mut dec = OpusDecoder::with_rate(rate).unwrap();
            assert_eq!(dec.sample_rate(), rate);
            let mut pcm = Vec::new();
            let mut frame = [0i16; MAX_FRAME];
            for p in &packets[2..] {
                let n = dec.decode(p, &mut frame).unwrap();
                assert_eq!(n, frame_len);
                pcm.extend_from_slice(&frame[..n]);
            }
            let pcm = &pcm[pre_skip * frame_len / FRAME..];
            let original = tone(700.0, 8000.0, hz, 0, frame_len * 50);
            let (from, to) = (frame_len * 10, frame_len * 40);
            let lag = if rate == SampleRate::HZ_48000 {
                0
            } else {
                best_lag(&original[from..to], &pcm[from..], frame_len / 4)
            };
            let body = &pcm[from + lag..to + lag];
            assert_eq!(dominant(body, hz, &CANDIDATES), 700.0, "{hz} Hz");
            let db = 20.0 * (rms(body) / rms(&original[from..to])).log10();
            assert!(db.abs() < 1.0, "{hz} Hz: level {db:.2} dB");
            let snr = snr_db(&original[from..to], body);
            eprintln!("our decode at {hz} Hz of libopus' stream: level {db:.2} dB, lag {lag}, SNR {snr:.1} dB");
            assert!(
                snr > 15.0,
                "{hz} Hz: waveform SNR {snr:.1} dB against the original"
            );
        }
    }

    /// A voiced-speech stand-in at `hz`: harmonics of a pitch gliding between 110 and
    /// 190 Hz under two formant-like peaks (500 Hz and 1.5 kHz), all below 3.4 kHz (what
    /// a G.711 leg carries), with a 4 Hz syllable envelope.
    fn speechlike(hz: u32, n: usize) -> Vec<i16> {
        let mut phase = 0.0f64;
        (0..n)
            .map(|i| {
                let t = i as f64 / f64::from(hz);
                let f0 = 150.0 + 40.0 * (std::f64::consts::TAU * 0.7 * t).sin();
                phase += std::f64::consts::TAU * f0 / f64::from(hz);
                let env = 0.55 + 0.45 * (std::f64::consts::TAU * 4.0 * t).sin();
                let mut s = 0.0;
                for k in 1..=22 {
                    let f = f0 * f64::from(k);
                    if f > 3400.0 {
                        break;
                    }
                    let formants = (-((f - 500.0) / 300.0).powi(2)).exp()
                        + 0.5 * (-((f - 1500.0) / 400.0).powi(2)).exp()
                        + 0.05;
                    s += formants * (phase * f64::from(k)).sin();
                }
                (5000.0 * env * s).round() as i16
            })
            .collect()
    }

    /// Encode + decode through our own pair at each rate keeps a speech-like signal's
    /// waveform: SNR at the best lag over 1.6 s, after 0.4 s to settle. SILK is a
    /// waveform coder, so a parametric-only result (right spectrum, wrong waveform)
    /// would fail this.
    #[test]
    fn speechlike_signal_survives_encode_and_decode_at_every_rate() {
        for rate in RATES {
            let hz = rate.hz();
            let frame_len = rate.samples_per_frame();
            let input = speechlike(hz, frame_len * 100);
            let mut enc = OpusEncoder::with_rate(rate).unwrap();
            let mut dec = OpusDecoder::with_rate(rate).unwrap();
            let mut buf = [0u8; 1275];
            let mut frame = [0i16; MAX_FRAME];
            let mut output = Vec::new();
            let mut bytes = 0;
            for chunk in input.chunks(frame_len) {
                let n = enc.encode(chunk, &mut buf).unwrap();
                bytes += n;
                let m = dec.decode(&buf[..n], &mut frame).unwrap();
                assert_eq!(m, frame_len);
                output.extend_from_slice(&frame[..m]);
            }
            let (from, to) = (frame_len * 20, frame_len * 95);
            let lag = best_lag(&input[from..to], &output[from..], frame_len);
            let snr = snr_db(&input[from..to], &output[from + lag..to + lag]);
            let kbps = bytes as f64 * 8.0 / 2.0 / 1000.0;
            eprintln!("speech-like at {hz} Hz: {kbps:.1} kbit/s, lag {lag}, SNR {snr:.1} dB");
            assert!(snr > 10.0, "{hz} Hz: SNR {snr:.1} dB at lag {lag}");
        }
    }

    /// Payloads come from the network: random bytes must give audio or an error, never
    /// a panic (seeded, so a failure reproduces).
    #[test]
    fn random_payloads_never_panic() {
        let mut dec = OpusDecoder::new().unwrap();
        let mut out = [0i16; MAX_FRAME];
        let mut x = 0x1234_5678u32;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x
        };
        let mut ok = 0;
        for _ in 0..3000 {
            let len = 1 + (next() % 300) as usize;
            let payload: Vec<u8> = (0..len).map(|_| next().to_le_bytes()[0]).collect();
            if dec.decode(&payload, &mut out).is_ok() {
                ok += 1;
            }
        }
        // Most random TOCs describe legal packets; the decoder must not refuse them all.
        assert!(ok > 100, "{ok} decoded");
    }

    /// Where libopus' `opusdec` is: the test script installs Debian's opus-tools; a
    /// missing tool fails the test (a skipped interop test proves nothing).
    fn opusdec() -> PathBuf {
        let found = std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join("opusdec"))
                .find(|p| p.is_file())
        });
        found.unwrap_or_else(|| {
            panic!("opusdec not found: install Debian's opus-tools (scripts/install-test-deps.sh does)")
        })
    }

    /// us → libopus: our packets, in an Ogg file, decode with the reference decoder to
    /// the tone we sent at its level, whatever rate we encoded from.
    #[test]
    fn libopus_decodes_what_we_encoded() {
        let opusdec = opusdec();
        for rate in RATES {
            let hz = rate.hz();
            let frame_len = rate.samples_per_frame();
            let mut enc = OpusEncoder::with_rate(rate).unwrap();
            assert_eq!(enc.sample_rate(), rate);
            let mut packets = Vec::new();
            let mut buf = [0u8; 1275];
            for k in 0..50 {
                let pcm = tone(700.0, 8000.0, hz, k * frame_len, frame_len);
                let n = enc.encode(&pcm, &mut buf).unwrap();
                packets.push(buf[..n].to_vec());
            }
            let dir =
                std::env::temp_dir().join(format!("voxgate-opus-{}-{hz}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            let ogg = dir.join("ours.opus");
            let wav = dir.join("ours.wav");
            std::fs::write(&ogg, ogg_opus(&packets)).unwrap();
            let out = Command::new(&opusdec)
                .args(["--quiet", "--rate", "48000"])
                .arg(&ogg)
                .arg(&wav)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "opusdec failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let pcm = wav_samples(&std::fs::read(&wav).unwrap());
            std::fs::remove_dir_all(&dir).unwrap();
            assert!(pcm.len() >= 40_000, "opusdec gave {} samples", pcm.len());
            let body = &pcm[9600..40_000];
            assert_eq!(dominant(body, 48_000, &CANDIDATES), 700.0, "from {hz} Hz");
            let want = 8000.0 / 2f64.sqrt();
            let db = 20.0 * (rms(body) / want).log10();
            assert!(db.abs() < 1.0, "from {hz} Hz: level {db:.2} dB");
            // Same waveform, up to the codec's delay.
            let original = tone(700.0, 8000.0, 48_000, 0, 48_000);
            let lag = best_lag(&original[9600..20_000], &pcm[9600..], 69);
            let snr = snr_db(&original[9600..38_000], &pcm[9600 + lag..38_000 + lag]);
            eprintln!(
                "libopus decode of our stream from {hz} Hz: level {db:.2} dB, lag {lag}, SNR {snr:.1} dB"
            );
            assert!(
                snr > 15.0,
                "from {hz} Hz: waveform SNR {snr:.1} dB at lag {lag}"
            );
        }
    }
}
