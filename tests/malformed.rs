//! Garbage on the SIP listeners, over UDP and TCP, must leave voxgate alive and serving:
//! afterwards a valid REGISTER (raw from this test, and from SIPp) still gets its 401 on
//! both transports, and `/metrics` counts the junk in `voxgate_sip_malformed_total`.
//! Everything is sent to 127.0.0.1 only, every loop and every wait is bounded.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "common/sipp.rs"]
mod sipp;

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use common::Gateway;
use sipp::{SipResponse, Sipp, Transport};

/// Deterministic bytes (xorshift64*), so a failure can be replayed.
struct Junk(u64);

impl Junk {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| (self.next() >> 32) as u8).collect()
    }
}

fn register_head(transport: &str, local: SocketAddr, call_id: Option<&str>, extra: &str) -> String {
    let branch = format!("z9hG4bK-junk-{}-{}", local.port(), extra.len());
    let call_id = call_id.map_or_else(String::new, |c| format!("Call-ID: {c}\r\n"));
    format!(
        "REGISTER sip:127.0.0.1 SIP/2.0\r\n\
         Via: SIP/2.0/{transport} {local};branch={branch};rport\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:alice@127.0.0.1>;tag=junk1\r\n\
         To: <sip:alice@127.0.0.1>\r\n\
         {call_id}\
         CSeq: 1 REGISTER\r\n\
         Contact: <sip:alice@{local}>\r\n\
         Expires: 3600\r\n\
         {extra}"
    )
}

