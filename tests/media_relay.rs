//! The media relay on loopback: real UDP sockets as the two parties of a call.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod relay_peers;

use std::time::{Duration, Instant};

use relay_peers::{addr, call, peer, recv, remote, WAIT};
use voxgate::config::PortRange;
use voxgate::media::{
    DropReason, LegRemote, MediaConfig, MediaEngine, MediaError, PollMode, PtMap, Side,
};
use voxgate_media::rtp::{write_header, RtpPacket, RtpTimestamp, SeqNo, Ssrc};

fn engine(lo: u16, pairs: u16, poll: PollMode) -> MediaEngine {
    let mut cfg = MediaConfig::loopback(PortRange {
        lo,
        hi: lo + 2 * pairs - 1,
    });
    cfg.poll = poll;
    MediaEngine::start(cfg).unwrap()
}

fn rtp(pt: u8, seq: u16, ts: u32, ssrc: u32, tag: u8) -> Vec<u8> {
    let mut v = vec![tag; 172];
    write_header(&mut v, pt, false, SeqNo(seq), RtpTimestamp(ts), Ssrc(ssrc)).unwrap();
    v
}

fn rr(ssrc: u32) -> Vec<u8> {
    let mut v = vec![0x80, 201, 0, 1];
    v.extend_from_slice(&ssrc.to_be_bytes());
    v
}

/// Polls the engine's published counters until `f` holds (counters publish in batches).
fn wait_stats(e: &MediaEngine, f: impl Fn(&voxgate::media::EngineStats) -> bool) {
    let deadline = Instant::now() + WAIT;
    loop {
        let s = e.stats();
        if f(&s) {
            return;
        }
        assert!(Instant::now() < deadline, "stats never matched: {s:?}");
        std::thread::yield_now();
    }
}

fn forwards_both_ways(poll: PollMode, lo: u16) {
    let e = engine(lo, 8, poll);
    let (s, pa, pb) = call(&e);
    for i in 0..20u16 {
        pa.send_to(&rtp(0, i, 160 * u32::from(i), 11, 0xa), s.a.rtp)
            .unwrap();
        let (got, src) = recv(&pb);
        assert_eq!(
            src, s.b.rtp,
            "B hears A from B's relay port (symmetric RTP)"
        );
        assert_eq!(got, rtp(0, i, 160 * u32::from(i), 11, 0xa));
        pb.send_to(&rtp(0, i, 160 * u32::from(i), 22, 0xb), s.b.rtp)
            .unwrap();
        let (got, src) = recv(&pa);
        assert_eq!(src, s.a.rtp);
        assert_eq!(got[12], 0xb);
    }
    wait_stats(&e, |st| st.rtp_forwarded == 40);
    let st = e.destroy_session(s.id).unwrap();
    assert_eq!((st.a.received, st.a.forwarded), (20, 20));
    assert_eq!((st.b.received, st.b.forwarded), (20, 20));
    assert_eq!(st.a.latched, Some(addr(&pa)));
}

#[test]
fn forwards_both_ways_level() {
    forwards_both_ways(PollMode::default(), 41000);
}

#[test]
fn forwards_both_ways_level_paced() {
    forwards_both_ways(
        PollMode::LevelOnce {
            pace: Some(Duration::from_micros(500)),
            busy_poll: None,
        },
        42000,
    );
}

#[test]
fn forwards_both_ways_edge_drain() {
    forwards_both_ways(PollMode::EdgeDrain, 41100);
}

#[test]
fn forwards_both_ways_busy_poll() {
    forwards_both_ways(
        PollMode::LevelOnce {
            pace: None,
            busy_poll: Some(Duration::from_micros(50)),
        },
        41200,
    );
}

