//! Digest authentication (RFC 2617, RFC 7616, RFC 8760): challenges, verification, nonces.
//!
//! Server side (registrar, INVITE 407): a [`Verifier`] issues [`Challenge`]s with stateless,
//! self-validating nonces ([`Nonces`]) and checks `Authorization` / `Proxy-Authorization`
//! values against a stored HA1 (never a plaintext password, see [`ha1`]), rejecting replayed
//! nonce counts with a bounded [`NcTracker`].
//!
//! Client side (our own auth towards carrier trunks): [`Challenge::parse`] a
//! `WWW-Authenticate` / `Proxy-Authenticate` value, pick one with [`select_challenge`], and
//! [`Challenge::answer`] it into an [`Authorization`] whose `Display` is the header value.
//!
//! Sans-IO: `now` (seconds since the UNIX epoch), the nonce secret, random bytes and cnonces
//! are all passed in by the caller.
//!
//! ```
//! use voxgate_sip::auth::{ha1, AnswerInput, AuthError, ClientSecret, Nonces, Verifier};
//! use voxgate_sip::auth::select_challenge;
//!
//! let now = 1_700_000_000;
//! let mut registrar = Verifier::new("voxgate.test", Nonces::new(&[42; 32]));
//! // 401 with two WWW-Authenticate headers, SHA-256 first (RFC 8760 §2.4).
//! let headers: Vec<String> =
//!     registrar.challenges(now, [1; 8], false).iter().map(ToString::to_string).collect();
//!
//! // The UA answers the first challenge it supports.
//! let challenge = select_challenge(headers.iter().map(String::as_str)).unwrap();
//! let authorization = challenge
//!     .answer(&AnswerInput {
//!         username: "alice",
//!         secret: ClientSecret::Password("s3cret"),
//!         method: "REGISTER",
//!         uri: "sip:voxgate.test",
//!         cnonce: "3f1c5a9e",
//!         nc: 1,
//!     })
//!     .unwrap()
//!     .to_string();
//!
//! // The registrar stores only HA1s and looks one up by username and hash.
//! let lookup = |user: &str, alg| {
//!     (user == "alice").then(|| ha1(alg, "alice", "voxgate.test", "s3cret"))
//! };
//! let ok = registrar.verify("REGISTER", &authorization, lookup, now + 1).unwrap();
//! assert_eq!(ok.username, "alice");
//! // The same header again is a replay.
//! assert_eq!(
//!     registrar.verify("REGISTER", &authorization, lookup, now + 2),
//!     Err(AuthError::Replay)
//! );
//! ```

mod digest;
mod nonce;
mod parse;
mod verify;

#[cfg(test)]
mod tests;

pub use digest::{ha1, Algorithm, Qop};
pub use nonce::{NcTracker, NonceInfo, Nonces, DEFAULT_NC_CAPACITY, NONCE_RANDOM_LEN};
pub use parse::{
    select_challenge, AnswerInput, Authorization, Challenge, ClientSecret, QopResponse,
};
pub use verify::{Verified, Verifier};

/// A digest parameter name, for precise errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Param {
    Username,
    Realm,
    Nonce,
    Uri,
    Response,
    Algorithm,
    Cnonce,
    Opaque,
    Qop,
    Nc,
    Stale,
}

impl Param {
    /// The parameter's name as written on the wire (matched case-insensitively).
    pub fn as_str(self) -> &'static str {
        match self {
            Param::Username => "username",
            Param::Realm => "realm",
            Param::Nonce => "nonce",
            Param::Uri => "uri",
            Param::Response => "response",
            Param::Algorithm => "algorithm",
            Param::Cnonce => "cnonce",
            Param::Opaque => "opaque",
            Param::Qop => "qop",
            Param::Nc => "nc",
            Param::Stale => "stale",
        }
    }
}

impl std::fmt::Display for Param {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a `Digest` header value could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SyntaxError {
    /// The scheme is not `Digest` (e.g. `Basic`, or empty).
    #[error("authentication scheme is not Digest")]
    NotDigest,
    /// Something other than what the grammar allows at this byte offset.
    #[error("expected {expected} at offset {offset}")]
    Expected {
        expected: &'static str,
        offset: usize,
    },
    /// A quoted-string with no closing quote.
    #[error("unterminated quoted string starting at offset {offset}")]
    UnterminatedQuote { offset: usize },
    /// A parameter we interpret appeared twice (ambiguous: which one was signed?).
    #[error("duplicate parameter {0}")]
    DuplicateParam(Param),
    /// A parameter the grammar requires is absent.
    #[error("missing parameter {0}")]
    MissingParam(Param),
    /// A parameter's value has the wrong shape (e.g. `nc` not 8 hex digits).
    #[error("malformed value for parameter {0}")]
    BadValue(Param),
    /// `algorithm` names something other than MD5, MD5-sess, SHA-256, SHA-256-sess.
    #[error("unsupported digest algorithm")]
    UnsupportedAlgorithm,
    /// A qop value (or a challenge's qop list) with nothing we understand.
    #[error("unsupported qop")]
    UnsupportedQop,
}

/// Why authentication failed. The variants map to distinct SIP reactions, see each one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// The header value does not parse: answer 400 (or re-challenge).
    #[error("malformed digest header: {0}")]
    Malformed(#[from] SyntaxError),
    /// RFC 2069-style response without qop. We always offer qop="auth" (RFC 7616 §3.3
    /// makes qop mandatory), so a response without it is a downgrade: re-challenge.
    #[error("response has no qop; qop=auth is required")]
    QopRequired,
    /// qop other than `auth` (we do not offer auth-int), or, client side, a challenge whose
    /// qop list has no `auth` (or a `-sess` algorithm without qop).
    #[error("qop not supported")]
    QopNotSupported,
    /// The response is for another realm than ours: re-challenge.
    #[error("realm does not match")]
    RealmMismatch,
    /// The response uses an algorithm we did not offer.
    #[error("algorithm {0} was not offered")]
    AlgorithmNotOffered(Algorithm),
    /// We sent an opaque and it did not come back unchanged (RFC 7616 §3.3).
    #[error("opaque does not match")]
    OpaqueMismatch,
    /// The nonce was not issued by us (bad MAC or garbage): re-challenge with stale=false.
    #[error("nonce invalid")]
    NonceInvalid,
    /// The nonce is ours but expired, and the digest was right: re-challenge with
    /// `stale=true` so the UA retries without asking its user (RFC 7616 §3.3).
    #[error("nonce stale")]
    Stale,
    /// The nonce count was not greater than the last one seen for this nonce (RFC 7616
    /// §3.4): a replay. Re-challenge.
    #[error("nonce count replayed")]
    Replay,
    /// Wrong password or unknown user, deliberately indistinguishable (SPEC §2: no
    /// username enumeration): 403 or re-challenge, at the caller's policy.
    #[error("forbidden")]
    Forbidden,
}

/// Constant-time byte comparison for digests (the length is public, the contents not).
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}
