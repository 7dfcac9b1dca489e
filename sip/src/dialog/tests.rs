//! Dialog tests: creation from real-looking INVITE/18x/200 texts, route sets (loose and
//! strict), every header of in-dialog requests, CSeq rules, target refresh, termination,
//! forking, glare, PRACK, a UAC and a UAS talking to each other in memory, and garbage.
#![allow(clippy::unwrap_used)]

use bytes::Bytes;

use super::*;
use crate::message::HeaderName;

/// A message from readable text: `\n` line ends become CRLF.
fn msg(text: &str) -> Message {
    let text = text.trim_start().replace('\n', "\r\n");
    Message::parse(Bytes::from(text)).unwrap()
}

fn parse(b: Bytes) -> Message {
    Message::parse(b).unwrap()
}

fn headers(m: &Message, name: HeaderName) -> Vec<String> {
    m.header_values(name).map(str::to_owned).collect()
}

fn via() -> LocalVia {
    LocalVia::new(Transport::Udp, "192.0.2.2:5060")
}

fn br(n: u8) -> Branch {
    Branch::from_random(&[n; 8])
}

/// Alice calls Bob through two record-routing proxies (p1 next to Alice, p2 next to us).
const INVITE_IN: &str = "
INVITE sip:bob@voxgate.test SIP/2.0
Via: SIP/2.0/UDP p2.example.net;branch=z9hG4bKp2
Via: SIP/2.0/UDP p1.example.com;branch=z9hG4bKp1
Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKa1;rport
Max-Forwards: 68
Record-Route: <sip:p2.example.net;lr>
Record-Route: <sip:p1.example.com;lr>
From: \"Alice\" <sip:alice@example.com>;tag=a1
To: Bob <sip:bob@voxgate.test>
Call-ID: c1@192.0.2.1
CSeq: 314 INVITE
Contact: <sip:alice@192.0.2.1:5060;transport=udp>
Content-Length: 0

";

fn uas() -> (Message, Dialog) {
    let invite = msg(INVITE_IN);
    let d = Dialog::new_uas(&invite, "b1", "sip:voxgate@192.0.2.2:5060").unwrap();
    (invite, d)
}

/// Our INVITE to a carrier, and its answers with the given To tag and Record-Route lines.
const INVITE_OUT: &str = "
INVITE sip:+15551234@carrier.example SIP/2.0
Via: SIP/2.0/UDP 192.0.2.2:5060;branch=z9hG4bKout1;rport
Max-Forwards: 70
From: <sip:+15550000@voxgate.test>;tag=v1
To: <sip:+15551234@carrier.example>
Call-ID: out-1@voxgate.test
CSeq: 1 INVITE
Contact: <sip:voxgate@192.0.2.2:5060>
Content-Length: 0

";

fn answer(status: u16, reason: &str, to_tag: &str, rr: &[&str], contact: &str) -> Message {
    let mut s = format!(
        "SIP/2.0 {status} {reason}\n\
         Via: SIP/2.0/UDP 192.0.2.2:5060;branch=z9hG4bKout1;rport=5060\n"
    );
    for r in rr {
        s.push_str(&format!("Record-Route: {r}\n"));
    }
    let to_tag = if to_tag.is_empty() {
        String::new()
    } else {
        format!(";tag={to_tag}")
    };
    s.push_str(&format!(
        "From: <sip:+15550000@voxgate.test>;tag=v1\n\
         To: <sip:+15551234@carrier.example>{to_tag}\n\
         Call-ID: out-1@voxgate.test\n\
         CSeq: 1 INVITE\n"
    ));
    if !contact.is_empty() {
        s.push_str(&format!("Contact: {contact}\n"));
    }
    s.push_str("Content-Length: 0\n\n");
    msg(&s)
}

// ---- UAS creation and responses -------------------------------------------------------

#[test]
fn uas_dialog_state_from_invite() {
    let (_, d) = uas();
    assert_eq!(
        d.id(),
        &DialogId {
            call_id: "c1@192.0.2.1".into(),
            local_tag: "b1".into(),
            remote_tag: "a1".into()
        }
    );
    assert_eq!(d.role(), Role::Uas);
    assert_eq!(d.state(), &DialogState::Early);
    // §12.1.1: route set in Record-Route order, remote target from Contact.
    assert_eq!(
        d.route_set().uris(),
        ["sip:p2.example.net;lr", "sip:p1.example.com;lr"]
    );
    assert_eq!(d.remote_target(), "sip:alice@192.0.2.1:5060;transport=udp");
    assert_eq!(d.remote_seq(), Some(314));
    assert_eq!(d.local_seq(), None);
    assert_eq!(d.remote().uri, "sip:alice@example.com");
    assert_eq!(d.remote().display_name.as_deref(), Some("Alice"));
    assert_eq!(d.local().uri, "sip:bob@voxgate.test");
    assert!(!d.is_secure());
    assert_eq!(d.initial_invite_seq(), 314);
}

#[test]
fn uas_creation_errors() {
    let invite = msg(INVITE_IN);
    assert_eq!(
        Dialog::new_uas(&invite, "", "sip:v@h").unwrap_err(),
        DialogError::BadTag
    );
    assert_eq!(
        Dialog::new_uas(&invite, "a;b", "sip:v@h").unwrap_err(),
        DialogError::BadTag
    );
    assert_eq!(
        Dialog::new_uas(&invite, "b1", "not a uri").unwrap_err(),
        DialogError::BadLocalContact
    );
    let no_contact =
        msg(&INVITE_IN.replace("Contact: <sip:alice@192.0.2.1:5060;transport=udp>\n", ""));
    assert_eq!(
        Dialog::new_uas(&no_contact, "b1", "sip:v@h").unwrap_err(),
        DialogError::MissingContact
    );
    let star = msg(&INVITE_IN.replace(
        "Contact: <sip:alice@192.0.2.1:5060;transport=udp>",
        "Contact: *",
    ));
    assert_eq!(
        Dialog::new_uas(&star, "b1", "sip:v@h").unwrap_err(),
        DialogError::BadContact
    );
    let tagged = msg(&INVITE_IN.replace(
        "To: Bob <sip:bob@voxgate.test>",
        "To: <sip:bob@voxgate.test>;tag=x",
    ));
    assert_eq!(
        Dialog::new_uas(&tagged, "b1", "sip:v@h").unwrap_err(),
        DialogError::HasToTag
    );
    let bad_rr = msg(&INVITE_IN.replace("<sip:p1.example.com;lr>", "<mailto:x@y>"));
    assert_eq!(
        Dialog::new_uas(&bad_rr, "b1", "sip:v@h").unwrap_err(),
        DialogError::BadRecordRoute
    );
    let options = msg(&INVITE_IN.replace("INVITE", "OPTIONS"));
    assert_eq!(
        Dialog::new_uas(&options, "b1", "sip:v@h").unwrap_err(),
        DialogError::NotInvite(Method::Options)
    );
    let sips = msg(&INVITE_IN.replace("INVITE sip:bob", "INVITE sips:bob"));
    assert!(Dialog::new_uas(&sips, "b1", "sip:v@h").unwrap().is_secure());
}

#[test]
fn uas_responses_carry_tag_record_route_and_contact() {
    let (invite, mut d) = uas();
    let trying = parse(d.response(&invite, 100, "Trying").unwrap().build());
    assert_eq!(trying.to().tag(), None, "§8.2.6.2: 100 may go without tag");
    assert!(trying.contacts().unwrap().is_none());
    assert!(headers(&trying, HeaderName::RecordRoute).is_empty());

    let ringing = parse(d.response(&invite, 180, "Ringing").unwrap().build());
    assert_eq!(ringing.to().tag(), Some("b1"));
    assert_eq!(
        headers(&ringing, HeaderName::RecordRoute),
        ["<sip:p2.example.net;lr>", "<sip:p1.example.com;lr>"]
    );
    assert_eq!(
        headers(&ringing, HeaderName::Contact),
        ["<sip:voxgate@192.0.2.2:5060>"]
    );
    assert_eq!(ringing.vias().count(), 3);
    assert_eq!(d.state(), &DialogState::Early);

    let ok = parse(d.response(&invite, 200, "OK").unwrap().build());
    assert_eq!(ok.to().tag(), Some("b1"));
    assert_eq!(ok.cseq().seq, 314);
    assert_eq!(headers(&ok, HeaderName::RecordRoute).len(), 2);
    assert_eq!(d.state(), &DialogState::Confirmed);
    assert!(d.was_confirmed());
    assert_eq!(
        d.response(&invite, 999, "x").unwrap_err(),
        DialogError::BadStatus(999)
    );
}

