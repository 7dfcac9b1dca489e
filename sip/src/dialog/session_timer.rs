//! Session timers (RFC 4028): Session-Expires and Min-SE, negotiation (with 422 Session
//! Interval Too Small), and [`SessionTimer`], a sans-IO clock that says when the refresher
//! re-INVITEs/UPDATEs and when the other side gives up with BYE.
//!
//! "uac"/"uas" always name the roles in the transaction that negotiated the interval (the
//! initial INVITE or the last refresh), not the dialog's roles (RFC 4028 §7.1, §9).

use std::fmt;
use std::time::{Duration, Instant};

use crate::message::{HeaderName, Message, MessageBuilder};

use super::is_token;

/// RFC 4028 §4: no session interval is below 90 s.
pub const ABSOLUTE_MIN_SE: u32 = 90;

/// Why a Session-Expires or Min-SE header is unusable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SessionTimerError {
    #[error("malformed Session-Expires")]
    BadSessionExpires,
    #[error("malformed Min-SE")]
    BadMinSe,
    #[error("a 422 without a usable Min-SE (RFC 4028 §6)")]
    MissingMinSe,
}

/// Who sends the refreshes (RFC 4028 §4 `refresher` parameter).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Refresher {
    Uac,
    Uas,
}

impl Refresher {
    pub fn as_str(self) -> &'static str {
        match self {
            Refresher::Uac => "uac",
            Refresher::Uas => "uas",
        }
    }
}

/// A Session-Expires value: `delta-seconds *(;se-params)` (RFC 4028 §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionExpires {
    /// Seconds.
    pub interval: u32,
    pub refresher: Option<Refresher>,
}

impl SessionExpires {
    /// Parses one header value. Unknown parameters are ignored (§4 generic-param); an
    /// unknown refresher value is an error.
    pub fn parse(value: &str) -> Result<SessionExpires, SessionTimerError> {
        let err = SessionTimerError::BadSessionExpires;
        let mut parts = value.split(';');
        let interval = parse_delta(parts.next().unwrap_or("")).ok_or(err)?;
        let mut refresher = None;
        for p in parts {
            let (name, val) = p.split_once('=').unwrap_or((p, ""));
            let (name, val) = (name.trim(), val.trim());
            if !is_token(name) {
                return Err(err);
            }
            if name.eq_ignore_ascii_case("refresher") {
                refresher = Some(if val.eq_ignore_ascii_case("uac") {
                    Refresher::Uac
                } else if val.eq_ignore_ascii_case("uas") {
                    Refresher::Uas
                } else {
                    return Err(err);
                });
            }
        }
        Ok(SessionExpires {
            interval,
            refresher,
        })
    }

    /// The message's Session-Expires (or compact `x`), if any; more than one is an error.
    pub fn from_message(msg: &Message) -> Result<Option<SessionExpires>, SessionTimerError> {
        let mut it = msg.header_values(HeaderName::SessionExpires);
        let Some(v) = it.next() else { return Ok(None) };
        if it.next().is_some() {
            return Err(SessionTimerError::BadSessionExpires);
        }
        SessionExpires::parse(v).map(Some)
    }
}

impl fmt::Display for SessionExpires {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.interval)?;
        if let Some(r) = self.refresher {
            write!(f, ";refresher={}", r.as_str())?;
        }
        Ok(())
    }
}

/// The message's Min-SE (RFC 4028 §5), parameters ignored.
pub fn min_se(msg: &Message) -> Result<Option<u32>, SessionTimerError> {
    let mut it = msg.header_values(HeaderName::MinSe);
    let Some(v) = it.next() else { return Ok(None) };
    if it.next().is_some() {
        return Err(SessionTimerError::BadMinSe);
    }
    parse_delta(v.split(';').next().unwrap_or(""))
        .map(Some)
        .ok_or(SessionTimerError::BadMinSe)
}

fn parse_delta(s: &str) -> Option<u32> {
    let s = s.trim();
    if s.is_empty() || s.len() > 10 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok().filter(|n| *n > 0)
}

fn supports_timer(msg: &Message) -> bool {
    msg.supported()
        .chain(msg.require())
        .any(|t| t.trim().eq_ignore_ascii_case("timer"))
}

