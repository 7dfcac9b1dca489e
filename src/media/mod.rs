//! The media relay driver: sockets and worker threads around the sans-IO policy in
//! `voxgate-media`.
//!
//! Shape (measured in `benches/README.md`): a handful of worker threads, each owning an
//! epoll instance and every socket of its sessions; both legs of a session live on the
//! same worker, so the forward path touches only that worker's memory — no lock, no
//! channel, no allocation per packet. The control API below runs on the caller's
//! thread (the call engine): it allocates ports and binds sockets there, then hands
//! them to a worker through a channel and an eventfd wake-up.
//!
//! ```no_run
//! # use voxgate::media::*;
//! # fn demo() -> Result<(), MediaError> {
//! let engine = MediaEngine::start(MediaConfig::loopback("30000-30999".parse().unwrap()))?;
//! let s = engine.create_session()?;            // advertise s.a in the SDP to leg A, s.b to B
//! engine.update_leg(s.id, Side::A, LegRemote { rtp: Some("127.0.0.1:4000".parse().unwrap()), ..Default::default() })?;
//! let stats = engine.destroy_session(s.id)?;   // ports are free again
//! # Ok(()) }
//! ```
//!
//! Playing into a leg: [`MediaEngine::play`] (a prompt), [`MediaEngine::send_dtmf`]
//! (digits as RFC 4733 events or in-band tones) and [`MediaEngine::play_tone`]
//! (ringback) share one slot per leg; a new one ends the one before. While something
//! plays into a leg, it replaces (does not mix with) the audio relayed to that leg; the
//! leg still receives one continuous RTP stream across each switch. How each playback
//! ended comes back as a [`PlaybackEvent`] on the channel given with it.

pub mod listen;
mod offload;
mod plant;
pub mod ports;
pub mod prompts;
pub mod recording;
pub mod tts;
mod worker;

pub use listen::ListenEvent;
pub use offload::KernelForwarding;
pub use plant::{recover_recordings, MediaPlant};

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Sender, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sys::eventfd::EventFd;
use thiserror::Error;
pub use voxgate_media::dtmf::Digit;
pub use voxgate_media::player::{DtmfTiming, Loops, PlayerError};
pub use voxgate_media::{ClockRate, DropReason, LatchMode, LegRemote, MediaDirection, PtMap};
pub use voxgate_media::{Codec, SampleRate};

use voxgate_media::player::{EventPlayer, Player, RtpIdentity, Source};

use crate::config::PortRange;
use ports::{PortAllocator, PortPair};
use worker::{Command, LegIo, Playing, WorkerShared};

/// A relay session: two legs (A and B) bridged on one worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(pub u64);

impl std::fmt::Display for SessionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "media-{}", self.0)
    }
}

/// One side of a session. The call engine decides which SIP leg is which.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    A,
    B,
}

impl Side {
    fn index(self) -> usize {
        match self {
            Side::A => 0,
            Side::B => 1,
        }
    }
}

/// How a worker waits for and reads its sockets (see benches/README.md for figures).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PollMode {
    /// Edge-triggered epoll; each ready socket is read until `EAGAIN`. The textbook
    /// shape (mio/tokio): one extra `recvfrom` per socket per wake-up.
    EdgeDrain,
    /// Level-triggered epoll; one `recvfrom` per ready socket per wake-up (a second
    /// packet on the socket is reported again by the next `epoll_wait`), so no `EAGAIN`
    /// probes. With `pace`, the worker sleeps that long after each busy wake-up so the
    /// next `epoll_wait` returns many sockets at once (fewer wake-ups and `epoll_wait`
    /// calls per packet, at most `pace` of added latency). With `busy_poll`, it spins
    /// on a non-blocking `epoll_wait` that long before blocking.
    LevelOnce {
        pace: Option<Duration>,
        busy_poll: Option<Duration>,
    },
}

/// Level-triggered, one read per ready socket, no pacing or spinning: within noise of
/// `EdgeDrain` on CPU (benches/README.md), and a flooded socket cannot hold a worker
/// in a drain loop while its other calls wait (one packet per socket per wake-up).
impl Default for PollMode {
    fn default() -> Self {
        PollMode::LevelOnce {
            pace: None,
            busy_poll: None,
        }
    }
}

