//! Control API tests against the real binary (SPEC §4).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;

use chrono::{DateTime, Duration, Utc};
use reqwest::{Response, StatusCode};
use serde_json::{json, Value};
use voxgate::calls::record::{
    CallChange, CallDirection, CallStatus, HangupBy, LegDirection, NewCall, NewLeg,
};
use voxgate::ids::{new_id, IdKind};
use voxgate::store::{fmt_time, Registration, RegistrationChange, Store};

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
    assert_eq!(v["status"], status.as_u16(), "{v}");
    for k in ["type", "title", "detail"] {
        assert!(v[k].is_string(), "problem lacks {k}: {v}");
    }
    v
}

/// The fields named in a 422 problem.
async fn invalid_fields(resp: Response) -> Vec<String> {
    let v = problem(resp, StatusCode::UNPROCESSABLE_ENTITY).await;
    v["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("422 without errors: {v}"))
        .iter()
        .map(|e| {
            assert!(e["message"].is_string(), "{v}");
            e["field"].as_str().unwrap().to_owned()
        })
        .collect()
}

async fn create_agent(gw: &Gateway, body_json: Value) -> Response {
    gw.client()
        .post(gw.url("/v1/agents"))
        .json(&body_json)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn health_ready_and_metrics() {
    let gw = Gateway::start().await;
    let anon = gw.anon_client();
    let (s, v) = body(anon.get(gw.url("/healthz")).send().await.unwrap()).await;
    assert_eq!((s, v["status"].as_str()), (StatusCode::OK, Some("ok")));
    let (s, v) = body(anon.get(gw.url("/readyz")).send().await.unwrap()).await;
    assert_eq!((s, v["status"].as_str()), (StatusCode::OK, Some("ready")));

    let r = anon.get(gw.url("/metrics")).send().await.unwrap();
    assert!(r.headers().get("www-authenticate").is_some());
    problem(r, StatusCode::UNAUTHORIZED).await;

    let r = gw.client().get(gw.url("/metrics")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let text = r.text().await.unwrap();
    assert!(
        text.contains("voxgate_api_requests_total"),
        "metrics text: {text}"
    );
}

#[tokio::test]
async fn metrics_can_be_public() {
    let gw = Gateway::start_with(&[("VOXGATE_API_METRICS_PUBLIC", "true")], None).await;
    let r = gw
        .anon_client()
        .get(gw.url("/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test]
async fn unauthorized_without_or_with_bad_key() {
    let gw = Gateway::start().await;
    for client in [
        gw.anon_client(),
        gw.client_with_key("vxk_not_a_real_key"),
        gw.client_with_key(""),
    ] {
        let r = client.get(gw.url("/v1/agents")).send().await.unwrap();
        assert_eq!(
            r.headers()["www-authenticate"].to_str().unwrap(),
            "Bearer realm=\"voxgate\""
        );
        problem(r, StatusCode::UNAUTHORIZED).await;
    }
    // 401 comes before body validation.
    let r = gw
        .anon_client()
        .post(gw.url("/v1/agents"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    problem(r, StatusCode::UNAUTHORIZED).await;
    // Basic auth is not accepted.
    let r = gw
        .anon_client()
        .get(gw.url("/v1/agents"))
        .basic_auth("admin", Some(common::TEST_API_KEY))
        .send()
        .await
        .unwrap();
    problem(r, StatusCode::UNAUTHORIZED).await;
}

#[tokio::test]
async fn agent_lifecycle() {
    let gw = Gateway::start().await;
    let c = gw.client();
    let r = create_agent(
        &gw,
        json!({"username": "alice", "password": "secret123", "display_name": "Alice A",
               "skills": ["sales", "hindi", "sales"], "max_concurrent_calls": 2, "wrap_up_seconds": 15}),
    )
    .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let location = r.headers()["location"].to_str().unwrap().to_owned();
    let (_, a) = body(r).await;
    let id = a["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("agt_"), "{a}");
    assert_eq!(location, format!("/v1/agents/{id}"));
    assert_eq!(a["username"], "alice");
    assert_eq!(a["display_name"], "Alice A");
    assert_eq!(a["skills"], json!(["sales", "hindi"]));
    assert_eq!(a["max_concurrent_calls"], 2);
    assert_eq!(a["wrap_up_seconds"], 15);
    assert_eq!(a["state"], "offline");
    assert_eq!(a["presence"], "available");
    assert_eq!(a["registrations"], json!([]));
    let obj = a.as_object().unwrap();
    for secret in ["password", "ha1_md5", "ha1_sha256", "realm"] {
        assert!(!obj.contains_key(secret), "{secret} leaked: {a}");
    }
    assert!(a["created_at"].as_str().unwrap().ends_with('Z'));

    // Defaults.
    let (s, b) =
        body(create_agent(&gw, json!({"username": "bob", "password": "password-b"})).await).await;
    assert_eq!(s, StatusCode::CREATED);
    assert_eq!(b["max_concurrent_calls"], 1);
    assert_eq!(b["wrap_up_seconds"], 0);
    assert_eq!(b["skills"], json!([]));

    // Get by id and by username.
    for reference in [id.as_str(), "alice"] {
        let (s, got) = body(
            c.get(gw.url(&format!("/v1/agents/{reference}")))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(got["id"], id.as_str());
    }
    let (s, list) = body(c.get(gw.url("/v1/agents")).send().await.unwrap()).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(list["data"].as_array().unwrap().len(), 2);
    assert_eq!(list["next"], Value::Null);

    // Patch by username.
    let r = c
        .patch(gw.url("/v1/agents/alice"))
        .json(
            &json!({"display_name": null, "skills": ["support"], "max_concurrent_calls": 5,
                      "wrap_up_seconds": 0, "password": "another-secret"}),
        )
        .send()
        .await
        .unwrap();
    let (s, p) = body(r).await;
    assert_eq!(s, StatusCode::OK, "{p}");
    assert_eq!(p["display_name"], Value::Null);
    assert_eq!(p["skills"], json!(["support"]));
    assert_eq!(p["max_concurrent_calls"], 5);

    // Username is immutable.
    let r = c
        .patch(gw.url(&format!("/v1/agents/{id}")))
        .json(&json!({"username": "mallory"}))
        .send()
        .await
        .unwrap();
    assert_eq!(invalid_fields(r).await, vec!["username"]);

    // Presence.
    let (s, p) = body(
        c.post(gw.url("/v1/agents/alice/status"))
            .json(&json!({"status": "away"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(p["presence"], "away");
    assert_eq!(p["state"], "offline");
    let r = c
        .post(gw.url("/v1/agents/alice/status"))
        .json(&json!({"status": "busy"}))
        .send()
        .await
        .unwrap();
    assert_eq!(invalid_fields(r).await, vec!["status"]);

    // Delete.
    let r = c.delete(gw.url("/v1/agents/alice")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = c
        .get(gw.url(&format!("/v1/agents/{id}")))
        .send()
        .await
        .unwrap();
    problem(r, StatusCode::NOT_FOUND).await;
    let r = c.delete(gw.url("/v1/agents/alice")).send().await.unwrap();
    problem(r, StatusCode::NOT_FOUND).await;
    let r = c
        .patch(gw.url("/v1/agents/alice"))
        .json(&json!({"wrap_up_seconds": 1}))
        .send()
        .await
        .unwrap();
    problem(r, StatusCode::NOT_FOUND).await;
}

#[tokio::test]
async fn agent_shows_live_registrations_and_state() {
    let gw = Gateway::start().await;
    let (_, a) =
        body(create_agent(&gw, json!({"username": "alice", "password": "secret123"})).await).await;
    let id = a["id"].as_str().unwrap();
    // Write a registration the way the registrar does, through the library, into the
    // same SQLite database (WAL allows this alongside the gateway).
    let url = format!("sqlite://{}/voxgate.db", gw.data_dir.display());
    let store = Store::connect(&url, 1).await.unwrap();
    let live = Registration {
        id: voxgate::ids::new_id(voxgate::ids::IdKind::Registration),
        agent_id: id.to_owned(),
        contact: "sip:alice@192.0.2.10:5062".into(),
        transport: "udp".into(),
        source: "192.0.2.10:5062".into(),
        expires_at: voxgate::store::now() + Duration::seconds(600),
        user_agent: Some("baresip 3.x".into()),
        call_id: "abc".into(),
        cseq: 3,
    };
    let expired = Registration {
        id: voxgate::ids::new_id(voxgate::ids::IdKind::Registration),
        contact: "sip:alice@192.0.2.11:5062".into(),
        expires_at: voxgate::store::now() - Duration::seconds(5),
        ..live.clone()
    };
    store
        .apply_registration_changes(&[
            RegistrationChange::Upsert(live.clone()),
            RegistrationChange::Upsert(expired),
        ])
        .await
        .unwrap();
    store.close().await;

    let (_, got) = body(
        gw.client()
            .get(gw.url("/v1/agents/alice"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(got["state"], "available");
    let regs = got["registrations"].as_array().unwrap();
    assert_eq!(regs.len(), 1, "{got}");
    assert_eq!(regs[0]["contact"], live.contact.as_str());
    assert_eq!(regs[0]["transport"], "udp");
    assert_eq!(regs[0]["source"], "192.0.2.10:5062");
    assert_eq!(regs[0]["user_agent"], "baresip 3.x");
    assert_eq!(
        regs[0]["expires_at"],
        voxgate::store::fmt_time(live.expires_at).as_str()
    );
    let (_, got) = body(
        gw.client()
            .post(gw.url("/v1/agents/alice/status"))
            .json(&json!({"status": "away"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(got["state"], "away");
    let (_, list) = body(gw.client().get(gw.url("/v1/agents")).send().await.unwrap()).await;
    assert_eq!(
        list["data"][0]["registrations"].as_array().unwrap().len(),
        1
    );
}

#[tokio::test]
async fn bad_input_is_a_precise_problem() {
    let gw = Gateway::start().await;
    let c = gw.client();

    let cases = [
        (json!({"password": "secret123"}), "username"),
        (json!({"username": "alice"}), "password"),
        (
            json!({"username": "al ice", "password": "secret123"}),
            "username",
        ),
        (json!({"username": "", "password": "secret123"}), "username"),
        (
            json!({"username": "x".repeat(65), "password": "secret123"}),
            "username",
        ),
        (
            json!({"username": "alice", "password": "short"}),
            "password",
        ),
        (
            json!({"username": "alice", "password": "secret123", "max_concurrent_calls": 0}),
            "max_concurrent_calls",
        ),
        (
            json!({"username": "alice", "password": "secret123", "max_concurrent_calls": 101}),
            "max_concurrent_calls",
        ),
        (
            json!({"username": "alice", "password": "secret123", "max_concurrent_calls": "two"}),
            "max_concurrent_calls",
        ),
        (
            json!({"username": "alice", "password": "secret123", "wrap_up_seconds": 3601}),
            "wrap_up_seconds",
        ),
        (
            json!({"username": "alice", "password": "secret123", "skills": ["ok", "not ok"]}),
            "skills[1]",
        ),
        (
            json!({"username": "alice", "password": "secret123", "skills": "sales"}),
            "skills",
        ),
        (
            json!({"username": "alice", "password": "secret123", "bogus": true}),
            "bogus",
        ),
        (json!({"username": 42, "password": "secret123"}), "username"),
    ];
    for (input, field) in cases {
        let fields = invalid_fields(create_agent(&gw, input.clone()).await).await;
        assert!(
            fields.iter().any(|f| f == field),
            "{input} → {fields:?}, expected {field}"
        );
    }
    // Several bad fields are all reported.
    let fields = invalid_fields(
        create_agent(
            &gw,
            json!({"username": "a b", "password": "x", "wrap_up_seconds": -1}),
        )
        .await,
    )
    .await;
    assert_eq!(fields, vec!["username", "password", "wrap_up_seconds"]);

    // Nothing was created by any of that.
    let (_, list) = body(c.get(gw.url("/v1/agents")).send().await.unwrap()).await;
    assert_eq!(list["data"], json!([]));

    // 400 malformed JSON.
    let r = c
        .post(gw.url("/v1/agents"))
        .header("content-type", "application/json")
        .body("{\"username\": \"alice\",")
        .send()
        .await
        .unwrap();
    problem(r, StatusCode::BAD_REQUEST).await;
    // 415 not JSON.
    let r = c
        .post(gw.url("/v1/agents"))
        .header("content-type", "text/plain")
        .body("username=alice")
        .send()
        .await
        .unwrap();
    problem(r, StatusCode::UNSUPPORTED_MEDIA_TYPE).await;
    // 413 over 1 MiB.
    let big =
        json!({"username": "alice", "password": "secret123", "display_name": "x".repeat(2 << 20)});
    let r = c
        .post(gw.url("/v1/agents"))
        .json(&big)
        .send()
        .await
        .unwrap();
    problem(r, StatusCode::PAYLOAD_TOO_LARGE).await;

    // 409 duplicate username, naming the field.
    let r = create_agent(&gw, json!({"username": "alice", "password": "secret123"})).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = create_agent(
        &gw,
        json!({"username": "alice", "password": "other-secret"}),
    )
    .await;
    let v = problem(r, StatusCode::CONFLICT).await;
    assert_eq!(v["errors"][0]["field"], "username", "{v}");

    // Pagination parameters.
    for q in ["limit=0", "limit=201", "limit=abc", "limit=-1"] {
        let r = c
            .get(gw.url(&format!("/v1/agents?{q}")))
            .send()
            .await
            .unwrap();
        assert_eq!(invalid_fields(r).await, vec!["limit"], "{q}");
    }

    // Unknown route and wrong method are problems too.
    let v = problem(
        c.get(gw.url("/v1/nothing-here")).send().await.unwrap(),
        StatusCode::NOT_FOUND,
    )
    .await;
    assert_eq!(v["type"], "/problems/no-route");
    let r = c.put(gw.url("/v1/agents")).send().await.unwrap();
    let allow = r.headers()["allow"].to_str().unwrap().to_owned();
    assert!(allow.contains("GET") && allow.contains("POST"), "{allow}");
    problem(r, StatusCode::METHOD_NOT_ALLOWED).await;
}

#[tokio::test]
async fn pagination_follows_next() {
    let gw = Gateway::start().await;
    let c = gw.client();
    let mut created = Vec::new();
    for i in 0..7 {
        let (s, a) = body(
            create_agent(
                &gw,
                json!({"username": format!("agent{i}"), "password": "secret123"}),
            )
            .await,
        )
        .await;
        assert_eq!(s, StatusCode::CREATED);
        created.push(a["id"].as_str().unwrap().to_owned());
    }
    let mut seen = Vec::new();
    let mut pages = 0;
    let mut url = gw.url("/v1/agents?limit=3");
    loop {
        let (s, page) = body(c.get(&url).send().await.unwrap()).await;
        assert_eq!(s, StatusCode::OK, "{page}");
        pages += 1;
        let data = page["data"].as_array().unwrap();
        assert!(data.len() <= 3);
        seen.extend(data.iter().map(|a| a["id"].as_str().unwrap().to_owned()));
        match page["next"].as_str() {
            Some(next) => {
                assert_eq!(Some(next), data.last().and_then(|a| a["id"].as_str()));
                url = gw.url(&format!("/v1/agents?limit=3&after={next}"));
            }
            None => break,
        }
        assert!(pages < 10, "pagination does not end");
    }
    assert_eq!(pages, 3);
    assert_eq!(
        seen, created,
        "pages are in creation order with no gaps or repeats"
    );
}

#[tokio::test]
async fn api_keys_create_list_delete() {
    let gw = Gateway::start().await;
    let c = gw.client();
    let (s, created) = body(
        c.post(gw.url("/v1/api-keys"))
            .json(&json!({"name": "crm"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{created}");
    let key = created["key"].as_str().unwrap().to_owned();
    let id = created["id"].as_str().unwrap().to_owned();
    assert!(key.starts_with("vxk_"));
    assert!(id.starts_with("key_"));
    assert_eq!(created["key_prefix"], &key[..8]);

    // The new key works, and shows up in the list without the key itself.
    let other = gw.client_with_key(&key);
    let (s, list) = body(other.get(gw.url("/v1/api-keys")).send().await.unwrap()).await;
    assert_eq!(s, StatusCode::OK);
    let data = list["data"].as_array().unwrap();
    assert_eq!(data.len(), 2, "bootstrap key + crm: {list}");
    let crm = data.iter().find(|k| k["id"] == id.as_str()).unwrap();
    assert_eq!(crm["name"], "crm");
    assert!(crm.get("key").is_none(), "{crm}");
    assert!(crm["last_used_at"].is_string(), "used just now: {crm}");
    assert!(!list.to_string().contains(&key));

    // Validation.
    let r = c
        .post(gw.url("/v1/api-keys"))
        .json(&json!({"name": ""}))
        .send()
        .await
        .unwrap();
    assert_eq!(invalid_fields(r).await, vec!["name"]);
    let r = c
        .post(gw.url("/v1/api-keys"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(invalid_fields(r).await, vec!["name"]);

    // Deleting it revokes it at once.
    let r = c
        .delete(gw.url(&format!("/v1/api-keys/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = other.get(gw.url("/v1/agents")).send().await.unwrap();
    problem(r, StatusCode::UNAUTHORIZED).await;
    let r = c
        .delete(gw.url(&format!("/v1/api-keys/{id}")))
        .send()
        .await
        .unwrap();
    problem(r, StatusCode::NOT_FOUND).await;
    // The configured key still works.
    assert_eq!(
        c.get(gw.url("/v1/agents")).send().await.unwrap().status(),
        StatusCode::OK
    );
}

/// Substitute path parameters so a request reaches the route.
fn concrete(path: &str) -> String {
    path.replace("{id}", "nobody")
}

#[tokio::test]
async fn openapi_lists_every_route_and_docs_render_it() {
    let gw = Gateway::start().await;
    let (s, doc) = body(
        gw.anon_client()
            .get(gw.url("/openapi.json"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1"),
        "{}",
        doc["openapi"]
    );
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );

    let mut documented = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            if !["get", "post", "put", "patch", "delete"].contains(&method.as_str()) {
                continue;
            }
            documented.insert((method.to_ascii_uppercase(), path.clone()));
            assert!(op["responses"].as_object().is_some_and(|r| !r.is_empty()));
            if path.starts_with("/v1/") {
                assert!(
                    op["security"].to_string().contains("bearer"),
                    "{method} {path} lacks security"
                );
            }
            if ["post", "patch", "put"].contains(&method.as_str()) {
                // JSON, or a file upload's multipart form (POST /v1/prompts).
                let content = &op["requestBody"]["content"];
                assert!(
                    content["application/json"]["schema"].is_object()
                        || content["multipart/form-data"]["schema"].is_object(),
                    "{method} {path} lacks a request schema"
                );
            }
        }
    }
    // The router's own route list (the same declarations that mount the routes).
    let mounted: BTreeSet<(String, String)> = voxgate::api::route_list().into_iter().collect();
    assert_eq!(documented, mounted);
    for expected in [
        ("POST", "/v1/agents"),
        ("GET", "/v1/agents"),
        ("GET", "/v1/agents/{id}"),
        ("PATCH", "/v1/agents/{id}"),
        ("DELETE", "/v1/agents/{id}"),
        ("POST", "/v1/agents/{id}/status"),
        ("POST", "/v1/api-keys"),
        ("GET", "/v1/api-keys"),
        ("GET", "/v1/calls"),
        ("GET", "/v1/calls/{id}"),
        ("POST", "/v1/calls/{id}/hangup"),
        ("DELETE", "/v1/api-keys/{id}"),
        ("POST", "/v1/webhooks"),
        ("GET", "/v1/webhooks"),
        ("GET", "/v1/webhooks/{id}"),
        ("PATCH", "/v1/webhooks/{id}"),
        ("DELETE", "/v1/webhooks/{id}"),
        ("GET", "/v1/webhooks/{id}/deliveries"),
        ("POST", "/v1/webhooks/{id}/test"),
        ("GET", "/healthz"),
        ("GET", "/readyz"),
        ("GET", "/metrics"),
        ("GET", "/openapi.json"),
        ("GET", "/docs"),
    ] {
        assert!(
            mounted.contains(&(expected.0.to_owned(), expected.1.to_owned())),
            "{expected:?} missing"
        );
    }
    // Every listed route is really mounted in the running binary: neither the
    // no-route 404 nor a 405.
    let c = gw.client();
    for (method, path) in &mounted {
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let r = c
            .request(m, gw.url(&concrete(path)))
            .header("content-type", "application/json")
            .body("{}")
            .send()
            .await
            .unwrap();
        let status = r.status();
        let text = r.text().await.unwrap();
        assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
        assert!(
            !text.contains("/problems/no-route"),
            "{method} {path} not mounted: {text}"
        );
    }

    let r = gw.anon_client().get(gw.url("/docs")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let html = r.text().await.unwrap();
    assert!(
        !html.contains("<script"),
        "docs must work offline without scripts"
    );
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "no external resources"
    );
    for (method, path) in &mounted {
        assert!(
            html.contains(&format!("<code>{path}</code>")),
            "/docs lacks {path}"
        );
        assert!(html.contains(&method.to_ascii_lowercase()));
    }
    for schema in [
        "CreateAgent",
        "AgentView",
        "PatchAgent",
        "Problem",
        "CreatedApiKey",
        "CallView",
        "LegView",
    ] {
        assert!(html.contains(schema), "/docs lacks schema {schema}");
    }
}

#[tokio::test]
async fn generated_key_is_printed_once() {
    let mut gw = Gateway::start_with(&[("VOXGATE_API_KEY", "")], None).await;
    let keys = gw.generated_keys();
    assert_eq!(keys.len(), 1, "stdout: {}", gw.stdout());
    let key = keys[0].clone();
    assert!(key.starts_with("vxk_") && key.len() == 68, "{key}");
    let r = gw
        .client_with_key(&key)
        .get(gw.url("/v1/agents"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);

    gw.restart().await;
    assert_eq!(
        gw.generated_keys(),
        vec![key.clone()],
        "printed again on restart"
    );
    let r = gw
        .client_with_key(&key)
        .get(gw.url("/v1/agents"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let (_, list) = body(
        gw.client_with_key(&key)
            .get(gw.url("/v1/api-keys"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(list["data"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn data_survives_restart_and_sigterm_exits_zero() {
    let mut gw = Gateway::start().await;
    let (s, _) =
        body(create_agent(&gw, json!({"username": "alice", "password": "secret123"})).await).await;
    assert_eq!(s, StatusCode::CREATED);
    let status = gw.stop().await;
    assert!(status.success(), "exit status {status}");
    gw.restart().await;
    let (s, a) = body(
        gw.client()
            .get(gw.url("/v1/agents/alice"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{a}");
    // The configured key is stored once, not once per start.
    let (_, keys) = body(
        gw.client()
            .get(gw.url("/v1/api-keys"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(keys["data"].as_array().unwrap().len(), 1, "{keys}");
    // A crash (SIGKILL) loses nothing committed either.
    gw.kill9();
    gw.restart().await;
    let r = gw
        .client()
        .get(gw.url("/v1/agents/alice"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test]
async fn postgres_backend_serves_the_same_api() {
    let mut gw = Gateway::start_pg().await;
    let (s, a) = body(
        create_agent(
            &gw,
            json!({"username": "alice", "password": "secret123", "skills": ["sales"]}),
        )
        .await,
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{a}");
    let r = create_agent(&gw, json!({"username": "alice", "password": "secret123"})).await;
    problem(r, StatusCode::CONFLICT).await;
    for i in 0..3 {
        create_agent(
            &gw,
            json!({"username": format!("u{i}"), "password": "secret123"}),
        )
        .await;
    }
    let (_, p1) = body(
        gw.client()
            .get(gw.url("/v1/agents?limit=2"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let next = p1["next"].as_str().unwrap();
    let (_, p2) = body(
        gw.client()
            .get(gw.url(&format!("/v1/agents?limit=2&after={next}")))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(p2["data"].as_array().unwrap().len(), 2);
    assert_eq!(p2["next"], Value::Null);
    gw.restart().await;
    let r = gw
        .client()
        .get(gw.url("/v1/agents/alice"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

/// Write call records the way the call engine's recorder does, through the library, into
/// the running gateway's database.
async fn seed(gw: &Gateway, changes: &[CallChange]) {
    let store = Store::connect(&gw.database_url(), 1).await.unwrap();
    store.apply_call_changes(changes).await.unwrap();
    store.close().await;
}

fn call(agent_id: Option<&str>, from: &str, to: &str, started_at: DateTime<Utc>) -> NewCall {
    NewCall {
        id: new_id(IdKind::Call),
        direction: CallDirection::Internal,
        from: from.to_owned(),
        to: to.to_owned(),
        agent_id: agent_id.map(str::to_owned),
        status: CallStatus::Ringing,
        started_at,
        status_callback: None,
        metadata: None,
    }
}

fn leg(call: &NewCall, direction: LegDirection, agent_id: Option<&str>, uri: &str) -> NewLeg {
    NewLeg {
        id: new_id(IdKind::Leg),
        call_id: call.id.clone(),
        direction,
        agent_id: agent_id.map(str::to_owned),
        uri: uri.to_owned(),
        sip_call_id: format!("{}@test", new_id(IdKind::Leg)),
        status: CallStatus::Ringing,
        started_at: call.started_at,
    }
}

fn ended(call: &NewCall, status: CallStatus, secs: i64, cause: &str) -> CallChange {
    CallChange::CallEnded {
        call_id: call.id.clone(),
        status,
        at: call.started_at + Duration::seconds(secs),
        duration_seconds: if status == CallStatus::Completed {
            secs - 2
        } else {
            0
        },
        hangup_cause: cause.to_owned(),
        hangup_by: HangupBy::Caller,
    }
}

async fn get_json(gw: &Gateway, path: &str) -> Value {
    let (s, v) = body(gw.client().get(gw.url(path)).send().await.unwrap()).await;
    assert_eq!(s, StatusCode::OK, "GET {path}: {v}");
    v
}

fn data_ids(list: &Value) -> Vec<String> {
    list["data"]
        .as_array()
        .unwrap_or_else(|| panic!("no data: {list}"))
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_owned())
        .collect()
}

async fn agent_state(gw: &Gateway, agent: &str) -> String {
    get_json(gw, &format!("/v1/agents/{agent}")).await["state"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn calls_list_get_filter_and_paginate() {
    let gw = Gateway::start().await;
    let (_, alice) =
        body(create_agent(&gw, json!({"username": "alice", "password": "secret123"})).await).await;
    let (_, bob) =
        body(create_agent(&gw, json!({"username": "bob", "password": "secret123"})).await).await;
    let alice = alice["id"].as_str().unwrap().to_owned();
    let bob = bob["id"].as_str().unwrap().to_owned();
    assert_eq!(
        gw.client()
            .get(gw.url("/v1/calls"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        get_json(&gw, "/v1/calls").await,
        json!({"data": [], "next": null})
    );

    let t0 = voxgate::store::now() - Duration::hours(1);
    // c0: alice called bob, answered, completed. c1: a number called alice, busy.
    // c2: alice is calling bob now (ringing).
    let c0 = call(Some(&alice), "sip:alice@voxgate", "sip:bob@voxgate", t0);
    let c0a = leg(
        &c0,
        LegDirection::Inbound,
        Some(&alice),
        "sip:alice@192.0.2.10:5062",
    );
    let c0b = leg(
        &c0,
        LegDirection::Outbound,
        Some(&bob),
        "sip:bob@192.0.2.20:5062",
    );
    let c1 = call(
        None,
        "sip:+919876543210@trunk.example",
        "sip:alice@voxgate",
        t0 + Duration::minutes(10),
    );
    let c1a = leg(
        &c1,
        LegDirection::Outbound,
        Some(&alice),
        "sip:alice@192.0.2.10:5062",
    );
    let c2 = call(
        Some(&alice),
        "sip:alice@voxgate",
        "sip:bob@voxgate",
        t0 + Duration::minutes(20),
    );
    let c2a = leg(
        &c2,
        LegDirection::Inbound,
        Some(&alice),
        "sip:alice@192.0.2.10:5062",
    );
    let c2b = leg(
        &c2,
        LegDirection::Outbound,
        Some(&bob),
        "sip:bob@192.0.2.20:5062",
    );
    seed(
        &gw,
        &[
            CallChange::CreateCall(c0.clone()),
            CallChange::CreateLeg(c0a.clone()),
            CallChange::CreateLeg(c0b.clone()),
            CallChange::CallAnswered {
                call_id: c0.id.clone(),
                at: t0 + Duration::seconds(2),
            },
            CallChange::LegStatus {
                leg_id: c0b.id.clone(),
                status: CallStatus::InProgress,
                at: t0 + Duration::seconds(2),
                hangup_cause: None,
            },
            ended(&c0, CallStatus::Completed, 62, "BYE"),
            CallChange::CreateCall(c1.clone()),
            CallChange::CreateLeg(c1a.clone()),
            CallChange::LegStatus {
                leg_id: c1a.id.clone(),
                status: CallStatus::Busy,
                at: c1.started_at + Duration::seconds(1),
                hangup_cause: Some("486 Busy Here".into()),
            },
            ended(&c1, CallStatus::Busy, 1, "486 Busy Here"),
            CallChange::CreateCall(c2.clone()),
            CallChange::CreateLeg(c2a.clone()),
            CallChange::CreateLeg(c2b.clone()),
        ],
    )
    .await;

    // The record as SPEC §4 names it.
    let got = get_json(&gw, &format!("/v1/calls/{}", c0.id)).await;
    let keys: BTreeSet<&str> = got
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let expected: BTreeSet<&str> = [
        "id",
        "status",
        "direction",
        "from",
        "to",
        "agent",
        "legs",
        "answered_by",
        "started_at",
        "answered_at",
        "ended_at",
        "duration_seconds",
        "hangup_cause",
        "hangup_by",
        "recording_ids",
        "ivr_inputs",
        "trunk",
        "cost",
        "currency",
        "metadata",
        "status_callback",
    ]
    .into_iter()
    .collect();
    assert_eq!(keys, expected, "{got}");
    assert_eq!(got["ivr_inputs"], json!([]), "no program ran: {got}");
    assert_eq!(got["id"], c0.id.as_str());
    assert_eq!(got["status"], "completed");
    assert_eq!(got["direction"], "internal");
    assert_eq!(got["from"], "sip:alice@voxgate");
    assert_eq!(got["to"], "sip:bob@voxgate");
    assert_eq!(got["agent"], alice.as_str());
    assert_eq!(got["answered_by"], Value::Null);
    assert_eq!(got["started_at"], fmt_time(t0).as_str());
    assert_eq!(
        got["answered_at"],
        fmt_time(t0 + Duration::seconds(2)).as_str()
    );
    assert_eq!(
        got["ended_at"],
        fmt_time(t0 + Duration::seconds(62)).as_str()
    );
    assert_eq!(got["duration_seconds"], 60);
    assert_eq!(got["hangup_cause"], "BYE");
    assert_eq!(got["hangup_by"], "caller");
    assert_eq!(got["recording_ids"], json!([]));
    assert_eq!(got["metadata"], Value::Null);
    let legs = got["legs"].as_array().unwrap();
    assert_eq!(legs.len(), 2, "{got}");
    let leg_keys: BTreeSet<&str> = legs[1]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let expected: BTreeSet<&str> = [
        "id",
        "direction",
        "agent",
        "uri",
        "status",
        "started_at",
        "answered_at",
        "ended_at",
        "hangup_cause",
    ]
    .into_iter()
    .collect();
    assert_eq!(leg_keys, expected, "{got}");
    assert_eq!(legs[0]["id"], c0a.id.as_str());
    assert_eq!(legs[0]["direction"], "inbound");
    assert_eq!(legs[1]["direction"], "outbound");
    assert_eq!(legs[1]["agent"], bob.as_str());
    assert_eq!(legs[1]["uri"], "sip:bob@192.0.2.20:5062");
    assert_eq!(legs[1]["status"], "completed");
    assert_eq!(
        legs[1]["answered_at"],
        fmt_time(t0 + Duration::seconds(2)).as_str()
    );
    assert_eq!(
        legs[1]["ended_at"],
        fmt_time(t0 + Duration::seconds(62)).as_str()
    );
    assert_eq!(legs[1]["hangup_cause"], "BYE");
    let live = get_json(&gw, &format!("/v1/calls/{}", c2.id)).await;
    assert_eq!(live["status"], "ringing");
    for k in [
        "answered_at",
        "ended_at",
        "duration_seconds",
        "hangup_cause",
        "hangup_by",
    ] {
        assert_eq!(live[k], Value::Null, "{k}: {live}");
    }

    // Newest first; filters.
    let all = get_json(&gw, "/v1/calls").await;
    assert_eq!(
        data_ids(&all),
        vec![c2.id.as_str(), c1.id.as_str(), c0.id.as_str()]
    );
    assert_eq!(all["next"], Value::Null);
    assert_eq!(all["data"][2]["legs"].as_array().unwrap().len(), 2);
    let q = |query: &str| {
        let gw = &gw;
        let path = format!("/v1/calls?{query}");
        async move { data_ids(&get_json(gw, &path).await) }
    };
    assert_eq!(q("status=busy").await, vec![c1.id.as_str()]);
    assert_eq!(q("status=ringing").await, vec![c2.id.as_str()]);
    assert_eq!(q("status=no-answer").await, Vec::<String>::new());
    assert_eq!(
        q("agent=alice").await,
        vec![c2.id.as_str(), c1.id.as_str(), c0.id.as_str()]
    );
    assert_eq!(q("agent=bob").await, vec![c2.id.as_str(), c0.id.as_str()]);
    assert_eq!(
        q(&format!("agent={bob}")).await,
        vec![c2.id.as_str(), c0.id.as_str()]
    );
    assert_eq!(q("from=%2B919876543210").await, vec![c1.id.as_str()]);
    assert_eq!(
        q("to=sip:bob@voxgate").await,
        vec![c2.id.as_str(), c0.id.as_str()]
    );
    assert_eq!(q("to=alice&status=busy").await, vec![c1.id.as_str()]);
    let at = |d: Duration| fmt_time(t0 + d);
    assert_eq!(
        q(&format!("since={}", at(Duration::minutes(10)))).await,
        vec![c2.id.as_str(), c1.id.as_str()]
    );
    assert_eq!(
        q(&format!("until={}", at(Duration::minutes(10)))).await,
        vec![c0.id.as_str()]
    );
    assert_eq!(
        q(&format!(
            "since={}&until={}",
            at(Duration::minutes(5)),
            at(Duration::minutes(15))
        ))
        .await,
        vec![c1.id.as_str()]
    );
    // An offset other than Z, percent-encoded.
    let since = (t0 + Duration::minutes(15))
        .with_timezone(&chrono::FixedOffset::east_opt(5 * 3600 + 1800).unwrap())
        .to_rfc3339()
        .replace('+', "%2B");
    assert_eq!(q(&format!("since={since}")).await, vec![c2.id.as_str()]);

    // Pages of 2, newest first, `next` continues with older calls.
    let p1 = get_json(&gw, "/v1/calls?limit=2").await;
    assert_eq!(data_ids(&p1), vec![c2.id.as_str(), c1.id.as_str()]);
    assert_eq!(p1["next"], c1.id.as_str());
    let p2 = get_json(&gw, &format!("/v1/calls?limit=2&after={}", c1.id)).await;
    assert_eq!(data_ids(&p2), vec![c0.id.as_str()]);
    assert_eq!(p2["next"], Value::Null);
    let p = get_json(&gw, &format!("/v1/calls?limit=1&agent=bob&after={}", c2.id)).await;
    assert_eq!(
        (data_ids(&p), &p["next"]),
        (vec![c0.id.clone()], &Value::Null)
    );

    // Bad filters: 422 naming the parameter.
    let c = gw.client();
    for (query, field) in [
        ("status=done", "status"),
        ("status=", "status"),
        ("status=IN-PROGRESS", "status"),
        ("since=yesterday", "since"),
        ("since=2026-01-01", "since"),
        ("until=2026-13-01T00:00:00Z", "until"),
        (
            "since=2026-01-02T00:00:00Z&until=2026-01-01T00:00:00Z",
            "until",
        ),
        ("agent=carol", "agent"),
        ("agent=", "agent"),
        ("campaign=spring", "campaign"),
        ("from=", "from"),
        ("limit=0", "limit"),
    ] {
        let r = c
            .get(gw.url(&format!("/v1/calls?{query}")))
            .send()
            .await
            .unwrap();
        assert_eq!(invalid_fields(r).await, vec![field], "{query}");
    }
    let r = c
        .get(gw.url("/v1/calls?status=nope&since=nope"))
        .send()
        .await
        .unwrap();
    assert_eq!(invalid_fields(r).await, vec!["status", "since"]);

    // 404 for an unknown call.
    for id in ["call_00000000000000000000000000", "nobody"] {
        let r = c
            .get(gw.url(&format!("/v1/calls/{id}")))
            .send()
            .await
            .unwrap();
        problem(r, StatusCode::NOT_FOUND).await;
    }
    let r = gw
        .anon_client()
        .get(gw.url("/v1/calls"))
        .send()
        .await
        .unwrap();
    problem(r, StatusCode::UNAUTHORIZED).await;
}

#[tokio::test]
async fn agent_state_follows_live_calls() {
    let gw = Gateway::start().await;
    for u in ["alice", "bob"] {
        create_agent(&gw, json!({"username": u, "password": "secret123"})).await;
    }
    let alice = get_json(&gw, "/v1/agents/alice").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let bob = get_json(&gw, "/v1/agents/bob").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // Registered and available before any call.
    let store = Store::connect(&gw.database_url(), 1).await.unwrap();
    let registration = Registration {
        id: new_id(IdKind::Registration),
        agent_id: bob.clone(),
        contact: "sip:bob@192.0.2.20:5062".into(),
        transport: "udp".into(),
        source: "192.0.2.20:5062".into(),
        expires_at: voxgate::store::now() + Duration::seconds(600),
        user_agent: None,
        call_id: "r1".into(),
        cseq: 1,
    };
    store
        .apply_registration_changes(&[RegistrationChange::Upsert(registration)])
        .await
        .unwrap();
    store.close().await;
    assert_eq!(agent_state(&gw, "bob").await, "available");
    assert_eq!(agent_state(&gw, "alice").await, "offline");

    // Alice (not registered: her registration lapsed mid-call) calls bob: she is busy,
    // bob's phone rings.
    let c = call(
        Some(&alice),
        "sip:alice@voxgate",
        "sip:bob@voxgate",
        voxgate::store::now(),
    );
    let a = leg(
        &c,
        LegDirection::Inbound,
        Some(&alice),
        "sip:alice@192.0.2.10:5062",
    );
    let b = leg(
        &c,
        LegDirection::Outbound,
        Some(&bob),
        "sip:bob@192.0.2.20:5062",
    );
    seed(
        &gw,
        &[
            CallChange::CreateCall(c.clone()),
            CallChange::CreateLeg(a),
            CallChange::CreateLeg(b.clone()),
        ],
    )
    .await;
    assert_eq!(agent_state(&gw, "alice").await, "busy");
    assert_eq!(agent_state(&gw, "bob").await, "ringing");
    let list = get_json(&gw, "/v1/agents").await;
    let states: Vec<&str> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, vec!["busy", "ringing"]);

    // Bob answers: busy, even when away.
    seed(
        &gw,
        &[
            CallChange::LegStatus {
                leg_id: b.id.clone(),
                status: CallStatus::InProgress,
                at: voxgate::store::now(),
                hangup_cause: None,
            },
            CallChange::CallAnswered {
                call_id: c.id.clone(),
                at: voxgate::store::now(),
            },
        ],
    )
    .await;
    let r = gw
        .client()
        .post(gw.url("/v1/agents/bob/status"))
        .json(&json!({"status": "away"}))
        .send()
        .await
        .unwrap();
    assert_eq!(body(r).await.1["state"], "busy");

    // The call ends: back to the registration and presence.
    seed(&gw, &[ended(&c, CallStatus::Completed, 10, "BYE")]).await;
    assert_eq!(agent_state(&gw, "bob").await, "away");
    assert_eq!(agent_state(&gw, "alice").await, "offline");
}

#[tokio::test]
async fn hangup_checks_the_call_first() {
    let gw = Gateway::start().await;
    let done = call(None, "sip:a@x", "sip:b@x", voxgate::store::now());
    seed(
        &gw,
        &[
            CallChange::CreateCall(done.clone()),
            ended(&done, CallStatus::NoAnswer, 30, "408"),
        ],
    )
    .await;
    let c = gw.client();
    let hangup = |id: &str| gw.url(&format!("/v1/calls/{id}/hangup"));

    let v = problem(
        c.post(hangup("call_00000000000000000000000000"))
            .send()
            .await
            .unwrap(),
        StatusCode::NOT_FOUND,
    )
    .await;
    assert_eq!(v["type"], "/problems/not-found");
    // An ended call: 409, with or without the (optional, empty) body.
    let v = problem(
        c.post(hangup(&done.id)).send().await.unwrap(),
        StatusCode::CONFLICT,
    )
    .await;
    assert_eq!(v["type"], "/problems/invalid-state");
    assert!(v["detail"].as_str().unwrap().contains("no-answer"), "{v}");
    let r = c
        .post(hangup(&done.id))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    problem(r, StatusCode::CONFLICT).await;
    // The body, when present, is checked like any other.
    let r = c
        .post(hangup(&done.id))
        .json(&json!({"reason": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(invalid_fields(r).await, vec!["reason"]);
    let r = c
        .post(hangup(&done.id))
        .header("content-type", "text/plain")
        .body("now")
        .send()
        .await
        .unwrap();
    problem(r, StatusCode::UNSUPPORTED_MEDIA_TYPE).await;
    // Nothing changed.
    let got = get_json(&gw, &format!("/v1/calls/{}", done.id)).await;
    assert_eq!(
        (got["status"].as_str(), got["hangup_by"].as_str()),
        (Some("no-answer"), Some("caller"))
    );
}

async fn restart_closes_open_calls(mut gw: Gateway) {
    let t0 = voxgate::store::now() - Duration::seconds(40);
    let open = call(None, "sip:alice@voxgate", "sip:bob@voxgate", t0);
    let open_leg = leg(
        &open,
        LegDirection::Outbound,
        None,
        "sip:bob@192.0.2.20:5062",
    );
    let ringing = call(None, "sip:alice@voxgate", "sip:carol@voxgate", t0);
    let done = call(None, "sip:alice@voxgate", "sip:dave@voxgate", t0);
    seed(
        &gw,
        &[
            CallChange::CreateCall(open.clone()),
            CallChange::CreateLeg(open_leg.clone()),
            CallChange::LegStatus {
                leg_id: open_leg.id.clone(),
                status: CallStatus::InProgress,
                at: t0 + Duration::seconds(10),
                hangup_cause: None,
            },
            CallChange::CallAnswered {
                call_id: open.id.clone(),
                at: t0 + Duration::seconds(10),
            },
            CallChange::CreateCall(ringing.clone()),
            CallChange::CreateCall(done.clone()),
            ended(&done, CallStatus::Completed, 12, "BYE"),
        ],
    )
    .await;
    let before = get_json(&gw, &format!("/v1/calls/{}", done.id)).await;
    assert_eq!(
        get_json(&gw, &format!("/v1/calls/{}", open.id)).await["status"],
        "in-progress"
    );

    gw.kill9();
    gw.restart().await;
    let got = get_json(&gw, &format!("/v1/calls/{}", open.id)).await;
    assert_eq!(got["status"], "failed", "{got}");
    assert_eq!(got["hangup_cause"], "gateway-restart");
    assert_eq!(got["hangup_by"], "system");
    let ended_at: DateTime<Utc> = got["ended_at"].as_str().unwrap().parse().unwrap();
    assert!(
        ended_at > t0 + Duration::seconds(39) && ended_at <= voxgate::store::now(),
        "{got}"
    );
    // From the answer (t0 + 10 s) to the restart.
    let duration = got["duration_seconds"].as_i64().unwrap();
    assert_eq!(
        duration,
        (ended_at - (t0 + Duration::seconds(10))).num_seconds(),
        "{got}"
    );
    assert!(duration >= 29, "{got}");
    assert_eq!(got["legs"][0]["status"], "failed");
    assert_eq!(got["legs"][0]["hangup_cause"], "gateway-restart");
    let r = get_json(&gw, &format!("/v1/calls/{}", ringing.id)).await;
    assert_eq!(
        (r["status"].as_str(), r["duration_seconds"].as_i64()),
        (Some("failed"), Some(0))
    );
    assert_eq!(
        get_json(&gw, &format!("/v1/calls/{}", done.id)).await,
        before
    );
    assert!(
        gw.log()
            .contains("closed calls left open by the previous run"),
        "{}",
        gw.log()
    );
    // Closed once: a clean restart has nothing left to close.
    gw.restart().await;
    assert_eq!(get_json(&gw, &format!("/v1/calls/{}", open.id)).await, got);
}

#[tokio::test]
async fn restart_closes_open_calls_sqlite() {
    restart_closes_open_calls(Gateway::start().await).await;
}

#[tokio::test]
async fn restart_closes_open_calls_postgres() {
    restart_closes_open_calls(Gateway::start_pg().await).await;
}
