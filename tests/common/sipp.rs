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
    pub fn run(mut self, sip_port: u16) -> SippRun {
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
            "1".into(),
            // The digest uri must be the Request-URI we send (sip:127.0.0.1), not
            // SIPp's default sip:<remote_ip>:<remote_port>.
            "-auth_uri".into(),
            "127.0.0.1".into(),
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
        let mut child = Command::new("sipp")
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

        let deadline = Instant::now() + self.timeout + Duration::from_secs(10);
        let status = loop {
            match child.try_wait().expect("wait for sipp") {
                Some(status) => break Some(status),
                None if Instant::now() > deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break None;
                }
                None => std::thread::sleep(Duration::from_millis(20)),
            }
        };

        let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
        let log = read(&files.log);
        SippRun {
            command: format!("sipp {}", shell_words(&args)),
            status,
            responses: parse_logged_responses(&log),
            log,
            errors: read(&files.errors),
            messages: read(&files.messages),
            stdout: read(&files.stdout),
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
            None => "killed after the time bound".to_owned(),
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
