//! DTMF in SIP INFO bodies: `application/dtmf-relay` (`Signal=5\r\nDuration=160\r\n`,
//! the Cisco format most carriers and phones send) and `application/dtmf` (the key or
//! its RFC 4733 event code alone).
//!
//! These live in media rather than sip: the body carries a [`Digit`], which is media's
//! type, and voxgate-sip does not depend on media (it only carries bodies and their
//! content types). The engine takes an INFO's `Content-Type` and body from sip and
//! hands them here.

use std::fmt::Write as _;
use std::time::Duration;

use thiserror::Error;

use super::{Digit, DtmfEvent, DtmfSignal, DtmfSource};

/// The length taken for a digit whose body has no `Duration` (or for `application/dtmf`,
/// which never has one): what Asterisk assumes too.
pub const DEFAULT_DURATION: Duration = Duration::from_millis(100);

/// The two INFO body formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InfoContentType {
    /// `application/dtmf-relay`: `Signal=` and `Duration=` (ms) lines.
    DtmfRelay,
    /// `application/dtmf`: the key alone.
    Dtmf,
}

impl InfoContentType {
    /// From a `Content-Type` header value; parameters and case are ignored
    /// (RFC 2045 §5.1: type and subtype are case-insensitive). `None` for other types.
    #[must_use]
    pub fn from_content_type(value: &str) -> Option<InfoContentType> {
        let mime = value.split(';').next().unwrap_or("").trim();
        if mime.eq_ignore_ascii_case("application/dtmf-relay") {
            Some(InfoContentType::DtmfRelay)
        } else if mime.eq_ignore_ascii_case("application/dtmf") {
            Some(InfoContentType::Dtmf)
        } else {
            None
        }
    }

    /// The `Content-Type` value to send.
    #[must_use]
    pub fn mime(self) -> &'static str {
        match self {
            InfoContentType::DtmfRelay => "application/dtmf-relay",
            InfoContentType::Dtmf => "application/dtmf",
        }
    }
}

/// Why an INFO body is not a digit. The engine answers such an INFO with 400 (or 415
/// for a content type it does not know, which is not a body error).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum InfoBodyError {
    #[error("body is not UTF-8 text")]
    NotText,
    #[error("body is empty")]
    Empty,
    #[error("a dtmf-relay line is not key=value")]
    NotKeyValue,
    #[error("no Signal in the dtmf-relay body")]
    MissingSignal,
    #[error("the body names {0} twice")]
    Duplicate(&'static str),
    #[error("the signal is neither a key (0-9 * # A-D) nor an event code")]
    BadSignal,
    #[error("event {0} is not a DTMF digit")]
    NotADigit(u8),
    #[error("Duration is not a whole number of milliseconds")]
    BadDuration,
}

/// A parsed INFO body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InfoBody {
    pub digit: Digit,
    /// The body's `Duration`, if it had one.
    pub duration: Option<Duration>,
}

/// A key character, or an RFC 4733 §3.2 event code in decimal (`10` is `*`).
fn parse_signal(s: &str) -> Result<Digit, InfoBodyError> {
    let mut chars = s.chars();
    if let (Some(c), None) = (chars.next(), chars.next()) {
        if let Some(d) = Digit::from_char(c) {
            return Ok(d);
        }
        if c == '!' {
            // Cisco's hook flash: RFC 4733 event 16.
            return Err(InfoBodyError::NotADigit(16));
        }
    }
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(InfoBodyError::BadSignal);
    }
    let code: u8 = s.parse().map_err(|_| InfoBodyError::BadSignal)?;
    Digit::from_event_code(code).ok_or(InfoBodyError::NotADigit(code))
}

