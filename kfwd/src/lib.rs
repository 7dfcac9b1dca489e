//! Kernel RTP forwarding for the media relay.
//!
//! The userspace relay (`voxgate::media`) costs two system calls and two passes through
//! the UDP stack per packet. Once a flow is steady — its source latched, its SSRC known,
//! nobody tapping it — every packet of it is handled the same way, so the relay installs
//! the flow here and a tc ingress program ([`prog`]) forwards its packets inside the
//! kernel: rewritten exactly as the userspace path would, redirected out of the egress
//! interface, never queued to a socket. Whatever the program does not recognise
//! (another source, another SSRC, RTCP, a fragment) goes up to the socket as before, and
//! the relay decides; it removes or replaces the flow when signalling changes it.
//!
//! This is the approach of rtpengine's kernel module (xt_RTPENGINE), done with eBPF so
//! no out-of-tree module is needed: Linux 6.6 or later (tcx links), `CAP_BPF` and
//! `CAP_NET_ADMIN`. The links and maps belong to the process's file descriptors, so a
//! crashed gateway leaves nothing attached.

pub mod asm;
pub mod layout;
pub mod prog;
mod route;
pub mod sys;

use std::io;
use std::net::SocketAddrV4;
use std::os::fd::{AsRawFd, OwnedFd};

pub use route::{egress_for, ifindex, interfaces};

use layout::{key as k, value as v};

/// Errors of setting up kernel forwarding or changing its flows.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("creating the BPF maps: {0}")]
    Map(#[source] io::Error),
    #[error("loading the BPF program: {0}")]
    Load(#[source] io::Error),
    #[error("attaching to interface {ifindex} (tcx ingress, Linux 6.6+): {source}")]
    Attach {
        ifindex: u32,
        #[source]
        source: io::Error,
    },
    #[error("flow map: {0}")]
    Flow(#[source] io::Error),
    #[error("bad program text: {0}")]
    Asm(#[from] asm::AsmError),
}

/// How a forwarded packet leaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Egress {
    /// The destination is this host: back in through loopback (`bpf_redirect`).
    Loopback(u32),
    /// Out of this interface, link-layer addresses from the neighbour table
    /// (`bpf_redirect_neigh`, which also resolves a gateway next hop).
    Neighbour(u32),
}

/// One direction of a relay session, as the program applies it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flow {
    /// The latched peer: only its packets are forwarded here.
    pub from: SocketAddrV4,
    /// Only this SSRC; another one goes to userspace (a new source to re-anchor).
    pub in_ssrc: u32,
    /// The other leg's RTP socket: the forwarded packet's source.
    pub out_src: SocketAddrV4,
    /// The other leg's peer.
    pub to: SocketAddrV4,
    pub out_ssrc: u32,
    pub seq_off: u16,
    pub ts_off: u32,
    /// Payload type out for each payload type in (7 bits each).
    pub pt_map: [u8; 128],
    pub egress: Egress,
}

/// What the program recorded for a flow.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlowCounters {
    pub packets: u64,
    pub bytes: u64,
    /// `CLOCK_MONOTONIC` nanoseconds of the last forwarded packet (0: none).
    pub last_ns: u64,
    /// Sequence number and timestamp of the last forwarded packet, as sent.
    pub last_seq: u16,
    pub last_ts: u32,
}

fn put(b: &mut [u8], off: i16, bytes: &[u8]) {
    let o = off as usize;
    b[o..o + bytes.len()].copy_from_slice(bytes);
}

fn get<const N: usize>(b: &[u8], off: i16) -> [u8; N] {
    let o = off as usize;
    let mut a = [0u8; N];
    a.copy_from_slice(&b[o..o + N]);
    a
}

/// The map key of packets arriving at `local`.
#[must_use]
pub fn key_bytes(local: SocketAddrV4) -> [u8; k::SIZE] {
    let mut b = [0u8; k::SIZE];
    put(&mut b, k::ADDR, &local.ip().octets());
    put(&mut b, k::PORT, &local.port().to_be_bytes());
    b
}

impl Flow {
    /// The map value, counters zero.
    #[must_use]
    pub fn to_bytes(&self) -> [u8; v::SIZE] {
        let mut b = [0u8; v::SIZE];
        put(&mut b, v::FROM_ADDR, &self.from.ip().octets());
        put(&mut b, v::FROM_PORT, &self.from.port().to_be_bytes());
        put(&mut b, v::OUT_PORT, &self.out_src.port().to_be_bytes());
        put(&mut b, v::IN_SSRC, &self.in_ssrc.to_be_bytes());
        put(&mut b, v::OUT_SSRC, &self.out_ssrc.to_be_bytes());
        put(&mut b, v::OUT_ADDR, &self.out_src.ip().octets());
        put(&mut b, v::TO_ADDR, &self.to.ip().octets());
        put(&mut b, v::TO_PORT, &self.to.port().to_be_bytes());
        put(&mut b, v::SEQ_OFF, &self.seq_off.to_ne_bytes());
        put(&mut b, v::TS_OFF, &self.ts_off.to_ne_bytes());
        let (ifindex, flags) = match self.egress {
            Egress::Loopback(i) => (i, 1u32),
            Egress::Neighbour(i) => (i, 0u32),
        };
        put(&mut b, v::IFINDEX, &ifindex.to_ne_bytes());
        put(&mut b, v::FLAGS, &flags.to_ne_bytes());
        let pt: Vec<u8> = self.pt_map.iter().map(|p| p & 0x7f).collect();
        put(&mut b, v::PT_MAP, &pt);
        b
    }
}

