//! The embedded default store: one SQLite file in WAL mode, `synchronous = FULL`
//! so an acknowledged event survives a crash or power loss.
//!
//! Reads and most writes go through an sqlx pool. Event ingestion, the hot
//! path, has its own thread and connection ([`writer`]): group commits of
//! prepared single-row inserts, without sqlx's per-query hops.

mod apps;
mod guard;
mod rows;
mod writer;

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{QueryBuilder, Sqlite, SqlitePool};

use self::rows::{
    event_from_row, job_from_row, tenant_from_row, EVENT_COLUMNS, JOB_COLUMNS, TENANT_COLUMNS,
};
use super::{
    AppRecord, AppStatus, AppVersionRecord, Claimed, Commit, EventOutcome, EventRecord,
    EventStatus, JobRecord, NewEvent, Store, StoreError, TenantRecord, WriteProbe,
};

/// SQLite implementation of [`Store`].
///
/// Every write first checks that the database file and its WAL are still
/// the files opened at start, and writable ([`guard`]): a write into a
/// removed file would be lost at the next start, so it is refused as
/// `Unavailable` instead; event ingestion checks again after its commit
/// before it acknowledges.
#[derive(Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    writer: writer::EventWriter,
    files: Arc<guard::FileGuard>,
    probe: Arc<WriteProbe>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `url` (`sqlite://path`) and applies migrations.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(if std::env::var("XSYNC").is_ok() {
                SqliteSynchronous::Normal
            } else {
                SqliteSynchronous::Full
            })
            .busy_timeout(Duration::from_secs(5))
            .foreign_keys(true);
        if let Some(parent) = Path::new(options.get_filename()).parent() {
            if !parent.as_os_str().is_empty() {
                std::fs::create_dir_all(parent).map_err(|e| StoreError::Other(e.into()))?;
            }
        }
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options.clone())
            .await?;
        sqlx::migrate!("src/store/migrations/sqlite")
            .run(&pool)
            .await
            .map_err(|e| StoreError::Other(e.into()))?;
        let path = Path::new(options.get_filename());
        // The pool keeps the WAL the migrations created open, and the
        // writer's connection keeps it from here on.
        let files = Arc::new(guard::FileGuard::record(path)?);
        let writer = writer::EventWriter::open(path, files.clone())?;
        Ok(Self {
            pool,
            writer,
            files,
            probe: Arc::default(),
        })
    }

    /// `Unavailable` when a write now would not be in the files read at the next start.
    fn writable(&self) -> Result<(), StoreError> {
        self.files.check()
    }

    /// Closes the store: every later call fails as `Unavailable` (used by fault tests).
    pub async fn close(&self) {
        self.writer.close();
        self.pool.close().await;
    }
}

fn push_event_values<'a>(builder: &mut QueryBuilder<'a, Sqlite>, events: &'a [NewEvent]) {
    builder.push("INSERT INTO events (id, event_type, source, payload, status, received_at, updated_at, next_attempt_at) ");
    builder.push_values(events, |mut row, e| {
        row.push_bind(e.id.as_str())
            .push_bind(e.event_type.as_str())
            .push_bind(e.source.as_deref())
            .push_bind(e.payload.as_str())
            .push_bind(EventStatus::Received.as_str())
            .push_bind(e.received_at_ms)
            .push_bind(e.received_at_ms)
            .push_bind(e.received_at_ms);
    });
    builder.push(" ON CONFLICT (id) DO NOTHING");
}

