//! The one SQL store: every statement written once, for SQLite and
//! PostgreSQL alike, through sqlx's `Any` driver. The few statements that
//! differ are behind [`Dialect`]; the rest of what differs is handed in by
//! the dialect's module: how events are ingested ([`Ingestion`]: SQLite's
//! writer thread, PostgreSQL's batcher) and what must hold before a write
//! ([`WriteGuard`]: SQLite's file check).

mod apps;
pub mod dialect;
pub(crate) mod events;
mod jobs;

use std::sync::Arc;

use async_trait::async_trait;
use sqlx::any::AnyPoolOptions;
use sqlx::migrate::Migrator;
use sqlx::AnyPool;

pub use self::dialect::Dialect;
use super::{
    AppRecord, AppStatus, AppVersionRecord, Claimed, Commit, EventOutcome, EventRecord,
    EventStatus, JobRecord, NewEvent, Store, StoreError, TenantRecord, WriteProbe,
};

pub(crate) const EVENT_COLUMNS: &str =
    "id, event_type, source, payload, status, attempts, last_error, note, \
     received_at, updated_at, next_attempt_at";
pub(crate) const TENANT_COLUMNS: &str =
    "id, state, tier, current_job_id, last_error, job_output, params, \
     callback_secret, callback_context, callback_event_id, version, created_at, updated_at";
pub(crate) const JOB_COLUMNS: &str =
    "id, tenant_id, kind, job_identifier, backend, status, event_id, params, external_id, \
     attempt, exit_code, output, log_tail, error, created_at, started_at, finished_at";
pub(crate) const APP_COLUMNS: &str =
    "name, status, current_version, config, last_error, created_at, updated_at";

/// How a store records new events: grouped into shared commits.
#[async_trait]
pub trait Ingestion: Send + Sync {
    /// Records `event` durably; whether it was new.
    async fn insert(&self, event: NewEvent) -> Result<bool, StoreError>;
    /// Refuses every later insert.
    fn close(&self) {}
}

/// What must hold before the store writes (SQLite: the files it has open are
/// still the ones a restart reads).
pub trait WriteGuard: Send + Sync {
    /// `Unavailable` when a write now would be lost.
    fn check(&self) -> Result<(), StoreError>;
}

/// The store, on either database.
#[derive(Clone)]
pub struct SqlStore {
    pool: AnyPool,
    dialect: Dialect,
    migrator: &'static Migrator,
    ingestion: Arc<dyn Ingestion>,
    guard: Option<Arc<dyn WriteGuard>>,
    probe: Arc<WriteProbe>,
}

/// Opens an `Any` pool on `url`; `setup` runs on every new connection.
pub(crate) async fn pool(
    url: &str,
    max_connections: u32,
    acquire_timeout: std::time::Duration,
    setup: Option<&'static str>,
) -> Result<AnyPool, StoreError> {
    sqlx::any::install_default_drivers();
    let options = AnyPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(acquire_timeout);
    let options = match setup {
        Some(sql) => options.after_connect(move |conn, _| Box::pin(set_up(conn, sql))),
        None => options,
    };
    Ok(options.connect(url).await?)
}

/// Runs a connection's setup statements.
async fn set_up(conn: &mut sqlx::AnyConnection, sql: &'static str) -> Result<(), sqlx::Error> {
    use sqlx::Executor as _;
    conn.execute(sql).await?;
    Ok(())
}

impl SqlStore {
    pub(crate) fn new(
        pool: AnyPool,
        dialect: Dialect,
        migrator: &'static Migrator,
        ingestion: Arc<dyn Ingestion>,
        guard: Option<Arc<dyn WriteGuard>>,
    ) -> Self {
        Self {
            pool,
            dialect,
            migrator,
            ingestion,
            guard,
            probe: Arc::default(),
        }
    }

    /// The database this store speaks to.
    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// `Unavailable` when a write now would be lost.
    fn writable(&self) -> Result<(), StoreError> {
        match &self.guard {
            Some(guard) => guard.check(),
            None => Ok(()),
        }
    }

    /// Closes the store: every later call fails as `Unavailable` (used by fault tests).
    pub async fn close(&self) {
        self.ingestion.close();
        self.pool.close().await;
    }

    /// How many of the embedded migrations the database has not applied yet.
    pub async fn pending_migrations(&self) -> Result<usize, StoreError> {
        let applied: Vec<i64> =
            match sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success")
                .fetch_all(&self.pool)
                .await
            {
                Ok(versions) => versions,
                // No bookkeeping table: nothing was ever applied.
                Err(sqlx::Error::Database(db))
                    if matches!(db.code().as_deref(), Some("42P01") | Some("1")) =>
                {
                    Vec::new()
                }
                Err(err) => return Err(err.into()),
            };
        Ok(self
            .migrator
            .iter()
            .filter(|m| !applied.contains(&m.version))
            .count())
    }

    /// Applies the embedded migrations on a connection of its own, closed
    /// afterwards. On PostgreSQL sqlx's migrator holds a session-level
    /// `pg_advisory_lock` while it checks and applies them, so replicas
    /// starting together take turns and the later ones find nothing to do;
    /// closing the connection releases the lock even after a failure.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        debug_assert!(
            self.migrator.locking,
            "migrations must hold the advisory lock"
        );
        let mut conn = self.pool.acquire().await?.detach();
        // `run_direct` is `run` for a connection owned here; `run(&mut conn)`
        // makes the future not `Send` (sqlx issue 2016).
        let result = self.migrator.run_direct(&mut conn).await;
        let _ = sqlx::Connection::close(conn).await;
        result.map_err(|err| match err {
            sqlx::migrate::MigrateError::Execute(err) => StoreError::from(err),
            other => StoreError::Other(other.into()),
        })
    }
}

