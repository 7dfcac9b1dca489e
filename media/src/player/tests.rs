use std::net::SocketAddr;

use super::*;
use crate::codec::testutil::{dominant, tone};
use crate::codec::{linear_to_ulaw, Decoder};
use crate::dtmf::{DtmfSignal, InbandDetector, TelephoneEvent};
use crate::relay::{route, LegPolicy, LegRemote, Port, Route};
use crate::resample::Resampler;
use crate::rtp::RtpPacket;

const ID: RtpIdentity = RtpIdentity {
    ssrc: Ssrc(0x5eed),
    seq: SeqNo(65_534),
    timestamp: RtpTimestamp(0xffff_ff00),
};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A sent packet: when, and its bytes.
type Sent = (Instant, Vec<u8>);

/// Drives `src` on a virtual clock in 1 ms steps from `t0` for `total`, collecting its
/// packets.
fn drive(src: &mut Source, t0: Instant, total: Duration) -> Vec<Sent> {
    let mut out = Vec::new();
    let mut buf = [0u8; MAX_PACKET_LEN];
    src.start(t0);
    let mut t = t0;
    while t <= t0 + total {
        while let Some(tx) = src.poll_transmit(t, &mut buf) {
            out.push((t, buf[..tx.len].to_vec()));
        }
        t += ms(1);
    }
    out
}

fn view(b: &[u8]) -> RtpPacket<&[u8]> {
    RtpPacket::new_checked(b).unwrap()
}

fn ramp(n: usize) -> Arc<[i16]> {
    (0..n)
        .map(|i| i16::try_from(i * 40 % 30_000).unwrap())
        .collect::<Vec<_>>()
        .into()
}

#[test]
fn a_prompt_is_paced_numbered_and_padded() {
    let t0 = Instant::now();
    let pcm = ramp(400); // 2.5 frames at 8 kHz
    let p = Player::prompt(
        pcm.clone(),
        SampleRate::HZ_8000,
        Codec::Pcmu,
        0,
        Loops::ONCE,
        ID,
    )
    .unwrap();
    let mut src = Source::Audio(p);
    assert_eq!(src.kind(), SourceKind::Prompt);
    let sent = drive(&mut src, t0, ms(200));
    assert_eq!(sent.len(), 3);
    for (k, (at, b)) in sent.iter().enumerate() {
        let k32 = u32::try_from(k).unwrap();
        assert_eq!(*at, t0 + FRAME * k32, "packet {k} on its 20 ms slot");
        let v = view(b);
        assert_eq!(v.ssrc(), ID.ssrc);
        assert_eq!(v.seq(), ID.seq.wrapping_add(u16::try_from(k).unwrap()));
        assert_eq!(v.timestamp(), ID.timestamp.wrapping_add(160 * k32));
        assert_eq!(v.marker(), k == 0, "marker starts the talkspurt only");
        assert_eq!(v.payload_type(), 0);
        assert_eq!(v.payload().len(), 160);
        for (i, byte) in v.payload().iter().enumerate() {
            let s = pcm.get(k * 160 + i).copied().unwrap_or(0);
            assert_eq!(*byte, linear_to_ulaw(s), "packet {k} sample {i}");
        }
    }
    assert_eq!(src.ending(), Some(Ending::Done));
    assert!(!src.replaces_audio());
    assert_eq!(src.poll_timeout(), None);
}

#[test]
fn loops_wrap_inside_a_frame_and_forever_runs_until_stopped() {
    let t0 = Instant::now();
    let pcm = ramp(100);
    let loops = Loops::Count(NonZeroU32::new(3).unwrap());
    let p = Player::prompt(pcm.clone(), SampleRate::HZ_8000, Codec::Pcmu, 0, loops, ID).unwrap();
    let sent = drive(&mut Source::Audio(p), t0, ms(500));
    assert_eq!(sent.len(), 2, "300 samples: two frames");
    let bytes: Vec<u8> = sent.iter().flat_map(|(_, b)| b[12..].to_vec()).collect();
    for (i, byte) in bytes.iter().enumerate() {
        let want = if i < 300 { pcm[i % 100] } else { 0 };
        assert_eq!(*byte, linear_to_ulaw(want), "sample {i}");
    }

    let p = Player::prompt(pcm, SampleRate::HZ_8000, Codec::Pcmu, 0, Loops::Forever, ID).unwrap();
    let mut src = Source::Audio(p);
    let sent = drive(&mut src, t0, ms(999));
    assert_eq!(sent.len(), 50);
    assert_eq!(src.ending(), None);
    assert!(src.replaces_audio());
    src.stop();
    assert_eq!(src.ending(), Some(Ending::Done));
    let mut buf = [0u8; MAX_PACKET_LEN];
    assert_eq!(src.poll_transmit(t0 + ms(2000), &mut buf), None);
}