#[async_trait]
impl Store for SqliteStore {
    async fn ping(&self) -> Result<(), StoreError> {
        self.writable()?;
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        self.probe
            .run(|| async {
                sqlx::query(
                    "INSERT INTO store_heartbeat (id, beat_at) VALUES (1, ?1) \
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
        self.writer.insert(event).await
    }

    async fn claim_events(
        &self,
        now_ms: i64,
        lease_ms: i64,
        limit: i64,
    ) -> Result<Claimed, StoreError> {
        self.writable()?;
        let sql = format!(
            "UPDATE events SET status = 'processing', attempts = attempts + 1, lease_until = ?1 + ?2, updated_at = ?1 \
             WHERE id IN (SELECT id FROM events \
                          WHERE status IN ('received', 'processing') \
                            AND ((status = 'received' AND next_attempt_at <= ?1) \
                             OR (status = 'processing' AND lease_until < ?1)) \
                          ORDER BY next_attempt_at LIMIT ?3) \
             RETURNING {EVENT_COLUMNS}"
        );
        let rows = sqlx::query(&sql)
            .bind(now_ms)
            .bind(lease_ms)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        let mut events = rows
            .iter()
            .map(event_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        events.sort_by_key(|e| e.next_attempt_at_ms);
        Ok(events)
    }

    async fn finish_event(
        &self,
        id: &str,
        outcome: EventOutcome,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        self.writable()?;
        let (status, error, note, next) = match outcome {
            EventOutcome::Succeeded { note } => (EventStatus::Succeeded, None, note, now_ms),
            EventOutcome::Failed { error } => (EventStatus::Failed, Some(error), None, now_ms),
            EventOutcome::Retry { error, retry_at_ms } => {
                (EventStatus::Received, Some(error), None, retry_at_ms)
            }
            EventOutcome::Dead { error } => (EventStatus::Dead, Some(error), None, now_ms),
        };
        sqlx::query(
            "UPDATE events SET status = ?2, last_error = COALESCE(?3, last_error), note = ?4, \
             next_attempt_at = ?5, lease_until = NULL, updated_at = ?6 WHERE id = ?1",
        )
        .bind(id)
        .bind(status.as_str())
        .bind(error)
        .bind(note)
        .bind(next)
        .bind(now_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn requeue_abandoned(&self, now_ms: i64) -> Result<u64, StoreError> {
        self.writable()?;
        let done = sqlx::query(
            "UPDATE events SET status = 'received', lease_until = NULL, next_attempt_at = ?1, updated_at = ?1 \
             WHERE status = 'processing'",
        )
        .bind(now_ms)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    async fn get_event(&self, id: &str) -> Result<EventRecord, StoreError> {
        let sql = format!("SELECT {EVENT_COLUMNS} FROM events WHERE id = ?1");
        event_from_row(&sqlx::query(&sql).bind(id).fetch_one(&self.pool).await?)
    }

    async fn list_events(
        &self,
        status: Option<EventStatus>,
        limit: i64,
    ) -> Result<Vec<EventRecord>, StoreError> {
        // The redundant IN terms let SQLite use the partial indexes.
        let filter = match status {
            None => "",
            Some(EventStatus::Received | EventStatus::Processing) => {
                "WHERE status IN ('received', 'processing') AND status = ?2"
            }
            Some(EventStatus::Failed | EventStatus::Dead) => {
                "WHERE status IN ('failed', 'dead') AND status = ?2"
            }
            Some(EventStatus::Succeeded) => "WHERE status = ?2",
        };
        let sql =
            format!("SELECT {EVENT_COLUMNS} FROM events {filter} ORDER BY rowid DESC LIMIT ?1");
        let rows = sqlx::query(&sql)
            .bind(limit)
            .bind(status.map(EventStatus::as_str))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(event_from_row).collect()
    }

    async fn retry_event(&self, id: &str, now_ms: i64) -> Result<EventRecord, StoreError> {
        self.writable()?;
        let sql = format!(
            "UPDATE events SET status = 'received', attempts = 0, next_attempt_at = ?2, lease_until = NULL, \
             updated_at = ?2 WHERE id = ?1 AND status IN ('failed', 'dead', 'succeeded') RETURNING {EVENT_COLUMNS}"
        );
        match sqlx::query(&sql)
            .bind(id)
            .bind(now_ms)
            .fetch_optional(&self.pool)
            .await?
        {
            Some(row) => event_from_row(&row),
            None => {
                let current = self.get_event(id).await?;
                Err(StoreError::Conflict(format!(
                    "event {id} is {} and cannot be retried now",
                    current.status
                )))
            }
        }
    }

    async fn get_tenant(&self, id: &str) -> Result<Option<TenantRecord>, StoreError> {
        let sql = format!("SELECT {TENANT_COLUMNS} FROM tenants WHERE id = ?1");
        sqlx::query(&sql)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(tenant_from_row)
            .transpose()
    }

    async fn list_tenants(&self, limit: i64) -> Result<Vec<TenantRecord>, StoreError> {
        let sql =
            format!("SELECT {TENANT_COLUMNS} FROM tenants ORDER BY updated_at DESC, id LIMIT ?1");
        let rows = sqlx::query(&sql).bind(limit).fetch_all(&self.pool).await?;
        rows.iter().map(tenant_from_row).collect()
    }

    async fn get_job(&self, id: &str) -> Result<JobRecord, StoreError> {
        let sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?1");
        job_from_row(&sqlx::query(&sql).bind(id).fetch_one(&self.pool).await?)
    }

    async fn find_job_by_external_id(
        &self,
        external_id: &str,
    ) -> Result<Option<JobRecord>, StoreError> {
        let sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE external_id = ?1 LIMIT 1");
        sqlx::query(&sql)
            .bind(external_id)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(job_from_row)
            .transpose()
    }

    async fn jobs_for_tenant(&self, tenant_id: &str) -> Result<Vec<JobRecord>, StoreError> {
        let sql =
            format!("SELECT {JOB_COLUMNS} FROM jobs WHERE tenant_id = ?1 ORDER BY created_at, id");
        let rows = sqlx::query(&sql)
            .bind(tenant_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(job_from_row).collect()
    }

    async fn take_abandoned_jobs(
        &self,
        backend: &str,
        expired_before: i64,
        lease_until_ms: i64,
    ) -> Result<Vec<JobRecord>, StoreError> {
        self.writable()?;
        let sql = format!(
            "UPDATE jobs SET lease_until = ?3 \
             WHERE status = 'running' AND backend = ?1 \
               AND (lease_until IS NULL OR lease_until < ?2) \
             RETURNING {JOB_COLUMNS}"
        );
        let rows = sqlx::query(&sql)
            .bind(backend)
            .bind(expired_before)
            .bind(lease_until_ms)
            .fetch_all(&self.pool)
            .await?;
        let mut jobs = rows
            .iter()
            .map(job_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        jobs.sort_by_key(|j| j.created_at_ms);
        Ok(jobs)
    }

    async fn renew_job_leases(
        &self,
        ids: &[String],
        lease_until_ms: i64,
    ) -> Result<(), StoreError> {
        self.writable()?;
        let mut tx = self.pool.begin().await?;
        for id in ids {
            sqlx::query("UPDATE jobs SET lease_until = ?2 WHERE id = ?1 AND status = 'running'")
                .bind(id)
                .bind(lease_until_ms)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
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
        // A job may already have finished (a fast job reports before this
        // runs): then only its backend id is recorded.
        let done = sqlx::query(
            "UPDATE jobs SET external_id = ?2, lease_until = ?5, \
                 status = CASE WHEN status IN ('pending', 'running') THEN 'running' ELSE status END, \
                 attempt = MAX(attempt, ?3), \
                 started_at = CASE WHEN status IN ('pending', 'running') OR started_at IS NULL \
                                   THEN ?4 ELSE started_at END \
             WHERE id = ?1",
        )
        .bind(id)
        .bind(external_id)
        .bind(attempt)
        .bind(now_ms)
        .bind(lease_until_ms)
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
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
        self.writable()?;
        apps::settle_deploy(&self.pool, name, version, status, error, now_ms).await
    }

    async fn take_abandoned_deploys(
        &self,
        expired_before: i64,
        now_ms: i64,
    ) -> Result<Vec<AppRecord>, StoreError> {
        self.writable()?;
        apps::take_abandoned_deploys(&self.pool, expired_before, now_ms).await
    }

    async fn renew_app_deploy(
        &self,
        name: &str,
        version: i64,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        self.writable()?;
        apps::renew_deploy(&self.pool, name, version, now_ms).await
    }

    async fn set_app_status(
        &self,
        name: &str,
        status: AppStatus,
        error: Option<&str>,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        self.writable()?;
        apps::set_status(&self.pool, name, status, error, now_ms).await
    }

    async fn commit(&self, commit: Commit, now_ms: i64) -> Result<(), StoreError> {
        self.writable()?;
        let mut tx = self.pool.begin().await?;
        if let Some(write) = &commit.tenant {
            let t = &write.record;
            // Both statements take the row as ?1..?10 and the time as ?11; the
            // update also checks the version read (?12).
            let sql = match write.expected_version {
                Some(_) => {
                    "UPDATE tenants SET state = ?2, tier = ?3, current_job_id = ?4, last_error = ?5, \
                     job_output = ?6, params = ?7, callback_secret = ?8, callback_context = ?9, \
                     callback_event_id = ?10, version = version + 1, updated_at = ?11 \
                     WHERE id = ?1 AND version = ?12"
                }
                None => {
                    "INSERT INTO tenants (id, state, tier, current_job_id, last_error, job_output, params, \
                     callback_secret, callback_context, callback_event_id, version, created_at, updated_at) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, 0, ?11, ?11) ON CONFLICT (id) DO NOTHING"
                }
            };
            let mut query = sqlx::query(sql)
                .bind(&t.id)
                .bind(t.state.as_str())
                .bind(&t.tier)
                .bind(&t.current_job_id)
                .bind(&t.last_error)
                .bind(&t.job_output)
                .bind(&t.params)
                .bind(&t.callback_secret)
                .bind(&t.callback_context)
                .bind(&t.callback_event_id)
                .bind(now_ms);
            if let Some(version) = write.expected_version {
                query = query.bind(version);
            }
            let changed = query.execute(&mut *tx).await?.rows_affected();
            if changed == 0 {
                return Err(StoreError::Conflict(format!(
                    "tenant {} changed concurrently",
                    t.id
                )));
            }
        }
        for job in &commit.new_jobs {
            let sql = format!(
                "INSERT INTO jobs ({JOB_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)"
            );
            sqlx::query(&sql)
                .bind(&job.id)
                .bind(&job.tenant_id)
                .bind(job.kind.as_str())
                .bind(&job.job_identifier)
                .bind(&job.backend)
                .bind(job.status.as_str())
                .bind(&job.event_id)
                .bind(&job.params)
                .bind(&job.external_id)
                .bind(job.attempt)
                .bind(job.exit_code)
                .bind(&job.output)
                .bind(&job.log_tail)
                .bind(&job.error)
                .bind(job.created_at_ms)
                .bind(job.started_at_ms)
                .bind(job.finished_at_ms)
                .execute(&mut *tx)
                .await?;
        }
        for finish in &commit.finished_jobs {
            let changed = sqlx::query(
                "UPDATE jobs SET status = ?2, exit_code = ?3, output = ?4, log_tail = ?5, error = ?6, finished_at = ?7 \
                 WHERE id = ?1 AND status IN ('pending', 'running')",
            )
            .bind(&finish.id)
            .bind(finish.status.as_str())
            .bind(finish.exit_code)
            .bind(&finish.output)
            .bind(&finish.log_tail)
            .bind(&finish.error)
            .bind(now_ms)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if changed == 0 {
                return Err(StoreError::Conflict(format!(
                    "job {} is already finished",
                    finish.id
                )));
            }
        }
        if !commit.events.is_empty() {
            let mut builder = QueryBuilder::new("");
            push_event_values(&mut builder, &commit.events);
            builder.build().execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }
}
