//! Socket drivers: the TCP listener and its connections. (UDP is read by the core loop
//! itself, see `core.rs`, so that a burst of datagrams is drained per wake-up without a
//! channel hop.)
//!
//! A stream connection frames messages by Content-Length (`voxgate_sip::framing`) and hands
//! each framed message to the core, which parses and answers it; the core writes responses
//! back through the connection's outbound queue. TLS and WebSocket listeners will plug in at
//! the same seam: anything that yields framed `Bytes` plus a `ConnId` and accepts outbound
//! `Bytes`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use voxgate_sip::framing::{Frame, FramerConfig, StreamFramer};

/// What the transport tasks tell the core.
#[derive(Debug)]
pub enum Inbound {
    /// One framed message from a stream connection.
    Stream {
        conn: u64,
        from: SocketAddr,
        bytes: Bytes,
    },
    Opened {
        conn: u64,
        from: SocketAddr,
        out: mpsc::Sender<Bytes>,
    },
    Closed {
        conn: u64,
    },
    /// A connection broke framing (oversize, bad or missing Content-Length) and was closed.
    Malformed {
        from: SocketAddr,
    },
}

/// Limits applied per stream connection.
#[derive(Debug, Clone, Copy)]
pub struct StreamLimits {
    pub max_connections: usize,
    pub idle_timeout: Duration,
    pub max_message_bytes: usize,
}

/// Accepts TCP connections until shutdown.
pub async fn run_tcp_listener(
    listener: TcpListener,
    core: mpsc::Sender<Inbound>,
    limits: StreamLimits,
    mut shutdown: watch::Receiver<bool>,
) {
    let open = Arc::new(AtomicUsize::new(0));
    let mut next_id: u64 = 1;
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = shutdown.changed() => return,
        };
        let (stream, from) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // EMFILE and friends: back off briefly instead of spinning.
                tracing::warn!(error = %e, "tcp accept failed");
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
        let conn = next_id;
        next_id += 1;
        open.fetch_add(1, Ordering::Relaxed);
        let open = open.clone();
        let core = core.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            run_connection(stream, conn, from, core, limits, shutdown).await;
            open.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

async fn run_connection(
    stream: TcpStream,
    conn: u64,
    from: SocketAddr,
    core: mpsc::Sender<Inbound>,
    limits: StreamLimits,
    mut shutdown: watch::Receiver<bool>,
) {
    let (mut rd, mut wr) = stream.into_split();
    let (out_tx, mut out_rx) = mpsc::channel::<Bytes>(256);
    let out_ping = out_tx.clone();
    if core
        .send(Inbound::Opened {
            conn,
            from,
            out: out_tx,
        })
        .await
        .is_err()
    {
        return;
    }
    let writer = tokio::spawn(async move {
        while let Some(bytes) = out_rx.recv().await {
            if wr.write_all(&bytes).await.is_err() {
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
                        .send(Inbound::Stream { conn, from, bytes })
                        .await
                        .is_err()
                    {
                        break 'read;
                    }
                }
                Err(e) => {
                    tracing::debug!(%from, error = %e, "closing stream that broke SIP framing");
                    let _ = core.send(Inbound::Malformed { from }).await;
                    break 'read;
                }
            }
        }
    }
    let _ = core.send(Inbound::Closed { conn }).await;
    writer.abort();
}
