//! The call engine's media port: the relay, the listening thread and the recording
//! worker behind the one [`MediaPort`] interface the engine is handed.
//!
//! A call's legs are tapped (taken out of the kernel fast path and copied to the
//! listening thread) only while somebody listens: its recording, or a webhook that
//! subscribes to `call.dtmf`. A call nobody listens to costs nothing here beyond
//! remembering its codecs.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use chrono::{Duration as ChronoDuration, Utc};
use voxgate_media::dtmf::info::InfoBody;
use voxgate_media::listen::ListenConfig;
use voxgate_media::recorder::{Channels, RecorderConfig, SampleRate};

use super::listen::{ListenEvent, Listening};
use super::recording::{
    self, LocalStorage, RecordingEvent, RecordingId, RecordingKey, RecordingWorker,
    RecordingWorkerConfig,
};
use super::{
    Digit, DtmfMethod, DtmfTiming, LegRemote, MediaEngine, MediaError, PlaySpec, PlaybackEvent,
    PlaybackId, PlaybackNotify, PlaybackOutcome, Session, SessionId, Side,
};
use crate::calls::env::{FetchedAudio, MediaPort, PromptPlay, RecordingStart, SpeechPlay};
use crate::calls::record::{CallChange, MediaChange, RecordSender};
use crate::store::{RecordingChannels, RecordingEnd, RecordingStatus, Store};

#[derive(Default)]
struct Listened {
    configs: [Option<ListenConfig>; 2],
    tapped: bool,
    recording: Option<RecordingKey>,
}

/// The relay with its listeners. Owned by the call engine (through `MediaPort`).
pub struct MediaPlant {
    relay: Arc<MediaEngine>,
    listening: Listening,
    recorder: RecordingWorker,
    store: Store,
    data_dir: std::path::PathBuf,
    sessions: HashMap<SessionId, Listened>,
    /// Where the relay reports the end of a playback the call engine waits for.
    playbacks: PlaybackNotify,
    /// The speech service, asked on the runtime.
    tts: Arc<super::tts::Tts>,
    runtime: tokio::runtime::Handle,
}

impl MediaPlant {
    /// Starts the listening thread and the recording worker (files under
    /// `<data_dir>/recordings`). Key presses go to `dtmf`; finished recordings are
    /// written through `records`.
    pub fn start(
        relay: Arc<MediaEngine>,
        store: Store,
        data_dir: &Path,
        records: RecordSender,
        dtmf: tokio::sync::mpsc::UnboundedSender<ListenEvent>,
        playbacks: tokio::sync::mpsc::UnboundedSender<PlaybackEvent>,
        tts: Arc<super::tts::Tts>,
    ) -> anyhow::Result<MediaPlant> {
        let listening = Listening::start(dtmf)?;
        // The relay reports on a std channel (it never waits); the SIP core waits on
        // tokio's: a thread carries the events across.
        let (ended_tx, ended_rx) = std::sync::mpsc::channel::<PlaybackEvent>();
        std::thread::Builder::new()
            .name("playback-events".into())
            .spawn(move || {
                while let Ok(ev) = ended_rx.recv() {
                    if playbacks.send(ev).is_err() {
                        return;
                    }
                }
            })?;
        let (events_tx, events_rx) = std::sync::mpsc::channel();
        let recorder = RecordingWorker::start(
            RecordingWorkerConfig::new(data_dir),
            Box::new(LocalStorage),
            events_tx,
        )?;
        std::thread::Builder::new()
            .name("recording-events".into())
            .spawn(move || {
                while let Ok(ev) = events_rx.recv() {
                    records.send(CallChange::Media(recording_ended(ev)));
                }
            })?;
        Ok(MediaPlant {
            relay,
            listening,
            recorder,
            store,
            data_dir: data_dir.to_path_buf(),
            sessions: HashMap::new(),
            playbacks: ended_tx,
            tts,
            runtime: tokio::runtime::Handle::current(),
        })
    }

