//! RTP relay load harness: N concurrent G.711 calls through voxgate's relay and through
//! rtpengine, 20 ms packets both ways, relay CPU per call-second, loss and added latency.
//!
//! ```text
//! cargo bench --bench relay_load -- [--calls 100,200,400] [--duration 60] [--warmup 2]
//!     [--relay voxgate:paced:500,voxgate:edge,rtpengine] [--workers 2] [--gen-threads 2]
//!     [--runs 1] [--smoke]
//! ```
//!
//! Relays: `voxgate:<mode>` (userspace poll modes: edge, level, paced:<µs>, busy:<µs>;
//! `record`: level-triggered, every call tapped, decoded, scanned for in-band DTMF and
//! recorded in dual WAV files, as a recorded call is — its frame drops are printed at
//! the end),
//! `voxgate:kernel` (level-triggered workers plus eBPF kernel forwarding of steady
//! flows, needs root), `rtpengine`, and `direct` (no relay: the two generator sockets
//! send straight to each other — the baseline for the system-wide figure).
//!
//! Two CPU figures per run. `us/call-s` is the relay process's own CPU. It misses work
//! done on its behalf in softirq context charged to other processes — all of it for
//! kernel forwarding, where a packet is rewritten and redirected while the *sender's*
//! `sendmmsg` runs. So `added/call-s` is the machine's busy time (on-CPU time of every
//! task, softirq work in their context included) minus that of the `direct` run with the same N
//! (same generator, same packets, no relay), per call-second: everything the relay
//! adds, wherever it is accounted. It needs `direct` in `--relay` (put it first).
//!
//! Each relay runs in its own process so that only its CPU is counted (sum of
//! `/proc/<pid>/task/*/schedstat` run time, i.e. user + system on-CPU time):
//! voxgate's relay is this same binary re-executed as `--serve-relay` (the real
//! `MediaEngine`, driven over stdin/stdout), rtpengine is Debian's `rtpengine-daemon`,
//! userspace only, driven by its ng protocol on loopback. The traffic generator runs in
//! this process: per generator thread one "caller" and one "callee" socket (every call's
//! SDP points at them), `sendmmsg`/`recvmmsg` batches, sends spread over the 20 ms period
//! in 1 ms ticks, a send timestamp (CLOCK_REALTIME) in each payload and the kernel's
//! receive timestamp (`SO_TIMESTAMPNS`) for latency. Traffic goes to 127.0.0.1 only;
//! every run is bounded by `--duration` and stops by itself.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, IoSlice, IoSliceMut, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::{AsFd, AsRawFd};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{
    recvmmsg, sendmmsg, setsockopt, sockopt, ControlMessageOwned, MsgFlags, MultiHeaders,
    SockaddrIn,
};
use nix::sys::time::TimeSpec;

const PKT_LEN: usize = 172; // 12-byte RTP header + 160 bytes PCMU (20 ms at 8 kHz)
const TICKS: u32 = 20; // 1 ms ticks per 20 ms period
const BATCH: usize = 64;
const HIST_US: usize = 100_000; // latency histogram: 1 µs buckets up to 100 ms
const PORTS: &str = "30000-61999";

// ---------------------------------------------------------------- arguments

#[derive(Clone, Debug)]
struct Args {
    calls: Vec<usize>,
    duration: Duration,
    warmup: Duration,
    relays: Vec<String>,
    workers: usize,
    gen_threads: usize,
    runs: usize,
}

