//! RTCP: telling RTCP from RTP on a multiplexed port (RFC 5761 §4) and a light check of
//! a compound packet (RFC 3550 §6.1, relaxed for RFC 5506 reduced-size RTCP) before it
//! is relayed. The relay forwards RTCP unchanged; it only refuses garbage.

use thiserror::Error;

/// Why a datagram is not RTCP we relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum RtcpError {
    #[error("shorter than an RTCP header")]
    TooShort,
    #[error("RTCP version is {0}, not 2")]
    BadVersion(u8),
    #[error("packet type {0} is not RTCP (200..=206)")]
    NotRtcp(u8),
    #[error("an RTCP length field runs past the end of the datagram")]
    LengthOverrun,
}

/// RFC 5761 §4: with rtcp-mux, the second octet tells RTP from RTCP. RTCP packet types
/// 200..=206 (SR, RR, SDES, BYE, APP, RTPFB, PSFB) land on 72..=78 when read as an RTP
/// marker+PT octet, which RFC 5761 keeps free of dynamic RTP payload types; we test the
/// known RTCP range rather than all of 192..=223 so that a stray RTP PT 64..=71 or
/// 79..=95 (reserved, but seen in the wild) is still treated as RTP.
#[must_use]
pub fn is_rtcp(datagram: &[u8]) -> bool {
    datagram.len() >= 8 && (200..=206).contains(&datagram[1])
}

/// A validated compound RTCP datagram (borrowed).
#[derive(Debug, Clone, Copy)]
pub struct RtcpCompound<'a> {
    bytes: &'a [u8],
    packets: usize,
}

impl<'a> RtcpCompound<'a> {
    /// Checks that every packet in the compound has version 2, an RTCP packet type
    /// and a length that tiles the datagram exactly (RFC 3550 §6.4.1 "length":
    /// 32-bit words minus one). Only the first packet's type must be in 200..=206;
    /// later ones may be other (future) types, which we pass on.
    pub fn new_checked(bytes: &'a [u8]) -> Result<RtcpCompound<'a>, RtcpError> {
        let mut off = 0;
        let mut packets = 0;
        while off < bytes.len() {
            let h = bytes.get(off..off + 4).ok_or(RtcpError::TooShort)?;
            let version = h[0] >> 6;
            if version != 2 {
                return Err(RtcpError::BadVersion(version));
            }
            if packets == 0 && !(200..=206).contains(&h[1]) {
                return Err(RtcpError::NotRtcp(h[1]));
            }
            let len = 4 * (usize::from(u16::from_be_bytes([h[2], h[3]])) + 1);
            off += len;
            if off > bytes.len() {
                return Err(RtcpError::LengthOverrun);
            }
            packets += 1;
        }
        if packets == 0 {
            return Err(RtcpError::TooShort);
        }
        Ok(RtcpCompound { bytes, packets })
    }

    /// Number of RTCP packets in the compound.
    pub fn len(&self) -> usize {
        self.packets
    }
    /// Always false: a checked compound holds at least one packet.
    pub fn is_empty(&self) -> bool {
        self.packets == 0
    }
    /// Packet type of the first packet (SR = 200, RR = 201, …).
    pub fn first_type(&self) -> u8 {
        self.bytes[1]
    }
    /// SSRC of the sender of the first packet (RFC 3550 §6.4.1), when present.
    pub fn sender_ssrc(&self) -> Option<u32> {
        let b = self.bytes.get(4..8)?;
        Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    pub fn as_bytes(&self) -> &'a [u8] {
        self.bytes
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// An empty RR (RC=0): header + sender SSRC = 8 bytes, length field 1.
    fn rr(ssrc: u32) -> Vec<u8> {
        let mut v = vec![0x80, 201, 0, 1];
        v.extend_from_slice(&ssrc.to_be_bytes());
        v
    }
    /// An SDES with one chunk (SSRC + CNAME "ab" + end + pad): 12 bytes, length 2.
    fn sdes(ssrc: u32) -> Vec<u8> {
        let mut v = vec![0x81, 202, 0, 2];
        v.extend_from_slice(&ssrc.to_be_bytes());
        v.extend_from_slice(&[1, 2, b'a', b'b']);
        v
    }

    #[test]
    fn compound_rr_sdes() {
        let mut v = rr(7);
        v.extend(sdes(7));
        let c = RtcpCompound::new_checked(&v).unwrap();
        assert_eq!(c.len(), 2);
        assert_eq!(c.first_type(), 201);
        assert_eq!(c.sender_ssrc(), Some(7));
        assert!(is_rtcp(&v));
    }

    #[test]
    fn rejects_bad_compounds() {
        assert_eq!(
            RtcpCompound::new_checked(&[]).unwrap_err(),
            RtcpError::TooShort
        );
        let mut v = rr(1);
        v[0] = 0x40;
        assert_eq!(
            RtcpCompound::new_checked(&v).unwrap_err(),
            RtcpError::BadVersion(1)
        );
        let mut v = rr(1);
        v[3] = 2;
        assert_eq!(
            RtcpCompound::new_checked(&v).unwrap_err(),
            RtcpError::LengthOverrun
        );
        let mut v = rr(1);
        v[1] = 96;
        assert_eq!(
            RtcpCompound::new_checked(&v).unwrap_err(),
            RtcpError::NotRtcp(96)
        );
        let mut v = rr(1);
        v.extend_from_slice(&[0x80, 202]); // trailing half header
        assert_eq!(
            RtcpCompound::new_checked(&v).unwrap_err(),
            RtcpError::TooShort
        );
    }

    #[test]
    fn demux_rtp_from_rtcp() {
        // RFC 5761 §4: PCMU (PT 0) with and without marker, dynamic PT 96/111 are RTP.
        for second in [0u8, 0x80, 8, 96, 111, 0x80 | 101] {
            let mut v = vec![0x80, second];
            v.resize(12, 0);
            assert!(!is_rtcp(&v), "{second} taken for RTCP");
        }
        for pt in 200u8..=206 {
            let mut v = vec![0x80, pt];
            v.resize(8, 0);
            assert!(is_rtcp(&v), "{pt} not taken for RTCP");
        }
        assert!(!is_rtcp(&[0x80, 200, 0]), "too short to be RTCP");
    }
}