/// The junk, as whole messages (each one datagram, or one TCP stream).
fn junk_messages(transport: &str, local: SocketAddr, max: usize) -> Vec<Vec<u8>> {
    let mut rng = Junk(0x5eed_cafe_f00d_d00d);
    let mut out: Vec<Vec<u8>> = Vec::new();
    // Random bytes, many sizes; and with a plausible first line.
    for i in 0..40 {
        let n = 1 + (rng.next() as usize % 1400);
        let mut b = rng.bytes(n);
        if i % 4 == 0 {
            let mut m = b"REGISTER sip:127.0.0.1 SIP/2.0\r\n".to_vec();
            m.append(&mut b);
            b = m;
        }
        out.push(b);
    }
    out.push(Vec::new()); // empty datagram
    out.push(vec![0u8; 512]); // only NULs
    out.push(b"\r\n".to_vec());
    out.push(b"\r\n\r\n\r\n\r\n\r\n\r\n".to_vec());
    out.push(b"\r\n".repeat(2000));
    // Truncated: Content-Length larger than the body.
    out.push(
        format!(
            "{}Content-Length: 500\r\n\r\nv=0\r\no=",
            register_head(
                transport,
                local,
                Some("junk-trunc"),
                "Content-Type: application/sdp\r\n"
            )
        )
        .into_bytes(),
    );
    // Bad Content-Length values.
    for cl in [
        "-1",
        "abc",
        "99999999999",
        "18446744073709551616",
        "1 2",
        "",
        "0x10",
        "+5",
    ] {
        out.push(
            format!(
                "{}Content-Length: {cl}\r\n\r\n",
                register_head(transport, local, Some(&format!("junk-cl-{cl}")), "")
            )
            .into_bytes(),
        );
    }
    // Two Content-Length headers that disagree.
    out.push(
        format!(
            "{}Content-Length: 0\r\nContent-Length: 10\r\n\r\n0123456789",
            register_head(transport, local, Some("junk-cl-twice"), "")
        )
        .into_bytes(),
    );
    // NUL bytes inside headers.
    let mut nul =
        register_head(transport, local, Some("junk-nul\0id"), "X-Nul: a\0b\0c\r\n").into_bytes();
    nul.extend_from_slice(b"Content-Length: 0\r\n\r\n");
    out.push(nul);
    // Valid-looking but missing Call-ID; missing Via; missing CSeq method.
    out.push(
        format!(
            "{}Content-Length: 0\r\n\r\n",
            register_head(transport, local, None, "")
        )
        .into_bytes(),
    );
    out.push(
        b"REGISTER sip:127.0.0.1 SIP/2.0\r\nFrom: <sip:a@127.0.0.1>;tag=1\r\nTo: <sip:a@127.0.0.1>\r\n\
          Call-ID: junk-novia\r\nCSeq: 1 REGISTER\r\nContent-Length: 0\r\n\r\n"
            .to_vec(),
    );
    out.push(
        format!(
            "{}Content-Length: 0\r\nCSeq: banana\r\n\r\n",
            register_head(transport, local, Some("junk-cseq"), "")
        )
        .into_bytes(),
    );
    // Broken start lines and header syntax; a stray response; invalid UTF-8.
    out.push(b"REGISTER\r\n\r\n".to_vec());
    out.push(b"REGISTER sip:127.0.0.1 SIP/9.9\r\n\r\n".to_vec());
    out.push(b" SIP/2.0 200 OK\r\n\r\n".to_vec());
    out.push(b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:1;branch=z9hG4bKnone\r\nCSeq: 1 REGISTER\r\nCall-ID: x\r\nContent-Length: 0\r\n\r\n".to_vec());
    out.push(b"SIP/2.0 999999999999 Huge\r\n\r\n".to_vec());
    out.push(
        format!(
            "{}NoColonHere\r\nContent-Length: 0\r\n\r\n",
            register_head(transport, local, Some("junk-nocolon"), "")
        )
        .into_bytes(),
    );
    let mut utf = register_head(transport, local, Some("junk-utf8"), "").into_bytes();
    utf.extend_from_slice(b"X-Bad: \xff\xfe\xc3\x28\r\nContent-Length: 0\r\n\r\n");
    out.push(utf);
    out.push(
        format!(
            "REGISTER sip:{}@127.0.0.1 SIP/2.0\r\n\r\n",
            "u".repeat(20_000)
        )
        .into_bytes(),
    );
    // Huge header section: ~70 KB (UDP: as much as one datagram carries).
    let filler = "X-Filler: ".to_owned() + &"y".repeat(990) + "\r\n";
    let mut huge = register_head(transport, local, Some("junk-huge"), "");
    while huge.len() + filler.len() + 32 < max {
        huge.push_str(&filler);
    }
    huge.push_str("Content-Length: 0\r\n\r\n");
    out.push(huge.into_bytes());
    out.retain(|m| m.len() <= max);
    out
}

/// A well-formed REGISTER without credentials.
fn valid_register(transport: &str, local: SocketAddr, call_id: &str) -> Vec<u8> {
    format!(
        "{}User-Agent: voxgate-tests\r\nContent-Length: 0\r\n\r\n",
        register_head(transport, local, Some(call_id), "")
    )
    .into_bytes()
}

fn udp_register_gets_401(sip: SocketAddr) -> Result<SipResponse, String> {
    let sock = UdpSocket::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let local = sock.local_addr().map_err(|e| e.to_string())?;
    sock.set_read_timeout(Some(Duration::from_millis(500)))
        .map_err(|e| e.to_string())?;
    let msg = valid_register("UDP", local, &format!("after-junk-udp-{}", local.port()));
    let mut buf = vec![0u8; 65_535];
    // RFC 3261 retransmits (T1 = 500 ms); a few seconds in all.
    for _ in 0..8 {
        sock.send_to(&msg, sip).map_err(|e| e.to_string())?;
        let until = Instant::now() + Duration::from_millis(500);
        while Instant::now() < until {
            match sock.recv_from(&mut buf) {
                Ok((n, from)) if from == sip => {
                    let text = String::from_utf8_lossy(&buf[..n]);
                    let r = SipResponse::parse(&text)
                        .ok_or_else(|| format!("not a response: {text}"))?;
                    if r.status >= 200 {
                        return Ok(r);
                    }
                }
                Ok(_) => {}
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => break,
                Err(e) => return Err(e.to_string()),
            }
        }
    }
    Err("no final response over UDP within 4 s".into())
}

fn tcp_register_gets_401(sip: SocketAddr) -> Result<SipResponse, String> {
    let mut s =
        TcpStream::connect_timeout(&sip, Duration::from_secs(2)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(Duration::from_secs(2)))
        .map_err(|e| e.to_string())?;
    let local = s.local_addr().map_err(|e| e.to_string())?;
    s.write_all(&valid_register(
        "TCP",
        local,
        &format!("after-junk-tcp-{}", local.port()),
    ))
    .map_err(|e| e.to_string())?;
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut got = Vec::new();
    let mut buf = [0u8; 8192];
    while Instant::now() < deadline && got.len() < 1 << 20 {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                got.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&got).into_owned();
                // Responses on the stream, skipping any provisional ones.
                for part in text.split("\r\n\r\n") {
                    if let Some(r) = SipResponse::parse(part) {
                        if r.status >= 200 {
                            return Ok(r);
                        }
                    }
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) => return Err(e.to_string()),
        }
    }
    Err(format!(
        "no final response over TCP within 5 s; got {:?}",
        String::from_utf8_lossy(&got)
    ))
}