fn parse_args() -> Args {
    let mut a = Args {
        calls: vec![100, 200, 400, 800, 1200, 1600, 2000],
        duration: Duration::from_secs(60),
        warmup: Duration::from_secs(2),
        relays: vec![
            "voxgate:edge".into(),
            "voxgate:level".into(),
            "voxgate:paced:500".into(),
            "rtpengine".into(),
        ],
        workers: 2,
        gen_threads: 2,
        runs: 1,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let mut val = || it.next().unwrap_or_else(|| panic!("{k} needs a value"));
        match k.as_str() {
            "--calls" => a.calls = val().split(',').map(|s| s.parse().unwrap()).collect(),
            "--duration" => a.duration = Duration::from_secs_f64(val().parse().unwrap()),
            "--warmup" => a.warmup = Duration::from_secs_f64(val().parse().unwrap()),
            "--relay" => a.relays = val().split(',').map(str::to_owned).collect(),
            "--workers" => a.workers = val().parse().unwrap(),
            "--gen-threads" => a.gen_threads = val().parse().unwrap(),
            "--runs" => a.runs = val().parse().unwrap(),
            "--smoke" => {
                a.calls = vec![50];
                a.duration = Duration::from_secs(3);
                a.warmup = Duration::from_secs(1);
                a.relays = vec![
                    "direct".into(),
                    "voxgate:level".into(),
                    "voxgate:kernel".into(),
                    "rtpengine".into(),
                ];
            }
            "--bench" => {} // passed by `cargo bench`
            other => panic!("unknown argument {other}"),
        }
    }
    a
}

// ---------------------------------------------------------------- relay backends

/// The relay under test, in its own process.
enum Relay {
    /// No relay: each generator socket sends straight to the other.
    Direct,
    Voxgate {
        child: Child,
        stdin: ChildStdin,
        stdout: BufReader<ChildStdout>,
    },
    Rtpengine {
        child: Child,
        ng: UdpSocket,
        ng_addr: SocketAddr,
        cookie: u64,
    },
}

