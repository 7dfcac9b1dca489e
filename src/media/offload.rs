//! Kernel forwarding of steady flows (`voxgate-kfwd`), seen from the relay workers.
//!
//! A direction X→Y of a session is *offloaded* when every packet of it would be
//! handled identically by the userspace path: X's source is latched (IPv4), X may send
//! and Y may receive, the stream out of Y has a steady rewrite (fixed SSRC and offsets),
//! nobody taps X and nothing plays into Y. The worker then installs the flow in the
//! kernel, keyed by X's RTP socket; the program forwards those packets and passes
//! everything else up to the socket, where the userspace path sees it as before.
//!
//! Userspace state stays authoritative. Before the worker handles an RTP packet of an
//! offloaded direction itself (a new SSRC, a stranger, a re-latch) and before it
//! replaces or removes a flow, it folds the kernel's counters back in: the latch learns
//! when the source was last seen, the rewriter where the outgoing stream stands (so a
//! source switch re-anchors after the last packet the kernel sent), the leg counters
//! how many packets went by. Any signalling change (re-INVITE, hold, tap) removes the
//! session's flows first; the next packet through userspace installs them again if
//! they are still steady.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use voxgate_kfwd::{Egress, Flow, Forwarder};
use voxgate_media::relay::LegPolicy;
use voxgate_media::{RtpTimestamp, SeqNo};

use super::worker::LegIo;
use super::{LegStats, MediaConfig, MediaError, TapSender};

/// `rtp.kernel_forwarding`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KernelForwarding {
    /// Userspace only.
    Off,
    /// Kernel forwarding when the kernel and privileges allow, else userspace (logged).
    #[default]
    Auto,
    /// Kernel forwarding or refuse to start.
    On,
}

/// The loaded forwarder, shared by the workers (map updates are system calls; the
/// kernel serialises them).
pub(super) struct Offload {
    fwd: Forwarder,
    /// The address packets arrive at (the key of every flow): the bind address, or the
    /// advertised one when binding every address.
    key_ip: Ipv4Addr,
    flows: AtomicUsize,
    failures: AtomicU64,
    /// Kernel-forwarded packets already published to `metrics`.
    reported: AtomicU64,
}

impl Offload {
    /// Loads and attaches the program as `cfg.kernel` asks: `Ok(None)` when it is off,
    /// or when `Auto` and the kernel refused (the reason is logged).
    pub(super) fn start(cfg: &MediaConfig) -> Result<Option<Offload>, MediaError> {
        if cfg.kernel == KernelForwarding::Off {
            return Ok(None);
        }
        match Offload::try_start(cfg) {
            Ok(o) => {
                tracing::info!(
                    interfaces = ?o.fwd.attached(),
                    address = %o.key_ip,
                    "rtp: kernel forwarding on (eBPF tcx ingress)"
                );
                Ok(Some(o))
            }
            Err(e) if cfg.kernel == KernelForwarding::Auto => {
                tracing::warn!(
                    error = %e,
                    "rtp: kernel forwarding unavailable, relaying in userspace (set rtp.kernel_forwarding = \"off\" to silence)"
                );
                Ok(None)
            }
            Err(e) => Err(MediaError::Kernel(e)),
        }
    }

    fn try_start(cfg: &MediaConfig) -> Result<Offload, String> {
        let ip = if cfg.bind_ip.is_unspecified() {
            cfg.advertised_ip
        } else {
            cfg.bind_ip
        };
        let IpAddr::V4(key_ip) = ip else {
            return Err(format!("media address {ip} is not IPv4"));
        };
        let max = (u32::from(cfg.ports.hi) - u32::from(cfg.ports.lo)) / 2 + 1;
        let mut fwd = Forwarder::load(max).map_err(|e| e.to_string())?;
        // A loopback-bound relay only ever sees loopback packets; any other binding
        // may receive on every interface.
        let ifaces = if cfg.bind_ip.is_loopback() {
            vec![(
                "lo".to_owned(),
                voxgate_kfwd::ifindex("lo").map_err(|e| e.to_string())?,
            )]
        } else {
            voxgate_kfwd::interfaces().map_err(|e| e.to_string())?
        };
        for (name, index) in ifaces {
            fwd.attach(index).map_err(|e| format!("{name}: {e}"))?;
        }
        Ok(Offload {
            fwd,
            key_ip,
            flows: AtomicUsize::new(0),
            failures: AtomicU64::new(0),
            reported: AtomicU64::new(0),
        })
    }

