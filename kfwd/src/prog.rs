//! The tc ingress program: forwards RTP of installed flows in the kernel.
//!
//! For each IPv4/UDP packet it looks up the flow keyed by the packet's destination
//! (a relay leg's RTP socket). A packet is forwarded in the kernel only if it is
//! exactly what the userspace relay would forward unchanged in policy: from the latched
//! source address, RTP version 2, not RTCP (RFC 5761 §4 payload types 64–95), and of the
//! SSRC the flow was installed for. Then it rewrites, as the userspace relay does:
//!
//! - IP source/destination and UDP ports: from the other leg's socket to the other
//!   leg's peer;
//! - payload type through the flow's 128-entry table, marker bit kept;
//! - sequence number and timestamp plus the flow's offsets, SSRC to the outgoing one;
//! - IPv4 header and UDP checksums, incrementally (`bpf_csum_diff` over the changed
//!   words, then `bpf_l3_csum_replace`/`bpf_l4_csum_replace`, which also handle
//!   loopback's CHECKSUM_PARTIAL packets and a zero UDP checksum correctly);
//!
//! counts the packet in the flow (packets, bytes, time, last sequence/timestamp out, so
//! userspace can re-anchor the stream later) and redirects it out of the egress
//! interface. Anything else returns `TCX_NEXT` untouched, so it reaches the socket (and
//! the userspace relay) exactly as without this program, and other programs attached
//! after this one still see it.

use crate::asm::{
    Alu, Asm, AsmError, Cond, Insn, Size, FP, R0, R1, R2, R3, R4, R5, R6, R7, R8, R9,
};
use crate::layout::{key as k, value as v};

/// tcx verdicts (`include/uapi/linux/bpf.h`).
const TCX_NEXT: i32 = -1;

const FN_MAP_LOOKUP_ELEM: i32 = 1;
const FN_KTIME_GET_NS: i32 = 5;
const FN_L3_CSUM_REPLACE: i32 = 10;
const FN_L4_CSUM_REPLACE: i32 = 11;
const FN_REDIRECT: i32 = 23;
const FN_CSUM_DIFF: i32 = 28;
const FN_REDIRECT_NEIGH: i32 = 152;
const F_PSEUDO_HDR: i32 = 1 << 4;
const F_MARK_MANGLED_0: i32 = 1 << 5;

// Offsets in `struct __sk_buff`.
const SKB_LEN: i16 = 0;
const SKB_DATA: i16 = 76;
const SKB_DATA_END: i16 = 80;

// Offsets in the frame: Ethernet (14) + IPv4 without options (20) + UDP (8) + RTP (12).
const ETH_PROTO: i16 = 12;
const IP: i16 = 14;
const IP_VIHL: i16 = IP;
const IP_FRAG: i16 = IP + 6;
const IP_PROTO: i16 = IP + 9;
const IP_CSUM: i32 = (IP + 10) as i32;
const IP_SADDR: i16 = IP + 12;
const IP_DADDR: i16 = IP + 16;
const UDP: i16 = IP + 20;
const UDP_SPORT: i16 = UDP;
const UDP_DPORT: i16 = UDP + 2;
const UDP_CSUM: i32 = (UDP + 6) as i32;
const RTP: i16 = UDP + 8;
const RTP_VPXCC: i16 = RTP;
const RTP_MPT: i16 = RTP + 1;
const RTP_SEQ: i16 = RTP + 2;
const RTP_TS: i16 = RTP + 4;
const RTP_SSRC: i16 = RTP + 8;
const MIN_LEN: i32 = (RTP + 12) as i32;

// Stack: the lookup key, then the six 32-bit words the rewrite changes, before (OLD)
// and after (NEW): saddr, daddr, ports, RTP word 0 (V..PT, seq), timestamp, SSRC.
const KEY: i16 = -8;
const STATS_KEY: i16 = -68;
const OLD: i16 = -64;
const NEW: i16 = -40;
/// Packet offsets of those six words.
const WORDS: [i16; 6] = [IP_SADDR, IP_DADDR, UDP_SPORT, RTP_VPXCC, RTP_TS, RTP_SSRC];

