//! Store tests: every test function runs against SQLite (temp dir) AND PostgreSQL (a fresh
//! database per test; unreachable PostgreSQL fails the test).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use chrono::{DateTime, Duration, TimeZone, Utc};
use voxgate::calls::record::{
    CallChange, CallDirection, CallStatus, HangupBy, LegDirection, NewCall, NewLeg,
};
use voxgate::ids::{new_id, IdKind};
use voxgate::store::{
    fmt_time, AgentCallCounts, AgentPatch, AttemptResult, Backend, CallFilter, Credentials,
    NewAgent, NewWebhook, NextStep, OutboxEvent, Presence, Registration, RegistrationChange, Store,
    StoreError, WebhookPatch,
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
    call_changes_apply_in_order,
    failed_call_batch_writes_nothing,
    call_filters_and_pagination,
    orphaned_calls_are_closed,
    calls_outlive_their_agents,
    recorder_applies_in_order_and_skips_a_bad_change,
    mixed_call_batch_lands_as_if_applied_one_by_one,
    webhook_outbox_is_written_with_the_call_changes,
    webhook_outbox_only_when_someone_listens,
    webhook_claims_lease_and_keep_call_order,
    webhook_claims_never_hand_one_event_to_two_workers,
    webhook_crud_and_deliveries,
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

/// 2026-01-01T10:00:00Z plus `secs`.
fn at(secs: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 10, 0, 0).unwrap() + Duration::seconds(secs)
}

fn new_call(agent_id: Option<&str>, from: &str, to: &str, started_at: DateTime<Utc>) -> NewCall {
    NewCall {
        id: new_id(IdKind::Call),
        direction: CallDirection::Internal,
        from: from.to_owned(),
        to: to.to_owned(),
        agent_id: agent_id.map(str::to_owned),
        status: CallStatus::Ringing,
        started_at,
        status_callback: None,
        metadata: None,
    }
}

fn new_leg(call: &NewCall, direction: LegDirection, agent_id: Option<&str>, uri: &str) -> NewLeg {
    NewLeg {
        id: new_id(IdKind::Leg),
        call_id: call.id.clone(),
        direction,
        agent_id: agent_id.map(str::to_owned),
        uri: uri.to_owned(),
        sip_call_id: format!("{}@test", new_id(IdKind::Leg)),
        status: CallStatus::Ringing,
        started_at: call.started_at,
    }
}

fn leg_status(
    leg: &NewLeg,
    status: CallStatus,
    t: DateTime<Utc>,
    cause: Option<&str>,
) -> CallChange {
    CallChange::LegStatus {
        leg_id: leg.id.clone(),
        status,
        at: t,
        hangup_cause: cause.map(str::to_owned),
    }
}