    /// Packets forwarded in the kernel since start.
    pub(super) fn forwarded(&self) -> u64 {
        self.fwd.totals().map_or(0, |t| t.0)
    }

    pub(super) fn flows(&self) -> usize {
        self.flows.load(Ordering::Relaxed)
    }

    /// Publishes the kernel's forwarded count to `metrics` (one worker calls this).
    pub(super) fn publish(&self) {
        let total = self.forwarded();
        let before = self.reported.swap(total, Ordering::Relaxed);
        if total > before {
            metrics::counter!("voxgate_rtp_packets_total", "result" => "forwarded")
                .increment(total - before);
            metrics::counter!("voxgate_rtp_kernel_packets_total").increment(total - before);
        }
        metrics::gauge!("voxgate_rtp_kernel_flows").set(self.flows() as f64);
    }

    fn key(&self, io: &LegIo) -> SocketAddrV4 {
        SocketAddrV4::new(self.key_ip, io.rtp_port)
    }
}

/// A session's kernel state: the installed flow per ingress side, and when a failed
/// install may be tried again.
#[derive(Default)]
pub(super) struct SessionFlows {
    installed: [Option<Flow>; 2],
    retry_at: [Option<Instant>; 2],
    /// The kernel's packet count already folded into the leg counters.
    seen: [u64; 2],
}

/// After a failed install (map full, no route), userspace keeps the direction for this
/// long before trying again.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// What one worker's slot lends to these functions.
pub(super) struct SlotRefs<'a> {
    pub io: &'a [LegIo; 2],
    pub policy: &'a mut [LegPolicy; 2],
    pub stats: &'a mut [LegStats; 2],
    pub tap: &'a [Option<TapSender>; 2],
    /// A source plays into the leg (its relayed audio is replaced meanwhile).
    pub playing: [bool; 2],
}

impl SessionFlows {
    /// Is the direction out of `side` offloaded?
    pub(super) fn has(&self, side: usize) -> bool {
        self.installed[side].is_some()
    }

    /// Folds what the kernel did for the direction out of `side` into userspace state.
    pub(super) fn sync(&mut self, off: &Offload, s: &mut SlotRefs<'_>, side: usize, now: Instant) {
        if self.installed[side].is_none() {
            return;
        }
        if let Ok(Some(c)) = off.fwd.counters(off.key(&s.io[side])) {
            apply(s, side, &c, now, &mut self.seen[side]);
        }
    }

    /// Removes the direction out of `side` (if installed), keeping its counts.
    pub(super) fn remove(
        &mut self,
        off: &Offload,
        s: &mut SlotRefs<'_>,
        side: usize,
        now: Instant,
    ) {
        if self.installed[side].take().is_none() {
            return;
        }
        off.flows.fetch_sub(1, Ordering::Relaxed);
        if let Ok(Some(c)) = off.fwd.remove(off.key(&s.io[side])) {
            apply(s, side, &c, now, &mut self.seen[side]);
        }
        self.seen[side] = 0;
    }

    pub(super) fn remove_all(&mut self, off: &Offload, s: &mut SlotRefs<'_>, now: Instant) {
        self.remove(off, s, 0, now);
        self.remove(off, s, 1, now);
        self.retry_at = [None, None];
    }

