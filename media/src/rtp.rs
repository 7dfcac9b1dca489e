//! RTP fixed header view (RFC 3550 §5.1), smoltcp style: [`RtpPacket::new_checked`]
//! validates lengths once, then the accessors read and write the buffer in place.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |V=2|P|X|  CC   |M|     PT      |       sequence number         |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                           timestamp                           |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |           synchronization source (SSRC) identifier            |
//! +=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+
//! |            contributing source (CSRC) identifiers             |
//! |                             ....                              |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```

use thiserror::Error;

/// Length of the fixed RTP header (RFC 3550 §5.1).
pub const HEADER_LEN: usize = 12;

/// Synchronization source identifier (RFC 3550 §5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ssrc(pub u32);

/// RTP sequence number; arithmetic on it wraps (RFC 3550 §5.1, §A.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SeqNo(pub u16);

impl SeqNo {
    /// `self + n`, wrapping at 2^16.
    #[must_use]
    pub fn wrapping_add(self, n: u16) -> SeqNo {
        SeqNo(self.0.wrapping_add(n))
    }
}

/// RTP media timestamp in the payload's clock (RFC 3550 §5.1); wraps at 2^32.
/// Kept apart from wall-clock time and from other streams' clocks by its type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RtpTimestamp(pub u32);

impl RtpTimestamp {
    /// `self + n` ticks, wrapping at 2^32.
    #[must_use]
    pub fn wrapping_add(self, n: u32) -> RtpTimestamp {
        RtpTimestamp(self.0.wrapping_add(n))
    }
}

/// Why a datagram is not an RTP packet we can relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum RtpError {
    #[error("shorter than the RTP fixed header")]
    TooShort,
    #[error("RTP version is {0}, not 2")]
    BadVersion(u8),
    #[error("CSRC list runs past the end of the datagram")]
    CsrcOverrun,
    #[error("header extension runs past the end of the datagram")]
    ExtensionOverrun,
    #[error("padding count is zero or runs into the header")]
    BadPadding,
}

/// A borrowed view of an RTP packet. `T` is `&[u8]` to read, `&mut [u8]` to rewrite.
#[derive(Debug)]
pub struct RtpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> RtpPacket<T> {
    /// Wraps a buffer without any check. Accessors may panic on a short buffer; use
    /// [`RtpPacket::new_checked`] for anything that came from the network.
    pub fn new_unchecked(buffer: T) -> RtpPacket<T> {
        RtpPacket { buffer }
    }

    /// Wraps and validates: version 2, the CSRC list, the header extension (RFC 3550
    /// §5.3.1) and the padding (RFC 3550 §5.1 "P") all fit inside the buffer.
    pub fn new_checked(buffer: T) -> Result<RtpPacket<T>, RtpError> {
        let p = RtpPacket { buffer };
        p.check()?;
        Ok(p)
    }

