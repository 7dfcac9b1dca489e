use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::{assert_round_trip, sdp, ALL, BARESIP, IPV6, PJSUA, TWILIO, WEBRTC};
use crate::sdp::{
    AddrType, Attribute, Bandwidth, Codec, ConnectionAddress, Direction, Field, LineError,
    MediaType, PacketTime, ParseError, Proto, SessionDescription,
};

fn other(name: &str, value: Option<&str>) -> Attribute {
    Attribute::other(name, value)
}

#[test]
fn baresip_offer() {
    let s = sdp(BARESIP);
    assert_eq!(s.origin.username, "-");
    assert_eq!(s.origin.session_id, 1_529_316_486);
    assert_eq!(s.origin.session_version, 3_014_016_547);
    assert_eq!(s.origin.addr_type, AddrType::Ip4);
    assert_eq!(s.session_name, "-");
    assert_eq!(
        s.connection.as_ref().unwrap().ip_addr(),
        Some(IpAddr::V4(Ipv4Addr::new(192, 168, 1, 23)))
    );
    assert_eq!(s.attributes, [other("tool", Some("baresip 3.10.1"))]);
    let [m] = s.media.as_slice() else {
        panic!("one m-line")
    };
    assert_eq!(
        (m.media.clone(), m.port, m.proto.clone()),
        (MediaType::Audio, 10420, Proto::RtpAvp)
    );
    assert_eq!(m.formats, ["96", "0", "8", "101"]);
    assert_eq!(
        m.bandwidths,
        [Bandwidth {
            kind: "AS".into(),
            value: 96
        }]
    );
    assert_eq!(
        m.codec(96),
        Some(Codec::new("opus", 48000, 2).with_fmtp("stereo=1;sprop-stereo=1"))
    );
    assert_eq!(
        m.codec(101),
        Some(Codec::new("telephone-event", 8000, 1).with_fmtp("0-15"))
    );
    assert_eq!(m.ptime(), PacketTime::from_millis(20));
    assert_eq!(s.direction_for(m), Direction::SendRecv);
    assert!(!m.rtcp_mux());
    // Unknown attributes survive verbatim, in order.
    assert!(m.attributes.contains(&other("rtcp-rsize", None)));
    assert!(m.attributes.contains(&other(
        "ssrc",
        Some("2435373837 cname:8ec8f5c0-d4d5-4c0a-a2b2-4d2e0b0b1b25")
    )));
}

#[test]
fn pjsua_offer() {
    let s = sdp(PJSUA);
    assert_eq!(s.session_name, "pjmedia");
    assert!(s.connection.is_none());
    assert_eq!(
        s.bandwidths,
        [Bandwidth {
            kind: "AS".into(),
            value: 84
        }]
    );
    let m = &s.media[0];
    // Media-level c= applies when the session has none (RFC 8866 §5.7).
    let c = s.connection_for(m).unwrap();
    assert_eq!(c.ip_addr(), Some(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 15))));
    let (port, rtcp_conn) = m.rtcp().unwrap();
    assert_eq!(port, 4001);
    assert_eq!(rtcp_conn.unwrap().ip_addr(), c.ip_addr());
    assert_eq!(m.bandwidths.len(), 2);
    assert_eq!(m.codec(3), Some(Codec::new("GSM", 8000, 1)));
    assert_eq!(m.codec(99).unwrap().fmtp.as_deref(), Some("mode=30"));
    assert_eq!(
        m.codec(120),
        Some(Codec::new("telephone-event", 16000, 1).with_fmtp("0-16"))
    );
    assert_eq!(
        m.payload_types().collect::<Vec<_>>(),
        [96, 97, 98, 99, 3, 0, 8, 9, 120, 121]
    );
}

#[test]
fn twilio_offer() {
    let s = sdp(TWILIO);
    assert_eq!(s.session_name, "Twilio Media Gateway");
    let m = &s.media[0];
    assert_eq!(m.ptime(), PacketTime::from_millis(20));
    assert_eq!(m.max_ptime(), PacketTime::from_millis(150));
    assert_eq!(m.rtcp(), Some((16853, None)));
    assert_eq!(m.direction(), Some(Direction::SendRecv));
    assert_eq!(m.codec(0), Some(Codec::pcmu()));
    assert_eq!(m.codec(8), Some(Codec::pcma()));
    assert_eq!(m.codec(101), Some(Codec::telephone_event()));
}

