//! Framing SIP messages on stream transports by Content-Length (RFC 3261 §18.3).
//!
//! A [`StreamFramer`] is fed bytes as they arrive on a TCP/TLS connection and yields each
//! complete message (header section plus exactly Content-Length body bytes) as [`Bytes`]
//! for `Message::parse`, plus RFC 5626 keep-alive pings. It never looks at more than the
//! header lines it needs for Content-Length; everything else is the parser's job.
//!
//! Any [`FrameError`] means the byte stream can no longer be split reliably: the framer is
//! poisoned and the driver must close the connection (RFC 3261 §18.3).
//!
//! ```
//! use voxgate_sip::framing::{Frame, StreamFramer};
//!
//! let mut framer = StreamFramer::default();
//! framer.push(b"\r\n\r\nOPTIONS sip:x SIP/2.0\r\nl: 2\r\n\r\nhi");
//! assert_eq!(framer.next_frame(), Some(Ok(Frame::Ping))); // answer with "\r\n"
//! let Some(Ok(Frame::Message(bytes))) = framer.next_frame() else { panic!() };
//! assert!(bytes.ends_with(b"\r\n\r\nhi")); // hand to Message::parse
//! assert_eq!(framer.next_frame(), None); // need more bytes
//! ```

use bytes::{Buf, Bytes, BytesMut};

const CRLFCRLF: &[u8] = b"\r\n\r\n";

/// Limits that make a hostile or broken peer cost bounded memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FramerConfig {
    /// Largest header section, start line through the empty line, in bytes.
    pub max_header_len: usize,
    /// Largest body (Content-Length) in bytes.
    pub max_body_len: usize,
}

impl Default for FramerConfig {
    fn default() -> Self {
        FramerConfig {
            max_header_len: 16 * 1024,
            max_body_len: 64 * 1024,
        }
    }
}

/// Why the stream cannot be framed. All of them are fatal for the connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// No end of headers within `limit` bytes.
    #[error("header section exceeds {limit} bytes")]
    HeaderTooLarge { limit: usize },
    /// Content-Length larger than `limit` (`length` saturates at `u64::MAX`).
    #[error("body of {length} bytes exceeds {limit} bytes")]
    BodyTooLarge { length: u64, limit: usize },
    /// RFC 3261 §18.3: Content-Length is mandatory on stream transports.
    #[error("message on a stream transport has no Content-Length")]
    MissingContentLength,
    /// Content-Length is not a decimal number.
    #[error("malformed Content-Length")]
    BadContentLength,
    /// More than one Content-Length: which one frames the body is ambiguous, and a peer
    /// exploiting that could smuggle a message past a proxy.
    #[error("more than one Content-Length header")]
    DuplicateContentLength,
}

/// What the stream produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// One complete SIP message: headers and exactly Content-Length body bytes.
    Message(Bytes),
    /// A double-CRLF keep-alive ping between messages (RFC 5626 §3.5.1): answer with a
    /// single CRLF pong (RFC 5626 §4.4.1).
    Ping,
}

/// Where the framer is in the byte stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Between messages: CRLF keep-alives are consumed here (RFC 3261 §7.5, RFC 5626).
    Boundary,
    /// In a header section; no CRLFCRLF starts before `scanned` (so each byte is searched
    /// once however the stream is split).
    Headers { scanned: usize },
    /// Header section parsed; the message is the first `total` bytes of the buffer.
    Body { total: usize },
}

/// Sans-IO splitter of a SIP byte stream into messages. Feed it with [`push`](Self::push),
/// then call [`next_frame`](Self::next_frame) until it returns `None`.
#[derive(Debug)]
pub struct StreamFramer {
    buf: BytesMut,
    state: State,
    config: FramerConfig,
    error: Option<FrameError>,
}

impl Default for StreamFramer {
    fn default() -> Self {
        StreamFramer::new(FramerConfig::default())
    }
}

impl StreamFramer {
    /// A framer with these limits.
    pub fn new(config: FramerConfig) -> Self {
        StreamFramer {
            buf: BytesMut::new(),
            state: State::Boundary,
            config,
            error: None,
        }
    }

    /// Append bytes read from the connection. Ignored once poisoned.
    pub fn push(&mut self, data: &[u8]) {
        if self.error.is_none() {
            self.buf.extend_from_slice(data);
        }
    }

    /// Bytes buffered and not yet returned.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Whether an error has been returned; the connection must then be closed.
    pub fn is_poisoned(&self) -> bool {
        self.error.is_some()
    }

