//! The worker's state driven directly on a virtual clock in a temp dir, then the thread
//! itself; files are read back with hound.

use std::io::Cursor;

use voxgate_media::recorder::Channels;

use super::*;

fn date() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 12, 6).unwrap()
}

fn tone(freq: f64, k: u64, n: usize) -> Vec<i16> {
    (0..n)
        .map(|j| {
            let t = (k as f64 * n as f64 + j as f64) / 8000.0;
            (3000.0 * (2.0 * std::f64::consts::PI * freq * t).sin()) as i16
        })
        .collect()
}

fn frame(k: u64, freq: f64, ssrc: u32) -> OwnedFrame {
    OwnedFrame {
        ssrc: Ssrc(ssrc),
        timestamp: RtpTimestamp(1000 + 160 * k as u32),
        clock: ClockRate(8000),
        rate: SampleRate(8000),
        samples: tone(freq, k, 160),
    }
}

fn sink(dir: &Path) -> (Sink, Receiver<RecordingEvent>) {
    let (tx, rx) = mpsc::channel();
    let config = RecordingWorkerConfig::new(dir);
    (Sink::new(config, Box::new(LocalStorage), tx), rx)
}

/// Feeds `secs` of 440 Hz (agent) and 1 kHz (lead) frames at 20 ms, ticking every 20 ms.
fn feed(s: &mut Sink, key: RecordingKey, t0: Instant, from: u64, to: u64) {
    for k in from..to {
        let now = t0 + Duration::from_millis(20 * (k + 1));
        for (side, f, ssrc) in [(Side::Internal, 440.0, 1), (Side::External, 1000.0, 2)] {
            s.frame(FrameMsg {
                key,
                side,
                frame: frame(k, f, ssrc),
                now,
            });
        }
        s.tick(now);
    }
}

fn read(path: &Path) -> (hound::WavSpec, Vec<i16>) {
    let bytes = fs::read(path).unwrap();
    let mut r = hound::WavReader::new(Cursor::new(bytes)).unwrap();
    let spec = r.spec();
    (spec, r.samples::<i16>().map(Result::unwrap).collect())
}

fn open(s: &mut Sink, key: u64, id: &str, t0: Instant) -> RecordingKey {
    let key = RecordingKey(key);
    s.control(Control::Open {
        key,
        id: RecordingId::new(id).unwrap(),
        config: RecorderConfig::new(SampleRate::NARROWBAND, Channels::Dual),
        date: date(),
        now: t0,
    });
    key
}

#[test]
fn a_closed_recording_is_a_complete_dual_wav_at_its_dated_path() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut s, events) = sink(tmp.path());
    let t0 = Instant::now();
    let key = open(&mut s, 1, "rec_A1", t0);
    feed(&mut s, key, t0, 0, 150);
    s.close(key, t0 + Duration::from_secs(3));

    let RecordingEvent::Completed(c) = events.try_recv().unwrap() else {
        panic!("not completed");
    };
    let path = tmp.path().join("recordings/2026/12/06/rec_A1.wav");
    assert_eq!(c.stored_at, StoredAt::Local(path.clone()));
    assert_eq!(c.key, "recordings/2026/12/06/rec_A1.wav");
    assert_eq!(c.duration, Duration::from_secs(3));
    assert_eq!(c.bytes, fs::metadata(&path).unwrap().len());
    let (spec, samples) = read(&path);
    assert_eq!((spec.channels, spec.sample_rate), (2, 8000));
    assert_eq!(samples.len(), 2 * 3 * 8000);
    // Left is the agent's frames, right the lead's, each in place.
    let left: Vec<i16> = samples.iter().step_by(2).copied().collect();
    let right: Vec<i16> = samples.iter().skip(1).step_by(2).copied().collect();
    assert_eq!(left[8000..8160], tone(440.0, 50, 160)[..]);
    assert_eq!(right[8000..8160], tone(1000.0, 50, 160)[..]);
    assert_eq!(c.stats.internal.frames_placed, 150);
    assert!(!inspect_stale(&path));
}

