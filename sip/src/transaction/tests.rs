//! State-machine tests with a virtual clock (DESIGN.md test pyramid, level 2): the RFC 3261
//! timer tables per machine, then two layers over a lossy simulated network.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::*;
use crate::message::CSeq;

const UAC: &str = "192.0.2.1:5060";
const UAS: &str = "192.0.2.2:5060";

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn peer(addr: &str, transport: Transport) -> Peer {
    Peer {
        transport,
        addr: addr.parse::<SocketAddr>().unwrap(),
        conn: transport.is_reliable().then_some(7),
    }
}

fn request(method: Method, branch: &str, call_id: &str, cseq: u32) -> Bytes {
    let mut b = MessageBuilder::request(&method, "sip:bob@voxgate.test")
        .header(
            "Via",
            &format!("SIP/2.0/UDP 192.0.2.1:5060;branch={branch};rport"),
        )
        .header("Max-Forwards", "70");
    if method == Method::Invite {
        b = b
            .header("Route", "<sip:edge1.voxgate.test;lr>")
            .header("Route", "<sip:edge2.voxgate.test;lr>");
    }
    b.header("From", "\"Alice\" <sip:alice@voxgate.test>;tag=a1")
        .header("To", "<sip:bob@voxgate.test>")
        .header("Call-ID", call_id)
        .header("CSeq", &format!("{cseq} {}", method.as_str()))
        .header("Contact", "<sip:alice@192.0.2.1:5060>")
        .build()
}

fn invite(branch: &str) -> Bytes {
    request(Method::Invite, branch, "call-1@192.0.2.1", 1)
}

fn register(branch: &str) -> Bytes {
    request(Method::Register, branch, "reg-1@192.0.2.1", 1)
}

fn parse(b: &Bytes) -> Message {
    Message::parse(b.clone()).unwrap()
}

fn response(req: &Bytes, code: u16) -> Bytes {
    MessageBuilder::response_to(&parse(req), code, "Reason", Some("b1")).build()
}

fn transmits(layer: &mut TransactionLayer) -> Vec<Transmit> {
    std::iter::from_fn(|| layer.poll_transmit()).collect()
}

fn events(layer: &mut TransactionLayer) -> Vec<TxEvent> {
    std::iter::from_fn(|| layer.poll_event()).collect()
}

/// Runs every timer up to `until`, returning (time since t0, transmit) for what was sent.
fn run_until(
    layer: &mut TransactionLayer,
    t0: Instant,
    until: Instant,
) -> Vec<(Duration, Transmit)> {
    let mut sent = Vec::new();
    while let Some(deadline) = layer.poll_timeout().filter(|d| *d <= until) {
        layer.handle_timeout(deadline);
        sent.extend(transmits(layer).into_iter().map(|t| (deadline - t0, t)));
    }
    sent
}

fn times(sent: &[(Duration, Transmit)]) -> Vec<u64> {
    sent.iter().map(|(d, _)| d.as_millis() as u64).collect()
}

// ---------------------------------------------------------------- INVITE client (§17.1.1)

#[test]
fn invite_client_udp_retransmits_on_timer_a_and_times_out_on_b() {
    let t0 = Instant::now();
    let mut l = TransactionLayer::new(TimerConfig::default());
    let tx = l
        .send_request(invite("z9hG4bKa"), peer(UAS, Transport::Udp), t0)
        .unwrap();
    assert_eq!(transmits(&mut l).len(), 1);
    assert_eq!(l.state(tx), Some(TxState::Calling));
    let sent = run_until(&mut l, t0, t0 + ms(32_000));
    // RFC 3261 §17.1.1.2: 0.5, 1.5, 3.5, 7.5, 15.5, 31.5 s, then Timer B at 64*T1 = 32 s.
    assert_eq!(times(&sent), vec![500, 1500, 3500, 7500, 15500, 31500]);
    assert!(sent.iter().all(|(_, t)| t.bytes == invite("z9hG4bKa")));
    let ev = events(&mut l);
    assert!(
        matches!(ev[..], [TxEvent::Timeout { tx: TxId::Client(a) }, TxEvent::Terminated { tx: TxId::Client(b) }] if a == tx && b == tx)
    );
    assert_eq!(l.len(), 0);
    assert_eq!(l.state(tx), None);
    // The Timer A entry due at 63.5 s is stale: it drains without effect.
    assert_eq!(l.timer_entries(), 1);
    assert!(run_until(&mut l, t0, t0 + ms(70_000)).is_empty());
    assert!(events(&mut l).is_empty());
    assert_eq!(l.timer_entries(), 0);
    assert_eq!(l.poll_timeout(), None);
}

#[test]
fn invite_client_tcp_never_retransmits() {
    let t0 = Instant::now();
    let mut l = TransactionLayer::new(TimerConfig::default());
    l.send_request(invite("z9hG4bKa"), peer(UAS, Transport::Tcp), t0)
        .unwrap();
    assert_eq!(transmits(&mut l).len(), 1);
    let sent = run_until(&mut l, t0, t0 + ms(31_999));
    assert!(sent.is_empty());
    assert_eq!(l.len(), 1);
    run_until(&mut l, t0, t0 + ms(32_000));
    assert!(matches!(
        events(&mut l)[..],
        [TxEvent::Timeout { .. }, TxEvent::Terminated { .. }]
    ));
    assert_eq!(l.len(), 0);
}