    /// The next complete frame, `None` if more bytes are needed. After an error, every
    /// call returns the same error again.
    pub fn next_frame(&mut self) -> Option<Result<Frame, FrameError>> {
        if let Some(e) = &self.error {
            return Some(Err(e.clone()));
        }
        match self.advance() {
            Ok(frame) => frame.map(Ok),
            Err(e) => {
                self.error = Some(e.clone());
                self.buf = BytesMut::new();
                Some(Err(e))
            }
        }
    }

    fn advance(&mut self) -> Result<Option<Frame>, FrameError> {
        loop {
            match self.state {
                State::Boundary => {
                    let b = &self.buf[..];
                    if b.starts_with(CRLFCRLF) {
                        self.buf.advance(CRLFCRLF.len());
                        return Ok(Some(Frame::Ping));
                    }
                    if CRLFCRLF.starts_with(b) {
                        // Empty, or maybe the start of a ping: wait for more.
                        return Ok(None);
                    }
                    if b.starts_with(b"\r\n") {
                        // A lone CRLF (a pong, or slack before a start line): skip it.
                        self.buf.advance(2);
                    } else if matches!(b.first(), Some(b'\r' | b'\n')) {
                        // Bare CR or LF: not ours to judge, but never part of a start line.
                        self.buf.advance(1);
                    } else {
                        self.state = State::Headers { scanned: 0 };
                    }
                }
                State::Headers { scanned } => {
                    let Some(at) = find(&self.buf, CRLFCRLF, scanned) else {
                        if self.buf.len() >= self.config.max_header_len {
                            return Err(FrameError::HeaderTooLarge {
                                limit: self.config.max_header_len,
                            });
                        }
                        // The terminator may straddle the next push: keep its possible prefix.
                        let scanned = self.buf.len().saturating_sub(CRLFCRLF.len() - 1);
                        self.state = State::Headers { scanned };
                        return Ok(None);
                    };
                    let header_len = at + CRLFCRLF.len();
                    if header_len > self.config.max_header_len {
                        return Err(FrameError::HeaderTooLarge {
                            limit: self.config.max_header_len,
                        });
                    }
                    let length = content_length(&self.buf[..at])?;
                    let body_len = usize::try_from(length)
                        .ok()
                        .filter(|&l| l <= self.config.max_body_len)
                        .ok_or(FrameError::BodyTooLarge {
                            length,
                            limit: self.config.max_body_len,
                        })?;
                    self.state = State::Body {
                        total: header_len + body_len,
                    };
                }
                State::Body { total } => {
                    if self.buf.len() < total {
                        return Ok(None);
                    }
                    self.state = State::Boundary;
                    return Ok(Some(Frame::Message(self.buf.split_to(total).freeze())));
                }
            }
        }
    }
}

/// First index `>= from` where `needle` starts in `hay`.
fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    hay.get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|i| i + from)
}

/// The Content-Length of a header section (`head` = start line through the last header
/// line, without the final CRLF). Full name or compact `l` (RFC 3261 §7.3.3), any case,
/// `HCOLON` with optional whitespace before the colon, folded values unfolded (§7.3.1).
/// Lines are split at LF (CR optional) so that we never see fewer header lines than a
/// lenient parser would: a Content-Length hidden from us is a smuggling vector.
fn content_length(head: &[u8]) -> Result<u64, FrameError> {
    let mut value: Option<Vec<u8>> = None;
    // Whether the previous header line was Content-Length, so continuations belong to it.
    let mut in_cl = false;
    // Skip the start line: it is not a header, whatever it contains.
    for line in head.split(|&b| b == b'\n').skip(1) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if matches!(line.first(), Some(b' ' | b'\t')) {
            if in_cl {
                if let Some(v) = value.as_mut() {
                    v.push(b' ');
                    v.extend_from_slice(line);
                }
            }
            continue;
        }
        in_cl = false;
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let name = line[..colon].trim_ascii_end();
        if name.eq_ignore_ascii_case(b"content-length") || name.eq_ignore_ascii_case(b"l") {
            if value.is_some() {
                return Err(FrameError::DuplicateContentLength);
            }
            value = Some(line[colon + 1..].to_vec());
            in_cl = true;
        }
    }
    let value = value.ok_or(FrameError::MissingContentLength)?;
    let digits = value.trim_ascii();
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return Err(FrameError::BadContentLength);
    }
    // Saturate rather than overflow: any huge value is simply too large.
    Ok(digits.iter().fold(0u64, |n, d| {
        n.saturating_mul(10).saturating_add(u64::from(d - b'0'))
    }))
}

#[cfg(test)]
mod tests;
