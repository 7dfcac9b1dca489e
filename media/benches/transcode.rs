//! One transcoded call's work per 20 ms: a PCMU packet from the lead decoded, resampled
//! to 48 kHz and encoded as Opus for the agent, and an Opus packet from the agent decoded,
//! resampled to 8 kHz and encoded as PCMU for the lead (the relay's sockets not
//! included). 1 s / (this × 50) is the transcoded calls one core can carry, before the
//! relay's own per-packet cost (`benches/relay_load.rs`).
//!
//! `cargo bench -p voxgate-media --bench transcode`

#![allow(clippy::unwrap_used, clippy::cast_possible_truncation)]

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use voxgate_media::codec::{Codec, Encoder, SampleRate};
use voxgate_media::rtp::{write_header, HEADER_LEN};
use voxgate_media::transcode::{TranscodeSpec, Transcoder};
use voxgate_media::{ClockRate, RtpPacket, RtpTimestamp, SeqNo, Ssrc};

/// One second of speech-like audio (two tones sweeping, amplitude-modulated) as
/// 20 ms packets of `codec` (Opus coded from `rate`: 48 kHz is a browser's fullband, 8 kHz
/// a peer that honours `maxplaybackrate=8000`).
fn packets_at(codec: Codec, pt: u8, rate: SampleRate) -> Vec<Vec<u8>> {
    let n = rate.samples_per_frame();
    let mut enc = Encoder::with_rate(codec, rate).unwrap();
    let rate = f64::from(rate.hz());
    (0..50)
        .map(|k| {
            let pcm: Vec<i16> = (0..n)
                .map(|i| {
                    let t = (k * n + i) as f64 / rate;
                    let env = 0.5 + 0.5 * (std::f64::consts::TAU * 3.0 * t).sin();
                    let f1 = 300.0 + 200.0 * (std::f64::consts::TAU * 0.5 * t).sin();
                    let s = (std::f64::consts::TAU * f1 * t).sin()
                        + 0.5 * (std::f64::consts::TAU * 2.3 * f1 * t).sin();
                    (8000.0 * env * s) as i16
                })
                .collect();
            let mut pkt = vec![0u8; HEADER_LEN + 1500];
            let len = enc.encode(&pcm, &mut pkt[HEADER_LEN..]).unwrap();
            pkt.truncate(HEADER_LEN + len);
            let ts = RtpTimestamp(codec.ticks_per_frame() * k as u32);
            write_header(&mut pkt, pt, false, SeqNo(k as u16), ts, Ssrc(9)).unwrap();
            pkt
        })
        .collect()
}

fn packets(codec: Codec, pt: u8) -> Vec<Vec<u8>> {
    packets_at(codec, pt, codec.sample_rate())
}

fn transcoder(from: (u8, Codec), to: (u8, Codec)) -> Transcoder {
    let spec = TranscodeSpec {
        from: vec![from],
        to,
        events: Some(((101, ClockRate(8000)), (110, ClockRate(48_000)))),
    };
    Transcoder::new(&spec, Ssrc(1), SeqNo(0), RtpTimestamp(0)).unwrap()
}

/// Feeds `pkts` round and round (their timestamps shifted on so the stream goes on).
struct Feed {
    pkts: Vec<Vec<u8>>,
    i: usize,
    ticks: u32,
}

impl Feed {
    fn next(&mut self) -> &[u8] {
        let k = self.i % self.pkts.len();
        let round = (self.i / self.pkts.len()) as u32;
        let pkt = &mut self.pkts[k];
        let ts = RtpTimestamp(self.ticks * (round * 50 + k as u32));
        let seq = SeqNo(self.i as u16);
        let pt = pkt[1] & 0x7f;
        write_header(pkt, pt, false, seq, ts, Ssrc(9)).unwrap();
        self.i += 1;
        pkt
    }
}

fn bench(c: &mut Criterion) {
    let mut out = [0u8; 1600];
    let directions = [
        ("pcmu_to_opus", (0, Codec::Pcmu), (111, Codec::Opus)),
        ("opus_to_pcmu", (111, Codec::Opus), (0, Codec::Pcmu)),
        ("g722_to_pcma", (9, Codec::G722), (8, Codec::Pcma)),
        ("pcma_to_g722", (8, Codec::Pcma), (9, Codec::G722)),
    ];
    for (name, from, to) in directions {
        let mut t = transcoder(from, to);
        let mut feed = Feed {
            pkts: packets(from.1, from.0),
            i: 0,
            ticks: from.1.ticks_per_frame(),
        };
        c.bench_function(&format!("transcode/{name}_20ms"), |b| {
            b.iter(|| {
                let pkt = RtpPacket::new_checked(feed.next()).unwrap();
                black_box(t.push(&pkt));
                while let Some(n) = t.pop(&mut out) {
                    black_box(n);
                }
            });
        });
    }
    // Both directions of one Opus<->PCMU call: what a call costs per 20 ms.
    let mut up = transcoder((0, Codec::Pcmu), (111, Codec::Opus));
    let mut down = transcoder((111, Codec::Opus), (0, Codec::Pcmu));
    let mut lead = Feed {
        pkts: packets(Codec::Pcmu, 0),
        i: 0,
        ticks: 160,
    };
    let mut agent = Feed {
        pkts: packets(Codec::Opus, 111),
        i: 0,
        ticks: 960,
    };
    c.bench_function("transcode/opus_pcmu_call_20ms_both_ways", |b| {
        b.iter(|| {
            for (t, feed) in [(&mut up, &mut lead), (&mut down, &mut agent)] {
                let pkt = RtpPacket::new_checked(feed.next()).unwrap();
                black_box(t.push(&pkt));
                while let Some(n) = t.pop(&mut out) {
                    black_box(n);
                }
            }
        });
    });
    // The same with an agent whose Opus encoder honours maxplaybackrate=8000 (voxgate
    // asks for it when it transcodes against G.711): narrowband packets in.
    let mut agent = Feed {
        pkts: packets_at(Codec::Opus, 111, SampleRate::HZ_8000),
        i: 0,
        ticks: 960,
    };
    c.bench_function("transcode/opus_nb_pcmu_call_20ms_both_ways", |b| {
        b.iter(|| {
            for (t, feed) in [(&mut up, &mut lead), (&mut down, &mut agent)] {
                let pkt = RtpPacket::new_checked(feed.next()).unwrap();
                black_box(t.push(&pkt));
                while let Some(n) = t.pop(&mut out) {
                    black_box(n);
                }
            }
        });
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