fn inspect_stale(path: &Path) -> bool {
    wav::inspect(&mut File::open(path).unwrap()).unwrap().stale
}

#[test]
fn a_crash_leaves_a_file_readable_to_its_last_second_and_start_up_repairs_the_rest() {
    let tmp = tempfile::tempdir().unwrap();
    let t0 = Instant::now();
    let path = tmp.path().join("recordings/2026/12/06/rec_crash.wav");
    {
        let (mut s, _events) = sink(tmp.path());
        let key = open(&mut s, 1, "rec_crash", t0);
        // 2.5 s of frames: output up to 2.25 s (the late window), header at 1 s and 2 s.
        feed(&mut s, key, t0, 0, 125);
        // A process killed here loses what sat in its buffers; the kernel has the rest.
        let a = s.active.remove(&key).unwrap();
        std::mem::forget(a.writer);
    }
    // Readable as it is, up to the last header rewrite.
    let (_, before) = read(&path);
    // The header was last rewritten on the first write past 2 s (writes come in frames).
    assert!(
        (2 * 2 * 8000..=2 * (2 * 8000 + 160)).contains(&before.len()),
        "{}",
        before.len()
    );
    // The header rewrite flushed what came before it; what came after sat in the
    // process's buffer and is gone: the file is consistent as it is.
    assert!(!inspect_stale(&path));
    // A kill after a flush but before the header rewrite leaves more data than the
    // header says, and half a sample frame.
    let mut bytes = fs::read(&path).unwrap();
    bytes.extend((0..1001u32).map(|i| (i % 251) as u8));
    fs::write(&path, &bytes).unwrap();
    assert!(inspect_stale(&path));

    // A good file and a stray non-WAV beside it.
    let (mut s, _events) = sink(tmp.path());
    let key = open(&mut s, 2, "rec_good", t0);
    feed(&mut s, key, t0, 0, 10);
    s.close(key, t0 + Duration::from_millis(200));
    let junk = tmp.path().join("recordings/2026/12/06/junk.wav");
    fs::write(&junk, b"not audio").unwrap();

    let report = repair_stale(&tmp.path().join("recordings"));
    assert_eq!(report.checked, 3);
    assert_eq!(report.repaired.len(), 1);
    assert_eq!(report.repaired[0].0, path);
    assert_eq!(report.failed.len(), 1);
    assert_eq!(report.failed[0].0, junk);

    let (_, after) = read(&path);
    // All that reached the file, in whole stereo sample frames: 1000 bytes.
    assert_eq!(after.len(), before.len() + 500);
    assert!(after[..before.len()] == before[..]);
    assert!(!inspect_stale(&path));
    // A second start-up finds nothing to do.
    assert!(repair_stale(&tmp.path().join("recordings"))
        .repaired
        .is_empty());
}

#[test]
fn a_partial_sample_frame_is_cut_off() {
    let tmp = tempfile::tempdir().unwrap();
    let t0 = Instant::now();
    let (mut s, events) = sink(tmp.path());
    let key = open(&mut s, 1, "rec_tail", t0);
    feed(&mut s, key, t0, 0, 25);
    s.close(key, t0 + Duration::from_millis(500));
    let RecordingEvent::Completed(c) = events.try_recv().unwrap() else {
        panic!()
    };
    let StoredAt::Local(path) = c.stored_at else {
        panic!()
    };
    let len = fs::metadata(&path).unwrap().len();
    let mut bytes = fs::read(&path).unwrap();
    bytes.extend_from_slice(&[1, 2, 3]);
    fs::write(&path, &bytes).unwrap();
    let rep = repair(&path).unwrap();
    assert!(rep.stale);
    assert_eq!(fs::metadata(&path).unwrap().len(), len);
    assert_eq!(read(&path).1.len(), 2 * 4000);
}

