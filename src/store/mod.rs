//! Durable state behind one narrow trait: the event inbox, tenants, jobs and apps.
//!
//! One implementation, [`sql::SqlStore`], on two databases: [`sqlite`]
//! (embedded, one process) and [`postgres`] (shared by replicas). The
//! statements are written once; the trait uses leases, conditional updates
//! and multi-row inserts only, so no dialect-specific behaviour leaks out.

mod keys;
pub mod postgres;
mod records;
pub mod sql;
pub mod sqlite;
mod timed;

pub use timed::TimedStore;

use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::anyhow;
use async_trait::async_trait;

use crate::function_config::{Aliases, AppName, FunctionConfig};
pub use keys::{EventId, JobId, JsonObject, TenantId};
pub use records::{
    AppRecord, AppStatus, AppVersionRecord, AsyncInvocation, AsyncOutcome, ChunkQuery, EventRecord,
    EventStatus, JobFinish, JobKind, JobRecord, JobStatus, LogChunk, LogLine, NewEvent,
    OperationRecord, OperationStatus, StoredLogChunk, TenantRecord, TenantState, TimelineEntry,
};

/// Errors a store reports; mapped to HTTP in `http::error` only.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The row asked for does not exist.
    #[error("not found")]
    NotFound,
    /// A concurrent writer changed the row first (optimistic concurrency).
    #[error("conflict: {0}")]
    Conflict(String),
    /// The database cannot be reached or is overloaded: retrying later helps.
    #[error("store unavailable")]
    Unavailable(#[source] anyhow::Error),
    /// Anything else (corrupt row, migration failure...).
    #[error("store error")]
    Other(#[source] anyhow::Error),
}

impl From<sqlx::Error> for StoreError {
    fn from(err: sqlx::Error) -> Self {
        match err {
            sqlx::Error::RowNotFound => StoreError::NotFound,
            sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Io(_)
            | sqlx::Error::Protocol(_)
            | sqlx::Error::WorkerCrashed => StoreError::Unavailable(err.into()),
            sqlx::Error::Database(ref db) => {
                let class = match db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>() {
                    Some(pg) => postgres::classify(pg.code()),
                    None if sqlite_unavailable(db.code().as_deref()) => ErrorClass::Unavailable,
                    None => ErrorClass::Other,
                };
                match class {
                    ErrorClass::Conflict => StoreError::Conflict(
                        "a concurrent transaction got in the way; retry".into(),
                    ),
                    ErrorClass::Unavailable => StoreError::Unavailable(err.into()),
                    ErrorClass::Other => StoreError::Other(err.into()),
                }
            }
            other => StoreError::Other(other.into()),
        }
    }
}

/// How a database error is reported.
enum ErrorClass {
    /// Another transaction got in the way (PostgreSQL's serialization
    /// failure or deadlock): trying again helps.
    Conflict,
    /// The database cannot serve now (busy, connection lost, shutting down,
    /// out of resources).
    Unavailable,
    Other,
}

/// SQLite result codes (and their extended codes) that say the database
/// cannot take the work now, whatever the statement: busy or locked, out of
/// memory, read-only, I/O error, corrupt, disk full, cannot open, locking
/// protocol, not a database. Constraint violations, SQL errors and the like
/// are not among them.
fn sqlite_unavailable(code: Option<&str>) -> bool {
    code.and_then(|c| c.parse::<i32>().ok())
        .is_some_and(|n| matches!(n & 0xff, 5 | 6 | 7 | 8 | 10 | 11 | 13 | 14 | 15 | 26))
}

/// How often a store's readiness check writes (its heartbeat row) at most;
/// checks in between share the last outcome, so polling `/ready` cannot
/// turn into a stream of commits.
const WRITE_PROBE_EVERY: Duration = Duration::from_secs(1);

/// Runs a store's write probe at most once per [`WRITE_PROBE_EVERY`].
#[derive(Default)]
pub(crate) struct WriteProbe {
    last: tokio::sync::Mutex<Option<(Instant, Option<String>)>>,
}

impl WriteProbe {
    pub(crate) async fn run<F: Future<Output = Result<(), StoreError>>>(
        &self,
        probe: impl FnOnce() -> F,
    ) -> Result<(), StoreError> {
        let mut last = self.last.lock().await;
        if let Some((at, outcome)) = &*last {
            if at.elapsed() < WRITE_PROBE_EVERY {
                return match outcome {
                    None => Ok(()),
                    Some(message) => Err(StoreError::Unavailable(anyhow!("{message}"))),
                };
            }
        }
        let outcome = probe().await;
        let failure = outcome
            .as_ref()
            .err()
            .map(|e| crate::support::error_chain(e));
        *last = Some((Instant::now(), failure));
        outcome
    }
}

/// One atomic unit of work produced by an event handler: the tenant's new
/// state, jobs created or finished, and follow-up events, all or nothing.
#[derive(Debug, Default)]
pub struct Commit {
    /// New tenant row; `expected_version` guards against lost updates
    /// (`None` means the tenant must not exist yet).
    pub tenant: Option<TenantWrite>,
    /// Jobs to insert (status `pending`).
    pub new_jobs: Vec<JobRecord>,
    /// Jobs to finish; each must still be `pending` or `running`.
    pub finished_jobs: Vec<JobFinish>,
    /// Follow-up events, inserted unless an event with the same id exists.
    pub events: Vec<NewEvent>,
}

/// A tenant row to write, with the version it was read at.
#[derive(Debug)]
pub struct TenantWrite {
    pub record: TenantRecord,
    pub expected_version: Option<i64>,
    /// The state it was read in (`None`: a new tenant), and the event that
    /// changes it: a change of state goes on the tenant's timeline.
    pub from: Option<TenantState>,
    pub cause: Option<EventId>,
}

/// Result of one attempt to claim due events.
pub type Claimed = Vec<EventRecord>;

/// The store seam: one trait per aggregate, all of them together as
/// [`Store`]. Every method is a short transaction. A lookup of something that
/// does not exist answers `Ok(None)`; an action on it answers
/// [`StoreError::NotFound`].
#[async_trait]
pub trait Store: EventStore + TenantStore + JobStore + AppStore + LogStore + 'static {
    /// Checks the database answers and still takes writes (for `/ready`):
    /// a write to a heartbeat row (at most once a second, sharing the last
    /// outcome in between) and, for SQLite, that the files it has open are
    /// still the ones at their paths and writable.
    async fn ping(&self) -> Result<(), StoreError>;
    /// Counts of the shared state, for metrics: events by status, the
    /// oldest due event not yet taken, apps by status, running
    /// jobs by backend, and this process's connections.
    async fn census(&self) -> Result<Census, StoreError>;
}