#[test]
fn webrtc_offer_with_many_attributes() {
    let s = sdp(WEBRTC);
    assert_eq!(s.origin.session_id, 4_611_731_400_430_051_336);
    assert_eq!(s.attributes[0], other("group", Some("BUNDLE 0 1")));
    // The value keeps its leading space: verbatim means verbatim.
    assert_eq!(
        s.attributes[2],
        other("msid-semantic", Some(" WMS stream0"))
    );
    let [audio, video] = s.media.as_slice() else {
        panic!("two m-lines")
    };
    assert_eq!(audio.proto, Proto::UdpTlsRtpSavpf);
    assert!(audio.proto.is_rtp() && !audio.proto.is_plain_rtp());
    assert_eq!(audio.mid(), Some("0"));
    assert!(audio.rtcp_mux());
    assert!(s.connection_for(audio).unwrap().is_unspecified());
    assert_eq!(
        audio.codec(63),
        Some(Codec::new("red", 48000, 2).with_fmtp("111/111"))
    );
    assert_eq!(audio.codec(13), Some(Codec::new("CN", 8000, 1)));
    assert_eq!(video.media, MediaType::Video);
    assert_eq!(video.mid(), Some("1"));
    assert_eq!(video.codec(97).unwrap().fmtp.as_deref(), Some("apt=96"));
    assert!(video
        .attributes
        .contains(&other("rtcp-fb", Some("96 nack pli"))));
}

#[test]
fn ipv6_and_static_payload_types() {
    let s = sdp(IPV6);
    assert_eq!(s.origin.addr_type, AddrType::Ip6);
    assert_eq!(s.origin.address, "2001:db8::10");
    let ip: Ipv6Addr = "2001:db8::10".parse().unwrap();
    assert_eq!(
        s.connection.as_ref().unwrap().ip_addr(),
        Some(IpAddr::V6(ip))
    );
    // PT 0 has no rtpmap: RFC 3551 Table 4.
    assert_eq!(s.media[0].codec(0), Some(Codec::pcmu()));
    assert_eq!(s.media[0].codec(102), None);
}

#[test]
fn static_table() {
    for (pt, name, clock) in [
        (0, "PCMU", 8000),
        (8, "PCMA", 8000),
        (9, "G722", 8000),
        (18, "G729", 8000),
        (13, "CN", 8000),
    ] {
        let c = Codec::from_static_payload_type(pt).unwrap();
        assert_eq!(
            (c.name.as_str(), c.clock_rate, c.channels),
            (name, clock, 1)
        );
        assert_eq!(c.static_payload_type(), Some(pt));
    }
    assert_eq!(
        Codec::from_static_payload_type(10),
        Some(Codec::new("L16", 44100, 2))
    );
    assert_eq!(Codec::from_static_payload_type(2), None); // unassigned since RFC 3551
    assert_eq!(Codec::from_static_payload_type(101), None);
    assert_eq!(Codec::new("pcmu", 8000, 1).static_payload_type(), Some(0));
    assert_eq!(Codec::telephone_event().static_payload_type(), None);
}

#[test]
fn every_fixture_round_trips() {
    for text in ALL {
        assert_round_trip(&sdp(text));
    }
    assert_round_trip(&sdp(&super::webrtc_plain()));
}

#[test]
fn lf_crlf_and_trailing_whitespace_are_equivalent() {
    let crlf = sdp(TWILIO);
    assert_eq!(sdp(&TWILIO.replace("\r\n", "\n")), crlf);
    assert_eq!(sdp(&TWILIO.replace("\r\n", " \t\r\n")), crlf);
    assert_eq!(sdp(&format!("{TWILIO}\r\n\r\n")), crlf);
    // The serialiser is canonical: the LF input serialises to the CRLF one.
    assert_eq!(sdp(BARESIP).to_string(), BARESIP.replace('\n', "\r\n"));
}

#[test]
fn media_direction_overrides_session() {
    let s = sdp(
        "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\na=sendonly\r\n\
        m=audio 5000 RTP/AVP 0\r\nm=audio 5002 RTP/AVP 0\r\na=inactive\r\n",
    );
    assert_eq!(s.direction_for(&s.media[0]), Direction::SendOnly);
    assert_eq!(s.direction_for(&s.media[1]), Direction::Inactive);
}

