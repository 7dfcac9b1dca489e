//! Runs the SIPp scenarios of `tests/sipp/` against a gateway and hands back what SIPp
//! saw: its exit status, its error and message logs, and every response the scenario
//! logged whole (between `@@RESPONSE-BEGIN@@` and `@@RESPONSE-END@@`).
//!
//! ```ignore
//! let run = Sipp::new("register.xml")
//!     .transport(Transport::Tcp)
//!     .service("alice")
//!     .auth("alice", "alicepass1")
//!     .set("contact", "<sip:alice@127.0.0.1:5999;transport=tcp>")
//!     .set("hdr", "Expires: 3600")
//!     .run(gw.sip_port);
//! run.assert_success();
//! let ok = run.last_response();
//! ```
//!
//! SIPp exits 0 only when every call of the run succeeded (the scenario fails a call on an
//! unexpected response, a missing `check_it` match or a receive timeout), so
//! [`SippRun::assert_success`] is the primary assertion; it prints SIPp's logs on failure.
//! A missing `sipp` binary fails the test (never skips it). SIPp 3.6.1 quirks that shape
//! this helper are listed in `tests/sipp/README.md`.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::fmt::Write as _;
use std::fs::File;
use std::net::{IpAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Where the scenarios live.
pub fn scenario_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("sipp")
}

/// SIP transport for a run: SIPp's `-t u1` (one UDP socket) or `-t t1` (one TCP connection).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

impl Transport {
    pub const ALL: [Transport; 2] = [Transport::Udp, Transport::Tcp];

    /// SIPp's `-t` value.
    pub fn sipp_flag(self) -> &'static str {
        match self {
            Transport::Udp => "u1",
            Transport::Tcp => "t1",
        }
    }

    /// The URI `transport=` parameter (and the API's `transport` field).
    pub fn param(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
        }
    }
}

/// A port free for both UDP and TCP on `ip` (now; SIPp binds both with `-t t1` as well).
pub fn free_port_on(ip: IpAddr) -> u16 {
    for _ in 0..200 {
        let Ok(udp) = UdpSocket::bind((ip, 0)) else {
            continue;
        };
        let Ok(port) = udp.local_addr().map(|a| a.port()) else {
            continue;
        };
        if TcpListener::bind((ip, port)).is_ok() {
            return port;
        }
    }
    panic!("no port free for both UDP and TCP on {ip} after 200 tries");
}

/// SIPp's media ports (`-mp`): 61000-65499, above the kernel's ephemeral range
/// (32768-60999, where every `bind(0)` lands) and clear of the test gateways' RTP slots
/// (10000-19999) and baresip's (20000-29999).
const SIPP_MEDIA_BASE: u16 = 61_000;
const SIPP_MEDIA_BLOCKS: u16 = 1_125;

/// An even port `p` for SIPp's `-mp` with `p` and `p + 2` free on loopback UDP: SIPp binds
/// both (audio and video) and exits at start when either is taken, so a port from
/// [`free_port_on`] (checked alone, and in the range every other test's sockets use) made
/// SIPp fail now and then.
pub fn sipp_media_port() -> u16 {
    let free = |p: u16| UdpSocket::bind((std::net::Ipv4Addr::LOCALHOST, p)).is_ok();
    // Spread by process (nextest runs each test in its own) and by call (a test's
    // second SIPp may not have bound the first one's ports yet).
    static NEXT: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(0);
    let nth = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let start = ((std::process::id() as u16).wrapping_mul(7919) % SIPP_MEDIA_BLOCKS
        + nth.wrapping_mul(97))
        % SIPP_MEDIA_BLOCKS;
    for i in 0..SIPP_MEDIA_BLOCKS {
        let p = SIPP_MEDIA_BASE + ((start + i * 13) % SIPP_MEDIA_BLOCKS) * 4;
        if free(p) && free(p + 2) {
            return p;
        }
    }
    panic!("no free SIPp media port pair in {SIPP_MEDIA_BASE}-65499");
}

/// Panics with install instructions when `sipp` is not on PATH.
pub fn require_sipp() {
    match Command::new("sipp").arg("-v").stdin(Stdio::null()).output() {
        Ok(out) => {
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(
                text.contains("SIPp v"),
                "`sipp -v` did not print a SIPp version: {text}"
            );
        }
        Err(e) => panic!(
            "SIPp is required by this test and could not be run ({e}). Install it with \
             scripts/install-test-deps.sh (Debian package sip-tester)."
        ),
    }
}

/// One SIPp invocation, built up then [`run`](Sipp::run).
#[derive(Clone, Debug)]
pub struct Sipp {
    scenario: String,
    transport: Transport,
    local_ip: String,
    local_port: u16,
    service: Option<String>,
    auth: Option<(String, String)>,
    vars: Vec<(String, String)>,
    calls: u32,
    limit: u32,
    rate: Option<u32>,
    duration: Option<Duration>,
    auth_uri: String,
    extra: Vec<String>,
    timeout: Duration,
}