    fn check(&self) -> Result<(), RtpError> {
        let b = self.buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(RtpError::TooShort);
        }
        let version = b[0] >> 6;
        if version != 2 {
            return Err(RtpError::BadVersion(version));
        }
        let mut hdr = HEADER_LEN + 4 * usize::from(b[0] & 0x0f);
        if hdr > b.len() {
            return Err(RtpError::CsrcOverrun);
        }
        if b[0] & 0x10 != 0 {
            // RFC 3550 §5.3.1: 16-bit profile field, 16-bit length in 32-bit words,
            // not counting the 4-byte extension header itself.
            let ext = b.get(hdr..hdr + 4).ok_or(RtpError::ExtensionOverrun)?;
            let words = usize::from(u16::from_be_bytes([ext[2], ext[3]]));
            hdr += 4 + 4 * words;
            if hdr > b.len() {
                return Err(RtpError::ExtensionOverrun);
            }
        }
        if b[0] & 0x20 != 0 {
            // RFC 3550 §5.1: the last octet counts the padding octets, itself included.
            let pad = usize::from(b[b.len() - 1]);
            if pad == 0 || hdr + pad > b.len() {
                return Err(RtpError::BadPadding);
            }
        }
        Ok(())
    }

    /// Consumes the view, returning the buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[0] >> 6
    }
    pub fn padding(&self) -> bool {
        self.buffer.as_ref()[0] & 0x20 != 0
    }
    pub fn extension(&self) -> bool {
        self.buffer.as_ref()[0] & 0x10 != 0
    }
    pub fn csrc_count(&self) -> u8 {
        self.buffer.as_ref()[0] & 0x0f
    }
    pub fn marker(&self) -> bool {
        self.buffer.as_ref()[1] & 0x80 != 0
    }
    pub fn payload_type(&self) -> u8 {
        self.buffer.as_ref()[1] & 0x7f
    }
    pub fn seq(&self) -> SeqNo {
        let b = self.buffer.as_ref();
        SeqNo(u16::from_be_bytes([b[2], b[3]]))
    }
    pub fn timestamp(&self) -> RtpTimestamp {
        let b = self.buffer.as_ref();
        RtpTimestamp(u32::from_be_bytes([b[4], b[5], b[6], b[7]]))
    }
    pub fn ssrc(&self) -> Ssrc {
        let b = self.buffer.as_ref();
        Ssrc(u32::from_be_bytes([b[8], b[9], b[10], b[11]]))
    }

    /// Offset of the payload: after the CSRC list and header extension.
    pub fn header_len(&self) -> usize {
        let b = self.buffer.as_ref();
        let mut hdr = HEADER_LEN + 4 * usize::from(self.csrc_count());
        if self.extension() {
            hdr += 4 + 4 * usize::from(u16::from_be_bytes([b[hdr + 2], b[hdr + 3]]));
        }
        hdr
    }

    /// The payload, without padding.
    pub fn payload(&self) -> &[u8] {
        let b = self.buffer.as_ref();
        let end = if self.padding() {
            b.len() - usize::from(b[b.len() - 1])
        } else {
            b.len()
        };
        &b[self.header_len()..end]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> RtpPacket<T> {
    pub fn set_marker(&mut self, m: bool) {
        let b = &mut self.buffer.as_mut()[1];
        *b = (*b & 0x7f) | if m { 0x80 } else { 0 };
    }
    /// Sets the 7-bit payload type; the top bit (marker) is kept.
    pub fn set_payload_type(&mut self, pt: u8) {
        let b = &mut self.buffer.as_mut()[1];
        *b = (*b & 0x80) | (pt & 0x7f);
    }
    pub fn set_seq(&mut self, seq: SeqNo) {
        self.buffer.as_mut()[2..4].copy_from_slice(&seq.0.to_be_bytes());
    }
    pub fn set_timestamp(&mut self, ts: RtpTimestamp) {
        self.buffer.as_mut()[4..8].copy_from_slice(&ts.0.to_be_bytes());
    }
    pub fn set_ssrc(&mut self, ssrc: Ssrc) {
        self.buffer.as_mut()[8..12].copy_from_slice(&ssrc.0.to_be_bytes());
    }
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let hdr = self.header_len();
        let b = self.buffer.as_mut();
        let end = if b[0] & 0x20 != 0 {
            b.len() - usize::from(b[b.len() - 1])
        } else {
            b.len()
        };
        &mut b[hdr..end]
    }
}

