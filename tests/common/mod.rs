//! Integration-test harness: runs the real `voxgate` binary on loopback with a temp data
//! dir and free ports, and hands tests its URLs, key and ports.
//!
//! ```ignore
//! let gw = Gateway::start().await;              // SQLite in a temp dir
//! let r = gw.client().get(gw.url("/v1/agents")).send().await?;
//! gw.restart().await;                           // same data dir and ports
//! ```
//! The child's stdout and stderr go to files in the temp dir; they are printed when a test
//! panics (or the gateway fails to become ready) to help debugging.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod dnsmasq;
pub mod pg;

use std::fs::{File, OpenOptions};
use std::net::{Ipv4Addr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION};

pub use pg::PgDb;

/// The API key every gateway started by the harness is configured with.
pub const TEST_API_KEY: &str = "vxk_test_0123456789abcdef0123456789abcdef";

const READY_TIMEOUT: Duration = Duration::from_secs(15);
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// A running `voxgate` process.
pub struct Gateway {
    /// `http://127.0.0.1:<port>`
    pub api_url: String,
    pub api_port: u16,
    /// The configured key, or the generated one (read from stdout) when none was set.
    pub api_key: String,
    /// SIP UDP and TCP listen on this same port on 127.0.0.1.
    pub sip_port: u16,
    pub data_dir: PathBuf,
    /// The RTP range given to the gateway, `lo-hi`.
    pub rtp_ports: String,
    /// Holds the RTP range against other test gateways for this gateway's life.
    _rtp_lock: UdpSocket,
    child: Option<Child>,
    env: Vec<(String, String)>,
    stdout_path: PathBuf,
    log_path: PathBuf,
    /// Drop order: the child is killed in `Drop::drop`, then the database is dropped,
    /// then the temp dir removed.
    pg: Option<PgDb>,
    tmp: Option<tempfile::TempDir>,
}

/// A reqwest client builder. reqwest is built with `rustls-no-provider` (see Cargo.toml),
/// so the process's rustls provider must be installed before any client is built.
pub fn client_builder() -> reqwest::ClientBuilder {
    voxgate::webhooks::install_crypto_provider();
    reqwest::Client::builder()
}

/// A loopback port free for TCP (now; it can be taken by the time the child binds).
pub fn free_tcp_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral TCP port")
}

/// A loopback port free for both UDP and TCP.
pub fn free_udp_tcp_port() -> u16 {
    for _ in 0..100 {
        let Ok(udp) = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)) else {
            continue;
        };
        let Ok(port) = udp.local_addr().map(|a| a.port()) else {
            continue;
        };
        if TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
            return port;
        }
    }
    panic!("no loopback port free for both UDP and TCP after 100 tries");
}

/// RTP ranges for test gateways: 50 slots of 200 ports in 10000-19999, below the
/// kernel's ephemeral range (32768-60999, where every `bind(0)` of the tests lands) and
/// below baresip's 20000-29999 (tests/common/baresip.rs).
const RTP_SLOTS: u16 = 50;
const RTP_BASE: u16 = 10_000;
/// A slot is held by binding 127.0.0.1:(RTP_SLOT_LOCK + slot): a lock that other test
/// processes (nextest runs each test in its own) see too, released when the gateway drops.
const RTP_SLOT_LOCK: u16 = 9_100;

/// A 200-port RTP range no other live test gateway uses, and the socket that holds it.
fn rtp_range() -> (String, UdpSocket) {
    let start = u16::try_from(std::process::id() % u32::from(RTP_SLOTS)).unwrap_or(0);
    for i in 0..RTP_SLOTS {
        let slot = (start + i) % RTP_SLOTS;
        if let Ok(lock) = UdpSocket::bind((Ipv4Addr::LOCALHOST, RTP_SLOT_LOCK + slot)) {
            let base = RTP_BASE + slot * 200;
            return (format!("{}-{}", base, base + 199), lock);
        }
    }
    panic!("all {RTP_SLOTS} test RTP ranges are taken by live gateways");
}

impl Gateway {
    /// Start with SQLite in a fresh temp data dir.
    pub async fn start() -> Gateway {
        Gateway::start_with(&[], None).await
    }

    /// Start with extra environment (an empty value UNSETS a harness default, e.g.
    /// `("VOXGATE_API_KEY", "")` to start without a configured key) and optionally a
    /// given data dir (kept after the test).
    pub async fn start_with(env: &[(&str, &str)], data_dir: Option<&Path>) -> Gateway {
        Gateway::launch(env, data_dir, None).await
    }

    /// Start against a fresh PostgreSQL database (dropped with the gateway).
    pub async fn start_pg() -> Gateway {
        Gateway::start_pg_with(&[]).await
    }

    pub async fn start_pg_with(env: &[(&str, &str)]) -> Gateway {
        let db = PgDb::create().await;
        Gateway::launch(env, None, Some(db)).await
    }

