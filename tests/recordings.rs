//! Recordings (SPEC §4 recordings, §5 recording.completed) through the real binary: the
//! rows are written through the library on the gateway's own database, as the media
//! engine's recorder will write them, and a real WAV file is put where the row says; the
//! API lists, serves (with HTTP Range) and deletes them, the call shows its
//! `recording_ids`, and completing a recording sends a signed `recording.completed` to a
//! receiver that checks the signature itself. On SQLite and PostgreSQL.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "common/receiver.rs"]
mod receiver;

use std::time::Duration;

use common::Gateway;
use receiver::Receiver;
use reqwest::header::{CONTENT_RANGE, CONTENT_TYPE, RANGE};
use serde_json::{json, Value};
use voxgate::calls::record::{CallDirection, CallStatus, NewCall};
use voxgate::ids::{new_id, IdKind};
use voxgate::store::{
    now, NewRecording, RecordingChannels, RecordingEnd, RecordingStatus, Store, StoreError,
};

/// A stereo 16-bit WAV of `samples` frames: left a ramp, right its negation, so any byte
/// range can be checked against what was written.
fn wav_bytes(sample_rate: u32, samples: u32) -> Vec<u8> {
    let mut cursor = std::io::Cursor::new(Vec::new());
    let spec = hound::WavSpec {
        channels: 2,
        sample_rate,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::new(&mut cursor, spec).unwrap();
    for i in 0..samples {
        let v = i16::try_from(i % 30000).unwrap();
        w.write_sample(v).unwrap();
        w.write_sample(-v).unwrap();
    }
    w.finalize().unwrap();
    cursor.into_inner()
}

async fn new_call(store: &Store) -> String {
    let call = NewCall {
        id: new_id(IdKind::Call),
        direction: CallDirection::Inbound,
        from: "tel:+14155550100".into(),
        to: "sip:alice@voxgate".into(),
        agent_id: None,
        status: CallStatus::InProgress,
        started_at: now(),
        status_callback: None,
        metadata: None,
    };
    store.create_call(&call).await.unwrap();
    call.id
}

async fn send(gw: &Gateway, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut r = gw.client().request(method.parse().unwrap(), gw.url(path));
    if let Some(b) = body {
        r = r.json(&b);
    }
    let r = r.send().await.unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

async fn recordings_end_to_end(gw: Gateway) {
    let rx = Receiver::start().await;
    let (s, hook) = send(
        &gw,
        "POST",
        "/v1/webhooks",
        Some(json!({"url": rx.url("/hook"), "events": ["recording.*"]})),
    )
    .await;
    assert_eq!(s, 201, "{hook}");
    rx.secret("/hook", hook["secret"].as_str().unwrap());

    let store = Store::connect(&gw.database_url(), 2).await.unwrap();
    let call = new_call(&store).await;
    let other_call = new_call(&store).await;

    // Two recordings of one call (a pause-and-restart flow makes several), one of another.
    let mut recs = Vec::new();
    for (c, channels) in [
        (&call, RecordingChannels::Dual),
        (&call, RecordingChannels::Mono),
        (&other_call, RecordingChannels::Dual),
    ] {
        let new = NewRecording {
            id: new_id(IdKind::Recording),
            call_id: c.clone(),
            agent_id: None,
            channels,
            sample_rate: 8000,
            started_at: now(),
        };
        let path = new.path();
        assert!(
            path.starts_with(&format!(
                "recordings/{}/",
                new.started_at.format("%Y/%m/%d")
            )) && path.ends_with(&format!("{}.wav", new.id)),
            "{path}"
        );
        let row = store.insert_recording(&new).await.unwrap();
        assert_eq!(row.status, RecordingStatus::Recording);
        recs.push((new, path));
    }
    let (first, first_path) = &recs[0];

    // A live recording: pause and resume; it cannot be deleted.
    let paused = store.set_recording_paused(&first.id, true).await.unwrap();
    assert_eq!(paused.status, RecordingStatus::Paused);
    let (s, v) = send(&gw, "GET", &format!("/v1/recordings/{}", first.id), None).await;
    assert_eq!((s, v["status"].as_str()), (200, Some("paused")), "{v}");
    store.set_recording_paused(&first.id, false).await.unwrap();
    let (s, v) = send(&gw, "DELETE", &format!("/v1/recordings/{}", first.id), None).await;
    assert_eq!(s, 409, "{v}");
    assert!(
        v["detail"].as_str().unwrap().contains("still recording"),
        "{v}"
    );

    // The file, then the end (with the event in the same transaction).
    let audio = wav_bytes(8000, 8000);
    let file = gw.data_dir.join(first_path);
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    std::fs::write(&file, &audio).unwrap();
    let end = RecordingEnd {
        status: RecordingStatus::Completed,
        duration_ms: 1000,
        size_bytes: i64::try_from(audio.len()).unwrap(),
        ended_at: now(),
    };
    let done = store.complete_recording(&first.id, end).await.unwrap();
    assert_eq!(done.status, RecordingStatus::Completed);
    // Completing again changes nothing and sends no second event.
    store.complete_recording(&first.id, end).await.unwrap();
    // Pausing an ended recording is a conflict.
    assert!(matches!(
        store.set_recording_paused(&first.id, true).await,
        Err(StoreError::InUse(_))
    ));

    let got = rx
        .wait("recording.completed", Duration::from_secs(15), |g| {
            g.iter()
                .any(|g| g.body["type"] == "recording.completed" && g.answered < 300)
        })
        .await;
    let ev = got
        .iter()
        .find(|g| g.body["type"] == "recording.completed")
        .unwrap();
    assert!(ev.signature_ok, "bad signature: {}", ev.signature);
    assert_eq!(ev.body["data"]["id"], first.id.as_str());
    assert_eq!(ev.body["data"]["call_id"], call.as_str());
    assert_eq!(ev.body["data"]["duration_ms"], 1000);

    // The API view and the lists.
    let (s, v) = send(&gw, "GET", &format!("/v1/recordings/{}", first.id), None).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["status"], "completed");
    assert_eq!(v["channels"], "dual");
    assert_eq!(v["call"], call.as_str());
    assert_eq!(v["size_bytes"], audio.len());
    assert_eq!(v["audio_url"], format!("/v1/recordings/{}/audio", first.id));
    let (s, v) = send(&gw, "GET", &format!("/v1/recordings?call={call}"), None).await;
    assert_eq!(s, 200, "{v}");
    let ids: Vec<&str> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [recs[1].0.id.as_str(), first.id.as_str()],
        "newest first"
    );
    let (s, v) = send(&gw, "GET", "/v1/recordings?limit=2", None).await;
    assert_eq!(s, 200);
    assert_eq!(v["data"].as_array().unwrap().len(), 2);
    let next = v["next"].as_str().unwrap().to_owned();
    let (_, v) = send(
        &gw,
        "GET",
        &format!("/v1/recordings?limit=2&after={next}"),
        None,
    )
    .await;
    assert_eq!(v["data"][0]["id"], first.id.as_str());
    assert_eq!(v["next"], Value::Null);
    let (s, v) = send(&gw, "GET", "/v1/recordings?since=yesterday", None).await;
    assert_eq!(s, 422, "{v}");
    assert!(v["detail"].as_str().unwrap().contains("since"), "{v}");
    let (s, v) = send(&gw, "GET", "/v1/recordings?agent=nobody", None).await;
    assert_eq!(s, 422, "{v}");

    // The call carries its recording ids, oldest first, in the one call and in lists.
    let (_, v) = send(&gw, "GET", &format!("/v1/calls/{call}"), None).await;
    assert_eq!(
        v["recording_ids"],
        json!([first.id.as_str(), recs[1].0.id.as_str()])
    );
    let (_, v) = send(&gw, "GET", "/v1/calls", None).await;
    let listed = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == other_call.as_str())
        .unwrap()
        .clone();
    assert_eq!(listed["recording_ids"], json!([recs[2].0.id.as_str()]));

    // The audio: whole, and by ranges (RFC 9110 §14).
    let audio_url = gw.url(&format!("/v1/recordings/{}/audio", first.id));
    let r = gw.client().get(&audio_url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()[CONTENT_TYPE], "audio/wav");
    assert_eq!(r.bytes().await.unwrap().as_ref(), audio.as_slice());
    let r = gw
        .client()
        .get(&audio_url)
        .header(RANGE, "bytes=44-1043")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(
        r.headers()[CONTENT_RANGE].to_str().unwrap(),
        format!("bytes 44-1043/{}", audio.len())
    );
    assert_eq!(r.bytes().await.unwrap().as_ref(), &audio[44..1044]);
    let r = gw
        .client()
        .get(&audio_url)
        .header(RANGE, "bytes=-100")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(
        r.bytes().await.unwrap().as_ref(),
        &audio[audio.len() - 100..]
    );
    let r = gw
        .client()
        .get(&audio_url)
        .header(RANGE, format!("bytes={}-", audio.len() + 10))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 416);
    // The served bytes are a WAV a reader opens.
    let r = gw.client().get(&audio_url).send().await.unwrap();
    let body = r.bytes().await.unwrap();
    let reader = hound::WavReader::new(std::io::Cursor::new(body.to_vec())).unwrap();
    assert_eq!(reader.spec().channels, 2);
    assert_eq!(reader.duration(), 8000);

    // A recording whose file is missing: 404 naming it, not a 500.
    let (s, v) = send(
        &gw,
        "GET",
        &format!("/v1/recordings/{}/audio", recs[2].0.id),
        None,
    )
    .await;
    assert_eq!(s, 404, "{v}");
    assert!(v["detail"].as_str().unwrap().contains("missing"), "{v}");
    let (s, _) = send(&gw, "GET", "/v1/recordings/rec_nope", None).await;
    assert_eq!(s, 404);

    // Delete: the row and the file go; the call no longer lists it.
    let (s, v) = send(&gw, "DELETE", &format!("/v1/recordings/{}", first.id), None).await;
    assert_eq!(s, 204, "{v}");
    assert!(!file.exists(), "the audio file was not removed");
    let (s, _) = send(&gw, "GET", &format!("/v1/recordings/{}", first.id), None).await;
    assert_eq!(s, 404);
    let (_, v) = send(&gw, "GET", &format!("/v1/calls/{call}"), None).await;
    assert_eq!(v["recording_ids"], json!([recs[1].0.id.as_str()]));

    // Start-up sees what a crash would have left live.
    let live: Vec<String> = store
        .interrupted_recordings()
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(live, [recs[1].0.id.clone(), recs[2].0.id.clone()]);
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recordings_listed_served_by_range_and_deleted_sqlite() {
    recordings_end_to_end(Gateway::start().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recordings_listed_served_by_range_and_deleted_postgres() {
    recordings_end_to_end(Gateway::start_pg().await).await;
}