#[test]
fn uas_rejecting_the_invite_ends_the_early_dialog() {
    let (invite, mut d) = uas();
    d.response(&invite, 180, "Ringing").unwrap();
    let busy = parse(d.response(&invite, 486, "Busy Here").unwrap().build());
    assert_eq!(busy.to().tag(), Some("b1"));
    assert!(busy.contacts().unwrap().is_none());
    assert_eq!(
        d.state(),
        &DialogState::Terminated(TerminationReason::Rejected { status: 486 })
    );
}

#[test]
fn uas_bye_has_every_header_right() {
    let (invite, mut d) = uas();
    d.response(&invite, 200, "OK").unwrap();
    let bye = parse(d.request(Method::Bye, &via(), &br(1)).unwrap().build());
    assert_eq!(bye.method(), Some(&Method::Bye));
    // §12.2.1.1 loose routing: target in the Request-URI, the route set as Route.
    assert_eq!(
        bye.request_uri(),
        Some("sip:alice@192.0.2.1:5060;transport=udp")
    );
    assert_eq!(
        headers(&bye, HeaderName::Route),
        ["<sip:p2.example.net;lr>", "<sip:p1.example.com;lr>"]
    );
    assert_eq!(bye.from().uri, "sip:bob@voxgate.test");
    assert_eq!(bye.from().display_name, Some("Bob"));
    assert_eq!(bye.from().tag(), Some("b1"));
    assert_eq!(bye.to().uri, "sip:alice@example.com");
    assert_eq!(bye.to().tag(), Some("a1"));
    assert_eq!(bye.call_id(), "c1@192.0.2.1");
    // §12.2.1.1: an empty local sequence starts fresh (ours: 1), independent of 314.
    assert_eq!(bye.cseq().seq, 1);
    assert_eq!(bye.max_forwards().unwrap(), Some(70));
    let top = bye.top_via();
    assert_eq!(top.transport, "UDP");
    assert_eq!(top.host, "192.0.2.2");
    assert_eq!(top.port, Some(5060));
    assert_eq!(top.branch, Some("z9hG4bK0101010101010101"));
    assert_eq!(top.rport, Some(None));
    assert_eq!(bye.vias().count(), 1);
    assert!(
        bye.contacts().unwrap().is_none(),
        "BYE is not a target refresh"
    );
    assert_eq!(
        d.state(),
        &DialogState::Terminated(TerminationReason::LocalBye)
    );
    // The next hop is the first route.
    let hop = d.next_hop().unwrap();
    assert_eq!(hop.host, "p2.example.net");
    assert_eq!(hop.port, None);
    assert_eq!(hop.transport, None);
    // Nothing else after BYE.
    assert_eq!(
        d.request(Method::Info, &via(), &br(2)).unwrap_err(),
        DialogError::Terminated
    );
}

#[test]
fn uas_may_not_bye_an_early_dialog() {
    let (_, mut d) = uas();
    assert_eq!(
        d.request(Method::Bye, &via(), &br(1)).unwrap_err(),
        DialogError::ByeOnEarlyUas
    );
    assert_eq!(d.local_seq(), None, "a refused request uses no CSeq");
}

// ---- UAC creation ---------------------------------------------------------------------

#[test]
fn uac_early_then_confirmed_reverses_and_recomputes_the_route_set() {
    let invite = msg(INVITE_OUT);
    // Response Record-Route lists the hop nearest the callee first.
    let ringing = answer(
        180,
        "Ringing",
        "c9",
        &["<sip:far.carrier.example;lr>", "<sip:sbc.voxgate.test;lr>"],
        "<sip:+15551234@198.51.100.7:5060>",
    );
    let mut d = Dialog::new_uac(&invite, &ringing).unwrap();
    assert_eq!(d.role(), Role::Uac);
    assert_eq!(d.state(), &DialogState::Early);
    assert_eq!(
        d.id(),
        &DialogId {
            call_id: "out-1@voxgate.test".into(),
            local_tag: "v1".into(),
            remote_tag: "c9".into()
        }
    );
    // §12.1.2: reversed.
    assert_eq!(
        d.route_set().uris(),
        ["sip:sbc.voxgate.test;lr", "sip:far.carrier.example;lr"]
    );
    assert_eq!(d.local_seq(), Some(1));
    assert_eq!(d.remote_seq(), None);
    assert_eq!(d.local_contact(), "sip:voxgate@192.0.2.2:5060");
    assert_eq!(d.invite_in_progress(), Some(1));

    // The 200 has another path and Contact: §13.2.2.4 recomputes both.
    let ok = answer(
        200,
        "OK",
        "c9",
        &[
            "<sip:far.carrier.example;lr>",
            "<sip:edge2.voxgate.test;lr>",
        ],
        "<sip:+15551234@198.51.100.8:5070>",
    );
    assert_eq!(d.handle_response(&ok).unwrap(), ResponseOutcome::Confirmed);
    assert_eq!(d.state(), &DialogState::Confirmed);
    assert_eq!(
        d.route_set().uris(),
        ["sip:edge2.voxgate.test;lr", "sip:far.carrier.example;lr"]
    );
    assert_eq!(d.remote_target(), "sip:+15551234@198.51.100.8:5070");
    assert_eq!(d.invite_in_progress(), None);
    assert_eq!(
        d.handle_response(&ok).unwrap(),
        ResponseOutcome::Retransmitted2xx
    );
}

#[test]
fn uac_creation_errors_and_fallbacks() {
    let invite = msg(INVITE_OUT);
    let trying = answer(100, "Trying", "c9", &[], "");
    assert_eq!(
        Dialog::new_uac(&invite, &trying).unwrap_err(),
        DialogError::NotDialogCreating(100)
    );
    let busy = answer(486, "Busy", "c9", &[], "");
    assert_eq!(
        Dialog::new_uac(&invite, &busy).unwrap_err(),
        DialogError::NotDialogCreating(486)
    );
    let untagged = msg(
        "SIP/2.0 180 Ringing\nVia: SIP/2.0/UDP 192.0.2.2:5060;branch=z9hG4bKout1\n\
         From: <sip:+15550000@voxgate.test>;tag=v1\nTo: <sip:+15551234@carrier.example>\n\
         Call-ID: out-1@voxgate.test\nCSeq: 1 INVITE\nContent-Length: 0\n\n",
    );
    assert_eq!(
        Dialog::new_uac(&invite, &untagged).unwrap_err(),
        DialogError::MissingTag("To")
    );
    // An RFC 2543 2xx without tag: null remote tag (§12.1.2).
    let untagged_ok = msg(&format!(
        "SIP/2.0 200 OK\nVia: SIP/2.0/UDP 192.0.2.2:5060;branch=z9hG4bKout1\n\
         From: <sip:+15550000@voxgate.test>;tag=v1\nTo: <sip:+15551234@carrier.example>\n\
         Call-ID: out-1@voxgate.test\nCSeq: 1 INVITE\nContact: <sip:x@198.51.100.7>\n{}",
        "Content-Length: 0\n\n"
    ));
    let d = Dialog::new_uac(&invite, &untagged_ok).unwrap();
    assert_eq!(d.id().remote_tag, "");
    let mut d = d;
    let bye = parse(d.request(Method::Bye, &via(), &br(3)).unwrap().build());
    assert_eq!(bye.to().tag(), None);
    assert_eq!(bye.to().params, "");
    // A 183 without Contact: our Request-URI stands in as remote target.
    let progress = answer(183, "Session Progress", "c9", &[], "");
    let d = Dialog::new_uac(&invite, &progress).unwrap();
    assert_eq!(d.remote_target(), "sip:+15551234@carrier.example");
    // Another call's response.
    let other = msg(&INVITE_OUT.replace("out-1@", "out-2@"));
    let ok = answer(200, "OK", "c9", &[], "<sip:x@198.51.100.7>");
    assert_eq!(
        Dialog::new_uac(&other, &ok).unwrap_err(),
        DialogError::Mismatch
    );
    assert_eq!(
        Dialog::new_uac(&ok, &invite).unwrap_err(),
        DialogError::NotARequest
    );
}

fn confirmed_uac(rr: &[&str]) -> (Message, Dialog) {
    let invite = msg(INVITE_OUT);
    let ok = answer(200, "OK", "c9", rr, "<sip:+15551234@198.51.100.7:5060>");
    let d = Dialog::new_uac(&invite, &ok).unwrap();
    (invite, d)
}