#[test]
fn a_stalled_driver_skips_ahead_instead_of_bursting() {
    let t0 = Instant::now();
    let p = Player::prompt(
        ramp(8000),
        SampleRate::HZ_8000,
        Codec::Pcma,
        8,
        Loops::ONCE,
        ID,
    )
    .unwrap();
    let mut src = Source::Audio(p);
    let mut buf = [0u8; MAX_PACKET_LEN];
    src.start(t0);
    assert!(src.poll_transmit(t0, &mut buf).is_some());
    assert_eq!(src.poll_transmit(t0, &mut buf), None, "next not due yet");
    assert_eq!(src.poll_timeout(), Some(t0 + FRAME));
    // Within LATE: catch up packet by packet.
    let t1 = t0 + ms(100);
    let mut n = 0;
    while src.poll_transmit(t1, &mut buf).is_some() {
        n += 1;
    }
    assert_eq!(n, 5, "20..=100 ms");
    // A one-second stall: one packet, its timestamp where the wall clock is.
    let t2 = t0 + ms(1100);
    let tx = src.poll_transmit(t2, &mut buf).unwrap();
    let v = view(&buf[..tx.len]);
    assert_eq!(v.timestamp(), ID.timestamp.wrapping_add(8 * 1100));
    assert!(v.marker(), "a jump starts a new talkspurt");
    assert_eq!(
        v.seq(),
        ID.seq.wrapping_add(6),
        "no sequence numbers skipped"
    );
    assert_eq!(src.poll_transmit(t2, &mut buf), None);
}

#[test]
fn bad_specs_are_errors() {
    assert_eq!(
        Player::prompt(
            Arc::from(Vec::new()),
            SampleRate::HZ_8000,
            Codec::Pcmu,
            0,
            Loops::ONCE,
            ID
        )
        .unwrap_err(),
        PlayerError::Empty
    );
    assert_eq!(
        Player::prompt(
            ramp(10),
            SampleRate::HZ_8000,
            Codec::G722,
            9,
            Loops::ONCE,
            ID
        )
        .unwrap_err(),
        PlayerError::RateMismatch {
            codec: Codec::G722,
            want: 16_000,
            got: 8000
        }
    );
    assert_eq!(
        EventPlayer::new(&[], DtmfTiming::default(), 101, ClockRate::G711, ID).unwrap_err(),
        PlayerError::NoDigits
    );
    assert!(matches!(
        Player::inband_dtmf(&[], DtmfTiming::default(), Codec::Pcmu, 0, ID),
        Err(PlayerError::NoDigits)
    ));
    // A driver buffer too short for the packet ends the source, never panics.
    let mut p = Player::prompt(
        ramp(10),
        SampleRate::HZ_8000,
        Codec::Pcmu,
        0,
        Loops::ONCE,
        ID,
    )
    .unwrap();
    let mut small = [0u8; 40];
    assert_eq!(p.poll_transmit(Instant::now(), &mut small), None);
    assert!(matches!(p.ending(), Some(Ending::Failed(_))));
}

#[test]
fn opus_and_g722_prompts_use_their_rates_and_clocks() {
    for codec in [Codec::Opus, Codec::G722] {
        let rate = codec.sample_rate();
        let n = rate.samples_per_frame() * 25;
        let pcm: Arc<[i16]> = tone(1000.0, 8000.0, rate.hz(), 0, n).into();
        let p = Player::prompt(pcm, rate, codec, 111, Loops::ONCE, ID).unwrap();
        let sent = drive(&mut Source::Audio(p), Instant::now(), ms(600));
        assert_eq!(sent.len(), 25, "{codec:?}");
        let mut dec = Decoder::new(codec).unwrap();
        let mut out = [0i16; MAX_FRAME_SAMPLES];
        let mut got = Vec::new();
        for (k, (_, b)) in sent.iter().enumerate() {
            let v = view(b);
            let k = u32::try_from(k).unwrap();
            assert_eq!(
                v.timestamp(),
                ID.timestamp.wrapping_add(codec.ticks_per_frame() * k),
                "{codec:?}"
            );
            let m = dec.decode(v.payload(), &mut out).unwrap();
            got.extend_from_slice(&out[..m]);
        }
        let tail = &got[got.len() / 2..];
        assert_eq!(
            dominant(tail, rate.hz(), &[500.0, 1000.0, 2000.0]),
            1000.0,
            "{codec:?}"
        );
    }
}

