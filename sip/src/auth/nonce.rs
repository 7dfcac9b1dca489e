//! Stateless nonces (RFC 7616 §5.4, §3.3) and nonce-count replay tracking (RFC 7616 §3.4,
//! RFC 2617 §3.2.2).

use std::collections::{BTreeSet, HashMap};

use hmac::digest::KeyInit;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use super::{ct_eq, AuthError};

type HmacSha256 = Hmac<Sha256>;

/// Random bytes the caller supplies per issued nonce: they keep nonces issued within the
/// same second distinct (the MAC, not this, is what makes them unforgeable).
pub const NONCE_RANDOM_LEN: usize = 8;
/// HMAC-SHA256 truncated to 128 bits: forging one needs ~2^128 work per guess online.
const MAC_LEN: usize = 16;
const TS_LEN: usize = 8;
const RAW_LEN: usize = TS_LEN + NONCE_RANDOM_LEN + MAC_LEN;

/// Issues and checks self-validating nonces:
/// `hex(issued_at u64 BE || random[8] || HMAC-SHA256(secret, issued_at || random)[..16])`,
/// 64 hex characters. No server state: any node holding the secret can check them, and
/// they survive a restart as long as the secret does.
#[derive(Clone)]
pub struct Nonces {
    mac: HmacSha256,
    lifetime: u64,
}

impl std::fmt::Debug for Nonces {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        f.debug_struct("Nonces")
            .field("lifetime", &self.lifetime)
            .finish_non_exhaustive()
    }
}

/// What a valid nonce says about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NonceInfo {
    /// When we issued it (seconds since the UNIX epoch).
    pub issued_at: u64,
    /// First second at which it is stale.
    pub expires_at: u64,
}

impl Nonces {
    /// Default nonce lifetime in seconds.
    pub const DEFAULT_LIFETIME: u64 = 300;

    /// Nonces keyed by `secret` (use at least 32 random bytes, kept across restarts).
    pub fn new(secret: &[u8]) -> Self {
        // HMAC's own key preparation (RFC 2104 §2): hash if longer than a block, zero-pad.
        // Done here so construction is infallible without an unwrap.
        let mut key = hmac::digest::Key::<HmacSha256>::default();
        if secret.len() > key.len() {
            let d = Sha256::digest(secret);
            key[..d.len()].copy_from_slice(&d);
        } else {
            key[..secret.len()].copy_from_slice(secret);
        }
        Nonces {
            mac: <HmacSha256 as KeyInit>::new(&key),
            lifetime: Self::DEFAULT_LIFETIME,
        }
    }

    /// Set the lifetime in seconds (at least 1).
    #[must_use]
    pub fn with_lifetime(mut self, seconds: u64) -> Self {
        self.lifetime = seconds.max(1);
        self
    }

    /// The lifetime in seconds.
    pub fn lifetime(&self) -> u64 {
        self.lifetime
    }

    fn tag(&self, ts: &[u8], random: &[u8]) -> [u8; MAC_LEN] {
        let mut mac = self.mac.clone();
        mac.update(ts);
        mac.update(random);
        let full = mac.finalize().into_bytes();
        let mut out = [0u8; MAC_LEN];
        out.copy_from_slice(&full[..MAC_LEN]);
        out
    }

    /// Issue a nonce at `now` with caller-supplied random bytes.
    pub fn issue(&self, now: u64, random: [u8; NONCE_RANDOM_LEN]) -> String {
        let ts = now.to_be_bytes();
        let tag = self.tag(&ts, &random);
        let mut raw = [0u8; RAW_LEN];
        raw[..TS_LEN].copy_from_slice(&ts);
        raw[TS_LEN..TS_LEN + NONCE_RANDOM_LEN].copy_from_slice(&random);
        raw[TS_LEN + NONCE_RANDOM_LEN..].copy_from_slice(&tag);
        hex::encode(raw)
    }

