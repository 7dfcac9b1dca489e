//! Per-source protection in front of the SIP core: a token bucket per source IP and the
//! authentication-failure ban of SPEC §2.
//!
//! Both maps are bounded: a flood from many spoofed addresses evicts the least recently seen
//! sources instead of growing memory without limit.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Most sources tracked at once by each table; beyond this the stalest entries go.
const MAX_SOURCES: usize = 65_536;

/// A token bucket per source IP: `rate` messages per second, bursts up to `burst`.
#[derive(Debug)]
pub struct RateGuard {
    rate: f64,
    burst: f64,
    buckets: HashMap<IpAddr, Bucket>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

impl RateGuard {
    /// `rate == 0` disables the guard.
    pub fn new(rate: u32, burst: u32) -> RateGuard {
        RateGuard {
            rate: f64::from(rate),
            burst: f64::from(burst.max(rate).max(1)),
            buckets: HashMap::new(),
        }
    }

    /// Whether a message from `ip` may be processed now.
    pub fn allow(&mut self, ip: IpAddr, now: Instant) -> bool {
        if self.rate == 0.0 {
            return true;
        }
        if self.buckets.len() >= MAX_SOURCES && !self.buckets.contains_key(&ip) {
            self.evict_idle(now);
        }
        let (rate, burst) = (self.rate, self.burst);
        let bucket = self.buckets.entry(ip).or_insert(Bucket {
            tokens: burst,
            last: now,
        });
        let elapsed = now.saturating_duration_since(bucket.last).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * rate).min(burst);
        bucket.last = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Drops buckets that have refilled completely (they carry no state worth keeping); if
    /// none has, drops the oldest half.
    fn evict_idle(&mut self, now: Instant) {
        let full_after = Duration::from_secs_f64(self.burst / self.rate);
        self.buckets
            .retain(|_, b| now.saturating_duration_since(b.last) < full_after);
        if self.buckets.len() >= MAX_SOURCES {
            let mut ages: Vec<Instant> = self.buckets.values().map(|b| b.last).collect();
            ages.sort_unstable();
            let cutoff = ages[ages.len() / 2];
            self.buckets.retain(|_, b| b.last > cutoff);
        }
    }

    /// Sources currently tracked.
    pub fn tracked(&self) -> usize {
        self.buckets.len()
    }
}

/// Bans a source IP after `after` failed authentications within `window` (SPEC §2:
/// `sip.auth_ban_after`, `sip.auth_ban_window_seconds`, `sip.auth_ban_seconds`).
#[derive(Debug)]
pub struct BanGuard {
    after: usize,
    window: Duration,
    duration: Duration,
    failures: HashMap<IpAddr, VecDeque<Instant>>,
    banned: HashMap<IpAddr, Instant>,
}

impl BanGuard {
    /// `after == 0` disables banning.
    pub fn new(after: u32, window: Duration, duration: Duration) -> BanGuard {
        BanGuard {
            after: after as usize,
            window,
            duration,
            failures: HashMap::new(),
            banned: HashMap::new(),
        }
    }

    /// Whether `ip` is banned now; a lapsed ban is forgotten here.
    pub fn is_banned(&mut self, ip: IpAddr, now: Instant) -> bool {
        match self.banned.get(&ip) {
            Some(&until) if now < until => true,
            Some(_) => {
                self.banned.remove(&ip);
                false
            }
            None => false,
        }
    }

    /// Records a failed authentication; returns true when this failure starts a ban.
    pub fn record_failure(&mut self, ip: IpAddr, now: Instant) -> bool {
        if self.after == 0 {
            return false;
        }
        if self.failures.len() >= MAX_SOURCES && !self.failures.contains_key(&ip) {
            self.prune(now);
            if self.failures.len() >= MAX_SOURCES {
                // Every tracked source failed recently: forget an arbitrary one rather than
                // grow; a real attacker from it still needs `after` fresh failures.
                if let Some(&victim) = self.failures.keys().next() {
                    self.failures.remove(&victim);
                }
            }
        }
        let window = self.window;
        let times = self.failures.entry(ip).or_default();
        while times
            .front()
            .is_some_and(|&t| now.saturating_duration_since(t) >= window)
        {
            times.pop_front();
        }
        times.push_back(now);
        if times.len() >= self.after {
            self.failures.remove(&ip);
            if self.banned.len() >= MAX_SOURCES {
                self.banned.retain(|_, &mut until| until > now);
            }
            self.banned.insert(ip, now + self.duration);
            true
        } else {
            false
        }
    }

