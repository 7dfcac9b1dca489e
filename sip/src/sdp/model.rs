//! The owned SDP model (RFC 8866 §5) and its canonical serialiser.
//!
//! Known attributes are typed; every other attribute is kept verbatim in
//! [`Attribute::Other`] so that callers pass it through or drop it deliberately.

use std::fmt;
use std::net::IpAddr;

use super::codec::Codec;
use super::parse::Field;

/// A parsed session description (RFC 8866 §5). `Display` writes canonical CRLF SDP with
/// the lines in RFC 8866 §5 order; `parse(to_string(x)) == x`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionDescription {
    pub origin: Origin,
    /// `s=`; a missing `s=` is read as `-` (RFC 8866 §5.3's placeholder).
    pub session_name: String,
    /// `i=`, `u=`, `e=`, `p=` lines, verbatim.
    pub info: Option<String>,
    pub uri: Option<String>,
    pub emails: Vec<String>,
    pub phones: Vec<String>,
    pub connection: Option<Connection>,
    pub bandwidths: Vec<Bandwidth>,
    /// `t=` lines with their `r=` lines; a missing `t=` is read as `t=0 0`.
    pub timings: Vec<Timing>,
    /// `z=` and `k=`, verbatim (`k=` is obsolete, RFC 8866 §5.12).
    pub time_zones: Option<String>,
    pub key: Option<String>,
    pub attributes: Vec<Attribute>,
    pub media: Vec<MediaDescription>,
}

/// `o=<username> <sess-id> <sess-version> IN <addrtype> <unicast-address>` (RFC 8866 §5.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub username: String,
    pub session_id: u64,
    pub session_version: u64,
    pub addr_type: AddrType,
    /// Kept as text: it may be a host name and nobody routes on it.
    pub address: String,
}

/// `IP4` or `IP6` (RFC 8866 §5.7). Only the `IN` network type is understood.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AddrType {
    Ip4,
    Ip6,
}

impl AddrType {
    pub fn of(addr: IpAddr) -> AddrType {
        match addr {
            IpAddr::V4(_) => AddrType::Ip4,
            IpAddr::V6(_) => AddrType::Ip6,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            AddrType::Ip4 => "IP4",
            AddrType::Ip6 => "IP6",
        }
    }
}

/// `c=IN <addrtype> <connection-address>` (RFC 8866 §5.7).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connection {
    pub address: ConnectionAddress,
    /// Multicast `/<ttl>[/<number>]` suffix, verbatim without the first `/`.
    pub multicast: Option<String>,
}

impl Connection {
    /// A unicast connection line for an IP address.
    pub fn ip(addr: IpAddr) -> Connection {
        Connection {
            address: ConnectionAddress::Ip(addr),
            multicast: None,
        }
    }

    /// The IP address, if this is not a host name.
    pub fn ip_addr(&self) -> Option<IpAddr> {
        match self.address {
            ConnectionAddress::Ip(ip) => Some(ip),
            ConnectionAddress::Fqdn(..) => None,
        }
    }

    /// `0.0.0.0` (or `::`): the RFC 2543 hold of RFC 3264 §8.4, "do not send to me".
    pub fn is_unspecified(&self) -> bool {
        self.ip_addr().is_some_and(|ip| ip.is_unspecified())
    }
}

/// The address of a `c=` line: an IP literal, or a host name (RFC 8866 §5.7 allows FQDNs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectionAddress {
    Ip(IpAddr),
    Fqdn(AddrType, String),
}

/// `b=<bwtype>:<bandwidth>` (RFC 8866 §5.8).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bandwidth {
    pub kind: String,
    pub value: u64,
}

/// `t=<start> <stop>` and its `r=` lines, verbatim (RFC 8866 §5.9, §5.10).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timing {
    pub start: u64,
    pub stop: u64,
    pub repeats: Vec<String>,
}

/// `m=<media> <port>[/<number>] <proto> <fmt> ...` and its media-level lines (RFC 8866 §5.14).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaDescription {
    pub media: MediaType,
    pub port: u16,
    pub port_count: Option<u16>,
    pub proto: Proto,
    /// Formats as written; for RTP protocols each one is a payload type 0-127 (checked).
    pub formats: Vec<String>,
    pub info: Option<String>,
    pub connection: Option<Connection>,
    pub bandwidths: Vec<Bandwidth>,
    pub key: Option<String>,
    pub attributes: Vec<Attribute>,
}