    /// Check a nonce at `now`: [`AuthError::NonceInvalid`] if we did not issue it (bad
    /// MAC, wrong length, not hex, or dated further in the future than one lifetime),
    /// [`AuthError::Stale`] if we did but it has expired.
    pub fn check(&self, nonce: &str, now: u64) -> Result<NonceInfo, AuthError> {
        let mut raw = [0u8; RAW_LEN];
        hex::decode_to_slice(nonce, &mut raw).map_err(|_| AuthError::NonceInvalid)?;
        let (ts, rest) = raw.split_at(TS_LEN);
        let (random, tag) = rest.split_at(NONCE_RANDOM_LEN);
        if !ct_eq(&self.tag(ts, random), tag) {
            return Err(AuthError::NonceInvalid);
        }
        let mut ts_bytes = [0u8; TS_LEN];
        ts_bytes.copy_from_slice(ts);
        let issued_at = u64::from_be_bytes(ts_bytes);
        // Ours, but from the future: only possible if our clock stepped back. Tolerate up
        // to one lifetime of skew (e.g. nodes sharing the secret); beyond that, refuse.
        if issued_at > now.saturating_add(self.lifetime) {
            return Err(AuthError::NonceInvalid);
        }
        let expires_at = issued_at.saturating_add(self.lifetime);
        if now >= expires_at {
            return Err(AuthError::Stale);
        }
        Ok(NonceInfo {
            issued_at,
            expires_at,
        })
    }
}

/// Default hard cap on tracked nonces.
pub const DEFAULT_NC_CAPACITY: usize = 16_384;

/// Remembers the highest nonce count accepted per nonce, so a captured request cannot be
/// replayed while its nonce lives (RFC 7616 §3.4). Bounded: entries leave when their nonce
/// expires, and past `capacity` the oldest (soonest-expiring) nonce is evicted. A nonce we
/// may have forgotten that way is answered [`AuthError::Stale`] rather than trusted, so
/// eviction never opens a replay window; it only costs that client one re-challenge.
#[derive(Debug, Clone)]
pub struct NcTracker {
    last_nc: HashMap<String, (u32, u64)>,
    by_expiry: BTreeSet<(u64, String)>,
    capacity: usize,
    /// Any nonce expiring at or before this may have been evicted under pressure.
    evicted_through: Option<u64>,
}

impl Default for NcTracker {
    fn default() -> Self {
        NcTracker::new(DEFAULT_NC_CAPACITY)
    }
}

impl NcTracker {
    /// A tracker holding at most `capacity` nonces (at least 1).
    pub fn new(capacity: usize) -> Self {
        NcTracker {
            last_nc: HashMap::new(),
            by_expiry: BTreeSet::new(),
            capacity: capacity.max(1),
            evicted_through: None,
        }
    }

    /// Number of nonces currently tracked.
    pub fn len(&self) -> usize {
        self.last_nc.len()
    }

    /// Whether no nonce is tracked.
    pub fn is_empty(&self) -> bool {
        self.last_nc.is_empty()
    }

    /// Drop entries whose nonce has expired at `now`.
    pub fn purge(&mut self, now: u64) {
        while let Some((exp, _)) = self.by_expiry.first() {
            if *exp > now {
                break;
            }
            if let Some((_, nonce)) = self.by_expiry.pop_first() {
                self.last_nc.remove(&nonce);
            }
        }
    }

    /// Accept `nc` for `nonce` (valid until `expires_at`) only if it is greater than every
    /// count accepted before for it: [`AuthError::Replay`] otherwise (so nc 0 is never
    /// accepted), [`AuthError::Stale`] if its history may have been evicted.
    pub fn check_and_record(
        &mut self,
        nonce: &str,
        nc: u32,
        expires_at: u64,
        now: u64,
    ) -> Result<(), AuthError> {
        self.purge(now);
        if let Some((last, _)) = self.last_nc.get_mut(nonce) {
            if nc <= *last {
                return Err(AuthError::Replay);
            }
            *last = nc;
            return Ok(());
        }
        if nc == 0 {
            return Err(AuthError::Replay);
        }
        if self.evicted_through.is_some_and(|t| expires_at <= t) {
            return Err(AuthError::Stale);
        }
        self.last_nc.insert(nonce.to_owned(), (nc, expires_at));
        self.by_expiry.insert((expires_at, nonce.to_owned()));
        while self.last_nc.len() > self.capacity {
            let Some((exp, victim)) = self.by_expiry.pop_first() else {
                break;
            };
            self.last_nc.remove(&victim);
            self.evicted_through = Some(self.evicted_through.map_or(exp, |t| t.max(exp)));
        }
        Ok(())
    }
}
