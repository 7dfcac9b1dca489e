//! Playing into a leg through the relay (prompts, DTMF, tones) on loopback: real UDP
//! sockets as the two parties, leg A's phone talking on a 20 ms schedule while voxgate
//! plays into leg B.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod relay_peers;

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use relay_peers::{call, recv, WAIT};
use voxgate::config::PortRange;
use voxgate::media::{
    Codec, Digit, DtmfMethod, DtmfTiming, Loops, MediaConfig, MediaEngine, MediaError, PlaySpec,
    PlaybackEvent, PlaybackOutcome, PlayerError, SampleRate, SessionId, Side,
};
use voxgate_media::codec::{linear_to_ulaw, Decoder};
use voxgate_media::dtmf::{
    DtmfSignal, InbandDetector, ReceiverConfig, Rfc4733Receiver, TelephoneEvent,
};
use voxgate_media::rtp::{write_header, RtpPacket, RtpTimestamp, SeqNo, Ssrc};
use voxgate_media::tone::{Law, TonePlayer, ToneSpec};

const A_SSRC: u32 = 0xaaaa;
/// Leg A's payload octet; the prompt's is `linear_to_ulaw(PROMPT_LEVEL)`.
const A_TAG: u8 = 0x0a;
const PROMPT_LEVEL: i16 = 1000;

fn engine(lo: u16) -> MediaEngine {
    MediaEngine::start(MediaConfig::loopback(PortRange { lo, hi: lo + 15 })).unwrap()
}

fn rtp(pt: u8, seq: u16, ts: u32, ssrc: u32, tag: u8) -> Vec<u8> {
    let mut v = vec![tag; 172];
    write_header(&mut v, pt, false, SeqNo(seq), RtpTimestamp(ts), Ssrc(ssrc)).unwrap();
    v
}

/// Leg A's phone: a PCMU packet every 20 ms, on schedule (so its timestamps keep up
/// with the wall clock), until stopped.
struct Talker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<u16>>,
}

impl Talker {
    fn start(sock: &UdpSocket, to: SocketAddr) -> Talker {
        let sock = sock.try_clone().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let t0 = Instant::now();
            let mut k = 0u16;
            while !flag.load(Ordering::Relaxed) {
                let due = t0 + Duration::from_millis(20 * u64::from(k));
                if let Some(d) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(d);
                }
                let p = rtp(0, 1000 + k, 8000 + 160 * u32::from(k), A_SSRC, A_TAG);
                sock.send_to(&p, to).unwrap();
                k += 1;
            }
            k
        });
        Talker {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops; returns how many packets it sent.
    fn stop(mut self) -> u16 {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap()
    }
}

/// A received packet and when it arrived.
type Got = (Instant, Vec<u8>);

/// Everything `s` receives for `d`.
fn collect(s: &UdpSocket, d: Duration) -> Vec<Got> {
    let end = Instant::now() + d;
    let mut out = Vec::new();
    let mut b = [0u8; 2048];
    s.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
    while Instant::now() < end {
        if let Ok((n, _)) = s.recv_from(&mut b) {
            out.push((Instant::now(), b[..n].to_vec()));
        }
    }
    s.set_read_timeout(Some(WAIT)).unwrap();
    out
}

fn view(b: &[u8]) -> RtpPacket<&[u8]> {
    RtpPacket::new_checked(b).unwrap()
}

fn prompt(frames: usize, loops: Loops, notify: mpsc::Sender<PlaybackEvent>) -> PlaySpec {
    PlaySpec {
        pcm: vec![PROMPT_LEVEL; 160 * frames].into(),
        rate: SampleRate::HZ_8000,
        codec: Codec::Pcmu,
        payload_type: 0,
        loops,
        notify: Some(notify),
        tag: 0,
    }
}

fn is_prompt(b: &[u8]) -> bool {
    let p = view(b).payload().to_vec();
    p.len() == 160 && p.iter().all(|x| *x == linear_to_ulaw(PROMPT_LEVEL))
}

