//! The media engine against real peers (issue 13). The agent's phone and the carrier
//! are SIPp processes answering a click-to-call; each plays pcaps the test wrote (or
//! SIPp's own RFC 4733 pcaps) and may send SIP INFO.
//!
//! Recording: a click-to-call recorded in `dual` (PCMU tones: 440 Hz from the agent,
//! 1,000 Hz from the lead, with a 2 kHz marker at a known time in both), the WAV read
//! back with hound:
//!
//! - the left channel holds the agent's tone and the right the lead's, and the file is
//!   as long as the call was answered (within 40 ms);
//! - with 5 % of the lead's packets missing and a 2-second gap in its stream, each
//!   channel's marker lands within 20 ms of its place (so the channels stay aligned);
//! - kill -9 during a recorded call: after a restart the recording is closed, and the
//!   file opens with sox and hound and holds audio up to within 2 s of the kill.
//!
//! DTMF: digits the agent sends by RFC 4733 (SIPp's pcaps), by SIP INFO, and as tones in
//! its G.711 audio each give exactly one signed `call.dtmf` webhook with the right
//! digit, source and leg; an espeak-ng sentence in the same audio gives none.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "common/receiver.rs"]
mod receiver;
#[path = "common/sipp.rs"]
mod sipp;

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::Gateway;
use receiver::Receiver;
use serde_json::{json, Value};
use sipp::{free_port_on, listen, sipp_media_port, Phone, Sipp, SippProcess};

const ALICE: (&str, &str) = ("alice", "alicepass1");
const RATE: u32 = 8000;
/// Each stream: 5 s of tone, the 2 kHz marker from 3.5 s to 3.7 s of stream time.
const STREAM_S: f64 = 5.0;
const MARKER_AT_S: f64 = 3.5;
const MARKER_LEN_S: f64 = 0.2;
const MARKER_HZ: f64 = 2000.0;
const AGENT_HZ: f64 = 440.0;
const LEAD_HZ: f64 = 1000.0;

/// How one SIPp leg's stream is damaged.
#[derive(Clone, Copy)]
struct Damage {
    /// Drop every n-th packet (n = 20: 5 %), never the first ten or the marker's.
    drop_every: Option<usize>,
    /// Stream seconds sent nothing (timestamps go on: as after lost packets or DTX).
    gap: Option<(f64, f64)>,
}

const CLEAN: Damage = Damage {
    drop_every: None,
    gap: None,
};

/// One 20 ms PCMU payload (our encoder; µ-law is the same table everywhere).
fn ulaw_frame(pcm: &[i16; 160]) -> [u8; 160] {
    let mut out = [0u8; 160];
    let mut enc = voxgate_media::codec::Encoder::new(voxgate_media::Codec::Pcmu).unwrap();
    enc.encode(pcm, &mut out).unwrap();
    out
}

/// A pcap (Ethernet, IPv4, UDP, RTP) of a PCMU stream: `base_hz` with the marker,
/// damaged as told. SIPp's `play_pcap_audio` replays it with its packet times.
fn write_pcap(path: &Path, base_hz: f64, ssrc: u32, damage: Damage) {
    let frames = (STREAM_S * 50.0) as usize;
    let marker = (MARKER_AT_S * 50.0) as usize..((MARKER_AT_S + MARKER_LEN_S) * 50.0) as usize;
    let pcm: Vec<Option<[i16; 160]>> = (0..frames)
        .map(|i| {
            let t = i as f64 / 50.0;
            if damage.gap.is_some_and(|(from, to)| t >= from && t < to) {
                return None;
            }
            if damage
                .drop_every
                .is_some_and(|n| i >= 10 && !marker.contains(&i) && i % n == 0)
            {
                return None;
            }
            let hz = if marker.contains(&i) {
                MARKER_HZ
            } else {
                base_hz
            };
            let mut pcm = [0i16; 160];
            for (k, v) in pcm.iter_mut().enumerate() {
                let secs = (i * 160 + k) as f64 / f64::from(RATE);
                *v = ((2.0 * std::f64::consts::PI * hz * secs).sin() * 8000.0) as i16;
            }
            Some(pcm)
        })
        .collect();
    write_pcmu_pcap(path, &pcm, ssrc);
}

/// A pcap of a PCMU stream of 20 ms frames (`None`: not sent; timestamps go on).
fn write_pcmu_pcap(path: &Path, frames: &[Option<[i16; 160]>], ssrc: u32) {
    let mut out = Vec::new();
    // Global header: magic, v2.4, GMT 0, accuracy 0, snaplen, LINKTYPE_ETHERNET.
    out.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&4u16.to_le_bytes());
    out.extend_from_slice(&0i32.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&65535u32.to_le_bytes());
    out.extend_from_slice(&1u32.to_le_bytes());
    for (i, pcm) in frames.iter().enumerate() {
        let Some(pcm) = pcm else { continue };
        let payload = ulaw_frame(pcm);
        let mut rtp = vec![0x80, 0];
        rtp.extend_from_slice(&(i as u16).to_be_bytes());
        rtp.extend_from_slice(&((i * 160) as u32).to_be_bytes());
        rtp.extend_from_slice(&ssrc.to_be_bytes());
        rtp.extend_from_slice(&payload);
        let udp_len = 8 + rtp.len();
        let ip_len = 20 + udp_len;
        let mut pkt = Vec::with_capacity(14 + ip_len);
        pkt.extend_from_slice(&[0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 2, 0x08, 0x00]);
        pkt.extend_from_slice(&[0x45, 0]);
        pkt.extend_from_slice(&(ip_len as u16).to_be_bytes());
        pkt.extend_from_slice(&[0, 0, 0x40, 0, 64, 17, 0, 0, 127, 0, 0, 1, 127, 0, 0, 1]);
        pkt.extend_from_slice(&4000u16.to_be_bytes());
        pkt.extend_from_slice(&4002u16.to_be_bytes());
        pkt.extend_from_slice(&(udp_len as u16).to_be_bytes());
        pkt.extend_from_slice(&[0, 0]);
        pkt.extend_from_slice(&rtp);
        let us = (i as u64) * 20_000;
        out.extend_from_slice(&((us / 1_000_000) as u32).to_le_bytes());
        out.extend_from_slice(&((us % 1_000_000) as u32).to_le_bytes());
        out.extend_from_slice(&(pkt.len() as u32).to_le_bytes());
        out.extend_from_slice(&(pkt.len() as u32).to_le_bytes());
        out.extend_from_slice(&pkt);
    }
    std::fs::write(path, out).unwrap();
}

