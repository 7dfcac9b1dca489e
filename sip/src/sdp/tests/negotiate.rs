use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use super::{assert_round_trip, sdp, BARESIP, G729_ONLY, IPV6, PJSUA, TWILIO, WEBRTC};
use crate::sdp::{
    forward_offer, AddrType, Attribute, Codec, Direction, LegSdp, LocalMedia, LocalSession,
    NegotiationError, PacketTime, PendingOffer, Proto, PtTranslation, SdpConfig,
    SessionDescription,
};

const VOXGATE: IpAddr = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 10));

fn legs() -> (LegSdp, LegSdp) {
    (
        LegSdp::new(
            LocalSession::new(1001),
            LocalMedia {
                address: VOXGATE,
                rtp_port: 20000,
            },
        ),
        LegSdp::new(
            LocalSession::new(2002),
            LocalMedia {
                address: VOXGATE,
                rtp_port: 20002,
            },
        ),
    )
}

/// B's answer: a full SDP around one audio m-line with the given formats and lines.
fn b_answer(formats: &str, lines: &[&str]) -> SessionDescription {
    let mut text = format!(
        "v=0\r\no=bob 7 7 IN IP4 198.51.100.7\r\ns=-\r\nc=IN IP4 198.51.100.7\r\nt=0 0\r\n\
         m=audio 30000 RTP/AVP {formats}\r\n"
    );
    for l in lines {
        text.push_str(l);
        text.push_str("\r\n");
    }
    sdp(&text)
}

fn attrs(s: &SessionDescription, i: usize) -> Vec<String> {
    s.media[i]
        .attributes
        .iter()
        .map(ToString::to_string)
        .collect()
}

/// Forward A's offer and complete it with B's answer, checking both SDPs re-parse.
fn bridge(
    cfg: &SdpConfig,
    offer_a: &SessionDescription,
    answer_b: impl FnOnce(&SessionDescription) -> SessionDescription,
    a: &mut LegSdp,
    b: &mut LegSdp,
) -> (SessionDescription, SessionDescription) {
    let (offer_b, pending) = forward_offer(cfg, offer_a, b).unwrap();
    assert_round_trip(&offer_b);
    let answer_a = pending.answer(cfg, &answer_b(&offer_b), b, a).unwrap();
    assert_round_trip(&answer_a);
    (offer_b, answer_a)
}

#[test]
fn carrier_offer_is_forwarded_with_our_address_and_fresh_origin() {
    let cfg = SdpConfig::default();
    let (_, mut b) = legs();
    let (offer_b, _) = forward_offer(&cfg, &sdp(TWILIO), &mut b).unwrap();
    assert_eq!(
        offer_b.to_string(),
        "v=0\r\n\
         o=voxgate 2002 1 IN IP4 203.0.113.10\r\n\
         s=voxgate\r\n\
         c=IN IP4 203.0.113.10\r\n\
         t=0 0\r\n\
         m=audio 20002 RTP/AVP 0 8 101\r\n\
         a=rtpmap:0 PCMU/8000\r\n\
         a=rtpmap:8 PCMA/8000\r\n\
         a=rtpmap:101 telephone-event/8000\r\n\
         a=fmtp:101 0-16\r\n\
         a=ptime:20\r\n\
         a=maxptime:150\r\n\
         a=sendrecv\r\n"
    );
    // a=rtcp described the carrier's port, not ours: not carried.
}

#[test]
fn only_supported_codecs_in_offerer_order() {
    let cfg = SdpConfig::default();
    // pjsua: speex, iLBC, GSM, G722 and telephone-event/16000 (no 16 kHz voice) go.
    let (_, mut b) = legs();
    let (offer_b, _) = forward_offer(&cfg, &sdp(PJSUA), &mut b).unwrap();
    assert_eq!(offer_b.media[0].formats, ["0", "8", "121"]);
    assert_eq!(offer_b.media[0].fmtp("121"), Some("0-16"));
    // baresip: opus first, unsupported by default.
    let (_, mut b) = legs();
    let (offer_b, _) = forward_offer(&cfg, &sdp(BARESIP), &mut b).unwrap();
    assert_eq!(offer_b.media[0].formats, ["0", "8", "101"]);
    assert_eq!(offer_b.media[0].fmtp("101"), Some("0-15"));
    // The offerer's order, not ours: PCMA first stays first.
    let (_, mut b) = legs();
    let offer = sdp(&TWILIO.replace("RTP/AVP 0 8 101", "RTP/AVP 8 101 0"));
    let (offer_b, _) = forward_offer(&cfg, &offer, &mut b).unwrap();
    assert_eq!(offer_b.media[0].formats, ["8", "101", "0"]);
}

#[test]
fn codec_list_is_data_driven() {
    // Opus later is one line of configuration.
    let mut cfg = SdpConfig::default();
    cfg.codecs.insert(0, Codec::new("opus", 48000, 2));
    let (_, mut b) = legs();
    let (offer_b, _) = forward_offer(&cfg, &sdp(BARESIP), &mut b).unwrap();
    assert_eq!(offer_b.media[0].formats, ["96", "0", "8", "101"]);
    assert!(attrs(&offer_b, 0).contains(&"a=rtpmap:96 opus/48000/2".to_owned()));
    assert!(attrs(&offer_b, 0).contains(&"a=fmtp:96 stereo=1;sprop-stereo=1".to_owned()));
    // G.729 only, once G.729 is allowed.
    let cfg = SdpConfig {
        codecs: vec![Codec::new("G729", 8000, 1)],
        ..SdpConfig::default()
    };
    let (_, mut b) = legs();
    let (offer_b, _) = forward_offer(&cfg, &sdp(G729_ONLY), &mut b).unwrap();
    assert_eq!(offer_b.media[0].formats, ["18"]);
}

