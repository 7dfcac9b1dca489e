//! Real softphones for the audio tests: baresip 1.0.0 (Debian's `baresip`), headless,
//! each in its own config dir, driven over `ctrl_tcp`; speech made with espeak-ng and
//! sox; and the comparison of what one side sent with what the other recorded
//! ([`compare`]).
//!
//! What a baresip here is made of (learned on baresip 1.0.0, see `tests/README.md`):
//! - `-f <dir> -n 127.0.0.1`: config, accounts and contacts in `<dir>`; `-n` pins the
//!   local address to loopback (without it baresip picks another interface).
//! - modules `g711` (PCMU/PCMA), `aufile` (audio source: plays a WAV), `aubridge` (a
//!   player that needs no sound card: with no matching aubridge source it just discards
//!   what it is given), `sndfile` (writes what it sent and what it decoded to
//!   `<snd_path>/dump-<time>-enc.wav` and `…-dec.wav`), `account`, `menu` (commands;
//!   it also hangs the call up when the aufile source reaches the end of its file) and
//!   `ctrl_tcp` (netstring JSON commands and events on loopback).
//! - account line `<sip:user@host:port>;auth_pass=…;answermode=auto;regint=…;
//!   audio_codecs=PCMU`; `regint=0` for no registration (direct calls).
//! - baresip 1.0.0 (libre) answers only MD5 digest challenges, and gives up
//!   ("Register: Function not implemented") when the first WWW-Authenticate is
//!   SHA-256; voxgate's default challenge is MD5 only, so it registers on the defaults.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::{free_tcp_port, free_udp_tcp_port};

const MODULE_DIR: &str = "/usr/lib/baresip/modules";
const READY_TIMEOUT: Duration = Duration::from_secs(10);
const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);

/// What one softphone is: who it is, where it registers, what it plays.
pub struct PhoneConfig {
    /// The name used for the config dir and in messages (`alice`).
    pub name: String,
    /// The account's AOR, `sip:alice@127.0.0.1` or `sip:alice@127.0.0.1:<gw port>`.
    pub aor: String,
    /// Digest password (`auth_pass`), if it registers.
    pub password: Option<String>,
    /// Registration interval in seconds; 0: no REGISTER.
    pub regint: u32,
    /// The WAV its audio source plays (8 kHz mono 16-bit; see [`speech_wav`]).
    pub source_wav: PathBuf,
}

/// A running baresip, its config dir and its control connection. Killed on drop.
pub struct Baresip {
    pub name: String,
    pub sip_port: u16,
    pub ctrl_port: u16,
    /// Where `sndfile` writes the `dump-…` WAVs.
    pub rec_dir: PathBuf,
    pub log_path: PathBuf,
    child: Option<Child>,
    ctrl: TcpStream,
    events: Arc<(Mutex<Inbox>, Condvar)>,
    next_token: u32,
    _dir: tempfile::TempDir,
}

#[derive(Default)]
struct Inbox {
    /// Every message read so far (events and command responses), in order.
    messages: Vec<Value>,
    /// The reader stopped (connection closed or broken).
    closed: bool,
}

fn config_text(sip_port: u16, ctrl_port: u16, source: &Path, rec_dir: &Path) -> String {
    // The aubridge device name only has to be one no source uses.
    format!(
        "poll_method\t\tepoll
sip_listen\t\t127.0.0.1:{sip_port}
call_local_timeout\t30
call_max_calls\t\t4
audio_player\t\taubridge,discard_{sip_port}
audio_alert\t\taubridge,discard_{sip_port}
audio_source\t\taufile,{source}
ausrc_srate\t\t8000
ausrc_channels\t\t1
audio_buffer\t\t20-160
rtp_ports\t\t20000-29999
jitter_buffer_delay\t5-10
module_path\t\t{MODULE_DIR}
module\t\t\tg711.so
module\t\t\tg722.so
module\t\t\topus.so
module\t\t\taufile.so
module\t\t\taubridge.so
module\t\t\tsndfile.so
module_tmp\t\taccount.so
module_app\t\tmenu.so
module_app\t\tctrl_tcp.so
ctrl_tcp_listen\t\t127.0.0.1:{ctrl_port}
snd_path\t\t{rec}
",
        source = source.display(),
        rec = rec_dir.display(),
    )
}

