//! A defensive, line-oriented SDP parser (RFC 8866 §5, §9 grammar).
//!
//! Accepts LF or CRLF, trailing whitespace and blank lines, session-level lines in any
//! order (v= first); rejects what it cannot understand with the line and the field.

use std::net::IpAddr;
use std::str::FromStr;

use super::model::{
    AddrType, Attribute, Bandwidth, Connection, ConnectionAddress, Direction, MediaDescription,
    MediaType, Origin, PacketTime, Proto, Rtpmap, SessionDescription, Timing,
};

/// Why a session description was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("SDP is empty")]
    Empty,
    /// A mandatory line (`o=`) is absent.
    #[error("SDP has no {0}= line")]
    Missing(char),
    /// A line (1-based number, counting blank lines) is wrong.
    #[error("SDP line {line}: {kind}")]
    Line { line: usize, kind: LineError },
}

impl ParseError {
    /// The SIP status a UAS should answer an INVITE with: 488 (RFC 3261 §21.4.26) for a
    /// well-formed description we do not support (another SDP version or network type),
    /// 400 for a malformed one.
    pub fn sip_status(&self) -> u16 {
        match self {
            ParseError::Line {
                kind: LineError::UnsupportedVersion | LineError::UnsupportedNetType,
                ..
            } => 488,
            _ => 400,
        }
    }
}

/// What is wrong with one line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LineError {
    #[error("not valid UTF-8")]
    NotUtf8,
    #[error("not of the form <type>=<value>")]
    Syntax,
    /// RFC 8866 §5: a parser must reject a description with a type letter it does not know.
    #[error("unknown line type {0:?}")]
    UnknownType(char),
    #[error("first line is not v=")]
    VersionNotFirst,
    #[error("SDP version is not 0")]
    UnsupportedVersion,
    #[error("network type is not IN")]
    UnsupportedNetType,
    #[error("duplicate {0}= line")]
    Duplicate(char),
    /// A session-only line inside a media section, or `r=` before any `t=`.
    #[error("{0}= line not allowed here")]
    Misplaced(char),
    #[error("invalid {0}")]
    Invalid(Field),
}

/// The field a [`LineError::Invalid`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Field {
    #[error("o= line")]
    Origin,
    #[error("o= session id")]
    SessionId,
    #[error("o= session version")]
    SessionVersion,
    #[error("address type")]
    AddrType,
    #[error("connection address")]
    Address,
    #[error("c= line")]
    Connection,
    #[error("b= line")]
    Bandwidth,
    #[error("t= line")]
    Timing,
    #[error("m= line")]
    Media,
    #[error("m= port")]
    Port,
    #[error("m= port count")]
    PortCount,
    #[error("m= format list")]
    Formats,
    #[error("RTP payload type")]
    PayloadType,
    #[error("attribute name")]
    AttributeName,
    #[error("a=rtpmap")]
    Rtpmap,
    #[error("a=rtpmap clock rate")]
    ClockRate,
    #[error("a=rtpmap channel count")]
    Channels,
    #[error("a=fmtp")]
    Fmtp,
    #[error("a=ptime")]
    Ptime,
    #[error("a=maxptime")]
    MaxPtime,
    #[error("direction attribute (takes no value)")]
    Direction,
    #[error("a=rtcp")]
    Rtcp,
    #[error("a=rtcp-mux (takes no value)")]
    RtcpMux,
    #[error("a=mid")]
    Mid,
}

impl FromStr for SessionDescription {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, ParseError> {
        SessionDescription::parse(s.as_bytes())
    }
}

