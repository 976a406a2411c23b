//! The store replicas share: PostgreSQL through an sqlx pool.
//!
//! Same tables, columns and semantics as [`super::sqlite`], with the
//! differences a shared database needs: concurrent event inserts are grouped
//! into multi-row statements ([`batch`]), events are claimed with
//! `FOR UPDATE SKIP LOCKED`, and an event whose lease ended is taken again by
//! whoever claims next instead of being re-queued at start (see
//! [`events::requeue_expired`]).

mod apps;
mod batch;
mod events;
mod jobs;
mod rows;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::migrate::{MigrateError, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;

use super::{
    AppRecord, AppStatus, AppVersionRecord, Claimed, Commit, ErrorClass, EventOutcome, EventRecord,
    EventStatus, JobRecord, NewEvent, Store, StoreError, TenantRecord, WriteProbe,
};

/// Connections per process: the dispatcher's concurrency, the HTTP handlers
/// and the proxy share them.
const MAX_CONNECTIONS: u32 = 16;
/// How long a query waits for a connection (including connecting) before it
/// fails as `Unavailable`, so an unreachable database is reported instead of
/// hanging requests.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

static MIGRATOR: Migrator = sqlx::migrate!("src/store/migrations/postgres");

/// PostgreSQL implementation of [`Store`].
#[derive(Clone)]
pub struct PgStore {
    pool: PgPool,
    inserts: Arc<batch::Batcher>,
    probe: Arc<WriteProbe>,
}

impl PgStore {
    /// Connects to `url` (`postgres://user:password@host:port/database`).
    /// Does not touch the schema: see [`PgStore::migrate`]. Errors are
    /// [`StoreError`]s (`Unavailable` when the server cannot be reached
    /// within the acquire timeout).
    pub async fn connect(url: &str) -> anyhow::Result<PgStore> {
        let options = PgConnectOptions::from_str(url)
            .map_err(StoreError::from)?
            .application_name("orchestrator");
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options)
            .await
            .map_err(StoreError::from)?;
        let inserts = Arc::new(batch::Batcher::start(pool.clone()));
        Ok(Self {
            pool,
            inserts,
            probe: Arc::default(),
        })
    }

    /// Applies the embedded migrations (`migrations/postgres`). sqlx's
    /// migrator holds a session-level `pg_advisory_lock` for the database
    /// while it checks and applies them, so replicas starting together take
    /// turns and the later ones find nothing to do. The migration runs on a
    /// connection of its own that is closed afterwards, which also releases
    /// the lock if a migration fails half-way.
    pub async fn migrate(&self) -> anyhow::Result<()> {
        debug_assert!(MIGRATOR.locking, "migrations must hold the advisory lock");
        let mut conn = self
            .pool
            .acquire()
            .await
            .map_err(StoreError::from)?
            .detach();
        // `run_direct` is `run` for a connection owned here; `run(&mut conn)`
        // makes the future not `Send` (sqlx issue 2016).
        let result = MIGRATOR.run_direct(&mut conn).await;
        let _ = sqlx::Connection::close(conn).await;
        result.map_err(|err| match err {
            MigrateError::Execute(err) => StoreError::from(err),
            other => StoreError::Other(other.into()),
        })?;
        Ok(())
    }

    /// How many embedded migrations the database has not applied yet.
    pub async fn pending_migrations(&self) -> anyhow::Result<usize> {
        let applied: Vec<i64> =
            match sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success")
                .fetch_all(&self.pool)
                .await
            {
                Ok(versions) => versions,
                // No bookkeeping table: nothing was ever applied.
                Err(sqlx::Error::Database(db)) if db.code().as_deref() == Some("42P01") => {
                    Vec::new()
                }
                Err(err) => return Err(StoreError::from(err).into()),
            };
        Ok(MIGRATOR
            .iter()
            .filter(|m| !applied.contains(&m.version))
            .count())
    }

    /// Closes the pool: every later call fails as `Unavailable`.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// How a PostgreSQL error is reported, by its SQLSTATE
/// (<https://www.postgresql.org/docs/current/errcodes-appendix.html>).
pub(super) fn classify(sqlstate: &str) -> ErrorClass {
    match sqlstate {
        // serialization_failure, deadlock_detected
        "40001" | "40P01" => ErrorClass::Conflict,
        // read_only_sql_transaction (a standby after failover), lock_not_available
        "25006" | "55P03" => ErrorClass::Unavailable,
        // connection exceptions, insufficient resources (too many connections,
        // disk full, out of memory), operator intervention (shutdown,
        // cannot connect now, statement timeout), system errors (I/O)
        code if code.starts_with("08")
            || code.starts_with("53")
            || code.starts_with("57")
            || code.starts_with("58") =>
        {
            ErrorClass::Unavailable
        }
        _ => ErrorClass::Other,
    }
}

#[async_trait]
impl Store for PgStore {
    async fn ping(&self) -> Result<(), StoreError> {
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
        self.inserts.insert(event).await
    }

