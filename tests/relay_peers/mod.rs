//! Loopback parties of a relay session, shared by tests/media_relay.rs and
//! tests/kernel_relay.rs.

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use voxgate::media::{LegRemote, MediaEngine, Session, Side};

pub const WAIT: Duration = Duration::from_secs(3);

/// A party's RTP socket on 127.0.0.1, reads bounded by [`WAIT`].
pub fn peer() -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    s
}

pub fn addr(s: &UdpSocket) -> SocketAddr {
    s.local_addr().unwrap()
}

/// A leg's remote as its SDP would give it.
pub fn remote(rtp: SocketAddr) -> LegRemote {
    LegRemote {
        rtp: Some(rtp),
        ..LegRemote::default()
    }
}

/// Receives one datagram (blocking up to [`WAIT`]), returning it and its source.
pub fn recv(s: &UdpSocket) -> (Vec<u8>, SocketAddr) {
    let mut b = [0u8; 2048];
    let (n, src) = s
        .recv_from(&mut b)
        .expect("nothing received within the timeout");
    (b[..n].to_vec(), src)
}

/// A session whose two parties answered with their real addresses.
pub fn call(e: &MediaEngine) -> (Session, UdpSocket, UdpSocket) {
    let s = e.create_session().unwrap();
    let (pa, pb) = (peer(), peer());
    e.update_leg(s.id, Side::A, remote(addr(&pa))).unwrap();
    e.update_leg(s.id, Side::B, remote(addr(&pb))).unwrap();
    (s, pa, pb)
}