#[test]
fn invite_client_timers_scale_with_t1() {
    let t0 = Instant::now();
    let cfg = TimerConfig {
        t1: ms(100),
        ..TimerConfig::default()
    };
    let mut l = TransactionLayer::new(cfg);
    l.send_request(invite("z9hG4bKa"), peer(UAS, Transport::Udp), t0)
        .unwrap();
    transmits(&mut l);
    let sent = run_until(&mut l, t0, t0 + ms(10_000));
    assert_eq!(times(&sent), vec![100, 300, 700, 1500, 3100, 6300]);
    assert_eq!(l.len(), 0, "Timer B = 6.4 s");
}

#[test]
fn invite_client_non_2xx_is_acked_and_absorbed_until_timer_d() {
    let t0 = Instant::now();
    let mut l = TransactionLayer::new(TimerConfig::default());
    let inv = invite("z9hG4bKa");
    let tx = l
        .send_request(inv.clone(), peer(UAS, Transport::Udp), t0)
        .unwrap();
    transmits(&mut l);
    let from = peer(UAS, Transport::Udp);

    assert!(l
        .handle_incoming(parse(&response(&inv, 180)), from, t0 + ms(100))
        .is_none());
    assert_eq!(l.state(tx), Some(TxState::Proceeding));
    // §17.1.1.2: no retransmissions and no Timer B once Proceeding.
    assert!(run_until(&mut l, t0, t0 + ms(100_000)).is_empty());
    assert_eq!(l.len(), 1);

    let t1 = t0 + ms(100_000);
    let busy = response(&inv, 486);
    assert!(l.handle_incoming(parse(&busy), from, t1).is_none());
    assert_eq!(l.state(tx), Some(TxState::Completed));
    let out = transmits(&mut l);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].to, from);
    let ack = parse(&out[0].bytes);
    let req = parse(&inv);
    // §17.1.1.3: the ACK's fields.
    assert_eq!(ack.method(), Some(&Method::Ack));
    assert_eq!(ack.request_uri(), req.request_uri());
    assert_eq!(ack.call_id(), req.call_id());
    assert_eq!(ack.from(), req.from());
    assert_eq!(
        ack.cseq(),
        &CSeq {
            seq: 1,
            method: Method::Ack
        }
    );
    assert_eq!(ack.vias().count(), 1);
    assert_eq!(ack.top_via(), req.top_via());
    assert_eq!(ack.to().tag(), Some("b1"), "To from the response");
    let routes: Vec<_> = ack.header_values(HeaderName::Route).collect();
    assert_eq!(
        routes,
        vec!["<sip:edge1.voxgate.test;lr>", "<sip:edge2.voxgate.test;lr>"]
    );

    // A retransmitted 486 is ACKed again, not passed up a second time.
    assert!(l
        .handle_incoming(parse(&busy), from, t1 + ms(500))
        .is_none());
    assert_eq!(transmits(&mut l)[0].bytes, out[0].bytes);
    let ev = events(&mut l);
    let statuses: Vec<_> = ev
        .iter()
        .filter_map(|e| match e {
            TxEvent::Response { msg, .. } => msg.status(),
            _ => None,
        })
        .collect();
    assert_eq!(statuses, vec![180, 486]);

    // Timer D: 32 s on UDP.
    run_until(&mut l, t0, t1 + ms(31_999));
    assert_eq!(l.len(), 1);
    run_until(&mut l, t0, t1 + ms(32_000));
    assert_eq!(l.len(), 0);
    assert!(matches!(events(&mut l)[..], [TxEvent::Terminated { .. }]));
}

#[test]
fn invite_client_timer_d_is_zero_on_tcp() {
    let t0 = Instant::now();
    let mut l = TransactionLayer::new(TimerConfig::default());
    let inv = invite("z9hG4bKa");
    l.send_request(inv.clone(), peer(UAS, Transport::Tcp), t0)
        .unwrap();
    l.handle_incoming(parse(&response(&inv, 603)), peer(UAS, Transport::Tcp), t0);
    assert_eq!(transmits(&mut l).len(), 2, "INVITE and ACK");
    assert_eq!(l.len(), 0);
    assert!(matches!(
        events(&mut l)[..],
        [TxEvent::Response { .. }, TxEvent::Terminated { .. }]
    ));
}

#[test]
fn invite_client_accepted_passes_2xx_retransmissions_until_timer_m() {
    let t0 = Instant::now();
    let mut l = TransactionLayer::new(TimerConfig::default());
    let inv = invite("z9hG4bKa");
    let tx = l
        .send_request(inv.clone(), peer(UAS, Transport::Udp), t0)
        .unwrap();
    transmits(&mut l);
    let from = peer(UAS, Transport::Udp);
    let ok = response(&inv, 200);
    l.handle_incoming(parse(&ok), from, t0 + ms(200));
    assert_eq!(l.state(tx), Some(TxState::Accepted));
    assert!(
        transmits(&mut l).is_empty(),
        "the TU ACKs a 2xx, not the transaction"
    );
    // RFC 6026 §7.2: retransmitted 2xx reach the TU (so it can re-ACK).
    l.handle_incoming(parse(&ok), from, t0 + ms(700));
    // Late provisionals and non-2xx are absorbed in Accepted.
    l.handle_incoming(parse(&response(&inv, 180)), from, t0 + ms(800));
    l.handle_incoming(parse(&response(&inv, 500)), from, t0 + ms(900));
    let ev = events(&mut l);
    assert_eq!(ev.len(), 2);
    assert!(ev
        .iter()
        .all(|e| matches!(e, TxEvent::Response { msg, .. } if msg.status() == Some(200))));
    run_until(&mut l, t0, t0 + ms(200 + 32_000));
    assert_eq!(l.len(), 0);
    // After Timer M a 2xx is a stray for the TU.
    assert!(matches!(
        l.handle_incoming(parse(&ok), from, t0 + ms(40_000)),
        Some(Incoming::Response { .. })
    ));
}

