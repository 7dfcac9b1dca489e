//! Per-frame cost of the decode side of a leg: G.711, G.722 and Opus encode/decode of
//! one 20 ms frame (Opus at 48, 16 and 8 kHz), resampling one frame, a jitter buffer
//! push + pop, and one 20 ms frame of an Opus<->PCMU transcoded call both ways (the
//! unit of "calls per core": 50 of these a second per call).
//! Run: `cargo bench -p voxgate-media --bench codecs`; results in `benches/README.md`.
#![allow(clippy::unwrap_used)]

use criterion::{black_box, criterion_group, criterion_main, Bencher, Criterion};
use std::time::{Duration, Instant};
use voxgate_media::codec::MAX_PAYLOAD_LEN;
use voxgate_media::{
    ClockRate, Codec, Decoder, Encoder, Incoming, JitterBuffer, JitterConfig, Resampler,
    RtpTimestamp, SampleRate, SeqNo, Ssrc,
};

/// This thread's CPU time so far, from `/proc/thread-self/schedstat` (nanoseconds on
/// CPU; `unsafe` is forbidden here, so no `clock_gettime`). The kernel brings the running
/// thread's figure up to date only when it schedules, so yield first.
fn thread_cpu() -> Duration {
    std::thread::yield_now();
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap();
    let ns: u64 = stat.split_whitespace().next().unwrap().parse().unwrap();
    Duration::from_nanos(ns)
}

/// Times `f` in CPU time of this thread instead of wall time: the machines this runs
/// on are shared with other builds, and wall time would count the slices the scheduler
/// gave them (a load of 4 on 2 cores doubled the wall-time figures). Cache pollution by
/// the neighbours still shows.
fn on_cpu<O>(b: &mut Bencher, mut f: impl FnMut() -> O) {
    b.iter_custom(|iters| {
        let t0 = thread_cpu();
        for _ in 0..iters {
            black_box(f());
        }
        thread_cpu() - t0
    });
}

fn tone(rate: u32, n: usize) -> Vec<i16> {
    (0..n)
        .map(|i| {
            let t = i as f64 / f64::from(rate);
            (8000.0 * (std::f64::consts::TAU * 440.0 * t).sin()) as i16
        })
        .collect()
}

/// One second of a voiced-speech stand-in at `rate`, as 50 frames of 20 ms: harmonics
/// of a pitch gliding between 110 and 190 Hz under two formant-like peaks, below
/// 3.4 kHz, with a 4 Hz syllable envelope. Opus' SILK spends more on this than on a
/// steady tone (pitch search, noise shaping), so the Opus figures use it.
fn speech(rate: SampleRate) -> Vec<Vec<i16>> {
    let hz = f64::from(rate.hz());
    let mut phase = 0.0f64;
    let pcm: Vec<i16> = (0..rate.hz() as usize)
        .map(|i| {
            let t = i as f64 / hz;
            let f0 = 150.0 + 40.0 * (std::f64::consts::TAU * 0.7 * t).sin();
            phase += std::f64::consts::TAU * f0 / hz;
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
            (5000.0 * env * s) as i16
        })
        .collect();
    pcm.chunks(rate.samples_per_frame())
        .map(<[i16]>::to_vec)
        .collect()
}

/// The packets an Opus encoder at `rate` makes of [`speech`].
fn opus_packets(enc: &mut Encoder, rate: SampleRate) -> Vec<Vec<u8>> {
    let mut payload = [0u8; MAX_PAYLOAD_LEN];
    speech(rate)
        .iter()
        .map(|f| {
            let n = enc.encode(f, &mut payload).unwrap();
            payload[..n].to_vec()
        })
        .collect()
}

fn codecs(c: &mut Criterion) {
    for codec in [Codec::Pcmu, Codec::Pcma, Codec::G722, Codec::Opus] {
        let pcm = tone(codec.sample_rate().hz(), codec.samples_per_frame());
        let mut enc = Encoder::new(codec).unwrap();
        let mut payload = [0u8; MAX_PAYLOAD_LEN];
        c.bench_function(&format!("{}_encode_20ms", codec.encoding_name()), |b| {
            on_cpu(b, || enc.encode(black_box(&pcm), &mut payload).unwrap())
        });
        // A steady-state packet to decode.
        let mut enc = Encoder::new(codec).unwrap();
        let mut len = 0;
        for _ in 0..10 {
            len = enc.encode(&pcm, &mut payload).unwrap();
        }
        let mut dec = Decoder::new(codec).unwrap();
        let mut out = [0i16; 960];
        c.bench_function(&format!("{}_decode_20ms", codec.encoding_name()), |b| {
            on_cpu(b, || {
                dec.decode(black_box(&payload[..len]), &mut out).unwrap()
            })
        });
    }
}