#[test]
fn uac_requests_increment_cseq_and_refresh_requests_carry_contact() {
    let (_, mut d) = confirmed_uac(&["<sip:sbc.voxgate.test;lr>"]);
    assert_eq!(d.state(), &DialogState::Confirmed);
    // ACK for the 2xx: the INVITE's CSeq number, no Contact, CSeq not consumed.
    let ack = parse(d.ack(1, &via(), &br(1)).build());
    assert_eq!(ack.method(), Some(&Method::Ack));
    assert_eq!(ack.cseq().seq, 1);
    assert_eq!(ack.cseq().method, Method::Ack);
    assert_eq!(ack.request_uri(), Some("sip:+15551234@198.51.100.7:5060"));
    assert_eq!(
        headers(&ack, HeaderName::Route),
        ["<sip:sbc.voxgate.test;lr>"]
    );
    assert_eq!(ack.from().tag(), Some("v1"));
    assert_eq!(ack.to().tag(), Some("c9"));
    assert_eq!(d.local_seq(), Some(1));

    let info = parse(d.request(Method::Info, &via(), &br(2)).unwrap().build());
    assert_eq!(info.cseq().seq, 2);
    assert_eq!(info.cseq().method, Method::Info);
    assert!(info.contacts().unwrap().is_none());

    let reinvite = parse(d.request(Method::Invite, &via(), &br(3)).unwrap().build());
    assert_eq!(reinvite.cseq().seq, 3);
    assert_eq!(
        headers(&reinvite, HeaderName::Contact),
        ["<sip:voxgate@192.0.2.2:5060>"]
    );
    assert_eq!(d.invite_in_progress(), Some(3));
    // §14.1: no second INVITE while one is in progress.
    assert_eq!(
        d.request(Method::Invite, &via(), &br(4)).unwrap_err(),
        DialogError::InvitePending
    );
    // UPDATE is allowed meanwhile and also carries Contact (RFC 3311 §5.1).
    d.set_local_contact("sip:voxgate@203.0.113.9:5060").unwrap();
    let update = parse(d.request(Method::Update, &via(), &br(5)).unwrap().build());
    assert_eq!(update.cseq().seq, 4);
    assert_eq!(
        headers(&update, HeaderName::Contact),
        ["<sip:voxgate@203.0.113.9:5060>"]
    );
    let options = parse(d.request(Method::Options, &via(), &br(6)).unwrap().build());
    assert_eq!(options.cseq().seq, 5);

    assert_eq!(
        d.request(Method::Ack, &via(), &br(7)).unwrap_err(),
        DialogError::MethodNotInDialog(Method::Ack)
    );
    assert_eq!(
        d.request(Method::Cancel, &via(), &br(7)).unwrap_err(),
        DialogError::MethodNotInDialog(Method::Cancel)
    );
    assert_eq!(d.set_local_contact("x"), Err(DialogError::BadLocalContact));
}

#[test]
fn early_dialog_refuses_reinvite_but_allows_update_and_bye() {
    let invite = msg(INVITE_OUT);
    let ringing = answer(180, "Ringing", "c9", &[], "<sip:x@198.51.100.7>");
    let mut d = Dialog::new_uac(&invite, &ringing).unwrap();
    assert_eq!(
        d.request(Method::Invite, &via(), &br(1)).unwrap_err(),
        DialogError::ReInviteOnEarly
    );
    assert!(d.request(Method::Update, &via(), &br(2)).is_ok());
    // §15: the caller may BYE an early dialog.
    assert!(d.request(Method::Bye, &via(), &br(3)).is_ok());
}

#[test]
fn cseq_exhaustion_is_an_error_not_a_wrap() {
    let bad = INVITE_OUT.replace("CSeq: 1 INVITE", "CSeq: 2147483647 INVITE");
    let invite = msg(&bad);
    let ok = msg(&format!(
        "SIP/2.0 200 OK\nVia: SIP/2.0/UDP 192.0.2.2:5060;branch=z9hG4bKout1\n\
         From: <sip:+15550000@voxgate.test>;tag=v1\nTo: <sip:+15551234@carrier.example>;tag=c9\n\
         Call-ID: out-1@voxgate.test\nCSeq: 2147483647 INVITE\nContact: <sip:x@198.51.100.7>\n{}",
        "Content-Length: 0\n\n"
    ));
    let mut d = Dialog::new_uac(&invite, &ok).unwrap();
    assert_eq!(
        d.request(Method::Bye, &via(), &br(1)).unwrap_err(),
        DialogError::CSeqExhausted
    );
}

// ---- Routing -------------------------------------------------------------------------

#[test]
fn strict_route_puts_first_hop_in_request_uri_and_target_last() {
    // The near hop (listed last in the response) is a strict router (no ;lr).
    let (_, mut d) = confirmed_uac(&[
        "<sip:far.carrier.example;lr>",
        "<sip:old.proxy.example;transport=tcp;method=INVITE?X-Foo=bar>",
    ]);
    assert!(!d.route_set().is_loose());
    let bye = parse(d.request(Method::Bye, &via(), &br(1)).unwrap().build());
    // §12.2.1.1: parameters not allowed in a Request-URI (method, headers) are stripped.
    assert_eq!(
        bye.request_uri(),
        Some("sip:old.proxy.example;transport=tcp")
    );
    assert_eq!(
        headers(&bye, HeaderName::Route),
        [
            "<sip:far.carrier.example;lr>",
            "<sip:+15551234@198.51.100.7:5060>"
        ]
    );
    let hop = d.next_hop().unwrap();
    assert_eq!(hop.host, "old.proxy.example");
    assert_eq!(hop.transport, Some(Transport::Tcp));
}

#[test]
fn next_hop_without_routes_is_the_remote_target() {
    let (_, d) = confirmed_uac(&[]);
    assert!(d.route_set().is_empty() && d.route_set().is_loose());
    let hop = d.next_hop().unwrap();
    assert_eq!(hop.host, "198.51.100.7");
    assert_eq!(hop.port, Some(5060));
    assert!(!hop.secure);
    let hop = NextHop::of_uri("sips:gw.example:5061;maddr=203.0.113.5;transport=TLS").unwrap();
    assert_eq!(
        hop.host, "203.0.113.5",
        "maddr overrides the host (§19.1.1)"
    );
    assert_eq!(hop.port, Some(5061));
    assert_eq!(hop.transport, Some(Transport::Tls));
    assert!(hop.secure);
    assert_eq!(
        NextHop::of_uri("sip:gw.example;transport=sctp").unwrap_err(),
        DialogError::UnsupportedTransport("sctp".into())
    );
    assert_eq!(
        NextHop::of_uri("tel:+15551234").unwrap_err(),
        DialogError::BadTargetUri
    );
    assert_eq!(
        NextHop::of_uri("sip:[2001:db8::1]:5080").unwrap().host,
        "[2001:db8::1]"
    );
}

#[test]
fn loose_route_request_uri_drops_headers_of_the_target() {
    let (_, d) = confirmed_uac(&[]);
    let (ruri, routes) = d
        .route_set()
        .request_target("sip:bob@198.51.100.7;method=BYE?Subject=hi");
    assert_eq!(ruri, "sip:bob@198.51.100.7");
    assert!(routes.is_empty());
}

// ---- Incoming in-dialog requests ------------------------------------------------------

fn in_dialog(method: &str, cseq: u32, extra: &str) -> Message {
    in_dialog_tags(method, cseq, ";tag=a1", ";tag=b1", extra)
}

fn in_dialog_tags(method: &str, cseq: u32, from_tag: &str, to_tag: &str, extra: &str) -> Message {
    msg(&format!(
        "{method} sip:voxgate@192.0.2.2:5060 SIP/2.0\n\
         Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK{method}{cseq}\n\
         Max-Forwards: 70\n\
         From: \"Alice\" <sip:alice@example.com>{from_tag}\n\
         To: Bob <sip:bob@voxgate.test>{to_tag}\n\
         Call-ID: c1@192.0.2.1\n\
         CSeq: {cseq} {method}\n\
         {extra}Content-Length: 0\n\n"
    ))
}

fn confirmed_uas() -> Dialog {
    let (invite, mut d) = uas();
    d.response(&invite, 200, "OK").unwrap();
    d
}

#[test]
fn remote_cseq_lower_is_500_equal_and_higher_pass() {
    let mut d = confirmed_uas();
    assert_eq!(
        d.handle_request(&in_dialog("INFO", 315, "")),
        Ok(InDialogRequest::Request {
            target_refreshed: false
        })
    );
    assert_eq!(d.remote_seq(), Some(315));
    let old = in_dialog("INFO", 313, "");
    let rej = d.handle_request(&old).unwrap_err();
    assert_eq!(
        rej,
        Rejection::OutOfOrder {
            last: 315,
            got: 313
        }
    );
    assert_eq!(rej.status(), 500);
    let resp = parse(rej.response(&old).build());
    assert_eq!(resp.status(), Some(500));
    assert_eq!(resp.to().tag(), Some("b1"));
    assert_eq!(
        d.remote_seq(),
        Some(315),
        "a rejected request is not recorded"
    );
    assert!(d.handle_request(&in_dialog("OPTIONS", 315, "")).is_ok());
    assert!(d.handle_request(&in_dialog("INFO", 400, "")).is_ok());
    // ACK carries the INVITE's (older) number and skips the check (§12.2.2).
    assert_eq!(
        d.handle_request(&in_dialog("ACK", 314, "")),
        Ok(InDialogRequest::Ack { cseq: 314 })
    );
    assert_eq!(d.remote_seq(), Some(400));
    assert_eq!(
        d.handle_request(&in_dialog("CANCEL", 400, "")).unwrap_err(),
        Rejection::Cancel
    );
}