#[test]
fn invite_client_transport_error_terminates() {
    let t0 = Instant::now();
    let mut l = TransactionLayer::new(TimerConfig::default());
    let p = peer(UAS, Transport::Tcp);
    let tx = l.send_request(invite("z9hG4bKa"), p, t0).unwrap();
    let other = peer("192.0.2.9:5060", Transport::Udp);
    l.handle_transport_error(&other, t0);
    assert_eq!(l.len(), 1, "another peer's failure is not ours");
    l.handle_transport_error(&p, t0);
    let ev = events(&mut l);
    assert!(
        matches!(ev[..], [TxEvent::TransportError { tx: TxId::Client(a) }, TxEvent::Terminated { .. }] if a == tx)
    );
    assert_eq!(l.len(), 0);
}

// ------------------------------------------------------------ non-INVITE client (§17.1.2)

#[test]
fn non_invite_client_udp_retransmits_capped_at_t2_and_times_out_on_f() {
    let t0 = Instant::now();
    let mut l = TransactionLayer::new(TimerConfig::default());
    let tx = l
        .send_request(register("z9hG4bKr"), peer(UAS, Transport::Udp), t0)
        .unwrap();
    assert_eq!(l.state(tx), Some(TxState::Trying));
    transmits(&mut l);
    let sent = run_until(&mut l, t0, t0 + ms(40_000));
    // Timer E: 0.5, 1, 2, 4, then T2 = 4 s steps; Timer F at 32 s.
    assert_eq!(
        times(&sent),
        vec![500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500]
    );
    assert!(matches!(
        events(&mut l)[..],
        [TxEvent::Timeout { .. }, TxEvent::Terminated { .. }]
    ));
    assert_eq!(l.len(), 0);
}

#[test]
fn non_invite_client_proceeding_retransmits_every_t2_then_timer_k() {
    let t0 = Instant::now();
    let mut l = TransactionLayer::new(TimerConfig::default());
    let reg = register("z9hG4bKr");
    let from = peer(UAS, Transport::Udp);
    let tx = l.send_request(reg.clone(), from, t0).unwrap();
    transmits(&mut l);
    assert_eq!(times(&run_until(&mut l, t0, t0 + ms(600))), vec![500]);
    l.handle_incoming(parse(&response(&reg, 100)), from, t0 + ms(600));
    assert_eq!(l.state(tx), Some(TxState::Proceeding));
    let sent = run_until(&mut l, t0, t0 + ms(10_000));
    // E armed in Trying (1 s after 0.5 s) fires in Proceeding, which resets it to T2.
    assert_eq!(times(&sent), vec![1500, 5500, 9500]);
    let done = t0 + ms(10_000);
    l.handle_incoming(parse(&response(&reg, 200)), from, done);
    assert_eq!(l.state(tx), Some(TxState::Completed));
    // A retransmitted 200 is absorbed.
    l.handle_incoming(parse(&response(&reg, 200)), from, done + ms(1));
    let statuses: Vec<_> = events(&mut l)
        .into_iter()
        .filter_map(|e| match e {
            TxEvent::Response { msg, .. } => msg.status(),
            _ => None,
        })
        .collect();
    assert_eq!(statuses, vec![100, 200]);
    // Timer K = T4 = 5 s on UDP; no retransmissions in Completed.
    assert!(run_until(&mut l, t0, done + ms(4_999)).is_empty());
    assert_eq!(l.len(), 1);
    run_until(&mut l, t0, done + ms(5_000));
    assert_eq!(l.len(), 0);
}

#[test]
fn non_invite_client_timer_k_is_zero_on_tcp() {
    let t0 = Instant::now();
    let mut l = TransactionLayer::new(TimerConfig::default());
    let reg = register("z9hG4bKr");
    let from = peer(UAS, Transport::Tls);
    l.send_request(reg.clone(), from, t0).unwrap();
    l.handle_incoming(parse(&response(&reg, 200)), from, t0 + ms(30));
    assert_eq!(l.len(), 0);
    assert!(matches!(
        events(&mut l)[..],
        [TxEvent::Response { .. }, TxEvent::Terminated { .. }]
    ));
}

// ------------------------------------------------------------- INVITE server (§17.2.1)

#[test]
fn invite_server_sends_100_trying_after_200ms_and_resends_last_provisional() {
    let t0 = Instant::now();
    let mut l = TransactionLayer::new(TimerConfig::default());
    let from = peer(UAC, Transport::Udp);
    let inv = invite("z9hG4bKs");
    let Some(Incoming::Request { tx, msg, .. }) = l.handle_incoming(parse(&inv), from, t0) else {
        panic!("INVITE not handed to the TU");
    };
    assert_eq!(msg.method(), Some(&Method::Invite));
    assert!(run_until(&mut l, t0, t0 + ms(199)).is_empty());
    let sent = run_until(&mut l, t0, t0 + ms(200));
    assert_eq!(sent.len(), 1);
    let trying = parse(&sent[0].1.bytes);
    assert_eq!(trying.status(), Some(100));
    assert_eq!(trying.to().tag(), None);
    assert_eq!(trying.top_via(), parse(&inv).top_via());
    assert_eq!(sent[0].1.to, from);

    // §17.2.1: a retransmitted INVITE gets the most recent provisional, and is absorbed.
    assert!(l.handle_incoming(parse(&inv), from, t0 + ms(500)).is_none());
    assert_eq!(transmits(&mut l)[0].bytes, sent[0].1.bytes);
    let ringing = response(&inv, 180);
    l.send_response(tx, ringing.clone(), t0 + ms(600)).unwrap();
    assert_eq!(transmits(&mut l)[0].bytes, ringing);
    assert!(l
        .handle_incoming(parse(&inv), from, t0 + ms(1500))
        .is_none());
    assert_eq!(transmits(&mut l)[0].bytes, ringing);
    assert_eq!(l.state(tx), Some(TxState::Proceeding));
}

