//! Store tests: every test function runs against SQLite (temp dir) AND PostgreSQL (a fresh
//! database per test; unreachable PostgreSQL fails the test).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use chrono::{Duration, Utc};
use voxgate::store::{
    fmt_time, AgentPatch, Backend, Credentials, NewAgent, Presence, Registration,
    RegistrationChange, Store, StoreError,
};

use common::PgDb;

/// Keeps whatever backs the store alive for the test.
enum Guard {
    Sqlite(#[allow(dead_code)] tempfile::TempDir),
    Pg(#[allow(dead_code)] PgDb),
}

async fn sqlite() -> (Store, Guard, String) {
    let dir = tempfile::tempdir().unwrap();
    // A nested, not-yet-existing directory: the store must create it and the file.
    let url = format!("sqlite://{}/nested/dir/voxgate.db", dir.path().display());
    let store = Store::connect(&url, 4).await.unwrap();
    store.migrate().await.unwrap();
    (store, Guard::Sqlite(dir), url)
}

async fn postgres() -> (Store, Guard, String) {
    let db = PgDb::create().await;
    let store = Store::connect(&db.url, 4).await.unwrap();
    store.migrate().await.unwrap();
    let url = db.url.clone();
    (store, Guard::Pg(db), url)
}

/// Generate `<name>::sqlite` and `<name>::postgres` tests from one async fn(Store, url).
macro_rules! both {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    let (store, _guard, url) = super::sqlite().await;
                    super::tests::$name(store, url).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    let (store, _guard, url) = super::postgres().await;
                    super::tests::$name(store, url).await;
                }
            }
        )*
    };
}

both!(
    migrations_are_idempotent,
    agent_crud,
    unique_username_conflict,
    agent_pagination,
    agent_auth_lookups,
    registration_changes,
    registration_cascade_on_agent_delete,
    registration_expiry_sweep,
    failed_batch_writes_nothing,
    api_keys,
);

fn new_agent(username: &str) -> NewAgent {
    NewAgent {
        username: username.to_owned(),
        display_name: Some(format!("Agent {username}")),
        credentials: Credentials::new(username, "voxgate", "secret123"),
        skills: vec!["sales".into(), "hindi".into()],
        max_concurrent_calls: 1,
        wrap_up_seconds: 0,
    }
}

fn reg(agent_id: &str, contact: &str, expires_in: i64, cseq: i64) -> Registration {
    Registration {
        id: voxgate::ids::new_id(voxgate::ids::IdKind::Registration),
        agent_id: agent_id.to_owned(),
        contact: contact.to_owned(),
        transport: "udp".to_owned(),
        source: "127.0.0.1:5062".to_owned(),
        // Stored at millisecond precision.
        expires_at: voxgate::store::now() + Duration::seconds(expires_in),
        user_agent: Some("baresip".to_owned()),
        call_id: format!("cid-{contact}"),
        cseq,
    }
}

mod tests {
    use super::*;

    pub async fn migrations_are_idempotent(store: Store, url: String) {
        store.migrate().await.unwrap();
        store.migrate().await.unwrap();
        // A second pool on the same database sees the schema and migrates to a no-op.
        let again = Store::connect(&url, 2).await.unwrap();
        again.migrate().await.unwrap();
        again.ping().await.unwrap();
        assert_eq!(again.count_api_keys().await.unwrap(), 0);
        if store.backend() == Backend::Sqlite {
            sqlite_pragmas_hold_on_every_connection(&store).await;
        }
    }

    async fn sqlite_pragmas_hold_on_every_connection(store: &Store) {
        use sqlx::Row;
        // Hold all four pooled connections at once so each is a distinct connection.
        let mut conns = Vec::new();
        for _ in 0..4 {
            conns.push(store.pool().acquire().await.unwrap());
        }
        for conn in &mut conns {
            let fk: i64 = sqlx::query("PRAGMA foreign_keys")
                .fetch_one(&mut **conn)
                .await
                .unwrap()
                .get(0);
            let busy: i64 = sqlx::query("PRAGMA busy_timeout")
                .fetch_one(&mut **conn)
                .await
                .unwrap()
                .get(0);
            let mode: String = sqlx::query("PRAGMA journal_mode")
                .fetch_one(&mut **conn)
                .await
                .unwrap()
                .get(0);
            assert_eq!(fk, 1, "foreign_keys");
            assert!(busy >= 1000, "busy_timeout {busy}");
            assert_eq!(mode.to_ascii_lowercase(), "wal");
        }
    }

