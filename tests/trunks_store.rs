//! Store tests for trunks, numbers, call costs, CDRs and stats: every test runs against
//! SQLite (temp dir) AND PostgreSQL (a fresh database per test; unreachable PostgreSQL
//! fails the test).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use chrono::{DateTime, Duration, TimeZone, Utc};
use voxgate::calls::record::{
    CallChange, CallDirection, CallStatus, HangupBy, LegDirection, NewCall, NewLeg,
};
use voxgate::ids::{new_id, IdKind};
use voxgate::store::{
    CallFilter, Credentials, NewAgent, RecordingChannels, StatsGroupBy, Store, StoreError,
};
use voxgate::trunks::{
    Inbound, NumberFormat, Outbound, Provider, Rate, TrunkConfig, TrunkDirectory, TrunkTransport,
};

use common::PgDb;

enum Guard {
    Sqlite(#[allow(dead_code)] tempfile::TempDir),
    Pg(#[allow(dead_code)] PgDb),
}

async fn sqlite() -> (Store, Guard) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/voxgate.db", dir.path().display());
    let store = Store::connect(&url, 4).await.unwrap();
    store.migrate().await.unwrap();
    (store, Guard::Sqlite(dir))
}

async fn postgres() -> (Store, Guard) {
    let db = PgDb::create().await;
    let store = Store::connect(&db.url, 4).await.unwrap();
    store.migrate().await.unwrap();
    (store, Guard::Pg(db))
}

macro_rules! both {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    let (store, _guard) = super::sqlite().await;
                    super::tests::$name(store).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    let (store, _guard) = super::postgres().await;
                    super::tests::$name(store).await;
                }
            }
        )*
    };
}

both!(
    trunk_crud_round_trips_every_field,
    one_default_trunk,
    numbers_crud_and_trunk_in_use,
    directory_loads_from_the_store,
    call_trunk_and_cost_grouped_and_in_order,
    trunk_and_cost_batch_lands_as_if_applied_one_by_one,
    cdrs_are_finished_calls,
    stats_by_status_trunk_agent_day,
);

fn config(name: &str) -> TrunkConfig {
    TrunkConfig {
        name: name.to_owned(),
        provider: Provider::Exotel,
        outbound: Outbound {
            host: Some("sip.exotel.example".to_owned()),
            port: Some(5070),
            transport: TrunkTransport::Tcp,
            username: Some("acct".to_owned()),
            password: Some("s3cret".to_owned()),
            register: true,
            register_expires: Some(600),
        },
        inbound: Inbound {
            allowed_cidrs: vec!["198.51.100.0/24".to_owned(), "2001:db8::/32".to_owned()],
            username: Some("in".to_owned()),
            password: Some("inpass".to_owned()),
        },
        codecs: vec!["PCMA".to_owned(), "telephone-event".to_owned()],
        max_cps: Some(2),
        max_calls_per_minute: Some(200),
        max_concurrent_calls: None,
        number_format: NumberFormat::InNational,
        caller_id: Some("+918000000001".to_owned()),
        country_code: Some("91".to_owned()),
        rate: Some(Rate {
            per_minute_micros: 500_000,
            currency: "INR".to_owned(),
            increment_seconds: 30,
            minimum_seconds: 30,
        }),
        simulate: Vec::new(),
        default_outbound: false,
    }
}

fn at(secs: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 10, 0, 0).unwrap() + Duration::seconds(secs)
}

fn new_call(agent: Option<&str>, started_at: DateTime<Utc>) -> NewCall {
    NewCall {
        id: new_id(IdKind::Call),
        direction: CallDirection::Outbound,
        from: "sip:alice@voxgate".to_owned(),
        to: "+919876543210".to_owned(),
        agent_id: agent.map(str::to_owned),
        status: CallStatus::Ringing,
        started_at,
        status_callback: None,
        metadata: None,
    }
}

fn ended(call: &NewCall, status: CallStatus, secs: i64, duration: i64) -> CallChange {
    CallChange::CallEnded {
        call_id: call.id.clone(),
        status,
        at: call.started_at + Duration::seconds(secs),
        duration_seconds: duration,
        hangup_cause: "BYE".to_owned(),
        hangup_by: HangupBy::Caller,
    }
}

fn answered(call: &NewCall, secs: i64) -> CallChange {
    CallChange::CallAnswered {
        call_id: call.id.clone(),
        at: call.started_at + Duration::seconds(secs),
    }
}

