#![allow(clippy::unwrap_used)]

use super::*;

const REGISTER: &str = "REGISTER sip:example.com SIP/2.0\r\n\
Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK776asdhds;rport\r\n\
Max-Forwards: 70\r\n\
To: \"Alice\" <sip:alice@example.com>\r\n\
From: \"Alice\" <sip:alice@example.com>;tag=1928301774\r\n\
Call-ID: a84b4c76e66710@pc33.example.com\r\n\
CSeq: 314159 REGISTER\r\n\
Contact: <sip:alice@192.0.2.10:5060>;expires=3600\r\n\
Content-Length: 0\r\n\
\r\n";

fn parse(s: &str) -> Result<Message, ParseError> {
    Message::parse(Bytes::copy_from_slice(s.as_bytes()))
}

/// A REGISTER whose header lines are `extra`, after the mandatory ones.
fn with_headers(extra: &str) -> String {
    format!(
        "OPTIONS sip:bob@example.com SIP/2.0\r\n\
Via: SIP/2.0/UDP h.example.com;branch=z9hG4bK1\r\n\
From: <sip:a@example.com>;tag=1\r\n\
To: <sip:bob@example.com>\r\n\
Call-ID: x@y\r\n\
CSeq: 1 OPTIONS\r\n{extra}\r\n"
    )
}

#[test]
fn parses_a_plain_register() {
    let m = parse(REGISTER).unwrap();
    assert!(m.is_request());
    assert_eq!(m.method(), Some(&Method::Register));
    assert_eq!(m.request_uri(), Some("sip:example.com"));
    assert_eq!(m.call_id(), "a84b4c76e66710@pc33.example.com");
    assert_eq!(m.cseq().to_string(), "314159 REGISTER");
    assert_eq!(m.from().display_name, Some("Alice"));
    assert_eq!(m.from().tag(), Some("1928301774"));
    assert_eq!(m.to().tag(), None);
    let via = m.top_via();
    assert_eq!(
        (via.transport, via.host, via.port, via.rport),
        ("UDP", "192.0.2.10", Some(5060), Some(None))
    );
    assert_eq!(via.branch, Some("z9hG4bK776asdhds"));
    assert!(via.is_rfc3261_branch());
    assert_eq!(via.params, ";branch=z9hG4bK776asdhds;rport");
    assert_eq!(
        via.to_string(),
        "SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK776asdhds;rport"
    );
    assert_eq!(m.max_forwards(), Ok(Some(70)));
    let c = m.contacts().unwrap().unwrap();
    assert_eq!(c.as_slice()[0].expires(), Ok(Some(3600)));
    assert_eq!(m.expires(), Ok(None));
    assert_eq!(m.body(), b"");
    assert_eq!(m.header_len(), REGISTER.len());
}

#[test]
fn compact_forms_and_any_case() {
    let s = "INVITE sip:bob@example.com SIP/2.0\r\n\
v: SIP/2.0/TCP h.example.com;branch=z9hG4bKa\r\n\
f: <sip:a@example.com>;tag=9\r\n\
T: sip:bob@example.com\r\n\
i: cid-1\r\n\
cSeQ: 2 INVITE\r\n\
m: <sip:a@h.example.com>\r\n\
k: 100rel, timer\r\n\
c: application/sdp\r\n\
o: presence\r\n\
x: 1800;refresher=uac\r\n\
r: <sip:carol@example.com>\r\n\
L: 4\r\n\
\r\nabcd";
    let m = parse(s).unwrap();
    assert_eq!(m.top_via().transport, "TCP");
    assert_eq!(m.from().tag(), Some("9"));
    assert_eq!(m.to().uri, "sip:bob@example.com");
    assert_eq!(m.call_id(), "cid-1");
    assert_eq!(m.contacts().unwrap().unwrap().as_slice().len(), 1);
    assert_eq!(m.supported().collect::<Vec<_>>(), ["100rel", "timer"]);
    assert_eq!(m.content_type(), Some("application/sdp"));
    assert_eq!(m.header(HeaderName::Event), Some("presence"));
    assert_eq!(
        m.header_named("Session-Expires"),
        Some("1800;refresher=uac")
    );
    assert_eq!(m.header_named("refer-to"), Some("<sip:carol@example.com>"));
    assert_eq!(m.header_named("R"), Some("<sip:carol@example.com>"));
    assert_eq!(m.header_named("content-LENGTH"), Some("4"));
    assert_eq!(m.body(), b"abcd");
    assert_eq!(
        HeaderName::from_name("WWW-authenticate"),
        HeaderName::WwwAuthenticate
    );
    assert_eq!(HeaderName::from_name("X-Custom"), HeaderName::Other);
    assert_eq!(HeaderName::CallId.as_str(), Some("Call-ID"));
    assert_eq!(HeaderName::Other.as_str(), None);
}

