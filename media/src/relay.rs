//! The relay's per-leg policy and the forward decision, without I/O.
//!
//! A session has two legs, A and B. A datagram arriving on leg X's port from X's peer
//! is checked against X (source latch, may X's peer send?) and rewritten for the other
//! leg Y (may Y's peer receive? payload-type map, continuous SSRC/seq/ts), then the
//! driver sends it from Y's port to [`Route::Forward`]'s address. Everything works in
//! place on the receive buffer: no allocation per packet.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::latch::{Latch, LatchMode, LatchVerdict};
use crate::rewrite::{ClockRate, PtMap, Rewriter};
use crate::rtcp::{is_rtcp, RtcpCompound};
use crate::rtp::{RtpPacket, RtpTimestamp, SeqNo, Ssrc};
use crate::transcode::{Pushed, TranscodeSpec, TranscodeStats, Transcoder};

/// SDP direction of a leg's remote (RFC 3264 §5.1, §6.1), from the relay's view of that
/// remote: `SendOnly` means the remote sends to us and wants nothing back (it put us on
/// hold), `RecvOnly` means it only receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MediaDirection {
    #[default]
    SendRecv,
    SendOnly,
    RecvOnly,
    Inactive,
}

impl MediaDirection {
    /// May this leg's remote send media to us?
    #[must_use]
    pub fn remote_sends(self) -> bool {
        matches!(self, MediaDirection::SendRecv | MediaDirection::SendOnly)
    }
    /// May we send media to this leg's remote?
    #[must_use]
    pub fn remote_receives(self) -> bool {
        matches!(self, MediaDirection::SendRecv | MediaDirection::RecvOnly)
    }
}

/// Why a datagram was not forwarded. Each is a separate counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// Not valid RTP (or RTCP on an RTCP port).
    Malformed,
    /// From a source other than the latched one.
    UnexpectedSource,
    /// The sending leg's direction says its remote does not send (inactive/recvonly).
    NotSending,
    /// The receiving leg's direction says its remote does not receive (on hold).
    NotReceiving,
    /// Nowhere to send yet: no SDP address and nothing latched on the other leg.
    NoDestination,
    /// Headed for a transcoder that cannot take it: a payload type the legs did not
    /// negotiate, a late packet, or one the codec cannot decode.
    NotTranscodable,
}

impl DropReason {
    pub const ALL: [DropReason; 6] = [
        DropReason::Malformed,
        DropReason::UnexpectedSource,
        DropReason::NotSending,
        DropReason::NotReceiving,
        DropReason::NoDestination,
        DropReason::NotTranscodable,
    ];

    /// Label for the `result` of `voxgate_rtp_packets_total`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::Malformed => "malformed",
            DropReason::UnexpectedSource => "unexpected_source",
            DropReason::NotSending => "not_sending",
            DropReason::NotReceiving => "not_receiving",
            DropReason::NoDestination => "no_destination",
            DropReason::NotTranscodable => "not_transcodable",
        }
    }
}

/// What to do with a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// Send the (rewritten) buffer from the other leg's RTP port to this address.
    Forward(SocketAddr),
    /// Send it unchanged from the other leg's RTCP port (its RTP port under rtcp-mux)
    /// to this address.
    ForwardRtcp {
        to: SocketAddr,
        mux: bool,
    },
    Drop(DropReason),
    /// The receiving leg hears a source voxgate plays into it (a prompt, DTMF, a tone),
    /// which replaces what the sending leg relays: not sent. The sending leg was still
    /// latched and checked, so the driver still copies the packet to its listeners
    /// (the recorder and DTMF detector of the sending leg go on hearing it).
    Replaced,
    /// The receiving leg negotiated no codec the sending leg did: the packet went into
    /// the receiving leg's transcoder. Send what [`LegPolicy::pop_transcoded`] gives,
    /// from the other leg's RTP port, to this address.
    Transcoded(SocketAddr),
}

