//! SIP over TLS against real peers, with certificates made here by the openssl CLI (a CA
//! and a leaf for `voxgate.test` / 127.0.0.1 signed by it):
//!
//! - `agents_register_and_call_over_tls`: voxgate with `sip.listen_tls` and the leaf,
//!   everything else default; two baresip softphones register over TLS
//!   (`;transport=tls`, trusting the CA), alice calls bob through voxgate, bob
//!   auto-answers, each hears the other's sentence (see `tests/audio.rs` for the measure).
//! - `connector_opens_tls_to_a_real_server`: the connector voxgate uses for outbound
//!   TCP/TLS against `openssl s_server`: SIP both ways over the connection when the name and
//!   CA match; a failure report (never a hang) for a wrong name, an untrusted CA and a
//!   closed port.
//! - `check_config_names_bad_tls_files`: `voxgate check-config` names `sip.tls_cert` /
//!   `sip.tls_key` when they are missing, unreadable or not PEM.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/baresip.rs"]
mod baresip;
mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};

use baresip::compare::{compare, resample};
use baresip::{read_wav, speech_wav, Baresip, PhoneConfig};
use common::{free_tcp_port, Gateway};
use serde_json::{json, Value};
use tokio::sync::{mpsc, watch};
use voxgate::sip::resolve::ServerNames;
use voxgate::sip::tls;
use voxgate::sip::transport::{ConnIds, Connector, Inbound, StreamLimits};
use voxgate_sip::transaction::Transport;

const SENTENCE_ALICE: &str = "The quick brown fox jumps over the lazy dog near the river bank.";
const SENTENCE_BOB: &str = "Seven silver ships sailed quietly into the harbour at midnight.";

/// A CA and a server certificate it signed, as PEM files.
struct Certs {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl (scripts/install-test-deps.sh installs it)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA, and a leaf for DNS `voxgate.test` and IP 127.0.0.1 signed by it.
fn make_certs(dir: &Path) -> Certs {
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];
    let mut args = vec!["req", "-x509", "-nodes", "-days", "2"];
    args.extend(ec);
    args.extend([
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-subj",
        "/CN=voxgate test CA",
    ]);
    openssl(dir, &args);
    let mut args = vec!["req", "-new", "-nodes"];
    args.extend(ec);
    args.extend([
        "-keyout",
        "leaf.key",
        "-out",
        "leaf.csr",
        "-subj",
        "/CN=voxgate.test",
    ]);
    openssl(dir, &args);
    std::fs::write(
        dir.join("leaf.ext"),
        "basicConstraints=critical,CA:FALSE\n\
         keyUsage=critical,digitalSignature\n\
         extendedKeyUsage=serverAuth,clientAuth\n\
         subjectAltName=DNS:voxgate.test,IP:127.0.0.1\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "leaf.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "leaf.ext",
            "-out",
            "leaf.pem",
        ],
    );
    Certs {
        ca: dir.join("ca.pem"),
        cert: dir.join("leaf.pem"),
        key: dir.join("leaf.key"),
    }
}

fn tempdir(prefix: &str) -> tempfile::TempDir {
    tempfile::Builder::new().prefix(prefix).tempdir().unwrap()
}

async fn create_agent(gw: &Gateway, username: &str, password: &str) {
    gw.create_agent(json!({ "username": username, "password": password }))
        .await;
}

/// Waits (bounded) for the agent to be `available`; returns the agent's JSON.
async fn wait_available(gw: &Gateway, phone: &Baresip, username: &str) -> Value {
    gw.wait_agent_available(username, Duration::from_secs(15), || {
        format!("baresip events: {:?}\n{}", phone.events(), phone.log())
    })
    .await
}