/// Our session timer policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionTimerConfig {
    /// The interval we ask for and the longest we accept, seconds (RFC 4028 §4
    /// recommends 1800).
    pub interval: u32,
    /// The shortest interval we accept (Min-SE), at least 90.
    pub min_se: u32,
    /// Use a timer even when the peer did not ask for one (§9 allows the UAS to).
    pub impose: bool,
    /// Who should refresh when we get to choose.
    pub prefer: Refresher,
}

impl Default for SessionTimerConfig {
    fn default() -> Self {
        SessionTimerConfig {
            interval: 1800,
            min_se: ABSOLUTE_MIN_SE,
            impose: true,
            prefer: Refresher::Uac,
        }
    }
}

impl SessionTimerConfig {
    fn min_se(&self) -> u32 {
        self.min_se.max(ABSOLUTE_MIN_SE)
    }

    /// The headers for an INVITE (or refresh) we send as UAC (§7.1): Session-Expires,
    /// Min-SE and Supported: timer. `interval` is ours or the one learnt from a 422.
    pub fn uac_headers(&self, interval: u32) -> [(&'static str, String); 3] {
        [
            ("Session-Expires", interval.max(self.min_se()).to_string()),
            ("Min-SE", self.min_se().to_string()),
            ("Supported", "timer".to_owned()),
        ]
    }
}

/// What a UAS does with an INVITE's session timer request (RFC 4028 §9).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UasDecision {
    /// Reject with 422 carrying our Min-SE ([`response_422`]).
    TooSmall { min_se: u32 },
    /// No session timer on this session.
    NoTimer,
    /// Answer 2xx with this Session-Expires (refresher always set), and `Require: timer`
    /// when the UAC supports the extension.
    Accept {
        session_expires: SessionExpires,
        require_timer: bool,
    },
}

impl UasDecision {
    /// Adds Session-Expires (and Require: timer) to the 2xx being built.
    pub fn apply(&self, b: MessageBuilder) -> MessageBuilder {
        match self {
            UasDecision::Accept {
                session_expires,
                require_timer,
            } => {
                let b = b.header("Session-Expires", &session_expires.to_string());
                if *require_timer {
                    b.header("Require", "timer")
                } else {
                    b
                }
            }
            _ => b,
        }
    }
}

/// RFC 4028 §9: the UAS's decision for an incoming (re-)INVITE or UPDATE.
pub fn negotiate_uas(
    cfg: &SessionTimerConfig,
    req: &Message,
) -> Result<UasDecision, SessionTimerError> {
    let requested = SessionExpires::from_message(req)?;
    let their_min = min_se(req)?.unwrap_or(ABSOLUTE_MIN_SE);
    let uac_supports = supports_timer(req);
    let ours_min = cfg.min_se();
    let (interval, refresher) = match requested {
        // §9: too brief for us: 422 with our Min-SE.
        Some(se) if se.interval < ours_min => {
            return Ok(UasDecision::TooSmall { min_se: ours_min })
        }
        // We may shorten it, never below either side's Min-SE (§9).
        Some(se) => (
            se.interval
                .min(cfg.interval)
                .max(their_min.max(ours_min))
                .min(se.interval),
            se.refresher,
        ),
        None if cfg.impose => (cfg.interval.max(their_min).max(ours_min), None),
        None => return Ok(UasDecision::NoTimer),
    };
    // §9: without UAC support only we can refresh.
    let refresher = match refresher {
        Some(r) if uac_supports || r == Refresher::Uas => r,
        _ if uac_supports => cfg.prefer,
        _ => Refresher::Uas,
    };
    Ok(UasDecision::Accept {
        session_expires: SessionExpires {
            interval,
            refresher: Some(refresher),
        },
        require_timer: uac_supports,
    })
}

/// The 422 for `req` (RFC 4028 §6) with our Min-SE.
pub fn response_422(req: &Message, min_se: u32, to_tag: Option<&str>) -> MessageBuilder {
    MessageBuilder::response_to(req, 422, "Session Interval Too Small", to_tag)
        .header("Min-SE", &min_se.to_string())
}

