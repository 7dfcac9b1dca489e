//! Two senders on a virtual clock, through a network that loses, delays, reorders and
//! pauses their packets on purpose; the file's channels are checked for where the audio
//! lands (tones by Goertzel, markers by their first loud sample).

use super::*;

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}

type Content = fn(f64) -> i16;

fn sine(freq: f64, amp: f64, t: f64) -> i16 {
    (amp * (2.0 * std::f64::consts::PI * freq * t).sin()) as i16
}

/// 440 Hz, and a loud 2 kHz marker for 40 ms at 5 s.
fn agent(t: f64) -> i16 {
    if (5.0..5.04).contains(&t) {
        sine(2000.0, 20_000.0, t)
    } else {
        sine(440.0, 3000.0, t)
    }
}

/// 1 kHz, and the same marker at 5 s.
fn lead(t: f64) -> i16 {
    if (5.0..5.04).contains(&t) {
        sine(2000.0, 20_000.0, t)
    } else {
        sine(1000.0, 3000.0, t)
    }
}

#[derive(Clone)]
struct Stream {
    side: Side,
    ssrc: u32,
    ts0: u32,
    clock: u32,
    rate: u32,
    ptime_ms: u64,
    /// Real time of the first sample and of the end of the stream.
    start: f64,
    end: f64,
    /// Sender clock error: it samples `1 + ppm/1e6` times too fast.
    ppm: f64,
    content: Content,
    // The network between it and us:
    loss_percent: u64,
    jitter_ms: u64,
    /// Nothing is sent whose real time falls in this interval.
    gap: Option<(f64, f64)>,
    /// The sender's timestamp stands still during the gap (it restarts where it stopped).
    freeze_ts_in_gap: bool,
    seed: u64,
}

impl Stream {
    fn new(side: Side, content: Content) -> Stream {
        Stream {
            side,
            ssrc: if side == Side::Internal {
                0x1111
            } else {
                0x2222
            },
            ts0: if side == Side::Internal {
                1000
            } else {
                3_000_000_000
            },
            clock: 8000,
            rate: 8000,
            ptime_ms: 20,
            start: 0.0,
            end: 8.0,
            ppm: 0.0,
            content,
            loss_percent: 0,
            jitter_ms: 0,
            gap: None,
            freeze_ts_in_gap: false,
            seed: 0x9e37_79b9_7f4a_7c15,
        }
    }
}

struct Packet {
    arrival: Duration,
    order: u64,
    side: Side,
    ssrc: u32,
    ts: u32,
    clock: u32,
    rate: u32,
    samples: Vec<i16>,
}

fn packets(s: &Stream) -> Vec<Packet> {
    let mut rng = XorShift(s.seed);
    let n = (s.rate as u64 * s.ptime_ms / 1000) as usize;
    let ts_step = s.clock as u64 * s.ptime_ms / 1000;
    let speed = 1.0 + s.ppm / 1e6;
    let mut out = Vec::new();
    let mut frozen = 0u64;
    for k in 0u64.. {
        let t_first = s.start + (k as f64 * n as f64) / s.rate as f64 / speed;
        let sent = t_first + s.ptime_ms as f64 / 1000.0 / speed;
        if sent > s.end {
            break;
        }
        if let Some((a, b)) = s.gap {
            if t_first >= a && t_first < b {
                if s.freeze_ts_in_gap {
                    frozen += ts_step;
                }
                continue;
            }
        }
        if rng.next() % 100 < s.loss_percent {
            continue;
        }
        let samples = (0..n)
            .map(|j| (s.content)(t_first + j as f64 / s.rate as f64 / speed))
            .collect();
        let jitter = if s.jitter_ms == 0 {
            0
        } else {
            rng.next() % (s.jitter_ms * 1000)
        };
        out.push(Packet {
            arrival: Duration::from_secs_f64(sent) + Duration::from_micros(jitter),
            order: k,
            side: s.side,
            ssrc: s.ssrc,
            ts: s.ts0.wrapping_add(((k * ts_step) - frozen) as u32),
            clock: s.clock,
            rate: s.rate,
            samples,
        });
    }
    out
}

