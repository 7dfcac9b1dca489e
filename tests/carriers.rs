//! Trunk calls against SIPp playing the carrier (issue 12), on the default configuration:
//! click-to-call through a carrier that challenges with 407, inbound calls from an
//! allowed source to a number routed to an agent, a source no trunk admits (403), the
//! carrier's busy / no answer and a hangup through the API while ringing, and a trunk's
//! `max_cps` spacing the INVITEs the carrier sees.
//!
//! Agents' phones are SIPp processes that register from their own port (`register.xml`)
//! and then answer there; the carrier is a SIPp process on its own port, reached through
//! a trunk whose outbound host is 127.0.0.1 and that port.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "common/receiver.rs"]
mod receiver;
#[path = "common/sipp.rs"]
mod sipp;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use common::Gateway;
use receiver::Receiver;
use serde_json::{json, Value};
use sipp::{free_port_on, free_udp_port, listen, Phone, Sipp, SippProcess};
use tokio::net::UdpSocket;

const ALICE: (&str, &str) = ("alice", "alicepass1");
const CARRIER_USER: &str = "acme";
const CARRIER_PASS: &str = "carrier-secret-1";
/// `webhooks.secret`: signs status_callback deliveries.
const CALLBACK_SECRET: &str = "whsec_carriers_test_secret";

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

async fn post(gw: &Gateway, path: &str, body: Value) -> (u16, Value) {
    let r = gw
        .client()
        .post(gw.url(path))
        .json(&body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST {path}: {e}"));
    let status = r.status().as_u16();
    let text = r.text().await.unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

async fn post_ok(gw: &Gateway, path: &str, body: Value) -> Value {
    let (status, v) = post(gw, path, body.clone()).await;
    assert!(
        (200..300).contains(&status),
        "POST {path} {body}: {status} {v:#}"
    );
    v
}

async fn get_json(gw: &Gateway, path: &str) -> Value {
    let r = gw.client().get(gw.url(path)).send().await.unwrap();
    let status = r.status();
    let text = r.text().await.unwrap_or_default();
    assert!(status.is_success(), "GET {path}: {status} {text}");
    serde_json::from_str(&text).unwrap()
}

/// Polls a call until its status is final (or `within` passes).
async fn final_call(gw: &Gateway, id: &str, within: Duration) -> Value {
    let until = Instant::now() + within;
    loop {
        let call = get_json(gw, &format!("/v1/calls/{id}")).await;
        let status = call["status"].as_str().unwrap_or_default().to_owned();
        if !["queued", "ringing", "in-progress"].contains(&status.as_str()) {
            return call;
        }
        assert!(
            Instant::now() < until,
            "call {id} still {status} after {within:?}: {call:#}"
        );
        tokio::time::sleep(ms(100)).await;
    }
}

/// Polls a call until it reaches `status`; the call as last seen if it does not.
async fn wait_status(
    gw: &Gateway,
    id: &str,
    status: &str,
    within: Duration,
) -> Result<Value, Value> {
    let until = Instant::now() + within;
    loop {
        let call = get_json(gw, &format!("/v1/calls/{id}")).await;
        if call["status"] == status {
            return Ok(call);
        }
        if Instant::now() > until {
            return Err(call);
        }
        tokio::time::sleep(ms(50)).await;
    }
}

/// Fails the test with the call and what the SIPp peers saw.
fn fail(call: &Value, what: &str, peers: Vec<SippProcess>) -> ! {
    let reports: Vec<String> = peers.into_iter().map(|p| p.kill().report()).collect();
    panic!("{what}: {call:#}\n{}", reports.join("\n"));
}

fn md5_hex(s: &str) -> String {
    use md5::{Digest, Md5};
    hex::encode(Md5::digest(s.as_bytes()))
}

/// Checks a request's Authorization or Proxy-Authorization against the carrier's
/// password (RFC 7616 §3.4.1, MD5 with qop=auth), as the carrier would.
fn assert_digest(req: &sipp::SipRequest, user: &str, password: &str) {
    let header = req
        .headers
        .iter()
        .find(|(n, _)| n == "proxy-authorization" || n == "authorization")
        .map(|(_, v)| v.clone())
        .unwrap_or_else(|| panic!("no credentials:\n{}", req.raw));
    let ch = sipp::DigestChallenge::parse(&header);
    let p = |name: &str| {
        ch.param(name)
            .unwrap_or_else(|| panic!("no {name} in {header}"))
            .to_owned()
    };
    assert_eq!(p("username"), user, "{header}");
    let ha1 = md5_hex(&format!("{user}:{}:{password}", p("realm")));
    let ha2 = md5_hex(&format!("{}:{}", req.method, p("uri")));
    let want = md5_hex(&format!(
        "{ha1}:{}:{}:{}:{}:{ha2}",
        p("nonce"),
        p("nc"),
        p("cnonce"),
        p("qop")
    ));
    assert_eq!(p("response"), want, "digest does not verify: {header}");
}

/// Creates the phone's agent through the API and registers the phone.
async fn create_and_register(gw: &Gateway, phone: &Phone) {
    post_ok(
        gw,
        "/v1/agents",
        json!({ "username": phone.user, "password": phone.password }),
    )
    .await;
    phone.register(gw.sip_port);
}

/// A carrier trunk whose outbound side is the SIPp carrier on `port`.
async fn create_trunk(gw: &Gateway, name: &str, port: u16, extra: Value) -> Value {
    let mut body = json!({
        "name": name,
        "provider": "generic",
        "outbound": {
            "host": "127.0.0.1",
            "port": port,
            "transport": "udp",
            "username": CARRIER_USER,
            "password": CARRIER_PASS,
        },
        "inbound": { "allowed_cidrs": ["127.0.0.1/32"] },
        "rate": { "per_minute": "0.0120", "currency": "USD", "increment_seconds": 1, "minimum_seconds": 0 },
    });
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            b.insert(k.clone(), v.clone());
        }
    }
    post_ok(gw, "/v1/trunks", body).await
}