/// What an answering SIPp leg does after the ACK, in order.
enum Step {
    Pause(u64),
    /// `play_pcap_audio` (returns at once: SIPp plays it in the background).
    Play(PathBuf),
    /// An in-dialog INFO with this content type and body; waits for its 200.
    Info(&'static str, &'static str),
}

/// A UAS scenario that answers with PCMU (and telephone-event 101) on SIPp's media
/// port, runs `steps` after the ACK and waits for the BYE.
fn write_scenario(dir: &Path, name: &str, steps: &[Step]) -> PathBuf {
    write_scenario_sdp(dir, name, steps, "[media_port] RTP/AVP 0 101")
}

/// [`write_scenario`] with the SDP answer's `m=audio` line after `audio ` given: a
/// test's own socket as the port, the payload types offered.
fn write_scenario_sdp(dir: &Path, name: &str, steps: &[Step], m_line: &str) -> PathBuf {
    let mut body = String::new();
    for (i, step) in steps.iter().enumerate() {
        match step {
            Step::Pause(ms) => body.push_str(&format!("  <pause milliseconds=\"{ms}\" />\n")),
            Step::Play(pcap) => body.push_str(&format!(
                "  <nop><action><exec play_pcap_audio=\"{}\" /><log message=\"@@PLAYING@@\" /></action></nop>\n",
                pcap.display()
            )),
            Step::Info(content_type, text) => body.push_str(&format!(
                r#"  <send>
    <![CDATA[

      INFO [$contact] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: <sip:[service]@[local_ip]:[local_port]>;tag=[pid]SIPpTag01[call_number]
      To:[$from]
      Call-ID: [call_id]
      CSeq: {cseq} INFO
      Contact: <sip:[service]@[local_ip]:[local_port]>
      Max-Forwards: 70
      Content-Type: {content_type}
      Content-Length: [len]

{text}
    ]]>
  </send>
  <recv response="200" />
"#,
                cseq = i + 1,
                text = text.replace("\r\n", "\n")
            )),
        }
    }
    // SIPp refuses variables set and never used: capture the dialog only for INFO.
    let capture = if steps.iter().any(|s| matches!(s, Step::Info(..))) {
        r#"
    <action>
      <ereg regexp="sip:[^>;]*" search_in="hdr" header="Contact:" assign_to="contact" />
      <ereg regexp=".*" search_in="hdr" header="From:" assign_to="from" />
    </action>
  "#
    } else {
        ""
    };
    let xml = format!(
        r#"<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="{name}">
  <recv request="INVITE" rrs="true">{capture}</recv>
  <send>
    <![CDATA[

      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]SIPpTag01[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      Contact: <sip:[service]@[local_ip]:[local_port];transport=[transport]>
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=sipp 1 1 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio {m_line}
      a=rtpmap:0 PCMU/8000
      a=rtpmap:101 telephone-event/8000
      a=fmtp:101 0-16
      a=ptime:20
      a=sendrecv

    ]]>
  </send>
  <recv request="ACK">
    <action>
      <log message="@@ANSWERED@@ [call_id]" />
    </action>
  </recv>
{body}  <nop><action><log message="@@STEPS-DONE@@" /></action></nop>
  <recv request="BYE" />
  <send>
    <![CDATA[

      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0

    ]]>
  </send>
</scenario>
"#
    );
    let path = dir.join(format!("{name}.xml"));
    std::fs::write(&path, xml).unwrap();
    path
}

async fn post(gw: &Gateway, path: &str, body: Value) -> (u16, Value) {
    let r = gw
        .client()
        .post(gw.url(path))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn get(gw: &Gateway, path: &str) -> Value {
    let r = gw.client().get(gw.url(path)).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200, "GET {path}");
    r.json().await.unwrap()
}

/// A phone for alice playing `agent_pcap`, a trunk to a carrier playing `lead_pcap`,
/// and a recorded click-to-call between them; returns the call's id and the peers.
async fn recorded_call(
    gw: &Gateway,
    dir: &Path,
    agent_damage: Damage,
    lead_damage: Damage,
) -> (String, Vec<SippProcess>) {
    let agent_pcap = dir.join("agent.pcap");
    let lead_pcap = dir.join("lead.pcap");
    write_pcap(&agent_pcap, AGENT_HZ, 0x0a0a_0a0a, agent_damage);
    write_pcap(&lead_pcap, LEAD_HZ, 0x1e1e_1e1e, lead_damage);
    // The agent starts talking a while after the lead answered, so both streams begin
    // inside the recording (it starts at the lead's answer).
    let agent = [Step::Pause(1500), Step::Play(agent_pcap)];
    let lead = [Step::Pause(300), Step::Play(lead_pcap)];
    let extra = json!({ "record": true, "recording_channels": "dual" });
    click_to_call(gw, dir, &agent, &lead, extra).await
}

/// A phone for alice and a trunk to a carrier, each running its `steps` once answered,
/// and a click-to-call between them (`extra` fields added); the call's id and the peers.
async fn click_to_call(
    gw: &Gateway,
    dir: &Path,
    agent: &[Step],
    lead: &[Step],
    extra: Value,
) -> (String, Vec<SippProcess>) {
    let agent_xml = write_scenario(dir, "agent", agent);
    let lead_xml = write_scenario(dir, "lead", lead);
    click_to_call_with(gw, &agent_xml, &lead_xml, extra).await
}

/// [`click_to_call`] with the agent's and the carrier's scenarios given.
async fn click_to_call_with(
    gw: &Gateway,
    agent_xml: &Path,
    lead_xml: &Path,
    extra: Value,
) -> (String, Vec<SippProcess>) {
    let alice = Phone::new(ALICE);
    gw.create_agent(json!({ "username": ALICE.0, "password": ALICE.1 }))
        .await;
    alice.register(gw.sip_port);
    let carrier_port = free_port_on(Ipv4Addr::LOCALHOST.into());
    let phone = listen(
        alice
            .answer(agent_xml.to_str().unwrap())
            .arg("-mp")
            .arg(&sipp_media_port().to_string()),
        gw.sip_port,
    )
    .await;
    let carrier = listen(
        Sipp::new(lead_xml.to_str().unwrap())
            .local_port(carrier_port)
            .timeout(Duration::from_secs(40))
            .arg("-mp")
            .arg(&sipp_media_port().to_string()),
        gw.sip_port,
    )
    .await;
    let (status, trunk) = post(
        gw,
        "/v1/trunks",
        json!({
            "name": "carrier",
            "provider": "generic",
            "outbound": { "host": "127.0.0.1", "port": carrier_port, "transport": "udp" },
        }),
    )
    .await;
    assert_eq!(status, 201, "{trunk}");
    let mut body = json!({ "agent": "alice", "to": "+14155550100", "trunk": "carrier" });
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    let (status, call) = post(gw, "/v1/calls", body).await;
    assert_eq!(status, 201, "{call}");
    (
        call["id"].as_str().unwrap().to_owned(),
        vec![phone, carrier],
    )
}