/// What [`Store::census`] counts.
#[derive(Debug, Default, Clone)]
pub struct Census {
    pub events: Vec<(EventStatus, i64)>,
    /// Since when the oldest `received` event that is due has been due (ms since the epoch).
    pub oldest_waiting_at_ms: Option<i64>,
    pub apps: Vec<(AppStatus, i64)>,
    pub running_jobs: Vec<(String, i64)>,
    pub pool_size: u32,
    pub pool_idle: u32,
}

/// The event inbox.
#[async_trait]
pub trait EventStore: Send + Sync {
    /// Records one event durably before returning: `true` if it is new,
    /// `false` if an event with its id was already recorded. Implementations
    /// group concurrent calls into shared commits.
    async fn insert_event(&self, event: NewEvent) -> Result<bool, StoreError>;
    /// Leases up to `limit` due events (received and due, or processing with an
    /// expired lease), marks them processing and counts the attempt.
    async fn claim_events(
        &self,
        now_ms: i64,
        lease_ms: i64,
        limit: i64,
    ) -> Result<Claimed, StoreError>;
    /// Records the outcome of a processing attempt.
    async fn finish_event(
        &self,
        id: &EventId,
        outcome: EventOutcome,
        now_ms: i64,
    ) -> Result<(), StoreError>;
    /// At start: puts events left `processing` by a stopped process back in the
    /// queue. SQLite (one process) takes them all; PostgreSQL only those whose
    /// lease has ended, since live replicas hold the others.
    async fn requeue_abandoned(&self, now_ms: i64) -> Result<u64, StoreError>;
    async fn get_event(&self, id: &EventId) -> Result<Option<EventRecord>, StoreError>;
    async fn list_events(
        &self,
        status: Option<EventStatus>,
        limit: i64,
    ) -> Result<Vec<EventRecord>, StoreError>;
    /// Re-queues a terminal event (`failed`, `dead`, `succeeded`) with fresh attempts.
    async fn retry_event(&self, id: &EventId, now_ms: i64) -> Result<EventRecord, StoreError>;
}

