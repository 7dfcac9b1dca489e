//! The call engine (B2BUA, SPEC §2-§3) against real SIPp 3.6.1 phones: agent-to-agent
//! calls with the 407 challenge, forking, early media, CANCEL, busy and the other refusals,
//! hold/resume re-INVITEs, RTP relayed both ways with symmetric latching, 200 calls in a
//! row, the call records of the API (`/v1/calls`), and a crash during a call.
//!
//! Every phone is a SIPp process on its own loopback port that first registers as its agent
//! from that same port (`register.xml`), then runs a call scenario there (`call_*.xml`,
//! see `tests/sipp/README.md`). SIPp does the signalling only: each SDP points at a UDP
//! socket owned by the test, which sends RTP to voxgate's ports and counts exactly what
//! arrives where (packets, order, payload, source address). Gateways run on the default
//! configuration (MD5 challenges, which SIPp's `[authentication]` answers).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "common/sipp.rs"]
mod sipp;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use common::Gateway;
use serde_json::{json, Value};
use sipp::{free_udp_port, listen, Phone, Sdp, SipResponse, Sipp, SippProcess, SippRun};
use tokio::net::UdpSocket;

const ALICE: (&str, &str) = ("alice", "alicepass1");
const BOB: (&str, &str) = ("bob", "bobpass123");
const CAROL: (&str, &str) = ("carol", "carolpass1");

/// Logged by the call scenarios when the call is up (caller: 200 received; callee: ACK).
const ANSWERED: &str = "@@ANSWERED@@";
/// Default offer of `call_uac_reject.xml`: PCMU, PCMA, telephone-event.
const OFFER_G711: (&str, &str) = ("0 8 101", "a=rtpmap:101 telephone-event/8000");
/// G.729 only: nothing voxgate can bridge or transcode.
const OFFER_G729: (&str, &str) = ("18", "a=rtpmap:18 G729/8000");
/// RTP packets each way in the media tests (one second of 20 ms G.711).
const PACKETS: usize = 50;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

async fn create_agent(gw: &Gateway, (username, password): (&str, &str)) -> Value {
    gw.create_agent(json!({ "username": username, "password": password }))
        .await
}

async fn get_json(gw: &Gateway, path: &str) -> Value {
    let r = gw
        .client()
        .get(gw.url(path))
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    let status = r.status();
    let body = r.text().await.unwrap_or_default();
    assert!(status.is_success(), "GET {path}: {status} {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: not JSON ({e}): {body}"))
}

/// Every call matching `query` (e.g. `status=completed`), following `next`.
async fn list_calls(gw: &Gateway, query: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut after: Option<String> = None;
    for _ in 0..50 {
        let mut path = format!("/v1/calls?limit=200&{query}");
        if let Some(a) = &after {
            path.push_str(&format!("&after={a}"));
        }
        let page = get_json(gw, &path).await;
        let data = page["data"]
            .as_array()
            .unwrap_or_else(|| panic!("GET {path}: no data array: {page}"));
        out.extend(data.iter().cloned());
        match page["next"].as_str() {
            Some(n) if !n.is_empty() => after = Some(n.to_owned()),
            _ => return out,
        }
    }
    panic!("GET /v1/calls?{query}: more than 50 pages");
}

/// Poll `/v1/calls?<query>` until it lists at least `n` calls (call records are written
/// by a worker behind the engine, so they trail the SIP messages a little).
async fn wait_calls(gw: &Gateway, query: &str, n: usize, within: Duration) -> Vec<Value> {
    let until = Instant::now() + within;
    loop {
        let calls = list_calls(gw, query).await;
        if calls.len() >= n {
            return calls;
        }
        if Instant::now() > until {
            let all = list_calls(gw, "").await;
            panic!(
                "GET /v1/calls?{query} listed {} calls after {within:?}, wanted {n}; all calls: {}",
                calls.len(),
                serde_json::to_string_pretty(&all).unwrap_or_default()
            );
        }
        tokio::time::sleep(ms(100)).await;
    }
}

/// The only call matching `query`, once it is there.
async fn the_call(gw: &Gateway, query: &str) -> Value {
    let calls = wait_calls(gw, query, 1, secs(5)).await;
    assert_eq!(
        calls.len(),
        1,
        "GET /v1/calls?{query}: one call expected: {calls:#?}"
    );
    calls.into_iter().next().unwrap()
}

/// Poll `GET /v1/calls/{id}` until its status is final (not queued/ringing/in-progress).
async fn final_call(gw: &Gateway, id: &str) -> Value {
    let until = Instant::now() + secs(5);
    loop {
        let call = get_json(gw, &format!("/v1/calls/{id}")).await;
        let status = call["status"].as_str().unwrap_or_default();
        if !["", "queued", "ringing", "in-progress"].contains(&status) {
            return call;
        }
        assert!(
            Instant::now() < until,
            "call {id} still {status:?} 5 s after both phones finished: {call:#}"
        );
        tokio::time::sleep(ms(100)).await;
    }
}

/// A call refused before ringing still leaves a record (SPEC §4, every attempt is a
/// call): never answered, 0 s, the SIP answer as its hangup cause.
async fn assert_refused_record(gw: &Gateway, query: &str, status: &str, code: u16, caller: &str) {
    let call = the_call(gw, query).await;
    let call = final_call(gw, &call_id(&call)).await;
    assert_field(&call, "status", status);
    assert!(
        call["hangup_cause"]
            .as_str()
            .is_some_and(|c| c.starts_with(&code.to_string())),
        "hangup_cause should be the {code} answer: {call:#}"
    );
    assert!(call["answered_at"].is_null(), "never answered: {call:#}");
    assert_eq!(call["duration_seconds"].as_i64(), Some(0), "{call:#}");
    assert!(
        call["from"].as_str().unwrap_or_default().contains(caller),
        "the call is {caller}'s: {call:#}"
    );
}

fn call_id(call: &Value) -> String {
    call["id"]
        .as_str()
        .unwrap_or_else(|| panic!("call without id: {call}"))
        .to_owned()
}

fn legs(call: &Value) -> Vec<Value> {
    call["legs"]
        .as_array()
        .cloned()
        .unwrap_or_else(|| panic!("call without legs array: {call:#}"))
}

/// Whether a leg's `agent` names this agent (by id or username).
fn is_agent(leg: &Value, agent: &Value) -> bool {
    leg["agent"] == agent["id"] || leg["agent"] == agent["username"]
}