#[test]
fn latches_to_the_nat_source_and_ignores_strangers() {
    let e = engine(41300, 8, PollMode::default());
    let s = e.create_session().unwrap();
    let (pa, pb, stranger) = (peer(), peer(), peer());
    // A's SDP carries an address where nothing listens (a private address behind NAT).
    e.update_leg(s.id, Side::A, remote("127.0.0.1:9".parse().unwrap()))
        .unwrap();
    e.update_leg(s.id, Side::B, remote(addr(&pb))).unwrap();
    pa.send_to(&rtp(0, 1, 160, 1, 1), s.a.rtp).unwrap();
    recv(&pb);
    // B's reply goes to where A's packets really come from.
    pb.send_to(&rtp(0, 1, 160, 2, 2), s.b.rtp).unwrap();
    let (got, src) = recv(&pa);
    assert_eq!((got[12], src), (2, s.a.rtp));
    // Once latched, a stranger's packets to A's port go nowhere; A's own still do.
    stranger.send_to(&rtp(0, 2, 320, 1, 0xee), s.a.rtp).unwrap();
    pa.send_to(&rtp(0, 2, 320, 1, 3), s.a.rtp).unwrap();
    let (got, _) = recv(&pb);
    assert_eq!(got[12], 3, "the stranger's packet was forwarded");
    wait_stats(&e, |st| st.dropped(DropReason::UnexpectedSource) == 1);
    let st = e.destroy_session(s.id).unwrap();
    assert_eq!(st.a.unexpected_source, 1);
    assert_eq!(st.a.latched, Some(addr(&pa)));
}

#[test]
fn stream_stays_continuous_across_a_source_switch() {
    let e = engine(41400, 8, PollMode::default());
    let (s, pa, pb) = call(&e);
    for i in 0..5u16 {
        pa.send_to(
            &rtp(0, 1000 + i, 8000 + 160 * u32::from(i), 0xaaaa, 0),
            s.a.rtp,
        )
        .unwrap();
        recv(&pb);
    }
    // Re-INVITE: leg A is now another device with its own SSRC, seq and ts origin.
    let pa2 = peer();
    e.update_leg(s.id, Side::A, remote(addr(&pa2))).unwrap();
    let sent_at = Instant::now();
    // The old device keeps sending for a moment; it is no longer the latched source
    // once the new one has sent.
    pa2.send_to(&rtp(0, 7, 123_456, 0xbbbb, 0), s.a.rtp)
        .unwrap();
    let (got, _) = recv(&pb);
    let elapsed = sent_at.elapsed();
    let p = RtpPacket::new_checked(&got[..]).unwrap();
    assert_eq!(p.ssrc(), Ssrc(0xaaaa), "outgoing SSRC kept");
    assert_eq!(p.seq(), SeqNo(1005), "sequence continues");
    let ts_gap = p.timestamp().0.wrapping_sub(8000 + 160 * 4);
    assert!(
        ts_gap >= 1 && ts_gap < 8 * 1000 + u32::try_from(elapsed.as_millis() * 8).unwrap() + 8000,
        "timestamp advances by the wall-clock gap, got {ts_gap}"
    );
    assert!(p.marker(), "marker on the first packet after the switch");
    pa2.send_to(&rtp(0, 8, 123_616, 0xbbbb, 0), s.a.rtp)
        .unwrap();
    let (got, _) = recv(&pb);
    let q = RtpPacket::new_checked(&got[..]).unwrap();
    assert_eq!(
        (q.seq(), q.timestamp().0),
        (SeqNo(1006), p.timestamp().0 + 160)
    );
    // And B's replies go to the new device.
    pb.send_to(&rtp(0, 1, 1, 5, 9), s.b.rtp).unwrap();
    assert_eq!(recv(&pa2).0[12], 9);
    let st = e.destroy_session(s.id).unwrap();
    assert_eq!(st.b.source_switches, 1);
}

#[test]
fn payload_types_are_translated_per_leg() {
    let e = engine(41500, 8, PollMode::default());
    let (s, pa, pb) = call(&e);
    e.update_leg(
        s.id,
        Side::B,
        LegRemote {
            pt_out: PtMap::from_pairs(&[(96, 101)]),
            ..remote(addr(&pb))
        },
    )
    .unwrap();
    pa.send_to(&rtp(96, 1, 1, 1, 0), s.a.rtp).unwrap();
    assert_eq!(
        RtpPacket::new_checked(&recv(&pb).0[..])
            .unwrap()
            .payload_type(),
        101
    );
    pb.send_to(&rtp(96, 1, 1, 2, 0), s.b.rtp).unwrap();
    assert_eq!(
        RtpPacket::new_checked(&recv(&pa).0[..])
            .unwrap()
            .payload_type(),
        96,
        "the map is for packets leaving B only"
    );
}