fn trunk_of(call: &NewCall, trunk: &str) -> CallChange {
    CallChange::CallTrunk {
        call_id: call.id.clone(),
        trunk_id: trunk.to_owned(),
    }
}

fn cost(call: &NewCall, micros: i64, currency: &str) -> CallChange {
    CallChange::CallCost {
        call_id: call.id.clone(),
        cost_micros: micros,
        currency: currency.to_owned(),
    }
}

async fn agent(store: &Store, username: &str) -> String {
    store
        .create_agent(&NewAgent {
            username: username.to_owned(),
            display_name: None,
            credentials: Credentials::new(username, "voxgate", "secret123"),
            skills: Vec::new(),
            max_concurrent_calls: 1,
            wrap_up_seconds: 0,
        })
        .await
        .unwrap()
        .id
}

mod tests {
    use super::*;

    pub async fn trunk_crud_round_trips_every_field(store: Store) {
        let c = config("exotel-in");
        let t = store.create_trunk(&c).await.unwrap();
        assert!(IdKind::Trunk.matches(&t.id), "{}", t.id);
        assert_eq!(store.get_trunk(&t.id).await.unwrap().config, c);
        assert_eq!(store.find_trunk("exotel-in").await.unwrap().id, t.id);
        assert_eq!(store.find_trunk(&t.id).await.unwrap().id, t.id);
        assert!(matches!(
            store.find_trunk("nope").await,
            Err(StoreError::NotFound)
        ));
        assert!(matches!(
            store.create_trunk(&c).await,
            Err(StoreError::Conflict { field: "name" })
        ));

        // Optional fields empty round-trip too.
        let mut bare = config("bare");
        bare.outbound = Outbound::default();
        bare.inbound = Inbound::default();
        bare.codecs = Vec::new();
        bare.max_cps = None;
        bare.max_calls_per_minute = None;
        bare.caller_id = None;
        bare.country_code = None;
        bare.rate = None;
        bare.provider = Provider::Simulated;
        bare.number_format = NumberFormat::E164;
        let b = store.create_trunk(&bare).await.unwrap();
        assert_eq!(store.get_trunk(&b.id).await.unwrap().config, bare);

        let mut changed = c.clone();
        changed.name = "exotel-renamed".to_owned();
        changed.rate = None;
        changed.outbound.password = Some("new".to_owned());
        let u = store.update_trunk(&t.id, &changed).await.unwrap();
        assert_eq!(u.config, changed);
        assert!(u.updated_at >= t.updated_at);
        assert_eq!(store.get_trunk(&t.id).await.unwrap().config, changed);
        // Renaming onto another trunk's name conflicts and changes nothing.
        let mut clash = changed.clone();
        clash.name = "bare".to_owned();
        assert!(matches!(
            store.update_trunk(&t.id, &clash).await,
            Err(StoreError::Conflict { field: "name" })
        ));
        assert_eq!(store.get_trunk(&t.id).await.unwrap().config, changed);

        let page = store.list_trunks(1, None).await.unwrap();
        assert_eq!(page.data.len(), 1);
        assert_eq!(page.data[0].id, t.id);
        let rest = store.list_trunks(10, page.next.as_deref()).await.unwrap();
        assert_eq!(rest.data.len(), 1);
        assert_eq!(rest.data[0].id, b.id);
        assert!(rest.next.is_none());

        store.delete_trunk(&t.id).await.unwrap();
        assert!(matches!(
            store.get_trunk(&t.id).await,
            Err(StoreError::NotFound)
        ));
        assert!(matches!(
            store.delete_trunk(&t.id).await,
            Err(StoreError::NotFound)
        ));
    }

    pub async fn one_default_trunk(store: Store) {
        let mut a = config("a");
        a.default_outbound = true;
        let a = store.create_trunk(&a).await.unwrap();
        let mut b = config("b");
        b.default_outbound = true;
        let b = store.create_trunk(&b).await.unwrap();
        // The newer flag cleared the older one.
        assert!(
            !store
                .get_trunk(&a.id)
                .await
                .unwrap()
                .config
                .default_outbound
        );
        assert!(
            store
                .get_trunk(&b.id)
                .await
                .unwrap()
                .config
                .default_outbound
        );
        let mut a2 = a.config.clone();
        a2.default_outbound = true;
        store.update_trunk(&a.id, &a2).await.unwrap();
        assert!(
            store
                .get_trunk(&a.id)
                .await
                .unwrap()
                .config
                .default_outbound
        );
        assert!(
            !store
                .get_trunk(&b.id)
                .await
                .unwrap()
                .config
                .default_outbound
        );
        // The database itself holds at most one flag.
        let second = sqlx::query("UPDATE trunks SET default_outbound = 1 WHERE id = $1")
            .bind(&b.id)
            .execute(store.pool())
            .await;
        assert!(
            matches!(&second, Err(sqlx::Error::Database(db)) if db.is_unique_violation()),
            "{second:?}"
        );
    }