impl SessionDescription {
    /// Parse a session description (a SIP body). Never panics on any input.
    pub fn parse(input: &[u8]) -> Result<SessionDescription, ParseError> {
        let mut session: Option<SessionDescription> = None;
        let mut seen_version = false;
        let mut any_line = false;
        let mut seen_name = false;

        for (index, raw) in input.split(|&b| b == b'\n').enumerate() {
            let line_no = index + 1;
            let err = |kind| ParseError::Line {
                line: line_no,
                kind,
            };
            let text = std::str::from_utf8(raw).map_err(|_| err(LineError::NotUtf8))?;
            // RFC 8866 §5 says CRLF, but LF-only and trailing blanks are common in the wild.
            let text = text.trim_end_matches([' ', '\t', '\r']);
            if text.is_empty() {
                continue;
            }
            any_line = true;
            let (kind, value) = split_line(text).ok_or(err(LineError::Syntax))?;

            if !seen_version {
                if kind != 'v' {
                    return Err(err(LineError::VersionNotFirst));
                }
                if value != "0" {
                    return Err(err(LineError::UnsupportedVersion));
                }
                seen_version = true;
                continue;
            }
            let sdp = match session.as_mut() {
                Some(sdp) => sdp,
                None => {
                    // o= must follow v= so every later line has a session to land in.
                    if kind != 'o' {
                        return Err(ParseError::Missing('o'));
                    }
                    session = Some(empty_session(parse_origin(value).map_err(err)?));
                    continue;
                }
            };
            apply_line(sdp, &mut seen_name, kind, value).map_err(err)?;
        }

        if !any_line {
            return Err(ParseError::Empty);
        }
        let mut sdp = session.ok_or(ParseError::Missing('o'))?;
        // Liberal in what we accept (RFC 8866 requires both, some gateways omit them).
        if sdp.timings.is_empty() {
            sdp.timings.push(Timing {
                start: 0,
                stop: 0,
                repeats: Vec::new(),
            });
        }
        Ok(sdp)
    }
}

fn empty_session(origin: Origin) -> SessionDescription {
    SessionDescription {
        origin,
        session_name: "-".to_owned(),
        info: None,
        uri: None,
        emails: Vec::new(),
        phones: Vec::new(),
        connection: None,
        bandwidths: Vec::new(),
        timings: Vec::new(),
        time_zones: None,
        key: None,
        attributes: Vec::new(),
        media: Vec::new(),
    }
}

/// `x=value` with `x` a lowercase letter (RFC 8866 §5: no whitespace around `=`).
fn split_line(text: &str) -> Option<(char, &str)> {
    let bytes = text.as_bytes();
    if bytes.len() < 2 || bytes[1] != b'=' || !bytes[0].is_ascii_alphabetic() {
        return None;
    }
    Some((char::from(bytes[0]), &text[2..]))
}

fn apply_line(
    sdp: &mut SessionDescription,
    seen_name: &mut bool,
    kind: char,
    value: &str,
) -> Result<(), LineError> {
    if kind == 'm' {
        sdp.media.push(parse_media(value)?);
        return Ok(());
    }
    if let Some(media) = sdp.media.last_mut() {
        return apply_media_line(media, kind, value);
    }
    match kind {
        // The session name was defaulted to "-" when o= arrived; a second s= is a duplicate.
        's' if *seen_name => return Err(LineError::Duplicate('s')),
        's' => {
            *seen_name = true;
            value.clone_into(&mut sdp.session_name);
        }
        'i' => set_once(&mut sdp.info, 'i', value)?,
        'u' => set_once(&mut sdp.uri, 'u', value)?,
        'e' => sdp.emails.push(value.to_owned()),
        'p' => sdp.phones.push(value.to_owned()),
        'c' if sdp.connection.is_some() => return Err(LineError::Duplicate('c')),
        'c' => sdp.connection = Some(parse_connection(value)?),
        'b' => sdp.bandwidths.push(parse_bandwidth(value)?),
        't' => sdp.timings.push(parse_timing(value)?),
        'r' => sdp
            .timings
            .last_mut()
            .ok_or(LineError::Misplaced('r'))?
            .repeats
            .push(value.to_owned()),
        'z' => set_once(&mut sdp.time_zones, 'z', value)?,
        'k' => set_once(&mut sdp.key, 'k', value)?,
        'a' => sdp.attributes.push(parse_attribute(value)?),
        'v' | 'o' => return Err(LineError::Duplicate(kind)),
        other => return Err(LineError::UnknownType(other)),
    }
    Ok(())
}

