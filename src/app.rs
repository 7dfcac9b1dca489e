//! Start everything, run until SIGTERM/SIGINT, shut down in order:
//! signal `shutdown` → stop the API gracefully → join SIP (the registrar flushes) → exit.

use std::io::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use std::future::IntoFuture as _;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio::sync::{broadcast, watch};

use crate::api::{self, AppState};
use crate::calls::control::CallControl;
use crate::config::Config;
use crate::events::EVENT_CHANNEL_CAPACITY;
use crate::store::Store;

/// How long in-flight HTTP requests get to finish at shutdown.
const API_DRAIN: Duration = Duration::from_secs(10);

/// `voxgate_call_setup_seconds` buckets: a call answered at once takes milliseconds, a
/// rung phone seconds; 0.5 s is SIP's T1, past which callers retransmit.
const SETUP_BUCKETS: [f64; 14] = [
    0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0,
];

/// How often the trunk directory is read again from the database, for changes made
/// through other nodes (this node's own API reloads it at once).
const TRUNK_RELOAD: Duration = Duration::from_secs(30);

/// Name of the bootstrap key row created from `api.key`.
const BOOTSTRAP_KEY_NAME: &str = "bootstrap (api.key)";

/// Connect and migrate.
pub async fn open_store(config: &Config) -> anyhow::Result<Store> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create data_dir {}", config.data_dir.display()))?;
    let store = Store::connect(&config.database.url, config.database.max_connections)
        .await
        .with_context(|| format!("cannot open database {}", redact(&config.database.url)))?;
    store.migrate().await.context("database migration")?;
    Ok(store)
}

/// `voxgate migrate`.
pub async fn migrate(config: &Config) -> anyhow::Result<()> {
    let store = open_store(config).await?;
    store.close().await;
    println!(
        "voxgate: migrations applied to {}",
        redact(&config.database.url)
    );
    Ok(())
}

/// Hide a password in a database URL for logs.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

/// Store the configured bootstrap key; with none configured and none stored, generate one
/// and print it once on stdout.
pub async fn bootstrap_api_keys(store: &Store, config: &Config) -> anyhow::Result<()> {
    if let Some(key) = &config.api.key {
        if store.ensure_api_key(BOOTSTRAP_KEY_NAME, key).await? {
            tracing::info!("stored the configured api.key (hashed)");
        }
        return Ok(());
    }
    if store.count_api_keys().await? == 0 {
        let (row, key) = store.create_api_key("admin (generated)").await?;
        let mut out = std::io::stdout().lock();
        writeln!(out, "voxgate: generated admin API key: {key}")?;
        writeln!(
            out,
            "voxgate: it is shown only this once; store it now (key id {})",
            row.id
        )?;
        out.flush()?;
        tracing::info!(id = %row.id, "generated the admin API key (printed on stdout)");
    }
    Ok(())
}

/// The key of status_callback signatures: `webhooks.secret`, else the one kept in the
/// database, generated (and printed once on stdout, like the admin key) at first start.
async fn status_callback_secret(store: &Store, config: &Config) -> anyhow::Result<String> {
    if let Some(s) = &config.webhooks.secret {
        return Ok(s.clone());
    }
    let (secret, generated) = store
        .status_callback_secret()
        .await
        .context("reading the status_callback secret")?;
    if generated {
        let mut out = std::io::stdout().lock();
        writeln!(
            out,
            "voxgate: generated webhooks secret (signs status_callback deliveries): {secret}"
        )?;
        writeln!(
            out,
            "voxgate: it is kept in the database; set webhooks.secret to choose your own"
        )?;
        out.flush()?;
        tracing::info!("generated the status_callback secret (printed on stdout)");
    }
    Ok(secret)
}

