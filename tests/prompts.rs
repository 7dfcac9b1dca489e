//! Prompt uploads (SPEC §4 prompts, issue 13 item 5) through the real binary: a tone in
//! each accepted format is made at test time by real encoders (sox for WAV, FLAC and
//! OGG/Vorbis; lame for MP3), uploaded as `multipart/form-data`, and must come back as a
//! prompt of the right format and duration whose stored 8 kHz audio holds the same tone
//! (its dominant frequency, found by a Goertzel scan). A text file, a truncated file and
//! an empty one are 422s naming why; deleting a prompt removes its audio. On SQLite and
//! PostgreSQL.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::Gateway;
use reqwest::header::CONTENT_TYPE;
use serde_json::Value;

/// Runs a tool; a missing tool fails the test (scripts/install-test-deps.sh installs them).
fn run(cmd: &str, args: &[&str]) {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd} not runnable ({e}): run scripts/install-test-deps.sh"));
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// One made file: what was asked of the encoder.
struct Made {
    path: PathBuf,
    format: &'static str,
    tone_hz: f64,
    seconds: f64,
    source_rate: i64,
}

/// A tone per format, each with its own frequency, rate, channels and length, so that a
/// mix-up between them cannot pass.
fn make_files(dir: &Path) -> Vec<Made> {
    let p = |n: &str| dir.join(n);
    let s = |p: &PathBuf| p.to_str().unwrap().to_owned();
    let wav = p("tone.wav");
    run(
        "sox",
        &[
            "-n",
            "-r",
            "44100",
            "-c",
            "2",
            "-b",
            "16",
            &s(&wav),
            "synth",
            "1.5",
            "sine",
            "440",
            "vol",
            "0.5",
        ],
    );
    let flac = p("tone.flac");
    run(
        "sox",
        &[
            "-n",
            "-r",
            "22050",
            "-c",
            "1",
            "-b",
            "16",
            &s(&flac),
            "synth",
            "2.0",
            "sine",
            "697",
            "vol",
            "0.5",
        ],
    );
    let ogg = p("tone.ogg");
    run(
        "sox",
        &[
            "-n",
            "-r",
            "48000",
            "-c",
            "2",
            &s(&ogg),
            "synth",
            "1.0",
            "sine",
            "1000",
            "vol",
            "0.5",
        ],
    );
    // lame reads a WAV; sox makes that first.
    let src = p("mp3-source.wav");
    run(
        "sox",
        &[
            "-n",
            "-r",
            "44100",
            "-c",
            "1",
            "-b",
            "16",
            &s(&src),
            "synth",
            "2.5",
            "sine",
            "1209",
            "vol",
            "0.5",
        ],
    );
    let mp3 = p("tone.mp3");
    run("lame", &["--quiet", "-b", "64", &s(&src), &s(&mp3)]);
    vec![
        Made {
            path: wav,
            format: "wav",
            tone_hz: 440.0,
            seconds: 1.5,
            source_rate: 44_100,
        },
        Made {
            path: flac,
            format: "flac",
            tone_hz: 697.0,
            seconds: 2.0,
            source_rate: 22_050,
        },
        Made {
            path: ogg,
            format: "ogg",
            tone_hz: 1000.0,
            seconds: 1.0,
            source_rate: 48_000,
        },
        Made {
            path: mp3,
            format: "mp3",
            tone_hz: 1209.0,
            seconds: 2.5,
            source_rate: 44_100,
        },
    ]
}