    pub async fn agent_crud(store: Store, _url: String) {
        let a = store.create_agent(&new_agent("alice")).await.unwrap();
        assert!(a.id.starts_with("agt_") && a.id.len() == 30, "{}", a.id);
        assert_eq!(a.presence, Presence::Available);
        assert_eq!(a.max_concurrent_calls, 1);

        let got = store.get_agent(&a.id).await.unwrap();
        assert_eq!(got, a);
        assert_eq!(store.get_agent_by_username("alice").await.unwrap(), a);
        assert_eq!(store.find_agent("alice").await.unwrap().id, a.id);
        assert_eq!(store.find_agent(&a.id).await.unwrap().id, a.id);
        assert!(matches!(
            store.find_agent("nobody").await,
            Err(StoreError::NotFound)
        ));
        assert!(matches!(
            store.get_agent("agt_00000000000000000000000000").await,
            Err(StoreError::NotFound)
        ));

        let patch = AgentPatch {
            display_name: Some(None),
            credentials: Some(Credentials::new("alice", "voxgate", "new-password")),
            skills: Some(vec!["support".into()]),
            max_concurrent_calls: Some(3),
            wrap_up_seconds: Some(30),
            presence: Some(Presence::Away),
        };
        let u = store.update_agent(&a.id, &patch).await.unwrap();
        assert_eq!(u.display_name, None);
        assert_eq!(u.skills, vec!["support".to_owned()]);
        assert_eq!(u.max_concurrent_calls, 3);
        assert_eq!(u.wrap_up_seconds, 30);
        assert_eq!(u.presence, Presence::Away);
        assert_ne!(u.ha1_md5, a.ha1_md5);
        assert!(u.updated_at >= a.updated_at);
        assert_eq!(u.created_at, a.created_at);
        // What was written is what is read back (every placeholder bound in order).
        assert_eq!(store.get_agent(&a.id).await.unwrap(), u);

        // An empty patch changes nothing.
        let same = store
            .update_agent(&a.id, &AgentPatch::default())
            .await
            .unwrap();
        assert_eq!(same, u);
        assert!(matches!(
            store.update_agent("agt_nope", &patch).await,
            Err(StoreError::NotFound)
        ));

        let deleted = store.delete_agent(&a.id).await.unwrap();
        assert_eq!(deleted.username, "alice");
        assert!(matches!(
            store.get_agent(&a.id).await,
            Err(StoreError::NotFound)
        ));
        assert!(matches!(
            store.delete_agent(&a.id).await,
            Err(StoreError::NotFound)
        ));
    }

    pub async fn unique_username_conflict(store: Store, _url: String) {
        store.create_agent(&new_agent("bob")).await.unwrap();
        match store.create_agent(&new_agent("bob")).await {
            Err(StoreError::Conflict { field }) => assert_eq!(field, "username"),
            other => panic!("expected a conflict on username, got {other:?}"),
        }
        // Usernames are case-sensitive (RFC 3261 user part).
        store.create_agent(&new_agent("Bob")).await.unwrap();
        assert_eq!(store.list_agents(10, None).await.unwrap().data.len(), 2);
    }

    pub async fn agent_pagination(store: Store, _url: String) {
        let mut ids = Vec::new();
        for i in 0..5 {
            ids.push(
                store
                    .create_agent(&new_agent(&format!("u{i}")))
                    .await
                    .unwrap()
                    .id,
            );
        }
        let p1 = store.list_agents(2, None).await.unwrap();
        assert_eq!(
            p1.data.iter().map(|a| &a.id).collect::<Vec<_>>(),
            vec![&ids[0], &ids[1]]
        );
        assert_eq!(p1.next.as_deref(), Some(ids[1].as_str()));
        let p2 = store.list_agents(2, p1.next.as_deref()).await.unwrap();
        assert_eq!(
            p2.data.iter().map(|a| &a.id).collect::<Vec<_>>(),
            vec![&ids[2], &ids[3]]
        );
        let p3 = store.list_agents(2, p2.next.as_deref()).await.unwrap();
        assert_eq!(p3.data.len(), 1);
        assert_eq!(p3.data[0].id, ids[4]);
        assert_eq!(p3.next, None);
        // Exactly a page's worth: no next.
        let all = store.list_agents(5, None).await.unwrap();
        assert_eq!(all.data.len(), 5);
        assert_eq!(all.next, None);
        // A cursor past the end is an empty page.
        let none = store.list_agents(5, Some(&ids[4])).await.unwrap();
        assert!(none.data.is_empty() && none.next.is_none());
    }

