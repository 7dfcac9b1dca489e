//! Carrier trunks and inbound numbers (SPEC §4 `trunks`, `numbers`; docs/trunks.md).
//!
//! - [`TrunkConfig`]: a trunk's validated settings, as stored and as the API shows them;
//! - [`presets`]: what each `provider` fills in when a field is not given;
//! - [`number`]: numbers read into E.164 and written in a trunk's `number_format`;
//! - [`cost`]: what an answered call costs at a trunk's `rate`;
//! - [`directory`]: the in-memory [`TrunkDirectory`] the call engine consults on the SIP
//!   loop (synchronous lookups on an immutable snapshot, reloaded after API changes).

pub mod cost;
pub mod directory;
pub mod number;
pub mod presets;
pub mod runtime;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

pub use cost::Rate;
pub use directory::{Cidr, NumberEntry, NumberRoute, Snapshot, Trunk, TrunkDirectory};
pub use number::{NumberError, NumberFormat, E164};

/// Which carrier a trunk is for: decides the defaults ([`presets`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    Twilio,
    Plivo,
    Exotel,
    Generic,
    /// No network: calls get the outcome of the first matching `simulate` rule.
    Simulated,
}

impl Provider {
    pub const ALL: [Provider; 5] = [
        Provider::Twilio,
        Provider::Plivo,
        Provider::Exotel,
        Provider::Generic,
        Provider::Simulated,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Provider::Twilio => "twilio",
            Provider::Plivo => "plivo",
            Provider::Exotel => "exotel",
            Provider::Generic => "generic",
            Provider::Simulated => "simulated",
        }
    }
}

impl std::str::FromStr for Provider {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        Provider::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or(())
    }
}

/// The transport voxgate uses to reach a carrier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum TrunkTransport {
    #[default]
    Udp,
    Tcp,
    Tls,
}

impl TrunkTransport {
    pub const fn as_str(self) -> &'static str {
        match self {
            TrunkTransport::Udp => "udp",
            TrunkTransport::Tcp => "tcp",
            TrunkTransport::Tls => "tls",
        }
    }

    /// RFC 3261 §19.1.2: 5060 for UDP and TCP, 5061 for TLS.
    pub const fn default_port(self) -> u16 {
        match self {
            TrunkTransport::Udp | TrunkTransport::Tcp => 5060,
            TrunkTransport::Tls => 5061,
        }
    }

    pub const fn sip(self) -> voxgate_sip::transaction::Transport {
        use voxgate_sip::transaction::Transport;
        match self {
            TrunkTransport::Udp => Transport::Udp,
            TrunkTransport::Tcp => Transport::Tcp,
            TrunkTransport::Tls => Transport::Tls,
        }
    }
}

impl std::str::FromStr for TrunkTransport {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "udp" => Ok(TrunkTransport::Udp),
            "tcp" => Ok(TrunkTransport::Tcp),
            "tls" => Ok(TrunkTransport::Tls),
            _ => Err(()),
        }
    }
}

/// What a `simulated` trunk does with a call it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum SimOutcome {
    /// Answer after `after_seconds` and play `play`.
    Answer,
    /// 486 Busy Here after `after_seconds`.
    Busy,
    /// Ring until the caller gives up (or the ring timeout).
    NoAnswer,
    /// 503 Service Unavailable after `after_seconds`.
    Fail,
}

/// One rule of a `simulated` trunk: the first rule whose pattern matches the dialled
/// number (E.164) decides the outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SimulateRule {
    /// An E.164 number, or a pattern where `*` matches any digits and `?` one digit:
    /// `+91*`, `+1415555010?`, `*`.
    #[schema(example = "+1415*")]
    pub pattern: String,
    pub outcome: SimOutcome,
    /// Seconds before the outcome (ringing meanwhile), 0..=600; default 0.
    #[serde(default)]
    #[schema(minimum = 0, maximum = 600)]
    pub after_seconds: u32,
    /// For `answer`: `tone` (a 440 Hz tone; prompts come with the prompts resource); default `tone`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub play: Option<String>,
}

impl SimulateRule {
    /// Whether `number` (E.164) matches the pattern.
    pub fn matches(&self, number: &str) -> bool {
        glob(self.pattern.as_bytes(), number.as_bytes())
    }
}