fn is_relayed(b: &[u8]) -> bool {
    view(b).payload().iter().all(|x| *x == A_TAG)
}

fn ended(rx: &Receiver<PlaybackEvent>) -> PlaybackEvent {
    rx.recv_timeout(WAIT).expect("no playback event")
}

/// One SSRC (leg A's, which the stream started with) and sequence numbers without a
/// gap; the audio's timestamps advance by at least a frame and keep to the wall clock
/// (within arrival noise, and at most a frame ahead per switch). Telephone-events
/// (payload type 101) repeat their press's timestamp, so only their numbering counts.
fn assert_one_stream(got: &[Got], switches: u32) {
    let (t0, ref b0) = got[0];
    let p0 = view(b0);
    let jitter = 8 * 40;
    let mut last_audio: Option<u32> = None;
    for (i, (t, b)) in got.iter().enumerate() {
        let p = view(b);
        assert_eq!(p.ssrc(), Ssrc(A_SSRC), "SSRC of packet {i}");
        assert_eq!(
            p.seq(),
            p0.seq().wrapping_add(u16::try_from(i).unwrap()),
            "sequence of packet {i}"
        );
        if p.payload_type() == 101 {
            continue;
        }
        let ts = p.timestamp().0;
        if let Some(last) = last_audio {
            let step = ts.wrapping_sub(last);
            assert!(
                (160..0x8000_0000).contains(&step),
                "timestamp step {step} at packet {i}"
            );
        }
        last_audio = Some(ts);
        let media = ts.wrapping_sub(p0.timestamp().0);
        let wall = u32::try_from((*t - t0).as_millis()).unwrap() * 8;
        assert!(
            media + jitter >= wall && media <= wall + jitter + 160 * switches,
            "packet {i}: media clock {media} against wall clock {wall}"
        );
    }
}

#[test]
fn a_pcmu_prompt_replaces_the_relayed_audio_paced_then_relaying_resumes() {
    let e = engine(43000);
    let (s, pa, pb) = call(&e);
    assert_ne!(linear_to_ulaw(PROMPT_LEVEL), A_TAG);
    let talker = Talker::start(&pa, s.a.rtp);
    let mut got = collect(&pb, Duration::from_millis(200));
    assert!(got.len() >= 5 && got.iter().all(|(_, b)| is_relayed(b)));
    let (tx, rx) = mpsc::channel();
    let id = e.play(s.id, Side::B, prompt(25, Loops::ONCE, tx)).unwrap();
    got.extend(collect(&pb, Duration::from_millis(900)));
    talker.stop();
    got.extend(collect(&pb, Duration::from_millis(60)));
    let ev = ended(&rx);
    assert_eq!(
        (ev.session, ev.side, ev.id, ev.outcome),
        (s.id, Side::B, id, PlaybackOutcome::Finished)
    );

    // Relayed, then the whole prompt in one piece, then relayed again.
    let kinds: Vec<char> = got
        .iter()
        .map(|(_, b)| match (is_prompt(b), is_relayed(b)) {
            (true, _) => 'P',
            (_, true) => 'A',
            _ => '?',
        })
        .collect();
    let text: String = kinds.iter().collect();
    let first = text.find('P').expect("no prompt packet arrived");
    assert_eq!(&text[first..first + 25], "P".repeat(25), "{text}");
    assert!(!text.contains('?'), "{text}");
    assert!(
        text[first + 25..].len() >= 5 && !text[first + 25..].contains('P'),
        "relaying resumes after the prompt: {text}"
    );
    // Paced at 20 ms: each packet on its slot, within scheduling noise.
    let prompt_at: Vec<Instant> = got[first..first + 25].iter().map(|g| g.0).collect();
    for (k, t) in prompt_at.iter().enumerate() {
        let off = (*t - prompt_at[0]).as_secs_f64() * 1000.0;
        let want = 20.0 * k as f64;
        assert!(
            (off - want).abs() <= 40.0,
            "prompt packet {k} at {off:.1} ms, slot {want} ms"
        );
    }
    let span = (prompt_at[24] - prompt_at[0]).as_secs_f64() * 1000.0;
    assert!(
        (440.0..=540.0).contains(&span),
        "24 intervals took {span:.1} ms"
    );
    for (_, b) in &got[first..first + 25] {
        assert_eq!(view(b).payload_type(), 0);
    }
    // One continuous stream across both switches.
    assert_one_stream(&got, 2);
    assert!(view(&got[first].1).marker() && view(&got[first + 25].1).marker());

    let st = e.destroy_session(s.id).unwrap();
    assert_eq!(st.b.played, 25);
    assert!(
        (18..=30).contains(&st.a.replaced),
        "about 25 of A's packets were replaced: {}",
        st.a.replaced
    );
    assert_eq!(st.a.forwarded + st.a.replaced, st.a.received);
}