/// Write `data` and close, tolerating the server closing first; bounded.
fn tcp_send_and_close(sip: SocketAddr, data: &[u8]) {
    let Ok(mut s) = TcpStream::connect_timeout(&sip, Duration::from_secs(2)) else {
        return; // refusing a connection is allowed; staying alive is what is checked
    };
    let _ = s.set_write_timeout(Some(Duration::from_secs(2)));
    let _ = s.set_read_timeout(Some(Duration::from_millis(100)));
    let _ = s.write_all(data);
    let _ = s.shutdown(Shutdown::Write);
    // Drain whatever the server answers (a 400, or nothing) for a moment.
    let mut buf = [0u8; 4096];
    let until = Instant::now() + Duration::from_millis(300);
    while Instant::now() < until {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
}

/// A header line that never ends: stream up to 8 MiB or 5 s, whichever first. Returns
/// how many bytes our side could write, and whether the server then closed the
/// connection (EOF or reset within 5 s) instead of buffering the line without bound.
fn tcp_endless_header(sip: SocketAddr) -> (usize, bool) {
    let mut s = TcpStream::connect_timeout(&sip, Duration::from_secs(2))
        .expect("connect for the endless header");
    let _ = s.set_write_timeout(Some(Duration::from_millis(500)));
    let local = s.local_addr().expect("local addr");
    let mut sent = 0;
    let head = register_head("TCP", local, Some("junk-endless"), "X-Endless: ");
    if s.write_all(head.as_bytes()).is_ok() {
        let chunk = vec![b'z'; 64 * 1024];
        let deadline = Instant::now() + Duration::from_secs(5);
        while sent < 8 << 20 && Instant::now() < deadline {
            match s.write(&chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => sent += n,
            }
        }
    }
    let _ = s.set_read_timeout(Some(Duration::from_millis(100)));
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) => return (sent, true),
            Ok(_) => {} // a 400/413 before closing is fine
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return (sent, true), // reset
        }
    }
    (sent, false)
}

async fn malformed_total(gw: &Gateway) -> (f64, f64, String) {
    let r = gw
        .client()
        .get(format!("{}/metrics", gw.api_url))
        .send()
        .await
        .expect("GET /metrics");
    assert!(r.status().is_success(), "GET /metrics: {}", r.status());
    let text = r.text().await.expect("metrics body");
    let (mut udp, mut tcp) = (0.0, 0.0);
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("voxgate_sip_malformed_total") else {
            continue;
        };
        let value: f64 = rest
            .rsplit(' ')
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        if rest.contains("transport=\"udp\"") {
            udp += value;
        } else if rest.contains("transport=\"tcp\"") {
            tcp += value;
        }
    }
    (udp, tcp, text)
}

fn assert_alive(gw: &Gateway) {
    let pid = gw.pid().expect("gateway has a process");
    assert!(
        std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "voxgate (pid {pid}) is gone"
    );
}

