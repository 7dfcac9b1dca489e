//! Signed, durable webhooks (SPEC §5) through the real binary: a receiver in this process
//! (axum on loopback) checks the `Voxgate-Signature` of every request it gets with its own
//! HMAC-SHA256, answers 500 when told to, and can go down (no listener) and come back on
//! the same port. Calls are real SIPp agent-to-agent calls (tests/sipp).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "common/receiver.rs"]
mod receiver;
#[path = "common/sipp.rs"]
mod sipp;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::Gateway;
use receiver::{verify, Got, Receiver};
use serde_json::{json, Value};
use sipp::{free_udp_port, listen, Phone, Sipp};
use voxgate::calls::record::{CallDirection, CallStatus, NewCall};

const ALICE: (&str, &str) = ("alice", "alicepass1");
const BOB: (&str, &str) = ("bob", "bobpass123");
/// `webhooks.secret` of the gateways here: signs status_callback deliveries.
const CALLBACK_SECRET: &str = "whsec_callback_secret_for_tests";
const CALL_EVENTS: [&str; 4] = [
    "call.initiated",
    "call.ringing",
    "call.answered",
    "call.completed",
];

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

// -------------------------------------------------------------------------------------
// Gateway and phones

async fn send(gw: &Gateway, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let c = gw.client();
    let url = gw.url(path);
    let req = match method {
        "GET" => c.get(url),
        "POST" => c.post(url),
        "PATCH" => c.patch(url),
        "DELETE" => c.delete(url),
        _ => unreachable!(),
    };
    let req = match body {
        Some(b) => req.json(&b),
        None => req,
    };
    let r = req
        .send()
        .await
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    let status = r.status().as_u16();
    let text = r.text().await.unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

async fn create_webhook(gw: &Gateway, url: &str, events: &[&str]) -> Value {
    let (s, v) = send(
        gw,
        "POST",
        "/v1/webhooks",
        Some(json!({"url": url, "events": events})),
    )
    .await;
    assert_eq!(s, 201, "{v:#}");
    v
}

async fn create_agent(gw: &Gateway, (username, password): (&str, &str)) {
    let (s, v) = send(
        gw,
        "POST",
        "/v1/agents",
        Some(json!({"username": username, "password": password})),
    )
    .await;
    assert_eq!(s, 201, "{v:#}");
}

/// `n` calls from `caller` to `callee`, one after the other, each answered and hung up by
/// the caller after 100 ms.
async fn calls(gw: &Gateway, caller: &Phone, callee: &Phone, n: u32) {
    let answering = listen(
        Sipp::new("call_uas.xml")
            .local_port(callee.port)
            .service(callee.user)
            .set("rtp", &free_udp_port().to_string())
            .duration(ms(0))
            .calls(n)
            .timeout(secs(60)),
        gw.sip_port,
    )
    .await;
    Sipp::new("call_uac.xml")
        .local_port(caller.port)
        .service(callee.user)
        .auth(caller.user, caller.password)
        .auth_uri(&format!("{}@127.0.0.1", callee.user))
        .set("caller", caller.user)
        .set("rtp", &free_udp_port().to_string())
        .duration(ms(100))
        .calls(n)
        .limit(1)
        .rate(10)
        .timeout(secs(60))
        .spawn(gw.sip_port)
        .finish()
        .await
        .assert_success();
    answering.finish().await.assert_success();
}

/// Ids of the calls with this status, from the API.
async fn call_ids(gw: &Gateway, status: &str) -> Vec<String> {
    let (s, v) = send(
        gw,
        "GET",
        &format!("/v1/calls?limit=200&status={status}"),
        None,
    )
    .await;
    assert_eq!(s, 200, "{v:#}");
    v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_owned())
        .collect()
}

/// Ids of the calls with this status once there are `n` (records trail the SIP messages:
/// the recorder writes behind the engine).
async fn wait_call_ids(gw: &Gateway, status: &str, n: usize) -> Vec<String> {
    let until = Instant::now() + secs(10);
    loop {
        let ids = call_ids(gw, status).await;
        if ids.len() >= n {
            assert_eq!(ids.len(), n, "{ids:?}");
            return ids;
        }
        assert!(
            Instant::now() < until,
            "{} {status} calls, wanted {n}",
            ids.len()
        );
        tokio::time::sleep(ms(50)).await;
    }
}