impl Relay {
    fn start(spec: &str, workers: usize) -> Relay {
        if spec == "rtpengine" {
            return Relay::start_rtpengine(workers);
        }
        if spec == "direct" {
            return Relay::Direct;
        }
        let mode = spec
            .strip_prefix("voxgate:")
            .expect("relay is voxgate:<mode> or rtpengine");
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--serve-relay", mode, &workers.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn relay");
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        Relay::Voxgate {
            child,
            stdin,
            stdout,
        }
    }

    fn start_rtpengine(workers: usize) -> Relay {
        let ng = UdpSocket::bind("127.0.0.1:0").unwrap();
        ng.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        // A free port for the ng listener: bind, read it, close, hand it over.
        let ng_port = UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let (lo, hi) = PORTS.split_once('-').unwrap();
        let child = Command::new("rtpengine")
            .args([
                "--config-file=none",
                "--interface=127.0.0.1",
                &format!("--listen-ng=127.0.0.1:{ng_port}"),
                "--foreground",
                "--table=-1",
                "--no-fallback",
                &format!("--port-min={lo}"),
                &format!("--port-max={hi}"),
                "--log-level=1",
                "--log-stderr",
                "--endpoint-learning=immediate",
                &format!("--num-threads={workers}"),
                "--timeout=600",
                "--delete-delay=0",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("rtpengine not found: apt-get install rtpengine-daemon");
        let mut r = Relay::Rtpengine {
            child,
            ng,
            ng_addr: SocketAddr::from(([127, 0, 0, 1], ng_port)),
            cookie: 0,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(reply) = r.ng(&[("command", "ping")]) {
                assert!(find(&reply, b"6:result4:pong").is_some(), "bad ping reply");
                break;
            }
            assert!(Instant::now() < deadline, "rtpengine did not answer ping");
        }
        r
    }

    fn pid(&self) -> Option<u32> {
        match self {
            Relay::Voxgate { child, .. } | Relay::Rtpengine { child, .. } => Some(child.id()),
            Relay::Direct => None,
        }
    }

    /// Sets up call `i` between `caller` and `callee`: returns (port the caller sends
    /// to, port the callee sends to).
    fn setup(&mut self, i: usize, caller: SocketAddr, callee: SocketAddr) -> (u16, u16) {
        match self {
            Relay::Direct => (callee.port(), caller.port()),
            Relay::Voxgate { stdin, stdout, .. } => {
                writeln!(stdin, "call {caller} {callee}").unwrap();
                stdin.flush().unwrap();
                let mut line = String::new();
                stdout.read_line(&mut line).unwrap();
                let mut w = line.split_whitespace();
                assert_eq!(w.next(), Some("ok"), "relay: {line}");
                let a = w.next().unwrap().parse().unwrap();
                let b = w.next().unwrap().parse().unwrap();
                (a, b)
            }
            Relay::Rtpengine { .. } => {
                let call_id = format!("bench-{i}");
                let offer = sdp(caller);
                let r = self
                    .ng(&[
                        ("command", "offer"),
                        ("call-id", &call_id),
                        ("from-tag", "caller"),
                        ("sdp", &offer),
                    ])
                    .expect("no answer to offer");
                let to_callee = sdp_port(&r).unwrap_or_else(|| panic!("offer: {}", lossy(&r)));
                let answer = sdp(callee);
                let r = self
                    .ng(&[
                        ("command", "answer"),
                        ("call-id", &call_id),
                        ("from-tag", "caller"),
                        ("to-tag", "callee"),
                        ("sdp", &answer),
                    ])
                    .expect("no answer to answer");
                let to_caller = sdp_port(&r).unwrap_or_else(|| panic!("answer: {}", lossy(&r)));
                (to_caller, to_callee)
            }
        }
    }

    /// One ng request/response (bencoded dict, `cookie dict`).
    fn ng(&mut self, kv: &[(&str, &str)]) -> Option<Vec<u8>> {
        let Relay::Rtpengine {
            ng,
            ng_addr,
            cookie,
            ..
        } = self
        else {
            return None;
        };
        *cookie += 1;
        let c = format!("c{cookie}");
        let mut msg = format!("{c} d").into_bytes();
        for (k, v) in kv {
            msg.extend_from_slice(format!("{}:{k}{}:", k.len(), v.len()).as_bytes());
            msg.extend_from_slice(v.as_bytes());
        }
        msg.push(b'e');
        ng.send_to(&msg, *ng_addr).ok()?;
        let mut buf = vec![0u8; 65536];
        loop {
            let n = ng.recv(&mut buf).ok()?;
            if buf[..n].starts_with(format!("{c} ").as_bytes()) {
                return Some(buf[c.len() + 1..n].to_vec());
            }
        }
    }

    fn stop(self) {
        match self {
            Relay::Voxgate {
                mut child, stdin, ..
            } => {
                drop(stdin); // EOF: the server exits
                let _ = child.wait();
            }
            Relay::Rtpengine { mut child, .. } => {
                let _ = child.kill();
                let _ = child.wait();
            }
            Relay::Direct => {}
        }
    }
}

fn sdp(addr: SocketAddr) -> String {
    format!(
        "v=0\r\no=- 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\nm=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n",
        ip = addr.ip(),
        port = addr.port()
    )
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The `m=audio <port>` of the `sdp` value in an ng reply.
fn sdp_port(reply: &[u8]) -> Option<u16> {
    let at = find(reply, b"m=audio ")? + 8;
    let rest = &reply[at..];
    let end = rest.iter().position(|b| *b == b' ')?;
    std::str::from_utf8(&rest[..end]).ok()?.parse().ok()
}

// ---------------------------------------------------------------- relay server mode

/// `--serve-relay <mode> <workers>`: a voxgate MediaEngine driven by lines on stdin:
/// `call <caller> <callee>` → `ok <port A> <port B>`; EOF stops it.
fn serve_relay(mode: &str, workers: usize) {
    use voxgate::media::{LegRemote, MediaConfig, MediaEngine, PollMode, Side};
    let us = |s: &str| Duration::from_micros(s.parse().unwrap());
    let poll = match mode.split(':').collect::<Vec<_>>()[..] {
        ["edge"] => PollMode::EdgeDrain,
        ["level"] => PollMode::LevelOnce {
            pace: None,
            busy_poll: None,
        },
        ["paced", p] => PollMode::LevelOnce {
            pace: Some(us(p)),
            busy_poll: None,
        },
        ["busy", b] => PollMode::LevelOnce {
            pace: None,
            busy_poll: Some(us(b)),
        },
        ["kernel"] | ["record"] => PollMode::default(),
        _ => panic!("mode is edge | level | paced:<µs> | busy:<µs> | kernel | record"),
    };
    let mut cfg = MediaConfig::loopback(PORTS.parse().unwrap());
    cfg.workers = workers;
    cfg.poll = poll;
    if mode == "kernel" {
        cfg.kernel = voxgate::media::KernelForwarding::On;
    }
    let engine = MediaEngine::start(cfg).unwrap();
    let recorder = (mode == "record").then(Recording::start);
    let stdin = std::io::stdin();
    let mut out = std::io::stdout().lock();
    let mut sessions = Vec::new();
    for line in stdin.lock().lines() {
        let line = line.unwrap();
        let w: Vec<&str> = line.split_whitespace().collect();
        if let ["call", a, b] = w[..] {
            let s = engine.create_session().unwrap();
            for (side, addr) in [(Side::A, a), (Side::B, b)] {
                let remote = LegRemote {
                    rtp: Some(addr.parse().unwrap()),
                    ..LegRemote::default()
                };
                engine.update_leg(s.id, side, remote).unwrap();
            }
            if let Some(r) = &recorder {
                r.record(&engine, s.id, sessions.len());
            }
            writeln!(out, "ok {} {}", s.a.rtp.port(), s.b.rtp.port()).unwrap();
            out.flush().unwrap();
            sessions.push(s.id);
        }
    }
    let st = engine.stats();
    eprintln!(
        "relay: forwarded {} (kernel {}, flows {}) dropped {:?} send_errors {} tap_dropped {}",
        st.rtp_forwarded,
        st.kernel_forwarded,
        st.kernel_flows,
        st.dropped,
        st.send_errors,
        st.tap_dropped
    );
    if let Some(r) = recorder {
        eprintln!(
            "record: {} recordings, frames dropped {}",
            sessions.len(),
            r.worker.dropped_frames()
        );
    }
    for id in sessions {
        let _ = engine.destroy_session(id);
    }
}

/// The listening thread and the recording worker, as the gateway runs them for a
/// recorded call (files in a temp dir, removed at the end).
struct Recording {
    listening: voxgate::media::listen::Listening,
    worker: voxgate::media::recording::RecordingWorker,
    _dir: tempfile::TempDir,
    _events: std::sync::mpsc::Receiver<voxgate::media::recording::RecordingEvent>,
}

impl Recording {
    fn start() -> Recording {
        use voxgate::media::recording::{LocalStorage, RecordingWorker, RecordingWorkerConfig};
        let dir = tempfile::tempdir().unwrap();
        let (dtmf, _) = tokio::sync::mpsc::unbounded_channel();
        let (events_tx, events) = std::sync::mpsc::channel();
        Recording {
            listening: voxgate::media::listen::Listening::start(dtmf).unwrap(),
            worker: RecordingWorker::start(
                RecordingWorkerConfig::new(dir.path()),
                Box::new(LocalStorage),
                events_tx,
            )
            .unwrap(),
            _dir: dir,
            _events: events,
        }
    }

    fn record(
        &self,
        engine: &voxgate::media::MediaEngine,
        id: voxgate::media::SessionId,
        n: usize,
    ) {
        use voxgate::media::recording::RecordingId;
        use voxgate::media::Side;
        use voxgate_media::listen::ListenConfig;
        use voxgate_media::recorder::{Channels, RecorderConfig, SampleRate};
        let config = ListenConfig {
            codecs: vec![(0, voxgate_media::Codec::Pcmu)],
            telephone_event: Some((101, voxgate_media::ClockRate::G711)),
            inband: true,
        };
        let tap = self
            .worker
            .open(
                RecordingId::new(&format!("rec_bench{n}")).unwrap(),
                RecorderConfig::new(SampleRate::NARROWBAND, Channels::Dual),
                chrono::Utc::now().date_naive(),
                Instant::now(),
            )
            .unwrap();
        self.listening.record(id, tap, Side::A);
        for side in [Side::A, Side::B] {
            self.listening.listen(id, side, config.clone());
            engine
                .set_tap(id, side, Some(self.listening.tap()))
                .unwrap();
        }
    }
}

// ---------------------------------------------------------------- CPU of a process

/// On-CPU time of every thread of `pid` (user + system), from schedstat (ns).
fn cpu_time(pid: u32) -> Duration {
    let mut total = 0u64;
    if let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in dir.flatten() {
            if let Ok(s) = std::fs::read_to_string(t.path().join("schedstat")) {
                total += s
                    .split_whitespace()
                    .next()
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0);
            }
        }
    }
    Duration::from_nanos(total)
}

