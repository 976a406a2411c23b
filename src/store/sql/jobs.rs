//! Tenants, jobs and the atomic [`Commit`].

use sqlx::FromRow;

use super::events::insert_events;
use super::{decode_all, SqlStore, JOB_COLUMNS, TENANT_COLUMNS};
use async_trait::async_trait;

use serde_json::Value;

use crate::store::{
    Commit, JobId, JobRecord, JobStore, JsonObject, StoreError, TenantId, TenantRecord,
    TenantStore, TenantWrite, TimelineEntry,
};

/// The timeline entry of a tenant write that changes its state.
fn transition_entry(write: &TenantWrite, now_ms: i64) -> TimelineEntry {
    let mut detail = JsonObject::default();
    detail.insert(
        "from".into(),
        write.from.map_or(Value::Null, |s| Value::from(s.as_str())),
    );
    detail.insert("to".into(), Value::from(write.record.state.as_str()));
    detail.insert(
        "eventId".into(),
        write
            .cause
            .as_ref()
            .map_or(Value::Null, |id| Value::from(id.as_str())),
    );
    TimelineEntry {
        tenant_id: write.record.id.clone(),
        at_ms: now_ms,
        kind: "transition".into(),
        detail,
    }
}

fn insert_timeline(
    entry: &TimelineEntry,
) -> sqlx::query::Query<'_, sqlx::Any, sqlx::any::AnyArguments<'_>> {
    sqlx::query("INSERT INTO tenant_timeline (tenant_id, at, kind, detail) VALUES ($1, $2, $3, $4)")
        .bind(&entry.tenant_id)
        .bind(entry.at_ms)
        .bind(entry.kind.as_str())
        .bind(&entry.detail)
}

#[async_trait]
impl TenantStore for SqlStore {
    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"))]
    async fn append_timeline(&self, entry: &TimelineEntry) -> Result<(), StoreError> {
        self.writable()?;
        insert_timeline(entry).execute(&self.pool).await?;
        Ok(())
    }

    #[tracing::instrument(level = "debug", skip_all, fields(tenant = %tenant), err(level = "debug"))]
    async fn timeline(
        &self,
        tenant: &TenantId,
        limit: i64,
    ) -> Result<Vec<TimelineEntry>, StoreError> {
        let rows = sqlx::query(
            "SELECT tenant_id, at, kind, detail FROM tenant_timeline WHERE tenant_id = $1 \
             ORDER BY seq DESC LIMIT $2",
        )
        .bind(tenant)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        let mut entries: Vec<TimelineEntry> = decode_all(&rows)?;
        entries.reverse();
        Ok(entries)
    }

