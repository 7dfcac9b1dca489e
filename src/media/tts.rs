//! Audio a call program fetches: speech for `say` from an OpenAI-compatible
//! `POST /v1/audio/speech` service (`[tts]` in the config), kept by text and voice, and
//! the audio file of a `play` with a `url` (`GET`, any format an uploaded prompt may
//! have), kept by URL. Each is decoded and resampled once like an uploaded prompt: the
//! same sentence or file for the next caller costs nothing.
//!
//! Runs on the tokio runtime, never on the SIP loop or a relay worker.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use voxgate_media::prompt::Prompt;

use crate::config::TtsConfig;

/// How long the service has to speak, or a server to send a file.
const TIMEOUT: Duration = Duration::from_secs(20);
/// The largest audio read (a WAV of about 4 minutes at 24 kHz).
const MAX_AUDIO: usize = 12 * 1024 * 1024;
/// Sentences (and files) kept; a cache starts over when full (operators' sentences and
/// hold-music files are few).
const CACHE_ENTRIES: usize = 256;

/// Why there is no audio to play.
#[derive(Debug, thiserror::Error)]
pub enum TtsError {
    #[error("no [tts] url is configured")]
    NotConfigured,
    #[error("speech service: {0}")]
    Speech(FetchError),
    #[error("audio URL {url}: {error}")]
    Url { url: String, error: FetchError },
}

/// Why a download gave no audio.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("not an http(s) URL: {0}")]
    BadUrl(String),
    #[error("{0}")]
    Http(String),
    #[error("answered {0}")]
    Status(u16),
    #[error("audio: {0}")]
    Audio(String),
}

/// The speech service and the sentences it spoke.
pub struct Tts {
    config: TtsConfig,
    client: reqwest::Client,
    cache: Mutex<HashMap<(String, String), Arc<Prompt>>>,
    /// `play` URLs' audio, by URL.
    files: Mutex<HashMap<String, Arc<Prompt>>>,
}

impl Tts {
    pub fn new(config: TtsConfig) -> anyhow::Result<Tts> {
        let client = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .user_agent(concat!("voxgate/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Tts {
            config,
            client,
            cache: Mutex::new(HashMap::new()),
            files: Mutex::new(HashMap::new()),
        })
    }

    /// `text` spoken in `voice` (else the configured one), at 8, 16 and 48 kHz.
    pub async fn speak(&self, text: &str, voice: Option<&str>) -> Result<Arc<Prompt>, TtsError> {
        let base = self.config.url.as_deref().ok_or(TtsError::NotConfigured)?;
        let voice = voice.unwrap_or(&self.config.voice).to_owned();
        let key = (voice.clone(), text.to_owned());
        if let Some(p) = self.cached(&key) {
            return Ok(p);
        }
        let url = format!("{}/v1/audio/speech", base.trim_end_matches('/'));
        let mut request = self.client.post(&url).json(&serde_json::json!({
            "model": self.config.model,
            "input": text,
            "voice": voice,
            "response_format": "wav",
        }));
        if let Some(key) = &self.config.api_key {
            request = request.bearer_auth(key);
        }
        let prompt = Arc::new(download(request).await.map_err(TtsError::Speech)?);
        keep(&self.cache, key, &prompt);
        Ok(prompt)
    }

    /// The audio file at `url` (http or https), fetched once and kept.
    pub async fn fetch(&self, url: &str) -> Result<Arc<Prompt>, TtsError> {
        if let Some(p) = self
            .files
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(url)
            .cloned()
        {
            return Ok(p);
        }
        let failed = |error| TtsError::Url {
            url: url.to_owned(),
            error,
        };
        let parsed = reqwest::Url::parse(url)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https"))
            .ok_or_else(|| failed(FetchError::BadUrl(url.to_owned())))?;
        let prompt = Arc::new(download(self.client.get(parsed)).await.map_err(failed)?);
        keep(&self.files, url.to_owned(), &prompt);
        Ok(prompt)
    }

    fn cached(&self, key: &(String, String)) -> Option<Arc<Prompt>> {
        self.cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key)
            .cloned()
    }
}

/// Sends `request` and decodes the audio it answers with (at most [`MAX_AUDIO`] bytes).
async fn download(request: reqwest::RequestBuilder) -> Result<Prompt, FetchError> {
    let mut response = request
        .send()
        .await
        .map_err(|e| FetchError::Http(e.to_string()))?;
    if !response.status().is_success() {
        return Err(FetchError::Status(response.status().as_u16()));
    }
    let mut audio = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| FetchError::Http(e.to_string()))?
    {
        audio.extend_from_slice(&chunk);
        if audio.len() > MAX_AUDIO {
            return Err(FetchError::Audio("longer than voxgate reads".into()));
        }
    }
    // Decoding and resampling take a while for a long file: off the runtime's worker
    // threads.
    tokio::task::spawn_blocking(move || voxgate_media::prompt::decode(&audio))
        .await
        .map_err(|e| FetchError::Audio(e.to_string()))?
        .map_err(|e| FetchError::Audio(e.to_string()))
}

/// Keeps `prompt` in `cache` (which starts over when full).
fn keep<K: std::hash::Hash + Eq>(
    cache: &Mutex<HashMap<K, Arc<Prompt>>>,
    key: K,
    prompt: &Arc<Prompt>,
) {
    let mut cache = cache.lock().unwrap_or_else(PoisonError::into_inner);
    if cache.len() >= CACHE_ENTRIES {
        cache.clear();
    }
    cache.insert(key, Arc::clone(prompt));
}