#[test]
fn folding_and_whitespace() {
    let s = "OPTIONS sip:bob@example.com SIP/2.0\r\n\
Via  :  SIP / 2.0 / UDP\r\n   h.example.com : 5062 ; branch = z9hG4bKf ;\r\n\trport = 5062\r\n\
From\t:\r\n <sip:a@example.com>\r\n ;tag=7\r\n\
To:<sip:bob@example.com>\r\n\
Call-ID:\tx@y \r\n\
CSeq: 1\r\n OPTIONS\r\n\
Subject: hello\r\n  world\r\n\
\r\n";
    let m = parse(s).unwrap();
    let via = m.top_via();
    assert_eq!(via.host, "h.example.com");
    assert_eq!(via.port, Some(5062));
    assert_eq!(via.branch, Some("z9hG4bKf"));
    assert_eq!(via.rport, Some(Some(5062)));
    assert_eq!(m.from().tag(), Some("7"));
    assert_eq!(m.call_id(), "x@y");
    assert_eq!(m.cseq().seq, 1);
    // Raw, trimmed, fold kept (zero-copy).
    assert_eq!(m.header_named("subject"), Some("hello\r\n  world"));
}

#[test]
fn multi_values_in_order_across_lines() {
    let m = parse(&with_headers(
        "Route: <sip:p1.example.com;lr>, <sip:p2.example.com;lr>\r\n\
Route: <sip:p3.example.com;lr>\r\n\
Record-Route: <sip:rr1.example.com;lr>,<sip:rr2.example.com;lr>\r\n\
Supported: timer\r\nSupported:\r\nk: path , gruu\r\nRequire: 100rel\r\n",
    ))
    .unwrap();
    let routes: Vec<_> = m.routes().map(|r| r.unwrap().uri).collect();
    assert_eq!(
        routes,
        [
            "sip:p1.example.com;lr",
            "sip:p2.example.com;lr",
            "sip:p3.example.com;lr"
        ]
    );
    assert_eq!(m.record_routes().count(), 2);
    assert_eq!(m.supported().collect::<Vec<_>>(), ["timer", "path", "gruu"]);
    assert_eq!(m.require().collect::<Vec<_>>(), ["100rel"]);
    assert_eq!(m.header_values(HeaderName::Route).count(), 2);
}

#[test]
fn quoted_strings_with_commas_do_not_split() {
    let m = parse(&with_headers(
        "Contact: \"Doe, John <x>\" <sip:j@h1.example.com>;q=0.7, <sip:j@h2.example.com;a=b,c>;expires=60\r\n\
Contact: sip:j@h3.example.com;q=1\r\n",
    ))
    .unwrap();
    let Some(Contacts::List(list)) = m.contacts().unwrap() else {
        panic!()
    };
    assert_eq!(list.len(), 3);
    assert_eq!(list[0].display_name, Some("Doe, John <x>"));
    assert_eq!(list[0].q_millis(), Ok(Some(700)));
    assert_eq!(list[1].uri, "sip:j@h2.example.com;a=b,c");
    assert_eq!(list[1].expires(), Ok(Some(60)));
    assert_eq!(list[2].uri, "sip:j@h3.example.com");
    assert_eq!(list[2].q_millis(), Ok(Some(1000)));
    assert_eq!(
        list[0].to_string(),
        "\"Doe, John <x>\" <sip:j@h1.example.com>;q=0.7"
    );
}

