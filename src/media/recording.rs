//! The recording worker: WAV files written off the forward path.
//!
//! One dedicated thread owns every open recording (a [`Recorder`] timeline and a
//! [`WavWriter`] each). It is fed by two channels:
//! - frames, bounded: the relay's tap calls [`RecordingTap::send`], which never waits;
//!   when the worker has fallen behind and the channel is full, the frame is dropped and
//!   counted (`voxgate_recording_frames_dropped_total`), and the relay carries on;
//! - control (open, pause, resume, close), unbounded: a handful of messages per call,
//!   from the call engine, which must not wait either and must not lose a close.
//!
//! The worker wakes for control messages and for its tick, never for a frame: each tick
//! places the frames queued since the last one and writes what is ready. It takes
//! control messages first; a frame for a recording it does not know
//! yet makes it look at control again (the open was sent before the tap existed); a
//! close first drains the frames already queued. Pause and resume act on the timeline
//! by their `now`, so their order against frames in flight does not matter.
//!
//! Files are written at `<dir>/YYYY/MM/DD/<id>.wav` (`dir` is `<data_dir>/recordings`)
//! with the header's sizes rewritten each `header_every` of audio, so a crash leaves a
//! file readable up to its last second; [`repair_stale`] fixes the rest of it at
//! start-up. A finished file is handed to a [`RecordingStorage`] (local now; the
//! pipeline adds an S3-compatible one) and reported as a [`RecordingEvent`].

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{
    self, Receiver, RecvTimeoutError, Sender, SyncSender, TryRecvError, TrySendError,
};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use chrono::{Datelike, NaiveDate};
use thiserror::Error;
use voxgate_media::recorder::{Frame, Recorder, RecorderConfig, RecorderStats, SampleRate, Side};
use voxgate_media::wav::{self, Repair, WavError, WavSpec, WavWriter};
use voxgate_media::{ClockRate, RtpTimestamp, Ssrc};

/// A recording's id (`rec_…`); also its file name, so only `[A-Za-z0-9_-]` is accepted.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RecordingId(String);

