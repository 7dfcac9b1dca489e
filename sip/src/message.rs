//! SIP message parsing and serialisation (RFC 3261 §7, §20, §25).
//!
//! API CONTRACT (implementation in progress). A [`Message`] owns the received [`Bytes`] and an
//! index of spans into them; it is validated once in [`Message::parse`] (start line, mandatory
//! headers Via/From/To/Call-ID/CSeq, Content-Length), after which the accessors for those
//! headers are infallible and zero-copy.

use bytes::Bytes;

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
    pub fn from_token(_s: &str) -> Method {
        unimplemented!()
    }
    pub fn as_str(&self) -> &str {
        unimplemented!()
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

/// name-addr / addr-spec with parameters (From, To, Contact, Route, Record-Route).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameAddr<'a> {
    pub display_name: Option<&'a str>,
    /// The URI without angle brackets.
    pub uri: &'a str,
    /// Header parameters after the URI (starting at the first `;`, or empty).
    pub params: &'a str,
}

impl<'a> NameAddr<'a> {
    /// The value of header parameter `name` (case-insensitive); `Some("")` for a bare flag.
    pub fn param(&self, _name: &str) -> Option<&'a str> {
        unimplemented!()
    }
    pub fn tag(&self) -> Option<&'a str> {
        self.param("tag")
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
    pub fn parse(_s: &'a str) -> Result<SipUri<'a>, ParseError> {
        unimplemented!()
    }
    pub fn param(&self, _name: &str) -> Option<&'a str> {
        unimplemented!()
    }
}

/// CSeq (RFC 3261 §20.16).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CSeq {
    pub seq: u32,
    pub method: Method,
}

/// Contact header contents (RFC 3261 §20.10).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Contacts<'a> {
    /// `Contact: *` (only valid in REGISTER with Expires: 0).
    Star,
    List(Vec<NameAddr<'a>>),
}

/// A parsed SIP message over its own bytes.
#[derive(Debug, Clone)]
pub struct Message {
    _buf: Bytes,
}

impl Message {
    /// Parse one complete message. Content-Length, when present, must not exceed the bytes
    /// after the header section (else [`ParseError::Truncated`]); extra trailing bytes are
    /// ignored (RFC 3261 §18.3). When absent, the body is the rest of the buffer.
    pub fn parse(_buf: Bytes) -> Result<Message, ParseError> {
        unimplemented!()
    }
    pub fn as_bytes(&self) -> &Bytes {
        unimplemented!()
    }
    pub fn is_request(&self) -> bool {
        unimplemented!()
    }
    /// Request method; `None` for responses.
    pub fn method(&self) -> Option<&Method> {
        unimplemented!()
    }
    pub fn request_uri(&self) -> Option<&str> {
        unimplemented!()
    }
    /// Status code; `None` for requests.
    pub fn status(&self) -> Option<u16> {
        unimplemented!()
    }
    pub fn reason(&self) -> Option<&str> {
        unimplemented!()
    }
    pub fn call_id(&self) -> &str {
        unimplemented!()
    }
    pub fn cseq(&self) -> &CSeq {
        unimplemented!()
    }
    pub fn from(&self) -> NameAddr<'_> {
        unimplemented!()
    }
    pub fn to(&self) -> NameAddr<'_> {
        unimplemented!()
    }
    pub fn top_via(&self) -> Via<'_> {
        unimplemented!()
    }
    /// Every Via value in order, split across comma-separated and repeated headers.
    pub fn vias(&self) -> impl Iterator<Item = Result<Via<'_>, ParseError>> + '_ {
        std::iter::empty()
    }
    pub fn contacts(&self) -> Result<Option<Contacts<'_>>, ParseError> {
        unimplemented!()
    }
    pub fn routes(&self) -> impl Iterator<Item = Result<NameAddr<'_>, ParseError>> + '_ {
        std::iter::empty()
    }
    pub fn record_routes(&self) -> impl Iterator<Item = Result<NameAddr<'_>, ParseError>> + '_ {
        std::iter::empty()
    }
    pub fn max_forwards(&self) -> Result<Option<u32>, ParseError> {
        unimplemented!()
    }
    pub fn expires(&self) -> Result<Option<u32>, ParseError> {
        unimplemented!()
    }
    pub fn content_type(&self) -> Option<&str> {
        unimplemented!()
    }
    /// Option tags from every Supported header.
    pub fn supported(&self) -> impl Iterator<Item = &str> + '_ {
        std::iter::empty()
    }
    pub fn require(&self) -> impl Iterator<Item = &str> + '_ {
        std::iter::empty()
    }
    /// First value of a typed header (the whole field value, folding normalised to spaces
    /// is NOT done: callers get the raw slice, trimmed).
    pub fn header(&self, _name: HeaderName) -> Option<&str> {
        unimplemented!()
    }
    /// Every raw value of a header (one per header line, not comma-split).
    pub fn header_values(&self, _name: HeaderName) -> impl Iterator<Item = &str> + '_ {
        std::iter::empty()
    }
    /// First value of a header by name (case-insensitive; compact forms resolved).
    pub fn header_named(&self, _name: &str) -> Option<&str> {
        unimplemented!()
    }
    pub fn body(&self) -> &[u8] {
        unimplemented!()
    }
}

/// Builds a request or response into bytes, adding Content-Length.
#[derive(Debug, Clone)]
pub struct MessageBuilder {
    _buf: Vec<u8>,
}

impl MessageBuilder {
    pub fn request(_method: &Method, _uri: &str) -> MessageBuilder {
        unimplemented!()
    }
    pub fn response(_code: u16, _reason: &str) -> MessageBuilder {
        unimplemented!()
    }
    /// A response to `req` (RFC 3261 §8.2.6.2): copies every Via, From, To, Call-ID, CSeq;
    /// adds `;tag=<to_tag>` to To when given and To has no tag yet.
    pub fn response_to(
        _req: &Message,
        _code: u16,
        _reason: &str,
        _to_tag: Option<&str>,
    ) -> MessageBuilder {
        unimplemented!()
    }
    pub fn header(self, _name: &str, _value: &str) -> MessageBuilder {
        unimplemented!()
    }
    /// Sets the body and its Content-Type.
    pub fn body(self, _content_type: &str, _body: &[u8]) -> MessageBuilder {
        unimplemented!()
    }
    /// Finishes with Content-Length and the empty line.
    pub fn build(self) -> Bytes {
        unimplemented!()
    }
}