/// What the signalling told us about one leg's remote.
#[derive(Debug, Clone, Default)]
pub struct LegRemote {
    /// `c=`/`m=` address of the remote's RTP.
    pub rtp: Option<SocketAddr>,
    /// `a=rtcp:` address, else RTP port + 1 (RFC 3605, RFC 3550 §11); ignored with mux.
    pub rtcp: Option<SocketAddr>,
    /// `a=rtcp-mux` agreed (RFC 5761 §5.1.1): RTCP shares the RTP port both ways.
    pub rtcp_mux: bool,
    /// PT translation for packets going *out* of this leg.
    pub pt_out: PtMap,
    /// Clock rate of the codec sent out of this leg (for timestamp gaps on a switch).
    pub clock: Option<ClockRate>,
    pub direction: MediaDirection,
    pub latch: LatchMode,
    /// Re-latch to a new source after this much silence from the latched one.
    pub relatch_after: Option<Duration>,
    /// The audio sent to this leg is transcoded (the legs share no codec).
    pub transcode: Option<TranscodeSpec>,
}

/// Per-leg relay state.
#[derive(Debug)]
pub struct LegPolicy {
    rtp: Latch,
    rtcp: Latch,
    rtcp_mux: bool,
    direction: MediaDirection,
    pt_out: PtMap,
    clock: ClockRate,
    /// Continuity of the stream going out of this leg.
    out: Rewriter,
    /// A source voxgate plays into this leg replaces the relayed stream.
    local_source: bool,
    /// Transcodes what the other leg sends into this leg's codec, when they share none.
    transcoder: Option<Box<Transcoder>>,
    transcode: Option<TranscodeSpec>,
    /// Transcoders made so far: each numbers its packets with a new SSRC, so the
    /// rewriter sees a new source even when one replaces another.
    transcoders: u32,
}

impl Default for LegPolicy {
    fn default() -> Self {
        LegPolicy::new(&LegRemote::default())
    }
}

impl LegPolicy {
    #[must_use]
    pub fn new(remote: &LegRemote) -> LegPolicy {
        let mut p = LegPolicy {
            rtp: Latch::new(remote.latch, None, remote.relatch_after),
            rtcp: Latch::new(remote.latch, None, remote.relatch_after),
            rtcp_mux: false,
            direction: MediaDirection::SendRecv,
            pt_out: PtMap::identity(),
            clock: ClockRate::G711,
            out: Rewriter::new(),
            local_source: false,
            transcoder: None,
            transcode: None,
            transcoders: 0,
        };
        p.update(remote);
        p
    }

    /// Applies new signalling (offer/answer, re-INVITE). A changed remote address
    /// resets the latches and tells the *other* leg's rewriter (via the return value)
    /// that the source of its stream changed.
    pub fn update(&mut self, remote: &LegRemote) -> bool {
        let moved = remote.rtp != self.rtp.sdp();
        self.rtp.configure(remote.latch, remote.relatch_after);
        self.rtcp.configure(remote.latch, remote.relatch_after);
        self.rtp.set_remote(remote.rtp);
        let rtcp = if remote.rtcp_mux {
            remote.rtp
        } else {
            remote.rtcp.or_else(|| {
                remote
                    .rtp
                    .map(|a| SocketAddr::new(a.ip(), a.port().wrapping_add(1)))
            })
        };
        self.rtcp.set_remote(rtcp);
        self.rtcp_mux = remote.rtcp_mux;
        self.direction = remote.direction;
        self.pt_out = remote.pt_out.clone();
        if let Some(c) = remote.clock {
            self.clock = c;
        }
        if remote.transcode != self.transcode {
            self.transcode.clone_from(&remote.transcode);
            self.transcoders = self.transcoders.wrapping_add(1);
            let n = self.transcoders;
            // A spec naming a codec we cannot make leaves the direction silent rather
            // than relaying packets the leg cannot decode.
            self.transcoder = remote.transcode.as_ref().and_then(|spec| {
                let ssrc = Ssrc(0x766f_7800 ^ n);
                Transcoder::new(spec, ssrc, SeqNo(0), RtpTimestamp(0))
                    .ok()
                    .map(Box::new)
            });
            self.out.source_changed();
        }
        moved
    }

    /// Whether the audio sent to this leg is transcoded (it never goes to the kernel).
    #[must_use]
    pub fn transcodes(&self) -> bool {
        self.transcode.is_some()
    }