    pub async fn agent_auth_lookups(store: Store, _url: String) {
        let a = store.create_agent(&new_agent("alice")).await.unwrap();
        let b = store.create_agent(&new_agent("bob")).await.unwrap();
        let auth = store
            .agent_auth_by_username("alice")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(auth.id, a.id);
        assert_eq!(auth.realm, "voxgate");
        // RFC 2617 / RFC 8760 HA1 of "alice:voxgate:secret123".
        assert_eq!(auth.ha1_md5, "c983c2aaa3918bfb7b7246870d375f51");
        assert_eq!(
            auth.ha1_sha256,
            "7dd709f6743276cfe9047542111b34032a85695548d22bb52110fb28acf81378"
        );
        assert_eq!(auth.max_concurrent_calls, 1);
        assert!(store
            .agent_auth_by_username("carol")
            .await
            .unwrap()
            .is_none());
        let all = store.all_agent_auth().await.unwrap();
        assert_eq!(
            all.iter().map(|x| x.id.as_str()).collect::<Vec<_>>(),
            vec![a.id.as_str(), b.id.as_str()]
        );
    }

    pub async fn registration_changes(store: Store, _url: String) {
        let a = store.create_agent(&new_agent("alice")).await.unwrap();
        let b = store.create_agent(&new_agent("bob")).await.unwrap();
        let a1 = reg(&a.id, "sip:alice@10.0.0.1:5062", 3600, 1);
        let a2 = reg(&a.id, "sip:alice@10.0.0.2:5062;transport=tcp", 3600, 1);
        let b1 = reg(&b.id, "sip:bob@10.0.0.3:5062", 3600, 7);
        store
            .apply_registration_changes(&[
                RegistrationChange::Upsert(a1.clone()),
                RegistrationChange::Upsert(a2.clone()),
                RegistrationChange::Upsert(b1.clone()),
            ])
            .await
            .unwrap();
        let all = store.all_registrations().await.unwrap();
        assert_eq!(all, vec![a1.clone(), a2.clone(), b1.clone()]);

        // Upsert on (agent_id, contact) updates in place and keeps the row id.
        let mut a1b = reg(&a.id, &a1.contact, 7200, 2);
        a1b.transport = "tcp".into();
        a1b.user_agent = None;
        store
            .apply_registration_changes(&[RegistrationChange::Upsert(a1b.clone())])
            .await
            .unwrap();
        let mine = store.registrations_for_agent(&a.id).await.unwrap();
        assert_eq!(mine.len(), 2);
        let r = mine.iter().find(|r| r.contact == a1.contact).unwrap();
        assert_eq!(r.id, a1.id);
        assert_eq!(r.cseq, 2);
        assert_eq!(r.transport, "tcp");
        assert_eq!(r.user_agent, None);
        assert_eq!(r.expires_at, a1b.expires_at);

        // Remove one contact, then everything for alice; bob is untouched.
        store
            .apply_registration_changes(&[RegistrationChange::Remove {
                agent_id: a.id.clone(),
                contact: a2.contact.clone(),
            }])
            .await
            .unwrap();
        assert_eq!(store.registrations_for_agent(&a.id).await.unwrap().len(), 1);
        store
            .apply_registration_changes(&[RegistrationChange::RemoveAllForAgent {
                agent_id: a.id.clone(),
            }])
            .await
            .unwrap();
        assert!(store
            .registrations_for_agent(&a.id)
            .await
            .unwrap()
            .is_empty());
        assert_eq!(store.all_registrations().await.unwrap(), vec![b1.clone()]);

        // An upsert for an agent that no longer exists is skipped, not an error.
        store
            .apply_registration_changes(&[RegistrationChange::Upsert(reg(
                "agt_00000000000000000000000000",
                "sip:ghost@x",
                60,
                1,
            ))])
            .await
            .unwrap();
        assert_eq!(store.all_registrations().await.unwrap().len(), 1);
        store.apply_registration_changes(&[]).await.unwrap();
    }

