//! Overload control for new calls (SPEC §2 "Overload", issue 11).
//!
//! Beyond its capacity a SIP server must refuse work cheaply and at once, or it collapses
//! into retransmissions: a caller that hears nothing within T1 (500 ms, RFC 3261 §17.1.1.2)
//! sends the INVITE again, the backlog grows, every answer comes later still, and goodput
//! falls towards zero (RFC 6357 §3, "congestion collapse"). So the core refuses *new* calls
//! with `503 Service Unavailable` + `Retry-After` (RFC 3261 §21.5.4) when
//!
//! - `sip.max_cps` is set and its token bucket is empty (an operator's hard limit, like
//!   Kamailio's `ratelimit`), or
//! - the INVITE waited in the socket queue longer than [`QUEUE_DELAY_LIMIT`] before the core
//!   got to it (the core's own lag, measured from the kernel's receive timestamp: the
//!   local, queue-delay based detection of RFC 6357 §5 and RFC 7339 §3).
//!
//! A *call* is a Call-ID: the first INVITE of a Call-ID is decided here, and later INVITEs
//! of the same Call-ID (the one with credentials after our 407) are admitted without a
//! second token, so `max_cps = 20` means 20 calls, not 10 challenged calls. The admitted
//! Call-IDs are kept for 64·T1 (Timer B, the longest an INVITE transaction lives) and at
//! most [`MAX_TRACKED`] of them, oldest dropped first: memory stays bounded whatever the
//! offered load. The same record gives the set-up latency (first INVITE received → first
//! 2xx sent, which the call engine reports), observed by the core as
//! `voxgate_call_setup_seconds`.
//!
//! Requests inside dialogs, responses, ACK, CANCEL and REGISTER are never refused here;
//! the core also handles them before the new INVITEs of the same batch of datagrams.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// New INVITEs that waited longer than this before the core handled them are refused
/// (the default of `sip.overload_queue_delay_ms`): well below T1 (500 ms), so the 503
/// reaches the caller before it retransmits.
pub const QUEUE_DELAY_LIMIT: Duration = Duration::from_millis(200);

/// How long an admitted Call-ID is remembered: 64·T1, Timer B (RFC 3261 §17.1.1.2).
pub const ADMITTED_FOR: Duration = Duration::from_secs(32);

/// At most this many admitted Call-IDs are remembered (about 1 MB); beyond it the oldest
/// are forgotten first (their later INVITEs are then decided again, their set-up latency
/// not observed).
pub const MAX_TRACKED: usize = 16_384;

/// Why a new INVITE was refused: the `reason` label of
/// `voxgate_sip_overload_rejected_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// `sip.max_cps` exceeded.
    MaxCps,
    /// The core is behind: the INVITE waited longer than [`QUEUE_DELAY_LIMIT`].
    QueueDelay,
}

impl Refusal {
    pub fn label(self) -> &'static str {
        match self {
            Refusal::MaxCps => "max_cps",
            Refusal::QueueDelay => "queue_delay",
        }
    }

    /// Seconds for `Retry-After`. The bucket refills within a second. A lagging core is
    /// asked for a little longer, spread over 2–4 s so refused callers do not all come
    /// back in the same instant (RFC 6357 §4, the synchronisation problem of Retry-After).
    pub fn retry_after(self, random: u32) -> u32 {
        match self {
            Refusal::MaxCps => 1,
            Refusal::QueueDelay => 2 + random % 3,
        }
    }
}

/// A token bucket of `rate` tokens a second holding at most `burst`.
#[derive(Debug)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    at: Instant,
}

impl TokenBucket {
    /// Starts full.
    pub fn new(rate: u32, burst: u32, now: Instant) -> TokenBucket {
        let burst = f64::from(burst.max(1));
        TokenBucket {
            rate: f64::from(rate),
            burst,
            tokens: burst,
            at: now,
        }
    }