    /// The transcoder's counters, if this leg has one.
    #[must_use]
    pub fn transcode_stats(&self) -> Option<TranscodeStats> {
        self.transcoder.as_ref().map(|t| t.stats())
    }

    /// After [`Route::Transcoded`]: writes the next transcoded packet for this leg into
    /// `out`, spliced into the leg's outgoing stream, and returns its length; call until
    /// `None`.
    pub fn pop_transcoded(&mut self, out: &mut [u8], now: Instant) -> Option<usize> {
        let len = self.transcoder.as_mut()?.pop(out)?;
        let mut pkt = RtpPacket::new_checked(out.get_mut(..len)?).ok()?;
        self.out.rewrite(&mut pkt, self.clock, now);
        Some(len)
    }

    /// The stream going out of this leg gets a new source (the other leg moved).
    pub fn source_changed(&mut self) {
        self.out.source_changed();
    }

    /// Starts (`true`) or ends a source voxgate plays into this leg that replaces the
    /// relayed stream: meanwhile [`route`] gives [`Route::Replaced`] for packets headed
    /// here. Each change re-anchors the outgoing stream on its next packet, so it stays
    /// continuous across the switch even if the two sources' SSRCs happened to match.
    pub fn set_local_source(&mut self, on: bool) {
        if self.local_source != on {
            self.local_source = on;
            self.out.source_changed();
        }
    }

    #[must_use]
    pub fn local_source(&self) -> bool {
        self.local_source
    }

    /// Readies an RTP packet voxgate sends this leg's remote itself (a tone, a prompt,
    /// DTMF): rewritten into the same outgoing stream as what is relayed to it (one
    /// SSRC, continuous sequence numbers and timestamps, so the phone's jitter buffer
    /// sees one stream when the relayed media takes over), and where to send it; `None`
    /// when the remote does not receive or has no address yet. `clock_ahead` is how far
    /// the stream's clock at `now` is past the packet's timestamp
    /// ([`crate::player::Transmit::clock_ahead`]).
    pub fn own_packet(
        &mut self,
        buf: &mut [u8],
        clock_ahead: u32,
        now: Instant,
    ) -> Option<SocketAddr> {
        if !self.direction.remote_receives() {
            return None;
        }
        let to = self.rtp.destination()?;
        let mut pkt = RtpPacket::new_checked(buf).ok()?;
        self.out.rewrite(&mut pkt, self.clock, now);
        if clock_ahead > 0 {
            self.out
                .clock_at(pkt.timestamp().wrapping_add(clock_ahead), now);
        }
        Some(to)
    }

    #[must_use]
    pub fn rtcp_mux(&self) -> bool {
        self.rtcp_mux
    }
    #[must_use]
    pub fn rtp_latch(&self) -> &Latch {
        &self.rtp
    }
    #[must_use]
    pub fn rtcp_latch(&self) -> &Latch {
        &self.rtcp
    }
    #[must_use]
    pub fn rewriter(&self) -> &Rewriter {
        &self.out
    }
    pub fn rewriter_mut(&mut self) -> &mut Rewriter {
        &mut self.out
    }
    pub fn rtp_latch_mut(&mut self) -> &mut Latch {
        &mut self.rtp
    }
    #[must_use]
    pub fn direction(&self) -> MediaDirection {
        self.direction
    }
    /// PT translation for packets going out of this leg.
    #[must_use]
    pub fn pt_out(&self) -> &PtMap {
        &self.pt_out
    }
}

/// Which of a leg's two ports a datagram arrived on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Port {
    Rtp,
    Rtcp,
}

