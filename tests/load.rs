//! Calls under load against the real binary and real SIPp 3.6.1 (issue 11): a short burst
//! at 100 calls/s completes and releases everything; with `sip.max_cps` the excess is
//! refused at once with 503 + Retry-After while established calls keep being served; a
//! refused INVITE's retransmission is absorbed by its server transaction.
//!
//! Agent pairs: a caller agent runs `call_load_uac.xml` (INVITE → 407 → INVITE with
//! credentials → 200 → ACK → BYE, or a 503 with Retry-After) from its own port; its callee
//! registered from another port (`register.xml`) where `call_load_uas.xml` answers at once.
//! No media: the SDPs name ports where nothing listens. Gateways run the default config
//! (MD5 challenges) on the harness's 200-port RTP range: a call holds two port pairs (4
//! ports), so talk times stay short enough that at most ~50 calls are up at once.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "common/sipp.rs"]
mod sipp;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use common::Gateway;
use serde_json::json;
use sipp::{free_port_on, free_udp_port, Sipp, SippProcess, SippRun};

const COMPLETED: &str = "@@COMPLETED@@";
const REFUSED: &str = "@@REFUSED@@";
const BYE_LATE: &str = "@@BYE-LATE@@";

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

async fn create_agent(gw: &Gateway, username: &str, password: &str) {
    // A callee takes several calls at once under load (the default is 1).
    gw.create_agent(
        json!({ "username": username, "password": password, "max_concurrent_calls": 100 }),
    )
    .await;
}

/// The sum of the samples of `name` whose label set contains `labels` (`""`: all), `None`
/// when there are none.
async fn metric(gw: &Gateway, name: &str, labels: &str) -> Option<f64> {
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
        if !(rest.starts_with(' ') || rest.starts_with('{')) || !rest.contains(labels) {
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

/// Poll `/metrics` until `name` is present and equals `want` (the gauges are refreshed by
/// the core's 1 s housekeeping tick).
async fn wait_metric(gw: &Gateway, name: &str, want: f64) {
    let until = Instant::now() + secs(10);
    loop {
        let got = metric(gw, name, "").await;
        if got == Some(want) {
            return;
        }
        assert!(
            Instant::now() < until,
            "metric {name} is {got:?} after 10 s, wanted {want} (None: not in /metrics)"
        );
        tokio::time::sleep(ms(100)).await;
    }
}

async fn wait_all_released(gw: &Gateway) {
    wait_metric(gw, "voxgate_calls_active", 0.0).await;
    wait_metric(gw, "voxgate_sip_dialogs", 0.0).await;
    wait_metric(gw, "voxgate_rtp_ports_allocated", 0.0).await;
}

/// A caller agent and its callee, each with its own loopback port.
struct Pair {
    caller: String,
    callee: String,
    caller_port: u16,
    callee_port: u16,
}

impl Pair {
    fn password(user: &str) -> String {
        format!("{user}-secret-1")
    }

    async fn create(gw: &Gateway, i: usize) -> Pair {
        let ip: IpAddr = Ipv4Addr::LOCALHOST.into();
        let pair = Pair {
            caller: format!("loadcaller{i}"),
            callee: format!("loadcallee{i}"),
            caller_port: free_port_on(ip),
            callee_port: free_port_on(ip),
        };
        create_agent(gw, &pair.caller, &Pair::password(&pair.caller)).await;
        create_agent(gw, &pair.callee, &Pair::password(&pair.callee)).await;
        // REGISTER from the port the phone then answers on.
        Sipp::new("register.xml")
            .local_port(pair.callee_port)
            .service(&pair.callee)
            .auth(&pair.callee, &Pair::password(&pair.callee))
            .set(
                "contact",
                &format!(
                    "<sip:{}@127.0.0.1:{};transport=udp>",
                    pair.callee, pair.callee_port
                ),
            )
            .set("hdr", "Expires: 3600")
            .run(gw.sip_port)
            .assert_success();
        pair
    }

    /// The callee's phone, answering up to `calls` calls; waits until SIPp has bound.
    async fn answer(&self, gw: &Gateway, calls: u32) -> SippProcess {
        let mut p = Sipp::new("call_load_uas.xml")
            .local_port(self.callee_port)
            .service(&self.callee)
            .set("rtp", &free_udp_port().to_string())
            .calls(calls)
            // SIPp refuses incoming calls beyond -l.
            .limit(10_000)
            .timeout(secs(60))
            .spawn(gw.sip_port);
        let until = Instant::now() + secs(5);
        while std::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, self.callee_port)).is_ok() {
            assert!(
                p.running(),
                "SIPp phone exited at start: {}",
                p.kill().report()
            );
            assert!(Instant::now() < until, "SIPp did not bind within 5 s");
            tokio::time::sleep(ms(20)).await;
        }
        p
    }

    /// The caller placing `calls` calls at `rate` a second, each talking `talk`.
    fn dial(&self, gw: &Gateway, rate: u32, calls: u32, talk: Duration) -> SippProcess {
        Sipp::new("call_load_uac.xml")
            .local_port(self.caller_port)
            .service(&self.callee)
            .auth(&self.caller, &Pair::password(&self.caller))
            .auth_uri(&format!("{}@127.0.0.1", self.callee))
            .set("caller", &self.caller)
            .set("rtp", &free_udp_port().to_string())
            .rate(rate)
            .calls(calls)
            .limit(10_000)
            .duration(talk)
            .timeout(secs(60))
            .spawn(gw.sip_port)
    }
}