#[test]
fn incoming_reinvite_and_update_refresh_the_target() {
    let mut d = confirmed_uas();
    let re = in_dialog("INVITE", 315, "Contact: <sip:alice@203.0.113.50:5062>\n");
    assert_eq!(
        d.handle_request(&re),
        Ok(InDialogRequest::Request {
            target_refreshed: true
        })
    );
    assert_eq!(d.remote_target(), "sip:alice@203.0.113.50:5062");
    // Same Contact again: no change.
    let re = in_dialog("INVITE", 316, "Contact: <sip:alice@203.0.113.50:5062>\n");
    assert_eq!(
        d.handle_request(&re),
        Ok(InDialogRequest::Request {
            target_refreshed: false
        })
    );
    let upd = in_dialog("UPDATE", 317, "Contact: <sip:alice@203.0.113.51>\n");
    assert_eq!(
        d.handle_request(&upd),
        Ok(InDialogRequest::Request {
            target_refreshed: true
        })
    );
    assert_eq!(d.remote_target(), "sip:alice@203.0.113.51");
    // INFO is no target refresh: its Contact is ignored.
    let info = in_dialog("INFO", 318, "Contact: <sip:alice@203.0.113.99>\n");
    d.handle_request(&info).unwrap();
    assert_eq!(d.remote_target(), "sip:alice@203.0.113.51");
    // The 2xx to the re-INVITE carries our Contact; no Record-Route (not dialog-creating).
    let ok = parse(d.response(&re, 200, "OK").unwrap().build());
    assert_eq!(
        headers(&ok, HeaderName::Contact),
        ["<sip:voxgate@192.0.2.2:5060>"]
    );
    assert!(headers(&ok, HeaderName::RecordRoute).is_empty());
    assert_eq!(d.state(), &DialogState::Confirmed);
    // A 2xx to UPDATE has Contact too (RFC 3311 §6.2), a 2xx to INFO not.
    let ok = parse(d.response(&upd, 200, "OK").unwrap().build());
    assert_eq!(headers(&ok, HeaderName::Contact).len(), 1);
    let ok = parse(d.response(&info, 200, "OK").unwrap().build());
    assert!(headers(&ok, HeaderName::Contact).is_empty());
    let star = in_dialog("UPDATE", 319, "Contact: *\n");
    assert_eq!(d.handle_request(&star).unwrap_err(), Rejection::BadContact);
}

#[test]
fn bye_terminates_and_later_requests_get_481() {
    let mut d = confirmed_uas();
    assert_eq!(
        d.handle_request(&in_dialog("BYE", 315, "")),
        Ok(InDialogRequest::Bye)
    );
    assert_eq!(
        d.state(),
        &DialogState::Terminated(TerminationReason::RemoteBye)
    );
    let info = in_dialog("INFO", 316, "");
    let rej = d.handle_request(&info).unwrap_err();
    assert_eq!(rej, Rejection::Terminated);
    assert_eq!(parse(rej.response(&info).build()).status(), Some(481));
}

#[test]
fn crossing_byes_both_get_200() {
    let mut d = confirmed_uas();
    d.request(Method::Bye, &via(), &br(1)).unwrap();
    assert_eq!(
        d.handle_request(&in_dialog("BYE", 315, "")),
        Ok(InDialogRequest::Bye)
    );
    assert_eq!(
        d.state(),
        &DialogState::Terminated(TerminationReason::LocalBye),
        "the first reason sticks"
    );
}

#[test]
fn bye_on_early_uas_dialog_is_accepted() {
    // §15.1.2: the caller hangs up before the answer; TU answers 200 and 487.
    let (invite, mut d) = uas();
    d.response(&invite, 180, "Ringing").unwrap();
    assert_eq!(
        d.handle_request(&in_dialog("BYE", 315, "")),
        Ok(InDialogRequest::Bye)
    );
    assert!(d.state().is_terminated());
}

#[test]
fn requests_of_another_dialog_are_refused() {
    let mut d = confirmed_uas();
    let wrong_tag = in_dialog_tags("INFO", 315, ";tag=a1", ";tag=zz", "");
    assert_eq!(
        d.handle_request(&wrong_tag).unwrap_err(),
        Rejection::NotThisDialog
    );
    assert_eq!(
        d.response(&wrong_tag, 200, "OK").unwrap_err(),
        DialogError::NotThisDialog
    );
    let resp = answer(200, "OK", "c9", &[], "");
    assert_eq!(d.handle_request(&resp).unwrap_err(), Rejection::NotARequest);
}

// ---- Glare (§14) ----------------------------------------------------------------------

#[test]
fn reinvite_during_ours_is_491_and_during_the_initial_is_500() {
    let mut d = confirmed_uas();
    d.request(Method::Invite, &via(), &br(1)).unwrap();
    let re = in_dialog("INVITE", 315, "Contact: <sip:alice@203.0.113.50>\n");
    let rej = d.handle_request(&re).unwrap_err();
    assert_eq!(rej, Rejection::RequestPending);
    assert_eq!(rej.status(), 491);
    assert_eq!(
        d.remote_target(),
        "sip:alice@192.0.2.1:5060;transport=udp",
        "a refused re-INVITE refreshes nothing"
    );
    assert_eq!(
        d.glare_retry_window(),
        (Duration::ZERO, Duration::from_secs(2))
    );

    // The initial INVITE still unanswered: §14.2 500 + Retry-After 0-10 s.
    let (invite, mut d) = uas();
    d.response(&invite, 180, "Ringing").unwrap();
    let re = in_dialog("INVITE", 315, "Contact: <sip:alice@203.0.113.50>\n");
    let rej = d.handle_request(&re).unwrap_err();
    assert!(matches!(rej, Rejection::InviteOverlap { retry_after } if retry_after <= 10));
    let resp = parse(rej.response(&re).build());
    assert_eq!(resp.status(), Some(500));
    assert!(resp.retry_after().unwrap().is_some_and(|r| r <= 10));
}

fn reply_to(req: &Message, status: u16, extra: &str) -> Message {
    let mut b = MessageBuilder::response_to(req, status, "Whatever", Some("c9"));
    for line in extra.lines().filter(|l| !l.is_empty()) {
        let (n, v) = line.split_once(": ").unwrap();
        b = b.header(n, v);
    }
    parse(b.build())
}

#[test]
fn responses_to_our_reinvite() {
    let (_, mut d) = confirmed_uac(&[]);
    let re = parse(d.request(Method::Invite, &via(), &br(1)).unwrap().build());
    assert_eq!(
        d.handle_response(&reply_to(&re, 180, "")).unwrap(),
        ResponseOutcome::Unchanged
    );
    assert_eq!(
        d.handle_response(&reply_to(&re, 491, "")).unwrap(),
        ResponseOutcome::RequestPending
    );
    assert_eq!(d.invite_in_progress(), None);
    assert_eq!(
        d.glare_retry_window(),
        (Duration::from_millis(2100), Duration::from_secs(4))
    );

    let re = parse(d.request(Method::Invite, &via(), &br(2)).unwrap().build());
    assert_eq!(
        d.handle_response(&reply_to(&re, 488, "")).unwrap(),
        ResponseOutcome::ReInviteFailed { status: 488 }
    );
    assert_eq!(d.state(), &DialogState::Confirmed);

    let re = parse(d.request(Method::Invite, &via(), &br(3)).unwrap().build());
    let ok = reply_to(&re, 200, "Contact: <sip:moved@198.51.100.77>");
    assert_eq!(
        d.handle_response(&ok).unwrap(),
        ResponseOutcome::Refreshed {
            invite: true,
            target_refreshed: true
        }
    );
    assert_eq!(d.remote_target(), "sip:moved@198.51.100.77");
    assert_eq!(
        d.handle_response(&ok).unwrap(),
        ResponseOutcome::Retransmitted2xx
    );
    let ack = parse(d.ack(re.cseq().seq, &via(), &br(4)).build());
    assert_eq!(ack.cseq().seq, re.cseq().seq);
    assert_eq!(ack.request_uri(), Some("sip:moved@198.51.100.77"));

    let upd = parse(d.request(Method::Update, &via(), &br(5)).unwrap().build());
    assert_eq!(
        d.handle_response(&reply_to(&upd, 200, "")).unwrap(),
        ResponseOutcome::Refreshed {
            invite: false,
            target_refreshed: false
        }
    );
}

