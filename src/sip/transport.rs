//! Socket drivers: the TCP and TLS listeners, the connections voxgate opens itself, and
//! the stream connections they all become. (UDP is read by the core loop itself, see
//! `core.rs`, so that a burst of datagrams is drained per wake-up without a channel hop.)
//!
//! A stream connection frames messages by Content-Length (`voxgate_sip::framing`) and hands
//! each framed message to the core, which parses and answers it; the core writes responses
//! back through the connection's outbound queue. TLS is the same machinery over a rustls
//! stream: anything that yields framed `Bytes` plus a connection id and accepts outbound
//! `Bytes` plugs in here (WebSocket next).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_rustls::{TlsAcceptor, TlsConnector};
use voxgate_sip::framing::{Frame, FramerConfig, StreamFramer};
use voxgate_sip::transaction::Transport;

use super::resolve::ServerNames;

/// How long a connection voxgate opens may take (TCP connect plus TLS handshake), and how
/// long an accepted TLS connection may take to finish its handshake.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// What the transport tasks tell the core.
#[derive(Debug)]
pub enum Inbound {
    /// One framed message from a stream connection.
    Stream {
        conn: u64,
        from: SocketAddr,
        transport: Transport,
        bytes: Bytes,
    },
    /// A connection is up (accepted, or opened by [`Connector::connect`]; then `from` is
    /// the address it was opened to).
    Opened {
        conn: u64,
        from: SocketAddr,
        transport: Transport,
        out: mpsc::Sender<Bytes>,
    },
    Closed {
        conn: u64,
    },
    /// A connection broke framing (oversize, bad or missing Content-Length) and was closed.
    Malformed {
        from: SocketAddr,
        transport: Transport,
    },
    /// A connection voxgate tried to open failed (refused, unreachable, TLS handshake or
    /// certificate rejected, or [`CONNECT_TIMEOUT`]).
    ConnectFailed {
        transport: Transport,
        addr: SocketAddr,
    },
}

/// Limits applied per stream connection.
#[derive(Debug, Clone, Copy)]
pub struct StreamLimits {
    pub max_connections: usize,
    pub idle_timeout: Duration,
    pub max_message_bytes: usize,
}

/// Connection ids, unique across every listener and the connector (the core keys its
/// connections by them).
#[derive(Debug, Clone, Default)]
pub struct ConnIds(Arc<AtomicU64>);

impl ConnIds {
    fn next(&self) -> u64 {
        self.0.fetch_add(1, Ordering::Relaxed) + 1
    }
}

/// Accepts TCP connections (TLS ones when `tls` is given) until shutdown.
pub async fn run_listener(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    ids: ConnIds,
    core: mpsc::Sender<Inbound>,
    limits: StreamLimits,
    mut shutdown: watch::Receiver<bool>,
) {
    let open = Arc::new(AtomicUsize::new(0));
    let transport = if tls.is_some() {
        Transport::Tls
    } else {
        Transport::Tcp
    };
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = shutdown.changed() => return,
        };
        let (stream, from) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // EMFILE and friends: back off briefly instead of spinning.
                tracing::warn!(error = %e, "{transport:?} accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if open.load(Ordering::Relaxed) >= limits.max_connections {
            metrics::counter!("voxgate_sip_tcp_rejected_total").increment(1);
            drop(stream);
            continue;
        }
        let _ = stream.set_nodelay(true);
        let conn = ids.next();
        open.fetch_add(1, Ordering::Relaxed);
        let open = open.clone();
        let core = core.clone();
        let shutdown = shutdown.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            match tls {
                None => {
                    run_connection(stream, conn, from, Transport::Tcp, core, limits, shutdown)
                        .await;
                }
                Some(acceptor) => {
                    match tokio::time::timeout(CONNECT_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => {
                            run_connection(
                                stream,
                                conn,
                                from,
                                Transport::Tls,
                                core,
                                limits,
                                shutdown,
                            )
                            .await;
                        }
                        Ok(Err(e)) => {
                            metrics::counter!("voxgate_sip_tls_handshake_failed_total")
                                .increment(1);
                            tracing::debug!(%from, error = %e, "tls handshake failed");
                        }
                        Err(_) => {
                            metrics::counter!("voxgate_sip_tls_handshake_failed_total")
                                .increment(1);
                            tracing::debug!(%from, "tls handshake timed out");
                        }
                    }
                }
            }
            open.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

