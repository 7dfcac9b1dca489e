//! DTMF three ways, one digit type: RFC 4733 telephone-events ([`rfc4733`]), SIP INFO
//! bodies ([`info`]) and in-band tones ([`inband`]).
//!
//! Every receiver reports the same thing, a [`DtmfSignal`]: `Begin` once per key press,
//! as early as the press is certain, then `End` with its final length. The engine raises
//! one `call.dtmf` per `Begin` (SPEC §5) and uses `End` to stop a digit it relays to the
//! other leg in that leg's own method. A leg's receivers feed one [`DtmfArbiter`],
//! so a press that arrives two ways at once still makes one `call.dtmf`.
//!
//! Sans-IO like the rest of the crate: receivers take packets, bodies or PCM and `now`
//! (or sample counts), and hand back signals through `poll_signal`.

use std::fmt;
use std::time::Duration;

pub mod arbiter;
pub mod inband;
pub mod info;
pub mod rfc4733;

pub use arbiter::DtmfArbiter;
pub use inband::{DetectorConfig, InbandDetector, ToneGenerator, ToneLevels};
pub use info::{InfoBody, InfoBodyError, InfoContentType};
pub use rfc4733::{
    EventPacket, ReceiverConfig, Rfc4733Receiver, Rfc4733Sender, SenderConfig, TelephoneEvent,
    TelephoneEventError,
};

/// A DTMF key: the sixteen keys of the 4 × 4 keypad (ITU-T Q.23), numbered as RFC 4733
/// §3.2 numbers their events (0-9, `*` = 10, `#` = 11, A-D = 12-15).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Digit {
    D0,
    D1,
    D2,
    D3,
    D4,
    D5,
    D6,
    D7,
    D8,
    D9,
    Star,
    Pound,
    A,
    B,
    C,
    D,
}

/// ITU-T Q.23 low group (rows), Hz.
pub const LOW_GROUP: [f32; 4] = [697.0, 770.0, 852.0, 941.0];
/// ITU-T Q.23 high group (columns), Hz.
pub const HIGH_GROUP: [f32; 4] = [1209.0, 1336.0, 1477.0, 1633.0];

impl Digit {
    /// All sixteen, in event-code order.
    pub const ALL: [Digit; 16] = [
        Digit::D0,
        Digit::D1,
        Digit::D2,
        Digit::D3,
        Digit::D4,
        Digit::D5,
        Digit::D6,
        Digit::D7,
        Digit::D8,
        Digit::D9,
        Digit::Star,
        Digit::Pound,
        Digit::A,
        Digit::B,
        Digit::C,
        Digit::D,
    ];

    /// The digit for an RFC 4733 §3.2 event code; `None` for 16 (flash) and the rest,
    /// which are events but not digits.
    #[must_use]
    pub fn from_event_code(code: u8) -> Option<Digit> {
        Digit::ALL.get(usize::from(code)).copied()
    }

    /// RFC 4733 §3.2 event code.
    #[must_use]
    pub fn event_code(self) -> u8 {
        self as u8
    }

    /// The key's character, `0-9 * # A-D`; lower-case `a-d` are accepted too.
    #[must_use]
    pub fn from_char(c: char) -> Option<Digit> {
        Some(match c {
            '0'..='9' => Digit::ALL[(c as usize) - ('0' as usize)],
            '*' => Digit::Star,
            '#' => Digit::Pound,
            'A' | 'a' => Digit::A,
            'B' | 'b' => Digit::B,
            'C' | 'c' => Digit::C,
            'D' | 'd' => Digit::D,
            _ => return None,
        })
    }

    /// The key's character as the API and webhooks show it.
    #[must_use]
    pub fn as_char(self) -> char {
        b"0123456789*#ABCD"[usize::from(self.event_code())] as char
    }