/// The forward decision for a datagram that arrived on `ingress`'s `port` from `src`,
/// headed for `egress`. RTP is rewritten in place in `buf`; RTCP is passed unchanged.
pub fn route(
    ingress: &mut LegPolicy,
    egress: &mut LegPolicy,
    port: Port,
    src: SocketAddr,
    buf: &mut [u8],
    now: Instant,
) -> Route {
    // RFC 5761 §4: under rtcp-mux, RTCP arrives on the RTP port; tell them apart by PT.
    if port == Port::Rtcp || (ingress.rtcp_mux && is_rtcp(buf)) {
        return route_rtcp(ingress, egress, src, buf, now);
    }
    let Ok(mut pkt) = RtpPacket::new_checked(buf) else {
        return Route::Drop(DropReason::Malformed);
    };
    if ingress.rtp.on_packet(src, now) == LatchVerdict::Drop {
        return Route::Drop(DropReason::UnexpectedSource);
    }
    if !ingress.direction.remote_sends() {
        return Route::Drop(DropReason::NotSending);
    }
    if !egress.direction.remote_receives() {
        return Route::Drop(DropReason::NotReceiving);
    }
    let Some(to) = egress.rtp.destination() else {
        return Route::Drop(DropReason::NoDestination);
    };
    if egress.local_source {
        // Replaced, not mixed. Telephone-events from the sending leg go too: spliced
        // between the source's packets they would each be re-anchored as a new source
        // and reach the leg as a burst of unrelated events. A digit pressed meanwhile
        // is still seen by the sending leg's listeners (its DTMF detector), and the
        // call engine relays it in the receiving leg's own method when it wants to.
        return Route::Replaced;
    }
    if let Some(t) = egress.transcoder.as_mut() {
        return match t.push(&pkt) {
            Pushed::Accepted => Route::Transcoded(to),
            _ => Route::Drop(DropReason::NotTranscodable),
        };
    }
    let pt = pkt.payload_type();
    pkt.set_payload_type(egress.pt_out.get(pt));
    egress.out.rewrite(&mut pkt, egress.clock, now);
    Route::Forward(to)
}

