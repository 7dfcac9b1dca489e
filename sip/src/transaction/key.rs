//! Transaction identifiers and matching keys (RFC 3261 §17.1.3, §17.2.3).

use std::hash::{Hash, Hasher};

use bytes::Bytes;

use crate::message::{Message, Method};

/// RFC 3261 §8.1.1.7: branches starting with this cookie are unique per transaction.
pub(crate) const MAGIC_COOKIE: &str = "z9hG4bK";

/// A slot in the layer's transaction slab plus the generation of its occupant, so an id
/// kept after its transaction ended never reaches the slot's next occupant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct TxRef {
    pub(crate) idx: u32,
    pub(crate) gen: u32,
}

/// A client transaction (one request we sent). Cheap to copy; stale ids are detected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientTxId(pub(crate) TxRef);

/// A server transaction (one request we received). Cheap to copy; stale ids are detected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ServerTxId(pub(crate) TxRef);

/// Either kind of transaction, in events that both kinds raise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TxId {
    Client(ClientTxId),
    Server(ServerTxId),
}

impl From<ClientTxId> for TxId {
    fn from(id: ClientTxId) -> Self {
        TxId::Client(id)
    }
}

impl From<ServerTxId> for TxId {
    fn from(id: ServerTxId) -> Self {
        TxId::Server(id)
    }
}

/// RFC 3261 §17.1.3: a response matches a client transaction by the top Via branch and the
/// CSeq method (a CANCEL shares its INVITE's branch).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct ClientKey {
    pub(crate) branch: Bytes,
    pub(crate) method: Method,
}

impl ClientKey {
    /// The key of a response, or of a request we send. `None` without a branch.
    pub(crate) fn of(msg: &Message) -> Option<ClientKey> {
        let branch = msg.top_via().branch.filter(|b| !b.is_empty())?;
        Some(ClientKey {
            branch: sub_bytes(msg.as_bytes(), branch),
            method: msg.cseq().method.clone(),
        })
    }
}

/// RFC 3261 §17.2.3: a request matches a server transaction by top Via branch, sent-by and
/// method, where an ACK matches its INVITE. Branches without the magic cookie (RFC 2543
/// peers) get a composite key instead, see [`ServerKey::of`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct ServerKey {
    pub(crate) branch: Bytes,
    pub(crate) host: NoCase,
    pub(crate) port: u16,
    pub(crate) method: Method,
}

impl ServerKey {
    /// The key of a received request; `None` for a response.
    pub(crate) fn of(msg: &Message) -> Option<ServerKey> {
        let method = match msg.method()? {
            // §17.2.3: "except for ACK, where the method of the request that created the
            // transaction is INVITE".
            Method::Ack => Method::Invite,
            m => m.clone(),
        };
        let via = msg.top_via();
        let port = via.port.unwrap_or_else(|| default_port(via.transport));
        let buf = msg.as_bytes();
        let branch = match via.branch {
            Some(b) if b.starts_with(MAGIC_COOKIE) => sub_bytes(buf, b),
            // §17.2.3 (RFC 2543 fallback), simplified: Request-URI, From tag, Call-ID, CSeq
            // number and the top Via's branch (if any) identify the transaction. The To tag
            // is left out, so the ACK (which carries our tag) still matches its INVITE.
            b => legacy_branch(msg, b.unwrap_or("")),
        };
        Some(ServerKey {
            branch,
            host: NoCase(sub_bytes(buf, via.host)),
            port,
            method,
        })
    }

    /// The key of the INVITE server transaction a CANCEL with this key cancels (§9.2).
    pub(crate) fn for_invite(&self) -> ServerKey {
        ServerKey {
            method: Method::Invite,
            ..self.clone()
        }
    }
}

fn legacy_branch(msg: &Message, branch: &str) -> Bytes {
    let uri = msg.request_uri().unwrap_or("");
    let from_tag = msg.from().tag().unwrap_or("");
    let seq = msg.cseq().seq.to_string();
    let mut v = Vec::with_capacity(8 + branch.len() + uri.len() + from_tag.len() + 64);
    // A NUL cannot occur in a real branch, so composite keys never equal cookie branches.
    for part in [branch, uri, from_tag, msg.call_id(), &seq] {
        v.push(0);
        v.extend_from_slice(part.as_bytes());
    }
    Bytes::from(v)
}

/// RFC 3261 §18.2.2 / §19.1.2: default ports when sent-by has none.
fn default_port(transport: &str) -> u16 {
    if transport.eq_ignore_ascii_case("TLS") || transport.eq_ignore_ascii_case("WSS") {
        5061
    } else {
        5060
    }
}

/// `s` as a zero-copy slice of `buf` when it points into it, else a copy.
pub(crate) fn sub_bytes(buf: &Bytes, s: &str) -> Bytes {
    let base = buf.as_ptr() as usize;
    let start = s.as_ptr() as usize;
    if start >= base && start + s.len() <= base + buf.len() {
        buf.slice(start - base..start - base + s.len())
    } else {
        Bytes::copy_from_slice(s.as_bytes())
    }
}

/// Bytes compared and hashed ASCII-case-insensitively (host names, RFC 3261 §19.1.4).
#[derive(Debug, Clone)]
pub(crate) struct NoCase(pub(crate) Bytes);

impl PartialEq for NoCase {
    fn eq(&self, other: &Self) -> bool {
        self.0.eq_ignore_ascii_case(&other.0)
    }
}

impl Eq for NoCase {}

impl Hash for NoCase {
    fn hash<H: Hasher>(&self, state: &mut H) {
        let mut chunk = [0u8; 64];
        for part in self.0.chunks(chunk.len()) {
            let lower = &mut chunk[..part.len()];
            lower.copy_from_slice(part);
            lower.make_ascii_lowercase();
            state.write(lower);
        }
        state.write_usize(self.0.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::hash_map::DefaultHasher;

    fn hash(v: &NoCase) -> u64 {
        let mut h = DefaultHasher::new();
        v.hash(&mut h);
        h.finish()
    }

    #[test]
    fn host_compares_case_insensitively() {
        let a = NoCase(Bytes::from_static(b"Example.COM"));
        let b = NoCase(Bytes::from_static(b"example.com"));
        assert_eq!(a, b);
        assert_eq!(hash(&a), hash(&b));
        assert_ne!(a, NoCase(Bytes::from_static(b"example.org")));
    }

    #[test]
    fn sub_bytes_is_zero_copy_inside_and_copies_outside() {
        let buf = Bytes::from_static(b"branch=z9hG4bKabc");
        let inner = std::str::from_utf8(&buf[7..]).unwrap_or_default();
        let s = sub_bytes(&buf, inner);
        assert_eq!(&s[..], b"z9hG4bKabc");
        assert_eq!(s.as_ptr(), buf[7..].as_ptr());
        let other = String::from("elsewhere");
        assert_eq!(&sub_bytes(&buf, &other)[..], b"elsewhere");
    }

    #[test]
    fn default_ports() {
        assert_eq!(default_port("UDP"), 5060);
        assert_eq!(default_port("tls"), 5061);
        assert_eq!(default_port("WSS"), 5061);
    }
}