    async fn launch(env: &[(&str, &str)], data_dir: Option<&Path>, pg: Option<PgDb>) -> Gateway {
        let tmp = tempfile::Builder::new()
            .prefix("voxgate-test-")
            .tempdir()
            .expect("temp dir");
        let data_dir = data_dir.map_or_else(|| tmp.path().join("data"), Path::to_path_buf);
        let api_port = free_tcp_port();
        let sip_port = free_udp_tcp_port();
        let (rtp_ports, rtp_lock) = rtp_range();
        let sip_addr = format!("127.0.0.1:{sip_port}");
        let mut vars: Vec<(String, String)> = vec![
            ("VOXGATE_DATA_DIR".into(), data_dir.display().to_string()),
            ("VOXGATE_API_LISTEN".into(), format!("127.0.0.1:{api_port}")),
            ("VOXGATE_API_KEY".into(), TEST_API_KEY.into()),
            ("VOXGATE_SIP_LISTEN_UDP".into(), sip_addr.clone()),
            ("VOXGATE_SIP_LISTEN_TCP".into(), sip_addr),
            ("VOXGATE_SIP_PUBLIC_ADDR".into(), "127.0.0.1".into()),
            ("VOXGATE_RTP_PORTS".into(), rtp_ports.clone()),
            // Kernel forwarding is the default path ("auto"); tests insist on it so a
            // machine that cannot load it fails loudly instead of testing less.
            ("VOXGATE_RTP_KERNEL_FORWARDING".into(), "on".into()),
            ("VOXGATE_LOG".into(), "info,voxgate=debug".into()),
            // Test traffic stays on loopback: trunk host names (example.pstn.twilio.com in
            // the API tests) go to a loopback port where nothing answers, not to the
            // machine's resolver. Tests of DNS give their own dnsmasq (tests/dns.rs).
            ("VOXGATE_SIP_DNS_SERVERS".into(), "127.0.0.1:9".into()),
        ];
        if let Some(db) = &pg {
            vars.push(("VOXGATE_DATABASE_URL".into(), db.url.clone()));
        }
        for (k, v) in env {
            vars.retain(|(name, _)| name != k);
            if !v.is_empty() {
                vars.push(((*k).to_owned(), (*v).to_owned()));
            }
        }
        let api_key = vars
            .iter()
            .find(|(k, _)| k == "VOXGATE_API_KEY")
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        let mut gw = Gateway {
            api_url: format!("http://127.0.0.1:{api_port}"),
            api_port,
            api_key,
            sip_port,
            data_dir,
            rtp_ports,
            _rtp_lock: rtp_lock,
            child: None,
            env: vars,
            stdout_path: tmp.path().join("stdout.log"),
            log_path: tmp.path().join("gateway.log"),
            pg,
            tmp: Some(tmp),
        };
        gw.spawn_and_wait().await;
        gw
    }