#[test]
fn full_bridge_with_twilio_offer() {
    let cfg = SdpConfig::default();
    let (mut a, mut b) = legs();
    let answer = |_: &SessionDescription| {
        b_answer(
            "0 101",
            &[
                "a=rtpmap:0 PCMU/8000",
                "a=rtpmap:101 telephone-event/8000",
                "a=fmtp:101 0-15",
                "a=ptime:30",
            ],
        )
    };
    let (_, answer_a) = bridge(&cfg, &sdp(TWILIO), answer, &mut a, &mut b);
    assert_eq!(
        answer_a.to_string(),
        "v=0\r\n\
         o=voxgate 1001 1 IN IP4 203.0.113.10\r\n\
         s=voxgate\r\n\
         c=IN IP4 203.0.113.10\r\n\
         t=0 0\r\n\
         m=audio 20000 RTP/AVP 0 101\r\n\
         a=rtpmap:0 PCMU/8000\r\n\
         a=rtpmap:101 telephone-event/8000\r\n\
         a=fmtp:101 0-15\r\n\
         a=ptime:30\r\n\
         a=sendrecv\r\n"
    );
    let (ma, mb) = (a.media.as_ref().unwrap(), b.media.as_ref().unwrap());
    // RFC 3605: the carrier's a=rtcp port; B has none, so RTP + 1.
    let carrier: IpAddr = "54.172.60.1".parse().unwrap();
    let far_b: IpAddr = "198.51.100.7".parse().unwrap();
    let ra = ma.remote.unwrap();
    assert_eq!(
        (ra.rtp, ra.rtcp),
        (
            SocketAddr::new(carrier, 16852),
            SocketAddr::new(carrier, 16853)
        )
    );
    let rb = mb.remote.unwrap();
    assert_eq!(
        (rb.rtp, rb.rtcp),
        (SocketAddr::new(far_b, 30000), SocketAddr::new(far_b, 30001))
    );
    assert_eq!(
        (ma.ptime, mb.ptime),
        (PacketTime::from_millis(20), PacketTime::from_millis(30))
    );
    assert_eq!(
        (ma.direction, mb.direction),
        (Direction::SendRecv, Direction::SendRecv)
    );
    assert!(!ma.rtcp_mux && !mb.rtcp_mux);
    assert_eq!(ma.send.len(), 2);
    assert_eq!(
        ma.send.codec(101).map(|c| c.name.as_str()),
        Some("telephone-event")
    );
    assert!(PtTranslation::new(ma, mb).is_identity());
}

#[test]
fn answer_uses_offerer_payload_types_and_relay_translates() {
    // RFC 3264 §6.1: the answer to A uses A's numbers even when B numbers differently.
    let cfg = SdpConfig::default();
    let (mut a, mut b) = legs();
    // A maps PCMU to a dynamic number (legal) and telephone-event to 101.
    let offer = sdp(&TWILIO
        .replace("RTP/AVP 0 8 101", "RTP/AVP 100 101")
        .replace("a=rtpmap:0 PCMU/8000", "a=rtpmap:100 PCMU/8000"));
    let (offer_b, answer_a) = bridge(
        &cfg,
        &offer,
        // B answers telephone-event on 96 (RFC 3264 only says SHOULD reuse the number).
        |_| {
            b_answer(
                "0 96",
                &["a=rtpmap:96 telephone-event/8000", "a=fmtp:96 0-16"],
            )
        },
        &mut a,
        &mut b,
    );
    assert_eq!(offer_b.media[0].formats, ["0", "101"]); // PCMU's static number on B
    assert_eq!(answer_a.media[0].formats, ["100", "101"]);
    let (ma, mb) = (a.media.as_ref().unwrap(), b.media.as_ref().unwrap());
    // B receives with its answer's numbers and sends with our offer's.
    assert_eq!(mb.send.payload_type(&Codec::telephone_event()), Some(96));
    assert_eq!(mb.recv.payload_type(&Codec::telephone_event()), Some(101));
    let a_to_b = PtTranslation::new(ma, mb);
    assert_eq!(
        (a_to_b.get(100), a_to_b.get(101), a_to_b.get(8)),
        (Some(0), Some(96), None)
    );
    assert!(!a_to_b.is_identity());
    let b_to_a = PtTranslation::new(mb, ma);
    assert_eq!(
        (b_to_a.get(0), b_to_a.get(101), b_to_a.get(96)),
        (Some(100), Some(101), None)
    );
    assert_eq!(b_to_a.get(200), None);
}

