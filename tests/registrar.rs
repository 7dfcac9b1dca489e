//! The registrar against real SIPp 3.6.1, over UDP and TCP: digest challenge (MD5 by
//! default, SHA-256 + MD5 opted in), register / refresh / multiple contacts / expiry bounds / unregister,
//! 403 for wrong passwords, unknown users and other users' AORs (with the same challenge
//! for unknown users as for known ones), the per-source ban, OPTIONS, and registrations
//! surviving a restart. Scenarios are in `tests/sipp/`, the runner in `common/sipp.rs`.
//!
//! SIPp's `[authentication]` answers only the first challenge and only MD5 (see
//! `tests/sipp/README.md`), as many phones do: the default config challenges with MD5 only,
//! and every test but the SHA-256 opt-in one runs on it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "common/sipp.rs"]
mod sipp;

use std::time::{Duration, Instant};

use common::Gateway;
use serde_json::{json, Value};
use sipp::{Contact, SipResponse, Sipp, SippRun, Transport};

const ALICE: (&str, &str) = ("alice", "alicepass1");
/// Parameters every Digest challenge must carry (the acceptance list of the registrar
/// issue; RFC 7616 makes `opaque` optional, the issue asks for it).
const CHALLENGE_PARAMS: [&str; 5] = ["realm", "nonce", "opaque", "algorithm", "qop"];
const BOB: (&str, &str) = ("bob", "bobpass123");

async fn create_agent(gw: &Gateway, (username, password): (&str, &str)) {
    gw.create_agent(json!({ "username": username, "password": password }))
        .await;
}

async fn agent(gw: &Gateway, username: &str) -> Value {
    let r = gw
        .client()
        .get(format!("{}/v1/agents/{username}", gw.api_url))
        .send()
        .await
        .expect("GET /v1/agents/{id}");
    let status = r.status();
    let body = r.text().await.unwrap_or_default();
    assert!(
        status.is_success(),
        "GET /v1/agents/{username}: {status} {body}"
    );
    serde_json::from_str(&body).expect("agent JSON")
}

fn registrations(agent: &Value) -> Vec<Value> {
    agent["registrations"]
        .as_array()
        .cloned()
        .unwrap_or_else(|| panic!("agent without registrations array: {agent}"))
}

/// One REGISTER exchange through `sipp`'s scenario (register.xml, register_reject.xml,
/// register_too_brief.xml): To/From `aor_user`, digest credentials, the Contact header
/// value (`None`: SIPp's own address) and one extra header line.
fn register_run(
    gw: &Gateway,
    sipp: Sipp,
    t: Transport,
    aor_user: &str,
    (auth_user, password): (&str, &str),
    contact: Option<&str>,
    hdr: &str,
) -> SippRun {
    let mut sipp = sipp
        .transport(t)
        .service(aor_user)
        .auth(auth_user, password);
    let contact = match contact {
        Some(c) => c.to_owned(),
        None => sipp.own_contact(aor_user),
    };
    sipp.set("contact", &contact)
        .set("hdr", hdr)
        .run(gw.sip_port)
}

/// The granted expiry of the binding whose URI contains `needle`.
#[track_caller]
fn expires_of(resp: &SipResponse, needle: &str) -> u32 {
    let contacts = resp.contacts();
    let c: Vec<&Contact> = contacts.iter().filter(|c| c.uri.contains(needle)).collect();
    assert_eq!(
        c.len(),
        1,
        "expected exactly one Contact with {needle} in the {} response:\n{}",
        resp.status,
        resp.raw
    );
    c[0].expires.unwrap_or_else(|| {
        panic!(
            "Contact {} has no ;expires= in the {} response:\n{}",
            c[0].raw, resp.status, resp.raw
        )
    })
}

/// The registrar may count down a second between storing and answering.
#[track_caller]
fn assert_expiry(got: u32, want: u32, resp: &SipResponse) {
    assert!(
        got <= want && got + 2 >= want,
        "granted expiry {got}, wanted {want}:\n{}",
        resp.raw
    );
}