#[test]
fn invite_server_skips_100_when_tu_answers_within_200ms() {
    let t0 = Instant::now();
    let mut l = TransactionLayer::new(TimerConfig::default());
    let inv = invite("z9hG4bKs");
    let Some(Incoming::Request { tx, .. }) =
        l.handle_incoming(parse(&inv), peer(UAC, Transport::Udp), t0)
    else {
        panic!();
    };
    l.send_response(tx, response(&inv, 180), t0 + ms(50))
        .unwrap();
    assert_eq!(transmits(&mut l).len(), 1);
    let sent = run_until(&mut l, t0, t0 + ms(1_000));
    assert!(
        sent.is_empty(),
        "no 100 after the TU's 180: {:?}",
        times(&sent)
    );
    assert_eq!(transmits(&mut l).len(), 0);
}

#[test]
fn invite_server_retransmits_non_2xx_on_g_and_times_out_on_h() {
    let t0 = Instant::now();
    let mut l = TransactionLayer::new(TimerConfig::default());
    let inv = invite("z9hG4bKs");
    let Some(Incoming::Request { tx, .. }) =
        l.handle_incoming(parse(&inv), peer(UAC, Transport::Udp), t0)
    else {
        panic!();
    };
    let busy = response(&inv, 486);
    l.send_response(tx, busy.clone(), t0).unwrap();
    assert_eq!(transmits(&mut l).len(), 1);
    assert_eq!(l.state(tx), Some(TxState::Completed));
    assert_eq!(
        l.send_response(tx, response(&inv, 500), t0),
        Err(TxError::WrongState(TxState::Completed))
    );
    let sent = run_until(&mut l, t0, t0 + ms(40_000));
    // Timer G: T1 doubling, capped at T2; Timer H at 64*T1.
    assert_eq!(
        times(&sent),
        vec![500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500]
    );
    assert!(sent.iter().all(|(_, t)| t.bytes == busy));
    assert!(
        matches!(events(&mut l)[..], [TxEvent::Timeout { tx: TxId::Server(a) }, TxEvent::Terminated { .. }] if a == tx)
    );
    assert_eq!(l.len(), 0);
}

#[test]
fn invite_server_ack_confirms_then_timer_i() {
    let t0 = Instant::now();
    let mut l = TransactionLayer::new(TimerConfig::default());
    let inv = invite("z9hG4bKs");
    let from = peer(UAC, Transport::Udp);
    let Some(Incoming::Request { tx, .. }) = l.handle_incoming(parse(&inv), from, t0) else {
        panic!();
    };
    let busy = response(&inv, 486);
    l.send_response(tx, busy.clone(), t0).unwrap();
    transmits(&mut l);
    assert_eq!(
        times(&run_until(&mut l, t0, t0 + ms(700))),
        vec![500],
        "Timer G"
    );
    // The client's ACK: same branch (§17.1.1.3), To with our tag.
    let mut client = TransactionLayer::new(TimerConfig::default());
    client
        .send_request(inv.clone(), peer(UAS, Transport::Udp), t0)
        .unwrap();
    client.handle_incoming(parse(&busy), peer(UAS, Transport::Udp), t0);
    let ack = transmits(&mut client).pop().unwrap().bytes;

    assert!(
        l.handle_incoming(parse(&ack), from, t0 + ms(700)).is_none(),
        "ACK absorbed"
    );
    assert_eq!(l.state(tx), Some(TxState::Confirmed));
    // Confirmed absorbs INVITE and ACK retransmissions silently.
    assert!(l.handle_incoming(parse(&ack), from, t0 + ms(800)).is_none());
    assert!(l.handle_incoming(parse(&inv), from, t0 + ms(900)).is_none());
    // Nothing after the ACK (the G due at 1.5 s is moot). Timer I = T4.
    assert!(run_until(&mut l, t0, t0 + ms(700 + 4_999)).is_empty());
    assert_eq!(l.len(), 1);
    run_until(&mut l, t0, t0 + ms(700 + 5_000));
    assert_eq!(l.len(), 0);
    assert!(matches!(events(&mut l)[..], [TxEvent::Terminated { .. }]));
}

#[test]
fn invite_server_over_tcp_has_no_timer_g_and_zero_timer_i() {
    let t0 = Instant::now();
    let mut l = TransactionLayer::new(TimerConfig::default());
    let inv = invite("z9hG4bKs");
    let from = peer(UAC, Transport::Tcp);
    let Some(Incoming::Request { tx, .. }) = l.handle_incoming(parse(&inv), from, t0) else {
        panic!();
    };
    l.send_response(tx, response(&inv, 404), t0).unwrap();
    assert_eq!(
        transmits(&mut l)[0].to.conn,
        Some(7),
        "response on the request's connection"
    );
    assert!(run_until(&mut l, t0, t0 + ms(20_000)).is_empty());
    let ack = MessageBuilder::request(&Method::Ack, "sip:bob@voxgate.test")
        .header("Via", "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKs;rport")
        .header("From", "\"Alice\" <sip:alice@voxgate.test>;tag=a1")
        .header("To", "<sip:bob@voxgate.test>;tag=b1")
        .header("Call-ID", "call-1@192.0.2.1")
        .header("CSeq", "1 ACK")
        .build();
    assert!(l
        .handle_incoming(parse(&ack), from, t0 + ms(20_000))
        .is_none());
    assert_eq!(l.len(), 0);
}