#[test]
fn answer_follows_answerer_order_and_ignores_unoffered_codecs() {
    let cfg = SdpConfig::default();
    let (mut a, mut b) = legs();
    let (_, answer_a) = bridge(
        &cfg,
        &sdp(TWILIO),
        // B prefers PCMA and slips in G.729, which was never offered.
        |_| b_answer("8 18 0", &[]),
        &mut a,
        &mut b,
    );
    assert_eq!(answer_a.media[0].formats, ["8", "0"]);
    // No telephone-event from B: none towards A either.
    assert!(a
        .media
        .as_ref()
        .unwrap()
        .send
        .payload_type(&Codec::telephone_event())
        .is_none());
}

#[test]
fn answerer_without_rtpmap_for_our_dynamic_number_is_understood() {
    let cfg = SdpConfig::default();
    let (mut a, mut b) = legs();
    let (_, answer_a) = bridge(
        &cfg,
        &sdp(TWILIO),
        |_| b_answer("0 101", &[]),
        &mut a,
        &mut b,
    );
    assert_eq!(answer_a.media[0].formats, ["0", "101"]);
}

#[test]
fn non_audio_streams_are_dropped_then_rejected_in_order() {
    let cfg = SdpConfig::default();
    let (mut a, mut b) = legs();
    let offer = sdp(&super::webrtc_plain());
    let (offer_b, answer_a) = bridge(
        &cfg,
        &offer,
        |_| {
            b_answer(
                "0 126",
                &["a=rtpmap:126 telephone-event/8000", "a=rtcp-mux"],
            )
        },
        &mut a,
        &mut b,
    );
    // B sees audio only, as plain RTP/AVP, with rtcp-mux because A offered it; no ICE,
    // DTLS, ssrc or mid: those described A's transport, which voxgate terminates.
    assert_eq!(offer_b.media.len(), 1);
    assert_eq!(offer_b.media[0].proto, Proto::RtpAvp);
    // Chrome's list: opus, red, G722, CN and telephone-event/48000 go.
    assert_eq!(offer_b.media[0].formats, ["0", "8", "126"]);
    assert_eq!(
        attrs(&offer_b, 0),
        [
            "a=rtpmap:0 PCMU/8000",
            "a=rtpmap:8 PCMA/8000",
            "a=rtpmap:126 telephone-event/8000",
            "a=rtcp-mux",
            "a=sendrecv"
        ]
    );
    assert!(offer_b.attributes.is_empty());
    // RFC 3264 §6: as many m-lines as the offer, video rejected with port 0.
    assert_eq!(answer_a.media.len(), 2);
    let (audio, video) = (&answer_a.media[0], &answer_a.media[1]);
    assert_eq!((audio.port, audio.proto.clone()), (20000, Proto::RtpAvpf));
    assert_eq!(audio.mid(), Some("0"));
    assert!(audio.rtcp_mux());
    assert_eq!((video.port, video.proto.clone()), (0, Proto::RtpAvpf));
    assert_eq!(video.formats, ["96", "97"]);
    assert_eq!(video.mid(), Some("1"));
    // rtcp-mux on both legs: RTCP goes to the RTP port (RFC 5761).
    let (ma, mb) = (a.media.as_ref().unwrap(), b.media.as_ref().unwrap());
    assert!(ma.rtcp_mux && mb.rtcp_mux);
    let ra = ma.remote.unwrap();
    assert_eq!((ra.rtp.port(), ra.rtcp.port()), (50000, 50000));
    assert_eq!(mb.remote.unwrap().rtcp.port(), 30000);
}

#[test]
fn rtcp_mux_only_when_both_sides_did() {
    let cfg = SdpConfig::default();
    let (mut a, mut b) = legs();
    let (offer_b, answer_a) = bridge(
        &cfg,
        &sdp(&super::webrtc_plain()),
        |_| b_answer("0", &[]),
        &mut a,
        &mut b,
    );
    assert!(offer_b.media[0].rtcp_mux());
    assert!(!answer_a.media[0].rtcp_mux());
    let (ma, mb) = (a.media.as_ref().unwrap(), b.media.as_ref().unwrap());
    assert!(!ma.rtcp_mux && !mb.rtcp_mux);
    // A's a=rtcp (RFC 3605) names port 9 on 0.0.0.0 (an ICE placeholder): the port is
    // taken, the address comes from c=.
    assert_eq!(ma.remote.unwrap().rtcp.to_string(), "192.0.2.50:9");
    assert_eq!(mb.remote.unwrap().rtcp.port(), 30001);
    // An offer without rtcp-mux never gets it on B, whatever B says.
    let (mut a, mut b) = legs();
    let (offer_b, answer_a) = bridge(
        &cfg,
        &sdp(TWILIO),
        |_| b_answer("0", &["a=rtcp-mux"]),
        &mut a,
        &mut b,
    );
    assert!(!offer_b.media[0].rtcp_mux() && !answer_a.media[0].rtcp_mux());
    assert!(!b.media.unwrap().rtcp_mux);
}

