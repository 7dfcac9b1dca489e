//! Prompts on disk: the upload route decodes a file once ([`voxgate_media::prompt`]) and
//! [`store`]s it here as 16-bit mono WAV at each rate a leg can play it at — 8 kHz
//! (G.711), 16 kHz (G.722), 48 kHz (Opus) — so playing a prompt never decodes or
//! resamples. The player side [`load`]s a prompt's PCM at its leg's rate through a small
//! in-process cache.
//!
//! Layout, under the data dir: `prompts/<prompt id>/8000.wav`, `16000.wav`, `48000.wav`;
//! the row's `path` is `prompts/<prompt id>` (relative to the data dir, as recordings'
//! paths are). The folder is written under a temporary name and renamed into place
//! whole, before the row is inserted: a row never names a folder that is missing a
//! rate, and a crash mid-write leaves only a `prompts/.tmp-*` folder.
//!
//! Blocking file I/O: call from `spawn_blocking` or a thread of its own, not from an
//! async task.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, BufWriter, Cursor};
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex};

use thiserror::Error;
use voxgate_media::prompt::Prompt;
use voxgate_media::recorder::SampleRate as WavRate;
use voxgate_media::wav::{self, WavError, WavSpec, WavWriter, HEADER_LEN};
use voxgate_media::SampleRate;

use crate::store::PromptRow;

/// The rates every prompt is stored at.
pub const RATES: [SampleRate; 3] = [
    SampleRate::HZ_8000,
    SampleRate::HZ_16000,
    SampleRate::HZ_48000,
];

/// The folder under the data dir that holds every prompt's audio.
pub const DIR: &str = "prompts";

/// Samples the process-wide cache of [`load`] keeps: 32 Mi samples, 64 MiB — the
/// longest prompt (10 minutes) at 48 kHz fits, with room for the short ones a
/// menu plays over and over.
pub const CACHE_SAMPLES: usize = 32 << 20;

/// Why a prompt's audio could not be written or read.
#[derive(Debug, Error)]
pub enum PromptFileError {
    #[error("prompt {0} has no stored audio")]
    NoAudio(String),
    #[error("prompt id {0:?} is not usable as a file name")]
    BadId(String),
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("{}: {source}", path.display())]
    Wav { path: PathBuf, source: WavError },
    #[error("{}: {what}", path.display())]
    Unexpected { path: PathBuf, what: String },
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> PromptFileError + '_ {
    move |source| PromptFileError::Io {
        path: path.to_owned(),
        source,
    }
}

fn wav_at(path: &Path) -> impl FnOnce(WavError) -> PromptFileError + '_ {
    move |source| PromptFileError::Wav {
        path: path.to_owned(),
        source,
    }
}

/// The row's `path` for a prompt id.
#[must_use]
pub fn relative_dir(id: &str) -> String {
    format!("{DIR}/{id}")
}

/// The WAV file of the prompt stored at `rel` (a row's `path`) at `rate`.
#[must_use]
pub fn audio_path(data_dir: &Path, rel: &str, rate: SampleRate) -> PathBuf {
    data_dir.join(rel).join(format!("{}.wav", rate.hz()))
}

/// Our ids are `prm_` and a ULID; anything else must not become a path.
fn check_id(id: &str) -> Result<(), PromptFileError> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(PromptFileError::BadId(id.to_owned()))
    }
}

/// Writes a decoded prompt's audio for prompt `id` (see the module docs); returns the
/// row's `path`. Files and folders are synced before the rename, and the rename before
/// the return, so the row inserted next never outlives its audio in a power cut.
pub fn store(data_dir: &Path, id: &str, prompt: &Prompt) -> Result<String, PromptFileError> {
    check_id(id)?;
    let parent = data_dir.join(DIR);
    fs::create_dir_all(&parent).map_err(io_at(&parent))?;
    let tmp = parent.join(format!(".tmp-{id}"));
    let rel = relative_dir(id);
    let dest = data_dir.join(&rel);
    let written = write_rates(&tmp, prompt).and_then(|()| {
        fs::rename(&tmp, &dest).map_err(io_at(&dest))?;
        File::open(&parent)
            .and_then(|d| d.sync_all())
            .map_err(io_at(&parent))
    });
    if let Err(e) = written {
        let _ = fs::remove_dir_all(&tmp);
        return Err(e);
    }
    Ok(rel)
}