/// The event packets of one press, as (time, marker, seq, ts, end, duration, code).
type Ev = (Instant, bool, u16, u32, bool, u16, u8);

fn events(sent: &[Sent]) -> Vec<Ev> {
    sent.iter()
        .map(|(t, b)| {
            let v = view(b);
            let e = TelephoneEvent::new_checked(v.payload()).unwrap();
            assert_eq!(v.payload_type(), 101);
            assert_eq!(v.ssrc(), ID.ssrc);
            (
                *t,
                v.marker(),
                v.seq().0,
                v.timestamp().0,
                e.end(),
                e.duration(),
                e.event(),
            )
        })
        .collect()
}

#[test]
fn rfc4733_digits_follow_the_sender_procedure() {
    let t0 = Instant::now();
    let timing = DtmfTiming {
        tone: ms(100),
        gap: ms(100),
    };
    let p = EventPlayer::new(&[Digit::D1, Digit::Pound], timing, 101, ClockRate::G711, ID).unwrap();
    let mut src = Source::Events(p);
    assert!(
        !src.replaces_audio(),
        "nothing on the wire before the start"
    );
    let mut buf = [0u8; MAX_PACKET_LEN];
    src.start(t0);
    let mut sent = Vec::new();
    let mut replacing = Vec::new();
    let mut t = t0;
    while t <= t0 + ms(600) {
        while let Some(tx) = src.poll_transmit(t, &mut buf) {
            // The stream's clock is `clock_ahead` past the event's timestamp.
            let v = view(&buf[..tx.len]);
            let since = u32::try_from((t - t0).as_millis()).unwrap() * 8;
            assert_eq!(
                v.timestamp().0.wrapping_add(tx.clock_ahead),
                ID.timestamp.0.wrapping_add(since)
            );
            sent.push((t, buf[..tx.len].to_vec()));
        }
        replacing.push(src.replaces_audio());
        t += ms(1);
    }
    assert_eq!(src.ending(), Some(Ending::Done));
    let ev = events(&sent);
    let ts1 = ID.timestamp.0;
    let ts2 = ID.timestamp.0.wrapping_add(1600);
    let at = |m: u64| t0 + ms(m);
    // §2.5.1: start (marked), an update per 50 ms, three end packets with the final
    // duration, all with the press's start timestamp; every packet its own sequence
    // number (§2.5.1.6), continuing across presses.
    let want: Vec<Ev> = vec![
        (at(0), true, 65_534, ts1, false, 400, 1),
        (at(50), false, 65_535, ts1, false, 800, 1),
        (at(100), false, 0, ts1, true, 800, 1),
        (at(120), false, 1, ts1, true, 800, 1),
        (at(140), false, 2, ts1, true, 800, 1),
        // The next press 100 ms after the first ended, at the stream's clock then.
        (at(200), true, 3, ts2, false, 400, 11),
        (at(250), false, 4, ts2, false, 800, 11),
        (at(300), false, 5, ts2, true, 800, 11),
        (at(320), false, 6, ts2, true, 800, 11),
        (at(340), false, 7, ts2, true, 800, 11),
    ];
    assert_eq!(ev, want);
    // Audio is replaced only while a press is on the wire.
    assert!(replacing[0] && replacing[139]);
    assert!(!replacing[140] && !replacing[199]);
    assert!(replacing[200] && !replacing[340]);
}

#[test]
fn stopping_rfc4733_finishes_the_press_on_the_wire() {
    let t0 = Instant::now();
    let p = EventPlayer::new(
        &[Digit::D5, Digit::D6],
        DtmfTiming::default(),
        101,
        ClockRate::G711,
        ID,
    )
    .unwrap();
    let mut src = Source::Events(p);
    let mut buf = [0u8; MAX_PACKET_LEN];
    src.start(t0);
    assert!(src.poll_transmit(t0, &mut buf).is_some());
    src.stop();
    assert_eq!(src.ending(), None, "the press still needs its end packets");
    let mut rest = Vec::new();
    let mut t = t0;
    while src.ending().is_none() && t < t0 + ms(1000) {
        t += ms(1);
        while let Some(tx) = src.poll_transmit(t, &mut buf) {
            rest.push((t, buf[..tx.len].to_vec()));
        }
    }
    let ev = events(&rest);
    assert_eq!(ev.len(), 4, "an update and three end packets: {ev:?}");
    assert!(ev.iter().all(|e| e.6 == 5), "digit 6 never starts");
    assert!(ev[1..].iter().all(|e| e.4));
}

