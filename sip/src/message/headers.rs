//! Typed parsers for header values (RFC 3261 §20) over borrowed text.

use super::syntax::{
    bad, is_token, is_token_char, is_ws, parse_params, parse_u16, parse_u32, take_host, Cursor,
};
use super::{CSeq, Method, NameAddr, ParseError, SipUri, Via};

/// `via-parm` (RFC 3261 §20.42, RFC 3581 for rport).
pub(crate) fn parse_via(s: &str) -> Result<Via<'_>, ParseError> {
    let err = bad("Via");
    let mut c = Cursor::new(s);
    c.skip_ws();
    // sent-protocol = protocol-name SLASH protocol-version SLASH transport; SLASH = SWS "/" SWS
    let name = c.take_while(is_token_char);
    if !name.eq_ignore_ascii_case("SIP") || !c.eat_sep(b'/') {
        return Err(err);
    }
    if c.take_while(is_token_char) != "2.0" || !c.eat_sep(b'/') {
        return Err(err);
    }
    let transport = c.take_while(is_token_char);
    if transport.is_empty() || !c.skip_ws() {
        return Err(err);
    }
    let host = take_host(&mut c).ok_or(err.clone())?;
    let port = if c.eat_sep(b':') {
        Some(parse_u16(c.take_while(|b| b.is_ascii_digit())).ok_or(err.clone())?)
    } else {
        None
    };
    let params = parse_params(&mut c).map_err(|()| err.clone())?;
    c.skip_ws();
    if !c.at_end() {
        return Err(err);
    }
    let mut via = Via {
        transport,
        host,
        port,
        branch: None,
        received: None,
        rport: None,
        params,
    };
    let mut it = super::syntax::ParamIter::new(params);
    while let Some((n, v)) = it.next() {
        if n.eq_ignore_ascii_case("branch") {
            // via-branch = "branch" EQUAL token
            if !is_token(v) || it.last_quoted {
                return Err(err);
            }
            via.branch = Some(v);
        } else if n.eq_ignore_ascii_case("received") {
            via.received = Some(v);
        } else if n.eq_ignore_ascii_case("rport") {
            via.rport = Some(if v.is_empty() {
                None
            } else {
                Some(parse_u16(v).ok_or(err.clone())?)
            });
        }
    }
    Ok(via)
}

/// Checks an absolute URI as it may appear in a request line or inside `<...>`: a scheme,
/// then no whitespace, quotes or angle brackets. `sip`/`sips` URIs get the full
/// [`SipUri::parse`]; other schemes are opaque here (RFC 4475 §3.3.2: a proxy or UA answers
/// 416, which needs the message parsed).
pub(crate) fn check_uri(u: &str) -> bool {
    let Some((scheme, rest)) = u.split_once(':') else {
        return false;
    };
    let scheme_ok = scheme
        .as_bytes()
        .first()
        .is_some_and(u8::is_ascii_alphabetic)
        && scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'));
    if !scheme_ok || rest.is_empty() {
        return false;
    }
    if scheme.eq_ignore_ascii_case("sip") || scheme.eq_ignore_ascii_case("sips") {
        return SipUri::parse(u).is_ok();
    }
    rest.bytes()
        .all(|b| b > 0x20 && b < 0x7f && !matches!(b, b'<' | b'>' | b'"'))
}