/// On-CPU time of every task on the machine (sum of all `/proc/*/task/*/schedstat`).
/// Softirq work done in a task's context (loopback delivery, tc programs run from a
/// sender's `sendmmsg`) is in its run time; `/proc/stat`'s tick sampling was measured to
/// undercount these short bursts here, so it is not used.
fn machine_busy() -> Duration {
    let mut total = Duration::ZERO;
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            if let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) {
                total += cpu_time(pid);
            }
        }
    }
    total
}

fn self_cpu() -> Duration {
    cpu_time(std::process::id())
}

// ---------------------------------------------------------------- generator

struct Call {
    id: u32,
    to_a: SockaddrIn, // relay port the caller sends to
    to_b: SockaddrIn, // relay port the callee sends to
    seq: u16,
}

struct GenResult {
    sent: u64,
    received: u64,
    duplicates: u64,
    hist: Vec<u32>,
    over: u64,
    late_ticks: u64,
}

fn realtime_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

fn gen_socket() -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_nonblocking(true).unwrap();
    // Generator sockets take a whole thread's share of calls: big buffers (root may
    // force them past rmem_max).
    let size = 32 << 20;
    if setsockopt(&s, sockopt::RcvBufForce, &size).is_err() {
        let _ = setsockopt(&s, sockopt::RcvBuf, &size);
    }
    if setsockopt(&s, sockopt::SndBufForce, &size).is_err() {
        let _ = setsockopt(&s, sockopt::SndBuf, &size);
    }
    setsockopt(&s, sockopt::ReceiveTimestampns, &true).unwrap();
    s
}