/// Engine configuration.
#[derive(Debug, Clone)]
pub struct MediaConfig {
    /// Address the RTP sockets bind to.
    pub bind_ip: IpAddr,
    /// Address written into SDP (differs from `bind_ip` behind 1:1 NAT or with 0.0.0.0).
    pub advertised_ip: IpAddr,
    /// `VOXGATE_RTP_PORTS`.
    pub ports: PortRange,
    /// Worker threads (at least 1).
    pub workers: usize,
    pub poll: PollMode,
    /// Forward steady flows in the kernel (`rtp.kernel_forwarding`).
    pub kernel: KernelForwarding,
}

impl MediaConfig {
    /// Loopback, one worker, default poll mode: for tests.
    #[must_use]
    pub fn loopback(ports: PortRange) -> MediaConfig {
        MediaConfig {
            bind_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            advertised_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            ports,
            workers: 1,
            poll: PollMode::default(),
            kernel: KernelForwarding::Off,
        }
    }
}

/// Errors of the control API. The forward path has none: it counts drops instead.
#[derive(Debug, Error)]
pub enum MediaError {
    #[error("no free RTP port pair in {0}")]
    PortsExhausted(PortRange),
    #[error("unknown media session {0}")]
    UnknownSession(SessionId),
    #[error("media worker {0} has stopped")]
    WorkerGone(usize),
    #[error("media engine setup failed: {0}")]
    Setup(#[source] std::io::Error),
    #[error("bad media config: {0}")]
    Config(&'static str),
    #[error("rtp.kernel_forwarding = \"on\" but the kernel refused: {0}")]
    Kernel(String),
    #[error("cannot play: {0}")]
    Play(#[from] PlayerError),
}

/// The advertised address of one leg's ports (what goes into that leg's SDP).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Endpoint {
    pub rtp: SocketAddr,
    pub rtcp: SocketAddr,
}

/// A created session: give `a` to leg A's SDP and `b` to leg B's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Session {
    pub id: SessionId,
    pub a: Endpoint,
    pub b: Endpoint,
}

/// Counters of one leg, from its remote's point of view.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LegStats {
    /// Datagrams received from this leg's side (RTP and RTCP).
    pub received: u64,
    /// Of those, forwarded to the other leg.
    pub forwarded: u64,
    /// Of those, dropped (any reason).
    pub dropped: u64,
    /// Of the drops, from an unexpected source.
    pub unexpected_source: u64,
    /// Where RTP was latched, if it was.
    pub latched: Option<SocketAddr>,
    /// Source switches re-anchored on the stream going *out* of this leg.
    pub source_switches: u32,
    /// Of the RTP received, not forwarded because the other leg heard a playback
    /// instead (still given to this leg's tap).
    pub replaced: u64,
    /// RTP voxgate played to this leg's remote itself (prompts, DTMF, tones).
    pub played: u64,
}

/// Final counters of a destroyed session.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SessionStats {
    pub a: LegStats,
    pub b: LegStats,
}

/// Engine-wide figures (packet counters lag by at most ~100 ms: workers publish them
/// in batches, not per packet).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EngineStats {
    pub allocated_port_pairs: usize,
    pub sessions: usize,
    /// RTP forwarded, in userspace and in the kernel.
    pub rtp_forwarded: u64,
    /// Of those, forwarded in the kernel.
    pub kernel_forwarded: u64,
    /// Directions currently forwarded in the kernel.
    pub kernel_flows: usize,
    pub rtcp_forwarded: u64,
    /// Indexed like [`DropReason::ALL`].
    pub dropped: [u64; DropReason::ALL.len()],
    pub send_errors: u64,
    pub tap_dropped: u64,
    /// RTP not forwarded because the receiving leg heard a playback instead.
    pub rtp_replaced: u64,
    /// RTP packets of playbacks sent.
    pub rtp_played: u64,
}

impl EngineStats {
    #[must_use]
    pub fn dropped(&self, reason: DropReason) -> u64 {
        DropReason::ALL
            .iter()
            .position(|r| *r == reason)
            .map_or(0, |i| self.dropped[i])
    }
}