fn route_rtcp(
    ingress: &mut LegPolicy,
    egress: &mut LegPolicy,
    src: SocketAddr,
    buf: &[u8],
    now: Instant,
) -> Route {
    if RtcpCompound::new_checked(buf).is_err() {
        return Route::Drop(DropReason::Malformed);
    }
    // Under mux the RTCP source is the RTP source; latch it with the RTP latch so a
    // receive-only peer that sends only RTCP still gets latched.
    let latch = if ingress.rtcp_mux {
        &mut ingress.rtp
    } else {
        &mut ingress.rtcp
    };
    if latch.on_packet(src, now) == LatchVerdict::Drop {
        return Route::Drop(DropReason::UnexpectedSource);
    }
    // RTCP flows even on hold (RFC 3264 §5.1: RTCP is still sent for sendonly/
    // recvonly/inactive streams), so no direction check here.
    let dest = if egress.rtcp_mux {
        egress.rtp.destination()
    } else {
        egress.rtcp.destination()
    };
    match dest {
        Some(to) => Route::ForwardRtcp {
            to,
            mux: egress.rtcp_mux,
        },
        None => Route::Drop(DropReason::NoDestination),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::rtp::{write_header, RtpTimestamp, SeqNo, Ssrc};

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }
    fn remote(rtp: &str) -> LegRemote {
        LegRemote {
            rtp: Some(a(rtp)),
            ..LegRemote::default()
        }
    }
    fn rtp(pt: u8, seq: u16, ts: u32, ssrc: u32) -> Vec<u8> {
        let mut v = vec![0u8; 172];
        write_header(&mut v, pt, false, SeqNo(seq), RtpTimestamp(ts), Ssrc(ssrc)).unwrap();
        v
    }
    fn rr() -> Vec<u8> {
        vec![0x80, 201, 0, 1, 0, 0, 0, 9]
    }

    #[test]
    fn forwards_and_latches_nat_source() {
        let t = Instant::now();
        let mut la = LegPolicy::new(&remote("192.168.1.2:4000"));
        let mut lb = LegPolicy::new(&remote("198.51.100.1:20000"));
        let mut p = rtp(0, 1, 160, 7);
        // A's packet comes from its NAT mapping, goes to B's SDP address.
        let r = route(
            &mut la,
            &mut lb,
            Port::Rtp,
            a("203.0.113.9:31000"),
            &mut p,
            t,
        );
        assert_eq!(r, Route::Forward(a("198.51.100.1:20000")));
        // B answers; it goes to where A's packets really came from.
        let mut p = rtp(0, 1, 160, 8);
        let r = route(
            &mut lb,
            &mut la,
            Port::Rtp,
            a("198.51.100.1:20000"),
            &mut p,
            t,
        );
        assert_eq!(r, Route::Forward(a("203.0.113.9:31000")));
        // A third party spraying at A's port is dropped.
        let mut p = rtp(0, 2, 320, 66);
        let r = route(
            &mut la,
            &mut lb,
            Port::Rtp,
            a("198.51.100.200:5"),
            &mut p,
            t,
        );
        assert_eq!(r, Route::Drop(DropReason::UnexpectedSource));
        assert_eq!(la.rtp_latch().dropped(), 1);
    }

    #[test]
    fn malformed_and_unknown_destination() {
        let t = Instant::now();
        let mut la = LegPolicy::new(&remote("10.0.0.1:4000"));
        let mut lb = LegPolicy::new(&LegRemote::default());
        let mut junk = vec![0x00u8; 20];
        assert_eq!(
            route(
                &mut la,
                &mut lb,
                Port::Rtp,
                a("10.0.0.1:4000"),
                &mut junk,
                t
            ),
            Route::Drop(DropReason::Malformed)
        );
        // A malformed packet must not set the latch.
        assert_eq!(la.rtp_latch().destination(), Some(a("10.0.0.1:4000")));
        let mut p = rtp(0, 1, 1, 1);
        assert_eq!(
            route(&mut la, &mut lb, Port::Rtp, a("10.0.0.1:4000"), &mut p, t),
            Route::Drop(DropReason::NoDestination)
        );
    }

    #[test]
    fn directions() {
        let t = Instant::now();
        let mut la = LegPolicy::new(&LegRemote {
            direction: MediaDirection::SendOnly, // A put B on hold
            ..remote("10.0.0.1:4000")
        });
        let mut lb = LegPolicy::new(&remote("10.0.0.2:4000"));
        let mut p = rtp(0, 1, 1, 1);
        assert_eq!(
            route(&mut la, &mut lb, Port::Rtp, a("10.0.0.1:4000"), &mut p, t),
            Route::Forward(a("10.0.0.2:4000")),
            "hold music from A still reaches B"
        );
        assert_eq!(
            route(&mut lb, &mut la, Port::Rtp, a("10.0.0.2:4000"), &mut p, t),
            Route::Drop(DropReason::NotReceiving)
        );
        la.update(&LegRemote {
            direction: MediaDirection::Inactive,
            ..remote("10.0.0.1:4000")
        });
        assert_eq!(
            route(&mut la, &mut lb, Port::Rtp, a("10.0.0.1:4000"), &mut p, t),
            Route::Drop(DropReason::NotSending)
        );
        // RTCP still flows on hold.
        let mut r = rr();
        assert_eq!(
            route(&mut la, &mut lb, Port::Rtcp, a("10.0.0.1:4001"), &mut r, t),
            Route::ForwardRtcp {
                to: a("10.0.0.2:4001"),
                mux: false
            }
        );
    }

    #[test]
    fn pt_translation_applies_on_egress() {
        let t = Instant::now();
        let mut la = LegPolicy::new(&remote("10.0.0.1:4000"));
        let mut lb = LegPolicy::new(&LegRemote {
            pt_out: PtMap::from_pairs(&[(96, 101)]),
            ..remote("10.0.0.2:4000")
        });
        let mut p = rtp(96, 1, 1, 1);
        route(&mut la, &mut lb, Port::Rtp, a("10.0.0.1:4000"), &mut p, t);
        assert_eq!(RtpPacket::new_checked(&p[..]).unwrap().payload_type(), 101);
        let mut p = rtp(0, 2, 161, 1);
        route(&mut la, &mut lb, Port::Rtp, a("10.0.0.1:4000"), &mut p, t);
        assert_eq!(RtpPacket::new_checked(&p[..]).unwrap().payload_type(), 0);
    }

    #[test]
    fn rtcp_mux_demux_and_latch() {
        let t = Instant::now();
        let mut la = LegPolicy::new(&LegRemote {
            rtcp_mux: true,
            ..remote("10.0.0.1:4000")
        });
        let mut lb = LegPolicy::new(&remote("10.0.0.2:5000"));
        // RTCP on A's RTP port is recognised and goes to B's RTCP port (B not muxed).
        let mut r = rr();
        assert_eq!(
            route(&mut la, &mut lb, Port::Rtp, a("10.0.0.1:4000"), &mut r, t),
            Route::ForwardRtcp {
                to: a("10.0.0.2:5001"),
                mux: false
            }
        );
        // B's RTCP goes to A's latched RTP address (mux).
        assert_eq!(
            route(&mut lb, &mut la, Port::Rtcp, a("10.0.0.2:5001"), &mut r, t),
            Route::ForwardRtcp {
                to: a("10.0.0.1:4000"),
                mux: true
            }
        );
        // Garbage on the RTCP port is dropped.
        let mut g = vec![0x80, 96, 0, 9];
        assert_eq!(
            route(&mut lb, &mut la, Port::Rtcp, a("10.0.0.2:5001"), &mut g, t),
            Route::Drop(DropReason::Malformed)
        );
    }

    #[test]
    fn a_local_source_replaces_everything_relayed_to_its_leg() {
        let t = Instant::now();
        let mut la = LegPolicy::new(&remote("10.0.0.1:4000"));
        let mut lb = LegPolicy::new(&remote("10.0.0.2:4000"));
        la.set_local_source(true);
        // B's audio and telephone-events alike; B's latch still learns its source.
        for pt in [0, 101] {
            let mut p = rtp(pt, 1, 160, 9);
            let r = route(
                &mut lb,
                &mut la,
                Port::Rtp,
                a("203.0.113.5:7000"),
                &mut p,
                t,
            );
            assert_eq!(r, Route::Replaced);
        }
        assert_eq!(lb.rtp_latch().destination(), Some(a("203.0.113.5:7000")));
        assert_eq!(la.rewriter().out_ssrc(), None, "nothing reached A's stream");
        // The other direction, and RTCP towards A, are untouched.
        let mut p = rtp(0, 1, 160, 7);
        assert_eq!(
            route(&mut la, &mut lb, Port::Rtp, a("10.0.0.1:4000"), &mut p, t),
            Route::Forward(a("203.0.113.5:7000"))
        );
        let mut r = rr();
        assert!(matches!(
            route(&mut lb, &mut la, Port::Rtcp, a("10.0.0.2:4001"), &mut r, t),
            Route::ForwardRtcp { .. }
        ));
        la.set_local_source(false);
        let mut p = rtp(0, 2, 320, 9);
        assert_eq!(
            route(
                &mut lb,
                &mut la,
                Port::Rtp,
                a("203.0.113.5:7000"),
                &mut p,
                t
            ),
            Route::Forward(a("10.0.0.1:4000"))
        );
    }

    #[test]
    fn reinvite_moves_latch_and_keeps_stream_continuous() {
        let t = Instant::now();
        let mut la = LegPolicy::new(&remote("10.0.0.1:4000"));
        let mut lb = LegPolicy::new(&remote("10.0.0.2:4000"));
        for i in 0..3u16 {
            let mut p = rtp(0, 100 + i, 160 * u32::from(i), 1);
            route(&mut la, &mut lb, Port::Rtp, a("10.0.0.1:4000"), &mut p, t);
        }
        // Re-INVITE: A moved to another device.
        if la.update(&remote("10.0.0.9:6000")) {
            lb.source_changed();
        }
        let mut p = rtp(0, 7, 99_999, 1); // same SSRC by chance, new origin
        let r = route(
            &mut la,
            &mut lb,
            Port::Rtp,
            a("10.0.0.9:6000"),
            &mut p,
            t + Duration::from_millis(60),
        );
        assert_eq!(r, Route::Forward(a("10.0.0.2:4000")));
        let v = RtpPacket::new_checked(&p[..]).unwrap();
        assert_eq!(v.seq(), SeqNo(103));
        assert_eq!(v.timestamp(), RtpTimestamp(320 + 480));
        // The old device is now a stranger.
        let mut p = rtp(0, 103, 480, 1);
        assert_eq!(
            route(&mut la, &mut lb, Port::Rtp, a("10.0.0.1:4000"), &mut p, t),
            Route::Drop(DropReason::UnexpectedSource)
        );
    }
}
