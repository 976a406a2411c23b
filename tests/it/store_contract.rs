//! The `Store` contract: the same scenarios against SQLite (temp dir) and
//! PostgreSQL (a fresh database per test, see [`crate::pg`]). Each scenario
//! speaks only the trait; the few places where the dialects differ on
//! purpose say so.

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use orchestrator::apps::FunctionConfig;
use orchestrator::proxy::PayloadFormat;
use orchestrator::store::postgres::PgStore;
use orchestrator::store::sqlite::SqliteStore;
use orchestrator::store::{
    AppStatus, Commit, EventOutcome, EventStatus, EventStore, JobFinish, JobKind, JobRecord,
    JobStatus, NewEvent, Store, StoreError, TenantId, TenantRecord, TenantState, TenantWrite,
    TimelineEntry,
};
use tempfile::TempDir;

use crate::common::app_name;

/// A function configuration to store with a version.
fn config(runtime: &str) -> FunctionConfig {
    FunctionConfig {
        runtime: runtime.into(),
        handler: "index.handler".into(),
        environment: Default::default(),
        memory_size: 128,
        timeout: 3,
        payload_format: PayloadFormat::V1,
        code: None,
    }
}
use crate::pg::PgTestDb;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Dialect {
    Sqlite,
    Postgres,
}

/// A database under test; [`Database::open`] gives a store on it (several
/// stores on one database stand for several replicas).
struct Database {
    dialect: Dialect,
    url: String,
    _dir: Option<TempDir>,
}

impl Database {
    async fn open(&self) -> Arc<dyn Store> {
        match self.dialect {
            Dialect::Sqlite => Arc::new(SqliteStore::connect(&self.url).await.unwrap()),
            Dialect::Postgres => {
                let store = PgStore::connect(&self.url).await.unwrap();
                store.migrate().await.unwrap();
                Arc::new(store)
            }
        }
    }
}

async fn on_sqlite<F: Future<Output = ()>>(scenario: impl FnOnce(Database) -> F) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/store.db", dir.path().display());
    scenario(Database {
        dialect: Dialect::Sqlite,
        url,
        _dir: Some(dir),
    })
    .await;
}

/// Runs `scenario` on a fresh database and drops it afterwards, even when
/// the scenario fails.
async fn on_postgres<F: Future<Output = ()> + Send + 'static>(
    scenario: impl FnOnce(Database) -> F,
) {
    let Some(db) = PgTestDb::create().await else {
        return;
    };
    let outcome = tokio::spawn(scenario(Database {
        dialect: Dialect::Postgres,
        url: db.url.clone(),
        _dir: None,
    }))
    .await;
    db.drop_db().await;
    if let Err(err) = outcome {
        std::panic::resume_unwind(err.into_panic());
    }
}

/// One test per scenario and dialect: `store_contract::sqlite::<scenario>`
/// and `store_contract::postgres::<scenario>`. `store` scenarios take one
/// store, `database` scenarios the database (to open several stores).
macro_rules! contract {
    (store: [$($s:ident),* $(,)?], database: [$($d:ident),* $(,)?] $(,)?) => {
        mod sqlite {
            $(#[tokio::test]
            async fn $s() {
                super::on_sqlite(|db| async move { super::$s(db.open().await).await }).await;
            })*
            $(#[tokio::test]
            async fn $d() {
                super::on_sqlite(super::$d).await;
            })*
        }
        mod postgres {
            $(#[tokio::test]
            async fn $s() {
                super::on_postgres(|db| async move { super::$s(db.open().await).await }).await;
            })*
            $(#[tokio::test]
            async fn $d() {
                super::on_postgres(super::$d).await;
            })*
        }
    };
}

contract! {
    store: [
        events_are_recorded_once,
        concurrent_inserts_answer_each_caller,
        events_are_claimed_when_due_and_finished,
        expired_leases_are_claimed_again,
        tenant_writes_check_the_version,
        jobs_are_started_and_finished_once,
        abandoned_jobs_are_taken_once,
        app_versions_and_code_round_trip,
        a_deploy_settles_only_what_nothing_changed,
        interrupted_deploys_are_taken_once_their_heartbeat_stops,
        aliases_move_live_and_change_only_as_read,
        domains_belong_to_one_app,
        operations_settle_once,
        async_invocations_are_claimed_when_due_and_retried,
    ],
    database: [
        requeue_abandoned_respects_live_leases,
        concurrent_claims_never_overlap,
        concurrent_deploys_of_one_app_get_distinct_versions,
        an_interrupted_deploy_is_taken_by_one_replica,
        ready_and_writes_fail_as_unavailable_when_the_store_cannot_take_writes,
    ],
}

const TRACE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