fn write_rates(dir: &Path, prompt: &Prompt) -> Result<(), PromptFileError> {
    fs::create_dir(dir).map_err(io_at(dir))?;
    for rate in RATES {
        let path = dir.join(format!("{}.wav", rate.hz()));
        let file = File::create(&path).map_err(io_at(&path))?;
        let spec = WavSpec {
            channels: 1,
            rate: WavRate(rate.hz()),
        };
        let mut w = WavWriter::new(BufWriter::new(file), spec).map_err(wav_at(&path))?;
        w.write_samples(prompt.pcm(WavRate(rate.hz())))
            .map_err(wav_at(&path))?;
        let file = w
            .finalize()
            .map_err(wav_at(&path))?
            .into_inner()
            .map_err(|e| PromptFileError::Io {
                path: path.clone(),
                source: e.into_error(),
            })?;
        file.sync_all().map_err(io_at(&path))?;
    }
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_at(dir))
}

/// Removes a prompt's audio (a row's `path`) and drops it from [`load`]'s cache. Audio
/// already gone is no error.
pub fn remove(data_dir: &Path, rel: &str) -> Result<(), PromptFileError> {
    let dir = data_dir.join(rel);
    CACHE.forget(&dir);
    match fs::remove_dir_all(&dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_at(&dir)(e)),
    }
}

/// Reads one stored WAV file: the canonical 44-byte header [`store`] writes, mono,
/// 16-bit, at `rate`.
fn read_wav(path: &Path, rate: SampleRate) -> Result<Vec<i16>, PromptFileError> {
    let bytes = fs::read(path).map_err(io_at(path))?;
    let unexpected = |what: String| PromptFileError::Unexpected {
        path: path.to_owned(),
        what,
    };
    let rep = wav::inspect(&mut Cursor::new(&bytes)).map_err(wav_at(path))?;
    if rep.data_offset != HEADER_LEN || rep.stale {
        return Err(unexpected("not a WAV file as the upload wrote it".into()));
    }
    // Canonical header: channels at 22, sample rate at 24 (little-endian).
    let channels = u16::from_le_bytes([bytes[22], bytes[23]]);
    let hz = u32::from_le_bytes([bytes[24], bytes[25], bytes[26], bytes[27]]);
    if channels != 1 || hz != rate.hz() {
        return Err(unexpected(format!(
            "{channels} channel(s) at {hz} Hz, expected mono at {} Hz",
            rate.hz()
        )));
    }
    let end = usize::try_from(rep.truncate_to).map_err(|_| unexpected("too large".into()))?;
    Ok(bytes[HEADER_LEN as usize..end]
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect())
}

/// A bounded cache of prompts' PCM, least recently used out first.
#[derive(Debug)]
pub struct PromptCache {
    max_samples: usize,
    inner: Mutex<CacheInner>,
}

#[derive(Debug, Default)]
struct CacheInner {
    entries: HashMap<PathBuf, Entry>,
    samples: usize,
    clock: u64,
}

#[derive(Debug)]
struct Entry {
    pcm: Arc<[i16]>,
    used: u64,
}

impl PromptCache {
    /// A cache holding at most `max_samples` samples in all.
    #[must_use]
    pub fn new(max_samples: usize) -> PromptCache {
        PromptCache {
            max_samples,
            inner: Mutex::new(CacheInner::default()),
        }
    }

    /// The PCM of `prompt` at `rate`, from the cache or its file.
    pub fn load(
        &self,
        data_dir: &Path,
        prompt: &PromptRow,
        rate: SampleRate,
    ) -> Result<Arc<[i16]>, PromptFileError> {
        let rel = prompt
            .path
            .as_deref()
            .ok_or_else(|| PromptFileError::NoAudio(prompt.id.clone()))?;
        let path = audio_path(data_dir, rel, rate);
        if let Some(pcm) = self.lookup(&path) {
            return Ok(pcm);
        }
        // Read without the lock: one slow disk must not hold up other calls' prompts.
        // Two callers may read the same file at once; the second insert replaces the
        // first with identical samples.
        let pcm: Arc<[i16]> = read_wav(&path, rate)?.into();
        self.insert(path, pcm.clone());
        Ok(pcm)
    }