fn inband_digits(codec: Codec, digits: &[Digit]) -> Vec<Digit> {
    let p = Player::inband_dtmf(digits, DtmfTiming::default(), codec, 0, ID).unwrap();
    let mut src = Source::Audio(p);
    assert_eq!(src.kind(), SourceKind::Dtmf);
    let sent = drive(&mut src, Instant::now(), ms(5000));
    assert_eq!(src.ending(), Some(Ending::Done));
    // 100 ms on and 100 ms off per digit, in 20 ms frames.
    assert_eq!(sent.len(), digits.len() * 10, "{codec:?}");
    let mut dec = Decoder::new(codec).unwrap();
    let mut rs = Resampler::new(codec.sample_rate(), SampleRate::HZ_8000).unwrap();
    let mut det = InbandDetector::default();
    let mut pcm = [0i16; MAX_FRAME_SAMPLES];
    let mut narrow = [0i16; MAX_FRAME_SAMPLES];
    for (_, b) in &sent {
        let n = dec.decode(view(b).payload(), &mut pcm).unwrap();
        let n8 = if codec.sample_rate() == SampleRate::HZ_8000 {
            narrow[..n].copy_from_slice(&pcm[..n]);
            n
        } else {
            rs.process(&pcm[..n], &mut narrow).unwrap()
        };
        det.process(&narrow[..n8]);
    }
    // The resampler's delay holds the last few ms back: flush it with silence.
    det.process(&[0; 800]);
    std::iter::from_fn(|| det.poll_signal())
        .filter_map(|s| match s {
            DtmfSignal::Begin(e) => Some(e.digit),
            DtmfSignal::End(_) => None,
        })
        .collect()
}

#[test]
fn inband_tones_survive_the_codec_and_are_detected_once_each() {
    let digits: Vec<Digit> = "159#*0D".chars().filter_map(Digit::from_char).collect();
    for codec in [Codec::Pcmu, Codec::Pcma, Codec::G722, Codec::Opus] {
        assert_eq!(inband_digits(codec, &digits), digits, "{codec:?}");
    }
}

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn fwd(seq: u16, ts: u32) -> Vec<u8> {
    let mut v = vec![0x55u8; 172];
    write_header(&mut v, 0, false, SeqNo(seq), RtpTimestamp(ts), Ssrc(0xb0b)).unwrap();
    v
}

/// What leg A's remote receives: (arrival, ssrc, seq, ts, marker, pt).
type Out = (Instant, u32, u16, u32, bool, u8);

fn out(t: Instant, b: &[u8]) -> Out {
    let v = view(b);
    (
        t,
        v.ssrc().0,
        v.seq().0,
        v.timestamp().0,
        v.marker(),
        v.payload_type(),
    )
}

/// Leg B's phone sends 20 ms packets; a source plays into A from `start`; returns what
/// A receives (forwarded and played, in order) and how many forwarded packets were
/// replaced.
fn splice(mut src: Source, start: Duration, total: Duration) -> (Vec<Out>, usize) {
    let t0 = Instant::now();
    let (a_addr, b_addr) = (sa("10.0.0.1:4000"), sa("10.0.0.2:5000"));
    let remote = |a| LegRemote {
        rtp: Some(a),
        ..LegRemote::default()
    };
    let mut la = LegPolicy::new(&remote(a_addr));
    let mut lb = LegPolicy::new(&remote(b_addr));
    let mut got = Vec::new();
    let mut replaced = 0;
    let mut buf = [0u8; MAX_PACKET_LEN];
    let mut playing = false;
    let mut done = false;
    let mut t = t0;
    let mut k = 0u16;
    while t <= t0 + total {
        // The worker's order: the source first (it may end now), then the sockets.
        if !playing && !done && t >= t0 + start {
            src.start(t);
            playing = true;
        }
        if playing {
            play_into(&mut src, &mut la, t, &mut buf, |b, to| {
                assert_eq!(to, a_addr);
                got.push(out(t, b));
            });
            if src.ending().is_some() {
                assert!(!la.local_source());
                playing = false;
                done = true;
            }
        }
        if (t - t0).as_millis() % 20 == 7 {
            let mut p = fwd(1000u16.wrapping_add(k), 50_000 + 160 * u32::from(k));
            k += 1;
            match route(&mut lb, &mut la, Port::Rtp, b_addr, &mut p, t) {
                Route::Forward(to) => {
                    assert_eq!(to, a_addr);
                    got.push(out(t, &p));
                }
                Route::Replaced => replaced += 1,
                r => panic!("{r:?}"),
            }
        }
        t += ms(1);
    }
    (got, replaced)
}