/// Writes a minimal RTP header (no CSRC, no extension) into `buf[..12]`; for tests,
/// generators and players. Returns `None` if `buf` is shorter than the header.
pub fn write_header(
    buf: &mut [u8],
    pt: u8,
    marker: bool,
    seq: SeqNo,
    ts: RtpTimestamp,
    ssrc: Ssrc,
) -> Option<()> {
    let h = buf.get_mut(..HEADER_LEN)?;
    h[0] = 0x80;
    h[1] = (pt & 0x7f) | if marker { 0x80 } else { 0 };
    h[2..4].copy_from_slice(&seq.0.to_be_bytes());
    h[4..8].copy_from_slice(&ts.0.to_be_bytes());
    h[8..12].copy_from_slice(&ssrc.0.to_be_bytes());
    Some(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn pkt(payload: usize) -> Vec<u8> {
        let mut v = vec![0u8; HEADER_LEN + payload];
        write_header(
            &mut v,
            0,
            true,
            SeqNo(0x1234),
            RtpTimestamp(0xdead_beef),
            Ssrc(0x0102_0304),
        )
        .unwrap();
        v
    }

    #[test]
    fn reads_fixed_header() {
        let v = pkt(160);
        let p = RtpPacket::new_checked(&v[..]).unwrap();
        assert_eq!(p.version(), 2);
        assert!(p.marker());
        assert_eq!(p.payload_type(), 0);
        assert_eq!(p.seq(), SeqNo(0x1234));
        assert_eq!(p.timestamp(), RtpTimestamp(0xdead_beef));
        assert_eq!(p.ssrc(), Ssrc(0x0102_0304));
        assert_eq!(p.header_len(), 12);
        assert_eq!(p.payload().len(), 160);
    }

    #[test]
    fn setters_rewrite_in_place() {
        let mut v = pkt(4);
        let mut p = RtpPacket::new_checked(&mut v[..]).unwrap();
        p.set_payload_type(8);
        p.set_marker(false);
        p.set_seq(SeqNo(7));
        p.set_timestamp(RtpTimestamp(160));
        p.set_ssrc(Ssrc(42));
        p.payload_mut().copy_from_slice(b"abcd");
        assert_eq!(p.payload_type(), 8);
        assert!(!p.marker());
        p.set_marker(true);
        assert_eq!(p.payload_type(), 8, "marker must not touch PT");
        assert_eq!(p.seq(), SeqNo(7));
        assert_eq!(p.timestamp(), RtpTimestamp(160));
        assert_eq!(p.ssrc(), Ssrc(42));
        assert_eq!(&v[12..], b"abcd");
        assert_eq!(v[1], 0x88);
    }

    #[test]
    fn rejects_short_and_bad_version() {
        assert_eq!(
            RtpPacket::new_checked(&[0x80u8; 11][..]).unwrap_err(),
            RtpError::TooShort
        );
        let mut v = pkt(0);
        v[0] = 0x40;
        assert_eq!(
            RtpPacket::new_checked(&v[..]).unwrap_err(),
            RtpError::BadVersion(1)
        );
        // A header-only packet (no payload) is valid RTP.
        assert!(RtpPacket::new_checked(&pkt(0)[..]).is_ok());
    }

    #[test]
    fn csrc_list_must_fit() {
        let mut v = pkt(8);
        v[0] |= 2; // two CSRCs = 8 bytes: fits exactly
        let p = RtpPacket::new_checked(&v[..]).unwrap();
        assert_eq!(p.header_len(), 20);
        assert!(p.payload().is_empty());
        v[0] |= 3;
        assert_eq!(
            RtpPacket::new_checked(&v[..]).unwrap_err(),
            RtpError::CsrcOverrun
        );
    }

    #[test]
    fn extension_must_fit() {
        let mut v = pkt(0);
        v[0] |= 0x10;
        assert_eq!(
            RtpPacket::new_checked(&v[..]).unwrap_err(),
            RtpError::ExtensionOverrun
        );
        v.extend_from_slice(&[0xbe, 0xde, 0, 1]); // one word of extension
        assert_eq!(
            RtpPacket::new_checked(&v[..]).unwrap_err(),
            RtpError::ExtensionOverrun
        );
        v.extend_from_slice(&[1, 2, 3, 4, 9, 9]);
        let p = RtpPacket::new_checked(&v[..]).unwrap();
        assert_eq!(p.header_len(), 20);
        assert_eq!(p.payload(), &[9, 9]);
    }

    #[test]
    fn padding_is_checked_and_stripped() {
        let mut v = pkt(4);
        v[0] |= 0x20;
        v[15] = 0;
        assert_eq!(
            RtpPacket::new_checked(&v[..]).unwrap_err(),
            RtpError::BadPadding
        );
        v[15] = 5; // more than the 4 payload octets
        assert_eq!(
            RtpPacket::new_checked(&v[..]).unwrap_err(),
            RtpError::BadPadding
        );
        v[15] = 2;
        let p = RtpPacket::new_checked(&v[..]).unwrap();
        assert_eq!(p.payload().len(), 2);
    }

    #[test]
    fn wrapping_newtypes() {
        assert_eq!(SeqNo(65535).wrapping_add(2), SeqNo(1));
        assert_eq!(RtpTimestamp(u32::MAX).wrapping_add(160), RtpTimestamp(159));
    }
}