fn check_heard(listener: &Baresip, sent: &Path, not_sent: &Path, label: &str) {
    let rec = listener
        .received_wav()
        .unwrap_or_else(|e| panic!("{label}: {e}"));
    let (reference, rate) = read_wav(sent);
    let (control_ref, _) = read_wav(not_sent);
    let (received, rx_rate) = read_wav(&rec);
    let received = resample(&received, rx_rate, rate);
    let m = compare(&reference, &received, rate, 2.0);
    let control = compare(&control_ref, &received, rate, 2.0);
    eprintln!("{label}: {m}\n  control: {control}");
    assert!(m.coverage >= 0.95, "{label}: sentence not covered: {m}");
    assert!(m.windowed_ncc >= 0.85, "{label}: audio does not match: {m}");
    assert!(
        m.windowed_ncc - control.windowed_ncc >= 0.3,
        "{label}: {m} not clearly above the control {control}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_register_and_call_over_tls() {
    let dir = tempdir("voxgate-tls-");
    let certs = make_certs(dir.path());
    let tls_port = free_tcp_port();
    let listen = format!("127.0.0.1:{tls_port}");
    let gw = Gateway::start_with(
        &[
            ("VOXGATE_SIP_LISTEN_TLS", listen.as_str()),
            ("VOXGATE_SIP_TLS_CERT", certs.cert.to_str().unwrap()),
            ("VOXGATE_SIP_TLS_KEY", certs.key.to_str().unwrap()),
        ],
        None,
    )
    .await;
    create_agent(&gw, "alice", "alicepass1").await;
    create_agent(&gw, "bob", "bobpass123").await;
    let alice_wav = speech_wav(dir.path(), "alice", SENTENCE_ALICE, 0.5, 1.5);
    let bob_wav = speech_wav(dir.path(), "bob", SENTENCE_BOB, 0.5, 1.5);
    let extra = format!("sip_cafile\t\t{}\n", certs.ca.display());
    let aor = |user: &str| format!("sip:{user}@127.0.0.1:{tls_port};transport=tls");
    let mut bob = Baresip::start_with(
        &PhoneConfig {
            name: "bob".into(),
            aor: aor("bob"),
            password: Some("bobpass123".into()),
            regint: 600,
            source_wav: bob_wav.clone(),
        },
        &extra,
    );
    let mut alice = Baresip::start_with(
        &PhoneConfig {
            name: "alice".into(),
            aor: aor("alice"),
            password: Some("alicepass1".into()),
            regint: 600,
            source_wav: alice_wav.clone(),
        },
        &extra,
    );
    for (phone, name) in [(&bob, "bob"), (&alice, "alice")] {
        let agent = wait_available(&gw, phone, name).await;
        let regs = agent["registrations"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert!(
            !regs.is_empty() && regs.iter().all(|r| r["transport"] == json!("tls")),
            "{name} is not registered over TLS: {agent}"
        );
    }

    let uri = format!("sip:bob@127.0.0.1:{tls_port};transport=tls");
    let context = || format!("----- voxgate log -----\n{}", gw.log());
    tokio::task::block_in_place(|| {
        alice
            .dial(&uri)
            .unwrap_or_else(|e| panic!("dial {uri}: {e}\n{}", context()));
        let first = alice
            .wait_any_event(
                &["CALL_ESTABLISHED", "CALL_CLOSED"],
                Duration::from_secs(15),
            )
            .unwrap_or_else(|e| panic!("alice: no answer: {e}\n{}", context()));
        assert_eq!(
            first["type"],
            json!("CALL_ESTABLISHED"),
            "alice: the call ended before being answered: {first}\n{}",
            context()
        );
        bob.wait_event("CALL_ESTABLISHED", Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("bob: no established call: {e}\n{}", context()));
        // Each phone's aufile source hangs up at the end of its sentence (~5 s).
        let alice_closed = alice.wait_event("CALL_CLOSED", Duration::from_secs(20));
        let bob_closed = bob.wait_event("CALL_CLOSED", Duration::from_secs(5));
        if alice_closed.is_err() {
            let _ = alice.hangup();
        }
        if bob_closed.is_err() {
            let _ = bob.hangup();
        }
        alice_closed.unwrap_or_else(|e| panic!("alice: call not closed: {e}\n{}", context()));
        bob_closed.unwrap_or_else(|e| panic!("bob: call not closed: {e}\n{}", context()));
        check_heard(&bob, &alice_wav, &bob_wav, "over TLS: bob hears alice");
        check_heard(&alice, &bob_wav, &alice_wav, "over TLS: alice hears bob");
    });

    // bob's phone dies (killed: no un-REGISTER). Its binding lives on, but the TLS
    // connection it registered on is the only way to reach it: a call to bob is answered
    // 480 at once, voxgate does not try to open a connection to the phone's source port.
    drop(bob);
    wait_metric(&gw, "voxgate_sip_stream_connections", 1.0).await;
    tokio::task::block_in_place(|| {
        let started = Instant::now();
        alice
            .dial(&uri)
            .unwrap_or_else(|e| panic!("dial {uri}: {e}\n{}", context()));
        let closed = alice
            .wait_event_where(
                "CALL_CLOSED",
                |m| m["param"].as_str().is_some_and(|p| p.contains("480")),
                Duration::from_secs(5),
            )
            .unwrap_or_else(|e| panic!("alice: no 480 for bob offline: {e}\n{}", context()));
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "480 after {:?}: {closed}",
            started.elapsed()
        );
    });
    let log = gw.log();
    assert!(
        !log.contains("cannot open a SIP connection"),
        "voxgate tried to open a connection to the dead phone:\n{log}"
    );
    alice.stop();
}

/// Polls `/metrics` (bounded) until the gauge `name` reads `want`.
async fn wait_metric(gw: &Gateway, name: &str, want: f64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last = None;
    while Instant::now() < deadline {
        let text = gw
            .client()
            .get(gw.url("/metrics"))
            .send()
            .await
            .expect("GET /metrics")
            .text()
            .await
            .unwrap_or_default();
        last = text
            .lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok());
        if last == Some(want) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{name} is {last:?}, not {want}, after 10 s");
}

/// `openssl s_server` on a loopback port with the leaf: prints what it receives, sends
/// what is written to its stdin.
struct SServer {
    child: Child,
    port: u16,
    lines: std_mpsc::Receiver<String>,
}

impl SServer {
    fn start(certs: &Certs) -> SServer {
        let port = free_tcp_port();
        let mut child = Command::new("openssl")
            .args(["s_server", "-quiet", "-accept"])
            .arg(format!("127.0.0.1:{port}"))
            .arg("-cert")
            .arg(&certs.cert)
            .arg("-key")
            .arg(&certs.key)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn openssl s_server");
        let (tx, lines) = std_mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        // Listening once a plain TCP connect succeeds (bounded).
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "s_server not listening on {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        SServer { child, port, lines }
    }

    fn wait_line(&self, want: &str) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut seen = Vec::new();
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(want) => return Ok(()),
                Ok(line) => seen.push(line),
                Err(_) => break,
            }
        }
        Err(format!("s_server never printed {want:?}; printed {seen:?}"))
    }
}

