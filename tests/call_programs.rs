//! Call programs' control plane through the real binary: prompts, IVR flows and queues
//! (SPEC §4, §6; docs/call-programs.md, docs/queues.md), numbers routed to them, and the
//! checks that name what is missing (422) or what still uses a row (409).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "common/sipp.rs"]
mod sipp;

use reqwest::{Response, StatusCode};
use serde_json::{json, Value};
use voxgate::store::{NewPrompt, Store};

use common::Gateway;
use sipp::{free_udp_port, listen, Phone};

async fn body(resp: Response) -> (StatusCode, Value) {
    let status = resp.status();
    let text = resp.text().await.unwrap();
    let v = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
    };
    (status, v)
}

async fn ok(resp: Response, status: StatusCode) -> Value {
    let (s, v) = body(resp).await;
    assert_eq!(s, status, "{v}");
    v
}

/// A problem with this status, as RFC 9457 JSON.
async fn problem(resp: Response, status: StatusCode) -> Value {
    let ct = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let (got, v) = body(resp).await;
    assert_eq!(got, status, "{v}");
    assert_eq!(ct, "application/problem+json", "{v}");
    v
}

/// A 422's errors as `(field, message)`, and its detail.
async fn invalid(resp: Response) -> (Vec<(String, String)>, String) {
    let v = problem(resp, StatusCode::UNPROCESSABLE_ENTITY).await;
    let errors = v["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("422 without errors: {v}"))
        .iter()
        .map(|e| {
            (
                e["field"].as_str().unwrap().to_owned(),
                e["message"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    (errors, v["detail"].as_str().unwrap_or_default().to_owned())
}

async fn send(gw: &Gateway, method: reqwest::Method, path: &str, v: Option<Value>) -> Response {
    let mut req = gw.client().request(method, gw.url(path));
    if let Some(v) = v {
        req = req.json(&v);
    }
    req.send().await.unwrap()
}

async fn post(gw: &Gateway, path: &str, v: Value) -> Response {
    send(gw, reqwest::Method::POST, path, Some(v)).await
}

async fn get(gw: &Gateway, path: &str) -> Response {
    send(gw, reqwest::Method::GET, path, None).await
}

async fn delete(gw: &Gateway, path: &str) -> Response {
    send(gw, reqwest::Method::DELETE, path, None).await
}

/// Prompt rows written through the library (the upload itself is tested in
/// tests/prompts.rs; these tests need rows, not audio).
async fn add_prompts(gw: &Gateway, names: &[&str]) -> Vec<String> {
    let store = Store::connect(&gw.database_url(), 1).await.unwrap();
    let mut ids = Vec::new();
    for name in names {
        let p = store
            .create_prompt(&NewPrompt {
                name: (*name).to_owned(),
                format: "wav".to_owned(),
                duration_ms: 1500,
                sample_rate: 8000,
                path: None,
            })
            .await
            .unwrap();
        ids.push(p.id);
    }
    store.close().await;
    ids
}

fn menu_flow(name: &str, prompt: &str, queue: &str) -> Value {
    json!({
        "name": name,
        "start": "menu",
        "nodes": {
            "menu": {"type": "menu", "prompt": prompt,
                     "options": {"1": "sales", "2": "bye"}, "invalid": "bye"},
            "sales": {"type": "enqueue", "queue": queue},
            "bye": {"type": "hangup"}
        }
    })
}

#[tokio::test]
async fn call_programs_sqlite() {
    call_programs(Gateway::start().await).await;
}

#[tokio::test]
async fn call_programs_postgres() {
    call_programs(Gateway::start_pg().await).await;
}

async fn call_programs(gw: Gateway) {
    let prompt_ids = add_prompts(&gw, &["welcome", "hold"]).await;

    // Prompts: list, get by id or name.
    let list = ok(get(&gw, "/v1/prompts").await, StatusCode::OK).await;
    let names: Vec<&str> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["welcome", "hold"]);
    let welcome = ok(get(&gw, "/v1/prompts/welcome").await, StatusCode::OK).await;
    assert_eq!(welcome["id"], prompt_ids[0].as_str());
    assert!(welcome["id"].as_str().unwrap().starts_with("prm_"));
    assert_eq!(welcome["duration_ms"], 1500);
    let by_id = ok(
        get(&gw, &format!("/v1/prompts/{}", prompt_ids[1])).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(by_id["name"], "hold");
    problem(get(&gw, "/v1/prompts/nope").await, StatusCode::NOT_FOUND).await;

    // Queues: a missing hold prompt or overflow target is a 422 naming it.
    let (errors, detail) = invalid(
        post(
            &gw,
            "/v1/queues",
            json!({"name": "support", "strategy": "round_robin", "hold_prompt": "jazz"}),
        )
        .await,
    )
    .await;
    assert_eq!(errors[0].0, "hold_prompt");
    assert!(detail.contains("\"jazz\""), "{detail}");
    let (errors, detail) = invalid(
        post(
            &gw,
            "/v1/queues",
            json!({"name": "support", "strategy": "round_robin",
            "overflow": {"type": "ivr", "target": "after-hours"}}),
        )
        .await,
    )
    .await;
    assert_eq!(errors[0].0, "overflow.target");
    assert!(detail.contains("\"after-hours\""), "{detail}");
    let (errors, _) = invalid(
        post(
            &gw,
            "/v1/queues",
            json!({"name": "support", "strategy": "random"}),
        )
        .await,
    )
    .await;
    assert_eq!(errors[0].0, "strategy");
    let (errors, _) = invalid(
        post(
            &gw,
            "/v1/queues",
            json!({"name": "support", "strategy": "ring_all", "max_wait_seconds": 0,
            "ring_timeout_seconds": 1000}),
        )
        .await,
    )
    .await;
    let fields: Vec<&str> = errors.iter().map(|e| e.0.as_str()).collect();
    assert_eq!(fields, ["max_wait_seconds", "ring_timeout_seconds"]);

    let q = ok(
        post(
            &gw,
            "/v1/queues",
            json!({"name": "support", "strategy": "longest_idle",
            "required_skills": ["en", "billing"], "hold_prompt": "hold", "max_wait_seconds": 120,
            "overflow": {"type": "webhook", "target": "https://app.example/overflow"},
            "announce_position": true}),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    let queue_id = q["id"].as_str().unwrap().to_owned();
    assert!(queue_id.starts_with("que_"));
    assert_eq!(q["hold_prompt"], prompt_ids[1].as_str());
    assert_eq!(q["strategy"], "longest_idle");
    assert_eq!(q["required_skills"], json!(["en", "billing"]));
    assert_eq!(q["ring_timeout_seconds"], 20);
    assert_eq!(q["announce_position"], true);
    assert_eq!(
        q["overflow"],
        json!({"type": "webhook", "target": "https://app.example/overflow"})
    );
    problem(
        post(
            &gw,
            "/v1/queues",
            json!({"name": "support", "strategy": "ring_all"}),
        )
        .await,
        StatusCode::CONFLICT,
    )
    .await;
    let got = ok(get(&gw, "/v1/queues/support").await, StatusCode::OK).await;
    assert_eq!(got, q);

    // PATCH: only what is present changes; null clears.
    let patched = ok(
        send(
            &gw,
            reqwest::Method::PATCH,
            "/v1/queues/support",
            Some(json!({"strategy": "ring_all", "overflow": null, "ring_timeout_seconds": 15})),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(patched["strategy"], "ring_all");
    assert_eq!(patched["overflow"], Value::Null);
    assert_eq!(patched["ring_timeout_seconds"], 15);
    assert_eq!(patched["hold_prompt"], prompt_ids[1].as_str());
    assert_eq!(patched["max_wait_seconds"], 120);
    let (errors, detail) = invalid(
        send(
            &gw,
            reqwest::Method::PATCH,
            "/v1/queues/support",
            Some(json!({"overflow": {"type": "queue", "target": "billing"}})),
        )
        .await,
    )
    .await;
    assert_eq!(errors[0].0, "overflow.target");
    assert!(detail.contains("\"billing\""), "{detail}");
    // A null member merges into nothing (RFC 7396): its name is still checked.
    for (body, field) in [
        (json!({"typo": null}), "typo"),
        (json!({"overflow": {"bogus": null}}), "overflow.bogus"),
    ] {
        let (errors, _) = invalid(
            send(
                &gw,
                reqwest::Method::PATCH,
                "/v1/queues/support",
                Some(body),
            )
            .await,
        )
        .await;
        assert_eq!(errors[0].0, field);
    }

    // Flows: a missing node, prompt or queue is a 422 naming it (and its node).
    let mut flow = menu_flow("main", "welcome", "support");
    flow["nodes"]["menu"]["options"]["3"] = json!("operator");
    let (errors, detail) = invalid(post(&gw, "/v1/ivr-flows", flow).await).await;
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].0, "nodes.menu");
    assert!(detail.contains("\"operator\""), "{detail}");
    let (errors, detail) = invalid(
        post(
            &gw,
            "/v1/ivr-flows",
            menu_flow("main", "greeting", "support"),
        )
        .await,
    )
    .await;
    assert_eq!(errors[0].0, "nodes.menu");
    assert!(detail.contains("no prompt \"greeting\""), "{detail}");
    let (errors, detail) = invalid(
        post(
            &gw,
            "/v1/ivr-flows",
            menu_flow("main", "welcome", "sales-team"),
        )
        .await,
    )
    .await;
    assert_eq!(errors[0].0, "nodes.sales");
    assert!(detail.contains("no queue \"sales-team\""), "{detail}");
    let mut flow = menu_flow("main", "welcome", "support");
    flow["start"] = json!("begin");
    let (errors, detail) = invalid(post(&gw, "/v1/ivr-flows", flow).await).await;
    assert_eq!(errors[0].0, "flow");
    assert!(detail.contains("\"begin\""), "{detail}");
    // Every error is reported, each with its node.
    let mut flow = menu_flow("main", "greeting", "sales-team");
    flow["nodes"]["dial"] = json!({"type": "dial", "agent": "nobody"});
    let (errors, _) = invalid(post(&gw, "/v1/ivr-flows", flow).await).await;
    let messages: Vec<String> = errors.iter().map(|e| format!("{}: {}", e.0, e.1)).collect();
    assert_eq!(
        messages,
        [
            "nodes.dial: no agent \"nobody\"",
            "nodes.menu: no prompt \"greeting\"",
            "nodes.sales: no queue \"sales-team\""
        ]
    );
    let (errors, _) = invalid(
        post(
            &gw,
            "/v1/ivr-flows",
            json!({"name": "x", "start": "a", "nodes": {"a": {"type": "teleport"}}}),
        )
        .await,
    )
    .await;
    assert_eq!(errors[0].0, "nodes.a");

    // A valid flow, by queue name and by prompt id.
    let f = ok(
        post(
            &gw,
            "/v1/ivr-flows",
            menu_flow("main", &prompt_ids[0], "support"),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    let flow_id = f["id"].as_str().unwrap().to_owned();
    assert!(flow_id.starts_with("ivr_"));
    assert_eq!(f["name"], "main");
    assert_eq!(f["start"], "menu");
    assert_eq!(
        f["nodes"]["sales"],
        json!({"type": "enqueue", "queue": "support"})
    );
    // Defaults are filled in.
    assert_eq!(f["nodes"]["menu"]["timeout_seconds"], 5);
    assert_eq!(f["unreachable"], json!([]));
    problem(
        post(
            &gw,
            "/v1/ivr-flows",
            menu_flow("main", "welcome", "support"),
        )
        .await,
        StatusCode::CONFLICT,
    )
    .await;
    let got = ok(get(&gw, "/v1/ivr-flows/main").await, StatusCode::OK).await;
    assert_eq!(got, f);

    // PUT replaces it whole (and is validated the same way).
    let mut flow = menu_flow("main", "welcome", "support");
    flow["nodes"]["draft"] = json!({"type": "play", "prompt": "hold"});
    let put = ok(
        send(
            &gw,
            reqwest::Method::PUT,
            &format!("/v1/ivr-flows/{flow_id}"),
            Some(flow),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(put["id"], flow_id.as_str());
    assert_eq!(put["nodes"]["menu"]["prompt"], "welcome");
    assert_eq!(put["unreachable"], json!(["draft"]));
    let (errors, _) = invalid(
        send(
            &gw,
            reqwest::Method::PUT,
            "/v1/ivr-flows/main",
            Some(menu_flow("main", "welcome", "nope")),
        )
        .await,
    )
    .await;
    assert_eq!(errors[0].0, "nodes.sales");
    let list = ok(get(&gw, "/v1/ivr-flows").await, StatusCode::OK).await;
    assert_eq!(list["data"].as_array().unwrap().len(), 1);
    assert_eq!(list["data"][0]["id"], flow_id.as_str());

    // Numbers route to flows, queues and webhooks; references are stored as ids.
    ok(
        post(&gw, "/v1/trunks", json!({"name": "carrier", "provider": "generic", "outbound": {"host": "sip.carrier.example"}})).await,
        StatusCode::CREATED,
    )
    .await;
    let n = ok(
        post(&gw, "/v1/numbers", json!({"number": "+14155550100", "trunk": "carrier", "route": {"type": "ivr", "target": "main"}})).await,
        StatusCode::CREATED,
    )
    .await;
    assert_eq!(n["route"], json!({"type": "ivr", "target": flow_id}));
    let n = ok(
        post(&gw, "/v1/numbers", json!({"number": "+14155550101", "trunk": "carrier", "route": {"type": "queue", "target": "support"}})).await,
        StatusCode::CREATED,
    )
    .await;
    assert_eq!(n["route"], json!({"type": "queue", "target": queue_id}));
    let n = ok(
        post(&gw, "/v1/numbers", json!({"number": "+14155550102", "trunk": "carrier", "route": {"type": "webhook", "target": "https://app.example/voice"}})).await,
        StatusCode::CREATED,
    )
    .await;
    assert_eq!(
        n["route"],
        json!({"type": "webhook", "target": "https://app.example/voice"})
    );
    let got = ok(get(&gw, "/v1/numbers/%2B14155550102").await, StatusCode::OK).await;
    assert_eq!(got["route"]["type"], "webhook");
    for (route, field, named) in [
        (
            json!({"type": "ivr", "target": "nope"}),
            "route.target",
            "\"nope\"",
        ),
        (
            json!({"type": "queue", "target": "billing"}),
            "route.target",
            "\"billing\"",
        ),
        (
            json!({"type": "webhook", "target": "ftp://app.example/"}),
            "route.target",
            "http",
        ),
        (
            json!({"type": "masking", "target": "x"}),
            "route.type",
            "masking",
        ),
    ] {
        let (errors, detail) = invalid(
            post(
                &gw,
                "/v1/numbers",
                json!({"number": "+14155550199", "trunk": "carrier", "route": route}),
            )
            .await,
        )
        .await;
        assert_eq!(errors[0].0, field, "{route}");
        assert!(detail.contains(named), "{route}: {detail}");
    }

    // Deleting what something still uses is a 409 naming the user.
    let p = problem(
        delete(&gw, "/v1/prompts/welcome").await,
        StatusCode::CONFLICT,
    )
    .await;
    assert!(
        p["detail"].as_str().unwrap().contains("ivr flow \"main\""),
        "{p}"
    );
    let p = problem(delete(&gw, "/v1/prompts/hold").await, StatusCode::CONFLICT).await;
    assert!(
        p["detail"].as_str().unwrap().contains("queue \"support\""),
        "{p}"
    );
    let p = problem(
        delete(&gw, "/v1/queues/support").await,
        StatusCode::CONFLICT,
    )
    .await;
    assert!(
        p["detail"]
            .as_str()
            .unwrap()
            .contains("number +14155550101"),
        "{p}"
    );
    let p = problem(
        delete(&gw, "/v1/ivr-flows/main").await,
        StatusCode::CONFLICT,
    )
    .await;
    assert!(
        p["detail"]
            .as_str()
            .unwrap()
            .contains("number +14155550100"),
        "{p}"
    );

    // Once the numbers go, the flow then the queue can; then the prompts.
    for n in ["%2B14155550100", "%2B14155550101", "%2B14155550102"] {
        ok(
            delete(&gw, &format!("/v1/numbers/{n}")).await,
            StatusCode::NO_CONTENT,
        )
        .await;
    }
    let p = problem(
        delete(&gw, "/v1/queues/support").await,
        StatusCode::CONFLICT,
    )
    .await;
    assert!(
        p["detail"]
            .as_str()
            .unwrap()
            .contains("ivr flow \"main\" (node \"sales\")"),
        "{p}"
    );
    ok(
        delete(&gw, "/v1/ivr-flows/main").await,
        StatusCode::NO_CONTENT,
    )
    .await;
    problem(
        get(&gw, &format!("/v1/ivr-flows/{flow_id}")).await,
        StatusCode::NOT_FOUND,
    )
    .await;
    ok(
        delete(&gw, "/v1/queues/support").await,
        StatusCode::NO_CONTENT,
    )
    .await;
    problem(get(&gw, "/v1/queues/support").await, StatusCode::NOT_FOUND).await;
    ok(
        delete(&gw, "/v1/prompts/welcome").await,
        StatusCode::NO_CONTENT,
    )
    .await;
    ok(
        delete(&gw, "/v1/prompts/hold").await,
        StatusCode::NO_CONTENT,
    )
    .await;
    let list = ok(get(&gw, "/v1/prompts").await, StatusCode::OK).await;
    assert_eq!(list["data"], json!([]));
}

#[tokio::test]
async fn openapi_documents_call_program_routes() {
    let gw = Gateway::start().await;
    let doc = ok(get(&gw, "/openapi.json").await, StatusCode::OK).await;
    for (path, methods) in [
        ("/v1/prompts", &["get", "post"][..]),
        ("/v1/prompts/{id}", &["get", "delete"]),
        ("/v1/prompts/{id}/audio", &["get"]),
        ("/v1/ivr-flows", &["get", "post"]),
        ("/v1/ivr-flows/{id}", &["get", "put", "delete"]),
        ("/v1/queues", &["get", "post"]),
        ("/v1/queues/{id}", &["get", "patch", "delete"]),
    ] {
        for m in methods {
            assert!(doc["paths"][path][m].is_object(), "{m} {path} undocumented");
        }
    }
    // The upload is a multipart form of a name and a binary file.
    let upload = &doc["paths"]["/v1/prompts"]["post"]["requestBody"]["content"]
        ["multipart/form-data"]["schema"];
    let upload = match upload["$ref"].as_str() {
        Some(r) => &doc["components"]["schemas"][r.trim_start_matches("#/components/schemas/")],
        None => upload,
    };
    assert_eq!(upload["required"], json!(["name", "file"]), "{upload}");
    assert_eq!(upload["properties"]["file"]["format"], "binary", "{upload}");
    assert_eq!(upload["properties"]["name"]["maxLength"], 64, "{upload}");
    let statuses = doc["paths"]["/v1/prompts"]["post"]["responses"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect::<Vec<_>>();
    for s in ["201", "400", "401", "409", "413", "415", "422", "500"] {
        assert!(
            statuses.iter().any(|k| k == s),
            "POST /v1/prompts lacks {s}"
        );
    }
    let strategies = &doc["components"]["schemas"]["Strategy"]["enum"];
    assert_eq!(
        strategies,
        &json!(["round_robin", "longest_idle", "least_calls", "ring_all"])
    );
}

/// An away agent is not offered calls: voxgate answers 480 itself and the phone does not
/// ring; back to available, the phone is offered the next call (it answers busy here).
/// The status change reaches the SIP side through the agent worker, within the
/// milliseconds SIPp takes to start.
#[tokio::test]
async fn away_agent_is_not_offered_calls() {
    const ALICE: (&str, &str) = ("alice", "alicepass1");
    const BOB: (&str, &str) = ("bob", "bobpass123");
    let gw = Gateway::start().await;
    for (u, p) in [ALICE, BOB] {
        ok(
            post(&gw, "/v1/agents", json!({"username": u, "password": p})).await,
            StatusCode::CREATED,
        )
        .await;
    }
    let (alice, bob) = (Phone::new(ALICE), Phone::new(BOB));
    alice.register(gw.sip_port);
    bob.register(gw.sip_port);
    let dial = || {
        alice
            .dial("call_uac_reject.xml", "bob")
            .set("rtp", &free_udp_port().to_string())
            .set("fmts", "0 8 101")
            .set("attr", "a=rtpmap:101 telephone-event/8000")
            .timeout(std::time::Duration::from_secs(20))
    };

    let away = ok(
        post(&gw, "/v1/agents/bob/status", json!({"status": "away"})).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(away["state"], "away");
    let run = dial().spawn(gw.sip_port).finish().await;
    run.assert_success();
    assert_eq!(run.last_response().status, 480, "{}", run.report());
    assert!(
        run.responses_with(180).is_empty() && run.responses_with(183).is_empty(),
        "an away agent must not ring\n{}",
        run.report()
    );

    let back = ok(
        post(&gw, "/v1/agents/bob/status", json!({"status": "available"})).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(back["state"], "available");
    let callee = listen(bob.answer("call_uas_busy.xml"), gw.sip_port).await;
    let run = dial().spawn(gw.sip_port).finish().await;
    run.assert_success();
    assert_eq!(run.last_response().status, 486, "{}", run.report());
    let callee_run = callee.finish().await;
    callee_run.assert_success();
    assert_eq!(
        callee_run.received_count("INVITE"),
        1,
        "{}",
        callee_run.report()
    );
}

/// `wrap_up` shows while the engine's after-call time runs (set through the store, as
/// the engine will), under `away` and over `available`.
#[tokio::test]
async fn wrap_up_state() {
    use voxgate::store::{Registration, RegistrationChange};
    let gw = Gateway::start().await;
    let a = ok(
        post(
            &gw,
            "/v1/agents",
            json!({"username": "alice", "password": "alicepass1", "wrap_up_seconds": 30}),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    let id = a["id"].as_str().unwrap();
    let store = Store::connect(&gw.database_url(), 1).await.unwrap();
    let now = voxgate::store::now();
    store
        .apply_registration_changes(&[RegistrationChange::Upsert(Registration {
            id: voxgate::ids::new_id(voxgate::ids::IdKind::Registration),
            agent_id: id.to_owned(),
            contact: "sip:alice@192.0.2.10:5062".into(),
            transport: "udp".into(),
            source: "192.0.2.10:5062".into(),
            expires_at: now + chrono::Duration::seconds(600),
            user_agent: None,
            call_id: "abc".into(),
            cseq: 1,
        })])
        .await
        .unwrap();
    assert_eq!(agent_state(&gw).await, "available");
    store
        .set_agent_wrap_up(id, Some(now + chrono::Duration::seconds(30)))
        .await
        .unwrap();
    assert_eq!(agent_state(&gw).await, "wrap_up");
    ok(
        post(&gw, "/v1/agents/alice/status", json!({"status": "away"})).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(agent_state(&gw).await, "away");
    ok(
        post(
            &gw,
            "/v1/agents/alice/status",
            json!({"status": "available"}),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(agent_state(&gw).await, "wrap_up");
    // Over: a time in the past is the same as none.
    store
        .set_agent_wrap_up(id, Some(now - chrono::Duration::seconds(1)))
        .await
        .unwrap();
    assert_eq!(agent_state(&gw).await, "available");
    store.set_agent_wrap_up(id, None).await.unwrap();
    assert_eq!(agent_state(&gw).await, "available");
    store.close().await;
}

async fn agent_state(gw: &Gateway) -> Value {
    ok(get(gw, "/v1/agents/alice").await, StatusCode::OK).await["state"].clone()
}