    /// Row (low group) and column (high group) index on the keypad (ITU-T Q.23 Fig. 1).
    #[must_use]
    pub fn row_col(self) -> (usize, usize) {
        match self {
            Digit::D1 => (0, 0),
            Digit::D2 => (0, 1),
            Digit::D3 => (0, 2),
            Digit::A => (0, 3),
            Digit::D4 => (1, 0),
            Digit::D5 => (1, 1),
            Digit::D6 => (1, 2),
            Digit::B => (1, 3),
            Digit::D7 => (2, 0),
            Digit::D8 => (2, 1),
            Digit::D9 => (2, 2),
            Digit::C => (2, 3),
            Digit::Star => (3, 0),
            Digit::D0 => (3, 1),
            Digit::Pound => (3, 2),
            Digit::D => (3, 3),
        }
    }

    /// The key at a keypad row and column; `None` outside 4 × 4.
    #[must_use]
    pub fn from_row_col(row: usize, col: usize) -> Option<Digit> {
        const KEYS: [[Digit; 4]; 4] = [
            [Digit::D1, Digit::D2, Digit::D3, Digit::A],
            [Digit::D4, Digit::D5, Digit::D6, Digit::B],
            [Digit::D7, Digit::D8, Digit::D9, Digit::C],
            [Digit::Star, Digit::D0, Digit::Pound, Digit::D],
        ];
        KEYS.get(row)?.get(col).copied()
    }

    /// Low and high frequency in Hz (ITU-T Q.23).
    #[must_use]
    pub fn frequencies(self) -> (f32, f32) {
        let (r, c) = self.row_col();
        (LOW_GROUP[r], HIGH_GROUP[c])
    }
}

impl fmt::Display for Digit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.as_char())
    }
}

/// How a digit reached us; the `call.dtmf` webhook names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DtmfSource {
    /// RTP telephone-event (RFC 4733).
    Rfc4733,
    /// SIP INFO (`application/dtmf-relay` or `application/dtmf`).
    Info,
    /// Tones in the audio, found by [`InbandDetector`].
    InBand,
}

/// One digit as reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DtmfEvent {
    pub digit: Digit,
    /// How long the key has been down when reported: in a `Begin` the length known so
    /// far, in an `End` the whole press. For INFO the body's `Duration`, or
    /// [`info::DEFAULT_DURATION`] when it has none.
    pub duration: Duration,
    pub source: DtmfSource,
}

/// What a DTMF receiver reports. Exactly one `Begin` per key press, and for every `Begin`
/// at most one `End` of the same digit, in that order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DtmfSignal {
    /// A new key press: raise `call.dtmf`, start relaying it.
    Begin(DtmfEvent),
    /// The press is over (its end was seen, timed out, or was superseded); `duration` is
    /// its whole length. Not a new digit.
    End(DtmfEvent),
}

impl DtmfSignal {
    /// The event carried, whichever edge this is.
    #[must_use]
    pub fn event(&self) -> &DtmfEvent {
        match self {
            DtmfSignal::Begin(e) | DtmfSignal::End(e) => e,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_codes_chars_and_keypad_agree() {
        for (code, d) in Digit::ALL.iter().enumerate() {
            let code = u8::try_from(code).unwrap_or(u8::MAX);
            assert_eq!(d.event_code(), code);
            assert_eq!(Digit::from_event_code(code), Some(*d));
            assert_eq!(Digit::from_char(d.as_char()), Some(*d));
            let (r, c) = d.row_col();
            assert_eq!(Digit::from_row_col(r, c), Some(*d));
        }
        assert_eq!(Digit::from_event_code(16), None, "flash is not a digit");
        assert_eq!(Digit::from_char('a'), Some(Digit::A));
        assert_eq!(Digit::from_char('e'), None);
        assert_eq!(Digit::from_row_col(4, 0), None);
        assert_eq!(Digit::Star.to_string(), "*");
        assert_eq!(Digit::Pound.frequencies(), (941.0, 1477.0));
        assert_eq!(Digit::D1.frequencies(), (697.0, 1209.0));
    }
}
