//! The SIP service: listeners, the core task and registration persistence.
//!
//! `start` binds every configured listener before it returns, so `/readyz` only turns green
//! once SIP can really be reached.

mod agents;
mod core;
pub mod guard;
pub mod overload;
mod persist;
pub mod registration;
pub mod resolve;
pub mod simulated;
mod streams;
pub mod tls;

pub use persist::PersistOp;
pub mod transport;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{broadcast, mpsc, watch};
use tokio::task::JoinHandle;
use voxgate_sip::auth::{self, Algorithm};
use voxgate_sip::transaction::{TimerConfig, TransactionLayer};

use crate::calls::control::CallCommand;
use crate::calls::engine::{CallEngine, EngineConfig};
use crate::calls::env::Clock;
use crate::calls::record::{self, RecorderHealth};
use crate::config::Config;
use crate::config::KernelForwardingMode;
use crate::events::AppEvent;
use crate::media::{KernelForwarding, MediaConfig, MediaEngine, PollMode};
use crate::registrar::{Registrar, RegistrarConfig};
use crate::store::Store;

/// Requested SO_RCVBUF for the SIP UDP socket.
const UDP_RECV_BUFFER: usize = 4 << 20;

pub struct SipStart {
    pub config: Arc<Config>,
    pub store: Store,
    pub events: broadcast::Sender<AppEvent>,
    pub shutdown: watch::Receiver<bool>,
    /// Commands from the control API to the call engine.
    pub calls: mpsc::Receiver<CallCommand>,
    /// Trunks and numbers (the API reloads them).
    pub trunks: crate::trunks::TrunkDirectory,
    /// Where the core publishes its registrations to carriers, for the API.
    pub registration_states: registration::RegistrationStates,
    /// Signs call programs' requests to operators' apps (the status_callback secret).
    pub program_secret: String,
}

pub struct SipHandle {
    core: JoinHandle<()>,
    persist: JoinHandle<()>,
    recorder: JoinHandle<()>,
    tasks: Vec<JoinHandle<()>>,
    pub udp_addr: Option<std::net::SocketAddr>,
    pub tcp_addr: Option<std::net::SocketAddr>,
    pub tls_addr: Option<std::net::SocketAddr>,
    /// RFC 3263 resolution of trunk hosts (`sip.dns_servers`); the TLS destinations it
    /// returns teach the core's connector their host names (SNI, certificate check).
    pub resolver: resolve::Resolver,
}

impl SipHandle {
    pub fn is_ready(&self) -> bool {
        !self.core.is_finished()
    }

    /// Waits for the core to stop and the registration and call record queues to drain
    /// (bounded: a database that is down at shutdown must not hold the process forever;
    /// what is still queued then is logged by the workers' retry warnings).
    pub async fn join(self) {
        let _ = self.core.await;
        let drained = tokio::time::Instant::now() + Duration::from_secs(10);
        if tokio::time::timeout_at(drained, self.persist)
            .await
            .is_err()
        {
            tracing::error!("registration queue not drained at shutdown");
        }
        if tokio::time::timeout_at(drained, self.recorder)
            .await
            .is_err()
        {
            tracing::error!("call record queue not drained at shutdown");
        }
        for t in self.tasks {
            t.abort();
        }
    }
}