#[test]
fn connection_forms() {
    let base = "v=0\r\no=- 1 1 IN IP4 h\r\ns=-\r\nt=0 0\r\nm=audio 5000 RTP/AVP 0\r\n";
    let s = sdp(&format!("{base}c=IN IP4 224.2.1.1/127/3\r\n"));
    let c = s.media[0].connection.as_ref().unwrap();
    assert_eq!(c.multicast.as_deref(), Some("127/3"));
    assert_round_trip(&s);
    let s = sdp(&format!("{base}c=IN IP4 media.example.com\r\n"));
    let c = s.media[0].connection.as_ref().unwrap();
    assert_eq!(
        c.address,
        ConnectionAddress::Fqdn(AddrType::Ip4, "media.example.com".into())
    );
    assert_eq!(c.ip_addr(), None);
    let s = sdp(&format!("{base}c=IN IP4 0.0.0.0\r\n"));
    assert!(s.media[0].connection.as_ref().unwrap().is_unspecified());
    let s = sdp(&format!("{base}c=IN IP6 ::\r\n"));
    assert!(s.media[0].connection.as_ref().unwrap().is_unspecified());
}

#[test]
fn liberal_defaults_and_sloppy_rejections() {
    // No s= and no t= (seen from some gateways): read as "-" and "t=0 0".
    let s = sdp("v=0\no=- 1 1 IN IP4 192.0.2.1\nc=IN IP4 192.0.2.1\nm=audio 5000 RTP/AVP 0\n");
    assert_eq!(s.session_name, "-");
    assert_eq!(
        (s.timings.len(), s.timings[0].start, s.timings[0].stop),
        (1, 0, 0)
    );
    assert_round_trip(&s);
    // A rejected m-line without formats.
    let s = sdp("v=0\no=- 1 1 IN IP4 h\ns=-\nt=0 0\nm=video 0 RTP/AVP\n");
    assert!(s.media[0].formats.is_empty());
    assert_round_trip(&s);
    // Non-RTP formats are free-form (RFC 8866 §5.14).
    let s = sdp(
        "v=0\no=- 1 1 IN IP4 h\ns=-\nt=0 0\nm=application 5000 UDP/DTLS/SCTP webrtc-datachannel\n",
    );
    assert_eq!(s.media[0].proto, Proto::Other("UDP/DTLS/SCTP".into()));
    assert_eq!(s.media[0].payload_types().count(), 0);
    // Optional lines, repeat times, port counts, fmtp without parameters.
    let s = sdp("v=0\r\no=jdoe 2890844526 2890842807 IN IP4 10.47.16.5\r\ns=SDP Seminar\r\n\
        i=A Seminar\r\nu=http://www.example.com/seminars/sdp.pdf\r\ne=j.doe@example.com (Jane Doe)\r\n\
        p=+1 617 555-6011\r\nc=IN IP4 224.2.17.12/127\r\nt=2873397496 2873404696\r\nr=7d 1h 0 25h\r\n\
        z=2882844526 -1h 2898848070 0\r\nk=prompt\r\na=recvonly\r\nm=audio 49170/2 RTP/AVP 0\r\n\
        i=voice\r\nk=prompt\r\na=fmtp:0\r\n");
    assert_eq!(s.timings[0].repeats, ["7d 1h 0 25h"]);
    assert_eq!(s.media[0].port_count, Some(2));
    assert_eq!(s.media[0].fmtp("0"), Some(""));
    assert_round_trip(&s);
}

fn err(text: &str) -> ParseError {
    SessionDescription::parse(text.as_bytes()).unwrap_err()
}

fn line_err(text: &str) -> (usize, LineError) {
    match err(text) {
        ParseError::Line { line, kind } => (line, kind),
        other => panic!("{text:?}: expected a line error, got {other:?}"),
    }
}

const HEAD: &str = "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nt=0 0\r\n";

/// Put `line` after HEAD (line 5) and expect `kind` on its last line.
fn bad_line(line: &str, kind: LineError) {
    let at = 5 + line.matches('\n').count();
    assert_eq!(
        line_err(&format!("{HEAD}{line}\r\n")),
        (at, kind),
        "{line:?}"
    );
}

