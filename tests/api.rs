//! Control API tests against the real binary (SPEC §4).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;

use chrono::Duration;
use reqwest::{Response, StatusCode};
use serde_json::{json, Value};
use voxgate::store::{Registration, RegistrationChange, Store};

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
                assert!(
                    op["requestBody"]["content"]["application/json"]["schema"].is_object(),
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
        ("DELETE", "/v1/api-keys/{id}"),
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