    /// Forgets failures older than the window and lapsed bans.
    pub fn prune(&mut self, now: Instant) {
        let window = self.window;
        self.failures.retain(|_, times| {
            times
                .back()
                .is_some_and(|&t| now.saturating_duration_since(t) < window)
        });
        self.banned.retain(|_, &mut until| until > now);
    }

    pub fn banned_count(&self) -> usize {
        self.banned.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, last])
    }

    #[test]
    fn bucket_allows_burst_then_refills_at_rate() {
        let t0 = Instant::now();
        let mut g = RateGuard::new(10, 20);
        let allowed = (0..30).filter(|_| g.allow(ip(1), t0)).count();
        assert_eq!(allowed, 20);
        // 0.5 s later five tokens are back.
        let t1 = t0 + Duration::from_millis(500);
        let allowed = (0..30).filter(|_| g.allow(ip(1), t1)).count();
        assert_eq!(allowed, 5);
        // Another source has its own bucket.
        assert!(g.allow(ip(2), t1));
    }

    #[test]
    fn zero_rate_disables_the_guard() {
        let t0 = Instant::now();
        let mut g = RateGuard::new(0, 0);
        assert!((0..100_000).all(|_| g.allow(ip(1), t0)));
        assert_eq!(g.tracked(), 0);
    }

    #[test]
    fn rate_table_stays_bounded_under_spoofed_flood() {
        let t0 = Instant::now();
        let mut g = RateGuard::new(100, 100);
        for i in 0..(MAX_SOURCES as u32 + 5_000) {
            g.allow(IpAddr::from(i.to_be_bytes()), t0);
        }
        assert!(g.tracked() <= MAX_SOURCES);
    }

    #[test]
    fn ban_after_n_failures_in_window_then_lifts() {
        let t0 = Instant::now();
        let mut g = BanGuard::new(5, Duration::from_secs(600), Duration::from_secs(600));
        for i in 0..4 {
            assert!(!g.record_failure(ip(1), t0 + Duration::from_secs(i)));
        }
        assert!(!g.is_banned(ip(1), t0 + Duration::from_secs(4)));
        assert!(g.record_failure(ip(1), t0 + Duration::from_secs(5)));
        assert!(g.is_banned(ip(1), t0 + Duration::from_secs(6)));
        assert!(!g.is_banned(ip(2), t0 + Duration::from_secs(6)));
        assert!(g.is_banned(ip(1), t0 + Duration::from_secs(604)));
        assert!(!g.is_banned(ip(1), t0 + Duration::from_secs(605)));
        assert_eq!(g.banned_count(), 0);
    }

    #[test]
    fn failures_outside_the_window_do_not_count() {
        let t0 = Instant::now();
        let mut g = BanGuard::new(3, Duration::from_secs(10), Duration::from_secs(60));
        g.record_failure(ip(1), t0);
        g.record_failure(ip(1), t0 + Duration::from_secs(1));
        // The first two have aged out by now.
        assert!(!g.record_failure(ip(1), t0 + Duration::from_secs(12)));
        assert!(!g.record_failure(ip(1), t0 + Duration::from_secs(13)));
        assert!(g.record_failure(ip(1), t0 + Duration::from_secs(14)));
    }

    #[test]
    fn zero_disables_banning() {
        let t0 = Instant::now();
        let mut g = BanGuard::new(0, Duration::from_secs(10), Duration::from_secs(60));
        for _ in 0..100 {
            assert!(!g.record_failure(ip(1), t0));
        }
        assert!(!g.is_banned(ip(1), t0));
    }
}