#[test]
fn rtcp_attribute_with_address_and_ipv6() {
    let cfg = SdpConfig::default();
    let (mut a, mut b) = legs();
    let offer = sdp(&format!("{IPV6}a=rtcp:49999 IN IP6 2001:db8::99\r\n"));
    bridge(&cfg, &offer, |_| b_answer("0", &[]), &mut a, &mut b);
    let r = a.media.unwrap().remote.unwrap();
    assert_eq!(r.rtp.to_string(), "[2001:db8::10]:49170");
    assert_eq!(r.rtcp.to_string(), "[2001:db8::99]:49999");
    // voxgate on IPv6 writes IP6 in o= and c=.
    let v6: IpAddr = "2001:db8::1".parse().unwrap();
    let mut b6 = LegSdp::new(
        LocalSession::new(5),
        LocalMedia {
            address: v6,
            rtp_port: 20010,
        },
    );
    let (offer_b, _) = forward_offer(&cfg, &sdp(TWILIO), &mut b6).unwrap();
    assert_eq!(offer_b.origin.addr_type, AddrType::Ip6);
    assert!(offer_b.to_string().contains("\r\nc=IN IP6 2001:db8::1\r\n"));
}

#[test]
fn offer_errors() {
    let cfg = SdpConfig::default();
    let check = |text: &str, want: NegotiationError, status: u16| {
        let (_, mut b) = legs();
        let before = b.clone();
        let e = forward_offer(&cfg, &sdp(text), &mut b).unwrap_err();
        assert_eq!(e, want, "{text}");
        assert_eq!(e.sip_status(), status);
        assert_eq!(b, before, "a failed offer changes nothing");
    };
    check(G729_ONLY, NegotiationError::NoCommonCodec, 488);
    // telephone-event alone is not a call.
    check(
        &IPV6.replace("RTP/AVP 0 101", "RTP/AVP 101"),
        NegotiationError::NoCommonCodec,
        488,
    );
    let video_only = "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n\
                      m=video 5000 RTP/AVP 96\r\na=rtpmap:96 VP8/90000\r\n";
    check(video_only, NegotiationError::NoAudio, 488);
    check(
        &TWILIO.replace("m=audio 16852", "m=audio 0"),
        NegotiationError::NoAudio,
        488,
    );
    check(
        "v=0\r\no=- 1 1 IN IP4 h\r\ns=-\r\nt=0 0\r\n",
        NegotiationError::NoAudio,
        488,
    );
    check(
        WEBRTC,
        NegotiationError::UnsupportedTransport("UDP/TLS/RTP/SAVPF".into()),
        488,
    );
    let sdes = TWILIO.replace("RTP/AVP", "RTP/SAVP")
        + "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz\r\n";
    check(
        &sdes,
        NegotiationError::UnsupportedTransport("RTP/SAVP".into()),
        488,
    );
    check(
        &TWILIO.replace("c=IN IP4 54.172.60.1\r\n", ""),
        NegotiationError::MissingConnection(0),
        400,
    );
    check(
        &TWILIO.replace("c=IN IP4 54.172.60.1", "c=IN IP4 media.example.net"),
        NegotiationError::HostNameConnection(0),
        488,
    );
}

#[test]
fn first_usable_audio_stream_wins_and_others_are_rejected() {
    let cfg = SdpConfig::default();
    let (mut a, mut b) = legs();
    let offer = sdp(
        "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n\
                     m=audio 5000 RTP/AVP 18\r\n\
                     m=audio 5002 RTP/AVP 0\r\n\
                     m=audio 5004 RTP/AVP 8\r\n",
    );
    let (_, answer_a) = bridge(&cfg, &offer, |_| b_answer("0", &[]), &mut a, &mut b);
    let ports: Vec<u16> = answer_a.media.iter().map(|m| m.port).collect();
    assert_eq!(ports, [0, 20000, 0]);
    assert_eq!(a.media.unwrap().remote.unwrap().rtp.port(), 5002);
}

#[test]
fn answer_errors_change_nothing() {
    let cfg = SdpConfig::default();
    let check = |answer: SessionDescription, want: NegotiationError| {
        let (mut a, mut b) = legs();
        let (_, pending): (_, PendingOffer) = forward_offer(&cfg, &sdp(TWILIO), &mut b).unwrap();
        let (a0, b0) = (a.clone(), b.clone());
        assert_eq!(pending.answer(&cfg, &answer, &mut b, &mut a), Err(want));
        assert_eq!((a, b), (a0, b0));
    };
    check(b_answer("101", &[]), NegotiationError::NoCommonCodec);
    check(b_answer("18", &[]), NegotiationError::NoCommonCodec);
    check(
        sdp(&b_answer("0", &[])
            .to_string()
            .replace("m=audio 30000", "m=audio 0")),
        NegotiationError::AudioRejected,
    );
    let two = format!("{}m=video 0 RTP/AVP 96\r\n", b_answer("0", &[]));
    check(sdp(&two), NegotiationError::AnswerMismatch);
    let none = "v=0\r\no=bob 7 7 IN IP4 198.51.100.7\r\ns=-\r\nt=0 0\r\n";
    check(sdp(none), NegotiationError::AnswerMismatch);
    let video = b_answer("0", &[]).to_string().replace("m=audio", "m=video");
    check(sdp(&video), NegotiationError::AnswerMismatch);
    let no_c = b_answer("0", &[])
        .to_string()
        .replace("c=IN IP4 198.51.100.7\r\n", "");
    check(sdp(&no_c), NegotiationError::MissingConnection(0));
}

