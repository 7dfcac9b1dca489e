//! Trunks, numbers, CDRs and stats through the control API of the real binary (SPEC §4,
//! docs/trunks.md).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use chrono::{DateTime, Duration, TimeZone, Utc};
use reqwest::{Response, StatusCode};
use serde_json::{json, Value};
use voxgate::calls::record::{CallChange, CallDirection, CallStatus, HangupBy, NewCall};
use voxgate::ids::{new_id, IdKind};
use voxgate::store::Store;

use common::Gateway;

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

/// Assert an RFC 9457 problem with this status; returns it.
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

/// The fields named in a 422 problem.
async fn invalid_fields(resp: Response) -> Vec<String> {
    let v = problem(resp, StatusCode::UNPROCESSABLE_ENTITY).await;
    v["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("422 without errors: {v}"))
        .iter()
        .map(|e| e["field"].as_str().unwrap().to_owned())
        .collect()
}

async fn post(gw: &Gateway, path: &str, v: Value) -> Response {
    gw.client()
        .post(gw.url(path))
        .json(&v)
        .send()
        .await
        .unwrap()
}

async fn patch(gw: &Gateway, path: &str, v: Value) -> Response {
    gw.client()
        .patch(gw.url(path))
        .json(&v)
        .send()
        .await
        .unwrap()
}

async fn get(gw: &Gateway, path: &str) -> Response {
    gw.client().get(gw.url(path)).send().await.unwrap()
}

async fn ok(resp: Response, status: StatusCode) -> Value {
    let (s, v) = body(resp).await;
    assert_eq!(s, status, "{v}");
    v
}

#[tokio::test]
async fn trunk_lifecycle_with_presets() {
    let gw = Gateway::start().await;
    let t = ok(
        post(
            &gw,
            "/v1/trunks",
            json!({"name": "twilio-us", "provider": "twilio",
                   "outbound": {"host": "Example.PSTN.twilio.com", "username": "u", "password": "pw-secret"},
                   "inbound": {"allowed_cidrs": ["54.172.60.0/30", "2001:db8::/32"]},
                   "caller_id": "+1 (415) 555-0100",
                   "rate": {"per_minute": "0.0130", "currency": "usd"}}),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    let id = t["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("trk_"), "{t}");
    // Twilio's preset, and the fields given.
    assert_eq!(t["codecs"], json!(["PCMU", "PCMA"]));
    assert_eq!(t["max_cps"], 1);
    assert_eq!(t["number_format"], "e164");
    assert_eq!(t["outbound"]["transport"], "udp");
    assert_eq!(t["outbound"]["host"], "example.pstn.twilio.com");
    assert_eq!(t["caller_id"], "+14155550100");
    assert_eq!(
        t["rate"],
        json!({"per_minute": "0.013", "currency": "USD", "increment_seconds": 60, "minimum_seconds": 0})
    );
    assert_eq!(t["registration"]["state"], "disabled");
    // Passwords are write-only.
    assert!(!t.to_string().contains("pw-secret"), "{t}");
    assert!(t["outbound"].get("password").is_none());

    // By id and by name.
    assert_eq!(
        ok(get(&gw, &format!("/v1/trunks/{id}")).await, StatusCode::OK).await["name"],
        "twilio-us"
    );
    assert_eq!(
        ok(get(&gw, "/v1/trunks/twilio-us").await, StatusCode::OK).await["id"],
        id
    );
    let list = ok(get(&gw, "/v1/trunks").await, StatusCode::OK).await;
    assert_eq!(list["data"].as_array().unwrap().len(), 1);
    assert_eq!(list["next"], Value::Null);

    // PATCH merges: one field, nested fields, and null back to the preset.
    let p = ok(
        patch(
            &gw,
            "/v1/trunks/twilio-us",
            json!({"max_cps": 5, "outbound": {"port": 5080, "password": "other-secret"}, "caller_id": null}),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(p["max_cps"], 5);
    assert_eq!(p["outbound"]["port"], 5080);
    assert_eq!(p["outbound"]["host"], "example.pstn.twilio.com");
    assert_eq!(p["outbound"]["username"], "u");
    assert_eq!(p["caller_id"], Value::Null);
    assert_eq!(
        p["inbound"]["allowed_cidrs"],
        json!(["54.172.60.0/30", "2001:db8::/32"])
    );
    assert!(!p.to_string().contains("secret"), "{p}");
    let p = ok(
        patch(
            &gw,
            &format!("/v1/trunks/{id}"),
            json!({"max_cps": null, "rate": null}),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(p["max_cps"], 1, "null returns to the preset: {p}");
    assert_eq!(p["rate"], Value::Null);
    // A null member merges into nothing (RFC 7396), so its name is checked on its own:
    // an unknown one is a 422 naming it, at the top and inside nested objects.
    for (body, field) in [
        (json!({"": null}), "\"\""),
        (json!({"typo": null}), "typo"),
        (json!({"outbound": {"bogus": null}}), "outbound.bogus"),
    ] {
        let r = patch(&gw, &format!("/v1/trunks/{id}"), body.clone()).await;
        let v = ok(r, StatusCode::UNPROCESSABLE_ENTITY).await;
        assert!(v["detail"].as_str().unwrap().contains(field), "{body}: {v}");
    }
    // Provider is immutable; unknown fields are named.
    assert_eq!(
        invalid_fields(patch(&gw, "/v1/trunks/twilio-us", json!({"provider": "plivo"})).await)
            .await,
        ["provider"]
    );
    assert_eq!(
        invalid_fields(
            patch(
                &gw,
                "/v1/trunks/twilio-us",
                json!({"outbound": {"hots": "x"}})
            )
            .await
        )
        .await,
        ["outbound.hots"]
    );
    assert_eq!(
        invalid_fields(patch(&gw, "/v1/trunks/twilio-us", json!({"max_cps": -1})).await).await,
        ["max_cps"]
    );

    assert_eq!(
        gw.client()
            .delete(gw.url(&format!("/v1/trunks/{id}")))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::NO_CONTENT
    );
    problem(
        get(&gw, &format!("/v1/trunks/{id}")).await,
        StatusCode::NOT_FOUND,
    )
    .await;
}

#[tokio::test]
async fn provider_presets() {
    let gw = Gateway::start().await;
    let ex = ok(
        post(&gw, "/v1/trunks", json!({"name": "exotel", "provider": "exotel", "outbound": {"host": "sip.exotel.example"}})).await,
        StatusCode::CREATED,
    )
    .await;
    assert_eq!(ex["outbound"]["transport"], "tcp");
    assert_eq!(ex["outbound"]["port"], 5070);
    assert_eq!(ex["country_code"], "91");
    assert_eq!(ex["max_calls_per_minute"], 200);
    assert_eq!(ex["codecs"], json!(["PCMU", "PCMA", "telephone-event"]));
    // Over TLS, Exotel's TCP port is not assumed.
    let tls = ok(
        post(&gw, "/v1/trunks", json!({"name": "exotel-tls", "provider": "exotel", "outbound": {"host": "sip.exotel.example", "transport": "tls"}})).await,
        StatusCode::CREATED,
    )
    .await;
    assert_eq!(tls["outbound"]["port"], Value::Null);

    let pl = ok(
        post(&gw, "/v1/trunks", json!({"name": "plivo", "provider": "plivo", "outbound": {"host": "203.0.113.7"}, "max_concurrent_calls": 20})).await,
        StatusCode::CREATED,
    )
    .await;
    assert_eq!(pl["max_cps"], 2);
    assert_eq!(pl["max_concurrent_calls"], 20);
    assert_eq!(pl["codecs"], json!(["PCMU", "PCMA", "telephone-event"]));

    let gen = ok(
        post(&gw, "/v1/trunks", json!({"name": "fs-gw", "provider": "generic",
            "outbound": {"host": "gw.example.net", "username": "1000", "password": "pw123456", "register": true},
            "default_outbound": true})).await,
        StatusCode::CREATED,
    )
    .await;
    assert_eq!(gen["outbound"]["register"], true);
    assert_eq!(gen["outbound"]["register_expires"], 3600);
    // Not reported by the SIP core yet (its host does not even resolve).
    assert_eq!(gen["registration"]["state"], "registering");
    assert_eq!(gen["default_outbound"], true);

    let sim = ok(
        post(
            &gw,
            "/v1/trunks",
            json!({"name": "sim", "provider": "simulated",
            "simulate": [{"pattern": "+9198*", "outcome": "busy", "after_seconds": 2},
                         {"pattern": "*", "outcome": "answer", "play": "tone"}],
            "default_outbound": true}),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    assert_eq!(sim["outbound"]["host"], Value::Null);
    assert_eq!(sim["simulate"][0]["outcome"], "busy");
    assert_eq!(sim["simulate"][1]["after_seconds"], 0);
    // The newer default cleared the older one.
    let gen = ok(get(&gw, "/v1/trunks/fs-gw").await, StatusCode::OK).await;
    assert_eq!(gen["default_outbound"], false);
}

#[tokio::test]
async fn trunk_validation() {
    let gw = Gateway::start().await;
    let bad = |v: Value| {
        let gw = &gw;
        async move { invalid_fields(post(gw, "/v1/trunks", v).await).await }
    };
    assert_eq!(
        bad(json!({"name": "t", "provider": "twilio"})).await,
        ["outbound.host"]
    );
    assert_eq!(bad(json!({"provider": "twilio"})).await, ["name"]);
    assert_eq!(
        bad(json!({"name": "t", "provider": "vonage"})).await,
        ["provider"]
    );
    assert_eq!(
        bad(json!({"name": "t", "provider": "generic", "outbound": {"host": "h.example"}, "colour": "red"}))
            .await,
        ["colour"]
    );
    assert_eq!(
        bad(
            json!({"name": "t", "provider": "generic", "outbound": {"host": "h.example"},
            "inbound": {"allowed_cidrs": ["10.0.0.0/8", "10.0.0.1/8", "300.1.1.1"]}})
        )
        .await,
        ["inbound.allowed_cidrs[1]", "inbound.allowed_cidrs[2]"]
    );
    assert_eq!(
        bad(json!({"name": "t", "provider": "generic", "outbound": {"host": "h.example", "register": true},
            "codecs": ["G729"], "number_format": "local"}))
        .await,
        ["number_format"]
    );
    assert_eq!(
        bad(json!({"name": "t", "provider": "generic", "outbound": {"host": "h.example", "register": true},
            "codecs": ["G729"], "caller_id": "alice", "rate": {"per_minute": "1.2.3", "currency": "USD"}}))
        .await,
        ["outbound.register", "codecs[0]", "caller_id", "rate.per_minute"]
    );
    assert_eq!(
        bad(
            json!({"name": "t", "provider": "twilio", "outbound": {"host": "h.example"},
            "simulate": [{"pattern": "*", "outcome": "answer"}]})
        )
        .await,
        ["simulate"]
    );
    assert_eq!(
        bad(json!({"name": "s", "provider": "simulated",
            "simulate": [{"pattern": "*", "outcome": "explode"}]}))
        .await,
        ["simulate[0].outcome"]
    );
    // Duplicate names conflict; nothing half-written stays.
    ok(
        post(
            &gw,
            "/v1/trunks",
            json!({"name": "t", "provider": "generic", "outbound": {"host": "h.example"}}),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    problem(
        post(
            &gw,
            "/v1/trunks",
            json!({"name": "t", "provider": "plivo", "outbound": {"host": "h.example"}}),
        )
        .await,
        StatusCode::CONFLICT,
    )
    .await;
    let list = ok(get(&gw, "/v1/trunks").await, StatusCode::OK).await;
    assert_eq!(list["data"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn numbers_route_to_agents() {
    let gw = Gateway::start().await;
    let alice = ok(
        post(
            &gw,
            "/v1/agents",
            json!({"username": "alice", "password": "secret123"}),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    let alice_id = alice["id"].as_str().unwrap();
    let trunk = ok(
        post(&gw, "/v1/trunks", json!({"name": "exotel", "provider": "exotel", "outbound": {"host": "sip.exotel.example"}})).await,
        StatusCode::CREATED,
    )
    .await;
    let trunk_id = trunk["id"].as_str().unwrap();

    // A national number is read with the trunk's country code.
    let n = ok(
        post(&gw, "/v1/numbers", json!({"number": "09876543210", "trunk": "exotel", "route": {"type": "agent", "target": "alice"}})).await,
        StatusCode::CREATED,
    )
    .await;
    assert_eq!(n["number"], "+919876543210");
    assert_eq!(n["trunk"], trunk_id);
    assert_eq!(n["route"], json!({"type": "agent", "target": alice_id}));

    assert_eq!(
        ok(
            get(&gw, "/v1/numbers/%2B919876543210").await,
            StatusCode::OK
        )
        .await["number"],
        "+919876543210"
    );
    // The national form finds it too (through the reloaded directory).
    assert_eq!(
        ok(get(&gw, "/v1/numbers/09876543210").await, StatusCode::OK).await["number"],
        "+919876543210"
    );
    problem(
        get(&gw, "/v1/numbers/%2B14155550100").await,
        StatusCode::NOT_FOUND,
    )
    .await;

    problem(
        post(&gw, "/v1/numbers", json!({"number": "+919876543210", "trunk": trunk_id, "route": {"type": "agent", "target": alice_id}})).await,
        StatusCode::CONFLICT,
    )
    .await;
    let bad = |v: Value| {
        let gw = &gw;
        async move { invalid_fields(post(gw, "/v1/numbers", v).await).await }
    };
    assert_eq!(
        bad(json!({"number": "+14155550100", "trunk": "exotel", "route": {"type": "queue", "target": "sales"}})).await,
        ["route.target"]
    );
    assert_eq!(
        bad(json!({"number": "+14155550100", "trunk": "exotel", "route": {"type": "masking", "target": "x"}})).await,
        ["route.type"]
    );
    assert_eq!(
        bad(json!({"number": "+14155550100", "trunk": "exotel", "route": {"type": "pager", "target": "x"}})).await,
        ["route.type"]
    );
    assert_eq!(
        bad(json!({"number": "+14155550100", "trunk": "exotel", "route": {"type": "agent", "target": "nobody"}})).await,
        ["route.target"]
    );
    assert_eq!(
        bad(json!({"number": "+14155550100", "trunk": "nope", "route": {"type": "agent", "target": "alice"}})).await,
        ["trunk"]
    );
    assert_eq!(
        bad(json!({"number": "call me", "trunk": "exotel", "route": {"type": "agent", "target": "alice"}})).await,
        ["number"]
    );
    assert_eq!(
        bad(json!({"number": "+14155550100", "trunk": "exotel", "route": {"type": "agent"}})).await,
        ["route.target"]
    );

    // A trunk with numbers cannot be deleted.
    problem(
        gw.client()
            .delete(gw.url("/v1/trunks/exotel"))
            .send()
            .await
            .unwrap(),
        StatusCode::CONFLICT,
    )
    .await;

    let bob = ok(
        post(
            &gw,
            "/v1/agents",
            json!({"username": "bob", "password": "secret123"}),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    let p = ok(
        patch(
            &gw,
            "/v1/numbers/%2B919876543210",
            json!({"route": {"type": "agent", "target": "bob"}}),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(p["route"]["target"], bob["id"]);
    assert_eq!(
        invalid_fields(patch(&gw, "/v1/numbers/%2B919876543210", json!({"number": "+1"})).await)
            .await,
        ["number"]
    );
    let list = ok(get(&gw, "/v1/numbers").await, StatusCode::OK).await;
    assert_eq!(list["data"].as_array().unwrap().len(), 1);
    let list = ok(get(&gw, "/v1/numbers?trunk=exotel").await, StatusCode::OK).await;
    assert_eq!(list["data"].as_array().unwrap().len(), 1);
    ok(
        post(
            &gw,
            "/v1/trunks",
            json!({"name": "other", "provider": "generic", "outbound": {"host": "h.example"}}),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    let list = ok(get(&gw, "/v1/numbers?trunk=other").await, StatusCode::OK).await;
    assert_eq!(list["data"], json!([]));
    assert_eq!(
        invalid_fields(get(&gw, "/v1/numbers?trunk=nope").await).await,
        ["trunk"]
    );

    assert_eq!(
        gw.client()
            .delete(gw.url("/v1/numbers/%2B919876543210"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        gw.client()
            .delete(gw.url("/v1/trunks/exotel"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::NO_CONTENT
    );
}

fn at(secs: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 10, 0, 0).unwrap() + Duration::seconds(secs)
}

/// A finished outbound call through `trunk`, priced.
fn finished_call(
    trunk: &str,
    start: DateTime<Utc>,
    status: CallStatus,
    cause: &str,
    cost: i64,
) -> Vec<CallChange> {
    let c = NewCall {
        id: new_id(IdKind::Call),
        direction: CallDirection::Outbound,
        from: "sip:alice@voxgate".to_owned(),
        to: "+919876543210".to_owned(),
        agent_id: None,
        status: CallStatus::Ringing,
        started_at: start,
        status_callback: None,
        metadata: None,
    };
    let answered = status == CallStatus::Completed;
    let mut v = vec![
        CallChange::CreateCall(c.clone()),
        CallChange::CallTrunk {
            call_id: c.id.clone(),
            trunk_id: trunk.to_owned(),
        },
    ];
    if answered {
        v.push(CallChange::CallAnswered {
            call_id: c.id.clone(),
            at: start + Duration::seconds(2),
        });
    }
    v.push(CallChange::CallEnded {
        call_id: c.id.clone(),
        status,
        at: start + Duration::seconds(62),
        duration_seconds: if answered { 60 } else { 0 },
        hangup_cause: cause.to_owned(),
        hangup_by: HangupBy::Callee,
    });
    v.push(CallChange::CallCost {
        call_id: c.id,
        cost_micros: cost,
        currency: "INR".to_owned(),
    });
    v
}

#[tokio::test]
async fn cdrs_csv_and_stats_sqlite() {
    cdrs_csv_and_stats(Gateway::start().await).await;
}

#[tokio::test]
async fn cdrs_csv_and_stats_postgres() {
    cdrs_csv_and_stats(Gateway::start_pg().await).await;
}

async fn cdrs_csv_and_stats(gw: Gateway) {
    let trunk = ok(
        post(&gw, "/v1/trunks", json!({"name": "exotel", "provider": "exotel", "outbound": {"host": "sip.exotel.example"},
            "rate": {"per_minute": "0.75", "currency": "INR"}})).await,
        StatusCode::CREATED,
    )
    .await;
    let trunk_id = trunk["id"].as_str().unwrap().to_owned();
    let store = Store::connect(&gw.database_url(), 2).await.unwrap();
    // 1201 finished calls (CSV pages of 500: three reads), one busy with a cause that
    // needs quoting, and one still ringing (not a CDR).
    let mut changes = Vec::new();
    for i in 0..1200 {
        changes.extend(finished_call(
            &trunk_id,
            at(i),
            CallStatus::Completed,
            "BYE",
            750_000,
        ));
    }
    changes.extend(finished_call(
        &trunk_id,
        at(5000),
        CallStatus::Busy,
        "486 Busy Here, \"really\"",
        0,
    ));
    let live = NewCall {
        id: new_id(IdKind::Call),
        direction: CallDirection::Outbound,
        from: "sip:alice@voxgate".to_owned(),
        to: "+14155550100".to_owned(),
        agent_id: None,
        status: CallStatus::Ringing,
        started_at: at(6000),
        status_callback: None,
        metadata: None,
    };
    changes.push(CallChange::CreateCall(live.clone()));
    store.apply_call_changes(&changes).await.unwrap();

    // JSON: newest first, finished only, with trunk and cost.
    let page = ok(get(&gw, "/v1/cdrs?limit=2").await, StatusCode::OK).await;
    let data = page["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    assert_eq!(data[0]["status"], "busy");
    assert_eq!(data[0]["cost"], "0.00");
    assert_eq!(data[1]["status"], "completed");
    assert_eq!(data[1]["trunk"], trunk_id.as_str());
    assert_eq!(data[1]["cost"], "0.75");
    assert_eq!(data[1]["currency"], "INR");
    assert!(page["next"].is_string());
    assert!(data.iter().all(|c| c["id"] != live.id.as_str()));
    // The call resource shows the same fields; the live call has none.
    let one = ok(
        get(
            &gw,
            &format!("/v1/calls/{}", data[1]["id"].as_str().unwrap()),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(
        (one["cost"].as_str(), one["currency"].as_str()),
        (Some("0.75"), Some("INR"))
    );
    let l = ok(
        get(&gw, &format!("/v1/calls/{}", live.id)).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(
        (l["cost"].clone(), l["trunk"].clone()),
        (Value::Null, Value::Null)
    );
    // Filters.
    let by_trunk = ok(
        get(&gw, "/v1/cdrs?trunk=exotel&limit=200").await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(by_trunk["data"].as_array().unwrap().len(), 200);
    assert_eq!(
        invalid_fields(get(&gw, "/v1/cdrs?trunk=nope").await).await,
        ["trunk"]
    );
    assert_eq!(
        invalid_fields(get(&gw, "/v1/cdrs?since=yesterday").await).await,
        ["since"]
    );

    // CSV, streamed.
    let r = gw
        .client()
        .get(gw.url("/v1/cdrs"))
        .header("accept", "text/csv")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["content-type"], "text/csv; charset=utf-8");
    assert!(
        r.headers().get("content-length").is_none(),
        "streamed, not buffered"
    );
    let text = r.text().await.unwrap();
    let lines: Vec<&str> = text.split("\r\n").filter(|l| !l.is_empty()).collect();
    assert_eq!(
        lines[0],
        "id,direction,from,to,agent,trunk,status,started_at,answered_at,ended_at,duration_seconds,hangup_cause,hangup_by,cost,currency,legs"
    );
    assert_eq!(lines.len(), 1 + 1201, "header and every finished call");
    assert!(
        lines[1].contains(",busy,") && lines[1].contains("\"486 Busy Here, \"\"really\"\"\""),
        "{}",
        lines[1]
    );
    assert!(
        lines[2].ends_with(",60,BYE,callee,0.75,INR,0"),
        "{}",
        lines[2]
    );
    let ids: std::collections::HashSet<&str> = lines[1..]
        .iter()
        .map(|l| l.split(',').next().unwrap())
        .collect();
    assert_eq!(ids.len(), 1201, "no row twice across pages");
    // A window selects by start time.
    let r = gw
        .client()
        .get(gw.url("/v1/cdrs?since=2026-01-01T10:00:00Z&until=2026-01-01T10:00:10Z"))
        .header("accept", "text/csv")
        .send()
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap().matches("\r\n").count(), 1 + 10);

    // Stats.
    let s = ok(get(&gw, "/v1/stats").await, StatusCode::OK).await;
    let t = &s["totals"];
    assert_eq!(t["calls"], 1202);
    assert_eq!(
        t["by_status"],
        json!({"busy": 1, "completed": 1200, "ringing": 1})
    );
    assert_eq!(t["answered"], 1200);
    assert_eq!(t["total_talk_seconds"], 72_000);
    assert_eq!(t["average_talk_seconds"], 60.0);
    assert_eq!(t["cost"], json!({"INR": "900.00"}));
    let rate = t["answer_rate"].as_f64().unwrap();
    assert!((rate - 1200.0 / 1201.0).abs() < 1e-9, "{rate}");
    assert_eq!(s["groups"], json!([]));
    let s = ok(
        get(&gw, "/v1/stats?group_by=trunk&until=2026-01-01T11:00:00Z").await,
        StatusCode::OK,
    )
    .await;
    let groups = s["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 1, "{s}");
    assert_eq!(groups[0]["key"], trunk_id.as_str());
    assert_eq!(groups[0]["name"], "exotel");
    assert_eq!(groups[0]["calls"], 1200);
    let s = ok(get(&gw, "/v1/stats?group_by=day").await, StatusCode::OK).await;
    assert_eq!(s["groups"][0]["key"], "2026-01-01");
    assert_eq!(
        invalid_fields(get(&gw, "/v1/stats?group_by=week").await).await,
        ["group_by"]
    );
    assert_eq!(
        invalid_fields(get(&gw, "/v1/stats?group_by=campaign").await).await,
        ["group_by"]
    );
    assert_eq!(
        invalid_fields(
            get(
                &gw,
                "/v1/stats?since=2026-01-02T00:00:00Z&until=2026-01-01T00:00:00Z"
            )
            .await
        )
        .await,
        ["until"]
    );
}

#[tokio::test]
async fn openapi_documents_the_routes() {
    let gw = Gateway::start().await;
    let doc = ok(
        gw.anon_client()
            .get(gw.url("/openapi.json"))
            .send()
            .await
            .unwrap(),
        StatusCode::OK,
    )
    .await;
    for path in [
        "/v1/trunks",
        "/v1/trunks/{id}",
        "/v1/numbers",
        "/v1/numbers/{number}",
        "/v1/cdrs",
        "/v1/stats",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} missing");
    }
    let create = &doc["components"]["schemas"]["OutboundSpec"]["properties"]["password"];
    assert_eq!(create["writeOnly"], true, "{create}");
    assert!(doc["paths"]["/v1/cdrs"]["get"]["responses"]["200"]["content"]["text/csv"].is_object());
    // Auth applies.
    problem(
        gw.anon_client()
            .get(gw.url("/v1/trunks"))
            .send()
            .await
            .unwrap(),
        StatusCode::UNAUTHORIZED,
    )
    .await;
}