/// The `<media>` field of an `m=` line (RFC 8866 §5.14).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaType {
    Audio,
    Video,
    Text,
    Application,
    Message,
    Image,
    Other(String),
}

impl MediaType {
    pub(crate) fn parse(s: &str) -> MediaType {
        const KNOWN: [(&str, MediaType); 6] = [
            ("audio", MediaType::Audio),
            ("video", MediaType::Video),
            ("text", MediaType::Text),
            ("application", MediaType::Application),
            ("message", MediaType::Message),
            ("image", MediaType::Image),
        ];
        KNOWN
            .into_iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(s))
            .map_or_else(|| MediaType::Other(s.to_owned()), |(_, t)| t)
    }

    pub fn as_str(&self) -> &str {
        match self {
            MediaType::Audio => "audio",
            MediaType::Video => "video",
            MediaType::Text => "text",
            MediaType::Application => "application",
            MediaType::Message => "message",
            MediaType::Image => "image",
            MediaType::Other(s) => s,
        }
    }
}

/// The transport protocol of an `m=` line (RFC 8866 §5.14, RFC 4585, RFC 5764, RFC 8866).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Proto {
    /// `RTP/AVP` (RFC 3551).
    RtpAvp,
    /// `RTP/AVPF` (RFC 4585).
    RtpAvpf,
    /// `RTP/SAVP` (RFC 3711).
    RtpSavp,
    /// `RTP/SAVPF` (RFC 5124).
    RtpSavpf,
    /// `UDP/TLS/RTP/SAVP` (RFC 5764).
    UdpTlsRtpSavp,
    /// `UDP/TLS/RTP/SAVPF` (RFC 5764, WebRTC).
    UdpTlsRtpSavpf,
    /// `udp` (RFC 8866).
    Udp,
    Other(String),
}

impl Proto {
    pub(crate) fn parse(s: &str) -> Proto {
        const KNOWN: [(&str, Proto); 7] = [
            ("RTP/AVP", Proto::RtpAvp),
            ("RTP/AVPF", Proto::RtpAvpf),
            ("RTP/SAVP", Proto::RtpSavp),
            ("RTP/SAVPF", Proto::RtpSavpf),
            ("UDP/TLS/RTP/SAVP", Proto::UdpTlsRtpSavp),
            ("UDP/TLS/RTP/SAVPF", Proto::UdpTlsRtpSavpf),
            ("udp", Proto::Udp),
        ];
        KNOWN
            .into_iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(s))
            .map_or_else(|| Proto::Other(s.to_owned()), |(_, p)| p)
    }

    pub fn as_str(&self) -> &str {
        match self {
            Proto::RtpAvp => "RTP/AVP",
            Proto::RtpAvpf => "RTP/AVPF",
            Proto::RtpSavp => "RTP/SAVP",
            Proto::RtpSavpf => "RTP/SAVPF",
            Proto::UdpTlsRtpSavp => "UDP/TLS/RTP/SAVP",
            Proto::UdpTlsRtpSavpf => "UDP/TLS/RTP/SAVPF",
            Proto::Udp => "udp",
            Proto::Other(s) => s,
        }
    }

    /// Whether the formats are RTP payload types (any `.../RTP/...` profile).
    pub fn is_rtp(&self) -> bool {
        match self {
            Proto::Udp => false,
            Proto::Other(s) => s.to_ascii_uppercase().split('/').any(|p| p == "RTP"),
            _ => true,
        }
    }

    /// Whether this is plain (unencrypted) RTP, which is what the relay speaks today.
    pub fn is_plain_rtp(&self) -> bool {
        matches!(self, Proto::RtpAvp | Proto::RtpAvpf)
    }
}

/// Media direction attributes (RFC 8866 §6.7; RFC 3264 §5.1). The default is `sendrecv`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Direction {
    #[default]
    SendRecv,
    SendOnly,
    RecvOnly,
    Inactive,
}