#[test]
fn direction_answer_table() {
    use Direction::*;
    // RFC 3264 §6.1, answerer willing to do anything.
    assert_eq!(Direction::answer_to(SendRecv, SendRecv), SendRecv);
    assert_eq!(Direction::answer_to(SendOnly, SendRecv), RecvOnly);
    assert_eq!(Direction::answer_to(RecvOnly, SendRecv), SendOnly);
    assert_eq!(Direction::answer_to(Inactive, SendRecv), Inactive);
    // An answerer may narrow further but never widen.
    assert_eq!(Direction::answer_to(SendRecv, RecvOnly), RecvOnly);
    assert_eq!(Direction::answer_to(SendOnly, SendOnly), Inactive);
    assert_eq!(Direction::answer_to(RecvOnly, Inactive), Inactive);
    for d in [SendRecv, SendOnly, RecvOnly, Inactive] {
        assert_eq!(d.reversed().reversed(), d);
    }
}

/// A's offer with direction `dir` (media level), B answering `b_dir`: what A hears back.
fn directions(offer_dir: &str, b_dir: &str) -> (Direction, Direction, Direction, Direction) {
    let cfg = SdpConfig::default();
    let (mut a, mut b) = legs();
    let offer = sdp(&TWILIO.replace("a=sendrecv", offer_dir));
    let b_line = format!("a={b_dir}");
    let (offer_b, answer_a) = bridge(&cfg, &offer, |_| b_answer("0", &[&b_line]), &mut a, &mut b);
    (
        offer_b.direction_for(&offer_b.media[0]),
        answer_a.direction_for(&answer_a.media[0]),
        a.media.unwrap().direction,
        b.media.unwrap().direction,
    )
}

#[test]
fn directions_are_carried_and_answered() {
    use Direction::*;
    // (B offer, A answer, A's own direction, B's own direction)
    assert_eq!(
        directions("a=sendrecv", "sendrecv"),
        (SendRecv, SendRecv, SendRecv, SendRecv)
    );
    assert_eq!(
        directions("a=sendonly", "recvonly"),
        (SendOnly, RecvOnly, SendOnly, RecvOnly)
    );
    assert_eq!(
        directions("a=recvonly", "sendonly"),
        (RecvOnly, SendOnly, RecvOnly, SendOnly)
    );
    assert_eq!(
        directions("a=inactive", "inactive"),
        (Inactive, Inactive, Inactive, Inactive)
    );
    // B got it wrong (sendrecv to a sendonly offer): clamped per RFC 3264 §6.1.
    assert_eq!(
        directions("a=sendonly", "sendrecv"),
        (SendOnly, RecvOnly, SendOnly, RecvOnly)
    );
    assert_eq!(
        directions("a=inactive", "sendrecv"),
        (Inactive, Inactive, Inactive, Inactive)
    );
    // B holds us on a sendrecv offer.
    assert_eq!(
        directions("a=sendrecv", "sendonly"),
        (SendRecv, SendOnly, RecvOnly, SendOnly)
    );
    // No attribute at all is sendrecv; a session-level one applies to the media.
    assert_eq!(directions("a=ptime:20", "sendrecv").0, SendRecv);
    let cfg = SdpConfig::default();
    let (_, mut b) = legs();
    let offer = sdp(&TWILIO
        .replace("a=sendrecv\r\n", "")
        .replace("t=0 0\r\n", "t=0 0\r\na=sendonly\r\n"));
    let (offer_b, _) = forward_offer(&cfg, &offer, &mut b).unwrap();
    assert_eq!(offer_b.media[0].direction(), Some(SendOnly));
}

#[test]
fn hold_and_resume_bump_versions_only_on_change() {
    let cfg = SdpConfig::default();
    let (mut a, mut b) = legs();
    let echo = |dir: &'static str| move |_: &SessionDescription| b_answer("0 101", &[dir]);
    let origin = |s: &SessionDescription| (s.origin.session_id, s.origin.session_version);

    let (ob, aa) = bridge(&cfg, &sdp(TWILIO), echo("a=sendrecv"), &mut a, &mut b);
    assert_eq!((origin(&ob), origin(&aa)), ((2002, 1), (1001, 1)));

    // Hold with a=sendonly (RFC 3264 §8.4).
    let hold = sdp(&TWILIO
        .replace("a=sendrecv", "a=sendonly")
        .replace("1452187532 1452187532", "1452187532 1452187533"));
    let (ob, aa) = bridge(&cfg, &hold, echo("a=recvonly"), &mut a, &mut b);
    assert_eq!(ob.media[0].direction(), Some(Direction::SendOnly));
    assert_eq!(aa.media[0].direction(), Some(Direction::RecvOnly));
    assert_eq!((origin(&ob), origin(&aa)), ((2002, 2), (1001, 2)));
    assert!(
        !b.media.as_ref().unwrap().direction.sends(),
        "B must not send to A on hold"
    );

    // Resume.
    let (ob, aa) = bridge(&cfg, &sdp(TWILIO), echo("a=sendrecv"), &mut a, &mut b);
    assert_eq!(ob.media[0].direction(), Some(Direction::SendRecv));
    assert_eq!(aa.media[0].direction(), Some(Direction::SendRecv));
    assert_eq!((origin(&ob), origin(&aa)), ((2002, 3), (1001, 3)));

    // A session refresh (RFC 4028) with the same SDP: same version, same bytes.
    let (ob2, aa2) = bridge(&cfg, &sdp(TWILIO), echo("a=sendrecv"), &mut a, &mut b);
    assert_eq!(
        (ob2.to_string(), aa2.to_string()),
        (ob.to_string(), aa.to_string())
    );
    assert_eq!(a.session.version, 3);
}

