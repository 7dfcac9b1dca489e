//! SIP message parsing and serialisation (RFC 3261 §7, §20, §25).
//!
//! A [`Message`] owns the received [`Bytes`] and an index of spans into them; it is validated
//! once in [`Message::parse`] (start line, mandatory headers Via/From/To/Call-ID/CSeq,
//! Content-Length), after which the accessors for those headers are infallible and zero-copy
//! (smoltcp's `new_checked` shape). Other headers are parsed lazily by their accessors, which
//! return `Result` because a peer can send garbage there without breaking the message.
//!
//! Header values are never unfolded or copied: a folded value (RFC 3261 §7.3.1) is returned
//! with its CRLF+WSP inside, and every typed parser treats that as whitespace.

mod builder;
mod headers;
mod syntax;

use std::fmt;
use std::ops::Range;

use bytes::Bytes;

pub use builder::MessageBuilder;
use headers::{check_uri, parse_cseq, parse_name_addr, parse_via};
use syntax::{bad, find_param, is_call_id, is_token, split_commas, trim_lws};

/// Largest message we accept, in bytes (a UDP datagram cannot be larger anyway).
pub const MAX_MESSAGE_SIZE: usize = 64 * 1024;
/// Most header lines we index in one message; more is a resource attack, not SIP.
pub const MAX_HEADERS: usize = 128;

/// Why a message was rejected. Precise, never a string.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("message is empty")]
    Empty,
    #[error("malformed start line")]
    StartLine,
    #[error("unsupported SIP version")]
    Version,
    #[error("malformed header line")]
    HeaderLine,
    #[error("missing end of headers (no empty line)")]
    NoHeaderEnd,
    #[error("missing mandatory header {0}")]
    Missing(&'static str),
    #[error("malformed {0} header")]
    BadHeader(&'static str),
    #[error("body shorter than Content-Length (truncated)")]
    Truncated,
    #[error("message too large")]
    TooLarge,
    #[error("non-UTF-8 bytes in the header section")]
    Encoding,
}

/// A request method (RFC 3261 §7.1 plus the extensions we route on).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Method {
    Invite,
    Ack,
    Bye,
    Cancel,
    Register,
    Options,
    Info,
    Update,
    Prack,
    Subscribe,
    Notify,
    Refer,
    Message,
    Publish,
    Extension(String),
}