impl Direction {
    pub fn from_flags(send: bool, recv: bool) -> Direction {
        match (send, recv) {
            (true, true) => Direction::SendRecv,
            (true, false) => Direction::SendOnly,
            (false, true) => Direction::RecvOnly,
            (false, false) => Direction::Inactive,
        }
    }
    pub fn sends(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::SendOnly)
    }
    pub fn receives(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::RecvOnly)
    }
    /// The same stream seen from the other end: sendonly ↔ recvonly.
    #[must_use]
    pub fn reversed(self) -> Direction {
        Direction::from_flags(self.receives(), self.sends())
    }
    /// RFC 3264 §6.1: the answer to an offer with direction `offer`, given what the answerer
    /// would like (`wanted`): it may only send what the offerer receives and receive what
    /// the offerer sends. Gives sendonly→recvonly, recvonly→sendonly, inactive→inactive.
    #[must_use]
    pub fn answer_to(offer: Direction, wanted: Direction) -> Direction {
        Direction::from_flags(
            offer.receives() && wanted.sends(),
            offer.sends() && wanted.receives(),
        )
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::SendRecv => "sendrecv",
            Direction::SendOnly => "sendonly",
            Direction::RecvOnly => "recvonly",
            Direction::Inactive => "inactive",
        }
    }
}

/// A packet time (`a=ptime`, `a=maxptime`), kept in microseconds because RFC 8866 §6.4
/// allows a fraction of a millisecond (`non-zero-int-or-real`); never zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PacketTime(u32);

impl PacketTime {
    /// `None` for zero (RFC 8866 §6.4: non-zero).
    pub fn from_millis(ms: u32) -> Option<PacketTime> {
        ms.checked_mul(1000).filter(|us| *us != 0).map(PacketTime)
    }
    /// `None` for zero.
    pub fn from_micros(us: u32) -> Option<PacketTime> {
        (us != 0).then_some(PacketTime(us))
    }
    pub fn micros(self) -> u32 {
        self.0
    }
    /// Whole milliseconds, rounded down.
    pub fn millis(self) -> u32 {
        self.0 / 1000
    }
}

impl fmt::Display for PacketTime {
    /// Milliseconds: `20`, or `22.5` when not whole.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (ms, us) = (self.0 / 1000, self.0 % 1000);
        if us == 0 {
            write!(f, "{ms}")
        } else {
            let frac = format!("{us:03}");
            write!(f, "{ms}.{}", frac.trim_end_matches('0'))
        }
    }
}

/// `a=rtpmap:<pt> <encoding>/<clock>[/<channels>]` (RFC 8866 §6.6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rtpmap {
    pub payload_type: u8,
    pub encoding: String,
    pub clock_rate: u32,
    /// As written: `None` means "1" for audio (RFC 8866 §6.6) but round-trips as absent.
    pub channels: Option<u16>,
}

/// An attribute line (RFC 8866 §5.13, §6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attribute {
    Rtpmap(Rtpmap),
    /// `a=fmtp:<format> <params>` (RFC 8866 §6.15), params verbatim.
    Fmtp {
        format: String,
        params: String,
    },
    /// `a=ptime:<ms>` (RFC 8866 §6.4).
    Ptime(PacketTime),
    /// `a=maxptime:<ms>` (RFC 8866 §6.5).
    MaxPtime(PacketTime),
    Direction(Direction),
    /// `a=rtcp:<port> [IN <addrtype> <address>]` (RFC 3605 §2.1).
    Rtcp {
        port: u16,
        connection: Option<Connection>,
    },
    /// `a=rtcp-mux` (RFC 5761 §5.1.1).
    RtcpMux,
    /// `a=mid:<id>` (RFC 5888 §4).
    Mid(String),
    /// Anything else, verbatim: `a=<name>` (value `None`) or `a=<name>:<value>`.
    Other {
        name: String,
        value: Option<String>,
    },
    /// One of the attributes above whose value does not parse, kept verbatim with the
    /// reason and otherwise ignored (RFC 8866 §5.13).
    Invalid {
        name: String,
        value: Option<String>,
        reason: Field,
    },
}

