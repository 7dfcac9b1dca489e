//! Per-packet cost of playing into a leg: one 20 ms frame of a looping prompt copied,
//! encoded and given its RTP header by `Player::poll_transmit` (PCMU and Opus), what a
//! relay worker spends per played packet besides the rewrite and the `sendto`.
//! Run: `cargo bench -p voxgate-media --bench player`.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use voxgate_media::player::{Loops, Player, RtpIdentity, MAX_PACKET_LEN};
use voxgate_media::Codec;

fn prompt(rate: u32) -> Arc<[i16]> {
    // Two seconds of a 440 Hz tone at the codec's rate.
    (0..rate * 2)
        .map(|i| {
            let t = f64::from(i) / f64::from(rate);
            (8000.0 * (std::f64::consts::TAU * 440.0 * t).sin()) as i16
        })
        .collect::<Vec<_>>()
        .into()
}

fn player(c: &mut Criterion) {
    for codec in [Codec::Pcmu, Codec::Opus] {
        let rate = codec.sample_rate();
        let mut p = Player::prompt(
            prompt(rate.hz()),
            rate,
            codec,
            0,
            Loops::Forever,
            RtpIdentity::from_random([1, 2, 3]),
        )
        .unwrap();
        let mut now = Instant::now();
        p.start(now);
        let mut buf = [0u8; MAX_PACKET_LEN];
        c.bench_function(
            &format!("player_{}_packet_20ms", codec.encoding_name()),
            |b| {
                b.iter(|| {
                    let tx = p.poll_transmit(now, &mut buf).unwrap();
                    now += Duration::from_millis(20);
                    black_box(tx.len)
                })
            },
        );
    }
}

criterion_group!(benches, player);
criterion_main!(benches);