#[test]
fn responses_481_and_408_and_timeouts_terminate() {
    for status in [481, 408] {
        let (_, mut d) = confirmed_uac(&[]);
        let info = parse(d.request(Method::Info, &via(), &br(1)).unwrap().build());
        assert_eq!(
            d.handle_response(&reply_to(&info, status, "")).unwrap(),
            ResponseOutcome::Terminated
        );
        assert_eq!(
            d.state(),
            &DialogState::Terminated(TerminationReason::PeerGone { status })
        );
    }
    // Other failures leave the dialog alone.
    let (_, mut d) = confirmed_uac(&[]);
    let info = parse(d.request(Method::Info, &via(), &br(1)).unwrap().build());
    assert_eq!(
        d.handle_response(&reply_to(&info, 415, "")).unwrap(),
        ResponseOutcome::Unchanged
    );
    assert_eq!(d.state(), &DialogState::Confirmed);
    d.handle_request_timeout(&Method::Info);
    assert_eq!(
        d.state(),
        &DialogState::Terminated(TerminationReason::PeerGone { status: 408 })
    );
    // A 481 to our BYE: already terminated by the BYE, reason unchanged.
    let (_, mut d) = confirmed_uac(&[]);
    let bye = parse(d.request(Method::Bye, &via(), &br(1)).unwrap().build());
    d.handle_response(&reply_to(&bye, 481, "")).unwrap();
    assert_eq!(
        d.state(),
        &DialogState::Terminated(TerminationReason::LocalBye)
    );
    // A response naming another dialog.
    let other = answer(200, "OK", "zz", &[], "");
    assert_eq!(
        d.handle_response(&other).unwrap_err(),
        DialogError::NotThisDialog
    );
}

// ---- PRACK (RFC 3262) -----------------------------------------------------------------

fn reliable_183(rseq: &str) -> Message {
    let mut s = String::from(
        "SIP/2.0 183 Session Progress\nVia: SIP/2.0/UDP 192.0.2.2:5060;branch=z9hG4bKout1\n\
         From: <sip:+15550000@voxgate.test>;tag=v1\nTo: <sip:+15551234@carrier.example>;tag=c9\n\
         Call-ID: out-1@voxgate.test\nCSeq: 1 INVITE\nRequire: 100rel\n\
         Contact: <sip:+15551234@198.51.100.7>\n",
    );
    if !rseq.is_empty() {
        s.push_str(&format!("RSeq: {rseq}\n"));
    }
    s.push_str("Content-Length: 0\n\n");
    msg(&s)
}

#[test]
fn prack_carries_rack_and_refuses_retransmissions_and_gaps() {
    let invite = msg(INVITE_OUT);
    let p1 = reliable_183("988");
    let mut d = Dialog::new_uac(&invite, &p1).unwrap();
    let prack = parse(d.prack(&p1, &via(), &br(1)).unwrap().build());
    assert_eq!(prack.method(), Some(&Method::Prack));
    assert_eq!(prack.header_named("RAck"), Some("988 1 INVITE"));
    assert_eq!(prack.cseq().seq, 2);
    assert_eq!(prack.request_uri(), Some("sip:+15551234@198.51.100.7"));
    assert_eq!(
        d.prack(&p1, &via(), &br(2)).unwrap_err(),
        DialogError::RSeqRetransmission(988)
    );
    assert_eq!(
        d.prack(&reliable_183("990"), &via(), &br(2)).unwrap_err(),
        DialogError::RSeqOutOfOrder {
            expected: 989,
            got: 990
        }
    );
    assert!(d.prack(&reliable_183("989"), &via(), &br(2)).is_ok());
    for bad in ["", "x", "0", "4294967296", "-1"] {
        assert_eq!(
            d.prack(&reliable_183(bad), &via(), &br(3)).unwrap_err(),
            DialogError::BadRSeq
        );
    }
    assert_eq!(d.local_seq(), Some(3), "refused PRACKs use no CSeq");
}

// ---- Dialogs container and forking ----------------------------------------------------

#[test]
fn forking_two_early_dialogs_one_confirms_the_other_is_extra() {
    let invite = msg(INVITE_OUT);
    let mut set = Dialogs::new();
    let trying = answer(100, "Trying", "", &[], "");
    assert_eq!(
        set.handle_uac_response(&invite, &trying).unwrap(),
        UacInviteOutcome::NoDialog
    );
    let r1 = answer(180, "Ringing", "f1", &[], "<sip:desk@198.51.100.1>");
    let r2 = answer(180, "Ringing", "f2", &[], "<sip:mobile@198.51.100.2>");
    let id1 = match set.handle_uac_response(&invite, &r1).unwrap() {
        UacInviteOutcome::Early { id, created: true } => id,
        other => panic!("{other:?}"),
    };
    let id2 = match set.handle_uac_response(&invite, &r2).unwrap() {
        UacInviteOutcome::Early { id, created: true } => id,
        other => panic!("{other:?}"),
    };
    assert_ne!(id1, id2);
    assert_eq!(set.len(), 2);
    assert_eq!(set.forks("out-1@voxgate.test", "v1").count(), 2);
    assert_eq!(
        set.handle_uac_response(&invite, &r1).unwrap(),
        UacInviteOutcome::Early {
            id: id1.clone(),
            created: false
        }
    );
    // Fork 2 answers first.
    let ok2 = answer(200, "OK", "f2", &[], "<sip:mobile@198.51.100.2>");
    assert_eq!(
        set.handle_uac_response(&invite, &ok2).unwrap(),
        UacInviteOutcome::Confirmed { id: id2.clone() }
    );
    assert_eq!(
        set.handle_uac_response(&invite, &ok2).unwrap(),
        UacInviteOutcome::Retransmitted2xx { id: id2.clone() }
    );
    // Fork 1 answers too: a second call for the TU to ACK and BYE (§13.2.2.4).
    let ok1 = answer(200, "OK", "f1", &[], "<sip:desk@198.51.100.1>");
    assert_eq!(
        set.handle_uac_response(&invite, &ok1).unwrap(),
        UacInviteOutcome::ExtraFork { id: id1.clone() }
    );
    // A 2xx from a fork never seen before is extra as well.
    let ok3 = answer(200, "OK", "f3", &[], "<sip:voicemail@198.51.100.3>");
    assert!(matches!(
        set.handle_uac_response(&invite, &ok3).unwrap(),
        UacInviteOutcome::ExtraFork { .. }
    ));
    assert_eq!(set.len(), 3);
    let d1 = set.get_mut(&id1).unwrap();
    let bye = parse(d1.request(Method::Bye, &via(), &br(9)).unwrap().build());
    assert_eq!(bye.to().tag(), Some("f1"));
    assert_eq!(bye.request_uri(), Some("sip:desk@198.51.100.1"));
    assert_eq!(set.remove_terminated(), vec![id1.clone()]);
    assert_eq!(set.len(), 2);
    assert!(set.get(&id1).is_none());
}

#[test]
fn forking_early_forks_end_when_the_invite_does() {
    let invite = msg(INVITE_OUT);
    let mut set = Dialogs::new();
    for tag in ["f1", "f2"] {
        let r = answer(183, "Session Progress", tag, &[], "<sip:x@198.51.100.1>");
        set.handle_uac_response(&invite, &r).unwrap();
    }
    let ok = answer(200, "OK", "f1", &[], "<sip:x@198.51.100.1>");
    set.handle_uac_response(&invite, &ok).unwrap();
    let ended = set.end_early_forks("out-1@voxgate.test", "v1");
    assert_eq!(ended.len(), 1);
    assert_eq!(ended[0].remote_tag, "f2");
    assert_eq!(
        set.get(&ended[0]).unwrap().state(),
        &DialogState::Terminated(TerminationReason::Local)
    );
    assert!(set.iter().any(|d| d.state().is_confirmed()));
    // The abandoned fork answers after all: a second confirmed dialog to ACK and BYE,
    // not a retransmission (we never ACKed it).
    let late = answer(200, "OK", "f2", &[], "<sip:y@198.51.100.2>");
    assert_eq!(
        set.handle_uac_response(&invite, &late).unwrap(),
        UacInviteOutcome::ExtraFork {
            id: ended[0].clone()
        }
    );
    assert!(set.get(&ended[0]).unwrap().state().is_confirmed());
    assert_eq!(
        set.handle_uac_response(&invite, &late).unwrap(),
        UacInviteOutcome::Retransmitted2xx {
            id: ended[0].clone()
        }
    );
}

