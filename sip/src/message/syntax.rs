//! Low-level RFC 3261 §25 grammar helpers over already-UTF-8-checked header text.
//!
//! Values are not unfolded (zero-copy), so everywhere LWS may appear we treat CR and LF as
//! whitespace too: header indexing guarantees that a CRLF inside a value is always followed
//! by SP/HT (RFC 3261 §7.3.1), i.e. it is a fold.

use super::ParseError;

#[inline]
pub(crate) fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

#[inline]
pub(crate) fn trim_lws(s: &str) -> &str {
    s.trim_matches(|c| matches!(c, ' ' | '\t' | '\r' | '\n'))
}

/// `token` characters (RFC 3261 §25.1).
#[inline]
pub(crate) fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'-' | b'.' | b'!' | b'%' | b'*' | b'_' | b'+' | b'`' | b'\'' | b'~'
        )
}

pub(crate) fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(is_token_char)
}

/// `word` characters (Call-ID, RFC 3261 §25.1).
#[inline]
fn is_word_char(b: u8) -> bool {
    is_token_char(b)
        || matches!(
            b,
            b'(' | b')'
                | b'<'
                | b'>'
                | b':'
                | b'\\'
                | b'"'
                | b'/'
                | b'['
                | b']'
                | b'?'
                | b'{'
                | b'}'
        )
}

/// `callid = word [ "@" word ]`.
pub(crate) fn is_call_id(s: &str) -> bool {
    let mut parts = s.splitn(2, '@');
    let word = |w: Option<&str>| w.is_some_and(|w| !w.is_empty() && w.bytes().all(is_word_char));
    let first = parts.next();
    match parts.next() {
        None => word(first),
        Some(second) => word(first) && word(Some(second)),
    }
}

/// Decimal digits into a u32 with overflow checks; `None` for empty, non-digit or overflow.
pub(crate) fn parse_u32(s: &str) -> Option<u32> {
    if s.is_empty() {
        return None;
    }
    s.bytes().try_fold(0u32, |acc, b| {
        if b.is_ascii_digit() {
            acc.checked_mul(10)?.checked_add(u32::from(b - b'0'))
        } else {
            None
        }
    })
}

pub(crate) fn parse_usize(s: &str) -> Option<usize> {
    if s.is_empty() {
        return None;
    }
    s.bytes().try_fold(0usize, |acc, b| {
        if b.is_ascii_digit() {
            acc.checked_mul(10)?.checked_add(usize::from(b - b'0'))
        } else {
            None
        }
    })
}

pub(crate) fn parse_u16(s: &str) -> Option<u16> {
    parse_u32(s).and_then(|v| u16::try_from(v).ok())
}

/// A byte cursor over a `&str`. Every slice is taken with `get`, so a bad boundary yields
/// an empty string instead of a panic.
pub(crate) struct Cursor<'a> {
    s: &'a str,
    pub(crate) pos: usize,
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(s: &'a str) -> Self {
        Cursor { s, pos: 0 }
    }

    #[inline]
    pub(crate) fn peek(&self) -> Option<u8> {
        self.s.as_bytes().get(self.pos).copied()
    }

    pub(crate) fn at_end(&self) -> bool {
        self.pos >= self.s.len()
    }

    pub(crate) fn slice(&self, start: usize, end: usize) -> &'a str {
        self.s.get(start..end).unwrap_or("")
    }

    pub(crate) fn rest(&self) -> &'a str {
        self.s.get(self.pos..).unwrap_or("")
    }

    /// Skips LWS; true if anything was skipped.
    pub(crate) fn skip_ws(&mut self) -> bool {
        let start = self.pos;
        while self.peek().is_some_and(is_ws) {
            self.pos += 1;
        }
        self.pos > start
    }

    pub(crate) fn eat(&mut self, b: u8) -> bool {
        if self.peek() == Some(b) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    /// `SWS b SWS`: consumes the separator with surrounding LWS, or nothing.
    pub(crate) fn eat_sep(&mut self, b: u8) -> bool {
        let save = self.pos;
        self.skip_ws();
        if self.eat(b) {
            self.skip_ws();
            true
        } else {
            self.pos = save;
            false
        }
    }

    pub(crate) fn take_while(&mut self, f: impl Fn(u8) -> bool) -> &'a str {
        let start = self.pos;
        while self.peek().is_some_and(&f) {
            self.pos += 1;
        }
        self.slice(start, self.pos)
    }

    /// A quoted-string (RFC 3261 §25.1) at the cursor; returns the text between the quotes,
    /// escapes left as they are. `None` if not at a quote or unterminated.
    pub(crate) fn quoted_string(&mut self) -> Option<&'a str> {
        if !self.eat(b'"') {
            return None;
        }
        let start = self.pos;
        loop {
            match self.peek()? {
                b'"' => {
                    let inner = self.slice(start, self.pos);
                    self.pos += 1;
                    return Some(inner);
                }
                // quoted-pair = "\" (%x00-09 / %x0B-0C / %x0E-7F)
                b'\\' => {
                    self.pos += 1;
                    match self.peek()? {
                        b'\r' | b'\n' | 0x80..=0xff => return None,
                        _ => self.pos += 1,
                    }
                }
                // A bare CR/LF is only allowed as part of a fold (LWS), which indexing
                // guarantees; other controls are not qdtext.
                b'\r' | b'\n' | b'\t' | b' ' | 0x21..=0xff => self.pos += 1,
                _ => return None,
            }
        }
    }
}

/// Characters allowed in an unquoted parameter value: token / host (incl. IPv6 `[..:..]`).
/// Slightly liberal: anything printable but separators that would make the split ambiguous.
#[inline]
fn is_param_value_char(b: u8) -> bool {
    b > 0x20 && b != 0x7f && !matches!(b, b';' | b',' | b'"' | b'<' | b'>' | b'=' | b'\\')
}