    pub async fn numbers_crud_and_trunk_in_use(store: Store) {
        let t = store.create_trunk(&config("t1")).await.unwrap();
        let t2 = store.create_trunk(&config("t2")).await.unwrap();
        let alice = agent(&store, "alice").await;
        let n = store
            .create_number("+919876543210", &t.id, "agent", &alice, None)
            .await
            .unwrap();
        assert_eq!(store.get_number("+919876543210").await.unwrap(), n);
        assert!(matches!(
            store
                .create_number("+919876543210", &t.id, "agent", &alice, None)
                .await,
            Err(StoreError::Conflict { field: "number" })
        ));
        // An unknown trunk is refused by the database.
        assert!(store
            .create_number("+14155550100", "trk_nope", "agent", &alice, None)
            .await
            .is_err());
        store
            .create_number(
                "+14155550100",
                &t2.id,
                "agent",
                &alice,
                Some(RecordingChannels::Mono),
            )
            .await
            .unwrap();
        assert_eq!(
            store.get_number("+14155550100").await.unwrap().record,
            Some(RecordingChannels::Mono)
        );

        let page = store.list_numbers(None, 1, None).await.unwrap();
        assert_eq!(page.data[0].number, "+14155550100");
        let rest = store
            .list_numbers(None, 5, page.next.as_deref())
            .await
            .unwrap();
        assert_eq!(rest.data.len(), 1);
        assert_eq!(rest.data[0].number, "+919876543210");
        let on_t2 = store.list_numbers(Some(&t2.id), 5, None).await.unwrap();
        assert_eq!(on_t2.data.len(), 1);
        assert_eq!(on_t2.data[0].number, "+14155550100");

        // A trunk with numbers cannot go.
        assert!(matches!(
            store.delete_trunk(&t.id).await,
            Err(StoreError::InUse(_))
        ));
        let moved = store
            .update_number("+919876543210", Some(&t2.id), None, None)
            .await
            .unwrap();
        assert_eq!(moved.trunk_id, t2.id);
        assert_eq!(moved.route_target, alice);
        assert_eq!(moved.record, None);
        let recorded = store
            .update_number(
                "+919876543210",
                None,
                None,
                Some(Some(RecordingChannels::Dual)),
            )
            .await
            .unwrap();
        assert_eq!(recorded.record, Some(RecordingChannels::Dual));
        assert_eq!(
            store.get_number("+919876543210").await.unwrap().record,
            Some(RecordingChannels::Dual)
        );
        let stopped = store
            .update_number("+919876543210", None, None, Some(None))
            .await
            .unwrap();
        assert_eq!(stopped.record, None);
        store.delete_trunk(&t.id).await.unwrap();
        store.delete_number("+919876543210").await.unwrap();
        assert!(matches!(
            store.get_number("+919876543210").await,
            Err(StoreError::NotFound)
        ));
    }

    pub async fn directory_loads_from_the_store(store: Store) {
        let d = TrunkDirectory::load(&store).await.unwrap();
        assert!(d.snapshot().trunks().is_empty());
        let t = store.create_trunk(&config("ex")).await.unwrap();
        let alice = agent(&store, "alice").await;
        store
            .create_number("+919876543210", &t.id, "agent", &alice, None)
            .await
            .unwrap();
        // Not seen until reloaded.
        assert!(d.snapshot().trunk("ex").is_none());
        d.reload(&store).await.unwrap();
        let s = d.snapshot();
        assert_eq!(s.trunk("ex").map(|t| t.id.as_str()), Some(t.id.as_str()));
        // The only trunk is the default.
        assert_eq!(
            s.default_outbound().map(|t| t.id.as_str()),
            Some(t.id.as_str())
        );
        assert_eq!(
            s.match_inbound("198.51.100.9".parse().unwrap())
                .map(|t| t.id.as_str()),
            Some(t.id.as_str())
        );
        assert_eq!(
            s.number("09876543210").map(|n| n.trunk_id.as_str()),
            Some(t.id.as_str())
        );
    }

