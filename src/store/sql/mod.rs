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
mod logs;

use std::sync::Arc;

use async_trait::async_trait;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::migrate::Migrator;
use sqlx::{AnyPool, FromRow};

pub use self::dialect::Dialect;
use super::{AppStatus, Census, EventStatus, NewEvent, Store, StoreError, WriteProbe};

pub(crate) const EVENT_COLUMNS: &str =
    "id, event_type, source, payload, status, attempts, last_error, note, \
     received_at, updated_at, next_attempt_at, traceparent";
pub(crate) const TENANT_COLUMNS: &str =
    "id, state, tier, current_job_id, last_error, job_output, params, \
     callback_secret, callback_context, callback_event_id, control_plane, version, created_at, updated_at";
pub(crate) const JOB_COLUMNS: &str =
    "id, tenant_id, kind, job_identifier, backend, status, event_id, params, external_id, \
     attempt, exit_code, output, log_tail, error, created_at, started_at, finished_at, traceparent";
pub(crate) const APP_COLUMNS: &str =
    "name, status, current_version, latest_version, config, aliases, last_error, created_at, updated_at";

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

/// Decodes every row.
pub(crate) fn decode_all<T>(rows: &[AnyRow]) -> Result<Vec<T>, StoreError>
where
    T: for<'r> FromRow<'r, AnyRow>,
{
    Ok(rows.iter().map(T::from_row).collect::<Result<_, _>>()?)
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

    /// The row `sql` (a select with one `$1`) finds for `key`, decoded; `None` when there is none.
    pub(crate) async fn find<T>(&self, sql: &str, key: &str) -> Result<Option<T>, StoreError>
    where
        T: for<'r> FromRow<'r, AnyRow>,
    {
        let row = sqlx::query(sql)
            .bind(key)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(T::from_row).transpose()?)
    }

    /// `Unavailable` when a write now would be lost.
    pub(super) fn writable(&self) -> Result<(), StoreError> {
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
                // (PostgreSQL's undefined_table; SQLite migrates at every start.)
                Err(sqlx::Error::Database(db)) if db.code().as_deref() == Some("42P01") => {
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

/// `(status, count)` rows of a `GROUP BY status` whose statuses parse.
fn by_status<T: std::str::FromStr>(rows: &[AnyRow]) -> Result<Vec<(T, i64)>, StoreError> {
    use sqlx::Row as _;
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let status: String = row.try_get(0)?;
        if let Ok(status) = status.parse() {
            out.push((status, row.try_get(1)?));
        }
    }
    Ok(out)
}

#[async_trait]
impl Store for SqlStore {
    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"))]
    async fn census(&self) -> Result<Census, StoreError> {
        use sqlx::Row as _;
        let events = sqlx::query("SELECT status, COUNT(*) FROM events GROUP BY status")
            .fetch_all(&self.pool)
            .await?;
        // Lag: how long the oldest event that is due has waited for a worker
        // (events waiting out a retry's backoff are not late).
        let oldest: Option<i64> = sqlx::query(
            "SELECT MIN(next_attempt_at) FROM events WHERE status = 'received' AND next_attempt_at <= $1",
        )
        .bind(crate::support::now_ms())
        .fetch_one(&self.pool)
        .await?
        .try_get(0)?;
        let apps = sqlx::query("SELECT status, COUNT(*) FROM apps GROUP BY status")
            .fetch_all(&self.pool)
            .await?;
        let jobs = sqlx::query(
            "SELECT backend, COUNT(*) FROM jobs WHERE status = 'running' GROUP BY backend",
        )
        .fetch_all(&self.pool)
        .await?;
        let running_jobs = jobs
            .iter()
            .map(|row| Ok((row.try_get::<String, _>(0)?, row.try_get::<i64, _>(1)?)))
            .collect::<Result<_, StoreError>>()?;
        Ok(Census {
            events: by_status::<EventStatus>(&events)?,
            oldest_waiting_at_ms: oldest,
            apps: by_status::<AppStatus>(&apps)?,
            running_jobs,
            pool_size: self.pool.size(),
            pool_idle: u32::try_from(self.pool.num_idle()).unwrap_or(u32::MAX),
        })
    }

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
}
