//! `POST /v1/calls/{id}/hangup` against the call engine's side of `CallControl`: the test
//! plays the engine end of the channel (the contract in `calls::control`), so every answer
//! the engine can give is covered, in process (the router as a tower service).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use tokio::sync::mpsc;
use tower::ServiceExt;
use voxgate::api::{self, AppState};
use voxgate::calls::control::{CallCommand, CallControl, ControlError};
use voxgate::calls::record::{CallChange, CallDirection, CallStatus, HangupBy, NewCall};
use voxgate::config::{Config, Overrides};
use voxgate::ids::{new_id, IdKind};
use voxgate::store::Store;

struct App {
    app: axum::Router,
    store: Store,
    key: String,
    _dir: tempfile::TempDir,
}

async fn app(calls: CallControl) -> App {
    let dir = tempfile::tempdir().unwrap();
    let env = [(
        "VOXGATE_DATA_DIR".to_owned(),
        dir.path().display().to_string(),
    )]
    .into_iter()
    .collect();
    let config =
        Config::from_parts("", std::path::Path::new("t"), &env, &Overrides::default()).unwrap();
    let store = Store::connect(&config.database.url, 2).await.unwrap();
    store.migrate().await.unwrap();
    let (_, key) = store.create_api_key("t").await.unwrap();
    let (events, _) = tokio::sync::broadcast::channel(16);
    let state = Arc::new(AppState {
        config: Arc::new(config),
        store: store.clone(),
        events,
        calls,
        trunks: voxgate::trunks::TrunkDirectory::default(),
        trunk_registrations: Default::default(),
        sip: Mutex::new(None),
        draining: AtomicBool::new(false),
        metrics: None,
    });
    App {
        app: api::router(state),
        store,
        key,
        _dir: dir,
    }
}

impl App {
    async fn hangup(&self, id: &str) -> (StatusCode, serde_json::Value) {
        let r = self
            .app
            .clone()
            .oneshot(
                Request::builder()
                    .method("POST")
                    .uri(format!("/v1/calls/{id}/hangup"))
                    .header("authorization", format!("Bearer {}", self.key))
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        let status = r.status();
        let bytes = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
        let v = if bytes.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap()
        };
        (status, v)
    }

    /// A ringing call in the store.
    async fn live_call(&self) -> String {
        let id = new_id(IdKind::Call);
        self.store
            .apply_call_changes(&[CallChange::CreateCall(NewCall {
                id: id.clone(),
                direction: CallDirection::Internal,
                from: "sip:alice@voxgate".into(),
                to: "sip:bob@voxgate".into(),
                agent_id: None,
                status: CallStatus::Ringing,
                started_at: voxgate::store::now(),
                status_callback: None,
                metadata: None,
            })])
            .await
            .unwrap();
        id
    }
}

/// The engine: answers each hangup with `answer(call_id)`, after running it.
fn engine<F>(mut rx: mpsc::Receiver<CallCommand>, answer: F) -> tokio::task::JoinHandle<Vec<String>>
where
    F: Fn(&str) -> Result<(), ControlError> + Send + 'static,
{
    tokio::spawn(async move {
        let mut seen = Vec::new();
        while let Some(cmd) = rx.recv().await {
            match cmd {
                CallCommand::Hangup { call_id, reply } => {
                    let _ = reply.send(answer(call_id.as_str()));
                    seen.push(call_id.into_string());
                }
                CallCommand::Originate(_)
                | CallCommand::Recording { .. }
                | CallCommand::Play { .. }
                | CallCommand::Dtmf { .. } => {}
            }
        }
        seen
    })
}

#[tokio::test]
async fn hangup_reports_what_the_engine_answers() {
    let (control, rx) = CallControl::channel();
    let a = app(control).await;
    let live = a.live_call().await;
    let stale = a.live_call().await;
    let live_id = live.clone();
    let engine = engine(rx, move |id| {
        if id == live_id {
            Ok(())
        } else {
            Err(ControlError::NotFound)
        }
    });

    // The engine has it: 204.
    let (s, v) = a.hangup(&live).await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{v}");
    // Open in the store, unknown to the engine: 404 naming it as not live.
    let (s, v) = a.hangup(&stale).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
    assert!(v["detail"].as_str().unwrap().contains("not live"), "{v}");
    // Unknown to the store: 404 without asking the engine.
    let (s, _) = a.hangup("call_00000000000000000000000000").await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    // Once the call has ended in the store, hangup is a 409 without asking the engine.
    a.store
        .apply_call_changes(&[CallChange::CallEnded {
            call_id: stale.clone(),
            status: CallStatus::Canceled,
            at: voxgate::store::now(),
            duration_seconds: 0,
            hangup_cause: "CANCEL".into(),
            hangup_by: HangupBy::Caller,
        }])
        .await
        .unwrap();
    let (s, v) = a.hangup(&stale).await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    drop(a.app);
    let seen = engine.await.unwrap();
    // Only live calls reached the engine, once each.
    assert_eq!(seen, vec![live, stale]);
}

#[tokio::test]
async fn hangup_without_an_engine_is_503() {
    let (control, rx) = CallControl::channel();
    drop(rx);
    let a = app(control).await;
    let id = a.live_call().await;
    let (s, v) = a.hangup(&id).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    assert_eq!(v["type"], "/problems/unavailable");
}

#[tokio::test]
async fn hangup_of_a_call_that_ends_meanwhile_is_409() {
    let (control, mut rx) = CallControl::channel();
    let a = app(control).await;
    let id = a.live_call().await;
    let store = a.store.clone();
    // The engine ended the call on its own just before the command arrived: the end is
    // recorded, and the engine no longer knows the call.
    let engine = tokio::spawn(async move {
        let Some(CallCommand::Hangup { call_id, reply }) = rx.recv().await else {
            panic!("no command");
        };
        store
            .apply_call_changes(&[CallChange::CallEnded {
                call_id: call_id.into_string(),
                status: CallStatus::Completed,
                at: voxgate::store::now(),
                duration_seconds: 3,
                hangup_cause: "BYE".into(),
                hangup_by: HangupBy::Callee,
            }])
            .await
            .unwrap();
        let _ = reply.send(Err(ControlError::NotFound));
    });
    let (s, v) = a.hangup(&id).await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert_eq!(v["type"], "/problems/invalid-state");
    engine.await.unwrap();
}