/// Put `line` inside a media section (line 6) and expect `kind` on its last line.
fn bad_media_line(line: &str, kind: LineError) {
    let text = format!("{HEAD}m=audio 5000 RTP/AVP 0\r\n{line}\r\n");
    let at = 6 + line.matches('\n').count();
    assert_eq!(line_err(&text), (at, kind), "{line:?}");
}

#[test]
fn structural_errors() {
    assert_eq!(err(""), ParseError::Empty);
    assert_eq!(err("\r\n \r\n\n"), ParseError::Empty);
    assert_eq!(err("v=0\r\n"), ParseError::Missing('o'));
    assert_eq!(err("v=0\r\ns=-\r\n"), ParseError::Missing('o'));
    assert_eq!(
        line_err("o=- 1 1 IN IP4 h\r\nv=0\r\n"),
        (1, LineError::VersionNotFirst)
    );
    assert_eq!(line_err("v=1\r\n"), (1, LineError::UnsupportedVersion));
    assert_eq!(line_err(" v=0\r\n"), (1, LineError::Syntax));
    assert_eq!(line_err("\r\nv=0\r\nhello\r\n"), (3, LineError::Syntax));
    assert_eq!(
        line_err("v=0\r\no=- 1 1 IN IP4 h\r\nv=0\r\n"),
        (3, LineError::Duplicate('v'))
    );
    bad_line("o=- 2 2 IN IP4 h", LineError::Duplicate('o'));
    bad_line("s=again", LineError::Duplicate('s'));
    bad_line("x=unknown", LineError::UnknownType('x'));
    assert_eq!(
        line_err("v=0\r\no=- 1 1 IN IP4 h\r\ns=-\r\nr=7d 1h 0 25h\r\nt=0 0\r\n"),
        (4, LineError::Misplaced('r'))
    );
    bad_line(
        "c=IN IP4 192.0.2.1\r\nc=IN IP4 192.0.2.2",
        LineError::Duplicate('c'),
    );
    bad_line("i=one\r\ni=two", LineError::Duplicate('i'));
    for kind in ['t', 'o', 's', 'r', 'z', 'e', 'p', 'u', 'v'] {
        bad_media_line(&format!("{kind}=0 0"), LineError::Misplaced(kind));
    }
    bad_media_line(
        "c=IN IP4 192.0.2.1\r\nc=IN IP4 192.0.2.1",
        LineError::Duplicate('c'),
    );
    bad_media_line("y=1", LineError::UnknownType('y'));
    bad_media_line("A=sendrecv", LineError::UnknownType('A'));
}

#[test]
fn not_utf8_names_the_line() {
    let mut text = format!("{HEAD}a=tool:").into_bytes();
    text.extend_from_slice(&[0xff, 0xfe, b'\r', b'\n']);
    assert_eq!(
        SessionDescription::parse(&text),
        Err(ParseError::Line {
            line: 5,
            kind: LineError::NotUtf8
        })
    );
}