#[test]
fn forking_failure_ends_every_early_fork() {
    let invite = msg(INVITE_OUT);
    let mut set = Dialogs::new();
    for tag in ["f1", "f2"] {
        let r = answer(180, "Ringing", tag, &[], "<sip:x@198.51.100.1>");
        set.handle_uac_response(&invite, &r).unwrap();
    }
    let busy = answer(486, "Busy Here", "f2", &[], "");
    match set.handle_uac_response(&invite, &busy).unwrap() {
        UacInviteOutcome::Failed { status: 486, ended } => assert_eq!(ended.len(), 2),
        other => panic!("{other:?}"),
    }
    assert!(set.iter().all(
        |d| d.state() == &DialogState::Terminated(TerminationReason::Rejected { status: 486 })
    ));
    assert_eq!(set.remove_terminated().len(), 2);
    assert!(set.is_empty());
    // Mismatched pairs are refused.
    let other_call = msg(&INVITE_OUT.replace("out-1@", "out-9@"));
    assert_eq!(
        set.handle_uac_response(&other_call, &busy).unwrap_err(),
        DialogError::Mismatch
    );
}

#[test]
fn container_lookup_by_request_and_response() {
    let mut set = Dialogs::new();
    let (invite, d) = uas();
    let id = d.id().clone();
    set.insert(d.clone()).unwrap();
    assert_eq!(set.insert(d).unwrap_err(), DialogError::Duplicate);
    // An in-dialog request: To tag ours, From tag theirs.
    let info = in_dialog("INFO", 315, "");
    assert_eq!(set.find_for_request(&info).unwrap().id(), &id);
    assert!(
        set.find_for_request(&invite).is_none(),
        "no To tag: not in-dialog"
    );
    // A response to our request: From tag ours, To tag theirs.
    let dialog = set.get_mut(&id).unwrap();
    dialog.response(&invite, 200, "OK").unwrap();
    let ours = parse(
        dialog
            .request(Method::Info, &via(), &br(1))
            .unwrap()
            .build(),
    );
    let resp = MessageBuilder::response_to(&ours, 200, "OK", None).build();
    assert_eq!(set.find_for_response(&parse(resp)).unwrap().id(), &id);
    assert_eq!(DialogId::of_request(&info), Some(id.clone()));
    assert_eq!(
        DialogId::of_response(&ours).map(|i| i.local_tag),
        Some("b1".into())
    );
    assert!(set.remove(&id).is_some());
    assert!(set.remove(&id).is_none());
    assert!(set.is_empty());
}

#[test]
fn rfc2543_peer_without_from_tag() {
    let invite = msg(&INVITE_IN.replace(";tag=a1", ""));
    let d = Dialog::new_uas(&invite, "b1", "sip:v@192.0.2.2").unwrap();
    assert_eq!(d.id().remote_tag, "");
    let mut set = Dialogs::new();
    set.insert(d).unwrap();
    let bye = in_dialog_tags("BYE", 315, "", ";tag=b1", "");
    let d = set.find_for_request(&bye).unwrap();
    assert_eq!(d.handle_request(&bye), Ok(InDialogRequest::Bye));
}

// ---- A UAC and a UAS in memory --------------------------------------------------------

#[test]
fn uac_and_uas_talk_through_two_proxies() {
    // The caller's INVITE as it reaches us after two record-routing proxies.
    let invite = msg(INVITE_IN);
    let mut callee = Dialogs::new();
    callee
        .insert(Dialog::new_uas(&invite, "b1", "sip:bob@192.0.2.2:5060").unwrap())
        .unwrap();
    let id = DialogId {
        call_id: "c1@192.0.2.1".into(),
        local_tag: "b1".into(),
        remote_tag: "a1".into(),
    };
    let ok = parse(
        callee
            .get_mut(&id)
            .unwrap()
            .response(&invite, 200, "OK")
            .unwrap()
            .build(),
    );

    // The caller sees the 2xx with the same Record-Route (proxies do not touch it).
    let caller_invite = msg("INVITE sip:bob@voxgate.test SIP/2.0\n\
         Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKa1;rport\n\
         Max-Forwards: 70\n\
         From: \"Alice\" <sip:alice@example.com>;tag=a1\n\
         To: Bob <sip:bob@voxgate.test>\n\
         Call-ID: c1@192.0.2.1\n\
         CSeq: 314 INVITE\n\
         Contact: <sip:alice@192.0.2.1:5060;transport=udp>\n\
         Content-Length: 0\n\n");
    let mut caller = Dialogs::new();
    let caller_id = match caller.handle_uac_response(&caller_invite, &ok).unwrap() {
        UacInviteOutcome::Confirmed { id } => id,
        other => panic!("{other:?}"),
    };
    let cd = caller.get_mut(&caller_id).unwrap();
    assert_eq!(
        cd.route_set().uris(),
        ["sip:p1.example.com;lr", "sip:p2.example.net;lr"],
        "the caller's first hop is its own proxy"
    );
    assert_eq!(cd.remote_target(), "sip:bob@192.0.2.2:5060");
    let alice_via = LocalVia::new(Transport::Udp, "192.0.2.1:5060");
    let ack = parse(cd.ack(314, &alice_via, &br(1)).build());
    assert_eq!(ack.request_uri(), Some("sip:bob@192.0.2.2:5060"));

    // Our side: the ACK stops the 2xx retransmissions.
    let mut wait = AckWait::new(
        314,
        ok.as_bytes().clone(),
        Instant::now(),
        &TimerConfig::default(),
    );
    let d = callee.find_for_request(&ack).unwrap();
    match d.handle_request(&ack).unwrap() {
        InDialogRequest::Ack { cseq } => assert!(wait.handle_ack(cseq)),
        other => panic!("{other:?}"),
    }
    assert!(wait.is_done() && wait.is_acked());

    // We re-INVITE the caller (e.g. to hold); the caller checks and accepts it.
    let re = parse(d.request(Method::Invite, &via(), &br(2)).unwrap().build());
    let cd = caller.find_for_request(&re).unwrap();
    assert_eq!(
        cd.handle_request(&re),
        Ok(InDialogRequest::Request {
            target_refreshed: false
        })
    );
    let re_ok = parse(cd.response(&re, 200, "OK").unwrap().build());
    let d = callee.find_for_response(&re_ok).unwrap();
    assert_eq!(
        d.handle_response(&re_ok).unwrap(),
        ResponseOutcome::Refreshed {
            invite: true,
            target_refreshed: false
        }
    );

    // The caller hangs up.
    let cd = caller.get_mut(&caller_id).unwrap();
    let bye = parse(cd.request(Method::Bye, &alice_via, &br(3)).unwrap().build());
    assert_eq!(bye.cseq().seq, 315);
    let d = callee.find_for_request(&bye).unwrap();
    assert_eq!(d.handle_request(&bye), Ok(InDialogRequest::Bye));
    let bye_ok = parse(d.response(&bye, 200, "OK").unwrap().build());
    let cd = caller.find_for_response(&bye_ok).unwrap();
    assert_eq!(
        cd.handle_response(&bye_ok).unwrap(),
        ResponseOutcome::Unchanged
    );
    assert!(cd.state().is_terminated());
    assert_eq!(callee.remove_terminated().len(), 1);
    assert_eq!(caller.remove_terminated().len(), 1);
}

use crate::transaction::TimerConfig;
use std::time::Instant;

// ---- 2xx retransmission and ACK (§13.3.1.4, RFC 6026) ---------------------------------

/// Runs an AckWait on a virtual clock until it is done or `stop_at`; returns the offsets
/// (ms) of retransmissions and of the NoAck event.
fn run_ack_wait(w: &mut AckWait, t0: Instant, stop_at: Duration) -> (Vec<u128>, Option<u128>) {
    let (mut sends, mut no_ack) = (Vec::new(), None);
    while let Some(at) = w.poll_timeout() {
        if at - t0 > stop_at {
            break;
        }
        w.handle_timeout(at);
        if w.poll_transmit().is_some() {
            sends.push((at - t0).as_millis());
        }
        assert!(w.poll_transmit().is_none(), "one send per deadline");
        if w.poll_event() == Some(AckWaitEvent::NoAck) {
            no_ack = Some((at - t0).as_millis());
        }
    }
    (sends, no_ack)
}

#[test]
fn ok_retransmissions_double_to_t2_and_give_up_at_64_t1() {
    let t0 = Instant::now();
    let mut w = AckWait::new(
        314,
        Bytes::from_static(b"SIP/2.0 200 OK"),
        t0,
        &TimerConfig::default(),
    );
    let (sends, no_ack) = run_ack_wait(&mut w, t0, Duration::from_secs(100));
    assert_eq!(
        sends,
        [500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500]
    );
    assert_eq!(no_ack, Some(32_000));
    assert!(w.is_done() && !w.is_acked());
    assert_eq!(w.poll_timeout(), None);
    assert!(!w.handle_ack(314), "too late: given up");
}