#[test]
fn old_style_hold_with_zero_address() {
    // RFC 3264 §8.4: c=0.0.0.0 (RFC 2543) is "do not send to me": forwarded as sendonly.
    let cfg = SdpConfig::default();
    let (mut a, mut b) = legs();
    bridge(&cfg, &sdp(TWILIO), |_| b_answer("0", &[]), &mut a, &mut b);
    let hold = sdp(&TWILIO.replace("c=IN IP4 54.172.60.1", "c=IN IP4 0.0.0.0"));
    let (ob, aa) = bridge(
        &cfg,
        &hold,
        |_| b_answer("0", &["a=recvonly"]),
        &mut a,
        &mut b,
    );
    assert_eq!(ob.media[0].direction(), Some(Direction::SendOnly));
    // We never send 0.0.0.0 ourselves: our address stays, the attribute says it.
    assert_eq!(ob.connection.as_ref().unwrap().ip_addr(), Some(VOXGATE));
    assert_eq!(aa.media[0].direction(), Some(Direction::RecvOnly));
    let ma = a.media.as_ref().unwrap();
    assert_eq!(ma.remote, None, "nowhere to send A's media");
    assert!(!ma.direction.receives());
    assert_eq!(b.session.version, 2);
}

#[test]
fn payload_types_stay_stable_on_a_leg_across_re_offers() {
    // RFC 3264 §8.3.2: a number may not change codec within the session.
    let mut cfg = SdpConfig::default();
    cfg.codecs.push(Codec::new("opus", 48000, 2));
    let (mut a, mut b) = legs();
    let first = "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n\
                 m=audio 5000 RTP/AVP 111 0 101\r\na=rtpmap:111 opus/48000/2\r\n\
                 a=rtpmap:101 telephone-event/8000\r\n";
    let (ob, _) = bridge(
        &cfg,
        &sdp(first),
        |o| {
            b_answer(
                "111 0 101",
                &[
                    &o.media[0].attributes[0].to_string(),
                    "a=rtpmap:101 telephone-event/8000",
                ],
            )
        },
        &mut a,
        &mut b,
    );
    assert_eq!(ob.media[0].formats, ["111", "0", "101"]);
    // After a transfer the new A numbers the other way round; B's numbers do not move.
    let swapped = "v=0\r\no=- 2 1 IN IP4 192.0.2.2\r\ns=-\r\nc=IN IP4 192.0.2.2\r\nt=0 0\r\n\
                   m=audio 6000 RTP/AVP 101 0 111\r\na=rtpmap:101 opus/48000/2\r\n\
                   a=rtpmap:111 telephone-event/8000\r\n";
    let (ob, aa) = bridge(
        &cfg,
        &sdp(swapped),
        |_| {
            b_answer(
                "111 0 101",
                &[
                    "a=rtpmap:111 opus/48000/2",
                    "a=rtpmap:101 telephone-event/8000",
                ],
            )
        },
        &mut a,
        &mut b,
    );
    assert_eq!(ob.media[0].formats, ["111", "0", "101"]);
    assert_eq!(ob.media[0].codec(111).unwrap().name, "opus");
    assert_eq!(aa.media[0].formats, ["101", "0", "111"]);
    let t = PtTranslation::new(a.media.as_ref().unwrap(), b.media.as_ref().unwrap());
    assert_eq!(
        (t.get(101), t.get(111), t.get(0)),
        (Some(111), Some(101), Some(0))
    );

    // A fresh codec whose A number is taken on B gets the lowest free dynamic number.
    let (_, mut b2) = legs();
    let (ob, _) = forward_offer(&cfg, &sdp(first), &mut b2).unwrap();
    assert_eq!(ob.media[0].formats, ["111", "0", "101"]);
    let only_te_renumbered = first
        .replace("101", "111")
        .replacen("111 opus", "96 opus", 1)
        .replacen("RTP/AVP 111 0 111", "RTP/AVP 96 0 111", 1);
    let (ob, _) = forward_offer(&cfg, &sdp(&only_te_renumbered), &mut b2).unwrap();
    // opus keeps 111 on B, telephone-event keeps 101: no number changed meaning.
    assert_eq!(ob.media[0].formats, ["111", "0", "101"]);
}

#[test]
fn re_invite_from_the_other_leg_uses_each_legs_numbers() {
    // The B2BUA is symmetric: B re-INVITEs (hold), voxgate offers to A, A answers.
    let cfg = SdpConfig::default();
    let (mut a, mut b) = legs();
    bridge(
        &cfg,
        &sdp(TWILIO),
        |_| b_answer("0 96", &["a=rtpmap:96 telephone-event/8000"]),
        &mut a,
        &mut b,
    );
    let b_hold = b_answer("0 96", &["a=rtpmap:96 telephone-event/8000", "a=sendonly"]);
    let (offer_a, pending) = forward_offer(&cfg, &b_hold, &mut a).unwrap();
    // Towards A: A's own telephone-event number (101), bumped A version.
    assert_eq!(offer_a.media[0].formats, ["0", "101"]);
    assert_eq!(offer_a.media[0].direction(), Some(Direction::SendOnly));
    assert_eq!(offer_a.origin.session_version, 2);
    let a_answer = sdp(&TWILIO.replace("a=sendrecv", "a=recvonly"));
    let answer_b = pending.answer(&cfg, &a_answer, &mut a, &mut b).unwrap();
    // Towards B: B's numbers (96), B's version bumped, recvonly.
    assert_eq!(answer_b.media[0].formats, ["0", "96"]);
    assert_eq!(answer_b.media[0].direction(), Some(Direction::RecvOnly));
    assert_eq!(answer_b.origin.session_version, 2);
    assert_eq!(answer_b.origin.session_id, 2002);
    let t = PtTranslation::new(b.media.as_ref().unwrap(), a.media.as_ref().unwrap());
    assert_eq!(t.get(96), Some(101));
}