/// The load tests of this file run one at a time (`cargo test` runs a file's tests on
/// parallel threads; nextest runs them alone, see `.config/nextest.toml`): two bursts at
/// once on a 2-core machine would measure each other.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn count(run: &SippRun, marker: &str) -> usize {
    run.log.matches(marker).count()
}

/// Runs `pairs` callers at `rate_per_pair` for `calls_per_pair` calls; returns their runs.
async fn burst(
    gw: &Gateway,
    pairs: &[Pair],
    rate_per_pair: u32,
    calls_per_pair: u32,
    talk: Duration,
) -> Vec<SippRun> {
    let callers: Vec<SippProcess> = pairs
        .iter()
        .map(|p| p.dial(gw, rate_per_pair, calls_per_pair, talk))
        .collect();
    let mut runs = Vec::new();
    for c in callers {
        runs.push(c.finish().await);
    }
    runs
}

#[tokio::test]
async fn hundred_calls_a_second_over_four_pairs_complete_and_release_everything() {
    const PAIRS: usize = 4;
    const RATE_PER_PAIR: u32 = 25; // 100 calls/s in all
    const CALLS_PER_PAIR: u32 = 125; // 5 s
    let _alone = ONE_AT_A_TIME.lock().await;
    let gw = Gateway::start().await;
    let mut pairs = Vec::new();
    for i in 0..PAIRS {
        pairs.push(Pair::create(&gw, i).await);
    }
    let mut phones = Vec::new();
    for p in &pairs {
        phones.push(p.answer(&gw, CALLS_PER_PAIR).await);
    }

    let runs = burst(&gw, &pairs, RATE_PER_PAIR, CALLS_PER_PAIR, ms(100)).await;
    for run in &runs {
        run.assert_success();
        assert_eq!(
            count(run, COMPLETED),
            CALLS_PER_PAIR as usize,
            "every call completes (none refused: {} 503s)\n{}",
            count(run, REFUSED),
            run.report()
        );
    }
    for phone in phones {
        phone.finish().await.assert_success();
    }
    wait_all_released(&gw).await;
    assert_eq!(
        metric(&gw, "voxgate_sip_overload_rejected_total", "").await,
        Some(0.0),
        "nothing refused at 100 calls/s"
    );
    let total = f64::from(CALLS_PER_PAIR) * PAIRS as f64;
    assert_eq!(
        metric(&gw, "voxgate_call_setup_seconds_count", "").await,
        Some(total),
        "one set-up latency observation per call"
    );
}

