//! The API publishes `AppEvent`s after the database commit, for the registrar's cache.
//! In-process (the router as a tower service) so the broadcast channel can be observed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use tower::ServiceExt;
use voxgate::api::{self, AppState};
use voxgate::config::{Config, Overrides};
use voxgate::events::AppEvent;
use voxgate::store::Store;

#[tokio::test]
async fn agent_changes_are_published_after_commit() {
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
    let (events, mut rx) = tokio::sync::broadcast::channel(16);
    let state = Arc::new(AppState {
        config: Arc::new(config),
        store: store.clone(),
        events,
        calls: voxgate::calls::control::CallControl::channel().0,
        trunks: voxgate::trunks::TrunkDirectory::default(),
        trunk_registrations: Default::default(),
        sip: Mutex::new(None),
        draining: AtomicBool::new(false),
        metrics: None,
    });
    let app = api::router(state);
    let call = |method: &str, path: &str, body: Option<&str>| {
        let mut b = Request::builder()
            .method(method)
            .uri(path)
            .header("authorization", format!("Bearer {key}"));
        if body.is_some() {
            b = b.header("content-type", "application/json");
        }
        b.body(Body::from(body.unwrap_or("").to_owned())).unwrap()
    };

    let r = app
        .clone()
        .oneshot(call(
            "POST",
            "/v1/agents",
            Some(r#"{"username":"alice","password":"secret123"}"#),
        ))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let AppEvent::AgentChanged { id, username } = rx.try_recv().unwrap() else {
        panic!("expected AgentChanged");
    };
    assert_eq!(username, "alice");
    // Published after the commit: the registrar can read the new credentials now.
    let auth = store
        .agent_auth_by_username("alice")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(auth.id, id);

    let r = app
        .clone()
        .oneshot(call(
            "PATCH",
            "/v1/agents/alice",
            Some(r#"{"password":"new-secret-1"}"#),
        ))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        rx.try_recv().unwrap(),
        AppEvent::AgentChanged {
            id: id.clone(),
            username: "alice".into()
        }
    );
    assert_ne!(
        store
            .agent_auth_by_username("alice")
            .await
            .unwrap()
            .unwrap()
            .ha1_md5,
        auth.ha1_md5
    );

    // A rejected request publishes nothing.
    let r = app
        .clone()
        .oneshot(call(
            "PATCH",
            "/v1/agents/alice",
            Some(r#"{"max_concurrent_calls":0}"#),
        ))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(rx.try_recv().is_err());

    let r = app
        .clone()
        .oneshot(call("DELETE", "/v1/agents/alice", None))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        rx.try_recv().unwrap(),
        AppEvent::AgentDeleted {
            id,
            username: "alice".into()
        }
    );
    assert!(store
        .agent_auth_by_username("alice")
        .await
        .unwrap()
        .is_none());

    // Without a SIP handle the gateway is not ready.
    let r = app
        .clone()
        .oneshot(
            Request::builder()
                .uri("/readyz")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
}