    pub async fn registration_cascade_on_agent_delete(store: Store, _url: String) {
        let a = store.create_agent(&new_agent("alice")).await.unwrap();
        let b = store.create_agent(&new_agent("bob")).await.unwrap();
        store
            .apply_registration_changes(&[
                RegistrationChange::Upsert(reg(&a.id, "sip:a@1", 600, 1)),
                RegistrationChange::Upsert(reg(&a.id, "sip:a@2", 600, 1)),
                RegistrationChange::Upsert(reg(&b.id, "sip:b@1", 600, 1)),
            ])
            .await
            .unwrap();
        store.delete_agent(&a.id).await.unwrap();
        let left = store.all_registrations().await.unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].agent_id, b.id);
    }

    pub async fn registration_expiry_sweep(store: Store, _url: String) {
        let a = store.create_agent(&new_agent("alice")).await.unwrap();
        let expired = reg(&a.id, "sip:a@old", -10, 1);
        let live = reg(&a.id, "sip:a@new", 600, 1);
        store
            .apply_registration_changes(&[
                RegistrationChange::Upsert(expired),
                RegistrationChange::Upsert(live.clone()),
            ])
            .await
            .unwrap();
        // Live view for the API filters by time without deleting.
        let now = voxgate::store::now();
        let by_agent = store
            .live_registrations_for_agents(&[&a.id], now)
            .await
            .unwrap();
        assert_eq!(by_agent.get(&a.id).map(Vec::len), Some(1));
        assert_eq!(store.all_registrations().await.unwrap().len(), 2);

        assert_eq!(store.delete_expired_registrations(now).await.unwrap(), 1);
        assert_eq!(store.all_registrations().await.unwrap(), vec![live.clone()]);
        assert_eq!(store.delete_expired_registrations(now).await.unwrap(), 0);
        // expires_at <= now is expired.
        assert_eq!(
            store
                .delete_expired_registrations(live.expires_at)
                .await
                .unwrap(),
            1
        );
        // The text format sorts as time does (fixed width, UTC).
        let t1 = Utc::now();
        let t2 = t1 + Duration::milliseconds(1);
        assert!(fmt_time(t1) < fmt_time(t2));
        assert_eq!(fmt_time(t1).len(), "2026-11-23T10:00:00.000Z".len());
    }

    pub async fn failed_batch_writes_nothing(store: Store, _url: String) {
        let a = store.create_agent(&new_agent("alice")).await.unwrap();
        let existing = reg(&a.id, "sip:a@keep", 600, 1);
        store
            .apply_registration_changes(&[RegistrationChange::Upsert(existing.clone())])
            .await
            .unwrap();
        let mut bad = reg(&a.id, "sip:a@bad", 600, 1);
        bad.transport = "carrier-pigeon".into(); // violates the CHECK constraint
        let result = store
            .apply_registration_changes(&[
                RegistrationChange::Remove {
                    agent_id: a.id.clone(),
                    contact: existing.contact.clone(),
                },
                RegistrationChange::Upsert(reg(&a.id, "sip:a@good", 600, 1)),
                RegistrationChange::Upsert(bad),
            ])
            .await;
        assert!(matches!(result, Err(StoreError::Db(_))), "{result:?}");
        // Neither the remove nor the good upsert happened.
        assert_eq!(store.all_registrations().await.unwrap(), vec![existing]);
    }

    pub async fn api_keys(store: Store, _url: String) {
        assert_eq!(store.count_api_keys().await.unwrap(), 0);
        let (row, key) = store.create_api_key("ci").await.unwrap();
        assert!(row.id.starts_with("key_"));
        assert!(key.starts_with("vxk_") && key.len() == 68, "{key}");
        assert_eq!(row.key_prefix, &key[..8]);
        assert_eq!(row.last_used_at, None);

        let v = store.verify_api_key(&key).await.unwrap().unwrap();
        assert_eq!(v.id, row.id);
        let touched = store.get_api_key(&row.id).await.unwrap().last_used_at;
        assert!(touched.is_some(), "verify sets last_used_at");
        // Within a minute the timestamp is not rewritten.
        store.verify_api_key(&key).await.unwrap().unwrap();
        assert_eq!(
            store.get_api_key(&row.id).await.unwrap().last_used_at,
            touched
        );
        assert!(store.verify_api_key("vxk_wrong").await.unwrap().is_none());
        assert!(store.verify_api_key("").await.unwrap().is_none());

        // The configured bootstrap key is stored once.
        let boot = "configured-key-0123456789";
        assert!(store.ensure_api_key("bootstrap", boot).await.unwrap());
        assert!(!store.ensure_api_key("bootstrap", boot).await.unwrap());
        assert!(store.verify_api_key(boot).await.unwrap().is_some());
        assert_eq!(store.count_api_keys().await.unwrap(), 2);

        let page = store.list_api_keys(1, None).await.unwrap();
        assert_eq!(page.data.len(), 1);
        assert_eq!(page.data[0].id, row.id);
        let page2 = store.list_api_keys(1, page.next.as_deref()).await.unwrap();
        assert_eq!(page2.data[0].name, "bootstrap");
        assert_eq!(page2.next, None);

        store.delete_api_key(&row.id).await.unwrap();
        assert!(store.verify_api_key(&key).await.unwrap().is_none());
        assert!(matches!(
            store.delete_api_key(&row.id).await,
            Err(StoreError::NotFound)
        ));
        assert_eq!(store.count_api_keys().await.unwrap(), 1);
    }
}
