//! Parsing and writing `Digest` header values: `Authorization` / `Proxy-Authorization`
//! (credentials, RFC 3261 §25.1 `digest-response`) and `WWW-Authenticate` /
//! `Proxy-Authenticate` (challenges, `digest-cln`), plus the client's answer to a challenge.

use std::fmt::{self, Write as _};

use super::digest::{h, request_digest, Algorithm, Qop, QopInput};
use super::{AuthError, Param, SyntaxError};

/// `LWS` / `SWS` bytes (RFC 3261 §25.1). CR and LF are accepted anywhere so that a value
/// still carrying line folding parses the same as an unfolded one.
fn is_lws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

/// RFC 3261 §25.1 `token` characters.
fn is_token(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b)
}

struct Cursor<'a> {
    src: &'a str,
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn peek(&self) -> Option<u8> {
        self.src.as_bytes().get(self.pos).copied()
    }

    fn skip_lws(&mut self) -> bool {
        let start = self.pos;
        while self.peek().is_some_and(is_lws) {
            self.pos += 1;
        }
        self.pos > start
    }

    /// Bytes while `f` holds. Callers only stop on ASCII bytes, so the slice always falls on
    /// char boundaries; `get` keeps that an error rather than a panic if it ever did not.
    fn take_while(&mut self, f: impl Fn(u8) -> bool) -> Option<&'a str> {
        let start = self.pos;
        while self.peek().is_some_and(&f) {
            self.pos += 1;
        }
        self.src.get(start..self.pos)
    }

    fn expected(&self, expected: &'static str) -> SyntaxError {
        SyntaxError::Expected {
            expected,
            offset: self.pos,
        }
    }

    /// A quoted-string (the cursor is on the opening quote); returns the unescaped content.
    /// RFC 3261 §25.1: `quoted-pair = "\" (%x00-09 / %x0B-0C / %x0E-7F)`.
    fn quoted(&mut self) -> Result<String, SyntaxError> {
        let open = self.pos;
        self.pos += 1;
        let mut out = Vec::new();
        loop {
            match self.peek() {
                None => return Err(SyntaxError::UnterminatedQuote { offset: open }),
                Some(b'"') => {
                    self.pos += 1;
                    break;
                }
                Some(b'\\') => {
                    self.pos += 1;
                    match self.peek() {
                        Some(b) if b.is_ascii() && b != b'\r' && b != b'\n' => out.push(b),
                        Some(_) => return Err(self.expected("escapable character")),
                        None => return Err(SyntaxError::UnterminatedQuote { offset: open }),
                    }
                    self.pos += 1;
                }
                Some(b) => {
                    out.push(b);
                    self.pos += 1;
                }
            }
        }
        // Only ASCII backslashes were dropped from valid UTF-8, so this cannot fail.
        String::from_utf8(out).map_err(|_| SyntaxError::UnterminatedQuote { offset: open })
    }
}

/// Parse `Digest 1#(name "=" (token / quoted-string))` and return the values of `wanted`,
/// in order. Names are case-insensitive; a wanted name given twice is an error; other
/// parameters (`auth-param` extensions, `domain`, `userhash`, ...) are skipped. Values are
/// accepted quoted or unquoted whatever the RFC says for each: real clients get this wrong
/// both ways (`algorithm="MD5"`, `qop="auth"`) and the meaning is unambiguous.
fn parse_params<const N: usize>(
    value: &str,
    wanted: [Param; N],
) -> Result<[Option<String>; N], SyntaxError> {
    let mut c = Cursor { src: value, pos: 0 };
    c.skip_lws();
    let scheme = c.take_while(is_token).unwrap_or("");
    if !scheme.eq_ignore_ascii_case("digest") {
        return Err(SyntaxError::NotDigest);
    }
    let mut out: [Option<String>; N] = std::array::from_fn(|_| None);
    let mut first = true;
    loop {
        let had_lws = c.skip_lws();
        let sep_at = c.pos;
        // Empty list elements (`a=1,,b=2`) are allowed by the `#` rule (RFC 7230 §7).
        let mut had_comma = false;
        while c.peek() == Some(b',') {
            c.pos += 1;
            c.skip_lws();
            had_comma = true;
        }
        if c.peek().is_none() {
            break;
        }
        if first {
            // `Digest` and the first parameter are separated by LWS, not a comma.
            if !had_lws || had_comma {
                return Err(SyntaxError::Expected {
                    expected: "whitespace after Digest",
                    offset: sep_at,
                });
            }
        } else if !had_comma {
            return Err(SyntaxError::Expected {
                expected: "','",
                offset: sep_at,
            });
        }
        first = false;

        let name = c.take_while(is_token).unwrap_or("");
        if name.is_empty() {
            return Err(c.expected("parameter name"));
        }
        c.skip_lws();
        if c.peek() != Some(b'=') {
            return Err(c.expected("'='"));
        }
        c.pos += 1;
        c.skip_lws();
        let val = match c.peek() {
            Some(b'"') => c.quoted()?,
            _ => {
                let v = c
                    .take_while(|b| !is_lws(b) && b != b',' && b != b'"')
                    .unwrap_or("");
                if v.is_empty() {
                    return Err(c.expected("parameter value"));
                }
                v.to_owned()
            }
        };
        if let Some(i) = wanted
            .iter()
            .position(|p| p.as_str().eq_ignore_ascii_case(name))
        {
            if let Some(slot) = out.get_mut(i) {
                if slot.is_some() {
                    return Err(SyntaxError::DuplicateParam(wanted[i]));
                }
                *slot = Some(val);
            }
        }
    }
    Ok(out)
}