#[test]
fn invite_server_accepted_absorbs_invites_passes_acks_and_ends_on_timer_l() {
    let t0 = Instant::now();
    let mut l = TransactionLayer::new(TimerConfig::default());
    let inv = invite("z9hG4bKs");
    let from = peer(UAC, Transport::Udp);
    let Some(Incoming::Request { tx, .. }) = l.handle_incoming(parse(&inv), from, t0) else {
        panic!();
    };
    let ok = response(&inv, 200);
    l.send_response(tx, ok.clone(), t0 + ms(10)).unwrap();
    assert_eq!(l.state(tx), Some(TxState::Accepted));
    transmits(&mut l);
    // RFC 6026 §7.1: INVITE retransmissions are absorbed, not answered, in Accepted.
    assert!(l.handle_incoming(parse(&inv), from, t0 + ms(500)).is_none());
    assert!(transmits(&mut l).is_empty());
    // The TU's own 2xx retransmissions (§13.3.1.4) go out.
    l.send_response(tx, ok.clone(), t0 + ms(510)).unwrap();
    assert_eq!(transmits(&mut l)[0].bytes, ok);
    assert_eq!(
        l.send_response(tx, response(&inv, 486), t0 + ms(520)),
        Err(TxError::WrongState(TxState::Accepted))
    );
    // No transaction-level retransmission of the 2xx.
    assert!(run_until(&mut l, t0, t0 + ms(32_009)).is_empty());
    assert_eq!(l.len(), 1);
    run_until(&mut l, t0, t0 + ms(32_010));
    assert_eq!(l.len(), 0);
}

#[test]
fn invite_server_accepted_passes_a_matching_ack_up_and_survives_transport_errors() {
    let t0 = Instant::now();
    let mut l = TransactionLayer::new(TimerConfig::default());
    let inv = invite("z9hG4bKs");
    let from = peer(UAC, Transport::Udp);
    let Some(Incoming::Request { tx, .. }) = l.handle_incoming(parse(&inv), from, t0) else {
        panic!();
    };
    l.send_response(tx, response(&inv, 200), t0).unwrap();
    // RFC 6026 §7.1: "ACK / to TU" even when it reuses the INVITE's branch.
    let ack = request(Method::Ack, "z9hG4bKs", "call-1@192.0.2.1", 1);
    assert!(matches!(
        l.handle_incoming(parse(&ack), from, t0 + ms(5)),
        Some(Incoming::Ack { .. })
    ));
    assert_eq!(l.state(tx), Some(TxState::Accepted));
    // A transport error in Accepted informs the TU but keeps absorbing INVITEs until L.
    l.handle_transport_error(&from, t0 + ms(6));
    let ev = events(&mut l);
    assert!(matches!(ev[..], [TxEvent::TransportError { tx: TxId::Server(a) }] if a == tx));
    assert_eq!(l.state(tx), Some(TxState::Accepted));
}

#[test]
fn invite_retransmitted_before_200ms_gets_100_trying_at_once() {
    let t0 = Instant::now();
    let mut l = TransactionLayer::new(TimerConfig::default());
    let inv = invite("z9hG4bKs");
    let from = peer(UAC, Transport::Udp);
    assert!(l.handle_incoming(parse(&inv), from, t0).is_some());
    assert!(l.handle_incoming(parse(&inv), from, t0 + ms(100)).is_none());
    let out = transmits(&mut l);
    assert_eq!(out.len(), 1);
    assert_eq!(status_of(&out[0].bytes), Some(100));
    // The 200 ms timer then has nothing left to do.
    assert!(run_until(&mut l, t0, t0 + ms(1000)).is_empty());
}

#[test]
fn ack_for_2xx_with_its_own_branch_goes_to_the_tu() {
    let t0 = Instant::now();
    let mut l = TransactionLayer::new(TimerConfig::default());
    let ack = request(Method::Ack, "z9hG4bKack", "call-1@192.0.2.1", 1);
    assert!(matches!(
        l.handle_incoming(parse(&ack), peer(UAC, Transport::Udp), t0),
        Some(Incoming::Ack { .. })
    ));
    assert_eq!(l.len(), 0, "an ACK never creates a transaction");
}

// --------------------------------------------------------- non-INVITE server (§17.2.2)

#[test]
fn register_server_answers_retransmissions_from_the_transaction_until_timer_j() {
    let t0 = Instant::now();
    let mut l = TransactionLayer::new(TimerConfig::default());
    let reg = register("z9hG4bKr");
    let from = peer(UAC, Transport::Udp);
    let Some(Incoming::Request { tx, .. }) = l.handle_incoming(parse(&reg), from, t0) else {
        panic!();
    };
    assert_eq!(l.state(tx), Some(TxState::Trying));
    // Trying: retransmissions are absorbed silently (no 100 for non-INVITE).
    assert!(l.handle_incoming(parse(&reg), from, t0 + ms(500)).is_none());
    assert!(transmits(&mut l).is_empty());
    let ok = response(&reg, 200);
    l.send_response(tx, ok.clone(), t0 + ms(600)).unwrap();
    assert_eq!(
        transmits(&mut l),
        vec![Transmit {
            to: from,
            bytes: ok.clone()
        }]
    );
    assert_eq!(l.state(tx), Some(TxState::Completed));
    for i in 1..=5 {
        assert!(l
            .handle_incoming(parse(&reg), from, t0 + ms(600 + i * 1000))
            .is_none());
        assert_eq!(
            transmits(&mut l),
            vec![Transmit {
                to: from,
                bytes: ok.clone()
            }]
        );
    }
    assert_eq!(
        l.send_response(tx, response(&reg, 500), t0 + ms(7_000)),
        Err(TxError::WrongState(TxState::Completed))
    );
    // Timer J = 64*T1 after the final, then the transaction and its id are gone.
    assert!(run_until(&mut l, t0, t0 + ms(600 + 31_999)).is_empty());
    assert_eq!(l.len(), 1);
    run_until(&mut l, t0, t0 + ms(600 + 32_000));
    assert_eq!(l.len(), 0);
    assert!(matches!(events(&mut l)[..], [TxEvent::Terminated { tx: TxId::Server(a) }] if a == tx));
    assert_eq!(
        l.send_response(tx, ok, t0 + ms(40_000)),
        Err(TxError::UnknownTransaction)
    );
    // A copy arriving later is a new request for the TU.
    assert!(matches!(
        l.handle_incoming(parse(&reg), from, t0 + ms(40_000)),
        Some(Incoming::Request { .. })
    ));
}

