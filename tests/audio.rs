//! Real audio end to end: two baresip softphones (Debian's baresip 1.0.0) call each
//! other, each plays a sentence spoken by espeak-ng, each records what it hears, and the
//! recordings are compared with what the other side sent (cross-correlation, energy
//! envelope and coverage; see `compare` in `common/baresip.rs` and `tests/README.md`).
//!
//! - `direct_call_carries_speech_both_ways`: peer to peer, no gateway: proves the
//!   softphone setup and measures what PCMU on loopback gives (the reference numbers).
//! - `call_through_voxgate_carries_speech_both_ways`: both register with voxgate on its
//!   default config (MD5 digest: baresip 1.0.0 cannot answer a SHA-256 challenge), alice dials bob through
//!   it, bob auto-answers; the audio must cross the B2BUA and its RTP relay both ways.
//!
//! A control compares each recording with the sentence it must NOT contain (the one the
//! recording phone itself sent), which must score clearly lower: the check can fail.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/baresip.rs"]
mod baresip;
mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use baresip::compare::{compare, resample, Match};
use baresip::{read_wav, speech_wav, Baresip, PhoneConfig};
use common::Gateway;
use serde_json::{json, Value};

/// What alice says, and what bob says (different words, same voice).
const SENTENCE_ALICE: &str = "The quick brown fox jumps over the lazy dog near the river bank.";
const SENTENCE_BOB: &str = "Seven silver ships sailed quietly into the harbour at midnight.";
/// Silence before the sentence (lets the call settle) and after it (the aufile source
/// hangs the call up at the end of its file, so this is how long the far end has left to
/// receive the last words).
const LEAD_S: f32 = 0.5;
const TRAIL_S: f32 = 1.5;
/// The lag is searched within ±2 s.
const MAX_LAG_S: f64 = 2.0;

/// Pass marks (measured: see tests/README.md). Direct PCMU on loopback gives ncc,
/// windowed ncc and envelope corr 1.000 (to 3 places; µ-law's ~38 dB SNR), coverage
/// 1.0; the wrong sentence gives ncc 0.03, windowed ncc 0.12-0.13, envelope corr 0.40.
const MIN_WINDOWED_NCC: f64 = 0.85;
const MIN_ENVELOPE_CORR: f64 = 0.85;
const MIN_COVERAGE: f64 = 0.95;
/// The control (the wrong sentence) must stay below this…
const MAX_CONTROL_WINDOWED_NCC: f64 = 0.6;
/// …and the right sentence must beat it by at least this much.
const MIN_MARGIN_OVER_CONTROL: f64 = 0.3;

fn workdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("voxgate-audio-")
        .tempdir()
        .expect("temp dir")
}

fn sentences(dir: &Path) -> (PathBuf, PathBuf) {
    (
        speech_wav(dir, "alice", SENTENCE_ALICE, LEAD_S, TRAIL_S),
        speech_wav(dir, "bob", SENTENCE_BOB, LEAD_S, TRAIL_S),
    )
}

fn wav_seconds(path: &Path) -> f64 {
    let (s, rate) = read_wav(path);
    s.len() as f64 / f64::from(rate)
}