/// One SSRC, sequence numbers without a gap, timestamps that never go back and never
/// fall behind the wall clock (nor run ahead of it by more than a frame per switch).
fn assert_continuous(got: &[Out], switches: u32, check_seq: bool) {
    let (t0, ssrc, seq0, ts0, _, _) = got[0];
    for (i, o) in got.iter().enumerate() {
        assert_eq!(o.1, ssrc, "SSRC at {i}");
        if check_seq {
            assert_eq!(
                o.2,
                seq0.wrapping_add(u16::try_from(i).unwrap()),
                "seq at {i}"
            );
        }
        if i > 0 {
            assert!(
                o.3.wrapping_sub(got[i - 1].3) >= 160,
                "ts step at {i}: {got:?}"
            );
        }
        let wall = u32::try_from((o.0 - t0).as_millis()).unwrap() * 8;
        let media = o.3.wrapping_sub(ts0);
        assert!(
            media >= wall && media <= wall + 160 * switches,
            "ts at {i}: media {media} wall {wall}"
        );
    }
}

#[test]
fn a_prompt_replaces_the_relayed_audio_in_one_continuous_stream() {
    let p = Player::prompt(
        ramp(480),
        SampleRate::HZ_8000,
        Codec::Pcmu,
        0,
        Loops::ONCE,
        ID,
    )
    .unwrap();
    let (got, replaced) = splice(Source::Audio(p), ms(203), ms(400));
    // B's packets at 7, 27, …, 187 ms; the prompt at 203, 223, 243; B's again from 267.
    let pts: Vec<(u64, u8)> = got
        .iter()
        .map(|o| (u64::try_from((o.0 - got[0].0).as_millis()).unwrap(), o.5))
        .collect();
    assert_eq!(
        &pts[9..14],
        &[(180, 0), (196, 0), (216, 0), (236, 0), (240, 0)]
    );
    assert_eq!(replaced, 2, "B's packets at 207 and 227 ms");
    assert_eq!(got[0].1, 0xb0b, "the stream keeps the relayed SSRC");
    assert!(got[10].4 && got[13].4, "marker on each switch");
    assert!(!got[11].4 && !got[14].4);
    assert_continuous(&got, 2, true);
}

#[test]
fn rfc4733_events_sit_in_the_relayed_stream_at_its_clock() {
    let p = EventPlayer::new(
        &[Digit::D7],
        DtmfTiming::default(),
        101,
        ClockRate::G711,
        ID,
    )
    .unwrap();
    let (got, replaced) = splice(Source::Events(p), ms(103), ms(500));
    let evs: Vec<&Out> = got.iter().filter(|o| o.5 == 101).collect();
    assert_eq!(evs.len(), 5, "start, an update, three ends");
    // All with the press's timestamp, which is the stream's clock when it started.
    assert!(evs.iter().all(|e| e.3 == evs[0].3));
    assert!(evs[0].4, "the press's first packet is marked");
    // The press is 100 ms; B's packets in it (107..=227) are replaced, then relayed.
    assert_eq!(replaced, 7);
    let after: Vec<&Out> = got.iter().filter(|o| o.0 > evs[4].0).collect();
    assert!(!after.is_empty());
    // The audio after the press starts after its end (timestamp + 800), by the clock.
    assert!(after[0].3.wrapping_sub(evs[0].3) >= 800 + 160);
    assert!(after[0].4, "marker on the resumed audio");
    // Same SSRC and sequence continuity through the whole stream.
    let (ssrc, seq0) = (got[0].1, got[0].2);
    for (i, o) in got.iter().enumerate() {
        assert_eq!(
            (o.1, o.2),
            (ssrc, seq0.wrapping_add(u16::try_from(i).unwrap()))
        );
    }
    // Audio timestamps keep up with the wall clock across the press.
    let audio: Vec<Out> = got.iter().filter(|o| o.5 == 0).copied().collect();
    assert_continuous(&audio, 2, false);
}