pub async fn start(args: SipStart) -> anyhow::Result<SipHandle> {
    let SipStart {
        config,
        store,
        events,
        shutdown,
        calls,
        trunks,
        registration_states,
        program_secret,
    } = args;
    let sip = &config.sip;

    let algorithms = sip
        .auth_algorithms
        .split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(|a| {
            Algorithm::from_token(a)
                .ok_or_else(|| anyhow::anyhow!("sip.auth_algorithms: unknown algorithm {a:?}"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    // A fresh secret per process: nonces from before a restart come back `stale` and the
    // softphone simply re-answers (RFC 7616 §3.3). Several nodes will share one from config.
    let secret: [u8; 32] = rand::random();
    let verifier = auth::Verifier::new(
        sip.realm.clone(),
        auth::Nonces::new(&secret).with_lifetime(sip.nonce_ttl_seconds),
    )
    .with_algorithms(algorithms)
    // RFC 7616 §3.3: the client echoes `opaque` unchanged; a per-process value lets us tell
    // an answer to one of our own challenges from one replayed from another server.
    .with_opaque(hex::encode(rand::random::<[u8; 8]>()));
    let (persist_tx, persist_rx) = mpsc::unbounded_channel();
    let (committed_tx, committed_rx) = mpsc::unbounded_channel();
    let mut registrar = Registrar::new(
        RegistrarConfig {
            realm: sip.realm.clone(),
            min_expires: sip.min_expires,
            default_expires: sip.default_expires,
            max_expires: sip.max_expires,
        },
        verifier,
        persist_tx.clone(),
    );
    registrar.load_agents(store.all_agent_auth().await.context("loading agents")?);
    registrar.load_registrations(
        store
            .all_registrations()
            .await
            .context("loading registrations")?,
        chrono::Utc::now(),
    );
    tracing::info!(
        registrations = registrar.binding_count(),
        "registrations restored"
    );

    let mut udp = None;
    let mut udp_addr = None;
    if let Some(addr) = sip.listen_udp {
        let socket = UdpSocket::bind(addr)
            .await
            .with_context(|| format!("sip.listen_udp: cannot bind {addr}"))?;
        udp_addr = Some(socket.local_addr()?);
        // A burst of REGISTERs while the core is busy must queue, not drop: ask for a
        // large receive buffer (the kernel caps it at net.core.rmem_max).
        let sock = socket2::SockRef::from(&socket);
        if let Err(e) = sock.set_recv_buffer_size(UDP_RECV_BUFFER) {
            tracing::warn!(error = %e, "cannot enlarge the SIP UDP receive buffer");
        }
        tracing::debug!(bytes = ?sock.recv_buffer_size().ok(), "sip udp receive buffer");
        // Kernel receive timestamps: how long each datagram waited for the core is the
        // overload signal (src/sip/overload.rs).
        if let Err(e) = nix::sys::socket::setsockopt(
            &socket,
            nix::sys::socket::sockopt::ReceiveTimestampns,
            &true,
        ) {
            tracing::warn!(error = %e, "no SO_TIMESTAMPNS on the SIP UDP socket: queue delay not measured");
        }
        udp = Some(Arc::new(socket));
    }
    let (inbound_tx, inbound_rx) = mpsc::channel(8192);
    let mut tasks = Vec::new();
    let ids = transport::ConnIds::default();
    let limits = transport::StreamLimits {
        max_connections: sip.tcp_max_connections,
        idle_timeout: Duration::from_secs(sip.tcp_idle_timeout_seconds),
        max_message_bytes: sip.max_message_bytes,
    };
    let mut tcp_addr = None;
    if let Some(addr) = sip.listen_tcp {
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("sip.listen_tcp: cannot bind {addr}"))?;
        tcp_addr = Some(listener.local_addr()?);
        tasks.push(tokio::spawn(transport::run_listener(
            listener,
            None,
            ids.clone(),
            inbound_tx.clone(),
            limits,
            shutdown.clone(),
        )));
    }
    let mut tls_addr = None;
    if let Some(addr) = sip.listen_tls {
        let (Some(cert), Some(key)) = (&sip.tls_cert, &sip.tls_key) else {
            anyhow::bail!("sip.listen_tls needs sip.tls_cert and sip.tls_key");
        };
        let server = tls::server_config(cert, key)?;
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("sip.listen_tls: cannot bind {addr}"))?;
        tls_addr = Some(listener.local_addr()?);
        tasks.push(tokio::spawn(transport::run_listener(
            listener,
            Some(tokio_rustls::TlsAcceptor::from(server)),
            ids.clone(),
            inbound_tx.clone(),
            limits,
            shutdown.clone(),
        )));
    }
    let names = resolve::ServerNames::default();
    let resolver =
        resolve::Resolver::new(&sip.dns_servers, names.clone()).context("sip.dns_servers")?;
    let connector = transport::Connector {
        core: inbound_tx.clone(),
        ids,
        tls: tokio_rustls::TlsConnector::from(tls::client_config(
            sip.tls_ca.as_deref(),
            sip.tls_verify,
        )?),
        names,
        limits,
        shutdown: shutdown.clone(),
    };
    tracing::info!(udp = ?udp_addr, tcp = ?tcp_addr, tls = ?tls_addr, "sip listening");

    // Media: the relay binds every address (SDP carries the public one).
    let media = MediaEngine::start(MediaConfig {
        bind_ip: std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
        advertised_ip: config.sip.public_addr(),
        ports: config.rtp.ports,
        workers: 1,
        poll: PollMode::default(),
        kernel: match config.rtp.kernel_forwarding {
            KernelForwardingMode::Off => KernelForwarding::Off,
            KernelForwardingMode::Auto => KernelForwarding::Auto,
            KernelForwardingMode::On => KernelForwarding::On,
        },
    })
    .context("starting the media relay")?;
    // The core wakes the relay workers once per turn of its loop (Core::flush).
    media.defer_wakes();
    let records = RecorderHealth::new(record::BACKLOG_BOUND);
    let (records_tx, records_rx) = record::RecordSender::channel(records.clone());
    let recorder = tokio::spawn(record::run_recorder(
        store.clone(),
        records_rx,
        records.clone(),
    ));
    let (agent_lookups, lookups_rx) = mpsc::unbounded_channel();
    let (updates_tx, agent_updates) = mpsc::unbounded_channel();
    tasks.push(tokio::spawn(agents::run(
        store.clone(),
        lookups_rx,
        updates_tx,
    )));
    let sip_port = udp_addr.or(tcp_addr).map_or(5060, |a| a.port());
    let media = Arc::new(media);
    let engine_cfg = EngineConfig {
        public_ip: config.sip.public_addr(),
        sip_port,
        tls_port: tls_addr.map(|a| a.port()),
        sdp: crate::calls::engine::sdp_config(),
        ring_timeout: Duration::from_secs(sip.ring_timeout_seconds),
    };
    // Recordings a crash cut short are repaired and closed before any new call.
    match crate::media::recover_recordings(&store, &config.data_dir).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(recordings = n, "closed recordings left by a crash"),
        Err(e) => tracing::error!(error = %e, "cannot close recordings left by a crash"),
    }
    // The media port reads webhook subscriptions without waiting: load them now.
    let _ = store.subscriptions().await;
    let (dtmf_tx, dtmf_rx) = mpsc::unbounded_channel();
    let (playbacks_tx, playbacks_rx) = mpsc::unbounded_channel();
    let (replies_tx, program_replies) = mpsc::unbounded_channel();
    let fetcher = crate::calls::fetch::Fetcher::new(program_secret, replies_tx)
        .context("building the call programs' HTTP client")?;
    let plant = crate::media::MediaPlant::start(
        media.clone(),
        store.clone(),
        &config.data_dir,
        records_tx.clone(),
        dtmf_tx,
        playbacks_tx,
        Arc::new(crate::media::tts::Tts::new(config.tts.clone())?),
    )
    .context("starting the media listeners")?;
    let engine = CallEngine::new(
        engine_cfg.clone(),
        Box::new(plant),
        Clock::new(std::time::Instant::now(), chrono::Utc::now()),
        rand::random(),
    );

    // The simulated carrier answers simulated trunks' calls on a loopback UDP port (the
    // engine reaches it like any carrier, so it needs the UDP listener).
    let simulated = match udp_addr {
        Some(_) => {
            let rules = crate::trunks::runtime::simulated_rules(trunks.clone());
            let sim = simulated::SimulatedCarrier::start(
                std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
                rules,
            )
            .await
            .context("starting the simulated carrier")?;
            tasks.push(sim.task);
            Some(sim.addr)
        }
        None => None,
    };
    let (trunk_tx, trunk_updates) = mpsc::unbounded_channel();
    tasks.push(tokio::spawn(crate::trunks::runtime::run(
        trunks,
        resolver.clone(),
        simulated,
        events.subscribe(),
        trunk_tx,
        shutdown.clone(),
    )));
    let core = core::Core {
        udp,
        layer: TransactionLayer::new(TimerConfig::default()),
        registrar,
        rate: guard::RateGuard::new(sip.source_rate_limit, sip.source_rate_burst),
        bans: guard::BanGuard::new(
            sip.auth_ban_after,
            Duration::from_secs(sip.auth_ban_window_seconds),
            Duration::from_secs(sip.auth_ban_seconds),
        ),
        agent_lookups,
        agent_updates,
        record_health: records,
        max_message_bytes: sip.max_message_bytes,
        server_header: format!("voxgate/{}", env!("CARGO_PKG_VERSION")),
        streams: streams::Streams::default(),
        connector,
        engine,
        media,
        records: records_tx,
        dtmf: dtmf_rx,
        playbacks: playbacks_rx,
        fetcher,
        program_replies,
        commands: calls,
        shutdown_grace: Duration::from_secs(sip.shutdown_grace_seconds),
        persist: persist_tx,
        committed: committed_rx,
        pending: std::collections::VecDeque::new(),
        next_barrier: 0,
        overload: overload::Overload::new(
            sip.max_cps,
            Duration::from_millis(sip.overload_queue_delay_ms),
            std::time::Instant::now(),
        ),
        trunks: Arc::new(crate::trunks::runtime::TrunkTable::default()),
        trunk_updates,
        registrations: registration::Registrations::new(engine_cfg, rand::random()),
        registration_states,
    };
    drop(inbound_tx);
    let core = tokio::spawn(core.run(inbound_rx, events.subscribe(), shutdown));
    let persist = tokio::spawn(persist::run(store, persist_rx, committed_tx));
    Ok(SipHandle {
        core,
        persist,
        recorder,
        tasks,
        udp_addr,
        tcp_addr,
        tls_addr,
        resolver,
    })
}