fn required(v: Option<String>, p: Param) -> Result<String, SyntaxError> {
    v.ok_or(SyntaxError::MissingParam(p))
}

fn parse_algorithm(v: Option<String>) -> Result<Algorithm, SyntaxError> {
    // RFC 2617 §3.2.1: absent means MD5.
    match v {
        None => Ok(Algorithm::Md5),
        Some(a) => Algorithm::from_token(&a).ok_or(SyntaxError::UnsupportedAlgorithm),
    }
}

/// Write `"value"` with `"` and `\` escaped. CR and LF cannot be escaped in SIP
/// (RFC 3261 §25.1 `quoted-pair`), so they become spaces: a peer-supplied opaque or realm
/// echoed back must never be able to inject a header line.
fn write_quoted(f: &mut impl fmt::Write, s: &str) -> fmt::Result {
    f.write_char('"')?;
    for ch in s.chars() {
        match ch {
            '"' | '\\' => {
                f.write_char('\\')?;
                f.write_char(ch)?;
            }
            '\r' | '\n' => f.write_char(' ')?,
            _ => f.write_char(ch)?,
        }
    }
    f.write_char('"')
}

/// The `qop=auth` part of a response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QopResponse {
    /// The qop the client chose.
    pub qop: Qop,
    /// The client nonce.
    pub cnonce: String,
    /// The nonce count, parsed from 8 hex digits.
    pub nc: u32,
    /// The nonce count exactly as sent: the digest is computed over this text, so a client
    /// writing uppercase hex still verifies.
    pub nc_text: String,
}

/// A parsed `Authorization` / `Proxy-Authorization` value (RFC 7616 §3.4). Its `Display`
/// writes the header value, so a client builds one with [`Challenge::answer`] and sends it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorization {
    pub username: String,
    pub realm: String,
    pub nonce: String,
    /// The digest-uri. Checking it against the Request-URI is the caller's job (RFC 7616
    /// §3.4.6); [`Verified`](super::Verified) hands it back.
    pub uri: String,
    /// The request-digest, hex (length checked against `algorithm`).
    pub response: String,
    /// `MD5` when the parameter was absent (RFC 2617 §3.2.2).
    pub algorithm: Algorithm,
    pub opaque: Option<String>,
    /// `None` for an RFC 2069-style response without qop.
    pub qop: Option<QopResponse>,
}

