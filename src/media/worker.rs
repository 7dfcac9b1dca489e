//! One relay worker: a thread, an epoll instance, and every socket of its sessions.
//!
//! The forward path (`on_readable` → `voxgate_media::route` → `send_to`) reads into
//! one buffer the worker owns, rewrites in place, and updates plain counters the
//! worker owns; nothing is shared with other workers or the control thread except a
//! batch of atomics published every [`FLUSH_EVERY`].
//!
//! Each leg has one source slot: audio voxgate plays into the leg itself (ringback, a
//! prompt, DTMF; `voxgate_media::player`). The worker wakes when its next packet is due
//! and sends it from the leg's own port, spliced into the stream the leg receives;
//! meanwhile the audio relayed to that leg is dropped (replaced, not mixed) and its
//! direction stays out of the kernel.

use std::collections::HashMap;
use std::io::ErrorKind;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender, TryRecvError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::eventfd::{EfdFlags, EventFd};
use voxgate_media::player::{play_into, Ending, Source, SourceKind, ToneSource, MAX_PACKET_LEN};
use voxgate_media::relay::{route, LegPolicy, LegRemote, Port, Route};
use voxgate_media::tone::TonePlayer;
use voxgate_media::DropReason;

use super::offload::{Offload, SessionFlows, SlotRefs};
use super::{
    EngineStats, LegStats, PlaybackEvent, PlaybackId, PlaybackNotify, PlaybackOutcome, PollMode,
    SessionId, SessionStats, Side, TapPacket, TapSender,
};

/// How often counters are published to the engine and the `metrics` registry.
const FLUSH_EVERY: Duration = Duration::from_millis(100);
/// Token of the wake-up eventfd (session tokens are `slot << 2 | side << 1 | rtcp`).
const WAKE: u64 = u64::MAX;
/// Largest datagram we relay whole; RTP over UDP stays far below (MTU-sized).
const BUF_LEN: usize = 4096;
const MAX_EVENTS: usize = 1024;
const _: () = assert!(BUF_LEN >= voxgate_media::player::MAX_PACKET_LEN);

/// Control messages from the engine.
pub(super) enum Command {
    Add {
        id: SessionId,
        io: [LegIo; 2],
    },
    Update {
        id: SessionId,
        side: usize,
        remote: Box<LegRemote>,
    },
    Tap {
        id: SessionId,
        side: Side,
        tap: Option<TapSender>,
    },
    /// Starts (`Some`) or stops (`None`) a tone towards leg `side`'s remote. `None`
    /// stops only a tone, not a prompt or DTMF that took its place.
    Tone {
        id: SessionId,
        side: Side,
        tone: Option<Box<TonePlayer>>,
    },
    /// Plays a source into leg `side`, in place of whatever played there.
    Play {
        id: SessionId,
        side: Side,
        play: Box<Playing>,
    },
    /// Stops whatever plays into leg `side`.
    StopPlay {
        id: SessionId,
        side: Side,
    },
    Remove {
        id: SessionId,
        reply: SyncSender<SessionStats>,
    },
    Stop,
}

/// A source playing into a leg, and whom to tell when it ends.
pub(super) struct Playing {
    pub source: Source,
    /// `None` for tones, which nobody waits for.
    pub id: Option<PlaybackId>,
    pub notify: Option<PlaybackNotify>,
    /// Stopped by a command; ends when the source says it has (a telephone-event press
    /// on the wire finishes first).
    pub stopping: bool,
    /// The starter's token, given back in the [`PlaybackEvent`].
    pub tag: u64,
}

impl Playing {
    pub(super) fn new(
        source: Source,
        id: Option<PlaybackId>,
        notify: Option<PlaybackNotify>,
    ) -> Playing {
        Playing {
            source,
            id,
            notify,
            stopping: false,
            tag: 0,
        }
    }

    fn stop(&mut self) {
        self.source.stop();
        self.stopping = true;
    }