    /// Takes a token if there is one.
    pub fn take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.at = now.max(self.at);
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// The admission decisions for new calls, owned by the SIP core (no lock, time passed in).
#[derive(Debug)]
pub struct Overload {
    bucket: Option<TokenBucket>,
    queue_delay_limit: Duration,
    /// Admitted Call-IDs → when their first INVITE was received; `None` once a 2xx was sent.
    admitted: HashMap<String, Option<Instant>>,
    /// Admission order, for expiry and the size bound.
    order: VecDeque<(Instant, String)>,
}

impl Overload {
    /// `max_cps` 0 = no hard limit. The bucket holds one second of calls: a burst of
    /// `max_cps` at once is admitted, then `max_cps` a second. `queue_delay_limit` zero
    /// turns the queue-delay check off.
    pub fn new(max_cps: u32, queue_delay_limit: Duration, now: Instant) -> Overload {
        Overload {
            bucket: (max_cps > 0).then(|| TokenBucket::new(max_cps, max_cps, now)),
            queue_delay_limit,
            admitted: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// Decides a new out-of-dialog INVITE of `call_id` received at `arrived` (kernel
    /// timestamp, or when the core read it) and handled at `now`.
    pub fn admit(&mut self, call_id: &str, arrived: Instant, now: Instant) -> Result<(), Refusal> {
        self.expire(now);
        if self.admitted.contains_key(call_id) {
            // A later INVITE of a call we took on (the authenticated retry after 407):
            // finishing it is what keeps goodput up.
            return Ok(());
        }
        if !self.queue_delay_limit.is_zero()
            && now.saturating_duration_since(arrived) > self.queue_delay_limit
        {
            return Err(Refusal::QueueDelay);
        }
        if let Some(bucket) = &mut self.bucket {
            if !bucket.take(now) {
                return Err(Refusal::MaxCps);
            }
        }
        while self.order.len() >= MAX_TRACKED {
            if let Some((_, old)) = self.order.pop_front() {
                self.admitted.remove(&old);
            }
        }
        self.admitted.insert(call_id.to_owned(), Some(arrived));
        self.order.push_back((now, call_id.to_owned()));
        Ok(())
    }

    /// A 2xx to an INVITE of `call_id` was sent at `now`: the call's set-up time, the
    /// first time only (2xx retransmissions and re-INVITEs give `None`).
    pub fn answered(&mut self, call_id: &str, now: Instant) -> Option<Duration> {
        let first = self.admitted.get_mut(call_id)?.take()?;
        Some(now.saturating_duration_since(first))
    }

    fn expire(&mut self, now: Instant) {
        while self
            .order
            .front()
            .is_some_and(|(at, _)| now.saturating_duration_since(*at) > ADMITTED_FOR)
        {
            if let Some((_, old)) = self.order.pop_front() {
                self.admitted.remove(&old);
            }
        }
    }

    /// Admitted Call-IDs remembered now.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn bucket_admits_a_burst_then_the_rate() {
        let t0 = Instant::now();
        let mut o = Overload::new(20, QUEUE_DELAY_LIMIT, t0);
        let admitted = (0..100)
            .filter(|i| o.admit(&format!("c{i}"), t0, t0).is_ok())
            .count();
        assert_eq!(admitted, 20, "a full bucket holds one second of calls");
        assert_eq!(o.admit("late", t0, t0), Err(Refusal::MaxCps));
        // 100 ms later: 2 more tokens.
        let t1 = t0 + ms(100);
        let more = (0..10)
            .filter(|i| o.admit(&format!("d{i}"), t1, t1).is_ok())
            .count();
        assert_eq!(more, 2);
    }

    #[test]
    fn later_invites_of_an_admitted_call_take_no_token() {
        let t0 = Instant::now();
        let mut o = Overload::new(1, QUEUE_DELAY_LIMIT, t0);
        assert_eq!(o.admit("a", t0, t0), Ok(()));
        assert_eq!(o.admit("b", t0, t0), Err(Refusal::MaxCps));
        // The authenticated INVITE after the 407, even when the core is behind.
        assert_eq!(o.admit("a", t0, t0 + ms(300)), Ok(()));
    }

    #[test]
    fn queue_delay_beyond_the_limit_refuses_new_calls_only() {
        let t0 = Instant::now();
        let mut o = Overload::new(0, QUEUE_DELAY_LIMIT, t0);
        assert_eq!(o.admit("x", t0, t0 + ms(199)), Ok(()));
        assert_eq!(o.admit("y", t0, t0 + ms(201)), Err(Refusal::QueueDelay));
        assert_eq!(o.admit("x", t0, t0 + ms(201)), Ok(()));
        assert_eq!(o.len(), 1, "a refused call is not remembered");
        let mut off = Overload::new(0, Duration::ZERO, t0);
        assert_eq!(off.admit("z", t0, t0 + ms(3000)), Ok(()), "0 turns it off");
    }

    #[test]
    fn set_up_latency_is_observed_once() {
        let t0 = Instant::now();
        let mut o = Overload::new(0, QUEUE_DELAY_LIMIT, t0);
        assert_eq!(o.admit("x", t0, t0 + ms(5)), Ok(()));
        assert_eq!(o.answered("x", t0 + ms(40)), Some(ms(40)));
        assert_eq!(o.answered("x", t0 + ms(90)), None, "2xx retransmission");
        assert_eq!(o.answered("other", t0 + ms(90)), None);
    }

    #[test]
    fn memory_is_bounded_and_entries_expire() {
        let t0 = Instant::now();
        let mut o = Overload::new(0, QUEUE_DELAY_LIMIT, t0);
        for i in 0..MAX_TRACKED + 10 {
            assert_eq!(o.admit(&format!("c{i}"), t0, t0), Ok(()));
        }
        assert_eq!(o.len(), MAX_TRACKED);
        assert_eq!(o.admitted.len(), MAX_TRACKED);
        assert!(!o.admitted.contains_key("c0"), "oldest dropped first");
        let later = t0 + ADMITTED_FOR + ms(1);
        assert_eq!(o.admit("new", later, later), Ok(()));
        assert_eq!(o.len(), 1);
        assert_eq!(o.admitted.len(), 1);
    }

    #[test]
    fn retry_after_values() {
        assert_eq!(Refusal::MaxCps.retry_after(7), 1);
        for r in 0..10 {
            assert!((2..=4).contains(&Refusal::QueueDelay.retry_after(r)));
        }
    }
}