#[test]
fn non_invite_server_resends_last_provisional() {
    let t0 = Instant::now();
    let mut l = TransactionLayer::new(TimerConfig::default());
    let reg = register("z9hG4bKr");
    let from = peer(UAC, Transport::Udp);
    let Some(Incoming::Request { tx, .. }) = l.handle_incoming(parse(&reg), from, t0) else {
        panic!();
    };
    let trying = response(&reg, 100);
    l.send_response(tx, trying.clone(), t0).unwrap();
    transmits(&mut l);
    assert_eq!(l.state(tx), Some(TxState::Proceeding));
    l.handle_incoming(parse(&reg), from, t0 + ms(500));
    assert_eq!(transmits(&mut l)[0].bytes, trying);
}

#[test]
fn non_invite_server_timer_j_is_zero_on_tcp() {
    let t0 = Instant::now();
    let mut l = TransactionLayer::new(TimerConfig::default());
    let reg = register("z9hG4bKr");
    let Some(Incoming::Request { tx, .. }) =
        l.handle_incoming(parse(&reg), peer(UAC, Transport::Ws), t0)
    else {
        panic!();
    };
    l.send_response(tx, response(&reg, 200), t0).unwrap();
    assert_eq!(transmits(&mut l).len(), 1);
    assert_eq!(l.len(), 0);
}

#[test]
fn server_transport_error_terminates_completed_transactions_on_that_connection() {
    let t0 = Instant::now();
    let mut l = TransactionLayer::new(TimerConfig::default());
    let reg = register("z9hG4bKr");
    let from = peer(UAC, Transport::Udp);
    let Some(Incoming::Request { tx, .. }) = l.handle_incoming(parse(&reg), from, t0) else {
        panic!();
    };
    l.send_response(tx, response(&reg, 200), t0).unwrap();
    l.handle_transport_error(&from, t0);
    let ev = events(&mut l);
    assert!(
        matches!(ev[..], [TxEvent::TransportError { tx: TxId::Server(a) }, TxEvent::Terminated { .. }] if a == tx)
    );
    assert_eq!(l.len(), 0);
}

// ------------------------------------------------------------------- matching (§17.2.3)

#[test]
fn server_matching_uses_branch_sent_by_and_method() {
    let t0 = Instant::now();
    let mut l = TransactionLayer::new(TimerConfig::default());
    let from = peer(UAC, Transport::Udp);
    assert!(l
        .handle_incoming(parse(&register("z9hG4bKr")), from, t0)
        .is_some());
    // Same branch, other sent-by: another transaction.
    let other_host = Bytes::from(
        String::from_utf8(register("z9hG4bKr").to_vec())
            .unwrap()
            .replace("192.0.2.1:5060;branch", "192.0.2.3:5060;branch"),
    );
    assert!(l.handle_incoming(parse(&other_host), from, t0).is_some());
    // Sent-by host compares case-insensitively; an absent port is 5060.
    let same_host = Bytes::from(
        String::from_utf8(register("z9hG4bKr").to_vec())
            .unwrap()
            .replace("192.0.2.1:5060;branch", "192.0.2.1;branch"),
    );
    assert!(l.handle_incoming(parse(&same_host), from, t0).is_none());
    // Same branch and sent-by, other method: another transaction.
    let options = request(Method::Options, "z9hG4bKr", "reg-1@192.0.2.1", 2);
    assert!(l.handle_incoming(parse(&options), from, t0).is_some());
    assert_eq!(l.len(), 3);
}

#[test]
fn cancel_finds_the_invite_it_cancels() {
    let t0 = Instant::now();
    let mut l = TransactionLayer::new(TimerConfig::default());
    let from = peer(UAC, Transport::Udp);
    let Some(Incoming::Request { tx: inv_tx, .. }) =
        l.handle_incoming(parse(&invite("z9hG4bKs")), from, t0)
    else {
        panic!();
    };
    let cancel = request(Method::Cancel, "z9hG4bKs", "call-1@192.0.2.1", 1);
    let Some(Incoming::Cancel { tx, invite, .. }) = l.handle_incoming(parse(&cancel), from, t0)
    else {
        panic!("CANCEL not handed up as such");
    };
    assert_eq!(invite, Some(inv_tx));
    assert_ne!(tx, inv_tx);
    let stray = request(Method::Cancel, "z9hG4bKother", "call-1@192.0.2.1", 1);
    assert!(matches!(
        l.handle_incoming(parse(&stray), from, t0),
        Some(Incoming::Cancel { invite: None, .. })
    ));
}

