//! A trunk's limits (SPEC §4 trunks: `max_cps`, `max_calls_per_minute`,
//! `max_concurrent_calls`) as a sans-IO pacer: calls over a limit wait in order instead of
//! being refused, as carriers' own dialers queue them. The engine asks when the next
//! INVITE may go to the carrier and whether a call may take a slot; time is passed in.
//!
//! `max_cps` spaces INVITEs evenly (one every `1/max_cps` seconds: the carrier sees the
//! limit at every instant, not a burst per second); `max_calls_per_minute` caps the
//! INVITEs in any sliding 60 s; `max_concurrent_calls` caps the calls holding a slot.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// A trunk's limits; `None` (or 0) is unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TrunkLimits {
    pub max_cps: Option<u32>,
    pub max_calls_per_minute: Option<u32>,
    pub max_concurrent_calls: Option<u32>,
}

const MINUTE: Duration = Duration::from_secs(60);

/// One trunk's sending history and slots.
#[derive(Debug, Default)]
pub struct Pacer {
    pub limits: TrunkLimits,
    /// INVITEs sent within the last minute, oldest first.
    sent: VecDeque<Instant>,
    /// Calls holding a slot.
    active: usize,
}

impl Pacer {
    /// The earliest time the next INVITE may be sent (at or before `now`: at once).
    pub fn next_send(&self) -> Option<Instant> {
        let mut at: Option<Instant> = None;
        if let (Some(cps), Some(last)) = (self.limits.max_cps.filter(|c| *c > 0), self.sent.back())
        {
            at = Some(*last + Duration::from_secs(1) / cps);
        }
        if let Some(per_minute) = self.limits.max_calls_per_minute.filter(|n| *n > 0) {
            let n = usize::try_from(per_minute).unwrap_or(usize::MAX);
            if self.sent.len() >= n {
                // The window frees up when the n-th most recent send turns a minute old.
                let t = self.sent[self.sent.len() - n] + MINUTE;
                at = Some(at.map_or(t, |a| a.max(t)));
            }
        }
        at
    }

    pub fn may_send(&self, now: Instant) -> bool {
        self.next_send().is_none_or(|t| t <= now)
    }

    pub fn record_send(&mut self, now: Instant) {
        while self.sent.front().is_some_and(|t| *t + MINUTE <= now) {
            self.sent.pop_front();
        }
        self.sent.push_back(now);
    }

    pub fn has_slot(&self) -> bool {
        self.limits
            .max_concurrent_calls
            .filter(|n| *n > 0)
            .is_none_or(|n| self.active < usize::try_from(n).unwrap_or(usize::MAX))
    }

    pub fn take_slot(&mut self) {
        self.active += 1;
    }

    pub fn release_slot(&mut self) {
        self.active = self.active.saturating_sub(1);
    }

    pub fn active(&self) -> usize {
        self.active
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(cps: Option<u32>, per_minute: Option<u32>, concurrent: Option<u32>) -> TrunkLimits {
        TrunkLimits {
            max_cps: cps,
            max_calls_per_minute: per_minute,
            max_concurrent_calls: concurrent,
        }
    }

    #[test]
    fn cps_spaces_invites_evenly() {
        let t0 = Instant::now();
        let mut p = Pacer {
            limits: limits(Some(2), None, None),
            ..Pacer::default()
        };
        assert!(p.may_send(t0));
        p.record_send(t0);
        assert!(!p.may_send(t0 + Duration::from_millis(499)));
        assert_eq!(p.next_send(), Some(t0 + Duration::from_millis(500)));
        assert!(p.may_send(t0 + Duration::from_millis(500)));
    }

    #[test]
    fn per_minute_is_a_sliding_window() {
        let t0 = Instant::now();
        let mut p = Pacer {
            limits: limits(None, Some(3), None),
            ..Pacer::default()
        };
        for i in 0..3 {
            let t = t0 + Duration::from_secs(i);
            assert!(p.may_send(t));
            p.record_send(t);
        }
        assert!(!p.may_send(t0 + Duration::from_secs(59)));
        assert_eq!(p.next_send(), Some(t0 + MINUTE));
        p.record_send(t0 + MINUTE);
        assert_eq!(p.next_send(), Some(t0 + MINUTE + Duration::from_secs(1)));
    }

    #[test]
    fn slots_and_unlimited() {
        let mut p = Pacer {
            limits: limits(None, None, Some(1)),
            ..Pacer::default()
        };
        assert!(p.has_slot());
        p.take_slot();
        assert!(!p.has_slot());
        p.release_slot();
        assert!(p.has_slot());
        let free = Pacer::default();
        assert!(free.may_send(Instant::now()) && free.has_slot());
        // 0 means unlimited, as an unset field does.
        let zero = Pacer {
            limits: limits(Some(0), Some(0), Some(0)),
            ..Pacer::default()
        };
        assert!(zero.next_send().is_none() && zero.has_slot());
    }
}
