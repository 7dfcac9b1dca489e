//! RFC 4475 torture tests: every message of §3 under `tests/torture/`.
//!
//! Policy: `Message::parse` rejects what breaks framing, the start line or the headers the
//! transaction layer matches on (Via, From, To, Call-ID, CSeq, Content-Length). What RFC 4475
//! calls semantically invalid elsewhere parses, and the lazy accessor for that header says
//! `Err`, so the transaction user can still answer (400, 416, 420, 501...).
#![allow(clippy::unwrap_used)]

use bytes::Bytes;
use voxgate_sip::message::{Contacts, HeaderName, Message, Method, ParseError, SipUri};

fn load(name: &str) -> Bytes {
    let path = format!("{}/tests/torture/{name}.dat", env!("CARGO_MANIFEST_DIR"));
    Bytes::from(std::fs::read(path).unwrap())
}

fn parse(name: &str) -> Message {
    match Message::parse(load(name)) {
        Ok(m) => m,
        Err(e) => panic!("{name} should parse, got {e:?}"),
    }
}

fn reject(name: &str) -> ParseError {
    match Message::parse(load(name)) {
        Ok(_) => panic!("{name} should be rejected"),
        Err(e) => e,
    }
}

// ---- §3.1.1 valid messages -------------------------------------------------------------

