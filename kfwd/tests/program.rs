//! The forwarding program run by the kernel itself (`BPF_PROG_TEST_RUN`) on crafted
//! frames: the verifier accepts it, and each rewrite and checksum comes out right.
//! Needs root (CAP_BPF); fails, never skips, without it.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddrV4;

use voxgate_kfwd::{Egress, Flow, Forwarder};

const TC_ACT_REDIRECT: i32 = 7;
const TCX_NEXT: i32 = -1;

fn sum16(data: &[u8], mut acc: u32) -> u32 {
    for c in data.chunks(2) {
        let w = if c.len() == 2 {
            u16::from_be_bytes([c[0], c[1]])
        } else {
            u16::from(c[0]) << 8
        };
        acc += u32::from(w);
    }
    acc
}

fn fold(mut acc: u32) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}

/// Ethernet + IPv4 + UDP + RTP (PCMU-sized payload), checksums filled in.
fn frame(src: SocketAddrV4, dst: SocketAddrV4, pt: u8, seq: u16, ts: u32, ssrc: u32) -> Vec<u8> {
    let payload: Vec<u8> = (0..160u32).map(|i| (i * 7) as u8).collect();
    let udp_len = 8 + 12 + payload.len();
    let mut f = vec![0u8; 14];
    f[12] = 0x08;
    let mut ip = vec![0x45, 0, 0, 0, 0x12, 0x34, 0x40, 0, 64, 17, 0, 0];
    ip[2..4].copy_from_slice(&((20 + udp_len) as u16).to_be_bytes());
    ip.extend_from_slice(&src.ip().octets());
    ip.extend_from_slice(&dst.ip().octets());
    let c = fold(sum16(&ip, 0));
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    f.extend_from_slice(&ip);
    let mut udp = Vec::new();
    udp.extend_from_slice(&src.port().to_be_bytes());
    udp.extend_from_slice(&dst.port().to_be_bytes());
    udp.extend_from_slice(&(udp_len as u16).to_be_bytes());
    udp.extend_from_slice(&[0, 0]);
    udp.extend_from_slice(&[0x80, pt]);
    udp.extend_from_slice(&seq.to_be_bytes());
    udp.extend_from_slice(&ts.to_be_bytes());
    udp.extend_from_slice(&ssrc.to_be_bytes());
    udp.extend_from_slice(&payload);
    let c = udp_csum(&f[14..34], &udp);
    udp[6..8].copy_from_slice(&c.to_be_bytes());
    f.extend_from_slice(&udp);
    f
}

fn udp_csum(ip: &[u8], udp: &[u8]) -> u16 {
    let mut acc = sum16(&ip[12..20], 0);
    acc += 17 + udp.len() as u32;
    let mut u = udp.to_vec();
    u[6] = 0;
    u[7] = 0;
    fold(sum16(&u, acc))
}

fn checksums_ok(f: &[u8]) -> (bool, bool) {
    let ip_ok = fold(sum16(&f[14..34], 0)) == 0;
    let stored = u16::from_be_bytes([f[40], f[41]]);
    (ip_ok, udp_csum(&f[14..34], &f[34..]) == stored)
}

fn a(s: &str) -> SocketAddrV4 {
    s.parse().unwrap()
}

fn flow() -> Flow {
    let mut pt_map = [0u8; 128];
    for (i, p) in pt_map.iter_mut().enumerate() {
        *p = i as u8;
    }
    pt_map[96] = 101;
    Flow {
        from: a("10.0.0.1:4000"),
        in_ssrc: 0x1111_2222,
        out_src: a("10.0.0.2:30002"),
        to: a("10.0.0.3:5000"),
        out_ssrc: 0xaaaa_bbbb,
        seq_off: 100,
        ts_off: 0xffff_ff00, // wraps
        pt_map,
        egress: Egress::Loopback(1),
    }
}

