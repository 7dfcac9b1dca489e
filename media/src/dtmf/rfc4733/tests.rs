use super::*;

const SSRC: Ssrc = Ssrc(0x1234_5678);
const PT: u8 = 101;

fn t0() -> Instant {
    Instant::now()
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn rtp(ts: u32, marker: bool, payload: [u8; 4]) -> Vec<u8> {
    let mut buf = vec![0u8; 16];
    let p = EventPacket {
        marker,
        timestamp: RtpTimestamp(ts),
        payload,
    };
    p.write(&mut buf, PT, SeqNo(1), SSRC).unwrap();
    buf
}

fn feed(rx: &mut Rfc4733Receiver, ssrc: Ssrc, ts: u32, payload: [u8; 4], now: Instant) {
    rx.handle_event(
        ssrc,
        RtpTimestamp(ts),
        &TelephoneEvent::new_checked(&payload[..]).unwrap(),
        now,
    );
}

fn drain(rx: &mut Rfc4733Receiver) -> Vec<DtmfSignal> {
    std::iter::from_fn(|| rx.poll_signal()).collect()
}

fn begins(sigs: &[DtmfSignal]) -> Vec<char> {
    sigs.iter()
        .filter_map(|s| match s {
            DtmfSignal::Begin(e) => Some(e.digit.as_char()),
            DtmfSignal::End(_) => None,
        })
        .collect()
}

fn begin(d: Digit, units: u64) -> DtmfSignal {
    DtmfSignal::Begin(DtmfEvent {
        digit: d,
        duration: units_to_duration(ClockRate::G711, units),
        source: DtmfSource::Rfc4733,
    })
}

fn end(d: Digit, units: u64) -> DtmfSignal {
    DtmfSignal::End(DtmfEvent {
        digit: d,
        duration: units_to_duration(ClockRate::G711, units),
        source: DtmfSource::Rfc4733,
    })
}

/// The packets a phone sends for one press at 8 kHz: start (marker, duration 0... or
/// the first interval), updates every 400 units, three end packets.
fn press(code: u8, total: u16) -> Vec<(bool, [u8; 4])> {
    let mut v = vec![(true, encode(code, false, 10, 0))];
    let mut d = 400;
    while d < total {
        v.push((false, encode(code, false, 10, d)));
        d += 400;
    }
    for _ in 0..3 {
        v.push((false, encode(code, true, 10, total)));
    }
    v
}

#[test]
fn view_reads_the_fields() {
    let b = [5u8, 0x8a, 0x03, 0x20];
    let ev = TelephoneEvent::new_checked(&b[..]).unwrap();
    assert_eq!(ev.event(), 5);
    assert!(ev.end());
    assert!(!ev.reserved());
    assert_eq!(ev.volume(), 10);
    assert_eq!(ev.duration(), 800);
    assert_eq!(encode(5, true, 10, 800), b);
    // The volume is six bits; the R bit stays clear.
    assert_eq!(encode(1, false, 0xff, 0)[1], 0x3f);
    let r = [11u8, 0x40, 0, 0];
    assert!(TelephoneEvent::new_checked(&r[..]).unwrap().reserved());
}

#[test]
fn short_payloads_and_bad_rtp_are_errors() {
    for n in 0..4 {
        let b = vec![0u8; n];
        assert_eq!(
            TelephoneEvent::new_checked(&b[..]).unwrap_err(),
            TelephoneEventError::TooShort(n)
        );
    }
    // Trailing bytes are ignored.
    assert!(TelephoneEvent::new_checked(&[1u8, 0, 0, 0, 9][..]).is_ok());

    let mut rx = Rfc4733Receiver::new(ReceiverConfig::default());
    let mut pkt = rtp(0, true, encode(1, false, 10, 0));
    pkt.truncate(14);
    let view = RtpPacket::new_checked(&pkt[..]).unwrap();
    assert_eq!(
        rx.handle_rtp(&view, t0()),
        Err(TelephoneEventError::TooShort(2))
    );
    assert!(rx.poll_signal().is_none());
}

#[test]
fn one_press_is_one_begin_and_one_end() {
    let now = t0();
    let mut rx = Rfc4733Receiver::new(ReceiverConfig::default());
    for (i, (m, p)) in press(5, 1600).into_iter().enumerate() {
        let pkt = rtp(1000, m, p);
        let view = RtpPacket::new_checked(&pkt[..]).unwrap();
        rx.handle_rtp(&view, now + ms(20 * i as u64)).unwrap();
    }
    assert_eq!(
        drain(&mut rx),
        vec![begin(Digit::D5, 0), end(Digit::D5, 1600)]
    );
    assert_eq!(rx.stats().duplicates, 2, "the two redundant end packets");
    assert_eq!(rx.poll_timeout(), None, "nothing open");
}

#[test]
fn a_press_seen_only_by_its_end_packets_is_reported_once() {
    let now = t0();
    let mut rx = Rfc4733Receiver::new(ReceiverConfig::default());
    for _ in 0..3 {
        feed(&mut rx, SSRC, 500, encode(11, true, 10, 960), now);
    }
    assert_eq!(
        drain(&mut rx),
        vec![begin(Digit::Pound, 960), end(Digit::Pound, 960)]
    );
}

#[test]
fn same_key_twice_is_two_digits_and_duplicates_do_not_add_any() {
    let now = t0();
    let mut rx = Rfc4733Receiver::new(ReceiverConfig::default());
    for ts in [8000u32, 10_000] {
        for (m, p) in press(1, 800) {
            // Every packet twice, as a doubling network or a retransmitting SBC would.
            feed(&mut rx, SSRC, ts, p, now);
            feed(&mut rx, SSRC, ts, p, now);
            let _ = m;
        }
    }
    assert_eq!(begins(&drain(&mut rx)), vec!['1', '1']);
}

#[test]
fn lost_end_packets_time_out_and_late_ones_do_not_restart_the_press() {
    let now = t0();
    let cfg = ReceiverConfig::default();
    let mut rx = Rfc4733Receiver::new(cfg);
    feed(&mut rx, SSRC, 100, encode(7, false, 10, 0), now);
    feed(&mut rx, SSRC, 100, encode(7, false, 10, 400), now + ms(50));
    assert_eq!(drain(&mut rx), vec![begin(Digit::D7, 0)]);
    assert_eq!(rx.poll_timeout(), Some(now + ms(50) + cfg.timeout));
    rx.handle_timeout(now + ms(100));
    assert!(rx.poll_signal().is_none(), "not yet");
    rx.handle_timeout(now + ms(50) + cfg.timeout);
    assert_eq!(drain(&mut rx), vec![end(Digit::D7, 400)]);
    assert_eq!(rx.stats().timed_out, 1);
    // The end packets turn up after all.
    for _ in 0..3 {
        feed(&mut rx, SSRC, 100, encode(7, true, 10, 800), now + ms(500));
    }
    assert!(rx.poll_signal().is_none());
    assert_eq!(rx.poll_timeout(), None);
}

#[test]
fn a_new_press_ends_one_whose_end_was_lost() {
    let now = t0();
    let mut rx = Rfc4733Receiver::new(ReceiverConfig::default());
    feed(&mut rx, SSRC, 100, encode(2, false, 10, 400), now);
    feed(&mut rx, SSRC, 2100, encode(3, false, 10, 0), now + ms(250));
    assert_eq!(
        drain(&mut rx),
        vec![
            begin(Digit::D2, 400),
            end(Digit::D2, 400),
            begin(Digit::D3, 0)
        ]
    );
    // A late update of the older press: stale, not a digit.
    feed(&mut rx, SSRC, 100, encode(2, false, 10, 800), now + ms(260));
    feed(&mut rx, SSRC, 100, encode(2, true, 10, 800), now + ms(260));
    assert!(rx.poll_signal().is_none());
    assert_eq!(rx.stats().stale, 2);
}

#[test]
fn a_new_ssrc_is_a_new_stream() {
    let now = t0();
    let mut rx = Rfc4733Receiver::new(ReceiverConfig::default());
    feed(&mut rx, SSRC, 100, encode(4, false, 10, 400), now);
    // Same timestamp on another SSRC: another stream's press (a re-INVITE to a new
    // media server, say), not a duplicate.
    feed(&mut rx, Ssrc(9), 100, encode(4, false, 10, 400), now);
    assert_eq!(
        drain(&mut rx),
        vec![
            begin(Digit::D4, 400),
            end(Digit::D4, 400),
            begin(Digit::D4, 400)
        ]
    );
}

#[test]
fn timestamps_wrap_and_restarted_timestamps_are_new_presses() {
    let now = t0();
    let mut rx = Rfc4733Receiver::new(ReceiverConfig::default());
    feed(&mut rx, SSRC, u32::MAX - 100, encode(6, true, 10, 400), now);
    feed(&mut rx, SSRC, 300, encode(8, true, 10, 400), now);
    // Far behind (a sender that restarted its timestamps): new.
    feed(&mut rx, SSRC, 1_000_000_000, encode(9, true, 10, 400), now);
    assert_eq!(begins(&drain(&mut rx)), vec!['6', '8', '9']);
}

#[test]
fn flash_and_other_events_are_not_digits() {
    let now = t0();
    let mut rx = Rfc4733Receiver::new(ReceiverConfig::default());
    for (_, p) in press(16, 800) {
        feed(&mut rx, SSRC, 100, p, now);
    }
    assert!(rx.poll_signal().is_none());
    assert_eq!(rx.stats().digits, 0);
}

#[test]
fn a_sender_reusing_the_timestamp_for_another_key_is_heard() {
    let now = t0();
    let mut rx = Rfc4733Receiver::new(ReceiverConfig::default());
    feed(&mut rx, SSRC, 100, encode(1, true, 10, 400), now);
    feed(&mut rx, SSRC, 100, encode(2, true, 10, 400), now);
    assert_eq!(begins(&drain(&mut rx)), vec!['1', '2']);
}

#[test]
fn long_presses_continue_across_segments() {
    // RFC 4733 §2.5.1.3 at 8 kHz: 0xFFFF units is 8.19 s; a 20 s press is three segments.
    let now = t0();
    let mut rx = Rfc4733Receiver::new(ReceiverConfig::default());
    let base = 4000u32;
    feed(&mut rx, SSRC, base, encode(0, false, 10, 0), now);
    feed(&mut rx, SSRC, base, encode(0, false, 10, 0xFFF0), now);
    // The packet reporting 0xFFFF itself was lost; the next segment starts 0xFFFF later.
    feed(&mut rx, SSRC, base + 0xFFFF, encode(0, false, 10, 400), now);
    feed(
        &mut rx,
        SSRC,
        base + 0xFFFF,
        encode(0, false, 10, 0xFFFF),
        now,
    );
    let seg3 = base + 2 * 0xFFFF;
    for _ in 0..3 {
        feed(&mut rx, SSRC, seg3, encode(0, true, 10, 28_930), now);
    }
    assert_eq!(
        drain(&mut rx),
        vec![begin(Digit::D0, 0), end(Digit::D0, 2 * 0xFFFF + 28_930)]
    );
}

#[test]
fn a_long_press_that_stalls_past_the_timeout_is_not_begun_again() {
    let now = t0();
    let cfg = ReceiverConfig::default();
    let mut rx = Rfc4733Receiver::new(cfg);
    feed(&mut rx, SSRC, 0, encode(5, false, 10, 0xFF00), now);
    rx.handle_timeout(now + cfg.timeout);
    assert_eq!(
        drain(&mut rx),
        vec![begin(Digit::D5, 0xFF00), end(Digit::D5, 0xFF00)]
    );
    // The stream comes back in the press's next segment, and ends it.
    feed(
        &mut rx,
        SSRC,
        0xFFFF,
        encode(5, false, 10, 800),
        now + ms(400),
    );
    feed(
        &mut rx,
        SSRC,
        0xFFFF,
        encode(5, true, 10, 1200),
        now + ms(450),
    );
    assert!(rx.poll_signal().is_none());
    // A later press of the same key is new.
    feed(
        &mut rx,
        SSRC,
        0xFFFF + 4000,
        encode(5, true, 10, 800),
        now + ms(900),
    );
    assert_eq!(begins(&drain(&mut rx)), vec!['5']);
}

#[test]
fn sender_schedule_for_one_digit() {
    let now = t0();
    let mut tx = Rfc4733Sender::new(SenderConfig::default());
    assert_eq!(tx.poll_timeout(), None);
    tx.send_digit(Digit::D9, ms(120), now);
    assert_eq!(tx.poll_timeout(), Some(now));
    let mut got = Vec::new();
    let mut t = now;
    while let Some(at) = tx.poll_timeout() {
        t = t.max(at);
        while let Some(p) = tx.poll_transmit(t, RtpTimestamp(7777)) {
            got.push((t - now, p));
        }
    }
    let view: Vec<(Duration, bool, bool, u16)> = got
        .iter()
        .map(|(at, p)| {
            assert_eq!(p.timestamp, RtpTimestamp(7777));
            let ev = TelephoneEvent::new_checked(&p.payload[..]).unwrap();
            assert_eq!(ev.event(), 9);
            assert_eq!(ev.volume(), 10);
            (*at, p.marker, ev.end(), ev.duration())
        })
        .collect();
    assert_eq!(
        view,
        vec![
            (ms(0), true, false, 400),
            (ms(50), false, false, 800),
            (ms(100), false, false, 960),
            (ms(120), false, true, 960),
            (ms(140), false, true, 960),
            (ms(160), false, true, 960),
        ]
    );
    assert!(tx.is_idle());
}

#[test]
fn queued_digits_are_spaced_and_take_the_stream_timestamp() {
    let now = t0();
    let mut tx = Rfc4733Sender::new(SenderConfig::default());
    tx.send_digit(Digit::D1, ms(100), now);
    tx.send_digit(Digit::D2, ms(100), now);
    let mut starts = Vec::new();
    while let Some(at) = tx.poll_timeout() {
        // The audio clock runs at 8 kHz from timestamp 0 at `now`.
        let ts = RtpTimestamp(ClockRate::G711.ticks(at - now));
        while let Some(p) = tx.poll_transmit(at, ts) {
            if p.marker {
                starts.push((at - now, p.timestamp));
            }
        }
    }
    // The second starts at the first's end plus the 100 ms gap.
    assert_eq!(
        starts,
        vec![(ms(0), RtpTimestamp(0)), (ms(200), RtpTimestamp(1600))]
    );
    // Not before it is due.
    let mut tx = Rfc4733Sender::new(SenderConfig::default());
    tx.send_digit(Digit::D1, ms(100), now + ms(10));
    assert!(tx.poll_transmit(now, RtpTimestamp(0)).is_none());
}

/// xorshift, as the transaction simulator uses.
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

/// Sender → lossy, duplicating, reordering network → receiver, on a virtual clock.
/// Every digit arrives exactly once and in order as long as one packet of each press
/// survives; the seeds and loss rates here keep that true and are checked.
fn run_sim(seed: u64, clock: ClockRate, lengths: &[Duration], loss: u64, dup: u64) {
    let now = t0();
    let digits: Vec<Digit> = (0..lengths.len())
        .map(|i| Digit::ALL[(i * 7 + 3) % 16])
        .collect();
    let mut rng = XorShift(seed);
    let mut tx = Rfc4733Sender::new(SenderConfig {
        clock,
        ..SenderConfig::default()
    });
    for (d, l) in digits.iter().zip(lengths) {
        tx.send_digit(*d, *l, now);
    }
    let mut rx = Rfc4733Receiver::new(ReceiverConfig {
        clock,
        ..ReceiverConfig::default()
    });
    // In flight: (arrival, order, packet bytes).
    let mut net: Vec<(Instant, u64, Vec<u8>)> = Vec::new();
    let mut order = 0u64;
    let mut seq = SeqNo(0);
    let mut survived = vec![0usize; digits.len()];
    let mut markers = 0usize;
    let mut signals = Vec::new();
    let base_ts = u32::MAX - 30_000; // wraps during the run
    loop {
        let next_tx = tx.poll_timeout();
        let next_net = net.iter().map(|p| p.0).min();
        let next_rx = rx.poll_timeout();
        let Some(t) = [next_tx, next_net, next_rx].into_iter().flatten().min() else {
            break;
        };
        let ts = RtpTimestamp(base_ts.wrapping_add(clock.ticks(t - now)));
        while let Some(p) = tx.poll_transmit(t, ts) {
            if p.marker {
                markers += 1;
            }
            let press = markers - 1;
            let mut buf = [0u8; 16];
            p.write(&mut buf, PT, seq, SSRC).unwrap();
            seq = seq.wrapping_add(1);
            let copies = if rng.next() % 100 < loss {
                0
            } else if rng.next() % 100 < dup {
                2
            } else {
                1
            };
            if copies > 0 {
                survived[press] += 1;
            }
            for _ in 0..copies {
                // 0-60 ms of jitter: packets overtake each other.
                let delay = ms(rng.next() % 60);
                net.push((t + delay, order, buf.to_vec()));
                order += 1;
            }
        }
        net.sort_by_key(|p| (p.0, p.1));
        while net.first().is_some_and(|p| p.0 <= t) {
            let (_, _, bytes) = net.remove(0);
            let view = RtpPacket::new_checked(&bytes[..]).unwrap();
            rx.handle_rtp(&view, t).unwrap();
        }
        rx.handle_timeout(t);
        signals.extend(std::iter::from_fn(|| rx.poll_signal()));
    }
    let expected: Vec<char> = digits
        .iter()
        .zip(&survived)
        .filter(|(_, n)| **n > 0)
        .map(|(d, _)| d.as_char())
        .collect();
    assert_eq!(begins(&signals), expected, "seed {seed}");
    // Every Begin has its End, in order.
    let mut open = None;
    for s in &signals {
        match s {
            DtmfSignal::Begin(e) => {
                assert!(open.is_none(), "seed {seed}: Begin inside a press");
                open = Some(e.digit);
            }
            DtmfSignal::End(e) => assert_eq!(open.take(), Some(e.digit), "seed {seed}"),
        }
    }
    assert!(open.is_none());
}

#[test]
fn simulated_network_gives_each_digit_once() {
    let lengths: Vec<Duration> = (0..24).map(|i| ms(60 + (i * 37) % 200)).collect();
    for seed in 1..=40u64 {
        run_sim(seed * 0x9E37_79B9, ClockRate::G711, &lengths, 20, 20);
    }
}

#[test]
fn simulated_long_presses_at_48_khz_are_one_digit_each() {
    // At 48 kHz a segment is only 1.37 s: a 4 s press is three segments.
    let lengths = [ms(4000), ms(100), ms(2800), ms(1365), ms(1366)];
    for seed in 1..=20u64 {
        run_sim(seed * 0x2545_F491, ClockRate(48_000), &lengths, 10, 10);
    }
}
