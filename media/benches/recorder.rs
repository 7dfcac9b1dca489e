//! Placing one 20 ms frame per side on a recording timeline and handing out the mixed
//! (mono) or interleaved (dual) 20 ms of output: the recording worker's work per call
//! per 20 ms, without the file write.
//!
//! `cargo bench -p voxgate-media --bench recorder`

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use voxgate_media::recorder::{Channels, Frame, Recorder, RecorderConfig, SampleRate, Side};
use voxgate_media::{ClockRate, RtpTimestamp, Ssrc};

fn bench_channels(c: &mut Criterion, name: &str, channels: Channels, rate: SampleRate) {
    let n = usize::try_from(rate.0 / 50).unwrap_or(160);
    let agent: Vec<i16> = (0..n).map(|i| (i as i16).wrapping_mul(97)).collect();
    let lead: Vec<i16> = (0..n).map(|i| (i as i16).wrapping_mul(-31)).collect();
    let t0 = Instant::now();
    let mut rec = Recorder::new(RecorderConfig::new(rate, channels), t0);
    let mut out = Vec::with_capacity(4 * n);
    let mut k: u32 = 0;
    c.bench_function(name, |b| {
        b.iter(|| {
            let now = t0 + Duration::from_millis(20 * (u64::from(k) + 1));
            // G.711 on one side, the same rate on the other: an 8 kHz RTP clock.
            let ts = RtpTimestamp(160 * k);
            let clock = ClockRate(8000);
            for (side, samples, ssrc) in [(Side::Internal, &agent, 1), (Side::External, &lead, 2)] {
                let f = Frame {
                    ssrc: Ssrc(ssrc),
                    timestamp: ts,
                    clock,
                    rate,
                    samples,
                };
                black_box(rec.handle_frame(side, &f, now));
            }
            out.clear();
            black_box(rec.poll_output(now, &mut out));
            k = k.wrapping_add(1);
        });
    });
}

fn recorder(c: &mut Criterion) {
    bench_channels(
        c,
        "recorder/dual_8k_20ms_both_sides",
        Channels::Dual,
        SampleRate(8000),
    );
    bench_channels(
        c,
        "recorder/mono_8k_20ms_both_sides",
        Channels::Mono,
        SampleRate(8000),
    );
    bench_channels(
        c,
        "recorder/dual_16k_20ms_both_sides",
        Channels::Dual,
        SampleRate(16_000),
    );
}

fn mixer(c: &mut Criterion) {
    let a: Vec<i16> = (0..160).map(|i| i * 97).collect();
    let b: Vec<i16> = (0..160).map(|i| i * -31).collect();
    let mut out = Vec::with_capacity(320);
    c.bench_function("mixer/mix_160", |bn| {
        bn.iter(|| {
            out.clear();
            voxgate_media::mixer::mix_extend(black_box(&a), black_box(&b), &mut out);
        });
    });
    c.bench_function("mixer/interleave_160", |bn| {
        bn.iter(|| {
            out.clear();
            voxgate_media::mixer::interleave_extend(black_box(&a), black_box(&b), &mut out);
        });
    });
}

criterion_group!(benches, recorder, mixer);
criterion_main!(benches);