#[test]
fn contact_star_and_bad_contacts() {
    let m = parse(&with_headers("Contact: *\r\nExpires: 0\r\n")).unwrap();
    assert_eq!(m.contacts(), Ok(Some(Contacts::Star)));
    assert!(m.contacts().unwrap().unwrap().is_star());
    assert_eq!(m.expires(), Ok(Some(0)));
    let m = parse(&with_headers("Contact: *, <sip:a@b>\r\n")).unwrap();
    assert_eq!(m.contacts(), Err(ParseError::BadHeader("Contact")));
    let m = parse(&with_headers("Contact: <sip:a@b>;q=2\r\n")).unwrap();
    let c = m.contacts().unwrap().unwrap();
    assert_eq!(c.as_slice()[0].q_millis(), Err(ParseError::BadHeader("q")));
    let m = parse(&with_headers("Contact: <sip:a@b\r\n")).unwrap();
    assert!(m.contacts().is_err());
    let m = parse(&with_headers("")).unwrap();
    assert_eq!(m.contacts(), Ok(None));
}

#[test]
fn lazy_scalars() {
    let m = parse(&with_headers(
        "Max-Forwards: 256\r\nExpires: 4294967296\r\n",
    ))
    .unwrap();
    assert_eq!(m.max_forwards(), Err(ParseError::BadHeader("Max-Forwards")));
    assert_eq!(m.expires(), Err(ParseError::BadHeader("Expires")));
    let m = parse(&with_headers("Max-Forwards: 1\r\nMax-Forwards: 2\r\nExpires: 4294967295\r\nMin-Expires: 60\r\nRetry-After: 18000;duration=3600\r\n")).unwrap();
    assert_eq!(m.max_forwards(), Err(ParseError::BadHeader("Max-Forwards")));
    assert_eq!(m.expires(), Ok(Some(u32::MAX)));
    assert_eq!(m.min_expires(), Ok(Some(60)));
    assert_eq!(m.retry_after(), Ok(Some(18000)));
}

#[test]
fn content_length_rules() {
    let base = with_headers("");
    let head = base.trim_end_matches("\r\n");
    let msg = |cl: &str, body: &str| format!("{head}\r\nContent-Length: {cl}\r\n\r\n{body}");
    // Extra bytes are ignored (RFC 3261 §18.3).
    let m = parse(&msg("3", "abcdef")).unwrap();
    assert_eq!(m.body(), b"abc");
    assert_eq!(m.content_length(), Some(3));
    assert_eq!(
        parse(&msg("7", "abcdef")).unwrap_err(),
        ParseError::Truncated
    );
    for bad in ["-1", "+3", "3a", "", "99999999999999999999999999"] {
        assert_eq!(
            parse(&msg(bad, "abc")).unwrap_err(),
            ParseError::BadHeader("Content-Length"),
            "{bad:?}"
        );
    }
    // Absent: the rest of the buffer.
    let m = parse(&format!("{base}xyz")).unwrap();
    assert_eq!(m.body(), b"xyz");
    assert_eq!(m.content_length(), None);
}