#[tokio::test]
async fn junk_on_udp_and_tcp_leaves_the_gateway_serving() {
    let mut gw = Gateway::start().await;
    let sip: SocketAddr = format!("127.0.0.1:{}", gw.sip_port).parse().expect("addr");

    // --- UDP: every junk datagram three times, from one socket. ---
    let udp = UdpSocket::bind("127.0.0.1:0").expect("udp socket");
    let local = udp.local_addr().expect("local addr");
    let datagrams = junk_messages("UDP", local, 65_000);
    let mut sent = 0;
    for _ in 0..3 {
        for d in &datagrams {
            // A send error (the datagram too big for the kernel) is not the gateway's doing.
            if udp.send_to(d, sip).is_ok() {
                sent += 1;
            }
        }
    }
    assert!(sent > 100, "only {sent} junk datagrams could be sent");

    // --- TCP: a connection that stays silent for the whole test. ---
    let silent =
        TcpStream::connect_timeout(&sip, Duration::from_secs(2)).expect("silent TCP connection");

    // Each junk message on its own connection, then closed.
    let tcp_local: SocketAddr = "127.0.0.1:5999".parse().expect("addr");
    for m in junk_messages("TCP", tcp_local, 80_000) {
        tcp_send_and_close(sip, &m);
    }
    // All the junk back to back on one connection.
    let all: Vec<u8> = junk_messages("TCP", tcp_local, 4_000).concat();
    tcp_send_and_close(sip, &all);
    // Half a message, then close.
    let half = valid_register("TCP", tcp_local, "junk-half");
    tcp_send_and_close(sip, &half[..half.len() / 2]);
    // A valid message followed by garbage on the same stream.
    let mut pipelined = valid_register("TCP", tcp_local, "junk-pipelined");
    pipelined.extend_from_slice(&Junk(7).bytes(3000));
    tcp_send_and_close(sip, &pipelined);
    // A header line that never ends.
    let (written, closed) = tcp_endless_header(sip);
    eprintln!("endless header: {written} bytes written before the stream ended (closed: {closed})");
    assert!(
        closed,
        "a header line past sip.max_message_bytes must get the connection closed; \
         it stayed open after {written} bytes"
    );
    // Many connections opened and dropped at once.
    let burst: Vec<TcpStream> = (0..50)
        .filter_map(|_| TcpStream::connect_timeout(&sip, Duration::from_secs(1)).ok())
        .collect();
    drop(burst);

    // --- Still alive and serving, on both transports, with the silent one still open. ---
    assert_alive(&gw);
    let r = udp_register_gets_401(sip).unwrap_or_else(|e| {
        gw.dump_logs();
        panic!("after the junk, a raw REGISTER over UDP: {e}")
    });
    assert_eq!(r.status, 401, "raw UDP REGISTER after junk:\n{}", r.raw);
    let r = tcp_register_gets_401(sip).unwrap_or_else(|e| {
        gw.dump_logs();
        panic!("after the junk, a raw REGISTER over TCP: {e}")
    });
    assert_eq!(r.status, 401, "raw TCP REGISTER after junk:\n{}", r.raw);
    for t in Transport::ALL {
        Sipp::new("challenge.xml")
            .transport(t)
            .service("alice")
            .run(gw.sip_port)
            .assert_success();
    }
    let health = gw
        .client()
        .get(format!("{}/healthz", gw.api_url))
        .send()
        .await
        .expect("GET /healthz");
    assert!(health.status().is_success(), "/healthz {}", health.status());

    // --- Counted. ---
    let (udp_count, tcp_count, text) = malformed_total(&gw).await;
    assert!(
        text.contains("voxgate_sip_malformed_total"),
        "/metrics has no voxgate_sip_malformed_total:\n{text}"
    );
    assert!(udp_count > 0.0, "no malformed UDP counted:\n{text}");
    assert!(tcp_count > 0.0, "no malformed TCP counted:\n{text}");

    drop(silent);
    assert_alive(&gw);
    // And it still shuts down cleanly.
    let status = gw.stop().await;
    assert!(
        status.success(),
        "voxgate exited with {status} on SIGTERM after the junk"
    );
}