    #[tracing::instrument(level = "debug", skip_all, fields(id = %id), err(level = "debug"))]
    async fn get_tenant(&self, id: &TenantId) -> Result<Option<TenantRecord>, StoreError> {
        let sql = format!("SELECT {TENANT_COLUMNS} FROM tenants WHERE id = $1");
        self.find(&sql, id.as_str()).await
    }

    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"))]
    async fn list_tenants(
        &self,
        states: &[crate::store::TenantState],
        limit: i64,
    ) -> Result<Vec<TenantRecord>, StoreError> {
        if states.is_empty() {
            let sql = format!(
                "SELECT {TENANT_COLUMNS} FROM tenants ORDER BY updated_at DESC, id LIMIT $1"
            );
            return decode_all(&sqlx::query(&sql).bind(limit).fetch_all(&self.pool).await?);
        }
        // $2.. are the states (a handful at most).
        let wanted = (0..states.len())
            .map(|i| format!("${}", i + 2))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "SELECT {TENANT_COLUMNS} FROM tenants WHERE state IN ({wanted}) \
             ORDER BY updated_at DESC, id LIMIT $1"
        );
        let mut query = sqlx::query(&sql).bind(limit);
        for state in states {
            query = query.bind(state.as_str());
        }
        decode_all(&query.fetch_all(&self.pool).await?)
    }

    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"))]
    async fn commit(&self, commit: Commit, now_ms: i64) -> Result<(), StoreError> {
        self.writable()?;
        let mut tx = self.pool.begin().await?;
        if let Some(write) = &commit.tenant {
            let t = &write.record;
            // Both statements take the row as $1..$10 and $12, the time as $11;
            // the update also checks the version read ($13).
            let sql = match write.expected_version {
                Some(_) => {
                    "UPDATE tenants SET state = $2, tier = $3, current_job_id = $4, last_error = $5, \
                     job_output = $6, params = $7, callback_secret = $8, callback_context = $9, \
                     callback_event_id = $10, control_plane = $12, version = version + 1, updated_at = $11 \
                     WHERE id = $1 AND version = $13"
                }
                None => {
                    "INSERT INTO tenants (id, state, tier, current_job_id, last_error, job_output, params, \
                     callback_secret, callback_context, callback_event_id, control_plane, version, created_at, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $12, 0, $11, $11) ON CONFLICT (id) DO NOTHING"
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
                .bind(now_ms)
                .bind(&t.control_plane);
            if let Some(version) = write.expected_version {
                query = query.bind(version);
            }
            if query.execute(&mut *tx).await?.rows_affected() == 0 {
                return Err(StoreError::Conflict(format!(
                    "tenant {} changed concurrently",
                    t.id
                )));
            }
            if write.from != Some(t.state) {
                let transition = transition_entry(write, now_ms);
                insert_timeline(&transition).execute(&mut *tx).await?;
            }
        }
        for job in &commit.new_jobs {
            let sql = format!(
                "INSERT INTO jobs ({JOB_COLUMNS}) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)"
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
                .bind(&job.traceparent)
                .execute(&mut *tx)
                .await?;
        }
        for finish in &commit.finished_jobs {
            let changed = sqlx::query(
                "UPDATE jobs SET status = $2, exit_code = $3, output = $4, log_tail = $5, error = $6, finished_at = $7 \
                 WHERE id = $1 AND status IN ('pending', 'running')",
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
            let (sql, bind) = insert_events(&commit.events, "");
            bind(sqlx::query(&sql)).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

#[async_trait]
impl JobStore for SqlStore {
    #[tracing::instrument(level = "debug", skip_all, fields(id = %id), err(level = "debug"))]
    async fn get_job(&self, id: &JobId) -> Result<Option<JobRecord>, StoreError> {
        let sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1");
        self.find(&sql, id.as_str()).await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(external_id = %external_id), err(level = "debug"))]
    async fn find_job_by_external_id(
        &self,
        external_id: &str,
    ) -> Result<Option<JobRecord>, StoreError> {
        let sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE external_id = $1 LIMIT 1");
        self.find(&sql, external_id).await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(tenant_id = %tenant_id), err(level = "debug"))]
    async fn jobs_for_tenant(&self, tenant_id: &TenantId) -> Result<Vec<JobRecord>, StoreError> {
        let sql =
            format!("SELECT {JOB_COLUMNS} FROM jobs WHERE tenant_id = $1 ORDER BY created_at, id");
        let rows = sqlx::query(&sql)
            .bind(tenant_id)
            .fetch_all(&self.pool)
            .await?;
        decode_all(&rows)
    }

    #[tracing::instrument(level = "debug", skip_all, fields(backend = %backend), err(level = "debug"))]
    async fn take_abandoned_jobs(
        &self,
        backend: &str,
        expired_before: i64,
        lease_until_ms: i64,
    ) -> Result<Vec<JobRecord>, StoreError> {
        self.writable()?;
        let sql = format!(
            "UPDATE jobs SET lease_until = $3 \
             WHERE status = 'running' AND backend = $1 \
               AND (lease_until IS NULL OR lease_until < $2) \
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
            .map(JobRecord::from_row)
            .collect::<Result<Vec<_>, _>>()?;
        jobs.sort_by_key(|j| j.created_at_ms);
        Ok(jobs)
    }

    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"))]
    async fn renew_job_leases(&self, ids: &[JobId], lease_until_ms: i64) -> Result<(), StoreError> {
        self.writable()?;
        if ids.is_empty() {
            return Ok(());
        }
        let list: Vec<String> = (0..ids.len()).map(|n| format!("${}", n + 2)).collect();
        let sql = format!(
            "UPDATE jobs SET lease_until = $1 WHERE status = 'running' AND id IN ({})",
            list.join(", ")
        );
        let mut query = sqlx::query(&sql).bind(lease_until_ms);
        for id in ids {
            query = query.bind(id.as_str());
        }
        query.execute(&self.pool).await?;
        Ok(())
    }

    #[tracing::instrument(level = "debug", skip_all, fields(id = %id, external_id = %external_id), err(level = "debug"))]
    async fn mark_job_running(
        &self,
        id: &JobId,
        external_id: &str,
        attempt: i64,
        now_ms: i64,
        lease_until_ms: i64,
    ) -> Result<(), StoreError> {
        self.writable()?;
        // A job may already have finished (a fast job reports before this
        // runs): then only its backend id is recorded.
        let sql = format!(
            "UPDATE jobs SET external_id = $2, lease_until = $5, \
                 status = CASE WHEN status IN ('pending', 'running') THEN 'running' ELSE status END, \
                 attempt = {}(attempt, $3), \
                 started_at = CASE WHEN status IN ('pending', 'running') OR started_at IS NULL \
                                   THEN $4 ELSE started_at END \
             WHERE id = $1",
            self.dialect.greatest()
        );
        let done = sqlx::query(&sql)
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
}