/// A copy of a packet a leg's remote sent, for a listener (recorder, DTMF detector,
/// IVR). RTP is as forwarded (SSRC/seq/ts already continuous).
#[derive(Debug, Clone)]
pub struct TapPacket {
    pub session: SessionId,
    /// The leg whose remote sent it.
    pub side: Side,
    pub rtcp: bool,
    pub at: Instant,
    pub data: Vec<u8>,
}

/// The listening end of a tap: a bounded channel. When it is full the relay drops the
/// copy (counted in `tap_dropped`) and never waits.
pub type TapSender = SyncSender<TapPacket>;

/// A playback started by [`MediaEngine::play`] or [`MediaEngine::send_dtmf`], unique
/// within the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PlaybackId(pub u64);

impl std::fmt::Display for PlaybackId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "playback-{}", self.0)
    }
}

/// How a playback ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlaybackOutcome {
    /// Played to its end (every loop, every digit).
    Finished,
    /// By [`MediaEngine::stop_play`].
    Stopped,
    /// Another playback or tone on the same leg took its place.
    Superseded,
    /// The session was destroyed (or the engine stopped) first.
    SessionClosed,
    /// The encoder refused a frame; the leg hears the relayed audio again.
    Failed,
}

/// A playback ended. The relay worker sends it as the playback's last act, so the leg
/// is already hearing the relayed audio again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlaybackEvent {
    pub session: SessionId,
    pub side: Side,
    pub id: PlaybackId,
    pub outcome: PlaybackOutcome,
    /// The [`PlaySpec::tag`] it was started with.
    pub tag: u64,
}

/// Where a playback's [`PlaybackEvent`] goes: an unbounded channel, so the relay never
/// waits on it. One sender (cloned) may serve every playback of the engine.
pub type PlaybackNotify = Sender<PlaybackEvent>;

/// A prompt to play into a leg.
#[derive(Clone)]
pub struct PlaySpec {
    /// Mono PCM at `rate`, shared (a prompt decoded once plays into many calls).
    pub pcm: Arc<[i16]>,
    /// Must be `codec`'s sample rate: 8 kHz for PCMU/PCMA, 16 kHz for G.722, 48 kHz
    /// for Opus (the caller resamples; prompts are stored at 8 and 16 kHz).
    pub rate: SampleRate,
    /// The codec the leg negotiated, and its payload type.
    pub codec: Codec,
    pub payload_type: u8,
    pub loops: Loops,
    pub notify: Option<PlaybackNotify>,
    /// The caller's own token for this playback, given back in its [`PlaybackEvent`]
    /// (the call engine's id for it: the relay's id is not known to it in time).
    pub tag: u64,
}

/// How digits reach a leg.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DtmfMethod {
    /// RFC 4733 telephone-events, on the leg's negotiated `telephone-event` payload
    /// type and clock (8000, or 48000 beside Opus). Only a press on the wire replaces
    /// the relayed audio; between digits the leg hears the call.
    Rfc4733 { payload_type: u8, clock: ClockRate },
    /// Tones (ITU-T Q.23) encoded in the leg's audio codec, for a leg that negotiated
    /// no telephone-event; they replace the relayed audio, pauses included.
    InBand { codec: Codec, payload_type: u8 },
}

struct WorkerHandle {
    tx: Sender<Command>,
    wake: Arc<EventFd>,
    /// Commands were queued since the last wake-up (deferred mode).
    unwoken: AtomicBool,
    shared: Arc<WorkerShared>,
    thread: Option<JoinHandle<()>>,
}

struct Control {
    ports: PortAllocator,
    /// Session -> (worker, leg A pair, leg B pair).
    sessions: HashMap<SessionId, (usize, [PortPair; 2])>,
}

/// The relay. Dropping it stops the workers and closes every socket.
pub struct MediaEngine {
    cfg: MediaConfig,
    workers: Vec<WorkerHandle>,
    control: Mutex<Control>,
    next_id: AtomicU64,
    next_playback: AtomicU64,
    next_worker: AtomicUsize,
    offload: Option<Arc<offload::Offload>>,
    /// Wake workers only in [`MediaEngine::flush_wakes`] (see [`MediaEngine::defer_wakes`]).
    deferred: AtomicBool,
}