/// `name-addr / addr-spec` followed by header parameters (From, To, Contact, Route,
/// Record-Route). `what` names the header in the error.
pub(crate) fn parse_name_addr<'a>(
    s: &'a str,
    what: &'static str,
) -> Result<NameAddr<'a>, ParseError> {
    let err = bad(what);
    let mut c = Cursor::new(s);
    c.skip_ws();
    let mut display_name = None;
    match c.peek() {
        Some(b'"') => {
            display_name = Some(c.quoted_string().ok_or(err.clone())?);
            c.skip_ws();
            if c.peek() != Some(b'<') {
                return Err(err);
            }
        }
        Some(b'<') => {}
        _ => {
            // display-name = *(token LWS) before "<"; otherwise this is an addr-spec.
            let start = c.pos;
            let mut last = start;
            while !c.take_while(is_token_char).is_empty() {
                last = c.pos;
                c.skip_ws();
            }
            if c.peek() == Some(b'<') && last > start {
                display_name = Some(c.slice(start, last));
            } else {
                c.pos = start;
            }
        }
    }
    let uri = if c.eat(b'<') {
        // RAQUOT/LAQUOT allow LWS outside the brackets only (RFC 4475 §3.1.2.14).
        let uri = c.take_while(|b| b != b'>' && !is_ws(b));
        if !c.eat(b'>') {
            return Err(err);
        }
        uri
    } else {
        // RFC 3261 §20.10: without <>, parameters after the URI are header parameters, and
        // a URI containing `,`, `;` or `?` must have been enclosed (RFC 4475 §3.1.2.13).
        let uri = c.take_while(|b| !is_ws(b) && !matches!(b, b';' | b','));
        if uri.contains('?') {
            return Err(err);
        }
        uri
    };
    if !check_uri(uri) {
        return Err(err);
    }
    let params = parse_params(&mut c).map_err(|()| err.clone())?;
    c.skip_ws();
    if !c.at_end() {
        return Err(err);
    }
    Ok(NameAddr {
        display_name,
        uri,
        params,
    })
}

/// `CSeq = 1*DIGIT LWS Method` (RFC 3261 §20.16); the number must be below 2**31
/// (§8.1.1.5).
pub(crate) fn parse_cseq(s: &str) -> Result<CSeq, ParseError> {
    let err = bad("CSeq");
    let mut c = Cursor::new(s);
    c.skip_ws();
    let seq = parse_u32(c.take_while(|b| b.is_ascii_digit())).ok_or(err.clone())?;
    if seq >= 1 << 31 || !c.skip_ws() {
        return Err(err);
    }
    let method = c.take_while(is_token_char);
    c.skip_ws();
    if method.is_empty() || !c.at_end() {
        return Err(err);
    }
    Ok(CSeq {
        seq,
        method: Method::from_token(method),
    })
}

/// SIP-URI / SIPS-URI (RFC 3261 §19.1.1).
pub(crate) fn parse_sip_uri(s: &str) -> Result<SipUri<'_>, ParseError> {
    let err = bad("URI");
    let (scheme, rest) = s.split_once(':').ok_or(err.clone())?;
    if !(scheme.eq_ignore_ascii_case("sip") || scheme.eq_ignore_ascii_case("sips")) {
        return Err(err);
    }
    if rest
        .bytes()
        .any(|b| b <= 0x20 || b >= 0x7f || matches!(b, b'<' | b'>' | b'"'))
    {
        return Err(err);
    }
    // userinfo may hold `;`, `?`, `:` and `,` unescaped (RFC 4475 §3.1.1.2, §3.1.1.9) but
    // never `@`, and nothing after it may hold `@`: split at the first one.
    let (userinfo, hostpart) = match rest.split_once('@') {
        Some((ui, hp)) => (Some(ui), hp),
        None => (None, rest),
    };
    let (user, password) = match userinfo {
        None => (None, None),
        Some(ui) => {
            let (u, p) = match ui.split_once(':') {
                Some((u, p)) => (u, Some(p)),
                None => (ui, None),
            };
            if u.is_empty() {
                return Err(err);
            }
            (Some(u), p)
        }
    };
    let mut c = Cursor::new(hostpart);
    let host = take_host(&mut c).ok_or(err.clone())?;
    let port = if c.eat(b':') {
        Some(parse_u16(c.take_while(|b| b.is_ascii_digit())).ok_or(err.clone())?)
    } else {
        None
    };
    let rest = c.rest();
    let (params, headers) = match rest.split_once('?') {
        Some((p, h)) => (p, h),
        None => (rest, ""),
    };
    if !(params.is_empty() || params.starts_with(';')) {
        return Err(err);
    }
    // uri-parameters: every `;` starts a non-empty pname.
    if params.split(';').skip(1).any(|p| {
        let name = p.split('=').next().unwrap_or("");
        name.is_empty()
    }) {
        return Err(err);
    }
    Ok(SipUri {
        scheme,
        user,
        password,
        host,
        port,
        params,
        headers,
    })
}