#[async_trait]
impl Store for SqlStore {
    async fn ping(&self) -> Result<(), StoreError> {
        self.writable()?;
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        self.probe
            .run(|| async {
                sqlx::query(
                    "INSERT INTO store_heartbeat (id, beat_at) VALUES (1, $1) \
                     ON CONFLICT (id) DO UPDATE SET beat_at = excluded.beat_at",
                )
                .bind(crate::support::now_ms())
                .execute(&self.pool)
                .await?;
                Ok(())
            })
            .await
    }

    async fn insert_event(&self, event: NewEvent) -> Result<bool, StoreError> {
        self.ingestion.insert(event).await
    }

    async fn claim_events(
        &self,
        now_ms: i64,
        lease_ms: i64,
        limit: i64,
    ) -> Result<Claimed, StoreError> {
        self.writable()?;
        self.claim(now_ms, lease_ms, limit).await
    }

    async fn finish_event(
        &self,
        id: &str,
        outcome: EventOutcome,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        self.writable()?;
        self.finish(id, outcome, now_ms).await
    }

    async fn requeue_abandoned(&self, now_ms: i64) -> Result<u64, StoreError> {
        self.writable()?;
        self.requeue(now_ms).await
    }

    async fn get_event(&self, id: &str) -> Result<EventRecord, StoreError> {
        self.event(id).await
    }

    async fn list_events(
        &self,
        status: Option<EventStatus>,
        limit: i64,
    ) -> Result<Vec<EventRecord>, StoreError> {
        self.events(status, limit).await
    }

    async fn retry_event(&self, id: &str, now_ms: i64) -> Result<EventRecord, StoreError> {
        self.writable()?;
        self.retry(id, now_ms).await
    }

    async fn get_tenant(&self, id: &str) -> Result<Option<TenantRecord>, StoreError> {
        self.tenant(id).await
    }

    async fn list_tenants(&self, limit: i64) -> Result<Vec<TenantRecord>, StoreError> {
        self.tenants(limit).await
    }

    async fn get_job(&self, id: &str) -> Result<JobRecord, StoreError> {
        self.job(id).await
    }

    async fn find_job_by_external_id(
        &self,
        external_id: &str,
    ) -> Result<Option<JobRecord>, StoreError> {
        self.job_by_external_id(external_id).await
    }

    async fn jobs_for_tenant(&self, tenant_id: &str) -> Result<Vec<JobRecord>, StoreError> {
        self.tenant_jobs(tenant_id).await
    }

    async fn take_abandoned_jobs(
        &self,
        backend: &str,
        expired_before: i64,
        lease_until_ms: i64,
    ) -> Result<Vec<JobRecord>, StoreError> {
        self.writable()?;
        self.take_jobs(backend, expired_before, lease_until_ms)
            .await
    }

    async fn renew_job_leases(
        &self,
        ids: &[String],
        lease_until_ms: i64,
    ) -> Result<(), StoreError> {
        self.writable()?;
        self.renew_jobs(ids, lease_until_ms).await
    }

    async fn mark_job_running(
        &self,
        id: &str,
        external_id: &str,
        attempt: i64,
        now_ms: i64,
        lease_until_ms: i64,
    ) -> Result<(), StoreError> {
        self.writable()?;
        self.job_running(id, external_id, attempt, now_ms, lease_until_ms)
            .await
    }

    async fn add_app_version(
        &self,
        name: &str,
        config: &str,
        code: &[u8],
        code_sha256: &str,
        now_ms: i64,
    ) -> Result<i64, StoreError> {
        self.writable()?;
        self.add_version(name, config, code, code_sha256, now_ms)
            .await
    }

    async fn get_app(&self, name: &str) -> Result<Option<AppRecord>, StoreError> {
        self.app(name).await
    }

    async fn list_apps(&self) -> Result<Vec<AppRecord>, StoreError> {
        self.apps().await
    }

    async fn app_versions(&self, name: &str) -> Result<Vec<AppVersionRecord>, StoreError> {
        self.versions(name).await
    }

    async fn app_code(&self, name: &str, version: i64) -> Result<Vec<u8>, StoreError> {
        self.code(name, version).await
    }

    async fn settle_app_deploy(
        &self,
        name: &str,
        version: i64,
        status: AppStatus,
        error: Option<&str>,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        self.writable()?;
        self.settle_deploy(name, version, status, error, now_ms)
            .await
    }

    async fn take_abandoned_deploys(
        &self,
        expired_before: i64,
        now_ms: i64,
    ) -> Result<Vec<AppRecord>, StoreError> {
        self.writable()?;
        self.take_deploys(expired_before, now_ms).await
    }

    async fn renew_app_deploy(
        &self,
        name: &str,
        version: i64,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        self.writable()?;
        self.renew_deploy(name, version, now_ms).await
    }

    async fn set_app_status(
        &self,
        name: &str,
        status: AppStatus,
        error: Option<&str>,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        self.writable()?;
        self.app_status(name, status, error, now_ms).await
    }

    async fn commit(&self, commit: Commit, now_ms: i64) -> Result<(), StoreError> {
        self.writable()?;
        self.apply(commit, now_ms).await
    }
}