async fn wait_answered(gw: &Gateway, id: &str) -> Value {
    let until = Instant::now() + Duration::from_secs(15);
    loop {
        let call = get(gw, &format!("/v1/calls/{id}")).await;
        if call["status"] == "in-progress" && !call["recording_ids"].as_array().unwrap().is_empty()
        {
            return call;
        }
        assert!(
            Instant::now() < until,
            "call not answered and recorded: {call}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_completed_recording(gw: &Gateway, id: &str) -> Value {
    let until = Instant::now() + Duration::from_secs(15);
    loop {
        let rec = get(gw, &format!("/v1/recordings/{id}")).await;
        if rec["status"] == "completed" {
            return rec;
        }
        assert!(Instant::now() < until, "recording not completed: {rec}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn time(v: &Value) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap())
        .unwrap()
        .with_timezone(&chrono::Utc)
}

/// Goertzel power of `freq` in `x` (mean square of a sine at that frequency).
fn power(x: &[f64], freq: f64) -> f64 {
    let w = 2.0 * std::f64::consts::PI * freq / f64::from(RATE);
    let c = 2.0 * w.cos();
    let (mut s1, mut s2) = (0.0, 0.0);
    for &v in x {
        let s = v + c * s1 - s2;
        s2 = s1;
        s1 = s;
    }
    let p = s1 * s1 + s2 * s2 - c * s1 * s2;
    2.0 * p / (x.len() as f64).powi(2)
}

/// 5 ms blocks of one channel.
const BLOCK: usize = 40;

/// Where (s) a channel's `hz` tone starts.
fn tone_start(ch: &[f64], hz: f64) -> f64 {
    ch.chunks_exact(BLOCK)
        .position(|b| power(b, hz) > 8.0e6)
        .map(|b| (b * BLOCK) as f64 / f64::from(RATE))
        .unwrap_or_else(|| panic!("no {hz} Hz tone in the channel"))
}

/// Where (s) a channel's stream starts and where its marker starts.
fn onsets(ch: &[f64], base_hz: f64) -> (f64, f64) {
    let blocks: Vec<&[f64]> = ch.chunks_exact(BLOCK).collect();
    // A full-scale-ish tone of amplitude 8000 has power 32e6; half of that is "on".
    let on = 8.0e6;
    let start = blocks
        .iter()
        .position(|b| power(b, base_hz) > on)
        .unwrap_or_else(|| panic!("no {base_hz} Hz tone in the channel"));
    let marker = blocks
        .iter()
        .enumerate()
        .skip(start)
        .position(|(_, b)| power(b, MARKER_HZ) > on)
        .map(|p| p + start)
        .expect("no marker tone in the channel");
    let s = |b: usize| (b * BLOCK) as f64 / f64::from(RATE);
    (s(start), s(marker))
}

/// `GET /v1/recordings/{id}/audio` into `dir`.
async fn download(gw: &Gateway, id: &str, dir: &Path) -> PathBuf {
    let r = gw
        .client()
        .get(gw.url(&format!("/v1/recordings/{id}/audio")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.headers()["content-type"], "audio/wav");
    let path = dir.join(format!("{id}.wav"));
    std::fs::write(&path, r.bytes().await.unwrap()).unwrap();
    path
}

struct Wav {
    left: Vec<f64>,
    right: Vec<f64>,
    seconds: f64,
}

impl Wav {
    /// Whole milliseconds of audio, as the recording's `duration_ms` counts them.
    fn millis(&self) -> i64 {
        (self.left.len() as u64 * 1000 / u64::from(RATE)) as i64
    }
}

fn read_wav(path: &Path) -> Wav {
    let mut r = hound::WavReader::open(path).unwrap();
    let spec = r.spec();
    assert_eq!(spec.channels, 2, "dual recording");
    assert_eq!(spec.sample_rate, RATE);
    let samples: Vec<i16> = r.samples::<i16>().map(Result::unwrap).collect();
    let left: Vec<f64> = samples.iter().step_by(2).map(|&s| f64::from(s)).collect();
    let right: Vec<f64> = samples
        .iter()
        .skip(1)
        .step_by(2)
        .map(|&s| f64::from(s))
        .collect();
    let seconds = left.len() as f64 / f64::from(RATE);
    Wav {
        left,
        right,
        seconds,
    }
}

/// Runs a recorded call with the given damage and checks channels, length and markers.
async fn dual_recording(agent_damage: Damage, lead_damage: Damage) {
    let gw = Gateway::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (id, mut peers) = recorded_call(&gw, dir.path(), agent_damage, lead_damage).await;
    let call = wait_answered(&gw, &id).await;
    let rec_id = call["recording_ids"][0].as_str().unwrap().to_owned();
    for p in &mut peers {
        p.wait_for_log("@@PLAYING@@", Duration::from_secs(10)).await;
    }
    // Both streams are 5 s long and start within 1.5 s of the answer.
    tokio::time::sleep(Duration::from_millis(7000)).await;
    let (status, body) = post(&gw, &format!("/v1/calls/{id}/hangup"), json!({})).await;
    assert_eq!(status, 204, "{body}");
    let rec = wait_completed_recording(&gw, &rec_id).await;
    let call = get(&gw, &format!("/v1/calls/{id}")).await;
    assert_eq!(call["status"], "completed", "{call}");
    let answered = time(&call["answered_at"]);
    let ended = time(&call["ended_at"]);
    let call_s = (ended - answered).num_milliseconds() as f64 / 1000.0;

    let path = download(&gw, &rec_id, dir.path()).await;
    let wav = read_wav(&path);
    assert!(
        (wav.seconds - call_s).abs() <= 0.040,
        "file {:.3} s, call answered for {call_s:.3} s",
        wav.seconds
    );
    assert_eq!(rec["duration_ms"].as_i64().unwrap(), wav.millis());
    assert_eq!(rec["channels"], "dual");

    // Left = agent (440 Hz), right = lead (1 kHz), each without the other.
    let (l0, lm) = onsets(&wav.left, AGENT_HZ);
    let (r0, rm) = onsets(&wav.right, LEAD_HZ);
    let mid = |ch: &[f64], from: f64| {
        let a = ((from + 0.2) * f64::from(RATE)) as usize;
        ch[a..a + 8000].to_vec()
    };
    let (left, right) = (mid(&wav.left, l0), mid(&wav.right, r0));
    assert!(
        power(&left, AGENT_HZ) > 100.0 * power(&left, LEAD_HZ),
        "left channel is not the agent's"
    );
    assert!(
        power(&right, LEAD_HZ) > 100.0 * power(&right, AGENT_HZ),
        "right channel is not the lead's"
    );
    // The markers sit at their place in both channels.
    eprintln!(
        "onsets: agent {l0:.3}/{lm:.3} lead {r0:.3}/{rm:.3} file {:.3}",
        wav.seconds
    );
    for (name, start, marker) in [("agent", l0, lm), ("lead", r0, rm)] {
        let off = marker - start;
        assert!(
            (off - MARKER_AT_S).abs() <= 0.020,
            "{name}'s marker at {off:.3} s into its stream, want {MARKER_AT_S} s"
        );
    }
    drop(peers);
}

#[tokio::test]
async fn dual_recording_puts_the_agent_left_and_the_lead_right() {
    dual_recording(CLEAN, CLEAN).await;
}

#[tokio::test]
async fn dual_recording_stays_aligned_through_loss_and_a_gap() {
    dual_recording(
        CLEAN,
        Damage {
            drop_every: Some(20),
            gap: Some((1.0, 3.0)),
        },
    )
    .await;
}

#[tokio::test]
async fn a_recording_survives_kill_9() {
    let mut gw = Gateway::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (id, mut peers) = recorded_call(&gw, dir.path(), CLEAN, CLEAN).await;
    let call = wait_answered(&gw, &id).await;
    let rec_id = call["recording_ids"][0].as_str().unwrap().to_owned();
    for p in &mut peers {
        p.wait_for_log("@@PLAYING@@", Duration::from_secs(10)).await;
    }
    let answered = time(&call["answered_at"]);
    tokio::time::sleep(Duration::from_millis(4500)).await;
    let killed_at = chrono::Utc::now();
    gw.kill9();
    drop(peers);
    gw.restart().await;
    let rec = wait_completed_recording(&gw, &rec_id).await;
    let path = download(&gw, &rec_id, dir.path()).await;
    // hound reads it…
    let wav = read_wav(&path);
    let lived = (killed_at - answered).num_milliseconds() as f64 / 1000.0;
    assert!(
        wav.seconds >= lived - 2.0 && wav.seconds <= lived + 0.1,
        "file holds {:.3} s, the call was recorded for {lived:.3} s before the kill",
        wav.seconds
    );
    assert_eq!(rec["duration_ms"].as_i64().unwrap(), wav.millis());
    // …and so does sox.
    let out = std::process::Command::new("sox")
        .arg("--i")
        .arg("-D")
        .arg(&path)
        .output()
        .expect("run sox (scripts/install-test-deps.sh installs it)");
    assert!(
        out.status.success(),
        "sox: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sox_s: f64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    assert!((sox_s - wav.seconds).abs() < 0.001, "sox says {sox_s} s");
}

// ---------------------------------------------------------------------------------
// DTMF

/// A webhook for `call.dtmf` at a receiver that checks signatures.
async fn dtmf_hook(gw: &Gateway) -> Receiver {
    let rx = Receiver::start().await;
    let (status, hook) = post(
        gw,
        "/v1/webhooks",
        json!({ "url": rx.url("/dtmf"), "events": ["call.dtmf"] }),
    )
    .await;
    assert_eq!(status, 201, "{hook}");
    rx.secret("/dtmf", hook["secret"].as_str().unwrap());
    rx
}

/// Runs a click-to-call whose agent runs `agent`; waits until its steps are done and
/// a further `settle`, hangs up, and returns the `call.dtmf` events (signature checked)
/// with the agent's leg id.
async fn digits_heard(agent: &[Step], settle: Duration) -> (Vec<Value>, String) {
    let gw = Gateway::start().await;
    let rx = dtmf_hook(&gw).await;
    let dir = tempfile::tempdir().unwrap();
    let (id, mut peers) = click_to_call(&gw, dir.path(), agent, &[], json!({})).await;
    peers[0]
        .wait_for_log("@@STEPS-DONE@@", Duration::from_secs(30))
        .await;
    tokio::time::sleep(settle).await;
    let call = get(&gw, &format!("/v1/calls/{id}")).await;
    assert_eq!(call["status"], "in-progress", "{call}");
    let (status, body) = post(&gw, &format!("/v1/calls/{id}/hangup"), json!({})).await;
    assert_eq!(status, 204, "{body}");
    let agent_leg = call["legs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["agent"].is_string())
        .unwrap_or_else(|| panic!("no agent leg: {call}"))["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // Deliveries are quick; give stragglers (a second event per digit) time to show.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let got = rx.got();
    assert!(got.iter().all(|g| g.signature_ok), "unsigned delivery");
    let events: Vec<Value> = got
        .into_iter()
        .map(|g| g.body)
        .filter(|b| b["type"] == "call.dtmf")
        .map(|b| b["data"].clone())
        .collect();
    for e in &events {
        assert_eq!(e["call_id"], id.as_str(), "{e}");
    }
    drop(peers);
    (events, agent_leg)
}

fn digits(events: &[Value], leg: &str, source: &str) -> String {
    for e in events {
        assert_eq!(e["leg_id"], leg, "{e}");
        assert_eq!(e["source"], source, "{e}");
    }
    events
        .iter()
        .map(|e| e["digit"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn rfc4733_digits_from_sipp_pcaps_are_reported_once_each() {
    let pcap = |d: &str| {
        Step::Play(PathBuf::from(format!(
            "/usr/share/sip-tester/dtmf_2833_{d}.pcap"
        )))
    };
    let steps = [
        Step::Pause(300),
        pcap("1"),
        Step::Pause(400),
        pcap("5"),
        Step::Pause(400),
        pcap("9"),
        Step::Pause(400),
        pcap("pound"),
        Step::Pause(400),
    ];
    let (events, leg) = digits_heard(&steps, Duration::from_millis(500)).await;
    assert_eq!(digits(&events, &leg, "rfc4733"), "159#", "{events:#?}");
}

/// A click-to-call's own `status_callback` gets its `call.dtmf` events (SPEC §5: a call's
/// `call.*` events), signed, with no webhook subscribed to them: the call is listened to
/// for it (telephone-events from SIPp's pcaps, which only a listened call hears).
#[tokio::test]
async fn a_calls_status_callback_gets_its_key_presses() {
    const SECRET: &str = "whsec_media_status_callback";
    let gw = Gateway::start_with(&[("VOXGATE_WEBHOOKS_SECRET", SECRET)], None).await;
    let rx = Receiver::start().await;
    rx.secret("/status", SECRET);
    let dir = tempfile::tempdir().unwrap();
    let pcap = |d: &str| {
        Step::Play(PathBuf::from(format!(
            "/usr/share/sip-tester/dtmf_2833_{d}.pcap"
        )))
    };
    let steps = [
        Step::Pause(300),
        pcap("5"),
        Step::Pause(400),
        pcap("9"),
        Step::Pause(400),
    ];
    let extra = json!({ "status_callback": rx.url("/status") });
    let (id, mut peers) = click_to_call(&gw, dir.path(), &steps, &[], extra).await;
    peers[0]
        .wait_for_log("@@STEPS-DONE@@", Duration::from_secs(30))
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (status, body) = post(&gw, &format!("/v1/calls/{id}/hangup"), json!({})).await;
    assert_eq!(status, 204, "{body}");
    let got = rx
        .wait("call.completed", Duration::from_secs(10), |g| {
            g.iter().any(|g| g.body["type"] == "call.completed")
        })
        .await;
    assert!(
        got.iter().all(|g| g.path == "/status" && g.signature_ok),
        "{got:?}"
    );
    let digits: String = got
        .iter()
        .filter(|g| g.body["type"] == "call.dtmf")
        .map(|g| {
            assert_eq!(g.body["data"]["call_id"], id.as_str());
            assert_eq!(g.body["data"]["source"], "rfc4733");
            g.body["data"]["digit"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(digits, "59");
    drop(peers);
}

#[tokio::test]
async fn sip_info_digits_are_reported_once_each() {
    let steps = [
        Step::Pause(300),
        Step::Info("application/dtmf-relay", "Signal=4\r\nDuration=160\r\n"),
        Step::Pause(300),
        Step::Info("application/dtmf-relay", "Signal=*\r\nDuration=160\r\n"),
        Step::Pause(300),
        Step::Info("application/dtmf", "8"),
    ];
    let (events, leg) = digits_heard(&steps, Duration::from_millis(300)).await;
    assert_eq!(digits(&events, &leg, "info"), "4*8", "{events:#?}");
}

/// An espeak-ng sentence at 8 kHz, as 20 ms frames.
fn speech_frames(dir: &Path, text: &str) -> Vec<Option<[i16; 160]>> {
    let wav = dir.join("speech.wav");
    let raw = dir.join("speech.raw");
    let ok = std::process::Command::new("espeak-ng")
        .args(["-w"])
        .arg(&wav)
        .arg(text)
        .status()
        .expect("run espeak-ng (scripts/install-test-deps.sh installs it)");
    assert!(ok.success());
    let ok = std::process::Command::new("sox")
        .arg(&wav)
        .args([
            "-r",
            "8000",
            "-c",
            "1",
            "-b",
            "16",
            "-e",
            "signed-integer",
            "-t",
            "raw",
        ])
        .arg(&raw)
        .status()
        .expect("run sox");
    assert!(ok.success());
    let bytes = std::fs::read(&raw).unwrap();
    let samples: Vec<i16> = bytes
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect();
    samples
        .chunks_exact(160)
        .map(|c| Some(c.try_into().unwrap()))
        .collect()
}

/// DTMF tones as a phone sends them in audio: 100 ms on, 100 ms off.
fn tone_frames(keys: &str) -> Vec<Option<[i16; 160]>> {
    use voxgate_media::dtmf::inband::{ToneGenerator, ToneLevels};
    use voxgate_media::dtmf::Digit;
    let mut gen = ToneGenerator::new(8000, ToneLevels::default());
    for k in keys.chars() {
        gen.push(
            Digit::from_char(k).unwrap(),
            Duration::from_millis(100),
            Duration::from_millis(100),
        );
    }
    let mut out = Vec::new();
    while !gen.is_idle() {
        let mut f = [0i16; 160];
        gen.fill(&mut f);
        out.push(Some(f));
    }
    out.extend(std::iter::repeat_n(Some([0i16; 160]), 10));
    out
}

#[tokio::test]
async fn inband_tones_are_heard_and_speech_is_not() {
    // One stream: a spoken sentence (numbers included), then the tones. Exactly the
    // tones' digits: the speech gives none, and the audio path is shown to carry what
    // the detector needs in the same call.
    let dir = tempfile::tempdir().unwrap();
    let mut frames = vec![Some([0i16; 160]); 10];
    frames.extend(speech_frames(
        dir.path(),
        "Please hold while we connect your call. Seven, nine, one. Thank you for waiting.",
    ));
    frames.extend(std::iter::repeat_n(Some([0i16; 160]), 25));
    frames.extend(tone_frames("270#"));
    let pcap = dir.path().join("speech-then-tones.pcap");
    write_pcmu_pcap(&pcap, &frames, 0x5eec_4000);
    let secs = frames.len() as u64 * 20;
    let steps = [Step::Pause(300), Step::Play(pcap)];
    let (events, leg) = digits_heard(&steps, Duration::from_millis(secs + 1000)).await;
    assert_eq!(digits(&events, &leg, "inband"), "270#", "{events:#?}");
}

// ---------------------------------------------------------------------------------
// Recording control through the API

/// Start, pause (card payment), resume and stop a live call's recording through
/// `POST /v1/calls/{id}/recording`; the paused stretch is silence in the file, and the
/// route's refusals name the problem.
#[tokio::test]
async fn recording_started_paused_resumed_and_stopped_through_the_api() {
    let gw = Gateway::start().await;
    let dir = tempfile::tempdir().unwrap();
    let agent_pcap = dir.path().join("agent.pcap");
    write_pcap(&agent_pcap, AGENT_HZ, 0x0a0a_0a0a, CLEAN);
    let agent = [Step::Pause(200), Step::Play(agent_pcap)];
    let (id, mut peers) = click_to_call(&gw, dir.path(), &agent, &[], json!({})).await;
    let rec_path = format!("/v1/calls/{id}/recording");
    // Not answered yet, or answered: wait for the answer first.
    let until = Instant::now() + Duration::from_secs(15);
    while get(&gw, &format!("/v1/calls/{id}")).await["status"] != "in-progress" {
        assert!(Instant::now() < until, "call not answered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    peers[0]
        .wait_for_log("@@PLAYING@@", Duration::from_secs(10))
        .await;
    let (s, v) = post(&gw, &rec_path, json!({ "action": "pause" })).await;
    assert_eq!(s, 409, "nothing to pause yet: {v}");
    let (s, v) = post(&gw, &rec_path, json!({ "action": "pause", "volume": 3 })).await;
    assert_eq!(s, 422, "unknown field: {v}");
    let (s, v) = post(&gw, &rec_path, json!({ "action": "rewind" })).await;
    assert_eq!(s, 422, "{v}");
    let (s, v) = post(
        &gw,
        "/v1/calls/call_nope/recording",
        json!({ "action": "start" }),
    )
    .await;
    assert_eq!(s, 404, "{v}");

    let (s, started) = post(
        &gw,
        &rec_path,
        json!({ "action": "start", "channels": "dual" }),
    )
    .await;
    assert_eq!(s, 200, "{started}");
    assert_eq!(started["status"], "recording");
    let rec_id = started["recording_id"].as_str().unwrap().to_owned();
    let (s, v) = post(&gw, &rec_path, json!({ "action": "start" })).await;
    assert_eq!(s, 409, "already recording: {v}");
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let (s, v) = post(&gw, &rec_path, json!({ "action": "pause" })).await;
    assert_eq!((s, v["status"].as_str()), (200, Some("paused")), "{v}");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (s, v) = post(&gw, &rec_path, json!({ "action": "resume" })).await;
    assert_eq!((s, v["status"].as_str()), (200, Some("recording")), "{v}");
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let (s, v) = post(&gw, &rec_path, json!({ "action": "stop" })).await;
    assert_eq!(
        (s, v["recording_id"].as_str()),
        (200, Some(rec_id.as_str())),
        "{v}"
    );
    let (s, v) = post(&gw, &rec_path, json!({ "action": "stop" })).await;
    assert_eq!(s, 409, "stopped already: {v}");

    let rec = wait_completed_recording(&gw, &rec_id).await;
    assert_eq!(rec["call"], id.as_str(), "{rec}");
    let call = get(&gw, &format!("/v1/calls/{id}")).await;
    assert_eq!(call["recording_ids"], json!([rec_id]), "{call}");
    let wav = read_wav(&download(&gw, &rec_id, dir.path()).await);
    assert!((wav.seconds - 3.5).abs() < 0.3, "file {:.3} s", wav.seconds);
    // Tone, then ~1.5 s of silence (the pause), then tone again.
    // (By energy: the stream's 2 kHz marker may fall in the recorded part.)
    let blocks: Vec<bool> = wav
        .left
        .chunks_exact(BLOCK)
        .map(|b| b.iter().map(|v| v * v).sum::<f64>() / BLOCK as f64 > 8.0e6)
        .collect();
    let first_on = blocks.iter().position(|on| *on).unwrap();
    let first_silent = first_on + blocks[first_on..].iter().position(|on| !on).unwrap();
    let silent = blocks[first_silent..].iter().take_while(|on| !**on).count();
    let silent_s = (silent * BLOCK) as f64 / f64::from(RATE);
    assert!(
        (silent_s - 1.5).abs() < 0.1,
        "paused stretch {silent_s:.3} s long, starting at block {first_silent}"
    );
    assert!(
        (first_silent - first_on) * BLOCK > 6000,
        "tone before the pause"
    );
    assert!(
        blocks[first_silent + silent..]
            .iter()
            .filter(|on| **on)
            .count()
            * BLOCK
            > 6000,
        "tone after the pause"
    );
    drop(peers);
}

// ---------------------------------------------------------------------------------
// A number that records its calls

/// A carrier calling `number` (UAC): it plays `pcap` once answered, holds `hold_ms`
/// and hangs up.
fn write_carrier_uac(dir: &Path, number: &str, pcap: &Path, hold_ms: u64) -> PathBuf {
    let xml = format!(
        r#"<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="carrier-uac">
  <send retrans="500">
    <![CDATA[

      INVITE sip:{number}@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport
      From: <sip:+14155550111@[local_ip]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:{number}@[remote_ip]>
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: <sip:+14155550111@[local_ip]:[local_port];transport=[transport]>
      Max-Forwards: 70
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=carrier 1000 1000 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [media_port] RTP/AVP 0 101
      a=rtpmap:0 PCMU/8000
      a=rtpmap:101 telephone-event/8000
      a=ptime:20
      a=sendrecv

    ]]>
  </send>
  <label id="provisional" />
  <recv response="100" optional="true" next="provisional" />
  <recv response="180" optional="true" next="provisional" />
  <recv response="183" optional="true" next="provisional" />
  <recv response="200" rrs="true" />
  <send>
    <![CDATA[

      ACK [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport
      From: <sip:+14155550111@[local_ip]>;tag=[pid]SIPpTag00[call_number]
      [last_To:]
      Call-ID: [call_id]
      CSeq: 1 ACK
      [routes]
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <pause milliseconds="300" />
  <nop><action><exec play_pcap_audio="{pcap}" /><log message="@@PLAYING@@" /></action></nop>
  <pause milliseconds="{hold_ms}" />
  <send retrans="500">
    <![CDATA[

      BYE [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport
      From: <sip:+14155550111@[local_ip]>;tag=[pid]SIPpTag00[call_number]
      [last_To:]
      Call-ID: [call_id]
      CSeq: 2 BYE
      [routes]
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <recv response="200">
    <action>
      <log message="@@ENDED@@ [call_id]" />
    </action>
  </recv>
</scenario>
"#,
        pcap = pcap.display()
    );
    let path = dir.join("carrier-uac.xml");
    std::fs::write(&path, xml).unwrap();
    path
}

/// A carrier's call to a number with `record: true` is recorded from the answer; the
/// agent is the left channel though the call came in from the carrier's side.
#[tokio::test]
async fn a_number_with_record_records_its_inbound_calls_agent_left() {
    let gw = Gateway::start().await;
    let dir = tempfile::tempdir().unwrap();
    let alice = Phone::new(ALICE);
    gw.create_agent(json!({ "username": ALICE.0, "password": ALICE.1 }))
        .await;
    alice.register(gw.sip_port);
    let (s, v) = post(
        &gw,
        "/v1/trunks",
        json!({
            "name": "carrier", "provider": "generic",
            "outbound": { "host": "127.0.0.1", "port": 5099 },
            "inbound": { "allowed_cidrs": ["127.0.0.1/32"] },
        }),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    let (s, v) = post(
        &gw,
        "/v1/numbers",
        json!({ "number": "+14155550100", "trunk": "carrier",
                "route": { "type": "agent", "target": "alice" }, "recording_channels": "mono" }),
    )
    .await;
    assert_eq!(s, 422, "channels without record: {v}");
    let (s, number) = post(
        &gw,
        "/v1/numbers",
        json!({ "number": "+14155550100", "trunk": "carrier",
                "route": { "type": "agent", "target": "alice" }, "record": true }),
    )
    .await;
    assert_eq!(s, 201, "{number}");
    assert_eq!(number["record"], true);
    assert_eq!(number["recording_channels"], "dual");

    let agent_pcap = dir.path().join("agent.pcap");
    let lead_pcap = dir.path().join("lead.pcap");
    write_pcap(&agent_pcap, AGENT_HZ, 0x0a0a_0a0a, CLEAN);
    write_pcap(&lead_pcap, LEAD_HZ, 0x1e1e_1e1e, CLEAN);
    let agent_xml = write_scenario(
        dir.path(),
        "agent",
        &[Step::Pause(200), Step::Play(agent_pcap)],
    );
    let media = || sipp_media_port().to_string();
    let mut phone = listen(
        alice
            .answer(agent_xml.to_str().unwrap())
            .arg("-mp")
            .arg(&media()),
        gw.sip_port,
    )
    .await;
    let uac = write_carrier_uac(dir.path(), "+14155550100", &lead_pcap, 3000);
    let mut carrier = Sipp::new(uac.to_str().unwrap())
        .timeout(Duration::from_secs(30))
        .arg("-mp")
        .arg(&media())
        .spawn(gw.sip_port);
    carrier
        .wait_for_log("@@ENDED@@", Duration::from_secs(20))
        .await;
    phone
        .wait_for_log("@@PLAYING@@", Duration::from_secs(1))
        .await;

    let until = Instant::now() + Duration::from_secs(10);
    let rec = loop {
        let list = get(&gw, "/v1/recordings").await;
        if let Some(r) = list["data"].as_array().and_then(|d| d.first()) {
            if r["status"] == "completed" {
                break r.clone();
            }
        }
        assert!(Instant::now() < until, "no completed recording: {list}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let call = get(&gw, &format!("/v1/calls/{}", rec["call"].as_str().unwrap())).await;
    assert_eq!(call["direction"], "inbound", "{call}");
    let wav = read_wav(&download(&gw, rec["id"].as_str().unwrap(), dir.path()).await);
    let (l0, r0) = (
        tone_start(&wav.left, AGENT_HZ),
        tone_start(&wav.right, LEAD_HZ),
    );
    let (left, right) = (
        wav.left[(l0 * 8000.0) as usize + 800..][..4000].to_vec(),
        wav.right[(r0 * 8000.0) as usize + 800..][..4000].to_vec(),
    );
    assert!(
        power(&left, AGENT_HZ) > 100.0 * power(&left, LEAD_HZ),
        "left is not the agent"
    );
    assert!(
        power(&right, LEAD_HZ) > 100.0 * power(&right, AGENT_HZ),
        "right is not the lead"
    );
}

// ---------------------------------------------------------------------------------
// Prompts and digits played into a call

/// `sox` or `lame`, which must exist (scripts/install-test-deps.sh installs them).
fn run_tool(tool: &str, args: &[&str]) {
    let out = std::process::Command::new(tool)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {tool} (scripts/install-test-deps.sh installs it): {e}"));
    assert!(
        out.status.success(),
        "{tool} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Uploads a 1 s `hz` tone made by sox (lame for MP3) as prompt `name` in `format`.
async fn upload_tone(gw: &Gateway, dir: &Path, name: &str, format: &str, hz: u32) {
    let wav = dir.join(format!("{name}.wav"));
    let w = wav.to_str().unwrap();
    run_tool(
        "sox",
        &[
            "-n",
            "-r",
            "16000",
            "-c",
            "1",
            "-b",
            "16",
            w,
            "synth",
            "1",
            "sine",
            &hz.to_string(),
            "vol",
            "0.5",
        ],
    );
    let file = dir.join(format!("{name}.{format}"));
    let f = file.to_str().unwrap();
    match format {
        "wav" => {}
        "mp3" => run_tool("lame", &["--quiet", w, f]),
        _ => run_tool("sox", &[w, f]),
    }
    let bytes = std::fs::read(&file).unwrap();
    let (status, body, _) = common::upload_prompt(
        gw,
        common::multipart(
            &[("name", name)],
            Some((&format!("{name}.{format}"), &bytes)),
        ),
    )
    .await;
    assert_eq!(status, 201, "upload {name}.{format}: {body}");
    assert_eq!(body["format"], format, "{body}");
}

/// PCMU audio arriving on `sock` for `secs` from its first packet (waited for up to
/// 3 s), decoded, with the RFC 4733 digits seen.
async fn hear(sock: &tokio::net::UdpSocket, secs: f64) -> (Vec<i16>, String) {
    hear_from(sock, Duration::from_millis(200), secs).await
}

/// [`hear`] with the first packet allowed to come up to `first_within` after asking.
async fn hear_from(
    sock: &tokio::net::UdpSocket,
    first_within: Duration,
    secs: f64,
) -> (Vec<i16>, String) {
    use voxgate_media::dtmf::rfc4733::{ReceiverConfig, Rfc4733Receiver};
    use voxgate_media::dtmf::DtmfSignal;
    let mut dec = voxgate_media::Decoder::new(voxgate_media::Codec::Pcmu).unwrap();
    let mut events = Rfc4733Receiver::new(ReceiverConfig::default());
    let mut pcm = Vec::new();
    let mut keys = String::new();
    let asked = Instant::now();
    let mut buf = [0u8; 2048];
    let first = match tokio::time::timeout(
        first_within.max(Duration::from_secs(3)),
        sock.peek(&mut buf),
    )
    .await
    {
        Ok(Ok(_)) => Instant::now(),
        _ => return (Vec::new(), String::new()),
    };
    assert!(
        first - asked < first_within,
        "the first packet came {:?} after asking",
        first - asked
    );
    let until = first + Duration::from_secs_f64(secs);
    while let Ok(Ok(n)) = tokio::time::timeout(
        until.saturating_duration_since(Instant::now()),
        sock.recv(&mut buf),
    )
    .await
    {
        let Ok(p) = voxgate_media::RtpPacket::new_checked(&buf[..n]) else {
            continue;
        };
        match p.payload_type() {
            0 => {
                let mut out = [0i16; 960];
                let k = dec.decode(p.payload(), &mut out).unwrap();
                pcm.extend_from_slice(&out[..k]);
            }
            101 => {
                events.handle_rtp(&p, Instant::now()).unwrap();
                while let Some(s) = events.poll_signal() {
                    if let DtmfSignal::Begin(e) = s {
                        keys.push(e.digit.as_char());
                    }
                }
            }
            _ => {}
        }
    }
    (pcm, keys)
}

/// Keys the in-band detector hears in `pcm` (8 kHz).
fn inband_keys(pcm: &[i16]) -> String {
    use voxgate_media::dtmf::inband::{DetectorConfig, InbandDetector};
    use voxgate_media::dtmf::DtmfSignal;
    let mut det = InbandDetector::new(DetectorConfig::default());
    det.process(pcm);
    std::iter::from_fn(|| det.poll_signal())
        .filter_map(|s| match s {
            DtmfSignal::Begin(e) => Some(e.digit.as_char()),
            DtmfSignal::End(_) => None,
        })
        .collect()
}

/// Prompts of each format uploaded and played into a call reach the leg they were
/// played to, and digits sent through the API reach a leg in its own method: RFC 4733
/// events to a leg that negotiated telephone-event, tones to one that did not.
#[tokio::test]
async fn prompts_and_digits_played_into_a_call_reach_the_leg() {
    let gw = Gateway::start().await;
    let dir = tempfile::tempdir().unwrap();
    let tones = [
        ("p-wav", "wav", 500u32),
        ("p-flac", "flac", 700),
        ("p-ogg", "ogg", 900),
        ("p-mp3", "mp3", 1100),
    ];
    for (name, format, hz) in tones {
        upload_tone(&gw, dir.path(), name, format, hz).await;
    }
    // The agent's phone answers with telephone-event, the carrier without; their media
    // goes to the test's own sockets.
    let agent_rtp = tokio::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .unwrap();
    let lead_rtp = tokio::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .unwrap();
    let port = |s: &tokio::net::UdpSocket| s.local_addr().unwrap().port();
    let agent_xml = write_scenario_sdp(
        dir.path(),
        "agent",
        &[],
        &format!("{} RTP/AVP 0 101", port(&agent_rtp)),
    );
    let lead_xml = write_scenario_sdp(
        dir.path(),
        "lead",
        &[],
        &format!("{} RTP/AVP 0", port(&lead_rtp)),
    );
    let (id, peers) = click_to_call_with(&gw, &agent_xml, &lead_xml, json!({})).await;
    let until = Instant::now() + Duration::from_secs(15);
    let call = loop {
        let call = get(&gw, &format!("/v1/calls/{id}")).await;
        if call["status"] == "in-progress" {
            break call;
        }
        assert!(Instant::now() < until, "call not answered: {call}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let agent_leg = call["legs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["agent"].is_string())
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let play = format!("/v1/calls/{id}/play");
    for (name, format, hz) in tones {
        let (s, v) = post(&gw, &play, json!({ "prompt": name, "leg": agent_leg })).await;
        assert_eq!(s, 202, "{v}");
        assert_eq!(v["legs"], json!([agent_leg]), "{v}");
        let (pcm, _) = hear(&agent_rtp, 1.3).await;
        let x: Vec<f64> = pcm.iter().map(|&v| f64::from(v)).collect();
        let candidates = [500.0, 700.0, 900.0, 1100.0];
        let best = candidates
            .iter()
            .copied()
            .max_by(|a, b| power(&x, *a).total_cmp(&power(&x, *b)))
            .unwrap();
        assert_eq!(best, f64::from(hz), "{format} prompt: heard {best} Hz");
        // A second of a loud tone, not a blip.
        let loud = x
            .chunks_exact(BLOCK)
            .filter(|b| power(b, f64::from(hz)) > 1.0e6)
            .count();
        assert!(loud * BLOCK >= 7000, "{format}: only {loud} loud blocks");
    }
    let (s, v) = post(&gw, &play, json!({ "prompt": "nope" })).await;
    assert_eq!(s, 422, "{v}");
    let (s, v) = post(&gw, &play, json!({ "prompt": "p-wav", "leg": "leg_nope" })).await;
    assert_eq!(s, 404, "{v}");

    let dtmf = format!("/v1/calls/{id}/dtmf");
    // To the lead (the default): it has no telephone-event, so tones.
    let (s, v) = post(&gw, &dtmf, json!({ "digits": "12#" })).await;
    assert_eq!(s, 202, "{v}");
    assert_ne!(v["leg"], agent_leg.as_str(), "{v}");
    let (pcm, events) = hear(&lead_rtp, 1.5).await;
    assert_eq!(inband_keys(&pcm), "12#");
    assert_eq!(events, "");
    // To the agent: RFC 4733 events.
    let (s, v) = post(&gw, &dtmf, json!({ "digits": "9*", "leg": agent_leg })).await;
    assert_eq!(s, 202, "{v}");
    let (_, events) = hear(&agent_rtp, 1.2).await;
    assert_eq!(events, "9*");
    let (s, v) = post(&gw, &dtmf, json!({ "digits": "12x" })).await;
    assert_eq!(s, 422, "{v}");
    drop(peers);
}

/// Digits the agent sends by SIP INFO reach the lead as RFC 4733 events (the lead
/// negotiated telephone-event; an INFO itself goes no further than voxgate).
#[tokio::test]
async fn sip_info_digits_reach_the_other_leg_as_rfc4733_events() {
    let gw = Gateway::start().await;
    let dir = tempfile::tempdir().unwrap();
    let lead_rtp = tokio::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .unwrap();
    let lead_port = lead_rtp.local_addr().unwrap().port();
    let agent_xml = write_scenario(
        dir.path(),
        "agent",
        &[
            Step::Pause(500),
            Step::Info("application/dtmf-relay", "Signal=4\r\nDuration=160\r\n"),
            Step::Pause(400),
            Step::Info("application/dtmf", "8"),
        ],
    );
    let lead_xml = write_scenario_sdp(
        dir.path(),
        "lead",
        &[],
        &format!("{lead_port} RTP/AVP 0 101"),
    );
    let (_id, peers) = click_to_call_with(&gw, &agent_xml, &lead_xml, json!({})).await;
    let (_, events) = hear_from(&lead_rtp, Duration::from_secs(10), 1.5).await;
    assert_eq!(events, "48");
    drop(peers);
}
