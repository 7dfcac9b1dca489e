//! Call programs on real calls (SPEC §6, docs/call-programs.md): a carrier's call (SIPp,
//! as carriers send them) to a number routed to an IVR flow is answered by voxgate, which
//! plays the menu prompt; the test owns the caller's RTP socket, so it checks the bytes it
//! receives are the prompt's own G.711, sends a key by RFC 4733, and sees the prompt cut
//! off (barge-in), the next node's prompt played, and the call hung up; `ivr.input`
//! arrives signed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "common/receiver.rs"]
mod receiver;
#[path = "common/sipp.rs"]
mod sipp;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};

use common::Gateway;
use receiver::Receiver;
use serde_json::{json, Value};
use sipp::{listen, Phone, Sipp, SippProcess};
use tokio::net::UdpSocket;
use voxgate_media::codec::linear_to_ulaw;

const MENU_HZ: u32 = 500;
const THANKS_HZ: u32 = 1000;

async fn post(gw: &Gateway, path: &str, body: Value) -> Value {
    let r = gw
        .client()
        .post(gw.url(path))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let v: Value = r.json().await.unwrap_or(Value::Null);
    assert!(status == 201 || status == 200, "POST {path}: {status} {v}");
    v
}

/// Uploads a `seconds`-long sine of `hz` as prompt `name`; returns the 8 kHz samples
/// voxgate stored for it (`GET /v1/prompts/{id}/audio?rate=8000`), what a PCMU leg hears.
async fn tone_prompt(gw: &Gateway, dir: &Path, name: &str, hz: u32, seconds: u32) -> Vec<i16> {
    let wav = dir.join(format!("{name}.wav"));
    let ok = std::process::Command::new("sox")
        .args(["-n", "-r", "8000", "-c", "1", "-b", "16"])
        .arg(&wav)
        .args([
            "synth",
            &seconds.to_string(),
            "sine",
            &hz.to_string(),
            "vol",
            "0.5",
        ])
        .status()
        .expect("run sox (scripts/install-test-deps.sh installs it)");
    assert!(ok.success());
    let bytes = std::fs::read(&wav).unwrap();
    let (status, body, _) = common::upload_prompt(
        gw,
        common::multipart(&[("name", name)], Some((&format!("{name}.wav"), &bytes))),
    )
    .await;
    assert_eq!(status, 201, "upload {name}: {body}");
    let id = body["id"].as_str().unwrap();
    let r = gw
        .client()
        .get(gw.url(&format!("/v1/prompts/{id}/audio?rate=8000")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let wav = r.bytes().await.unwrap();
    let mut reader = hound::WavReader::new(std::io::Cursor::new(wav.to_vec())).unwrap();
    reader.samples::<i16>().map(Result::unwrap).collect()
}

/// The PCMU payload of 20 ms frame `k` of `samples`.
fn ulaw_frame(samples: &[i16], k: usize) -> Option<Vec<u8>> {
    let frame = samples.get(k * 160..(k + 1) * 160)?;
    Some(frame.iter().map(|s| linear_to_ulaw(*s)).collect())
}

/// One RTP packet received: when, payload type, payload.
struct Heard {
    at: Instant,
    pt: u8,
    payload: Vec<u8>,
}

/// Everything `sock` receives until `until`.
async fn hear(sock: &UdpSocket, until: Instant) -> Vec<Heard> {
    let mut got = Vec::new();
    let mut buf = [0u8; 2048];
    while Instant::now() < until {
        let left = until.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, sock.recv(&mut buf)).await {
            Ok(Ok(n)) if n >= 12 => got.push(Heard {
                at: Instant::now(),
                pt: buf[1] & 0x7f,
                payload: buf[12..n].to_vec(),
            }),
            Ok(_) => {}
            Err(_) => break,
        }
    }
    got
}

/// Key `event` (RFC 4733 §3.2) pressed for 100 ms: five updates 20 ms apart, then the
/// end packet three times (§2.5.1.4). Returns when its first packet was sent.
async fn press(sock: &UdpSocket, to: SocketAddr, event: u8) -> Instant {
    let ts: u32 = 48_000;
    let mut seq: u16 = 700;
    let mut send = |duration: u16, end: bool, marker: bool| {
        let mut p = vec![0x80, 101 | if marker { 0x80 } else { 0 }];
        p.extend_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&ts.to_be_bytes());
        p.extend_from_slice(&0x5151_5151u32.to_be_bytes());
        p.extend_from_slice(&[event, if end { 0x80 | 10 } else { 10 }]);
        p.extend_from_slice(&duration.to_be_bytes());
        seq = seq.wrapping_add(1);
        p
    };
    let start = Instant::now();
    for i in 0..5u16 {
        let p = send(160 * (i + 1), false, i == 0);
        sock.send_to(&p, to).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for _ in 0..3 {
        let p = send(800, true, false);
        sock.send_to(&p, to).await.unwrap();
    }
    start
}

/// Sends `n` PCMU packets filled with `fill` from `rtp` to `voxgate`, 20 ms apart; how
/// many reached `far` whole (the relay bridges them).
async fn relayed(rtp: &UdpSocket, voxgate: SocketAddr, far: &UdpSocket, fill: u8, n: u16) -> usize {
    let mut got = 0;
    let mut buf = [0u8; 2048];
    for i in 0..n {
        let mut p = vec![0x80, 0x00];
        p.extend_from_slice(&i.to_be_bytes());
        p.extend_from_slice(&(u32::from(i) * 160).to_be_bytes());
        p.extend_from_slice(&0x0707_0707u32.to_be_bytes());
        p.extend_from_slice(&[fill; 160]);
        rtp.send_to(&p, voxgate).await.unwrap();
        if let Ok(Ok(k)) = tokio::time::timeout(Duration::from_millis(20), far.recv(&mut buf)).await
        {
            if k == 172 && buf[12..k].iter().all(|b| *b == fill) {
                got += 1;
            }
        }
    }
    got
}

/// The newest call, as `GET /v1/calls` lists it.
async fn last_call(gw: &Gateway) -> Value {
    get_json(gw, "/v1/calls").await["data"][0].clone()
}

/// `GET path`'s JSON body.
async fn get_json(gw: &Gateway, path: &str) -> Value {
    gw.client()
        .get(gw.url(path))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Agent bob, with a SIPp phone registered for him.
async fn registered_bob(gw: &Gateway) -> Phone {
    let bob = Phone::new(("bob", "bobpass123"));
    gw.create_agent(json!({ "username": "bob", "password": "bobpass123" }))
        .await;
    bob.register(gw.sip_port);
    bob
}

/// How many of `heard`, from the first, are frames 0, 1, 2… of `samples` exactly.
fn frames_of(heard: &[Heard], samples: &[i16]) -> usize {
    heard
        .iter()
        .enumerate()
        .take_while(|(k, h)| h.pt == 0 && ulaw_frame(samples, *k).is_some_and(|f| f == h.payload))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_carrier_call_to_an_ivr_number_hears_the_menu_and_its_key_is_gathered() {
    menu_heard_and_key_gathered(Gateway::start().await).await;
}

/// The same on PostgreSQL (the input's row in the call's record is written by SQL of its
/// own).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_carrier_call_to_an_ivr_number_hears_the_menu_and_its_key_is_gathered_postgres() {
    menu_heard_and_key_gathered(Gateway::start_pg().await).await;
}

async fn menu_heard_and_key_gathered(gw: Gateway) {
    let hook = Receiver::start().await;
    let h = post(
        &gw,
        "/v1/webhooks",
        json!({ "url": hook.url("/ivr"), "events": ["ivr.input"] }),
    )
    .await;
    hook.secret("/ivr", h["secret"].as_str().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let menu = tone_prompt(&gw, dir.path(), "menu", MENU_HZ, 4).await;
    let thanks = tone_prompt(&gw, dir.path(), "thanks", THANKS_HZ, 1).await;
    ivr_number(
        &gw,
        json!({
            "menu": {"type": "menu", "prompt": "menu",
                     "options": {"1": "bye", "2": "thanks"}, "invalid": "bye"},
            "thanks": {"type": "play", "prompt": "thanks", "next": "bye"},
            "bye": {"type": "hangup"}
        }),
    )
    .await;
    let rtp = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let (mut carrier, voxgate) = carrier_call(&gw, &rtp).await;

    // The menu prompt, byte for byte, from its first frame.
    let before = hear(&rtp, Instant::now() + Duration::from_millis(1500)).await;
    let n = frames_of(&before, &menu);
    assert!(
        n >= 60 && n == before.len(),
        "the caller must hear the menu prompt's own PCMU from its first frame: {n} of {} packets were",
        before.len()
    );
    // Key 2, while the prompt plays: it stops, and the "thanks" node's prompt plays.
    // Heard while the key is pressed: what arrives is stamped when it arrives, not when
    // the 100 ms press is over (a menu frame sent just before the stop would otherwise
    // look 100 ms late).
    let (pressed, after) = tokio::join!(
        press(&rtp, voxgate, 2),
        hear(&rtp, Instant::now() + Duration::from_secs(3))
    );
    let switch = after
        .iter()
        .position(|h| ulaw_frame(&thanks, 0).is_some_and(|f| f == h.payload))
        .unwrap_or_else(|| {
            panic!(
                "the thanks prompt never started ({} packets after the key)",
                after.len()
            )
        });
    let last_menu = after[..switch]
        .iter()
        .rev()
        .find(|h| h.pt == 0)
        .map(|h| h.at)
        .unwrap_or(pressed);
    let barge_in = last_menu.saturating_duration_since(pressed);
    eprintln!(
        "barge-in: last menu frame {} ms after the key's first packet; the next prompt began {} ms after it",
        barge_in.as_millis(),
        after[switch].at.saturating_duration_since(pressed).as_millis()
    );
    assert!(
        barge_in <= Duration::from_millis(100),
        "the menu went on {barge_in:?} after the key"
    );
    let played = frames_of(&after[switch..], &thanks);
    assert!(
        played >= 45,
        "the thanks prompt must play whole: {played} frames matched"
    );
    // The flow ends with hangup: voxgate's BYE.
    carrier
        .wait_for_log("@@ENDED@@", Duration::from_secs(5))
        .await;

    // One `ivr.input`, signed: the menu's key.
    let event = hook
        .wait("ivr.input", Duration::from_secs(5), |g| {
            g.iter().any(|g| g.body["type"] == "ivr.input")
        })
        .await
        .into_iter()
        .find(|g| g.body["type"] == "ivr.input")
        .expect("ivr.input delivered");
    assert!(event.signature_ok, "unsigned ivr.input");
    let data = &event.body["data"];
    assert_eq!(data["digits"], "2", "{data}");
    assert_eq!(data["result"], "matched", "{data}");
    assert_eq!(data["node"], "menu", "{data}");

    // The call's record: inbound, answered by voxgate, ended by the program.
    let call = &last_call(&gw).await;
    assert_eq!(call["direction"], "inbound", "{call}");
    assert_eq!(call["status"], "completed", "{call}");
    assert_eq!(call["hangup_by"], "system", "{call}");
    assert!(
        call["answered_at"].is_string(),
        "answered by voxgate: {call}"
    );
    // The input is in the call's record too, as the event reported it.
    let one = get_json(&gw, &format!("/v1/calls/{}", call["id"].as_str().unwrap())).await;
    let inputs = one["ivr_inputs"]
        .as_array()
        .expect("ivr_inputs on the call");
    assert_eq!(inputs.len(), 1, "{one}");
    for field in ["node", "digits", "result", "attempt", "leg_id", "at"] {
        assert_eq!(inputs[0][field], data[field], "{field}: {one}");
    }
    assert!(call.get("ivr_inputs").is_none(), "not in lists: {call}");
}

/// A carrier trunk admitting 127.0.0.1 (SIPp's carrier).
async fn carrier_trunk(gw: &Gateway) {
    post(
        gw,
        "/v1/trunks",
        json!({
            "name": "carrier",
            "provider": "generic",
            "outbound": { "host": "127.0.0.1", "port": 5099 },
            "inbound": { "allowed_cidrs": ["127.0.0.1/32"] },
        }),
    )
    .await;
}

/// A carrier trunk, and number +14155550100 routed to an IVR flow made of `nodes`
/// (starting at `menu`).
async fn ivr_number(gw: &Gateway, nodes: Value) {
    carrier_trunk(gw).await;
    post(
        gw,
        "/v1/ivr-flows",
        json!({ "name": "main", "start": "menu", "nodes": nodes }),
    )
    .await;
    post(
        gw,
        "/v1/numbers",
        json!({ "number": "+14155550100", "trunk": "carrier",
                "route": { "type": "ivr", "target": "main" } }),
    )
    .await;
}

/// A carrier's call to the IVR number whose RTP goes to `rtp`; returns SIPp and where
/// voxgate receives the caller's RTP, once answered.
async fn carrier_call(gw: &Gateway, rtp: &UdpSocket) -> (SippProcess, SocketAddr) {
    let mut carrier = Sipp::new("carrier_uac_wait_bye.xml")
        .service("+14155550100")
        .set("from", "+14155550111")
        .set("rtp", &rtp.local_addr().unwrap().port().to_string())
        .timeout(Duration::from_secs(30))
        .spawn(gw.sip_port);
    carrier
        .wait_for_log("@@ANSWERED@@", Duration::from_secs(10))
        .await;
    let ok = carrier
        .responses()
        .into_iter()
        .find(|r| r.status == 200)
        .expect("voxgate answered the call itself");
    let port = ok.sdp().media[0].port;
    (carrier, SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
}

/// Pressing 1 at the menu dials agent bob; bob's phone answers and the caller is bridged
/// to it (the caller's RTP reaches bob's socket); when bob hangs up the flow goes on to
/// its `next` node (the thanks prompt, heard byte for byte), then hangs up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ivr_dials_an_agent_bridges_and_goes_on_when_the_agent_hangs_up() {
    let gw = Gateway::start().await;
    let dir = tempfile::tempdir().unwrap();
    let menu = tone_prompt(&gw, dir.path(), "menu", MENU_HZ, 4).await;
    let thanks = tone_prompt(&gw, dir.path(), "thanks", THANKS_HZ, 1).await;
    let bob = registered_bob(&gw).await;
    ivr_number(
        &gw,
        json!({
            "menu": {"type": "menu", "prompt": "menu", "options": {"1": "sales"}},
            "sales": {"type": "dial", "agent": "bob", "ring_timeout_seconds": 10,
                      "record": true, "next": "thanks", "no_answer": "bye"},
            "thanks": {"type": "play", "prompt": "thanks", "next": "bye"},
            "bye": {"type": "hangup"}
        }),
    )
    .await;
    let bob_rtp = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let mut phone = listen(
        bob.answer("call_uas_bye.xml")
            .set("rtp", &bob_rtp.local_addr().unwrap().port().to_string())
            .duration(Duration::from_secs(2)),
        gw.sip_port,
    )
    .await;

    let rtp = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let (mut carrier, voxgate) = carrier_call(&gw, &rtp).await;
    let before = hear(&rtp, Instant::now() + Duration::from_millis(600)).await;
    assert!(frames_of(&before, &menu) >= 20, "the menu plays first");
    press(&rtp, voxgate, 1).await;
    phone
        .wait_for_log("@@ANSWERED@@", Duration::from_secs(10))
        .await;

    // Bridged: the caller's audio reaches bob's phone.
    let got = relayed(&rtp, voxgate, &bob_rtp, 0x77, 25).await;
    if got < 15 {
        panic!(
            "the caller's audio must reach bob: {got} of 25 packets did
{:#}
{}",
            last_call(&gw).await,
            phone.log()
        );
    }

    // Bob hangs up: the flow goes on to the thanks prompt, then hangs up.
    let after = hear(&rtp, Instant::now() + Duration::from_secs(5)).await;
    let start = after
        .iter()
        .position(|h| ulaw_frame(&thanks, 0).is_some_and(|f| f == h.payload))
        .expect("the thanks prompt after the agent hung up");
    assert!(
        frames_of(&after[start..], &thanks) >= 45,
        "the thanks prompt must play whole"
    );
    carrier
        .wait_for_log("@@ENDED@@", Duration::from_secs(5))
        .await;
    let call = &last_call(&gw).await;
    assert_eq!(call["status"], "completed", "{call}");
    let legs = call["legs"].as_array().unwrap();
    assert_eq!(legs.len(), 2, "the caller's leg and bob's: {call}");
    assert!(
        legs.iter()
            .any(|l| l["status"] == "completed" && l["agent"].is_string()),
        "bob's leg completed: {call}"
    );
    // The dial's `record`: one dual recording of the bridge (bob talks 2 s), ended with
    // it, not covering the menu before or the thanks prompt after.
    let ids = call["recording_ids"].as_array().unwrap();
    assert_eq!(ids.len(), 1, "{call}");
    let rec = get_json(&gw, &format!("/v1/recordings/{}", ids[0].as_str().unwrap())).await;
    assert_eq!(rec["status"], "completed", "{rec}");
    assert_eq!(rec["channels"], "dual", "{rec}");
    let ms = rec["duration_ms"].as_i64().unwrap_or(0);
    assert!(
        (1500..=2600).contains(&ms),
        "the bridge's length (bob hangs up after 2 s): {rec}"
    );
}

/// The operator's app of a webhook-driven number: what it was asked (body, signature
/// checked), and its answers: first a gather with the menu prompt then a redirect back
/// to itself; once it knows the caller's choice, a dial to bob; once the dial is over
/// (voxgate asks again when the verbs run out, with `dial_status`), hang up.
#[derive(Default)]
struct App {
    asked: std::sync::Mutex<Vec<(Value, bool)>>,
}

const APP_SECRET: &str = "whsec_program_requests_for_tests";

/// What the app says first.
const WELCOME: &str = "Welcome to voxgate.";

/// A speech service speaking OpenAI's `POST /v1/audio/speech` wire format, backed by
/// espeak-ng: what it was asked, and the WAV it answered.
#[derive(Default)]
struct Speech {
    asked: std::sync::Mutex<Vec<(Value, Vec<u8>)>>,
}

async fn speak(
    axum::extract::State(speech): axum::extract::State<std::sync::Arc<Speech>>,
    axum::Json(asked): axum::Json<Value>,
) -> impl axum::response::IntoResponse {
    let dir = tempfile::tempdir().unwrap();
    let wav = dir.path().join("speech.wav");
    let text = asked["input"].as_str().unwrap_or_default().to_owned();
    let ok = std::process::Command::new("espeak-ng")
        .arg("-w")
        .arg(&wav)
        .arg(&text)
        .status()
        .expect("run espeak-ng (scripts/install-test-deps.sh installs it)");
    assert!(ok.success());
    let bytes = std::fs::read(&wav).unwrap();
    speech.asked.lock().unwrap().push((asked, bytes.clone()));
    ([(axum::http::header::CONTENT_TYPE, "audio/wav")], bytes)
}

/// Serves `router` on a loopback port; its base URL.
async fn serve(router: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });
    url
}

async fn app_answer(
    axum::extract::State((app, url)): axum::extract::State<(std::sync::Arc<App>, String)>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> axum::Json<Value> {
    let signed = headers
        .get("voxgate-signature")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|h| receiver::verify(APP_SECRET, h, &body));
    let asked: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let choice = asked["variables"]["choice"].as_str().map(str::to_owned);
    let dialled = asked["variables"]["dial_status"].is_string();
    app.asked.lock().unwrap().push((asked, signed));
    if dialled {
        return axum::Json(json!([{"verb": "hangup"}]));
    }
    axum::Json(match choice.as_deref() {
        None => json!([
            {"verb": "say", "text": WELCOME},
            {"verb": "gather", "max_digits": 1, "timeout_seconds": 5, "variable": "choice",
             "prompts": [{"verb": "play", "prompt": "menu"}]},
            {"verb": "redirect", "url": url}
        ]),
        Some("1") => json!([
            {"verb": "dial", "targets": [{"type": "agent", "agent": "bob"}],
             "ring_timeout_seconds": 10}
        ]),
        Some(_) => json!([{"verb": "hangup"}]),
    })
}

/// A number routed to a `webhook`: voxgate asks the operator's app (signed), runs the
/// verbs it returns (say a welcome through the speech service, gather over the menu
/// prompt, then redirect with the digits), and the app's next answer (dial bob) bridges
/// the caller to bob's phone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_number_runs_the_apps_verbs_and_bridges_the_agent() {
    let speech = std::sync::Arc::new(Speech::default());
    let speech_url = serve(
        axum::Router::new()
            .route("/v1/audio/speech", axum::routing::post(speak))
            .with_state(speech.clone()),
    )
    .await;
    let gw = Gateway::start_with(
        &[
            ("VOXGATE_WEBHOOKS_SECRET", APP_SECRET),
            ("VOXGATE_TTS_URL", &speech_url),
            ("VOXGATE_TTS_VOICE", "en-test"),
        ],
        None,
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let menu = tone_prompt(&gw, dir.path(), "menu", MENU_HZ, 4).await;
    let bob = registered_bob(&gw).await;

    let app = std::sync::Arc::new(App::default());
    let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .unwrap();
    let url = format!("http://{}/app", listener.local_addr().unwrap());
    let router = axum::Router::new()
        .route("/app", axum::routing::post(app_answer))
        .with_state((app.clone(), url.clone()));
    tokio::spawn(async move { axum::serve(listener, router).await });

    carrier_trunk(&gw).await;
    post(
        &gw,
        "/v1/numbers",
        json!({ "number": "+14155550100", "trunk": "carrier",
                "route": { "type": "webhook", "target": url } }),
    )
    .await;
    let bob_rtp = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let mut phone = listen(
        bob.answer("call_uas_bye.xml")
            .set("rtp", &bob_rtp.local_addr().unwrap().port().to_string())
            .duration(Duration::from_secs(1)),
        gw.sip_port,
    )
    .await;

    let rtp = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let (mut carrier, voxgate) = carrier_call(&gw, &rtp).await;
    let before = hear(&rtp, Instant::now() + Duration::from_millis(3500)).await;
    // First the welcome, spoken: as long as the service's WAV, and not silence.
    let menu_at = before
        .iter()
        .position(|h| ulaw_frame(&menu, 0).is_some_and(|f| f == h.payload))
        .expect("the menu prompt after the welcome");
    let asked_speech = speech.asked.lock().unwrap().clone();
    assert_eq!(asked_speech.len(), 1, "one sentence spoken");
    let (said, wav) = &asked_speech[0];
    assert_eq!(said["input"], WELCOME, "{said}");
    assert_eq!(said["voice"], "en-test", "{said}");
    assert_eq!(said["model"], "tts-1", "{said}");
    let spoken = {
        let r = hound::WavReader::new(std::io::Cursor::new(wav.clone())).unwrap();
        f64::from(r.duration()) / f64::from(r.spec().sample_rate)
    };
    let heard_s = menu_at as f64 * 0.020;
    assert!(
        (heard_s - spoken).abs() < 0.1,
        "heard {heard_s:.2} s of speech before the menu, the service spoke {spoken:.2} s"
    );
    let loud = before[..menu_at]
        .iter()
        .filter(|h| {
            h.payload
                .iter()
                .any(|b| !matches!(b, 0xff | 0x7f | 0xfe | 0x7e))
        })
        .count();
    assert!(
        loud * 2 > menu_at,
        "the welcome is mostly silence: {loud} of {menu_at} frames"
    );
    assert!(
        frames_of(&before[menu_at..], &menu) >= 20,
        "the app's gather plays the menu prompt"
    );
    press(&rtp, voxgate, 1).await;
    phone
        .wait_for_log("@@ANSWERED@@", Duration::from_secs(10))
        .await;
    // Bob hangs up after a second; the app's verbs are done, so the call ends.
    carrier
        .wait_for_log("@@ENDED@@", Duration::from_secs(10))
        .await;

    let asked = app.asked.lock().unwrap().clone();
    assert_eq!(
        asked.len(),
        3,
        "asked once, again with the digits, again after the dial: {asked:#?}"
    );
    assert!(
        asked.iter().all(|(_, signed)| *signed),
        "unsigned request: {asked:#?}"
    );
    let (first, _) = &asked[0];
    assert_eq!(first["direction"], "inbound", "{first}");
    assert!(
        first["to"].as_str().unwrap().contains("+14155550100"),
        "{first}"
    );
    assert_eq!(asked[1].0["variables"]["choice"], "1", "{:#}", asked[1].0);
    assert_eq!(
        asked[2].0["variables"]["dial_status"], "completed",
        "{:#}",
        asked[2].0
    );
    let call = &last_call(&gw).await;
    let legs = call["legs"].as_array().unwrap();
    assert!(
        legs.iter()
            .any(|l| l["agent"].is_string() && l["answered_at"].is_string()),
        "bob answered: {call}"
    );
}

/// A flow's `record` node is voicemail: a beep, then what the caller says until `#`,
/// into a recording the API serves; then the flow hangs up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ivr_records_a_voicemail_until_the_finish_key() {
    let gw = Gateway::start().await;
    ivr_number(
        &gw,
        json!({
            "menu": {"type": "record", "max_length_seconds": 20, "finish_on_key": "#",
                     "variable": "voicemail", "next": "bye"},
            "bye": {"type": "hangup"}
        }),
    )
    .await;
    let rtp = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let (mut carrier, voxgate) = carrier_call(&gw, &rtp).await;
    // The beep: about 250 ms of 1 kHz.
    let beep = hear(&rtp, Instant::now() + Duration::from_millis(500)).await;
    assert!(
        (10..=15).contains(&beep.len()),
        "a beep of about 250 ms: {} frames",
        beep.len()
    );
    // The caller speaks (a 440 Hz tone, 2 s of PCMU), then presses #.
    let tone: Vec<i16> = (0..16_000)
        .map(|i| (8000.0 * (std::f64::consts::TAU * 440.0 * f64::from(i) / 8000.0).sin()) as i16)
        .collect();
    for (k, frame) in tone.chunks(160).enumerate() {
        let k = u16::try_from(k).unwrap();
        let mut p = vec![0x80, 0x00];
        p.extend_from_slice(&k.to_be_bytes());
        p.extend_from_slice(&(u32::from(k) * 160).to_be_bytes());
        p.extend_from_slice(&0x0808_0808u32.to_be_bytes());
        p.extend(frame.iter().map(|s| linear_to_ulaw(*s)));
        rtp.send_to(&p, voxgate).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    press(&rtp, voxgate, 11).await;
    carrier
        .wait_for_log("@@ENDED@@", Duration::from_secs(5))
        .await;

    let call = &last_call(&gw).await;
    let rec = call["recording_ids"][0]
        .as_str()
        .unwrap_or_else(|| panic!("a recording on the call: {call}"))
        .to_owned();
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let r: Value = gw
            .client()
            .get(gw.url(&format!("/v1/recordings/{rec}")))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if r["status"] == "completed" {
            assert_eq!(r["channels"], "mono", "{r}");
            break;
        }
        assert!(Instant::now() < until, "recording not completed: {r}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let wav = gw
        .client()
        .get(gw.url(&format!("/v1/recordings/{rec}/audio")))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let mut reader = hound::WavReader::new(std::io::Cursor::new(wav.to_vec())).unwrap();
    let rate = reader.spec().sample_rate;
    let samples: Vec<i16> = reader.samples::<i16>().map(Result::unwrap).collect();
    let seconds = samples.len() as f64 / f64::from(rate);
    assert!(
        (1.8..3.0).contains(&seconds),
        "the voicemail lasts the 2 s spoken (and the key): {seconds:.2} s"
    );
    // The tone is what was recorded: 440 Hz against 1 kHz (the beep must not be in it).
    let power = |hz: f64| {
        let w = std::f64::consts::TAU * hz / f64::from(rate);
        let (mut s1, mut s2) = (0.0f64, 0.0f64);
        for x in &samples {
            let s = f64::from(*x) + 2.0 * w.cos() * s1 - s2;
            s2 = s1;
            s1 = s;
        }
        s1 * s1 + s2 * s2 - 2.0 * w.cos() * s1 * s2
    };
    assert!(
        power(440.0) > 100.0 * power(1000.0),
        "the caller's 440 Hz is in the voicemail, the beep is not"
    );
}

/// A flow's `dial` of a number goes out through the trunk it names (SIPp as the far
/// carrier): the caller is bridged to the answered number, and the flow goes on when the
/// far end hangs up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ivr_dials_a_number_through_a_trunk() {
    let gw = Gateway::start().await;
    let far_port = sipp::free_udp_port();
    post(
        &gw,
        "/v1/trunks",
        json!({
            "name": "out",
            "provider": "generic",
            "outbound": { "host": "127.0.0.1", "port": far_port, "transport": "udp" },
        }),
    )
    .await;
    ivr_number(
        &gw,
        json!({
            "menu": {"type": "dial", "number": "+14155550199", "trunk": "out", "next": "bye"},
            "bye": {"type": "hangup"}
        }),
    )
    .await;
    let far_rtp = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let mut far = listen(
        Sipp::new("call_uas_bye.xml")
            .local_port(far_port)
            .set("rtp", &far_rtp.local_addr().unwrap().port().to_string())
            .duration(Duration::from_secs(1))
            .timeout(Duration::from_secs(30)),
        gw.sip_port,
    )
    .await;
    let rtp = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let (mut carrier, voxgate) = carrier_call(&gw, &rtp).await;
    far.wait_for_log("@@ANSWERED@@", Duration::from_secs(10))
        .await;
    let invite = far.requests().into_iter().next().expect("the far end rang");
    assert!(
        invite.raw.starts_with("INVITE sip:+14155550199@127.0.0.1"),
        "{}",
        invite.raw
    );
    // Bridged: the caller's audio reaches the far end.
    let got = relayed(&rtp, voxgate, &far_rtp, 0x66, 20).await;
    assert!(
        got >= 10,
        "the caller's audio must reach the far end: {got} of 20"
    );
    // The far end hangs up: the flow's next node hangs up the caller.
    carrier
        .wait_for_log("@@ENDED@@", Duration::from_secs(10))
        .await;
}

/// A phone set to send DTMF by SIP INFO (its answer has no telephone-event), bridged to
/// a carrier's caller by an IVR's `dial`: the caller's RFC 4733 key reaches the phone as
/// an INFO, and the phone's INFO key reaches the caller as telephone-events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_cross_between_rfc4733_and_an_info_phone() {
    let gw = Gateway::start().await;
    let bob = registered_bob(&gw).await;
    ivr_number(
        &gw,
        json!({
            "menu": {"type": "dial", "agent": "bob", "ring_timeout_seconds": 10, "next": "bye"},
            "bye": {"type": "hangup"}
        }),
    )
    .await;
    let bob_rtp = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let mut phone = listen(
        bob.answer("call_uas_info.xml")
            .set("rtp", &bob_rtp.local_addr().unwrap().port().to_string()),
        gw.sip_port,
    )
    .await;
    let rtp = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let (mut carrier, voxgate) = carrier_call(&gw, &rtp).await;

    // Bob's INFO key: the caller hears it as telephone-events (PT 101, event 5).
    phone
        .wait_for_log("@@INFO-SENT@@", Duration::from_secs(10))
        .await;
    let heard = hear(&rtp, Instant::now() + Duration::from_millis(600)).await;
    let events: Vec<u8> = heard
        .iter()
        .filter(|h| h.pt == 101)
        .filter_map(|h| h.payload.first().copied())
        .collect();
    assert!(
        !events.is_empty() && events.iter().all(|e| *e == 5),
        "the caller must get bob's key 5 as telephone-events: {events:?}"
    );

    // The caller's key: bob's phone gets it by INFO, once. Then keys sent to bob's leg
    // through the API go the same way, one INFO each, in order; bob hangs up when no
    // more come.
    press(&rtp, voxgate, 7).await;
    phone
        .wait_for_log("@@INFO-Signal=7@@", Duration::from_secs(5))
        .await;
    let call = last_call(&gw).await;
    let bob_leg = call["legs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["agent"].is_string())
        .unwrap_or_else(|| panic!("bob's leg: {call}"))["id"]
        .clone();
    let r = gw
        .client()
        .post(gw.url(&format!("/v1/calls/{}/dtmf", call["id"].as_str().unwrap())))
        .json(&json!({ "digits": "12#", "leg": bob_leg }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202, "{}", r.text().await.unwrap());
    phone
        .wait_for_log("@@ENDED@@", Duration::from_secs(10))
        .await;
    let log = phone.log();
    let infos: Vec<&str> = log
        .lines()
        .filter_map(|l| l.split("@@INFO-").nth(1))
        .filter_map(|l| l.strip_suffix("@@"))
        .filter(|l| l.starts_with("Signal="))
        .collect();
    assert_eq!(
        infos,
        ["Signal=7", "Signal=1", "Signal=2", "Signal=#"],
        "{log}"
    );
    // The flow goes on after the bridge: hangup.
    carrier
        .wait_for_log("@@ENDED@@", Duration::from_secs(5))
        .await;
}

/// The file a `play` URL names, served by the test: its bytes, and how many GETs came.
#[derive(Default)]
struct HoldFile {
    wav: Vec<u8>,
    gets: std::sync::atomic::AtomicUsize,
}

async fn hold_file(
    axum::extract::State(file): axum::extract::State<std::sync::Arc<HoldFile>>,
) -> impl axum::response::IntoResponse {
    file.gets.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    (
        [(axum::http::header::CONTENT_TYPE, "audio/wav")],
        file.wav.clone(),
    )
}

/// A webhook app's `play` with a `url` and `loop: 2`: voxgate fetches the file (a WAV
/// made with sox, served by the test), the caller hears it twice, byte for byte in its
/// codec, then the app's `hangup`; a second call plays it again without a second fetch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_play_url_is_fetched_once_and_played_as_often_as_asked() {
    let gw = Gateway::start().await;
    let dir = tempfile::tempdir().unwrap();
    // The same file uploaded as a prompt: voxgate's own decoding of it, to compare with.
    let tone = tone_prompt(&gw, dir.path(), "hold", THANKS_HZ, 1).await;
    let file = std::sync::Arc::new(HoldFile {
        wav: std::fs::read(dir.path().join("hold.wav")).unwrap(),
        ..HoldFile::default()
    });
    let files = serve(
        axum::Router::new()
            .route("/hold.wav", axum::routing::get(hold_file))
            .with_state(file.clone()),
    )
    .await;
    let verbs = json!([
        {"verb": "play", "url": format!("{files}/hold.wav"), "loop": 2},
        {"verb": "hangup"}
    ]);
    fixed_app_number(&gw, verbs).await;
    for attempt in 0..2 {
        let rtp = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let (mut carrier, _) = carrier_call(&gw, &rtp).await;
        let heard = hear(&rtp, Instant::now() + Duration::from_millis(3000)).await;
        let start = heard
            .iter()
            .position(|h| ulaw_frame(&tone, 0).is_some_and(|f| f == h.payload))
            .unwrap_or_else(|| panic!("call {attempt}: the file never played"));
        let first = frames_of(&heard[start..], &tone);
        let second = frames_of(&heard[start + first..], &tone);
        assert!(
            first >= 49 && second >= 49,
            "call {attempt}: the file must play whole, twice: {first} then {second} frames matched"
        );
        carrier
            .wait_for_log("@@ENDED@@", Duration::from_secs(5))
            .await;
    }
    assert_eq!(
        file.gets.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "fetched once, then from the cache"
    );
}

/// A webhook app's `dial` to a SIP URI with an IP address (a PBX's extension): voxgate
/// sends the INVITE to that address with the URI as Request-URI and To, bridges the
/// caller to the answer (the caller's audio reaches the callee's socket), and the
/// program goes on after the callee hangs up (the app's next verbs: hang up).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_program_dials_a_sip_uri_and_bridges() {
    let gw = Gateway::start().await;
    let pbx_port = sipp::free_port_on(Ipv4Addr::LOCALHOST.into());
    let uri = format!("sip:2001@127.0.0.1:{pbx_port}");
    let verbs = json!([
        {"verb": "dial", "targets": [{"type": "sip", "uri": uri}], "ring_timeout_seconds": 10},
        {"verb": "hangup"}
    ]);
    fixed_app_number(&gw, verbs).await;
    let pbx_rtp = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let mut pbx = listen(
        Sipp::new("call_uas_bye.xml")
            .local_port(pbx_port)
            .service("2001")
            .set("rtp", &pbx_rtp.local_addr().unwrap().port().to_string())
            .timeout(Duration::from_secs(30))
            .duration(Duration::from_secs(2)),
        gw.sip_port,
    )
    .await;
    let rtp = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let (mut carrier, voxgate) = carrier_call(&gw, &rtp).await;
    pbx.wait_for_log("@@ANSWERED@@", Duration::from_secs(10))
        .await;
    let invite = pbx
        .requests()
        .into_iter()
        .find(|r| r.method == "INVITE")
        .expect("the PBX got an INVITE");
    assert_eq!(invite.uri, uri, "{}", invite.raw);
    let to = invite
        .headers
        .iter()
        .find(|(n, _)| n == "to")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    assert!(to.contains(&uri), "To names the URI: {to}");
    let got = relayed(&rtp, voxgate, &pbx_rtp, 0x55, 25).await;
    assert!(
        got >= 15,
        "the caller's audio must reach the PBX: {got} of 25"
    );
    pbx.wait_for_log("@@ENDED@@", Duration::from_secs(10)).await;
    carrier
        .wait_for_log("@@ENDED@@", Duration::from_secs(5))
        .await;
    // The record lands a moment after the BYE (the call records are written in batches).
    let until = Instant::now() + Duration::from_secs(5);
    let mut call = last_call(&gw).await;
    while call["status"] != "completed" && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(50)).await;
        call = last_call(&gw).await;
    }
    assert_eq!(call["status"], "completed", "{call}");
    assert!(
        call["legs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["uri"].as_str().is_some_and(|u| u.starts_with(&uri))),
        "the PBX's leg: {call}"
    );
}

/// A carrier trunk, and number +14155550100 routed to a webhook app that answers every
/// ask with `verbs`.
async fn fixed_app_number(gw: &Gateway, verbs: Value) {
    let app = serve(axum::Router::new().route(
        "/app",
        axum::routing::post(move || {
            let verbs = verbs.clone();
            async move { axum::Json(verbs) }
        }),
    ))
    .await;
    carrier_trunk(gw).await;
    post(
        gw,
        "/v1/numbers",
        json!({ "number": "+14155550100", "trunk": "carrier",
                "route": { "type": "webhook", "target": format!("{app}/app") } }),
    )
    .await;
}
