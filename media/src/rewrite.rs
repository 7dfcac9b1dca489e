//! Keeping one outgoing RTP stream continuous while its source changes, and payload-type
//! translation.
//!
//! A B2BUA relays one stream per direction, but the far end's source can change under it
//! (a re-INVITE to another device, a transfer, a media server taking over): the new
//! source starts a new SSRC with random sequence and timestamp (RFC 3550 §5.1). Passing
//! that through makes many phones mute or glitch, so the relay keeps the *outgoing*
//! SSRC fixed and re-anchors sequence and timestamp offsets on each source change so the
//! output continues: next sequence number, and a timestamp advanced by the wall-clock
//! gap in the codec's clock (the approach of RFC 7160 §4.1 for a clock change:
//! the timestamp tracks elapsed time, not the new source's arbitrary origin).
//!
//! While the first source is unchanged, the rewrite is the identity (offsets zero,
//! SSRC kept), so RTCP reports from the far end still refer to the right SSRC.

use std::time::{Duration, Instant};

use crate::rtp::{RtpPacket, RtpTimestamp, SeqNo, Ssrc};

/// Media clock rate in Hz (RFC 3550 §5.1 "timestamp"): 8000 for PCMU/PCMA, 48000 for
/// Opus, 8000 for G.722's RTP clock (RFC 3551 §4.5.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockRate(pub u32);

impl ClockRate {
    pub const G711: ClockRate = ClockRate(8000);

    /// Ticks of this clock in `d`, saturating at `u32::MAX`.
    #[must_use]
    pub fn ticks(self, d: Duration) -> u32 {
        let t = d.as_nanos() * u128::from(self.0) / 1_000_000_000;
        u32::try_from(t).unwrap_or(u32::MAX)
    }
}

/// Payload-type translation for packets leaving a leg: both sides negotiated the same
/// codec under different dynamic numbers (RFC 3264 §5.1 lets each side choose). A fixed
/// table, one lookup per packet, identity by default.
#[derive(Clone)]
pub struct PtMap([u8; 128]);

impl Default for PtMap {
    fn default() -> Self {
        let mut t = [0u8; 128];
        for (i, v) in t.iter_mut().enumerate() {
            // i < 128 by the array's length.
            *v = u8::try_from(i).unwrap_or(0);
        }
        PtMap(t)
    }
}

impl std::fmt::Debug for PtMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut m = f.debug_map();
        for (i, v) in self.0.iter().enumerate() {
            if usize::from(*v) != i {
                m.entry(&i, v);
            }
        }
        m.finish()
    }
}

impl PtMap {
    /// Identity map.
    #[must_use]
    pub fn identity() -> PtMap {
        PtMap::default()
    }
    /// Builds a map from `(from, to)` pairs; values above 127 are masked to 7 bits.
    #[must_use]
    pub fn from_pairs(pairs: &[(u8, u8)]) -> PtMap {
        let mut m = PtMap::default();
        for &(from, to) in pairs {
            m.set(from, to);
        }
        m
    }
    /// The whole table: entry `pt` is the payload type sent for `pt`.
    #[must_use]
    pub fn table(&self) -> &[u8; 128] {
        &self.0
    }
    pub fn set(&mut self, from: u8, to: u8) {
        self.0[usize::from(from & 0x7f)] = to & 0x7f;
    }
    #[must_use]
    pub fn get(&self, pt: u8) -> u8 {
        self.0[usize::from(pt & 0x7f)]
    }
}

/// Where the outgoing stream stands.
#[derive(Debug, Clone, Copy)]
enum RewriteState {
    /// Nothing forwarded yet: the first packet fixes the outgoing SSRC.
    Idle,
    /// Forwarding `src`: `out = in + offset` (wrapping).
    Active {
        src: Ssrc,
        seq_off: u16,
        ts_off: u32,
        /// Highest sequence number sent, for the next anchor (RFC 3550 §A.1 wrap rule).
        high_seq: SeqNo,
        /// Timestamp of that packet and when it went out.
        high_ts: RtpTimestamp,
        at: Instant,
        /// Set by [`Rewriter::source_changed`]: re-anchor on the next packet even if
        /// the new source reuses the SSRC.
        reanchor: bool,
    },
}