impl Authorization {
    /// Parse a `Digest` credentials value. Never panics; every rejection is a precise
    /// [`SyntaxError`].
    pub fn parse(value: &str) -> Result<Authorization, SyntaxError> {
        let [username, realm, nonce, uri, response, algorithm, cnonce, opaque, qop, nc] =
            parse_params(
                value,
                [
                    Param::Username,
                    Param::Realm,
                    Param::Nonce,
                    Param::Uri,
                    Param::Response,
                    Param::Algorithm,
                    Param::Cnonce,
                    Param::Opaque,
                    Param::Qop,
                    Param::Nc,
                ],
            )?;
        let algorithm = parse_algorithm(algorithm)?;
        let response = required(response, Param::Response)?;
        if response.len() != algorithm.hex_len() || !response.bytes().all(|b| b.is_ascii_hexdigit())
        {
            return Err(SyntaxError::BadValue(Param::Response));
        }
        let qop = match qop {
            // Without qop, cnonce and nc are meaningless (RFC 2617 §3.2.2) and ignored.
            None => None,
            Some(q) => {
                let qop = Qop::from_token(&q).ok_or(SyntaxError::UnsupportedQop)?;
                // RFC 7616 §3.4: cnonce and nc MUST be sent when qop is.
                let cnonce = required(cnonce, Param::Cnonce)?;
                let nc_text = required(nc, Param::Nc)?;
                if nc_text.len() != 8 || !nc_text.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(SyntaxError::BadValue(Param::Nc));
                }
                let nc = u32::from_str_radix(&nc_text, 16)
                    .map_err(|_| SyntaxError::BadValue(Param::Nc))?;
                Some(QopResponse {
                    qop,
                    cnonce,
                    nc,
                    nc_text,
                })
            }
        };
        Ok(Authorization {
            username: required(username, Param::Username)?,
            realm: required(realm, Param::Realm)?,
            nonce: required(nonce, Param::Nonce)?,
            uri: required(uri, Param::Uri)?,
            response,
            algorithm,
            opaque,
            qop,
        })
    }
}

impl fmt::Display for Authorization {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Digest username=")?;
        write_quoted(f, &self.username)?;
        f.write_str(", realm=")?;
        write_quoted(f, &self.realm)?;
        f.write_str(", nonce=")?;
        write_quoted(f, &self.nonce)?;
        f.write_str(", uri=")?;
        write_quoted(f, &self.uri)?;
        f.write_str(", response=")?;
        write_quoted(f, &self.response)?;
        write!(f, ", algorithm={}", self.algorithm)?;
        if let Some(q) = &self.qop {
            f.write_str(", cnonce=")?;
            write_quoted(f, &q.cnonce)?;
            write!(f, ", qop={}, nc={}", q.qop.as_str(), q.nc_text)?;
        }
        if let Some(o) = &self.opaque {
            f.write_str(", opaque=")?;
            write_quoted(f, o)?;
        }
        Ok(())
    }
}

/// A `WWW-Authenticate` / `Proxy-Authenticate` digest challenge (RFC 7616 §3.3). Build one
/// with [`Challenge::new`] (server) or [`Challenge::parse`] one (client); `Display` writes
/// the header value. In SIP each challenge is its own header field (RFC 3261 §20.44), so a
/// value holds exactly one challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    pub realm: String,
    pub nonce: String,
    pub opaque: Option<String>,
    /// `MD5` when the parameter was absent.
    pub algorithm: Algorithm,
    /// The qop options offered; empty when the challenge had no qop (RFC 2069 style).
    pub qop: Vec<Qop>,
    /// RFC 7616 §3.3: the previous nonce was stale but the credentials were right.
    pub stale: bool,
}

impl Challenge {
    /// A server challenge offering `qop="auth"`, not stale, without opaque.
    pub fn new(realm: impl Into<String>, nonce: impl Into<String>, algorithm: Algorithm) -> Self {
        Challenge {
            realm: realm.into(),
            nonce: nonce.into(),
            opaque: None,
            algorithm,
            qop: vec![Qop::Auth],
            stale: false,
        }
    }

    /// Set the opaque the client must echo back.
    #[must_use]
    pub fn with_opaque(mut self, opaque: impl Into<String>) -> Self {
        self.opaque = Some(opaque.into());
        self
    }

    /// Set `stale=true` (re-challenge after an expired nonce with a correct digest).
    #[must_use]
    pub fn with_stale(mut self, stale: bool) -> Self {
        self.stale = stale;
        self
    }

    /// Parse a `Digest` challenge value. Unknown qop tokens are skipped; a qop list with
    /// nothing we know, or an unknown algorithm, is an error (RFC 7616 §3.7: the client
    /// ignores challenges it does not understand; see [`select_challenge`]).
    pub fn parse(value: &str) -> Result<Challenge, SyntaxError> {
        let [realm, nonce, opaque, algorithm, qop, stale] = parse_params(
            value,
            [
                Param::Realm,
                Param::Nonce,
                Param::Opaque,
                Param::Algorithm,
                Param::Qop,
                Param::Stale,
            ],
        )?;
        let qop = match qop {
            None => Vec::new(),
            Some(list) => {
                let qop: Vec<Qop> = list
                    .split(|c: char| c == ',' || c.is_ascii_whitespace())
                    .filter_map(Qop::from_token)
                    .collect();
                if qop.is_empty() {
                    return Err(SyntaxError::UnsupportedQop);
                }
                qop
            }
        };
        Ok(Challenge {
            realm: required(realm, Param::Realm)?,
            nonce: required(nonce, Param::Nonce)?,
            opaque,
            algorithm: parse_algorithm(algorithm)?,
            qop,
            // RFC 7616 §3.3: anything but (case-insensitive) "true" means false.
            stale: stale.is_some_and(|s| s.eq_ignore_ascii_case("true")),
        })
    }

