//! The media relay with kernel forwarding on (`rtp.kernel_forwarding = "on"`): the same
//! loopback parties as tests/media_relay.rs, checking that steady flows really move to
//! the eBPF program and that everything the userspace relay guarantees still holds
//! across the hand-overs (source switches, strangers, taps, hold).
//! Needs root (CAP_BPF, CAP_NET_ADMIN) and Linux 6.6+: fails, never skips, without.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod relay_peers;

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use relay_peers::{addr, call, peer, recv, remote, WAIT};
use voxgate::config::PortRange;
use voxgate::media::{
    Codec, DropReason, EngineStats, KernelForwarding, LegRemote, Loops, MediaConfig,
    MediaDirection, MediaEngine, PlaySpec, PlaybackOutcome, SampleRate, Side,
};
use voxgate_media::rtp::{write_header, RtpPacket, RtpTimestamp, SeqNo, Ssrc};

fn engine(lo: u16) -> MediaEngine {
    let mut cfg = MediaConfig::loopback(PortRange { lo, hi: lo + 15 });
    cfg.kernel = KernelForwarding::On;
    let e = MediaEngine::start(cfg).expect("kernel forwarding needs root and Linux 6.6+");
    assert!(e.kernel_forwarding());
    e
}

fn rtp(seq: u16, ts: u32, ssrc: u32, tag: u8) -> Vec<u8> {
    let mut v = vec![tag; 172];
    write_header(&mut v, 0, false, SeqNo(seq), RtpTimestamp(ts), Ssrc(ssrc)).unwrap();
    v
}