#[test]
fn wsinv_short_tortuous_invite() {
    let m = parse("wsinv");
    assert_eq!(m.method(), Some(&Method::Invite));
    assert_eq!(
        m.request_uri(),
        Some("sip:vivekg@chair-dnrc.example.com;unknownparam")
    );
    assert_eq!(m.call_id(), "wsinv.ndaksdj@192.0.2.1");
    assert_eq!(m.cseq().seq, 9);
    assert_eq!(m.cseq().method, Method::Invite);
    assert_eq!(m.to().uri, "sip:vivekg@chair-dnrc.example.com");
    assert_eq!(m.to().tag(), Some("1918181833n"));
    let from = m.from();
    assert_eq!(from.display_name, Some(r#"J Rosenberg \\\""#));
    assert_eq!(from.uri, "sip:jdrosen@example.com");
    assert_eq!(from.tag(), Some("98asjd8"));
    assert_eq!(m.max_forwards(), Ok(Some(68)));
    assert_eq!(m.content_length(), Some(150));
    assert_eq!(m.body().len(), 150);
    assert!(m.body().starts_with(b"v=0\r\n"));
    assert_eq!(m.content_type(), Some("application/sdp"));

    let top = m.top_via();
    assert_eq!(top.transport, "UDP");
    assert_eq!(top.host, "192.0.2.2");
    assert_eq!(top.port, None);
    assert_eq!(top.branch, Some("390skdjuw"));
    let vias: Vec<_> = m.vias().map(Result::unwrap).collect();
    assert_eq!(vias.len(), 3);
    assert_eq!(
        (vias[1].transport, vias[1].host, vias[1].branch),
        ("TCP", "spindle.example.com", Some("z9hG4bK9ikj8"))
    );
    assert_eq!(
        (vias[2].transport, vias[2].host, vias[2].branch),
        ("UDP", "192.168.255.111", Some("z9hG4bK30239"))
    );

    // s: (Subject) is empty, the unknown headers keep their raw (folded) values.
    assert_eq!(m.header_named("Subject"), Some(""));
    assert_eq!(
        m.header_named("newfangledheader"),
        Some("newfangled value\r\n continued newfangled value")
    );
    assert_eq!(
        m.header_named("UnknownHeaderWithUnusualValue"),
        Some(";;,,;;,;")
    );

    let routes: Vec<_> = m.routes().map(Result::unwrap).collect();
    assert_eq!(routes.len(), 1);
    let route = SipUri::parse(routes[0].uri).unwrap();
    assert_eq!(route.host, "services.example.com");
    assert_eq!(route.param("lr"), Some(""));
    assert_eq!(route.param("unknownwith"), Some("value"));

    let Some(Contacts::List(contacts)) = m.contacts().unwrap() else {
        panic!("contact list expected")
    };
    assert_eq!(contacts.len(), 1);
    assert_eq!(contacts[0].display_name, Some(r#"Quoted string \"\""#));
    assert_eq!(contacts[0].uri, "sip:jdrosen@example.com");
    assert_eq!(contacts[0].param("newparam"), Some("newvalue"));
    assert_eq!(contacts[0].param("secondparam"), Some(""));
    assert_eq!(contacts[0].q_millis(), Ok(Some(330)));
}

#[test]
fn intmeth_wide_range_of_valid_characters() {
    let m = parse("intmeth");
    let method = "!interesting-Method0123456789_*+`.%indeed'~";
    assert_eq!(m.method(), Some(&Method::Extension(method.into())));
    assert_eq!(m.cseq().method.as_str(), method);
    assert_eq!(m.cseq().seq, 139_122_385);
    let ruri = SipUri::parse(m.request_uri().unwrap()).unwrap();
    assert_eq!(
        ruri.user,
        Some("1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*")
    );
    assert_eq!(
        ruri.password,
        Some("&it+has=1,weird!*pas$wo~d_too.(doesn't-it)")
    );
    assert_eq!(ruri.host, "example.com");
    assert_eq!(m.top_via().branch, Some("z9hG4bK-.!%66*_+`'~"));
    assert_eq!(
        m.to().display_name,
        Some("BEL:\\\x07 NUL:\\\x00 DEL:\\\x7f")
    );
    assert_eq!(
        m.to().uri,
        "sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*@example.com"
    );
    let from = m.from();
    assert_eq!(from.display_name, Some("token1~` token2'+_ token3*%!.-"));
    assert_eq!(from.param("fromParam''~+*_!.-%"), Some("работающий"));
    assert_eq!(from.tag(), Some("_token~1'+`*%!-."));
    assert_eq!(m.call_id(), "intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{");
    assert_eq!(m.max_forwards(), Ok(Some(255)));
    assert_eq!(
        m.header_named("extensionHeader-!.%*+_`'~"),
        Some("\u{feff}大停電")
    );
}

#[test]
fn esc01_escaped_uris() {
    let m = parse("esc01");
    let ruri = SipUri::parse(m.request_uri().unwrap()).unwrap();
    // Escapes are left alone: this user part is not a sips: URI (RFC 4475 §3.1.1.3).
    assert_eq!(ruri.user, Some("sips%3Auser%40example.com"));
    assert_eq!(ruri.host, "example.net");
    assert_eq!(m.to().uri, "sip:%75se%72@example.com");
    assert_eq!(m.from().uri, "sip:I%20have%20spaces@example.net");
    assert_eq!(m.call_id(), "esc01.239409asdfakjkn23onasd0-3234");
    assert_eq!(m.content_type(), Some("application/sdp"));
    let contacts = m.contacts().unwrap().unwrap();
    let c = SipUri::parse(contacts.as_slice()[0].uri).unwrap();
    assert_eq!(c.user, Some("cal%6Cer"));
    assert_eq!(c.param("%6C%72"), Some(""));
    assert_eq!(c.param("n%61me"), Some("v%61lue%25%34%31"));
    assert_eq!(m.body().len(), 150);
}

#[test]
fn escnull_escaped_nulls() {
    let m = parse("escnull");
    assert_eq!(m.method(), Some(&Method::Register));
    assert_eq!(m.to().uri, "sip:null-%00-null@example.com");
    let contacts = m.contacts().unwrap().unwrap();
    let uris: Vec<_> = contacts.as_slice().iter().map(|c| c.uri).collect();
    assert_eq!(
        uris,
        ["sip:%00@host5.example.com", "sip:%00%00@host5.example.com"]
    );
    assert_eq!(m.content_length(), Some(0));
}

#[test]
fn esc02_escaped_method_is_not_register() {
    let m = parse("esc02");
    // RFC 4475 §3.1.1.5: RE%47IST%45R is an unknown method, C%6Fntact an unknown header.
    assert_eq!(m.method(), Some(&Method::Extension("RE%47IST%45R".into())));
    assert_eq!(m.cseq().method, Method::Extension("RE%47IST%45R".into()));
    assert_eq!(m.to().display_name, Some("%Z%45"));
    assert_eq!(m.top_via().branch, Some("z9hG4bK209%fzsnel234"));
    let contacts = m.contacts().unwrap().unwrap();
    assert_eq!(contacts.as_slice().len(), 2);
    assert_eq!(
        m.header_named("C%6Fntact"),
        Some("<sip:alias2@host2.example.com>")
    );
}

#[test]
fn lwsdisp_no_lws_between_display_name_and_laquot() {
    let m = parse("lwsdisp");
    assert_eq!(m.from().display_name, Some("caller"));
    assert_eq!(m.from().uri, "sip:caller@example.com");
    assert_eq!(m.from().tag(), Some("323"));
}

#[test]
fn longreq_long_values_many_vias() {
    let m = parse("longreq");
    assert_eq!(
        m.call_id(),
        format!("longreq.one{}longcallid", "really".repeat(20))
    );
    let to = m.to();
    assert_eq!(
        to.display_name,
        Some(format!("I have a user name of {} proportion", "extreme".repeat(10)).as_str())
    );
    let to_uri = SipUri::parse(to.uri).unwrap();
    assert_eq!(to_uri.port, Some(6000));
    assert_eq!(
        to_uri.param(&format!("longparam{}", "name".repeat(25))),
        Some("shortvalue")
    );
    assert_eq!(
        m.from().tag(),
        Some(format!("12{}424", "982".repeat(50)).as_str())
    );
    let vias: Vec<_> = m.vias().map(Result::unwrap).collect();
    assert_eq!(vias.len(), 34);
    assert_eq!(vias[0].host, "sip33.example.com");
    assert_eq!(m.top_via().branch, None);
    assert_eq!(vias[33].received, Some("192.0.2.5"));
    assert_eq!(
        vias[33].branch,
        Some(format!("very{}branchvalue", "long".repeat(50)).as_str())
    );
    assert_eq!(m.content_length(), Some(150));
}

#[test]
fn dblreq_second_request_ignored() {
    let m = parse("dblreq");
    // RFC 3261 §18.3: bytes past Content-Length are not part of this message.
    assert_eq!(m.method(), Some(&Method::Register));
    assert_eq!(m.call_id(), "dblreq.0ha0isndaksdj99sdfafnl3lk233412");
    assert!(m.body().is_empty());
}

#[test]
fn semiuri_semicolon_in_user_part() {
    let m = parse("semiuri");
    let ruri = SipUri::parse(m.request_uri().unwrap()).unwrap();
    assert_eq!(ruri.user, Some("user;par=u%40example.net"));
    assert_eq!(ruri.host, "example.com");
    assert_eq!(ruri.params, "");
    let accept = m.header_named("Accept").unwrap();
    assert!(accept.starts_with("application/sdp,"));
    assert!(accept.ends_with("message/sipfrag"));
}

#[test]
fn transports_all_via_transports() {
    let m = parse("transports");
    assert_eq!(m.call_id(), "transports.kijh4akdnaqjkwendsasfdj");
    let t: Vec<_> = m.vias().map(|v| v.unwrap().transport).collect();
    assert_eq!(t, ["UDP", "SCTP", "TLS", "UNKNOWN", "TCP"]);
}

#[test]
fn mpart01_binary_multipart_body() {
    let m = parse("mpart01");
    assert_eq!(m.method(), Some(&Method::Message));
    assert_eq!(m.top_via().rport, Some(None));
    assert_eq!(m.top_via().port, Some(5070));
    assert_eq!(
        m.content_type(),
        Some("multipart/mixed;boundary=7a9cbec02ceef655")
    );
    assert_eq!(m.body().len(), 553);
    assert!(m.body().ends_with(b"--7a9cbec02ceef655--\r\n"));
    assert_eq!(m.date(), Ok(Some("Sat, 15 Oct 2005 04:44:56 GMT")));
}

#[test]
fn unreason_utf8_reason_phrase() {
    let m = parse("unreason");
    assert_eq!(m.status(), Some(200));
    assert_eq!(
        m.reason(),
        Some("= 2**3 * 5**2 но сто девяносто девять - простое")
    );
    assert_eq!(m.body().len(), 154);
}

#[test]
fn noreason_empty_reason_phrase() {
    let m = parse("noreason");
    assert_eq!(m.status(), Some(100));
    assert_eq!(m.reason(), Some(""));
    assert_eq!(m.to().tag(), Some("902jndnke3"));
}

// ---- §3.1.2 invalid messages ------------------------------------------------------------

#[test]
fn invalid_messages_rejected_precisely() {
    let cases = [
        // Empty Via params and stray commas (§3.1.2.1).
        ("badinv01", ParseError::BadHeader("Via")),
        // Content-Length larger than the datagram (§3.1.2.2).
        ("clerr", ParseError::Truncated),
        // Negative Content-Length (§3.1.2.3).
        ("ncl", ParseError::BadHeader("Content-Length")),
        // CSeq above 2**32 (§3.1.2.4); Max-Forwards/Expires are also bad, see below.
        ("scalar02", ParseError::BadHeader("CSeq")),
        ("scalarlg", ParseError::BadHeader("CSeq")),
        // Unterminated quoted display name (§3.1.2.6).
        ("quotbal", ParseError::BadHeader("To")),
        // Request-URI in <> (§3.1.2.7), with LWS (§3.1.2.8), extra SPs (§3.1.2.9),
        // trailing SPs (§3.1.2.10).
        ("ltgtruri", ParseError::StartLine),
        ("lwsruri", ParseError::StartLine),
        ("lwsstart", ParseError::StartLine),
        ("trws", ParseError::StartLine),
        // Spaces inside <> (§3.1.2.14): rejected, not repaired.
        ("badaspec", ParseError::BadHeader("To")),
        // Unquoted display names with commas (§3.1.2.15): From comes first.
        ("baddn", ParseError::BadHeader("From")),
        ("badvers", ParseError::Version),
        // Request-line and CSeq methods differ (§3.1.2.17).
        ("mismatch01", ParseError::BadHeader("CSeq")),
        // Status code beyond three digits (§3.1.2.19).
        ("bigcode", ParseError::StartLine),
        // §3.3.1: missing From, To, Call-ID, Max-Forwards.
        ("insuf", ParseError::Missing("From")),
        // §3.3.8: repeated single-valued headers; we check From before CSeq/Call-ID/To.
        ("multi01", ParseError::BadHeader("From")),
        // §3.3.9: two Content-Length values.
        ("mcl01", ParseError::BadHeader("Content-Length")),
    ];
    for (name, want) in cases {
        assert_eq!(reject(name), want, "{name}");
    }
}

#[test]
fn scalar02_other_overlarge_scalars_are_lazy_errors() {
    // With the CSeq fixed, the other out-of-range scalars surface from their accessors
    // (§3.1.2.4: the TU may then treat them as absent / as the default expiry).
    let raw = load("scalar02");
    let text = String::from_utf8(raw.to_vec()).unwrap();
    let fixed = text.replace("36893488147419103232", "1");
    let m = Message::parse(Bytes::from(fixed)).unwrap();
    assert_eq!(m.max_forwards(), Err(ParseError::BadHeader("Max-Forwards")));
    assert_eq!(m.expires(), Err(ParseError::BadHeader("Expires")));
    let contacts = m.contacts().unwrap().unwrap();
    assert_eq!(
        contacts.as_slice()[0].expires(),
        Err(ParseError::BadHeader("expires"))
    );
}

#[test]
fn scalarlg_retry_after_overflow_is_lazy_error() {
    let text = String::from_utf8(load("scalarlg").to_vec()).unwrap();
    let fixed = text.replace("9292394834772304023312", "9");
    let m = Message::parse(Bytes::from(fixed)).unwrap();
    assert_eq!(m.status(), Some(503));
    assert_eq!(m.top_via().received, Some("192.0.2.129"));
    assert_eq!(m.retry_after(), Err(ParseError::BadHeader("Retry-After")));
}

#[test]
fn escruri_headers_in_request_uri_are_visible_not_rejected() {
    // §3.1.2.11 allows rejecting or ignoring the escaped headers. We parse it so the TU can
    // answer; the headers are only reachable through SipUri::parse and never copied into a
    // request we send (we are a B2BUA and build new Request-URIs).
    let m = parse("escruri");
    let ruri = SipUri::parse(m.request_uri().unwrap()).unwrap();
    assert_eq!(ruri.headers, "Route=%3Csip:example.com%3E");
    assert_eq!(ruri.host, "example.com");
}

#[test]
fn baddate_non_gmt_date_is_lazy_error() {
    // §3.1.2.12: the message is otherwise fine; only Date is bad.
    let m = parse("baddate");
    assert_eq!(m.date(), Err(ParseError::BadHeader("Date")));
    assert_eq!(m.body().len(), 150);
}

#[test]
fn regbadct_unbracketed_contact_with_headers_is_lazy_error() {
    // §3.1.2.13: a URI with `?` must be inside <>. REGISTER parses; contacts() fails.
    let m = parse("regbadct");
    assert_eq!(m.contacts(), Err(ParseError::BadHeader("Contact")));
}

#[test]
fn mismatch02_unknown_method_parses_for_501() {
    // §3.1.2.18: with an unknown request method a 501 is the preferred answer, so it must
    // parse; cseq() then keeps what the peer sent.
    let m = parse("mismatch02");
    assert_eq!(m.method(), Some(&Method::Extension("NEWMETHOD".into())));
    assert_eq!(m.cseq().method, Method::Invite);
    assert_eq!(m.body().len(), 138);
}

// ---- §3.1.3, §3.3, §3.4: parse fine, semantics are the TU's ---------------------------------

#[test]
fn badbranch_magic_cookie_only() {
    let m = parse("badbranch");
    assert_eq!(m.top_via().branch, Some("z9hG4bK"));
}

#[test]
fn unknown_request_uri_schemes_parse_for_416() {
    for (name, uri) in [
        ("unkscm", "nobodyKnowsThisScheme:totallyopaquecontent"),
        ("novelsc", "soap.beep://192.0.2.103:3002"),
    ] {
        let m = parse(name);
        assert_eq!(m.request_uri(), Some(uri));
        assert_eq!(
            SipUri::parse(uri),
            Err(ParseError::BadHeader("URI")),
            "{name}"
        );
    }
    let m = parse("unksm2");
    assert_eq!(m.to().uri, "isbn:2983792873");
    assert_eq!(m.from().uri, "http://www.example.com");
    assert_eq!(m.from().tag(), Some("3234233"));
    let contacts = m.contacts().unwrap().unwrap();
    assert_eq!(contacts.as_slice()[0].uri, "name:John_Smith");
}

#[test]
fn bext01_unknown_option_tags() {
    let m = parse("bext01");
    assert_eq!(
        m.require().collect::<Vec<_>>(),
        ["nothingSupportsThis", "nothingSupportsThisEither"]
    );
    assert_eq!(
        m.proxy_require().collect::<Vec<_>>(),
        ["noProxiesSupportThis", "norDoAnyProxiesSupportThis"]
    );
}

#[test]
fn invut_regaut01_sdp01_bcast_zeromf_parse() {
    let m = parse("invut");
    assert_eq!(m.content_type(), Some("application/unknownformat"));
    assert_eq!(m.body().len(), 40);
    let m = parse("regaut01");
    assert_eq!(
        m.header(HeaderName::Authorization),
        Some("NoOneKnowsThisScheme opaque-data=here")
    );
    let m = parse("sdp01");
    assert_eq!(m.header_named("accept"), Some("text/nobodyKnowsThis"));
    let m = parse("bcast");
    let hosts: Vec<_> = m.vias().map(|v| v.unwrap().host).collect();
    assert_eq!(hosts, ["192.0.2.198", "255.255.255.255"]);
    let m = parse("zeromf");
    assert_eq!(m.max_forwards(), Ok(Some(0)));
}

#[test]
fn cparam_contact_params_belong_where_rfc3261_20_10_says() {
    // addr-spec form: ;unknownparam is a Contact header parameter.
    let m = parse("cparam01");
    let c = m.contacts().unwrap().unwrap();
    assert_eq!(c.as_slice()[0].uri, "sip:+19725552222@gw1.example.net");
    assert_eq!(c.as_slice()[0].param("unknownparam"), Some(""));
    // name-addr form: it is a URI parameter.
    let m = parse("cparam02");
    let c = m.contacts().unwrap().unwrap();
    let na = &c.as_slice()[0];
    assert_eq!(na.params, "");
    assert_eq!(na.sip_uri().unwrap().param("unknownparam"), Some(""));
}

#[test]
fn regescrt_escaped_route_in_contact_is_visible() {
    let m = parse("regescrt");
    let c = m.contacts().unwrap().unwrap();
    let uri = c.as_slice()[0].sip_uri().unwrap();
    assert_eq!(uri.headers, "Route=%3Csip:sip.example.com%3E");
}

#[test]
fn inv2543_rfc2543_syntax() {
    // §3.4.1: no branch, no Max-Forwards, no Content-Length (body is the rest).
    let m = parse("inv2543");
    assert_eq!(m.top_via().branch, None);
    assert!(!m.top_via().is_rfc3261_branch());
    assert_eq!(m.max_forwards(), Ok(None));
    assert_eq!(m.content_length(), None);
    assert!(m.body().starts_with(b"v=0"));
    let rr: Vec<_> = m.record_routes().map(Result::unwrap).collect();
    assert_eq!(rr[0].uri, "sip:UserB@example.com;maddr=ss1.example.com");
    assert_eq!(m.to().param("user"), Some("phone"));
}

#[test]
fn every_file_is_covered() {
    // Catches a message added to the directory but not to a test.
    let dir = format!("{}/tests/torture", env!("CARGO_MANIFEST_DIR"));
    let count = std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "dat")
        })
        .count();
    assert_eq!(count, 49);
}