impl MediaEngine {
    /// Starts `cfg.workers` worker threads.
    pub fn start(cfg: MediaConfig) -> Result<MediaEngine, MediaError> {
        if cfg.workers == 0 {
            return Err(MediaError::Config("workers must be at least 1"));
        }
        let offload = offload::Offload::start(&cfg)?.map(Arc::new);
        let mut workers = Vec::with_capacity(cfg.workers);
        for i in 0..cfg.workers {
            workers.push(worker::spawn(i, cfg.poll, offload.clone()).map_err(MediaError::Setup)?);
        }
        let workers = workers
            .into_iter()
            .map(|(tx, wake, shared, thread)| WorkerHandle {
                tx,
                wake,
                unwoken: AtomicBool::new(false),
                shared,
                thread: Some(thread),
            })
            .collect();
        Ok(MediaEngine {
            control: Mutex::new(Control {
                ports: PortAllocator::new(cfg.ports),
                sessions: HashMap::new(),
            }),
            cfg,
            workers,
            next_id: AtomicU64::new(1),
            next_playback: AtomicU64::new(1),
            next_worker: AtomicUsize::new(0),
            offload,
            deferred: AtomicBool::new(false),
        })
    }

    /// From now on, commands wake their worker only at the next
    /// [`MediaEngine::flush_wakes`]. The SIP core calls that once per turn of its loop,
    /// after a batch of messages: one wake-up (an eventfd write, an `epoll_wait` return
    /// and a context switch on each side) then carries every session command of the
    /// batch, instead of one per command (about 2.7 per call, measured under call load).
    pub fn defer_wakes(&self) {
        self.deferred.store(true, Ordering::Relaxed);
    }

    /// Wakes every worker that has commands queued since its last wake-up.
    pub fn flush_wakes(&self) {
        for h in &self.workers {
            if h.unwoken.swap(false, Ordering::AcqRel) {
                wake(h);
            }
        }
    }

    /// Wakes `h` now, or at the next [`MediaEngine::flush_wakes`] when deferred.
    fn nudge(&self, h: &WorkerHandle) {
        if self.deferred.load(Ordering::Relaxed) {
            h.unwoken.store(true, Ordering::Release);
        } else {
            wake(h);
        }
    }

    /// Allocates and binds two port pairs (legs A and B) on one worker. Until
    /// [`MediaEngine::update_leg`] gives a leg its SDP address, packets to it are
    /// dropped (`no_destination`), but a leg still latches to whoever sends first.
    pub fn create_session(&self) -> Result<Session, MediaError> {
        let id = SessionId(self.next_id.fetch_add(1, Ordering::Relaxed));
        let w = self.next_worker.fetch_add(1, Ordering::Relaxed) % self.workers.len();
        let mut ctl = self.lock();
        let (pa, io_a) = self.bind_pair(&mut ctl.ports)?;
        let (pb, io_b) = match self.bind_pair(&mut ctl.ports) {
            Ok(x) => x,
            Err(e) => {
                drop(io_a);
                ctl.ports.release(pa);
                return Err(e);
            }
        };
        let handle = &self.workers[w];
        if handle
            .tx
            .send(Command::Add {
                id,
                io: [io_a, io_b],
            })
            .is_err()
        {
            ctl.ports.release(pa);
            ctl.ports.release(pb);
            return Err(MediaError::WorkerGone(w));
        }
        ctl.sessions.insert(id, (w, [pa, pb]));
        drop(ctl);
        self.nudge(handle);
        let ep = |p: PortPair| Endpoint {
            rtp: SocketAddr::new(self.cfg.advertised_ip, p.rtp),
            rtcp: SocketAddr::new(self.cfg.advertised_ip, p.rtcp()),
        };
        Ok(Session {
            id,
            a: ep(pa),
            b: ep(pb),
        })
    }

    /// New signalling for one leg (answer, re-INVITE, hold/resume). A changed RTP
    /// address re-learns that leg's latch and re-anchors the stream the other leg
    /// receives, so SSRC, sequence and timestamp stay continuous for it.
    pub fn update_leg(
        &self,
        session: SessionId,
        side: Side,
        remote: LegRemote,
    ) -> Result<(), MediaError> {
        self.send(
            session,
            Command::Update {
                id: session,
                side: side.index(),
                remote: Box::new(remote),
            },
        )
    }