    /// Answer this challenge as a client (RFC 7616 §3.4): `qop=auth` when offered,
    /// otherwise the RFC 2069 form that some carriers still require. The caller supplies
    /// the cnonce (fresh random, e.g. 16 hex chars) and the nonce count (1 for a new nonce,
    /// +1 per reuse of the same nonce).
    pub fn answer(&self, input: &AnswerInput<'_>) -> Result<Authorization, AuthError> {
        let use_qop = if self.qop.is_empty() {
            // RFC 2617 §3.2.2: cnonce only exists with qop, and -sess needs it.
            if self.algorithm.is_session() {
                return Err(AuthError::QopNotSupported);
            }
            false
        } else if self.qop.contains(&Qop::Auth) {
            true
        } else {
            return Err(AuthError::QopNotSupported);
        };
        let ha1 = match input.secret {
            ClientSecret::Password(p) => h(self.algorithm, &[input.username, &self.realm, p]),
            ClientSecret::Ha1(ha1) => ha1.to_ascii_lowercase(),
        };
        let nc_text = format!("{:08x}", input.nc);
        let qop_input = QopInput {
            nc: &nc_text,
            cnonce: input.cnonce,
        };
        let response = request_digest(
            self.algorithm,
            &ha1,
            input.method,
            input.uri,
            &self.nonce,
            use_qop.then_some(&qop_input),
        );
        Ok(Authorization {
            username: input.username.to_owned(),
            realm: self.realm.clone(),
            nonce: self.nonce.clone(),
            uri: input.uri.to_owned(),
            response,
            algorithm: self.algorithm,
            opaque: self.opaque.clone(),
            qop: use_qop.then(|| QopResponse {
                qop: Qop::Auth,
                cnonce: input.cnonce.to_owned(),
                nc: input.nc,
                nc_text,
            }),
        })
    }
}

impl fmt::Display for Challenge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Digest realm=")?;
        write_quoted(f, &self.realm)?;
        f.write_str(", nonce=")?;
        write_quoted(f, &self.nonce)?;
        if let Some(o) = &self.opaque {
            f.write_str(", opaque=")?;
            write_quoted(f, o)?;
        }
        write!(f, ", algorithm={}", self.algorithm)?;
        if !self.qop.is_empty() {
            f.write_str(", qop=\"")?;
            for (i, q) in self.qop.iter().enumerate() {
                if i > 0 {
                    f.write_char(',')?;
                }
                f.write_str(q.as_str())?;
            }
            f.write_char('"')?;
        }
        if self.stale {
            f.write_str(", stale=true")?;
        }
        Ok(())
    }
}

/// What the client authenticates with.
#[derive(Debug, Clone, Copy)]
pub enum ClientSecret<'a> {
    /// The plaintext password (trunk credentials from config).
    Password(&'a str),
    /// A precomputed HA1 for the challenge's realm and the algorithm's hash.
    Ha1(&'a str),
}

/// The inputs of [`Challenge::answer`].
#[derive(Debug, Clone, Copy)]
pub struct AnswerInput<'a> {
    pub username: &'a str,
    pub secret: ClientSecret<'a>,
    /// The request method, e.g. `REGISTER`, `INVITE`.
    pub method: &'a str,
    /// The digest-uri: the Request-URI of the request being authorised.
    pub uri: &'a str,
    /// The client nonce, from the caller's randomness.
    pub cnonce: &'a str,
    /// The nonce count for this use of the nonce, starting at 1.
    pub nc: u32,
}

/// Pick the challenge to answer from the `WWW-Authenticate` (or `Proxy-Authenticate`)
/// values of one response, in header order: the first one we can answer wins (RFC 8760
/// §2.4: the server lists its preferred algorithm first). Unparseable or unsupported
/// challenges are skipped.
pub fn select_challenge<'a>(values: impl IntoIterator<Item = &'a str>) -> Option<Challenge> {
    values.into_iter().find_map(|v| {
        Challenge::parse(v).ok().filter(|c| {
            c.qop.contains(&Qop::Auth) || (c.qop.is_empty() && !c.algorithm.is_session())
        })
    })
}