fn ids(calls: &[voxgate::store::Call]) -> Vec<&str> {
    calls.iter().map(|c| c.id.as_str()).collect()
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

    pub async fn call_changes_apply_in_order(store: Store, _url: String) {
        let alice = store.create_agent(&new_agent("alice")).await.unwrap();
        let bob = store.create_agent(&new_agent("bob")).await.unwrap();
        let call = new_call(
            Some(&alice.id),
            "sip:alice@voxgate",
            "sip:bob@voxgate",
            at(0),
        );
        let a_leg = new_leg(
            &call,
            LegDirection::Inbound,
            Some(&alice.id),
            "sip:alice@voxgate",
        );
        let b_leg = new_leg(
            &call,
            LegDirection::Outbound,
            Some(&bob.id),
            "sip:bob@10.0.0.3:5062",
        );
        store
            .apply_call_changes(&[
                CallChange::CreateCall(call.clone()),
                CallChange::CreateLeg(a_leg.clone()),
                CallChange::CreateLeg(b_leg.clone()),
            ])
            .await
            .unwrap();
        let got = store.get_call(&call.id).await.unwrap();
        assert!(
            got.id.starts_with("call_") && got.id.len() == 31,
            "{}",
            got.id
        );
        assert_eq!(got.status, CallStatus::Ringing);
        assert_eq!(
            (got.from.as_str(), got.to.as_str()),
            ("sip:alice@voxgate", "sip:bob@voxgate")
        );
        assert_eq!(got.direction, "internal");
        assert_eq!(got.agent_id.as_deref(), Some(alice.id.as_str()));
        assert_eq!(got.started_at, at(0));
        assert_eq!(
            (got.answered_at, got.ended_at, got.duration_seconds),
            (None, None, None)
        );
        assert_eq!(got.metadata, None);
        assert_eq!(got.legs.len(), 2);
        assert_eq!(got.legs[0].id, a_leg.id);
        assert_eq!(got.legs[0].direction, LegDirection::Inbound);
        assert_eq!(got.legs[1].uri, "sip:bob@10.0.0.3:5062");
        assert_eq!(got.legs[1].sip_call_id, b_leg.sip_call_id);
        assert_eq!(got.legs[1].agent_id.as_deref(), Some(bob.id.as_str()));

        // Bob's phone rings; alice, placing the call, is busy.
        let counts = store
            .live_call_counts_for_agents(&[&alice.id, &bob.id, "agt_nobody"])
            .await
            .unwrap();
        assert_eq!(
            counts[&alice.id],
            AgentCallCounts {
                ringing: 0,
                in_progress: 1
            }
        );
        assert_eq!(
            counts[&bob.id],
            AgentCallCounts {
                ringing: 1,
                in_progress: 0
            }
        );
        assert_eq!(counts.len(), 2);

        // Answer, then a second answer (a re-INVITE's 200) must not move answered_at.
        store
            .apply_call_changes(&[
                leg_status(&b_leg, CallStatus::InProgress, at(5), None),
                leg_status(&a_leg, CallStatus::InProgress, at(5), None),
                CallChange::CallAnswered {
                    call_id: call.id.clone(),
                    at: at(5),
                },
                CallChange::CallAnswered {
                    call_id: call.id.clone(),
                    at: at(9),
                },
                leg_status(&b_leg, CallStatus::InProgress, at(9), None),
            ])
            .await
            .unwrap();
        let got = store.get_call(&call.id).await.unwrap();
        assert_eq!(got.status, CallStatus::InProgress);
        assert_eq!(got.answered_at, Some(at(5)));
        assert_eq!(got.legs[1].answered_at, Some(at(5)));
        assert_eq!(got.legs[1].ended_at, None);
        let counts = store.live_call_counts_for_agents(&[&bob.id]).await.unwrap();
        assert_eq!(
            counts[&bob.id],
            AgentCallCounts {
                ringing: 0,
                in_progress: 1
            }
        );

        // Bob hangs up; the engine reports his leg and the call, not alice's leg: the call's
        // end closes it.
        store
            .apply_call_changes(&[
                leg_status(&b_leg, CallStatus::Completed, at(35), Some("BYE")),
                CallChange::CallEnded {
                    call_id: call.id.clone(),
                    status: CallStatus::Completed,
                    at: at(35),
                    duration_seconds: 30,
                    hangup_cause: "BYE".into(),
                    hangup_by: HangupBy::Callee,
                },
                // Late and repeated changes change nothing that matters.
                CallChange::CallAnswered {
                    call_id: call.id.clone(),
                    at: at(40),
                },
                CallChange::CreateCall(call.clone()),
                CallChange::CallAnswered {
                    call_id: "call_unknown".into(),
                    at: at(40),
                },
            ])
            .await
            .unwrap();
        let got = store.get_call(&call.id).await.unwrap();
        assert_eq!(got.status, CallStatus::Completed);
        assert_eq!(got.answered_at, Some(at(5)));
        assert_eq!(got.ended_at, Some(at(35)));
        assert_eq!(got.duration_seconds, Some(30));
        assert_eq!(got.hangup_cause.as_deref(), Some("BYE"));
        assert_eq!(got.hangup_by.as_deref(), Some("callee"));
        assert_eq!(got.started_at, at(0));
        for leg in &got.legs {
            assert_eq!(leg.status, CallStatus::Completed, "{leg:?}");
            assert_eq!(leg.ended_at, Some(at(35)));
            assert_eq!(leg.hangup_cause.as_deref(), Some("BYE"));
        }
        assert!(store
            .live_call_counts_for_agents(&[&alice.id, &bob.id])
            .await
            .unwrap()
            .is_empty());
        assert!(matches!(
            store.get_call("call_00000000000000000000000000").await,
            Err(StoreError::NotFound)
        ));
        store.apply_call_changes(&[]).await.unwrap();

        // An unanswered call: the ringing leg the call's end finds open is canceled.
        let c2 = new_call(None, "sip:alice@voxgate", "sip:bob@voxgate", at(100));
        let l2 = new_leg(&c2, LegDirection::Outbound, Some(&bob.id), "sip:bob@x");
        store
            .apply_call_changes(&[
                CallChange::CreateCall(c2.clone()),
                CallChange::CreateLeg(l2.clone()),
                CallChange::CallEnded {
                    call_id: c2.id.clone(),
                    status: CallStatus::Canceled,
                    at: at(104),
                    duration_seconds: 0,
                    hangup_cause: "CANCEL".into(),
                    hangup_by: HangupBy::Caller,
                },
            ])
            .await
            .unwrap();
        let got = store.get_call(&c2.id).await.unwrap();
        assert_eq!(got.status, CallStatus::Canceled);
        assert_eq!(got.answered_at, None);
        assert_eq!(got.duration_seconds, Some(0));
        assert_eq!(got.legs[0].status, CallStatus::Canceled);
        assert_eq!(got.legs[0].answered_at, None);
        assert_eq!(got.legs[0].hangup_cause.as_deref(), Some("CANCEL"));
    }

    pub async fn failed_call_batch_writes_nothing(store: Store, _url: String) {
        let kept = new_call(None, "sip:a@x", "sip:b@x", at(0));
        store
            .apply_call_changes(&[CallChange::CreateCall(kept.clone())])
            .await
            .unwrap();
        let good = new_call(None, "sip:a@x", "sip:b@x", at(1));
        let orphan_leg = NewLeg {
            call_id: "call_00000000000000000000000000".into(),
            ..new_leg(&good, LegDirection::Outbound, None, "sip:b@x")
        };
        let result = store
            .apply_call_changes(&[
                CallChange::CallAnswered {
                    call_id: kept.id.clone(),
                    at: at(2),
                },
                CallChange::CreateCall(good.clone()),
                CallChange::CreateLeg(orphan_leg), // violates the foreign key
            ])
            .await;
        assert!(matches!(result, Err(StoreError::Db(_))), "{result:?}");
        assert!(matches!(
            store.get_call(&good.id).await,
            Err(StoreError::NotFound)
        ));
        let k = store.get_call(&kept.id).await.unwrap();
        assert_eq!((k.status, k.answered_at), (CallStatus::Ringing, None));
    }

    pub async fn call_filters_and_pagination(store: Store, _url: String) {
        let alice = store.create_agent(&new_agent("alice")).await.unwrap();
        let bob = store.create_agent(&new_agent("bob")).await.unwrap();
        // c0: alice calls bob (completed); c1: a trunk call to bob (ringing);
        // c2: alice calls 10011 (failed); c3: 1001 (a number) calls alice (in progress);
        // c4: no agents at all (busy).
        let c0 = new_call(
            Some(&alice.id),
            "sip:alice@voxgate",
            "sip:bob@voxgate",
            at(0),
        );
        let c1 = new_call(
            None,
            "sip:+919876543210@trunk.example",
            "sip:bob@voxgate",
            at(60),
        );
        let c2 = new_call(
            Some(&alice.id),
            "sip:alice@voxgate",
            "sip:10011@pbx",
            at(120),
        );
        let c3 = new_call(
            None,
            "sip:1001@pbx.example;transport=tcp",
            "sip:alice@voxgate",
            at(180),
        );
        let c4 = new_call(None, "tel:1001", "sips:bob@voxgate", at(240));
        let mut changes = Vec::new();
        for c in [&c0, &c1, &c2, &c3, &c4] {
            changes.push(CallChange::CreateCall(c.clone()));
        }
        changes.push(CallChange::CreateLeg(new_leg(
            &c0,
            LegDirection::Outbound,
            Some(&bob.id),
            "sip:bob@x",
        )));
        changes.push(CallChange::CreateLeg(new_leg(
            &c1,
            LegDirection::Outbound,
            Some(&bob.id),
            "sip:bob@x",
        )));
        changes.push(CallChange::CreateLeg(new_leg(
            &c3,
            LegDirection::Outbound,
            Some(&alice.id),
            "sip:alice@x",
        )));
        let end = |c: &NewCall, status: CallStatus| CallChange::CallEnded {
            call_id: c.id.clone(),
            status,
            at: c.started_at + Duration::seconds(10),
            duration_seconds: 0,
            hangup_cause: "test".into(),
            hangup_by: HangupBy::System,
        };
        changes.push(end(&c0, CallStatus::Completed));
        changes.push(end(&c2, CallStatus::Failed));
        changes.push(end(&c4, CallStatus::Busy));
        changes.push(CallChange::CallAnswered {
            call_id: c3.id.clone(),
            at: at(185),
        });
        store.apply_call_changes(&changes).await.unwrap();

        let list = |f: CallFilter| {
            let store = store.clone();
            async move { store.list_calls(&f, 50, None).await.unwrap().data }
        };
        // Newest first.
        let all = list(CallFilter::default()).await;
        assert_eq!(ids(&all), vec![&c4.id, &c3.id, &c2.id, &c1.id, &c0.id]);
        assert_eq!(all[4].legs.len(), 1, "legs come with listed calls");
        assert_eq!(all[3].legs[0].call_id, c1.id);
        assert!(all[0].legs.is_empty());

        let by_status = |s| {
            list(CallFilter {
                status: Some(s),
                ..CallFilter::default()
            })
        };
        assert_eq!(ids(&by_status(CallStatus::Completed).await), vec![&c0.id]);
        assert_eq!(ids(&by_status(CallStatus::InProgress).await), vec![&c3.id]);
        assert_eq!(ids(&by_status(CallStatus::Ringing).await), vec![&c1.id]);
        assert!(by_status(CallStatus::NoAnswer).await.is_empty());

        // An agent matches the calls they placed and the calls with a leg of theirs, by id
        // or username.
        let by_agent = |a: &str| {
            list(CallFilter {
                agent: Some(a.to_owned()),
                ..CallFilter::default()
            })
        };
        assert_eq!(ids(&by_agent("alice").await), vec![&c3.id, &c2.id, &c0.id]);
        assert_eq!(
            ids(&by_agent(&alice.id).await),
            vec![&c3.id, &c2.id, &c0.id]
        );
        assert_eq!(ids(&by_agent("bob").await), vec![&c1.id, &c0.id]);
        assert!(by_agent("carol").await.is_empty());

        // from/to: exact, or the user part of a sip:/sips: URI, or a tel: number.
        let by_from = |v: &str| {
            list(CallFilter {
                from: Some(v.to_owned()),
                ..CallFilter::default()
            })
        };
        let by_to = |v: &str| {
            list(CallFilter {
                to: Some(v.to_owned()),
                ..CallFilter::default()
            })
        };
        assert_eq!(ids(&by_from("1001").await), vec![&c4.id, &c3.id]);
        assert_eq!(
            ids(&by_from("sip:alice@voxgate").await),
            vec![&c2.id, &c0.id]
        );
        assert_eq!(ids(&by_from("+919876543210").await), vec![&c1.id]);
        assert!(by_from("100").await.is_empty());
        assert!(by_from("%").await.is_empty());
        assert_eq!(ids(&by_to("bob").await), vec![&c4.id, &c1.id, &c0.id]);
        assert_eq!(ids(&by_to("10011").await), vec![&c2.id]);
        assert!(by_to("1001").await.is_empty());

        // since is inclusive, until exclusive.
        let window = list(CallFilter {
            since: Some(at(60)),
            until: Some(at(180)),
            ..CallFilter::default()
        })
        .await;
        assert_eq!(ids(&window), vec![&c2.id, &c1.id]);
        let later = list(CallFilter {
            since: Some(at(181)),
            ..CallFilter::default()
        })
        .await;
        assert_eq!(ids(&later), vec![&c4.id]);

        // Filters combine.
        let combo = list(CallFilter {
            agent: Some("alice".into()),
            to: Some("bob".into()),
            status: Some(CallStatus::Completed),
            since: Some(at(0)),
            until: Some(at(1)),
            ..CallFilter::default()
        })
        .await;
        assert_eq!(ids(&combo), vec![&c0.id]);

        // Pages: newest first, `after` continues with older calls, with and without filters.
        let p1 = store
            .list_calls(&CallFilter::default(), 2, None)
            .await
            .unwrap();
        assert_eq!(ids(&p1.data), vec![&c4.id, &c3.id]);
        assert_eq!(p1.next.as_deref(), Some(c3.id.as_str()));
        let p2 = store
            .list_calls(&CallFilter::default(), 2, p1.next.as_deref())
            .await
            .unwrap();
        assert_eq!(ids(&p2.data), vec![&c2.id, &c1.id]);
        let p3 = store
            .list_calls(&CallFilter::default(), 2, p2.next.as_deref())
            .await
            .unwrap();
        assert_eq!(ids(&p3.data), vec![&c0.id]);
        assert_eq!(p3.next, None);
        let exact = store
            .list_calls(&CallFilter::default(), 5, None)
            .await
            .unwrap();
        assert_eq!((exact.data.len(), exact.next), (5, None));
        let f = CallFilter {
            agent: Some("alice".into()),
            ..CallFilter::default()
        };
        let q1 = store.list_calls(&f, 2, None).await.unwrap();
        assert_eq!(ids(&q1.data), vec![&c3.id, &c2.id]);
        let q2 = store.list_calls(&f, 2, q1.next.as_deref()).await.unwrap();
        assert_eq!((ids(&q2.data), q2.next), (vec![c0.id.as_str()], None));
        let none = store
            .list_calls(&CallFilter::default(), 5, Some(&c0.id))
            .await
            .unwrap();
        assert!(none.data.is_empty() && none.next.is_none());
    }

    pub async fn orphaned_calls_are_closed(store: Store, _url: String) {
        let now = voxgate::store::now();
        let answered = new_call(None, "sip:a@x", "sip:b@x", now - Duration::seconds(100));
        let answered_leg = new_leg(&answered, LegDirection::Outbound, None, "sip:b@x");
        let ringing = new_call(None, "sip:a@x", "sip:c@x", now - Duration::seconds(5));
        let ringing_leg = new_leg(&ringing, LegDirection::Outbound, None, "sip:c@x");
        let done = new_call(None, "sip:a@x", "sip:d@x", now - Duration::seconds(500));
        store
            .apply_call_changes(&[
                CallChange::CreateCall(answered.clone()),
                CallChange::CreateLeg(answered_leg.clone()),
                leg_status(
                    &answered_leg,
                    CallStatus::InProgress,
                    now - Duration::seconds(90),
                    None,
                ),
                CallChange::CallAnswered {
                    call_id: answered.id.clone(),
                    at: now - Duration::milliseconds(90_400),
                },
                CallChange::CreateCall(ringing.clone()),
                CallChange::CreateLeg(ringing_leg.clone()),
                CallChange::CreateCall(done.clone()),
                CallChange::CallEnded {
                    call_id: done.id.clone(),
                    status: CallStatus::NoAnswer,
                    at: now - Duration::seconds(470),
                    duration_seconds: 0,
                    hangup_cause: "408 Request Timeout".into(),
                    hangup_by: HangupBy::System,
                },
            ])
            .await
            .unwrap();
        let done_before = store.get_call(&done.id).await.unwrap();

        assert_eq!(store.close_orphaned_calls(now).await.unwrap(), 2);
        let a = store.get_call(&answered.id).await.unwrap();
        assert_eq!(a.status, CallStatus::Failed);
        assert_eq!(a.hangup_cause.as_deref(), Some("gateway-restart"));
        assert_eq!(a.hangup_by.as_deref(), Some("system"));
        assert_eq!(a.ended_at, Some(now));
        // Whole seconds from the answer (90.4 s).
        assert_eq!(a.duration_seconds, Some(90));
        assert_eq!(a.legs[0].status, CallStatus::Failed);
        assert_eq!(a.legs[0].ended_at, Some(now));
        assert_eq!(a.legs[0].hangup_cause.as_deref(), Some("gateway-restart"));
        let r = store.get_call(&ringing.id).await.unwrap();
        assert_eq!(
            (r.status, r.duration_seconds),
            (CallStatus::Failed, Some(0))
        );
        assert_eq!(r.answered_at, None);
        assert_eq!(r.legs[0].status, CallStatus::Failed);
        // Finished calls are not touched.
        assert_eq!(store.get_call(&done.id).await.unwrap(), done_before);
        assert_eq!(store.close_orphaned_calls(now).await.unwrap(), 0);
    }

    pub async fn calls_outlive_their_agents(store: Store, _url: String) {
        let alice = store.create_agent(&new_agent("alice")).await.unwrap();
        let call = new_call(
            Some(&alice.id),
            "sip:alice@voxgate",
            "sip:bob@voxgate",
            at(0),
        );
        let leg = new_leg(
            &call,
            LegDirection::Inbound,
            Some(&alice.id),
            "sip:alice@voxgate",
        );
        store
            .apply_call_changes(&[
                CallChange::CreateCall(call.clone()),
                CallChange::CreateLeg(leg),
            ])
            .await
            .unwrap();
        store.delete_agent(&alice.id).await.unwrap();
        let got = store.get_call(&call.id).await.unwrap();
        assert_eq!(got.agent_id, None);
        assert_eq!(got.legs.len(), 1);
        assert_eq!(got.legs[0].agent_id, None);
        assert_eq!(got.from, "sip:alice@voxgate");
        // A change queued before the deletion and written after it stores no agent rather
        // than failing its batch.
        let late = new_call(
            Some(&alice.id),
            "sip:alice@voxgate",
            "sip:bob@voxgate",
            at(5),
        );
        let late_leg = new_leg(
            &late,
            LegDirection::Inbound,
            Some(&alice.id),
            "sip:alice@voxgate",
        );
        store
            .apply_call_changes(&[
                CallChange::CreateCall(late.clone()),
                CallChange::CreateLeg(late_leg),
            ])
            .await
            .unwrap();
        let got = store.get_call(&late.id).await.unwrap();
        assert_eq!((got.agent_id, got.legs[0].agent_id.clone()), (None, None));
    }

    pub async fn recorder_applies_in_order_and_skips_a_bad_change(store: Store, _url: String) {
        let health = voxgate::calls::record::RecorderHealth::new(100_000);
        let (tx, rx) = voxgate::calls::record::RecordSender::channel(health.clone());
        let mut calls = Vec::new();
        for i in 0..300 {
            let c = new_call(None, "sip:a@x", &format!("sip:{i}@x"), at(i));
            tx.send(CallChange::CreateCall(c.clone()));
            if i == 150 {
                // A leg of an unknown call: rejected by the database, dropped alone.
                let bad = NewLeg {
                    call_id: "call_00000000000000000000000000".into(),
                    ..new_leg(&c, LegDirection::Outbound, None, "sip:b@x")
                };
                tx.send(CallChange::CreateLeg(bad));
            }
            tx.send(CallChange::CallAnswered {
                call_id: c.id.clone(),
                at: at(i + 1),
            });
            calls.push(c);
        }
        assert_eq!(health.backlog(), 601, "counted as queued");
        drop(tx);
        // Returns once the queue is closed and drained.
        tokio::time::timeout(
            std::time::Duration::from_secs(60),
            voxgate::calls::record::run_recorder(store.clone(), rx, health.clone()),
        )
        .await
        .unwrap();
        assert_eq!(
            health.backlog(),
            0,
            "everything taken in is committed or dropped"
        );
        assert!(!health.db_down() && !health.overloaded());
        let page = store
            .list_calls(&CallFilter::default(), 200, None)
            .await
            .unwrap();
        assert_eq!(page.data.len(), 200);
        let page2 = store
            .list_calls(&CallFilter::default(), 200, page.next.as_deref())
            .await
            .unwrap();
        assert_eq!(page2.data.len(), 100);
        for c in page.data.iter().chain(&page2.data) {
            assert_eq!(c.status, CallStatus::InProgress, "{}", c.id);
            assert_eq!(c.answered_at, Some(c.started_at + Duration::seconds(1)));
            assert!(c.legs.is_empty());
        }
    }

    /// A call from the batch's point of view: ids, SIP Call-IDs and write times blanked,
    /// so two runs of one scenario with different ids compare equal.
    fn normalized(mut c: voxgate::store::Call) -> voxgate::store::Call {
        c.id = String::new();
        c.created_at = at(0);
        c.updated_at = at(0);
        for l in &mut c.legs {
            l.id = String::new();
            l.call_id = String::new();
            l.sip_call_id = String::new();
        }
        c
    }

    /// A call already up (created and answered by an earlier batch), and the one batch
    /// that mixes every kind of change the engine sends, several calls interleaved: a
    /// new call answered then hung up, a call that ends while its leg updates come
    /// before and after its end, a call canceled while ringing, a late leg update of an
    /// unknown leg, a call of an unknown agent. Returns (earlier changes, the batch,
    /// call ids).
    fn mixed_scenario(agent: &str) -> (Vec<CallChange>, Vec<CallChange>, Vec<String>) {
        let p = new_call(Some(agent), "sip:alice@voxgate", "sip:bob@voxgate", at(0));
        let pa = new_leg(&p, LegDirection::Inbound, Some(agent), "sip:alice@voxgate");
        let pb = new_leg(&p, LegDirection::Outbound, None, "sip:bob@x");
        let earlier = vec![
            CallChange::CreateCall(p.clone()),
            CallChange::CreateLeg(pa.clone()),
            CallChange::CreateLeg(pb.clone()),
            leg_status(&pa, CallStatus::InProgress, at(1), None),
            leg_status(&pb, CallStatus::InProgress, at(1), None),
            CallChange::CallAnswered {
                call_id: p.id.clone(),
                at: at(1),
            },
        ];
        let c1 = new_call(Some(agent), "sip:alice@voxgate", "sip:carol@voxgate", at(2));
        let c1a = new_leg(&c1, LegDirection::Inbound, Some(agent), "sip:alice@voxgate");
        let c1b = new_leg(&c1, LegDirection::Outbound, None, "sip:carol@x");
        let c2 = new_call(None, "sip:dave@voxgate", "sip:bob@voxgate", at(3));
        let c2b = new_leg(&c2, LegDirection::Outbound, None, "sip:bob@x");
        let c3 = new_call(
            Some("agt_nobody"),
            "sip:eve@voxgate",
            "sip:bob@voxgate",
            at(4),
        );
        let c3a = new_leg(&c3, LegDirection::Inbound, Some("agt_nobody"), "sip:eve@x");
        let ghost = NewLeg {
            id: "leg_00000000000000000000000000".into(),
            ..pb.clone()
        };
        let batch = vec![
            CallChange::CreateCall(c1.clone()),
            CallChange::CreateLeg(c1a.clone()),
            CallChange::CreateLeg(c1b.clone()),
            leg_status(&c1b, CallStatus::InProgress, at(5), None),
            leg_status(&c1a, CallStatus::InProgress, at(5), None),
            CallChange::CallAnswered {
                call_id: c1.id.clone(),
                at: at(5),
            },
            // A re-INVITE's 200: must not move answered_at.
            CallChange::CallAnswered {
                call_id: c1.id.clone(),
                at: at(9),
            },
            leg_status(&c1b, CallStatus::InProgress, at(9), None),
            // P: bob hangs up; the end closes alice's leg.
            leg_status(&pb, CallStatus::Completed, at(20), Some("BYE")),
            CallChange::CallEnded {
                call_id: p.id.clone(),
                status: CallStatus::Completed,
                at: at(20),
                duration_seconds: 19,
                hangup_cause: "BYE".into(),
                hangup_by: HangupBy::Callee,
            },
            CallChange::CreateCall(c2.clone()),
            CallChange::CreateLeg(c2b.clone()),
            CallChange::CallEnded {
                call_id: c2.id.clone(),
                status: CallStatus::Canceled,
                at: at(30),
                duration_seconds: 0,
                hangup_cause: "CANCEL".into(),
                hangup_by: HangupBy::Caller,
            },
            // After P's end (a leg created by an earlier batch): status and cause move,
            // ended_at stays the end's.
            leg_status(&pa, CallStatus::Failed, at(25), Some("late")),
            leg_status(&ghost, CallStatus::Completed, at(26), Some("BYE")),
            CallChange::CreateCall(c3.clone()),
            CallChange::CreateLeg(c3a.clone()),
            leg_status(&c1b, CallStatus::Completed, at(40), Some("BYE")),
            CallChange::CallEnded {
                call_id: c1.id.clone(),
                status: CallStatus::Completed,
                at: at(40),
                duration_seconds: 35,
                hangup_cause: "BYE".into(),
                hangup_by: HangupBy::Callee,
            },
        ];
        let ids = [&p, &c1, &c2, &c3].iter().map(|c| c.id.clone()).collect();
        (earlier, batch, ids)
    }

    pub async fn mixed_call_batch_lands_as_if_applied_one_by_one(store: Store, _url: String) {
        let alice = store.create_agent(&new_agent("alice")).await.unwrap();
        let (earlier, batch, grouped_ids) = mixed_scenario(&alice.id);
        store.apply_call_changes(&earlier).await.unwrap();
        store.apply_call_changes(&batch).await.unwrap();
        // The same scenario (fresh ids), every change in a transaction of its own.
        let (earlier, batch, single_ids) = mixed_scenario(&alice.id);
        for change in earlier.iter().chain(&batch) {
            store
                .apply_call_changes(std::slice::from_ref(change))
                .await
                .unwrap();
        }
        let mut grouped = Vec::new();
        for (g, s) in grouped_ids.iter().zip(&single_ids) {
            let got = store.get_call(g).await.unwrap();
            let want = store.get_call(s).await.unwrap();
            assert_eq!(normalized(got.clone()), normalized(want), "call {g}");
            grouped.push(got);
        }
        // And the outcome itself.
        let [p, c1, c2, c3] = grouped.try_into().unwrap();
        assert_eq!(p.status, CallStatus::Completed);
        assert_eq!(p.ended_at, Some(at(20)));
        assert_eq!(p.legs[0].status, CallStatus::Failed);
        assert_eq!(p.legs[0].ended_at, Some(at(20)));
        assert_eq!(p.legs[0].hangup_cause.as_deref(), Some("late"));
        assert_eq!(p.legs[1].status, CallStatus::Completed);
        assert_eq!(c1.status, CallStatus::Completed);
        assert_eq!(c1.answered_at, Some(at(5)));
        assert_eq!(c1.duration_seconds, Some(35));
        assert_eq!(c1.hangup_by.as_deref(), Some("callee"));
        for leg in &c1.legs {
            assert_eq!(leg.status, CallStatus::Completed, "{leg:?}");
            assert_eq!(leg.answered_at, Some(at(5)), "{leg:?}");
            assert_eq!(leg.ended_at, Some(at(40)), "{leg:?}");
            assert_eq!(leg.hangup_cause.as_deref(), Some("BYE"), "{leg:?}");
        }
        assert_eq!(c2.status, CallStatus::Canceled);
        assert_eq!(c2.legs[0].status, CallStatus::Canceled);
        assert_eq!(c2.legs[0].hangup_cause.as_deref(), Some("CANCEL"));
        assert_eq!(c3.status, CallStatus::Ringing);
        assert_eq!(
            (c3.agent_id.clone(), c3.legs[0].agent_id.clone()),
            (None, None)
        );

        // More rows than one statement takes (500): chunked, all land.
        let mut big = Vec::new();
        let mut ids = Vec::new();
        for i in 0..600 {
            let c = new_call(None, "sip:a@x", &format!("sip:{i}@x"), at(1000 + i));
            let a = new_leg(&c, LegDirection::Inbound, None, "sip:a@x");
            let b = new_leg(&c, LegDirection::Outbound, None, "sip:b@x");
            big.push(CallChange::CreateCall(c.clone()));
            big.push(CallChange::CreateLeg(a.clone()));
            big.push(CallChange::CreateLeg(b.clone()));
            big.push(leg_status(&b, CallStatus::InProgress, at(1001 + i), None));
            big.push(leg_status(&a, CallStatus::InProgress, at(1001 + i), None));
            big.push(CallChange::CallAnswered {
                call_id: c.id.clone(),
                at: at(1001 + i),
            });
            big.push(CallChange::CallEnded {
                call_id: c.id.clone(),
                status: CallStatus::Completed,
                at: at(1003 + i),
                duration_seconds: 2,
                hangup_cause: "BYE".into(),
                hangup_by: HangupBy::Caller,
            });
            ids.push(c.id);
        }
        store.apply_call_changes(&big).await.unwrap();
        let completed = CallFilter {
            status: Some(CallStatus::Completed),
            ..CallFilter::default()
        };
        let mut n = 0;
        let mut after: Option<String> = None;
        loop {
            let page = store
                .list_calls(&completed, 200, after.as_deref())
                .await
                .unwrap();
            for c in &page.data {
                if ids.contains(&c.id) {
                    n += 1;
                    assert_eq!(c.legs.len(), 2, "{c:?}");
                    assert!(c.legs.iter().all(|l| l.status == CallStatus::Completed));
                }
            }
            match page.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        assert_eq!(n, 600);
    }

    // ---------------------------------------------------------------------------------
    // Webhooks

    fn hook(url: &str, events: &[&str]) -> NewWebhook {
        NewWebhook {
            url: url.to_owned(),
            events: events.iter().map(|e| (*e).to_owned()).collect(),
            secret: "whsec_0123456789abcdef".to_owned(),
            description: None,
        }
    }

    fn payload(e: &OutboxEvent) -> serde_json::Value {
        serde_json::from_str(&e.payload).unwrap()
    }

    /// A call's whole life in one batch: created ringing, a leg, answered, ended.
    fn call_life(c: &NewCall, t0: i64) -> Vec<CallChange> {
        let leg = new_leg(c, LegDirection::Outbound, None, "sip:bob@x");
        vec![
            CallChange::CreateCall(c.clone()),
            CallChange::CreateLeg(leg.clone()),
            leg_status(&leg, CallStatus::InProgress, at(t0 + 1), None),
            CallChange::CallAnswered {
                call_id: c.id.clone(),
                at: at(t0 + 1),
            },
            CallChange::CallEnded {
                call_id: c.id.clone(),
                status: CallStatus::Completed,
                at: at(t0 + 5),
                duration_seconds: 4,
                hangup_cause: "BYE".into(),
                hangup_by: HangupBy::Callee,
            },
        ]
    }

    pub async fn webhook_outbox_is_written_with_the_call_changes(store: Store, _url: String) {
        let h = store
            .create_webhook(&hook("http://127.0.0.1:9/h", &["call.*"]))
            .await
            .unwrap();
        let c = new_call(None, "sip:alice@x", "sip:bob@x", at(0));
        store.apply_call_changes(&call_life(&c, 0)).await.unwrap();
        let rows = store.list_outbox().await.unwrap();
        let types: Vec<&str> = rows.iter().map(|r| r.event_type.as_str()).collect();
        assert_eq!(
            types,
            [
                "call.initiated",
                "call.ringing",
                "call.answered",
                "call.completed"
            ]
        );
        for r in &rows {
            assert_eq!(r.webhook_id.as_deref(), Some(h.id.as_str()));
            assert_eq!(r.target, h.id);
            assert_eq!(r.order_key.as_deref(), Some(c.id.as_str()));
            assert_eq!(r.state, "pending");
            let p = payload(r);
            assert_eq!(p["id"], r.id.as_str());
            assert!(r.id.starts_with("evt_"), "{}", r.id);
            assert_eq!(p["type"], r.event_type.as_str());
            assert!(p["created_at"].is_string());
            assert_eq!(p["data"]["id"], c.id.as_str());
            assert_eq!(p["data"]["from"], "sip:alice@x");
        }
        let done = payload(&rows[3]);
        assert_eq!(done["data"]["status"], "completed");
        assert_eq!(done["data"]["duration_seconds"], 4);
        assert_eq!(done["data"]["hangup_cause"], "BYE");
        assert_eq!(done["data"]["hangup_by"], "callee");
        assert_eq!(done["data"]["answered_at"], fmt_time(at(1)).as_str());
        assert_eq!(payload(&rows[2])["data"]["status"], "in-progress");
        assert!(payload(&rows[0])["data"]["answered_at"].is_null());

        // Same transaction: a batch the database rejects (a leg of an unknown call)
        // leaves no event of the call it would have created.
        let c2 = new_call(None, "sip:carol@x", "sip:bob@x", at(10));
        let ghost = new_call(None, "sip:x@x", "sip:y@x", at(10));
        let bad = vec![
            CallChange::CreateCall(c2.clone()),
            CallChange::CreateLeg(new_leg(&ghost, LegDirection::Inbound, None, "sip:x@x")),
        ];
        assert!(store.apply_call_changes(&bad).await.is_err());
        assert_eq!(store.list_outbox().await.unwrap().len(), 4);
        assert!(matches!(
            store.get_call(&c2.id).await,
            Err(StoreError::NotFound)
        ));

        // An answer or end repeated in a later batch is no new event.
        store
            .apply_call_changes(&[CallChange::CallEnded {
                call_id: c.id.clone(),
                status: CallStatus::Completed,
                at: at(9),
                duration_seconds: 8,
                hangup_cause: "BYE".into(),
                hangup_by: HangupBy::Caller,
            }])
            .await
            .unwrap();
        assert_eq!(store.list_outbox().await.unwrap().len(), 4);

        // Calls closed at start-up report call.completed (gateway-restart).
        let open = new_call(None, "sip:dave@x", "sip:bob@x", at(20));
        store
            .apply_call_changes(&[CallChange::CreateCall(open.clone())])
            .await
            .unwrap();
        store.close_orphaned_calls(at(30)).await.unwrap();
        let rows = store.list_outbox().await.unwrap();
        let last = rows.last().unwrap();
        assert_eq!(last.event_type, "call.completed");
        assert_eq!(payload(last)["data"]["hangup_cause"], "gateway-restart");
        assert_eq!(payload(last)["data"]["status"], "failed");
    }

    pub async fn webhook_outbox_only_when_someone_listens(store: Store, _url: String) {
        // Nobody subscribes, no status_callback: calls write no outbox rows.
        let c = new_call(None, "sip:alice@x", "sip:bob@x", at(0));
        store.apply_call_changes(&call_life(&c, 0)).await.unwrap();
        assert!(store.list_outbox().await.unwrap().is_empty());

        // A click-to-call call created by the API with a status_callback: its events go
        // to that URL (no webhook), the engine's later changes included.
        let mut q = new_call(None, "sip:alice@x", "tel:+15550100", at(10));
        q.status = CallStatus::Queued;
        q.status_callback = Some("https://crm.example.com/cb".into());
        q.metadata = Some(serde_json::json!({"lead": 42}));
        let call = store.create_call(&q).await.unwrap();
        assert_eq!(call.status, CallStatus::Queued);
        assert_eq!(call.status_callback, q.status_callback);
        assert_eq!(call.metadata, q.metadata);
        assert!(matches!(
            store.create_call(&q).await,
            Err(StoreError::Conflict { .. })
        ));
        let got = store.get_call(&q.id).await.unwrap();
        assert_eq!(got.metadata, q.metadata);
        assert_eq!(got.status_callback, q.status_callback);
        let rows = store.list_outbox().await.unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].event_type, "call.initiated");
        assert_eq!(rows[0].webhook_id, None);
        assert_eq!(rows[0].target, "https://crm.example.com/cb");
        assert_eq!(payload(&rows[0])["data"]["status"], "queued");
        assert_eq!(payload(&rows[0])["data"]["metadata"]["lead"], 42);
        // Another, unrelated call in the same batches still writes nothing.
        let other = new_call(None, "sip:x@x", "sip:y@x", at(11));
        store
            .apply_call_changes(&[
                CallChange::CreateCall(other.clone()),
                CallChange::CallRinging {
                    call_id: q.id.clone(),
                    at: at(11),
                },
            ])
            .await
            .unwrap();
        store
            .apply_call_changes(&[
                CallChange::CallAnswered {
                    call_id: q.id.clone(),
                    at: at(12),
                },
                CallChange::CallAnswered {
                    call_id: other.id.clone(),
                    at: at(12),
                },
                CallChange::CallEnded {
                    call_id: q.id.clone(),
                    status: CallStatus::Completed,
                    at: at(20),
                    duration_seconds: 8,
                    hangup_cause: "BYE".into(),
                    hangup_by: HangupBy::Api,
                },
            ])
            .await
            .unwrap();
        let rows = store.list_outbox().await.unwrap();
        let types: Vec<&str> = rows.iter().map(|r| r.event_type.as_str()).collect();
        assert_eq!(
            types,
            [
                "call.initiated",
                "call.ringing",
                "call.answered",
                "call.completed"
            ]
        );
        assert!(rows
            .iter()
            .all(|r| r.order_key.as_deref() == Some(q.id.as_str())));
        assert_eq!(payload(&rows[3])["data"]["hangup_by"], "api");

        // agent.state_changed only for a real change, only when subscribed.
        let a = store.create_agent(&new_agent("alice")).await.unwrap();
        let away = AgentPatch {
            presence: Some(Presence::Away),
            ..AgentPatch::default()
        };
        store.update_agent(&a.id, &away).await.unwrap();
        assert_eq!(store.list_outbox().await.unwrap().len(), 4);
        store
            .create_webhook(&hook("http://127.0.0.1:9/a", &["agent.*"]))
            .await
            .unwrap();
        let back = AgentPatch {
            presence: Some(Presence::Available),
            ..AgentPatch::default()
        };
        store.update_agent(&a.id, &back).await.unwrap();
        store.update_agent(&a.id, &back).await.unwrap();
        let rows = store.list_outbox().await.unwrap();
        assert_eq!(rows.len(), 5);
        let p = payload(&rows[4]);
        assert_eq!(p["type"], "agent.state_changed");
        assert_eq!(p["data"]["id"], a.id.as_str());
        assert_eq!(p["data"]["state"], "available");
        assert_eq!(p["data"]["previous_state"], "away");
    }

    fn ok_result() -> AttemptResult {
        AttemptResult {
            status_code: Some(200),
            error: None,
            duration_ms: 3,
            at: voxgate::store::now(),
        }
    }

    pub async fn webhook_claims_lease_and_keep_call_order(store: Store, url: String) {
        let other = Store::connect(&url, 2).await.unwrap();
        let h = store
            .create_webhook(&hook("http://127.0.0.1:9/h", &["call.*"]))
            .await
            .unwrap();
        let c1 = new_call(None, "sip:a@x", "sip:b@x", at(0));
        let c2 = new_call(None, "sip:c@x", "sip:d@x", at(0));
        let mut batch = call_life(&c1, 0);
        batch.extend(call_life(&c2, 0));
        store.apply_call_changes(&batch).await.unwrap();
        let lease = std::time::Duration::from_secs(30);
        let t = voxgate::store::now();

        // Only the first event of each call is due; both go to the first worker.
        let a = store.claim_webhook_events("A", t, lease, 10).await.unwrap();
        assert_eq!(a.len(), 2, "{a:?}");
        assert!(a.iter().all(|e| e.event_type == "call.initiated"));
        assert!(a.iter().all(|e| e.url == "http://127.0.0.1:9/h"));
        assert!(a
            .iter()
            .all(|e| e.secret.as_deref() == Some("whsec_0123456789abcdef")));
        assert_eq!(a[0].webhook_id.as_deref(), Some(h.id.as_str()));
        // Leased, and the rest wait for them: another worker gets nothing.
        assert!(other
            .claim_webhook_events("B", t, lease, 10)
            .await
            .unwrap()
            .is_empty());

        // c1's first event delivered: c1's second is due, c2 still waits.
        let e1 = a
            .iter()
            .find(|e| e.order_key.as_deref() == Some(c1.id.as_str()))
            .unwrap();
        store
            .finish_webhook_attempt(e1, "A", &ok_result(), NextStep::Delivered)
            .await
            .unwrap();
        let b = other.claim_webhook_events("B", t, lease, 10).await.unwrap();
        assert_eq!(b.len(), 1, "{b:?}");
        assert_eq!(b[0].event_type, "call.ringing");
        assert_eq!(b[0].order_key.as_deref(), Some(c1.id.as_str()));

        // A failed attempt with a retry time: not due before it, and its successors wait.
        let fail = AttemptResult {
            status_code: Some(500),
            error: Some("HTTP 500".into()),
            duration_ms: 5,
            at: t,
        };
        let retry_at = t + Duration::seconds(20);
        other
            .finish_webhook_attempt(&b[0], "B", &fail, NextStep::RetryAt(retry_at))
            .await
            .unwrap();
        assert!(store
            .claim_webhook_events("A", t + Duration::seconds(1), lease, 10)
            .await
            .unwrap()
            .is_empty());
        let again = store
            .claim_webhook_events("A", retry_at, lease, 10)
            .await
            .unwrap();
        // c1's retried event; c2's first is still leased to A until t + 30 s.
        assert_eq!(again.len(), 1, "{again:?}");
        assert_eq!(again[0].id, b[0].id);
        assert_eq!(again[0].attempts, 1);

        // A lease that expired (its worker died) is taken over; the old owner cannot
        // finish it any more.
        let e2 = a
            .iter()
            .find(|e| e.order_key.as_deref() == Some(c2.id.as_str()))
            .unwrap();
        let later = t + Duration::seconds(31);
        let taken = other
            .claim_webhook_events("B", later, lease, 10)
            .await
            .unwrap();
        assert!(taken.iter().any(|e| e.id == e2.id), "{taken:?}");
        store
            .finish_webhook_attempt(e2, "A", &ok_result(), NextStep::Delivered)
            .await
            .unwrap();
        let rows = store.list_outbox().await.unwrap();
        let row = rows.iter().find(|r| r.id == e2.id).unwrap();
        assert_eq!(
            row.state, "pending",
            "a stale owner does not move the event"
        );

        // Giving up releases the chain too.
        let e2b = taken.iter().find(|e| e.id == e2.id).unwrap();
        other
            .finish_webhook_attempt(e2b, "B", &fail, NextStep::Failed)
            .await
            .unwrap();
        let next = other
            .claim_webhook_events("B", later + Duration::seconds(31), lease, 10)
            .await
            .unwrap();
        assert!(
            next.iter()
                .any(|e| e.order_key.as_deref() == Some(c2.id.as_str())
                    && e.event_type == "call.ringing"),
            "{next:?}"
        );
        let rows = store.list_outbox().await.unwrap();
        assert_eq!(rows.iter().find(|r| r.id == e2.id).unwrap().state, "failed");
        assert_eq!(
            rows.iter().find(|r| r.id == e1.id).unwrap().state,
            "delivered"
        );

        // Every attempt is logged for the webhook (the stale owner's too: its request
        // was made), newest first, paginated.
        let log = store
            .list_webhook_deliveries(&h.id, 50, None)
            .await
            .unwrap();
        assert_eq!(log.data.len(), 4, "{:?}", log.data);
        assert!(log.data.windows(2).all(|w| w[0].id > w[1].id));
        assert_eq!(log.data[3].status_code, Some(200));
        assert_eq!(log.data[3].attempt, 1);
        assert_eq!(log.data[2].error.as_deref(), Some("HTTP 500"));
        let first = store.list_webhook_deliveries(&h.id, 3, None).await.unwrap();
        assert_eq!(first.next.as_deref(), Some(log.data[2].id.as_str()));
        let rest = store
            .list_webhook_deliveries(&h.id, 3, first.next.as_deref())
            .await
            .unwrap();
        assert_eq!(rest.data, vec![log.data[3].clone()]);
        assert_eq!(rest.next, None);

        // Pruning removes finished events (and their log), never pending ones.
        let pending = rows.iter().filter(|r| r.state == "pending").count();
        assert_eq!(store.prune_webhook_events(at(0)).await.unwrap(), 0);
        let pruned = store
            .prune_webhook_events(voxgate::store::now() + Duration::seconds(1))
            .await
            .unwrap();
        assert_eq!(pruned, 2);
        let rows = store.list_outbox().await.unwrap();
        assert_eq!(rows.len(), pending);
        assert!(rows.iter().all(|r| r.state == "pending"));
        let log = store
            .list_webhook_deliveries(&h.id, 50, None)
            .await
            .unwrap();
        assert_eq!(log.data.len(), 1, "{:?}", log.data);
        assert_eq!(log.data[0].event_id, b[0].id);
        other.close().await;
    }

    pub async fn webhook_claims_never_hand_one_event_to_two_workers(store: Store, url: String) {
        let h = store
            .create_webhook(&hook("http://127.0.0.1:9/h", &["*"]))
            .await
            .unwrap();
        let mut ids = Vec::new();
        for _ in 0..60 {
            ids.push(store.enqueue_test_event(&h).await.unwrap());
        }
        let mut workers = Vec::new();
        for w in 0..4 {
            let s = Store::connect(&url, 2).await.unwrap();
            workers.push(tokio::spawn(async move {
                let mut got = Vec::new();
                let t = voxgate::store::now();
                for _ in 0..40 {
                    let batch = s
                        .claim_webhook_events(
                            &format!("w{w}"),
                            t,
                            std::time::Duration::from_secs(60),
                            3,
                        )
                        .await
                        .unwrap();
                    got.extend(batch.into_iter().map(|e| e.id));
                }
                s.close().await;
                got
            }));
        }
        let mut all = Vec::new();
        for w in workers {
            all.extend(w.await.unwrap());
        }
        let n = all.len();
        all.sort();
        all.dedup();
        assert_eq!(n, all.len(), "an event was leased twice");
        ids.sort();
        assert_eq!(all, ids, "every event leased once");
    }

    pub async fn webhook_crud_and_deliveries(store: Store, _url: String) {
        let a = store
            .create_webhook(&hook("https://a.example/h", &["call.*"]))
            .await
            .unwrap();
        let b = store
            .create_webhook(&hook("https://b.example/h", &["*"]))
            .await
            .unwrap();
        assert!(a.id.starts_with("whk_"));
        assert_eq!(store.get_webhook(&a.id).await.unwrap(), a);
        let page = store.list_webhooks(1, None).await.unwrap();
        assert_eq!(page.data, vec![a.clone()]);
        let page = store.list_webhooks(1, page.next.as_deref()).await.unwrap();
        assert_eq!(page.data, vec![b.clone()]);
        assert_eq!(page.next, None);
        let patched = store
            .update_webhook(
                &a.id,
                &WebhookPatch {
                    events: Some(vec!["agent.*".into()]),
                    description: Some(Some("crm".into())),
                    ..WebhookPatch::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(patched.events, ["agent.*"]);
        assert_eq!(patched.url, a.url);
        // The subscription cache follows the API's changes at once.
        let subs = store.subscriptions().await.unwrap();
        assert!(!subs
            .iter()
            .find(|s| s.webhook_id == a.id)
            .unwrap()
            .wants("call.ringing"));
        store.enqueue_test_event(&b).await.unwrap();
        store.delete_webhook(&b.id).await.unwrap();
        assert!(matches!(
            store.delete_webhook(&b.id).await,
            Err(StoreError::NotFound)
        ));
        assert!(
            store.list_outbox().await.unwrap().is_empty(),
            "events go with their webhook"
        );
        assert_eq!(store.subscriptions().await.unwrap().len(), 1);
        // The status_callback secret is generated once and kept.
        let (s1, g1) = store.status_callback_secret().await.unwrap();
        let (s2, g2) = store.status_callback_secret().await.unwrap();
        assert!(g1 && !g2);
        assert_eq!(s1, s2);
        assert!(s1.len() >= 32);
    }
}