    async fn claim_events(
        &self,
        now_ms: i64,
        lease_ms: i64,
        limit: i64,
    ) -> Result<Claimed, StoreError> {
        events::claim(&self.pool, now_ms, lease_ms, limit).await
    }

    async fn finish_event(
        &self,
        id: &str,
        outcome: EventOutcome,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        events::finish(&self.pool, id, outcome, now_ms).await
    }

    async fn requeue_abandoned(&self, now_ms: i64) -> Result<u64, StoreError> {
        events::requeue_expired(&self.pool, now_ms).await
    }

    async fn get_event(&self, id: &str) -> Result<EventRecord, StoreError> {
        events::get(&self.pool, id).await
    }

    async fn list_events(
        &self,
        status: Option<EventStatus>,
        limit: i64,
    ) -> Result<Vec<EventRecord>, StoreError> {
        events::list(&self.pool, status, limit).await
    }

    async fn retry_event(&self, id: &str, now_ms: i64) -> Result<EventRecord, StoreError> {
        events::retry(&self.pool, id, now_ms).await
    }

    async fn get_tenant(&self, id: &str) -> Result<Option<TenantRecord>, StoreError> {
        jobs::get_tenant(&self.pool, id).await
    }

    async fn list_tenants(&self, limit: i64) -> Result<Vec<TenantRecord>, StoreError> {
        jobs::list_tenants(&self.pool, limit).await
    }

    async fn get_job(&self, id: &str) -> Result<JobRecord, StoreError> {
        jobs::get_job(&self.pool, id).await
    }

    async fn find_job_by_external_id(
        &self,
        external_id: &str,
    ) -> Result<Option<JobRecord>, StoreError> {
        jobs::find_by_external_id(&self.pool, external_id).await
    }

    async fn jobs_for_tenant(&self, tenant_id: &str) -> Result<Vec<JobRecord>, StoreError> {
        jobs::for_tenant(&self.pool, tenant_id).await
    }

    async fn take_abandoned_jobs(
        &self,
        backend: &str,
        expired_before: i64,
        lease_until_ms: i64,
    ) -> Result<Vec<JobRecord>, StoreError> {
        jobs::take_abandoned(&self.pool, backend, expired_before, lease_until_ms).await
    }

    async fn renew_job_leases(
        &self,
        ids: &[String],
        lease_until_ms: i64,
    ) -> Result<(), StoreError> {
        jobs::renew_leases(&self.pool, ids, lease_until_ms).await
    }

    async fn mark_job_running(
        &self,
        id: &str,
        external_id: &str,
        attempt: i64,
        now_ms: i64,
        lease_until_ms: i64,
    ) -> Result<(), StoreError> {
        jobs::mark_running(&self.pool, id, external_id, attempt, now_ms, lease_until_ms).await
    }

    async fn add_app_version(
        &self,
        name: &str,
        config: &str,
        code: &[u8],
        code_sha256: &str,
        now_ms: i64,
    ) -> Result<i64, StoreError> {
        apps::add_version(&self.pool, name, config, code, code_sha256, now_ms).await
    }

    async fn get_app(&self, name: &str) -> Result<Option<AppRecord>, StoreError> {
        apps::get(&self.pool, name).await
    }

    async fn list_apps(&self) -> Result<Vec<AppRecord>, StoreError> {
        apps::list(&self.pool).await
    }

    async fn app_versions(&self, name: &str) -> Result<Vec<AppVersionRecord>, StoreError> {
        apps::versions(&self.pool, name).await
    }

    async fn app_code(&self, name: &str, version: i64) -> Result<Vec<u8>, StoreError> {
        apps::code(&self.pool, name, version).await
    }

    async fn settle_app_deploy(
        &self,
        name: &str,
        version: i64,
        status: AppStatus,
        error: Option<&str>,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        apps::settle_deploy(&self.pool, name, version, status, error, now_ms).await
    }

    async fn take_abandoned_deploys(
        &self,
        expired_before: i64,
        now_ms: i64,
    ) -> Result<Vec<AppRecord>, StoreError> {
        apps::take_abandoned_deploys(&self.pool, expired_before, now_ms).await
    }

    async fn renew_app_deploy(
        &self,
        name: &str,
        version: i64,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        apps::renew_deploy(&self.pool, name, version, now_ms).await
    }

    async fn set_app_status(
        &self,
        name: &str,
        status: AppStatus,
        error: Option<&str>,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        apps::set_status(&self.pool, name, status, error, now_ms).await
    }

    async fn commit(&self, commit: Commit, now_ms: i64) -> Result<(), StoreError> {
        jobs::commit(&self.pool, commit, now_ms).await
    }
}