#[track_caller]
fn assert_md5_challenge(resp: &SipResponse) {
    assert_eq!(resp.status, 401, "{}", resp.raw);
    let ch = resp.challenges();
    assert_eq!(
        ch.len(),
        1,
        "one challenge (the default, MD5):\n{}",
        resp.raw
    );
    let c = &ch[0];
    assert!(c.scheme.eq_ignore_ascii_case("digest"), "{}", resp.raw);
    assert_eq!(c.param("realm"), Some("voxgate"), "{}", resp.raw);
    assert_eq!(c.param("algorithm"), Some("MD5"), "{}", resp.raw);
    assert!(
        c.param("qop")
            .is_some_and(|q| q.split(',').any(|v| v.trim() == "auth")),
        "qop must offer auth:\n{}",
        resp.raw
    );
    for p in CHALLENGE_PARAMS {
        assert!(
            c.param(p).is_some_and(|v| !v.is_empty()),
            "challenge without {p}:\n{}",
            resp.raw
        );
    }
}

/// Register, refresh, add a contact (default expiry), clamp to the maximum, remove one
/// contact, then all: each 200 lists every current binding with its granted expiry.
async fn register_lifecycle(t: Transport) {
    let gw = Gateway::start().await;
    create_agent(&gw, ALICE).await;

    // 1. First registration, expiry from the Expires header.
    // Transport first: the Contact's transport= parameter comes from it.
    let mut first = Sipp::new("register.xml").transport(t);
    let own = first.own_contact("alice");
    let own_uri = own.trim_start_matches('<').trim_end_matches('>').to_owned();
    let port = first.port();
    let run = register_run(&gw, first, t, "alice", ALICE, Some(&own), "Expires: 3600");
    run.assert_success();
    assert_md5_challenge(run.response(401));
    let ok = run.response(200);
    assert_eq!(ok.contacts().len(), 1, "one binding:\n{}", ok.raw);
    assert_expiry(expires_of(ok, &own_uri), 3600, ok);

    let a = agent(&gw, "alice").await;
    assert_eq!(a["state"], "available", "{a}");
    let regs = registrations(&a);
    assert_eq!(regs.len(), 1, "{a}");
    let contact = regs[0]["contact"].as_str().unwrap_or_default();
    assert!(
        contact.contains(&format!("sip:alice@127.0.0.1:{port}")),
        "registration contact {contact:?} is not SIPp's {own}"
    );
    assert_eq!(
        regs[0]["transport"]
            .as_str()
            .map(str::to_ascii_lowercase)
            .as_deref(),
        Some(t.param()),
        "{a}"
    );

    // 2. Refresh the same contact; the Contact's expires param beats the header.
    let run = register_run(
        &gw,
        Sipp::new("register.xml"),
        t,
        "alice",
        ALICE,
        Some(&format!("{own};expires=120")),
        "Expires: 3600",
    );
    run.assert_success();
    let ok = run.response(200);
    assert_eq!(
        ok.contacts().len(),
        1,
        "a refresh is not a new binding:\n{}",
        ok.raw
    );
    assert_expiry(expires_of(ok, &own_uri), 120, ok);
    assert_eq!(registrations(&agent(&gw, "alice").await).len(), 1);

    // 3. A second contact without any expiry: the default, 3600; both are listed.
    let other_uri = format!("sip:alice@127.0.0.9:5999;transport={}", t.param());
    let run = register_run(
        &gw,
        Sipp::new("register.xml"),
        t,
        "alice",
        ALICE,
        Some(&format!("<{other_uri}>")),
        "X-Voxgate-Test: default expiry",
    );
    run.assert_success();
    let ok = run.response(200);
    assert_eq!(ok.contacts().len(), 2, "both bindings listed:\n{}", ok.raw);
    assert_expiry(expires_of(ok, &own_uri), 120, ok);
    assert_expiry(expires_of(ok, &other_uri), 3600, ok);
    assert_eq!(registrations(&agent(&gw, "alice").await).len(), 2);

    // 4. Above the maximum: clamped to 86400.
    let run = register_run(
        &gw,
        Sipp::new("register.xml"),
        t,
        "alice",
        ALICE,
        Some(&format!("<{other_uri}>;expires=999999")),
        "X-Voxgate-Test: clamp",
    );
    run.assert_success();
    let ok = run.response(200);
    assert_expiry(expires_of(ok, &other_uri), 86400, ok);

    // 5. Remove one contact: the 200 lists the one that remains.
    let run = register_run(
        &gw,
        Sipp::new("register.xml"),
        t,
        "alice",
        ALICE,
        Some(&format!("{own};expires=0")),
        "X-Voxgate-Test: remove one",
    );
    run.assert_success();
    let ok = run.response(200);
    let left = ok.contacts();
    assert_eq!(left.len(), 1, "one binding left:\n{}", ok.raw);
    assert!(left[0].uri.contains(&other_uri), "{}", ok.raw);
    let regs = registrations(&agent(&gw, "alice").await);
    assert_eq!(regs.len(), 1);

    // 6. `Contact: *` with `Expires: 0` removes everything: no Contact in the 200.
    let run = register_run(
        &gw,
        Sipp::new("register.xml"),
        t,
        "alice",
        ALICE,
        Some("*"),
        "Expires: 0",
    );
    run.assert_success();
    let ok = run.response(200);
    assert!(
        ok.header("contact").is_none(),
        "no bindings, no Contact:\n{}",
        ok.raw
    );
    let a = agent(&gw, "alice").await;
    assert_eq!(a["state"], "offline", "{a}");
    assert!(registrations(&a).is_empty(), "{a}");
}