impl Drop for SServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn connector(
    ca: Option<&Path>,
    names: &ServerNames,
) -> (Connector, mpsc::Receiver<Inbound>, watch::Sender<bool>) {
    connector_verifying(ca, true, names)
}

fn connector_verifying(
    ca: Option<&Path>,
    verify: bool,
    names: &ServerNames,
) -> (Connector, mpsc::Receiver<Inbound>, watch::Sender<bool>) {
    let (core, inbound) = mpsc::channel(64);
    let (stop, shutdown) = watch::channel(false);
    let c = Connector {
        core,
        ids: ConnIds::default(),
        tls: tokio_rustls::TlsConnector::from(tls::client_config(ca, verify).unwrap()),
        names: names.clone(),
        limits: StreamLimits {
            max_connections: 16,
            idle_timeout: Duration::from_secs(30),
            max_message_bytes: 65535,
        },
        shutdown,
    };
    (c, inbound, stop)
}

async fn next(inbound: &mut mpsc::Receiver<Inbound>) -> Inbound {
    // CONNECT_TIMEOUT is 10 s: every attempt reports within it.
    tokio::time::timeout(Duration::from_secs(15), inbound.recv())
        .await
        .expect("the connector reported nothing (a hang)")
        .expect("connector channel open")
}

const OPTIONS: &str = "OPTIONS sip:carrier.test SIP/2.0\r\n\
Via: SIP/2.0/TLS 127.0.0.1:5061;branch=z9hG4bKtls1;rport\r\n\
From: <sip:voxgate@127.0.0.1>;tag=1\r\nTo: <sip:carrier.test>\r\n\
Call-ID: tls-test-1\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connector_opens_tls_to_a_real_server() {
    let dir = tempdir("voxgate-tls-conn-");
    let certs = make_certs(dir.path());
    let mut server = SServer::start(&certs);
    let addr: std::net::SocketAddr = format!("127.0.0.1:{}", server.port).parse().unwrap();
    let names = ServerNames::default();

    // The name the resolver recorded is the one checked (and sent as SNI).
    names.set(addr, "voxgate.test".into());
    let (c, mut inbound, _stop) = connector(Some(&certs.ca), &names);
    c.connect(Transport::Tls, addr);
    let Inbound::Opened {
        conn,
        from,
        transport,
        out,
    } = next(&mut inbound).await
    else {
        panic!("expected an open connection");
    };
    assert_eq!((from, transport), (addr, Transport::Tls));
    out.send(bytes::Bytes::from_static(OPTIONS.as_bytes()))
        .await
        .unwrap();
    server
        .wait_line("Call-ID: tls-test-1")
        .expect("the request arrived over TLS");
    // The server answers on the same connection: framed and handed up as one message.
    let response = "SIP/2.0 200 OK\r\n\
Via: SIP/2.0/TLS 127.0.0.1:5061;branch=z9hG4bKtls1;rport\r\n\
From: <sip:voxgate@127.0.0.1>;tag=1\r\nTo: <sip:carrier.test>;tag=2\r\n\
Call-ID: tls-test-1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n";
    let stdin = server.child.stdin.as_mut().unwrap();
    stdin.write_all(response.as_bytes()).unwrap();
    stdin.flush().unwrap();
    match next(&mut inbound).await {
        Inbound::Stream {
            conn: c2,
            transport: Transport::Tls,
            bytes,
            ..
        } => {
            assert_eq!(c2, conn);
            let text = String::from_utf8_lossy(&bytes);
            assert!(text.starts_with("SIP/2.0 200 OK"), "{text}");
        }
        other => panic!("expected the 200 OK, got {other:?}"),
    }
    drop(out);
    drop(server);
    match next(&mut inbound).await {
        Inbound::Closed { conn: c3 } => assert_eq!(c3, conn),
        other => panic!("expected the connection closed by the server, got {other:?}"),
    }

    // A certificate that does not name the destination: a failure, reported.
    let server = SServer::start(&certs);
    let addr: std::net::SocketAddr = format!("127.0.0.1:{}", server.port).parse().unwrap();
    names.set(addr, "carrier.example".into());
    c.connect(Transport::Tls, addr);
    match next(&mut inbound).await {
        Inbound::ConnectFailed {
            transport: Transport::Tls,
            addr: a,
        } => assert_eq!(a, addr),
        other => panic!("a wrong name must fail the connection, got {other:?}"),
    }

    // Without the test CA (the web roots only): the self-made chain is not trusted.
    let (strict, mut strict_inbound, _stop2) = connector(None, &names);
    names.set(addr, "voxgate.test".into());
    strict.connect(Transport::Tls, addr);
    assert!(
        matches!(
            next(&mut strict_inbound).await,
            Inbound::ConnectFailed { .. }
        ),
        "an untrusted CA must fail the connection"
    );
    // sip.tls_verify = false: the same misnamed, untrusted certificate is accepted.
    let (lax, mut lax_inbound, _stop3) = connector_verifying(None, false, &names);
    names.set(addr, "carrier.example".into());
    lax.connect(Transport::Tls, addr);
    assert!(
        matches!(next(&mut lax_inbound).await, Inbound::Opened { .. }),
        "tls_verify = false accepts any certificate"
    );
    drop(server);

    // Nothing listening: refused, reported at once.
    let closed: std::net::SocketAddr = format!("127.0.0.1:{}", free_tcp_port()).parse().unwrap();
    for transport in [Transport::Tcp, Transport::Tls] {
        c.connect(transport, closed);
        match next(&mut inbound).await {
            Inbound::ConnectFailed { transport: t, addr } => {
                assert_eq!((t, addr), (transport, closed));
            }
            other => panic!("a refused connection must be reported, got {other:?}"),
        }
    }
}