#[test]
fn rtcp_is_relayed_port_to_port() {
    let e = engine(41600, 8, PollMode::default());
    let s = e.create_session().unwrap();
    let (pa, pa_c, pb, pb_c) = (peer(), peer(), peer(), peer());
    for (side, r, c) in [(Side::A, &pa, &pa_c), (Side::B, &pb, &pb_c)] {
        e.update_leg(
            s.id,
            side,
            LegRemote {
                rtp: Some(addr(r)),
                rtcp: Some(addr(c)),
                ..LegRemote::default()
            },
        )
        .unwrap();
    }
    pa_c.send_to(&rr(1), s.a.rtcp).unwrap();
    let (got, src) = recv(&pb_c);
    assert_eq!((got, src), (rr(1), s.b.rtcp));
    pb_c.send_to(&rr(2), s.b.rtcp).unwrap();
    let (got, src) = recv(&pa_c);
    assert_eq!((got, src), (rr(2), s.a.rtcp));
    wait_stats(&e, |st| st.rtcp_forwarded == 2);
}

#[test]
fn rtcp_mux_is_demultiplexed() {
    let e = engine(41700, 8, PollMode::default());
    let s = e.create_session().unwrap();
    let (pa, pb, pb_c) = (peer(), peer(), peer());
    // A multiplexes RTP and RTCP on one port (RFC 5761); B does not.
    e.update_leg(
        s.id,
        Side::A,
        LegRemote {
            rtcp_mux: true,
            ..remote(addr(&pa))
        },
    )
    .unwrap();
    e.update_leg(
        s.id,
        Side::B,
        LegRemote {
            rtp: Some(addr(&pb)),
            rtcp: Some(addr(&pb_c)),
            ..LegRemote::default()
        },
    )
    .unwrap();
    pa.send_to(&rtp(0, 1, 1, 1, 1), s.a.rtp).unwrap();
    pa.send_to(&rr(1), s.a.rtp).unwrap();
    assert_eq!(recv(&pb).0[12], 1, "RTP to B's RTP port");
    assert_eq!(recv(&pb_c), (rr(1), s.b.rtcp), "RTCP to B's RTCP port");
    pb_c.send_to(&rr(2), s.b.rtcp).unwrap();
    assert_eq!(recv(&pa), (rr(2), s.a.rtp), "RTCP back on A's one port");
}

#[test]
fn ports_are_released_and_reusable() {
    // 4 pairs = 2 sessions.
    let e = engine(41800, 4, PollMode::default());
    let s1 = e.create_session().unwrap();
    let s2 = e.create_session().unwrap();
    assert!(matches!(
        e.create_session(),
        Err(MediaError::PortsExhausted(_))
    ));
    let st = e.stats();
    assert_eq!((st.allocated_port_pairs, st.sessions), (4, 2));
    e.destroy_session(s1.id).unwrap();
    assert!(matches!(
        e.destroy_session(s1.id),
        Err(MediaError::UnknownSession(_))
    ));
    let s3 = e.create_session().unwrap();
    // The freed ports are bound again, i.e. the old sockets were really closed.
    assert!([s1.a.rtp, s1.b.rtp].contains(&s3.a.rtp));
    e.destroy_session(s2.id).unwrap();
    e.destroy_session(s3.id).unwrap();
    let st = e.stats();
    assert_eq!((st.allocated_port_pairs, st.sessions), (0, 0));
    assert!(matches!(
        e.update_leg(s3.id, Side::A, LegRemote::default()),
        Err(MediaError::UnknownSession(_))
    ));
}

#[test]
fn a_tap_gets_copies_only_while_set() {
    let e = engine(41900, 8, PollMode::default());
    let (s, pa, pb) = call(&e);
    let (tx, rx) = std::sync::mpsc::sync_channel(16);
    e.set_tap(s.id, Side::A, Some(tx)).unwrap();
    pa.send_to(&rtp(0, 1, 1, 1, 7), s.a.rtp).unwrap();
    recv(&pb);
    let copy = rx.recv_timeout(WAIT).unwrap();
    assert_eq!((copy.side, copy.rtcp, copy.data[12]), (Side::A, false, 7));
    e.set_tap(s.id, Side::A, None).unwrap();
    pa.send_to(&rtp(0, 2, 2, 1, 8), s.a.rtp).unwrap();
    recv(&pb);
    // A packet already queued when the tap was removed may still be copied, but then
    // the worker drops its sender: the channel ends.
    let mut copies = 0;
    loop {
        match rx.recv_timeout(WAIT) {
            Ok(_) => copies += 1,
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
            Err(e) => panic!("tap sender not dropped: {e}"),
        }
    }
    assert!(copies <= 1);
}
