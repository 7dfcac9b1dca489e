//! Serialisation: requests and responses with CRLF line endings and a computed
//! Content-Length (RFC 3261 §7, §20.14).

use std::io::Write;

use bytes::Bytes;

use super::syntax::is_token;
use super::{HeaderName, Message, Method};

/// Builds a request or response into bytes, adding Content-Length.
#[derive(Debug, Clone)]
pub struct MessageBuilder {
    /// Start line and header lines, each ending in CRLF.
    head: Vec<u8>,
    content_type: Option<String>,
    body: Vec<u8>,
}

/// Appends `s` with CR and LF replaced by SP: a value can never end its line early (no header
/// injection), and a folded value received from a peer (CRLF WSP) keeps its meaning, since
/// a fold is equivalent to SP (RFC 3261 §7.3.1).
fn push_text(out: &mut Vec<u8>, s: &str) {
    out.extend(
        s.bytes()
            .map(|b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
    );
}

impl MessageBuilder {
    fn with_start_line(parts: [&str; 3]) -> MessageBuilder {
        let mut head = Vec::with_capacity(512);
        push_text(&mut head, parts[0]);
        head.push(b' ');
        push_text(&mut head, parts[1]);
        head.push(b' ');
        push_text(&mut head, parts[2]);
        head.extend_from_slice(b"\r\n");
        MessageBuilder {
            head,
            content_type: None,
            body: Vec::new(),
        }
    }

    pub fn request(method: &Method, uri: &str) -> MessageBuilder {
        Self::with_start_line([method.as_str(), uri, "SIP/2.0"])
    }
    pub fn response(code: u16, reason: &str) -> MessageBuilder {
        let mut digits = [0u8; 5];
        let mut cursor = &mut digits[..];
        let _ = write!(cursor, "{code}");
        let len = 5 - cursor.len();
        let code = std::str::from_utf8(digits.get(..len).unwrap_or(&[])).unwrap_or("500");
        Self::with_start_line(["SIP/2.0", code, reason])
    }
    /// A response to `req` (RFC 3261 §8.2.6.2): copies every Via, From, To, Call-ID, CSeq;
    /// adds `;tag=<to_tag>` to To when given and To has no tag yet.
    pub fn response_to(
        req: &Message,
        code: u16,
        reason: &str,
        to_tag: Option<&str>,
    ) -> MessageBuilder {
        let mut b = Self::response(code, reason);
        // One line per received Via line keeps order and grouping exactly.
        for via in req.header_values(HeaderName::Via) {
            b = b.header("Via", via);
        }
        b = b.header("From", req.header(HeaderName::From).unwrap_or(""));
        let to = req.header(HeaderName::To).unwrap_or("");
        b.head.extend_from_slice(b"To: ");
        push_text(&mut b.head, to);
        if let Some(tag) = to_tag {
            if req.to().tag().is_none() {
                b.head.extend_from_slice(b";tag=");
                push_text(&mut b.head, tag);
            }
        }
        b.head.extend_from_slice(b"\r\n");
        b = b.header("Call-ID", req.call_id());
        b.header("CSeq", req.header(HeaderName::CSeq).unwrap_or(""))
    }
    /// Re-serialises a parsed message: the same start line, every header line in order
    /// (folds become SP, RFC 3261 §7.3.1), the same body with Content-Length recomputed.
    pub fn from_message(m: &Message) -> MessageBuilder {
        let mut b = match (m.method(), m.request_uri(), m.status()) {
            (Some(method), Some(uri), _) => Self::request(method, uri),
            (_, _, status) => Self::response(status.unwrap_or(500), m.reason().unwrap_or("")),
        };
        for (name, value) in m.headers() {
            b = b.header(name, value);
        }
        b.body = m.body().to_vec();
        b
    }
    /// Appends a header line. Names that are not tokens are dropped (they could not be
    /// parsed back); CR/LF in values become SP. Content-Length is always computed by
    /// [`MessageBuilder::build`], so one given here is ignored.
    pub fn header(mut self, name: &str, value: &str) -> MessageBuilder {
        if !is_token(name) || HeaderName::from_name(name) == HeaderName::ContentLength {
            return self;
        }
        self.head.extend_from_slice(name.as_bytes());
        self.head.extend_from_slice(b": ");
        push_text(&mut self.head, value);
        self.head.extend_from_slice(b"\r\n");
        self
    }
    /// Sets the body and its Content-Type.
    pub fn body(mut self, content_type: &str, body: &[u8]) -> MessageBuilder {
        self.content_type = Some(content_type.to_owned());
        self.body = body.to_vec();
        self
    }
    /// Finishes with Content-Length and the empty line.
    pub fn build(self) -> Bytes {
        let ct_len = self.content_type.as_ref().map_or(0, |c| c.len() + 16);
        let mut out = Vec::with_capacity(self.head.len() + ct_len + 32 + self.body.len());
        out.extend_from_slice(&self.head);
        if let Some(ct) = &self.content_type {
            out.extend_from_slice(b"Content-Type: ");
            push_text(&mut out, ct);
            out.extend_from_slice(b"\r\n");
        }
        // Writing into a Vec cannot fail.
        let _ = write!(out, "Content-Length: {}\r\n\r\n", self.body.len());
        out.extend_from_slice(&self.body);
        Bytes::from(out)
    }
}