fn apply_media_line(m: &mut MediaDescription, kind: char, value: &str) -> Result<(), LineError> {
    match kind {
        'i' => set_once(&mut m.info, 'i', value)?,
        'c' if m.connection.is_some() => return Err(LineError::Duplicate('c')),
        'c' => m.connection = Some(parse_connection(value)?),
        'b' => m.bandwidths.push(parse_bandwidth(value)?),
        'k' => set_once(&mut m.key, 'k', value)?,
        'a' => m.attributes.push(parse_attribute(value)?),
        'v' | 'o' | 's' | 'u' | 'e' | 'p' | 't' | 'r' | 'z' => {
            return Err(LineError::Misplaced(kind))
        }
        other => return Err(LineError::UnknownType(other)),
    }
    Ok(())
}

fn set_once(slot: &mut Option<String>, kind: char, value: &str) -> Result<(), LineError> {
    if slot.is_some() {
        return Err(LineError::Duplicate(kind));
    }
    *slot = Some(value.to_owned());
    Ok(())
}

/// Decimal digits only: `str::parse` would also take a leading `+`.
fn number<T: FromStr>(s: &str, field: Field) -> Result<T, LineError> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(LineError::Invalid(field));
    }
    s.parse().map_err(|_| LineError::Invalid(field))
}

fn parse_addr_type(s: &str) -> Result<AddrType, LineError> {
    if s.eq_ignore_ascii_case("IP4") {
        Ok(AddrType::Ip4)
    } else if s.eq_ignore_ascii_case("IP6") {
        Ok(AddrType::Ip6)
    } else {
        Err(LineError::Invalid(Field::AddrType))
    }
}

fn check_net_type(s: &str) -> Result<(), LineError> {
    if s.eq_ignore_ascii_case("IN") {
        Ok(())
    } else {
        Err(LineError::UnsupportedNetType)
    }
}

/// `o=<username> <sess-id> <sess-version> <nettype> <addrtype> <unicast-address>`.
fn parse_origin(value: &str) -> Result<Origin, LineError> {
    let mut it = value.split_ascii_whitespace();
    let mut next = || it.next().ok_or(LineError::Invalid(Field::Origin));
    let username = next()?.to_owned();
    let session_id = number(next()?, Field::SessionId)?;
    let session_version = number(next()?, Field::SessionVersion)?;
    check_net_type(next()?)?;
    let addr_type = parse_addr_type(next()?)?;
    let address = next()?.to_owned();
    if it.next().is_some() {
        return Err(LineError::Invalid(Field::Origin));
    }
    Ok(Origin {
        username,
        session_id,
        session_version,
        addr_type,
        address,
    })
}

/// `c=IN <addrtype> <address>[/<ttl>[/<n>]]` (also the tail of `a=rtcp`).
fn parse_connection(value: &str) -> Result<Connection, LineError> {
    let mut it = value.split_ascii_whitespace();
    let (Some(net), Some(addr_type), Some(address), None) =
        (it.next(), it.next(), it.next(), it.next())
    else {
        return Err(LineError::Invalid(Field::Connection));
    };
    check_net_type(net)?;
    let addr_type = parse_addr_type(addr_type)?;
    let (host, multicast) = match address.split_once('/') {
        Some((host, rest)) if !rest.is_empty() => (host, Some(rest.to_owned())),
        Some(_) => return Err(LineError::Invalid(Field::Address)),
        None => (address, None),
    };
    let address = match host.parse::<IpAddr>() {
        Ok(ip) if AddrType::of(ip) == addr_type => ConnectionAddress::Ip(ip),
        Ok(_) => return Err(LineError::Invalid(Field::Address)),
        Err(_) if is_host_name(host) => ConnectionAddress::Fqdn(addr_type, host.to_owned()),
        Err(_) => return Err(LineError::Invalid(Field::Address)),
    };
    Ok(Connection { address, multicast })
}

/// RFC 8866 §9 `FQDN`: letters, digits, `-` and `.`, with at least one letter so a mangled
/// IPv4 literal such as `1.2.3` is not taken for a name.
fn is_host_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        && s.bytes().any(|b| b.is_ascii_alphabetic())
}

fn parse_bandwidth(value: &str) -> Result<Bandwidth, LineError> {
    let (kind, bw) = value
        .split_once(':')
        .ok_or(LineError::Invalid(Field::Bandwidth))?;
    if kind.is_empty() || kind.contains(char::is_whitespace) {
        return Err(LineError::Invalid(Field::Bandwidth));
    }
    Ok(Bandwidth {
        kind: kind.to_owned(),
        value: number(bw, Field::Bandwidth)?,
    })
}

