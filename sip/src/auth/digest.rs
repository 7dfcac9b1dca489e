//! The digest computation itself (RFC 7616 §3.4.1-§3.4.3; RFC 2617 §3.2.2.1-§3.2.2.3).

use md5::Md5;
use sha2::{Digest, Sha256};

/// A digest algorithm (RFC 7616 §3.3 `algorithm`, registered for SIP by RFC 8760).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// `MD5`, the RFC 2617 default when `algorithm` is absent.
    Md5,
    /// `MD5-sess`: HA1 is re-keyed per nonce/cnonce (RFC 7616 §3.4.2).
    Md5Sess,
    /// `SHA-256` (RFC 8760 §2.2).
    Sha256,
    /// `SHA-256-sess`.
    Sha256Sess,
}

impl Algorithm {
    /// The token as written in headers.
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Md5 => "MD5",
            Algorithm::Md5Sess => "MD5-sess",
            Algorithm::Sha256 => "SHA-256",
            Algorithm::Sha256Sess => "SHA-256-sess",
        }
    }

    /// Parse an `algorithm` token, case-insensitively (RFC 7616 §3.3 tokens are
    /// case-insensitive). `None` for anything else (e.g. `SHA-512-256`, `AKAv1-MD5`).
    pub fn from_token(s: &str) -> Option<Algorithm> {
        [
            Algorithm::Md5,
            Algorithm::Md5Sess,
            Algorithm::Sha256,
            Algorithm::Sha256Sess,
        ]
        .into_iter()
        .find(|a| a.as_str().eq_ignore_ascii_case(s))
    }

    /// The non-session algorithm with the same hash: the one a stored HA1 is keyed by.
    pub fn base(self) -> Algorithm {
        match self {
            Algorithm::Md5 | Algorithm::Md5Sess => Algorithm::Md5,
            Algorithm::Sha256 | Algorithm::Sha256Sess => Algorithm::Sha256,
        }
    }

    /// Whether this is a `-sess` variant.
    pub fn is_session(self) -> bool {
        matches!(self, Algorithm::Md5Sess | Algorithm::Sha256Sess)
    }

    /// Length of this algorithm's digests in lowercase hex.
    pub fn hex_len(self) -> usize {
        match self.base() {
            Algorithm::Sha256 => 64,
            _ => 32,
        }
    }
}

impl std::fmt::Display for Algorithm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Quality of protection (RFC 7616 §3.3). We only ever compute `auth`; `auth-int` is
/// recognised so that it can be refused precisely.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Qop {
    Auth,
    AuthInt,
}

impl Qop {
    /// The token as written in headers.
    pub fn as_str(self) -> &'static str {
        match self {
            Qop::Auth => "auth",
            Qop::AuthInt => "auth-int",
        }
    }

    /// Parse a qop token, case-insensitively.
    pub fn from_token(s: &str) -> Option<Qop> {
        if s.eq_ignore_ascii_case("auth") {
            Some(Qop::Auth)
        } else if s.eq_ignore_ascii_case("auth-int") {
            Some(Qop::AuthInt)
        } else {
            None
        }
    }
}

/// `H(p0 ":" p1 ":" ...)` in lowercase hex, with the hash of `algorithm`.
pub(super) fn h(algorithm: Algorithm, parts: &[&str]) -> String {
    fn run<D: Digest>(parts: &[&str]) -> String {
        let mut d = D::new();
        for (i, p) in parts.iter().enumerate() {
            if i > 0 {
                d.update(b":");
            }
            d.update(p.as_bytes());
        }
        hex::encode(d.finalize())
    }
    match algorithm.base() {
        Algorithm::Sha256 => run::<Sha256>(parts),
        _ => run::<Md5>(parts),
    }
}

/// The stored credential: `HA1 = H(username ":" realm ":" password)` in lowercase hex
/// (RFC 7616 §3.4.2). For a `-sess` algorithm this is still the base HA1 (the per-nonce
/// re-keying happens at verification), so store one HA1 per hash: MD5 and SHA-256.
pub fn ha1(algorithm: Algorithm, username: &str, realm: &str, password: &str) -> String {
    h(algorithm.base(), &[username, realm, password])
}

/// The `qop=auth` inputs of a response: nonce count as sent, and the client nonce.
pub(super) struct QopInput<'a> {
    pub nc: &'a str,
    pub cnonce: &'a str,
}

/// The request-digest (RFC 7616 §3.4.1; without qop, RFC 2617 §3.2.2.1's RFC 2069 form).
/// `qop=auth` only: HA2 = H(method ":" uri).
pub(super) fn request_digest(
    algorithm: Algorithm,
    ha1: &str,
    method: &str,
    uri: &str,
    nonce: &str,
    qop: Option<&QopInput<'_>>,
) -> String {
    let cnonce = qop.map_or("", |q| q.cnonce);
    let ha1 = if algorithm.is_session() {
        // RFC 7616 §3.4.2: HA1 = H(H(user:realm:pass) ":" nonce ":" cnonce).
        h(algorithm, &[ha1, nonce, cnonce])
    } else {
        ha1.to_owned()
    };
    let ha2 = h(algorithm, &[method, uri]);
    match qop {
        Some(q) => h(algorithm, &[&ha1, nonce, q.nc, q.cnonce, "auth", &ha2]),
        None => h(algorithm, &[&ha1, nonce, &ha2]),
    }
}