impl Sipp {
    /// `scenario` is a file name in `tests/sipp/`, e.g. `"register.xml"`.
    pub fn new(scenario: &str) -> Sipp {
        Sipp {
            scenario: scenario.to_owned(),
            transport: Transport::Udp,
            local_ip: "127.0.0.1".to_owned(),
            local_port: 0,
            service: None,
            auth: None,
            vars: Vec::new(),
            calls: 1,
            limit: 1,
            rate: None,
            duration: None,
            auth_uri: "127.0.0.1".to_owned(),
            extra: Vec::new(),
            timeout: Duration::from_secs(20),
        }
    }

    pub fn transport(mut self, t: Transport) -> Sipp {
        self.transport = t;
        self
    }

    /// Local address SIPp binds and writes into Via/Contact (`-i`); any 127.x.y.z works
    /// on Linux loopback, which gives a test a second source IP.
    pub fn local_ip(mut self, ip: &str) -> Sipp {
        self.local_ip = ip.to_owned();
        self.local_port = 0;
        self
    }

    /// Use this local port (`-p`) instead of a fresh free one.
    pub fn local_port(mut self, port: u16) -> Sipp {
        self.local_port = port;
        self
    }

    /// The local port SIPp will use; fixed on first call so a Contact can name it.
    pub fn port(&mut self) -> u16 {
        if self.local_port == 0 {
            let ip: IpAddr = self.local_ip.parse().expect("local_ip is an IP address");
            self.local_port = free_port_on(ip);
        }
        self.local_port
    }

    /// The user part of the To/From URIs (`-s`).
    pub fn service(mut self, user: &str) -> Sipp {
        self.service = Some(user.to_owned());
        self
    }

    /// Digest credentials for `[authentication]` (`-au`, `-ap`).
    pub fn auth(mut self, user: &str, password: &str) -> Sipp {
        self.auth = Some((user.to_owned(), password.to_owned()));
        self
    }

    /// A scenario global (`-set name value`); the scenario must declare it.
    pub fn set(mut self, name: &str, value: &str) -> Sipp {
        self.vars.retain(|(n, _)| n != name);
        self.vars.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Number of calls (`-m`); they run one at a time (`-l 1`).
    pub fn calls(mut self, n: u32) -> Sipp {
        self.calls = n;
        self
    }

    /// At most this many calls at once (`-l`, default 1: one after another).
    pub fn limit(mut self, n: u32) -> Sipp {
        self.limit = n;
        self
    }

    /// New calls per second (`-r n -rp 1000`); SIPp's default is 10.
    pub fn rate(mut self, per_second: u32) -> Sipp {
        self.rate = Some(per_second);
        self
    }

    /// The length of every `<pause/>` without its own `milliseconds` (`-d`): the ring
    /// or talk time of the call scenarios.
    pub fn duration(mut self, d: Duration) -> Sipp {
        self.duration = Some(d);
        self
    }

    /// The host part (or `user@host`) of the digest `uri` SIPp computes (`-auth_uri`,
    /// which SIPp prefixes with `sip:`). Default `127.0.0.1`, the REGISTER Request-URI;
    /// a call to bob needs `bob@127.0.0.1`.
    pub fn auth_uri(mut self, uri: &str) -> Sipp {
        self.auth_uri = uri.to_owned();
        self
    }

    /// Any other SIPp arguments.
    pub fn arg(mut self, a: &str) -> Sipp {
        self.extra.push(a.to_owned());
        self
    }

    /// Overall bound: SIPp's own `-timeout`, and a kill a few seconds after it.
    pub fn timeout(mut self, t: Duration) -> Sipp {
        self.timeout = t;
        self
    }

    /// A Contact for `user` at this run's own address and port, with the URI transport.
    pub fn own_contact(&mut self, user: &str) -> String {
        let port = self.port();
        format!(
            "<sip:{user}@{}:{port};transport={}>",
            self.local_ip,
            self.transport.param()
        )
    }

    /// Run to completion (bounded) against `127.0.0.1:<sip_port>`.
    pub fn run(self, sip_port: u16) -> SippRun {
        self.spawn(sip_port).wait_blocking()
    }

    /// Start SIPp in the background against `127.0.0.1:<sip_port>` (a UAS scenario
    /// waits there for voxgate's requests); see [`SippProcess`].
    pub fn spawn(mut self, sip_port: u16) -> SippProcess {
        require_sipp();
        let port = self.port();
        let dir = tempfile::Builder::new()
            .prefix("voxgate-sipp-")
            .tempdir()
            .expect("temp dir for SIPp");
        let files = SippFiles::new(dir.path());
        let scenario = scenario_dir().join(&self.scenario);
        assert!(
            scenario.is_file(),
            "no SIPp scenario {}",
            scenario.display()
        );

        let mut args: Vec<String> = vec![
            "-sf".into(),
            scenario.display().to_string(),
            format!("127.0.0.1:{sip_port}"),
            "-t".into(),
            self.transport.sipp_flag().into(),
            "-i".into(),
            self.local_ip.clone(),
            "-p".into(),
            port.to_string(),
            "-m".into(),
            self.calls.to_string(),
            "-l".into(),
            self.limit.to_string(),
            // The digest uri must be the Request-URI we send (sip:127.0.0.1 for
            // REGISTER), not SIPp's default sip:<remote_ip>:<remote_port>.
            "-auth_uri".into(),
            self.auth_uri.clone(),
            "-timeout".into(),
            format!("{}s", self.timeout.as_secs().max(1)),
            "-timeout_error".into(),
            "-nostdin".into(),
            // Keep "abort on unexpected message", drop the BYE SIPp sends for an aborted call.
            "-default_behaviors".into(),
            "all,-bye".into(),
            "-trace_err".into(),
            "-error_file".into(),
            files.errors.display().to_string(),
            "-trace_logs".into(),
            "-log_file".into(),
            files.log.display().to_string(),
            "-trace_msg".into(),
            "-message_file".into(),
            files.messages.display().to_string(),
        ];
        if let Some(r) = self.rate {
            args.extend(["-r".into(), r.to_string(), "-rp".into(), "1000".into()]);
        }
        if let Some(d) = self.duration {
            args.extend(["-d".into(), d.as_millis().to_string()]);
        }
        if let Some(s) = &self.service {
            args.extend(["-s".into(), s.clone()]);
        }
        if let Some((u, p)) = &self.auth {
            args.extend(["-au".into(), u.clone(), "-ap".into(), p.clone()]);
        }
        for (n, v) in &self.vars {
            args.extend(["-set".into(), n.clone(), v.clone()]);
        }
        args.extend(self.extra.iter().cloned());

        let stdout = File::create(&files.stdout).expect("SIPp stdout file");
        let stderr = stdout.try_clone().expect("SIPp stderr file");
        let child = Command::new("sipp")
            .args(&args)
            .current_dir(dir.path())
            .stdin(Stdio::null())
            // Files, not pipes: SIPp prints a screen every second and must never block.
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("could not start sipp ({e}); run scripts/install-test-deps.sh")
            });
        SippProcess {
            command: format!("sipp {}", shell_words(&args)),
            child: Some(child),
            files,
            port,
            deadline: Instant::now() + self.timeout + Duration::from_secs(10),
            _dir: dir,
        }
    }
}