#[track_caller]
fn assert_field(call: &Value, field: &str, want: &str) {
    assert_eq!(
        call[field].as_str(),
        Some(want),
        "call {field} should be {want:?}: {call:#}"
    );
}

async fn agent_state(gw: &Gateway, username: &str) -> String {
    let a = get_json(gw, &format!("/v1/agents/{username}")).await;
    a["state"].as_str().unwrap_or_default().to_owned()
}

/// Poll until the agent's `state` is one of `want`.
async fn wait_agent_state(gw: &Gateway, username: &str, want: &[&str]) {
    let until = Instant::now() + secs(3);
    loop {
        let state = agent_state(gw, username).await;
        if want.contains(&state.as_str()) {
            return;
        }
        assert!(
            Instant::now() < until,
            "agent {username} state {state:?}, wanted one of {want:?}"
        );
        tokio::time::sleep(ms(50)).await;
    }
}

/// Ids of the BPF programs behind the tcx links process `pid` holds (from its fdinfo).
fn kernel_programs(pid: u32) -> Vec<u32> {
    let mut ids = Vec::new();
    for e in std::fs::read_dir(format!("/proc/{pid}/fdinfo"))
        .expect("fdinfo")
        .flatten()
    {
        let info = std::fs::read_to_string(e.path()).unwrap_or_default();
        if !info.contains("link_type:\ttcx") {
            continue;
        }
        ids.extend(info.lines().filter_map(|l| {
            l.strip_prefix("prog_id:")
                .and_then(|v| v.trim().parse::<u32>().ok())
        }));
    }
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// The value of a Prometheus sample (summed over label sets), `None` if absent.
async fn metric(gw: &Gateway, name: &str) -> Option<f64> {
    let r = gw
        .client()
        .get(gw.url("/metrics"))
        .send()
        .await
        .expect("GET /metrics");
    assert!(r.status().is_success(), "GET /metrics: {}", r.status());
    let text = r.text().await.unwrap_or_default();
    let mut found = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        if !(rest.starts_with(' ') || rest.starts_with('{')) {
            continue;
        }
        let value = rest
            .rsplit(' ')
            .next()
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or_else(|| panic!("unreadable metric line {line:?}"));
        *found.get_or_insert(0.0) += value;
    }
    found
}

/// Poll `/metrics` until `name` is present and equals `want`.
async fn wait_metric(gw: &Gateway, name: &str, want: f64) {
    let until = Instant::now() + secs(5);
    loop {
        let got = metric(gw, name).await;
        if got == Some(want) {
            return;
        }
        assert!(
            Instant::now() < until,
            "metric {name} is {got:?} after 5 s, wanted {want} (None: not in /metrics)"
        );
        tokio::time::sleep(ms(100)).await;
    }
}

/// `call_uac_reject.xml` with an offer of `(payload types, one a= line)`.
fn dial_refused(phone: &Phone, callee: &str, (fmts, attr): (&str, &str)) -> Sipp {
    phone
        .dial("call_uac_reject.xml", callee)
        .set("rtp", &free_udp_port().to_string())
        .set("fmts", fmts)
        .set("attr", attr)
        .timeout(secs(20))
}

#[track_caller]
fn rtp_range(gw: &Gateway) -> (u16, u16) {
    let (lo, hi) = gw.rtp_ports.split_once('-').expect("rtp_ports lo-hi");
    (lo.parse().unwrap(), hi.parse().unwrap())
}

/// voxgate's own media description: c=127.0.0.1 (its public address), m= port from its
/// RTP range, never the other party's port (`not_port`).
#[track_caller]
fn assert_voxgate_sdp(sdp: &Sdp, gw: &Gateway, not_port: u16, what: &str) -> SocketAddr {
    let (lo, hi) = rtp_range(gw);
    let port = sdp.audio().port;
    assert_eq!(
        sdp.audio_address(),
        "127.0.0.1",
        "{what}: c= must be voxgate's public address:\n{}",
        sdp.raw
    );
    assert!(
        (lo..=hi).contains(&port),
        "{what}: m= port {port} is not in voxgate's RTP range {lo}-{hi}:\n{}",
        sdp.raw
    );
    assert_ne!(
        port, not_port,
        "{what}: m= port is the other party's own port, not a relay port:\n{}",
        sdp.raw
    );
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

#[track_caller]
fn only<'a, T>(items: Vec<&'a T>, what: &str, run: &SippRun) -> &'a T {
    assert_eq!(
        items.len(),
        1,
        "expected exactly one {what}\n{}",
        run.report()
    );
    items[0]
}

/// The last logged response with this status from a running SIPp.
#[track_caller]
fn response_of(p: &SippProcess, status: u16) -> SipResponse {
    p.responses()
        .into_iter()
        .rev()
        .find(|r| r.status == status)
        .unwrap_or_else(|| panic!("no {status} logged yet:\n{}", p.log()))
}

/// The (last) 200 OK for the INVITE, not the BYE's.
#[track_caller]
fn invite_ok(run: &SippRun) -> &SipResponse {
    run.responses
        .iter()
        .rev()
        .find(|r| r.status == 200 && r.header("cseq").is_some_and(|c| c.ends_with(" INVITE")))
        .unwrap_or_else(|| panic!("no 200 OK for the INVITE\n{}", run.report()))
}

/// The first INVITE a running phone received.
#[track_caller]
fn invite_of(p: &SippProcess) -> sipp::SipRequest {
    p.requests()
        .into_iter()
        .find(|r| r.method == "INVITE")
        .unwrap_or_else(|| panic!("no INVITE logged yet:\n{}", p.log()))
}

// ---------------------------------------------------------------------------------------
// RTP: the test's own media endpoints.

/// One received RTP packet.
#[derive(Debug, Clone)]
struct Rtp {
    from: SocketAddr,
    pt: u8,
    seq: u16,
    ts: u32,
    ssrc: u32,
    payload: Vec<u8>,
}