/// RFC 4028 §7.4: after a 422, the interval to retry with: the larger of the 422's Min-SE
/// and what we asked for.
pub fn uac_retry_interval(asked: u32, resp_422: &Message) -> Result<u32, SessionTimerError> {
    let min = min_se(resp_422)
        .map_err(|_| SessionTimerError::MissingMinSe)?
        .ok_or(SessionTimerError::MissingMinSe)?;
    Ok(asked.max(min))
}

/// RFC 4028 §7.2: the session timer a 2xx to our (re-)INVITE or UPDATE establishes. No
/// Session-Expires: no timer. Without a refresher parameter (a proxy added the header and
/// the UAS does not support timers) we, the UAC, refresh.
pub fn uac_negotiated(resp: &Message) -> Result<Option<SessionExpires>, SessionTimerError> {
    Ok(
        SessionExpires::from_message(resp)?.map(|se| SessionExpires {
            interval: se.interval,
            refresher: Some(se.refresher.unwrap_or(Refresher::Uac)),
        }),
    )
}

/// What a [`SessionTimer`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionTimerEvent {
    /// We are the refresher and half the interval passed: send a re-INVITE or UPDATE with
    /// Session-Expires (RFC 4028 §10), then call [`SessionTimer::refreshed`] on its 2xx.
    Refresh,
    /// No refresh in time: send BYE (§10).
    Expired,
}

/// The running session timer of one dialog (RFC 4028 §10), driven by `now`.
#[derive(Debug, Clone)]
pub struct SessionTimer {
    interval: Duration,
    we_refresh: bool,
    refresh_at: Option<Instant>,
    expire_at: Instant,
    expired: bool,
    event: Option<SessionTimerEvent>,
}

impl SessionTimer {
    /// Starts from a negotiated Session-Expires (refresher set; `None` counts as UAS)
    /// at `now`, the time of the 2xx. `we_are` is our role in the negotiating transaction.
    pub fn new(se: &SessionExpires, we_are: Refresher, now: Instant) -> SessionTimer {
        let mut t = SessionTimer {
            interval: Duration::ZERO,
            we_refresh: false,
            refresh_at: None,
            expire_at: now,
            expired: false,
            event: None,
        };
        t.refreshed(se, we_are, now);
        t
    }

    /// A refresh succeeded (2xx sent or received with Session-Expires) at `now`: restart
    /// with the newly negotiated values.
    pub fn refreshed(&mut self, se: &SessionExpires, we_are: Refresher, now: Instant) {
        let secs = u64::from(se.interval.max(1));
        self.interval = Duration::from_secs(secs);
        self.we_refresh = se.refresher.unwrap_or(Refresher::Uas) == we_are;
        self.event = None;
        self.expired = false;
        if self.we_refresh {
            // §10: refresh at half the interval; if it never succeeds the session still
            // ends at the full interval.
            self.refresh_at = Some(now + self.interval / 2);
            self.expire_at = now + self.interval;
        } else {
            // §10: BYE before the expiry by min(32 s, interval/3), so a late refresh
            // crossing the network is not cut off by our clock alone.
            let margin = Duration::from_secs(32).min(self.interval / 3);
            self.refresh_at = None;
            self.expire_at = now + self.interval - margin;
        }
    }

    pub fn we_refresh(&self) -> bool {
        self.we_refresh
    }

    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// When [`SessionTimerEvent::Expired`] fires.
    pub fn expires_at(&self) -> Instant {
        self.expire_at
    }

    /// When the next event is due; `None` after [`SessionTimerEvent::Expired`].
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.expired {
            return None;
        }
        Some(
            self.refresh_at
                .map_or(self.expire_at, |r| r.min(self.expire_at)),
        )
    }

    /// Whether [`SessionTimerEvent::Expired`] has fired.
    pub fn is_expired(&self) -> bool {
        self.expired
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        if self.expired {
            return;
        }
        if now >= self.expire_at {
            self.expired = true;
            self.refresh_at = None;
            self.event = Some(SessionTimerEvent::Expired);
        } else if self.refresh_at.is_some_and(|r| now >= r) {
            self.refresh_at = None;
            self.event = Some(SessionTimerEvent::Refresh);
        }
    }

    pub fn poll_event(&mut self) -> Option<SessionTimerEvent> {
        self.event.take()
    }
}