#[test]
fn start_line_errors() {
    let tail = "Via: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:c@d>\r\nCall-ID: x\r\nCSeq: 1 OPTIONS\r\n\r\n";
    let req = |line: &str| parse(&format!("{line}\r\n{tail}"));
    assert!(req("OPTIONS sip:c@d SIP/2.0").is_ok());
    // RFC 3261 §7.1: the version is case-insensitive.
    assert!(req("OPTIONS sip:c@d sip/2.0").is_ok());
    assert_eq!(
        req("OPTIONS sip:c@d SIP/3.0").unwrap_err(),
        ParseError::Version
    );
    assert_eq!(
        req("OPTIONS sip:c@d HTTP/1.1").unwrap_err(),
        ParseError::StartLine
    );
    assert_eq!(req("OPTIONS sip:c@d").unwrap_err(), ParseError::StartLine);
    assert_eq!(
        req("OPT(IONS sip:c@d SIP/2.0").unwrap_err(),
        ParseError::StartLine
    );
    assert_eq!(
        req("OPTIONS sip: SIP/2.0").unwrap_err(),
        ParseError::StartLine
    );
    let resp = |line: &str| parse(&format!("{line}\r\n{tail}"));
    let m = resp("SIP/2.0 180 Ringing").unwrap();
    assert_eq!((m.status(), m.reason()), (Some(180), Some("Ringing")));
    assert_eq!(m.method(), None);
    assert_eq!(m.request_uri(), None);
    let m = resp("SIP/2.0 404").unwrap();
    assert_eq!(m.reason(), Some(""));
    for bad in [
        "SIP/2.0 099 Low",
        "SIP/2.0 700 High",
        "SIP/2.0 20 OK",
        "SIP/2.0 2000 OK",
        "SIP/2.0 abc OK",
    ] {
        assert_eq!(resp(bad).unwrap_err(), ParseError::StartLine, "{bad}");
    }
    assert_eq!(resp("SIP/1.0 200 OK").unwrap_err(), ParseError::Version);
}

#[test]
fn mandatory_headers() {
    let full = with_headers("");
    for (line, name) in [
        ("Via: SIP/2.0/UDP h.example.com;branch=z9hG4bK1\r\n", "Via"),
        ("From: <sip:a@example.com>;tag=1\r\n", "From"),
        ("To: <sip:bob@example.com>\r\n", "To"),
        ("Call-ID: x@y\r\n", "Call-ID"),
        ("CSeq: 1 OPTIONS\r\n", "CSeq"),
    ] {
        assert_eq!(
            parse(&full.replace(line, "")).unwrap_err(),
            ParseError::Missing(name)
        );
    }
    for (from, to, name) in [
        ("CSeq: 1 OPTIONS", "CSeq: 2147483648 OPTIONS", "CSeq"),
        ("CSeq: 1 OPTIONS", "CSeq: 1 INVITE", "CSeq"),
        ("CSeq: 1 OPTIONS", "CSeq: 1OPTIONS", "CSeq"),
        ("Call-ID: x@y", "Call-ID: x y", "Call-ID"),
        ("Call-ID: x@y", "Call-ID: x@y@z", "Call-ID"),
        (
            "To: <sip:bob@example.com>",
            "To: <sip:bob@example.com",
            "To",
        ),
        (
            "SIP/2.0/UDP h.example.com;",
            "SIP/2.0/UDP h.example.com:99999;",
            "Via",
        ),
        ("branch=z9hG4bK1", "branch=z9hG4bK1;rport=x", "Via"),
        ("branch=z9hG4bK1", "branch=\"q\"", "Via"),
    ] {
        assert_eq!(
            parse(&full.replace(from, to)).unwrap_err(),
            ParseError::BadHeader(name),
            "{to}"
        );
    }
}