    /// Installs, replaces or removes the direction out of `side` to match userspace.
    pub(super) fn reconcile(
        &mut self,
        off: &Offload,
        s: &mut SlotRefs<'_>,
        side: usize,
        now: Instant,
    ) {
        let mut want = desired(off, s, side);
        if let (Some(w), Some(h)) = (&mut want, &self.installed[side]) {
            // The egress is derived from `to`; everything else must match.
            w.egress = h.egress;
            if w == h {
                return;
            }
        }
        match want {
            None => self.remove(off, s, side, now),
            Some(mut w) => {
                if self.retry_at[side].is_some_and(|t| now < t) {
                    return;
                }
                let egress = match voxgate_kfwd::egress_for(*w.to.ip()) {
                    Ok(e) => e,
                    Err(e) => {
                        tracing::debug!(error = %e, to = %w.to, "rtp: no route for kernel forwarding");
                        self.retry_at[side] = Some(now + RETRY_AFTER);
                        return;
                    }
                };
                w.egress = egress;
                // Replacing resets the kernel's counters: fold them in first.
                self.sync(off, s, side, now);
                match off.fwd.insert(off.key(&s.io[side]), &w) {
                    Ok(()) => {
                        self.seen[side] = 0;
                        if self.installed[side].replace(w).is_none() {
                            off.flows.fetch_add(1, Ordering::Relaxed);
                        }
                        self.retry_at[side] = None;
                    }
                    Err(e) => {
                        if off.failures.fetch_add(1, Ordering::Relaxed) == 0 {
                            tracing::warn!(error = %e, "rtp: installing a kernel flow failed; relaying it in userspace");
                        }
                        self.remove(off, s, side, now);
                        self.retry_at[side] = Some(now + RETRY_AFTER);
                    }
                }
            }
        }
    }
}

fn v4(a: SocketAddr) -> Option<SocketAddrV4> {
    match a {
        SocketAddr::V4(a) => Some(a),
        SocketAddr::V6(_) => None,
    }
}

/// The flow the direction out of `side` should have, if it is steady.
fn desired(off: &Offload, s: &SlotRefs<'_>, side: usize) -> Option<Flow> {
    let other = 1 - side;
    // A listener needs every packet in userspace; a source voxgate plays, or a
    // transcoder, makes what the other leg receives.
    if s.tap[side].is_some() || s.playing[other] || s.policy[other].transcodes() {
        return None;
    }
    let (ing, eg) = (&s.policy[side], &s.policy[other]);
    if !ing.direction().remote_sends() || !eg.direction().remote_receives() {
        return None;
    }
    let from = match ing.rtp_latch().state() {
        voxgate_media::latch::LatchState::Latched { addr, .. } => v4(addr)?,
        voxgate_media::latch::LatchState::Unlatched => return None,
    };
    let to = v4(eg.rtp_latch().destination()?)?;
    let steady = eg.rewriter().steady()?;
    Some(Flow {
        from,
        in_ssrc: steady.src.0,
        out_src: off.key(&s.io[other]),
        to,
        out_ssrc: steady.out_ssrc.0,
        seq_off: steady.seq_off,
        ts_off: steady.ts_off,
        pt_map: *eg.pt_out().table(),
        egress: Egress::Loopback(0),
    })
}

/// Applies the kernel's counters of the direction out of `side`.
fn apply(
    s: &mut SlotRefs<'_>,
    side: usize,
    c: &voxgate_kfwd::FlowCounters,
    now: Instant,
    seen: &mut u64,
) {
    if c.packets <= *seen {
        return;
    }
    let ago = voxgate_kfwd::monotonic_ns().saturating_sub(c.last_ns);
    let at = now.checked_sub(Duration::from_nanos(ago)).unwrap_or(now);
    s.policy[side].rtp_latch_mut().seen(at);
    s.policy[1 - side].rewriter_mut().forwarded_elsewhere(
        SeqNo(c.last_seq),
        RtpTimestamp(c.last_ts),
        at,
    );
    // A sync does not reset the kernel's counters: only the growth since is new.
    let new = c.packets - *seen;
    *seen = c.packets;
    s.stats[side].received += new;
    s.stats[side].forwarded += new;
}
