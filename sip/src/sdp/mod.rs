//! SDP (RFC 8866) and RFC 3264 offer/answer for voxgate's B2BUA audio bridge.
//!
//! - [`SessionDescription::parse`] reads a body defensively into an owned model (SDP is per
//!   call, not per packet); `Display` writes canonical CRLF SDP. Known attributes are typed,
//!   all others kept verbatim in [`Attribute::Other`].
//! - [`forward_offer`] turns the offer of one leg into voxgate's offer on the other leg;
//!   [`PendingOffer::answer`] turns that leg's answer into the answer to the offerer and
//!   records each leg's [`LegMedia`]: where to send (before latching), direction, and
//!   payload-type maps, from which [`PtTranslation`] builds the relay's per-leg table.
//! - Errors say which line and field ([`ParseError`]) or which rule ([`NegotiationError`]);
//!   both have `sip_status()` (400 or 488).
//!
//! The same two calls serve re-INVITEs (hold, resume, codec change) in either direction:
//! pass the legs' [`LegSdp`] back in and the `o=` versions and payload types stay right.
//!
//! ```
//! use std::net::{IpAddr, Ipv4Addr};
//! use voxgate_sip::sdp::{
//!     forward_offer, Direction, LegSdp, LocalMedia, LocalSession, PtTranslation, SdpConfig,
//!     SessionDescription,
//! };
//!
//! let cfg = SdpConfig::default(); // PCMU, PCMA, telephone-event
//! let ip = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 10));
//! // The engine keeps one LegSdp per leg, with voxgate's RTP port on that leg.
//! let mut leg_a = LegSdp::new(LocalSession::new(1001), LocalMedia { address: ip, rtp_port: 20000 });
//! let mut leg_b = LegSdp::new(LocalSession::new(2002), LocalMedia { address: ip, rtp_port: 20002 });
//!
//! // INVITE from A (a softphone): PCMA first, telephone-event on 101, and video.
//! let offer_a: SessionDescription = "v=0\r\no=alice 1 1 IN IP4 192.0.2.5\r\ns=-\r\n\
//!     c=IN IP4 192.0.2.5\r\nt=0 0\r\nm=audio 4000 RTP/AVP 8 0 101\r\n\
//!     a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=ptime:20\r\n\
//!     m=video 4002 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n"
//!     .parse()?;
//! let (offer_b, pending) = forward_offer(&cfg, &offer_a, &mut leg_b)?;
//! assert_eq!(offer_b.media.len(), 1); // audio only, on voxgate's address and port
//! assert_eq!(offer_b.media[0].port, 20002);
//! // ... send `offer_b.to_string()` in the INVITE to B; B answers in its 200 OK,
//! // renumbering telephone-event to 96:
//! let answer_b: SessionDescription = "v=0\r\no=bob 7 7 IN IP4 198.51.100.7\r\ns=-\r\n\
//!     c=IN IP4 198.51.100.7\r\nt=0 0\r\nm=audio 30000 RTP/AVP 8 96\r\n\
//!     a=rtpmap:96 telephone-event/8000\r\na=fmtp:96 0-15\r\n"
//!     .parse()?;
//! let answer_a = pending.answer(&cfg, &answer_b, &mut leg_b, &mut leg_a)?;
//! assert_eq!(answer_a.media.len(), 2); // video rejected with port 0 (RFC 3264 §6)
//! assert_eq!(answer_a.media[1].port, 0);
//! assert_eq!(answer_a.media[0].formats, ["8", "101"]); // A's own numbers
//!
//! // The relay: where to send, and how to rewrite payload types.
//! let (a, b) = (leg_a.media.as_ref().unwrap(), leg_b.media.as_ref().unwrap());
//! assert_eq!(b.remote.unwrap().rtp.to_string(), "198.51.100.7:30000");
//! assert_eq!(b.remote.unwrap().rtcp.port(), 30001);
//! assert_eq!(PtTranslation::new(a, b).get(101), Some(96));
//! assert_eq!(b.direction, Direction::SendRecv);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod codec;
mod model;
mod negotiate;
mod parse;

#[cfg(test)]
mod tests;

pub use codec::Codec;
pub use model::{
    AddrType, Attribute, Bandwidth, Connection, ConnectionAddress, Direction, MediaDescription,
    MediaType, Origin, PacketTime, Proto, Rtpmap, SessionDescription, Timing,
};
pub use negotiate::{
    answer_offer, create_offer, forward_offer, LegMedia, LegSdp, LocalMedia, LocalSession,
    NegotiationError, PayloadMap, PendingOffer, PtTranslation, RemoteMedia, SdpConfig,
};
pub use parse::{Field, LineError, ParseError};
