//! Codecs as SDP names them (RFC 3551, RFC 8866 §6.6 `rtpmap`), and the static payload types.

use std::fmt;

/// One RTP payload format: encoding name, clock rate, channels and format parameters.
///
/// Two codecs are the *same format* when name (case-insensitive, RFC 4855 §3), clock rate
/// and channel count match; `fmtp` is a parameter of the format, not part of its identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Codec {
    pub name: String,
    pub clock_rate: u32,
    pub channels: u16,
    pub fmtp: Option<String>,
}

impl Codec {
    /// A codec without format parameters.
    pub fn new(name: &str, clock_rate: u32, channels: u16) -> Codec {
        Codec {
            name: name.to_owned(),
            clock_rate,
            channels,
            fmtp: None,
        }
    }

    /// The same codec with `fmtp` parameters.
    #[must_use]
    pub fn with_fmtp(mut self, fmtp: &str) -> Codec {
        self.fmtp = Some(fmtp.to_owned());
        self
    }

    /// PCMU (G.711 µ-law), RFC 3551 §4.5.14.
    pub fn pcmu() -> Codec {
        Codec::new("PCMU", 8000, 1)
    }

    /// PCMA (G.711 A-law), RFC 3551 §4.5.14.
    pub fn pcma() -> Codec {
        Codec::new("PCMA", 8000, 1)
    }

    /// telephone-event at 8 kHz with events 0-16 (DTMF and flash), RFC 4733 §2.4.
    pub fn telephone_event() -> Codec {
        Codec::new("telephone-event", 8000, 1).with_fmtp("0-16")
    }

    /// Same encoding, clock rate and channels (RFC 3264 §6.1 "same codec").
    pub fn same_format(&self, other: &Codec) -> bool {
        self.name.eq_ignore_ascii_case(&other.name)
            && self.clock_rate == other.clock_rate
            && self.channels == other.channels
    }

    /// Whether this is RFC 4733 telephone-event (named events, not audio).
    pub fn is_telephone_event(&self) -> bool {
        self.name.eq_ignore_ascii_case("telephone-event")
    }

    /// Whether this codec carries no voice of its own: DTMF events (RFC 4733) or comfort
    /// noise (RFC 3389). A call needs at least one voice codec besides these.
    pub fn is_auxiliary(&self) -> bool {
        self.is_telephone_event() || self.name.eq_ignore_ascii_case("CN")
    }

    /// The RFC 3551 static payload type for this format, if it has one.
    pub fn static_payload_type(&self) -> Option<u8> {
        STATIC_PAYLOAD_TYPES
            .iter()
            .find(|(_, name, clock, channels)| {
                name.eq_ignore_ascii_case(&self.name)
                    && *clock == self.clock_rate
                    && *channels == self.channels
            })
            .map(|(pt, ..)| *pt)
    }

    /// The codec RFC 3551 §6 (Table 4 and 5) assigns to a static payload type.
    pub fn from_static_payload_type(pt: u8) -> Option<Codec> {
        STATIC_PAYLOAD_TYPES
            .iter()
            .find(|(p, ..)| *p == pt)
            .map(|(_, name, clock, channels)| Codec::new(name, *clock, *channels))
    }
}

impl fmt::Display for Codec {
    /// The `rtpmap` encoding part: `PCMU/8000`, `opus/48000/2` (channels only when not 1).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.name, self.clock_rate)?;
        if self.channels != 1 {
            write!(f, "/{}", self.channels)?;
        }
        Ok(())
    }
}

/// RFC 3551 §6 Tables 4 and 5: payload type, encoding name, clock rate, channels.
/// (Video formats have no channel count; 1 keeps the comparison uniform.)
const STATIC_PAYLOAD_TYPES: &[(u8, &str, u32, u16)] = &[
    (0, "PCMU", 8000, 1),
    (3, "GSM", 8000, 1),
    (4, "G723", 8000, 1),
    (5, "DVI4", 8000, 1),
    (6, "DVI4", 16000, 1),
    (7, "LPC", 8000, 1),
    (8, "PCMA", 8000, 1),
    // RFC 3551 §4.5.2: G.722's RTP clock is 8000 although it samples at 16 kHz.
    (9, "G722", 8000, 1),
    (10, "L16", 44100, 2),
    (11, "L16", 44100, 1),
    (12, "QCELP", 8000, 1),
    (13, "CN", 8000, 1),
    (14, "MPA", 90000, 1),
    (15, "G728", 8000, 1),
    (16, "DVI4", 11025, 1),
    (17, "DVI4", 22050, 1),
    (18, "G729", 8000, 1),
    (25, "CelB", 90000, 1),
    (26, "JPEG", 90000, 1),
    (28, "nv", 90000, 1),
    (31, "H261", 90000, 1),
    (32, "MPV", 90000, 1),
    (33, "MP2T", 90000, 1),
    (34, "H263", 90000, 1),
];

/// The first dynamic payload type (RFC 3551 §3).
pub(crate) const DYNAMIC_PT_FIRST: u8 = 96;
/// The last RTP payload type (7 bits, RFC 3550 §5.1).
pub(crate) const PT_MAX: u8 = 127;