    pub async fn call_trunk_and_cost_grouped_and_in_order(store: Store) {
        let t = store.create_trunk(&config("ex")).await.unwrap();
        // Grouped: creates, trunk, answer, end, cost in one batch; the later cost wins.
        let a = new_call(None, at(0));
        store
            .apply_call_changes(&[
                CallChange::CreateCall(a.clone()),
                trunk_of(&a, &t.id),
                answered(&a, 2),
                ended(&a, CallStatus::Completed, 63, 61),
                cost(&a, 1, "INR"),
                cost(&a, 750_000, "INR"),
            ])
            .await
            .unwrap();
        let got = store.get_call(&a.id).await.unwrap();
        assert_eq!(got.trunk_id.as_deref(), Some(t.id.as_str()));
        assert_eq!(got.cost_micros, Some(750_000));
        assert_eq!(got.currency.as_deref(), Some("INR"));
        assert_eq!(got.status, CallStatus::Completed);

        // In order (a CallRinging makes the batch go change by change).
        let mut b = new_call(None, at(10));
        b.status = CallStatus::Queued;
        store
            .apply_call_changes(&[
                CallChange::CreateCall(b.clone()),
                CallChange::CallRinging {
                    call_id: b.id.clone(),
                    at: at(11),
                },
                trunk_of(&b, &t.id),
                ended(&b, CallStatus::Busy, 3, 0),
                cost(&b, 0, "INR"),
            ])
            .await
            .unwrap();
        let got = store.get_call(&b.id).await.unwrap();
        assert_eq!(got.trunk_id.as_deref(), Some(t.id.as_str()));
        assert_eq!((got.cost_micros, got.status), (Some(0), CallStatus::Busy));

        // A trunk that does not exist (deleted meanwhile) leaves the call without one,
        // and does not reject the batch.
        let c = new_call(None, at(20));
        store
            .apply_call_changes(&[
                CallChange::CreateCall(c.clone()),
                trunk_of(&c, "trk_01JD3N5V8K2Q4R6T8W0Y2A4C6E"),
            ])
            .await
            .unwrap();
        assert_eq!(store.get_call(&c.id).await.unwrap().trunk_id, None);

        // Deleting the trunk keeps its calls' records.
        store
            .apply_call_changes(&[ended(&c, CallStatus::Failed, 1, 0)])
            .await
            .unwrap();
        store.delete_trunk(&t.id).await.unwrap();
        let got = store.get_call(&a.id).await.unwrap();
        assert_eq!(got.trunk_id, None);
        assert_eq!(got.cost_micros, Some(750_000));
    }

    /// Two calls created earlier, two in the batch; trunks and costs set, replaced, set on
    /// an ended call, and on a call that does not exist.
    fn scenario(t1: &str, t2: &str) -> (Vec<CallChange>, Vec<CallChange>, Vec<String>) {
        let old1 = new_call(None, at(0));
        let old2 = new_call(None, at(1));
        let new1 = new_call(None, at(2));
        let new2 = new_call(None, at(3));
        let ghost = new_call(None, at(4));
        let earlier = vec![
            CallChange::CreateCall(old1.clone()),
            CallChange::CreateCall(old2.clone()),
            trunk_of(&old2, t1),
            ended(&old2, CallStatus::Completed, 30, 29),
        ];
        let batch = vec![
            trunk_of(&old1, t1),
            CallChange::CreateCall(new1.clone()),
            trunk_of(&new1, t1),
            answered(&new1, 1),
            trunk_of(&new1, t2),
            CallChange::CreateCall(new2.clone()),
            cost(&old2, 100, "USD"),
            ended(&new1, CallStatus::Completed, 9, 8),
            cost(&new1, 5, "INR"),
            cost(&new1, 7, "USD"),
            trunk_of(&ghost, t1),
            cost(&ghost, 1, "USD"),
            ended(&old1, CallStatus::Busy, 2, 0),
            cost(&old1, 0, "INR"),
        ];
        let ids = [old1, old2, new1, new2].map(|c| c.id).to_vec();
        (earlier, batch, ids)
    }