#[test]
fn ok_retransmissions_stop_on_the_ack() {
    let t0 = Instant::now();
    let mut w = AckWait::new(
        314,
        Bytes::from_static(b"SIP/2.0 200 OK"),
        t0,
        &TimerConfig::default(),
    );
    let (sends, _) = run_ack_wait(&mut w, t0, Duration::from_secs(2));
    assert_eq!(sends, [500, 1500]);
    assert!(!w.handle_ack(313), "an ACK for another INVITE");
    assert!(!w.is_done());
    assert!(w.handle_ack(314));
    assert!(w.handle_ack(314), "a retransmitted ACK is still ours");
    assert!(w.is_acked() && w.is_done());
    assert_eq!(w.poll_timeout(), None);
    w.handle_timeout(t0 + Duration::from_secs(40));
    assert_eq!(w.poll_transmit(), None);
    assert_eq!(w.poll_event(), None);
}

#[test]
fn ok_retransmission_after_a_late_wake_up_does_not_burst() {
    let t0 = Instant::now();
    let mut w = AckWait::new(
        1,
        Bytes::from_static(b"SIP/2.0 200 OK"),
        t0,
        &TimerConfig::default(),
    );
    w.handle_timeout(t0 + Duration::from_secs(10));
    assert!(w.poll_transmit().is_some());
    assert!(w.poll_transmit().is_none());
    assert_eq!(w.poll_timeout(), Some(t0 + Duration::from_millis(11_500)));
    w.handle_timeout(t0 + Duration::from_millis(11_000));
    assert!(w.poll_transmit().is_none(), "not due yet");
}

#[test]
fn ack_cache_answers_retransmitted_2xx_only() {
    let t0 = Instant::now();
    let (_, d) = confirmed_uac(&[]);
    let ack = d.ack(1, &via(), &br(1)).build();
    let cache = AckCache::new(1, ack.clone(), t0, &TimerConfig::default());
    let ok = answer(200, "OK", "c9", &[], "<sip:x@198.51.100.7>");
    assert_eq!(cache.on_response(&ok), Some(ack));
    let ringing = answer(180, "Ringing", "c9", &[], "");
    assert_eq!(cache.on_response(&ringing), None);
    let later = msg(&format!(
        "SIP/2.0 200 OK\nVia: SIP/2.0/UDP 192.0.2.2:5060;branch=z9hG4bKx\n\
         From: <sip:a@b>;tag=v1\nTo: <sip:c@d>;tag=c9\nCall-ID: out-1@voxgate.test\n\
         CSeq: 2 INVITE\n{}",
        "Content-Length: 0\n\n"
    ));
    assert_eq!(cache.on_response(&later), None, "another INVITE's 2xx");
    assert_eq!(cache.poll_timeout(), t0 + Duration::from_secs(32));
    assert!(!cache.is_expired(t0 + Duration::from_secs(31)));
    assert!(cache.is_expired(t0 + Duration::from_secs(32)));
}

// ---- Session timers (RFC 4028) --------------------------------------------------------

mod session_timers {
    use super::*;
    use crate::dialog::session_timer::*;

    fn invite_with(extra: &str) -> Message {
        msg(&INVITE_IN.replace(
            "Content-Length: 0\n",
            &format!("{extra}Content-Length: 0\n"),
        ))
    }

    #[test]
    fn parse_session_expires_and_min_se() {
        assert_eq!(
            SessionExpires::parse("1800;refresher=uac"),
            Ok(SessionExpires {
                interval: 1800,
                refresher: Some(Refresher::Uac)
            })
        );
        assert_eq!(
            SessionExpires::parse(" 90 ; Refresher = UAS ;foo=bar"),
            Ok(SessionExpires {
                interval: 90,
                refresher: Some(Refresher::Uas)
            })
        );
        assert_eq!(SessionExpires::parse("1800").unwrap().refresher, None);
        for bad in [
            "",
            "abc",
            "0",
            "-5",
            "1800;refresher=me",
            "99999999999",
            "1800;;",
            "18 00",
        ] {
            assert_eq!(
                SessionExpires::parse(bad),
                Err(SessionTimerError::BadSessionExpires),
                "{bad:?}"
            );
        }
        let m = invite_with("x: 1200;refresher=uas\nMin-SE: 120;x=y\n");
        assert_eq!(
            SessionExpires::from_message(&m).unwrap().unwrap().interval,
            1200
        );
        assert_eq!(min_se(&m), Ok(Some(120)));
        let twice = invite_with("Session-Expires: 1200\nSession-Expires: 1300\nMin-SE: x\n");
        assert!(SessionExpires::from_message(&twice).is_err());
        assert_eq!(min_se(&twice), Err(SessionTimerError::BadMinSe));
        assert_eq!(
            SessionExpires {
                interval: 600,
                refresher: Some(Refresher::Uas)
            }
            .to_string(),
            "600;refresher=uas"
        );
    }

    #[test]
    fn uas_rejects_too_small_intervals_with_422() {
        let cfg = SessionTimerConfig {
            min_se: 600,
            ..SessionTimerConfig::default()
        };
        let req = invite_with("Supported: timer\nSession-Expires: 300\n");
        assert_eq!(
            negotiate_uas(&cfg, &req),
            Ok(UasDecision::TooSmall { min_se: 600 })
        );
        let resp = parse(response_422(&req, 600, Some("b1")).build());
        assert_eq!(resp.status(), Some(422));
        assert_eq!(min_se(&resp), Ok(Some(600)));
        // Below the absolute 90 s floor even with a lax config.
        let req = invite_with("Session-Expires: 60\n");
        let lax = SessionTimerConfig {
            min_se: 10,
            ..SessionTimerConfig::default()
        };
        assert_eq!(
            negotiate_uas(&lax, &req),
            Ok(UasDecision::TooSmall { min_se: 90 })
        );
    }

    #[test]
    fn uas_negotiation_picks_interval_and_refresher() {
        let cfg = SessionTimerConfig::default();
        // Asked for longer than we like: shortened to ours; UAC supports, we prefer uac.
        let req = invite_with("Supported: timer, 100rel\nSession-Expires: 3600\n");
        let d = negotiate_uas(&cfg, &req).unwrap();
        assert_eq!(
            d,
            UasDecision::Accept {
                session_expires: SessionExpires {
                    interval: 1800,
                    refresher: Some(Refresher::Uac)
                },
                require_timer: true
            }
        );
        let ok = parse(
            d.apply(MessageBuilder::response_to(&req, 200, "OK", Some("b1")))
                .build(),
        );
        assert_eq!(
            ok.header(HeaderName::SessionExpires),
            Some("1800;refresher=uac")
        );
        assert!(ok.require().any(|t| t == "timer"));
        // Their refresher choice stands.
        let req = invite_with("Supported: timer\nSession-Expires: 1000;refresher=uas\n");
        assert!(matches!(
            negotiate_uas(&cfg, &req),
            Ok(UasDecision::Accept {
                session_expires: SessionExpires {
                    interval: 1000,
                    refresher: Some(Refresher::Uas)
                },
                ..
            })
        ));
        // Their Min-SE is a floor for our shortening.
        let req = invite_with("Supported: timer\nSession-Expires: 3600\nMin-SE: 2000\n");
        assert!(matches!(
            negotiate_uas(&cfg, &req),
            Ok(UasDecision::Accept {
                session_expires: SessionExpires { interval: 2000, .. },
                ..
            })
        ));
        // A proxy asked for a timer the UAC does not support: we refresh, no Require.
        let req = invite_with("Session-Expires: 1200;refresher=uac\n");
        assert_eq!(
            negotiate_uas(&cfg, &req),
            Ok(UasDecision::Accept {
                session_expires: SessionExpires {
                    interval: 1200,
                    refresher: Some(Refresher::Uas)
                },
                require_timer: false
            })
        );
        // Nobody asked: impose ours, or not.
        let req = invite_with("Supported: timer\n");
        assert!(matches!(
            negotiate_uas(&cfg, &req),
            Ok(UasDecision::Accept {
                session_expires: SessionExpires {
                    interval: 1800,
                    refresher: Some(Refresher::Uac)
                },
                require_timer: true
            })
        ));
        let quiet = SessionTimerConfig {
            impose: false,
            ..cfg
        };
        assert_eq!(negotiate_uas(&quiet, &req), Ok(UasDecision::NoTimer));
        let d = UasDecision::NoTimer;
        let resp = parse(
            d.apply(MessageBuilder::response_to(&req, 200, "OK", None))
                .build(),
        );
        assert_eq!(resp.header(HeaderName::SessionExpires), None);
    }