/// Compare what `listener` recorded with `sent` (must match) and with `not_sent` (the
/// control: must not). Returns (match, control) after asserting the pass marks.
fn check_heard(listener: &Baresip, sent: &Path, not_sent: &Path, label: &str) -> (Match, Match) {
    let rec = listener
        .received_wav()
        .unwrap_or_else(|e| panic!("{label}: {e}"));
    let (reference, ref_rate) = read_wav(sent);
    let (control_ref, control_rate) = read_wav(not_sent);
    assert_eq!(
        ref_rate, control_rate,
        "the two sentences have different rates"
    );
    let (received, rx_rate) = read_wav(&rec);
    let received = resample(&received, rx_rate, ref_rate);
    let m = compare(&reference, &received, ref_rate, MAX_LAG_S);
    let control = compare(&control_ref, &received, ref_rate, MAX_LAG_S);
    eprintln!(
        "{label}: received {:.2} s ({} Hz) in {}\n  right sentence: {m}\n  wrong sentence (control): {control}",
        received.len() as f64 / f64::from(ref_rate),
        rx_rate,
        rec.display()
    );
    assert!(
        control.windowed_ncc < MAX_CONTROL_WINDOWED_NCC,
        "{label}: the control (a sentence this side must not hear) scores {control}: the check cannot tell sentences apart"
    );
    assert!(
        m.coverage >= MIN_COVERAGE,
        "{label}: the received audio does not cover the sentence: {m}"
    );
    assert!(
        m.windowed_ncc >= MIN_WINDOWED_NCC,
        "{label}: received audio does not match what was sent: {m}"
    );
    assert!(
        m.envelope_corr >= MIN_ENVELOPE_CORR,
        "{label}: received energy envelope does not match what was sent: {m}"
    );
    assert!(
        m.windowed_ncc - control.windowed_ncc >= MIN_MARGIN_OVER_CONTROL,
        "{label}: right sentence {m} not clearly above the control {control}"
    );
    (m, control)
}

/// Alice dials `uri`; bob auto-answers; both play their file and the call ends when the
/// first file ends (the aufile source's end-of-file hangs up). Waits for each step
/// (bounded) and returns once both sides reported the call closed.
fn run_call(
    alice: &mut Baresip,
    bob: &mut Baresip,
    uri: &str,
    play_s: f64,
    context: &dyn Fn() -> String,
) {
    alice
        .dial(uri)
        .unwrap_or_else(|e| panic!("dial {uri}: {e}\n{}", context()));
    let first = alice
        .wait_any_event(
            &["CALL_ESTABLISHED", "CALL_CLOSED"],
            Duration::from_secs(15),
        )
        .unwrap_or_else(|e| {
            panic!(
                "alice: call to {uri} neither answered nor closed: {e}\n{}",
                context()
            )
        });
    assert_eq!(
        first["type"],
        json!("CALL_ESTABLISHED"),
        "alice: the call to {uri} ended before being answered: {first}\n{}",
        context()
    );
    bob.wait_event("CALL_ESTABLISHED", Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("bob: no established call: {e}\n{}", context()));
    let bound = Duration::from_secs_f64(play_s + 10.0);
    let alice_closed = alice.wait_event("CALL_CLOSED", bound);
    let bob_closed = bob.wait_event("CALL_CLOSED", Duration::from_secs(5));
    // Whatever happened, end the call on both sides before reading the recordings
    // (sndfile finishes a WAV's header when the call closes).
    if alice_closed.is_err() {
        let _ = alice.hangup();
    }
    if bob_closed.is_err() {
        let _ = bob.hangup();
    }
    let alice_closed =
        alice_closed.unwrap_or_else(|e| panic!("alice: call not closed: {e}\n{}", context()));
    let bob_closed =
        bob_closed.unwrap_or_else(|e| panic!("bob: call not closed: {e}\n{}", context()));
    eprintln!(
        "call closed: alice {}, bob {}",
        alice_closed["param"], bob_closed["param"]
    );
}

#[test]
fn direct_call_carries_speech_both_ways() {
    let dir = workdir();
    let (alice_wav, bob_wav) = sentences(dir.path());
    let play_s = wav_seconds(&alice_wav).max(wav_seconds(&bob_wav));
    let mut bob = Baresip::start(&PhoneConfig {
        name: "bob".into(),
        aor: "sip:bob@127.0.0.1".into(),
        password: None,
        regint: 0,
        source_wav: bob_wav.clone(),
    });
    let mut alice = Baresip::start(&PhoneConfig {
        name: "alice".into(),
        aor: "sip:alice@127.0.0.1".into(),
        password: None,
        regint: 0,
        source_wav: alice_wav.clone(),
    });
    let uri = format!("sip:bob@127.0.0.1:{}", bob.sip_port);
    run_call(&mut alice, &mut bob, &uri, play_s, &String::new);
    check_heard(&bob, &alice_wav, &bob_wav, "direct: bob hears alice");
    check_heard(&alice, &bob_wav, &alice_wav, "direct: alice hears bob");
    alice.stop();
    bob.stop();
}