/// `*` matches any run (also empty), `?` one character, anything else itself.
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && (pattern[p] == b'?' || pattern[p] == text[t]) {
            p += 1;
            t += 1;
        } else if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if let Some((sp, st)) = star {
            p = sp + 1;
            t = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// How voxgate reaches the carrier. (`Debug` leaves the password out.)
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Outbound {
    /// Host name or IP literal; `None` only for `simulated` trunks.
    pub host: Option<String>,
    /// `None`: RFC 3263 decides (SRV for a name; the transport's default port for an IP).
    pub port: Option<u16>,
    pub transport: TrunkTransport,
    pub username: Option<String>,
    pub password: Option<String>,
    /// Register to the carrier (as FreeSWITCH gateways do with `register=true`).
    pub register: bool,
    /// Expires asked for in REGISTER, seconds (default 3600 when registering).
    pub register_expires: Option<u32>,
}

/// Who may send calls in on this trunk. (`Debug` leaves the password out.)
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Inbound {
    /// Source addresses admitted without credentials: `192.0.2.0/24`, `2001:db8::/32`, or a
    /// single address.
    pub allowed_cidrs: Vec<String>,
    /// Digest credentials a carrier may authenticate with instead.
    pub username: Option<String>,
    pub password: Option<String>,
}

impl std::fmt::Debug for Outbound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbound")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("transport", &self.transport)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("register", &self.register)
            .field("register_expires", &self.register_expires)
            .finish()
    }
}

impl std::fmt::Debug for Inbound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inbound")
            .field("allowed_cidrs", &self.allowed_cidrs)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .finish()
    }
}

/// A trunk's settings, validated and with the provider's defaults filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrunkConfig {
    pub name: String,
    pub provider: Provider,
    pub outbound: Outbound,
    pub inbound: Inbound,
    /// Codec names in preference order (`PCMU`, `PCMA`, `G722`, `opus`,
    /// `telephone-event`); empty: voxgate's own list.
    pub codecs: Vec<String>,
    /// `None` or 0: no limit.
    pub max_cps: Option<u32>,
    pub max_calls_per_minute: Option<u32>,
    pub max_concurrent_calls: Option<u32>,
    pub number_format: NumberFormat,
    /// Shown to the called party when the call does not bring its own (E.164).
    pub caller_id: Option<String>,
    /// The trunk's country (`91`): national numbers are read as this country's.
    pub country_code: Option<String>,
    pub rate: Option<Rate>,
    /// Rules of a `simulated` trunk, first match wins.
    pub simulate: Vec<SimulateRule>,
    /// The trunk agents' softphones dial external numbers through (at most one trunk).
    pub default_outbound: bool,
}

/// The codec a trunk's codec name stands for, as SDP writes it.
pub fn codec_by_name(name: &str) -> Option<voxgate_sip::sdp::Codec> {
    use voxgate_sip::sdp::Codec;
    let codec = match name.to_ascii_lowercase().as_str() {
        "pcmu" => Codec::pcmu(),
        "pcma" => Codec::pcma(),
        "g722" => Codec::new("G722", 8000, 1),
        "opus" => Codec::new("opus", 48000, 2),
        "telephone-event" => Codec::telephone_event(),
        _ => return None,
    };
    Some(codec)
}

/// The codec names a trunk accepts, in their canonical spelling.
pub const CODEC_NAMES: [&str; 5] = ["PCMU", "PCMA", "G722", "opus", "telephone-event"];

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(pattern: &str) -> SimulateRule {
        SimulateRule {
            pattern: pattern.to_owned(),
            outcome: SimOutcome::Answer,
            after_seconds: 0,
            play: None,
        }
    }

    #[test]
    fn patterns() {
        assert!(rule("*").matches("+14155550100"));
        assert!(rule("+1415*").matches("+14155550100"));
        assert!(!rule("+1415*").matches("+14165550100"));
        assert!(rule("+1415555010?").matches("+14155550109"));
        assert!(!rule("+1415555010?").matches("+141555501099"));
        assert!(rule("+14155550100").matches("+14155550100"));
        assert!(!rule("+14155550100").matches("+141555501000"));
        assert!(rule("+91*0").matches("+919876543210"));
        assert!(rule("*3210").matches("+919876543210"));
        assert!(!rule("").matches("+1"));
    }

    #[test]
    fn debug_hides_passwords() {
        let o = Outbound {
            username: Some("acct".into()),
            password: Some("s3cret-out".into()),
            ..Outbound::default()
        };
        let i = Inbound {
            password: Some("s3cret-in".into()),
            ..Inbound::default()
        };
        let text = format!("{o:?} {i:?}");
        assert!(text.contains("acct") && text.contains("***"), "{text}");
        assert!(!text.contains("s3cret"), "{text}");
    }

    #[test]
    fn codec_names() {
        for n in CODEC_NAMES {
            let c = codec_by_name(n).unwrap_or_else(|| panic!("{n}"));
            assert!(c.name.eq_ignore_ascii_case(n));
        }
        assert_eq!(codec_by_name("pcmu"), Some(voxgate_sip::sdp::Codec::pcmu()));
        assert_eq!(codec_by_name("G729"), None);
    }
}