/// Goertzel power of `freq` in `x`.
fn power(x: &[f64], freq: f64, rate: f64) -> f64 {
    let w = 2.0 * std::f64::consts::PI * freq / rate;
    let c = 2.0 * w.cos();
    let (mut s1, mut s2) = (0.0, 0.0);
    for &v in x {
        let s0 = v + c * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    s1 * s1 + s2 * s2 - c * s1 * s2
}

/// The strongest frequency in 100-3,900 Hz: a coarse scan in 5 Hz steps over 800
/// samples (a main lobe ±10 Hz wide at 8 kHz, so no tone falls between steps), then 1 Hz
/// steps around it over the whole of `x` (at least a second: ±1 Hz).
fn dominant_hz(x: &[i16], rate: f64) -> f64 {
    let x: Vec<f64> = x.iter().map(|&v| f64::from(v)).collect();
    let best = |x: &[f64], lo: i32, hi: i32, step: usize| {
        (lo..=hi)
            .step_by(step)
            .map(f64::from)
            .max_by(|a, b| power(x, *a, rate).total_cmp(&power(x, *b, rate)))
            .unwrap()
    };
    let coarse = best(&x[..800], 100, 3900, 5) as i32;
    best(&x, coarse - 10, coarse + 10, 1)
}

fn read_wav(path: &Path) -> (hound::WavSpec, Vec<i16>) {
    let mut r = hound::WavReader::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let spec = r.spec();
    let s = r.samples::<i16>().collect::<Result<Vec<_>, _>>().unwrap();
    (spec, s)
}

fn field_message(problem: &Value, field: &str) -> String {
    problem["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("no errors in {problem}"))
        .iter()
        .find(|e| e["field"] == field)
        .unwrap_or_else(|| panic!("no error on {field} in {problem}"))["message"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn prompts_end_to_end(gw: Gateway) {
    let tmp = tempfile::tempdir().unwrap();
    let made = make_files(tmp.path());
    let mut ids = Vec::new();
    for m in &made {
        let bytes = std::fs::read(&m.path).unwrap();
        let name = format!("tone-{}", m.format);
        let (s, body, location) = common::upload_prompt(
            &gw,
            common::multipart(&[("name", &name)], Some((m.format, &bytes))),
        )
        .await;
        assert_eq!(s, 201, "{}: {body}", m.format);
        let id = body["id"].as_str().unwrap().to_owned();
        assert_eq!(
            location.as_deref(),
            Some(format!("/v1/prompts/{id}").as_str())
        );
        assert_eq!(body["name"], name.as_str());
        assert_eq!(body["format"], m.format, "{body}");
        assert_eq!(body["sample_rate"], m.source_rate, "{body}");
        let ms = body["duration_ms"].as_i64().unwrap();
        let want = (m.seconds * 1000.0) as i64;
        assert!(
            (ms - want).abs() <= 50,
            "{}: {ms} ms, made {want} ms",
            m.format
        );

        // The stored audio: mono 16-bit at each rate, as long as the prompt.
        let dir = gw.data_dir.join("prompts").join(&id);
        for rate in [8000u32, 16_000, 48_000] {
            let (spec, samples) = read_wav(&dir.join(format!("{rate}.wav")));
            assert_eq!(
                (spec.channels, spec.sample_rate, spec.bits_per_sample),
                (1, rate, 16),
                "{} at {rate}",
                m.format
            );
            let len_ms = samples.len() as i64 * 1000 / i64::from(rate);
            assert!(
                (len_ms - ms).abs() <= 5,
                "{} at {rate}: {len_ms} ms",
                m.format
            );
        }
        // The 8 kHz audio the G.711 legs get, served by the API, holds the tone.
        let r = gw
            .client()
            .get(gw.url(&format!("/v1/prompts/{id}/audio")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
        assert_eq!(r.headers()[CONTENT_TYPE], "audio/wav");
        let wav = r.bytes().await.unwrap();
        let mut rd = hound::WavReader::new(std::io::Cursor::new(wav.to_vec())).unwrap();
        assert_eq!(rd.spec().sample_rate, 8000);
        let pcm: Vec<i16> = rd.samples::<i16>().map(Result::unwrap).collect();
        let mid = &pcm[pcm.len() / 4..3 * pcm.len() / 4];
        let f = dominant_hz(mid, 8000.0);
        assert!(
            (f - m.tone_hz).abs() <= 2.0,
            "{}: dominant {f} Hz, made {} Hz",
            m.format,
            m.tone_hz
        );
        // Loud enough to be the tone, not noise (half scale made; lossy codecs lose a little).
        let peak = mid.iter().map(|v| v.unsigned_abs()).max().unwrap();
        assert!(
            (12_000..20_000).contains(&peak),
            "{}: peak {peak}",
            m.format
        );
        ids.push(id);
    }

    // Another rate, and a rate that is none of the three.
    let r = gw
        .client()
        .get(gw.url(&format!("/v1/prompts/{}/audio?rate=48000", ids[0])))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let wav = r.bytes().await.unwrap();
    let rd = hound::WavReader::new(std::io::Cursor::new(wav.to_vec())).unwrap();
    assert_eq!(rd.spec().sample_rate, 48_000);
    let r = gw
        .client()
        .get(gw.url(&format!("/v1/prompts/{}/audio?rate=44100", ids[0])))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 422);

    // Listed, found by name.
    let list: Value = gw
        .client()
        .get(gw.url("/v1/prompts"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let listed: Vec<&str> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap())
        .collect();
    assert_eq!(listed, ids.iter().map(String::as_str).collect::<Vec<_>>());
    let by_name = gw
        .client()
        .get(gw.url("/v1/prompts/tone-flac"))
        .send()
        .await
        .unwrap();
    assert_eq!(by_name.status().as_u16(), 200);

    // Not audio: each a 422 on `file` saying why, and nothing stored.
    let wav_bytes = std::fs::read(&made[0].path).unwrap();
    let flac_bytes = std::fs::read(&made[1].path).unwrap();
    let text = b"Welcome to voxgate. This is a text file, not a prompt.\n".repeat(20);
    let cases: [(&str, &[u8], &str); 4] = [
        ("text", &text, "not a WAV, MP3, OGG/Vorbis or FLAC file"),
        (
            "truncated wav",
            &wav_bytes[..wav_bytes.len() / 2],
            "truncated",
        ),
        ("truncated flac", &flac_bytes[..flac_bytes.len() / 3], ""),
        ("empty", b"", "not a WAV, MP3, OGG/Vorbis or FLAC file"),
    ];
    for (what, bytes, says) in cases {
        let (s, body, _) = common::upload_prompt(
            &gw,
            common::multipart(&[("name", "bad")], Some(("f", bytes))),
        )
        .await;
        assert_eq!(s, 422, "{what}: {body}");
        assert_eq!(body["type"], "/problems/validation");
        let msg = field_message(&body, "file");
        assert!(msg.contains(says), "{what}: {msg}");
    }

    // The parts: missing, invalid, unknown; a taken name; not multipart; not parseable.
    let (s, body, _) =
        common::upload_prompt(&gw, common::multipart(&[], Some(("f", &wav_bytes)))).await;
    assert_eq!(s, 422);
    field_message(&body, "name");
    let (s, body, _) =
        common::upload_prompt(&gw, common::multipart(&[("name", "no-file")], None)).await;
    assert_eq!(s, 422);
    field_message(&body, "file");
    let (s, body, _) = common::upload_prompt(
        &gw,
        common::multipart(&[("name", "bad name/")], Some(("f", &wav_bytes))),
    )
    .await;
    assert_eq!(s, 422);
    assert!(field_message(&body, "name").contains("A-Z a-z 0-9"));
    let (s, body, _) = common::upload_prompt(
        &gw,
        common::multipart(&[("name", "x"), ("colour", "red")], Some(("f", &wav_bytes))),
    )
    .await;
    assert_eq!(s, 422);
    field_message(&body, "colour");
    let (s, body, _) = common::upload_prompt(
        &gw,
        common::multipart(&[("name", "tone-wav")], Some(("f", &wav_bytes))),
    )
    .await;
    assert_eq!(s, 409, "{body}");
    assert_eq!(body["type"], "/problems/conflict");
    let r = gw
        .client()
        .post(gw.url("/v1/prompts"))
        .json(&serde_json::json!({"name": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 415);
    let (s, body, _) = common::upload_prompt(&gw, b"--nope\r\ngarbage".to_vec()).await;
    assert_eq!(s, 400, "{body}");
    // Larger than the upload limit (20 MiB): 413, the limit named.
    let big = vec![0u8; 21 << 20];
    let (s, body, _) = common::upload_prompt(
        &gw,
        common::multipart(&[("name", "big")], Some(("f", &big))),
    )
    .await;
    assert_eq!(s, 413, "{body}");
    // No prompt row and no audio came of any of these.
    let list: Value = gw
        .client()
        .get(gw.url("/v1/prompts"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["data"].as_array().unwrap().len(), made.len());
    let mut on_disk: Vec<String> = std::fs::read_dir(gw.data_dir.join("prompts"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    on_disk.sort();
    let mut want = ids.clone();
    want.sort();
    assert_eq!(on_disk, want);

    // Delete: the row and the audio go.
    for id in &ids {
        let r = gw
            .client()
            .delete(gw.url(&format!("/v1/prompts/{id}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 204);
        assert!(!gw.data_dir.join("prompts").join(id).exists(), "{id}");
        let r = gw
            .client()
            .get(gw.url(&format!("/v1/prompts/{id}/audio")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 404);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prompts_uploaded_in_each_format_stored_served_and_deleted_sqlite() {
    prompts_end_to_end(Gateway::start().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prompts_uploaded_in_each_format_stored_served_and_deleted_postgres() {
    prompts_end_to_end(Gateway::start_pg().await).await;
}