#[tokio::test]
async fn click_to_call_rings_the_agent_then_dials_the_lead_through_a_challenging_carrier() {
    let gw = Gateway::start_with(&[("VOXGATE_WEBHOOKS_SECRET", CALLBACK_SECRET)], None).await;
    let receiver = Receiver::start().await;
    receiver.secret("/status", CALLBACK_SECRET);
    let alice = Phone::new(ALICE);
    create_and_register(&gw, &alice).await;
    let carrier_port = free_port_on(Ipv4Addr::LOCALHOST.into());
    create_trunk(&gw, "carrier", carrier_port, json!({})).await;

    // What reaches the agent's phone: voxgate's ringback while the lead rings (the
    // SIPp carrier sends no media of its own).
    let agent_rtp = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let agent_port = agent_rtp.local_addr().unwrap().port();
    let heard = tokio::spawn(async move {
        let mut got = Vec::new();
        let mut buf = [0u8; 2048];
        let until = tokio::time::Instant::now() + secs(5);
        while let Ok(Ok((len, from))) =
            tokio::time::timeout_at(until, agent_rtp.recv_from(&mut buf)).await
        {
            got.push((len, buf[1] & 0x7f, buf[12..len].to_vec(), from));
        }
        got
    });
    let phone = listen(
        alice
            .answer("call_uas.xml")
            .set("rtp", &agent_port.to_string())
            .duration(ms(200)),
        gw.sip_port,
    )
    .await;
    let carrier = listen(
        Sipp::new("carrier_uas_auth.xml")
            .local_port(carrier_port)
            .set("user", CARRIER_USER)
            .set("rtp", &free_udp_port().to_string())
            // The lead rings for 1.5 s before answering.
            .duration(ms(1500))
            .timeout(secs(40)),
        gw.sip_port,
    )
    .await;

    let call = post_ok(
        &gw,
        "/v1/calls",
        json!({
            "agent": "alice",
            "to": "+14155550100",
            "trunk": "carrier",
            "caller_id": "+14155550199",
            "time_limit_seconds": 2,
            "metadata": { "lead": 42 },
            "status_callback": receiver.url("/status"),
        }),
    )
    .await;
    assert_eq!(call["status"], "queued", "{call:#}");
    assert_eq!(call["direction"], "outbound", "{call:#}");
    let id = call["id"].as_str().unwrap().to_owned();

    if let Err(call) = wait_status(&gw, &id, "in-progress", secs(15)).await {
        fail(&call, "never in-progress", vec![phone, carrier]);
    }
    let done = final_call(&gw, &id, secs(15)).await;
    assert_eq!(done["status"], "completed", "{done:#}");
    assert_eq!(done["metadata"]["lead"], 42, "{done:#}");

    // Every step arrived at the status_callback, signed, in order.
    let got = receiver
        .wait("the call's four events", secs(15), |g| g.len() >= 4)
        .await;
    let seen: Vec<(String, String)> = got
        .iter()
        .map(|g| {
            assert!(g.signature_ok, "bad signature on {:#}", g.body);
            assert_eq!(g.body["data"]["id"], id.as_str(), "{:#}", g.body);
            (
                g.body["type"].as_str().unwrap_or_default().to_owned(),
                g.body["data"]["status"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            )
        })
        .collect();
    let want = [
        ("call.initiated", "queued"),
        ("call.ringing", "ringing"),
        ("call.answered", "in-progress"),
        ("call.completed", "completed"),
    ];
    assert_eq!(
        seen,
        want.map(|(a, b)| (a.to_owned(), b.to_owned())),
        "status_callback events"
    );
    let completed = &got[3].body["data"];
    assert_eq!(completed["currency"], "USD", "{completed:#}");
    assert!(completed["cost"].is_string(), "{completed:#}");
    let legs = done["legs"].as_array().unwrap();
    assert_eq!(legs.len(), 2, "the agent's leg and the lead's: {done:#}");
    assert!(done["duration_seconds"].as_i64().unwrap() >= 1, "{done:#}");
    assert_eq!(done["currency"], "USD", "{done:#}");
    assert!(
        done["cost"].is_string() || done["cost"].is_number(),
        "{done:#}"
    );

    // The carrier saw the INVITE twice: the second answered its challenge (the scenario
    // verified the digest), to the lead's number, from the caller ID.
    let carrier = carrier.finish().await;
    carrier.assert_success();
    let invites = carrier.requests_with("INVITE");
    assert_eq!(invites.len(), 2, "{}", carrier.report());
    assert!(
        invites[1].uri.starts_with("sip:+14155550100@127.0.0.1"),
        "{}",
        invites[1].raw
    );
    assert!(
        invites[1].raw.contains("+14155550199"),
        "{}",
        invites[1].raw
    );
    assert_digest(invites[1], CARRIER_USER, CARRIER_PASS);
    // The agent's phone was rung first and shown the lead's number.
    let phone = phone.finish().await;
    phone.assert_success();
    let rung = phone.requests_with("INVITE");
    assert!(
        rung[0].raw.contains("From: <sip:+14155550100@"),
        "{}",
        rung[0].raw
    );
    // Ringback: PCMU (the agent's codec), 20 ms packets from the port voxgate gave the
    // agent's leg, not silence, for about the 1.5 s the lead rang.
    let heard = heard.await.unwrap();
    let relay = rung[0].sdp().media[0].port;
    let ringback: Vec<_> = heard
        .iter()
        .filter(|(len, pt, payload, from)| {
            *len == 172
                && *pt == 0
                && from.port() == relay
                && payload.iter().any(|b| *b != 0xff && *b != 0x7f)
        })
        .collect();
    assert!(
        (50..=120).contains(&ringback.len()),
        "ringback packets while the lead rang: {} (of {} received)",
        ringback.len(),
        heard.len()
    );
}

/// The port voxgate gave a leg in an SDP it sent (its address is 127.0.0.1 in tests).
fn voxgate_port(sdp: &sipp::Sdp) -> SocketAddr {
    let m = sdp.media.first().expect("an m= line");
    SocketAddr::from((Ipv4Addr::LOCALHOST, m.port))
}

/// Sends `n` RTP packets (PCMU, 20 ms apart in timestamps) from `sock` to `to`, marked
/// with `tag` in the first payload byte.
async fn send_rtp(sock: &UdpSocket, to: SocketAddr, tag: u8, n: u16) {
    for i in 0..n {
        let mut pkt = vec![0x80, 0x00];
        pkt.extend_from_slice(&i.to_be_bytes());
        pkt.extend_from_slice(&(u32::from(i) * 160).to_be_bytes());
        pkt.extend_from_slice(&u32::from(tag).to_be_bytes());
        pkt.extend(std::iter::repeat_n(tag, 160));
        sock.send_to(&pkt, to).await.unwrap();
        tokio::time::sleep(ms(5)).await;
    }
}

/// Counts RTP packets carrying `tag` that arrive on `sock` within `within`.
async fn count_rtp(sock: &UdpSocket, tag: u8, want: usize, within: Duration) -> usize {
    let until = tokio::time::Instant::now() + within;
    let mut buf = [0u8; 2048];
    let mut n = 0;
    while n < want {
        match tokio::time::timeout_at(until, sock.recv_from(&mut buf)).await {
            Ok(Ok((len, _))) if len > 12 && buf[12] == tag => n += 1,
            Ok(_) => {}
            Err(_) => break,
        }
    }
    n
}

/// Checks RTP flows both ways between two test sockets through voxgate's two legs.
async fn assert_rtp_both_ways(
    a: &UdpSocket,
    to_a_side: SocketAddr,
    b: &UdpSocket,
    to_b_side: SocketAddr,
) {
    const N: u16 = 30;
    send_rtp(a, to_a_side, 0xA1, N).await;
    send_rtp(b, to_b_side, 0xB2, N).await;
    let at_b = count_rtp(b, 0xA1, N.into(), secs(3)).await;
    let at_a = count_rtp(a, 0xB2, N.into(), secs(3)).await;
    // The first packet of each direction may be the one that latches the relay.
    assert!(
        at_b >= usize::from(N) - 1,
        "carrier -> agent: {at_b} of {N}"
    );
    assert!(
        at_a >= usize::from(N) - 1,
        "agent -> carrier: {at_a} of {N}"
    );
}

/// One carrier preset's inbound call: the trunk admits 127.0.0.1, the number (written
/// the carrier's way) reaches bob, who sees the lead's number, and RTP flows both ways.
async fn inbound_call(
    provider: &str,
    extra: Value,
    number: &str,
    called: &str,
    caller: &str,
    shown: &str,
) {
    let gw = Gateway::start().await;
    let bob = Phone::new(("bob", "bobpass123"));
    create_and_register(&gw, &bob).await;
    let mut trunk = json!({
        "name": provider,
        "provider": provider,
        "outbound": { "host": "127.0.0.1", "port": 5099 },
        "inbound": { "allowed_cidrs": ["127.0.0.1/32"] },
    });
    if let (Some(t), Some(e)) = (trunk.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            t.insert(k.clone(), v.clone());
        }
    }
    post_ok(&gw, "/v1/trunks", trunk).await;
    post_ok(
        &gw,
        "/v1/numbers",
        json!({ "number": number, "trunk": provider, "route": { "type": "agent", "target": "bob" } }),
    )
    .await;

    let agent_rtp = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let carrier_rtp = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let mut phone = listen(
        bob.answer("call_uas.xml")
            .set("rtp", &agent_rtp.local_addr().unwrap().port().to_string()),
        gw.sip_port,
    )
    .await;
    let mut carrier = Sipp::new("carrier_uac.xml")
        .service(called)
        .set("from", caller)
        .set("rtp", &carrier_rtp.local_addr().unwrap().port().to_string())
        .duration(secs(3))
        .timeout(secs(30))
        .spawn(gw.sip_port);
    carrier.wait_for_log("@@ANSWERED@@", secs(10)).await;
    phone.wait_for_log("@@ANSWERED@@", secs(5)).await;

    let invite = phone
        .requests()
        .into_iter()
        .next()
        .expect("bob's phone rang");
    assert!(
        invite.raw.contains(&format!("From: <sip:{shown}@")),
        "{provider}: the agent must see the lead's number {shown}:\n{}",
        invite.raw
    );
    let ok = carrier
        .responses()
        .into_iter()
        .find(|r| r.status == 200)
        .expect("200 to the carrier");
    assert_rtp_both_ways(
        &carrier_rtp,
        voxgate_port(&ok.sdp()),
        &agent_rtp,
        voxgate_port(&invite.sdp()),
    )
    .await;
    carrier.finish().await.assert_success();
    phone.finish().await.assert_success();

    // Records trail the SIP messages a little.
    let until = Instant::now() + secs(5);
    let calls = loop {
        let calls = get_json(&gw, "/v1/calls?status=completed").await;
        if calls["data"][0].is_object() || Instant::now() > until {
            break calls;
        }
        tokio::time::sleep(ms(50)).await;
    };
    let call = &calls["data"][0];
    assert_eq!(call["direction"], "inbound", "{provider}: {call:#}");
    assert!(
        call["trunk"]
            .as_str()
            .is_some_and(|t| t.starts_with("trk_")),
        "{call:#}"
    );
}