#[test]
fn header_section_errors() {
    assert_eq!(parse("").unwrap_err(), ParseError::Empty);
    // Keep-alives (RFC 5626 §4.4.1) are not messages.
    assert_eq!(parse("\r\n\r\n").unwrap_err(), ParseError::Empty);
    // Leading CRLFs are skipped (RFC 3261 §7.5).
    assert!(parse(&format!("\r\n{}", with_headers(""))).is_ok());
    let ok = with_headers("");
    assert_eq!(
        parse(ok.trim_end_matches("\r\n")).unwrap_err(),
        ParseError::NoHeaderEnd
    );
    assert_eq!(
        parse(&ok.replace("\r\n\r\n", "\r\n")).unwrap_err(),
        ParseError::NoHeaderEnd
    );
    // Bare LF, bare CR, a line without a colon, a continuation right after the start line.
    assert_eq!(
        parse(&ok.replace("Call-ID: x@y\r\n", "Call-ID: x@y\n")).unwrap_err(),
        ParseError::HeaderLine
    );
    assert_eq!(
        parse(&ok.replace("Call-ID: x@y\r\n", "Call-ID: x\r@y\r\n")).unwrap_err(),
        ParseError::HeaderLine
    );
    assert_eq!(
        parse(&with_headers("NoColon\r\n")).unwrap_err(),
        ParseError::HeaderLine
    );
    assert_eq!(
        parse(&with_headers("Bad Name: 1\r\n")).unwrap_err(),
        ParseError::HeaderLine
    );
    assert_eq!(
        parse(&ok.replacen("\r\n", "\r\n folded\r\n", 1)).unwrap_err(),
        ParseError::HeaderLine
    );
    // Non-UTF-8 in the header section; a binary body is fine.
    let mut bytes = with_headers("X-Bin: \u{1}\r\n").into_bytes();
    let pos = bytes.iter().position(|&b| b == 1).unwrap();
    bytes[pos] = 0xff;
    assert_eq!(
        Message::parse(Bytes::from(bytes)).unwrap_err(),
        ParseError::Encoding
    );
    let mut bytes = with_headers("").into_bytes();
    bytes.extend_from_slice(&[0xff, 0x00, 0xfe]);
    assert_eq!(
        Message::parse(Bytes::from(bytes)).unwrap().body(),
        [0xff, 0, 0xfe]
    );
}

#[test]
fn oversize_is_too_large() {
    let big = with_headers(&format!("X-Pad: {}\r\n", "a".repeat(MAX_MESSAGE_SIZE)));
    assert_eq!(parse(&big).unwrap_err(), ParseError::TooLarge);
    let many = with_headers(&"X-H: 1\r\n".repeat(MAX_HEADERS));
    assert_eq!(parse(&many).unwrap_err(), ParseError::TooLarge);
    let fits = with_headers(&"X-H: 1\r\n".repeat(MAX_HEADERS - 10));
    assert!(parse(&fits).is_ok());
}

#[test]
fn sip_uri_parts() {
    let u = SipUri::parse("sips:alice:secret@[2001:db8::1]:5061;transport=tcp;lr?subject=x&h=y")
        .unwrap();
    assert!(u.is_sips());
    assert_eq!(u.user, Some("alice"));
    assert_eq!(u.password, Some("secret"));
    assert_eq!(u.host, "[2001:db8::1]");
    assert_eq!(u.port, Some(5061));
    assert_eq!(u.param("TRANSPORT"), Some("tcp"));
    assert_eq!(u.param("lr"), Some(""));
    assert_eq!(u.param("maddr"), None);
    assert_eq!(u.headers, "subject=x&h=y");
    assert_eq!(
        u.to_string(),
        "sips:alice:secret@[2001:db8::1]:5061;transport=tcp;lr?subject=x&h=y"
    );
    for bad in [
        "tel:+1555",
        "sip:",
        "sip:@h",
        "sip:a@",
        "sip:h:port",
        "sip:a b@h",
        "sip:h;",
        "sip:h;=x",
        "sip:h junk",
    ] {
        assert!(SipUri::parse(bad).is_err(), "{bad}");
    }
}

#[test]
fn methods_round_trip() {
    for m in [
        "INVITE",
        "ACK",
        "BYE",
        "CANCEL",
        "REGISTER",
        "OPTIONS",
        "INFO",
        "UPDATE",
        "PRACK",
        "SUBSCRIBE",
        "NOTIFY",
        "REFER",
        "MESSAGE",
        "PUBLISH",
        "FOO",
    ] {
        assert_eq!(Method::from_token(m).as_str(), m);
        assert_eq!(Method::from_token(m).to_string(), m);
    }
    // Case-sensitive (RFC 3261 §7.1).
    assert_eq!(
        Method::from_token("invite"),
        Method::Extension("invite".into())
    );
}