#[test]
fn field_errors() {
    use Field::*;
    let inv = LineError::Invalid;
    let origin = |o: &str| line_err(&format!("v=0\r\n{o}\r\n"));
    assert_eq!(origin("o=- abc 1 IN IP4 h"), (2, inv(SessionId)));
    assert_eq!(origin("o=- 1 +1 IN IP4 h"), (2, inv(SessionVersion)));
    assert_eq!(
        origin("o=- 99999999999999999999999 1 IN IP4 h"),
        (2, inv(SessionId))
    );
    assert_eq!(origin("o=- 1 1 IN IP4"), (2, inv(Origin)));
    assert_eq!(origin("o=- 1 1 IN IP4 h extra"), (2, inv(Origin)));
    assert_eq!(
        origin("o=- 1 1 ATM NSAP h"),
        (2, LineError::UnsupportedNetType)
    );
    assert_eq!(origin("o=- 1 1 IN IPX h"), (2, inv(AddrType)));

    bad_line("c=IN IP4 ::1", inv(Address));
    bad_line("c=IN IP6 192.0.2.1", inv(Address));
    bad_line("c=IN IP4 1.2.3", inv(Address));
    bad_line("c=IN IP4 bad_host!", inv(Address));
    bad_line("c=IN IP4 224.2.1.1/", inv(Address));
    bad_line("c=IN IP5 192.0.2.1", inv(AddrType));
    bad_line("c=IN IP4", inv(Connection));
    bad_line("c=ATM NSAP x", LineError::UnsupportedNetType);
    bad_line("b=AS", inv(Bandwidth));
    bad_line("b=AS:fast", inv(Bandwidth));
    bad_line("t=0", inv(Timing));
    bad_line("t=now later", inv(Timing));
    bad_line("m=audio", inv(Media));
    bad_line("m=audio 70000 RTP/AVP 0", inv(Port));
    bad_line("m=audio -1 RTP/AVP 0", inv(Port));
    bad_line("m=audio 5000/0 RTP/AVP 0", inv(PortCount));
    bad_line("m=audio 5000/x RTP/AVP 0", inv(PortCount));
    bad_line("m=audio 5000 RTP/AVP", inv(Formats));
    bad_line("m=audio 5000 RTP/AVP 0 128", inv(PayloadType));
    bad_line("m=audio 5000 RTP/AVP PCMU", inv(PayloadType));
    bad_line("a=", inv(AttributeName));
    bad_line("a=:x", inv(AttributeName));
    bad_line("a=foo bar", inv(AttributeName));
    bad_attribute("a=rtpmap:", Rtpmap);
    bad_attribute("a=rtpmap:101", Rtpmap);
    bad_attribute("a=rtpmap:101 telephone-event", Rtpmap);
    bad_attribute("a=rtpmap:101 /8000", Rtpmap);
    bad_attribute("a=rtpmap:101 opus/48000/2/1", Rtpmap);
    bad_attribute("a=rtpmap:101 a/8000 b", Rtpmap);
    bad_attribute("a=rtpmap:x PCMU/8000", PayloadType);
    bad_attribute("a=rtpmap:200 PCMU/8000", PayloadType);
    bad_attribute("a=rtpmap:101 telephone-event/0", ClockRate);
    bad_attribute("a=rtpmap:101 telephone-event/8k", ClockRate);
    bad_attribute("a=rtpmap:111 opus/48000/0", Channels);
    bad_attribute("a=rtpmap:111 opus/48000/two", Channels);
    bad_attribute("a=fmtp:", Fmtp);
    bad_attribute("a=ptime:", Ptime);
    bad_attribute("a=ptime:20ms", Ptime);
    bad_attribute("a=ptime:+20", Ptime);
    bad_attribute("a=ptime:0", Ptime);
    bad_attribute("a=ptime:0.0", Ptime);
    bad_attribute("a=ptime:.5", Ptime);
    bad_attribute("a=ptime:20.x", Ptime);
    bad_attribute("a=ptime:20.5.1", Ptime);
    bad_attribute("a=ptime:4294968", Ptime);
    bad_attribute("a=maxptime:-1", MaxPtime);
    bad_attribute("a=sendonly:yes", Direction);
    bad_attribute("a=inactive:", Direction);
    bad_attribute("a=rtcp:", Rtcp);
    bad_attribute("a=rtcp:abc", Rtcp);
    bad_attribute("a=rtcp:70000", Rtcp);
    bad_attribute("a=rtcp:5001 IN IP4", Rtcp);
    bad_attribute("a=rtcp:5001 ATM NSAP x", Rtcp);
    bad_attribute("a=rtcp-mux:yes", RtcpMux);
    bad_attribute("a=mid:", Mid);
}

/// A modelled attribute with a bad value parses as `Attribute::Invalid` with the reason,
/// verbatim, and is ignored by the accessors (RFC 8866 §5.13).
fn bad_attribute(line: &str, reason: Field) {
    let s = sdp(&format!("{HEAD}m=audio 5000 RTP/AVP 0\r\n{line}\r\n"));
    let m = &s.media[0];
    let [Attribute::Invalid { reason: r, .. }] = m.attributes.as_slice() else {
        panic!("{line:?}: {:?}", m.attributes);
    };
    assert_eq!(*r, reason, "{line:?}");
    assert_eq!(m.attributes[0].to_string(), line);
    assert_eq!(
        (m.ptime(), m.rtcp(), m.rtcp_mux(), m.mid(), m.direction()),
        (None, None, false, None, None)
    );
    assert_eq!(
        m.codec(0),
        Some(Codec::pcmu()),
        "a bad rtpmap does not remap"
    );
    assert_round_trip(&s);
}