/// `voxgate serve`.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    crate::webhooks::install_crypto_provider();
    let config = Arc::new(config);
    let store = open_store(&config).await?;
    bootstrap_api_keys(&store, &config).await?;
    let secret = status_callback_secret(&store, &config).await?;
    let webhook_config = crate::webhooks::DeliveryConfig::new(&config.webhooks, secret.clone());
    // Calls are in the store from their first INVITE: any still open were left by a
    // previous run that ended without closing them (a crash), and no longer exist.
    let orphaned = store
        .close_orphaned_calls(crate::store::now())
        .await
        .context("closing calls left open by the previous run")?;
    if orphaned > 0 {
        tracing::warn!(
            calls = orphaned,
            "closed calls left open by the previous run as failed (gateway-restart)"
        );
    }

    // Histograms get Prometheus buckets (the default rendering is a summary, which cannot
    // be aggregated across nodes).
    let builder = metrics_exporter_prometheus::PrometheusBuilder::new()
        .set_buckets_for_metric(
            metrics_exporter_prometheus::Matcher::Full("voxgate_call_setup_seconds".to_owned()),
            &SETUP_BUCKETS,
        )
        .context("metrics buckets")?;
    let metrics = match builder.install_recorder() {
        Ok(h) => Some(h),
        Err(e) => {
            tracing::warn!(error = %e, "metrics recorder not installed");
            None
        }
    };
    let trunks = crate::trunks::TrunkDirectory::load(&store)
        .await
        .context("loading trunks and numbers")?;
    let trunk_registrations = crate::sip::registration::RegistrationStates::default();
    let (events, _) = broadcast::channel(EVENT_CHANNEL_CAPACITY);
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let (calls, call_commands) = CallControl::channel();
    // Started before anything can write events, so none waits for a poll.
    let webhook_worker = tokio::spawn(crate::webhooks::run(
        store.clone(),
        webhook_config,
        shutdown_rx.clone(),
    ));

    let sip = crate::sip::start(crate::sip::SipStart {
        config: config.clone(),
        store: store.clone(),
        events: events.clone(),
        shutdown: shutdown_rx.clone(),
        calls: call_commands,
        trunks: trunks.clone(),
        registration_states: trunk_registrations.clone(),
        program_secret: secret,
    })
    .await
    .context("starting SIP")?;

    let listener = TcpListener::bind(config.api.listen)
        .await
        .with_context(|| format!("cannot listen on api.listen {}", config.api.listen))?;
    tracing::info!(
        api = %config.api.listen,
        database = %redact(&config.database.url),
        public_addr = %config.sip.public_addr(),
        "voxgate {} started",
        env!("CARGO_PKG_VERSION")
    );

    let state = Arc::new(AppState {
        config: config.clone(),
        store: store.clone(),
        events,
        calls,
        trunks,
        trunk_registrations,
        sip: Mutex::new(Some(sip)),
        draining: AtomicBool::new(false),
        metrics: metrics.clone(),
    });

    if let Some(handle) = metrics {
        let mut rx = shutdown_rx.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(5)) => handle.run_upkeep(),
                    _ = rx.wait_for(|v| *v) => break,
                }
            }
        });
    }

    {
        // This node reloads after its own API changes at once; this catches the changes
        // other nodes sharing the database made.
        let trunks = state.trunks.clone();
        let store = store.clone();
        let mut rx = shutdown_rx.clone();
        tokio::spawn(async move {
            loop {
                let stop = tokio::select! {
                    () = tokio::time::sleep(TRUNK_RELOAD) => false,
                    _ = rx.wait_for(|v| *v) => true,
                };
                if stop {
                    break;
                }
                if let Err(e) = trunks.reload(&store).await {
                    tracing::warn!(error = %e, "reloading trunks and numbers failed");
                }
            }
        });
    }

    let app = api::router(state.clone());
    let mut api_shutdown = shutdown_rx.clone();
    let mut server = tokio::spawn(
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = api_shutdown.wait_for(|v| *v).await;
            })
            .into_future(),
    );

    let early_exit = tokio::select! {
        () = shutdown_signal() => None,
        r = &mut server => Some(r),
    };
    tracing::info!("shutting down");
    state.draining.store(true, Ordering::Relaxed);
    let _ = shutdown_tx.send(true);

    let api_result = match early_exit {
        Some(r) => Some(r),
        None => match tokio::time::timeout(API_DRAIN, &mut server).await {
            Ok(r) => Some(r),
            Err(_) => {
                tracing::warn!("API requests still running after {API_DRAIN:?}; dropping them");
                server.abort();
                None
            }
        },
    };

    let sip = state
        .sip
        .lock()
        .map(|mut h| h.take())
        .unwrap_or_else(|p| p.into_inner().take());
    if let Some(sip) = sip {
        sip.join().await;
    }
    // The worker drains its deliveries in flight (bounded by webhooks.timeout_seconds).
    let _ = webhook_worker.await;
    store.close().await;
    tracing::info!("stopped");

    match api_result {
        Some(Ok(Ok(()))) | None => Ok(()),
        Some(Ok(Err(e))) => Err(anyhow::Error::new(e).context("API server failed")),
        Some(Err(e)) => Err(anyhow::Error::new(e).context("API server task failed")),
    }
}

/// Resolves on SIGTERM or SIGINT (Ctrl-C).
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn redacts_passwords() {
        assert_eq!(
            redact("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact("sqlite://./x.db"), "sqlite://./x.db");
    }
}