#[derive(Clone, Copy)]
enum Cmd {
    Pause,
    Resume,
}

struct Run {
    out: Vec<i16>,
    rec: Recorder,
    placements: Vec<(Side, Placement)>,
}

fn run_with(config: RecorderConfig, mut pkts: Vec<Packet>, cmds: &[(f64, Cmd)], end: f64) -> Run {
    pkts.sort_by_key(|p| (p.arrival, p.order));
    let t0 = Instant::now();
    let mut rec = Recorder::new(config, t0);
    let mut out = Vec::new();
    let mut placements = Vec::new();
    let mut next = 0;
    let mut cmd = 0;
    let step = Duration::from_millis(5);
    let end = Duration::from_secs_f64(end);
    let mut t = Duration::ZERO;
    while t < end {
        t = (t + step).min(end);
        while cmd < cmds.len() && Duration::from_secs_f64(cmds[cmd].0) <= t {
            let at = t0 + Duration::from_secs_f64(cmds[cmd].0);
            match cmds[cmd].1 {
                Cmd::Pause => rec.pause(at),
                Cmd::Resume => rec.resume(at),
            }
            cmd += 1;
        }
        while next < pkts.len() && pkts[next].arrival <= t {
            let p = &pkts[next];
            let f = Frame {
                ssrc: Ssrc(p.ssrc),
                timestamp: RtpTimestamp(p.ts),
                clock: ClockRate(p.clock),
                rate: SampleRate(p.rate),
                samples: &p.samples,
            };
            placements.push((p.side, rec.handle_frame(p.side, &f, t0 + p.arrival)));
            next += 1;
        }
        rec.poll_output(t0 + t, &mut out);
    }
    rec.finish(t0 + end, &mut out);
    Run {
        out,
        rec,
        placements,
    }
}

fn run(config: RecorderConfig, streams: &[Stream], end: f64) -> Run {
    run_with(config, streams.iter().flat_map(packets).collect(), &[], end)
}

fn dual8k() -> RecorderConfig {
    RecorderConfig::new(SampleRate::NARROWBAND, Channels::Dual)
}

fn channels(out: &[i16]) -> (Vec<i16>, Vec<i16>) {
    (
        out.iter().step_by(2).copied().collect(),
        out.iter().skip(1).step_by(2).copied().collect(),
    )
}