/// Consumes `*( SEMI generic-param )` (RFC 3261 §25.1) and returns the slice from the first
/// `;` to the end of the last parameter (empty if there is none).
pub(crate) fn parse_params<'a>(c: &mut Cursor<'a>) -> Result<&'a str, ()> {
    let mut start = None;
    let mut end = c.pos;
    loop {
        let save = c.pos;
        c.skip_ws();
        let semi = c.pos;
        if !c.eat(b';') {
            c.pos = save;
            break;
        }
        start.get_or_insert(semi);
        c.skip_ws();
        if c.take_while(is_token_char).is_empty() {
            return Err(());
        }
        if c.eat_sep(b'=') {
            if c.peek() == Some(b'"') {
                c.quoted_string().ok_or(())?;
            } else if c.take_while(is_param_value_char).is_empty() {
                return Err(());
            }
        }
        end = c.pos;
    }
    Ok(match start {
        Some(s) => c.slice(s, end),
        None => "",
    })
}

/// Iterates `(name, value)` over a parameter string produced by [`parse_params`]. Values are
/// trimmed; a quoted value is returned without its quotes (escapes untouched); a flag gives
/// `""`. Stops quietly at anything malformed.
pub(crate) struct ParamIter<'a> {
    c: Cursor<'a>,
    /// Whether the value last returned was a quoted-string.
    pub(crate) last_quoted: bool,
}

impl<'a> ParamIter<'a> {
    pub(crate) fn new(params: &'a str) -> Self {
        ParamIter {
            c: Cursor::new(params),
            last_quoted: false,
        }
    }
}

impl<'a> Iterator for ParamIter<'a> {
    type Item = (&'a str, &'a str);

    fn next(&mut self) -> Option<Self::Item> {
        let c = &mut self.c;
        c.skip_ws();
        if !c.eat(b';') {
            return None;
        }
        c.skip_ws();
        let name = c.take_while(is_token_char);
        if name.is_empty() {
            return None;
        }
        self.last_quoted = false;
        let value = if c.eat_sep(b'=') {
            if c.peek() == Some(b'"') {
                self.last_quoted = true;
                c.quoted_string()?
            } else {
                c.take_while(is_param_value_char)
            }
        } else {
            ""
        };
        Some((name, value))
    }
}

pub(crate) fn find_param<'a>(params: &'a str, name: &str) -> Option<&'a str> {
    ParamIter::new(params)
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v)
}

/// Splits a header value at top-level commas (not inside a quoted string or `<...>`),
/// yielding trimmed elements, empty ones included (callers decide whether they are legal).
pub(crate) struct CommaSplit<'a> {
    s: &'a str,
    pos: usize,
    done: bool,
}

pub(crate) fn split_commas(s: &str) -> CommaSplit<'_> {
    CommaSplit {
        s,
        pos: 0,
        done: false,
    }
}

impl<'a> Iterator for CommaSplit<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        if self.done {
            return None;
        }
        let bytes = self.s.as_bytes();
        let start = self.pos;
        let (mut in_quote, mut in_angle, mut escaped) = (false, false, false);
        let mut i = start;
        while let Some(&b) = bytes.get(i) {
            if in_quote {
                if escaped {
                    escaped = false;
                } else if b == b'\\' {
                    escaped = true;
                } else if b == b'"' {
                    in_quote = false;
                }
            } else {
                match b {
                    b'"' => in_quote = true,
                    b'<' => in_angle = true,
                    b'>' => in_angle = false,
                    b',' if !in_angle => {
                        self.pos = i + 1;
                        return Some(trim_lws(self.s.get(start..i).unwrap_or("")));
                    }
                    _ => {}
                }
            }
            i += 1;
        }
        self.done = true;
        Some(trim_lws(self.s.get(start..).unwrap_or("")))
    }
}

/// Host (RFC 3261 §25.1 `host`): hostname, IPv4 or `[IPv6]`. Liberal about `_` in names,
/// which real deployments use.
pub(crate) fn take_host<'a>(c: &mut Cursor<'a>) -> Option<&'a str> {
    if c.peek() == Some(b'[') {
        let start = c.pos;
        c.pos += 1;
        let inner = c.take_while(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.');
        if inner.is_empty() || !c.eat(b']') {
            return None;
        }
        Some(c.slice(start, c.pos))
    } else {
        let h = c.take_while(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
        (!h.is_empty()).then_some(h)
    }
}

/// An error for header `name`.
pub(crate) fn bad(name: &'static str) -> ParseError {
    ParseError::BadHeader(name)
}

/// `Date: rfc1123-date` (RFC 3261 §20.17): `wkday "," SP 2DIGIT SP month SP 4DIGIT SP
/// 2DIGIT ":" 2DIGIT ":" 2DIGIT SP "GMT"`. Only GMT is legal (RFC 4475 §3.1.2.12).
pub(crate) fn is_rfc1123_date(s: &str) -> bool {
    const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let b = s.as_bytes();
    if b.len() != 29 {
        return false;
    }
    let digits =
        |r: std::ops::Range<usize>| b.get(r).is_some_and(|d| d.iter().all(u8::is_ascii_digit));
    let word = |r: std::ops::Range<usize>| s.get(r).unwrap_or("");
    DAYS.contains(&word(0..3))
        && word(3..5) == ", "
        && digits(5..7)
        && word(7..8) == " "
        && MONTHS.contains(&word(8..11))
        && word(11..12) == " "
        && digits(12..16)
        && word(16..17) == " "
        && digits(17..19)
        && word(19..20) == ":"
        && digits(20..22)
        && word(22..23) == ":"
        && digits(23..25)
        && word(25..29) == " GMT"
}
