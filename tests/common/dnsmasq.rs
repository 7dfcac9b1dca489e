//! dnsmasq from Debian (`dnsmasq-base`) as the tests' DNS server: unprivileged-friendly on
//! a loopback port, serving the SRV and A records a test gives it for `.test` names
//! (`--local=/test/`: anything else under `.test` is NXDOMAIN at once).

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc as std_mpsc;
use std::time::Duration;

use super::free_udp_tcp_port;

/// dnsmasq on a loopback port, authoritative for `.test`; killed on drop.
pub struct Dnsmasq {
    child: Child,
    pub addr: SocketAddr,
    log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Dnsmasq {
    /// dnsmasq answering for `.test` with `records` (`--srv-host=…`, `--host-record=…`).
    pub fn start(records: &[&str]) -> Dnsmasq {
        let port = free_udp_tcp_port();
        let mut child = Command::new("dnsmasq")
            .args([
                "--no-daemon",
                "--conf-file=/dev/null",
                "--pid-file=",
                &format!("--port={port}"),
                "--listen-address=127.0.0.1",
                "--bind-interfaces",
                "--no-resolv",
                "--no-hosts",
                "--local=/test/",
                "--log-queries",
                "--log-facility=-",
            ])
            .args(records)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn dnsmasq (scripts/install-test-deps.sh installs dnsmasq-base)");
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (tx, started) = std_mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        let lines = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("started, version") {
                    let _ = tx.send(());
                }
                lines.lock().unwrap().push(line);
            }
        });
        let up = started.recv_timeout(Duration::from_secs(10));
        if up.is_err() {
            let _ = child.kill();
            let status = child.wait();
            panic!(
                "dnsmasq did not start ({status:?}):\n{}",
                log.lock().unwrap().join("\n")
            );
        }
        Dnsmasq {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            log,
        }
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// The log once it holds `needle` (dnsmasq's log lines reach us from a reader
    /// thread, possibly after the answer did), or as it is after `within`.
    pub fn log_with(&self, needle: &str, within: std::time::Duration) -> String {
        let until = std::time::Instant::now() + within;
        loop {
            let log = self.log();
            if log.contains(needle) || std::time::Instant::now() >= until {
                return log;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("----- dnsmasq -----\n{}", self.log());
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