#[tokio::test]
async fn inbound_twilio_e164_reaches_the_agent() {
    inbound_call(
        "twilio",
        json!({}),
        "+14155550123",
        "+14155550123",
        "+14155550111",
        "+14155550111",
    )
    .await;
}

#[tokio::test]
async fn inbound_plivo_digits_without_plus_reach_the_agent() {
    // Plivo writes E.164 without the +.
    inbound_call(
        "plivo",
        json!({}),
        "+14155550124",
        "14155550124",
        "14155550112",
        "+14155550112",
    )
    .await;
}

#[tokio::test]
async fn inbound_exotel_national_number_reaches_the_agent() {
    // Exotel's numbers are Indian: 0-prefixed national forms read with country 91.
    inbound_call(
        "exotel",
        json!({ "outbound": { "host": "127.0.0.1", "port": 5099, "transport": "udp" } }),
        "+919876543210",
        "09876543210",
        "09812345678",
        "+919812345678",
    )
    .await;
}

#[tokio::test]
async fn inbound_generic_trunk_reaches_the_agent() {
    inbound_call(
        "generic",
        json!({}),
        "+442071234567",
        "+442071234567",
        "+447700900123",
        "+447700900123",
    )
    .await;
}

/// An INVITE for one of our numbers from a source no trunk admits gets 403 (and is
/// counted); an unknown number from an admitted source gets 404.
#[tokio::test]
async fn inbound_from_an_unknown_source_is_403_and_an_unknown_number_404() {
    let gw = Gateway::start().await;
    let bob = Phone::new(("bob", "bobpass123"));
    create_and_register(&gw, &bob).await;
    post_ok(
        &gw,
        "/v1/trunks",
        json!({
            "name": "carrier", "provider": "twilio",
            "outbound": { "host": "127.0.0.1", "port": 5099 },
            "inbound": { "allowed_cidrs": ["127.0.0.1/32"] },
        }),
    )
    .await;
    post_ok(
        &gw,
        "/v1/numbers",
        json!({ "number": "+14155550123", "trunk": "carrier", "route": { "type": "agent", "target": "bob" } }),
    )
    .await;
    let refused = |ip: &str, called: &str| {
        Sipp::new("carrier_uac_reject.xml")
            .local_ip(ip)
            .local_port(free_port_on(ip.parse().unwrap()))
            .service(called)
            .set("from", "+14155550111")
            .set("rtp", "40000")
            .timeout(secs(15))
            .run(gw.sip_port)
    };
    let run = refused("127.0.0.2", "+14155550123");
    run.assert_success();
    assert_eq!(
        run.responses.last().map(|r| r.status),
        Some(403),
        "{}",
        run.report()
    );
    let run = refused("127.0.0.1", "+14155550999");
    run.assert_success();
    assert_eq!(
        run.responses.last().map(|r| r.status),
        Some(404),
        "{}",
        run.report()
    );
    let metrics = gw
        .client()
        .get(gw.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("voxgate_sip_trunk_rejected_total") && l.ends_with(" 1")),
        "{metrics}"
    );
}

