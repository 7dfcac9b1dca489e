//! Call records survive a database outage (issue 11): the gateway runs on a PostgreSQL
//! server of the test's own (`tests/common/pgserver.rs`), agent-to-agent SIPp calls run
//! one after another, the server is stopped (`pg_ctl stop -m fast`) while calls are up,
//! stays down 10 s while more calls start and finish, and comes back. Afterwards every
//! finished call's record is in `/v1/calls` with its final status: none was dropped.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "common/pgserver.rs"]
mod pgserver;
#[path = "common/sipp.rs"]
mod sipp;

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use common::Gateway;
use pgserver::PgServer;
use serde_json::{json, Value};
use sipp::{free_port_on, free_udp_port, Sipp, SippProcess};

const ALICE: (&str, &str) = ("alice", "alicepass1");
const BOB: (&str, &str) = ("bob", "bobpass123");
/// Logged by the call scenarios when the call is up.
const ANSWERED: &str = "@@ANSWERED@@";

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

async fn create_agent(gw: &Gateway, (username, password): (&str, &str)) {
    gw.create_agent(json!({ "username": username, "password": password }))
        .await;
}

/// Every call, following `next`; `None` while the API cannot answer (database down).
async fn list_calls(gw: &Gateway) -> Option<Vec<Value>> {
    let mut out = Vec::new();
    let mut after: Option<String> = None;
    for _ in 0..50 {
        let mut path = "/v1/calls?limit=200".to_owned();
        if let Some(a) = &after {
            path.push_str(&format!("&after={a}"));
        }
        let r = gw.client().get(gw.url(&path)).send().await.ok()?;
        if !r.status().is_success() {
            return None;
        }
        let page: Value = r.json().await.ok()?;
        out.extend(page["data"].as_array()?.iter().cloned());
        match page["next"].as_str() {
            Some(n) if !n.is_empty() => after = Some(n.to_owned()),
            _ => return Some(out),
        }
    }
    panic!("GET /v1/calls: more than 50 pages");
}

/// The value of a metric (summed over its labels) in `/metrics` (public: a key check
/// needs the database, which is what is down).
async fn metric(gw: &Gateway, name: &str) -> Option<f64> {
    let text = gw
        .anon_client()
        .get(gw.url("/metrics"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    let mut found = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        if !(rest.starts_with(' ') || rest.starts_with('{')) {
            continue;
        }
        if let Some(v) = rest.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) {
            *found.get_or_insert(0.0) += v;
        }
    }
    found
}

/// An agent's SIP phone: a loopback port where its SIPp runs.
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

    fn register(&self, gw: &Gateway) {
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
}