    /// Tells the caller how it ended. `Sender::send` never blocks (the channel is
    /// unbounded); a caller that went away is not an error.
    fn report(&self, session: SessionId, side: usize, outcome: PlaybackOutcome) {
        if let (Some(id), Some(tx)) = (self.id, &self.notify) {
            let _ = tx.send(PlaybackEvent {
                session,
                side: if side == 0 { Side::A } else { Side::B },
                id,
                outcome,
                tag: self.tag,
            });
        }
    }
}

/// A leg's two sockets.
pub(super) struct LegIo {
    pub rtp: UdpSocket,
    pub rtcp: UdpSocket,
    pub rtp_port: u16,
}

/// Counters published by one worker. Its own allocation, aligned so two workers'
/// counters never share a cache line.
#[repr(align(128))]
#[derive(Default)]
pub(super) struct WorkerShared {
    rtp_forwarded: AtomicU64,
    rtcp_forwarded: AtomicU64,
    dropped: [AtomicU64; DropReason::ALL.len()],
    send_errors: AtomicU64,
    tap_dropped: AtomicU64,
    rtp_replaced: AtomicU64,
    rtp_played: AtomicU64,
}

impl WorkerShared {
    pub(super) fn add_to(&self, s: &mut EngineStats) {
        s.rtp_forwarded += self.rtp_forwarded.load(Ordering::Relaxed);
        s.rtcp_forwarded += self.rtcp_forwarded.load(Ordering::Relaxed);
        for (d, a) in s.dropped.iter_mut().zip(&self.dropped) {
            *d += a.load(Ordering::Relaxed);
        }
        s.send_errors += self.send_errors.load(Ordering::Relaxed);
        s.tap_dropped += self.tap_dropped.load(Ordering::Relaxed);
        s.rtp_replaced += self.rtp_replaced.load(Ordering::Relaxed);
        s.rtp_played += self.rtp_played.load(Ordering::Relaxed);
    }
}

/// Worker-local counters since the last flush.
#[derive(Default, Clone, Copy)]
struct Local {
    rtp_forwarded: u64,
    rtcp_forwarded: u64,
    dropped: [u64; DropReason::ALL.len()],
    send_errors: u64,
    tap_dropped: u64,
    rtp_replaced: u64,
    rtp_played: u64,
}

struct Slot {
    id: SessionId,
    io: [LegIo; 2],
    policy: [LegPolicy; 2],
    stats: [LegStats; 2],
    /// Copies of what each leg's remote sends; `None` costs one branch per packet.
    tap: [Option<TapSender>; 2],
    /// What voxgate plays into each leg itself.
    source: [Option<Box<Playing>>; 2],
    /// Directions forwarded in the kernel.
    kernel: SessionFlows,
}

impl Slot {
    /// The kernel flows and the rest of the slot, borrowed apart.
    fn split(&mut self) -> (&mut SessionFlows, SlotRefs<'_>) {
        (
            &mut self.kernel,
            SlotRefs {
                io: &self.io,
                policy: &mut self.policy,
                stats: &mut self.stats,
                tap: &self.tap,
                playing: [self.source[0].is_some(), self.source[1].is_some()],
            },
        )
    }
}

struct Worker {
    epoll: Epoll,
    wake: Arc<EventFd>,
    rx: Receiver<Command>,
    mode: PollMode,
    slots: Vec<Option<Slot>>,
    free_slots: Vec<usize>,
    by_id: HashMap<SessionId, usize>,
    local: Local,
    shared: Arc<WorkerShared>,
    buf: Box<[u8; BUF_LEN]>,
    /// Where a transcoder writes the packets it makes of the one in `buf`.
    transcoded: Box<[u8; MAX_PACKET_LEN]>,
    index: usize,
    offload: Option<Arc<Offload>>,
    /// Slots that may have a source playing (checked, and pruned, on each wake-up).
    sourced: Vec<usize>,
}