impl InfoBody {
    /// Parses a body of the given type. Tolerant of what real senders do: any case in
    /// the keys, spaces around `=` and at line ends, LF or CRLF, unknown keys, a missing
    /// `Duration`, a trailing newline or none.
    pub fn parse(content_type: InfoContentType, body: &[u8]) -> Result<InfoBody, InfoBodyError> {
        let text = std::str::from_utf8(body).map_err(|_| InfoBodyError::NotText)?;
        if text.trim().is_empty() {
            return Err(InfoBodyError::Empty);
        }
        match content_type {
            InfoContentType::Dtmf => Ok(InfoBody {
                digit: parse_signal(text.trim())?,
                duration: None,
            }),
            InfoContentType::DtmfRelay => {
                let mut digit = None;
                let mut duration = None;
                for line in text.lines() {
                    let line = line.trim();
                    if line.is_empty() {
                        continue;
                    }
                    let (key, value) = line.split_once('=').ok_or(InfoBodyError::NotKeyValue)?;
                    let (key, value) = (key.trim(), value.trim());
                    if key.eq_ignore_ascii_case("signal") {
                        if digit.is_some() {
                            return Err(InfoBodyError::Duplicate("Signal"));
                        }
                        digit = Some(parse_signal(value)?);
                    } else if key.eq_ignore_ascii_case("duration") {
                        if duration.is_some() {
                            return Err(InfoBodyError::Duplicate("Duration"));
                        }
                        if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
                            return Err(InfoBodyError::BadDuration);
                        }
                        let ms: u32 = value.parse().map_err(|_| InfoBodyError::BadDuration)?;
                        duration = Some(Duration::from_millis(u64::from(ms)));
                    }
                    // Other keys (some gateways add their own) are ignored.
                }
                Ok(InfoBody {
                    digit: digit.ok_or(InfoBodyError::MissingSignal)?,
                    duration,
                })
            }
        }
    }

    /// The body to send in that format.
    #[must_use]
    pub fn format(&self, content_type: InfoContentType) -> String {
        match content_type {
            InfoContentType::Dtmf => self.digit.as_char().to_string(),
            InfoContentType::DtmfRelay => {
                let ms = self.duration.unwrap_or(DEFAULT_DURATION).as_millis();
                let mut s = String::with_capacity(32);
                let _ = write!(s, "Signal={}\r\nDuration={ms}\r\n", self.digit.as_char());
                s
            }
        }
    }

    /// The press as the other receivers report it: an INFO carries a whole press, so
    /// its `Begin` and its `End` at once.
    #[must_use]
    pub fn signals(&self) -> [DtmfSignal; 2] {
        let e = self.to_event();
        [DtmfSignal::Begin(e), DtmfSignal::End(e)]
    }

    /// The digit as every DTMF receiver reports it.
    #[must_use]
    pub fn to_event(&self) -> DtmfEvent {
        DtmfEvent {
            digit: self.digit,
            duration: self.duration.unwrap_or(DEFAULT_DURATION),
            source: DtmfSource::Info,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn relay(body: &str) -> Result<InfoBody, InfoBodyError> {
        InfoBody::parse(InfoContentType::DtmfRelay, body.as_bytes())
    }

    fn dtmf(body: &str) -> Result<InfoBody, InfoBodyError> {
        InfoBody::parse(InfoContentType::Dtmf, body.as_bytes())
    }

    fn body(d: Digit, ms: Option<u64>) -> InfoBody {
        InfoBody {
            digit: d,
            duration: ms.map(Duration::from_millis),
        }
    }

    #[test]
    fn content_types() {
        use InfoContentType::*;
        assert_eq!(
            InfoContentType::from_content_type("application/dtmf-relay"),
            Some(DtmfRelay)
        );
        assert_eq!(
            InfoContentType::from_content_type(" Application/DTMF-Relay ; charset=utf-8"),
            Some(DtmfRelay)
        );
        assert_eq!(
            InfoContentType::from_content_type("application/dtmf"),
            Some(Dtmf)
        );
        assert_eq!(InfoContentType::from_content_type("application/sdp"), None);
        assert_eq!(InfoContentType::from_content_type(""), None);
        assert_eq!(DtmfRelay.mime(), "application/dtmf-relay");
        assert_eq!(Dtmf.mime(), "application/dtmf");
    }

    #[test]
    fn dtmf_relay_as_senders_write_it() {
        assert_eq!(
            relay("Signal=5\r\nDuration=160\r\n"),
            Ok(body(Digit::D5, Some(160)))
        );
        assert_eq!(
            relay("signal = #\nDURATION= 250"),
            Ok(body(Digit::Pound, Some(250)))
        );
        assert_eq!(relay("Signal=*"), Ok(body(Digit::Star, None)));
        assert_eq!(relay("Signal= d \r\n\r\n"), Ok(body(Digit::D, None)));
        assert_eq!(
            relay("Duration=100\r\nSignal=10\r\nVolume=10\r\n"),
            Ok(body(Digit::Star, Some(100))),
            "order free, event codes, unknown keys ignored"
        );
        assert_eq!(relay("Signal=11"), Ok(body(Digit::Pound, None)));
    }

    #[test]
    fn dtmf_bodies() {
        assert_eq!(dtmf("5"), Ok(body(Digit::D5, None)));
        assert_eq!(dtmf("#\r\n"), Ok(body(Digit::Pound, None)));
        assert_eq!(dtmf(" 15 "), Ok(body(Digit::D, None)));
        assert_eq!(dtmf("0"), Ok(body(Digit::D0, None)));
    }

    #[test]
    fn bad_bodies_are_typed_errors() {
        use InfoBodyError::*;
        assert_eq!(relay(""), Err(Empty));
        assert_eq!(relay(" \r\n"), Err(Empty));
        assert_eq!(dtmf(""), Err(Empty));
        assert_eq!(
            InfoBody::parse(InfoContentType::DtmfRelay, &[0xff, 0xfe]),
            Err(NotText)
        );
        assert_eq!(relay("Duration=160\r\n"), Err(MissingSignal));
        assert_eq!(relay("Signal 5"), Err(NotKeyValue));
        assert_eq!(relay("Signal=5\r\nSignal=6"), Err(Duplicate("Signal")));
        assert_eq!(
            relay("Signal=5\r\nDuration=1\r\nDuration=2"),
            Err(Duplicate("Duration"))
        );
        assert_eq!(relay("Signal="), Err(BadSignal));
        assert_eq!(relay("Signal=55x"), Err(BadSignal));
        assert_eq!(relay("Signal=E"), Err(BadSignal));
        assert_eq!(relay("Signal=-1"), Err(BadSignal));
        assert_eq!(relay("Signal=999"), Err(BadSignal));
        assert_eq!(relay("Signal=16"), Err(NotADigit(16)));
        assert_eq!(relay("Signal=!"), Err(NotADigit(16)));
        assert_eq!(relay("Signal=5\nDuration=abc"), Err(BadDuration));
        assert_eq!(relay("Signal=5\nDuration=-5"), Err(BadDuration));
        assert_eq!(relay("Signal=5\nDuration="), Err(BadDuration));
        assert_eq!(relay("Signal=5\nDuration=99999999999"), Err(BadDuration));
        assert_eq!(dtmf("55"), Err(NotADigit(55)));
        assert_eq!(dtmf("x"), Err(BadSignal));
        assert_eq!(dtmf("5\n6"), Err(BadSignal));
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        // A small deterministic fuzz: every body is Ok or a typed error.
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = (x % 24) as usize;
            let alphabet = b"Signal=Duration0123456789*#ABCDabcd!\r\n \x00\xff=";
            let bytes: Vec<u8> = (0..len)
                .map(|i| alphabet[((x >> (i % 8 * 8)) as usize + i) % alphabet.len()])
                .collect();
            let _ = InfoBody::parse(InfoContentType::DtmfRelay, &bytes);
            let _ = InfoBody::parse(InfoContentType::Dtmf, &bytes);
        }
    }

    #[test]
    fn format_round_trips() {
        for d in Digit::ALL {
            let b = body(d, Some(160));
            let text = b.format(InfoContentType::DtmfRelay);
            assert_eq!(relay(&text), Ok(b));
            assert_eq!(dtmf(&b.format(InfoContentType::Dtmf)), Ok(body(d, None)));
        }
        assert_eq!(
            body(Digit::D5, Some(160)).format(InfoContentType::DtmfRelay),
            "Signal=5\r\nDuration=160\r\n"
        );
        assert_eq!(
            body(Digit::Star, None).format(InfoContentType::DtmfRelay),
            "Signal=*\r\nDuration=100\r\n"
        );
        let e = body(Digit::D7, None).to_event();
        assert_eq!(e.duration, DEFAULT_DURATION);
        assert_eq!(e.source, DtmfSource::Info);
        assert_eq!(
            body(Digit::D7, None).signals(),
            [DtmfSignal::Begin(e), DtmfSignal::End(e)]
        );
    }
}