/// Opus encode and decode of [`speech`] (each iteration the next of its 50 frames or
/// packets) at each PCM rate: 48 kHz codes fullband hybrid (SILK + CELT), 16 kHz
/// SILK-only wideband, 8 kHz SILK-only narrowband. And decoding a fullband hybrid
/// packet (what a browser sends) to 8 kHz.
fn opus_rates(c: &mut Criterion) {
    for rate in [
        SampleRate::HZ_48000,
        SampleRate::HZ_16000,
        SampleRate::HZ_8000,
    ] {
        let khz = rate.hz() / 1000;
        let frames = speech(rate);
        let mut enc = Encoder::with_rate(Codec::Opus, rate).unwrap();
        let mut payload = [0u8; MAX_PAYLOAD_LEN];
        let mut k = 0;
        c.bench_function(&format!("opus_{khz}k_speech_encode_20ms"), |b| {
            on_cpu(b, || {
                k = (k + 1) % frames.len();
                enc.encode(black_box(&frames[k]), &mut payload).unwrap()
            })
        });
        let packets = opus_packets(&mut Encoder::with_rate(Codec::Opus, rate).unwrap(), rate);
        let mut dec = Decoder::with_rate(Codec::Opus, rate).unwrap();
        let mut out = [0i16; 960];
        c.bench_function(&format!("opus_{khz}k_speech_decode_20ms"), |b| {
            on_cpu(b, || {
                k = (k + 1) % packets.len();
                dec.decode(black_box(&packets[k]), &mut out).unwrap()
            })
        });
    }
    let packets = opus_packets(
        &mut Encoder::new(Codec::Opus).unwrap(),
        SampleRate::HZ_48000,
    );
    let mut dec = Decoder::with_rate(Codec::Opus, SampleRate::HZ_8000).unwrap();
    let mut out = [0i16; 960];
    let mut k = 0;
    c.bench_function("opus_48k_speech_decode_to_8k_20ms", |b| {
        on_cpu(b, || {
            k = (k + 1) % packets.len();
            dec.decode(black_box(&packets[k]), &mut out).unwrap()
        })
    });
}

/// One 20 ms frame of a transcoded Opus<->PCMU call, both directions, on [`speech`]:
/// Opus in → PCM → PCMU out, and PCMU in → PCM → Opus out, with Opus' PCM at `rate`
/// (48 and 16 kHz need the resampler both ways; 8 kHz needs none). The Opus packets
/// come from a far-end encoder at the same rate, made once.
fn transcode(c: &mut Criterion) {
    let ulaw_in: Vec<Vec<u8>> = {
        let mut enc = Encoder::new(Codec::Pcmu).unwrap();
        let mut payload = [0u8; 160];
        speech(SampleRate::HZ_8000)
            .iter()
            .map(|f| {
                let n = enc.encode(f, &mut payload).unwrap();
                payload[..n].to_vec()
            })
            .collect()
    };
    for rate in [
        SampleRate::HZ_48000,
        SampleRate::HZ_16000,
        SampleRate::HZ_8000,
    ] {
        let n = rate.samples_per_frame();
        let opus_in = opus_packets(&mut Encoder::with_rate(Codec::Opus, rate).unwrap(), rate);
        let mut opus_dec = Decoder::with_rate(Codec::Opus, rate).unwrap();
        let mut opus_enc = Encoder::with_rate(Codec::Opus, rate).unwrap();
        let mut ulaw_dec = Decoder::new(Codec::Pcmu).unwrap();
        let mut ulaw_enc = Encoder::new(Codec::Pcmu).unwrap();
        let mut down = Resampler::new(rate, SampleRate::HZ_8000).unwrap();
        let mut up = Resampler::new(SampleRate::HZ_8000, rate).unwrap();
        let mut wide = [0i16; 960];
        let mut narrow = [0i16; 160];
        let mut out = [0u8; MAX_PAYLOAD_LEN];
        let mut k = 0;
        c.bench_function(
            &format!("transcode_opus_{}k_pcmu_both_ways_20ms", rate.hz() / 1000),
            |b| {
                on_cpu(b, || {
                    k = (k + 1) % opus_in.len();
                    // Opus leg → PCMU leg.
                    let m = opus_dec.decode(black_box(&opus_in[k]), &mut wide).unwrap();
                    down.process(&wide[..m], &mut narrow).unwrap();
                    let a = ulaw_enc.encode(&narrow, &mut out).unwrap();
                    // PCMU leg → Opus leg.
                    ulaw_dec
                        .decode(black_box(&ulaw_in[k]), &mut narrow)
                        .unwrap();
                    up.process(&narrow, &mut wide).unwrap();
                    let b = opus_enc.encode(&wide[..n], &mut out).unwrap();
                    black_box(a + b)
                })
            },
        );
    }
}

fn resample(c: &mut Criterion) {
    for (from, to) in [
        (SampleRate::HZ_8000, SampleRate::HZ_48000),
        (SampleRate::HZ_48000, SampleRate::HZ_8000),
        (SampleRate::HZ_8000, SampleRate::HZ_16000),
        (SampleRate::HZ_16000, SampleRate::HZ_8000),
    ] {
        let mut r = Resampler::new(from, to).unwrap();
        let input = tone(from.hz(), from.samples_per_frame());
        let mut out = [0i16; 960];
        c.bench_function(
            &format!("resample_{}_to_{}_20ms", from.hz(), to.hz()),
            |b| on_cpu(b, || r.process(black_box(&input), &mut out).unwrap()),
        );
    }
}

fn jitter(c: &mut Criterion) {
    let mut jb = JitterBuffer::new(JitterConfig::new(ClockRate::G711, 160));
    let payload = [0x55u8; 160];
    let t0 = Instant::now();
    let mut k = 0u32;
    c.bench_function("jitter_push_pop_20ms", |b| {
        on_cpu(b, || {
            let now = t0 + Duration::from_millis(20) * k;
            jb.push(
                Incoming {
                    ssrc: Ssrc(1),
                    seq: SeqNo(k as u16),
                    timestamp: RtpTimestamp(k.wrapping_mul(160)),
                    marker: false,
                    payload: &payload,
                },
                now,
            );
            let played = matches!(
                jb.pop(now + Duration::from_millis(5)),
                voxgate_media::Playout::Audio { .. }
            );
            k = k.wrapping_add(1);
            black_box(played)
        })
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30);
    targets = codecs, opus_rates, resample, transcode, jitter
}
criterion_main!(benches);