impl Method {
    /// Parse a method token (case-sensitive, RFC 3261 §7.1).
    pub fn from_token(s: &str) -> Method {
        match s {
            "INVITE" => Method::Invite,
            "ACK" => Method::Ack,
            "BYE" => Method::Bye,
            "CANCEL" => Method::Cancel,
            "REGISTER" => Method::Register,
            "OPTIONS" => Method::Options,
            "INFO" => Method::Info,
            "UPDATE" => Method::Update,
            "PRACK" => Method::Prack,
            "SUBSCRIBE" => Method::Subscribe,
            "NOTIFY" => Method::Notify,
            "REFER" => Method::Refer,
            "MESSAGE" => Method::Message,
            "PUBLISH" => Method::Publish,
            other => Method::Extension(other.to_owned()),
        }
    }
    pub fn as_str(&self) -> &str {
        match self {
            Method::Invite => "INVITE",
            Method::Ack => "ACK",
            Method::Bye => "BYE",
            Method::Cancel => "CANCEL",
            Method::Register => "REGISTER",
            Method::Options => "OPTIONS",
            Method::Info => "INFO",
            Method::Update => "UPDATE",
            Method::Prack => "PRACK",
            Method::Subscribe => "SUBSCRIBE",
            Method::Notify => "NOTIFY",
            Method::Refer => "REFER",
            Method::Message => "MESSAGE",
            Method::Publish => "PUBLISH",
            Method::Extension(s) => s,
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Header names we have typed accessors for; compact forms (RFC 3261 §7.3.3) and any case
/// map to the same variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HeaderName {
    Via,
    From,
    To,
    CallId,
    CSeq,
    Contact,
    Route,
    RecordRoute,
    MaxForwards,
    ContentLength,
    ContentType,
    Expires,
    MinExpires,
    Supported,
    Require,
    ProxyRequire,
    Unsupported,
    Allow,
    UserAgent,
    Server,
    Authorization,
    ProxyAuthorization,
    WwwAuthenticate,
    ProxyAuthenticate,
    AuthenticationInfo,
    RetryAfter,
    Event,
    SessionExpires,
    MinSe,
    /// Any other name; compare with [`Message::header_named`].
    Other,
}

/// Canonical spellings, in the order of the enum.
const HEADER_NAMES: [(&str, HeaderName); 29] = [
    ("Via", HeaderName::Via),
    ("From", HeaderName::From),
    ("To", HeaderName::To),
    ("Call-ID", HeaderName::CallId),
    ("CSeq", HeaderName::CSeq),
    ("Contact", HeaderName::Contact),
    ("Route", HeaderName::Route),
    ("Record-Route", HeaderName::RecordRoute),
    ("Max-Forwards", HeaderName::MaxForwards),
    ("Content-Length", HeaderName::ContentLength),
    ("Content-Type", HeaderName::ContentType),
    ("Expires", HeaderName::Expires),
    ("Min-Expires", HeaderName::MinExpires),
    ("Supported", HeaderName::Supported),
    ("Require", HeaderName::Require),
    ("Proxy-Require", HeaderName::ProxyRequire),
    ("Unsupported", HeaderName::Unsupported),
    ("Allow", HeaderName::Allow),
    ("User-Agent", HeaderName::UserAgent),
    ("Server", HeaderName::Server),
    ("Authorization", HeaderName::Authorization),
    ("Proxy-Authorization", HeaderName::ProxyAuthorization),
    ("WWW-Authenticate", HeaderName::WwwAuthenticate),
    ("Proxy-Authenticate", HeaderName::ProxyAuthenticate),
    ("Authentication-Info", HeaderName::AuthenticationInfo),
    ("Retry-After", HeaderName::RetryAfter),
    ("Event", HeaderName::Event),
    ("Session-Expires", HeaderName::SessionExpires),
    ("Min-SE", HeaderName::MinSe),
];

/// Compact forms: RFC 3261 §7.3.3 plus those registered by later RFCs (RFC 3265 `o`/`u`,
/// RFC 3515 `r`, RFC 3892 `b`, RFC 4028 `x`).
const COMPACT_FORMS: [(u8, &str); 15] = [
    (b'i', "Call-ID"),
    (b'm', "Contact"),
    (b'e', "Content-Encoding"),
    (b'l', "Content-Length"),
    (b'c', "Content-Type"),
    (b'f', "From"),
    (b's', "Subject"),
    (b'k', "Supported"),
    (b't', "To"),
    (b'v', "Via"),
    (b'o', "Event"),
    (b'r', "Refer-To"),
    (b'b', "Referred-By"),
    (b'x', "Session-Expires"),
    (b'u', "Allow-Events"),
];

/// The long form of a compact header name (any case); other names unchanged.
pub fn expand_compact_name(name: &str) -> &str {
    if let [c] = name.as_bytes() {
        let c = c.to_ascii_lowercase();
        if let Some((_, long)) = COMPACT_FORMS.iter().find(|(k, _)| *k == c) {
            return long;
        }
    }
    name
}

impl HeaderName {
    /// Classifies a header name: any case, compact forms resolved.
    pub fn from_name(name: &str) -> HeaderName {
        let name = expand_compact_name(name);
        HEADER_NAMES
            .iter()
            .find(|(n, _)| n.len() == name.len() && n.eq_ignore_ascii_case(name))
            .map_or(HeaderName::Other, |(_, h)| *h)
    }

    /// The canonical spelling; `None` for [`HeaderName::Other`].
    pub fn as_str(&self) -> Option<&'static str> {
        HEADER_NAMES
            .iter()
            .find(|(_, h)| h == self)
            .map(|(n, _)| *n)
    }
}

/// A Via header value (RFC 3261 §20.42, RFC 3581).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Via<'a> {
    /// e.g. "UDP", "TCP" (upper-cased by the sender; compare case-insensitively).
    pub transport: &'a str,
    pub host: &'a str,
    pub port: Option<u16>,
    pub branch: Option<&'a str>,
    pub received: Option<&'a str>,
    /// `None`: no rport param; `Some(None)`: bare `;rport`; `Some(Some(p))`: `;rport=p`.
    pub rport: Option<Option<u16>>,
    /// The raw parameter string after sent-by (starting at the first `;`), for relaying.
    pub params: &'a str,
}