#[test]
fn errors_map_to_sip_status() {
    assert_eq!(err("v=1\r\n").sip_status(), 488);
    assert_eq!(err("v=0\r\no=- 1 1 ATM NSAP h\r\n").sip_status(), 488);
    assert_eq!(err("v=0\r\n").sip_status(), 400);
    assert_eq!(err("garbage").sip_status(), 400);
    assert_eq!(err("").sip_status(), 400);
    // Errors say where: the Display text names the line and the field.
    let e = err(&format!("{HEAD}m=audio 5000 RTP/AVP 0 200\r\n"));
    assert_eq!(e.to_string(), "SDP line 5: invalid RTP payload type");
}

#[test]
fn attribute_names_are_matched_case_insensitively() {
    let s = sdp(&format!(
        "{HEAD}m=audio 5000 RTP/AVP 0\r\na=SendOnly\r\na=PTIME:30\r\na=RTCP-MUX\r\n"
    ));
    let m = &s.media[0];
    assert_eq!(
        (m.direction(), m.ptime(), m.rtcp_mux()),
        (Some(Direction::SendOnly), PacketTime::from_millis(30), true)
    );
    assert_round_trip(&s);
}

#[test]
fn fractional_packet_times() {
    // RFC 8866 §6.4: ptime is non-zero-int-or-real milliseconds.
    for (text, micros, canonical) in [
        ("20", 20_000, "20"),
        ("22.5", 22_500, "22.5"),
        ("22.50", 22_500, "22.5"),
        ("0.125", 125, "0.125"),
        ("30.", 30_000, "30"),
        ("10.0001", 10_000, "10"),
    ] {
        let s = sdp(&format!(
            "{HEAD}m=audio 5000 RTP/AVP 0\r\na=ptime:{text}\r\na=maxptime:{text}\r\n"
        ));
        let m = &s.media[0];
        assert_eq!(m.ptime().map(PacketTime::micros), Some(micros), "{text}");
        assert_eq!(m.max_ptime(), m.ptime());
        assert_eq!(m.ptime().unwrap().to_string(), canonical);
        assert_round_trip(&s);
    }
    assert_eq!(PacketTime::from_millis(0), None);
    assert_eq!(
        PacketTime::from_millis(20).map(PacketTime::millis),
        Some(20)
    );
}

/// The SDP body of an RFC 4475 torture message (the bytes after the first `\nv=0`).
fn torture_body(message: &[u8]) -> &[u8] {
    let at = message.windows(4).position(|w| w == b"\nv=0").unwrap();
    &message[at + 1..]
}

#[test]
fn rfc4475_torture_bodies() {
    use crate::sdp::{forward_offer, LegSdp, LocalMedia, LocalSession, SdpConfig};
    // Valid messages (wsinv §3.1.1.1, esc01 §3.1.1.3, sdp01 §3.4.15) carry a video line
    // with `a=rtpmap:31 LPC` (no clock rate): kept as Invalid, the call still bridges.
    for message in [
        &include_bytes!("../../../tests/torture/wsinv.dat")[..],
        &include_bytes!("../../../tests/torture/esc01.dat")[..],
        &include_bytes!("../../../tests/torture/sdp01.dat")[..],
        &include_bytes!("../../../tests/torture/inv2543.dat")[..],
    ] {
        let s = SessionDescription::parse(torture_body(message)).unwrap();
        assert_round_trip(&s);
        let mut leg = LegSdp::new(
            LocalSession::new(1),
            LocalMedia {
                address: IpAddr::V4(Ipv4Addr::LOCALHOST),
                rtp_port: 20000,
            },
        );
        let (offer, _) = forward_offer(&SdpConfig::default(), &s, &mut leg).unwrap();
        assert_eq!(offer.media[0].formats, ["0"]);
    }
    let s = SessionDescription::parse(torture_body(include_bytes!(
        "../../../tests/torture/wsinv.dat"
    )))
    .unwrap();
    assert_eq!(
        s.media[1].attributes,
        [Attribute::Invalid {
            name: "rtpmap".into(),
            value: Some("31 LPC".into()),
            reason: Field::Rtpmap
        }]
    );
    // dblreq: the body of the second, ignored request has `m =video`.
    let body = torture_body(include_bytes!("../../../tests/torture/dblreq.dat"));
    assert_eq!(
        SessionDescription::parse(body),
        Err(ParseError::Line {
            line: 7,
            kind: LineError::Syntax
        })
    );
}