fn parse_timing(value: &str) -> Result<Timing, LineError> {
    let mut it = value.split_ascii_whitespace();
    let (Some(start), Some(stop), None) = (it.next(), it.next(), it.next()) else {
        return Err(LineError::Invalid(Field::Timing));
    };
    Ok(Timing {
        start: number(start, Field::Timing)?,
        stop: number(stop, Field::Timing)?,
        repeats: Vec::new(),
    })
}

/// `m=<media> <port>[/<number>] <proto> <fmt> ...`.
fn parse_media(value: &str) -> Result<MediaDescription, LineError> {
    let mut it = value.split_ascii_whitespace();
    let (Some(media), Some(port), Some(proto)) = (it.next(), it.next(), it.next()) else {
        return Err(LineError::Invalid(Field::Media));
    };
    let (port, port_count) = match port.split_once('/') {
        Some((p, n)) => (number(p, Field::Port)?, Some(number(n, Field::PortCount)?)),
        None => (number(port, Field::Port)?, None),
    };
    if port_count == Some(0) {
        return Err(LineError::Invalid(Field::PortCount));
    }
    let proto = Proto::parse(proto);
    let formats: Vec<String> = it.map(str::to_owned).collect();
    // RFC 8866 §9 requires at least one format; a rejected (port 0) line may be sloppy.
    if formats.is_empty() && port != 0 {
        return Err(LineError::Invalid(Field::Formats));
    }
    if proto.is_rtp() {
        for f in &formats {
            payload_type(f)?;
        }
    }
    Ok(MediaDescription {
        media: MediaType::parse(media),
        port,
        port_count,
        proto,
        formats,
        info: None,
        connection: None,
        bandwidths: Vec::new(),
        key: None,
        attributes: Vec::new(),
    })
}

/// An RTP payload type: 0-127 (RFC 3550 §5.1, 7 bits).
fn payload_type(s: &str) -> Result<u8, LineError> {
    match number::<u8>(s, Field::PayloadType)? {
        pt @ 0..=127 => Ok(pt),
        _ => Err(LineError::Invalid(Field::PayloadType)),
    }
}

/// `a=<name>[:<value>]`. A modelled attribute with a value we cannot read (RFC 4475's
/// `a=rtpmap:31 LPC`) becomes [`Attribute::Invalid`]: RFC 8866 §5.13 says an attribute
/// that is not understood is ignored, and one bad line on a stream voxgate will reject
/// anyway must not fail the call.
fn parse_attribute(value: &str) -> Result<Attribute, LineError> {
    let (name, arg) = match value.split_once(':') {
        Some((n, v)) => (n, Some(v)),
        None => (value, None),
    };
    if name.is_empty() || name.contains(|c: char| c.is_whitespace()) {
        return Err(LineError::Invalid(Field::AttributeName));
    }
    typed_attribute(name, arg).or_else(|e| {
        let reason = match e {
            LineError::Invalid(field) => field,
            // Only a=rtcp reads a network type.
            _ => Field::Rtcp,
        };
        Ok(Attribute::Invalid {
            name: name.to_owned(),
            value: arg.map(str::to_owned),
            reason,
        })
    })
}