#[test]
fn rfc4733_digits_arrive_once_each_inside_the_relayed_stream() {
    let e = engine(43100);
    let (s, pa, pb) = call(&e);
    let talker = Talker::start(&pa, s.a.rtp);
    let mut got = collect(&pb, Duration::from_millis(100));
    let (tx, rx) = mpsc::channel();
    let digits = [Digit::D1, Digit::D2, Digit::Pound];
    let id = e
        .send_dtmf(
            s.id,
            Side::B,
            &digits,
            DtmfMethod::Rfc4733 {
                payload_type: 101,
                clock: voxgate::media::ClockRate::G711,
            },
            DtmfTiming::default(),
            Some(tx),
        )
        .unwrap();
    got.extend(collect(&pb, Duration::from_millis(800)));
    talker.stop();
    got.extend(collect(&pb, Duration::from_millis(60)));
    let ev = ended(&rx);
    assert_eq!((ev.id, ev.outcome), (id, PlaybackOutcome::Finished));

    let mut rcv = Rfc4733Receiver::new(ReceiverConfig::default());
    let mut presses: Vec<Vec<(u32, bool, u16)>> = Vec::new();
    for (t, b) in &got {
        let p = view(b);
        if p.payload_type() != 101 {
            continue;
        }
        rcv.handle_rtp(&p, *t).unwrap();
        let ev = TelephoneEvent::new_checked(p.payload()).unwrap();
        if p.marker() {
            presses.push(Vec::new());
        }
        presses
            .last_mut()
            .expect("a press starts with a marked packet")
            .push((p.timestamp().0, ev.end(), ev.duration()));
    }
    let begins: Vec<Digit> = std::iter::from_fn(|| rcv.poll_signal())
        .filter_map(|s| match s {
            DtmfSignal::Begin(e) => Some(e.digit),
            DtmfSignal::End(_) => None,
        })
        .collect();
    assert_eq!(begins, digits, "each digit once");
    for press in &presses {
        // RFC 4733 §2.5.1: start, an update, three end packets, one timestamp.
        let shape: Vec<(bool, u16)> = press.iter().map(|p| (p.1, p.2)).collect();
        assert_eq!(
            shape,
            [
                (false, 400),
                (false, 800),
                (true, 800),
                (true, 800),
                (true, 800)
            ]
        );
        assert!(press.iter().all(|p| p.0 == press[0].0));
    }
    // Events and audio are one stream (RFC 4733 §2.3: same SSRC, one sequence), and
    // relayed audio resumes between digits, after each press's end.
    assert_one_stream(&got, 2 * 3);
    for press in &presses {
        let end = press[0].0.wrapping_add(800);
        let after = got.iter().map(|g| view(&g.1)).find(|p| {
            p.payload_type() == 0 && p.timestamp().0.wrapping_sub(press[0].0) < 0x8000_0000
        });
        let after = after.expect("audio after the press");
        assert!(after.timestamp().0.wrapping_sub(end) < 0x8000_0000);
    }
    let st = e.destroy_session(s.id).unwrap();
    assert_eq!(st.b.played, 15);
    assert!(st.a.replaced >= 10, "{st:?}");
}