fn parse_rtp(from: SocketAddr, b: &[u8]) -> Option<Rtp> {
    if b.len() < 12 || b[0] >> 6 != 2 {
        return None;
    }
    let cc = usize::from(b[0] & 0x0f);
    let mut at = 12 + 4 * cc;
    if b[0] & 0x10 != 0 {
        let words = usize::from(u16::from_be_bytes([*b.get(at + 2)?, *b.get(at + 3)?]));
        at += 4 + 4 * words;
    }
    let mut end = b.len();
    if b[0] & 0x20 != 0 {
        end = end.checked_sub(usize::from(*b.last()?))?;
    }
    Some(Rtp {
        from,
        pt: b[1] & 0x7f,
        seq: u16::from_be_bytes([b[2], b[3]]),
        ts: u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
        ssrc: u32::from_be_bytes([b[8], b[9], b[10], b[11]]),
        payload: b.get(at..end)?.to_vec(),
    })
}

/// A media endpoint: sends PCMU packets whose payload is `[tag, index (u32 BE), 0xFF…]`
/// and records every RTP packet that arrives.
struct RtpPeer {
    sock: UdpSocket,
    ssrc: u32,
    seq: u16,
    ts: u32,
    index: u32,
}

impl RtpPeer {
    async fn new(ssrc: u32) -> RtpPeer {
        RtpPeer {
            sock: UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
                .await
                .expect("bind RTP socket"),
            ssrc,
            seq: 1000,
            ts: 160_000,
            index: 0,
        }
    }

    fn port(&self) -> u16 {
        self.sock.local_addr().expect("local addr").port()
    }

    fn packet(&mut self, tag: u8) -> Vec<u8> {
        let mut p = Vec::with_capacity(12 + 160);
        p.extend_from_slice(&[0x80, 0x00]); // V=2, PT 0 (PCMU)
        p.extend_from_slice(&self.seq.to_be_bytes());
        p.extend_from_slice(&self.ts.to_be_bytes());
        p.extend_from_slice(&self.ssrc.to_be_bytes());
        p.push(tag);
        p.extend_from_slice(&self.index.to_be_bytes());
        p.resize(12 + 160, 0xff);
        self.seq = self.seq.wrapping_add(1);
        self.ts = self.ts.wrapping_add(160);
        self.index += 1;
        p
    }

    async fn send(&mut self, to: SocketAddr, tag: u8) {
        let p = self.packet(tag);
        self.sock.send_to(&p, to).await.expect("send RTP");
    }

    /// Receive until `n` packets have arrived and then 300 ms of quiet (to catch extra
    /// or duplicated packets), or until `within` has passed.
    async fn receive(&self, n: usize, within: Duration) -> Vec<Rtp> {
        let until = Instant::now() + within;
        let mut got = Vec::new();
        let mut buf = [0u8; 2048];
        loop {
            let quiet = if got.len() >= n {
                ms(300)
            } else {
                until.saturating_duration_since(Instant::now())
            };
            match tokio::time::timeout(quiet, self.sock.recv_from(&mut buf)).await {
                Ok(Ok((len, from))) => {
                    if let Some(p) = parse_rtp(from, &buf[..len]) {
                        got.push(p);
                    }
                }
                Ok(Err(e)) => panic!("RTP receive: {e}"),
                Err(_) => return got,
            }
            if Instant::now() > until + ms(300) {
                return got;
            }
        }
    }
}

/// Send `n` packets from `a` to `to_a` and `n` from `b` to `to_b`, interleaved, 20 ms apart.
async fn send_both(a: &mut RtpPeer, to_a: SocketAddr, b: &mut RtpPeer, to_b: SocketAddr, n: usize) {
    for _ in 0..n {
        a.send(to_a, 0xA1).await;
        b.send(to_b, 0xB2).await;
        tokio::time::sleep(ms(20)).await;
    }
}