fn wait_stats(e: &MediaEngine, f: impl Fn(&EngineStats) -> bool) -> EngineStats {
    let deadline = Instant::now() + WAIT;
    loop {
        let s = e.stats();
        if f(&s) {
            return s;
        }
        assert!(Instant::now() < deadline, "stats never matched: {s:?}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Sends `n` packets from `from` to the relay port `to`, each received at `at`,
/// checking each arrives whole from `via`; returns them.
fn stream(
    from: &UdpSocket,
    to: SocketAddr,
    at: &UdpSocket,
    via: SocketAddr,
    pkts: &[Vec<u8>],
) -> Vec<Vec<u8>> {
    pkts.iter()
        .map(|p| {
            from.send_to(p, to).unwrap();
            let (got, src) = recv(at);
            assert_eq!(src, via, "heard from the relay's port");
            assert_eq!(got.len(), p.len());
            got
        })
        .collect()
}

#[test]
fn steady_flows_move_to_the_kernel_both_ways() {
    let e = engine(42000);
    let (s, pa, pb) = call(&e);
    for i in 0..50u16 {
        let a = rtp(i, 160 * u32::from(i), 11, 0xa);
        assert_eq!(
            stream(&pa, s.a.rtp, &pb, s.b.rtp, std::slice::from_ref(&a))[0],
            a
        );
        let b = rtp(500 + i, 160 * u32::from(i), 22, 0xb);
        assert_eq!(
            stream(&pb, s.b.rtp, &pa, s.a.rtp, std::slice::from_ref(&b))[0],
            b
        );
    }
    let st = wait_stats(&e, |st| st.rtp_forwarded == 100);
    assert_eq!(st.kernel_flows, 2);
    assert!(
        st.kernel_forwarded >= 90,
        "only the first packets need userspace: {st:?}"
    );
    let fin = e.destroy_session(s.id).unwrap();
    assert_eq!((fin.a.received, fin.a.forwarded), (50, 50));
    assert_eq!((fin.b.received, fin.b.forwarded), (50, 50));
    assert_eq!(e.stats().kernel_flows, 0);
}

#[test]
fn a_new_ssrc_goes_through_userspace_and_continues_the_kernel_stream() {
    let e = engine(42100);
    let (s, pa, pb) = call(&e);
    let first: Vec<_> = (0..20u16)
        .map(|i| rtp(1000 + i, 8000 + 160 * u32::from(i), 0xaaaa, 1))
        .collect();
    stream(&pa, s.a.rtp, &pb, s.b.rtp, &first);
    assert!(wait_stats(&e, |st| st.rtp_forwarded == 20).kernel_forwarded >= 15);
    // The phone restarts its stream: new SSRC, new origin. The kernel passes it up; the
    // relay re-anchors after the last packet the kernel sent.
    let t0 = Instant::now();
    let next: Vec<_> = (0..20u16)
        .map(|i| rtp(7 + i, 99_000 + 160 * u32::from(i), 0xbbbb, 2))
        .collect();
    let got = stream(&pa, s.a.rtp, &pb, s.b.rtp, &next);
    let elapsed_ticks = u32::try_from(t0.elapsed().as_millis() * 8).unwrap();
    let p0 = RtpPacket::new_checked(&got[0][..]).unwrap();
    assert_eq!(p0.ssrc(), Ssrc(0xaaaa), "outgoing SSRC kept");
    assert_eq!(
        p0.seq(),
        SeqNo(1020),
        "sequence continues from the kernel's last packet"
    );
    let gap = p0.timestamp().0.wrapping_sub(8000 + 160 * 19);
    assert!(
        (1..=elapsed_ticks + 8000).contains(&gap),
        "timestamp gap {gap}"
    );
    assert!(p0.marker());
    for (i, g) in got.iter().enumerate().skip(1) {
        let p = RtpPacket::new_checked(&g[..]).unwrap();
        let i = u16::try_from(i).unwrap();
        assert_eq!(p.seq(), SeqNo(1020 + i));
        assert_eq!(p.timestamp().0, p0.timestamp().0 + 160 * u32::from(i));
        assert_eq!(p.ssrc(), Ssrc(0xaaaa));
        assert!(!p.marker());
    }
    let st = wait_stats(&e, |st| st.rtp_forwarded == 40);
    assert!(
        st.kernel_forwarded >= 30,
        "the new SSRC is steady again: {st:?}"
    );
    let fin = e.destroy_session(s.id).unwrap();
    assert_eq!(fin.b.source_switches, 1);
    assert_eq!(fin.a.forwarded, 40);
}

#[test]
fn reinvite_to_another_device_keeps_continuity_and_redirects_replies() {
    let e = engine(42200);
    let (s, pa, pb) = call(&e);
    let first: Vec<_> = (0..10u16)
        .map(|i| rtp(100 + i, 160 * u32::from(i), 1, 0))
        .collect();
    stream(&pa, s.a.rtp, &pb, s.b.rtp, &first);
    stream(
        &pb,
        s.b.rtp,
        &pa,
        s.a.rtp,
        &[rtp(1, 1, 2, 0), rtp(2, 161, 2, 0)],
    );
    let pa2 = peer();
    e.update_leg(s.id, Side::A, remote(addr(&pa2))).unwrap();
    let got = stream(
        &pa2,
        s.a.rtp,
        &pb,
        s.b.rtp,
        &[rtp(5, 5, 1, 0), rtp(6, 165, 1, 0)],
    );
    let p = RtpPacket::new_checked(&got[1][..]).unwrap();
    assert_eq!(
        p.seq(),
        SeqNo(111),
        "continues after the kernel-forwarded 100..=109"
    );
    // The old device is a stranger now, even though it was offloaded a moment ago.
    pa.send_to(&rtp(110, 1600, 1, 0xee), s.a.rtp).unwrap();
    let got = stream(&pb, s.b.rtp, &pa2, s.a.rtp, &[rtp(3, 321, 2, 9)]);
    assert_eq!(got[0][12], 9, "B's reply reaches the new device");
    wait_stats(&e, |st| st.dropped(DropReason::UnexpectedSource) == 1);
}

#[test]
fn strangers_are_still_dropped_while_the_kernel_forwards() {
    let e = engine(42300);
    let (s, pa, pb) = call(&e);
    let stranger = peer();
    for i in 0..10u16 {
        stream(
            &pa,
            s.a.rtp,
            &pb,
            s.b.rtp,
            &[rtp(i, 160 * u32::from(i), 1, 1)],
        );
        stranger.send_to(&rtp(i, 0, 1, 0xee), s.a.rtp).unwrap();
    }
    let st = wait_stats(&e, |st| st.dropped(DropReason::UnexpectedSource) == 10);
    assert!(st.kernel_forwarded >= 5, "{st:?}");
    pb.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut b = [0u8; 256];
    assert!(
        pb.recv_from(&mut b).is_err(),
        "a stranger's packet was forwarded"
    );
}

#[test]
fn a_tap_takes_the_direction_back_to_userspace() {
    let e = engine(42400);
    let (s, pa, pb) = call(&e);
    let steady: Vec<_> = (0..10u16)
        .map(|i| rtp(i, 160 * u32::from(i), 1, 1))
        .collect();
    stream(&pa, s.a.rtp, &pb, s.b.rtp, &steady);
    wait_stats(&e, |st| st.kernel_flows == 1);
    let (tx, rx) = std::sync::mpsc::sync_channel(64);
    e.set_tap(s.id, Side::A, Some(tx)).unwrap();
    wait_stats(&e, |st| st.kernel_flows == 0);
    let tapped: Vec<_> = (10..30u16)
        .map(|i| rtp(i, 160 * u32::from(i), 1, 2))
        .collect();
    stream(&pa, s.a.rtp, &pb, s.b.rtp, &tapped);
    for i in 10..30u16 {
        let c = rx.recv_timeout(WAIT).expect("every packet is tapped");
        assert_eq!(RtpPacket::new_checked(&c.data[..]).unwrap().seq(), SeqNo(i));
    }
    assert_eq!(e.stats().kernel_flows, 0, "no flow while tapped");
}

#[test]
fn hold_stops_the_kernel_flow_towards_the_held_party() {
    let e = engine(42500);
    let (s, pa, pb) = call(&e);
    let b: Vec<_> = (0..10u16)
        .map(|i| rtp(i, 160 * u32::from(i), 2, 2))
        .collect();
    stream(&pb, s.b.rtp, &pa, s.a.rtp, &b);
    wait_stats(&e, |st| st.kernel_flows == 1);
    // A puts B on hold (a=sendonly from A): nothing may reach A any more.
    e.update_leg(
        s.id,
        Side::A,
        LegRemote {
            direction: MediaDirection::SendOnly,
            ..remote(addr(&pa))
        },
    )
    .unwrap();
    wait_stats(&e, |st| st.kernel_flows == 0);
    for i in 10..15u16 {
        pb.send_to(&rtp(i, 160 * u32::from(i), 2, 2), s.b.rtp)
            .unwrap();
    }
    wait_stats(&e, |st| st.dropped(DropReason::NotReceiving) == 5);
    pa.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut buf = [0u8; 256];
    assert!(pa.recv_from(&mut buf).is_err(), "held party got media");
}

#[test]
fn a_playback_takes_the_direction_towards_its_leg_out_of_the_kernel_while_it_plays() {
    let e = engine(42700);
    let (s, pa, pb) = call(&e);
    let first: Vec<_> = (0..20u16)
        .map(|i| rtp(100 + i, 160 * u32::from(i), 0xaaaa, 1))
        .collect();
    stream(&pa, s.a.rtp, &pb, s.b.rtp, &first);
    assert!(wait_stats(&e, |st| st.rtp_forwarded == 20).kernel_forwarded >= 15);
    assert_eq!(e.stats().kernel_flows, 1);
    // Ten frames of a prompt into B.
    let level = voxgate_media::codec::linear_to_ulaw(1000);
    let (tx, rx) = std::sync::mpsc::channel();
    let spec = PlaySpec {
        pcm: vec![1000i16; 1600].into(),
        rate: SampleRate::HZ_8000,
        codec: Codec::Pcmu,
        payload_type: 0,
        loops: Loops::ONCE,
        notify: Some(tx),
        tag: 0,
    };
    let id = e.play(s.id, Side::B, spec).unwrap();
    let mut played = Vec::new();
    for k in 0..10u16 {
        let (got, src) = recv(&pb);
        assert_eq!(src, s.b.rtp);
        let p = RtpPacket::new_checked(&got[..]).unwrap();
        assert!(
            p.payload().iter().all(|b| *b == level),
            "only the prompt reaches B while it plays"
        );
        played.push((p.ssrc(), p.seq(), p.timestamp().0));
        if k == 0 {
            // The worker took A→B back before the prompt's first packet; A goes on
            // talking, and is replaced in userspace.
            assert_eq!(e.stats().kernel_flows, 0);
            for i in 20..25u16 {
                pa.send_to(&rtp(100 + i, 160 * u32::from(i), 0xaaaa, 1), s.a.rtp)
                    .unwrap();
            }
        }
    }
    let ev = rx.recv_timeout(WAIT).unwrap();
    assert_eq!((ev.id, ev.outcome), (id, PlaybackOutcome::Finished));
    let st = wait_stats(&e, |st| st.rtp_replaced == 5);
    assert_eq!(st.kernel_flows, 0, "{st:?}");
    for (k, (ssrc, seq, ts)) in played.iter().enumerate() {
        let k16 = u16::try_from(k).unwrap();
        assert_eq!(*ssrc, Ssrc(0xaaaa), "the stream B hears keeps its SSRC");
        assert_eq!(*seq, SeqNo(120 + k16), "after the kernel's 100..=119");
        assert!(ts.wrapping_sub(160 * 19) >= 160 * (u32::from(k16) + 1));
    }
    // The prompt is over: A is relayed again, continuing the stream, and steady again.
    let next: Vec<_> = (25..45u16)
        .map(|i| rtp(100 + i, 160 * u32::from(i), 0xaaaa, 2))
        .collect();
    let got = stream(&pa, s.a.rtp, &pb, s.b.rtp, &next);
    let p0 = RtpPacket::new_checked(&got[0][..]).unwrap();
    assert_eq!((p0.ssrc(), p0.seq()), (Ssrc(0xaaaa), SeqNo(130)));
    assert!(p0.marker());
    assert!(p0.timestamp().0.wrapping_sub(played[9].2) >= 160);
    let st = wait_stats(&e, |st| st.rtp_forwarded == 40 && st.kernel_flows == 1);
    assert!(
        st.kernel_forwarded >= 30,
        "A→B went back to the kernel: {st:?}"
    );
    let fin = e.destroy_session(s.id).unwrap();
    assert_eq!((fin.b.played, fin.a.replaced), (10, 5));
}

/// Two network namespaces as two remote hosts, each behind its own veth link into this
/// namespace (the gateway's host): the forwarded packets must leave by the right
/// interface with the right link-layer addresses (`bpf_redirect_neigh`).
struct Hosts {
    names: [String; 2],
}

impl Hosts {
    fn ip(args: &str) {
        let st = std::process::Command::new("ip")
            .args(args.split_whitespace())
            .status()
            .expect("run ip (iproute2)");
        assert!(st.success(), "ip {args}");
    }

    /// Host i is 10.<net>.<i>.2/24 in namespace names[i], reached via vgk<pid><i> at .1.
    fn new(net: u8) -> Hosts {
        let pid = std::process::id() % 100_000;
        let names = [format!("vgk{pid}a"), format!("vgk{pid}b")];
        for (i, ns) in names.iter().enumerate() {
            let (host, peer) = (format!("{ns}h"), format!("{ns}p"));
            Hosts::ip(&format!("netns add {ns}"));
            Hosts::ip(&format!(
                "link add {host} type veth peer name {peer} netns {ns}"
            ));
            Hosts::ip(&format!("addr add 10.{net}.{i}.1/24 dev {host}"));
            Hosts::ip(&format!("link set {host} up"));
            Hosts::ip(&format!("-n {ns} addr add 10.{net}.{i}.2/24 dev {peer}"));
            Hosts::ip(&format!("-n {ns} link set {peer} up"));
            Hosts::ip(&format!("-n {ns} link set lo up"));
            Hosts::ip(&format!("-n {ns} route add default via 10.{net}.{i}.1"));
            // One service address for the gateway, as in a real deployment: replies to
            // every host leave from 10.<net>.0.1 (the SDP's address), also in userspace.
            Hosts::ip(&format!(
                "route replace 10.{net}.{i}.0/24 dev {host} src 10.{net}.0.1"
            ));
        }
        Hosts { names }
    }

    /// A UDP socket bound inside host i's namespace.
    fn socket(&self, i: usize, addr: &str) -> UdpSocket {
        let path = format!("/var/run/netns/{}", self.names[i]);
        let addr = addr.to_owned();
        std::thread::spawn(move || {
            let f = std::fs::File::open(path).unwrap();
            nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            let s = UdpSocket::bind(addr).unwrap();
            s.set_read_timeout(Some(WAIT)).unwrap();
            s
        })
        .join()
        .unwrap()
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        for ns in &self.names {
            // Deleting the namespace deletes its veth end and with it ours.
            let _ = std::process::Command::new("ip")
                .args(["netns", "del", ns])
                .status();
        }
    }
}

#[test]
fn routed_peers_get_kernel_forwarded_packets_through_the_right_interface() {
    let hosts = Hosts::new(77);
    let gw: std::net::IpAddr = "10.77.0.1".parse().unwrap();
    let mut cfg = MediaConfig::loopback(PortRange {
        lo: 42600,
        hi: 42615,
    });
    cfg.bind_ip = std::net::Ipv4Addr::UNSPECIFIED.into();
    cfg.advertised_ip = gw;
    cfg.kernel = KernelForwarding::On;
    let e = MediaEngine::start(cfg).expect("kernel forwarding");
    let pa = hosts.socket(0, "10.77.0.2:4000");
    let pb = hosts.socket(1, "10.77.1.2:5000");
    let s = e.create_session().unwrap();
    e.update_leg(s.id, Side::A, remote(addr(&pa))).unwrap();
    e.update_leg(s.id, Side::B, remote(addr(&pb))).unwrap();
    for i in 0..30u16 {
        let a = rtp(i, 160 * u32::from(i), 1, 0xa);
        assert_eq!(
            stream(&pa, s.a.rtp, &pb, s.b.rtp, std::slice::from_ref(&a))[0],
            a
        );
        let b = rtp(i, 160 * u32::from(i), 2, 0xb);
        assert_eq!(
            stream(&pb, s.b.rtp, &pa, s.a.rtp, std::slice::from_ref(&b))[0],
            b
        );
    }
    let st = wait_stats(&e, |st| st.rtp_forwarded == 60);
    assert!(
        st.kernel_forwarded >= 50,
        "routed flows were not offloaded: {st:?}"
    );
    drop(e);
    drop(hosts);
}