#[tokio::test]
async fn register_refresh_unregister_udp() {
    register_lifecycle(Transport::Udp).await;
}

#[tokio::test]
async fn register_refresh_unregister_tcp() {
    register_lifecycle(Transport::Tcp).await;
}

#[tokio::test]
async fn expiry_below_minimum_is_interval_too_brief() {
    let gw = Gateway::start().await;
    create_agent(&gw, ALICE).await;
    for t in Transport::ALL {
        let run = register_run(
            &gw,
            Sipp::new("register_too_brief.xml"),
            t,
            "alice",
            ALICE,
            None,
            "Expires: 30",
        );
        run.assert_success();
        let brief = run.response(423);
        assert_eq!(
            brief.header("min-expires").map(str::trim),
            Some("60"),
            "{}",
            brief.raw
        );
    }
    let a = agent(&gw, "alice").await;
    assert!(registrations(&a).is_empty(), "a 423 binds nothing: {a}");
    assert_eq!(a["state"], "offline", "{a}");
}

#[tokio::test]
async fn wrong_password_is_forbidden() {
    let gw = Gateway::start().await;
    create_agent(&gw, ALICE).await;
    for t in Transport::ALL {
        let run = register_run(
            &gw,
            Sipp::new("register_reject.xml"),
            t,
            "alice",
            ("alice", "not-the-password"),
            None,
            "Expires: 3600",
        );
        run.assert_success();
        assert_md5_challenge(run.response(401));
        assert_eq!(run.last_response().status, 403);
    }
    assert!(registrations(&agent(&gw, "alice").await).is_empty());
}

/// The challenge for an unknown user must not tell it apart from a known one.
#[track_caller]
fn assert_same_challenge_shape(known: &SipResponse, unknown: &SipResponse) {
    let why = || {
        format!(
            "known user's 401:\n{}\nunknown user's 401:\n{}",
            known.raw, unknown.raw
        )
    };
    assert_eq!(known.status, 401, "{}", why());
    assert_eq!(unknown.status, 401, "{}", why());
    assert_eq!(known.reason, unknown.reason, "{}", why());
    assert_eq!(known.header_names(), unknown.header_names(), "{}", why());
    let (kc, uc) = (known.challenges(), unknown.challenges());
    assert!(!kc.is_empty(), "{}", why());
    assert_eq!(kc.len(), uc.len(), "{}", why());
    for (k, u) in kc.iter().zip(&uc) {
        assert_eq!(k.scheme, u.scheme, "{}", why());
        assert_eq!(k.param_names(), u.param_names(), "{}", why());
        for p in ["realm", "algorithm", "qop", "stale"] {
            assert_eq!(k.param(p), u.param(p), "param {p}: {}", why());
        }
        for p in ["nonce", "opaque"] {
            // Same presence and length: a per-user format would enumerate users.
            let (kv, uv) = (k.param(p), u.param(p));
            assert_eq!(kv.map(str::len), uv.map(str::len), "param {p}: {}", why());
        }
    }
}