    fn lookup(&self, path: &Path) -> Option<Arc<[i16]>> {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.clock += 1;
        let now = inner.clock;
        let e = inner.entries.get_mut(path)?;
        e.used = now;
        Some(e.pcm.clone())
    }

    fn insert(&self, path: PathBuf, pcm: Arc<[i16]>) {
        if pcm.len() > self.max_samples {
            // Served, not kept: it would push everything else out.
            return;
        }
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.clock += 1;
        let used = inner.clock;
        let n = pcm.len();
        if let Some(old) = inner.entries.insert(path, Entry { pcm, used }) {
            inner.samples -= old.pcm.len();
        }
        inner.samples += n;
        while inner.samples > self.max_samples {
            // A scan per eviction: the cache holds a few hundred entries at most.
            let Some(oldest) = inner
                .entries
                .iter()
                .min_by_key(|(_, e)| e.used)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            if let Some(e) = inner.entries.remove(&oldest) {
                inner.samples -= e.pcm.len();
            }
        }
    }

    /// Drops every rate of the prompt stored in `dir` (its audio is being deleted).
    pub fn forget(&self, dir: &Path) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let gone: Vec<PathBuf> = inner
            .entries
            .keys()
            .filter(|k| k.parent() == Some(dir))
            .cloned()
            .collect();
        for k in gone {
            if let Some(e) = inner.entries.remove(&k) {
                inner.samples -= e.pcm.len();
            }
        }
    }

    /// Samples held now.
    #[must_use]
    pub fn samples(&self) -> usize {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).samples
    }

    /// Files held now.
    #[must_use]
    pub fn len(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entries
            .len()
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

static CACHE: LazyLock<PromptCache> = LazyLock::new(|| PromptCache::new(CACHE_SAMPLES));

/// The PCM of `prompt` at `rate` (mono, 16-bit, `rate` samples a second), through the
/// process-wide cache ([`CACHE_SAMPLES`] at most). Blocking on a cache miss.
pub fn load(
    data_dir: &Path,
    prompt: &PromptRow,
    rate: SampleRate,
) -> Result<Arc<[i16]>, PromptFileError> {
    CACHE.load(data_dir, prompt, rate)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn prompt(ms: usize) -> Prompt {
        let tone = |rate: usize| -> Vec<i16> {
            (0..rate * ms / 1000)
                .map(|i| {
                    let t = i as f64 / rate as f64;
                    (8000.0 * (2.0 * std::f64::consts::PI * 1000.0 * t).sin()) as i16
                })
                .collect()
        };
        Prompt {
            pcm_8k: tone(8000),
            pcm_16k: tone(16_000),
            pcm_48k: tone(48_000),
            format: voxgate_media::prompt::Format::Wav,
            source_rate: WavRate(48_000),
            source_channels: 1,
        }
    }

    fn row(id: &str, path: Option<String>) -> PromptRow {
        PromptRow {
            id: id.to_owned(),
            name: "welcome".to_owned(),
            format: "wav".to_owned(),
            duration_ms: 100,
            sample_rate: 48_000,
            path,
            created_at: chrono::Utc::now(),
        }
    }

    #[test]
    fn stored_audio_loads_back_at_each_rate() {
        let dir = tempfile::tempdir().unwrap();
        let p = prompt(100);
        let rel = store(dir.path(), "prm_01TEST", &p).unwrap();
        assert_eq!(rel, "prompts/prm_01TEST");
        // Nothing left under a temporary name.
        let names: Vec<_> = fs::read_dir(dir.path().join(DIR))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, ["prm_01TEST"]);
        // hound, an independent reader, agrees on the format.
        let r = hound::WavReader::open(audio_path(dir.path(), &rel, SampleRate::HZ_16000)).unwrap();
        assert_eq!((r.spec().channels, r.spec().sample_rate), (1, 16_000));
        let cache = PromptCache::new(1 << 20);
        let row = row("prm_01TEST", Some(rel));
        for rate in RATES {
            let pcm = cache.load(dir.path(), &row, rate).unwrap();
            assert_eq!(&pcm[..], p.pcm(WavRate(rate.hz())), "{rate:?}");
        }
        assert_eq!(cache.len(), 3);
        assert_eq!(cache.samples(), 800 + 1600 + 4800);
    }

    #[test]
    fn a_hit_comes_from_memory_and_remove_forgets_it() {
        let dir = tempfile::tempdir().unwrap();
        let rel = store(dir.path(), "prm_A", &prompt(50)).unwrap();
        let row = row("prm_A", Some(rel.clone()));
        let cache = PromptCache::new(1 << 20);
        let first = cache.load(dir.path(), &row, SampleRate::HZ_8000).unwrap();
        // The file gone, the cached copy still answers (the same allocation).
        fs::remove_file(audio_path(dir.path(), &rel, SampleRate::HZ_8000)).unwrap();
        let again = cache.load(dir.path(), &row, SampleRate::HZ_8000).unwrap();
        assert!(Arc::ptr_eq(&first, &again));
        cache.forget(&dir.path().join(&rel));
        assert!(cache.is_empty());
        assert!(matches!(
            cache.load(dir.path(), &row, SampleRate::HZ_8000),
            Err(PromptFileError::Io { .. })
        ));
        // The module's remove takes the folder away; twice is no error.
        remove(dir.path(), &rel).unwrap();
        assert!(!dir.path().join(&rel).exists());
        remove(dir.path(), &rel).unwrap();
    }

    #[test]
    fn the_cache_stays_within_its_bound_least_recently_used_out() {
        let dir = tempfile::tempdir().unwrap();
        // Three prompts of 800 samples at 8 kHz; room for two.
        let rows: Vec<PromptRow> = ["prm_1", "prm_2", "prm_3"]
            .iter()
            .map(|id| row(id, Some(store(dir.path(), id, &prompt(100)).unwrap())))
            .collect();
        let cache = PromptCache::new(1600);
        let at8 = SampleRate::HZ_8000;
        let one = cache.load(dir.path(), &rows[0], at8).unwrap();
        cache.load(dir.path(), &rows[1], at8).unwrap();
        // Touch the first: the second is now the oldest.
        assert!(Arc::ptr_eq(
            &one,
            &cache.load(dir.path(), &rows[0], at8).unwrap()
        ));
        cache.load(dir.path(), &rows[2], at8).unwrap();
        assert_eq!(cache.len(), 2);
        assert_eq!(cache.samples(), 1600);
        assert!(Arc::ptr_eq(
            &one,
            &cache.load(dir.path(), &rows[0], at8).unwrap()
        ));
        // Larger than the whole cache: served, not kept.
        let big = cache
            .load(dir.path(), &rows[0], SampleRate::HZ_48000)
            .unwrap();
        assert_eq!(big.len(), 4800);
        assert_eq!(cache.samples(), 1600);
    }

    #[test]
    fn bad_rows_and_files_are_errors_not_panics() {
        let dir = tempfile::tempdir().unwrap();
        let cache = PromptCache::new(1 << 20);
        assert!(matches!(
            cache.load(dir.path(), &row("prm_X", None), SampleRate::HZ_8000),
            Err(PromptFileError::NoAudio(_))
        ));
        assert!(matches!(
            store(dir.path(), "../evil", &prompt(10)),
            Err(PromptFileError::BadId(_))
        ));
        // A file at the wrong rate (8 kHz audio where 16 kHz is expected).
        let rel = store(dir.path(), "prm_W", &prompt(20)).unwrap();
        fs::copy(
            audio_path(dir.path(), &rel, SampleRate::HZ_8000),
            audio_path(dir.path(), &rel, SampleRate::HZ_16000),
        )
        .unwrap();
        let e = cache
            .load(
                dir.path(),
                &row("prm_W", Some(rel.clone())),
                SampleRate::HZ_16000,
            )
            .unwrap_err();
        assert!(e.to_string().contains("expected mono at 16000 Hz"), "{e}");
        // A truncated file (a partial last sample).
        let p48 = audio_path(dir.path(), &rel, SampleRate::HZ_48000);
        let len = fs::metadata(&p48).unwrap().len();
        fs::OpenOptions::new()
            .write(true)
            .open(&p48)
            .unwrap()
            .set_len(len - 1)
            .unwrap();
        assert!(cache
            .load(dir.path(), &row("prm_W", Some(rel)), SampleRate::HZ_48000)
            .is_err());
    }
}