    #[test]
    fn uac_side_422_retry_and_2xx() {
        let cfg = SessionTimerConfig::default();
        let h = cfg.uac_headers(1800);
        assert_eq!(h[0], ("Session-Expires", "1800".to_owned()));
        assert_eq!(h[1], ("Min-SE", "90".to_owned()));
        assert_eq!(h[2], ("Supported", "timer".to_owned()));
        let invite = msg(INVITE_OUT);
        let r422 = reply_to(&invite, 422, "Min-SE: 3600");
        assert_eq!(uac_retry_interval(1800, &r422), Ok(3600));
        assert_eq!(uac_retry_interval(7200, &r422), Ok(7200));
        let bare = reply_to(&invite, 422, "");
        assert_eq!(
            uac_retry_interval(1800, &bare),
            Err(SessionTimerError::MissingMinSe)
        );
        let ok = reply_to(&invite, 200, "Session-Expires: 900");
        assert_eq!(
            uac_negotiated(&ok),
            Ok(Some(SessionExpires {
                interval: 900,
                refresher: Some(Refresher::Uac)
            }))
        );
        assert_eq!(uac_negotiated(&reply_to(&invite, 200, "")), Ok(None));
    }

    fn secs(t0: Instant, t: Instant) -> u64 {
        (t - t0).as_secs()
    }

    #[test]
    fn refresher_refreshes_at_half_and_expires_at_the_interval() {
        let t0 = Instant::now();
        let se = SessionExpires {
            interval: 1800,
            refresher: Some(Refresher::Uac),
        };
        let mut t = SessionTimer::new(&se, Refresher::Uac, t0);
        assert!(t.we_refresh());
        assert_eq!(secs(t0, t.poll_timeout().unwrap()), 900);
        t.handle_timeout(t0 + Duration::from_secs(899));
        assert_eq!(t.poll_event(), None);
        t.handle_timeout(t0 + Duration::from_secs(900));
        assert_eq!(t.poll_event(), Some(SessionTimerEvent::Refresh));
        // The refresh fails to happen: the session ends at the full interval.
        assert_eq!(secs(t0, t.poll_timeout().unwrap()), 1800);
        t.handle_timeout(t0 + Duration::from_secs(1800));
        assert_eq!(t.poll_event(), Some(SessionTimerEvent::Expired));
        assert!(t.is_expired());
        assert_eq!(t.poll_timeout(), None);
        // A successful refresh restarts it.
        let t1 = t0 + Duration::from_secs(2000);
        t.refreshed(&se, Refresher::Uac, t1);
        assert_eq!(secs(t0, t.poll_timeout().unwrap()), 2900);
    }

    #[test]
    fn non_refresher_byes_before_expiry() {
        let t0 = Instant::now();
        let se = SessionExpires {
            interval: 1800,
            refresher: Some(Refresher::Uac),
        };
        let mut t = SessionTimer::new(&se, Refresher::Uas, t0);
        assert!(!t.we_refresh());
        // min(32 s, 1800/3) before the end.
        assert_eq!(secs(t0, t.poll_timeout().unwrap()), 1768);
        t.handle_timeout(t0 + Duration::from_secs(1768));
        assert_eq!(t.poll_event(), Some(SessionTimerEvent::Expired));
        // 90 s: the margin is a third (30 s).
        let short = SessionExpires {
            interval: 90,
            refresher: None,
        };
        let t = SessionTimer::new(&short, Refresher::Uac, t0);
        assert_eq!(secs(t0, t.expires_at()), 60);
        // The peer refreshed at 1000 s: the deadline moves.
        let mut t = SessionTimer::new(&se, Refresher::Uas, t0);
        t.refreshed(&se, Refresher::Uas, t0 + Duration::from_secs(1000));
        assert_eq!(secs(t0, t.poll_timeout().unwrap()), 2768);
    }
}

// ---- Garbage: never panic -------------------------------------------------------------

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % n as u64).unwrap()
    }
}

/// Exercises every entry point with `m` in every role.
fn poke(m: &Message, invite: &Message, set: &mut Dialogs) {
    let _ = Dialog::new_uas(m, "b1", "sip:v@192.0.2.2");
    let _ = Dialog::new_uac(invite, m);
    let _ = Dialog::new_uac(m, m);
    let _ = set.handle_uac_response(invite, m);
    let _ = set.handle_uac_response(m, m);
    let _ = DialogId::of_request(m);
    let _ = DialogId::of_response(m);
    let _ = session_timer::negotiate_uas(&session_timer::SessionTimerConfig::default(), m);
    let _ = session_timer::uac_negotiated(m);
    let _ = session_timer::uac_retry_interval(1800, m);
    let ids: Vec<DialogId> = set.iter().map(|d| d.id().clone()).collect();
    for id in ids {
        if let Some(d) = set.get_mut(&id) {
            let _ = d.handle_request(m);
            let _ = d.handle_response(m);
            let _ = d.response(m, 200, "OK");
            let _ = d.prack(m, &via(), &br(1));
            let _ = d.next_hop();
            if let Ok(b) = d.request(Method::Info, &via(), &br(2)) {
                // What we build must always parse back.
                Message::parse(b.build()).unwrap();
            }
        }
    }
    if let Some(d) = set.find_for_request(m) {
        let _ = d.handle_request(m);
    }
    if let Some(d) = set.find_for_response(m) {
        let _ = d.handle_response(m);
    }
    if let Ok(d) = Dialog::new_uas(m, "b1", "sip:v@192.0.2.2") {
        let mut d = d;
        if let Ok(b) = d.response(m, 200, "OK") {
            Message::parse(b.build()).unwrap();
        }
        if let Ok(b) = d.request(Method::Bye, &via(), &br(3)) {
            Message::parse(b.build()).unwrap();
        }
    }
}

#[test]
fn garbage_never_panics() {
    let seeds: Vec<String> = vec![
        INVITE_IN.trim_start().replace('\n', "\r\n"),
        INVITE_OUT.trim_start().replace('\n', "\r\n"),
        String::from_utf8(
            answer(
                200,
                "OK",
                "c9",
                &["<sip:a.example;lr>", "<sip:b.example>"],
                "<sip:x@198.51.100.7;maddr=10.0.0.1;transport=tcp>",
            )
            .as_bytes()
            .to_vec(),
        )
        .unwrap(),
        String::from_utf8(
            in_dialog(
                "INVITE",
                400,
                "Contact: <sip:y@203.0.113.1>\nSession-Expires: 100;refresher=uac\nMin-SE: 90\n",
            )
            .as_bytes()
            .to_vec(),
        )
        .unwrap(),
        String::from_utf8(reliable_183("5").as_bytes().to_vec()).unwrap(),
    ];
    let junk: &[&[u8]] = &[
        b";",
        b",",
        b"<",
        b">",
        b"\"",
        b"tag=",
        b";lr",
        b"sips:",
        b"*",
        b" ",
        b"0",
        b"\xff",
        b"4294967295",
        b"2147483648",
        b"=",
        b"?",
        b"@",
        b"[",
        b"]",
        b":",
        b"x",
    ];
    let invite = msg(INVITE_OUT);
    let mut set = Dialogs::new();
    let (_, uas_dialog) = uas();
    set.insert(uas_dialog).unwrap();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut parsed = 0;
    for _ in 0..20_000 {
        let mut b = seeds[rng.below(seeds.len())].as_bytes().to_vec();
        for _ in 0..=rng.below(4) {
            let at = rng.below(b.len());
            match rng.below(3) {
                0 => {
                    let j = junk[rng.below(junk.len())];
                    b.splice(at..at, j.iter().copied());
                }
                1 => {
                    let end = (at + 1 + rng.below(8)).min(b.len());
                    b.drain(at..end);
                }
                _ => b[at] = u8::try_from(rng.below(256)).unwrap(),
            }
        }
        if let Ok(m) = Message::parse(Bytes::from(b)) {
            parsed += 1;
            poke(&m, &invite, &mut set);
        }
        if set.len() > 64 {
            let ids: Vec<DialogId> = set.iter().map(|d| d.id().clone()).collect();
            for id in ids.iter().skip(1) {
                set.remove(id);
            }
        }
    }
    assert!(
        parsed > 2_000,
        "the mutator should leave many parseable messages ({parsed})"
    );
    // Strings straight into the small parsers.
    for s in [
        "",
        ";",
        "sip:",
        "sip:@",
        "sip:[::1",
        "<>",
        "sip:a;method",
        "sip:a?",
    ] {
        let _ = NextHop::of_uri(s);
        let _ = route::request_uri_form(s);
        let _ = session_timer::SessionExpires::parse(s);
        let _ = Branch::new(s);
    }
}