#[tokio::test]
async fn unknown_user_gets_the_same_challenge_then_forbidden() {
    let gw = Gateway::start().await;
    create_agent(&gw, ALICE).await;
    for t in Transport::ALL {
        let known = register_run(
            &gw,
            Sipp::new("register_reject.xml"),
            t,
            "alice",
            ("alice", "not-the-password"),
            None,
            "Expires: 3600",
        );
        known.assert_success();
        let unknown = register_run(
            &gw,
            Sipp::new("register_reject.xml"),
            t,
            "mallory",
            ("mallory", "whatever-password"),
            None,
            "Expires: 3600",
        );
        unknown.assert_success();
        assert_same_challenge_shape(known.response(401), unknown.response(401));
        assert_eq!(unknown.last_response().status, 403, "{}", unknown.report());
    }
}

/// SHA-256 opted in (`sip.auth_algorithms = "SHA-256,MD5"` in a config file): SHA-256
/// offered first, then MD5 (RFC 8760 §2.4); identical for unknown users. (SIPp only reads
/// these challenges here: it cannot answer SHA-256.)
#[tokio::test]
async fn sha256_opt_in_offers_sha256_then_md5_for_known_and_unknown_users() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("voxgate.toml");
    std::fs::write(&config, "[sip]\nauth_algorithms = \"SHA-256,MD5\"\n").expect("config");
    let config = config.to_string_lossy().into_owned();
    let gw = Gateway::start_with(&[("VOXGATE_CONFIG", &config)], None).await;
    create_agent(&gw, ALICE).await;
    for t in Transport::ALL {
        let known = Sipp::new("challenge.xml")
            .transport(t)
            .service("alice")
            .run(gw.sip_port);
        known.assert_success();
        let unknown = Sipp::new("challenge.xml")
            .transport(t)
            .service("nobody")
            .run(gw.sip_port);
        unknown.assert_success();
        let k = known.response(401);
        let challenges = k.challenges();
        let algs: Vec<Option<&str>> = challenges.iter().map(|c| c.param("algorithm")).collect();
        assert_eq!(
            algs,
            [Some("SHA-256"), Some("MD5")],
            "RFC 8760 order:\n{}",
            k.raw
        );
        for c in &challenges {
            for p in CHALLENGE_PARAMS {
                assert!(
                    c.param(p).is_some_and(|v| !v.is_empty()),
                    "no {p}:\n{}",
                    k.raw
                );
            }
            assert_eq!(c.param("realm"), Some("voxgate"), "{}", k.raw);
            assert!(
                c.param("qop").is_some_and(|q| q.contains("auth")),
                "{}",
                k.raw
            );
        }
        assert_same_challenge_shape(k, unknown.response(401));
    }
}

#[tokio::test]
async fn authenticated_agent_cannot_register_another_agents_aor() {
    let gw = Gateway::start().await;
    create_agent(&gw, ALICE).await;
    create_agent(&gw, BOB).await;
    for t in Transport::ALL {
        // Valid credentials for alice, To: bob.
        let run = register_run(
            &gw,
            Sipp::new("register_reject.xml"),
            t,
            "bob",
            ALICE,
            None,
            "Expires: 3600",
        );
        run.assert_success();
        assert_eq!(run.last_response().status, 403);
    }
    assert!(registrations(&agent(&gw, "bob").await).is_empty());
    assert!(registrations(&agent(&gw, "alice").await).is_empty());
}

#[tokio::test]
async fn options_is_answered_without_authentication() {
    let gw = Gateway::start().await;
    for t in Transport::ALL {
        let run = Sipp::new("options.xml")
            .transport(t)
            .service("probe")
            .run(gw.sip_port);
        run.assert_success();
        let ok = run.response(200);
        assert!(ok.header("allow").is_some(), "{}", ok.raw);
        assert!(ok.header("www-authenticate").is_none(), "{}", ok.raw);
    }
}

#[tokio::test]
async fn agents_register_from_an_injection_file() {
    let gw = Gateway::start().await;
    // Same users and passwords as tests/sipp/agents.csv (the benchmark's format).
    for a in [ALICE, BOB, ("carol", "carolpass3")] {
        create_agent(&gw, a).await;
    }
    let csv = sipp::scenario_dir().join("agents.csv");
    for t in Transport::ALL {
        let run = Sipp::new("register_load.xml")
            .transport(t)
            .calls(3)
            .arg("-inf")
            .arg(csv.to_str().expect("utf-8 path"))
            .run(gw.sip_port);
        run.assert_success();
    }
    for user in ["alice", "bob", "carol"] {
        let a = agent(&gw, user).await;
        assert_eq!(a["state"], "available", "{a}");
        let transports: Vec<String> = registrations(&a)
            .iter()
            .filter_map(|r| r["transport"].as_str().map(str::to_ascii_lowercase))
            .collect();
        assert!(
            transports.contains(&"udp".to_owned()) && transports.contains(&"tcp".to_owned()),
            "{user} registered over UDP and TCP: {a}"
        );
    }
}