/// The event types the receiver accepted (2xx) for `call` on `path`, in arrival order.
fn accepted(got: &[Got], path: &str, call: &str) -> Vec<String> {
    got.iter()
        .filter(|g| g.path == path && g.answered < 300 && g.body["data"]["id"] == call)
        .map(|g| g.body["type"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// Every event of `call` arrived, in order: the accepted deliveries, duplicates
/// (at-least-once) included, never go back to an earlier event type.
#[track_caller]
fn assert_in_order(got: &[Got], path: &str, call: &str) {
    let types = accepted(got, path, call);
    let idx: Vec<usize> = types
        .iter()
        .map(|t| {
            CALL_EVENTS
                .iter()
                .position(|c| c == t)
                .unwrap_or_else(|| panic!("unexpected event {t} for {call}"))
        })
        .collect();
    assert!(
        idx.windows(2).all(|w| w[0] <= w[1]),
        "call {call}: events out of order: {types:?}"
    );
    let mut distinct = idx.clone();
    distinct.dedup();
    assert_eq!(distinct, [0, 1, 2, 3], "call {call}: {types:?}");
}

fn all_arrived(got: &[Got], path: &str, calls: &[String]) -> bool {
    calls
        .iter()
        .all(|c| accepted(got, path, c).iter().any(|t| t == "call.completed"))
}

// -------------------------------------------------------------------------------------
// Tests

/// SIPp calls produce call.initiated/ringing/answered/completed for a `call.*` webhook;
/// the first three deliveries are answered 500 and retried; then the receiver goes down,
/// more calls are made, voxgate is killed with -9 and restarted, the receiver comes
/// back: every event arrives, in order per call, every request signed. A call created
/// through `Store::create_call` with a status_callback gets its events at that URL,
/// signed with `webhooks.secret`, including the `call.completed` of its closing at the
/// restart.
async fn calls_events_survive_failures_and_a_crash(pg: bool) {
    let mut rx = Receiver::start().await;
    rx.fail_next(3);
    let env = [
        ("VOXGATE_WEBHOOKS_RETRY_BASE_MS", "50"),
        ("VOXGATE_WEBHOOKS_TIMEOUT_SECONDS", "2"),
        ("VOXGATE_WEBHOOKS_SECRET", CALLBACK_SECRET),
    ];
    let mut gw = if pg {
        Gateway::start_pg_with(&env).await
    } else {
        Gateway::start_with(&env, None).await
    };
    let hook = create_webhook(&gw, &rx.url("/hook"), &["call.*"]).await;
    let hook_id = hook["id"].as_str().unwrap().to_owned();
    rx.secret("/hook", hook["secret"].as_str().unwrap());
    rx.secret("/cb", CALLBACK_SECRET);

    create_agent(&gw, ALICE).await;
    create_agent(&gw, BOB).await;
    let (alice, bob) = (Phone::new(ALICE), Phone::new(BOB));
    alice.register(gw.sip_port);
    bob.register(gw.sip_port);

    calls(&gw, &alice, &bob, 3).await;
    let first = wait_call_ids(&gw, "completed", 3).await;
    rx.wait("the first three calls' events", secs(30), |g| {
        all_arrived(g, "/hook", &first)
    })
    .await;

    // A click-to-call style call inserted through the store (as POST /v1/calls does),
    // by another process on the same database: its status_callback gets call.initiated.
    let store = voxgate::store::Store::connect(&gw.database_url(), 2)
        .await
        .unwrap();
    let queued = NewCall {
        id: voxgate::ids::new_id(voxgate::ids::IdKind::Call),
        direction: CallDirection::Outbound,
        from: "sip:alice@voxgate".into(),
        to: "tel:+15550100".into(),
        agent_id: None,
        status: CallStatus::Queued,
        started_at: voxgate::store::now(),
        status_callback: Some(rx.url("/cb")),
        metadata: Some(json!({"lead": "L-42"})),
    };
    store.create_call(&queued).await.unwrap();
    store.close().await;
    let (s, api_call) = send(&gw, "GET", &format!("/v1/calls/{}", queued.id), None).await;
    assert_eq!(s, 200);
    assert_eq!(api_call["status_callback"], rx.url("/cb").as_str());
    assert_eq!(api_call["metadata"]["lead"], "L-42");
    rx.wait("the status_callback's call.initiated", secs(10), |g| {
        g.iter()
            .any(|g| g.path == "/cb" && g.answered < 300 && g.body["type"] == "call.initiated")
    })
    .await;

    // The receiver goes down; two more calls; their deliveries fail to connect.
    rx.down().await;
    let down_at = chrono::Utc::now();
    calls(&gw, &alice, &bob, 2).await;
    // Their records (and so their events) are committed before the crash.
    let all = wait_call_ids(&gw, "completed", 5).await;
    let until = Instant::now() + secs(20);
    loop {
        let (_, d) = send(
            &gw,
            "GET",
            &format!("/v1/webhooks/{hook_id}/deliveries?limit=200"),
            None,
        )
        .await;
        let refused = d["data"].as_array().unwrap().iter().any(|a| {
            a["status_code"].is_null()
                && a["error"].is_string()
                && a["at"]
                    .as_str()
                    .is_some_and(|t| t > down_at.to_rfc3339().as_str())
        });
        if refused {
            break;
        }
        assert!(
            Instant::now() < until,
            "no failed attempt while the receiver is down: {d:#}"
        );
        tokio::time::sleep(ms(100)).await;
    }

    // Crash, restart, and the receiver comes back.
    gw.kill9();
    gw.restart().await;
    rx.up().await;

    assert_eq!(wait_call_ids(&gw, "completed", 5).await, all);
    let got = rx
        .wait("every call's events after the restart", secs(60), |g| {
            all_arrived(g, "/hook", &all)
                && g.iter().any(|g| {
                    g.path == "/cb" && g.answered < 300 && g.body["type"] == "call.completed"
                })
        })
        .await;

    for call in &all {
        assert_in_order(&got, "/hook", call);
    }
    for g in &got {
        assert!(
            g.signature_ok,
            "bad signature {:?} on {:#}",
            g.signature, g.body
        );
        assert_eq!(
            g.body["id"].as_str(),
            Some(g.event_id.as_str()),
            "Voxgate-Event-Id"
        );
        assert!(g.event_id.starts_with("evt_"));
    }
    // The first three deliveries were refused and retried.
    assert_eq!(got.iter().filter(|g| g.answered == 500).count(), 3);
    let done = got
        .iter()
        .find(|g| g.path == "/hook" && g.body["type"] == "call.completed")
        .unwrap();
    let data = &done.body["data"];
    assert_eq!(data["status"], "completed", "{data:#}");
    assert!(data["duration_seconds"].is_i64(), "{data:#}");
    assert!(data["answered_at"].is_string(), "{data:#}");
    assert_eq!(data["hangup_by"], "caller", "{data:#}");
    assert!(data["hangup_cause"].is_string(), "{data:#}");
    assert_eq!(data["direction"], "internal");
    assert!(data["from"].as_str().unwrap().contains("alice"), "{data:#}");

    // The status_callback: initiated then completed (closed by the restart), nothing
    // else, all signed with webhooks.secret (checked above).
    let cb: Vec<&Got> = got
        .iter()
        .filter(|g| g.path == "/cb" && g.answered < 300)
        .collect();
    let mut types: Vec<&str> = cb
        .iter()
        .map(|g| g.body["type"].as_str().unwrap())
        .collect();
    types.dedup();
    assert_eq!(types, ["call.initiated", "call.completed"], "{cb:#?}");
    let last = &cb.last().unwrap().body["data"];
    assert_eq!(last["id"], queued.id.as_str());
    assert_eq!(last["hangup_cause"], "gateway-restart");
    assert_eq!(last["metadata"]["lead"], "L-42");
    // The webhook subscribes to call.*, so it got that call's events too.
    let q: Vec<String> = accepted(&got, "/hook", &queued.id);
    assert_eq!(
        q.first().map(String::as_str),
        Some("call.initiated"),
        "{q:?}"
    );
    assert_eq!(
        q.last().map(String::as_str),
        Some("call.completed"),
        "{q:?}"
    );

    // The delivery log shows the 500s.
    let (_, d) = send(
        &gw,
        "GET",
        &format!("/v1/webhooks/{hook_id}/deliveries?limit=200"),
        None,
    )
    .await;
    let log = d["data"].as_array().unwrap();
    assert!(
        log.iter().filter(|a| a["status_code"] == 500).count() >= 3,
        "{d:#}"
    );
    assert!(log
        .iter()
        .any(|a| a["status_code"] == 204 && a["error"].is_null()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_events_survive_failures_and_a_crash_sqlite() {
    calls_events_survive_failures_and_a_crash(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_events_survive_failures_and_a_crash_postgres() {
    calls_events_survive_failures_and_a_crash(true).await;
}

/// `POST /v1/webhooks/{id}/test` sends a signed `webhook.test` through the outbox, logged
/// in the webhook's deliveries; `agent.state_changed` follows `POST /v1/agents/{id}/status`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_event_and_agent_state_changed() {
    let rx = Receiver::start().await;
    let gw = Gateway::start().await;
    let secret = "whsec_chosen_by_the_operator_01";
    let (s, hook) = send(
        &gw,
        "POST",
        "/v1/webhooks",
        Some(
            json!({"url": rx.url("/h"), "events": ["agent.*"], "secret": secret,
                    "description": "CRM"}),
        ),
    )
    .await;
    assert_eq!(s, 201, "{hook:#}");
    assert_eq!(hook["secret"], secret);
    rx.secret("/h", secret);
    let id = hook["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("whk_"));

    let (s, queued) = send(&gw, "POST", &format!("/v1/webhooks/{id}/test"), None).await;
    assert_eq!(s, 202, "{queued:#}");
    let event_id = queued["event_id"].as_str().unwrap().to_owned();
    let got = rx
        .wait("the test event", secs(10), |g| {
            g.iter().any(|g| g.event_id == event_id)
        })
        .await;
    let t = got.iter().find(|g| g.event_id == event_id).unwrap();
    assert!(t.signature_ok, "{t:?}");
    assert_eq!(t.body["type"], "webhook.test");
    assert_eq!(t.body["id"], event_id.as_str());
    assert_eq!(t.body["data"]["webhook"], id.as_str());
    assert!(t.body["created_at"].is_string());

    create_agent(&gw, ALICE).await;
    let (s, _) = send(
        &gw,
        "POST",
        "/v1/agents/alice/status",
        Some(json!({"status": "away"})),
    )
    .await;
    assert_eq!(s, 200);
    let got = rx
        .wait("agent.state_changed", secs(10), |g| {
            g.iter().any(|g| g.body["type"] == "agent.state_changed")
        })
        .await;
    let a = got
        .iter()
        .find(|g| g.body["type"] == "agent.state_changed")
        .unwrap();
    assert!(a.signature_ok);
    assert_eq!(a.body["data"]["username"], "alice");
    assert_eq!(a.body["data"]["state"], "away");
    assert_eq!(a.body["data"]["previous_state"], "available");

    // The log: one successful attempt per event, newest first.
    let until = Instant::now() + secs(5);
    loop {
        let (s, d) = send(&gw, "GET", &format!("/v1/webhooks/{id}/deliveries"), None).await;
        assert_eq!(s, 200);
        let log = d["data"].as_array().unwrap().clone();
        if log.len() == 2 {
            assert_eq!(log[0]["event_type"], "agent.state_changed");
            assert_eq!(log[1]["event_id"], event_id.as_str());
            assert!(log
                .iter()
                .all(|a| a["status_code"] == 204 && a["attempt"] == 1));
            assert!(log.iter().all(|a| a["url"] == rx.url("/h").as_str()));
            break;
        }
        assert!(Instant::now() < until, "{d:#}");
        tokio::time::sleep(ms(50)).await;
    }
    // Signing with another secret would not have verified.
    assert!(!verify(
        "whsec_wrong_secret_0000000",
        &t.signature,
        &serde_json::to_vec(&t.body).unwrap()
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_api_validates_and_manages() {
    let gw = Gateway::start().await;
    let field = |v: &Value| {
        v["errors"][0]["field"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    for (body, want) in [
        (
            json!({"url": "ftp://x.example/", "events": ["call.*"]}),
            "url",
        ),
        (json!({"url": "not a url", "events": ["call.*"]}), "url"),
        (json!({"events": ["call.*"]}), "url"),
        (json!({"url": "https://x.example/", "events": []}), "events"),
        (json!({"url": "https://x.example/"}), "events"),
        (
            json!({"url": "https://x.example/", "events": ["calls.*"]}),
            "events[0]",
        ),
        (
            json!({"url": "https://x.example/", "events": ["*", "call.exploded"]}),
            "events[1]",
        ),
        (
            json!({"url": "https://x.example/", "events": ["webhook.test"]}),
            "events[0]",
        ),
        (
            json!({"url": "https://x.example/", "events": ["*"], "secret": "short"}),
            "secret",
        ),
        (
            json!({"url": "https://x.example/", "events": ["*"], "colour": "red"}),
            "colour",
        ),
    ] {
        let (s, v) = send(&gw, "POST", "/v1/webhooks", Some(body.clone())).await;
        assert_eq!(s, 422, "{body} -> {v:#}");
        assert_eq!(field(&v), want, "{body} -> {v:#}");
        assert_eq!(v["status"], 422);
    }
    let (s, list) = send(&gw, "GET", "/v1/webhooks", None).await;
    assert_eq!(s, 200);
    assert_eq!(list["data"], json!([]), "nothing half-written");

    let a = create_webhook(&gw, "https://a.example/h", &["call.*", "call.*"]).await;
    assert_eq!(a["events"], json!(["call.*"]));
    let secret = a["secret"].as_str().unwrap();
    assert!(secret.starts_with("whsec_") && secret.len() > 32, "{a:#}");
    let id = a["id"].as_str().unwrap().to_owned();
    let b = create_webhook(&gw, "http://b.example/h", &["*"]).await;
    assert_ne!(b["secret"], a["secret"]);

    let (s, got) = send(&gw, "GET", &format!("/v1/webhooks/{id}"), None).await;
    assert_eq!(s, 200);
    assert!(
        got.get("secret").is_none(),
        "the secret is shown once: {got:#}"
    );
    assert_eq!(got["url"], "https://a.example/h");
    let (_, page) = send(&gw, "GET", "/v1/webhooks?limit=1", None).await;
    assert_eq!(page["data"][0]["id"], id.as_str());
    assert!(page["data"][0].get("secret").is_none());
    let next = page["next"].as_str().unwrap().to_owned();
    let (_, page) = send(
        &gw,
        "GET",
        &format!("/v1/webhooks?limit=1&after={next}"),
        None,
    )
    .await;
    assert_eq!(page["data"][0]["id"], b["id"]);
    assert!(page["next"].is_null());

    let (s, v) = send(
        &gw,
        "PATCH",
        &format!("/v1/webhooks/{id}"),
        Some(json!({"secret": "x".repeat(20)})),
    )
    .await;
    assert_eq!((s, field(&v)), (422, "secret".to_owned()), "{v:#}");
    let (s, v) = send(
        &gw,
        "PATCH",
        &format!("/v1/webhooks/{id}"),
        Some(json!({"events": ["nope"]})),
    )
    .await;
    assert_eq!((s, field(&v)), (422, "events[0]".to_owned()), "{v:#}");
    let (s, v) = send(
        &gw,
        "PATCH",
        &format!("/v1/webhooks/{id}"),
        Some(json!({"url": "gopher://x"})),
    )
    .await;
    assert_eq!((s, field(&v)), (422, "url".to_owned()), "{v:#}");
    let (s, v) = send(
        &gw,
        "PATCH",
        &format!("/v1/webhooks/{id}"),
        Some(json!({"events": ["agent.state_changed", "call.completed"], "description": "crm"})),
    )
    .await;
    assert_eq!(s, 200, "{v:#}");
    assert_eq!(
        v["events"],
        json!(["agent.state_changed", "call.completed"])
    );
    assert_eq!(v["description"], "crm");
    assert_eq!(v["url"], "https://a.example/h");

    for (method, path) in [
        ("GET", "/v1/webhooks/whk_nope"),
        ("PATCH", "/v1/webhooks/whk_nope"),
        ("DELETE", "/v1/webhooks/whk_nope"),
        ("GET", "/v1/webhooks/whk_nope/deliveries"),
        ("POST", "/v1/webhooks/whk_nope/test"),
    ] {
        let body = (method == "PATCH").then(|| json!({}));
        let (s, v) = send(&gw, method, path, body).await;
        assert_eq!(s, 404, "{method} {path}: {v:#}");
        assert_eq!(v["status"], 404);
    }
    let (s, v) = send(
        &gw,
        "GET",
        &format!("/v1/webhooks/{id}/deliveries?limit=0"),
        None,
    )
    .await;
    assert_eq!((s, field(&v)), (422, "limit".to_owned()), "{v:#}");
    let (s, v) = send(&gw, "GET", &format!("/v1/webhooks/{id}/deliveries"), None).await;
    assert_eq!(s, 200);
    assert_eq!(v, json!({"data": [], "next": null}));
    let test = format!("/v1/webhooks/{id}/test");
    let (s, v) = send(&gw, "POST", &test, Some(json!({"x": 1}))).await;
    assert_eq!((s, field(&v)), (422, "x".to_owned()), "{v:#}");
    let (s, v) = send(&gw, "POST", &test, Some(json!({}))).await;
    assert_eq!(s, 202, "{v:#}");
    assert!(v["event_id"].as_str().unwrap().starts_with("evt_"));

    let (s, _) = send(&gw, "DELETE", &format!("/v1/webhooks/{id}"), None).await;
    assert_eq!(s, 204);
    let (s, _) = send(&gw, "GET", &format!("/v1/webhooks/{id}"), None).await;
    assert_eq!(s, 404);

    let r = gw
        .anon_client()
        .get(gw.url("/v1/webhooks"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    let (s, doc) = send(&gw, "GET", "/openapi.json", None).await;
    assert_eq!(s, 200);
    for path in [
        "/v1/webhooks",
        "/v1/webhooks/{id}",
        "/v1/webhooks/{id}/deliveries",
        "/v1/webhooks/{id}/test",
    ] {
        assert!(
            doc["paths"].get(path).is_some(),
            "{path} not in /openapi.json"
        );
    }
    assert!(doc["components"]["schemas"].get("WebhookCreated").is_some());
}

/// Two gateways on one PostgreSQL database, each with its delivery worker: 120 events
/// queued through both APIs reach a slow receiver exactly once each (the workers lease
/// with `FOR UPDATE SKIP LOCKED`; nothing fails, so nothing may be sent twice).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_on_one_postgres_deliver_each_event_once() {
    let rx = Receiver::start().await;
    rx.state.slow.store(20, Ordering::SeqCst);
    let a = Gateway::start_pg().await;
    let b = Gateway::start_with(&[("VOXGATE_DATABASE_URL", &a.database_url())], None).await;
    let hook = create_webhook(&a, &rx.url("/h"), &["agent.*"]).await;
    rx.secret("/h", hook["secret"].as_str().unwrap());
    let id = hook["id"].as_str().unwrap().to_owned();
    let mut queued = Vec::new();
    for i in 0..120 {
        let gw = if i % 2 == 0 { &a } else { &b };
        let (s, v) = send(gw, "POST", &format!("/v1/webhooks/{id}/test"), None).await;
        assert_eq!(s, 202, "{v:#}");
        queued.push(v["event_id"].as_str().unwrap().to_owned());
    }
    let got = rx
        .wait("all 120 test events", secs(60), |g| {
            queued.iter().all(|e| g.iter().any(|g| &g.event_id == e))
        })
        .await;
    // Settle: a duplicate would come within a lease period at most; none may come.
    tokio::time::sleep(secs(2)).await;
    let got_now = rx.got();
    assert!(got_now.len() >= got.len());
    let mut ids: Vec<&str> = got_now.iter().map(|g| g.event_id.as_str()).collect();
    ids.sort_unstable();
    let n = ids.len();
    ids.dedup();
    assert_eq!(n, ids.len(), "an event was delivered twice");
    assert_eq!(n, 120);
    assert!(got_now.iter().all(|g| g.signature_ok));
    // Both workers took part (each logs its deliveries at debug level).
    for (name, gw) in [("a", &a), ("b", &b)] {
        let n = gw.log().matches("webhook delivered").count();
        assert!(n > 0, "gateway {name} delivered nothing");
    }
}
