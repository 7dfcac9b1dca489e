//! DTMF micro-benchmarks: the in-band detector runs on every 20 ms frame of every leg
//! that is listened to for tones; the RFC 4733 receiver on every telephone-event packet.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use voxgate_media::dtmf::{
    rfc4733, Digit, InbandDetector, ReceiverConfig, Rfc4733Receiver, ToneGenerator, ToneLevels,
};
use voxgate_media::rtp::{RtpPacket, RtpTimestamp, SeqNo, Ssrc};

/// 2 s of audio: digits and pauses, so the detector runs through all its states.
fn audio() -> Vec<i16> {
    let mut tg = ToneGenerator::new(8000, ToneLevels::default());
    for d in Digit::ALL {
        tg.push(d, Duration::from_millis(60), Duration::from_millis(60));
    }
    let mut pcm = vec![0i16; 16 * 120 * 8];
    let n = tg.fill(&mut pcm);
    pcm.truncate(n);
    pcm
}

fn goertzel(c: &mut Criterion) {
    let pcm = audio();
    let frames: Vec<&[i16]> = pcm.chunks_exact(160).collect();
    let mut det = InbandDetector::default();
    let mut i = 0usize;
    let mut g = c.benchmark_group("dtmf");
    g.throughput(Throughput::Elements(1));
    g.bench_function("inband_detect_20ms_frame", |b| {
        b.iter(|| {
            det.process(black_box(frames[i % frames.len()]));
            i += 1;
            while let Some(s) = det.poll_signal() {
                black_box(s);
            }
        });
    });
    g.finish();
}

/// Real-shaped packets: per press a start, updates every 50 ms and three end packets.
fn packets() -> Vec<Vec<u8>> {
    let mut v = Vec::new();
    let mut seq = SeqNo(0);
    for (k, d) in Digit::ALL.iter().enumerate() {
        let ts = RtpTimestamp(u32::try_from(k).unwrap_or(0) * 4000);
        let mut push = |marker: bool, payload: [u8; 4]| {
            let mut buf = vec![0u8; 16];
            voxgate_media::rtp::write_header(&mut buf, 101, marker, seq, ts, Ssrc(42));
            buf[12..].copy_from_slice(&payload);
            seq = seq.wrapping_add(1);
            v.push(buf);
        };
        push(true, rfc4733::encode(d.event_code(), false, 10, 400));
        push(false, rfc4733::encode(d.event_code(), false, 10, 800));
        for _ in 0..3 {
            push(false, rfc4733::encode(d.event_code(), true, 10, 960));
        }
    }
    v
}

fn receive(c: &mut Criterion) {
    let mut pkts = packets();
    let base: Vec<RtpTimestamp> = pkts
        .iter()
        .map(|p| RtpPacket::new_unchecked(&p[..]).timestamp())
        .collect();
    let start = Instant::now();
    let mut rx = Rfc4733Receiver::new(ReceiverConfig::default());
    let mut i = 0usize;
    let mut g = c.benchmark_group("dtmf");
    g.throughput(Throughput::Elements(1));
    g.bench_function("rfc4733_receive_packet", |b| {
        b.iter(|| {
            let k = i % pkts.len();
            // Each lap of the list moves the timestamps on, so presses stay new.
            let lap = u32::try_from(i / pkts.len()).unwrap_or(0);
            i += 1;
            let now = start + Duration::from_millis(u64::try_from(i).unwrap_or(0) * 20);
            RtpPacket::new_unchecked(&mut pkts[k][..])
                .set_timestamp(base[k].wrapping_add(lap.wrapping_mul(64_000)));
            if let Ok(view) = RtpPacket::new_checked(black_box(&pkts[k][..])) {
                let _ = rx.handle_rtp(&view, now);
            }
            while let Some(s) = rx.poll_signal() {
                black_box(s);
            }
        });
    });
    g.finish();
}

criterion_group!(benches, goertzel, receive);
criterion_main!(benches);