/// The longest timestamp step between consecutive packets taken as a frame length: a
/// larger step is a silence gap (DTX), not the length of one packet's audio.
const MAX_FRAME: Duration = Duration::from_millis(120);

/// What [`Rewriter::steady`] returns: packets of SSRC `src` leave with SSRC `out_ssrc`,
/// sequence number `+ seq_off` and timestamp `+ ts_off` (both wrapping).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SteadyRewrite {
    pub src: Ssrc,
    pub out_ssrc: Ssrc,
    pub seq_off: u16,
    pub ts_off: u32,
}

/// Per-direction rewriter: a fixed outgoing SSRC with continuous sequence and timestamp.
#[derive(Debug, Clone)]
pub struct Rewriter {
    out_ssrc: Option<Ssrc>,
    state: RewriteState,
    /// Source switches seen (for stats and tests).
    switches: u32,
    /// Timestamp step between the last two consecutive packets of the current source
    /// (its frame length, 160 for 20 ms of G.711); 0 until known.
    frame: u32,
}

impl Default for Rewriter {
    fn default() -> Self {
        Rewriter::new()
    }
}

impl Rewriter {
    #[must_use]
    pub fn new() -> Rewriter {
        Rewriter {
            out_ssrc: None,
            state: RewriteState::Idle,
            switches: 0,
            frame: 0,
        }
    }

    /// The SSRC this direction sends with, once the first packet has gone out.
    #[must_use]
    pub fn out_ssrc(&self) -> Option<Ssrc> {
        self.out_ssrc
    }

    /// Number of source switches re-anchored so far.
    #[must_use]
    pub fn switches(&self) -> u32 {
        self.switches
    }

    /// The fixed rewrite of a steady stream, for a fast path that applies it elsewhere
    /// (the kernel forwarder): `None` before the first packet and while a re-anchor is
    /// pending, when only [`Rewriter::rewrite`] knows what to do.
    #[must_use]
    pub fn steady(&self) -> Option<SteadyRewrite> {
        match (self.state, self.out_ssrc) {
            (
                RewriteState::Active {
                    src,
                    seq_off,
                    ts_off,
                    reanchor: false,
                    ..
                },
                Some(out_ssrc),
            ) => Some(SteadyRewrite {
                src,
                out_ssrc,
                seq_off,
                ts_off,
            }),
            _ => None,
        }
    }

    /// Packets of the steady stream went out through a fast path; the newest had `seq`
    /// and `ts` (as sent) and left at `at`. Keeps the anchor of the next source switch
    /// where the stream really is.
    pub fn forwarded_elsewhere(&mut self, seq: SeqNo, ts: RtpTimestamp, at: Instant) {
        if let RewriteState::Active {
            high_seq,
            high_ts,
            at: high_at,
            ..
        } = &mut self.state
        {
            if seq.0.wrapping_sub(high_seq.0) as i16 > 0 {
                *high_seq = seq;
                *high_ts = ts;
                *high_at = at;
            }
        }
    }

    /// The outgoing stream's clock stood at `ts` (as sent) at `at`: the next re-anchor
    /// counts the wall-clock gap from there. For a packet whose timestamp is not its
    /// send time: a telephone-event keeps its key press's start timestamp in every
    /// packet of the press (RFC 4733 §2.5.1.2), so the stream after the press must
    /// continue from the press's end, not from that timestamp.
    pub fn clock_at(&mut self, ts: RtpTimestamp, at: Instant) {
        if let RewriteState::Active {
            high_ts, at: hat, ..
        } = &mut self.state
        {
            *high_ts = ts;
            *hat = at;
        }
    }

    /// The signalling says the source changed (re-INVITE with a new remote): the next
    /// packet is re-anchored even if its SSRC is the old one.
    pub fn source_changed(&mut self) {
        if let RewriteState::Active { reanchor, .. } = &mut self.state {
            *reanchor = true;
        }
    }