    pub async fn trunk_and_cost_batch_lands_as_if_applied_one_by_one(store: Store) {
        let t1 = store.create_trunk(&config("t1")).await.unwrap().id;
        let t2 = store.create_trunk(&config("t2")).await.unwrap().id;
        let (earlier, batch, grouped) = scenario(&t1, &t2);
        store.apply_call_changes(&earlier).await.unwrap();
        store.apply_call_changes(&batch).await.unwrap();
        let (earlier, batch, single) = scenario(&t1, &t2);
        for change in earlier.iter().chain(&batch) {
            store
                .apply_call_changes(std::slice::from_ref(change))
                .await
                .unwrap();
        }
        let mut got = Vec::new();
        for (g, s) in grouped.iter().zip(&single) {
            let a = store.get_call(g).await.unwrap();
            let b = store.get_call(s).await.unwrap();
            let key = |c: &voxgate::store::Call| {
                (
                    c.trunk_id.clone(),
                    c.cost_micros,
                    c.currency.clone(),
                    c.status,
                    c.duration_seconds,
                )
            };
            assert_eq!(key(&a), key(&b), "call {g} vs {s}");
            got.push(key(&a));
        }
        assert_eq!(
            got,
            vec![
                (
                    Some(t1.clone()),
                    Some(0),
                    Some("INR".into()),
                    CallStatus::Busy,
                    Some(0)
                ),
                (
                    Some(t1.clone()),
                    Some(100),
                    Some("USD".into()),
                    CallStatus::Completed,
                    Some(29)
                ),
                (
                    Some(t2.clone()),
                    Some(7),
                    Some("USD".into()),
                    CallStatus::Completed,
                    Some(8)
                ),
                (None, None, None, CallStatus::Ringing, None),
            ]
        );
    }

    pub async fn cdrs_are_finished_calls(store: Store) {
        let t = store.create_trunk(&config("ex")).await.unwrap();
        let done = new_call(None, at(0));
        let live = new_call(None, at(5));
        let other = new_call(None, at(6));
        store
            .apply_call_changes(&[
                CallChange::CreateCall(done.clone()),
                CallChange::CreateCall(live.clone()),
                CallChange::CreateCall(other.clone()),
                CallChange::CreateLeg(NewLeg {
                    id: new_id(IdKind::Leg),
                    call_id: done.id.clone(),
                    direction: LegDirection::Outbound,
                    agent_id: None,
                    uri: "sip:09876543210@sip.exotel.example".to_owned(),
                    sip_call_id: "x@test".to_owned(),
                    status: CallStatus::Ringing,
                    started_at: at(0),
                }),
                trunk_of(&done, &t.id),
                trunk_of(&live, &t.id),
                ended(&done, CallStatus::Completed, 10, 8),
                ended(&other, CallStatus::NoAnswer, 30, 0),
            ])
            .await
            .unwrap();
        let finished = CallFilter {
            finished: true,
            ..CallFilter::default()
        };
        let all = store.list_calls(&finished, 10, None).await.unwrap();
        let ids: Vec<&str> = all.data.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(ids, vec![other.id.as_str(), done.id.as_str()]);
        assert_eq!(all.data[1].legs.len(), 1);
        let on_trunk = CallFilter {
            finished: true,
            trunk_id: Some(t.id.clone()),
            ..CallFilter::default()
        };
        let got = store.list_calls(&on_trunk, 10, None).await.unwrap();
        assert_eq!(got.data.len(), 1);
        assert_eq!(got.data[0].id, done.id);
    }

