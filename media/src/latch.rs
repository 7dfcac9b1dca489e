//! Symmetric RTP latching (RFC 4961 symmetric RTP; the "comedia" practice of
//! draft-ietf-mmusic-sdp-comedia): a softphone behind NAT advertises its private address
//! in SDP, but its packets arrive from the NAT's public mapping. The relay learns that
//! real source from the first valid packet and sends there, which is the only address
//! the NAT will let back in.
//!
//! ```text
//!            first valid packet (from anywhere, or from the SDP IP if Strict)
//! Unlatched ─────────────────────────────────────────────────────▶ Latched{addr}
//!     ▲                                                              │  │
//!     │ set_remote(new SDP address)  (re-INVITE)                     │  │ packet from
//!     └──────────────────────────────────────────────────────────────┘  │ another source:
//!                                        Latched{other} ◀───────────────┘ dropped, unless
//!                                                      the latched one was silent
//!                                                      for `relatch_after`
//! ```

use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// What is accepted before the latch is set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LatchMode {
    /// Accept the first valid packet from anywhere (NAT'd softphones).
    #[default]
    Open,
    /// Accept only packets whose source IP is the SDP address's IP (any port, since a
    /// NAT may remap it): for trunks, where the carrier's media IP is known.
    Strict,
}

/// Latch state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LatchState {
    /// Nothing learned yet: send to the SDP address, if any.
    Unlatched,
    /// Learned the peer's real source; `last_seen` is when it last sent.
    Latched {
        addr: SocketAddr,
        last_seen: Instant,
    },
}

/// What to do with a packet, as far as its source goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LatchVerdict {
    /// From the latched source.
    Accept,
    /// First packet: the latch is now set to its source.
    Learned,
    /// The latched source had been silent for the re-latch time: moved to this one.
    Relearned,
    /// From an unexpected source: drop it (and count it).
    Drop,
}

impl LatchVerdict {
    #[must_use]
    pub fn accepted(self) -> bool {
        !matches!(self, LatchVerdict::Drop)
    }
}

/// One address latch (one per leg for RTP, one for RTCP unless rtcp-mux).
#[derive(Debug, Clone)]
pub struct Latch {
    mode: LatchMode,
    sdp: Option<SocketAddr>,
    state: LatchState,
    relatch_after: Option<Duration>,
    dropped: u64,
}

impl Latch {
    /// A latch that sends to `sdp` until it learns the peer's real source.
    #[must_use]
    pub fn new(mode: LatchMode, sdp: Option<SocketAddr>, relatch_after: Option<Duration>) -> Latch {
        Latch {
            mode,
            sdp,
            state: LatchState::Unlatched,
            relatch_after,
            dropped: 0,
        }
    }

    #[must_use]
    pub fn state(&self) -> LatchState {
        self.state
    }

    /// Packets dropped as coming from an unexpected source.
    #[must_use]
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// The SDP remote address as last signalled.
    #[must_use]
    pub fn sdp(&self) -> Option<SocketAddr> {
        self.sdp
    }

    /// Where to send to this peer: the learned source, else the SDP address.
    #[must_use]
    pub fn destination(&self) -> Option<SocketAddr> {
        match self.state {
            LatchState::Latched { addr, .. } => Some(addr),
            LatchState::Unlatched => self.sdp,
        }
    }

    /// New SDP remote (offer/answer or re-INVITE). A changed address means the peer
    /// may have moved (transfer, new device, new NAT binding): forget the latch and
    /// learn again. The same address (a hold/resume re-INVITE) keeps it.
    pub fn set_remote(&mut self, sdp: Option<SocketAddr>) {
        if sdp != self.sdp {
            self.sdp = sdp;
            self.state = LatchState::Unlatched;
        }
    }

    /// Changes the mode and silence re-latch time without touching what was learned.
    pub fn configure(&mut self, mode: LatchMode, relatch_after: Option<Duration>) {
        self.mode = mode;
        self.relatch_after = relatch_after;
    }

    /// The latched source was seen sending at `at` by a fast path that bypassed
    /// [`Latch::on_packet`] (so re-latching after silence stays correct).
    pub fn seen(&mut self, at: Instant) {
        if let LatchState::Latched { last_seen, .. } = &mut self.state {
            if at > *last_seen {
                *last_seen = at;
            }
        }
    }

    /// A valid packet arrived from `src` at `now`.
    pub fn on_packet(&mut self, src: SocketAddr, now: Instant) -> LatchVerdict {
        match &mut self.state {
            LatchState::Latched { addr, last_seen } if *addr == src => {
                *last_seen = now;
                LatchVerdict::Accept
            }
            LatchState::Latched { last_seen, .. } => {
                let silent = self
                    .relatch_after
                    .is_some_and(|d| now.saturating_duration_since(*last_seen) >= d);
                if silent && self.allowed(src) {
                    self.state = LatchState::Latched {
                        addr: src,
                        last_seen: now,
                    };
                    LatchVerdict::Relearned
                } else {
                    self.dropped = self.dropped.saturating_add(1);
                    LatchVerdict::Drop
                }
            }
            LatchState::Unlatched => {
                if self.allowed(src) {
                    self.state = LatchState::Latched {
                        addr: src,
                        last_seen: now,
                    };
                    LatchVerdict::Learned
                } else {
                    self.dropped = self.dropped.saturating_add(1);
                    LatchVerdict::Drop
                }
            }
        }
    }