impl Baresip {
    /// Write the config dir, start baresip and connect to its `ctrl_tcp` (bounded).
    pub fn start(cfg: &PhoneConfig) -> Baresip {
        Baresip::start_with(cfg, "")
    }

    /// [`Baresip::start`] with extra config lines (`sip_cafile <pem>` for TLS). baresip
    /// listens for TLS on its SIP port + 1.
    pub fn start_with(cfg: &PhoneConfig, extra_config: &str) -> Baresip {
        Baresip::start_full(cfg, extra_config, "PCMU")
    }

    /// [`Baresip::start`] offering and accepting only `audio_codecs` (baresip's
    /// comma-separated account parameter: `opus`, `G722`, `PCMA`…).
    pub fn start_codecs(cfg: &PhoneConfig, audio_codecs: &str) -> Baresip {
        Baresip::start_full(cfg, "", audio_codecs)
    }

    fn start_full(cfg: &PhoneConfig, extra_config: &str, audio_codecs: &str) -> Baresip {
        assert!(
            Path::new(MODULE_DIR).join("ctrl_tcp.so").exists(),
            "baresip modules missing under {MODULE_DIR}: run scripts/install-test-deps.sh"
        );
        assert!(
            cfg.source_wav.exists(),
            "{}: source WAV {} missing",
            cfg.name,
            cfg.source_wav.display()
        );
        let dir = tempfile::Builder::new()
            .prefix(&format!("voxgate-baresip-{}-", cfg.name))
            .tempdir()
            .expect("temp dir");
        let rec_dir = dir.path().join("rec");
        std::fs::create_dir(&rec_dir).expect("rec dir");
        // baresip listens for TLS on the SIP port + 1: that one must be free too.
        let sip_port = (0..50)
            .map(|_| free_udp_tcp_port())
            .find(|p| {
                p.checked_add(1).is_some_and(|tls| {
                    std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, tls)).is_ok()
                })
            })
            .expect("a free port whose next one is free too");
        let ctrl_port = free_tcp_port();
        std::fs::write(
            dir.path().join("config"),
            config_text(sip_port, ctrl_port, &cfg.source_wav, &rec_dir) + extra_config,
        )
        .expect("write config");
        let mut account = format!(
            "<{}>;answermode=auto;regint={};audio_codecs={audio_codecs}",
            cfg.aor, cfg.regint
        );
        if let Some(pass) = &cfg.password {
            account.push_str(&format!(";auth_pass={pass}"));
        }
        std::fs::write(dir.path().join("accounts"), format!("{account}\n")).expect("accounts");
        std::fs::write(dir.path().join("contacts"), "").expect("contacts");

        let log_path = dir.path().join("baresip.log");
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .expect("open baresip log");
        let child = Command::new("baresip")
            .arg("-f")
            .arg(dir.path())
            .args(["-n", "127.0.0.1"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log"))
            .stderr(log)
            .spawn()
            .expect("spawn baresip (run scripts/install-test-deps.sh)");
        let mut child = Some(child);

        // ctrl_tcp listens once the modules are loaded: poll the connect, bounded.
        let deadline = Instant::now() + READY_TIMEOUT;
        let ctrl = loop {
            if let Some(status) = child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!(
                    "{}: baresip exited at start ({status}):\n{}",
                    cfg.name,
                    read_log(&log_path)
                );
            }
            match TcpStream::connect((Ipv4Addr::LOCALHOST, ctrl_port)) {
                Ok(s) => break s,
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => {
                    if let Some(mut c) = child.take() {
                        let _ = c.kill();
                        let _ = c.wait();
                    }
                    panic!(
                        "{}: ctrl_tcp on 127.0.0.1:{ctrl_port} not up after {READY_TIMEOUT:?}: {e}\n{}",
                        cfg.name,
                        read_log(&log_path)
                    );
                }
            }
        };
        let events = Arc::new((Mutex::new(Inbox::default()), Condvar::new()));
        let reader = ctrl.try_clone().expect("clone ctrl socket");
        let inbox = Arc::clone(&events);
        std::thread::spawn(move || read_netstrings(reader, &inbox));
        Baresip {
            name: cfg.name.clone(),
            sip_port,
            ctrl_port,
            rec_dir,
            log_path,
            child,
            ctrl,
            events,
            next_token: 0,
            _dir: dir,
        }
    }

    /// Everything baresip printed so far (its status line uses `\r`; shown as is).
    pub fn log(&self) -> String {
        read_log(&self.log_path)
    }

    /// The source ports baresip reported receiving RTP from ("stream: incoming rtp for
    /// 'audio' established, receiving from 127.0.0.1:<port>"), in order.
    pub fn rtp_source_ports(&self) -> Vec<u16> {
        self.log()
            .lines()
            .filter_map(|l| l.split("receiving from ").nth(1))
            .filter_map(|a| a.trim().rsplit(':').next()?.parse().ok())
            .collect()
    }

    /// Send a `ctrl_tcp` command and wait (bounded) for its response; `Err` carries the
    /// response or the reason.
    pub fn command(&mut self, command: &str, params: &str) -> Result<Value, String> {
        self.next_token += 1;
        let token = format!("{}-{}", self.name, self.next_token);
        let body = json!({ "command": command, "params": params, "token": token }).to_string();
        let frame = format!("{}:{},", body.len(), body);
        self.ctrl
            .write_all(frame.as_bytes())
            .map_err(|e| format!("{}: ctrl_tcp write: {e}", self.name))?;
        let resp = self.wait_message(COMMAND_TIMEOUT, |m| {
            m["response"] == json!(true) && m["token"] == json!(token)
        })?;
        if resp["ok"] == json!(true) {
            Ok(resp)
        } else {
            Err(format!("{}: {command} {params}: {resp}", self.name))
        }
    }

    pub fn dial(&mut self, uri: &str) -> Result<Value, String> {
        self.command("dial", uri)
    }

    pub fn hangup(&mut self) -> Result<Value, String> {
        self.command("hangup", "")
    }

    /// Wait (bounded) for an event of this `type` (`CALL_ESTABLISHED`, `CALL_CLOSED`,
    /// `REGISTER_OK`, …), counting every one received since start, including earlier ones.
    pub fn wait_event(&self, kind: &str, timeout: Duration) -> Result<Value, String> {
        self.wait_message(timeout, |m| {
            m["event"] == json!(true) && m["type"] == json!(kind)
        })
    }

    /// Wait (bounded) for an event of this `type` that `want` accepts (counting every one
    /// received since start).
    pub fn wait_event_where(
        &self,
        kind: &str,
        want: impl Fn(&Value) -> bool,
        timeout: Duration,
    ) -> Result<Value, String> {
        self.wait_message(timeout, |m| {
            m["event"] == json!(true) && m["type"] == json!(kind) && want(m)
        })
    }

    /// The first event of one of these types, whichever comes first.
    pub fn wait_any_event(&self, kinds: &[&str], timeout: Duration) -> Result<Value, String> {
        self.wait_message(timeout, |m| {
            m["event"] == json!(true) && kinds.iter().any(|k| m["type"] == json!(k))
        })
    }

    /// Every event received so far (for failure messages).
    pub fn events(&self) -> Vec<Value> {
        let (lock, _) = &*self.events;
        lock.lock()
            .expect("inbox lock")
            .messages
            .iter()
            .filter(|m| m["event"] == json!(true) && m["type"] != json!("CALL_RTCP"))
            .cloned()
            .collect()
    }

    fn wait_message(
        &self,
        timeout: Duration,
        want: impl Fn(&Value) -> bool,
    ) -> Result<Value, String> {
        let deadline = Instant::now() + timeout;
        let (lock, cvar) = &*self.events;
        let mut inbox = lock.lock().expect("inbox lock");
        loop {
            if let Some(m) = inbox.messages.iter().find(|m| want(m)) {
                return Ok(m.clone());
            }
            let now = Instant::now();
            if inbox.closed || now >= deadline {
                let why = if inbox.closed {
                    "ctrl_tcp connection closed"
                } else {
                    "timed out"
                };
                let seen: Vec<String> = inbox
                    .messages
                    .iter()
                    .filter(|m| m["type"] != json!("CALL_RTCP"))
                    .map(Value::to_string)
                    .collect();
                return Err(format!(
                    "{}: {why} after {timeout:?}; messages so far:\n  {}",
                    self.name,
                    seen.join("\n  ")
                ));
            }
            inbox = cvar
                .wait_timeout(inbox, deadline - now)
                .expect("inbox wait")
                .0;
        }
    }

    /// The WAV `sndfile` wrote with what this phone decoded (heard). One call per phone:
    /// exactly one `dump-*-dec.wav` is expected. Read it after the call closed (the
    /// header is finished when the call ends).
    pub fn received_wav(&self) -> Result<PathBuf, String> {
        let mut found: Vec<PathBuf> = std::fs::read_dir(&self.rec_dir)
            .map_err(|e| format!("{}: read {}: {e}", self.name, self.rec_dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("dump-") && n.ends_with("-dec.wav"))
            })
            .collect();
        match found.len() {
            1 => Ok(found.remove(0)),
            n => Err(format!(
                "{}: {n} dump-*-dec.wav files in {} (want 1): {found:?}",
                self.name,
                self.rec_dir.display()
            )),
        }
    }

    /// Ask baresip to quit, then kill it if it has not exited within 2 s.
    pub fn stop(&mut self) {
        if self.child.is_some() {
            let _ = self.command("quit", "");
        }
        if let Some(mut child) = self.child.take() {
            let deadline = Instant::now() + Duration::from_secs(2);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Baresip {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "----- baresip {} ({}) -----\n{}\n-----",
                self.name,
                self.log_path.display(),
                self.log()
            );
        }
        let _ = self.ctrl.shutdown(std::net::Shutdown::Both);
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn read_log(path: &Path) -> String {
    let mut s = String::new();
    if let Ok(mut f) = File::open(path) {
        let mut bytes = Vec::new();
        let _ = f.read_to_end(&mut bytes);
        s = String::from_utf8_lossy(&bytes).replace('\r', "\n");
    }
    // The status line repeats every 100 ms; keep the rest readable.
    s.lines()
        .filter(|l| !l.trim_start().starts_with("[0:"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Reader thread: `len:json,` netstrings from ctrl_tcp into the inbox.
fn read_netstrings(mut sock: TcpStream, inbox: &(Mutex<Inbox>, Condvar)) {
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let n = match sock.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        let mut parsed = Vec::new();
        while let Some((msg, used)) = parse_netstring(&buf) {
            parsed.push(msg);
            buf.drain(..used);
        }
        if !parsed.is_empty() {
            let (lock, cvar) = inbox;
            let mut ib = lock.lock().expect("inbox lock");
            for m in parsed {
                ib.messages.push(
                    serde_json::from_slice(&m)
                        .unwrap_or_else(|_| json!({ "unparsed": String::from_utf8_lossy(&m) })),
                );
            }
            cvar.notify_all();
        }
    }
    let (lock, cvar) = inbox;
    lock.lock().expect("inbox lock").closed = true;
    cvar.notify_all();
}

/// One complete netstring at the start of `buf`: (payload, bytes consumed).
fn parse_netstring(buf: &[u8]) -> Option<(Vec<u8>, usize)> {
    let colon = buf.iter().position(|&b| b == b':')?;
    let len: usize = std::str::from_utf8(&buf[..colon])
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let end = colon + 1 + len;
    if buf.len() < end + 1 {
        return None;
    }
    Some((buf[colon + 1..end].to_vec(), end + 1))
}

/// Speak `text` with espeak-ng and convert it with sox to 8 kHz mono 16-bit, with
/// `lead` seconds of silence before and `trail` after, into `dir/<name>.wav`.
pub fn speech_wav(dir: &Path, name: &str, text: &str, lead: f32, trail: f32) -> PathBuf {
    let raw = dir.join(format!("{name}-espeak.wav"));
    let out = dir.join(format!("{name}.wav"));
    let st = Command::new("espeak-ng")
        .arg("-w")
        .arg(&raw)
        .arg(text)
        .status()
        .expect("run espeak-ng (run scripts/install-test-deps.sh)");
    assert!(st.success(), "espeak-ng failed: {st}");
    let st = Command::new("sox")
        .arg(&raw)
        .args(["-r", "8000", "-c", "1", "-b", "16"])
        .arg(&out)
        .args(["pad", &lead.to_string(), &trail.to_string()])
        .status()
        .expect("run sox (run scripts/install-test-deps.sh)");
    assert!(st.success(), "sox failed: {st}");
    out
}

/// Mono samples in [-1, 1] and the sample rate (channels averaged).
pub fn read_wav(path: &Path) -> (Vec<f32>, u32) {
    let mut r =
        hound::WavReader::open(path).unwrap_or_else(|e| panic!("open WAV {}: {e}", path.display()));
    let spec = r.spec();
    let ch = usize::from(spec.channels.max(1));
    let interleaved: Vec<f32> = match spec.sample_format {
        hound::SampleFormat::Int => {
            let scale = 1.0 / (1u64 << (spec.bits_per_sample - 1)) as f32;
            r.samples::<i32>()
                .map(|s| s.map(|v| v as f32 * scale))
                .collect::<Result<_, _>>()
        }
        hound::SampleFormat::Float => r.samples::<f32>().collect::<Result<_, _>>(),
    }
    .unwrap_or_else(|e| panic!("read WAV {}: {e}", path.display()));
    let mono = interleaved
        .chunks(ch)
        .map(|c| c.iter().sum::<f32>() / c.len() as f32)
        .collect();
    (mono, spec.sample_rate)
}

pub mod compare {
    //! Does the received audio carry the sent audio? Both are aligned by
    //! cross-correlation and compared three ways:
    //!
    //! - `ncc`: the normalised cross-correlation of the samples at the best lag, over
    //!   the whole reference (received samples outside the recording count as zero, so
    //!   a truncated reception scores lower). One global lag: a slip in the middle (a
    //!   jitter buffer resizing) halves it.
    //! - `windowed_ncc`: the reference cut into 250 ms windows, each re-aligned within
    //!   ±20 ms of the global lag, their NCCs averaged weighted by the window's energy.
    //!   Robust to small slips, still a waveform match (G.711 keeps it near 1).
    //! - `envelope_corr`: Pearson correlation of the 10 ms RMS envelopes at the lag.
    //! - `coverage`: the share of the reference's speech frames (within 30 dB of its
    //!   loudest frame) with a received frame within ±20 ms of the aligned one that has
    //!   at least a quarter of their RMS (-12 dB): the whole sentence arrived, at about
    //!   its level.
    //!
    //! The lag is searched in two steps: envelopes over ±`max_lag` (10 ms resolution),
    //! then samples within ±20 ms of that.

    /// How well `received` reproduces `reference`; `lag` is in samples, positive when
    /// the reference's sample 0 is at `received[lag]`.
    #[derive(Debug, Clone, Copy)]
    pub struct Match {
        pub lag: i64,
        pub ncc: f64,
        pub windowed_ncc: f64,
        pub envelope_corr: f64,
        pub coverage: f64,
    }

    impl std::fmt::Display for Match {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(
                f,
                "lag {} samples, ncc {:.4}, windowed ncc {:.4}, envelope corr {:.4}, coverage {:.3}",
                self.lag, self.ncc, self.windowed_ncc, self.envelope_corr, self.coverage
            )
        }
    }

    /// Linear-interpolation resampling (enough to bring a recording to the reference's
    /// rate; both are 8 kHz with PCMU).
    pub fn resample(x: &[f32], from: u32, to: u32) -> Vec<f32> {
        if from == to || x.is_empty() {
            return x.to_vec();
        }
        let n = (x.len() as u64 * u64::from(to) / u64::from(from)) as usize;
        let step = f64::from(from) / f64::from(to);
        (0..n)
            .map(|i| {
                let t = i as f64 * step;
                let k = t.floor() as usize;
                let frac = (t - k as f64) as f32;
                let a = x[k.min(x.len() - 1)];
                let b = x[(k + 1).min(x.len() - 1)];
                a + (b - a) * frac
            })
            .collect()
    }

    fn at(x: &[f32], i: i64) -> f64 {
        if i < 0 {
            0.0
        } else {
            x.get(i as usize).map_or(0.0, |&v| f64::from(v))
        }
    }

    /// NCC of `reference[start..end]` with `received[start+lag..end+lag]`.
    fn ncc_span(reference: &[f32], received: &[f32], start: usize, end: usize, lag: i64) -> f64 {
        let (mut xy, mut xx, mut yy) = (0.0, 0.0, 0.0);
        for (i, &r) in reference.iter().enumerate().take(end).skip(start) {
            let x = f64::from(r);
            let y = at(received, i as i64 + lag);
            xy += x * y;
            xx += x * x;
            yy += y * y;
        }
        if xx <= 0.0 || yy <= 0.0 {
            0.0
        } else {
            xy / (xx * yy).sqrt()
        }
    }

    /// RMS of `frame`-sample frames of `x` starting at `offset` (may be negative).
    fn envelope(x: &[f32], offset: i64, frame: usize, frames: usize) -> Vec<f64> {
        (0..frames)
            .map(|k| {
                let s = offset + (k * frame) as i64;
                let e: f64 = (s..s + frame as i64).map(|i| at(x, i).powi(2)).sum();
                (e / frame as f64).sqrt()
            })
            .collect()
    }

    fn pearson(a: &[f64], b: &[f64]) -> f64 {
        let n = a.len().min(b.len());
        if n == 0 {
            return 0.0;
        }
        let ma = a[..n].iter().sum::<f64>() / n as f64;
        let mb = b[..n].iter().sum::<f64>() / n as f64;
        let (mut ab, mut aa, mut bb) = (0.0, 0.0, 0.0);
        for i in 0..n {
            let (x, y) = (a[i] - ma, b[i] - mb);
            ab += x * y;
            aa += x * x;
            bb += y * y;
        }
        if aa <= 0.0 || bb <= 0.0 {
            0.0
        } else {
            ab / (aa * bb).sqrt()
        }
    }

    /// Compare `received` with `reference` (same `rate`), searching the lag in
    /// ±`max_lag_s` seconds.
    pub fn compare(reference: &[f32], received: &[f32], rate: u32, max_lag_s: f64) -> Match {
        let frame = (rate / 100) as usize; // 10 ms
        let frames = reference.len() / frame;
        let ref_env = envelope(reference, 0, frame, frames);
        let max_lag_frames = (max_lag_s * 100.0).round() as i64;

        // Coarse: envelopes, 10 ms steps. Received frames outside the recording are 0.
        let rx_frames = received.len().div_ceil(frame) as i64;
        let mut coarse = (0i64, f64::NEG_INFINITY);
        for lf in -max_lag_frames..=max_lag_frames {
            if lf + frames as i64 <= 0 || lf >= rx_frames {
                continue;
            }
            let rx_env = envelope(received, lf * frame as i64, frame, frames);
            let c = pearson(&ref_env, &rx_env);
            if c > coarse.1 {
                coarse = (lf, c);
            }
        }

        // Fine: samples, ±2 frames around the coarse lag.
        let centre = coarse.0 * frame as i64;
        let mut best = (centre, f64::NEG_INFINITY);
        for lag in centre - 2 * frame as i64..=centre + 2 * frame as i64 {
            let c = ncc_span(reference, received, 0, reference.len(), lag);
            if c > best.1 {
                best = (lag, c);
            }
        }
        let (lag, ncc) = best;

        // Windows of 250 ms, each re-aligned within ±20 ms.
        let win = (rate / 4) as usize;
        let slack = (rate / 50) as i64;
        let (mut num, mut den) = (0.0, 0.0);
        let mut start = 0;
        while start < reference.len() {
            let end = (start + win).min(reference.len());
            let energy: f64 = reference[start..end]
                .iter()
                .map(|&v| f64::from(v).powi(2))
                .sum();
            if energy > 0.0 {
                let c = (lag - slack..=lag + slack)
                    .map(|l| ncc_span(reference, received, start, end, l))
                    .fold(f64::NEG_INFINITY, f64::max);
                num += energy * c;
                den += energy;
            }
            start = end;
        }
        let windowed_ncc = if den > 0.0 { num / den } else { 0.0 };

        let rx_env = envelope(received, lag, frame, frames);
        let envelope_corr = pearson(&ref_env, &rx_env);

        let peak = ref_env.iter().copied().fold(0.0, f64::max);
        let floor = peak * 10f64.powf(-30.0 / 20.0);
        let speech: Vec<usize> = (0..frames).filter(|&k| ref_env[k] >= floor).collect();
        // Within ±2 frames (±20 ms): a slip of the stream must not count as lost audio.
        let heard = speech
            .iter()
            .filter(|&&k| {
                let near = rx_env[k.saturating_sub(2)..(k + 3).min(frames)]
                    .iter()
                    .copied()
                    .fold(0.0, f64::max);
                peak > 0.0 && near >= 0.25 * ref_env[k]
            })
            .count();
        let coverage = if speech.is_empty() {
            0.0
        } else {
            heard as f64 / speech.len() as f64
        };

        Match {
            lag,
            ncc,
            windowed_ncc,
            envelope_corr,
            coverage,
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        const RATE: u32 = 8000;

        struct XorShift(u64);
        impl XorShift {
            fn next(&mut self) -> f64 {
                self.0 ^= self.0 << 13;
                self.0 ^= self.0 >> 7;
                self.0 ^= self.0 << 17;
                (self.0 >> 11) as f64 / (1u64 << 53) as f64
            }
        }

        /// Speech-like test signal: voiced "syllables" (a pitch with harmonics, an
        /// attack/decay envelope), some noise bursts, silence between them.
        fn pseudo_speech(seed: u64, seconds: f64) -> Vec<f32> {
            let mut rng = XorShift(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
            let n = (seconds * f64::from(RATE)) as usize;
            let mut out = vec![0f32; n];
            let mut pos = (0.3 * f64::from(RATE)) as usize;
            while pos < n.saturating_sub(RATE as usize / 2) {
                let len = ((0.08 + 0.17 * rng.next()) * f64::from(RATE)) as usize;
                let amp = 0.1 + 0.4 * rng.next();
                let f0 = 90.0 + 130.0 * rng.next();
                let noisy = rng.next() < 0.25;
                for i in 0..len.min(n - pos) {
                    let t = i as f64 / f64::from(RATE);
                    let env = (std::f64::consts::PI * i as f64 / len as f64).sin();
                    let v = if noisy {
                        rng.next() * 2.0 - 1.0
                    } else {
                        (1..=8)
                            .map(|h| {
                                (2.0 * std::f64::consts::PI * f0 * f64::from(h) * t).sin()
                                    / f64::from(h)
                            })
                            .sum::<f64>()
                            * 0.5
                    };
                    out[pos + i] = (amp * env * v) as f32;
                }
                pos += len + ((0.03 + 0.2 * rng.next()) * f64::from(RATE)) as usize;
            }
            out
        }

        /// G.711 µ-law encode + decode (what PCMU does to the samples).
        fn mulaw(x: f32) -> f32 {
            const BIAS: i32 = 0x84;
            let s = (x.clamp(-1.0, 1.0) * 32767.0) as i32;
            let sign = if s < 0 { 0x80 } else { 0 };
            let mag = (s.abs().min(32635)) + BIAS;
            let exp = (0..8).rev().find(|e| mag & (0x80 << e) != 0).unwrap_or(0);
            let mant = (mag >> (exp + 3)) & 0x0f;
            let byte = !(sign | (exp << 4) | mant) & 0xff;
            // decode
            let b = !byte & 0xff;
            let e = (b >> 4) & 7;
            let m = b & 0x0f;
            let mag = (((m << 3) + BIAS) << e) - BIAS;
            let v = if b & 0x80 != 0 { -mag } else { mag };
            v as f32 / 32768.0
        }

        /// `x` delayed by `lag` samples (negative: its start cut off), µ-law coded, a
        /// little noise added, `extra` samples of tail.
        fn through_pcmu(x: &[f32], lag: i64, extra: usize, seed: u64) -> Vec<f32> {
            let mut rng = XorShift(seed | 1);
            let mut out: Vec<f32> = if lag >= 0 {
                let mut v = vec![0f32; lag as usize];
                v.extend_from_slice(x);
                v
            } else {
                x[(-lag) as usize..].to_vec()
            };
            out.extend(std::iter::repeat_n(0.0, extra));
            out.iter()
                .map(|&v| mulaw(v + ((rng.next() - 0.5) * 0.002) as f32))
                .collect()
        }

        #[test]
        fn mulaw_round_trip_is_close() {
            for &x in &[0.0f32, 0.001, -0.01, 0.1, -0.5, 0.9] {
                // A 4-bit mantissa: at most about half a step (1/32 of the value) off.
                assert!(
                    (mulaw(x) - x).abs() <= 0.04 * x.abs() + 0.0005,
                    "{x} -> {}",
                    mulaw(x)
                );
            }
        }

        #[test]
        fn same_signal_delayed_matches_and_finds_the_lag() {
            let s = pseudo_speech(1, 5.0);
            let rx = through_pcmu(&s, 537, 4000, 7);
            let m = compare(&s, &rx, RATE, 2.0);
            assert_eq!(m.lag, 537, "{m}");
            assert!(m.ncc > 0.99, "{m}");
            assert!(m.windowed_ncc > 0.99, "{m}");
            assert!(m.envelope_corr > 0.99, "{m}");
            assert!(m.coverage > 0.99, "{m}");
        }

        #[test]
        fn received_earlier_than_reference_is_a_negative_lag() {
            let s = pseudo_speech(2, 5.0);
            let rx = through_pcmu(&s, -1000, 0, 3);
            let m = compare(&s, &rx, RATE, 2.0);
            assert_eq!(m.lag, -1000, "{m}");
            assert!(m.ncc > 0.95, "{m}");
        }

        #[test]
        fn a_quieter_copy_still_matches() {
            let s = pseudo_speech(3, 4.0);
            let quiet: Vec<f32> = s.iter().map(|v| v * 0.4).collect();
            let rx = through_pcmu(&quiet, 200, 800, 5);
            let m = compare(&s, &rx, RATE, 2.0);
            assert!(m.ncc > 0.98 && m.coverage > 0.99, "{m}");
        }

        #[test]
        fn a_different_signal_scores_low() {
            let s = pseudo_speech(4, 5.0);
            let other = through_pcmu(&pseudo_speech(5, 5.0), 300, 0, 9);
            let m = compare(&s, &other, RATE, 2.0);
            assert!(m.ncc < 0.3, "{m}");
            assert!(m.windowed_ncc < 0.6, "{m}");
        }

        #[test]
        fn a_truncated_reception_fails_coverage() {
            let s = pseudo_speech(6, 5.0);
            let mut rx = through_pcmu(&s, 100, 0, 11);
            rx.truncate(rx.len() / 2);
            let m = compare(&s, &rx, RATE, 2.0);
            assert!(m.coverage < 0.7, "{m}");
            assert!(m.ncc < 0.85, "{m}");
        }

        #[test]
        fn silence_scores_zero_without_nan() {
            let s = pseudo_speech(7, 3.0);
            let m = compare(&s, &vec![0.0; s.len()], RATE, 2.0);
            assert_eq!(m.ncc, 0.0, "{m}");
            assert_eq!(m.coverage, 0.0, "{m}");
            let m = compare(&s, &[], RATE, 2.0);
            assert_eq!(m.ncc, 0.0, "{m}");
        }

        #[test]
        fn a_slip_mid_sentence_keeps_the_windowed_score() {
            // 20 ms of extra silence in the middle (a jitter buffer growing).
            let s = pseudo_speech(8, 5.0);
            let mid = s.len() / 2;
            let mut slipped = s[..mid].to_vec();
            slipped.extend(std::iter::repeat_n(0.0, 160));
            slipped.extend_from_slice(&s[mid..]);
            let rx = through_pcmu(&slipped, 400, 0, 13);
            let m = compare(&s, &rx, RATE, 2.0);
            assert!(m.windowed_ncc > 0.95, "{m}");
            assert!(m.ncc < 0.8, "{m}");
            assert!(m.coverage > 0.95, "{m}");
        }

        #[test]
        fn resample_keeps_duration_and_shape() {
            let s: Vec<f32> = (0..16000)
                .map(|i| (2.0 * std::f32::consts::PI * 200.0 * i as f32 / 16000.0).sin())
                .collect();
            let r = resample(&s, 16000, 8000);
            assert_eq!(r.len(), 8000);
            let want: Vec<f32> = (0..8000)
                .map(|i| (2.0 * std::f32::consts::PI * 200.0 * i as f32 / 8000.0).sin())
                .collect();
            let m = compare(&want, &r, 8000, 0.1);
            assert!(m.ncc > 0.999 && m.lag == 0, "{m}");
        }

        #[test]
        fn netstrings_parse_one_at_a_time() {
            let buf = b"5:hello,3:abc,2:x";
            let (a, used) = super::super::parse_netstring(buf).expect("first");
            assert_eq!((a.as_slice(), used), (&b"hello"[..], 8));
            let (b, used2) = super::super::parse_netstring(&buf[used..]).expect("second");
            assert_eq!((b.as_slice(), used2), (&b"abc"[..], 6));
            assert!(super::super::parse_netstring(&buf[used + used2..]).is_none());
        }
    }
}
