//! Speech for call programs' `say`: an OpenAI-compatible `POST /v1/audio/speech` service
//! (`[tts]` in the config), its audio decoded and resampled once like an uploaded prompt
//! and kept by text and voice (the same sentence to the next caller costs nothing).
//!
//! Runs on the tokio runtime, never on the SIP loop or a relay worker.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use voxgate_media::prompt::Prompt;

use crate::config::TtsConfig;

/// How long the service has to speak.
const TIMEOUT: Duration = Duration::from_secs(20);
/// The largest audio read (a WAV of about 4 minutes at 24 kHz).
const MAX_AUDIO: usize = 12 * 1024 * 1024;
/// Sentences kept; the cache starts over when full (operators' sentences are few).
const CACHE_ENTRIES: usize = 256;

/// Why there is no speech.
#[derive(Debug, thiserror::Error)]
pub enum TtsError {
    #[error("no [tts] url is configured")]
    NotConfigured,
    #[error("speech service: {0}")]
    Http(String),
    #[error("speech service answered {0}")]
    Status(u16),
    #[error("speech service's audio: {0}")]
    Audio(String),
}

/// The speech service and the sentences it spoke.
pub struct Tts {
    config: TtsConfig,
    client: reqwest::Client,
    cache: Mutex<HashMap<(String, String), Arc<Prompt>>>,
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
        let mut response = request
            .send()
            .await
            .map_err(|e| TtsError::Http(e.to_string()))?;
        if !response.status().is_success() {
            return Err(TtsError::Status(response.status().as_u16()));
        }
        let mut audio = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| TtsError::Http(e.to_string()))?
        {
            audio.extend_from_slice(&chunk);
            if audio.len() > MAX_AUDIO {
                return Err(TtsError::Audio("longer than voxgate reads".into()));
            }
        }
        // Decoding and resampling take a while for a long sentence: off the runtime's
        // worker threads.
        let prompt = tokio::task::spawn_blocking(move || voxgate_media::prompt::decode(&audio))
            .await
            .map_err(|e| TtsError::Audio(e.to_string()))?
            .map_err(|e| TtsError::Audio(e.to_string()))?;
        let prompt = Arc::new(prompt);
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        if cache.len() >= CACHE_ENTRIES {
            cache.clear();
        }
        cache.insert(key, Arc::clone(&prompt));
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
