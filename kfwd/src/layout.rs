//! Byte layout of the flow map's key and value, shared by the program and userspace.
//! Addresses, ports and SSRCs are in network order (as on the wire, so the program
//! compares and copies them without swapping); offsets and counters in host order.

pub mod key {
    /// Destination IPv4 address (the relay leg's RTP socket).
    pub const ADDR: i16 = 0;
    /// Destination UDP port; two zero bytes follow.
    pub const PORT: i16 = 4;
    pub const SIZE: usize = 8;
}

pub mod value {
    /// Expected source address and port (the latched peer).
    pub const FROM_ADDR: i16 = 0;
    pub const FROM_PORT: i16 = 4;
    /// Source port of the forwarded packet (the other leg's RTP socket).
    pub const OUT_PORT: i16 = 6;
    /// Only this SSRC is forwarded in the kernel.
    pub const IN_SSRC: i16 = 8;
    pub const OUT_SSRC: i16 = 12;
    /// Source address of the forwarded packet (the other leg's RTP socket).
    pub const OUT_ADDR: i16 = 16;
    /// Where it goes (the other leg's peer).
    pub const TO_ADDR: i16 = 20;
    pub const TO_PORT: i16 = 24;
    /// Added to the sequence number (host order, wrapping).
    pub const SEQ_OFF: i16 = 26;
    /// Added to the timestamp (host order, wrapping).
    pub const TS_OFF: i16 = 28;
    /// Egress interface.
    pub const IFINDEX: i16 = 32;
    /// 1: `bpf_redirect` (loopback); 0: `bpf_redirect_neigh` (fills in the link layer).
    pub const FLAGS: i16 = 36;
    /// Written by the program: packets and bytes forwarded, `CLOCK_MONOTONIC` ns of the
    /// last one, and its outgoing sequence number and timestamp (host order).
    pub const PACKETS: i16 = 40;
    pub const BYTES: i16 = 48;
    pub const LAST_NS: i16 = 56;
    pub const LAST_TS: i16 = 64;
    pub const LAST_SEQ: i16 = 68;
    /// Payload-type translation table, 128 entries.
    pub const PT_MAP: i16 = 72;
    pub const SIZE: usize = 200;
}