#[test]
fn inband_dtmf_is_heard_by_a_detector_at_the_far_end() {
    let e = engine(43200);
    let (s, _pa, pb) = call(&e);
    let (tx, rx) = mpsc::channel();
    let digits: Vec<Digit> = "90*D".chars().filter_map(Digit::from_char).collect();
    e.send_dtmf(
        s.id,
        Side::B,
        &digits,
        DtmfMethod::InBand {
            codec: Codec::Pcma,
            payload_type: 8,
        },
        DtmfTiming::default(),
        Some(tx),
    )
    .unwrap();
    assert_eq!(ended(&rx).outcome, PlaybackOutcome::Finished);
    let got = collect(&pb, Duration::from_millis(100));
    assert_eq!(got.len(), 4 * 10, "100 ms on, 100 ms off, per digit");
    let mut dec = Decoder::new(Codec::Pcma).unwrap();
    let mut det = InbandDetector::default();
    let mut pcm = [0i16; 960];
    for (_, b) in &got {
        let p = view(b);
        assert_eq!(p.payload_type(), 8);
        let n = dec.decode(p.payload(), &mut pcm).unwrap();
        det.process(&pcm[..n]);
    }
    let heard: Vec<Digit> = std::iter::from_fn(|| det.poll_signal())
        .filter_map(|s| match s {
            DtmfSignal::Begin(e) => Some(e.digit),
            DtmfSignal::End(_) => None,
        })
        .collect();
    assert_eq!(heard, digits);
}

#[test]
fn playbacks_report_how_they_ended_and_tones_share_the_slot() {
    let e = engine(43300);
    let (s, _pa, pb) = call(&e);
    let (tx, rx) = mpsc::channel();
    let p1 = e
        .play(s.id, Side::B, prompt(5, Loops::Forever, tx.clone()))
        .unwrap();
    assert!(is_prompt(&recv(&pb).0));
    let p2 = e
        .play(s.id, Side::B, prompt(5, Loops::Forever, tx.clone()))
        .unwrap();
    assert_ne!(p1, p2);
    let ev = ended(&rx);
    assert_eq!((ev.id, ev.outcome), (p1, PlaybackOutcome::Superseded));
    e.stop_play(s.id, Side::B).unwrap();
    let ev = ended(&rx);
    assert_eq!((ev.id, ev.outcome), (p2, PlaybackOutcome::Stopped));

    // Ringback, then a prompt in its place: stopping "the tone" leaves the prompt.
    let tone = TonePlayer::new(ToneSpec::RINGBACK, Law::Ulaw, 0, [1, 2, 3]);
    e.play_tone(s.id, Side::B, Some(tone)).unwrap();
    let _ = collect(&pb, Duration::from_millis(100));
    let p3 = e
        .play(s.id, Side::B, prompt(5, Loops::Forever, tx.clone()))
        .unwrap();
    e.play_tone(s.id, Side::B, None).unwrap();
    let _ = collect(&pb, Duration::from_millis(60));
    let later = collect(&pb, Duration::from_millis(200));
    assert!(later.len() >= 5 && later.iter().all(|(_, b)| is_prompt(b)));
    assert!(
        rx.recv_timeout(Duration::from_millis(100)).is_err(),
        "the prompt was not stopped"
    );
    // Destroying the session ends it.
    e.destroy_session(s.id).unwrap();
    let ev = ended(&rx);
    assert_eq!((ev.id, ev.outcome), (p3, PlaybackOutcome::SessionClosed));

    // Bad requests are errors, not playbacks.
    let (s2, _, _) = call(&e);
    let mut spec = prompt(5, Loops::ONCE, tx.clone());
    spec.codec = Codec::G722;
    assert!(matches!(
        e.play(s2.id, Side::A, spec),
        Err(MediaError::Play(PlayerError::RateMismatch { .. }))
    ));
    assert!(matches!(
        e.play(SessionId(999_999), Side::A, prompt(5, Loops::ONCE, tx)),
        Err(MediaError::UnknownSession(_))
    ));
}