/// Starts a click-to-call for alice (whose phone answers at once) through `trunk` and
/// returns its id.
async fn click(gw: &Gateway, trunk: &str, extra: Value) -> String {
    let mut body = json!({ "agent": "alice", "to": "+14155550100", "trunk": trunk });
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            b.insert(k.clone(), v.clone());
        }
    }
    let call = post_ok(gw, "/v1/calls", body).await;
    call["id"].as_str().unwrap().to_owned()
}

/// The agent's phone (answering at once) and a carrier running `scenario` on `port`.
async fn agent_and_carrier(
    gw: &Gateway,
    agent: &Phone,
    scenario: &str,
    port: u16,
) -> (SippProcess, SippProcess) {
    let phone = listen(
        agent
            .answer("call_uas.xml")
            .set("rtp", &free_udp_port().to_string()),
        gw.sip_port,
    )
    .await;
    let carrier = listen(
        Sipp::new(scenario).local_port(port).timeout(secs(20)),
        gw.sip_port,
    )
    .await;
    (phone, carrier)
}

/// Busy (486), no answer (ring timeout) and a hangup through the API while the lead
/// rings (canceled): each ends with its status, and the agent is hung up.
#[tokio::test]
async fn click_to_call_busy_no_answer_and_canceled() {
    let gw = Gateway::start_with(&[("VOXGATE_WEBHOOKS_SECRET", CALLBACK_SECRET)], None).await;
    let receiver = Receiver::start().await;
    for path in ["/busy", "/no-answer", "/canceled"] {
        receiver.secret(path, CALLBACK_SECRET);
    }
    // The call's last event, at its own status_callback path, signed.
    let completed = |path: &'static str, status: &'static str| {
        let receiver = &receiver;
        async move {
            let got = receiver
                .wait(path, secs(15), |g| {
                    g.iter()
                        .any(|g| g.path == path && g.body["type"] == "call.completed")
                })
                .await;
            let last = got
                .iter()
                .rfind(|g| g.path == path && g.body["type"] == "call.completed")
                .unwrap();
            assert!(last.signature_ok, "{path}: bad signature");
            assert_eq!(
                last.body["data"]["status"], status,
                "{path}: {:#}",
                last.body
            );
        }
    };
    let alice = Phone::new(ALICE);
    create_and_register(&gw, &alice).await;
    let (busy_port, ring_port) = (
        free_port_on(Ipv4Addr::LOCALHOST.into()),
        free_port_on(Ipv4Addr::LOCALHOST.into()),
    );
    create_trunk(&gw, "busy", busy_port, json!({})).await;
    create_trunk(&gw, "ringing", ring_port, json!({})).await;

    // Busy.
    let (phone, carrier) = agent_and_carrier(&gw, &alice, "call_uas_busy.xml", busy_port).await;
    let id = click(
        &gw,
        "busy",
        json!({ "status_callback": receiver.url("/busy") }),
    )
    .await;
    let call = final_call(&gw, &id, secs(15)).await;
    assert_eq!(call["status"], "busy", "{call:#}");
    completed("/busy", "busy").await;
    carrier.finish().await.assert_success();
    phone.finish().await.assert_success();

    // No answer: the lead rings past ring_timeout_seconds.
    let (phone, carrier) = agent_and_carrier(&gw, &alice, "call_uas_cancel.xml", ring_port).await;
    let id = click(
        &gw,
        "ringing",
        json!({ "ring_timeout_seconds": 2, "status_callback": receiver.url("/no-answer") }),
    )
    .await;
    let call = final_call(&gw, &id, secs(15)).await;
    assert_eq!(call["status"], "no-answer", "{call:#}");
    completed("/no-answer", "no-answer").await;
    carrier.finish().await.assert_success();
    phone.finish().await.assert_success();

    // Canceled through the API while the lead rings.
    let (phone, carrier) = agent_and_carrier(&gw, &alice, "call_uas_cancel.xml", ring_port).await;
    let id = click(
        &gw,
        "ringing",
        json!({ "status_callback": receiver.url("/canceled") }),
    )
    .await;
    let until = Instant::now() + secs(10);
    loop {
        let call = get_json(&gw, &format!("/v1/calls/{id}")).await;
        let lead_ringing = call["legs"]
            .as_array()
            .is_some_and(|l| l.len() == 2 && l[1]["status"] == "ringing");
        if lead_ringing {
            break;
        }
        assert!(Instant::now() < until, "the lead never rang: {call:#}");
        tokio::time::sleep(ms(50)).await;
    }
    let r = gw
        .client()
        .post(gw.url(&format!("/v1/calls/{id}/hangup")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 204);
    let call = final_call(&gw, &id, secs(15)).await;
    assert_eq!(call["status"], "canceled", "{call:#}");
    assert_eq!(call["hangup_by"], "api", "{call:#}");
    completed("/canceled", "canceled").await;
    carrier.finish().await.assert_success();
    phone.finish().await.assert_success();
}

/// Times (seconds since midnight) at which SIPp received a call's first INVITE
/// (`CSeq: 1 INVITE`), from its `-trace_msg` log.
fn first_invite_times(messages: &str) -> Vec<f64> {
    let mut out = Vec::new();
    for block in messages.split("-----------------------------------------------") {
        let block = block.trim_start();
        let Some((stamp, rest)) = block.split_once('\n') else {
            continue;
        };
        if !rest.contains("message received")
            || !rest.contains("\nINVITE ")
            || !rest.contains("CSeq: 1 INVITE")
        {
            continue;
        }
        // "2026-12-05 21:14:16.317736"
        let Some(time) = stamp.split_whitespace().nth(1) else {
            continue;
        };
        let parts: Vec<f64> = time.split(':').filter_map(|p| p.parse().ok()).collect();
        if let [h, m, s] = parts[..] {
            out.push(h * 3600.0 + m * 60.0 + s);
        }
    }
    out
}

/// `max_cps: 2` and ten click-to-calls at once: the carrier sees the INVITEs at least
/// ~500 ms apart, and every call completes.
#[tokio::test]
async fn max_cps_spaces_the_carriers_invites_and_every_call_completes() {
    const CALLS: u32 = 10;
    let gw = Gateway::start().await;
    let alice = Phone::new(ALICE);
    post_ok(
        &gw,
        "/v1/agents",
        json!({ "username": alice.user, "password": alice.password, "max_concurrent_calls": CALLS }),
    )
    .await;
    alice.register(gw.sip_port);
    let carrier_port = free_port_on(Ipv4Addr::LOCALHOST.into());
    create_trunk(&gw, "paced", carrier_port, json!({ "max_cps": 2 })).await;
    let phone = listen(
        alice
            .answer("call_uas.xml")
            .set("rtp", &free_udp_port().to_string())
            .calls(CALLS)
            .timeout(secs(60)),
        gw.sip_port,
    )
    .await;
    let carrier = listen(
        Sipp::new("carrier_uas_auth.xml")
            .local_port(carrier_port)
            .set("user", CARRIER_USER)
            .set("rtp", &free_udp_port().to_string())
            .calls(CALLS)
            .timeout(secs(60)),
        gw.sip_port,
    )
    .await;
    let mut ids = Vec::new();
    for _ in 0..CALLS {
        ids.push(click(&gw, "paced", json!({ "time_limit_seconds": 1 })).await);
    }
    for id in &ids {
        let call = final_call(&gw, id, secs(40)).await;
        assert_eq!(call["status"], "completed", "{call:#}");
    }
    let carrier = carrier.finish().await;
    carrier.assert_success();
    phone.finish().await.assert_success();
    let times = first_invite_times(&carrier.messages);
    assert_eq!(times.len(), CALLS as usize, "{}", carrier.report());
    let gaps: Vec<f64> = times.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(
        gaps.iter().all(|g| *g >= 0.45),
        "INVITEs closer than max_cps 2 allows: gaps {gaps:?}"
    );
}

/// A `generic` trunk with `outbound.register` registers to the carrier's registrar
/// (answering its digest challenge), re-registers before the short lifetime it was
/// granted runs out, and the API shows it registered.
#[tokio::test]
async fn generic_trunk_registers_to_the_carrier_and_re_registers() {
    let gw = Gateway::start().await;
    let registrar_port = free_port_on(Ipv4Addr::LOCALHOST.into());
    let mut registrar = listen(
        Sipp::new("carrier_registrar.xml")
            .local_port(registrar_port)
            .set("user", CARRIER_USER)
            .timeout(secs(30)),
        gw.sip_port,
    )
    .await;
    create_trunk(
        &gw,
        "registering",
        registrar_port,
        json!({ "outbound": {
            "host": "127.0.0.1", "port": registrar_port, "transport": "udp",
            "username": CARRIER_USER, "password": CARRIER_PASS,
            "register": true, "register_expires": 120,
        } }),
    )
    .await;
    registrar.wait_for_log("@@REGISTERED@@ 1", secs(10)).await;
    // Granted 3 s: refreshed well before they run out.
    registrar.wait_for_log("@@REGISTERED@@ 2", secs(5)).await;
    let run = registrar.finish().await;
    run.assert_success();
    let registers = run.requests_with("REGISTER");
    assert_eq!(registers.len(), 4, "{}", run.report());
    for r in &registers {
        assert_eq!(
            r.uri,
            format!("sip:127.0.0.1:{registrar_port}"),
            "{}",
            r.raw
        );
        assert!(
            r.raw
                .contains(&format!("<sip:{CARRIER_USER}@127.0.0.1:{registrar_port}>")),
            "{}",
            r.raw
        );
    }
    let until = Instant::now() + secs(5);
    loop {
        let trunk = get_json(&gw, "/v1/trunks/registering").await;
        if trunk["registration"]["state"] == "registered" {
            assert!(trunk["registration"]["expires_at"].is_string(), "{trunk:#}");
            break;
        }
        assert!(Instant::now() < until, "not shown registered: {trunk:#}");
        tokio::time::sleep(ms(200)).await;
    }
}

/// The `simulated` provider: a full click-to-call with no carrier at all. The lead
/// "answers" after 1 s and sends a tone the agent's phone receives; a busy rule ends
/// its call `busy`.
#[tokio::test]
async fn simulated_trunk_runs_a_click_to_call_without_a_carrier() {
    let gw = Gateway::start().await;
    let alice = Phone::new(ALICE);
    create_and_register(&gw, &alice).await;
    post_ok(
        &gw,
        "/v1/trunks",
        json!({
            "name": "sim", "provider": "simulated",
            "simulate": [
                { "pattern": "+1212*", "outcome": "busy", "after_seconds": 1 },
                { "pattern": "*", "outcome": "answer", "after_seconds": 1 },
            ],
        }),
    )
    .await;

    let agent_rtp = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let phone = listen(
        alice
            .answer("call_uas.xml")
            .set("rtp", &agent_rtp.local_addr().unwrap().port().to_string()),
        gw.sip_port,
    )
    .await;
    let id = click(&gw, "sim", json!({ "time_limit_seconds": 3 })).await;
    if let Err(call) = wait_status(&gw, &id, "in-progress", secs(10)).await {
        fail(&call, "never in-progress", vec![phone]);
    }
    // The tone arrives at the agent's phone through voxgate's relay: G.711 (PT 0),
    // 160-byte payloads.
    let mut buf = [0u8; 2048];
    let mut tone = 0;
    let until = tokio::time::Instant::now() + secs(2);
    while let Ok(Ok((len, _))) = tokio::time::timeout_at(until, agent_rtp.recv_from(&mut buf)).await
    {
        if len == 172 && buf[1] & 0x7f == 0 {
            tone += 1;
        }
    }
    assert!(
        tone >= 40,
        "the simulated lead's tone: {tone} packets in 2 s"
    );
    let call = final_call(&gw, &id, secs(10)).await;
    assert_eq!(call["status"], "completed", "{call:#}");
    assert_eq!(call["hangup_cause"], "time limit", "{call:#}");
    phone.finish().await.assert_success();

    let phone = listen(
        alice
            .answer("call_uas.xml")
            .set("rtp", &free_udp_port().to_string()),
        gw.sip_port,
    )
    .await;
    let id = click(&gw, "sim", json!({ "to": "+12125550100" })).await;
    let call = final_call(&gw, &id, secs(10)).await;
    assert_eq!(call["status"], "busy", "{call:#}");
    phone.finish().await.assert_success();
}

/// A trunk whose host is a name: voxgate resolves it as RFC 3263 says, through SRV
/// records served by a local dnsmasq (`sip.dns_servers`), and the click-to-call reaches
/// the carrier at the SRV target's port.
#[tokio::test]
async fn trunk_host_is_resolved_through_srv_records() {
    let carrier_port = free_port_on(Ipv4Addr::LOCALHOST.into());
    let srv = format!("--srv-host=_sip._udp.carrier.test,edge1.carrier.test,{carrier_port},10,0");
    let dns = common::dnsmasq::Dnsmasq::start(&[
        srv.as_str(),
        "--host-record=edge1.carrier.test,127.0.0.1",
    ]);
    let dns_addr = dns.addr.to_string();
    let gw = Gateway::start_with(&[("VOXGATE_SIP_DNS_SERVERS", dns_addr.as_str())], None).await;
    let alice = Phone::new(ALICE);
    create_and_register(&gw, &alice).await;
    post_ok(
        &gw,
        "/v1/trunks",
        json!({
            "name": "by-name", "provider": "generic",
            "outbound": { "host": "carrier.test", "transport": "udp" },
        }),
    )
    .await;
    let phone = listen(
        alice
            .answer("call_uas.xml")
            .set("rtp", &free_udp_port().to_string()),
        gw.sip_port,
    )
    .await;
    let carrier = listen(
        Sipp::new("call_uas.xml")
            .local_port(carrier_port)
            .service("lead")
            .set("rtp", &free_udp_port().to_string())
            .timeout(secs(30)),
        gw.sip_port,
    )
    .await;
    // The trunk table is resolved off the SIP loop right after the change.
    tokio::time::sleep(ms(500)).await;
    let id = click(&gw, "by-name", json!({ "time_limit_seconds": 1 })).await;
    let call = final_call(&gw, &id, secs(15)).await;
    assert_eq!(call["status"], "completed", "{call:#}\n{}", dns.log());
    let carrier = carrier.finish().await;
    carrier.assert_success();
    phone.finish().await.assert_success();
    let invite = carrier.requests_with("INVITE")[0].clone();
    assert!(
        invite.uri.starts_with("sip:+14155550100@carrier.test"),
        "the Request-URI keeps the trunk's domain: {}",
        invite.raw
    );
    assert!(
        dns.log().contains("_sip._udp.carrier.test"),
        "voxgate asked for the SRV record:\n{}",
        dns.log()
    );
}

/// A carrier admitted by its trunk's credentials instead of its address: it calls from
/// 127.0.0.2 (no allowed CIDR), answers voxgate's 407 with the trunk's inbound username
/// and password, and reaches the number's agent; the wrong password gets 403.
#[tokio::test]
async fn inbound_carrier_admitted_by_its_trunk_credentials() {
    let gw = Gateway::start().await;
    let bob = Phone::new(("bob", "bobpass123"));
    create_and_register(&gw, &bob).await;
    post_ok(
        &gw,
        "/v1/trunks",
        json!({
            "name": "by-digest", "provider": "generic",
            "outbound": { "host": "127.0.0.1", "port": 5099 },
            "inbound": { "allowed_cidrs": [], "username": "carrier-in", "password": "in-secret-99" },
        }),
    )
    .await;
    post_ok(
        &gw,
        "/v1/numbers",
        json!({ "number": "+14155550123", "trunk": "by-digest", "route": { "type": "agent", "target": "bob" } }),
    )
    .await;
    let phone = listen(
        bob.answer("call_uas.xml")
            .set("rtp", &free_udp_port().to_string()),
        gw.sip_port,
    )
    .await;
    let carrier = |password: &str| {
        Sipp::new("call_uac.xml")
            .local_ip("127.0.0.2")
            .local_port(free_port_on("127.0.0.2".parse().unwrap()))
            .service("+14155550123")
            .auth("carrier-in", password)
            .auth_uri("+14155550123@127.0.0.1")
            .set("caller", "+14155550111")
            .set("rtp", &free_udp_port().to_string())
            .duration(ms(500))
            .timeout(secs(20))
    };
    carrier("in-secret-99").run(gw.sip_port).assert_success();
    let run = phone.finish().await;
    run.assert_success();
    let rung = run.requests_with("INVITE");
    assert!(
        rung[0].raw.contains("From: <sip:+14155550111@"),
        "{}",
        rung[0].raw
    );
    let wrong = Sipp::new("call_uac_reject.xml")
        .local_ip("127.0.0.2")
        .local_port(free_port_on("127.0.0.2".parse().unwrap()))
        .service("+14155550123")
        .auth("carrier-in", "wrong-password")
        .auth_uri("+14155550123@127.0.0.1")
        .set("caller", "+14155550111")
        .set("rtp", &free_udp_port().to_string())
        .set("fmts", "0 8")
        .set("attr", "a=rtpmap:8 PCMA/8000")
        .timeout(secs(20))
        .run(gw.sip_port);
    wrong.assert_success();
    assert_eq!(
        wrong.responses.last().map(|r| r.status),
        Some(403),
        "{}",
        wrong.report()
    );
}

/// A trunk over TCP (as Exotel's default is): voxgate opens the connection to the
/// carrier itself and the click-to-call completes over it.
#[tokio::test]
async fn click_to_call_over_a_tcp_trunk() {
    let gw = Gateway::start().await;
    let alice = Phone::new(ALICE);
    create_and_register(&gw, &alice).await;
    let carrier_port = free_port_on(Ipv4Addr::LOCALHOST.into());
    create_trunk(
        &gw,
        "tcp-carrier",
        carrier_port,
        json!({ "outbound": { "host": "127.0.0.1", "port": carrier_port, "transport": "tcp" } }),
    )
    .await;
    let phone = listen(
        alice
            .answer("call_uas.xml")
            .set("rtp", &free_udp_port().to_string()),
        gw.sip_port,
    )
    .await;
    let mut carrier = Sipp::new("call_uas.xml")
        .transport(sipp::Transport::Tcp)
        .local_port(carrier_port)
        .service("lead")
        .set("rtp", &free_udp_port().to_string())
        .timeout(secs(30))
        .spawn(gw.sip_port);
    let until = Instant::now() + secs(5);
    while std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, carrier_port)).is_ok() {
        assert!(carrier.running(), "SIPp exited at start");
        assert!(
            Instant::now() < until,
            "SIPp did not listen on TCP {carrier_port}"
        );
        tokio::time::sleep(ms(20)).await;
    }
    let id = click(&gw, "tcp-carrier", json!({ "time_limit_seconds": 1 })).await;
    let call = final_call(&gw, &id, secs(15)).await;
    assert_eq!(call["status"], "completed", "{call:#}");
    let carrier = carrier.finish().await;
    carrier.assert_success();
    phone.finish().await.assert_success();
    let invite = &carrier.requests_with("INVITE")[0];
    assert!(invite.raw.contains("SIP/2.0/TCP"), "{}", invite.raw);
    assert!(invite.uri.ends_with(";transport=tcp"), "{}", invite.raw);
}