impl Attribute {
    /// An attribute not modelled here, e.g. `Attribute::other("label", Some("1"))`.
    pub fn other(name: &str, value: Option<&str>) -> Attribute {
        Attribute::Other {
            name: name.to_owned(),
            value: value.map(str::to_owned),
        }
    }
}

impl SessionDescription {
    /// The connection that applies to a media section: its own `c=`, else the session's
    /// (RFC 8866 §5.7).
    pub fn connection_for<'a>(&'a self, media: &'a MediaDescription) -> Option<&'a Connection> {
        media.connection.as_ref().or(self.connection.as_ref())
    }

    /// The direction of a media section: its own attribute, else the session's, else
    /// sendrecv (RFC 8866 §6.7).
    pub fn direction_for(&self, media: &MediaDescription) -> Direction {
        media
            .direction()
            .or_else(|| direction_in(&self.attributes))
            .unwrap_or_default()
    }
}

fn direction_in(attributes: &[Attribute]) -> Option<Direction> {
    attributes.iter().find_map(|a| match a {
        Attribute::Direction(d) => Some(*d),
        _ => None,
    })
}

impl MediaDescription {
    /// The media-level direction attribute, if any.
    pub fn direction(&self) -> Option<Direction> {
        direction_in(&self.attributes)
    }

    /// `a=ptime`, if present.
    pub fn ptime(&self) -> Option<PacketTime> {
        self.attributes.iter().find_map(|a| match a {
            Attribute::Ptime(ms) => Some(*ms),
            _ => None,
        })
    }

    /// `a=maxptime`, if present.
    pub fn max_ptime(&self) -> Option<PacketTime> {
        self.attributes.iter().find_map(|a| match a {
            Attribute::MaxPtime(ms) => Some(*ms),
            _ => None,
        })
    }

    pub fn rtcp_mux(&self) -> bool {
        self.attributes
            .iter()
            .any(|a| matches!(a, Attribute::RtcpMux))
    }

    /// `a=rtcp` port and optional address (RFC 3605).
    pub fn rtcp(&self) -> Option<(u16, Option<&Connection>)> {
        self.attributes.iter().find_map(|a| match a {
            Attribute::Rtcp { port, connection } => Some((*port, connection.as_ref())),
            _ => None,
        })
    }

    pub fn mid(&self) -> Option<&str> {
        self.attributes.iter().find_map(|a| match a {
            Attribute::Mid(m) => Some(m.as_str()),
            _ => None,
        })
    }

    /// The first `a=fmtp` for a format.
    pub fn fmtp(&self, format: &str) -> Option<&str> {
        self.attributes.iter().find_map(|a| match a {
            Attribute::Fmtp { format: f, params } if f == format => Some(params.as_str()),
            _ => None,
        })
    }

    /// The RTP payload types of the `m=` line, in order (empty for non-RTP protocols).
    pub fn payload_types(&self) -> impl Iterator<Item = u8> + '_ {
        let rtp = self.proto.is_rtp();
        self.formats
            .iter()
            .filter(move |_| rtp)
            .filter_map(|f| f.parse().ok())
    }

    /// The codec behind a payload type: its `rtpmap` (first wins), else the RFC 3551
    /// static table; `fmtp` attached. `None` for an unmapped dynamic payload type.
    pub fn codec(&self, pt: u8) -> Option<Codec> {
        let mapped = self.attributes.iter().find_map(|a| match a {
            Attribute::Rtpmap(m) if m.payload_type == pt => Some(Codec::new(
                &m.encoding,
                m.clock_rate,
                m.channels.unwrap_or(1),
            )),
            _ => None,
        });
        let mut codec = mapped.or_else(|| Codec::from_static_payload_type(pt))?;
        codec.fmtp = self.fmtp(&pt.to_string()).map(str::to_owned);
        Some(codec)
    }
}

// ---------------------------------------------------------------------------------------
// Serialiser
// ---------------------------------------------------------------------------------------