#[test]
fn rfc2543_requests_without_the_cookie_still_match() {
    let t0 = Instant::now();
    let mut l = TransactionLayer::new(TimerConfig::default());
    let from = peer(UAC, Transport::Udp);
    let old = |method: Method, to_tag: bool| {
        let cseq = format!("7 {}", method.as_str());
        MessageBuilder::request(&method, "sip:bob@voxgate.test")
            .header("Via", "SIP/2.0/UDP 192.0.2.1:5060")
            .header("From", "<sip:alice@voxgate.test>;tag=old")
            .header(
                "To",
                if to_tag {
                    "<sip:bob@voxgate.test>;tag=b1"
                } else {
                    "<sip:bob@voxgate.test>"
                },
            )
            .header("Call-ID", "legacy@192.0.2.1")
            .header("CSeq", &cseq)
            .build()
    };
    let inv = old(Method::Invite, false);
    let Some(Incoming::Request { tx, .. }) = l.handle_incoming(parse(&inv), from, t0) else {
        panic!();
    };
    assert!(
        l.handle_incoming(parse(&inv), from, t0).is_none(),
        "retransmission matched"
    );
    l.send_response(tx, response(&inv, 486), t0).unwrap();
    assert!(l
        .handle_incoming(parse(&old(Method::Ack, true)), from, t0)
        .is_none());
    assert_eq!(l.state(tx), Some(TxState::Confirmed));
    assert!(matches!(
        l.handle_incoming(parse(&old(Method::Cancel, false)), from, t0),
        Some(Incoming::Cancel { invite: Some(i), .. }) if i == tx
    ));
}

#[test]
fn stray_responses_go_to_the_tu() {
    let t0 = Instant::now();
    let mut l = TransactionLayer::new(TimerConfig::default());
    let r = response(&register("z9hG4bKnobody"), 200);
    assert!(matches!(
        l.handle_incoming(parse(&r), peer(UAS, Transport::Udp), t0),
        Some(Incoming::Response { .. })
    ));
    // A response whose CSeq method differs does not match (§17.1.3).
    let reg = register("z9hG4bKr");
    l.send_request(reg, peer(UAS, Transport::Udp), t0).unwrap();
    let opt = response(&request(Method::Options, "z9hG4bKr", "x", 1), 200);
    assert!(matches!(
        l.handle_incoming(parse(&opt), peer(UAS, Transport::Udp), t0),
        Some(Incoming::Response { .. })
    ));
}

// ------------------------------------------------------------------------ CANCEL (§9.1)

#[test]
fn cancel_after_a_provisional_builds_the_cancel() {
    let t0 = Instant::now();
    let mut l = TransactionLayer::new(TimerConfig::default());
    let inv = invite("z9hG4bKa");
    let to = peer(UAS, Transport::Udp);
    let tx = l.send_request(inv.clone(), to, t0).unwrap();
    l.handle_incoming(parse(&response(&inv, 180)), to, t0 + ms(100));
    transmits(&mut l);
    let c = l.cancel(tx, t0 + ms(200)).unwrap();
    assert_eq!(l.state(c), Some(TxState::Trying));
    let out = transmits(&mut l);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].to, to);
    let cancel = parse(&out[0].bytes);
    let req = parse(&inv);
    assert_eq!(cancel.method(), Some(&Method::Cancel));
    assert_eq!(cancel.request_uri(), req.request_uri());
    assert_eq!(cancel.call_id(), req.call_id());
    assert_eq!(cancel.from(), req.from());
    assert_eq!(cancel.to(), req.to());
    assert_eq!(
        cancel.cseq(),
        &CSeq {
            seq: 1,
            method: Method::Cancel
        }
    );
    assert_eq!(cancel.vias().count(), 1);
    assert_eq!(cancel.top_via(), req.top_via());
    assert_eq!(cancel.header_values(HeaderName::Route).count(), 2);
    assert_eq!(l.cancel(tx, t0), Err(TxError::AlreadyCancelled));
    assert_eq!(l.cancel(c, t0), Err(TxError::NotInvite));

    // The CANCEL's 200 and the INVITE's 487 go to their own transactions.
    l.handle_incoming(parse(&response(&out[0].bytes, 200)), to, t0 + ms(300));
    l.handle_incoming(parse(&response(&inv, 487)), to, t0 + ms(310));
    let ev = events(&mut l);
    let responses: Vec<_> = ev
        .iter()
        .filter_map(|e| match e {
            TxEvent::Response { tx, msg } => Some((*tx, msg.status().unwrap())),
            _ => None,
        })
        .collect();
    assert_eq!(responses, vec![(tx, 180), (c, 200), (tx, 487)]);
    assert_eq!(
        parse(&transmits(&mut l)[0].bytes).method(),
        Some(&Method::Ack)
    );
}

#[test]
fn cancel_before_a_provisional_waits_for_one() {
    let t0 = Instant::now();
    let mut l = TransactionLayer::new(TimerConfig::default());
    let inv = invite("z9hG4bKa");
    let to = peer(UAS, Transport::Udp);
    let tx = l.send_request(inv.clone(), to, t0).unwrap();
    transmits(&mut l);
    let c = l.cancel(tx, t0).unwrap();
    assert_eq!(l.state(c), Some(TxState::Waiting));
    assert!(
        transmits(&mut l).is_empty(),
        "§9.1: no CANCEL before a provisional"
    );
    // Timer A keeps retransmitting only the INVITE.
    let sent = run_until(&mut l, t0, t0 + ms(1000));
    assert!(sent
        .iter()
        .all(|(_, t)| parse(&t.bytes).method() == Some(&Method::Invite)));
    l.handle_incoming(parse(&response(&inv, 100)), to, t0 + ms(1000));
    let out = transmits(&mut l);
    assert_eq!(out.len(), 1);
    assert_eq!(parse(&out[0].bytes).method(), Some(&Method::Cancel));
    assert_eq!(l.state(c), Some(TxState::Trying));
}