    pub async fn stats_by_status_trunk_agent_day(store: Store) {
        let t1 = store.create_trunk(&config("t1")).await.unwrap();
        let t2 = store.create_trunk(&config("t2")).await.unwrap();
        let alice = agent(&store, "alice").await;
        let bob = agent(&store, "bob").await;
        let day2 = at(24 * 3600);
        let c1 = new_call(Some(&alice), at(0));
        let c2 = new_call(Some(&alice), at(100));
        let c3 = new_call(Some(&bob), day2);
        // An inbound call: no calling agent; bob answered its leg.
        let mut c4 = new_call(None, day2 + Duration::seconds(5));
        c4.direction = CallDirection::Inbound;
        let c4_leg = NewLeg {
            id: new_id(IdKind::Leg),
            call_id: c4.id.clone(),
            direction: LegDirection::Outbound,
            agent_id: Some(bob.clone()),
            uri: "sip:bob@127.0.0.1".to_owned(),
            sip_call_id: "c4@test".to_owned(),
            status: CallStatus::Ringing,
            started_at: c4.started_at,
        };
        let live = new_call(Some(&bob), day2 + Duration::seconds(9));
        store
            .apply_call_changes(&[
                CallChange::CreateCall(c1.clone()),
                CallChange::CreateCall(c2.clone()),
                CallChange::CreateCall(c3.clone()),
                CallChange::CreateCall(c4.clone()),
                CallChange::CreateCall(live.clone()),
                CallChange::CreateLeg(c4_leg.clone()),
                trunk_of(&c1, &t1.id),
                trunk_of(&c2, &t1.id),
                trunk_of(&c3, &t2.id),
                trunk_of(&c4, &t2.id),
                answered(&c1, 1),
                answered(&c3, 1),
                answered(&c4, 1),
                CallChange::LegStatus {
                    leg_id: c4_leg.id.clone(),
                    status: CallStatus::InProgress,
                    at: c4.started_at + Duration::seconds(1),
                    hangup_cause: None,
                },
                ended(&c1, CallStatus::Completed, 61, 60),
                ended(&c2, CallStatus::Busy, 5, 0),
                ended(&c3, CallStatus::Completed, 31, 30),
                ended(&c4, CallStatus::Completed, 11, 10),
                cost(&c1, 500_000, "INR"),
                cost(&c3, 250_000, "INR"),
                cost(&c4, 13_000, "USD"),
            ])
            .await
            .unwrap();

        let totals = store
            .call_stats(None, None, StatsGroupBy::None)
            .await
            .unwrap();
        assert_eq!(totals.len(), 1);
        let g = &totals[0];
        assert_eq!(g.key, None);
        assert_eq!(g.calls, 5);
        assert_eq!(g.by_status.get("completed"), Some(&3));
        assert_eq!(g.by_status.get("busy"), Some(&1));
        assert_eq!(g.by_status.get("ringing"), Some(&1));
        assert_eq!((g.finished, g.answered, g.talk_seconds), (4, 3, 100));
        assert_eq!(g.answer_rate(), Some(0.75));
        let costs: Vec<(&str, i64)> = g
            .cost
            .iter()
            .map(|c| (c.currency.as_str(), c.micros))
            .collect();
        assert_eq!(costs, vec![("INR", 750_000), ("USD", 13_000)]);

        let by_trunk = store
            .call_stats(None, None, StatsGroupBy::Trunk)
            .await
            .unwrap();
        let keys: Vec<Option<&str>> = by_trunk.iter().map(|g| g.key.as_deref()).collect();
        assert_eq!(keys, vec![None, Some(t1.id.as_str()), Some(t2.id.as_str())]);
        assert_eq!((by_trunk[1].calls, by_trunk[1].answered), (2, 1));
        assert_eq!(by_trunk[1].answer_rate(), Some(0.5));
        assert_eq!(by_trunk[2].talk_seconds, 40);
        assert_eq!(by_trunk[2].average_talk_seconds(), Some(20.0));

        let by_agent = store
            .call_stats(None, None, StatsGroupBy::Agent)
            .await
            .unwrap();
        let find = |id: &str| {
            by_agent
                .iter()
                .find(|g| g.key.as_deref() == Some(id))
                .unwrap()
        };
        assert_eq!(find(&alice).calls, 2);
        // bob placed c3 and the live call, and answered c4.
        assert_eq!((find(&bob).calls, find(&bob).answered), (3, 2));

        let by_day = store
            .call_stats(Some(at(0)), Some(at(48 * 3600)), StatsGroupBy::Day)
            .await
            .unwrap();
        let days: Vec<(Option<&str>, i64)> =
            by_day.iter().map(|g| (g.key.as_deref(), g.calls)).collect();
        assert_eq!(days, vec![(Some("2026-01-01"), 2), (Some("2026-01-02"), 3)]);
        // The window bounds started_at: [since, until).
        let first_day = store
            .call_stats(Some(at(0)), Some(at(100)), StatsGroupBy::None)
            .await
            .unwrap();
        assert_eq!(first_day[0].calls, 1);
        let empty = store
            .call_stats(Some(at(-100)), Some(at(-1)), StatsGroupBy::None)
            .await
            .unwrap();
        assert_eq!((empty.len(), empty[0].calls), (1, 0));
        assert_eq!(empty[0].answer_rate(), None);
    }
}