    /// Rewrites SSRC, sequence number and timestamp in place. `clock` is the payload's
    /// clock rate (for the timestamp gap on a switch); `now` is when the packet arrived.
    pub fn rewrite<T: AsRef<[u8]> + AsMut<[u8]>>(
        &mut self,
        pkt: &mut RtpPacket<T>,
        clock: ClockRate,
        now: Instant,
    ) {
        let in_ssrc = pkt.ssrc();
        let in_seq = pkt.seq();
        let in_ts = pkt.timestamp();
        let (seq_off, ts_off) = match self.state {
            RewriteState::Idle => {
                self.out_ssrc = Some(in_ssrc);
                (0, 0)
            }
            RewriteState::Active {
                src,
                seq_off,
                ts_off,
                reanchor: false,
                ..
            } if src == in_ssrc => (seq_off, ts_off),
            RewriteState::Active {
                high_seq,
                high_ts,
                at,
                ..
            } => {
                // RFC 7160 §4.1 style: continue the sequence and advance the timestamp by
                // the elapsed wall-clock time, and by at least the last packet's frame
                // (a switch less than a frame after that packet must not start inside
                // the audio it carried) and one tick (so it never repeats).
                self.switches = self.switches.saturating_add(1);
                let gap = clock
                    .ticks(now.saturating_duration_since(at))
                    .max(self.frame)
                    .max(1);
                let seq_off = high_seq.0.wrapping_add(1).wrapping_sub(in_seq.0);
                let ts_off = high_ts.0.wrapping_add(gap).wrapping_sub(in_ts.0);
                // RFC 3551 §4.1: the marker flags the start of a talkspurt, letting the
                // receiver's jitter buffer resynchronise to the jump.
                pkt.set_marker(true);
                (seq_off, ts_off)
            }
        };
        let out_seq = in_seq.wrapping_add(seq_off);
        let out_ts = in_ts.wrapping_add(ts_off);
        let (high_seq, high_ts, at) = match self.state {
            RewriteState::Active {
                src,
                high_seq,
                high_ts,
                at,
                reanchor: false,
                ..
            } if src == in_ssrc => {
                // Learn the frame length from consecutive packets.
                let step = out_ts.0.wrapping_sub(high_ts.0);
                if out_seq.0.wrapping_sub(high_seq.0) == 1
                    && step > 0
                    && step <= clock.ticks(MAX_FRAME)
                {
                    self.frame = step;
                }
                // Keep the highest sequence number; a reordered older packet must not
                // pull the anchor back (RFC 3550 §A.1: compare modulo 2^16).
                if out_seq.0.wrapping_sub(high_seq.0) as i16 > 0 {
                    (out_seq, out_ts, now)
                } else {
                    (high_seq, high_ts, at)
                }
            }
            _ => (out_seq, out_ts, now),
        };
        self.state = RewriteState::Active {
            src: in_ssrc,
            seq_off,
            ts_off,
            high_seq,
            high_ts,
            at,
            reanchor: false,
        };
        if let Some(out) = self.out_ssrc {
            pkt.set_ssrc(out);
        }
        pkt.set_seq(out_seq);
        pkt.set_timestamp(out_ts);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::rtp::write_header;

    fn pkt(seq: u16, ts: u32, ssrc: u32) -> [u8; 12] {
        let mut b = [0u8; 12];
        write_header(&mut b, 0, false, SeqNo(seq), RtpTimestamp(ts), Ssrc(ssrc)).unwrap();
        b
    }

    fn run(rw: &mut Rewriter, b: &mut [u8; 12], now: Instant) -> (u16, u32, u32, bool) {
        let mut p = RtpPacket::new_checked(&mut b[..]).unwrap();
        rw.rewrite(&mut p, ClockRate::G711, now);
        (p.seq().0, p.timestamp().0, p.ssrc().0, p.marker())
    }

    #[test]
    fn first_source_passes_unchanged() {
        let t0 = Instant::now();
        let mut rw = Rewriter::new();
        for i in 0..5u16 {
            let mut b = pkt(100 + i, 1000 + 160 * u32::from(i), 0xaaaa);
            let (s, t, ssrc, m) = run(
                &mut rw,
                &mut b,
                t0 + Duration::from_millis(20 * u64::from(i)),
            );
            assert_eq!(
                (s, t, ssrc, m),
                (100 + i, 1000 + 160 * u32::from(i), 0xaaaa, false)
            );
        }
        assert_eq!(rw.out_ssrc(), Some(Ssrc(0xaaaa)));
        assert_eq!(rw.switches(), 0);
    }

    #[test]
    fn new_ssrc_continues_seq_and_advances_ts_by_wall_clock() {
        let t0 = Instant::now();
        let mut rw = Rewriter::new();
        // Old source ends at seq 65535 (wraps next), ts 0xffff_ff00.
        let mut b = pkt(65534, 0xffff_fe60, 1);
        run(&mut rw, &mut b, t0);
        let mut b = pkt(65535, 0xffff_ff00, 1);
        run(&mut rw, &mut b, t0 + Duration::from_millis(20));
        // New source, random origin, 500 ms later.
        let mut b = pkt(9, 123_456, 2);
        let (s, t, ssrc, m) = run(&mut rw, &mut b, t0 + Duration::from_millis(520));
        assert_eq!(s, 0, "sequence continues across the wrap");
        assert_eq!(t, 0xffff_ff00u32.wrapping_add(4000), "500 ms at 8 kHz");
        assert_eq!(ssrc, 1, "outgoing SSRC is kept");
        assert!(m, "marker set on the first packet after the switch");
        // And the new source keeps going with the same offsets.
        let mut b = pkt(10, 123_616, 2);
        let (s, t, ssrc, m) = run(&mut rw, &mut b, t0 + Duration::from_millis(540));
        assert_eq!(
            (s, t, ssrc, m),
            (1, 0xffff_ff00u32.wrapping_add(4160), 1, false)
        );
        assert_eq!(rw.switches(), 1);
    }

    #[test]
    fn switching_back_and_forth_never_repeats() {
        let t0 = Instant::now();
        let mut rw = Rewriter::new();
        let mut last: Option<(u16, u32)> = None;
        // Two sources with their own origins, alternating every 3 packets.
        let (mut s10, mut s20) = ((65_000u16, 4_000_000_000u32), (17u16, 5u32));
        for i in 0..20u32 {
            let (ssrc, st) = if (i / 3) % 2 == 0 {
                (10, &mut s10)
            } else {
                (20, &mut s20)
            };
            let mut b = pkt(st.0, st.1, ssrc);
            *st = (st.0.wrapping_add(1), st.1.wrapping_add(160));
            let (s, t, out_ssrc, _) = run(
                &mut rw,
                &mut b,
                t0 + Duration::from_millis(20 * u64::from(i)),
            );
            assert_eq!(out_ssrc, 10);
            if let Some((ls, lt)) = last {
                assert_eq!(s, ls.wrapping_add(1), "seq at packet {i}");
                assert_eq!(t.wrapping_sub(lt), 160, "ts at packet {i}");
            }
            last = Some((s, t));
        }
        assert_eq!(rw.switches(), 6);
    }

    #[test]
    fn signalled_change_reanchors_same_ssrc() {
        let t0 = Instant::now();
        let mut rw = Rewriter::new();
        let mut b = pkt(500, 8000, 5);
        run(&mut rw, &mut b, t0);
        rw.source_changed();
        // Same SSRC, but a new device restarted its sequence at 1.
        let mut b = pkt(1, 0, 5);
        let (s, t, _, m) = run(&mut rw, &mut b, t0 + Duration::from_millis(100));
        assert_eq!((s, t, m), (501, 8800, true));
    }

    #[test]
    fn reordered_packet_does_not_move_the_anchor() {
        let t0 = Instant::now();
        let mut rw = Rewriter::new();
        for (seq, ts) in [(10u16, 1600u32), (12, 1920), (11, 1760)] {
            let mut b = pkt(seq, ts, 1);
            run(&mut rw, &mut b, t0);
        }
        let mut b = pkt(3, 3, 2);
        let (s, _, _, _) = run(&mut rw, &mut b, t0 + Duration::from_millis(20));
        assert_eq!(s, 13);
    }

    #[test]
    fn pt_map() {
        let m = PtMap::from_pairs(&[(96, 101), (0, 8)]);
        assert_eq!(m.get(96), 101);
        assert_eq!(m.get(0), 8);
        assert_eq!(m.get(8), 8);
        assert_eq!(m.get(200), 72, "PT is 7 bits");
        assert_eq!(format!("{m:?}"), "{0: 8, 96: 101}");
    }

    #[test]
    fn steady_rewrite_and_a_fast_path_keep_the_anchor() {
        let t0 = Instant::now();
        let mut rw = Rewriter::new();
        assert_eq!(rw.steady(), None, "nothing before the first packet");
        let mut b = pkt(100, 1000, 0xaaaa);
        run(&mut rw, &mut b, t0);
        let st = rw.steady().unwrap();
        assert_eq!(
            (st.src, st.out_ssrc, st.seq_off, st.ts_off),
            (Ssrc(0xaaaa), Ssrc(0xaaaa), 0, 0)
        );
        // A fast path forwarded 101..=149 (as sent) until 1 s later.
        let t1 = t0 + Duration::from_secs(1);
        rw.forwarded_elsewhere(SeqNo(149), RtpTimestamp(1000 + 49 * 160), t1);
        // An older report must not pull the anchor back.
        rw.forwarded_elsewhere(SeqNo(120), RtpTimestamp(5), t1);
        let mut b = pkt(7, 7, 0xbbbb);
        let (s, t, ssrc, m) = run(&mut rw, &mut b, t1 + Duration::from_millis(20));
        assert_eq!((s, ssrc, m), (150, 0xaaaa, true));
        assert_eq!(
            t,
            1000 + 49 * 160 + 160,
            "20 ms after the fast path's last packet"
        );
        let st = rw.steady().unwrap();
        assert_eq!((st.src, st.out_ssrc), (Ssrc(0xbbbb), Ssrc(0xaaaa)));
        rw.source_changed();
        assert_eq!(rw.steady(), None, "a pending re-anchor is userspace's job");
    }

    #[test]
    fn a_switch_within_a_frame_starts_after_that_frame() {
        let t0 = Instant::now();
        let mut rw = Rewriter::new();
        for i in 0..3u32 {
            let mut b = pkt(10 + u16::try_from(i).unwrap(), 160 * i, 1);
            run(
                &mut rw,
                &mut b,
                t0 + Duration::from_millis(20 * u64::from(i)),
            );
        }
        // A new source 3 ms after the last 20 ms packet: it must not land inside it.
        let mut b = pkt(500, 7, 2);
        let (s, t, _, m) = run(&mut rw, &mut b, t0 + Duration::from_millis(43));
        assert_eq!((s, t, m), (13, 480, true));
        // A DTX gap (a step longer than any frame) is not taken for a frame length.
        let mut b = pkt(501, 7 + 8000, 2);
        run(&mut rw, &mut b, t0 + Duration::from_millis(1043));
        let mut b = pkt(9, 9, 3);
        let (_, t2, _, _) = run(&mut rw, &mut b, t0 + Duration::from_millis(1044));
        assert_eq!(t2, 480 + 8000 + 160, "still the 160-tick frame, not 8000");
    }

    #[test]
    fn clock_at_moves_the_next_anchor() {
        let t0 = Instant::now();
        let mut rw = Rewriter::new();
        let mut b = pkt(1, 1000, 1);
        run(&mut rw, &mut b, t0);
        // The packet's timestamp is an event start; the stream is 400 ticks past it.
        rw.clock_at(RtpTimestamp(1400), t0 + Duration::from_millis(50));
        let mut b = pkt(77, 77, 2);
        let (s, t, _, _) = run(&mut rw, &mut b, t0 + Duration::from_millis(70));
        assert_eq!((s, t), (2, 1400 + 160));
    }

    #[test]
    fn clock_ticks() {
        assert_eq!(ClockRate(48_000).ticks(Duration::from_millis(20)), 960);
        assert_eq!(
            ClockRate::G711.ticks(Duration::from_secs(1 << 40)),
            u32::MAX
        );
    }
}