#[test]
fn rewrites_like_the_userspace_relay() {
    let fwd = Forwarder::load(16).expect("load the BPF program (needs root: CAP_BPF)");
    let local = a("10.0.0.2:30000");
    fwd.insert(local, &flow()).unwrap();
    let inp = frame(
        a("10.0.0.1:4000"),
        local,
        0x80 | 96,
        65500,
        1000,
        0x1111_2222,
    );
    assert_eq!(checksums_ok(&inp), (true, true));
    let (verdict, out) = fwd.test_run(&inp).unwrap();
    assert_eq!(verdict, TC_ACT_REDIRECT);
    assert_eq!(out.len(), inp.len());
    assert_eq!(
        &out[26..30],
        &[10, 0, 0, 2],
        "source is the other leg's socket"
    );
    assert_eq!(
        &out[30..34],
        &[10, 0, 0, 3],
        "destination is the other leg's peer"
    );
    assert_eq!(u16::from_be_bytes([out[34], out[35]]), 30002);
    assert_eq!(u16::from_be_bytes([out[36], out[37]]), 5000);
    assert_eq!(out[43], 0x80 | 101, "PT translated, marker kept");
    assert_eq!(
        u16::from_be_bytes([out[44], out[45]]),
        65500u16.wrapping_add(100)
    );
    assert_eq!(
        u32::from_be_bytes([out[46], out[47], out[48], out[49]]),
        1000u32.wrapping_add(0xffff_ff00)
    );
    assert_eq!(
        u32::from_be_bytes([out[50], out[51], out[52], out[53]]),
        0xaaaa_bbbb
    );
    assert_eq!(&out[54..], &inp[54..], "payload untouched");
    assert_eq!(
        checksums_ok(&out),
        (true, true),
        "IP and UDP checksums still valid"
    );

    let c = fwd.counters(local).unwrap().unwrap();
    assert_eq!(c.packets, 1);
    assert_eq!(c.bytes, inp.len() as u64);
    assert_eq!(c.last_seq, 65500u16.wrapping_add(100));
    assert_eq!(c.last_ts, 1000u32.wrapping_add(0xffff_ff00));
    let now = voxgate_kfwd::monotonic_ns();
    assert!(c.last_ns > 0 && c.last_ns <= now, "{c:?} vs {now}");
    assert_eq!(fwd.totals().unwrap(), (1, inp.len() as u64));

    // A zero UDP checksum (none, RFC 768) stays zero.
    let mut nock = frame(a("10.0.0.1:4000"), local, 0, 1, 1, 0x1111_2222);
    nock[40] = 0;
    nock[41] = 0;
    let (verdict, out) = fwd.test_run(&nock).unwrap();
    assert_eq!(verdict, TC_ACT_REDIRECT);
    assert_eq!(&out[40..42], &[0, 0]);
    assert!(checksums_ok(&out).0);

    // Neighbour egress takes the other redirect.
    fwd.insert(
        local,
        &Flow {
            egress: Egress::Neighbour(1),
            ..flow()
        },
    )
    .unwrap();
    assert_eq!(fwd.test_run(&inp).unwrap().0, TC_ACT_REDIRECT);
    assert_eq!(fwd.remove(local).unwrap().map(|c| c.packets), Some(1));
    assert_eq!(fwd.remove(local).unwrap(), None);
}

#[test]
fn leaves_everything_else_to_the_socket() {
    let fwd = Forwarder::load(16).expect("load the BPF program (needs root: CAP_BPF)");
    let local = a("10.0.0.2:30000");
    fwd.insert(local, &flow()).unwrap();
    let good = frame(a("10.0.0.1:4000"), local, 0, 1, 1, 0x1111_2222);
    let mut cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "other port",
            frame(
                a("10.0.0.1:4000"),
                a("10.0.0.2:30001"),
                0,
                1,
                1,
                0x1111_2222,
            ),
        ),
        (
            "other source ip",
            frame(a("10.0.0.9:4000"), local, 0, 1, 1, 0x1111_2222),
        ),
        (
            "other source port",
            frame(a("10.0.0.1:4001"), local, 0, 1, 1, 0x1111_2222),
        ),
        (
            "other ssrc",
            frame(a("10.0.0.1:4000"), local, 0, 1, 1, 0x1111_2223),
        ),
        (
            "rtcp under mux",
            frame(a("10.0.0.1:4000"), local, 200, 1, 1, 0x1111_2222),
        ),
        ("truncated", good[..50].to_vec()),
    ];
    let mut frag = good.clone();
    frag[20] = 0x20; // MF
    cases.push(("fragment", frag));
    let mut v1 = good.clone();
    v1[42] = 0x40;
    cases.push(("rtp version 1", v1));
    let mut opts = good.clone();
    opts[14] = 0x46;
    cases.push(("ip options", opts));
    let mut tcp = good.clone();
    tcp[23] = 6;
    cases.push(("tcp", tcp));
    for (what, f) in cases {
        let (verdict, out) = fwd.test_run(&f).unwrap();
        assert_eq!(verdict, TCX_NEXT, "{what}");
        assert_eq!(out, f, "{what}: untouched");
    }
    assert_eq!(fwd.counters(local).unwrap().unwrap().packets, 0);
    assert_eq!(fwd.totals().unwrap(), (0, 0));
}

#[test]
fn finds_the_loopback_route() {
    let lo = voxgate_kfwd::ifindex("lo").unwrap();
    assert_eq!(
        voxgate_kfwd::egress_for("127.0.0.1".parse().unwrap()).unwrap(),
        Egress::Loopback(lo)
    );
    assert!(voxgate_kfwd::interfaces()
        .unwrap()
        .iter()
        .any(|(n, i)| n == "lo" && *i == lo));
}
