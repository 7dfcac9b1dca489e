//! A webhook receiver for the tests (axum on loopback): it checks the `Voxgate-Signature`
//! of every request with its own HMAC-SHA256 (never voxgate's code), answers 500 when
//! told to, and can go down (no listener) and come back on the same port.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// One request the receiver got.
#[derive(Clone, Debug)]
pub struct Got {
    pub path: String,
    /// `Voxgate-Event-Id`.
    pub event_id: String,
    pub body: Value,
    /// The signature header checked out against the path's secret, with a fresh `t`.
    pub signature_ok: bool,
    pub signature: String,
    /// What the receiver answered.
    pub answered: u16,
}

#[derive(Default)]
pub struct RecvState {
    pub got: Mutex<Vec<Got>>,
    /// Answer this many requests 500 before answering 204 again.
    pub fail_next: AtomicUsize,
    /// The secret to check each path's signatures with.
    pub secrets: Mutex<HashMap<String, String>>,
    /// Milliseconds to take over each answer.
    pub slow: AtomicU64,
}

/// Checks `t=<secs>,v1=<hex>` against HMAC-SHA256(secret, "<t>.<body>"), t within 5 min.
pub fn verify(secret: &str, header: &str, body: &[u8]) -> bool {
    let mut t = None;
    let mut v1 = None;
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", v)) => t = v.parse::<i64>().ok(),
            Some(("v1", v)) => v1 = hex::decode(v).ok(),
            _ => {}
        }
    }
    let (Some(t), Some(v1)) = (t, v1) else {
        return false;
    };
    if (chrono::Utc::now().timestamp() - t).abs() > 300 {
        return false;
    }
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{t}.").as_bytes());
    mac.update(body);
    mac.verify_slice(&v1).is_ok()
}

pub async fn receive(
    State(st): State<Arc<RecvState>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let path = uri.path().to_owned();
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let signature = header("voxgate-signature");
    let secret = st.secrets.lock().unwrap().get(&path).cloned();
    let signature_ok = secret.is_some_and(|s| verify(&s, &signature, &body));
    let fail = st
        .fail_next
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    let slow = st.slow.load(Ordering::SeqCst);
    if slow > 0 {
        tokio::time::sleep(ms(slow)).await;
    }
    let status = if fail {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::NO_CONTENT
    };
    st.got.lock().unwrap().push(Got {
        path,
        event_id: header("voxgate-event-id"),
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
        signature_ok,
        signature,
        answered: status.as_u16(),
    });
    status
}

pub struct Receiver {
    pub port: u16,
    pub state: Arc<RecvState>,
    server: Option<(oneshot::Sender<()>, JoinHandle<()>)>,
}

impl Receiver {
    pub async fn start() -> Receiver {
        let mut r = Receiver {
            port: 0,
            state: Arc::default(),
            server: None,
        };
        r.up().await;
        r
    }

    /// Listen (again) on the receiver's port.
    pub async fn up(&mut self) {
        assert!(self.server.is_none());
        let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, self.port))
            .await
            .expect("bind the receiver");
        self.port = listener.local_addr().unwrap().port();
        let app = axum::Router::new()
            .fallback(receive)
            .with_state(Arc::clone(&self.state));
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await
                .unwrap();
        });
        self.server = Some((tx, task));
    }

    /// Stop listening and close every connection: deliveries now fail to connect.
    pub async fn down(&mut self) {
        let (tx, task) = self.server.take().expect("receiver is up");
        let _ = tx.send(());
        tokio::time::timeout(secs(10), task)
            .await
            .expect("receiver stops")
            .unwrap();
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn secret(&self, path: &str, secret: &str) {
        self.state
            .secrets
            .lock()
            .unwrap()
            .insert(path.to_owned(), secret.to_owned());
    }

    pub fn fail_next(&self, n: usize) {
        self.state.fail_next.store(n, Ordering::SeqCst);
    }

    pub fn got(&self) -> Vec<Got> {
        self.state.got.lock().unwrap().clone()
    }

    /// Wait until `done(all requests so far)` holds.
    pub async fn wait(
        &self,
        what: &str,
        within: Duration,
        done: impl Fn(&[Got]) -> bool,
    ) -> Vec<Got> {
        let until = Instant::now() + within;
        loop {
            let got = self.got();
            if done(&got) {
                return got;
            }
            assert!(
                Instant::now() < until,
                "receiver: {what} not within {within:?}; got {:#?}",
                got.iter()
                    .map(|g| (
                        g.path.as_str(),
                        g.answered,
                        g.body["type"].as_str(),
                        g.body["data"]["id"].as_str()
                    ))
                    .collect::<Vec<_>>()
            );
            tokio::time::sleep(ms(50)).await;
        }
    }
}