    /// Taps both sides of a session and gives the listener what it knows of them.
    fn tap(&mut self, session: SessionId) {
        let Some(s) = self.sessions.get_mut(&session) else {
            return;
        };
        if !s.tapped {
            s.tapped = true;
            for side in [Side::A, Side::B] {
                if let Err(e) = self
                    .relay
                    .set_tap(session, side, Some(self.listening.tap()))
                {
                    tracing::debug!(error = %e, "tap not set");
                }
            }
        }
        for (side, config) in [(Side::A, &s.configs[0]), (Side::B, &s.configs[1])] {
            if let Some(c) = config {
                self.listening.listen(session, side, c.clone());
            }
        }
    }
}

/// A finished recording as the store keeps it.
fn recording_ended(ev: RecordingEvent) -> MediaChange {
    let now = Utc::now();
    match ev {
        RecordingEvent::Completed(c) => {
            tracing::debug!(
                recording = c.id.as_str(),
                key = %c.key,
                stored = ?c.stored_at,
                rate = c.spec.rate.0,
                stats = ?c.stats,
                "recording finished"
            );
            MediaChange::RecordingEnded {
                id: c.id.as_str().to_owned(),
                end: RecordingEnd {
                    status: RecordingStatus::Completed,
                    duration_ms: i64::try_from(c.duration.as_millis()).unwrap_or(i64::MAX),
                    size_bytes: i64::try_from(c.bytes).unwrap_or(i64::MAX),
                    ended_at: now,
                },
            }
        }
        RecordingEvent::Failed { id, error } => {
            tracing::warn!(recording = id.as_str(), %error, "recording failed");
            MediaChange::RecordingEnded {
                id: id.as_str().to_owned(),
                end: RecordingEnd {
                    status: RecordingStatus::Failed,
                    duration_ms: 0,
                    size_bytes: 0,
                    ended_at: now,
                },
            }
        }
    }
}

impl MediaPort for MediaPlant {
    fn create_session(&mut self) -> Result<Session, MediaError> {
        let s = self.relay.create_session()?;
        self.sessions.insert(s.id, Listened::default());
        Ok(s)
    }

    fn update_leg(&mut self, session: SessionId, side: Side, remote: LegRemote) {
        MediaPort::update_leg(&mut self.relay, session, side, remote);
    }

    fn release_session(&mut self, session: SessionId) {
        if let Some(s) = self.sessions.remove(&session) {
            if let Some(key) = s.recording {
                let _ = self.recorder.close(key, Instant::now());
            }
            if s.tapped {
                self.listening.forget(session);
            }
        }
        MediaPort::release_session(&mut self.relay, session);
    }

    fn play_tone(
        &mut self,
        session: SessionId,
        side: Side,
        tone: Option<voxgate_media::tone::TonePlayer>,
    ) {
        MediaPort::play_tone(&mut self.relay, session, side, tone);
    }

    fn listen(&mut self, session: SessionId, side: Side, config: ListenConfig) {
        let Some(s) = self.sessions.get_mut(&session) else {
            return;
        };
        s.configs[side.index()] = Some(config.clone());
        if s.tapped {
            self.listening.listen(session, side, config);
        } else if self.store.subscribed_now("call.dtmf") {
            self.tap(session);
        }
    }

    fn start_recording(&mut self, session: SessionId, rec: RecordingStart) -> bool {
        let Some(s) = self.sessions.get(&session) else {
            return false;
        };
        if s.recording.is_some() {
            return false;
        }
        let Ok(id) = RecordingId::new(&rec.id) else {
            return false;
        };
        let channels = match rec.channels {
            RecordingChannels::Mono => Channels::Mono,
            RecordingChannels::Dual => Channels::Dual,
        };
        let config = RecorderConfig::new(SampleRate(rec.rate), channels);
        let key = match self
            .recorder
            .open(id, config, rec.started_at.date_naive(), Instant::now())
        {
            Ok(tap) => {
                let key = tap.key();
                self.listening.record(session, tap, rec.internal);
                key
            }
            Err(e) => {
                tracing::warn!(error = %e, "recording not started");
                return false;
            }
        };
        if let Some(s) = self.sessions.get_mut(&session) {
            s.recording = Some(key);
        }
        self.tap(session);
        true
    }