#[tokio::test]
async fn registration_survives_restart() {
    let mut gw = Gateway::start().await;
    create_agent(&gw, ALICE).await;
    let mut s = Sipp::new("register.xml");
    let port = s.port();
    let own = s.own_contact("alice");
    register_run(
        &gw,
        s,
        Transport::Udp,
        "alice",
        ALICE,
        Some(&own),
        "Expires: 3600",
    )
    .assert_success();
    assert_eq!(agent(&gw, "alice").await["state"], "available");

    gw.restart().await;

    let a = agent(&gw, "alice").await;
    assert_eq!(a["state"], "available", "after restart: {a}");
    let regs = registrations(&a);
    assert_eq!(regs.len(), 1, "after restart: {a}");
    let contact = regs[0]["contact"].as_str().unwrap_or_default();
    assert!(
        contact.contains(&format!("sip:alice@127.0.0.1:{port}")),
        "after restart the contact is {contact:?}, registered {own}"
    );

    // The restarted registrar knows the binding: unregistering it empties the AOR.
    let run = register_run(
        &gw,
        Sipp::new("register.xml"),
        Transport::Udp,
        "alice",
        ALICE,
        Some("*"),
        "Expires: 0",
    );
    run.assert_success();
    assert!(
        run.response(200).header("contact").is_none(),
        "{}",
        run.response(200).raw
    );
    let a = agent(&gw, "alice").await;
    assert_eq!(a["state"], "offline", "{a}");
    assert!(registrations(&a).is_empty(), "{a}");
}

/// After `sip.auth_ban_after` (5) 403s a source gets no answer for
/// `sip.auth_ban_seconds`; other sources are served meanwhile; then it is served again.
#[tokio::test]
async fn source_is_banned_after_repeated_failures_and_the_ban_lifts() {
    const BAN_SECONDS: u64 = 4;
    let ban = BAN_SECONDS.to_string();
    let gw = Gateway::start_with(&[("VOXGATE_SIP_AUTH_BAN_SECONDS", &ban)], None).await;
    create_agent(&gw, ALICE).await;

    // Five failures from 127.0.0.1, one after another: each must still be answered 403.
    let fails = register_run(
        &gw,
        Sipp::new("register_reject.xml").calls(5),
        Transport::Udp,
        "alice",
        ("alice", "wrong-password"),
        None,
        "Expires: 3600",
    );
    let banned_at = Instant::now();
    fails.assert_success();
    assert_eq!(fails.responses_with(403).len(), 5, "{}", fails.report());

    // Banned: not even a 401 for 2 s (no_response.xml fails on any response).
    Sipp::new("no_response.xml")
        .service("alice")
        .run(gw.sip_port)
        .assert_success();
    assert!(
        banned_at.elapsed() < Duration::from_secs(BAN_SECONDS),
        "the silence probe took too long to say anything about the ban"
    );

    // Another source is not affected: it registers fine during the ban.
    register_run(
        &gw,
        Sipp::new("register.xml").local_ip("127.0.0.2"),
        Transport::Udp,
        "alice",
        ALICE,
        None,
        "Expires: 3600",
    )
    .assert_success();

    // Once the ban has run its course, 127.0.0.1 is answered again. The wait is the
    // behaviour under test (a fixed-length ban); a few seconds of slack for timers.
    let lifts_at = banned_at + Duration::from_secs(BAN_SECONDS);
    tokio::time::sleep(lifts_at.saturating_duration_since(Instant::now())).await;
    let deadline = Instant::now() + Duration::from_secs(6);
    loop {
        let probe = Sipp::new("challenge.xml")
            .service("alice")
            .timeout(Duration::from_secs(2))
            .run(gw.sip_port);
        if probe.succeeded() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "127.0.0.1 still ignored {BAN_SECONDS} s + 6 s after the ban started\n{}",
            probe.report()
        );
    }
    register_run(
        &gw,
        Sipp::new("register.xml"),
        Transport::Udp,
        "alice",
        ALICE,
        None,
        "Expires: 3600",
    )
    .assert_success();
}