fn check_config(env: &[(&str, &str)]) -> (bool, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_voxgate"));
    cmd.arg("check-config");
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("VOXGATE_") {
            cmd.env_remove(k);
        }
    }
    let dir = tempdir("voxgate-tls-cc-");
    cmd.current_dir(dir.path()).envs(env.iter().copied());
    let out = cmd.output().expect("run voxgate check-config");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_config_names_bad_tls_files() {
    let dir = tempdir("voxgate-tls-files-");
    let certs = make_certs(dir.path());
    let not_pem = dir.path().join("not.pem");
    std::fs::write(&not_pem, "hello\n").unwrap();
    let cert = certs.cert.to_str().unwrap();
    let key = certs.key.to_str().unwrap();
    let listen = ("VOXGATE_SIP_LISTEN_TLS", "127.0.0.1:5061");

    let (ok, err) = check_config(&[
        listen,
        ("VOXGATE_SIP_TLS_CERT", cert),
        ("VOXGATE_SIP_TLS_KEY", key),
    ]);
    assert!(ok, "a good certificate and key: {err}");

    let (ok, err) = check_config(&[listen, ("VOXGATE_SIP_TLS_KEY", key)]);
    assert!(!ok && err.contains("sip.tls_cert"), "no certificate: {err}");
    let (ok, err) = check_config(&[
        listen,
        ("VOXGATE_SIP_TLS_CERT", "/nonexistent/cert.pem"),
        ("VOXGATE_SIP_TLS_KEY", key),
    ]);
    assert!(!ok && err.contains("sip.tls_cert"), "missing file: {err}");
    let (ok, err) = check_config(&[
        listen,
        ("VOXGATE_SIP_TLS_CERT", not_pem.to_str().unwrap()),
        ("VOXGATE_SIP_TLS_KEY", key),
    ]);
    assert!(!ok && err.contains("sip.tls_cert"), "not PEM: {err}");
    let (ok, err) = check_config(&[
        listen,
        ("VOXGATE_SIP_TLS_CERT", cert),
        ("VOXGATE_SIP_TLS_KEY", not_pem.to_str().unwrap()),
    ]);
    assert!(!ok && err.contains("sip.tls_key"), "key not PEM: {err}");
    let (ok, err) = check_config(&[("VOXGATE_SIP_TLS_CA", not_pem.to_str().unwrap())]);
    assert!(!ok && err.contains("sip.tls_ca"), "CA not PEM: {err}");
    let (ok, err) = check_config(&[("VOXGATE_SIP_TLS_CA", certs.ca.to_str().unwrap())]);
    assert!(ok, "a good CA: {err}");
    // The key of another certificate.
    let (ok, err) = check_config(&[
        listen,
        ("VOXGATE_SIP_TLS_CERT", cert),
        (
            "VOXGATE_SIP_TLS_KEY",
            dir.path().join("ca.key").to_str().unwrap(),
        ),
    ]);
    assert!(!ok && err.contains("sip.tls_key"), "mismatched key: {err}");
}