impl FlowCounters {
    fn from_bytes(b: &[u8]) -> FlowCounters {
        FlowCounters {
            packets: u64::from_ne_bytes(get(b, v::PACKETS)),
            bytes: u64::from_ne_bytes(get(b, v::BYTES)),
            last_ns: u64::from_ne_bytes(get(b, v::LAST_NS)),
            last_seq: u16::from_ne_bytes(get(b, v::LAST_SEQ)),
            last_ts: u32::from_ne_bytes(get(b, v::LAST_TS)),
        }
    }
}

/// The loaded program, its maps and its attachments.
pub struct Forwarder {
    flows: OwnedFd,
    stats: OwnedFd,
    prog: OwnedFd,
    links: Vec<(u32, OwnedFd)>,
    cpus: usize,
}

impl std::fmt::Debug for Forwarder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Forwarder")
            .field(
                "interfaces",
                &self.links.iter().map(|l| l.0).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl Forwarder {
    /// Creates the maps (room for `max_flows` flows) and loads the program; nothing is
    /// attached yet.
    pub fn load(max_flows: u32) -> Result<Forwarder, Error> {
        let flows = sys::map_create(
            sys::MAP_TYPE_HASH,
            k::SIZE as u32,
            v::SIZE as u32,
            max_flows.max(1),
            "vg_rtp_flows",
        )
        .map_err(Error::Map)?;
        let stats = sys::map_create(sys::MAP_TYPE_PERCPU_ARRAY, 4, 16, 1, "vg_rtp_stats")
            .map_err(Error::Map)?;
        let insns = prog::build(flows.as_raw_fd(), stats.as_raw_fd())?;
        let prog = sys::prog_load(
            sys::PROG_TYPE_SCHED_CLS,
            sys::ATTACH_TCX_INGRESS,
            &insns,
            "vg_rtp_fwd",
        )
        .map_err(Error::Load)?;
        Ok(Forwarder {
            flows,
            stats,
            prog,
            links: Vec::new(),
            cpus: sys::possible_cpus().map_err(Error::Map)?,
        })
    }

    /// Attaches the program to `ifindex`'s ingress, after any program already there.
    pub fn attach(&mut self, ifindex: u32) -> Result<(), Error> {
        if self.links.iter().any(|l| l.0 == ifindex) {
            return Ok(());
        }
        let link = sys::tcx_attach(&self.prog, ifindex, sys::ATTACH_TCX_INGRESS)
            .map_err(|source| Error::Attach { ifindex, source })?;
        self.links.push((ifindex, link));
        Ok(())
    }

    /// Interfaces the program is attached to.
    #[must_use]
    pub fn attached(&self) -> Vec<u32> {
        self.links.iter().map(|l| l.0).collect()
    }

    /// Installs (or replaces, counters reset) the flow of packets arriving at `local`.
    pub fn insert(&self, local: SocketAddrV4, flow: &Flow) -> Result<(), Error> {
        sys::map_update(&self.flows, &key_bytes(local), &flow.to_bytes()).map_err(Error::Flow)
    }

    /// What the program recorded for the flow at `local`, if one is installed.
    pub fn counters(&self, local: SocketAddrV4) -> Result<Option<FlowCounters>, Error> {
        let mut b = [0u8; v::SIZE];
        let found = sys::map_lookup(&self.flows, &key_bytes(local), &mut b).map_err(Error::Flow)?;
        Ok(found.then(|| FlowCounters::from_bytes(&b)))
    }

    /// Removes the flow at `local`, returning its last counters.
    pub fn remove(&self, local: SocketAddrV4) -> Result<Option<FlowCounters>, Error> {
        let c = self.counters(local)?;
        sys::map_delete(&self.flows, &key_bytes(local)).map_err(Error::Flow)?;
        Ok(c)
    }

    /// Packets and bytes forwarded by the program since it was loaded, all CPUs.
    pub fn totals(&self) -> Result<(u64, u64), Error> {
        let mut b = vec![0u8; 16 * self.cpus];
        sys::map_lookup(&self.stats, &0u32.to_ne_bytes(), &mut b).map_err(Error::Flow)?;
        let (mut p, mut n) = (0u64, 0u64);
        for c in b.chunks_exact(16) {
            p += u64::from_ne_bytes(get(c, 0));
            n += u64::from_ne_bytes(get(c, 8));
        }
        Ok((p, n))
    }

    /// Runs the program once on `frame` (an Ethernet frame) without attaching it:
    /// returns its verdict and the frame as it left it. For tests.
    pub fn test_run(&self, frame: &[u8]) -> Result<(i32, Vec<u8>), Error> {
        let (r, out) = sys::test_run(&self.prog, frame).map_err(Error::Load)?;
        Ok((r as i32, out))
    }
}

/// `CLOCK_MONOTONIC` now, in nanoseconds: the clock of [`FlowCounters::last_ns`] (and of
/// `std::time::Instant` on Linux).
#[must_use]
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64) * 1_000_000_000 + ts.tv_nsec as u64
}
