//! The core's table of stream connections (TCP and TLS): which are open, which address
//! each reaches, and which are being opened with messages waiting for them. No I/O: the
//! core opens a connection when [`Streams::send`] says [`Delivery::Dial`], and reports back
//! with [`Streams::opened`] or [`Streams::connect_failed`].

use std::collections::HashMap;
use std::net::SocketAddr;

use bytes::Bytes;
use tokio::sync::mpsc;
use voxgate_sip::transaction::{Peer, Transport};

/// Messages that may wait for one connection being opened.
pub const DIAL_QUEUE: usize = 64;

/// What became of a message given to [`Streams::send`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Queued on an open connection.
    Sent,
    /// Waiting for a connection already being opened.
    Waiting,
    /// Waiting for a new connection: open one to this transport and address.
    Dial(Transport, SocketAddr),
    /// Cannot be sent: a transport error for its transaction.
    Failed,
}

struct Open {
    from: SocketAddr,
    transport: Transport,
    out: mpsc::Sender<Bytes>,
}

#[derive(Default)]
pub struct Streams {
    open: HashMap<u64, Open>,
    /// Open connections by peer address, to reach a TCP- or TLS-registered phone and to
    /// reuse a connection voxgate opened.
    pub by_addr: HashMap<SocketAddr, u64>,
    /// Messages waiting for a connection being opened, by where it goes.
    dialing: HashMap<(Transport, SocketAddr), Vec<Bytes>>,
}

impl Streams {
    /// A connection is up. If voxgate opened it, what waited for it goes first, in order.
    pub fn opened(
        &mut self,
        conn: u64,
        from: SocketAddr,
        transport: Transport,
        out: mpsc::Sender<Bytes>,
    ) {
        for bytes in self.dialing.remove(&(transport, from)).unwrap_or_default() {
            if out.try_send(bytes).is_err() {
                metrics::counter!("voxgate_sip_stream_send_failed_total").increment(1);
            }
        }
        self.open.insert(
            conn,
            Open {
                from,
                transport,
                out,
            },
        );
        self.by_addr.insert(from, conn);
        metrics::gauge!("voxgate_sip_stream_connections").set(self.open.len() as f64);
    }

    pub fn closed(&mut self, conn: u64) {
        if let Some(o) = self.open.remove(&conn) {
            if self.by_addr.get(&o.from) == Some(&conn) {
                self.by_addr.remove(&o.from);
            }
        }
        metrics::gauge!("voxgate_sip_stream_connections").set(self.open.len() as f64);
    }

    /// Opening a connection failed: what waited for it is dropped (its transactions get
    /// the transport error from the core).
    pub fn connect_failed(&mut self, transport: Transport, addr: SocketAddr) {
        self.dialing.remove(&(transport, addr));
    }

    /// Sends on the message's own connection when it names one (responses, requests to a
    /// phone on its registration's connection), else on an open connection to the same
    /// address and transport, else on a new one (RFC 3261 §18.1.1), which the message
    /// waits for. A connection the message names that is gone is a failure: a phone's
    /// connection cannot be opened again from our side.
    pub fn send(&mut self, to: &Peer, bytes: Bytes) -> Delivery {
        let open = |c: &u64| {
            self.open
                .get(c)
                .filter(|o| o.transport == to.transport)
                .map(|o| &o.out)
        };
        let sent = |out: &mpsc::Sender<Bytes>, bytes| {
            if out.try_send(bytes).is_ok() {
                Delivery::Sent
            } else {
                Delivery::Failed
            }
        };
        if let Some(conn) = to.conn {
            return open(&conn).map_or(Delivery::Failed, |out| sent(out, bytes));
        }
        if let Some(out) = self.by_addr.get(&to.addr).and_then(open) {
            return sent(out, bytes);
        }
        if !matches!(to.transport, Transport::Tcp | Transport::Tls) {
            return Delivery::Failed;
        }
        let key = (to.transport, to.addr);
        match self.dialing.get_mut(&key) {
            Some(queue) if queue.len() >= DIAL_QUEUE => Delivery::Failed,
            Some(queue) => {
                queue.push(bytes);
                Delivery::Waiting
            }
            None => {
                self.dialing.insert(key, vec![bytes]);
                Delivery::Dial(to.transport, to.addr)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn peer(transport: Transport, addr: &str, conn: Option<u64>) -> Peer {
        Peer {
            transport,
            addr: addr.parse().unwrap(),
            conn,
        }
    }

    fn b(s: &'static str) -> Bytes {
        Bytes::from_static(s.as_bytes())
    }

    #[test]
    fn a_request_without_a_connection_dials_once_and_waits_in_order() {
        let mut s = Streams::default();
        let to = peer(Transport::Tls, "192.0.2.1:5061", None);
        assert_eq!(
            s.send(&to, b("INVITE")),
            Delivery::Dial(Transport::Tls, to.addr)
        );
        assert_eq!(s.send(&to, b("CANCEL")), Delivery::Waiting);
        let (tx, mut rx) = mpsc::channel(8);
        s.opened(7, to.addr, Transport::Tls, tx);
        assert_eq!(rx.try_recv().unwrap(), b("INVITE"));
        assert_eq!(rx.try_recv().unwrap(), b("CANCEL"));
        // Reused by later requests to the same address.
        assert_eq!(s.send(&to, b("BYE")), Delivery::Sent);
        assert_eq!(rx.try_recv().unwrap(), b("BYE"));
        // Not by another transport to the same address.
        assert_eq!(
            s.send(&peer(Transport::Tcp, "192.0.2.1:5061", None), b("X")),
            Delivery::Dial(Transport::Tcp, to.addr)
        );
        // Closed: the next request dials again.
        s.closed(7);
        assert_eq!(
            s.send(&to, b("INVITE")),
            Delivery::Dial(Transport::Tls, to.addr)
        );
    }

    #[test]
    fn a_failed_connect_drops_what_waited_and_the_next_send_dials_again() {
        let mut s = Streams::default();
        let to = peer(Transport::Tcp, "192.0.2.2:5060", None);
        assert!(matches!(s.send(&to, b("INVITE")), Delivery::Dial(..)));
        s.connect_failed(Transport::Tcp, to.addr);
        assert!(matches!(s.send(&to, b("INVITE")), Delivery::Dial(..)));
        for _ in 1..DIAL_QUEUE {
            assert_eq!(s.send(&to, b("X")), Delivery::Waiting);
        }
        assert_eq!(
            s.send(&to, b("X")),
            Delivery::Failed,
            "the queue is bounded"
        );
    }

    #[test]
    fn a_named_connection_that_is_gone_fails_and_udp_never_dials() {
        let mut s = Streams::default();
        let (tx, mut rx) = mpsc::channel(8);
        let phone = peer(Transport::Tls, "127.0.0.1:40000", Some(3));
        s.opened(3, phone.addr, Transport::Tls, tx);
        assert_eq!(s.send(&phone, b("200")), Delivery::Sent);
        assert_eq!(rx.try_recv().unwrap(), b("200"));
        s.closed(3);
        assert_eq!(s.send(&phone, b("BYE")), Delivery::Failed);
        assert_eq!(
            s.send(&peer(Transport::Udp, "127.0.0.1:5060", None), b("X")),
            Delivery::Failed
        );
        assert_eq!(
            s.send(&peer(Transport::Ws, "127.0.0.1:5060", None), b("X")),
            Delivery::Failed
        );
    }
}