fn summary(got: &[Rtp]) -> String {
    let idx: Vec<String> = got
        .iter()
        .map(|p| {
            let i = p.payload.get(1..5).map_or(-1, |b| {
                i64::from(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
            });
            format!("{}#{i}@{}", p.seq, p.from.port())
        })
        .collect();
    format!(
        "{} packets (seq#index@source port): {}",
        got.len(),
        idx.join(" ")
    )
}

/// Exactly `n` packets sent with `tag`, in order, from `from` (the relay's port: RTP is
/// symmetric), PCMU, one SSRC, consecutive sequence numbers, timestamps 160 apart, and the
/// payload byte for byte.
#[track_caller]
fn assert_stream(got: &[Rtp], n: usize, first_index: u32, tag: u8, from: SocketAddr, what: &str) {
    assert_eq!(
        got.len(),
        n,
        "{what}: wanted exactly {n} RTP packets; got {}",
        summary(got)
    );
    for (i, p) in got.iter().enumerate() {
        let mut want = vec![tag];
        want.extend_from_slice(&(first_index + i as u32).to_be_bytes());
        want.resize(160, 0xff);
        assert_eq!(
            p.payload,
            want,
            "{what}: packet {i} is not the {i}th packet sent (lost, reordered or altered); {}",
            summary(got)
        );
        assert_eq!(p.pt, 0, "{what}: packet {i} is not PCMU: {p:?}");
        assert_eq!(
            p.from,
            from,
            "{what}: packet {i} did not come from voxgate's advertised port {from}; {}",
            summary(got)
        );
        assert_eq!(p.ssrc, got[0].ssrc, "{what}: SSRC changed at packet {i}");
        if i > 0 {
            let prev = &got[i - 1];
            assert_eq!(
                p.seq,
                prev.seq.wrapping_add(1),
                "{what}: sequence gap at packet {i}; {}",
                summary(got)
            );
            assert_eq!(
                p.ts.wrapping_sub(prev.ts),
                160,
                "{what}: timestamp step at packet {i} is not 160"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------
// Tests, one per acceptance bullet of the call engine.

/// Agent calls agent: 407 → ACK → INVITE with credentials → 100 → voxgate INVITEs the
/// callee with its own SDP → 180 → 200 with voxgate's SDP → ACK; RTP flows both ways
/// through voxgate's two ports; the caller's BYE ends both legs; the call record.
#[tokio::test]
async fn call_connects_relays_rtp_both_ways_and_caller_hangs_up() {
    let gw = Gateway::start().await;
    let alice_agent = create_agent(&gw, ALICE).await;
    let bob_agent = create_agent(&gw, BOB).await;
    let (alice, bob) = (Phone::new(ALICE), Phone::new(BOB));
    alice.register(gw.sip_port);
    bob.register(gw.sip_port);
    let mut a = RtpPeer::new(0x0A11_CE00).await;
    let mut b = RtpPeer::new(0x0B0B_0000).await;

    let mut callee = listen(
        bob.answer("call_uas.xml")
            .set("rtp", &b.port().to_string())
            .duration(ms(300)),
        gw.sip_port,
    )
    .await;
    let mut caller = alice
        .dial("call_uac.xml", "bob")
        .set("rtp", &a.port().to_string())
        .duration(ms(5000))
        .spawn(gw.sip_port);
    caller.wait_for_log(ANSWERED, secs(10)).await;
    callee.wait_for_log(ANSWERED, secs(5)).await;

    // Signalling: challenged first, then voxgate's own SDP on both legs.
    let challenge = caller.responses().into_iter().next().expect("a response");
    assert_eq!(
        challenge.status, 407,
        "first answer must be the challenge:\n{}",
        challenge.raw
    );
    let pa = challenge
        .header("proxy-authenticate")
        .unwrap_or_else(|| panic!("407 without Proxy-Authenticate:\n{}", challenge.raw));
    let ch = sipp::DigestChallenge::parse(pa);
    assert_eq!(ch.param("realm"), Some("voxgate"), "{}", challenge.raw);
    assert_eq!(ch.param("algorithm"), Some("MD5"), "{}", challenge.raw);
    let ok = response_of(&caller, 200);
    let invite = invite_of(&callee);
    assert!(
        invite
            .uri
            .starts_with(&format!("sip:bob@127.0.0.1:{}", bob.port)),
        "voxgate must INVITE bob's registered contact, not {}",
        invite.uri
    );
    let vox_a = assert_voxgate_sdp(&ok.sdp(), &gw, b.port(), "200 OK to the caller");
    let vox_b = assert_voxgate_sdp(&invite.sdp(), &gw, a.port(), "INVITE to the callee");
    assert_ne!(vox_a, vox_b, "each leg needs its own relay port");

    // While the call is up.
    wait_agent_state(&gw, "bob", &["busy"]).await;
    let live = the_call(&gw, "status=in-progress").await;
    assert!(
        live["from"].as_str().unwrap_or_default().contains("alice"),
        "{live:#}"
    );
    assert!(
        live["to"].as_str().unwrap_or_default().contains("bob"),
        "{live:#}"
    );

    // Media both ways, each side sending to the port voxgate gave it.
    send_both(&mut a, vox_a, &mut b, vox_b, PACKETS).await;
    let at_b = b.receive(PACKETS, secs(3)).await;
    let at_a = a.receive(PACKETS, secs(3)).await;
    assert_stream(&at_b, PACKETS, 0, 0xA1, vox_b, "caller -> callee");
    assert_stream(&at_a, PACKETS, 0, 0xB2, vox_a, "callee -> caller");
    // Steady flows went through the kernel (tests run with kernel forwarding on);
    // the first packet of each direction latches in userspace.
    let until = Instant::now() + secs(3);
    loop {
        let k = metric(&gw, "voxgate_rtp_kernel_packets_total")
            .await
            .unwrap_or(0.0);
        if k >= (2 * PACKETS - 4) as f64 {
            break;
        }
        assert!(
            Instant::now() < until,
            "only {k} packets forwarded in the kernel"
        );
        tokio::time::sleep(ms(100)).await;
    }

    let caller_run = caller.finish().await;
    caller_run.assert_success();
    let callee_run = callee.finish().await;
    callee_run.assert_success();
    assert!(
        caller_run
            .received_start_lines()
            .iter()
            .any(|l| l.starts_with("SIP/2.0 100 ")),
        "no 100 Trying for the INVITE\n{}",
        caller_run.report()
    );
    only(
        callee_run.requests_with("BYE"),
        "BYE to the callee",
        &callee_run,
    );

    let call = final_call(&gw, &call_id(&live)).await;
    assert_field(&call, "status", "completed");
    assert_field(&call, "hangup_by", "caller");
    for f in ["started_at", "answered_at", "ended_at"] {
        assert!(call[f].is_string(), "call without {f}: {call:#}");
    }
    let d = call["duration_seconds"].as_i64().unwrap_or(-1);
    assert!(
        (4..=8).contains(&d),
        "5 s of talk, duration_seconds {d}: {call:#}"
    );
    let legs = legs(&call);
    assert_eq!(legs.len(), 2, "a caller leg and a callee leg: {call:#}");
    let inbound: Vec<&Value> = legs
        .iter()
        .filter(|l| l["direction"] == "inbound")
        .collect();
    let outbound: Vec<&Value> = legs
        .iter()
        .filter(|l| l["direction"] == "outbound")
        .collect();
    assert!(
        inbound.len() == 1 && is_agent(inbound[0], &alice_agent),
        "inbound leg is alice's: {call:#}"
    );
    assert!(
        outbound.len() == 1 && is_agent(outbound[0], &bob_agent),
        "outbound leg is bob's: {call:#}"
    );
    wait_agent_state(&gw, "bob", &["available", "wrap_up"]).await;
}

/// The callee hangs up: voxgate 200s its BYE and sends BYE to the caller.
#[tokio::test]
async fn callee_hangs_up_and_caller_gets_bye() {
    let gw = Gateway::start().await;
    create_agent(&gw, ALICE).await;
    create_agent(&gw, BOB).await;
    let (alice, bob) = (Phone::new(ALICE), Phone::new(BOB));
    alice.register(gw.sip_port);
    bob.register(gw.sip_port);

    let callee = listen(
        bob.answer("call_uas_bye.xml")
            .set("rtp", &free_udp_port().to_string())
            .duration(ms(1500)),
        gw.sip_port,
    )
    .await;
    let caller = alice
        .dial("call_uac_wait_bye.xml", "bob")
        .set("rtp", &free_udp_port().to_string())
        .spawn(gw.sip_port);
    let caller_run = caller.finish().await;
    let callee_run = callee.finish().await;
    callee_run.assert_success();
    caller_run.assert_success();
    only(
        callee_run.responses_with(200),
        "200 for the callee's BYE",
        &callee_run,
    );
    only(
        caller_run.requests_with("BYE"),
        "BYE to the caller",
        &caller_run,
    );

    let call = the_call(&gw, "").await;
    let call = final_call(&gw, &call_id(&call)).await;
    assert_field(&call, "status", "completed");
    assert_field(&call, "hangup_by", "callee");
    wait_metric(&gw, "voxgate_sip_dialogs", 0.0).await;
}

/// 183 with SDP from the callee reaches the caller with voxgate's SDP (early media goes
/// through the relay too), on the same port as the 200's.
#[tokio::test]
async fn early_media_183_is_relayed_with_voxgate_sdp() {
    let gw = Gateway::start().await;
    create_agent(&gw, ALICE).await;
    create_agent(&gw, BOB).await;
    let (alice, bob) = (Phone::new(ALICE), Phone::new(BOB));
    alice.register(gw.sip_port);
    bob.register(gw.sip_port);
    let (a_port, b_port) = (free_udp_port(), free_udp_port());

    let callee = listen(
        bob.answer("call_uas_183.xml")
            .set("rtp", &b_port.to_string())
            .duration(ms(500)),
        gw.sip_port,
    )
    .await;
    let caller = alice
        .dial("call_uac.xml", "bob")
        .set("rtp", &a_port.to_string())
        .duration(ms(300))
        .spawn(gw.sip_port);
    let caller_run = caller.finish().await;
    caller_run.assert_success();
    callee.finish().await.assert_success();

    let progress = caller_run.response(183);
    let early = assert_voxgate_sdp(&progress.sdp(), &gw, b_port, "183 to the caller");
    let answer = assert_voxgate_sdp(
        &invite_ok(&caller_run).sdp(),
        &gw,
        b_port,
        "200 to the caller",
    );
    assert_eq!(
        early, answer,
        "the caller's leg keeps one relay port from early media to the answer"
    );
}

/// The caller CANCELs while the callee rings: 200 for the CANCEL and 487 for the INVITE
/// to the caller; CANCEL to the callee (which 200s it, 487s the INVITE and gets the ACK).
/// While ringing, the agent and the call say `ringing`.
#[tokio::test]
async fn caller_cancels_before_answer() {
    let gw = Gateway::start().await;
    create_agent(&gw, ALICE).await;
    create_agent(&gw, BOB).await;
    let (alice, bob) = (Phone::new(ALICE), Phone::new(BOB));
    alice.register(gw.sip_port);
    bob.register(gw.sip_port);

    let callee = listen(bob.answer("call_uas_cancel.xml"), gw.sip_port).await;
    let mut caller = alice
        .dial("call_uac_cancel.xml", "bob")
        .set("rtp", &free_udp_port().to_string())
        .duration(ms(2500))
        .spawn(gw.sip_port);
    caller
        .wait_for_log("@@RESPONSE-BEGIN@@SIP/2.0 180", secs(10))
        .await;
    wait_agent_state(&gw, "bob", &["ringing"]).await;
    let ringing = the_call(&gw, "status=ringing").await;

    let caller_run = caller.finish().await;
    caller_run.assert_success();
    let callee_run = callee.finish().await;
    callee_run.assert_success();

    let cancel_ok: Vec<&SipResponse> = caller_run
        .responses_with(200)
        .into_iter()
        .filter(|r| r.header("cseq").is_some_and(|c| c.ends_with("CANCEL")))
        .collect();
    only(cancel_ok, "200 for the CANCEL", &caller_run);
    let terminated = only(
        caller_run.responses_with(487),
        "487 for the INVITE",
        &caller_run,
    );
    assert_eq!(
        terminated.header("cseq"),
        Some("2 INVITE"),
        "{}",
        terminated.raw
    );
    assert!(
        caller_run
            .responses_with(200)
            .iter()
            .all(|r| !r.header("cseq").unwrap_or_default().ends_with("INVITE")),
        "a cancelled call must not be answered\n{}",
        caller_run.report()
    );
    let invite = only(
        callee_run.requests_with("INVITE"),
        "INVITE to the callee",
        &callee_run,
    );
    let cancel = only(
        callee_run.requests_with("CANCEL"),
        "CANCEL to the callee",
        &callee_run,
    );
    assert_eq!(
        cancel.header("via"),
        invite.header("via"),
        "RFC 3261 9.1: the CANCEL's Via (branch) is the INVITE's"
    );
    only(
        callee_run.requests_with("ACK"),
        "ACK for the callee's 487",
        &callee_run,
    );

    let call = final_call(&gw, &call_id(&ringing)).await;
    assert_field(&call, "status", "canceled");
    assert_field(&call, "hangup_by", "caller");
    // The callee's early dialog (its 180 had a tag) is gone with the call.
    wait_metric(&gw, "voxgate_sip_dialogs", 0.0).await;
    assert!(call["answered_at"].is_null(), "never answered: {call:#}");
    assert_eq!(call["duration_seconds"].as_i64(), Some(0), "{call:#}");
}

/// The callee's phone answers 486 → the caller gets 486; the call is `busy`.
#[tokio::test]
async fn callee_phone_busy_gives_486() {
    let gw = Gateway::start().await;
    create_agent(&gw, ALICE).await;
    create_agent(&gw, BOB).await;
    let (alice, bob) = (Phone::new(ALICE), Phone::new(BOB));
    alice.register(gw.sip_port);
    bob.register(gw.sip_port);

    let callee = listen(bob.answer("call_uas_busy.xml"), gw.sip_port).await;
    let caller_run = dial_refused(&alice, "bob", OFFER_G711)
        .spawn(gw.sip_port)
        .finish()
        .await;
    caller_run.assert_success();
    let callee_run = callee.finish().await;
    callee_run.assert_success();
    assert_eq!(
        caller_run.last_response().status,
        486,
        "{}",
        caller_run.report()
    );

    let call = the_call(&gw, "").await;
    let call = final_call(&gw, &call_id(&call)).await;
    assert_field(&call, "status", "busy");
    wait_metric(&gw, "voxgate_sip_dialogs", 0.0).await;
}

/// An agent at `max_concurrent_calls` (default 1) is busy: voxgate answers 486 itself,
/// without ringing the agent's phone.
#[tokio::test]
async fn agent_in_a_call_gets_486_without_ringing() {
    let gw = Gateway::start().await;
    create_agent(&gw, ALICE).await;
    create_agent(&gw, BOB).await;
    create_agent(&gw, CAROL).await;
    let (alice, bob, carol) = (Phone::new(ALICE), Phone::new(BOB), Phone::new(CAROL));
    alice.register(gw.sip_port);
    bob.register(gw.sip_port);
    carol.register(gw.sip_port);

    let callee = listen(
        bob.answer("call_uas.xml")
            .set("rtp", &free_udp_port().to_string())
            .duration(ms(0)),
        gw.sip_port,
    )
    .await;
    let mut first = alice
        .dial("call_uac.xml", "bob")
        .set("rtp", &free_udp_port().to_string())
        .duration(ms(4000))
        .spawn(gw.sip_port);
    first.wait_for_log(ANSWERED, secs(10)).await;

    let second = dial_refused(&carol, "bob", OFFER_G711)
        .spawn(gw.sip_port)
        .finish()
        .await;
    second.assert_success();
    assert_eq!(second.last_response().status, 486, "{}", second.report());
    assert!(
        second.responses_with(180).is_empty() && second.responses_with(183).is_empty(),
        "a busy agent must not ring\n{}",
        second.report()
    );

    first.finish().await.assert_success();
    let callee_run = callee.finish().await;
    callee_run.assert_success();
    assert_eq!(
        callee_run.received_count("INVITE"),
        1,
        "bob's phone must get only the first call's INVITE\n{}",
        callee_run.report()
    );
    assert_refused_record(&gw, "status=busy", "busy", 486, "carol").await;
}

/// A known agent with no registration → 480 Temporarily Unavailable.
#[tokio::test]
async fn callee_not_registered_gives_480() {
    let gw = Gateway::start().await;
    create_agent(&gw, ALICE).await;
    create_agent(&gw, BOB).await;
    let alice = Phone::new(ALICE);
    alice.register(gw.sip_port);

    let run = dial_refused(&alice, "bob", OFFER_G711).run(gw.sip_port);
    run.assert_success();
    assert_eq!(run.last_response().status, 480, "{}", run.report());
    assert!(
        run.responses_with(180).is_empty(),
        "nobody to ring\n{}",
        run.report()
    );
    assert_refused_record(&gw, "", "failed", 480, "alice").await;
}

/// An unknown user → 404 Not Found, but only after the caller authenticated (407 first).
#[tokio::test]
async fn unknown_user_gives_404_after_the_challenge() {
    let gw = Gateway::start().await;
    create_agent(&gw, ALICE).await;
    let alice = Phone::new(ALICE);
    alice.register(gw.sip_port);

    let run = dial_refused(&alice, "nobody", OFFER_G711).run(gw.sip_port);
    run.assert_success();
    assert_eq!(run.responses[0].status, 407, "{}", run.report());
    assert_eq!(run.last_response().status, 404, "{}", run.report());
    assert_refused_record(&gw, "", "failed", 404, "alice").await;
}

/// The caller offers only G.729 (PT 18): 488 Not Acceptable Here, and the callee's phone
/// is never rung.
#[tokio::test]
async fn no_common_codec_gives_488_without_ringing() {
    let gw = Gateway::start().await;
    create_agent(&gw, ALICE).await;
    create_agent(&gw, BOB).await;
    let (alice, bob) = (Phone::new(ALICE), Phone::new(BOB));
    alice.register(gw.sip_port);
    bob.register(gw.sip_port);
    // Bob's "phone" is a plain socket on his registered port: it must stay silent.
    let bob_sock = UdpSocket::bind((Ipv4Addr::LOCALHOST, bob.port))
        .await
        .expect("bind bob's port");

    let run = dial_refused(&alice, "bob", OFFER_G729).run(gw.sip_port);
    run.assert_success();
    assert_eq!(run.last_response().status, 488, "{}", run.report());
    assert_refused_record(&gw, "", "failed", 488, "alice").await;
    let mut buf = [0u8; 4096];
    if let Ok(Ok((n, from))) = tokio::time::timeout(ms(500), bob_sock.recv_from(&mut buf)).await {
        panic!(
            "bob's phone got a datagram from {from} for a call no codec could carry:\n{}",
            String::from_utf8_lossy(&buf[..n])
        );
    }
}

/// Hold and resume: the caller's re-INVITE with a=sendonly reaches the callee as a
/// re-INVITE with a=sendonly; the callee's recvonly comes back as a=recvonly; resuming
/// with sendrecv gives sendrecv both ways. Relay ports stay; SDP versions increase.
#[tokio::test]
async fn hold_and_resume_with_reinvite() {
    let gw = Gateway::start().await;
    create_agent(&gw, ALICE).await;
    create_agent(&gw, BOB).await;
    let (alice, bob) = (Phone::new(ALICE), Phone::new(BOB));
    alice.register(gw.sip_port);
    bob.register(gw.sip_port);
    let (a_port, b_port) = (free_udp_port(), free_udp_port());

    let callee = listen(
        bob.answer("call_uas_hold.xml")
            .set("rtp", &b_port.to_string())
            .duration(ms(200)),
        gw.sip_port,
    )
    .await;
    let caller_run = alice
        .dial("call_uac_hold.xml", "bob")
        .set("rtp", &a_port.to_string())
        .duration(ms(500))
        .spawn(gw.sip_port)
        .finish()
        .await;
    caller_run.assert_success();
    let callee_run = callee.finish().await;
    callee_run.assert_success();

    // Caller side: 200 (answer), 200 (hold), 200 (resume), 200 (BYE).
    let oks = caller_run.responses_with(200);
    assert_eq!(oks.len(), 4, "{}", caller_run.report());
    let (answer, held, resumed) = (oks[0].sdp(), oks[1].sdp(), oks[2].sdp());
    assert_eq!(
        held.audio_direction(),
        "recvonly",
        "hold answer to the caller:\n{}",
        held.raw
    );
    assert_eq!(
        resumed.audio_direction(),
        "sendrecv",
        "resume answer to the caller:\n{}",
        resumed.raw
    );
    assert_eq!(
        held.audio().port,
        answer.audio().port,
        "caller-side relay port changed on hold"
    );
    assert_eq!(
        resumed.audio().port,
        answer.audio().port,
        "caller-side relay port changed on resume"
    );
    assert!(
        answer.origin_version < held.origin_version && held.origin_version < resumed.origin_version,
        "RFC 3264 §8: o= version must increase with each new SDP to the caller"
    );

    // Callee side: the initial INVITE and two re-INVITEs.
    let invites = callee_run.requests_with("INVITE");
    assert_eq!(invites.len(), 3, "{}", callee_run.report());
    let (first, hold, resume) = (invites[0].sdp(), invites[1].sdp(), invites[2].sdp());
    assert_eq!(
        hold.audio_direction(),
        "sendonly",
        "hold re-INVITE to the callee:\n{}",
        hold.raw
    );
    assert_eq!(
        resume.audio_direction(),
        "sendrecv",
        "resume re-INVITE to the callee:\n{}",
        resume.raw
    );
    assert_eq!(
        hold.audio().port,
        first.audio().port,
        "callee-side relay port changed on hold"
    );
    assert!(
        first.origin_version < hold.origin_version && hold.origin_version < resume.origin_version,
        "RFC 3264 §8: o= version must increase with each new offer to the callee"
    );
    for r in &invites[1..] {
        assert_eq!(
            r.header("call-id"),
            invites[0].header("call-id"),
            "a re-INVITE is in the callee leg's dialog"
        );
    }
    wait_metric(&gw, "voxgate_sip_dialogs", 0.0).await;
}

/// An agent registered twice: both contacts ring; the first only rings (180), the second
/// answers → the first gets CANCEL and the call connects to the second.
#[tokio::test]
async fn forked_call_first_2xx_wins_and_other_fork_is_cancelled() {
    let gw = Gateway::start().await;
    create_agent(&gw, ALICE).await;
    let bob_agent = create_agent(&gw, BOB).await;
    let alice = Phone::new(ALICE);
    let (desk, mobile) = (Phone::new(BOB), Phone::new(BOB));
    alice.register(gw.sip_port);
    desk.register(gw.sip_port);
    mobile.register(gw.sip_port);
    let regs = get_json(&gw, "/v1/agents/bob").await["registrations"]
        .as_array()
        .map_or(0, Vec::len);
    assert_eq!(regs, 2, "bob has two contacts: {bob_agent}");

    let ringer = listen(desk.answer("call_uas_cancel.xml"), gw.sip_port).await;
    let answerer = listen(
        mobile
            .answer("call_uas.xml")
            .set("rtp", &free_udp_port().to_string())
            .duration(ms(1500)),
        gw.sip_port,
    )
    .await;
    let caller_run = alice
        .dial("call_uac.xml", "bob")
        .set("rtp", &free_udp_port().to_string())
        .duration(ms(1000))
        .spawn(gw.sip_port)
        .finish()
        .await;
    caller_run.assert_success();
    let ringer_run = ringer.finish().await;
    ringer_run.assert_success();
    let answerer_run = answerer.finish().await;
    answerer_run.assert_success();

    assert!(
        !caller_run.responses_with(180).is_empty(),
        "the caller heard ringing\n{}",
        caller_run.report()
    );
    let invite = only(
        ringer_run.requests_with("INVITE"),
        "INVITE to the ringing fork",
        &ringer_run,
    );
    let cancel = only(
        ringer_run.requests_with("CANCEL"),
        "CANCEL to the ringing fork",
        &ringer_run,
    );
    assert_eq!(
        cancel.header("via"),
        invite.header("via"),
        "CANCEL matches the fork's INVITE"
    );
    only(
        answerer_run.requests_with("BYE"),
        "BYE to the answering fork",
        &answerer_run,
    );
    let inv2 = only(
        answerer_run.requests_with("INVITE"),
        "INVITE to the answering fork",
        &answerer_run,
    );
    assert_ne!(
        invite.header("call-id"),
        inv2.header("call-id"),
        "each fork is its own leg and dialog"
    );

    let call = the_call(&gw, "").await;
    let call = final_call(&gw, &call_id(&call)).await;
    assert_field(&call, "status", "completed");
    let legs = legs(&call);
    let leg_to = |port: u16| -> Value {
        legs.iter()
            .find(|l| {
                l["direction"] == "outbound"
                    && l["uri"]
                        .as_str()
                        .unwrap_or_default()
                        .contains(&format!(":{port}"))
            })
            .cloned()
            .unwrap_or_else(|| panic!("no outbound leg to port {port}: {call:#}"))
    };
    assert_eq!(leg_to(mobile.port)["status"], "completed", "{call:#}");
    assert_eq!(leg_to(desk.port)["status"], "canceled", "{call:#}");
    wait_metric(&gw, "voxgate_sip_dialogs", 0.0).await;
}

/// Symmetric latching: the callee's SDP names port 9 where nothing listens, but its RTP
/// really comes from another port; voxgate sends the caller's audio there.
#[tokio::test]
async fn rtp_latches_to_where_the_callee_really_sends_from() {
    // Userspace relay end to end (every other call test forwards in the kernel).
    let gw = Gateway::start_with(&[("VOXGATE_RTP_KERNEL_FORWARDING", "off")], None).await;
    create_agent(&gw, ALICE).await;
    create_agent(&gw, BOB).await;
    let (alice, bob) = (Phone::new(ALICE), Phone::new(BOB));
    alice.register(gw.sip_port);
    bob.register(gw.sip_port);
    let mut a = RtpPeer::new(0x0A0A_0A0A).await;
    let mut b = RtpPeer::new(0x0B0B_0B0B).await; // behind "NAT": not the port in its SDP

    let mut callee = listen(
        bob.answer("call_uas.xml").set("rtp", "9").duration(ms(0)),
        gw.sip_port,
    )
    .await;
    let mut caller = alice
        .dial("call_uac.xml", "bob")
        .set("rtp", &a.port().to_string())
        .duration(ms(5000))
        .spawn(gw.sip_port);
    caller.wait_for_log(ANSWERED, secs(10)).await;
    callee.wait_for_log(ANSWERED, secs(5)).await;
    let vox_a = assert_voxgate_sdp(
        &response_of(&caller, 200).sdp(),
        &gw,
        9,
        "200 to the caller",
    );
    let vox_b = assert_voxgate_sdp(
        &invite_of(&callee).sdp(),
        &gw,
        a.port(),
        "INVITE to the callee",
    );

    // The callee speaks first (as a NATed phone must): its audio reaches the caller...
    for _ in 0..5 {
        b.send(vox_b, 0xB2).await;
        tokio::time::sleep(ms(20)).await;
    }
    let at_a = a.receive(5, secs(3)).await;
    assert_stream(&at_a, 5, 0, 0xB2, vox_a, "callee (NAT) -> caller");
    // ...and from then on the caller's audio goes to where the callee's came from.
    for _ in 0..PACKETS {
        a.send(vox_a, 0xA1).await;
        tokio::time::sleep(ms(20)).await;
    }
    let at_b = b.receive(PACKETS, secs(3)).await;
    assert_stream(&at_b, PACKETS, 0, 0xA1, vox_b, "caller -> callee (latched)");

    caller.finish().await.assert_success();
    callee.finish().await.assert_success();
}

/// 200 calls one after another (100 ms of talk each): all complete, listed with their
/// durations, and afterwards no call is active and no RTP port stays allocated.
#[tokio::test]
async fn two_hundred_sequential_calls_complete_and_release_everything() {
    const CALLS: u32 = 200;
    let gw = Gateway::start().await;
    create_agent(&gw, ALICE).await;
    create_agent(&gw, BOB).await;
    let (alice, bob) = (Phone::new(ALICE), Phone::new(BOB));
    alice.register(gw.sip_port);
    bob.register(gw.sip_port);

    let callee = listen(
        bob.answer("call_uas.xml")
            .set("rtp", &free_udp_port().to_string())
            .duration(ms(0))
            .calls(CALLS)
            .timeout(secs(150)),
        gw.sip_port,
    )
    .await;
    let caller_run = alice
        .dial("call_uac.xml", "bob")
        .set("rtp", &free_udp_port().to_string())
        .duration(ms(100))
        .calls(CALLS)
        .limit(1)
        .rate(10)
        .timeout(secs(150))
        .spawn(gw.sip_port)
        .finish()
        .await;
    caller_run.assert_success();
    callee.finish().await.assert_success();

    let done = wait_calls(&gw, "status=completed", CALLS as usize, secs(15)).await;
    assert_eq!(
        done.len(),
        CALLS as usize,
        "exactly {CALLS} completed calls"
    );
    let mut ids: Vec<&str> = done
        .iter()
        .map(|c| c["id"].as_str().unwrap_or_default())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(
        ids.len(),
        CALLS as usize,
        "call ids are unique across pages"
    );
    for c in &done {
        let d = c["duration_seconds"].as_i64();
        assert!(
            d.is_some_and(|d| (0..=2).contains(&d)),
            "duration_seconds of a 0.1 s call: {c:#}"
        );
        assert!(c["answered_at"].is_string(), "{c:#}");
        assert_field(c, "hangup_by", "caller");
    }
    wait_metric(&gw, "voxgate_calls_active", 0.0).await;
    wait_metric(&gw, "voxgate_rtp_ports_allocated", 0.0).await;
    wait_metric(&gw, "voxgate_sip_dialogs", 0.0).await;
}

/// kill -9 during a live call, restart: the call is closed as failed / gateway-restart.
#[tokio::test]
async fn call_live_at_a_crash_is_failed_after_restart() {
    let mut gw = Gateway::start().await;
    create_agent(&gw, ALICE).await;
    create_agent(&gw, BOB).await;
    let (alice, bob) = (Phone::new(ALICE), Phone::new(BOB));
    alice.register(gw.sip_port);
    bob.register(gw.sip_port);

    let mut callee = listen(
        bob.answer("call_uas.xml")
            .set("rtp", &free_udp_port().to_string())
            .duration(ms(0)),
        gw.sip_port,
    )
    .await;
    let mut caller = alice
        .dial("call_uac.xml", "bob")
        .set("rtp", &free_udp_port().to_string())
        .duration(secs(30))
        .spawn(gw.sip_port);
    caller.wait_for_log(ANSWERED, secs(10)).await;
    callee.wait_for_log(ANSWERED, secs(5)).await;
    let live = the_call(&gw, "status=in-progress").await;
    let progs = kernel_programs(gw.pid().expect("gateway running"));
    assert!(!progs.is_empty(), "the gateway holds no tcx link");

    gw.kill9();
    caller.kill();
    callee.kill();
    // Nothing of the kernel forwarder outlives the process.
    let until = Instant::now() + secs(5);
    while progs
        .iter()
        .any(|id| voxgate_kfwd::sys::prog_exists(*id).expect("BPF_PROG_GET_FD_BY_ID"))
    {
        assert!(
            Instant::now() < until,
            "BPF programs {progs:?} still loaded after kill -9"
        );
        tokio::time::sleep(ms(50)).await;
    }
    gw.restart().await;

    let call = get_json(&gw, &format!("/v1/calls/{}", call_id(&live))).await;
    assert_field(&call, "status", "failed");
    assert_field(&call, "hangup_cause", "gateway-restart");
    assert!(call["ended_at"].is_string(), "{call:#}");
    wait_metric(&gw, "voxgate_calls_active", 0.0).await;
}

/// `POST /v1/calls/{id}/hangup` → 204, and both legs get a BYE.
#[tokio::test]
async fn api_hangup_sends_bye_to_both_legs() {
    let gw = Gateway::start().await;
    create_agent(&gw, ALICE).await;
    create_agent(&gw, BOB).await;
    let (alice, bob) = (Phone::new(ALICE), Phone::new(BOB));
    alice.register(gw.sip_port);
    bob.register(gw.sip_port);

    let mut callee = listen(
        bob.answer("call_uas.xml")
            .set("rtp", &free_udp_port().to_string())
            .duration(ms(0)),
        gw.sip_port,
    )
    .await;
    let mut caller = alice
        .dial("call_uac_wait_bye.xml", "bob")
        .set("rtp", &free_udp_port().to_string())
        .spawn(gw.sip_port);
    caller.wait_for_log(ANSWERED, secs(10)).await;
    callee.wait_for_log(ANSWERED, secs(5)).await;
    let live = the_call(&gw, "status=in-progress").await;
    let id = call_id(&live);

    let r = gw
        .client()
        .post(gw.url(&format!("/v1/calls/{id}/hangup")))
        .send()
        .await
        .expect("POST hangup");
    assert_eq!(
        r.status().as_u16(),
        204,
        "{}",
        r.text().await.unwrap_or_default()
    );

    let caller_run = caller.finish().await;
    caller_run.assert_success();
    let callee_run = callee.finish().await;
    callee_run.assert_success();
    only(
        caller_run.requests_with("BYE"),
        "BYE to the caller",
        &caller_run,
    );
    only(
        callee_run.requests_with("BYE"),
        "BYE to the callee",
        &callee_run,
    );

    let call = final_call(&gw, &id).await;
    assert_field(&call, "status", "completed");
    assert_field(&call, "hangup_by", "api");
    wait_metric(&gw, "voxgate_sip_dialogs", 0.0).await;
}
