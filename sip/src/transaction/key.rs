//! Transaction identifiers and matching keys (RFC 3261 §17.1.3, §17.2.3).

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
    /// The branch, a NUL, and the sent-by host lower-cased (hosts compare case-insensitively,
    /// §19.1.4): one small copy, so a transaction lingering 32 s for Timer J does not pin the
    /// whole receive buffer its request arrived in.
    id: Bytes,
    port: u16,
    method: Method,
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
        let mut id = Vec::with_capacity(via.branch.map_or(64, str::len) + via.host.len() + 1);
        match via.branch {
            Some(b) if b.starts_with(MAGIC_COOKIE) => id.extend_from_slice(b.as_bytes()),
            // §17.2.3 (RFC 2543 fallback), simplified: Request-URI, From tag, Call-ID, CSeq
            // number and the top Via's branch (if any) identify the transaction. The To tag
            // is left out, so the ACK (which carries our tag) still matches its INVITE. The
            // leading NUL keeps these apart from cookie branches.
            b => {
                let seq = msg.cseq().seq.to_string();
                let uri = msg.request_uri().unwrap_or("");
                let from_tag = msg.from().tag().unwrap_or("");
                for part in [b.unwrap_or(""), uri, from_tag, msg.call_id(), &seq] {
                    id.push(0);
                    id.extend_from_slice(part.as_bytes());
                }
            }
        }
        id.push(0);
        id.extend(via.host.bytes().map(|c| c.to_ascii_lowercase()));
        Some(ServerKey {
            id: Bytes::from(id),
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

#[cfg(test)]
mod tests {
    use super::*;

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