#[test]
fn local_session_versions() {
    let mut s = LocalSession::new(42);
    let mut x = sdp(TWILIO);
    s.stamp(&mut x);
    assert_eq!((x.origin.session_id, x.origin.session_version), (42, 1));
    s.stamp(&mut x);
    assert_eq!(x.origin.session_version, 1);
    x.media[0]
        .attributes
        .push(Attribute::Ptime(PacketTime::from_millis(30).unwrap()));
    s.stamp(&mut x);
    assert_eq!(x.origin.session_version, 2);
    assert_eq!(s.version, 2);
}

/// voxgate answers itself (a menu, a prompt): one voice codec, the offerer's first it
/// supports, plus telephone-event at that clock, with the offerer's numbers; the leg's
/// media points at the offerer.
#[test]
fn own_answer_picks_one_voice_codec_and_events() {
    let (mut a, _) = legs();
    // Twilio offers PCMU, PCMA and telephone-event 101.
    let answer = crate::sdp::answer_offer(&SdpConfig::default(), &sdp(TWILIO), &mut a).unwrap();
    assert_round_trip(&answer);
    let m = &answer.media[0];
    assert_eq!(m.port, 20000);
    assert_eq!(m.formats, ["0", "101"], "{answer}");
    let media = a.media.as_ref().unwrap();
    assert_eq!(
        media.remote.map(|r| r.rtp),
        Some("54.172.60.1:16852".parse().unwrap())
    );
    assert_eq!(media.direction, Direction::SendRecv);
    let sends: Vec<u8> = media.send.iter().map(|(pt, _)| pt).collect();
    assert_eq!(sends, [0, 101]);
}

#[test]
fn own_answer_to_an_unusable_offer_changes_nothing() {
    let (mut a, _) = legs();
    let before = a.clone();
    let err = crate::sdp::answer_offer(&SdpConfig::default(), &sdp(G729_ONLY), &mut a);
    assert_eq!(err.unwrap_err(), NegotiationError::NoCommonCodec);
    assert_eq!(a, before);
}

#[test]
fn own_offer_lists_the_codecs_asked_for_and_takes_the_answer() {
    let (mut a, _) = legs();
    let cfg = SdpConfig::default();
    let (offer, pending) = crate::sdp::create_offer(&cfg, &cfg.codecs, &mut a).unwrap();
    assert_round_trip(&offer);
    let m = &offer.media[0];
    assert_eq!(m.port, 20000);
    assert_eq!(m.formats, ["0", "8", "101"], "{offer}");
    assert_eq!(offer.origin.session_version, 1);
    // The phone picks PCMA and events at its own number.
    let answer = b_answer(
        "8 96",
        &["a=rtpmap:8 PCMA/8000", "a=rtpmap:96 telephone-event/8000"],
    );
    pending.accept(&cfg, &answer, &mut a).unwrap();
    let media = a.media.as_ref().unwrap();
    assert_eq!(
        media.remote.map(|r| r.rtp),
        Some("198.51.100.7:30000".parse().unwrap())
    );
    let sends: Vec<u8> = media.send.iter().map(|(pt, _)| pt).collect();
    assert_eq!(sends, [8, 96]);
    let recv: Vec<u8> = media.recv.iter().map(|(pt, _)| pt).collect();
    assert_eq!(recv, [8, 101], "what the phone sends is our numbering");
}

#[test]
fn own_offer_restricted_to_one_codec_and_a_bad_answer_changes_nothing() {
    let (mut a, _) = legs();
    let cfg = SdpConfig::default();
    let (offer, pending) =
        crate::sdp::create_offer(&cfg, &[Codec::pcma(), Codec::telephone_event()], &mut a).unwrap();
    assert_eq!(offer.media[0].formats, ["8", "101"]);
    let before = a.clone();
    let g729 = b_answer("18", &["a=rtpmap:18 G729/8000"]);
    assert_eq!(
        pending.accept(&cfg, &g729, &mut a).unwrap_err(),
        NegotiationError::NoCommonCodec
    );
    assert_eq!(a, before);
    // Only events (no voice codec) cannot be offered.
    let (mut c, _) = legs();
    assert_eq!(
        crate::sdp::create_offer(&cfg, &[Codec::telephone_event()], &mut c).unwrap_err(),
        NegotiationError::NoCommonCodec
    );
}