/// Tenants, and the atomic [`Commit`] of a handler's work.
#[async_trait]
pub trait TenantStore: Send + Sync {
    async fn get_tenant(&self, id: &TenantId) -> Result<Option<TenantRecord>, StoreError>;
    /// Tenants in one of `states` (all when empty), most recently updated first.
    async fn list_tenants(
        &self,
        states: &[TenantState],
        limit: i64,
    ) -> Result<Vec<TenantRecord>, StoreError>;
    /// Applies a [`Commit`] atomically. Fails with `Conflict` when the tenant
    /// changed since it was read or a job to finish is already finished. A
    /// tenant write that changes its state adds a `transition` entry to its
    /// timeline in the same transaction.
    async fn commit(&self, commit: Commit, now_ms: i64) -> Result<(), StoreError>;
    /// Adds an entry to a tenant's timeline.
    async fn append_timeline(&self, entry: &TimelineEntry) -> Result<(), StoreError>;
    /// A tenant's timeline entries, oldest first (at most `limit`, the newest kept).
    async fn timeline(
        &self,
        tenant: &TenantId,
        limit: i64,
    ) -> Result<Vec<TimelineEntry>, StoreError>;
}

/// Build jobs.
#[async_trait]
pub trait JobStore: Send + Sync {
    async fn get_job(&self, id: &JobId) -> Result<Option<JobRecord>, StoreError>;
    /// Finds a job by the backend's own id (CodeBuild build ARN, local job id).
    async fn find_job_by_external_id(
        &self,
        external_id: &str,
    ) -> Result<Option<JobRecord>, StoreError>;
    async fn jobs_for_tenant(&self, tenant_id: &TenantId) -> Result<Vec<JobRecord>, StoreError>;
    /// Takes over `backend`'s running jobs whose lease ended before
    /// `expired_before` (their process died): each returned job now holds a
    /// lease until `lease_until_ms`, so one replica alone re-runs it.
    async fn take_abandoned_jobs(
        &self,
        backend: &str,
        expired_before: i64,
        lease_until_ms: i64,
    ) -> Result<Vec<JobRecord>, StoreError>;
    /// Extends the leases of running jobs this process keeps alive.
    async fn renew_job_leases(&self, ids: &[JobId], lease_until_ms: i64) -> Result<(), StoreError>;
    /// Marks a job started by its backend (pending → running, or a new attempt)
    /// with a lease until `lease_until_ms`; on a job that already finished,
    /// only records `external_id`.
    async fn mark_job_running(
        &self,
        id: &JobId,
        external_id: &str,
        attempt: i64,
        now_ms: i64,
        lease_until_ms: i64,
    ) -> Result<(), StoreError>;
}

/// What functions wrote, per app, bounded: kept in chunks (the lines of one
/// app written together), so writing costs one row per app per write.
#[async_trait]
pub trait LogStore: Send + Sync {
    /// Keeps `chunks` (one row each, in order).
    async fn append_logs(&self, chunks: &[LogChunk]) -> Result<(), StoreError>;
    /// Chunks of one app matching `query` (see [`ChunkQuery`]); a chunk whose
    /// lines cannot be read is left out (and logged).
    async fn log_chunks(&self, query: &ChunkQuery) -> Result<Vec<StoredLogChunk>, StoreError>;
    /// Deletes an app's oldest chunks until the rest hold at most
    /// `keep_bytes` of messages; how many went.
    async fn trim_logs(&self, app: &AppName, keep_bytes: i64) -> Result<u64, StoreError>;
}

