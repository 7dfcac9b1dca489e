//! One `call.dtmf` per key press on a leg, even when the far end signals the press two
//! ways at once: a gateway that sends RFC 4733 events and leaves the start of the tone
//! in the audio, or a phone that sends both events and SIP INFO.

use std::time::{Duration, Instant};

use super::{Digit, DtmfSignal, DtmfSource};

fn slot(source: DtmfSource) -> usize {
    match source {
        DtmfSource::Rfc4733 => 0,
        DtmfSource::Info => 1,
        DtmfSource::InBand => 2,
    }
}

/// Merges the DTMF receivers of one leg. Rules, in order:
/// 1. once the leg has sent a telephone-event digit, in-band detections are ignored:
///    such a sender mutes (or should mute) the tone, and what leaks is the same press;
/// 2. a `Begin` of the digit accepted from another source less than
///    [`DtmfArbiter::new`]'s `window` ago is the same press heard twice, and dropped;
/// 3. an `End` passes only if its source's `Begin` passed.
#[derive(Debug, Clone)]
pub struct DtmfArbiter {
    window: Duration,
    last: Option<(Digit, DtmfSource, Instant)>,
    rfc4733_seen: bool,
    /// Per source, the digit whose `Begin` passed and has not ended.
    open: [Option<Digit>; 3],
}

impl Default for DtmfArbiter {
    /// A 500 ms window: the slowest INFO behind its RTP event, well under the time a
    /// person takes to press the same key again.
    fn default() -> Self {
        DtmfArbiter::new(Duration::from_millis(500))
    }
}

impl DtmfArbiter {
    #[must_use]
    pub fn new(window: Duration) -> DtmfArbiter {
        DtmfArbiter {
            window,
            last: None,
            rfc4733_seen: false,
            open: [None; 3],
        }
    }

    /// Whether the engine should act on `signal` (raise `call.dtmf` for a `Begin`,
    /// relay it to the other leg).
    pub fn accept(&mut self, signal: &DtmfSignal, now: Instant) -> bool {
        let e = signal.event();
        let s = slot(e.source);
        match signal {
            DtmfSignal::End(_) => {
                let ok = self.open[s] == Some(e.digit);
                if ok {
                    self.open[s] = None;
                }
                ok
            }
            DtmfSignal::Begin(_) => {
                let leak = e.source == DtmfSource::InBand && self.rfc4733_seen;
                let twice = self.last.is_some_and(|(d, src, at)| {
                    d == e.digit
                        && src != e.source
                        && now.saturating_duration_since(at) < self.window
                });
                if leak || twice {
                    self.open[s] = None;
                    return false;
                }
                if e.source == DtmfSource::Rfc4733 {
                    self.rfc4733_seen = true;
                }
                self.last = Some((e.digit, e.source, now));
                self.open[s] = Some(e.digit);
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dtmf::DtmfEvent;

    fn sig(begin: bool, d: Digit, source: DtmfSource) -> DtmfSignal {
        let e = DtmfEvent {
            digit: d,
            duration: Duration::from_millis(100),
            source,
        };
        if begin {
            DtmfSignal::Begin(e)
        } else {
            DtmfSignal::End(e)
        }
    }

    #[test]
    fn the_same_press_two_ways_is_one_digit() {
        use DtmfSource::*;
        let t = Instant::now();
        let ms = Duration::from_millis;
        let mut a = DtmfArbiter::default();
        assert!(a.accept(&sig(true, Digit::D5, Rfc4733), t));
        assert!(!a.accept(&sig(true, Digit::D5, Info), t + ms(150)));
        assert!(!a.accept(&sig(false, Digit::D5, Info), t + ms(150)));
        assert!(a.accept(&sig(false, Digit::D5, Rfc4733), t + ms(200)));
        // The same key again, later, from the same source: a new digit.
        assert!(a.accept(&sig(true, Digit::D5, Rfc4733), t + ms(300)));
        assert!(a.accept(&sig(false, Digit::D5, Rfc4733), t + ms(400)));
        // INFO with another digit, or the same one past the window, passes.
        assert!(a.accept(&sig(true, Digit::D6, Info), t + ms(450)));
        assert!(a.accept(&sig(true, Digit::D6, Info), t + ms(1000)));
        assert!(a.accept(&sig(true, Digit::D5, Info), t + ms(1000)));
    }

    #[test]
    fn in_band_leaks_are_ignored_once_events_came() {
        use DtmfSource::*;
        let t = Instant::now();
        let ms = Duration::from_millis;
        let mut a = DtmfArbiter::default();
        // Before any event, tones count.
        assert!(a.accept(&sig(true, Digit::D1, InBand), t));
        assert!(a.accept(&sig(false, Digit::D1, InBand), t + ms(80)));
        assert!(a.accept(&sig(true, Digit::D2, Rfc4733), t + ms(1000)));
        // Leaked tone of the next press, before and after its event.
        assert!(!a.accept(&sig(true, Digit::D3, InBand), t + ms(2000)));
        assert!(!a.accept(&sig(false, Digit::D3, InBand), t + ms(2050)));
        assert!(a.accept(&sig(true, Digit::D3, Rfc4733), t + ms(2060)));
        // An End with no Begin passed, or of another digit, does not pass.
        assert!(!a.accept(&sig(false, Digit::D9, Rfc4733), t + ms(2100)));
        assert!(a.accept(&sig(false, Digit::D3, Rfc4733), t + ms(2100)));
        assert!(!a.accept(&sig(false, Digit::D3, Rfc4733), t + ms(2110)));
    }
}