fn typed_attribute(name: &str, arg: Option<&str>) -> Result<Attribute, LineError> {
    let is = |known: &str| name.eq_ignore_ascii_case(known);
    let no_value = |attr: Attribute, field| match arg {
        None => Ok(attr),
        Some(_) => Err(LineError::Invalid(field)),
    };
    let required = |field| {
        arg.map(str::trim)
            .filter(|v| !v.is_empty())
            .ok_or(LineError::Invalid(field))
    };

    if is("rtpmap") {
        parse_rtpmap(required(Field::Rtpmap)?).map(Attribute::Rtpmap)
    } else if is("fmtp") {
        let v = required(Field::Fmtp)?;
        let (format, params) = v.split_once(char::is_whitespace).unwrap_or((v, ""));
        Ok(Attribute::Fmtp {
            format: format.to_owned(),
            params: params.trim_start().to_owned(),
        })
    } else if is("ptime") {
        Ok(Attribute::Ptime(packet_time(
            required(Field::Ptime)?,
            Field::Ptime,
        )?))
    } else if is("maxptime") {
        Ok(Attribute::MaxPtime(packet_time(
            required(Field::MaxPtime)?,
            Field::MaxPtime,
        )?))
    } else if let Some(d) = direction(name) {
        no_value(Attribute::Direction(d), Field::Direction)
    } else if is("rtcp") {
        parse_rtcp(required(Field::Rtcp)?)
    } else if is("rtcp-mux") {
        no_value(Attribute::RtcpMux, Field::RtcpMux)
    } else if is("mid") {
        Ok(Attribute::Mid(required(Field::Mid)?.to_owned()))
    } else {
        Ok(Attribute::Other {
            name: name.to_owned(),
            value: arg.map(str::to_owned),
        })
    }
}

/// RFC 8866 §9 `non-zero-int-or-real` milliseconds: `20`, `22.5`. Digits past the
/// microsecond are dropped (no codec frames that finely).
fn packet_time(v: &str, field: Field) -> Result<PacketTime, LineError> {
    let (int, frac) = v.split_once('.').unwrap_or((v, ""));
    let ms: u32 = number(int, field)?;
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return Err(LineError::Invalid(field));
    }
    let us = frac
        .bytes()
        .chain(std::iter::repeat(b'0'))
        .take(3)
        .fold(0, |acc, d| acc * 10 + u32::from(d - b'0'));
    ms.checked_mul(1000)
        .and_then(|t| t.checked_add(us))
        .and_then(PacketTime::from_micros)
        .ok_or(LineError::Invalid(field))
}

fn direction(name: &str) -> Option<Direction> {
    [
        Direction::SendRecv,
        Direction::SendOnly,
        Direction::RecvOnly,
        Direction::Inactive,
    ]
    .into_iter()
    .find(|d| d.as_str().eq_ignore_ascii_case(name))
}

/// `<pt> <encoding>/<clock>[/<channels>]` (RFC 8866 §6.6).
fn parse_rtpmap(v: &str) -> Result<Rtpmap, LineError> {
    let mut it = v.split_ascii_whitespace();
    let (Some(pt), Some(enc), None) = (it.next(), it.next(), it.next()) else {
        return Err(LineError::Invalid(Field::Rtpmap));
    };
    let payload_type = payload_type(pt)?;
    let mut parts = enc.split('/');
    let (Some(encoding), Some(clock)) = (parts.next(), parts.next()) else {
        return Err(LineError::Invalid(Field::Rtpmap));
    };
    if encoding.is_empty() {
        return Err(LineError::Invalid(Field::Rtpmap));
    }
    let clock_rate: u32 = number(clock, Field::ClockRate)?;
    if clock_rate == 0 {
        return Err(LineError::Invalid(Field::ClockRate));
    }
    let channels = match parts.next() {
        Some(ch) => match number::<u16>(ch, Field::Channels)? {
            0 => return Err(LineError::Invalid(Field::Channels)),
            n => Some(n),
        },
        None => None,
    };
    if parts.next().is_some() {
        return Err(LineError::Invalid(Field::Rtpmap));
    }
    Ok(Rtpmap {
        payload_type,
        encoding: encoding.to_owned(),
        clock_rate,
        channels,
    })
}

/// `a=rtcp:<port> [IN <addrtype> <address>]` (RFC 3605 §2.1).
fn parse_rtcp(v: &str) -> Result<Attribute, LineError> {
    let (port, rest) = match v.split_once(char::is_whitespace) {
        Some((p, rest)) => (p, Some(rest.trim_start())),
        None => (v, None),
    };
    let port = number(port, Field::Rtcp)?;
    let connection = match rest {
        Some(rest) => Some(parse_connection(rest).map_err(|e| match e {
            LineError::UnsupportedNetType => e,
            _ => LineError::Invalid(Field::Rtcp),
        })?),
        None => None,
    };
    Ok(Attribute::Rtcp { port, connection })
}