    /// Starts (`Some`) or stops (`None`) copying the packets leg `side`'s remote sends.
    pub fn set_tap(
        &self,
        session: SessionId,
        side: Side,
        tap: Option<TapSender>,
    ) -> Result<(), MediaError> {
        self.send(
            session,
            Command::Tap {
                id: session,
                side,
                tap,
            },
        )
    }

    /// Starts (`Some`) or stops (`None`) a tone voxgate sends leg `side`'s remote itself
    /// (ringback while the other side rings), from that leg's own port, in the leg's
    /// playback slot: it replaces the relayed audio while it plays. `None` stops only a
    /// tone, never a prompt or DTMF started since.
    pub fn play_tone(
        &self,
        session: SessionId,
        side: Side,
        tone: Option<voxgate_media::tone::TonePlayer>,
    ) -> Result<(), MediaError> {
        self.send(
            session,
            Command::Tone {
                id: session,
                side,
                tone: tone.map(Box::new),
            },
        )
    }

    /// Plays a prompt into leg `side` (ending whatever played there): its packets go
    /// from the leg's own port, paced at 20 ms, in place of the audio relayed from the
    /// other leg until it ends. Telephone-events from the other leg are replaced too
    /// (its tap still sees them; the call engine relays digits in the leg's own method
    /// if it wants them heard). RTCP is still relayed. Returns at once; the end is
    /// reported to `spec.notify`.
    pub fn play(
        &self,
        session: SessionId,
        side: Side,
        spec: PlaySpec,
    ) -> Result<PlaybackId, MediaError> {
        // The encoder (Opus' is a few kB) is made here, on the caller's thread, not on
        // the relay's.
        let player = Player::prompt(
            spec.pcm,
            spec.rate,
            spec.codec,
            spec.payload_type,
            spec.loops,
            RtpIdentity::from_random(rand::random()),
        )?;
        self.start_playback(session, side, Source::Audio(player), spec.notify, spec.tag)
    }

    /// Sends `digits` to leg `side`'s remote by `method`, each sounding `timing.tone`
    /// then a pause of `timing.gap`; shares the leg's playback slot with
    /// [`MediaEngine::play`].
    pub fn send_dtmf(
        &self,
        session: SessionId,
        side: Side,
        digits: &[Digit],
        method: DtmfMethod,
        timing: DtmfTiming,
        notify: Option<PlaybackNotify>,
    ) -> Result<PlaybackId, MediaError> {
        let id = RtpIdentity::from_random(rand::random());
        let source = match method {
            DtmfMethod::Rfc4733 {
                payload_type,
                clock,
            } => Source::Events(EventPlayer::new(digits, timing, payload_type, clock, id)?),
            DtmfMethod::InBand {
                codec,
                payload_type,
            } => Source::Audio(Player::inband_dtmf(
                digits,
                timing,
                codec,
                payload_type,
                id,
            )?),
        };
        self.start_playback(session, side, source, notify, 0)
    }

    /// Stops what plays into leg `side` (a prompt, DTMF or a tone); its end is
    /// reported as [`PlaybackOutcome::Stopped`]. An RFC 4733 digit already on the wire
    /// is finished with its end packets first (a receiver would hold it otherwise).
    pub fn stop_play(&self, session: SessionId, side: Side) -> Result<(), MediaError> {
        self.send(session, Command::StopPlay { id: session, side })
    }

    fn start_playback(
        &self,
        session: SessionId,
        side: Side,
        source: Source,
        notify: Option<PlaybackNotify>,
        tag: u64,
    ) -> Result<PlaybackId, MediaError> {
        let id = PlaybackId(self.next_playback.fetch_add(1, Ordering::Relaxed));
        let mut play = Playing::new(source, Some(id), notify);
        play.tag = tag;
        let play = Box::new(play);
        self.send(
            session,
            Command::Play {
                id: session,
                side,
                play,
            },
        )?;
        Ok(id)
    }

    /// Stops relaying, closes the sockets, releases the ports and returns the final
    /// counters. Blocks until the worker has closed the sockets (microseconds, at most
    /// 5 s): for tests and tools; the call engine uses [`MediaEngine::release_session`].
    pub fn destroy_session(&self, session: SessionId) -> Result<SessionStats, MediaError> {
        let (w, reply) = self.remove(session)?;
        self.flush_wakes();
        // The worker closes the sockets before it replies; if it has died, its sockets
        // died with it.
        reply
            .and_then(|rx| rx.recv_timeout(Duration::from_secs(5)).ok())
            .ok_or(MediaError::WorkerGone(w))
    }

