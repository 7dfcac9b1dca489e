//! Logging setup: `tracing` to stderr, filtered by `log.level` (EnvFilter syntax), as text
//! or JSON lines. Standard output is kept for the few lines meant for the operator (the
//! generated admin key).

use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

/// Install the global subscriber. Calling it twice is harmless (the second is ignored).
pub fn init(cfg: &LogConfig) -> anyhow::Result<()> {
    let filter = EnvFilter::try_new(&cfg.level)?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let result = match cfg.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
    };
    // Already initialised (tests) is fine.
    let _ = result;
    Ok(())
}