pub(super) type Spawned = (
    Sender<Command>,
    Arc<EventFd>,
    Arc<WorkerShared>,
    JoinHandle<()>,
);

pub(super) fn spawn(
    index: usize,
    mode: PollMode,
    offload: Option<Arc<Offload>>,
) -> std::io::Result<Spawned> {
    let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
    let wake = Arc::new(EventFd::from_value_and_flags(
        0,
        EfdFlags::EFD_NONBLOCK | EfdFlags::EFD_CLOEXEC,
    )?);
    epoll.add(&*wake, EpollEvent::new(EpollFlags::EPOLLIN, WAKE))?;
    let (tx, rx) = mpsc::channel();
    let shared = Arc::new(WorkerShared::default());
    let mut w = Worker {
        epoll,
        wake: wake.clone(),
        rx,
        mode,
        slots: Vec::new(),
        free_slots: Vec::new(),
        by_id: HashMap::new(),
        local: Local::default(),
        shared: shared.clone(),
        buf: Box::new([0u8; BUF_LEN]),
        transcoded: Box::new([0u8; MAX_PACKET_LEN]),
        index,
        offload,
        sourced: Vec::new(),
    };
    let thread = std::thread::Builder::new()
        .name(format!("voxgate-rtp-{index}"))
        .spawn(move || w.run())?;
    Ok((tx, wake, shared, thread))
}

impl Worker {
    fn run(&mut self) {
        let mut events = vec![EpollEvent::empty(); MAX_EVENTS];
        let mut last_flush = Instant::now();
        let mut last_busy = last_flush;
        let (pace, busy_poll) = match self.mode {
            PollMode::EdgeDrain => (None, None),
            PollMode::LevelOnce { pace, busy_poll } => (pace, busy_poll),
        };
        loop {
            let spin = busy_poll.is_some_and(|d| last_busy.elapsed() < d);
            let timeout = if spin {
                EpollTimeout::ZERO
            } else {
                // Woken in time for the next packet a source plays, if any: rounded
                // up, since a timeout rounded down would wake early and spin.
                let ms = self.next_source().map_or(100, |at| {
                    at.saturating_duration_since(Instant::now())
                        .as_micros()
                        .div_ceil(1000)
                        .min(100)
                });
                EpollTimeout::from(u16::try_from(ms).unwrap_or(100))
            };
            let n = match self.epoll.wait(&mut events, timeout) {
                Ok(n) => n,
                Err(nix::errno::Errno::EINTR) => 0,
                Err(e) => {
                    tracing::error!(error = %e, "media worker: epoll_wait failed");
                    return;
                }
            };
            // One clock read per wake-up serves every packet in it (latch times,
            // timestamp gaps): they arrived within the same few microseconds.
            let now = Instant::now();
            // Commands first: a command the engine sent before a packet arrived (a
            // re-INVITE's new address, then the new device's first packet) must apply
            // before that packet, and both are in this batch if the packet is.
            let stop = events[..n].iter().any(|ev| ev.data() == WAKE) && self.on_wake();
            for ev in &events[..n] {
                let token = ev.data();
                if token != WAKE {
                    self.on_readable(token, now);
                }
            }
            if n > 0 {
                last_busy = now;
            }
            if !self.sourced.is_empty() {
                self.play_sources(Instant::now());
            }
            if stop {
                self.close_all();
                self.flush();
                return;
            }
            if now.duration_since(last_flush) >= FLUSH_EVERY {
                self.flush();
                last_flush = now;
            }
            if let (Some(p), true) = (pace, n > 0) {
                std::thread::sleep(p);
            }
        }
    }