async fn create_agent(gw: &Gateway, username: &str, password: &str) {
    gw.create_agent(json!({ "username": username, "password": password }))
        .await;
}

/// Poll `GET /v1/agents/{username}` until `state` is `available` (bounded).
async fn wait_available(gw: &Gateway, phone: &Baresip, username: &str) {
    gw.wait_agent_available(username, Duration::from_secs(10), || {
        format!("baresip events: {:?}", phone.events())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_through_voxgate_carries_speech_both_ways() {
    call_through_voxgate("PCMU", "PCMU", "via voxgate").await;
}

/// Alice's phone has only Opus and Bob's only PCMU: voxgate's offer to Bob adds the
/// codecs it transcodes to, Bob picks PCMU, and the relay decodes, resamples and
/// encodes each way (48 kHz Opus against 8 kHz G.711).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_opus_phone_and_a_pcmu_phone_talk_through_transcoding() {
    call_through_voxgate("opus/48000/2", "PCMU", "opus-pcmu").await;
}

/// The same with G.722 (wideband, 16 kHz) against PCMA.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_g722_phone_and_a_pcma_phone_talk_through_transcoding() {
    call_through_voxgate("G722/16000/1", "PCMA", "g722-pcma").await;
}

/// What codec `phone` sent and received in its call (baresip logs both), which must be
/// `codec` (the name before the first `/` of its `audio_codecs`).
fn assert_codec(phone: &Baresip, codec: &str) {
    let name = codec.split('/').next().unwrap_or(codec);
    let log = phone.log();
    for what in ["encoder", "decoder"] {
        let line = format!("Set audio {what}: {name} ");
        assert!(
            log.contains(&line),
            "{}: no \"{line}\" in its log: it did not use {name}\n{log}",
            phone.name
        );
    }
}

/// Alice (audio codecs `alice_codecs`) calls Bob (`bob_codecs`) through voxgate on its
/// default config; each must hear the other's sentence. Returns the gateway for more
/// checks.
async fn call_through_voxgate(alice_codecs: &str, bob_codecs: &str, label: &str) -> Gateway {
    let gw = Gateway::start().await;
    create_agent(&gw, "alice", "alicepass1").await;
    create_agent(&gw, "bob", "bobpass123").await;
    let dir = workdir();
    let (alice_wav, bob_wav) = sentences(dir.path());
    let play_s = wav_seconds(&alice_wav).max(wav_seconds(&bob_wav));
    let aor = |user: &str| format!("sip:{user}@127.0.0.1:{}", gw.sip_port);
    let mut bob = Baresip::start_codecs(
        &PhoneConfig {
            name: "bob".into(),
            aor: aor("bob"),
            password: Some("bobpass123".into()),
            regint: 600,
            source_wav: bob_wav.clone(),
        },
        bob_codecs,
    );
    let mut alice = Baresip::start_codecs(
        &PhoneConfig {
            name: "alice".into(),
            aor: aor("alice"),
            password: Some("alicepass1".into()),
            regint: 600,
            source_wav: alice_wav.clone(),
        },
        alice_codecs,
    );
    wait_available(&gw, &bob, "bob").await;
    wait_available(&gw, &alice, "alice").await;

    let uri = format!("sip:bob@127.0.0.1:{}", gw.sip_port);
    let log = || format!("----- voxgate log -----\n{}", gw.log());
    tokio::task::block_in_place(|| {
        run_call(&mut alice, &mut bob, &uri, play_s, &log);
        // The media went through voxgate's relay, not peer to peer: each phone received
        // its RTP from a port in the gateway's RTP range.
        let (lo, hi) = gw
            .rtp_ports
            .split_once('-')
            .map(|(a, b)| (a.parse::<u16>().unwrap(), b.parse::<u16>().unwrap()))
            .expect("rtp range lo-hi");
        for phone in [&alice, &bob] {
            let ports = phone.rtp_source_ports();
            assert!(
                !ports.is_empty() && ports.iter().all(|p| (lo..=hi).contains(p)),
                "{}: RTP came from ports {ports:?}, not from the gateway's range {lo}-{hi}",
                phone.name
            );
        }
        assert_codec(&alice, alice_codecs);
        assert_codec(&bob, bob_codecs);
        let log = gw.log();
        assert_eq!(
            log.contains("media: transcoding"),
            alice_codecs != bob_codecs,
            "voxgate transcodes when, and only when, the phones share no codec:\n{log}"
        );
        check_heard(
            &bob,
            &alice_wav,
            &bob_wav,
            &format!("{label}: bob hears alice"),
        );
        check_heard(
            &alice,
            &bob_wav,
            &alice_wav,
            &format!("{label}: alice hears bob"),
        );
    });
    alice.stop();
    bob.stop();
    gw
}

/// An agent's baresip on the default configuration registers and dials a phone number:
/// voxgate sends it out through the default trunk (the only one) to the carrier (a
/// second baresip, the lead, reached by its address as a trunk's host), and speech
/// crosses both ways. The call is an `outbound` call on that trunk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn softphone_dials_a_number_out_through_the_default_trunk() {
    let gw = Gateway::start().await;
    create_agent(&gw, "alice", "alicepass1").await;
    let dir = workdir();
    let (alice_wav, lead_wav) = sentences(dir.path());
    let play_s = wav_seconds(&alice_wav).max(wav_seconds(&lead_wav));
    let mut lead = Baresip::start(&PhoneConfig {
        name: "lead".into(),
        aor: "sip:+14155550100@127.0.0.1".into(),
        password: None,
        regint: 0,
        source_wav: lead_wav.clone(),
    });
    let mut alice = Baresip::start(&PhoneConfig {
        name: "alice".into(),
        aor: format!("sip:alice@127.0.0.1:{}", gw.sip_port),
        password: Some("alicepass1".into()),
        regint: 600,
        source_wav: alice_wav.clone(),
    });
    wait_available(&gw, &alice, "alice").await;
    let r = gw
        .client()
        .post(gw.url("/v1/trunks"))
        .json(&json!({
            "name": "carrier", "provider": "generic",
            "outbound": { "host": "127.0.0.1", "port": lead.sip_port },
            "caller_id": "+14155550199",
        }))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "POST /v1/trunks: {}", r.status());
    // The trunk table reaches the SIP core right after the API's change.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let uri = format!("sip:+14155550100@127.0.0.1:{}", gw.sip_port);
    let log = || format!("----- voxgate log -----\n{}", gw.log());
    tokio::task::block_in_place(|| {
        run_call(&mut alice, &mut lead, &uri, play_s, &log);
        check_heard(
            &lead,
            &alice_wav,
            &lead_wav,
            "via a trunk: the lead hears alice",
        );
        check_heard(
            &alice,
            &lead_wav,
            &alice_wav,
            "via a trunk: alice hears the lead",
        );
    });
    alice.stop();
    lead.stop();
    let calls: Value = gw
        .client()
        .get(gw.url("/v1/calls?status=completed"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let call = &calls["data"][0];
    assert_eq!(call["direction"], "outbound", "{calls:#}");
    assert!(
        call["trunk"]
            .as_str()
            .is_some_and(|t| t.starts_with("trk_")),
        "{call:#}"
    );
}