/// Fills the RTP packet for `call` in direction `dir` (0 caller→callee, 1 back).
fn fill(pkt: &mut [u8; PKT_LEN], call: &Call, dir: u8, sent_ns: u64) {
    pkt[0] = 0x80;
    pkt[1] = 0; // PCMU
    pkt[2..4].copy_from_slice(&call.seq.to_be_bytes());
    pkt[4..8].copy_from_slice(&(u32::from(call.seq).wrapping_mul(160)).to_be_bytes());
    pkt[8..12].copy_from_slice(&(call.id * 2 + u32::from(dir)).to_be_bytes());
    pkt[12..16].copy_from_slice(&call.id.to_be_bytes());
    pkt[16] = dir;
    pkt[17..25].copy_from_slice(&sent_ns.to_be_bytes());
}

/// Sends one tick's packets from `sock` with `sendmmsg`, `BATCH` at a time, stamping
/// each batch just before its system call.
fn send_batch(
    sock: &UdpSocket,
    calls: &mut [&mut Call],
    dir: u8,
    bufs: &mut [[u8; PKT_LEN]],
) -> u64 {
    let mut sent = 0;
    for chunk in calls.chunks_mut(BATCH) {
        let now = realtime_ns();
        let mut addrs = Vec::with_capacity(chunk.len());
        for (c, b) in chunk.iter().zip(bufs.iter_mut()) {
            fill(b, c, dir, now);
            addrs.push(Some(if dir == 0 { c.to_a } else { c.to_b }));
        }
        let iovs: Vec<[IoSlice<'_>; 1]> = bufs[..chunk.len()]
            .iter()
            .map(|b| [IoSlice::new(b)])
            .collect();
        let mut hdrs = MultiHeaders::<SockaddrIn>::preallocate(chunk.len(), None);
        let mut off = 0;
        while off < chunk.len() {
            match sendmmsg(
                sock.as_raw_fd(),
                &mut hdrs,
                &iovs[off..],
                &addrs[off..],
                [],
                MsgFlags::empty(),
            ) {
                Ok(r) => {
                    let n = r.count();
                    off += n.max(1);
                    sent += n as u64;
                }
                Err(nix::errno::Errno::EAGAIN) => std::thread::yield_now(),
                Err(e) => panic!("sendmmsg: {e}"),
            }
        }
    }
    sent
}

/// Reads everything queued on `sock`; records counts and latency.
fn drain(
    sock: &UdpSocket,
    base: u32,
    counts: &mut [u32],
    hist: &mut [u32],
    over: &mut u64,
    record: bool,
) -> u64 {
    let mut bufs = vec![[0u8; 256]; BATCH];
    let mut got = 0;
    loop {
        let mut stamps = [(0usize, 0u64); BATCH];
        let n = {
            let mut hdrs =
                MultiHeaders::<SockaddrIn>::preallocate(BATCH, Some(nix::cmsg_space!(TimeSpec)));
            let mut iovs: Vec<[IoSliceMut<'_>; 1]> =
                bufs.iter_mut().map(|b| [IoSliceMut::new(b)]).collect();
            match recvmmsg(
                sock.as_raw_fd(),
                &mut hdrs,
                iovs.iter_mut(),
                MsgFlags::MSG_DONTWAIT,
                None,
            ) {
                Ok(r) => {
                    let mut n = 0;
                    for (i, m) in r.enumerate() {
                        let mut ts = 0u64;
                        if let Ok(cm) = m.cmsgs() {
                            for c in cm {
                                if let ControlMessageOwned::ScmTimestampns(t) = c {
                                    ts = t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64;
                                }
                            }
                        }
                        stamps[i] = (m.bytes, ts);
                        n += 1;
                    }
                    n
                }
                Err(nix::errno::Errno::EAGAIN) => 0,
                Err(e) => panic!("recvmmsg: {e}"),
            }
        };
        for (b, (len, rx_ns)) in bufs.iter().zip(&stamps[..n]) {
            if *len < 25 {
                continue;
            }
            let id = u32::from_be_bytes(b[12..16].try_into().unwrap());
            let dir = u32::from(b[16] & 1);
            let sent_ns = u64::from_be_bytes(b[17..25].try_into().unwrap());
            let Some(k) = id.checked_sub(base).map(|k| (k * 2 + dir) as usize) else {
                continue;
            };
            if let Some(c) = counts.get_mut(k) {
                *c += 1;
            }
            if record {
                let us = rx_ns.saturating_sub(sent_ns) / 1000;
                match hist.get_mut(us as usize) {
                    Some(h) => *h += 1,
                    None => *over += 1,
                }
            }
        }
        got += n as u64;
        if n < BATCH {
            return got;
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn generator(
    mut calls: Vec<Call>,
    caller: UdpSocket,
    callee: UdpSocket,
    base: u32,
    ncalls_total: u32,
    start: Instant,
    measure_from: Instant,
    end: Instant,
) -> GenResult {
    let n = calls.len();
    let mut counts = vec![0u32; 2 * ncalls_total as usize];
    let mut hist = vec![0u32; HIST_US];
    let mut over = 0;
    let mut sent = 0u64;
    let mut received = 0u64;
    let mut late_ticks = 0u64;
    let mut bufs = vec![[0u8; PKT_LEN]; BATCH];
    let mut tick: u32 = 0;
    let tick_len = Duration::from_millis(1);
    loop {
        let due = start + tick_len * tick;
        let now = Instant::now();
        if now >= due {
            if due >= end {
                break;
            }
            if now - due > Duration::from_millis(2) {
                late_ticks += 1;
            }
            // Calls whose phase is this tick send one packet each way.
            let phase = tick % TICKS;
            let mut these: Vec<&mut Call> = calls
                .iter_mut()
                .enumerate()
                .filter(|(i, _)| *i as u32 % TICKS == phase)
                .map(|(_, c)| c)
                .collect();
            sent += send_batch(&caller, &mut these, 0, &mut bufs);
            sent += send_batch(&callee, &mut these, 1, &mut bufs);
            for c in &mut these {
                c.seq = c.seq.wrapping_add(1);
            }
            tick += 1;
            continue;
        }
        // Round up: a zero timeout would spin; a tick at most 1 ms late is fine, the
        // send timestamp is taken when the batch really goes out.
        let wait = (due - now).as_micros().div_ceil(1000).min(2) as u16;
        let mut fds = [
            PollFd::new(caller.as_fd(), PollFlags::POLLIN),
            PollFd::new(callee.as_fd(), PollFlags::POLLIN),
        ];
        let _ = nix::poll::poll(&mut fds, PollTimeout::from(wait));
        let record = Instant::now() >= measure_from;
        received += drain(&caller, base, &mut counts, &mut hist, &mut over, record);
        received += drain(&callee, base, &mut counts, &mut hist, &mut over, record);
    }
    // Collect what is still in flight.
    let tail = Instant::now() + Duration::from_millis(500);
    while Instant::now() < tail {
        let mut fds = [
            PollFd::new(caller.as_fd(), PollFlags::POLLIN),
            PollFd::new(callee.as_fd(), PollFlags::POLLIN),
        ];
        let _ = nix::poll::poll(&mut fds, PollTimeout::from(10u16));
        received += drain(&caller, base, &mut counts, &mut hist, &mut over, true);
        received += drain(&callee, base, &mut counts, &mut hist, &mut over, true);
    }
    let per_dir = u64::from(tick / TICKS); // lower bound of packets each call sent per direction
    let duplicates = counts
        .iter()
        .map(|c| u64::from(*c).saturating_sub(per_dir + 1))
        .sum();
    let _ = n;
    GenResult {
        sent,
        received,
        duplicates,
        hist,
        over,
        late_ticks,
    }
}

// ---------------------------------------------------------------- one measurement

struct Outcome {
    calls: usize,
    sent: u64,
    lost: i64,
    relay_cpu: Duration,
    gen_cpu: Duration,
    machine: Duration,
    measured: Duration,
    p50_us: f64,
    p99_us: f64,
    late_ticks: u64,
}

fn percentile(hist: &[u32], over: u64, q: f64) -> f64 {
    let total: u64 = hist.iter().map(|h| u64::from(*h)).sum::<u64>() + over;
    if total == 0 {
        return f64::NAN;
    }
    let target = (total as f64 * q).ceil() as u64;
    let mut acc = 0u64;
    for (i, h) in hist.iter().enumerate() {
        acc += u64::from(*h);
        if acc >= target {
            return i as f64;
        }
    }
    f64::INFINITY
}

fn run_one(spec: &str, ncalls: usize, args: &Args) -> Outcome {
    let mut relay = Relay::start(spec, args.workers);
    let t = args.gen_threads.max(1);
    let socks: Vec<(UdpSocket, UdpSocket)> = (0..t).map(|_| (gen_socket(), gen_socket())).collect();
    let mut per_thread: Vec<Vec<Call>> = (0..t).map(|_| Vec::new()).collect();
    for i in 0..ncalls {
        let (caller, callee) = &socks[i % t];
        let (pa, pb) = relay.setup(
            i,
            caller.local_addr().unwrap(),
            callee.local_addr().unwrap(),
        );
        let v4 = |p: u16| SockaddrIn::from(SocketAddrV4::new(Ipv4Addr::LOCALHOST, p));
        per_thread[i % t].push(Call {
            id: u32::try_from(i).unwrap(),
            to_a: v4(pa),
            to_b: v4(pb),
            seq: 0,
        });
    }
    let start = Instant::now() + Duration::from_millis(50);
    let measure_from = start + args.warmup;
    let end = measure_from + args.duration;
    let pid = relay.pid();
    let relay_cpu = || pid.map_or(Duration::ZERO, cpu_time);
    let stop = Arc::new(AtomicBool::new(false));
    let handles: Vec<_> = per_thread
        .into_iter()
        .zip(socks)
        .map(|(calls, (a, b))| {
            let total = u32::try_from(ncalls).unwrap();
            std::thread::spawn(move || generator(calls, a, b, 0, total, start, measure_from, end))
        })
        .collect();
    std::thread::sleep(measure_from.saturating_duration_since(Instant::now()));
    let (c0, g0, m0, t0) = (relay_cpu(), self_cpu(), machine_busy(), Instant::now());
    std::thread::sleep(end.saturating_duration_since(Instant::now()));
    let (c1, g1, m1, t1) = (relay_cpu(), self_cpu(), machine_busy(), Instant::now());
    stop.store(true, Ordering::Relaxed);
    let results: Vec<GenResult> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    relay.stop();
    let mut hist = vec![0u32; HIST_US];
    let (mut sent, mut received, mut over, mut late, mut dups) = (0, 0, 0, 0, 0);
    for r in &results {
        sent += r.sent;
        received += r.received;
        over += r.over;
        late += r.late_ticks;
        dups += r.duplicates;
        for (h, x) in hist.iter_mut().zip(&r.hist) {
            *h += x;
        }
    }
    if dups > 0 {
        eprintln!("  warning: {dups} duplicate packets");
    }
    Outcome {
        calls: ncalls,
        sent,
        lost: sent as i64 - received as i64,
        relay_cpu: c1 - c0,
        gen_cpu: g1 - g0,
        machine: m1.saturating_sub(m0),
        measured: t1 - t0,
        p50_us: percentile(&hist, over, 0.50),
        p99_us: percentile(&hist, over, 0.99),
        late_ticks: late,
    }
}

fn main() {
    let argv: Vec<String> = std::env::args().collect();
    if argv.get(1).map(String::as_str) == Some("--serve-relay") {
        serve_relay(&argv[2], argv[3].parse().unwrap());
        return;
    }
    let args = parse_args();
    let _ = IpAddr::V4(Ipv4Addr::LOCALHOST);
    println!(
        "relay_load: {} s measured after {} s warm-up, relay workers/threads {}, generator threads {}, {} CPUs",
        args.duration.as_secs_f64(),
        args.warmup.as_secs_f64(),
        args.workers,
        args.gen_threads,
        std::thread::available_parallelism().map_or(0, usize::from)
    );
    println!(
        "{:<20} {:>6} {:>4} {:>9} {:>6} {:>9} {:>10} {:>8} {:>8} {:>9} {:>9} {:>13} {:>5}",
        "relay",
        "calls",
        "run",
        "sent",
        "lost",
        "cpu_s",
        "us/call-s",
        "p50_us",
        "p99_us",
        "gen_cpu_s",
        "machine_s",
        "added/call-s",
        "late"
    );
    let mut best: Vec<(String, usize)> = args.relays.iter().map(|r| (r.clone(), 0)).collect();
    let mut failed: Vec<bool> = vec![false; args.relays.len()];
    // Relays are interleaved run by run so that the machine's background load (other
    // builds on a shared box) falls on all of them alike.
    for &n in &args.calls {
        let mut clean = vec![true; args.relays.len()];
        for run in 0..args.runs {
            // Machine busy time per second of the `direct` run of this N and run.
            let mut baseline: Option<f64> = None;
            for (ri, spec) in args.relays.iter().enumerate() {
                if failed[ri] {
                    continue;
                }
                let o = run_one(spec, n, &args);
                let call_secs = o.calls as f64 * o.measured.as_secs_f64();
                let busy_per_s = o.machine.as_secs_f64() / o.measured.as_secs_f64();
                if spec == "direct" {
                    baseline = Some(busy_per_s);
                }
                let added = baseline.map_or(f64::NAN, |b| {
                    (busy_per_s - b) * o.measured.as_secs_f64() * 1e6 / call_secs
                });
                println!(
                    "{:<20} {:>6} {:>4} {:>9} {:>6} {:>9.3} {:>10.0} {:>8.0} {:>8.0} {:>9.3} {:>9.3} {:>13.0} {:>5}",
                    spec,
                    o.calls,
                    run + 1,
                    o.sent,
                    o.lost,
                    o.relay_cpu.as_secs_f64(),
                    o.relay_cpu.as_secs_f64() * 1e6 / call_secs,
                    o.p50_us,
                    o.p99_us,
                    o.gen_cpu.as_secs_f64(),
                    o.machine.as_secs_f64(),
                    added,
                    o.late_ticks
                );
                clean[ri] &= o.lost == 0;
            }
        }
        for (ri, ok) in clean.into_iter().enumerate() {
            if failed[ri] {
                continue;
            }
            if ok {
                best[ri].1 = n;
            } else {
                failed[ri] = true;
            }
        }
    }
    println!("highest N with 0 loss in every run:");
    for (r, n) in best {
        println!("  {r:<20} {n}");
    }
}