impl fmt::Display for SessionDescription {
    /// RFC 8866 §5 order: v o s i u e p c b (t r)+ z k a, then each m= section.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("v=0\r\n")?;
        write!(f, "{}\r\n", self.origin)?;
        write!(f, "s={}\r\n", self.session_name)?;
        line(f, 'i', self.info.as_deref())?;
        line(f, 'u', self.uri.as_deref())?;
        for e in &self.emails {
            line(f, 'e', Some(e))?;
        }
        for p in &self.phones {
            line(f, 'p', Some(p))?;
        }
        if let Some(c) = &self.connection {
            write!(f, "c={c}\r\n")?;
        }
        for b in &self.bandwidths {
            write!(f, "{b}\r\n")?;
        }
        for t in &self.timings {
            write!(f, "t={} {}\r\n", t.start, t.stop)?;
            for r in &t.repeats {
                line(f, 'r', Some(r))?;
            }
        }
        line(f, 'z', self.time_zones.as_deref())?;
        line(f, 'k', self.key.as_deref())?;
        for a in &self.attributes {
            write!(f, "{a}\r\n")?;
        }
        for m in &self.media {
            write!(f, "{m}")?;
        }
        Ok(())
    }
}

fn line(f: &mut fmt::Formatter<'_>, kind: char, value: Option<&str>) -> fmt::Result {
    match value {
        Some(v) => write!(f, "{kind}={v}\r\n"),
        None => Ok(()),
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "o={} {} {} IN {} {}",
            self.username,
            self.session_id,
            self.session_version,
            self.addr_type.as_str(),
            self.address
        )
    }
}

impl fmt::Display for Connection {
    /// Without the `c=` prefix, so it serves `a=rtcp` too.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.address {
            ConnectionAddress::Ip(ip) => write!(f, "IN {} {ip}", AddrType::of(*ip).as_str())?,
            ConnectionAddress::Fqdn(t, name) => write!(f, "IN {} {name}", t.as_str())?,
        }
        if let Some(m) = &self.multicast {
            write!(f, "/{m}")?;
        }
        Ok(())
    }
}

impl fmt::Display for Bandwidth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "b={}:{}", self.kind, self.value)
    }
}

impl fmt::Display for MediaDescription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "m={} {}", self.media.as_str(), self.port)?;
        if let Some(n) = self.port_count {
            write!(f, "/{n}")?;
        }
        write!(f, " {}", self.proto.as_str())?;
        for fmt in &self.formats {
            write!(f, " {fmt}")?;
        }
        f.write_str("\r\n")?;
        line(f, 'i', self.info.as_deref())?;
        if let Some(c) = &self.connection {
            write!(f, "c={c}\r\n")?;
        }
        for b in &self.bandwidths {
            write!(f, "{b}\r\n")?;
        }
        line(f, 'k', self.key.as_deref())?;
        for a in &self.attributes {
            write!(f, "{a}\r\n")?;
        }
        Ok(())
    }
}

impl fmt::Display for Attribute {
    /// The whole line without CRLF: `a=...`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Attribute::Rtpmap(m) => {
                write!(
                    f,
                    "a=rtpmap:{} {}/{}",
                    m.payload_type, m.encoding, m.clock_rate
                )?;
                if let Some(ch) = m.channels {
                    write!(f, "/{ch}")?;
                }
                Ok(())
            }
            Attribute::Fmtp { format, params } if params.is_empty() => write!(f, "a=fmtp:{format}"),
            Attribute::Fmtp { format, params } => write!(f, "a=fmtp:{format} {params}"),
            Attribute::Ptime(t) => write!(f, "a=ptime:{t}"),
            Attribute::MaxPtime(t) => write!(f, "a=maxptime:{t}"),
            Attribute::Direction(d) => write!(f, "a={}", d.as_str()),
            Attribute::Rtcp {
                port,
                connection: Some(c),
            } => write!(f, "a=rtcp:{port} {c}"),
            Attribute::Rtcp {
                port,
                connection: None,
            } => write!(f, "a=rtcp:{port}"),
            Attribute::RtcpMux => f.write_str("a=rtcp-mux"),
            Attribute::Mid(m) => write!(f, "a=mid:{m}"),
            Attribute::Other {
                name,
                value: Some(v),
            }
            | Attribute::Invalid {
                name,
                value: Some(v),
                ..
            } => write!(f, "a={name}:{v}"),
            Attribute::Other { name, value: None }
            | Attribute::Invalid {
                name, value: None, ..
            } => {
                write!(f, "a={name}")
            }
        }
    }
}