/// Opens the stream connections the core asks for (RFC 3261 §18.1.1: a request over a
/// reliable transport with no connection to its destination opens one). Each attempt ends
/// in [`Inbound::Opened`] or [`Inbound::ConnectFailed`], within [`CONNECT_TIMEOUT`].
#[derive(Clone)]
pub struct Connector {
    pub core: mpsc::Sender<Inbound>,
    pub ids: ConnIds,
    pub tls: TlsConnector,
    /// Host names for TLS destinations (SNI and certificate check), from the resolver.
    pub names: ServerNames,
    pub limits: StreamLimits,
    pub shutdown: watch::Receiver<bool>,
}

impl Connector {
    /// Starts opening a `transport` (TCP or TLS) connection to `addr`.
    pub fn connect(&self, transport: Transport, addr: SocketAddr) {
        let this = self.clone();
        tokio::spawn(async move {
            let conn = this.ids.next();
            let opened = tokio::time::timeout(CONNECT_TIMEOUT, async {
                let stream = TcpStream::connect(addr).await?;
                let _ = stream.set_nodelay(true);
                match transport {
                    Transport::Tls => {
                        let name =
                            super::tls::server_name(this.names.get(&addr).as_deref(), addr.ip());
                        let tls = this.tls.connect(name, stream).await?;
                        Ok::<_, std::io::Error>(Stream::Tls(Box::new(tls)))
                    }
                    _ => Ok(Stream::Tcp(stream)),
                }
            })
            .await;
            let stream = match opened {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::info!(%addr, ?transport, error = %e, "cannot open a SIP connection");
                    let _ = this
                        .core
                        .send(Inbound::ConnectFailed { transport, addr })
                        .await;
                    return;
                }
                Err(_) => {
                    tracing::info!(%addr, ?transport, "opening a SIP connection timed out");
                    let _ = this
                        .core
                        .send(Inbound::ConnectFailed { transport, addr })
                        .await;
                    return;
                }
            };
            let (core, limits, shutdown) = (this.core, this.limits, this.shutdown);
            match stream {
                Stream::Tcp(s) => {
                    run_connection(s, conn, addr, transport, core, limits, shutdown).await;
                }
                Stream::Tls(s) => {
                    run_connection(*s, conn, addr, transport, core, limits, shutdown).await;
                }
            }
        });
    }
}

enum Stream {
    Tcp(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

async fn run_connection<S>(
    stream: S,
    conn: u64,
    from: SocketAddr,
    transport: Transport,
    core: mpsc::Sender<Inbound>,
    limits: StreamLimits,
    mut shutdown: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (mut rd, mut wr) = tokio::io::split(stream);
    let (out_tx, mut out_rx) = mpsc::channel::<Bytes>(256);
    let out_ping = out_tx.clone();
    if core
        .send(Inbound::Opened {
            conn,
            from,
            transport,
            out: out_tx,
        })
        .await
        .is_err()
    {
        return;
    }
    let writer = tokio::spawn(async move {
        while let Some(bytes) = out_rx.recv().await {
            if wr.write_all(&bytes).await.is_err() || wr.flush().await.is_err() {
                break;
            }
        }
        let _ = wr.shutdown().await;
    });

    let mut framer = StreamFramer::new(FramerConfig {
        max_header_len: limits.max_message_bytes,
        max_body_len: limits.max_message_bytes,
    });
    let mut buf = vec![0u8; 16 * 1024];
    'read: loop {
        let n = tokio::select! {
            r = tokio::time::timeout(limits.idle_timeout, rd.read(&mut buf)) => match r {
                Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break 'read,
                Ok(Ok(n)) => n,
            },
            _ = shutdown.changed() => break 'read,
        };
        framer.push(&buf[..n]);
        while let Some(next) = framer.next_frame() {
            match next {
                // RFC 5626 §3.5.1: a double-CRLF ping gets a single-CRLF pong.
                Ok(Frame::Ping) => {
                    if out_ping.try_send(Bytes::from_static(b"\r\n")).is_err() {
                        break 'read;
                    }
                }
                Ok(Frame::Message(bytes)) => {
                    if core
                        .send(Inbound::Stream {
                            conn,
                            from,
                            transport,
                            bytes,
                        })
                        .await
                        .is_err()
                    {
                        break 'read;
                    }
                }
                Err(e) => {
                    tracing::debug!(%from, error = %e, "closing stream that broke SIP framing");
                    let _ = core.send(Inbound::Malformed { from, transport }).await;
                    break 'read;
                }
            }
        }
    }
    let _ = core.send(Inbound::Closed { conn }).await;
    writer.abort();
}