    fn on_readable(&mut self, token: u64, now: Instant) {
        let Ok(slot) = usize::try_from(token >> 2) else {
            return;
        };
        let side = usize::from(token & 2 != 0);
        let port = if token & 1 != 0 {
            Port::Rtcp
        } else {
            Port::Rtp
        };
        let Some(Some(s)) = self.slots.get_mut(slot) else {
            return;
        };
        let buf = &mut self.buf[..];
        let out = &mut self.transcoded[..];
        let off = self.offload.as_deref();
        match self.mode {
            PollMode::EdgeDrain => loop {
                // Edge-triggered: must read until EAGAIN or the edge is lost.
                let sock = match port {
                    Port::Rtp => &s.io[side].rtp,
                    Port::Rtcp => &s.io[side].rtcp,
                };
                match sock.recv_from(buf) {
                    Ok((len, src)) => {
                        forward(s, side, port, src, buf, len, out, now, &mut self.local, off);
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    // Any other error (EINTR, a queued ICMP error) is consumed by the
                    // call that reports it; stopping here would lose the edge and
                    // strand queued packets until the next one arrives.
                    Err(_) => {}
                }
            },
            PollMode::LevelOnce { .. } => {
                let sock = match port {
                    Port::Rtp => &s.io[side].rtp,
                    Port::Rtcp => &s.io[side].rtcp,
                };
                // Level-triggered: one read; if more is queued epoll reports it again.
                if let Ok((len, src)) = sock.recv_from(buf) {
                    forward(s, side, port, src, buf, len, out, now, &mut self.local, off);
                }
            }
        }
    }

    /// Handles queued commands; `true` to stop.
    fn on_wake(&mut self) -> bool {
        let _ = self.wake.read();
        loop {
            match self.rx.try_recv() {
                Ok(Command::Stop) | Err(TryRecvError::Disconnected) => return true,
                Ok(cmd) => self.command(cmd),
                Err(TryRecvError::Empty) => return false,
            }
        }
    }

    fn command(&mut self, cmd: Command) {
        match cmd {
            Command::Add { id, io } => self.add(id, io),
            Command::Update { id, side, remote } => {
                let off = self.offload.clone();
                if let Some(s) = self.slot_mut(id) {
                    if let Some(off) = &off {
                        // Signalling changed: userspace decides again from the next packet.
                        let (k, mut refs) = s.split();
                        k.remove_all(off, &mut refs, Instant::now());
                    }
                    let other = 1 - side;
                    if s.policy[side].update(&remote) {
                        // The source of the stream the other leg receives moved.
                        s.policy[other].source_changed();
                    }
                }
            }
            Command::Tap { id, side, tap } => {
                let off = self.offload.clone();
                if let Some(s) = self.slot_mut(id) {
                    if let Some(off) = &off {
                        // A tap needs every packet in userspace.
                        let (k, mut refs) = s.split();
                        k.remove(off, &mut refs, side.index(), Instant::now());
                    }
                    s.tap[side.index()] = tap;
                }
            }
            Command::Tone {
                id,
                side,
                tone: Some(t),
            } => {
                let play = Playing::new(Source::Tone(ToneSource::new(*t)), None, None);
                self.install(id, side.index(), Box::new(play));
            }
            Command::Tone {
                id,
                side,
                tone: None,
            } => {
                if let Some(p) = self
                    .slot_mut(id)
                    .and_then(|s| s.source[side.index()].as_mut())
                {
                    if p.source.kind() == SourceKind::Tone {
                        p.stop();
                    }
                }
            }
            Command::Play { id, side, play } => self.install(id, side.index(), play),
            Command::StopPlay { id, side } => {
                if let Some(p) = self
                    .slot_mut(id)
                    .and_then(|s| s.source[side.index()].as_mut())
                {
                    p.stop();
                }
            }
            Command::Remove { id, reply } => {
                let stats = self.remove(id);
                let _ = reply.send(stats);
            }
            Command::Stop => {}
        }
    }

    /// Puts `play` in leg `side`'s source slot (ending what played there) and takes
    /// the direction towards that leg out of the kernel: the kernel would relay the
    /// other leg's audio straight to it.
    fn install(&mut self, id: SessionId, side: usize, mut play: Box<Playing>) {
        let Some(&i) = self.by_id.get(&id) else {
            // The session is gone: its playback ended with it.
            play.report(id, side, PlaybackOutcome::SessionClosed);
            return;
        };
        let off = self.offload.clone();
        let Some(Some(s)) = self.slots.get_mut(i) else {
            return;
        };
        let now = Instant::now();
        if let Some(old) = s.source[side].take() {
            // Cut off at once, even a telephone-event press on the wire: the new
            // playback is what the caller wants heard now.
            old.report(id, side, PlaybackOutcome::Superseded);
            // The new source's first packet then re-anchors the stream whatever its SSRC.
            s.policy[side].set_local_source(false);
        }
        if let Some(off) = &off {
            let (k, mut refs) = s.split();
            k.remove(off, &mut refs, 1 - side, now);
        }
        play.source.start(now);
        s.source[side] = Some(play);
        if !self.sourced.contains(&i) {
            self.sourced.push(i);
        }
    }

    /// When the earliest source packet is due.
    fn next_source(&self) -> Option<Instant> {
        self.sourced
            .iter()
            .filter_map(|i| self.slots.get(*i)?.as_ref())
            .flat_map(|s| s.source.iter().flatten())
            .filter_map(|p| p.source.poll_timeout())
            .min()
    }

    /// Sends the source packets that are due, from the leg's own port to where its
    /// remote receives (signalled or latched); reports and clears sources that ended,
    /// and forgets slots with none left.
    fn play_sources(&mut self, now: Instant) {
        let buf = &mut self.buf[..];
        let local = &mut self.local;
        let slots = &mut self.slots;
        self.sourced.retain(|&i| {
            let Some(Some(s)) = slots.get_mut(i) else {
                return false;
            };
            for side in 0..2 {
                let Some(p) = s.source[side].as_mut() else {
                    continue;
                };
                let sock = &s.io[side].rtp;
                let mut errors = 0;
                let sent = play_into(&mut p.source, &mut s.policy[side], now, buf, |pkt, to| {
                    if sock.send_to(pkt, to).is_err() {
                        errors += 1;
                    }
                });
                let sent = sent as u64;
                local.send_errors += errors;
                local.rtp_played += sent;
                s.stats[side].played += sent;
                let Some(ending) = p.source.ending() else {
                    continue;
                };
                let outcome = match (ending, p.stopping) {
                    (Ending::Failed(e), _) => {
                        tracing::warn!(session = %s.id, error = %e, "media: playback failed");
                        PlaybackOutcome::Failed
                    }
                    (Ending::Done, true) => PlaybackOutcome::Stopped,
                    (Ending::Done, false) => PlaybackOutcome::Finished,
                };
                p.report(s.id, side, outcome);
                s.source[side] = None;
                // `play_into` lifted the replacement already; the next packet relayed
                // to the leg re-anchors its stream and may go back to the kernel.
                s.policy[side].set_local_source(false);
            }
            s.source.iter().any(Option::is_some)
        });
    }

    /// The worker stops: every playback ends with its session.
    fn close_all(&mut self) {
        for s in self.slots.iter_mut().flatten() {
            for (side, p) in s.source.iter_mut().enumerate() {
                if let Some(p) = p.take() {
                    p.report(s.id, side, PlaybackOutcome::SessionClosed);
                }
            }
        }
    }

    fn slot_mut(&mut self, id: SessionId) -> Option<&mut Slot> {
        let i = *self.by_id.get(&id)?;
        self.slots.get_mut(i)?.as_mut()
    }

    fn add(&mut self, id: SessionId, io: [LegIo; 2]) {
        let i = self.free_slots.pop().unwrap_or_else(|| {
            self.slots.push(None);
            self.slots.len() - 1
        });
        let flags = match self.mode {
            PollMode::EdgeDrain => EpollFlags::EPOLLIN | EpollFlags::EPOLLET,
            PollMode::LevelOnce { .. } => EpollFlags::EPOLLIN,
        };
        let base = (i as u64) << 2;
        for (side, leg) in io.iter().enumerate() {
            let t = base | ((side as u64) << 1);
            let ok = self.epoll.add(&leg.rtp, EpollEvent::new(flags, t)).is_ok()
                && self
                    .epoll
                    .add(&leg.rtcp, EpollEvent::new(flags, t | 1))
                    .is_ok();
            if !ok {
                tracing::error!(session = %id, "media worker: epoll_ctl failed; session has no media");
            }
        }
        self.slots[i] = Some(Slot {
            id,
            io,
            policy: [LegPolicy::default(), LegPolicy::default()],
            stats: [LegStats::default(); 2],
            tap: [None, None],
            source: [None, None],
            kernel: SessionFlows::default(),
        });
        self.by_id.insert(id, i);
    }

    fn remove(&mut self, id: SessionId) -> SessionStats {
        let Some(i) = self.by_id.remove(&id) else {
            return SessionStats::default();
        };
        let Some(mut s) = self.slots.get_mut(i).and_then(Option::take) else {
            return SessionStats::default();
        };
        if let Some(off) = &self.offload {
            let (k, mut refs) = s.split();
            k.remove_all(off, &mut refs, Instant::now());
        }
        for (side, p) in s.source.iter_mut().enumerate() {
            if let Some(p) = p.take() {
                p.report(id, side, PlaybackOutcome::SessionClosed);
            }
        }
        self.free_slots.push(i);
        for leg in &s.io {
            let _ = self.epoll.delete(&leg.rtp);
            let _ = self.epoll.delete(&leg.rtcp);
        }
        let leg = |k: usize| LegStats {
            latched: match s.policy[k].rtp_latch().state() {
                voxgate_media::latch::LatchState::Latched { addr, .. } => Some(addr),
                voxgate_media::latch::LatchState::Unlatched => None,
            },
            unexpected_source: s.policy[k].rtp_latch().dropped()
                + s.policy[k].rtcp_latch().dropped(),
            source_switches: s.policy[k].rewriter().switches(),
            ..s.stats[k]
        };
        debug_assert_eq!(s.id, id);
        SessionStats {
            a: leg(0),
            b: leg(1),
        }
        // `s.io` drops here: the sockets close before the engine releases the ports.
    }

    fn flush(&mut self) {
        if let (Some(off), 0) = (&self.offload, self.index) {
            off.publish();
        }
        let l = std::mem::take(&mut self.local);
        let sh = &self.shared;
        sh.rtp_forwarded
            .fetch_add(l.rtp_forwarded, Ordering::Relaxed);
        sh.rtcp_forwarded
            .fetch_add(l.rtcp_forwarded, Ordering::Relaxed);
        for (a, d) in sh.dropped.iter().zip(l.dropped) {
            a.fetch_add(d, Ordering::Relaxed);
        }
        sh.send_errors.fetch_add(l.send_errors, Ordering::Relaxed);
        sh.tap_dropped.fetch_add(l.tap_dropped, Ordering::Relaxed);
        sh.rtp_replaced.fetch_add(l.rtp_replaced, Ordering::Relaxed);
        sh.rtp_played.fetch_add(l.rtp_played, Ordering::Relaxed);
        if l.rtp_replaced > 0 {
            metrics::counter!("voxgate_rtp_packets_total", "result" => "replaced")
                .increment(l.rtp_replaced);
        }
        if l.rtp_played > 0 {
            metrics::counter!("voxgate_rtp_played_packets_total").increment(l.rtp_played);
        }
        if l.rtp_forwarded + l.rtcp_forwarded > 0 {
            metrics::counter!("voxgate_rtp_packets_total", "result" => "forwarded")
                .increment(l.rtp_forwarded + l.rtcp_forwarded);
        }
        for (r, d) in DropReason::ALL.iter().zip(l.dropped) {
            if d > 0 {
                metrics::counter!("voxgate_rtp_packets_total", "result" => r.as_str()).increment(d);
            }
        }
        if l.send_errors > 0 {
            metrics::counter!("voxgate_rtp_packets_total", "result" => "send_error")
                .increment(l.send_errors);
        }
        if l.tap_dropped > 0 {
            metrics::counter!("voxgate_rtp_tap_dropped_total").increment(l.tap_dropped);
        }
    }
}

/// The hot path for one datagram.
#[allow(clippy::too_many_arguments)]
#[inline]
fn forward(
    s: &mut Slot,
    side: usize,
    port: Port,
    src: SocketAddr,
    buf: &mut [u8],
    len: usize,
    out: &mut [u8],
    now: Instant,
    local: &mut Local,
    off: Option<&Offload>,
) {
    let other = 1 - side;
    let pkt = &mut buf[..len];
    // An RTP packet of an offloaded direction reached userspace (new SSRC, stranger):
    // bring the latch and rewriter up to date with what the kernel sent first.
    let kernel_rtp = off.filter(|_| port == Port::Rtp && !voxgate_media::is_rtcp(pkt));
    if let Some(off) = kernel_rtp {
        if s.kernel.has(side) {
            let (k, mut refs) = s.split();
            k.sync(off, &mut refs, side, now);
        }
    }
    let [p0, p1] = &mut s.policy;
    let (ing, eg) = if side == 0 { (p0, p1) } else { (p1, p0) };
    let r = route(ing, eg, port, src, pkt, now);
    s.stats[side].received += 1;
    let (dest, rtcp) = match r {
        Route::Forward(to) => (Some((&s.io[other].rtp, to)), false),
        Route::ForwardRtcp { to, mux } => {
            let sock = if mux {
                &s.io[other].rtp
            } else {
                &s.io[other].rtcp
            };
            (Some((sock, to)), true)
        }
        Route::Transcoded(to) => {
            // Whatever the transcoder made of it (none, one or a few packets).
            let sock = &s.io[other].rtp;
            while let Some(n) = s.policy[other].pop_transcoded(out, now) {
                match sock.send_to(&out[..n], to) {
                    Ok(_) => {
                        s.stats[side].forwarded += 1;
                        local.rtp_forwarded += 1;
                    }
                    Err(_) => local.send_errors += 1,
                }
            }
            (None, false)
        }
        Route::Replaced => {
            // The other leg hears a source voxgate plays; listeners still get a copy.
            s.stats[side].replaced += 1;
            local.rtp_replaced += 1;
            (None, false)
        }
        Route::Drop(reason) => {
            s.stats[side].dropped += 1;
            if let Some(i) = DropReason::ALL.iter().position(|r| *r == reason) {
                local.dropped[i] += 1;
            }
            // A leg with nobody to relay to (answered by voxgate alone, or the other
            // on hold) is still heard: a call program gathers its digits.
            if !matches!(reason, DropReason::NoDestination | DropReason::NotReceiving) {
                return;
            }
            (None, false)
        }
    };
    if let Some((sock, to)) = dest {
        match sock.send_to(pkt, to) {
            Ok(_) => {
                s.stats[side].forwarded += 1;
                if rtcp {
                    local.rtcp_forwarded += 1;
                } else {
                    local.rtp_forwarded += 1;
                }
            }
            Err(_) => local.send_errors += 1,
        }
    }
    if let (Some(off), false) = (kernel_rtp, rtcp) {
        // This packet may have made either direction steady (latched, anchored).
        let (k, mut refs) = s.split();
        k.reconcile(off, &mut refs, side, now);
        k.reconcile(off, &mut refs, other, now);
    }
    if let Some(tap) = &s.tap[side] {
        // Only when someone listens: the copy is the one allocation, off by default.
        let copy = TapPacket {
            session: s.id,
            side: if side == 0 { Side::A } else { Side::B },
            rtcp,
            at: now,
            data: pkt.to_vec(),
        };
        if tap.try_send(copy).is_err() {
            local.tap_dropped += 1;
        }
    }
}