#[test]
fn waiting_cancel_ends_with_its_invite_and_cancel_guard_ends_a_stuck_invite() {
    let t0 = Instant::now();
    let mut l = TransactionLayer::new(TimerConfig::default());
    let inv = invite("z9hG4bKa");
    let to = peer(UAS, Transport::Udp);
    let tx = l.send_request(inv.clone(), to, t0).unwrap();
    let c = l.cancel(tx, t0).unwrap();
    l.handle_incoming(parse(&response(&inv, 486)), to, t0 + ms(100));
    assert_eq!(l.state(c), None, "never sent, dropped with its INVITE");
    assert_eq!(
        l.cancel(tx, t0),
        Err(TxError::WrongState(TxState::Completed))
    );
    events(&mut l);

    // A UAS that answers the CANCEL but never the INVITE: 64*T1 after the CANCEL the
    // INVITE is given up (§9.1).
    let inv2 = invite("z9hG4bKb");
    let tx2 = l.send_request(inv2.clone(), to, t0).unwrap();
    l.handle_incoming(parse(&response(&inv2, 180)), to, t0 + ms(100));
    let c2 = l.cancel(tx2, t0 + ms(1000)).unwrap();
    let cancel_bytes = transmits(&mut l).pop().unwrap().bytes;
    l.handle_incoming(parse(&response(&cancel_bytes, 200)), to, t0 + ms(1100));
    run_until(&mut l, t0, t0 + ms(1000 + 31_999));
    assert_eq!(l.state(tx2), Some(TxState::Proceeding));
    run_until(&mut l, t0, t0 + ms(1000 + 32_000));
    assert_eq!(l.state(tx2), None);
    assert!(events(&mut l)
        .iter()
        .any(|e| matches!(e, TxEvent::Timeout { tx: TxId::Client(a) } if *a == tx2)));
    assert_eq!(l.state(c2), None, "Timer K ended the CANCEL");
    assert_eq!(
        l.len(),
        0,
        "the first INVITE's Timer D (32.1 s) has run too"
    );
}

// ---------------------------------------------------------------------------- errors

#[test]
fn bad_calls_are_precise_errors() {
    let t0 = Instant::now();
    let mut l = TransactionLayer::new(TimerConfig::default());
    let to = peer(UAS, Transport::Udp);
    let ack = request(Method::Ack, "z9hG4bKack", "c", 1);
    assert_eq!(l.send_request(ack, to, t0), Err(InvalidMessage::Ack.into()));
    let old = Bytes::from(
        String::from_utf8(register("z9hG4bKr").to_vec())
            .unwrap()
            .replace("z9hG4bKr", "oldbranch"),
    );
    assert_eq!(
        l.send_request(old, to, t0),
        Err(InvalidMessage::Branch.into())
    );
    let resp = response(&register("z9hG4bKr"), 200);
    assert_eq!(
        l.send_request(resp.clone(), to, t0),
        Err(InvalidMessage::NotARequest.into())
    );
    assert!(matches!(
        l.send_request(Bytes::from_static(b"garbage"), to, t0),
        Err(TxError::Parse(_))
    ));
    let mismatched = Bytes::from(
        String::from_utf8(register("z9hG4bKr").to_vec())
            .unwrap()
            .replace("1 REGISTER", "1 OPTIONS"),
    );
    // The parser already rejects a CSeq method that differs from the request's.
    assert!(matches!(
        l.send_request(mismatched, to, t0),
        Err(TxError::Parse(_))
    ));
    let c = l.send_request(register("z9hG4bKr"), to, t0).unwrap();
    assert_eq!(
        l.send_request(register("z9hG4bKr"), to, t0),
        Err(TxError::DuplicateTransaction)
    );
    assert_eq!(l.cancel(c, t0), Err(TxError::NotInvite));

    let Some(Incoming::Request { tx, .. }) =
        l.handle_incoming(parse(&register("z9hG4bKs")), peer(UAC, Transport::Udp), t0)
    else {
        panic!();
    };
    assert_eq!(
        l.send_response(tx, register("z9hG4bKx"), t0),
        Err(InvalidMessage::NotAResponse.into())
    );
    assert_eq!(
        l.send_response(tx, Bytes::from_static(b"SIP/2.0 099 Low\r\n"), t0),
        Err(InvalidMessage::NotAResponse.into())
    );
    assert_eq!(l.len(), 2);
}

#[test]
fn status_line_parsing() {
    assert_eq!(status_of(b"SIP/2.0 200 OK\r\n"), Some(200));
    assert_eq!(status_of(b"SIP/2.0 699\r\n"), Some(699));
    assert_eq!(status_of(b"SIP/2.0 700 No\r\n"), None);
    assert_eq!(status_of(b"SIP/2.0 20 OK\r\n"), None);
    assert_eq!(status_of(b"SIP/2.0 2000 OK\r\n"), None);
    assert_eq!(status_of(b"REGISTER sip:x SIP/2.0\r\n"), None);
    assert_eq!(status_of(b""), None);
}

mod sim;

#[test]
fn slots_stay_small() {
    // ~300k live transactions: keep the per-transaction footprint in check.
    let size = std::mem::size_of::<Slot>();
    eprintln!(
        "slot: {size} bytes, Message: {}",
        std::mem::size_of::<Message>()
    );
    assert!(size <= 256, "slot grew to {size} bytes");
}