#[tokio::test]
async fn max_cps_refuses_the_excess_with_503_and_keeps_serving_established_calls() {
    const PAIRS: usize = 4;
    const RATE_PER_PAIR: u32 = 25; // 100 calls/s offered
    const CALLS_PER_PAIR: u32 = 75; // for 3 s
    const MAX_CPS: f64 = 20.0;
    let _alone = ONE_AT_A_TIME.lock().await;
    let gw = Gateway::start_with(&[("VOXGATE_SIP_MAX_CPS", "20")], None).await;
    let mut pairs = Vec::new();
    for i in 0..PAIRS {
        pairs.push(Pair::create(&gw, i).await);
    }
    let mut phones = Vec::new();
    for p in &pairs {
        phones.push(p.answer(&gw, 10_000).await);
    }

    // 300 ms of talk: the admitted calls hang up (BYE) while the burst still runs.
    let started = Instant::now();
    let runs = burst(&gw, &pairs, RATE_PER_PAIR, CALLS_PER_PAIR, ms(300)).await;
    let elapsed = started.elapsed().as_secs_f64();
    let (mut completed, mut refused, mut late) = (0, 0, 0);
    for run in &runs {
        // Every call either completed or got 503 with Retry-After (the scenario fails a
        // call on anything else, a 503 without Retry-After included).
        run.assert_success();
        completed += count(run, COMPLETED);
        refused += count(run, REFUSED);
        late += count(run, BYE_LATE);
    }
    let offered = CALLS_PER_PAIR as usize * PAIRS;
    eprintln!(
        "max_cps 20, {offered} calls offered in {elapsed:.1} s: {completed} completed, \
         {refused} refused (503), {late} BYEs answered late"
    );
    assert_eq!(completed + refused, offered, "every call accounted for");
    // The bucket holds one second (20) and refills 20 a second over the ~3 s of offers.
    let admitted_max = MAX_CPS * (1.0 + elapsed);
    assert!(
        completed >= 40 && (completed as f64) <= admitted_max,
        "{completed} calls completed of {offered} offered in {elapsed:.1} s at max_cps 20 \
         (at most {admitted_max:.0})"
    );
    assert_eq!(late, 0, "{late} BYEs were answered later than 450 ms");
    let by_cps = metric(
        &gw,
        "voxgate_sip_overload_rejected_total",
        "reason=\"max_cps\"",
    )
    .await
    .unwrap_or(0.0);
    let all = metric(&gw, "voxgate_sip_overload_rejected_total", "")
        .await
        .unwrap_or(0.0);
    assert!(by_cps > 0.0, "max_cps refusals counted");
    assert_eq!(
        all, refused as f64,
        "one refusal counted per refused call (retransmissions absorbed)"
    );
    drop(phones);
    wait_all_released(&gw).await;
}

/// A raw INVITE for `call_id` with `branch`, from `from`.
fn invite(gw: &Gateway, from: SocketAddr, call_id: &str, branch: &str) -> String {
    let sdp = "v=0\r\no=x 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
               m=audio 9 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";
    format!(
        "INVITE sip:nobody@127.0.0.1:{port} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {from};branch={branch};rport\r\n\
         From: <sip:someone@127.0.0.1>;tag=t-{call_id}\r\n\
         To: <sip:nobody@127.0.0.1>\r\n\
         Call-ID: {call_id}\r\n\
         CSeq: 1 INVITE\r\n\
         Contact: <sip:someone@{from}>\r\n\
         Max-Forwards: 70\r\n\
         Content-Type: application/sdp\r\n\
         Content-Length: {len}\r\n\r\n{sdp}",
        port = gw.sip_port,
        len = sdp.len()
    )
}

/// The final response (status line and headers) to the request with `call_id`.
async fn final_response(sock: &tokio::net::UdpSocket, call_id: &str) -> String {
    let mut buf = vec![0u8; 65_536];
    loop {
        let n = tokio::time::timeout(secs(5), sock.recv(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("no final response for {call_id} within 5 s"))
            .expect("recv");
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        if text.contains(&format!("Call-ID: {call_id}")) && !text.starts_with("SIP/2.0 1") {
            return text;
        }
    }
}

#[tokio::test]
async fn refused_invite_retransmission_is_absorbed_by_its_transaction() {
    let gw = Gateway::start_with(&[("VOXGATE_SIP_MAX_CPS", "1")], None).await;
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let me = sock.local_addr().unwrap();
    let to = ("127.0.0.1", gw.sip_port);

    // The bucket's one token: the first call is challenged (407), not refused.
    sock.send_to(invite(&gw, me, "first", "z9hG4bK-first").as_bytes(), to)
        .await
        .unwrap();
    let first = final_response(&sock, "first").await;
    assert!(first.starts_with("SIP/2.0 407"), "{first}");

    // The second call in the same second: 503 with Retry-After: 1.
    let second = invite(&gw, me, "second", "z9hG4bK-second");
    sock.send_to(second.as_bytes(), to).await.unwrap();
    let refused = final_response(&sock, "second").await;
    assert!(refused.starts_with("SIP/2.0 503"), "{refused}");
    assert!(refused.contains("\r\nRetry-After: 1\r\n"), "{refused}");

    // Its retransmission (same branch) gets the same 503 back from the server transaction
    // (RFC 3261 §17.2.1), and is not counted or decided again.
    sock.send_to(second.as_bytes(), to).await.unwrap();
    let again = final_response(&sock, "second").await;
    assert!(again.starts_with("SIP/2.0 503"), "{again}");
    let tag = |r: &str| {
        r.lines()
            .find(|l| l.starts_with("To:"))
            .map(str::to_owned)
            .unwrap_or_default()
    };
    assert_eq!(tag(&again), tag(&refused), "the same response, resent");
    assert_eq!(
        metric(
            &gw,
            "voxgate_sip_overload_rejected_total",
            "reason=\"max_cps\""
        )
        .await,
        Some(1.0)
    );
}
