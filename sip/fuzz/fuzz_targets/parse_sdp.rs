//! `cargo +nightly fuzz run parse_sdp` (seed with SDP bodies, e.g. the fixtures in
//! `sip/src/sdp/tests/mod.rs`).
//!
//! Parses arbitrary bytes as SDP; on success checks parse(serialise(x)) == x, then runs the
//! description through both sides of the B2BUA offer/answer: nothing may panic, and every
//! description voxgate produces must itself parse.
#![no_main]

use std::net::{IpAddr, Ipv4Addr};

use libfuzzer_sys::fuzz_target;
use voxgate_sip::sdp::{
    forward_offer, LegSdp, LocalMedia, LocalSession, SdpConfig, SessionDescription,
};

const CARRIER: &str = "v=0\r\no=root 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\n\
    t=0 0\r\nm=audio 16852 RTP/AVP 0 8 101\r\na=rtpmap:101 telephone-event/8000\r\n\
    a=fmtp:101 0-16\r\na=rtcp-mux\r\n";

fn legs() -> (LegSdp, LegSdp) {
    let ip = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 10));
    (
        LegSdp::new(LocalSession::new(1), LocalMedia { address: ip, rtp_port: 20000 }),
        LegSdp::new(LocalSession::new(2), LocalMedia { address: ip, rtp_port: 20002 }),
    )
}

fn reparse(sdp: &SessionDescription) -> SessionDescription {
    let again: SessionDescription =
        sdp.to_string().parse().expect("voxgate's own SDP parses");
    assert_eq!(&again, sdp, "parse(serialise(x)) == x");
    again
}

fuzz_target!(|data: &[u8]| {
    let Ok(x) = SessionDescription::parse(data) else {
        return;
    };
    reparse(&x);
    for m in &x.media {
        let _ = (x.direction_for(m), x.connection_for(m), m.rtcp(), m.mid());
        for pt in m.payload_types() {
            let _ = m.codec(pt);
        }
    }
    let cfg = SdpConfig::default();

    // As an offer from leg A, answered by an echo of voxgate's own offer.
    let (mut a, mut b) = legs();
    if let Ok((offer_b, pending)) = forward_offer(&cfg, &x, &mut b) {
        let echo = reparse(&offer_b);
        let answer_a = pending
            .answer(&cfg, &echo, &mut b, &mut a)
            .expect("an echoed offer is a valid answer");
        reparse(&answer_a);
        assert_eq!(answer_a.media.len(), x.media.len(), "RFC 3264 §6");
    }

    // As an answer from leg B.
    let (mut a, mut b) = legs();
    let offer: SessionDescription = CARRIER.parse().expect("fixture");
    let (_, pending) = forward_offer(&cfg, &offer, &mut b).expect("fixture");
    if let Ok(answer_a) = pending.answer(&cfg, &x, &mut b, &mut a) {
        reparse(&answer_a);
    }
});