    fn pause_recording(&mut self, session: SessionId, paused: bool) {
        let Some(key) = self.sessions.get(&session).and_then(|s| s.recording) else {
            return;
        };
        let now = Instant::now();
        let _ = if paused {
            self.recorder.pause(key, now)
        } else {
            self.recorder.resume(key, now)
        };
    }

    fn stop_recording(&mut self, session: SessionId) {
        let Some(key) = self
            .sessions
            .get_mut(&session)
            .and_then(|s| s.recording.take())
        else {
            return;
        };
        self.listening.unrecord(session);
        let _ = self.recorder.close(key, Instant::now());
    }

    fn dtmf_info(&mut self, session: SessionId, side: Side, body: InfoBody) {
        self.listening.info(session, side, body, Instant::now());
    }

    fn play(&mut self, session: SessionId, side: Side, play: PromptPlay) -> bool {
        if !self.sessions.contains_key(&session) {
            return false;
        }
        // The prompt's audio is read from disk on a miss of the prompts cache: not on
        // the SIP core's thread.
        let relay = Arc::clone(&self.relay);
        let data_dir = self.data_dir.clone();
        let notify = play.tag.map(|tag| (self.playbacks.clone(), tag));
        let spawned = std::thread::Builder::new()
            .name("prompt-load".into())
            .spawn(move || {
                let rate = play.codec.sample_rate();
                let pcm = match super::prompts::load(&data_dir, &play.prompt, rate) {
                    Ok(pcm) => pcm,
                    Err(e) => {
                        tracing::warn!(prompt = %play.prompt.id, error = %e, "prompt not played");
                        if let Some((tx, tag)) = notify {
                            let _ = tx.send(PlaybackEvent {
                                session,
                                side,
                                id: PlaybackId(0),
                                outcome: PlaybackOutcome::Failed,
                                tag,
                            });
                        }
                        return;
                    }
                };
                let (notify, tag) = notify.map_or((None, 0), |(tx, tag)| (Some(tx), tag));
                let spec = PlaySpec {
                    pcm,
                    rate,
                    codec: play.codec,
                    payload_type: play.payload_type,
                    loops: play.loops,
                    notify,
                    tag,
                };
                if let Err(e) = MediaEngine::play(&relay, session, side, spec) {
                    tracing::debug!(error = %e, "prompt not played");
                }
                // Off the SIP core's loop, nothing else flushes the deferred wake-up
                // (measured: the prompt started 0.4-0.75 s late without this).
                relay.flush_wakes();
            });
        spawned.is_ok()
    }