    /// Stops relaying and releases the ports without waiting for the worker to close the
    /// sockets. Safe to reuse at once: the allocator hands released pairs out last, and a
    /// pair whose old socket is still open fails to bind and is skipped.
    pub fn release_session(&self, session: SessionId) -> Result<(), MediaError> {
        self.remove(session).map(|_| ())
    }

    /// Forgets the session, asks its worker to close it, frees its ports; returns the
    /// worker and, if the request reached it, where its final counters will arrive.
    #[allow(clippy::type_complexity)]
    fn remove(
        &self,
        session: SessionId,
    ) -> Result<(usize, Option<mpsc::Receiver<SessionStats>>), MediaError> {
        let (w, pairs) = self
            .lock()
            .sessions
            .remove(&session)
            .ok_or(MediaError::UnknownSession(session))?;
        let (reply_tx, reply_rx) = mpsc::sync_channel(1);
        let handle = &self.workers[w];
        let sent = handle
            .tx
            .send(Command::Remove {
                id: session,
                reply: reply_tx,
            })
            .is_ok();
        if sent {
            self.nudge(handle);
        }
        let mut ctl = self.lock();
        for p in pairs {
            ctl.ports.release(p);
        }
        Ok((w, sent.then_some(reply_rx)))
    }

    /// Ports, sessions and packet counters summed over the workers.
    pub fn stats(&self) -> EngineStats {
        let (allocated_port_pairs, sessions) = {
            let ctl = self.lock();
            (ctl.ports.allocated(), ctl.sessions.len())
        };
        let mut s = EngineStats {
            allocated_port_pairs,
            sessions,
            ..EngineStats::default()
        };
        for w in &self.workers {
            w.shared.add_to(&mut s);
        }
        if let Some(off) = &self.offload {
            s.kernel_forwarded = off.forwarded();
            s.kernel_flows = off.flows();
            s.rtp_forwarded += s.kernel_forwarded;
        }
        s
    }

    /// Whether steady flows are forwarded in the kernel.
    #[must_use]
    pub fn kernel_forwarding(&self) -> bool {
        self.offload.is_some()
    }

    fn send(&self, session: SessionId, cmd: Command) -> Result<(), MediaError> {
        let w = self
            .lock()
            .sessions
            .get(&session)
            .map(|(w, _)| *w)
            .ok_or(MediaError::UnknownSession(session))?;
        let handle = &self.workers[w];
        handle.tx.send(cmd).map_err(|_| MediaError::WorkerGone(w))?;
        self.nudge(handle);
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Control> {
        // A panic while holding this lock leaves consistent data (every mutation is a
        // single call), so a poisoned lock is still usable.
        self.control
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn bind_pair(&self, ports: &mut PortAllocator) -> Result<(PortPair, LegIo), MediaError> {
        // A pair may be taken by another process: try each free pair once at most.
        for _ in 0..ports.capacity() {
            let Some(p) = ports.alloc() else { break };
            match bind_io(self.cfg.bind_ip, p) {
                Ok(io) => return Ok((p, io)),
                Err(_) => {
                    ports.release(p);
                }
            }
        }
        Err(MediaError::PortsExhausted(self.cfg.ports))
    }
}

fn bind_io(ip: IpAddr, p: PortPair) -> std::io::Result<LegIo> {
    let rtp = UdpSocket::bind((ip, p.rtp))?;
    let rtcp = UdpSocket::bind((ip, p.rtcp()))?;
    rtp.set_nonblocking(true)?;
    rtcp.set_nonblocking(true)?;
    Ok(LegIo {
        rtp,
        rtcp,
        rtp_port: p.rtp,
    })
}

fn wake(h: &WorkerHandle) {
    // Failure means the counter is saturated, i.e. a wake-up is already pending.
    let _ = h.wake.write(1);
}

impl Drop for MediaEngine {
    fn drop(&mut self) {
        for w in &self.workers {
            let _ = w.tx.send(Command::Stop);
            wake(w);
        }
        for w in &mut self.workers {
            if let Some(t) = w.thread.take() {
                let _ = t.join();
            }
        }
    }
}