#[test]
fn ids_that_are_not_file_names_are_refused() {
    for bad in ["", "../etc/passwd", "a/b", "rec x", &"x".repeat(65)] {
        assert!(RecordingId::new(bad).is_err(), "{bad:?}");
    }
    assert!(RecordingId::new("rec_01JD3N5V8K2Q4R6T8W0Y2A4C6E").is_ok());
}

#[test]
fn an_existing_file_is_never_overwritten() {
    let tmp = tempfile::tempdir().unwrap();
    let t0 = Instant::now();
    let (mut s, events) = sink(tmp.path());
    let key = open(&mut s, 1, "rec_same", t0);
    s.close(key, t0);
    assert!(matches!(
        events.try_recv().unwrap(),
        RecordingEvent::Completed(_)
    ));
    open(&mut s, 2, "rec_same", t0);
    assert!(matches!(
        events.try_recv().unwrap(),
        RecordingEvent::Failed { .. }
    ));
}

#[test]
fn a_full_queue_drops_and_counts_without_waiting() {
    let (frames, rx) = mpsc::sync_channel(2);
    let tap = RecordingTap {
        key: RecordingKey(1),
        frames,
        dropped: Arc::new(AtomicU64::new(0)),
    };
    let now = Instant::now();
    let sent: Vec<bool> = (0..5)
        .map(|k| tap.send(Side::Internal, frame(k, 440.0, 1), now))
        .collect();
    assert_eq!(sent, vec![true, true, false, false, false]);
    assert_eq!(tap.dropped.load(Ordering::Relaxed), 3);
    drop(rx);
    assert!(!tap.send(Side::Internal, frame(9, 440.0, 1), now));
}

#[test]
fn the_worker_thread_writes_and_reports_a_recording() {
    let tmp = tempfile::tempdir().unwrap();
    let (tx, events) = mpsc::channel();
    let worker = RecordingWorker::start(
        RecordingWorkerConfig::new(tmp.path()),
        Box::new(LocalStorage),
        tx,
    )
    .unwrap();
    let t0 = Instant::now();
    let id = RecordingId::new("rec_thread").unwrap();
    let tap = worker
        .open(
            id.clone(),
            RecorderConfig::new(SampleRate::NARROWBAND, Channels::Mono),
            date(),
            t0,
        )
        .unwrap();
    // One second of both sides, stamped on the virtual timeline.
    for k in 0..50u64 {
        let now = t0 + Duration::from_millis(20 * (k + 1));
        assert!(tap.send(Side::Internal, frame(k, 440.0, 1), now));
        assert!(tap.send(Side::External, frame(k, 1000.0, 2), now));
    }
    worker
        .pause(tap.key(), t0 + Duration::from_millis(500))
        .unwrap();
    worker
        .resume(tap.key(), t0 + Duration::from_millis(700))
        .unwrap();
    worker
        .close(tap.key(), t0 + Duration::from_secs(1))
        .unwrap();
    // Waits for the worker's event (bounded, so a broken worker fails the test).
    let ev = events.recv_timeout(Duration::from_secs(30)).unwrap();
    let RecordingEvent::Completed(c) = ev else {
        panic!("{ev:?}")
    };
    assert_eq!(c.id, id);
    assert_eq!(worker.dropped_frames(), 0);
    worker.shutdown(Instant::now());
    let StoredAt::Local(path) = c.stored_at else {
        panic!()
    };
    let (spec, samples) = read(&path);
    assert_eq!(spec.channels, 1);
    assert_eq!(samples.len(), 8000);
    // Mixed: both tones, summed; the paused 200 ms silent.
    let mix: Vec<i16> = tone(440.0, 10, 160)
        .iter()
        .zip(tone(1000.0, 10, 160))
        .map(|(a, b)| a.saturating_add(b))
        .collect();
    assert!(samples[1600..1760] == mix[..], "the mix is not in place");
    assert!(samples[4000..5600].iter().all(|&v| v == 0));
    assert!(samples[5600..8000].iter().any(|&v| v != 0));
}