#[test]
fn builder_round_trip() {
    let bytes = MessageBuilder::request(&Method::Invite, "sip:bob@example.com")
        .header("Via", "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKnashds8")
        .header("Max-Forwards", "70")
        .header("From", "\"Alice\" <sip:alice@example.com>;tag=1928301774")
        .header("To", "<sip:bob@example.com>")
        .header("Call-ID", "a84b4c76e66710")
        .header("CSeq", "1 INVITE")
        .header("Content-Length", "999")
        .body("application/sdp", b"v=0\r\n")
        .build();
    let text = std::str::from_utf8(&bytes).unwrap();
    assert!(text.starts_with("INVITE sip:bob@example.com SIP/2.0\r\n"));
    assert!(text.ends_with("Content-Type: application/sdp\r\nContent-Length: 5\r\n\r\nv=0\r\n"));
    assert_eq!(text.matches("Content-Length").count(), 1);
    let m = Message::parse(bytes).unwrap();
    assert_eq!(m.method(), Some(&Method::Invite));
    assert_eq!(m.top_via().branch, Some("z9hG4bKnashds8"));
    assert_eq!(m.from().tag(), Some("1928301774"));
    assert_eq!(m.call_id(), "a84b4c76e66710");
    assert_eq!(m.cseq().seq, 1);
    assert_eq!(m.content_type(), Some("application/sdp"));
    assert_eq!(m.body(), b"v=0\r\n");
}

#[test]
fn builder_neutralises_injection() {
    let bytes = MessageBuilder::response(200, "OK\r\nX-Evil: 1")
        .header("Via", "SIP/2.0/UDP h;branch=z9hG4bK1")
        .header("Subject", "hi\r\nX-Evil: 2")
        .header("Bad Name", "v")
        .header("From", "<sip:a@b>;tag=1")
        .header("To", "<sip:c@d>")
        .header("Call-ID", "x")
        .header("CSeq", "1 INVITE")
        .build();
    let m = Message::parse(bytes).unwrap();
    assert_eq!(m.reason(), Some("OK  X-Evil: 1"));
    assert_eq!(m.header_named("X-Evil"), None);
    assert_eq!(m.header_named("Bad Name"), None);
    assert_eq!(m.status(), Some(200));
}

#[test]
fn response_to_copies_rfc3261_8_2_6_2_headers() {
    let req = parse(
        "INVITE sip:bob@example.com SIP/2.0\r\n\
Via: SIP/2.0/UDP p1.example.com;branch=z9hG4bKp1, SIP/2.0/UDP p2.example.com;branch=z9hG4bKp2\r\n\
Via: SIP/2.0/UDP\r\n ua.example.com;branch=z9hG4bKua;received=192.0.2.9\r\n\
From: \"A, B\" <sip:a@example.com>;tag=f1\r\n\
To: <sip:bob@example.com>\r\n\
Call-ID: c1@example.com\r\n\
CSeq: 10 INVITE\r\n\
Content-Length: 0\r\n\r\n",
    )
    .unwrap();
    let resp = MessageBuilder::response_to(&req, 180, "Ringing", Some("t42")).build();
    let r = Message::parse(resp).unwrap();
    assert_eq!(r.status(), Some(180));
    let vias: Vec<_> = r.vias().map(|v| v.unwrap().host).collect();
    assert_eq!(vias, ["p1.example.com", "p2.example.com", "ua.example.com"]);
    assert_eq!(r.from(), req.from());
    assert_eq!(r.to().uri, "sip:bob@example.com");
    assert_eq!(r.to().tag(), Some("t42"));
    assert_eq!(r.call_id(), "c1@example.com");
    assert_eq!(r.cseq(), req.cseq());
    assert_eq!(r.body(), b"");
    // An existing To tag is kept, not doubled.
    let again =
        Message::parse(MessageBuilder::response_to(&r, 200, "OK", Some("other")).build()).unwrap();
    assert_eq!(again.to().tag(), Some("t42"));
    assert_eq!(
        again
            .header(HeaderName::To)
            .unwrap()
            .matches("tag=")
            .count(),
        1
    );
}