    fn say(&mut self, session: SessionId, side: Side, say: SpeechPlay) -> bool {
        if !self.sessions.contains_key(&session) {
            return false;
        }
        let relay = Arc::clone(&self.relay);
        let tts = Arc::clone(&self.tts);
        let notify = self.playbacks.clone();
        self.runtime.spawn(async move {
            let rate = say.codec.sample_rate();
            let fetched = match &say.audio {
                FetchedAudio::Speech { text, voice } => tts.speak(text, voice.as_deref()).await,
                FetchedAudio::Url(url) => tts.fetch(url).await,
            };
            let speech = match fetched {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!(error = %e, "program: no audio to play");
                    let _ = notify.send(PlaybackEvent {
                        session,
                        side,
                        id: PlaybackId(0),
                        outcome: PlaybackOutcome::Failed,
                        tag: say.tag,
                    });
                    return;
                }
            };
            let pcm: Arc<[i16]> = match rate.hz() {
                8000 => speech.pcm_8k.as_slice().into(),
                16_000 => speech.pcm_16k.as_slice().into(),
                _ => speech.pcm_48k.as_slice().into(),
            };
            let spec = PlaySpec {
                pcm,
                rate,
                codec: say.codec,
                payload_type: say.payload_type,
                loops: say.loops,
                notify: Some(notify),
                tag: say.tag,
            };
            if let Err(e) = MediaEngine::play(&relay, session, side, spec) {
                tracing::debug!(error = %e, "speech not played");
            }
            relay.flush_wakes();
        });
        true
    }

    fn beep(&mut self, session: SessionId, side: Side, codec: voxgate_media::Codec, pt: u8) {
        let rate = codec.sample_rate();
        let hz = f64::from(rate.hz());
        // 250 ms of 1 kHz at -12 dBFS.
        let n = rate.hz() as usize / 4;
        let pcm: Arc<[i16]> = (0..n)
            .map(|i| {
                let s = 8000.0 * (std::f64::consts::TAU * 1000.0 * i as f64 / hz).sin();
                #[allow(clippy::cast_possible_truncation)]
                let s = s.round() as i16;
                s
            })
            .collect();
        let spec = PlaySpec {
            pcm,
            rate,
            codec,
            payload_type: pt,
            loops: voxgate_media::Loops::ONCE,
            notify: None,
            tag: 0,
        };
        if let Err(e) = MediaEngine::play(&self.relay, session, side, spec) {
            tracing::debug!(error = %e, "beep not played");
        }
    }

    fn stop_play(&mut self, session: SessionId, side: Side) {
        if let Err(e) = MediaEngine::stop_play(&self.relay, session, side) {
            tracing::debug!(error = %e, "playback not stopped");
        }
    }

    fn need_digits(&mut self, session: SessionId) {
        self.tap(session);
    }

    fn send_dtmf(
        &mut self,
        session: SessionId,
        side: Side,
        digits: Vec<Digit>,
        method: DtmfMethod,
    ) -> bool {
        MediaEngine::send_dtmf(
            &self.relay,
            session,
            side,
            &digits,
            method,
            DtmfTiming::default(),
            None,
        )
        .is_ok()
    }
}

/// At start-up, before any call: repairs the files a crash left mid-write and closes
/// their rows (`completed` with what the file holds, `recording.completed` sent), so a
/// kill -9 loses at most the audio of the last header interval.
pub async fn recover_recordings(store: &Store, data_dir: &Path) -> anyhow::Result<usize> {
    let dir = data_dir.join("recordings");
    let _ = recording::repair_stale(&dir);
    let open = store.interrupted_recordings().await?;
    let n = open.len();
    for r in open {
        let path = data_dir.join(&r.path);
        // Already repaired above: this reads what the file holds.
        let (status, duration_ms, size_bytes) = match recording::repair(&path) {
            Ok(rep) => {
                let per_ms = u64::from(r.channels.count()) * 2 * u64::from(r.sample_rate) / 1000;
                (
                    RecordingStatus::Completed,
                    i64::try_from(rep.data_len / per_ms.max(1)).unwrap_or(i64::MAX),
                    i64::try_from(rep.truncate_to).unwrap_or(i64::MAX),
                )
            }
            Err(e) => {
                tracing::warn!(recording = %r.id, error = %e, "recording left by a crash is unreadable");
                (RecordingStatus::Failed, 0, 0)
            }
        };
        let ended_at = r.started_at + ChronoDuration::milliseconds(duration_ms);
        store
            .complete_recording(
                &r.id,
                RecordingEnd {
                    status,
                    duration_ms,
                    size_bytes,
                    ended_at,
                },
            )
            .await?;
        tracing::info!(recording = %r.id, duration_ms, "recording left by a crash closed");
    }
    Ok(n)
}