impl RecordingId {
    pub fn new(id: &str) -> Result<RecordingId, RecordingError> {
        let ok = !id.is_empty()
            && id.len() <= 64
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if ok {
            Ok(RecordingId(id.to_owned()))
        } else {
            Err(RecordingError::BadId(id.to_owned()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[derive(Debug, Error)]
pub enum RecordingError {
    #[error("recording id {0:?} is not usable as a file name")]
    BadId(String),
    #[error("recording I/O: {0}")]
    Io(#[from] io::Error),
    #[error("recording file: {0}")]
    Wav(#[from] WavError),
    #[error("recording storage: {0}")]
    #[allow(dead_code)] // made by the S3-compatible storage to come
    Storage(String),
    #[error("the recording worker has stopped")]
    Stopped,
}

/// Where a finished recording lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoredAt {
    Local(PathBuf),
    /// An object store key or URL (the pipeline issue adds such a storage).
    #[allow(dead_code)] // made by the S3-compatible storage to come
    Remote(String),
}

/// Where finished recordings go. Called on the recording worker's thread with a closed,
/// complete file; an implementation that uploads may block it (the frames queue absorbs
/// that, and what it cannot is counted) or hand the upload to another thread.
pub trait RecordingStorage: Send {
    /// Takes the finished file at `local`; `key` is its path relative to the data dir
    /// (`recordings/YYYY/MM/DD/<id>.wav`, the SPEC's layout for any store).
    fn store(&self, id: &RecordingId, local: &Path, key: &str) -> Result<StoredAt, RecordingError>;
}

/// Local storage: the file is already at its final place under the data dir.
#[derive(Debug, Clone, Copy, Default)]
pub struct LocalStorage;

impl RecordingStorage for LocalStorage {
    fn store(
        &self,
        _id: &RecordingId,
        local: &Path,
        _key: &str,
    ) -> Result<StoredAt, RecordingError> {
        Ok(StoredAt::Local(local.to_path_buf()))
    }
}

/// A finished recording, for the engine to record and announce (`recording.completed`).
#[derive(Debug, Clone)]
pub struct CompletedRecording {
    pub id: RecordingId,
    pub stored_at: StoredAt,
    /// `recordings/YYYY/MM/DD/<id>.wav`.
    pub key: String,
    pub duration: Duration,
    pub bytes: u64,
    pub spec: WavSpec,
    pub stats: RecorderStats,
}

#[derive(Debug)]
pub enum RecordingEvent {
    Completed(CompletedRecording),
    /// The file could not be created, written or stored; what was written stays on disk.
    Failed {
        id: RecordingId,
        error: String,
    },
}

/// Worker settings.
#[derive(Debug, Clone)]
pub struct RecordingWorkerConfig {
    /// `<data_dir>/recordings`.
    pub dir: PathBuf,
    /// Frames the queue holds before the tap drops: 8192 frames is 400 recorded calls'
    /// worth of 20 ms on both sides for about 200 ms.
    pub queue: usize,
    /// How much audio is written between two header rewrites.
    pub header_every: Duration,
    /// How often queued frames are placed and what is ready is written (frames do not
    /// wake the worker; see `run`).
    pub tick: Duration,
}

impl RecordingWorkerConfig {
    pub fn new(data_dir: &Path) -> RecordingWorkerConfig {
        RecordingWorkerConfig {
            dir: data_dir.join("recordings"),
            queue: 8192,
            header_every: Duration::from_secs(1),
            tick: Duration::from_millis(20),
        }
    }
}

/// The worker's handle for one open recording.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RecordingKey(u64);

/// One decoded frame as it travels to the worker.
#[derive(Debug, Clone)]
pub struct OwnedFrame {
    pub ssrc: Ssrc,
    pub timestamp: RtpTimestamp,
    pub clock: ClockRate,
    pub rate: SampleRate,
    pub samples: Vec<i16>,
}

struct FrameMsg {
    key: RecordingKey,
    side: Side,
    frame: OwnedFrame,
    now: Instant,
}

enum Control {
    Open {
        key: RecordingKey,
        id: RecordingId,
        config: RecorderConfig,
        date: NaiveDate,
        now: Instant,
    },
    Pause(RecordingKey, Instant),
    Resume(RecordingKey, Instant),
    Close(RecordingKey, Instant),
    Shutdown(Instant),
}

/// What the relay holds to feed one recording: cheap to clone, never blocks.
#[derive(Debug, Clone)]
pub struct RecordingTap {
    key: RecordingKey,
    frames: SyncSender<FrameMsg>,
    dropped: Arc<AtomicU64>,
}

impl std::fmt::Debug for FrameMsg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrameMsg")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl RecordingTap {
    pub fn key(&self) -> RecordingKey {
        self.key
    }

    /// Queues one frame of `side` that arrived at `now`. Returns false if it was dropped
    /// (queue full: counted; worker gone).
    pub fn send(&self, side: Side, frame: OwnedFrame, now: Instant) -> bool {
        let msg = FrameMsg {
            key: self.key,
            side,
            frame,
            now,
        };
        match self.frames.try_send(msg) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("voxgate_recording_frames_dropped_total").increment(1);
                false
            }
            Err(TrySendError::Disconnected(_)) => false,
        }
    }
}

/// The recording worker thread and its channels.
pub struct RecordingWorker {
    control: Sender<Control>,
    frames: SyncSender<FrameMsg>,
    next_key: AtomicU64,
    dropped: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl RecordingWorker {
    /// Starts the thread. Events (completed or failed recordings) go to `events`.
    pub fn start(
        config: RecordingWorkerConfig,
        storage: Box<dyn RecordingStorage>,
        events: Sender<RecordingEvent>,
    ) -> Result<RecordingWorker, RecordingError> {
        let (control, control_rx) = mpsc::channel();
        let (frames, frames_rx) = mpsc::sync_channel(config.queue.max(1));
        let tick = config.tick;
        let mut sink = Sink::new(config, storage, events);
        let thread = std::thread::Builder::new()
            .name("recording".into())
            .spawn(move || run(&mut sink, &control_rx, &frames_rx, tick))?;
        Ok(RecordingWorker {
            control,
            frames,
            next_key: AtomicU64::new(1),
            dropped: Arc::new(AtomicU64::new(0)),
            thread: Some(thread),
        })
    }

    /// Opens a recording starting at `now`; `date` (the call's start, UTC) chooses its
    /// folder. Returns the tap the relay feeds.
    pub fn open(
        &self,
        id: RecordingId,
        config: RecorderConfig,
        date: NaiveDate,
        now: Instant,
    ) -> Result<RecordingTap, RecordingError> {
        let key = RecordingKey(self.next_key.fetch_add(1, Ordering::Relaxed));
        self.control
            .send(Control::Open {
                key,
                id,
                config,
                date,
                now,
            })
            .map_err(|_| RecordingError::Stopped)?;
        Ok(RecordingTap {
            key,
            frames: self.frames.clone(),
            dropped: self.dropped.clone(),
        })
    }

    pub fn pause(&self, key: RecordingKey, now: Instant) -> Result<(), RecordingError> {
        self.control
            .send(Control::Pause(key, now))
            .map_err(|_| RecordingError::Stopped)
    }

    pub fn resume(&self, key: RecordingKey, now: Instant) -> Result<(), RecordingError> {
        self.control
            .send(Control::Resume(key, now))
            .map_err(|_| RecordingError::Stopped)
    }

    /// Ends the recording at `now`; a [`RecordingEvent`] follows.
    pub fn close(&self, key: RecordingKey, now: Instant) -> Result<(), RecordingError> {
        self.control
            .send(Control::Close(key, now))
            .map_err(|_| RecordingError::Stopped)
    }

    /// Frames dropped so far because the queue was full (also counted in
    /// `voxgate_recording_frames_dropped_total`).
    #[cfg_attr(not(test), allow(dead_code))]
    pub fn dropped_frames(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Closes every open recording at `now` and waits for the thread.
    #[cfg_attr(not(test), allow(dead_code))]
    pub fn shutdown(mut self, now: Instant) {
        self.stop(now);
    }

    fn stop(&mut self, now: Instant) {
        let _ = self.control.send(Control::Shutdown(now));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Dropping the worker (the process stopping) finishes every open file first.
impl Drop for RecordingWorker {
    fn drop(&mut self) {
        self.stop(Instant::now());
    }
}

/// Frames never wake the worker: it waits for a control message or its tick, and at
/// each tick places every frame queued by then and writes what is ready. Waking for each
/// frame (40,000 a second for 400 recorded calls) cost more than placing it. Nothing
/// moves in the file: a frame is placed by its arrival `now`, and a tick queues at most
/// `tick` of frames, far less than the late window the output waits for.
fn run(sink: &mut Sink, control: &Receiver<Control>, frames: &Receiver<FrameMsg>, tick: Duration) {
    let mut next_tick = Instant::now() + tick;
    // A tick takes at most a queue's worth of frames, so control is not starved.
    let most = sink.config.queue.max(1);
    loop {
        let wait = next_tick.saturating_duration_since(Instant::now());
        match control.recv_timeout(wait) {
            Ok(c) => {
                let mut pending = None;
                if let Some(now) = control_message(sink, c, frames, &mut pending)
                    .or_else(|| drain_control(sink, control, frames, &mut pending))
                {
                    return sink.close_all(frames, now);
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            // Never: the worker handle holds a sender.
            Err(RecvTimeoutError::Disconnected) => return sink.close_all(frames, Instant::now()),
        }
        let now = Instant::now();
        if now < next_tick {
            continue;
        }
        for m in frames.try_iter().take(most) {
            let mut pending = Some(m);
            if pending
                .as_ref()
                .is_some_and(|m| !sink.active.contains_key(&m.key))
            {
                // Its open may have been sent after the worker last looked.
                if let Some(now) = drain_control(sink, control, frames, &mut pending) {
                    if let Some(m) = pending {
                        sink.frame(m);
                    }
                    return sink.close_all(frames, now);
                }
            }
            if let Some(m) = pending {
                sink.frame(m);
            }
        }
        let now = Instant::now();
        sink.tick(now);
        next_tick = now + tick;
    }
}

/// Handles the control messages queued now; returns the shutdown time if told to stop.
/// A close first takes `pending` and the frames already queued: they belong before it.
fn drain_control(
    sink: &mut Sink,
    control: &Receiver<Control>,
    frames: &Receiver<FrameMsg>,
    pending: &mut Option<FrameMsg>,
) -> Option<Instant> {
    loop {
        match control.try_recv() {
            Ok(c) => {
                if let Some(now) = control_message(sink, c, frames, pending) {
                    return Some(now);
                }
            }
            Err(TryRecvError::Empty) => return None,
            Err(TryRecvError::Disconnected) => return Some(Instant::now()),
        }
    }
}

/// Handles one control message (see [`drain_control`]); returns the shutdown time if it
/// is the stop.
fn control_message(
    sink: &mut Sink,
    c: Control,
    frames: &Receiver<FrameMsg>,
    pending: &mut Option<FrameMsg>,
) -> Option<Instant> {
    match c {
        Control::Shutdown(now) => return Some(now),
        Control::Close(key, now) => {
            if let Some(m) = pending.take() {
                sink.frame(m);
            }
            while let Ok(m) = frames.try_recv() {
                sink.frame(m);
            }
            sink.close(key, now);
        }
        c => sink.control(c),
    }
    None
}

struct Active {
    id: RecordingId,
    recorder: Recorder,
    writer: WavWriter<BufWriter<File>>,
    path: PathBuf,
    key: String,
    /// Sample frames between two header rewrites, and how many since the last.
    header_every: u64,
    since_header: u64,
}

/// The worker's state, without the thread: open recordings and where they go. Tests
/// drive it directly with a virtual clock.
struct Sink {
    config: RecordingWorkerConfig,
    storage: Box<dyn RecordingStorage>,
    events: Sender<RecordingEvent>,
    active: HashMap<RecordingKey, Active>,
    /// Reused output buffer.
    buf: Vec<i16>,
}

impl Sink {
    fn new(
        config: RecordingWorkerConfig,
        storage: Box<dyn RecordingStorage>,
        events: Sender<RecordingEvent>,
    ) -> Sink {
        Sink {
            config,
            storage,
            events,
            active: HashMap::new(),
            buf: Vec::new(),
        }
    }

    fn control(&mut self, c: Control) {
        match c {
            Control::Open {
                key,
                id,
                config,
                date,
                now,
            } => {
                if let Err(e) = self.open(key, id.clone(), config, date, now) {
                    tracing::warn!(recording = id.as_str(), error = %e, "cannot open recording");
                    let _ = self.events.send(RecordingEvent::Failed {
                        id,
                        error: e.to_string(),
                    });
                }
            }
            Control::Pause(key, now) => {
                if let Some(a) = self.active.get_mut(&key) {
                    a.recorder.pause(now);
                }
            }
            Control::Resume(key, now) => {
                if let Some(a) = self.active.get_mut(&key) {
                    a.recorder.resume(now);
                }
            }
            Control::Close(key, now) => self.close(key, now),
            Control::Shutdown(now) => {
                let keys: Vec<_> = self.active.keys().copied().collect();
                for k in keys {
                    self.close(k, now);
                }
            }
        }
    }

    fn open(
        &mut self,
        key: RecordingKey,
        id: RecordingId,
        config: RecorderConfig,
        date: NaiveDate,
        now: Instant,
    ) -> Result<(), RecordingError> {
        let rel = relative_path(&id, date);
        let path = self.config.dir.join(&rel);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)?;
        }
        // create_new: an id is used once; never clobber a finished recording.
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)?;
        let spec = WavSpec {
            channels: config.channels.count(),
            rate: config.rate,
        };
        // The header is valid (an empty file) from the start.
        let writer = WavWriter::new(BufWriter::with_capacity(64 * 1024, file), spec)?;
        let header_every = u64::try_from(config.rate.samples_in(self.config.header_every))
            .unwrap_or(u64::MAX)
            .max(1);
        self.active.insert(
            key,
            Active {
                id,
                recorder: Recorder::new(config, now),
                writer,
                path,
                key: format!("recordings/{}", rel.display()),
                header_every,
                since_header: 0,
            },
        );
        Ok(())
    }

    fn frame(&mut self, m: FrameMsg) {
        let Some(a) = self.active.get_mut(&m.key) else {
            // Closed already, or its open failed.
            return;
        };
        let f = Frame {
            ssrc: m.frame.ssrc,
            timestamp: m.frame.timestamp,
            clock: m.frame.clock,
            rate: m.frame.rate,
            samples: &m.frame.samples,
        };
        a.recorder.handle_frame(m.side, &f, m.now);
    }

    /// Writes what every recording has ready at `now`.
    fn tick(&mut self, now: Instant) {
        let mut failed = Vec::new();
        for (k, a) in &mut self.active {
            self.buf.clear();
            let n = a.recorder.poll_output(now, &mut self.buf);
            if let Err(e) = write(a, &self.buf, n) {
                failed.push((*k, e));
            }
        }
        for (k, e) in failed {
            self.fail(k, &e);
        }
    }

    fn close(&mut self, key: RecordingKey, now: Instant) {
        let Some(mut a) = self.active.remove(&key) else {
            return;
        };
        self.buf.clear();
        let n = a.recorder.finish(now, &mut self.buf);
        let result = write(&mut a, &self.buf, n).and_then(|()| {
            let bytes = a.writer.data_bytes();
            let spec = a.writer.spec();
            let frames = a.writer.frames();
            let file = a.writer.finalize()?;
            let file = file.into_inner().map_err(|e| e.into_error())?;
            file.sync_all()?;
            drop(file);
            let stored_at = self.storage.store(&a.id, &a.path, &a.key)?;
            Ok(CompletedRecording {
                id: a.id.clone(),
                stored_at,
                key: a.key.clone(),
                duration: Duration::from_secs_f64(frames as f64 / f64::from(spec.rate.0)),
                bytes: bytes + wav::HEADER_LEN,
                spec,
                stats: a.recorder.stats(),
            })
        });
        let event = match result {
            Ok(c) => RecordingEvent::Completed(c),
            Err(e) => {
                tracing::warn!(recording = a.id.as_str(), error = %e, "recording failed");
                RecordingEvent::Failed {
                    id: a.id,
                    error: e.to_string(),
                }
            }
        };
        let _ = self.events.send(event);
    }

    fn fail(&mut self, key: RecordingKey, e: &RecordingError) {
        if let Some(a) = self.active.remove(&key) {
            tracing::warn!(recording = a.id.as_str(), error = %e, "recording failed");
            let _ = self.events.send(RecordingEvent::Failed {
                id: a.id,
                error: e.to_string(),
            });
        }
    }

    fn close_all(&mut self, frames: &Receiver<FrameMsg>, now: Instant) {
        while let Ok(m) = frames.try_recv() {
            self.frame(m);
        }
        let keys: Vec<_> = self.active.keys().copied().collect();
        for k in keys {
            self.close(k, now);
        }
    }
}

/// Appends `n` sample frames from `buf` and rewrites the header each `header_every`.
fn write(a: &mut Active, buf: &[i16], n: usize) -> Result<(), RecordingError> {
    if n == 0 {
        return Ok(());
    }
    a.writer.write_samples(buf)?;
    a.since_header += n as u64;
    if a.since_header >= a.header_every {
        a.writer.update_header()?;
        a.since_header = 0;
    }
    Ok(())
}

/// `YYYY/MM/DD/<id>.wav`.
fn relative_path(id: &RecordingId, date: NaiveDate) -> PathBuf {
    PathBuf::from(format!(
        "{:04}/{:02}/{:02}/{}.wav",
        date.year(),
        date.month(),
        date.day(),
        id.as_str()
    ))
}

/// Fixes the header of one WAV file left by a crash: sizes to cover the whole sample
/// frames present, a trailing partial frame cut off. A file already consistent is left
/// untouched.
pub fn repair(path: &Path) -> Result<Repair, RecordingError> {
    let mut f = OpenOptions::new().read(true).write(true).open(path)?;
    let rep = wav::repair_header(&mut f)?;
    if rep.stale {
        if rep.truncate_to < rep.file_len {
            f.set_len(rep.truncate_to)?;
        }
        f.sync_all()?;
    }
    Ok(rep)
}

/// What [`repair_stale`] did.
#[derive(Debug, Default)]
pub struct RepairReport {
    pub checked: usize,
    pub repaired: Vec<(PathBuf, Repair)>,
    pub failed: Vec<(PathBuf, String)>,
}

/// At start-up, before the worker runs: finds the `.wav` files under `dir` (the
/// `YYYY/MM/DD` tree) whose header does not match their length, i.e. files a crash left
/// behind, and repairs them.
pub fn repair_stale(dir: &Path) -> RepairReport {
    let mut report = RepairReport::default();
    // The layout is three levels deep; a little more depth tolerates stray folders.
    walk(dir, 5, &mut report);
    for (path, rep) in &report.repaired {
        tracing::info!(path = %path.display(), bytes = rep.data_len, "repaired a recording left by a crash");
    }
    for (path, e) in &report.failed {
        tracing::warn!(path = %path.display(), error = %e, "cannot repair a recording");
    }
    report
}

fn walk(dir: &Path, depth: u32, report: &mut RepairReport) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        let Ok(ft) = e.file_type() else { continue };
        if ft.is_dir() && depth > 0 {
            walk(&path, depth - 1, report);
        } else if ft.is_file() && path.extension().is_some_and(|x| x == "wav") {
            report.checked += 1;
            match repair(&path) {
                Ok(rep) if rep.stale => report.repaired.push((path, rep)),
                Ok(_) => {}
                Err(e) => report.failed.push((path, e.to_string())),
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