/// Amplitude of `freq` in `x` (Goertzel, RFC-free textbook form).
fn goertzel(x: &[i16], freq: f64, rate: f64) -> f64 {
    let w = 2.0 * std::f64::consts::PI * freq / rate;
    let c = 2.0 * w.cos();
    let (mut s1, mut s2) = (0.0, 0.0);
    for &v in x {
        let s0 = f64::from(v) + c * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    let power = s1 * s1 + s2 * s2 - c * s1 * s2;
    2.0 * power.max(0.0).sqrt() / x.len() as f64
}

fn span(x: &[i16], rate: usize, from: f64, to: f64) -> &[i16] {
    &x[(from * rate as f64) as usize..(to * rate as f64) as usize]
}

/// Equal sample for sample; on failure names the first difference, not 100k samples.
fn assert_same(a: &[i16], b: &[i16]) {
    assert_eq!(a.len(), b.len(), "lengths");
    if let Some(i) = a.iter().zip(b).position(|(x, y)| x != y) {
        panic!("first difference at {i}: {} vs {}", a[i], b[i]);
    }
}

fn first_loud(x: &[i16], from: usize, threshold: i16) -> Option<usize> {
    x.iter()
        .skip(from)
        .position(|v| v.unsigned_abs() > threshold.unsigned_abs())
        .map(|p| p + from)
}

#[test]
fn two_sides_starting_at_different_times_land_on_their_channels() {
    let a = Stream {
        end: 3.0,
        ..Stream::new(Side::Internal, |t| sine(440.0, 3000.0, t))
    };
    let b = Stream {
        start: 1.0,
        end: 4.0,
        ..Stream::new(Side::External, |t| sine(1000.0, 3000.0, t))
    };
    let r = run(dual8k(), &[a, b], 4.0);
    assert_eq!(r.out.len(), 2 * 4 * 8000, "4 s of stereo");
    let (l, rr) = channels(&r.out);
    let win = |x: &[i16], f, t0, t1| goertzel(span(x, 8000, t0, t1), f, 8000.0);
    assert!(win(&l, 440.0, 0.1, 2.9) > 2500.0);
    assert!(win(&l, 1000.0, 0.1, 2.9) < 100.0);
    assert!(win(&rr, 1000.0, 1.1, 3.9) > 2500.0);
    assert!(win(&rr, 440.0, 1.1, 3.9) < 100.0);
    assert!(span(&rr, 8000, 0.0, 0.95).iter().all(|&v| v == 0));
    assert!(span(&l, 8000, 3.05, 4.0).iter().all(|&v| v == 0));
    // The lead's audio starts at 1 s, within one frame.
    let onset = first_loud(&rr, 0, 500).unwrap();
    assert!(onset.abs_diff(8000) <= 160, "onset at {onset}");
    let s = r.rec.stats();
    assert_eq!(s.internal.frames_late + s.external.frames_late, 0);
    assert_eq!(s.internal.reanchors + s.external.reanchors, 0);
}

fn marker_places(r: &Run) -> (usize, usize) {
    let (l, rr) = channels(&r.out);
    let from = (4.5 * 8000.0) as usize;
    (
        first_loud(&l, from, 10_000).unwrap(),
        first_loud(&rr, from, 10_000).unwrap(),
    )
}

fn assert_marker_in_place(r: &Run) {
    let (ml, mr) = marker_places(r);
    // Within one 20 ms frame of its place (5 s) on both channels, and of each other.
    assert!(ml.abs_diff(40_000) <= 160, "left marker at {ml}");
    assert!(mr.abs_diff(40_000) <= 160, "right marker at {mr}");
    assert!(ml.abs_diff(mr) <= 160, "{ml} vs {mr}");
}

#[test]
fn loss_jitter_and_a_two_second_gap_keep_the_marker_in_place() {
    let a = Stream {
        jitter_ms: 30,
        ..Stream::new(Side::Internal, agent)
    };
    let b = Stream {
        start: 0.5,
        loss_percent: 5,
        jitter_ms: 30,
        gap: Some((2.0, 4.0)),
        seed: 77,
        ..Stream::new(Side::External, lead)
    };
    let pkts = packets(&b);
    let sent = pkts.len();
    // 5 % of 7.5 s minus the gap: some were lost, and jitter reordered some.
    assert!(sent < 270 && sent > 230, "{sent}");
    assert!(pkts.windows(2).any(|w| w[0].arrival > w[1].arrival));
    let r = run(dual8k(), &[a, b.clone()], 8.0);
    assert_eq!(r.out.len(), 2 * 8 * 8000);
    assert_marker_in_place(&r);
    let s = r.rec.stats();
    assert_eq!(s.external.frames_late, 0);
    // Every frame that arrived before the end landed (a few jittered past it).
    let arrived = pkts
        .iter()
        .filter(|p| p.arrival <= Duration::from_secs(8))
        .count();
    assert_eq!(s.external.frames_placed, arrived as u64);
    assert_eq!(s.external.reanchors, 0);
    // The gap is silence on the right channel only.
    let (l, rr) = channels(&r.out);
    assert!(span(&rr, 8000, 2.1, 3.9).iter().all(|&v| v == 0));
    assert!(goertzel(span(&l, 8000, 2.1, 3.9), 440.0, 8000.0) > 2500.0);
}

#[test]
fn a_sender_that_restarts_its_timestamp_after_a_gap_is_reanchored() {
    let a = Stream::new(Side::Internal, agent);
    let b = Stream {
        gap: Some((2.0, 4.0)),
        freeze_ts_in_gap: true,
        jitter_ms: 10,
        ..Stream::new(Side::External, lead)
    };
    let r = run(dual8k(), &[a, b], 8.0);
    assert_marker_in_place(&r);
    let s = r.rec.stats();
    assert_eq!(s.external.reanchors, 1);
    // The first frame after the gap was held as a possible straggler.
    assert_eq!(s.external.frames_out_of_place, 1);
    assert!(r
        .placements
        .contains(&(Side::External, Placement::Reanchored(Reanchor::Jump))));
}

#[test]
fn a_single_straggler_far_out_of_place_does_not_move_the_stream() {
    let a = Stream::new(Side::Internal, agent);
    let b = Stream::new(Side::External, lead);
    let mut pkts: Vec<Packet> = packets(&a).into_iter().chain(packets(&b)).collect();
    // One lead frame from 1 s arrives 3 s late: beyond the jump threshold.
    let p = pkts
        .iter_mut()
        .find(|p| p.side == Side::External && p.arrival == Duration::from_millis(1000))
        .unwrap();
    p.arrival += Duration::from_secs(3);
    let r = run_with(dual8k(), pkts, &[], 8.0);
    assert_marker_in_place(&r);
    let s = r.rec.stats();
    assert_eq!(s.external.reanchors, 0);
    assert_eq!(s.external.frames_out_of_place, 1);
    let (_, rr) = channels(&r.out);
    // Its place stayed silent.
    assert!(span(&rr, 8000, 0.981, 0.999).iter().all(|&v| v == 0));
}

#[test]
fn reordering_within_the_window_gives_the_same_file_and_later_frames_are_dropped() {
    let a = Stream::new(Side::Internal, agent);
    let b = Stream::new(Side::External, lead);
    let in_order = run(dual8k(), &[a.clone(), b.clone()], 6.0);

    let swap = |mut pkts: Vec<Packet>| {
        // Swap the arrival of every other pair of lead frames.
        // (Not the first: the first frame to arrive anchors the stream.)
        for pair in pkts.chunks_mut(2).skip(1).step_by(2) {
            if let [x, y] = pair {
                std::mem::swap(&mut x.arrival, &mut y.arrival);
            }
        }
        pkts
    };
    let pkts: Vec<Packet> = packets(&a).into_iter().chain(swap(packets(&b))).collect();
    let reordered = run_with(dual8k(), pkts, &[], 6.0);
    assert_same(&in_order.out, &reordered.out);

    // One frame 400 ms late: past the 250 ms window, short of a jump.
    let mut pkts: Vec<Packet> = packets(&a).into_iter().chain(packets(&b)).collect();
    let p = pkts
        .iter_mut()
        .find(|p| p.side == Side::External && p.arrival == Duration::from_millis(2000))
        .unwrap();
    p.arrival += Duration::from_millis(400);
    let late = run_with(dual8k(), pkts, &[], 6.0);
    assert_eq!(late.rec.stats().external.frames_late, 1);
    assert!(late.placements.contains(&(Side::External, Placement::Late)));
    let (_, rr) = channels(&late.out);
    let (_, rr0) = channels(&in_order.out);
    // Its 20 ms are silent, the rest is as in order.
    assert!(span(&rr, 8000, 1.98, 2.0).iter().all(|&v| v == 0));
    assert_same(span(&rr, 8000, 0.0, 1.98), span(&rr0, 8000, 0.0, 1.98));
    assert_same(span(&rr, 8000, 2.0, 6.0), span(&rr0, 8000, 2.0, 6.0));
}

#[test]
fn timestamp_wrap_is_continuous() {
    let b = Stream {
        // Wraps about 1 s in.
        ts0: u32::MAX - 8000 + 1,
        ..Stream::new(Side::External, |t| sine(1000.0, 3000.0, t))
    };
    let r = run(dual8k(), &[b], 3.0);
    let s = r.rec.stats();
    assert_eq!(s.external.reanchors, 0);
    assert_eq!(s.external.frames_out_of_place, 0);
    let (_, rr) = channels(&r.out);
    assert!(goertzel(span(&rr, 8000, 0.5, 1.5), 1000.0, 8000.0) > 2900.0);
    // No silent hole across the wrap.
    assert!(span(&rr, 8000, 0.9, 1.1)
        .chunks(8)
        .all(|c| c.iter().any(|&v| v != 0)));
}

#[test]
fn a_new_ssrc_reanchors_from_arrival() {
    let b1 = Stream {
        end: 2.0,
        ..Stream::new(Side::External, lead)
    };
    let b2 = Stream {
        ssrc: 0x3333,
        ts0: 42,
        start: 2.0,
        ..Stream::new(Side::External, lead)
    };
    let r = run(dual8k(), &[Stream::new(Side::Internal, agent), b1, b2], 8.0);
    assert_marker_in_place(&r);
    assert!(r
        .placements
        .contains(&(Side::External, Placement::Reanchored(Reanchor::Ssrc))));
}

#[test]
fn clock_drift_is_followed_without_dropping_frames() {
    for ppm in [10_000.0, -10_000.0] {
        let b = Stream {
            ppm,
            end: 40.0,
            ..Stream::new(Side::External, |t| sine(1000.0, 3000.0, t))
        };
        let r = run(dual8k(), &[Stream::new(Side::Internal, agent), b], 40.0);
        let s = r.rec.stats().external;
        assert_eq!(s.frames_late, 0, "{ppm} ppm");
        assert_eq!(s.reanchors, 0, "{ppm} ppm");
        // 1 % of 40 s is 400 ms: realigned in steps of about 20 ms.
        assert!(s.realigns >= 5, "{ppm} ppm: {} realigns", s.realigns);
    }
}

#[test]
fn pause_writes_silence_or_skips() {
    let a = Stream {
        end: 4.0,
        ..Stream::new(Side::Internal, |t| sine(440.0, 3000.0, t))
    };
    let b = Stream {
        end: 4.0,
        jitter_ms: 20,
        ..Stream::new(Side::External, |t| sine(1000.0, 3000.0, t))
    };
    let cmds = [(1.0, Cmd::Pause), (2.0, Cmd::Resume)];
    let pk = || {
        packets(&a)
            .into_iter()
            .chain(packets(&b))
            .collect::<Vec<_>>()
    };

    let silence = run_with(dual8k(), pk(), &cmds, 4.0);
    assert_eq!(silence.out.len(), 2 * 4 * 8000);
    let (l, rr) = channels(&silence.out);
    for x in [&l, &rr] {
        assert!(span(x, 8000, 1.0, 2.0).iter().all(|&v| v == 0));
        assert!(span(x, 8000, 0.5, 0.99).iter().any(|&v| v != 0));
        assert!(span(x, 8000, 2.05, 2.5).iter().any(|&v| v != 0));
    }
    assert!(silence.rec.stats().external.frames_paused >= 45);

    let config = RecorderConfig {
        pause_behavior: PauseBehavior::Skip,
        ..dual8k()
    };
    let skip = run_with(config, pk(), &cmds, 4.0);
    assert_eq!(
        skip.out.len(),
        2 * 3 * 8000,
        "the paused second is left out"
    );
    let (l2, _) = channels(&skip.out);
    assert_same(span(&l2, 8000, 0.0, 1.0), span(&l, 8000, 0.0, 1.0));
    assert_same(span(&l2, 8000, 1.0, 3.0), span(&l, 8000, 2.0, 4.0));
}

#[test]
fn pause_until_the_end_skips_the_rest() {
    let a = Stream::new(Side::Internal, |t| sine(440.0, 3000.0, t));
    let config = RecorderConfig {
        pause_behavior: PauseBehavior::Skip,
        ..dual8k()
    };
    let r = run_with(config, packets(&a), &[(1.0, Cmd::Pause)], 3.0);
    assert_eq!(r.out.len(), 2 * 8000);
}

#[test]
fn mono_mixes_with_saturation() {
    let a = Stream::new(Side::Internal, |_| 1000);
    let b = Stream::new(Side::External, |_| 2000);
    let config = RecorderConfig::new(SampleRate::NARROWBAND, Channels::Mono);
    let r = run(config, &[a, b], 2.0);
    assert_eq!(r.out.len(), 2 * 8000);
    assert!(span(&r.out, 8000, 0.1, 1.9).iter().all(|&v| v == 3000));

    let a = Stream::new(Side::Internal, |_| 30_000);
    let b = Stream::new(Side::External, |_| 30_000);
    let r = run(config, &[a, b], 1.0);
    assert!(span(&r.out, 8000, 0.1, 0.9).iter().all(|&v| v == i16::MAX));
}

#[test]
fn a_wideband_side_makes_a_16k_recording_and_stays_aligned() {
    assert_eq!(
        SampleRate::for_recording(SampleRate(8000), SampleRate(16_000)),
        SampleRate::WIDEBAND
    );
    assert_eq!(
        SampleRate::for_recording(SampleRate(8000), SampleRate(8000)),
        SampleRate::NARROWBAND
    );
    let a = Stream::new(Side::Internal, agent);
    // G.722: 16 kHz audio on an 8 kHz RTP clock.
    let b = Stream {
        rate: 16_000,
        ..Stream::new(Side::External, lead)
    };
    let config = RecorderConfig::new(SampleRate::WIDEBAND, Channels::Dual);
    let r = run(config, &[a, b], 8.0);
    assert_eq!(r.out.len(), 2 * 8 * 16_000);
    let (l, rr) = channels(&r.out);
    let from = 4 * 16_000;
    let (ml, mr) = (
        first_loud(&l, from, 10_000).unwrap(),
        first_loud(&rr, from, 10_000).unwrap(),
    );
    assert!(
        ml.abs_diff(80_000) <= 320 && mr.abs_diff(80_000) <= 320,
        "{ml} {mr}"
    );
    assert!(goertzel(span(&l, 16_000, 1.0, 4.0), 440.0, 16_000.0) > 2500.0);
    assert!(goertzel(span(&rr, 16_000, 1.0, 4.0), 1000.0, 16_000.0) > 2500.0);
}

#[test]
fn invalid_frames_are_ignored() {
    let mut rec = Recorder::new(dual8k(), Instant::now());
    let f = Frame {
        ssrc: Ssrc(1),
        timestamp: RtpTimestamp(0),
        clock: ClockRate(0),
        rate: SampleRate(8000),
        samples: &[1; 160],
    };
    assert_eq!(
        rec.handle_frame(Side::Internal, &f, Instant::now()),
        Placement::Invalid
    );
    let f = Frame {
        clock: ClockRate(8000),
        samples: &[],
        ..f
    };
    assert_eq!(
        rec.handle_frame(Side::Internal, &f, Instant::now()),
        Placement::Invalid
    );
    assert_eq!(rec.stats().internal.frames_invalid, 2);
}

#[test]
fn rate_conversion_keeps_frame_lengths() {
    let mut out = Vec::new();
    convert_rate(&[0, 100, 200, 300], 8000, 16_000, &mut out);
    assert_eq!(out, vec![0, 50, 100, 150, 200, 250, 300, 300]);
    convert_rate(&[0, 100, 200, 300], 16_000, 8000, &mut out);
    assert_eq!(out, vec![50, 250]);
    convert_rate(&[7; 960], 48_000, 16_000, &mut out);
    assert_eq!(out.len(), 320);
}

#[test]
fn a_late_first_packet_does_not_leave_the_stream_late() {
    // The sender starts 40 ms late and catches up: its first three packets arrive
    // together when the third is due, the rest on time. The anchor taken from the
    // first is provisional: the next packets, early for it, move the stream (and the
    // first frames) back to where their timestamps put it.
    let s = Stream {
        start: 1.0,
        end: 7.0,
        ..Stream::new(Side::External, lead)
    };
    let mut pkts = packets(&s);
    let burst = pkts[2].arrival;
    for (i, p) in pkts.iter_mut().take(3).enumerate() {
        p.arrival = burst + Duration::from_micros(100 * i as u64);
    }
    let late_start = run_with(dual8k(), pkts, &[], 7.0);
    let on_time = run(dual8k(), &[s], 7.0);
    let (_, a) = channels(&late_start.out);
    let (_, b) = channels(&on_time.out);
    let onset = |x: &[i16]| first_loud(x, 0, 500).unwrap();
    assert!(
        onset(&a).abs_diff(onset(&b)) <= 8,
        "stream starts at {} instead of {}",
        onset(&a),
        onset(&b)
    );
    let marker = |x: &[i16]| first_loud(x, (4.5 * 8000.0) as usize, 10_000).unwrap();
    assert!(marker(&a).abs_diff(marker(&b)) <= 8);
    // Marker and start keep their distance: 4 s.
    assert!((marker(&a) - onset(&a)).abs_diff(32_000) <= 8);
}