/// xorshift32: deterministic bytes without a dependency.
fn xorshift(state: &mut u32) -> u32 {
    *state ^= *state << 13;
    *state ^= *state >> 17;
    *state ^= *state << 5;
    *state
}

/// Calls every accessor, as the fuzz target does.
fn exercise(m: &Message) {
    let _ = (
        m.method(),
        m.request_uri(),
        m.status(),
        m.reason(),
        m.call_id(),
        m.cseq(),
    );
    let _ = (m.from().tag(), m.to().tag(), m.top_via().to_string());
    let _ = m.vias().count();
    let _ = m.contacts();
    let _ = (m.routes().count(), m.record_routes().count());
    let _ = (
        m.max_forwards(),
        m.expires(),
        m.min_expires(),
        m.retry_after(),
        m.date(),
    );
    let _ = (
        m.supported().count(),
        m.require().count(),
        m.proxy_require().count(),
    );
    let _ = (
        m.content_type(),
        m.content_length(),
        m.body().len(),
        m.headers().count(),
    );
    let _ = MessageBuilder::response_to(m, 400, "Bad Request", Some("x")).build();
    // Re-serialising keeps what the transaction layer matches on (raw parameter strings
    // may differ: folds become SP).
    let bytes = MessageBuilder::from_message(m).build();
    if bytes.len() > MAX_MESSAGE_SIZE {
        return;
    }
    let again = Message::parse(bytes).unwrap();
    assert_eq!(again.call_id(), m.call_id());
    assert_eq!(again.cseq(), m.cseq());
    for (a, b) in [(again.from(), m.from()), (again.to(), m.to())] {
        assert_eq!((a.uri, a.tag()), (b.uri, b.tag()));
    }
    let (a, b) = (again.top_via(), m.top_via());
    assert_eq!(
        (a.transport, a.host, a.port, a.branch, a.received, a.rport),
        (b.transport, b.host, b.port, b.branch, b.received, b.rport)
    );
    assert_eq!(again.body(), m.body());
}

#[test]
fn torture_messages_reserialise() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/torture");
    let mut parsed = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "dat") {
            if let Ok(m) = Message::parse(Bytes::from(std::fs::read(&path).unwrap())) {
                exercise(&m);
                parsed += 1;
            }
        }
    }
    assert!(parsed >= 30, "{parsed}");
}

#[test]
fn random_garbage_never_panics() {
    let mut s = 0x9e37_79b9;
    for i in 0..5000 {
        let len = (xorshift(&mut s) % 600) as usize;
        let mut buf: Vec<u8> = (0..len).map(|_| xorshift(&mut s) as u8).collect();
        if i & 1 == 0 {
            // Bias half the inputs towards SIP-ish bytes so deeper paths run.
            for b in &mut buf {
                *b = b"SIP/2.0 INVITE sip:@;=,<>\"\\:\r\n \tViaFromToCall-IDCSeq0123456789"
                    [(*b as usize) % 56];
            }
        }
        if let Ok(m) = Message::parse(Bytes::from(buf)) {
            exercise(&m);
        }
    }
}

#[test]
fn mutated_valid_messages_never_panic() {
    let base = REGISTER.as_bytes();
    // Every prefix.
    for n in 0..base.len() {
        if let Ok(m) = Message::parse(Bytes::copy_from_slice(&base[..n])) {
            exercise(&m);
        }
    }
    // Random byte flips and insertions.
    let mut s = 12345;
    for _ in 0..5000 {
        let mut buf = base.to_vec();
        for _ in 0..1 + xorshift(&mut s) % 4 {
            let pos = (xorshift(&mut s) as usize) % buf.len();
            let byte = xorshift(&mut s) as u8;
            if xorshift(&mut s) & 1 == 0 {
                buf[pos] = byte;
            } else {
                buf.insert(pos, byte);
            }
        }
        if let Ok(m) = Message::parse(Bytes::from(buf)) {
            exercise(&m);
        }
    }
}