fn event(id: &str, at: i64) -> NewEvent {
    NewEvent {
        id: id.into(),
        event_type: "TENANT_PROVISIONING".into(),
        source: Some("test".into()),
        payload: format!(r#"{{"id":"{id}","detail":{{"n":1}}}}"#),
        received_at_ms: at,
        traceparent: Some(TRACE.into()),
    }
}

/// Many concurrent inserts (PostgreSQL groups them into one statement):
/// each caller learns whether its own row was new, repeats within the burst
/// insert once, and a row the database refuses fails alone.
async fn concurrent_inserts_answer_each_caller(store: Arc<dyn Store>) {
    let mut burst: Vec<NewEvent> = (0..300).map(|i| event(&format!("b-{i}"), 10)).collect();
    burst.extend((0..20).map(|i| event(&format!("b-{i}"), 11)));
    let mut refused = event("b-refused", 12);
    refused.source = Some("nul\0inside".into());
    burst.push(refused);
    let answers = futures::future::join_all(burst.into_iter().map(|e| {
        let store = store.clone();
        async move { (e.id.clone(), store.insert_event(e).await) }
    }))
    .await;
    let mut new = std::collections::HashMap::new();
    for (id, answer) in &answers {
        match (id.as_str(), answer) {
            ("b-refused", Ok(_)) => {} // SQLite stores a NUL; PostgreSQL cannot.
            ("b-refused", Err(StoreError::Other(_))) => {}
            (_, Ok(inserted)) => *new.entry(id.clone()).or_insert(0) += usize::from(*inserted),
            (_, Err(err)) => panic!("{id}: {err:?}"),
        }
    }
    assert_eq!(new.len(), 300);
    assert!(
        new.values().all(|n| *n == 1),
        "each id inserted exactly once"
    );
    for i in 0..300 {
        let stored = store
            .get_event(&format!("b-{i}").into())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(stored.status, EventStatus::Received);
    }
}

fn tenant(id: &str, state: TenantState) -> TenantRecord {
    TenantRecord {
        id: id.into(),
        state,
        tier: Some("basic".into()),
        current_job_id: None,
        last_error: None,
        job_output: "{}".into(),
        params: r#"{"REGION":"eu-west-1"}"#.into(),
        callback_secret: Some("s3cret".into()),
        callback_context: None,
        callback_event_id: Some("evt".into()),
        control_plane: None,
        version: 0,
        created_at_ms: 0,
        updated_at_ms: 0,
    }
}

fn job(id: &str, tenant_id: &str, backend: &str) -> JobRecord {
    JobRecord {
        id: id.into(),
        tenant_id: tenant_id.into(),
        kind: JobKind::Provisioning,
        job_identifier: "provision-basic".into(),
        backend: backend.into(),
        status: JobStatus::Pending,
        event_id: format!("evt-{tenant_id}").into(),
        params: r#"{"TENANT_ID":"t"}"#.into(),
        external_id: None,
        attempt: 0,
        exit_code: None,
        output: Default::default(),
        log_tail: None,
        error: None,
        created_at_ms: 1_000,
        started_at_ms: None,
        finished_at_ms: None,
        traceparent: Some(TRACE.into()),
    }
}

fn ids<T>(items: &[T], id: impl Fn(&T) -> &str) -> Vec<String> {
    items.iter().map(|i| id(i).to_owned()).collect()
}

async fn events_are_recorded_once(store: Arc<dyn Store>) {
    assert!(store.insert_event(event("e1", 1_000)).await.unwrap());
    assert!(!store.insert_event(event("e1", 9_999)).await.unwrap());
    let mut bare = event("e2", 2_000);
    bare.source = None;
    bare.traceparent = None;
    assert!(store.insert_event(bare).await.unwrap());
    assert!(store.insert_event(event("e3", 1_500)).await.unwrap());

    let e1 = store.get_event(&"e1".into()).await.unwrap().unwrap();
    assert_eq!(e1.status, EventStatus::Received);
    assert_eq!(e1.event_type, "TENANT_PROVISIONING");
    assert_eq!(e1.source.as_deref(), Some("test"));
    assert_eq!(e1.payload, event("e1", 0).payload);
    assert_eq!(e1.attempts, 0);
    assert_eq!(e1.traceparent.as_deref(), Some(TRACE), "the trace is kept");
    assert_eq!(
        (e1.received_at_ms, e1.updated_at_ms, e1.next_attempt_at_ms),
        (1_000, 1_000, 1_000),
        "the first delivery wins"
    );
    let e2 = store.get_event(&"e2".into()).await.unwrap().unwrap();
    assert_eq!((e2.source, e2.traceparent), (None, None));
    assert!(
        matches!(store.get_event(&"nope".into()).await, Ok(None)),
        "absent: Ok(None)"
    );

    // Newest first, whatever the event times.
    let all = store.list_events(None, 10).await.unwrap();
    assert_eq!(ids(&all, |e| e.id.as_str()), ["e3", "e2", "e1"]);
    let two = store.list_events(None, 2).await.unwrap();
    assert_eq!(ids(&two, |e| e.id.as_str()), ["e3", "e2"]);
    let received = store
        .list_events(Some(EventStatus::Received), 10)
        .await
        .unwrap();
    assert_eq!(received.len(), 3);
    for status in [EventStatus::Failed, EventStatus::Succeeded] {
        assert!(store
            .list_events(Some(status), 10)
            .await
            .unwrap()
            .is_empty());
    }

    // Follow-up events of a commit are skipped when their id exists.
    let commit = Commit {
        events: vec![event("e1", 5_000), event("e4", 5_000), event("e4", 6_000)],
        ..Commit::default()
    };
    store.commit(commit, 5_000).await.unwrap();
    assert_eq!(
        store
            .get_event(&"e1".into())
            .await
            .unwrap()
            .unwrap()
            .received_at_ms,
        1_000
    );
    assert_eq!(
        store
            .get_event(&"e4".into())
            .await
            .unwrap()
            .unwrap()
            .received_at_ms,
        5_000
    );
    assert_eq!(store.list_events(None, 10).await.unwrap().len(), 4);
}

async fn events_are_claimed_when_due_and_finished(store: Arc<dyn Store>) {
    for (id, at) in [("b", 2_000), ("a", 1_000), ("later", 10_000)] {
        store.insert_event(event(id, at)).await.unwrap();
    }
    let claimed = store.claim_events(3_000, 500, 10).await.unwrap();
    assert_eq!(
        ids(&claimed, |e| e.id.as_str()),
        ["a", "b"],
        "due ones, oldest first"
    );
    for e in &claimed {
        assert_eq!(e.status, EventStatus::Processing);
        assert_eq!(e.attempts, 1);
        assert_eq!(e.updated_at_ms, 3_000);
    }
    assert!(store.claim_events(3_000, 500, 10).await.unwrap().is_empty());
    assert!(
        store.claim_events(3_500, 500, 10).await.unwrap().is_empty(),
        "a lease ending now has not expired yet"
    );

    store
        .finish_event(
            &"a".into(),
            EventOutcome::Succeeded {
                note: Some("done".into()),
            },
            3_100,
        )
        .await
        .unwrap();
    let a = store.get_event(&"a".into()).await.unwrap().unwrap();
    assert_eq!(a.status, EventStatus::Succeeded);
    assert_eq!(a.note.as_deref(), Some("done"));
    assert_eq!((a.updated_at_ms, a.next_attempt_at_ms), (3_100, 3_100));

    store
        .finish_event(
            &"b".into(),
            EventOutcome::Retry {
                error: "tier source down".into(),
                retry_at_ms: 5_000,
            },
            3_100,
        )
        .await
        .unwrap();
    let b = store.get_event(&"b".into()).await.unwrap().unwrap();
    assert_eq!(b.status, EventStatus::Received);
    assert_eq!(b.last_error.as_deref(), Some("tier source down"));
    assert_eq!(b.next_attempt_at_ms, 5_000);
    assert!(store.claim_events(4_999, 500, 10).await.unwrap().is_empty());
    let again = store.claim_events(5_000, 500, 1).await.unwrap();
    assert_eq!(ids(&again, |e| e.id.as_str()), ["b"]);
    assert_eq!(again[0].attempts, 2);

    // Success keeps the last error; a failure is final until retried.
    store
        .finish_event(&"b".into(), EventOutcome::Succeeded { note: None }, 5_100)
        .await
        .unwrap();
    let b = store.get_event(&"b".into()).await.unwrap().unwrap();
    assert_eq!(b.status, EventStatus::Succeeded);
    assert_eq!(b.last_error.as_deref(), Some("tier source down"));
    let retried = store.retry_event(&"b".into(), 6_000).await.unwrap();
    assert_eq!(
        (retried.status, retried.attempts, retried.next_attempt_at_ms),
        (EventStatus::Received, 0, 6_000)
    );
    assert!(matches!(
        store.retry_event(&"b".into(), 6_000).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        store.retry_event(&"nope".into(), 6_000).await,
        Err(StoreError::NotFound)
    ));

    let claimed = store.claim_events(11_000, 500, 10).await.unwrap();
    assert_eq!(ids(&claimed, |e| e.id.as_str()), ["b", "later"]);
    store
        .finish_event(
            &"b".into(),
            EventOutcome::Failed {
                error: "bad".into(),
            },
            11_100,
        )
        .await
        .unwrap();
    store
        .finish_event(
            &"later".into(),
            EventOutcome::Dead {
                error: "gave up".into(),
            },
            11_100,
        )
        .await
        .unwrap();
    let failed = store
        .list_events(Some(EventStatus::Failed), 10)
        .await
        .unwrap();
    assert_eq!(ids(&failed, |e| e.id.as_str()), ["b"]);
    let dead = store.get_event(&"later".into()).await.unwrap().unwrap();
    assert_eq!(
        (dead.status, dead.last_error.as_deref()),
        (EventStatus::Dead, Some("gave up"))
    );
    assert!(store
        .claim_events(99_000, 500, 10)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        store
            .retry_event(&"later".into(), 12_000)
            .await
            .unwrap()
            .attempts,
        0
    );
}

async fn expired_leases_are_claimed_again(store: Arc<dyn Store>) {
    store.insert_event(event("e", 1_000)).await.unwrap();
    let first = store.claim_events(1_000, 100, 10).await.unwrap();
    assert_eq!(first.len(), 1);
    assert!(store.claim_events(1_100, 100, 10).await.unwrap().is_empty());
    // The claimer died: once its lease has passed, anyone claims the event again.
    let second = store.claim_events(1_101, 100, 10).await.unwrap();
    assert_eq!(ids(&second, |e| e.id.as_str()), ["e"]);
    assert_eq!(second[0].attempts, 2);
    assert!(store.claim_events(1_150, 100, 10).await.unwrap().is_empty());
}

/// SQLite re-queues every `processing` event at start (one process owns the
/// file); PostgreSQL only those whose lease ended, since other replicas may
/// hold the rest.
async fn requeue_abandoned_respects_live_leases(db: Database) {
    let store = db.open().await;
    store.insert_event(event("short", 1_000)).await.unwrap();
    assert_eq!(store.claim_events(1_000, 100, 10).await.unwrap().len(), 1);
    store.insert_event(event("long", 1_000)).await.unwrap();
    assert_eq!(
        store.claim_events(1_000, 60_000, 10).await.unwrap().len(),
        1
    );

    let requeued = store.requeue_abandoned(2_000).await.unwrap();
    let short = store.get_event(&"short".into()).await.unwrap().unwrap();
    assert_eq!(short.status, EventStatus::Received);
    assert_eq!(short.next_attempt_at_ms, 2_000);
    let long = store.get_event(&"long".into()).await.unwrap().unwrap();
    match db.dialect {
        Dialect::Sqlite => {
            assert_eq!(requeued, 2);
            assert_eq!(long.status, EventStatus::Received);
        }
        Dialect::Postgres => {
            assert_eq!(requeued, 1);
            assert_eq!(long.status, EventStatus::Processing);
        }
    }
    let claimed = store.claim_events(2_000, 100, 10).await.unwrap();
    assert!(claimed.iter().any(|e| e.id == "short" && e.attempts == 2));
}

/// Two stores on one database (two replicas), two claimers each, all
/// claiming at once: every event is handed out exactly once.
async fn concurrent_claims_never_overlap(db: Database) {
    const EVENTS: usize = 300;
    let stores = [db.open().await, db.open().await];
    let inserts = (0..EVENTS).map(|i| {
        let store = stores[i % 2].clone();
        async move {
            store
                .insert_event(event(&format!("c{i:03}"), i as i64))
                .await
        }
    });
    for inserted in futures::future::join_all(inserts).await {
        assert!(inserted.unwrap());
    }
    let claimers = (0..4).map(|i| {
        let store = stores[i % 2].clone();
        tokio::spawn(async move {
            let mut mine = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                assert!(Instant::now() < deadline, "claiming took too long");
                match store.claim_events(10_000, 60_000, 7).await {
                    Ok(batch) if batch.is_empty() => return mine,
                    Ok(batch) => mine.extend(batch),
                    // SQLite: two processes' pools may find the file busy.
                    Err(StoreError::Unavailable(_)) => tokio::task::yield_now().await,
                    Err(err) => panic!("claim failed: {err:?}"),
                }
            }
        })
    });
    let mut claimed = Vec::new();
    for batch in futures::future::join_all(claimers).await {
        claimed.extend(batch.unwrap());
    }
    claimed.extend(stores[0].claim_events(10_000, 60_000, 1_000).await.unwrap());
    let unique: HashSet<&str> = claimed.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(unique.len(), claimed.len(), "an event was claimed twice");
    assert_eq!(claimed.len(), EVENTS, "every event was claimed");
    assert!(claimed.iter().all(|e| e.attempts == 1));
}