async fn post_json(gw: &Gateway, path: &str, body: Value) -> Value {
    let r = gw
        .client()
        .post(gw.url(path))
        .json(&body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST {path}: {e}"));
    let status = r.status();
    let text = r.text().await.unwrap_or_default();
    assert!(status.is_success(), "POST {path} {body}: {status} {text}");
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

/// Polls a call until its status is final.
async fn final_status(gw: &Gateway, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let call: Value = gw
            .client()
            .get(gw.url(&format!("/v1/calls/{id}")))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let status = call["status"].as_str().unwrap_or_default();
        if !["queued", "ringing", "in-progress"].contains(&status) {
            return call;
        }
        assert!(Instant::now() < deadline, "call {id} not ended: {call:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Click-to-call with TLS on both legs: the agent's baresip registers over TLS, the
/// carrier is a baresip answering on TLS with a certificate voxgate checks against the
/// test CA (`sip.tls_ca`); voxgate opens the trunk's TLS connection itself. Speech
/// crosses both ways.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn click_to_call_over_a_tls_trunk() {
    let dir = tempdir("voxgate-tls-trunk-");
    let certs = make_certs(dir.path());
    // baresip serves the leaf (valid for 127.0.0.1) from one PEM with its key.
    let combined = dir.path().join("carrier.pem");
    let mut pem = std::fs::read(&certs.cert).unwrap();
    pem.extend(std::fs::read(&certs.key).unwrap());
    std::fs::write(&combined, pem).unwrap();
    let tls_port = free_tcp_port();
    let listen = format!("127.0.0.1:{tls_port}");
    let gw = Gateway::start_with(
        &[
            ("VOXGATE_SIP_LISTEN_TLS", listen.as_str()),
            ("VOXGATE_SIP_TLS_CERT", certs.cert.to_str().unwrap()),
            ("VOXGATE_SIP_TLS_KEY", certs.key.to_str().unwrap()),
            ("VOXGATE_SIP_TLS_CA", certs.ca.to_str().unwrap()),
        ],
        None,
    )
    .await;
    create_agent(&gw, "alice", "alicepass1").await;
    // The agent answers first and talks into the void until the lead answers: a long
    // lead-in of silence keeps her sentence whole for the lead.
    let alice_wav = speech_wav(dir.path(), "alice", SENTENCE_ALICE, 2.0, 1.5);
    let lead_wav = speech_wav(dir.path(), "lead", SENTENCE_BOB, 0.5, 3.0);
    let cafile = format!("sip_cafile\t\t{}\n", certs.ca.display());
    let alice = Baresip::start_with(
        &PhoneConfig {
            name: "alice".into(),
            aor: format!("sip:alice@127.0.0.1:{tls_port};transport=tls"),
            password: Some("alicepass1".into()),
            regint: 600,
            source_wav: alice_wav.clone(),
        },
        &cafile,
    );
    let carrier = Baresip::start_with(
        &PhoneConfig {
            name: "carrier".into(),
            aor: "sip:+14155550100@127.0.0.1".into(),
            password: None,
            regint: 0,
            source_wav: lead_wav.clone(),
        },
        &format!("{cafile}sip_certificate\t{}\n", combined.display()),
    );
    wait_available(&gw, &alice, "alice").await;
    post_json(
        &gw,
        "/v1/trunks",
        json!({
            "name": "tls-carrier", "provider": "generic",
            "outbound": { "host": "127.0.0.1", "port": carrier.sip_port + 1, "transport": "tls" },
        }),
    )
    .await;
    let call = post_json(
        &gw,
        "/v1/calls",
        json!({ "agent": "alice", "to": "+14155550100", "trunk": "tls-carrier" }),
    )
    .await;
    let id = call["id"].as_str().unwrap().to_owned();
    let context = || format!("----- voxgate log -----\n{}", gw.log());
    tokio::task::block_in_place(|| {
        for phone in [&alice, &carrier] {
            phone
                .wait_event("CALL_ESTABLISHED", Duration::from_secs(15))
                .unwrap_or_else(|e| panic!("{}: no call: {e}\n{}", phone.name, context()));
        }
        for phone in [&alice, &carrier] {
            phone
                .wait_event("CALL_CLOSED", Duration::from_secs(20))
                .unwrap_or_else(|e| panic!("{}: not closed: {e}\n{}", phone.name, context()));
        }
        check_heard(
            &carrier,
            &alice_wav,
            &lead_wav,
            "TLS trunk: the lead hears the agent",
        );
        check_heard(
            &alice,
            &lead_wav,
            &alice_wav,
            "TLS trunk: the agent hears the lead",
        );
    });
    let call = final_status(&gw, &id).await;
    assert_eq!(call["status"], "completed", "{call:#}");
    let lead_leg = &call["legs"][1];
    assert!(
        lead_leg["uri"]
            .as_str()
            .is_some_and(|u| u.ends_with(";transport=tls")),
        "{call:#}"
    );
}