impl<'a> Via<'a> {
    /// Parses one via-parm (not a comma-separated list).
    pub fn parse(s: &'a str) -> Result<Via<'a>, ParseError> {
        parse_via(s)
    }
    /// Any Via parameter by name (case-insensitive); `Some("")` for a flag.
    pub fn param(&self, name: &str) -> Option<&'a str> {
        find_param(self.params, name)
    }
    /// RFC 3261 §8.1.1.7: the branch starts with the magic cookie `z9hG4bK`.
    pub fn is_rfc3261_branch(&self) -> bool {
        self.branch.is_some_and(|b| b.starts_with("z9hG4bK"))
    }
}

impl fmt::Display for Via<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SIP/2.0/{} {}", self.transport, self.host)?;
        if let Some(p) = self.port {
            write!(f, ":{p}")?;
        }
        f.write_str(self.params)
    }
}

/// name-addr / addr-spec with parameters (From, To, Contact, Route, Record-Route).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameAddr<'a> {
    /// The display name: the inside of the quotes for a quoted-string (escapes left as they
    /// are), or the tokens as sent.
    pub display_name: Option<&'a str>,
    /// The URI without angle brackets.
    pub uri: &'a str,
    /// Header parameters after the URI (starting at the first `;`, or empty).
    pub params: &'a str,
}

impl<'a> NameAddr<'a> {
    /// Parses one name-addr or addr-spec with header parameters (RFC 3261 §20.10 rules for
    /// where the parameters belong).
    pub fn parse(s: &'a str) -> Result<NameAddr<'a>, ParseError> {
        parse_name_addr(s, "name-addr")
    }
    /// The value of header parameter `name` (case-insensitive); `Some("")` for a bare flag.
    /// A quoted value is returned without its quotes.
    pub fn param(&self, name: &str) -> Option<&'a str> {
        find_param(self.params, name)
    }
    pub fn tag(&self) -> Option<&'a str> {
        self.param("tag")
    }
    /// Every header parameter as `(name, value)`, in order.
    pub fn params_iter(&self) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
        syntax::ParamIter::new(self.params)
    }
    /// Contact `expires` parameter (RFC 3261 §20.10): delta-seconds up to 2**32-1.
    pub fn expires(&self) -> Result<Option<u32>, ParseError> {
        self.param("expires")
            .map(|v| syntax::parse_u32(v).ok_or(bad("expires")))
            .transpose()
    }
    /// Contact `q` parameter (RFC 3261 §20.10) in thousandths (`q=0.33` → 330).
    pub fn q_millis(&self) -> Result<Option<u16>, ParseError> {
        self.param("q").map(parse_qvalue).transpose()
    }
    /// The URI as a SIP/SIPS URI.
    pub fn sip_uri(&self) -> Result<SipUri<'a>, ParseError> {
        SipUri::parse(self.uri)
    }
}

/// `qvalue = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] )`.
fn parse_qvalue(v: &str) -> Result<u16, ParseError> {
    let err = bad("q");
    let (int, frac) = v.split_once('.').unwrap_or((v, ""));
    if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return Err(err);
    }
    let mut millis: u16 = 0;
    for (i, b) in frac.bytes().enumerate() {
        millis += u16::from(b - b'0') * [100, 10, 1][i];
    }
    match int {
        "0" => Ok(millis),
        "1" if millis == 0 => Ok(1000),
        _ => Err(err),
    }
}

impl fmt::Display for NameAddr<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(d) = self.display_name {
            // A token display name is also a valid quoted-string body; a quoted one kept
            // its escapes.
            write!(f, "\"{d}\" ")?;
        }
        write!(f, "<{}>{}", self.uri, self.params)
    }
}

/// A SIP or SIPS URI (RFC 3261 §19.1), borrowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SipUri<'a> {
    pub scheme: &'a str,
    pub user: Option<&'a str>,
    pub password: Option<&'a str>,
    pub host: &'a str,
    pub port: Option<u16>,
    /// URI parameters (starting at the first `;`, or empty).
    pub params: &'a str,
    /// URI headers (after `?`, or empty).
    pub headers: &'a str,
}

impl<'a> SipUri<'a> {
    /// Parses a `sip:` or `sips:` URI (scheme case-insensitive). Escapes (`%XX`) are left as
    /// they are in every component. Errors are `BadHeader("URI")`.
    pub fn parse(s: &'a str) -> Result<SipUri<'a>, ParseError> {
        headers::parse_sip_uri(s)
    }
    /// URI parameter `name` (case-insensitive); `Some("")` for a flag such as `;lr`.
    pub fn param(&self, name: &str) -> Option<&'a str> {
        self.params.split(';').skip(1).find_map(|p| {
            let (n, v) = p.split_once('=').unwrap_or((p, ""));
            n.eq_ignore_ascii_case(name).then_some(v)
        })
    }
    pub fn is_sips(&self) -> bool {
        self.scheme.eq_ignore_ascii_case("sips")
    }
}