async fn tenant_writes_check_the_version(store: Arc<dyn Store>) {
    let create = |expected_version: Option<i64>| Commit {
        tenant: Some(TenantWrite {
            record: tenant("t1", TenantState::Provisioning),
            from: expected_version.map(|_| TenantState::Provisioning),
            cause: Some("e-create".into()),
            expected_version,
        }),
        ..Commit::default()
    };
    assert!(store.get_tenant(&"t1".into()).await.unwrap().is_none());
    store.commit(create(None), 1_000).await.unwrap();
    let t = store.get_tenant(&"t1".into()).await.unwrap().unwrap();
    assert_eq!(t.state, TenantState::Provisioning);
    assert_eq!(
        (t.version, t.created_at_ms, t.updated_at_ms),
        (0, 1_000, 1_000)
    );
    assert_eq!(t.params.to_text(), r#"{"REGION":"eu-west-1"}"#);
    assert_eq!(t.callback_secret.as_deref(), Some("s3cret"));
    assert_eq!(t.callback_context, None);

    // Created twice, or updated from a stale read: a conflict, and nothing of
    // the commit is kept.
    for stale in [None, Some(1)] {
        let mut commit = create(stale);
        commit.new_jobs.push(job("j-stale", "t1", "local"));
        commit.events.push(event("follow-stale", 2_000));
        assert!(matches!(
            store.commit(commit, 2_000).await,
            Err(StoreError::Conflict(_))
        ));
    }
    assert!(
        matches!(store.get_job(&"j-stale".into()).await, Ok(None)),
        "absent: Ok(None)"
    );
    assert!(
        matches!(store.get_event(&"follow-stale".into()).await, Ok(None)),
        "absent: Ok(None)"
    );

    let mut active = tenant("t1", TenantState::Active);
    active.job_output = r#"{"URL":"https://x"}"#.into();
    active.callback_secret = None;
    let update = Commit {
        tenant: Some(TenantWrite {
            record: active,
            expected_version: Some(0),
            from: Some(TenantState::Provisioning),
            cause: Some("e-done".into()),
        }),
        ..Commit::default()
    };
    store.commit(update, 3_000).await.unwrap();
    let t = store.get_tenant(&"t1".into()).await.unwrap().unwrap();
    assert_eq!(t.state, TenantState::Active);
    assert_eq!(
        (t.version, t.created_at_ms, t.updated_at_ms),
        (1, 1_000, 3_000)
    );
    assert_eq!(t.job_output.to_text(), r#"{"URL":"https://x"}"#);
    assert_eq!(t.callback_secret, None);

    let mut other = create(None);
    if let Some(write) = other.tenant.as_mut() {
        write.record.id = "t2".into();
    }
    store.commit(other, 4_000).await.unwrap();
    let listed = store.list_tenants(&[], 10).await.unwrap();
    assert_eq!(
        ids(&listed, |t| t.id.as_str()),
        ["t2", "t1"],
        "recently updated first"
    );
    assert_eq!(store.list_tenants(&[], 1).await.unwrap().len(), 1);

    // Each change of state is on the timeline, with its cause, in the same
    // transaction (the conflicting commits above left nothing there).
    let steps = |entries: Vec<TimelineEntry>| {
        entries
            .into_iter()
            .map(|e| (e.at_ms, e.kind, e.detail.to_text()))
            .collect::<Vec<_>>()
    };
    let t1 = TenantId::from("t1");
    assert_eq!(
        steps(store.timeline(&t1, 100).await.unwrap()),
        [
            (
                1_000,
                "transition".to_owned(),
                r#"{"from":null,"to":"PROVISIONING","eventId":"e-create"}"#.to_owned()
            ),
            (
                3_000,
                "transition".to_owned(),
                r#"{"from":"PROVISIONING","to":"ACTIVE","eventId":"e-done"}"#.to_owned()
            ),
        ]
    );
    store
        .append_timeline(&TimelineEntry {
            tenant_id: t1.clone(),
            at_ms: 5_000,
            kind: "event".into(),
            detail: r#"{"eventId":"e-9","status":"retried"}"#.into(),
        })
        .await
        .unwrap();
    let newest = steps(store.timeline(&t1, 2).await.unwrap());
    assert_eq!(
        newest
            .iter()
            .map(|(at, kind, _)| (*at, kind.as_str()))
            .collect::<Vec<_>>(),
        [(3_000, "transition"), (5_000, "event")],
        "the newest kept, oldest first"
    );
    assert!(store.timeline(&"t2".into(), 10).await.unwrap().len() == 1);
}

async fn jobs_are_started_and_finished_once(store: Arc<dyn Store>) {
    let commit = Commit {
        tenant: Some(TenantWrite {
            record: tenant("t", TenantState::Provisioning),
            expected_version: None,
            from: None,
            cause: None,
        }),
        new_jobs: vec![job("j1", "t", "local"), job("j0", "t", "local")],
        events: vec![event("follow-1", 1_000)],
        ..Commit::default()
    };
    store.commit(commit, 1_000).await.unwrap();
    let j1 = store.get_job(&"j1".into()).await.unwrap().unwrap();
    assert_eq!(j1.status, JobStatus::Pending);
    assert_eq!(j1.kind, JobKind::Provisioning);
    assert_eq!(j1.params.to_text(), r#"{"TENANT_ID":"t"}"#);
    assert_eq!(j1.traceparent.as_deref(), Some(TRACE));
    assert_eq!((j1.started_at_ms, j1.exit_code), (None, None));
    assert_eq!(
        ids(&store.jobs_for_tenant(&"t".into()).await.unwrap(), |j| j
            .id
            .as_str()),
        ["j0", "j1"]
    );
    assert!(store
        .jobs_for_tenant(&"other".into())
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        store
            .get_event(&"follow-1".into())
            .await
            .unwrap()
            .unwrap()
            .status,
        EventStatus::Received
    );
    assert!(
        matches!(store.get_job(&"nope".into()).await, Ok(None)),
        "absent: Ok(None)"
    );

    store
        .mark_job_running(&"j1".into(), "ext-1", 1, 2_000, 32_000)
        .await
        .unwrap();
    let j1 = store.get_job(&"j1".into()).await.unwrap().unwrap();
    assert_eq!(
        (j1.status, j1.attempt, j1.started_at_ms),
        (JobStatus::Running, 1, Some(2_000))
    );
    let found = store.find_job_by_external_id("ext-1").await.unwrap();
    assert_eq!(found.map(|j| j.id.into_string()).as_deref(), Some("j1"));
    assert!(store
        .find_job_by_external_id("ext-x")
        .await
        .unwrap()
        .is_none());
    assert!(matches!(
        store
            .mark_job_running(&"nope".into(), "x", 1, 2_000, 32_000)
            .await,
        Err(StoreError::NotFound)
    ));

    let finish = |id: &str| Commit {
        finished_jobs: vec![JobFinish {
            id: id.into(),
            status: JobStatus::Succeeded,
            exit_code: Some(0),
            output: r#"{"DONE":"1"}"#.into(),
            log_tail: Some("ok\n".into()),
            error: None,
        }],
        events: vec![event(&format!("result-{id}"), 3_000)],
        ..Commit::default()
    };
    store.commit(finish("j1"), 3_000).await.unwrap();
    let j1 = store.get_job(&"j1".into()).await.unwrap().unwrap();
    assert_eq!(
        (j1.status, j1.exit_code, j1.finished_at_ms),
        (JobStatus::Succeeded, Some(0), Some(3_000))
    );
    assert_eq!(j1.output.to_text(), r#"{"DONE":"1"}"#);
    assert_eq!(j1.log_tail.as_deref(), Some("ok\n"));
    assert!(matches!(
        store.commit(finish("j1"), 4_000).await,
        Err(StoreError::Conflict(_))
    ));

    // A pending job finishes too; a late start report only records the id.
    store.commit(finish("j0"), 4_000).await.unwrap();
    store
        .mark_job_running(&"j0".into(), "ext-0", 2, 5_000, 35_000)
        .await
        .unwrap();
    let j0 = store.get_job(&"j0".into()).await.unwrap().unwrap();
    assert_eq!(j0.status, JobStatus::Succeeded);
    assert_eq!(j0.external_id.as_deref(), Some("ext-0"));
    assert_eq!((j0.attempt, j0.started_at_ms), (2, Some(5_000)));
    store
        .mark_job_running(&"j1".into(), "ext-1b", 1, 6_000, 36_000)
        .await
        .unwrap();
    let j1 = store.get_job(&"j1".into()).await.unwrap().unwrap();
    assert_eq!(
        (j1.status, j1.attempt, j1.started_at_ms),
        (JobStatus::Succeeded, 1, Some(2_000))
    );
}

async fn abandoned_jobs_are_taken_once(store: Arc<dyn Store>) {
    let created = |id: &str, backend: &str, at: i64| JobRecord {
        created_at_ms: at,
        ..job(id, "t", backend)
    };
    let commit = Commit {
        new_jobs: vec![
            created("late", "local", 3_000),
            created("alive", "local", 1_000),
            created("dead", "local", 2_000),
            created("pending", "local", 1_500),
            created("elsewhere", "codebuild", 1_000),
        ],
        ..Commit::default()
    };
    store.commit(commit, 1_000).await.unwrap();
    for (id, lease) in [
        ("late", 5_000),
        ("alive", 5_000),
        ("dead", 5_000),
        ("elsewhere", 5_000),
    ] {
        store
            .mark_job_running(&id.into(), &format!("x-{id}"), 1, 1_000, lease)
            .await
            .unwrap();
    }
    store
        .renew_job_leases(&["alive".into(), "pending".into()], 20_000)
        .await
        .unwrap();
    store.renew_job_leases(&[], 20_000).await.unwrap();

    let taken = store
        .take_abandoned_jobs("local", 10_000, 40_000)
        .await
        .unwrap();
    assert_eq!(
        ids(&taken, |j| j.id.as_str()),
        ["dead", "late"],
        "oldest first"
    );
    assert!(store
        .take_abandoned_jobs("local", 10_000, 40_000)
        .await
        .unwrap()
        .is_empty());
    // Past every lease: the ones just taken are taken again, by whoever asks.
    let all = store
        .take_abandoned_jobs("local", 50_000, 90_000)
        .await
        .unwrap();
    assert_eq!(ids(&all, |j| j.id.as_str()), ["alive", "dead", "late"]);
    assert_eq!(
        store
            .get_job(&"pending".into())
            .await
            .unwrap()
            .unwrap()
            .status,
        JobStatus::Pending
    );
}

async fn app_versions_and_code_round_trip(store: Arc<dyn Store>) {
    assert!(store.get_app(&app_name("hello")).await.unwrap().is_none());
    assert!(store.list_apps().await.unwrap().is_empty());
    let code_v1: Vec<u8> = (0..=255u8).chain([0, 0, 255]).collect();
    let code_v2 = b"PK\x03\x04 second".to_vec();
    let v1 = store
        .add_app_version(
            &app_name("hello"),
            &config("nodejs20.x"),
            &code_v1,
            "sha-1",
            1_000,
            true,
        )
        .await
        .unwrap();
    assert_eq!(v1, 1);
    let app = store.get_app(&app_name("hello")).await.unwrap().unwrap();
    assert_eq!(
        app.status,
        AppStatus::Deployed,
        "a new app waits for its deploy"
    );
    store
        .set_app_status(
            &app_name("hello"),
            AppStatus::Error,
            Some("init failed"),
            1_500,
        )
        .await
        .unwrap();
    let app = store.get_app(&app_name("hello")).await.unwrap().unwrap();
    assert_eq!(
        (app.status, app.last_error.as_deref(), app.updated_at_ms),
        (AppStatus::Error, Some("init failed"), 1_500)
    );

    let v2 = store
        .add_app_version(
            &app_name("hello"),
            &config("python3.12"),
            &code_v2,
            "sha-2",
            2_000,
            true,
        )
        .await
        .unwrap();
    assert_eq!(v2, 2);
    let app = store.get_app(&app_name("hello")).await.unwrap().unwrap();
    assert_eq!(
        app.status,
        AppStatus::Deployed,
        "a new version is current, not served until its deploy is done"
    );
    assert_eq!(app.last_error, None);
    assert_eq!(app.current_version, 2);
    assert_eq!(app.config.runtime, "python3.12");
    assert_eq!((app.created_at_ms, app.updated_at_ms), (1_000, 2_000));

    let versions = store.app_versions(&app_name("hello")).await.unwrap();
    assert_eq!(
        versions.iter().map(|v| v.version).collect::<Vec<_>>(),
        [2, 1]
    );
    assert_eq!(versions[1].code_size, code_v1.len() as i64);
    assert_eq!(versions[1].code_sha256, "sha-1");
    assert_eq!(versions[1].config.runtime, "nodejs20.x");
    assert_eq!(versions[1].created_at_ms, 1_000);
    assert_eq!(
        store.app_code(&app_name("hello"), 1).await.unwrap(),
        code_v1
    );
    assert_eq!(
        store.app_code(&app_name("hello"), 2).await.unwrap(),
        code_v2
    );
    assert!(matches!(
        store.app_code(&app_name("hello"), 3).await,
        Err(StoreError::NotFound)
    ));
    assert!(store
        .app_versions(&app_name("nope"))
        .await
        .unwrap()
        .is_empty());

    store
        .set_app_status(&app_name("hello"), AppStatus::Inactive, None, 3_000)
        .await
        .unwrap();
    assert!(matches!(
        store
            .set_app_status(&app_name("nope"), AppStatus::Active, None, 3_000)
            .await,
        Err(StoreError::NotFound)
    ));
    // Under a linguistic collation "b0" would sort before "b-app".
    for name in ["b-app", "b0", "a-app"] {
        store
            .add_app_version(
                &app_name(name),
                &config("nodejs20.x"),
                b"x",
                "sha",
                4_000,
                true,
            )
            .await
            .unwrap();
    }
    let apps = store.list_apps().await.unwrap();
    assert_eq!(
        ids(&apps, |a| a.name.as_str()),
        ["a-app", "b-app", "b0", "hello"],
        "by name, byte order"
    );
    assert_eq!(apps[3].status, AppStatus::Inactive);

    // An app being served stays ACTIVE while its next version deploys.
    store
        .set_app_status(&app_name("a-app"), AppStatus::Active, None, 5_000)
        .await
        .unwrap();
    store
        .add_app_version(
            &app_name("a-app"),
            &config("nodejs20.x"),
            b"y",
            "sha",
            6_000,
            true,
        )
        .await
        .unwrap();
    let app = store.get_app(&app_name("a-app")).await.unwrap().unwrap();
    assert_eq!(
        (app.status, app.current_version, app.updated_at_ms),
        (AppStatus::Active, 2, 6_000)
    );
}

/// A deploy's outcome is written only if its version is still current and
/// the app was not deactivated or removed: a deactivation, removal or newer
/// deploy made meanwhile (by another replica) stands.
async fn a_deploy_settles_only_what_nothing_changed(store: Arc<dyn Store>) {
    let settle = |version, status, error: Option<&'static str>, at| {
        let store = store.clone();
        async move {
            store
                .settle_app_deploy(&app_name("app"), version, status, error, at)
                .await
                .unwrap()
        }
    };
    assert!(
        !settle(1, AppStatus::Active, None, 1_000).await,
        "no such app"
    );
    store
        .add_app_version(
            &app_name("app"),
            &config("nodejs20.x"),
            b"1",
            "sha",
            1_000,
            true,
        )
        .await
        .unwrap();
    assert!(settle(1, AppStatus::Active, None, 1_100).await);
    let app = store.get_app(&app_name("app")).await.unwrap().unwrap();
    assert_eq!((app.status, app.updated_at_ms), (AppStatus::Active, 1_100));

    store
        .add_app_version(
            &app_name("app"),
            &config("nodejs20.x"),
            b"2",
            "sha",
            2_000,
            true,
        )
        .await
        .unwrap();
    assert!(
        !settle(1, AppStatus::Error, Some("late failure of v1"), 2_100).await,
        "version 1 is no longer current"
    );
    let app = store.get_app(&app_name("app")).await.unwrap().unwrap();
    assert_eq!(
        (app.status, app.last_error, app.current_version),
        (AppStatus::Active, None, 2)
    );
    assert!(settle(2, AppStatus::Error, Some("v2 failed"), 2_200).await);
    let app = store.get_app(&app_name("app")).await.unwrap().unwrap();
    assert_eq!(
        (app.status, app.last_error.as_deref()),
        (AppStatus::Error, Some("v2 failed"))
    );
    // An ERROR at the deploy's own version (reconciliation's verdict on the
    // function it replaces) gives way to its outcome.
    assert!(settle(2, AppStatus::Active, None, 2_300).await);
    let app = store.get_app(&app_name("app")).await.unwrap().unwrap();
    assert_eq!((app.status, app.last_error), (AppStatus::Active, None));

    for elsewhere in [AppStatus::Inactive, AppStatus::Removed] {
        store
            .add_app_version(
                &app_name("app"),
                &config("nodejs20.x"),
                b"n",
                "sha",
                3_000,
                true,
            )
            .await
            .unwrap();
        let version = store
            .get_app(&app_name("app"))
            .await
            .unwrap()
            .unwrap()
            .current_version;
        store
            .set_app_status(&app_name("app"), elsewhere, None, 3_100)
            .await
            .unwrap();
        assert!(!settle(version, AppStatus::Active, None, 3_200).await);
        let app = store.get_app(&app_name("app")).await.unwrap().unwrap();
        assert_eq!((app.status, app.updated_at_ms), (elsewhere, 3_100));
        // Deployed again, it waits for that deploy.
        store
            .add_app_version(
                &app_name("app"),
                &config("nodejs20.x"),
                b"m",
                "sha",
                3_300,
                true,
            )
            .await
            .unwrap();
        assert_eq!(
            store
                .get_app(&app_name("app"))
                .await
                .unwrap()
                .unwrap()
                .status,
            AppStatus::Deployed,
            "{elsewhere} then deployed"
        );
    }
}

/// A deploy beats from the moment its version is stored; one whose heartbeat
/// stopped is taken (and beats for its taker); `ACTIVE` apps never are.
async fn interrupted_deploys_are_taken_once_their_heartbeat_stops(store: Arc<dyn Store>) {
    let names = |apps: Vec<orchestrator::store::AppRecord>| {
        apps.into_iter()
            .map(|a| a.name.into_string())
            .collect::<Vec<_>>()
    };
    store
        .add_app_version(
            &app_name("cut"),
            &config("nodejs20.x"),
            b"1",
            "sha",
            1_000,
            true,
        )
        .await
        .unwrap();
    store
        .add_app_version(
            &app_name("done"),
            &config("nodejs20.x"),
            b"1",
            "sha",
            1_000,
            true,
        )
        .await
        .unwrap();
    assert!(store
        .settle_app_deploy(&app_name("done"), 1, AppStatus::Active, None, 1_100)
        .await
        .unwrap());
    assert_eq!(
        names(store.take_abandoned_deploys(1_000, 1_500).await.unwrap()),
        Vec::<String>::new(),
        "stored at 1000: still beating"
    );
    store
        .renew_app_deploy(&app_name("cut"), 1, 5_000)
        .await
        .unwrap();
    assert!(store
        .take_abandoned_deploys(4_000, 6_000)
        .await
        .unwrap()
        .is_empty());
    let taken = store.take_abandoned_deploys(5_001, 7_000).await.unwrap();
    assert_eq!(names(taken.clone()), ["cut"]);
    assert_eq!(
        (taken[0].status, taken[0].current_version),
        (AppStatus::Deployed, 1)
    );
    assert!(
        store
            .take_abandoned_deploys(5_001, 7_001)
            .await
            .unwrap()
            .is_empty(),
        "the taker's heartbeat is at 7000"
    );
    // Renewing a version that is no longer current changes nothing.
    store
        .add_app_version(
            &app_name("cut"),
            &config("nodejs20.x"),
            b"2",
            "sha",
            8_000,
            true,
        )
        .await
        .unwrap();
    store
        .renew_app_deploy(&app_name("cut"), 1, 20_000)
        .await
        .unwrap();
    assert_eq!(
        names(store.take_abandoned_deploys(8_001, 9_000).await.unwrap()),
        ["cut"]
    );
    // Settled, it is no longer taken, whatever the threshold.
    assert!(store
        .settle_app_deploy(&app_name("cut"), 2, AppStatus::Error, Some("failed"), 9_100)
        .await
        .unwrap());
    assert!(store
        .take_abandoned_deploys(i64::MAX, 10_000)
        .await
        .unwrap()
        .is_empty());
}

/// Replicas looking for interrupted deploys at once: one takes each.
async fn an_interrupted_deploy_is_taken_by_one_replica(db: Database) {
    let (a, b) = (db.open().await, db.open().await);
    for name in ["one", "two", "three"] {
        a.add_app_version(
            &app_name(name),
            &config("nodejs20.x"),
            b"1",
            "sha",
            1_000,
            true,
        )
        .await
        .unwrap();
    }
    let (from_a, from_b) = futures::join!(
        a.take_abandoned_deploys(2_000, 3_000),
        b.take_abandoned_deploys(2_000, 3_000)
    );
    let mut taken: Vec<String> = from_a
        .unwrap()
        .into_iter()
        .chain(from_b.unwrap())
        .map(|r| r.name.into_string())
        .collect();
    taken.sort();
    assert_eq!(taken, ["one", "three", "two"]);
}

/// `ping` (readiness) and writes fail as `Unavailable` once the store
/// cannot take writes: SQLite's file removed under it, PostgreSQL gone.
async fn ready_and_writes_fail_as_unavailable_when_the_store_cannot_take_writes(db: Database) {
    let store = db.open().await;
    store.ping().await.unwrap();
    store.insert_event(event("ok", 1)).await.unwrap();
    match db.dialect {
        Dialect::Sqlite => {
            let file = db.url.trim_start_matches("sqlite://");
            std::fs::remove_file(file).unwrap();
        }
        Dialect::Postgres => {
            // The pool closed: what an unreachable server looks like to callers.
            let pg = PgStore::connect(&db.url).await.unwrap();
            pg.close().await;
            assert!(matches!(pg.ping().await, Err(StoreError::Unavailable(_))));
            return;
        }
    }
    assert!(matches!(
        store.ping().await,
        Err(StoreError::Unavailable(_))
    ));
    assert!(matches!(
        store.insert_event(event("lost", 2)).await,
        Err(StoreError::Unavailable(_))
    ));
    assert!(matches!(
        store
            .add_app_version(&app_name("x"), &config("nodejs20.x"), b"1", "sha", 3, true)
            .await,
        Err(StoreError::Unavailable(_))
    ));
}

// PostgreSQL only: what replicas sharing one database need beyond the contract.

/// Two replicas deploying one app at once: every deploy gets its own
/// version, none is refused as busy.
async fn concurrent_deploys_of_one_app_get_distinct_versions(db: Database) {
    let (a, b) = (db.open().await, db.open().await);
    let deploys = (0..10).map(|i| {
        let store = if i % 2 == 0 { a.clone() } else { b.clone() };
        async move {
            store
                .add_app_version(
                    &app_name("twin"),
                    &config("nodejs20.x"),
                    format!("code {i}").as_bytes(),
                    "sha",
                    i,
                    true,
                )
                .await
        }
    });
    let mut versions: Vec<i64> = futures::future::join_all(deploys)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    versions.sort_unstable();
    assert_eq!(versions, (1..=10).collect::<Vec<_>>());
    assert_eq!(
        a.get_app(&app_name("twin"))
            .await
            .unwrap()
            .unwrap()
            .current_version,
        10
    );
}

#[tokio::test]
async fn postgres_replicas_migrating_at_once_all_succeed() {
    let Some(db) = PgTestDb::create().await else {
        return;
    };
    let migrations = (0..4).map(|_| async {
        let store = PgStore::connect(&db.url).await.unwrap();
        store.migrate().await.unwrap();
        store
    });
    let stores = futures::future::join_all(migrations).await;
    assert!(stores[0].insert_event(event("e", 1)).await.unwrap());
    assert!(!stores[3].insert_event(event("e", 1)).await.unwrap());
    for store in &stores {
        store.close().await;
    }
    db.drop_db().await;
}

#[tokio::test]
async fn postgres_out_of_reach_is_unavailable_within_seconds() {
    let Some(db) = PgTestDb::create().await else {
        return;
    };
    let store = PgStore::connect(&db.url_via(db.server_addr()))
        .await
        .unwrap();
    // No schema yet: an error, but not "unavailable".
    assert!(matches!(
        store.get_event(&"e".into()).await,
        Err(StoreError::Other(_))
    ));
    store.migrate().await.unwrap();
    store.ping().await.unwrap();

    let nobody = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let started = Instant::now();
    let err = PgStore::connect(&db.url_via(nobody)).await.err().unwrap();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(10));

    store.close().await;
    assert!(matches!(
        store.ping().await,
        Err(StoreError::Unavailable(_))
    ));
    db.drop_db().await;
}

/// `live` follows promoted versions only, remembers where it was, keeps the
/// other aliases; a change is written only over the aliases it read.
async fn aliases_move_live_and_change_only_as_read(store: Arc<dyn Store>) {
    use orchestrator::function_config::{AliasTarget, Routing};
    let app = app_name("aliased");
    let add = |code: &'static [u8], at, promote| {
        let (store, app) = (store.clone(), app.clone());
        async move {
            store
                .add_app_version(&app, &config("nodejs20.x"), code, "sha", at, promote)
                .await
                .unwrap()
        }
    };
    // An app's first version is live even when not promoted.
    assert_eq!(add(b"1", 1_000, false).await, 1);
    let record = store.get_app(&app).await.unwrap().unwrap();
    assert_eq!((record.current_version, record.latest_version), (1, 1));
    assert_eq!(record.aliases.live, AliasTarget::to(1));
    assert_eq!(add(b"2", 2_000, false).await, 2);
    let record = store.get_app(&app).await.unwrap().unwrap();
    assert_eq!((record.current_version, record.latest_version), (1, 2));
    assert_eq!(record.aliases.previous, None);

    let mut next = record.aliases.with_live(AliasTarget {
        version: 2,
        routing: Some(Routing {
            version: 1,
            weight: 0.125,
        }),
    });
    next.others.insert("beta".into(), AliasTarget::to(1));
    let mut python = config("python3.12");
    python.timeout = 9;
    assert!(store
        .set_aliases(&app, &record.aliases, &next, &python, false, 3_000)
        .await
        .unwrap());
    // Written over what it read only: a stale change is refused.
    assert!(!store
        .set_aliases(
            &app,
            &record.aliases,
            &record.aliases,
            &python,
            false,
            3_500
        )
        .await
        .unwrap());
    let moved = store.get_app(&app).await.unwrap().unwrap();
    assert_eq!(moved.aliases, next);
    assert_eq!(moved.aliases.previous, Some(1));
    assert_eq!((moved.current_version, moved.config.timeout), (2, 9));

    // A promoted deploy moves live (without routing) and keeps the others.
    assert_eq!(add(b"3", 4_000, true).await, 3);
    let promoted = store.get_app(&app).await.unwrap().unwrap();
    assert_eq!(promoted.aliases.live, AliasTarget::to(3));
    assert_eq!(promoted.aliases.previous, Some(2));
    assert_eq!(
        promoted.aliases.others.get("beta"),
        Some(&AliasTarget::to(1))
    );
    // Moving live may mend an app in ERROR, in the same write; a removed app refuses.
    store
        .set_app_status(&app, AppStatus::Error, Some("broken"), 4_100)
        .await
        .unwrap();
    let back = promoted.aliases.with_live(AliasTarget::to(2));
    assert!(store
        .set_aliases(&app, &promoted.aliases, &back, &python, true, 4_200)
        .await
        .unwrap());
    let mended = store.get_app(&app).await.unwrap().unwrap();
    assert_eq!(
        (mended.status, mended.last_error),
        (AppStatus::Active, None)
    );
    store
        .set_app_status(&app, AppStatus::Removed, None, 4_300)
        .await
        .unwrap();
    assert!(!store
        .set_aliases(&app, &back, &promoted.aliases, &python, true, 4_400)
        .await
        .unwrap());
    // Deployed again, a removed app starts over: live alone.
    assert_eq!(add(b"4", 4_500, false).await, 4);
    let again = store.get_app(&app).await.unwrap().unwrap();
    assert_eq!(
        again.aliases,
        orchestrator::function_config::Aliases::live_at(4)
    );
    let version = store.app_version(&app, 2).await.unwrap().unwrap();
    assert_eq!(version.version, 2);
    assert!(store.app_version(&app, 9).await.unwrap().is_none());
    assert!(matches!(
        store
            .set_aliases(&app_name("nobody"), &next, &next, &python, false, 5_000)
            .await,
        Err(StoreError::NotFound)
    ));
}

async fn domains_belong_to_one_app(store: Arc<dyn Store>) {
    let (one, two) = (app_name("one"), app_name("two"));
    assert_eq!(
        store.add_domain("a.example.com", &one, 1).await.unwrap(),
        None
    );
    assert_eq!(
        store.add_domain("a.example.com", &one, 2).await.unwrap(),
        None,
        "again: still its"
    );
    assert_eq!(
        store.add_domain("a.example.com", &two, 3).await.unwrap(),
        Some(one.clone())
    );
    assert_eq!(
        store.add_domain("b.example.com", &two, 4).await.unwrap(),
        None
    );
    assert_eq!(
        store.domains(None).await.unwrap(),
        [
            ("a.example.com".to_owned(), one.clone()),
            ("b.example.com".to_owned(), two.clone())
        ]
    );
    assert_eq!(store.domains(Some(&two)).await.unwrap().len(), 1);
    assert!(
        !store.remove_domain("a.example.com", &two).await.unwrap(),
        "not its"
    );
    assert!(store.remove_domain("a.example.com", &one).await.unwrap());
    assert_eq!(
        store.add_domain("a.example.com", &two, 5).await.unwrap(),
        None
    );
}

async fn operations_settle_once(store: Arc<dyn Store>) {
    use orchestrator::store::{OperationRecord, OperationStatus};
    let operation = |id: &str| OperationRecord {
        id: id.into(),
        kind: "deploy".into(),
        name: "app".into(),
        status: OperationStatus::Pending,
        result: None,
        error: None,
        created_at_ms: 1_000,
        updated_at_ms: 1_000,
    };
    store
        .create_operation(&operation("op-1"), 5_000)
        .await
        .unwrap();
    store
        .create_operation(&operation("op-2"), 5_000)
        .await
        .unwrap();
    store.renew_operation("op-2", 9_000).await.unwrap();
    store
        .finish_operation("op-1", OperationStatus::Succeeded, Some("{}"), None, 2_000)
        .await
        .unwrap();
    // Settled already: a second outcome does not overwrite the first.
    store
        .finish_operation("op-1", OperationStatus::Failed, None, Some("{}"), 2_500)
        .await
        .unwrap();
    let one = store.get_operation("op-1").await.unwrap().unwrap();
    assert_eq!(
        (one.status, one.result.as_deref(), one.updated_at_ms),
        (OperationStatus::Succeeded, Some("{}"), 2_000)
    );
    // Only a pending one whose lease ran out is settled as interrupted.
    assert_eq!(
        store
            .settle_abandoned_operations(6_000, "{\"e\":1}", 6_000)
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        store
            .settle_abandoned_operations(9_500, "{\"e\":1}", 9_500)
            .await
            .unwrap(),
        1
    );
    let two = store.get_operation("op-2").await.unwrap().unwrap();
    assert_eq!(
        (two.status, two.error.as_deref()),
        (OperationStatus::Failed, Some("{\"e\":1}"))
    );
    assert!(store.get_operation("op-3").await.unwrap().is_none());
}

async fn async_invocations_are_claimed_when_due_and_retried(store: Arc<dyn Store>) {
    use orchestrator::store::{AsyncInvocation, AsyncOutcome};
    let queued = AsyncInvocation {
        id: "inv-1".into(),
        name: "app".into(),
        qualifier: Some("live".into()),
        payload: br#"{"n":1}"#.to_vec(),
        attempts: 0,
    };
    store.enqueue_invocation(&queued, 1_000).await.unwrap();
    let claimed = store.claim_invocations(1_000, 500, 10).await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(
        (claimed[0].attempts, claimed[0].qualifier.as_deref()),
        (1, Some("live"))
    );
    assert_eq!(claimed[0].payload, queued.payload);
    // Leased: not claimed again until the lease ends.
    assert!(store
        .claim_invocations(1_200, 500, 10)
        .await
        .unwrap()
        .is_empty());
    store
        .settle_invocation(
            "inv-1",
            &AsyncOutcome::Retry {
                at_ms: 3_000,
                error: "boom".into(),
            },
            1_300,
        )
        .await
        .unwrap();
    assert!(
        store
            .claim_invocations(2_000, 500, 10)
            .await
            .unwrap()
            .is_empty(),
        "not due yet"
    );
    let again = store.claim_invocations(3_000, 500, 10).await.unwrap();
    assert_eq!(again[0].attempts, 2);
    store
        .settle_invocation("inv-1", &AsyncOutcome::Succeeded, 3_100)
        .await
        .unwrap();
    assert!(
        store
            .claim_invocations(9_000, 500, 10)
            .await
            .unwrap()
            .is_empty(),
        "done"
    );
    // A run whose process died (lease over) is claimed again.
    let second = AsyncInvocation {
        id: "inv-2".into(),
        ..queued
    };
    store.enqueue_invocation(&second, 10_000).await.unwrap();
    assert_eq!(
        store
            .claim_invocations(10_000, 500, 10)
            .await
            .unwrap()
            .len(),
        1
    );
    let taken_over = store.claim_invocations(10_600, 500, 10).await.unwrap();
    assert_eq!((taken_over.len(), taken_over[0].attempts), (1, 2));
}
