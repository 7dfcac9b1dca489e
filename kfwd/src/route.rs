//! Which interface a forwarded packet leaves by: one route lookup per flow install
//! (rtnetlink `RTM_GETROUTE`, what `ip route get` does), never per packet.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use crate::Egress;

const RTM_GETROUTE: u16 = 26;
const RTM_NEWROUTE: u16 = 24;
const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 1;
const RTA_DST: u16 = 1;
const RTA_OIF: u16 = 4;
const RTN_LOCAL: u8 = 2;
const NLMSG_HDR: usize = 16;
const RTMSG: usize = 12;

/// Index of interface `name` (`/sys/class/net/<name>/ifindex`).
pub fn ifindex(name: &str) -> io::Result<u32> {
    let s = std::fs::read_to_string(format!("/sys/class/net/{name}/ifindex"))?;
    s.trim().parse().map_err(io::Error::other)
}

/// Every interface of this network namespace, as (name, index).
pub fn interfaces() -> io::Result<Vec<(String, u32)>> {
    let mut v = Vec::new();
    for e in std::fs::read_dir("/sys/class/net")? {
        let name = e?.file_name().to_string_lossy().into_owned();
        if let Ok(i) = ifindex(&name) {
            v.push((name, i));
        }
    }
    v.sort_by_key(|x| x.1);
    Ok(v)
}

/// How a packet to `dst` leaves this host: loopback for a local address, else the
/// route's output interface.
pub fn egress_for(dst: Ipv4Addr) -> io::Result<Egress> {
    // SAFETY: plain socket(2); the result is checked and owned below.
    let raw = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            libc::NETLINK_ROUTE,
        )
    };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a new descriptor nobody else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(raw) };
    let mut req = [0u8; NLMSG_HDR + RTMSG + 8];
    let len = req.len() as u32;
    req[0..4].copy_from_slice(&len.to_ne_bytes());
    req[4..6].copy_from_slice(&RTM_GETROUTE.to_ne_bytes());
    req[6..8].copy_from_slice(&NLM_F_REQUEST.to_ne_bytes());
    req[8..12].copy_from_slice(&1u32.to_ne_bytes());
    let r = NLMSG_HDR;
    req[r] = libc::AF_INET as u8; // rtm_family
    req[r + 1] = 32; // rtm_dst_len
    let a = NLMSG_HDR + RTMSG;
    req[a..a + 2].copy_from_slice(&8u16.to_ne_bytes());
    req[a + 2..a + 4].copy_from_slice(&RTA_DST.to_ne_bytes());
    req[a + 4..a + 8].copy_from_slice(&dst.octets());
    // SAFETY: `req` is a live buffer of `req.len()` bytes.
    let n = unsafe { libc::send(sock.as_raw_fd(), req.as_ptr().cast(), req.len(), 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut buf = vec![0u8; 8192];
    // SAFETY: `buf` is a live, writable buffer of `buf.len()` bytes.
    let n = unsafe { libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    parse_route(&buf[..n as usize])
}

fn parse_route(msg: &[u8]) -> io::Result<Egress> {
    let bad = || io::Error::other("short rtnetlink reply");
    let h = msg.get(..NLMSG_HDR).ok_or_else(bad)?;
    let ty = u16::from_ne_bytes([h[4], h[5]]);
    if ty == NLMSG_ERROR {
        let e = msg.get(NLMSG_HDR..NLMSG_HDR + 4).ok_or_else(bad)?;
        let errno = -i32::from_ne_bytes([e[0], e[1], e[2], e[3]]);
        return Err(io::Error::from_raw_os_error(errno));
    }
    if ty != RTM_NEWROUTE {
        return Err(io::Error::other(format!("unexpected rtnetlink reply {ty}")));
    }
    let total = (u32::from_ne_bytes([h[0], h[1], h[2], h[3]]) as usize).min(msg.len());
    let rtm = msg.get(NLMSG_HDR..NLMSG_HDR + RTMSG).ok_or_else(bad)?;
    let local = rtm[7] == RTN_LOCAL;
    let mut at = NLMSG_HDR + RTMSG;
    let mut oif = None;
    while at + 4 <= total {
        let alen = usize::from(u16::from_ne_bytes([msg[at], msg[at + 1]]));
        let aty = u16::from_ne_bytes([msg[at + 2], msg[at + 3]]);
        if alen < 4 || at + alen > total {
            break;
        }
        if aty == RTA_OIF && alen >= 8 {
            oif = Some(u32::from_ne_bytes([
                msg[at + 4],
                msg[at + 5],
                msg[at + 6],
                msg[at + 7],
            ]));
        }
        at += (alen + 3) & !3;
    }
    let oif = oif.ok_or_else(|| io::Error::other("route has no output interface"))?;
    Ok(if local {
        Egress::Loopback(oif)
    } else {
        Egress::Neighbour(oif)
    })
}