/// A SIPp run in the background: a phone waiting for calls, or a caller whose call the
/// test acts on while it is up. Its log is written (and flushed) as the scenario runs, so
/// [`SippProcess::wait_for_log`] sees `@@ANSWERED@@` or a logged INVITE at once. Killed
/// when dropped.
pub struct SippProcess {
    command: String,
    child: Option<std::process::Child>,
    files: SippFiles,
    port: u16,
    deadline: Instant,
    _dir: tempfile::TempDir,
}

impl SippProcess {
    /// The SIP port this SIPp listens and sends on (`-p`).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The scenario log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.files.log).unwrap_or_default()
    }

    /// Requests the scenario logged whole so far.
    pub fn requests(&self) -> Vec<SipRequest> {
        parse_logged_requests(&self.log())
    }

    /// Responses the scenario logged whole so far.
    pub fn responses(&self) -> Vec<SipResponse> {
        parse_logged_responses(&self.log())
    }

    /// Whether SIPp is still running.
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    /// Wait (bounded) until `needle` has been logged `count` times; panics with SIPp's
    /// logs when it is not, or when SIPp exits first.
    pub async fn wait_for_log_n(&mut self, needle: &str, count: usize, within: Duration) {
        let until = Instant::now() + within;
        loop {
            if self.log().matches(needle).count() >= count {
                return;
            }
            let exited = !self.running();
            if exited && self.log().matches(needle).count() >= count {
                return;
            }
            if exited || Instant::now() > until {
                let why = if exited { "SIPp exited" } else { "timed out" };
                let status = self
                    .child
                    .as_mut()
                    .and_then(|c| c.try_wait().ok().flatten());
                let report = self.snapshot(status).report();
                panic!(
                    "waiting {within:?} for {count} x {needle:?} in the SIPp log: {why}\n{report}"
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// [`wait_for_log_n`](Self::wait_for_log_n) for one occurrence.
    pub async fn wait_for_log(&mut self, needle: &str, within: Duration) {
        self.wait_for_log_n(needle, 1, within).await;
    }

    /// Wait (bounded by the run's timeout) for SIPp to exit, without blocking the
    /// runtime.
    pub async fn finish(mut self) -> SippRun {
        let status = loop {
            let Some(child) = self.child.as_mut() else {
                break None;
            };
            match child.try_wait().expect("wait for sipp") {
                Some(status) => break Some(status),
                None if Instant::now() > self.deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break None;
                }
                None => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        };
        self.child = None;
        self.snapshot(status)
    }

    /// Wait for SIPp to exit, blocking the thread (bounded by the run's timeout).
    pub fn wait_blocking(mut self) -> SippRun {
        let status = loop {
            let Some(child) = self.child.as_mut() else {
                break None;
            };
            match child.try_wait().expect("wait for sipp") {
                Some(status) => break Some(status),
                None if Instant::now() > self.deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break None;
                }
                None => std::thread::sleep(Duration::from_millis(20)),
            }
        };
        self.child = None;
        self.snapshot(status)
    }

    /// Kill SIPp now (e.g. its peer was killed) and collect what it logged.
    pub fn kill(mut self) -> SippRun {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.snapshot(None)
    }

    fn snapshot(&self, status: Option<ExitStatus>) -> SippRun {
        let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
        let log = read(&self.files.log);
        SippRun {
            command: self.command.clone(),
            status,
            responses: parse_logged_responses(&log),
            requests: parse_logged_requests(&log),
            log,
            errors: read(&self.files.errors),
            messages: read(&self.files.messages),
            stdout: read(&self.files.stdout),
        }
    }
}

impl Drop for SippProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

struct SippFiles {
    errors: PathBuf,
    log: PathBuf,
    messages: PathBuf,
    stdout: PathBuf,
}

impl SippFiles {
    fn new(dir: &Path) -> SippFiles {
        SippFiles {
            errors: dir.join("errors.log"),
            log: dir.join("scenario.log"),
            messages: dir.join("messages.log"),
            stdout: dir.join("stdout.log"),
        }
    }
}

fn shell_words(args: &[String]) -> String {
    args.iter()
        .map(|a| {
            if a.is_empty() || a.contains([' ', '<', '>', ';', '*', '"', '\'']) {
                format!("'{}'", a.replace('\'', "'\\''"))
            } else {
                a.clone()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The outcome of one SIPp run.
#[derive(Debug)]
pub struct SippRun {
    /// The command line, for failure messages.
    pub command: String,
    /// `None` when SIPp had to be killed after the bound.
    pub status: Option<ExitStatus>,
    /// The scenario's `<log>` output.
    pub log: String,
    /// `-error_file`: unexpected messages, failed regexps, timeouts.
    pub errors: String,
    /// `-message_file`: every message sent and received.
    pub messages: String,
    /// SIPp's screen output.
    pub stdout: String,
    /// Responses the scenario logged whole, in order.
    pub responses: Vec<SipResponse>,
    /// Requests the scenario logged whole (`@@REQUEST-BEGIN@@`), in order.
    pub requests: Vec<SipRequest>,
}

impl SippRun {
    pub fn exit_code(&self) -> Option<i32> {
        self.status.and_then(|s| s.code())
    }

    pub fn succeeded(&self) -> bool {
        self.exit_code() == Some(0)
    }

    /// Everything useful for a failure message.
    pub fn report(&self) -> String {
        let mut s = String::new();
        let status = match self.status {
            Some(st) => format!("{st}"),
            None => "killed after the time bound (or still running)".to_owned(),
        };
        let _ = writeln!(s, "$ {}\nSIPp {status}", self.command);
        let _ = writeln!(s, "----- SIPp errors -----\n{}", self.errors.trim_end());
        let _ = writeln!(s, "----- scenario log -----\n{}", self.log.trim_end());
        let _ = writeln!(
            s,
            "----- messages -----\n{}",
            tail(&self.messages, 12_000).trim_end()
        );
        let _ = writeln!(
            s,
            "----- SIPp screen (tail) -----\n{}",
            tail(&self.stdout, 3_000).trim_end()
        );
        s
    }

    /// Panics (printing SIPp's logs) unless SIPp exited 0: every call succeeded.
    #[track_caller]
    pub fn assert_success(&self) -> &SippRun {
        assert!(
            self.succeeded(),
            "SIPp scenario failed (exit {:?})\n{}",
            self.exit_code(),
            self.report()
        );
        self
    }

    /// Panics unless SIPp exited 1: it ran, and at least one call failed.
    #[track_caller]
    pub fn assert_calls_failed(&self) -> &SippRun {
        assert_eq!(
            self.exit_code(),
            Some(1),
            "expected SIPp to run with failed calls (exit 1)\n{}",
            self.report()
        );
        self
    }

    /// Responses with this status code, in order.
    pub fn responses_with(&self, status: u16) -> Vec<&SipResponse> {
        self.responses
            .iter()
            .filter(|r| r.status == status)
            .collect()
    }

    /// The last logged response with this status.
    #[track_caller]
    pub fn response(&self, status: u16) -> &SipResponse {
        self.responses
            .iter()
            .rev()
            .find(|r| r.status == status)
            .unwrap_or_else(|| panic!("no {status} response logged\n{}", self.report()))
    }

    /// Requests with this method (upper case) the scenario logged, in order.
    pub fn requests_with(&self, method: &str) -> Vec<&SipRequest> {
        self.requests
            .iter()
            .filter(|r| r.method == method)
            .collect()
    }

    /// The first line of every message SIPp received (from `-message_file`), in order:
    /// what reached it even when the scenario did not expect it.
    pub fn received_start_lines(&self) -> Vec<String> {
        received_start_lines(&self.messages)
    }

    /// How many requests with this method SIPp received (retransmissions included).
    pub fn received_count(&self, method: &str) -> usize {
        let prefix = format!("{method} ");
        self.received_start_lines()
            .iter()
            .filter(|l| l.starts_with(&prefix))
            .count()
    }

    #[track_caller]
    pub fn last_response(&self) -> &SipResponse {
        self.responses
            .last()
            .unwrap_or_else(|| panic!("no response logged\n{}", self.report()))
    }
}

fn tail(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut start = s.len() - max;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}

/// The first line of each message a `-message_file` says was received.
pub fn received_start_lines(messages: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut lines = messages.lines();
    while let Some(line) = lines.next() {
        if line.contains("message received") {
            if let Some(first) = lines.by_ref().map(str::trim).find(|l| !l.is_empty()) {
                out.push(first.to_owned());
            }
        }
    }
    out
}

/// Split a scenario log into the requests it logged whole (`@@REQUEST-BEGIN@@`).
pub fn parse_logged_requests(log: &str) -> Vec<SipRequest> {
    logged_between(log, "@@REQUEST-BEGIN@@", "@@REQUEST-END@@")
        .filter_map(SipRequest::parse)
        .collect()
}

fn logged_between<'a>(
    log: &'a str,
    begin: &'static str,
    end: &'static str,
) -> impl Iterator<Item = &'a str> + 'a {
    let mut rest = log;
    std::iter::from_fn(move || {
        let b = rest.find(begin)?;
        let after = &rest[b + begin.len()..];
        let e = after.find(end)?;
        rest = &after[e + end.len()..];
        Some(&after[..e])
    })
}

/// The message body: what follows the first empty line (CRLF or LF), trimmed of the
/// trailing blank lines SIPp's log adds.
fn body_of(raw: &str) -> &str {
    let at = [("\r\n\r\n", 4), ("\n\n", 2)]
        .iter()
        .filter_map(|(sep, len)| raw.find(sep).map(|i| (i, *len)))
        .min();
    match at {
        Some((i, len)) => raw[i + len..].trim_end(),
        None => "",
    }
}

/// Header lines of a message head after its start line: (lower-case full name, value).
fn parse_headers<'a>(lines: impl Iterator<Item = &'a str>) -> Vec<(String, String)> {
    let mut headers: Vec<(String, String)> = Vec::new();
    for line in lines {
        let line = line.trim_end_matches('\r');
        if line.is_empty() {
            break;
        }
        if line.starts_with([' ', '\t']) {
            if let Some(last) = headers.last_mut() {
                last.1.push(' ');
                last.1.push_str(line.trim());
            }
            continue;
        }
        if let Some((n, v)) = line.split_once(':') {
            headers.push((full_header_name(n), v.trim().to_owned()));
        }
    }
    headers
}

/// A SIP request as text (as a scenario logged it), with case-insensitive headers.
#[derive(Clone, Debug)]
pub struct SipRequest {
    pub raw: String,
    pub method: String,
    pub uri: String,
    /// (lower-case full name, value), in order; folded lines joined.
    pub headers: Vec<(String, String)>,
}

impl SipRequest {
    pub fn parse(text: &str) -> Option<SipRequest> {
        let text = text.trim_start_matches(['\r', '\n']);
        let mut lines = text.split('\n');
        let start = lines.next()?.trim_end_matches('\r');
        let mut parts = start.split(' ');
        let method = parts.next()?.to_owned();
        let uri = parts.next()?.to_owned();
        if parts.next()? != "SIP/2.0" || method.is_empty() {
            return None;
        }
        Some(SipRequest {
            raw: text.to_owned(),
            method,
            uri,
            headers: parse_headers(lines),
        })
    }

    pub fn header_values(&self, name: &str) -> Vec<&str> {
        let name = full_header_name(name);
        self.headers
            .iter()
            .filter(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.header_values(name).into_iter().next()
    }

    pub fn body(&self) -> &str {
        body_of(&self.raw)
    }

    /// The SDP body; panics (with the message) when there is none.
    #[track_caller]
    pub fn sdp(&self) -> Sdp {
        Sdp::parse(self.body())
            .unwrap_or_else(|| panic!("{} without an SDP body:\n{}", self.method, self.raw))
    }
}

/// The parts of an SDP body (RFC 8866) the call tests look at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sdp {
    pub raw: String,
    /// `o=` session version (the third field).
    pub origin_version: u64,
    /// Session-level `c=` address.
    pub connection: Option<String>,
    /// Session-level `a=` lines (without `a=`).
    pub attributes: Vec<String>,
    pub media: Vec<SdpMedia>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SdpMedia {
    pub kind: String,
    pub port: u16,
    pub proto: String,
    pub formats: Vec<String>,
    /// Media-level `c=` address.
    pub connection: Option<String>,
    /// Media-level `a=` lines (without `a=`).
    pub attributes: Vec<String>,
}

impl Sdp {
    pub fn parse(body: &str) -> Option<Sdp> {
        let mut sdp = Sdp {
            raw: body.to_owned(),
            origin_version: 0,
            connection: None,
            attributes: Vec::new(),
            media: Vec::new(),
        };
        let mut seen_v = false;
        for line in body.lines().map(|l| l.trim_end_matches('\r').trim_start()) {
            let Some((k, v)) = line.split_once('=') else {
                continue;
            };
            match k {
                "v" => seen_v = true,
                "o" => {
                    sdp.origin_version = v.split(' ').nth(2).and_then(|x| x.parse().ok())?;
                }
                "c" => {
                    let addr = v.split(' ').nth(2).map(str::to_owned);
                    match sdp.media.last_mut() {
                        Some(m) => m.connection = addr,
                        None => sdp.connection = addr,
                    }
                }
                "m" => {
                    let mut f = v.split(' ');
                    sdp.media.push(SdpMedia {
                        kind: f.next()?.to_owned(),
                        port: f.next()?.split('/').next()?.parse().ok()?,
                        proto: f.next()?.to_owned(),
                        formats: f.map(str::to_owned).collect(),
                        connection: None,
                        attributes: Vec::new(),
                    });
                }
                "a" => match sdp.media.last_mut() {
                    Some(m) => m.attributes.push(v.to_owned()),
                    None => sdp.attributes.push(v.to_owned()),
                },
                _ => {}
            }
        }
        seen_v.then_some(sdp)
    }

    /// The first `m=audio`; panics when there is none.
    #[track_caller]
    pub fn audio(&self) -> &SdpMedia {
        self.media
            .iter()
            .find(|m| m.kind == "audio")
            .unwrap_or_else(|| panic!("SDP without m=audio:\n{}", self.raw))
    }

    /// The audio stream's address: its own `c=`, else the session's.
    #[track_caller]
    pub fn audio_address(&self) -> String {
        let m = self.audio();
        m.connection
            .clone()
            .or_else(|| self.connection.clone())
            .unwrap_or_else(|| panic!("SDP without c=:\n{}", self.raw))
    }

    /// The audio direction (RFC 3264 §5.1): media-level attribute, else session-level,
    /// else `sendrecv`.
    pub fn audio_direction(&self) -> String {
        const DIRS: [&str; 4] = ["sendrecv", "sendonly", "recvonly", "inactive"];
        let m = self.audio();
        m.attributes
            .iter()
            .chain(self.attributes.iter())
            .find(|a| DIRS.contains(&a.as_str()))
            .cloned()
            .unwrap_or_else(|| "sendrecv".to_owned())
    }
}

/// A loopback UDP port free now (for a SIPp `-p` that only needs UDP, or an SDP port).
pub fn free_udp_port() -> u16 {
    UdpSocket::bind(("127.0.0.1", 0))
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral UDP port")
}

/// Split a scenario log into the responses it logged whole.
pub fn parse_logged_responses(log: &str) -> Vec<SipResponse> {
    const BEGIN: &str = "@@RESPONSE-BEGIN@@";
    const END: &str = "@@RESPONSE-END@@";
    let mut out = Vec::new();
    let mut rest = log;
    while let Some(b) = rest.find(BEGIN) {
        let after = &rest[b + BEGIN.len()..];
        let Some(e) = after.find(END) else { break };
        if let Some(r) = SipResponse::parse(&after[..e]) {
            out.push(r);
        }
        rest = &after[e + END.len()..];
    }
    out
}

/// A SIP response as text, with case-insensitive header access (compact forms mapped).
#[derive(Clone, Debug)]
pub struct SipResponse {
    pub raw: String,
    pub status: u16,
    pub reason: String,
    /// (lower-case full name, value), in order; folded lines joined.
    pub headers: Vec<(String, String)>,
}

fn full_header_name(name: &str) -> String {
    let lower = name.trim().to_ascii_lowercase();
    // RFC 3261 §7.3.3 compact forms.
    let full = match lower.as_str() {
        "m" => "contact",
        "f" => "from",
        "t" => "to",
        "i" => "call-id",
        "v" => "via",
        "l" => "content-length",
        "c" => "content-type",
        "k" => "supported",
        "e" => "content-encoding",
        "s" => "subject",
        other => other,
    };
    full.to_owned()
}

impl SipResponse {
    pub fn body(&self) -> &str {
        body_of(&self.raw)
    }

    /// The SDP body; panics (with the message) when there is none.
    #[track_caller]
    pub fn sdp(&self) -> Sdp {
        Sdp::parse(self.body()).unwrap_or_else(|| {
            panic!(
                "{} response without an SDP body:\n{}",
                self.status, self.raw
            )
        })
    }

    pub fn parse(text: &str) -> Option<SipResponse> {
        let text = text.trim_start_matches(['\r', '\n']);
        let head = text.split("\r\n\r\n").next().unwrap_or(text);
        let mut lines = head.split("\r\n").flat_map(|l| l.split('\n'));
        let status_line = lines.next()?.trim_end_matches('\r');
        let mut parts = status_line.splitn(3, ' ');
        if parts.next()? != "SIP/2.0" {
            return None;
        }
        let status = parts.next()?.parse().ok()?;
        let reason = parts.next().unwrap_or("").to_owned();
        let mut headers: Vec<(String, String)> = Vec::new();
        for line in lines {
            let line = line.trim_end_matches('\r');
            if line.is_empty() {
                break;
            }
            if line.starts_with([' ', '\t']) {
                if let Some(last) = headers.last_mut() {
                    last.1.push(' ');
                    last.1.push_str(line.trim());
                }
                continue;
            }
            if let Some((n, v)) = line.split_once(':') {
                headers.push((full_header_name(n), v.trim().to_owned()));
            }
        }
        Some(SipResponse {
            raw: text.to_owned(),
            status,
            reason,
            headers,
        })
    }

    /// All values of a header (each header line is one value; not split at commas).
    pub fn header_values(&self, name: &str) -> Vec<&str> {
        let name = full_header_name(name);
        self.headers
            .iter()
            .filter(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.header_values(name).into_iter().next()
    }

    /// The header names in order (lower case), e.g. to compare two responses' shapes.
    pub fn header_names(&self) -> Vec<&str> {
        self.headers.iter().map(|(n, _)| n.as_str()).collect()
    }

    /// Every Contact binding as (URI inside <>, `expires` param), splitting
    /// comma-separated lists.
    pub fn contacts(&self) -> Vec<Contact> {
        self.header_values("contact")
            .into_iter()
            .flat_map(split_contact_list)
            .map(|c| Contact::parse(&c))
            .collect()
    }

    /// The Digest challenges of `WWW-Authenticate` headers, in order.
    pub fn challenges(&self) -> Vec<DigestChallenge> {
        self.header_values("www-authenticate")
            .into_iter()
            .map(DigestChallenge::parse)
            .collect()
    }
}

fn split_contact_list(v: &str) -> Vec<String> {
    // Commas inside <...> or quotes do not separate contacts.
    let mut out = Vec::new();
    let (mut cur, mut angle, mut quote) = (String::new(), false, false);
    for ch in v.chars() {
        match ch {
            '<' if !quote => angle = true,
            '>' if !quote => angle = false,
            '"' => quote = !quote,
            ',' if !angle && !quote => {
                out.push(std::mem::take(&mut cur).trim().to_owned());
                continue;
            }
            _ => {}
        }
        cur.push(ch);
    }
    if !cur.trim().is_empty() {
        out.push(cur.trim().to_owned());
    }
    out
}

/// One Contact header entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Contact {
    /// The whole entry as sent.
    pub raw: String,
    /// The URI (inside `<>` when present).
    pub uri: String,
    /// The header `expires` parameter (after the `>`).
    pub expires: Option<u32>,
}

impl Contact {
    pub fn parse(raw: &str) -> Contact {
        let raw = raw.trim();
        let (uri, params) = match (raw.find('<'), raw.find('>')) {
            (Some(a), Some(b)) if a < b => (raw[a + 1..b].to_owned(), &raw[b + 1..]),
            _ => match raw.split_once(';') {
                Some((u, p)) => (u.trim().to_owned(), p),
                None => (raw.to_owned(), ""),
            },
        };
        let expires = params
            .split(';')
            .filter_map(|p| p.split_once('='))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case("expires"))
            .and_then(|(_, v)| v.trim().parse().ok());
        Contact {
            raw: raw.to_owned(),
            uri,
            expires,
        }
    }
}

/// A `WWW-Authenticate: Digest ...` challenge with its parameters in order.
#[derive(Clone, Debug)]
pub struct DigestChallenge {
    pub scheme: String,
    /// (lower-case name, unquoted value), in order.
    pub params: Vec<(String, String)>,
}

impl DigestChallenge {
    pub fn parse(v: &str) -> DigestChallenge {
        let v = v.trim();
        let (scheme, rest) = v.split_once(' ').unwrap_or((v, ""));
        let mut params = Vec::new();
        let mut chars = rest.chars().peekable();
        loop {
            while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
                chars.next();
            }
            let name: String = chars
                .by_ref()
                .take_while(|c| *c != '=')
                .collect::<String>()
                .trim()
                .to_ascii_lowercase();
            if name.is_empty() {
                break;
            }
            while chars.peek().is_some_and(|c| c.is_whitespace()) {
                chars.next();
            }
            let mut value = String::new();
            if chars.peek() == Some(&'"') {
                chars.next();
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => {
                            if let Some(n) = chars.next() {
                                value.push(n);
                            }
                        }
                        '"' => break,
                        c => value.push(c),
                    }
                }
            } else {
                while let Some(c) = chars.peek() {
                    if *c == ',' {
                        break;
                    }
                    value.push(*c);
                    chars.next();
                }
            }
            params.push((name, value.trim().to_owned()));
        }
        DigestChallenge {
            scheme: scheme.to_owned(),
            params,
        }
    }

    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Parameter names in order.
    pub fn param_names(&self) -> Vec<&str> {
        self.params.iter().map(|(n, _)| n.as_str()).collect()
    }
}

/// An agent's SIPp phone: it registers as its agent from its own loopback port (Contact =
/// that port, so the binding's contact and source are the same, whichever one voxgate
/// routes to), then runs its scenarios there.
pub struct Phone {
    pub user: &'static str,
    pub password: &'static str,
    pub port: u16,
}

impl Phone {
    pub fn new((user, password): (&'static str, &'static str)) -> Phone {
        Phone {
            user,
            password,
            port: free_port_on(std::net::Ipv4Addr::LOCALHOST.into()),
        }
    }

    pub fn contact(&self) -> String {
        format!("<sip:{}@127.0.0.1:{};transport=udp>", self.user, self.port)
    }

    /// REGISTER (with digest) to the gateway at `sip_port`.
    pub fn register(&self, sip_port: u16) {
        Sipp::new("register.xml")
            .local_port(self.port)
            .service(self.user)
            .auth(self.user, self.password)
            .set("contact", &self.contact())
            .set("hdr", "Expires: 3600")
            .run(sip_port)
            .assert_success();
    }

    /// A scenario that answers voxgate's INVITEs on this phone.
    pub fn answer(&self, scenario: &str) -> Sipp {
        Sipp::new(scenario)
            .local_port(self.port)
            .service(self.user)
            .timeout(Duration::from_secs(40))
    }

    /// A scenario that calls `callee` from this phone (digest credentials of this agent,
    /// digest uri = the Request-URI `sip:<callee>@127.0.0.1`).
    pub fn dial(&self, scenario: &str, callee: &str) -> Sipp {
        Sipp::new(scenario)
            .local_port(self.port)
            .service(callee)
            .auth(self.user, self.password)
            .auth_uri(&format!("{callee}@127.0.0.1"))
            .set("caller", self.user)
            .timeout(Duration::from_secs(40))
    }
}

/// Starts a SIPp process that waits for requests (a phone's answering scenario, a
/// carrier) and returns once it has bound its UDP port.
pub async fn listen(sipp: Sipp, sip_port: u16) -> SippProcess {
    let mut p = sipp.spawn(sip_port);
    let port = p.port();
    let until = Instant::now() + Duration::from_secs(5);
    while UdpSocket::bind((std::net::Ipv4Addr::LOCALHOST, port)).is_ok() {
        assert!(p.running(), "SIPp exited at start: {}", p.kill().report());
        assert!(
            Instant::now() < until,
            "SIPp did not bind UDP {port} within 5 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    p
}

#[cfg(test)]
mod parse_tests {
    use super::*;

    const LOG: &str = "INPUT contact=x hdr=y\n@@RESPONSE-BEGIN@@SIP/2.0 401 Unauthorized\r\n\
        Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-1\r\n\
        WWW-Authenticate: Digest realm=\"voxgate\", nonce=\"n1\", opaque=\"o1\", algorithm=SHA-256, qop=\"auth\"\r\n\
        WWW-Authenticate: Digest realm=\"voxgate\", nonce=\"n2\", opaque=\"o2\", algorithm=MD5, qop=\"auth\"\r\n\
        Content-Length: 0\r\n\r\n@@RESPONSE-END@@\nCHECK\n\
        @@RESPONSE-BEGIN@@SIP/2.0 200 OK\r\nm: <sip:a@127.0.0.1:5070;transport=udp>;expires=120, <sip:a@127.0.0.1:5071>;expires=3600\r\n\
        Contact: <sip:a@127.0.0.1:5072>\r\n\r\n@@RESPONSE-END@@\n";

    #[test]
    fn parses_logged_requests_and_sdp() {
        let log = "INPUT rtp=9\n@@REQUEST-BEGIN@@INVITE sip:bob@127.0.0.1:5080;transport=udp SIP/2.0\r\n\
            Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-x\r\nCSeq: 1 INVITE\r\n\
            Content-Type: application/sdp\r\nContent-Length: 120\r\n\r\n\
            v=0\r\no=- 17 42 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
            m=audio 30002 RTP/AVP 0 8 101\r\na=rtpmap:101 telephone-event/8000\r\na=sendonly\r\n\r\n\
            @@REQUEST-END@@\n@@REQUEST-BEGIN@@ACK sip:x SIP/2.0\r\nCSeq: 1 ACK\r\n\r\n@@REQUEST-END@@";
        let rs = parse_logged_requests(log);
        assert_eq!(rs.len(), 2);
        assert_eq!(rs[0].method, "INVITE");
        assert_eq!(rs[0].uri, "sip:bob@127.0.0.1:5080;transport=udp");
        assert_eq!(rs[0].header("cseq"), Some("1 INVITE"));
        let sdp = rs[0].sdp();
        assert_eq!(sdp.origin_version, 42);
        assert_eq!(sdp.audio_address(), "127.0.0.1");
        assert_eq!(sdp.audio().port, 30002);
        assert_eq!(sdp.audio().formats, ["0", "8", "101"]);
        assert_eq!(sdp.audio_direction(), "sendonly");
        assert_eq!(rs[1].method, "ACK");
        assert_eq!(rs[1].body(), "");
        let msgs = "----- x\nUDP message received [10] bytes :\n\nBYE sip:a SIP/2.0\nVia: v\n\n\
            ----- y\nUDP message sent (3 bytes):\n\nSIP/2.0 200 OK\n";
        assert_eq!(received_start_lines(msgs), ["BYE sip:a SIP/2.0"]);
    }

    #[test]
    fn parses_logged_responses() {
        let rs = parse_logged_responses(LOG);
        assert_eq!(rs.len(), 2);
        assert_eq!(rs[0].status, 401);
        let ch = rs[0].challenges();
        assert_eq!(ch.len(), 2);
        assert_eq!(ch[0].scheme, "Digest");
        assert_eq!(ch[0].param("algorithm"), Some("SHA-256"));
        assert_eq!(ch[1].param("nonce"), Some("n2"));
        assert_eq!(
            ch[1].param_names(),
            ["realm", "nonce", "opaque", "algorithm", "qop"]
        );
        let c = rs[1].contacts();
        assert_eq!(c.len(), 3);
        assert_eq!(c[0].uri, "sip:a@127.0.0.1:5070;transport=udp");
        assert_eq!(c[0].expires, Some(120));
        assert_eq!(c[1].expires, Some(3600));
        assert_eq!(c[2].expires, None);
    }
}