    fn spawn(&mut self) {
        let open = |p: &Path| -> File {
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .expect("open log file")
        };
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_voxgate"));
        cmd.arg("serve")
            .current_dir(self.tmp.as_ref().map_or(Path::new("."), |t| t.path()))
            .stdin(Stdio::null())
            .stdout(open(&self.stdout_path))
            .stderr(open(&self.log_path));
        // Only the harness decides the gateway's configuration.
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("VOXGATE_") {
                cmd.env_remove(k);
            }
        }
        cmd.envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        self.child = Some(cmd.spawn().expect("spawn the voxgate binary"));
    }

    async fn spawn_and_wait(&mut self) {
        self.spawn();
        self.wait_ready().await;
        if self.api_key.is_empty() {
            self.api_key = self
                .generated_keys()
                .last()
                .cloned()
                .unwrap_or_else(|| self.fail("no API key configured and none printed"));
        }
    }

    /// Poll `/readyz` until 200, the child exits, or the timeout.
    async fn wait_ready(&mut self) {
        let client = client_builder()
            .timeout(Duration::from_secs(2))
            .build()
            .expect("client");
        let deadline = Instant::now() + READY_TIMEOUT;
        let url = self.url("/readyz");
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.fail(&format!("voxgate exited before becoming ready: {status}"));
            }
            if let Ok(r) = client.get(&url).send().await {
                if r.status() == reqwest::StatusCode::OK {
                    return;
                }
            }
            if Instant::now() > deadline {
                self.fail(&format!("voxgate not ready after {READY_TIMEOUT:?}"));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn fail(&self, why: &str) -> ! {
        self.dump_logs();
        panic!("{why}");
    }

    /// Print the child's output to stderr (shown by the test runner on failure).
    pub fn dump_logs(&self) {
        eprintln!(
            "----- voxgate stdout ({}) -----\n{}\n----- voxgate stderr ({}) -----\n{}\n-----",
            self.stdout_path.display(),
            self.stdout(),
            self.log_path.display(),
            self.log()
        );
    }

    /// Everything the child(ren) wrote to stdout so far, across restarts.
    pub fn stdout(&self) -> String {
        std::fs::read_to_string(&self.stdout_path).unwrap_or_default()
    }

    /// Everything the child(ren) wrote to stderr (the tracing log) so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Keys printed by "voxgate: generated admin API key: …" lines, in order.
    pub fn generated_keys(&self) -> Vec<String> {
        self.stdout()
            .lines()
            .filter_map(|l| l.strip_prefix("voxgate: generated admin API key: "))
            .map(|k| k.trim().to_owned())
            .collect()
    }

    /// The gateway's database, for tests that write rows through the library (SQLite in
    /// WAL mode and PostgreSQL both allow it while the gateway runs).
    pub fn database_url(&self) -> String {
        match &self.pg {
            Some(db) => db.url.clone(),
            None => format!("sqlite://{}/voxgate.db", self.data_dir.display()),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.api_url, path)
    }

    /// A client sending `Authorization: Bearer <api_key>`.
    pub fn client(&self) -> reqwest::Client {
        self.client_with_key(&self.api_key)
    }

    pub fn client_with_key(&self, key: &str) -> reqwest::Client {
        let mut headers = HeaderMap::new();
        headers.insert(
            AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {key}")).expect("header value"),
        );
        client_builder()
            .default_headers(headers)
            .timeout(Duration::from_secs(10))
            .build()
            .expect("client")
    }

    /// A client without credentials.
    pub fn anon_client(&self) -> reqwest::Client {
        client_builder()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("client")
    }

    /// `POST /v1/agents` with `body`; panics with the server's answer unless it is 2xx.
    pub async fn create_agent(&self, body: serde_json::Value) -> serde_json::Value {
        let r = self
            .client()
            .post(self.url("/v1/agents"))
            .json(&body)
            .send()
            .await
            .expect("POST /v1/agents");
        let status = r.status();
        let text = r.text().await.unwrap_or_default();
        assert!(
            status.is_success(),
            "POST /v1/agents {body}: {status} {text}"
        );
        serde_json::from_str(&text).expect("agent JSON")
    }

    /// Polls `GET /v1/agents/{username}` until its `state` is `available`, for at most
    /// `within`; returns the agent's JSON. On timeout it panics with the last answer and
    /// `context()` (a softphone's events and log, say).
    pub async fn wait_agent_available(
        &self,
        username: &str,
        within: Duration,
        context: impl Fn() -> String,
    ) -> serde_json::Value {
        let deadline = Instant::now() + within;
        let mut last = serde_json::Value::Null;
        while Instant::now() < deadline {
            let r = self
                .client()
                .get(self.url(&format!("/v1/agents/{username}")))
                .send()
                .await
                .expect("GET /v1/agents/{id}");
            if r.status().is_success() {
                last = r.json().await.expect("agent JSON");
                if last["state"] == "available" {
                    return last;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "{username} not available after {within:?}: {last}\n{}\n----- voxgate -----\n{}",
            context(),
            self.log()
        );
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGTERM and wait (bounded) for exit; returns the exit status.
    pub async fn stop(&mut self) -> ExitStatus {
        let Some(mut child) = self.child.take() else {
            panic!("gateway not running");
        };
        let term = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("run kill -TERM");
        assert!(term.success(), "kill -TERM failed");
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            if let Some(status) = child.try_wait().expect("wait for voxgate") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                self.fail(&format!(
                    "voxgate did not exit within {STOP_TIMEOUT:?} of SIGTERM"
                ));
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// SIGKILL: no graceful shutdown, like a crash.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stop (gracefully, if running) and start again with the same data dir, database,
    /// ports and environment.
    pub async fn restart(&mut self) {
        if self.child.is_some() {
            let status = self.stop().await;
            if !status.success() {
                self.fail(&format!("voxgate exited with {status} on SIGTERM"));
            }
        }
        self.spawn_and_wait().await;
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.dump_logs();
        }
        self.kill9();
    }
}

// ---------------------------------------------------------------------------------
// Prompt uploads

const BOUNDARY: &str = "voxgate-test-boundary-7MA4YWxkTrZu0gW";

/// A `multipart/form-data` body for `POST /v1/prompts` (RFC 7578) with text parts and one file part, written by
/// hand so that malformed variants can be sent too.
pub fn multipart(texts: &[(&str, &str)], file: Option<(&str, &[u8])>) -> Vec<u8> {
    let mut b = Vec::new();
    for (name, value) in texts {
        b.extend_from_slice(
            format!(
                "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
            )
            .as_bytes(),
        );
    }
    if let Some((filename, bytes)) = file {
        b.extend_from_slice(
            format!(
                "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; \
                 filename=\"{filename}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
            )
            .as_bytes(),
        );
        b.extend_from_slice(bytes);
        b.extend_from_slice(b"\r\n");
    }
    b.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    b
}

/// `POST /v1/prompts` with `body` (made by [`multipart`]): status, JSON body, Location.
pub async fn upload_prompt(
    gw: &Gateway,
    body: Vec<u8>,
) -> (u16, serde_json::Value, Option<String>) {
    let r = gw
        .client()
        .post(gw.url("/v1/prompts"))
        .header(
            reqwest::header::CONTENT_TYPE,
            format!("multipart/form-data; boundary={BOUNDARY}"),
        )
        .body(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let location = r
        .headers()
        .get(reqwest::header::LOCATION)
        .map(|v| v.to_str().unwrap().to_owned());
    let text = r.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
        location,
    )
}