impl fmt::Display for SipUri<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:", self.scheme)?;
        if let Some(u) = self.user {
            f.write_str(u)?;
            if let Some(p) = self.password {
                write!(f, ":{p}")?;
            }
            f.write_str("@")?;
        }
        f.write_str(self.host)?;
        if let Some(p) = self.port {
            write!(f, ":{p}")?;
        }
        f.write_str(self.params)?;
        if !self.headers.is_empty() {
            write!(f, "?{}", self.headers)?;
        }
        Ok(())
    }
}

/// CSeq (RFC 3261 §20.16).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CSeq {
    pub seq: u32,
    pub method: Method,
}

impl fmt::Display for CSeq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.seq, self.method)
    }
}

/// Contact header contents (RFC 3261 §20.10).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Contacts<'a> {
    /// `Contact: *` (only valid in REGISTER with Expires: 0).
    Star,
    List(Vec<NameAddr<'a>>),
}

impl<'a> Contacts<'a> {
    pub fn is_star(&self) -> bool {
        matches!(self, Contacts::Star)
    }
    /// The contacts in order; empty for `*`.
    pub fn as_slice(&self) -> &[NameAddr<'a>] {
        match self {
            Contacts::Star => &[],
            Contacts::List(l) => l,
        }
    }
}

/// A byte range into the message buffer. u32 is enough: messages are capped at
/// [`MAX_MESSAGE_SIZE`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Span {
    start: u32,
    end: u32,
}

