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
#[path = "common/sipp.rs"]
mod sipp;

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use common::Gateway;
use serde_json::{json, Value};
use sipp::{free_port_on, free_udp_port, Sipp, SippProcess};

const ALICE: (&str, &str) = ("alice", "alicepass1");
const CARRIER_USER: &str = "acme";
const CARRIER_PASS: &str = "carrier-secret-1";

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

/// Checks an INVITE's Proxy-Authorization against the carrier's password (RFC 7616
/// §3.4.1, MD5 with qop=auth), as the carrier would.
fn assert_digest(invite: &sipp::SipRequest, user: &str, password: &str) {
    let header = invite
        .headers
        .iter()
        .find(|(n, _)| n == "proxy-authorization")
        .map(|(_, v)| v.clone())
        .unwrap_or_else(|| panic!("no Proxy-Authorization:\n{}", invite.raw));
    let ch = sipp::DigestChallenge::parse(&header);
    let p = |name: &str| {
        ch.param(name)
            .unwrap_or_else(|| panic!("no {name} in {header}"))
            .to_owned()
    };
    assert_eq!(p("username"), user, "{header}");
    let ha1 = md5_hex(&format!("{user}:{}:{password}", p("realm")));
    let ha2 = md5_hex(&format!("INVITE:{}", p("uri")));
    let want = md5_hex(&format!(
        "{ha1}:{}:{}:{}:{}:{ha2}",
        p("nonce"),
        p("nc"),
        p("cnonce"),
        p("qop")
    ));
    assert_eq!(p("response"), want, "digest does not verify: {header}");
}

/// An agent's SIPp phone on its own port.
struct Phone {
    user: &'static str,
    password: &'static str,
    port: u16,
}

impl Phone {
    fn new((user, password): (&'static str, &'static str)) -> Phone {
        Phone {
            user,
            password,
            port: free_port_on(Ipv4Addr::LOCALHOST.into()),
        }
    }

    async fn create_and_register(&self, gw: &Gateway) {
        post_ok(
            gw,
            "/v1/agents",
            json!({ "username": self.user, "password": self.password }),
        )
        .await;
        Sipp::new("register.xml")
            .local_port(self.port)
            .service(self.user)
            .auth(self.user, self.password)
            .set(
                "contact",
                &format!("<sip:{}@127.0.0.1:{};transport=udp>", self.user, self.port),
            )
            .set("hdr", "Expires: 3600")
            .run(gw.sip_port)
            .assert_success();
    }

    fn answer(&self, scenario: &str) -> Sipp {
        Sipp::new(scenario)
            .local_port(self.port)
            .service(self.user)
            .timeout(secs(40))
    }
}

/// Starts a SIPp process that waits for requests and returns once it has bound its port.
async fn listen(sipp: Sipp, gw: &Gateway) -> SippProcess {
    let mut p = sipp.spawn(gw.sip_port);
    let port = p.port();
    let until = Instant::now() + secs(5);
    while std::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
        assert!(p.running(), "SIPp exited at start: {}", p.kill().report());
        assert!(Instant::now() < until, "SIPp did not bind UDP {port}");
        tokio::time::sleep(ms(20)).await;
    }
    p
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
    let gw = Gateway::start().await;
    let alice = Phone::new(ALICE);
    alice.create_and_register(&gw).await;
    let carrier_port = free_port_on(Ipv4Addr::LOCALHOST.into());
    create_trunk(&gw, "carrier", carrier_port, json!({})).await;

    let phone = listen(
        alice
            .answer("call_uas.xml")
            .set("rtp", &free_udp_port().to_string())
            .duration(ms(200)),
        &gw,
    )
    .await;
    let carrier = listen(
        Sipp::new("carrier_uas_auth.xml")
            .local_port(carrier_port)
            .set("user", CARRIER_USER)
            .set("rtp", &free_udp_port().to_string())
            .duration(ms(300))
            .timeout(secs(40)),
        &gw,
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
}