    fn allowed(&self, src: SocketAddr) -> bool {
        match (self.mode, self.sdp) {
            (LatchMode::Open, _) => true,
            (LatchMode::Strict, Some(sdp)) => sdp.ip() == src.ip(),
            (LatchMode::Strict, None) => false,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn seen_elsewhere_postpones_the_relatch() {
        let t0 = Instant::now();
        let mut l = Latch::new(LatchMode::Open, None, Some(Duration::from_secs(2)));
        l.seen(t0); // unlatched: nothing to refresh
        assert_eq!(l.state(), LatchState::Unlatched);
        l.on_packet(a("10.0.0.1:4000"), t0);
        // A fast path saw the source 3 s later; 1 s after that it is not silent.
        l.seen(t0 + Duration::from_secs(3));
        l.seen(t0 + Duration::from_secs(1)); // older news is ignored
        assert_eq!(
            l.on_packet(a("10.0.0.9:4000"), t0 + Duration::from_secs(4)),
            LatchVerdict::Drop
        );
        assert_eq!(
            l.on_packet(a("10.0.0.9:4000"), t0 + Duration::from_secs(5)),
            LatchVerdict::Relearned
        );
    }

    #[test]
    fn open_latches_to_first_source_and_drops_others() {
        let t0 = Instant::now();
        let mut l = Latch::new(LatchMode::Open, Some(a("192.168.1.10:4000")), None);
        assert_eq!(l.destination(), Some(a("192.168.1.10:4000")));
        assert_eq!(
            l.on_packet(a("203.0.113.5:61000"), t0),
            LatchVerdict::Learned
        );
        assert_eq!(
            l.destination(),
            Some(a("203.0.113.5:61000")),
            "NAT'd source wins"
        );
        assert_eq!(
            l.on_packet(a("203.0.113.5:61000"), t0),
            LatchVerdict::Accept
        );
        assert_eq!(l.on_packet(a("198.51.100.1:5000"), t0), LatchVerdict::Drop);
        assert_eq!(l.on_packet(a("203.0.113.5:61001"), t0), LatchVerdict::Drop);
        assert_eq!(l.dropped(), 2);
        assert_eq!(l.destination(), Some(a("203.0.113.5:61000")));
    }

    #[test]
    fn strict_accepts_only_the_sdp_ip() {
        let t0 = Instant::now();
        let mut l = Latch::new(LatchMode::Strict, Some(a("198.51.100.7:10000")), None);
        assert_eq!(l.on_packet(a("203.0.113.5:10000"), t0), LatchVerdict::Drop);
        assert_eq!(
            l.on_packet(a("198.51.100.7:10002"), t0),
            LatchVerdict::Learned
        );
        assert_eq!(l.destination(), Some(a("198.51.100.7:10002")));
        let mut none = Latch::new(LatchMode::Strict, None, None);
        assert_eq!(none.on_packet(a("198.51.100.7:1"), t0), LatchVerdict::Drop);
        assert_eq!(none.destination(), None);
    }

    #[test]
    fn new_sdp_address_relatches_same_keeps() {
        let t0 = Instant::now();
        let mut l = Latch::new(LatchMode::Open, Some(a("10.0.0.1:4000")), None);
        l.on_packet(a("203.0.113.5:1"), t0);
        l.set_remote(Some(a("10.0.0.1:4000"))); // hold/resume: same address
        assert_eq!(l.destination(), Some(a("203.0.113.5:1")));
        l.set_remote(Some(a("10.0.0.2:4000"))); // moved
        assert_eq!(l.state(), LatchState::Unlatched);
        assert_eq!(l.destination(), Some(a("10.0.0.2:4000")));
        assert_eq!(l.on_packet(a("203.0.113.9:2"), t0), LatchVerdict::Learned);
    }

    #[test]
    fn relatch_after_silence() {
        let t0 = Instant::now();
        let mut l = Latch::new(LatchMode::Open, None, Some(Duration::from_secs(5)));
        l.on_packet(a("203.0.113.5:1"), t0);
        let t1 = t0 + Duration::from_secs(4);
        assert_eq!(l.on_packet(a("203.0.113.5:1"), t1), LatchVerdict::Accept);
        // 4.9 s after the last packet: still the old source.
        let t2 = t1 + Duration::from_millis(4900);
        assert_eq!(l.on_packet(a("203.0.113.6:1"), t2), LatchVerdict::Drop);
        let t3 = t1 + Duration::from_secs(5);
        assert_eq!(l.on_packet(a("203.0.113.6:1"), t3), LatchVerdict::Relearned);
        assert_eq!(l.on_packet(a("203.0.113.5:1"), t3), LatchVerdict::Drop);
    }
}