/// voxgate's gateway settings: relays and transcodes G.711, G.722 and Opus.
fn transcoding_cfg() -> SdpConfig {
    let voice = [
        Codec::pcmu(),
        Codec::pcma(),
        Codec::new("G722", 8000, 1),
        Codec::new("opus", 48_000, 2),
    ];
    let events = [
        Codec::telephone_event(),
        Codec {
            clock_rate: 48_000,
            ..Codec::telephone_event()
        },
    ];
    SdpConfig {
        codecs: voice.iter().chain(&events).cloned().collect(),
        transcode: voice.to_vec(),
        ..SdpConfig::default()
    }
}

/// An offer with one audio line of `formats` and `lines`.
fn a_offer(formats: &str, lines: &[&str]) -> SessionDescription {
    let mut text = format!(
        "v=0\r\no=alice 5 5 IN IP4 192.0.2.5\r\ns=-\r\nc=IN IP4 192.0.2.5\r\nt=0 0\r\n\
         m=audio 40000 RTP/AVP {formats}\r\n"
    );
    for l in lines {
        text.push_str(l);
        text.push_str("\r\n");
    }
    sdp(&text)
}

#[test]
fn an_opus_only_offer_is_forwarded_with_what_voxgate_transcodes_to() {
    let cfg = transcoding_cfg();
    let (mut a, mut b) = legs();
    let offer = a_offer(
        "111 110",
        &[
            "a=rtpmap:111 opus/48000/2",
            "a=fmtp:111 useinbandfec=1",
            "a=rtpmap:110 telephone-event/48000",
        ],
    );
    let (offer_b, answer_a) = bridge(
        &cfg,
        &offer,
        // B has only PCMU and telephone-event at 8 kHz.
        |_| {
            b_answer(
                "0 101",
                &["a=rtpmap:0 PCMU/8000", "a=rtpmap:101 telephone-event/8000"],
            )
        },
        &mut a,
        &mut b,
    );
    // The offerer's codecs first, then what voxgate can transcode to, with
    // telephone-event at the added codecs' clock.
    let b_codecs: Vec<String> = offer_b.media[0]
        .payload_types()
        .map(|pt| offer_b.media[0].codec(pt).unwrap().to_string())
        .collect();
    assert_eq!(
        b_codecs,
        [
            "opus/48000/2",
            "telephone-event/48000",
            "PCMU/8000",
            "PCMA/8000",
            "G722/8000",
            "telephone-event/8000"
        ]
    );
    // A gets an answer in its own codec and numbers: it never sees PCMU; and is asked
    // for narrowband Opus, all that PCMU carries (RFC 7587 §6.1).
    assert_eq!(answer_a.media[0].formats, ["111", "110"]);
    assert!(
        attrs(&answer_a, 0)
            .contains(&"a=fmtp:111 maxplaybackrate=8000;sprop-maxcapturerate=8000".to_owned()),
        "{:?}",
        attrs(&answer_a, 0)
    );
    let (ma, mb) = (a.media.as_ref().unwrap(), b.media.as_ref().unwrap());
    assert_eq!(
        ma.send.payload_type(&Codec::new("opus", 48_000, 2)),
        Some(111)
    );
    assert_eq!(ma.send.payload_type(&Codec::pcmu()), None);
    assert_eq!(mb.send.payload_type(&Codec::pcmu()), Some(0));
    assert_eq!(mb.send.payload_type(&Codec::telephone_event()), Some(101));
    // No voice codec crosses as it is: the relay must transcode.
    let a_to_b = PtTranslation::new(ma, mb);
    assert_eq!(a_to_b.get(111), None);
}

#[test]
fn a_shared_codec_is_relayed_even_when_voxgate_could_transcode() {
    let cfg = transcoding_cfg();
    let (mut a, mut b) = legs();
    let offer = sdp(BARESIP);
    // B picks PCMA, which A offered: relayed as it is, and the answer to A says PCMA.
    let (_, answer_a) = bridge(
        &cfg,
        &offer,
        |_| b_answer("8", &["a=rtpmap:8 PCMA/8000"]),
        &mut a,
        &mut b,
    );
    assert_eq!(answer_a.media[0].formats, ["8"]);
    let a_to_b = PtTranslation::new(a.media.as_ref().unwrap(), b.media.as_ref().unwrap());
    assert_eq!(a_to_b.get(8), Some(8));
}

#[test]
fn without_a_decodable_codec_nothing_is_added() {
    let cfg = transcoding_cfg();
    let (_, mut b) = legs();
    // G.729 and PCMU: PCMU is decodable, so the others are added…
    let offer = a_offer("18 0", &["a=rtpmap:18 G729/8000", "a=rtpmap:0 PCMU/8000"]);
    let (offer_b, _) = forward_offer(&cfg, &offer, &mut b).unwrap();
    assert_eq!(offer_b.media[0].formats, ["0", "8", "9", "96"]);
    // Opus added beside PCMU asks for narrowband only.
    assert!(
        attrs(&offer_b, 0)
            .contains(&"a=fmtp:96 maxplaybackrate=8000;sprop-maxcapturerate=8000".to_owned()),
        "{:?}",
        attrs(&offer_b, 0)
    );
    // …and with the default settings (no transcoding) nothing is.
    let (_, mut b) = legs();
    let (offer_b, _) = forward_offer(&SdpConfig::default(), &offer, &mut b).unwrap();
    assert_eq!(offer_b.media[0].formats, ["0"]);
}