/// Start an answering scenario and wait until SIPp has bound its port.
async fn start_phone(sipp: Sipp, gw: &Gateway) -> SippProcess {
    let mut p = sipp.spawn(gw.sip_port);
    let port = p.port();
    let until = Instant::now() + secs(5);
    while std::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
        assert!(
            p.running(),
            "SIPp phone exited at start: {}",
            p.kill().report()
        );
        assert!(
            Instant::now() < until,
            "SIPp did not bind UDP {port} within 5 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    p
}

#[tokio::test]
async fn every_finished_call_is_recorded_across_a_database_outage() {
    /// One call at a time (an agent takes one call by default; a second gets 486), 0.4 s
    /// of talk each: ~25 s of calls, of which the 10 s outage sees about 20 start and
    /// finish.
    const CALLS: u32 = 50;
    const OUTAGE: Duration = Duration::from_secs(10);

    let mut pg = PgServer::start();
    let gw = Gateway::start_with(
        &[
            ("VOXGATE_DATABASE_URL", &pg.url()),
            // The API key is checked against the database: metrics must not need it here.
            ("VOXGATE_API_METRICS_PUBLIC", "true"),
        ],
        None,
    )
    .await;
    create_agent(&gw, ALICE).await;
    create_agent(&gw, BOB).await;
    let (alice, bob) = (Phone::new(ALICE), Phone::new(BOB));
    alice.register(&gw);
    bob.register(&gw);

    let callee = start_phone(
        Sipp::new("call_uas.xml")
            .local_port(bob.port)
            .service(bob.user)
            .set("rtp", &free_udp_port().to_string())
            .duration(Duration::ZERO)
            .calls(CALLS)
            .timeout(secs(120)),
        &gw,
    )
    .await;
    let mut caller = Sipp::new("call_uac.xml")
        .local_port(alice.port)
        .service(bob.user)
        .auth(alice.user, alice.password)
        .auth_uri(&format!("{}@127.0.0.1", bob.user))
        .set("caller", alice.user)
        .set("rtp", &free_udp_port().to_string())
        .duration(Duration::from_millis(400))
        .calls(CALLS)
        .limit(1)
        .rate(5)
        .timeout(secs(120))
        .spawn(gw.sip_port);

    // A few calls done and some up: pull the database from under them.
    caller.wait_for_log_n(ANSWERED, 6, secs(20)).await;
    let answered_before = caller.log().matches(ANSWERED).count();
    pg.stop();
    let down_at = Instant::now();

    // While it is down the backlog shows, and calls keep starting and finishing.
    let mut backlog_seen = 0.0_f64;
    let mut db_down_seen = false;
    while down_at.elapsed() < OUTAGE {
        if let Some(b) = metric(&gw, "voxgate_call_record_backlog").await {
            backlog_seen = backlog_seen.max(b);
        }
        db_down_seen |= metric(&gw, "voxgate_call_record_db_down").await == Some(1.0);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let answered_during = caller.log().matches(ANSWERED).count() - answered_before;
    pg.start_again();

    let caller_run = caller.finish().await;
    caller_run.assert_success();
    callee.finish().await.assert_success();
    assert!(
        answered_during >= 5,
        "only {answered_during} calls were answered during the {OUTAGE:?} outage; the test \
         wants several calls to finish while the database is down"
    );
    assert!(
        backlog_seen > 0.0,
        "voxgate_call_record_backlog never rose above 0 during the outage"
    );
    assert!(
        db_down_seen,
        "voxgate_call_record_db_down never showed 1 during the outage"
    );

    // Records land once the recorder's next retry (at most 5 s apart) gets through.
    let until = Instant::now() + secs(60);
    let calls = loop {
        let calls = list_calls(&gw).await.unwrap_or_default();
        let finished = calls
            .iter()
            .filter(|c| c["status"].as_str() == Some("completed"))
            .count();
        if finished >= CALLS as usize {
            break calls;
        }
        if Instant::now() > until {
            gw.dump_logs();
            panic!(
                "{finished} of {CALLS} finished calls recorded as completed 60 s after the \
                 database came back; calls: {}",
                serde_json::to_string_pretty(&calls).unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(
        calls.len(),
        CALLS as usize,
        "exactly {CALLS} calls recorded: {calls:#?}"
    );
    for c in &calls {
        assert_eq!(c["status"], "completed", "{c:#}");
        assert!(c["answered_at"].is_string(), "answered_at: {c:#}");
        assert!(c["ended_at"].is_string(), "ended_at: {c:#}");
        assert_eq!(c["hangup_by"], "caller", "{c:#}");
        let legs = c["legs"].as_array().expect("legs array");
        assert_eq!(legs.len(), 2, "two legs: {c:#}");
        for leg in legs {
            assert_eq!(leg["status"], "completed", "leg: {c:#}");
        }
    }
    assert_eq!(
        metric(&gw, "voxgate_call_record_dropped_total")
            .await
            .unwrap_or(0.0),
        0.0,
        "no call record change may be dropped"
    );
    let until = Instant::now() + secs(10);
    while metric(&gw, "voxgate_call_record_backlog").await != Some(0.0)
        || metric(&gw, "voxgate_call_record_db_down").await != Some(0.0)
    {
        assert!(
            Instant::now() < until,
            "voxgate_call_record_backlog / _db_down not back to 0"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
