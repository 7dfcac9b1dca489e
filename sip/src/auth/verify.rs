//! The server side: challenge, then verify (RFC 7616 §3.3-§3.5, RFC 8760 §2.4).

use super::digest::{request_digest, Algorithm, Qop, QopInput};
use super::nonce::{NcTracker, Nonces, NONCE_RANDOM_LEN};
use super::parse::{Authorization, Challenge};
use super::{ct_eq, AuthError};

/// A successful verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The authenticated username.
    pub username: String,
    /// The digest-uri the client signed. The caller must check it designates the
    /// Request-URI (RFC 7616 §3.4.6) and answer 400 if not.
    pub uri: String,
    /// The algorithm the client used.
    pub algorithm: Algorithm,
}

/// Digest verifier for one realm: issues challenges and verifies responses.
///
/// ```text
/// request without credentials  -> 401 + challenges(now, random, false)
/// verify() == Err(Stale)       -> 401 + challenges(now, random, true)
/// verify() == Err(Forbidden)   -> 403 (or 401 again, at the caller's policy)
/// verify() == Ok(v)            -> caller checks v.uri and v.username's rights
/// ```
#[derive(Debug, Clone)]
pub struct Verifier {
    realm: String,
    nonces: Nonces,
    nc: NcTracker,
    algorithms: Vec<Algorithm>,
    opaque: Option<String>,
}

impl Verifier {
    /// A verifier for `realm` offering SHA-256 then MD5 (RFC 8760 §2.4 order), no opaque.
    pub fn new(realm: impl Into<String>, nonces: Nonces) -> Self {
        Verifier {
            realm: realm.into(),
            nonces,
            nc: NcTracker::default(),
            algorithms: vec![Algorithm::Sha256, Algorithm::Md5],
            opaque: None,
        }
    }

    /// Offer these algorithms, most preferred first. Only offered algorithms are accepted.
    #[must_use]
    pub fn with_algorithms(mut self, algorithms: Vec<Algorithm>) -> Self {
        self.algorithms = algorithms;
        self
    }

    /// Send this opaque in challenges and require it back unchanged.
    #[must_use]
    pub fn with_opaque(mut self, opaque: impl Into<String>) -> Self {
        self.opaque = Some(opaque.into());
        self
    }

    /// Replace the nonce-count tracker (e.g. to change its capacity).
    #[must_use]
    pub fn with_nc_tracker(mut self, tracker: NcTracker) -> Self {
        self.nc = tracker;
        self
    }

    /// Our realm.
    pub fn realm(&self) -> &str {
        &self.realm
    }

    /// The nonce issuer.
    pub fn nonces(&self) -> &Nonces {
        &self.nonces
    }

    /// The replay tracker (for metrics).
    pub fn nc_tracker(&self) -> &NcTracker {
        &self.nc
    }

    /// One challenge per offered algorithm, in preference order (by default SHA-256 then
    /// MD5: send each as its own `WWW-Authenticate` / `Proxy-Authenticate` header, in this
    /// order, RFC 8760 §2.4). They share one fresh nonce.
    pub fn challenges(
        &self,
        now: u64,
        random: [u8; NONCE_RANDOM_LEN],
        stale: bool,
    ) -> Vec<Challenge> {
        let nonce = self.nonces.issue(now, random);
        self.algorithms
            .iter()
            .map(|&alg| Challenge {
                realm: self.realm.clone(),
                nonce: nonce.clone(),
                opaque: self.opaque.clone(),
                algorithm: alg,
                qop: vec![Qop::Auth],
                stale,
            })
            .collect()
    }

    /// Parse and verify an `Authorization` / `Proxy-Authorization` value for a request
    /// with `method`. `lookup_ha1(username, base_algorithm)` returns the stored HA1 (hex,
    /// as [`ha1`](super::ha1) makes it) for that user and hash, or `None` if unknown.
    pub fn verify(
        &mut self,
        method: &str,
        header_value: &str,
        lookup_ha1: impl FnOnce(&str, Algorithm) -> Option<String>,
        now: u64,
    ) -> Result<Verified, AuthError> {
        let auth = Authorization::parse(header_value)?;
        self.verify_parsed(method, &auth, lookup_ha1, now)
    }

    /// [`verify`](Self::verify) for an already parsed value (e.g. after picking, among
    /// several `Authorization` headers, the one whose realm is ours).
    pub fn verify_parsed(
        &mut self,
        method: &str,
        auth: &Authorization,
        lookup_ha1: impl FnOnce(&str, Algorithm) -> Option<String>,
        now: u64,
    ) -> Result<Verified, AuthError> {
        if auth.realm != self.realm {
            return Err(AuthError::RealmMismatch);
        }
        if !self.algorithms.contains(&auth.algorithm) {
            return Err(AuthError::AlgorithmNotOffered(auth.algorithm));
        }
        // We always offer qop="auth"; accepting its absence would be a downgrade to
        // RFC 2069 (no cnonce, no nc, so no replay protection).
        let q = auth.qop.as_ref().ok_or(AuthError::QopRequired)?;
        if q.qop != Qop::Auth {
            return Err(AuthError::QopNotSupported);
        }
        if let Some(ours) = &self.opaque {
            if auth.opaque.as_deref() != Some(ours.as_str()) {
                return Err(AuthError::OpaqueMismatch);
            }
        }
        // RFC 7616 §3.3: stale=true only when the digest is right, so defer Stale.
        let nonce = match self.nonces.check(&auth.nonce, now) {
            Ok(info) => Some(info),
            Err(AuthError::Stale) => None,
            Err(e) => return Err(e),
        };

        // Unknown users go through the same computation against a dummy HA1 and end in the
        // same Forbidden as a wrong password: no enumeration by error or by timing.
        let stored = lookup_ha1(&auth.username, auth.algorithm.base());
        let known = stored.is_some();
        let ha1 = stored
            .map(|s| s.to_ascii_lowercase())
            .unwrap_or_else(|| "0".repeat(auth.algorithm.hex_len()));
        let expected = request_digest(
            auth.algorithm,
            &ha1,
            method,
            &auth.uri,
            &auth.nonce,
            Some(&QopInput {
                nc: &q.nc_text,
                cnonce: &q.cnonce,
            }),
        );
        let given = auth.response.to_ascii_lowercase();
        if !(ct_eq(expected.as_bytes(), given.as_bytes()) & known) {
            return Err(AuthError::Forbidden);
        }
        let info = nonce.ok_or(AuthError::Stale)?;
        self.nc
            .check_and_record(&auth.nonce, q.nc, info.expires_at, now)?;
        Ok(Verified {
            username: auth.username.clone(),
            uri: auth.uri.clone(),
            algorithm: auth.algorithm,
        })
    }
}