/// Apps and the versions of their code.
#[async_trait]
pub trait AppStore: Send + Sync {
    /// Records a new version of an app's code; returns the version number.
    /// `promote` (and always for an app's first version) moves `live` to it,
    /// remembering where `live` was: an `ACTIVE` app stays `ACTIVE` (it is
    /// served while the new version gets ready), any other becomes
    /// `DEPLOYED` until the deploy sets it `ACTIVE`. Otherwise the app is
    /// left as it is but for its newest version.
    async fn add_app_version(
        &self,
        name: &AppName,
        config: &FunctionConfig,
        code: &[u8],
        code_sha256: &str,
        now_ms: i64,
        promote: bool,
    ) -> Result<i64, StoreError>;
    /// One stored version (without its code).
    async fn app_version(
        &self,
        name: &AppName,
        version: i64,
    ) -> Result<Option<AppVersionRecord>, StoreError>;
    /// Replaces the app's aliases if they still are `expected` and the app
    /// was not removed (else `false`: another change got there first).
    /// `live_config` is the configuration of the version `live` points at
    /// in `aliases`; `mend_error`: an app in `ERROR` becomes `ACTIVE`.
    async fn set_aliases(
        &self,
        name: &AppName,
        expected: &Aliases,
        aliases: &Aliases,
        live_config: &FunctionConfig,
        mend_error: bool,
        now_ms: i64,
    ) -> Result<bool, StoreError>;
    /// Gives `domain` to `app`: `None` when it is the app's now (or was
    /// already), else the app that holds it.
    async fn add_domain(
        &self,
        domain: &str,
        app: &AppName,
        now_ms: i64,
    ) -> Result<Option<AppName>, StoreError>;
    /// Takes `domain` from `app`; whether the app held it.
    async fn remove_domain(&self, domain: &str, app: &AppName) -> Result<bool, StoreError>;
    /// Every custom domain and its app (one app's, with `app`), by domain.
    async fn domains(&self, app: Option<&AppName>) -> Result<Vec<(String, AppName)>, StoreError>;
    /// Queues an asynchronous invocation, due at once.
    async fn enqueue_invocation(
        &self,
        invocation: &AsyncInvocation,
        now_ms: i64,
    ) -> Result<(), StoreError>;
    /// Leases up to `limit` due invocations (queued and due, or running
    /// past their lease) for `lease_ms`, counting the run.
    async fn claim_invocations(
        &self,
        now_ms: i64,
        lease_ms: i64,
        limit: i64,
    ) -> Result<Vec<AsyncInvocation>, StoreError>;
    /// Records how a run ended.
    async fn settle_invocation(
        &self,
        id: &str,
        outcome: &AsyncOutcome,
        now_ms: i64,
    ) -> Result<(), StoreError>;
    /// Records a new `pending` operation, leased until `lease_until_ms`.
    async fn create_operation(
        &self,
        operation: &OperationRecord,
        lease_until_ms: i64,
    ) -> Result<(), StoreError>;
    async fn get_operation(&self, id: &str) -> Result<Option<OperationRecord>, StoreError>;
    /// Keeps a running operation's lease.
    async fn renew_operation(&self, id: &str, lease_until_ms: i64) -> Result<(), StoreError>;
    /// Settles a `pending` operation (`result` or `error`, JSON).
    async fn finish_operation(
        &self,
        id: &str,
        status: OperationStatus,
        result: Option<&str>,
        error: Option<&str>,
        now_ms: i64,
    ) -> Result<(), StoreError>;
    /// Settles `failed` with `error` every `pending` operation whose lease
    /// ended before `expired_before` (its process stopped); how many.
    async fn settle_abandoned_operations(
        &self,
        expired_before: i64,
        error: &str,
        now_ms: i64,
    ) -> Result<u64, StoreError>;
    async fn get_app(&self, name: &AppName) -> Result<Option<AppRecord>, StoreError>;
    async fn list_apps(&self) -> Result<Vec<AppRecord>, StoreError>;
    async fn app_versions(&self, name: &AppName) -> Result<Vec<AppVersionRecord>, StoreError>;
    /// The code of one version.
    async fn app_code(&self, name: &AppName, version: i64) -> Result<Vec<u8>, StoreError>;
    /// Sets the outcome of deploying `version` (`ACTIVE`, or `ERROR` with
    /// the reason) if nothing changed the app meanwhile: `version` is still
    /// current and the app was not deactivated or removed. (`ERROR` at that
    /// version is a verdict on the function this deploy replaces, say by
    /// reconciliation: the deploy's outcome wins over it.) Whether it did.
    async fn settle_app_deploy(
        &self,
        name: &AppName,
        version: i64,
        status: AppStatus,
        error: Option<&str>,
        now_ms: i64,
    ) -> Result<bool, StoreError>;
    /// Takes over apps left `DEPLOYED` whose deploy stopped beating before
    /// `expired_before` (its process died: see [`Store::renew_app_deploy`]);
    /// each returned app now beats at `now_ms`, so one process alone settles
    /// it. A deploy beats from the moment its version is stored.
    async fn take_abandoned_deploys(
        &self,
        expired_before: i64,
        now_ms: i64,
    ) -> Result<Vec<AppRecord>, StoreError>;
    /// Keeps the deploy of `version` beating while the app is `DEPLOYED` at it.
    async fn renew_app_deploy(
        &self,
        name: &AppName,
        version: i64,
        now_ms: i64,
    ) -> Result<(), StoreError>;
    /// Sets an app's status (and error); `NotFound` for an unknown app.
    async fn set_app_status(
        &self,
        name: &AppName,
        status: AppStatus,
        error: Option<&str>,
        now_ms: i64,
    ) -> Result<(), StoreError>;
}

/// What became of one processing attempt.
#[derive(Debug, Clone)]
pub enum EventOutcome {
    Succeeded {
        note: Option<String>,
    },
    /// Permanent failure: no retry.
    Failed {
        error: String,
    },
    /// Transient failure: retry at `retry_at_ms`.
    Retry {
        error: String,
        retry_at_ms: i64,
    },
    /// Transient failure and attempts exhausted.
    Dead {
        error: String,
    },
}