/// Builds the program for the flow map `flows` and the per-CPU counter map `stats`
/// (file descriptors of this process).
pub fn build(flows: i32, stats: i32) -> Result<Vec<Insn>, AsmError> {
    let mut a = Asm::new();
    let pass = a.label();
    let csum = a.label();
    let neigh = a.label();

    a.mov(R6, R1);
    // Bounds, Ethernet type IPv4, IHL 5, UDP, not a fragment, RTP v2, not RTCP.
    let bounds = |a: &mut Asm| {
        a.ldx(Size::W, R8, R6, SKB_DATA);
        a.ldx(Size::W, R3, R6, SKB_DATA_END);
        a.mov(R4, R8);
        a.alu_imm(Alu::Add, R4, MIN_LEN);
        a.jmp(Cond::Gt, R4, R3, pass);
    };
    bounds(&mut a);
    a.ldx(Size::H, R4, R8, ETH_PROTO);
    a.jmp_imm(Cond::Ne, R4, 0x0008, pass); // 0x0800, loaded little-endian
    a.ldx(Size::B, R4, R8, IP_VIHL);
    a.jmp_imm(Cond::Ne, R4, 0x45, pass);
    a.ldx(Size::B, R4, R8, IP_PROTO);
    a.jmp_imm(Cond::Ne, R4, 17, pass);
    a.ldx(Size::H, R4, R8, IP_FRAG);
    a.alu_imm(Alu::And, R4, 0xff3f); // MF | fragment offset, little-endian view
    a.jmp_imm(Cond::Ne, R4, 0, pass);
    a.ldx(Size::B, R4, R8, RTP_VPXCC);
    a.alu_imm(Alu::And, R4, 0xc0);
    a.jmp_imm(Cond::Ne, R4, 0x80, pass);
    a.ldx(Size::B, R4, R8, RTP_MPT);
    a.alu_imm(Alu::And, R4, 0x7f);
    a.alu_imm(Alu::Sub, R4, 64);
    a.jmp_imm(Cond::Lt, R4, 32, pass);

    // Flow lookup by (daddr, dport).
    a.ldx(Size::W, R4, R8, IP_DADDR);
    a.stx(Size::W, FP, KEY + k::ADDR, R4);
    a.ldx(Size::H, R4, R8, UDP_DPORT);
    a.stx(Size::W, FP, KEY + k::PORT, R4); // port, then two zero bytes of padding
    a.ld_map_fd(R1, flows);
    a.mov(R2, FP);
    a.alu_imm(Alu::Add, R2, i32::from(KEY));
    a.call(FN_MAP_LOOKUP_ELEM);
    a.jmp_imm(Cond::Eq, R0, 0, pass);
    a.mov(R7, R0);
    bounds(&mut a); // the call clobbered the packet pointers

    // From the latched source, with the installed SSRC.
    for (pkt, val, size) in [
        (IP_SADDR, v::FROM_ADDR, Size::W),
        (UDP_SPORT, v::FROM_PORT, Size::H),
        (RTP_SSRC, v::IN_SSRC, Size::W),
    ] {
        a.ldx(size, R4, R8, pkt);
        a.ldx(size, R5, R7, val);
        a.jmp(Cond::Ne, R4, R5, pass);
    }

    for (i, off) in WORDS.iter().enumerate() {
        a.ldx(Size::W, R4, R8, *off);
        a.stx(Size::W, FP, OLD + 4 * i as i16, R4);
    }
    // Addresses and ports.
    for (val, pkt, slot, size) in [
        (v::OUT_ADDR, IP_SADDR, NEW, Size::W),
        (v::TO_ADDR, IP_DADDR, NEW + 4, Size::W),
        (v::OUT_PORT, UDP_SPORT, NEW + 8, Size::H),
        (v::TO_PORT, UDP_DPORT, NEW + 10, Size::H),
    ] {
        a.ldx(size, R4, R7, val);
        a.stx(size, R8, pkt, R4);
        a.stx(size, FP, slot, R4);
    }
    // Payload type through the table, marker bit kept.
    a.ldx(Size::B, R4, R8, RTP_MPT);
    a.mov(R5, R4);
    a.alu_imm(Alu::And, R5, 0x80);
    a.alu_imm(Alu::And, R4, 0x7f);
    a.mov(R9, R7);
    a.alu(Alu::Add, R9, R4);
    a.ldx(Size::B, R4, R9, v::PT_MAP);
    a.alu(Alu::Or, R4, R5);
    a.stx(Size::B, R8, RTP_MPT, R4);
    // Sequence number + offset (mod 2^16).
    a.ldx(Size::H, R4, R8, RTP_SEQ);
    a.bswap(R4, 16);
    a.ldx(Size::H, R5, R7, v::SEQ_OFF);
    a.alu(Alu::Add, R4, R5);
    a.alu_imm(Alu::And, R4, 0xffff);
    a.stx(Size::H, R7, v::LAST_SEQ, R4);
    a.bswap(R4, 16);
    a.stx(Size::H, R8, RTP_SEQ, R4);
    a.ldx(Size::W, R4, R8, RTP_VPXCC);
    a.stx(Size::W, FP, NEW + 12, R4);
    // Timestamp + offset (mod 2^32).
    a.ldx(Size::W, R4, R8, RTP_TS);
    a.bswap(R4, 32);
    a.ldx(Size::W, R5, R7, v::TS_OFF);
    a.alu32(Alu::Add, R4, R5);
    a.stx(Size::W, R7, v::LAST_TS, R4);
    a.bswap(R4, 32);
    a.stx(Size::W, R8, RTP_TS, R4);
    a.stx(Size::W, FP, NEW + 16, R4);
    // SSRC.
    a.ldx(Size::W, R4, R7, v::OUT_SSRC);
    a.stx(Size::W, R8, RTP_SSRC, R4);
    a.stx(Size::W, FP, NEW + 20, R4);

    // Flow counters, then the per-CPU totals.
    a.mov_imm(R4, 1);
    a.atomic_add64(R7, v::PACKETS, R4);
    a.ldx(Size::W, R4, R6, SKB_LEN);
    a.atomic_add64(R7, v::BYTES, R4);
    a.call(FN_KTIME_GET_NS);
    a.stx(Size::DW, R7, v::LAST_NS, R0);
    a.st(Size::W, FP, STATS_KEY, 0);
    a.ld_map_fd(R1, stats);
    a.mov(R2, FP);
    a.alu_imm(Alu::Add, R2, i32::from(STATS_KEY));
    a.call(FN_MAP_LOOKUP_ELEM);
    a.jmp_imm(Cond::Eq, R0, 0, csum);
    a.ldx(Size::DW, R4, R0, 0);
    a.alu_imm(Alu::Add, R4, 1);
    a.stx(Size::DW, R0, 0, R4);
    a.ldx(Size::W, R4, R6, SKB_LEN);
    a.ldx(Size::DW, R5, R0, 8);
    a.alu(Alu::Add, R5, R4);
    a.stx(Size::DW, R0, 8, R5);

    // Checksums: the addresses are in the IP header and the UDP pseudo-header; the
    // ports and RTP words only in the UDP checksum.
    a.bind(csum);
    let diff = |a: &mut Asm, from: i16, to: i16, len: i32| {
        a.mov(R1, FP);
        a.alu_imm(Alu::Add, R1, i32::from(from));
        a.mov_imm(R2, len);
        a.mov(R3, FP);
        a.alu_imm(Alu::Add, R3, i32::from(to));
        a.mov_imm(R4, len);
        a.mov_imm(R5, 0);
        a.call(FN_CSUM_DIFF);
    };
    let replace = |a: &mut Asm, func: i32, at: i32, flags: i32| {
        a.mov(R1, R6);
        a.mov_imm(R2, at);
        a.mov_imm(R3, 0);
        a.mov(R4, R9);
        a.mov_imm(R5, flags);
        a.call(func);
    };
    diff(&mut a, OLD, NEW, 8);
    a.mov(R9, R0);
    replace(&mut a, FN_L3_CSUM_REPLACE, IP_CSUM, 0);
    replace(
        &mut a,
        FN_L4_CSUM_REPLACE,
        UDP_CSUM,
        F_PSEUDO_HDR | F_MARK_MANGLED_0,
    );
    diff(&mut a, OLD + 8, NEW + 8, 16);
    a.mov(R9, R0);
    replace(&mut a, FN_L4_CSUM_REPLACE, UDP_CSUM, F_MARK_MANGLED_0);

    // Out of the egress interface.
    a.ldx(Size::W, R1, R7, v::IFINDEX);
    a.ldx(Size::W, R2, R7, v::FLAGS);
    a.jmp_imm(Cond::Eq, R2, 0, neigh);
    a.mov_imm(R2, 0);
    a.call(FN_REDIRECT);
    a.exit();
    a.bind(neigh);
    a.mov_imm(R2, 0);
    a.mov_imm(R3, 0);
    a.mov_imm(R4, 0);
    a.call(FN_REDIRECT_NEIGH);
    a.exit();

    a.bind(pass);
    a.mov_imm(R0, TCX_NEXT);
    a.exit();
    a.finish()
}