impl Span {
    fn new(start: usize, end: usize) -> Span {
        // Both are bounded by MAX_MESSAGE_SIZE, checked before any span is made.
        Span {
            start: u32::try_from(start).unwrap_or(0),
            end: u32::try_from(end).unwrap_or(0),
        }
    }
    fn range(self) -> Range<usize> {
        self.start as usize..self.end as usize
    }
    /// The span of `sub` inside `base`; empty if `sub` is not a slice of `base`.
    fn of(base: &str, sub: &str) -> Span {
        let off = (sub.as_ptr() as usize).wrapping_sub(base.as_ptr() as usize);
        match off.checked_add(sub.len()) {
            Some(end) if end <= base.len() => Span::new(off, end),
            _ => Span::default(),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct HeaderEntry {
    name: HeaderName,
    name_span: Span,
    /// Trimmed of LWS on both sides; may contain folds.
    value: Span,
}

#[derive(Debug, Clone)]
enum StartLine {
    Request { method: Method, uri: Span },
    Response { status: u16, reason: Span },
}

#[derive(Debug, Clone, Copy)]
struct NameAddrSpans {
    display_name: Option<Span>,
    uri: Span,
    params: Span,
}

impl NameAddrSpans {
    fn of(base: &str, na: &NameAddr<'_>) -> Self {
        NameAddrSpans {
            display_name: na.display_name.map(|d| Span::of(base, d)),
            uri: Span::of(base, na.uri),
            params: Span::of(base, na.params),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct ViaSpans {
    transport: Span,
    host: Span,
    port: Option<u16>,
    branch: Option<Span>,
    received: Option<Span>,
    rport: Option<Option<u16>>,
    params: Span,
}

/// A parsed SIP message over its own bytes.
#[derive(Debug, Clone)]
pub struct Message {
    buf: Bytes,
    /// End of the header section (just after the empty line).
    head_len: u32,
    start: StartLine,
    headers: Vec<HeaderEntry>,
    call_id: Span,
    cseq: CSeq,
    from: NameAddrSpans,
    to: NameAddrSpans,
    top_via: ViaSpans,
    content_length: Option<u32>,
    body: Span,
}

/// Where the lines of the header section are, found on raw bytes before UTF-8 checking.
struct RawIndex {
    start_line: Range<usize>,
    headers: Vec<HeaderEntry>,
    body_start: usize,
}

/// Splits the header section into lines (CRLF only: a bare CR or LF is an error, so that
/// framing and parsing can never disagree about where a message ends), joins folded
/// continuation lines (RFC 3261 §7.3.1), and records name and value spans.
fn index_lines(data: &[u8], from: usize) -> Result<RawIndex, ParseError> {
    let mut headers: Vec<HeaderEntry> = Vec::with_capacity(24);
    let mut start_line = None;
    let mut pos = from;
    loop {
        let rest = data.get(pos..).ok_or(ParseError::NoHeaderEnd)?;
        let cr = rest
            .iter()
            .position(|&b| b == b'\r' || b == b'\n')
            .ok_or(ParseError::NoHeaderEnd)?;
        let line_end = pos + cr;
        match (data.get(line_end), data.get(line_end + 1)) {
            (Some(b'\r'), Some(b'\n')) => {}
            (Some(b'\r'), None) => return Err(ParseError::NoHeaderEnd),
            _ => return Err(ParseError::HeaderLine),
        }
        let line = data.get(pos..line_end).unwrap_or(&[]);
        let next = line_end + 2;
        if start_line.is_none() {
            start_line = Some(pos..line_end);
        } else if line.is_empty() {
            return Ok(RawIndex {
                start_line: start_line.unwrap_or(0..0),
                headers,
                body_start: next,
            });
        } else if matches!(line.first(), Some(b' ' | b'\t')) {
            // Continuation: extend the previous value over the fold.
            let last = headers.last_mut().ok_or(ParseError::HeaderLine)?;
            last.value.end = Span::new(0, line_end).end;
        } else {
            let colon = line
                .iter()
                .position(|&b| b == b':')
                .ok_or(ParseError::HeaderLine)?;
            // HCOLON = *( SP / HTAB ) ":" SWS
            let name_len = line[..colon]
                .iter()
                .rposition(|&b| b != b' ' && b != b'\t')
                .map_or(0, |i| i + 1);
            let name = &line[..name_len];
            if name.is_empty() || !name.iter().all(|&b| syntax::is_token_char(b)) {
                return Err(ParseError::HeaderLine);
            }
            if headers.len() >= MAX_HEADERS {
                return Err(ParseError::TooLarge);
            }
            headers.push(HeaderEntry {
                // Names are all-ASCII tokens here.
                name: HeaderName::from_name(std::str::from_utf8(name).unwrap_or("")),
                name_span: Span::new(pos, pos + name_len),
                value: Span::new(pos + colon + 1, line_end),
            });
        }
        pos = next;
    }
}

/// `Request-Line = Method SP Request-URI SP SIP-Version` or
/// `Status-Line = SIP-Version SP Status-Code SP Reason-Phrase` (RFC 3261 §7.1, §7.2).
fn parse_start_line(head: &str, range: Range<usize>) -> Result<StartLine, ParseError> {
    let line = head.get(range.clone()).ok_or(ParseError::StartLine)?;
    let is_version = |v: &str| v.eq_ignore_ascii_case("SIP/2.0");
    let looks_like_version = |v: &str| v.get(..4).is_some_and(|p| p.eq_ignore_ascii_case("SIP/"));
    if looks_like_version(line) {
        let (version, rest) = line.split_once(' ').unwrap_or((line, ""));
        if !is_version(version) {
            return Err(ParseError::Version);
        }
        // RFC 4475 §3.1.1.13: the reason phrase may be empty ("SIP/2.0 100 "); we also
        // take a status line without the final SP.
        let (code, reason) = rest.split_once(' ').unwrap_or((rest, ""));
        if code.len() != 3 {
            return Err(ParseError::StartLine);
        }
        let status = syntax::parse_u32(code)
            .and_then(|c| u16::try_from(c).ok())
            .filter(|c| (100..=699).contains(c))
            .ok_or(ParseError::StartLine)?;
        let off = range.start + version.len() + 1 + code.len() + 1;
        let reason = if reason.is_empty() {
            Span::new(range.end, range.end)
        } else {
            Span::new(off, range.end)
        };
        return Ok(StartLine::Response { status, reason });
    }
    // Exactly one SP between elements and none at the end (RFC 4475 §3.1.2.8-10).
    let mut parts = line.split(' ');
    let (Some(method), Some(uri), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(ParseError::StartLine);
    };
    if !is_version(version) {
        return Err(if looks_like_version(version) {
            ParseError::Version
        } else {
            ParseError::StartLine
        });
    }
    if !is_token(method) || !check_uri(uri) {
        return Err(ParseError::StartLine);
    }
    let uri_start = range.start + method.len() + 1;
    Ok(StartLine::Request {
        method: Method::from_token(method),
        uri: Span::new(uri_start, uri_start + uri.len()),
    })
}

impl Message {
    /// Parse one complete message. Content-Length, when present, must not exceed the bytes
    /// after the header section (else [`ParseError::Truncated`]); extra trailing bytes are
    /// ignored (RFC 3261 §18.3). When absent, the body is the rest of the buffer.
    ///
    /// Leading CRLFs are skipped (RFC 3261 §7.5; keep-alives per RFC 5626 §4.4.1), so a
    /// buffer of only CRLFs is [`ParseError::Empty`].
    pub fn parse(buf: Bytes) -> Result<Message, ParseError> {
        if buf.len() > MAX_MESSAGE_SIZE {
            return Err(ParseError::TooLarge);
        }
        let data: &[u8] = &buf;
        let mut from = 0;
        while data.get(from..from + 2) == Some(b"\r\n") {
            from += 2;
        }
        if from >= data.len() {
            return Err(ParseError::Empty);
        }
        let raw = index_lines(data, from)?;
        let head_bytes = data.get(..raw.body_start).ok_or(ParseError::NoHeaderEnd)?;
        let head = std::str::from_utf8(head_bytes).map_err(|_| ParseError::Encoding)?;
        let start = parse_start_line(head, raw.start_line)?;

        let mut headers = raw.headers;
        for h in &mut headers {
            let v = head.get(h.value.range()).unwrap_or("");
            h.value = Span::of(head, trim_lws(v));
        }
        let value = |h: &HeaderEntry| head.get(h.value.range()).unwrap_or("");
        // The single value of a header that must appear exactly once.
        let single = |name: HeaderName, label: &'static str| -> Result<&str, ParseError> {
            let mut it = headers.iter().filter(|h| h.name == name);
            let first = it.next().ok_or(ParseError::Missing(label))?;
            // RFC 4475 §3.3.8: repeated single-valued headers are a 400, and for
            // transaction matching we cannot pick one.
            if it.next().is_some() {
                return Err(bad(label));
            }
            Ok(value(first))
        };

        let via_value = headers
            .iter()
            .find(|h| h.name == HeaderName::Via)
            .map(value)
            .ok_or(ParseError::Missing("Via"))?;
        let top_via = parse_via(split_commas(via_value).next().unwrap_or(""))?;
        let top_via = ViaSpans {
            transport: Span::of(head, top_via.transport),
            host: Span::of(head, top_via.host),
            port: top_via.port,
            branch: top_via.branch.map(|b| Span::of(head, b)),
            received: top_via.received.map(|r| Span::of(head, r)),
            rport: top_via.rport,
            params: Span::of(head, top_via.params),
        };
        let from_na = parse_name_addr(single(HeaderName::From, "From")?, "From")?;
        let from_spans = NameAddrSpans::of(head, &from_na);
        let to_na = parse_name_addr(single(HeaderName::To, "To")?, "To")?;
        let to_spans = NameAddrSpans::of(head, &to_na);
        let call_id = single(HeaderName::CallId, "Call-ID")?;
        if !is_call_id(call_id) {
            return Err(bad("Call-ID"));
        }
        let call_id = Span::of(head, call_id);
        let cseq = parse_cseq(single(HeaderName::CSeq, "CSeq")?)?;
        if let StartLine::Request { method, .. } = &start {
            // RFC 4475 §3.1.2.17 (mismatch01): a 400. §3.1.2.18 (mismatch02): with an
            // unknown request method the preferred answer is 501, so such a request must
            // parse; the transaction user answers 501 to unknown methods first.
            if *method != cseq.method && !matches!(method, Method::Extension(_)) {
                return Err(bad("CSeq"));
            }
        }

        let body_start = raw.body_start;
        let available = data.len() - body_start;
        let content_length = match single(HeaderName::ContentLength, "Content-Length") {
            Err(ParseError::Missing(_)) => None,
            Err(e) => return Err(e),
            Ok(v) => {
                let n = syntax::parse_usize(v).ok_or(bad("Content-Length"))?;
                if n > available {
                    return Err(ParseError::Truncated);
                }
                Some(n)
            }
        };
        let body_end = body_start + content_length.unwrap_or(available);
        Ok(Message {
            head_len: Span::new(0, body_start).end,
            start,
            headers,
            call_id,
            cseq,
            from: from_spans,
            to: to_spans,
            top_via,
            content_length: content_length.and_then(|n| u32::try_from(n).ok()),
            body: Span::new(body_start, body_end),
            buf,
        })
    }

    /// Text of a span in the header section. Spans were made from the UTF-8-checked header
    /// section at ASCII delimiters, so this never fails; `""` is the never-taken fallback
    /// that keeps the code free of panics.
    fn text(&self, span: Span) -> &str {
        self.buf
            .get(span.range())
            .and_then(|b| std::str::from_utf8(b).ok())
            .unwrap_or("")
    }

    fn name_addr(&self, s: &NameAddrSpans) -> NameAddr<'_> {
        NameAddr {
            display_name: s.display_name.map(|d| self.text(d)),
            uri: self.text(s.uri),
            params: self.text(s.params),
        }
    }

    pub fn as_bytes(&self) -> &Bytes {
        &self.buf
    }
    pub fn is_request(&self) -> bool {
        matches!(self.start, StartLine::Request { .. })
    }
    /// Request method; `None` for responses.
    pub fn method(&self) -> Option<&Method> {
        match &self.start {
            StartLine::Request { method, .. } => Some(method),
            StartLine::Response { .. } => None,
        }
    }
    pub fn request_uri(&self) -> Option<&str> {
        match self.start {
            StartLine::Request { uri, .. } => Some(self.text(uri)),
            StartLine::Response { .. } => None,
        }
    }
    /// Status code; `None` for requests.
    pub fn status(&self) -> Option<u16> {
        match self.start {
            StartLine::Response { status, .. } => Some(status),
            StartLine::Request { .. } => None,
        }
    }
    pub fn reason(&self) -> Option<&str> {
        match self.start {
            StartLine::Response { reason, .. } => Some(self.text(reason)),
            StartLine::Request { .. } => None,
        }
    }
    pub fn call_id(&self) -> &str {
        self.text(self.call_id)
    }
    /// For requests, `cseq().method == method()` unless the request method is an extension
    /// method (RFC 4475 §3.1.2.18, see [`Message::parse`]).
    pub fn cseq(&self) -> &CSeq {
        &self.cseq
    }
    pub fn from(&self) -> NameAddr<'_> {
        self.name_addr(&self.from)
    }
    pub fn to(&self) -> NameAddr<'_> {
        self.name_addr(&self.to)
    }
    pub fn top_via(&self) -> Via<'_> {
        let v = &self.top_via;
        Via {
            transport: self.text(v.transport),
            host: self.text(v.host),
            port: v.port,
            branch: v.branch.map(|b| self.text(b)),
            received: v.received.map(|r| self.text(r)),
            rport: v.rport,
            params: self.text(v.params),
        }
    }
    /// Every Via value in order, split across comma-separated and repeated headers.
    pub fn vias(&self) -> impl Iterator<Item = Result<Via<'_>, ParseError>> + '_ {
        self.header_values(HeaderName::Via)
            .flat_map(split_commas)
            .map(parse_via)
    }
    pub fn contacts(&self) -> Result<Option<Contacts<'_>>, ParseError> {
        let mut list = Vec::new();
        let (mut any, mut stars) = (false, 0usize);
        for v in self.header_values(HeaderName::Contact) {
            any = true;
            for e in split_commas(v) {
                if e == "*" {
                    stars += 1;
                } else {
                    list.push(parse_name_addr(e, "Contact")?);
                }
            }
        }
        match (any, stars) {
            (false, _) => Ok(None),
            (true, 0) => Ok(Some(Contacts::List(list))),
            // RFC 3261 §10.2.2: `*` stands alone.
            (true, 1) if list.is_empty() => Ok(Some(Contacts::Star)),
            _ => Err(bad("Contact")),
        }
    }
    pub fn routes(&self) -> impl Iterator<Item = Result<NameAddr<'_>, ParseError>> + '_ {
        self.header_values(HeaderName::Route)
            .flat_map(split_commas)
            .map(|e| parse_name_addr(e, "Route"))
    }
    pub fn record_routes(&self) -> impl Iterator<Item = Result<NameAddr<'_>, ParseError>> + '_ {
        self.header_values(HeaderName::RecordRoute)
            .flat_map(split_commas)
            .map(|e| parse_name_addr(e, "Record-Route"))
    }
    /// The value of a header that may appear at most once, as a number.
    fn single_number(
        &self,
        name: HeaderName,
        label: &'static str,
    ) -> Result<Option<u32>, ParseError> {
        let mut it = self.header_values(name);
        let Some(v) = it.next() else {
            return Ok(None);
        };
        if it.next().is_some() {
            return Err(bad(label));
        }
        syntax::parse_u32(v).map(Some).ok_or(bad(label))
    }
    /// RFC 3261 §20.22: 0-255; anything else is an error (RFC 4475 §3.1.2.4 lets the
    /// caller treat that as absent).
    pub fn max_forwards(&self) -> Result<Option<u32>, ParseError> {
        match self.single_number(HeaderName::MaxForwards, "Max-Forwards")? {
            Some(n) if n > 255 => Err(bad("Max-Forwards")),
            other => Ok(other),
        }
    }
    /// RFC 3261 §20.19: delta-seconds up to 2**32-1; larger is an error (RFC 4475 §3.1.2.4:
    /// the caller may use its default instead).
    pub fn expires(&self) -> Result<Option<u32>, ParseError> {
        self.single_number(HeaderName::Expires, "Expires")
    }
    /// Min-Expires (RFC 3261 §20.23).
    pub fn min_expires(&self) -> Result<Option<u32>, ParseError> {
        self.single_number(HeaderName::MinExpires, "Min-Expires")
    }
    /// Retry-After delta-seconds (RFC 3261 §20.33), comment and parameters ignored.
    pub fn retry_after(&self) -> Result<Option<u32>, ParseError> {
        let Some(v) = self.header(HeaderName::RetryAfter) else {
            return Ok(None);
        };
        let digits = v.split(|c: char| !c.is_ascii_digit()).next().unwrap_or("");
        syntax::parse_u32(digits)
            .map(Some)
            .ok_or(bad("Retry-After"))
    }
    /// The Content-Length value if the header was present (validated by `parse`).
    pub fn content_length(&self) -> Option<u32> {
        self.content_length
    }
    pub fn content_type(&self) -> Option<&str> {
        self.header(HeaderName::ContentType)
    }
    /// The Date header if present, checked to be an rfc1123-date in GMT (RFC 3261 §20.17;
    /// RFC 4475 §3.1.2.12).
    pub fn date(&self) -> Result<Option<&str>, ParseError> {
        match self.header_named("Date") {
            None => Ok(None),
            Some(d) if syntax::is_rfc1123_date(d) => Ok(Some(d)),
            Some(_) => Err(bad("Date")),
        }
    }
    /// Option tags from every Supported header.
    pub fn supported(&self) -> impl Iterator<Item = &str> + '_ {
        self.option_tags(HeaderName::Supported)
    }
    pub fn require(&self) -> impl Iterator<Item = &str> + '_ {
        self.option_tags(HeaderName::Require)
    }
    /// Option tags from every Proxy-Require header.
    pub fn proxy_require(&self) -> impl Iterator<Item = &str> + '_ {
        self.option_tags(HeaderName::ProxyRequire)
    }
    fn option_tags(&self, name: HeaderName) -> impl Iterator<Item = &str> + '_ {
        self.header_values(name)
            .flat_map(split_commas)
            .filter(|t| !t.is_empty())
    }
    /// First value of a typed header (the whole field value, folding normalised to spaces
    /// is NOT done: callers get the raw slice, trimmed).
    pub fn header(&self, name: HeaderName) -> Option<&str> {
        self.header_values(name).next()
    }
    /// Every raw value of a header (one per header line, not comma-split).
    pub fn header_values(&self, name: HeaderName) -> impl Iterator<Item = &str> + '_ {
        self.headers
            .iter()
            .filter(move |h| h.name == name)
            .map(|h| self.text(h.value))
    }
    /// First value of a header by name (case-insensitive; compact forms resolved).
    pub fn header_named(&self, name: &str) -> Option<&str> {
        self.header_values_named(name).next()
    }
    /// Every raw value of a header by name (case-insensitive; compact forms resolved).
    pub fn header_values_named<'s, 'n>(
        &'s self,
        name: &'n str,
    ) -> impl Iterator<Item = &'s str> + use<'s, 'n> {
        let kind = HeaderName::from_name(name);
        let long = expand_compact_name(name);
        self.headers
            .iter()
            .filter(move |h| {
                h.name == kind
                    && (kind != HeaderName::Other
                        || expand_compact_name(self.text(h.name_span)).eq_ignore_ascii_case(long))
            })
            .map(|h| self.text(h.value))
    }
    /// Every header line as `(name as sent, raw trimmed value)`, in order.
    pub fn headers(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        self.headers
            .iter()
            .map(|h| (self.text(h.name_span), self.text(h.value)))
    }
    /// The header section's length in bytes (start line through the empty line).
    pub fn header_len(&self) -> usize {
        self.head_len as usize
    }
    pub fn body(&self) -> &[u8] {
        self.buf.get(self.body.range()).unwrap_or(&[])
    }
}

#[cfg(test)]
mod tests;
