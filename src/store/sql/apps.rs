//! Apps and every version of their code (kept in the store, so any replica
//! can run an app and rollbacks stay possible).

use sha2::{Digest, Sha256};
use sqlx::{FromRow, Row};

use super::{decode_all, SqlStore, APP_COLUMNS};
use async_trait::async_trait;

use crate::function_config::{AliasTarget, Aliases, AppName, FunctionConfig};
use crate::store::{
    AppRecord, AppStatus, AppStore, AppVersionRecord, AsyncInvocation, AsyncOutcome,
    OperationRecord, OperationStatus, StoreError,
};

/// First key of the two-key advisory locks PostgreSQL takes per app name
/// (the two-key space is separate from the one-key locks sqlx's migrator takes).
const APP_LOCK_SPACE: i32 = 0x4150_5053; // "APPS"

/// A stable 32-bit key for `name`'s advisory lock.
fn lock_key(name: &str) -> i32 {
    let digest = Sha256::digest(name.as_bytes());
    i32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]])
}

impl SqlStore {
    /// A transaction that holds `name`'s write lock: SQLite's write lock,
    /// PostgreSQL's advisory lock for the app (see
    /// [`super::Dialect::begin_app_write`]).
    async fn begin_app_write(
        &self,
        name: &AppName,
    ) -> Result<sqlx::Transaction<'static, sqlx::Any>, StoreError> {
        let (begin, lock) = self.dialect.begin_app_write();
        let mut tx = self.pool.begin_with(begin).await?;
        if let Some(lock) = lock {
            sqlx::query(lock)
                .bind(APP_LOCK_SPACE)
                .bind(lock_key(name.as_str()))
                .execute(&mut *tx)
                .await?;
        }
        Ok(tx)
    }
}

#[async_trait]
impl AppStore for SqlStore {
    /// Concurrent deploys of one app (on any replica) would otherwise both
    /// read the same next version and one would fail on the primary key:
    /// they take turns instead (see [`super::Dialect::begin_app_write`]).
    #[tracing::instrument(level = "debug", skip_all, fields(name = %name), err(level = "debug"))]
    async fn add_app_version(
        &self,
        name: &AppName,
        config: &FunctionConfig,
        code: &[u8],
        code_sha256: &str,
        now_ms: i64,
        promote: bool,
    ) -> Result<i64, StoreError> {
        self.writable()?;
        let config_text = serde_json::to_string(config).map_err(|e| StoreError::Other(e.into()))?;
        let mut tx = self.begin_app_write(name).await?;
        let version: i64 = sqlx::query(
            "SELECT COALESCE(MAX(version), 0) + 1 AS next FROM app_versions WHERE name = $1",
        )
        .bind(name.as_str())
        .fetch_one(&mut *tx)
        .await?
        .try_get("next")?;
        sqlx::query(
            "INSERT INTO app_versions (name, version, config, code, code_size, code_sha256, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(name.as_str())
        .bind(version)
        .bind(config_text.as_str())
        .bind(code)
        .bind(i64::try_from(code.len()).unwrap_or(i64::MAX))
        .bind(code_sha256)
        .bind(now_ms)
        .execute(&mut *tx)
        .await?;
        let sql = format!("SELECT {APP_COLUMNS} FROM apps WHERE name = $1");
        let existing: Option<AppRecord> = sqlx::query(&sql)
            .bind(name.as_str())
            .fetch_optional(&mut *tx)
            .await?
            .as_ref()
            .map(AppRecord::from_row)
            .transpose()?;
        match existing {
            Some(app) if !promote && app.status != AppStatus::Removed => {
                sqlx::query("UPDATE apps SET latest_version = $2, updated_at = $3 WHERE name = $1")
                    .bind(name.as_str())
                    .bind(version)
                    .bind(now_ms)
                    .execute(&mut *tx)
                    .await?;
            }
            existing => {
                // `live` moves here; the other aliases stay.
                // A removed app starts over: its function and aliases are gone.
                let aliases = match &existing {
                    Some(app) if app.status != AppStatus::Removed => {
                        app.aliases.with_live(AliasTarget::to(version))
                    }
                    _ => Aliases::live_at(version),
                };
                sqlx::query(
                    "INSERT INTO apps (name, status, current_version, latest_version, config, aliases, last_error, created_at, updated_at, deploy_heartbeat_at) \
                     VALUES ($1, $2, $3, $3, $4, $7, NULL, $5, $5, $5) \
                     ON CONFLICT (name) DO UPDATE SET \
                     status = CASE apps.status WHEN $6 THEN $6 ELSE $2 END, \
                     current_version = $3, latest_version = $3, config = $4, aliases = $7, \
                     last_error = NULL, updated_at = $5, deploy_heartbeat_at = $5",
                )
                .bind(name.as_str())
                .bind(AppStatus::Deployed.as_str())
                .bind(version)
                .bind(config_text.as_str())
                .bind(now_ms)
                .bind(AppStatus::Active.as_str())
                .bind(aliases.to_text())
                .execute(&mut *tx)
                .await?;
            }
        }
        tx.commit().await?;
        Ok(version)
    }

    #[tracing::instrument(level = "debug", skip_all, fields(name = %name, version), err(level = "debug"))]
    async fn app_version(
        &self,
        name: &AppName,
        version: i64,
    ) -> Result<Option<AppVersionRecord>, StoreError> {
        let row = sqlx::query(
            "SELECT version, config, code_size, code_sha256, created_at FROM app_versions \
             WHERE name = $1 AND version = $2",
        )
        .bind(name.as_str())
        .bind(version)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(AppVersionRecord::from_row).transpose()?)
    }

    /// Read and written under the app's write lock, so two changes of one
    /// app's aliases (on any replica) cannot both pass the check.
    #[tracing::instrument(level = "debug", skip_all, fields(name = %name), err(level = "debug"))]
    async fn set_aliases(
        &self,
        name: &AppName,
        expected: &Aliases,
        aliases: &Aliases,
        live_config: &FunctionConfig,
        mend_error: bool,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        self.writable()?;
        let config_text =
            serde_json::to_string(live_config).map_err(|e| StoreError::Other(e.into()))?;
        let mut tx = self.begin_app_write(name).await?;
        let row = sqlx::query("SELECT aliases, current_version, status FROM apps WHERE name = $1")
            .bind(name.as_str())
            .fetch_optional(&mut *tx)
            .await?;
        let Some(row) = row else {
            return Err(StoreError::NotFound);
        };
        let text: String = row.try_get("aliases")?;
        let current: i64 = row.try_get("current_version")?;
        let status: String = row.try_get("status")?;
        if Aliases::from_text(&text, current) != *expected || status == AppStatus::Removed.as_str()
        {
            return Ok(false);
        }
        // Moving `live` of an app in `ERROR` serves it again, in the same write.
        sqlx::query(
            "UPDATE apps SET aliases = $2, current_version = $3, config = $4, updated_at = $5, \
             status = CASE WHEN $6 AND status = $7 THEN $8 ELSE status END, \
             last_error = CASE WHEN $6 AND status = $7 THEN NULL ELSE last_error END \
             WHERE name = $1",
        )
        .bind(name.as_str())
        .bind(aliases.to_text())
        .bind(aliases.live.version)
        .bind(config_text.as_str())
        .bind(now_ms)
        .bind(mend_error)
        .bind(AppStatus::Error.as_str())
        .bind(AppStatus::Active.as_str())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    #[tracing::instrument(level = "debug", skip_all, fields(app = %app), err(level = "debug"))]
    async fn add_domain(
        &self,
        domain: &str,
        app: &AppName,
        now_ms: i64,
    ) -> Result<Option<AppName>, StoreError> {
        self.writable()?;
        // One statement: the domain's owner after it, ours or the app that had it.
        let owner: String = sqlx::query(
            "INSERT INTO app_domains (domain, name, created_at) VALUES ($1, $2, $3) \
             ON CONFLICT (domain) DO UPDATE SET domain = app_domains.domain \
             RETURNING name",
        )
        .bind(domain)
        .bind(app.as_str())
        .bind(now_ms)
        .fetch_one(&self.pool)
        .await?
        .try_get("name")?;
        if owner == app.as_str() {
            return Ok(None);
        }
        Ok(Some(
            AppName::try_from(owner).map_err(|e| StoreError::Other(anyhow::anyhow!(e)))?,
        ))
    }

    #[tracing::instrument(level = "debug", skip_all, fields(app = %app), err(level = "debug"))]
    async fn remove_domain(&self, domain: &str, app: &AppName) -> Result<bool, StoreError> {
        self.writable()?;
        let done = sqlx::query("DELETE FROM app_domains WHERE domain = $1 AND name = $2")
            .bind(domain)
            .bind(app.as_str())
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"))]
    async fn domains(&self, app: Option<&AppName>) -> Result<Vec<(String, AppName)>, StoreError> {
        let rows = match app {
            Some(app) => {
                sqlx::query("SELECT domain, name FROM app_domains WHERE name = $1 ORDER BY domain")
                    .bind(app.as_str())
                    .fetch_all(&self.pool)
                    .await?
            }
            None => {
                sqlx::query("SELECT domain, name FROM app_domains ORDER BY domain")
                    .fetch_all(&self.pool)
                    .await?
            }
        };
        rows.iter()
            .map(|row| {
                let domain: String = row.try_get("domain")?;
                let name: String = row.try_get("name")?;
                let name =
                    AppName::try_from(name).map_err(|e| StoreError::Other(anyhow::anyhow!(e)))?;
                Ok((domain, name))
            })
            .collect()
    }

    #[tracing::instrument(level = "debug", skip_all, fields(name = %name), err(level = "debug"))]
    async fn get_app(&self, name: &AppName) -> Result<Option<AppRecord>, StoreError> {
        let sql = format!("SELECT {APP_COLUMNS} FROM apps WHERE name = $1");
        self.find(&sql, name.as_str()).await
    }

    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"))]
    async fn list_apps(&self) -> Result<Vec<AppRecord>, StoreError> {
        let sql = format!("SELECT {APP_COLUMNS} FROM apps ORDER BY name");
        decode_all(&sqlx::query(&sql).fetch_all(&self.pool).await?)
    }

    #[tracing::instrument(level = "debug", skip_all, fields(name = %name), err(level = "debug"))]
    async fn app_versions(&self, name: &AppName) -> Result<Vec<AppVersionRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT version, config, code_size, code_sha256, created_at FROM app_versions \
             WHERE name = $1 ORDER BY version DESC",
        )
        .bind(name.as_str())
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(AppVersionRecord::from_row)
            .collect::<Result<_, _>>()?)
    }

    #[tracing::instrument(level = "debug", skip_all, fields(name = %name, version), err(level = "debug"))]
    async fn app_code(&self, name: &AppName, version: i64) -> Result<Vec<u8>, StoreError> {
        let row = sqlx::query("SELECT code FROM app_versions WHERE name = $1 AND version = $2")
            .bind(name.as_str())
            .bind(version)
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get("code")?)
    }

    #[tracing::instrument(level = "debug", skip_all, fields(name = %name), err(level = "debug"))]
    async fn set_app_status(
        &self,
        name: &AppName,
        status: AppStatus,
        error: Option<&str>,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        self.writable()?;
        let done = sqlx::query(
            "UPDATE apps SET status = $2, last_error = $3, updated_at = $4 WHERE name = $1",
        )
        .bind(name.as_str())
        .bind(status.as_str())
        .bind(error)
        .bind(now_ms)
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    /// Sets the outcome of deploying `version`, if it is still the current
    /// version and the app is not `INACTIVE` or `REMOVED`; whether it was.
    #[tracing::instrument(level = "debug", skip_all, fields(name = %name, version), err(level = "debug"))]
    async fn settle_app_deploy(
        &self,
        name: &AppName,
        version: i64,
        status: AppStatus,
        error: Option<&str>,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        self.writable()?;
        let done = sqlx::query(
            "UPDATE apps SET status = $3, last_error = $4, updated_at = $5 \
             WHERE name = $1 AND current_version = $2 AND status IN ($6, $7, $8)",
        )
        .bind(name.as_str())
        .bind(version)
        .bind(status.as_str())
        .bind(error)
        .bind(now_ms)
        .bind(AppStatus::Deployed.as_str())
        .bind(AppStatus::Active.as_str())
        .bind(AppStatus::Error.as_str())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Apps left `DEPLOYED` whose deploy stopped beating before
    /// `expired_before`, now beating at `now_ms` for the caller.
    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"))]
    async fn take_abandoned_deploys(
        &self,
        expired_before: i64,
        now_ms: i64,
    ) -> Result<Vec<AppRecord>, StoreError> {
        self.writable()?;
        let sql = format!(
            "UPDATE apps SET deploy_heartbeat_at = $2 \
             WHERE status = $3 AND COALESCE(deploy_heartbeat_at, updated_at) < $1 \
             RETURNING {APP_COLUMNS}"
        );
        let rows = sqlx::query(&sql)
            .bind(expired_before)
            .bind(now_ms)
            .bind(AppStatus::Deployed.as_str())
            .fetch_all(&self.pool)
            .await?;
        let mut apps: Vec<AppRecord> = decode_all(&rows)?;
        apps.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(apps)
    }

    #[tracing::instrument(level = "debug", skip_all, fields(name = %name, version), err(level = "debug"))]
    async fn renew_app_deploy(
        &self,
        name: &AppName,
        version: i64,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        self.writable()?;
        sqlx::query(
            "UPDATE apps SET deploy_heartbeat_at = $3 \
             WHERE name = $1 AND current_version = $2 AND status = $4",
        )
        .bind(name.as_str())
        .bind(version)
        .bind(now_ms)
        .bind(AppStatus::Deployed.as_str())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    #[tracing::instrument(level = "debug", skip_all, fields(id = %invocation.id), err(level = "debug"))]
    async fn enqueue_invocation(
        &self,
        invocation: &AsyncInvocation,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        self.writable()?;
        sqlx::query(
            "INSERT INTO async_invocations (id, name, qualifier, payload, status, attempts, due_at, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, 'queued', 0, $5, $5, $5)",
        )
        .bind(invocation.id.as_str())
        .bind(invocation.name.as_str())
        .bind(invocation.qualifier.as_deref())
        .bind(invocation.payload.as_slice())
        .bind(now_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"))]
    async fn claim_invocations(
        &self,
        now_ms: i64,
        lease_ms: i64,
        limit: i64,
    ) -> Result<Vec<AsyncInvocation>, StoreError> {
        self.writable()?;
        let sql = self
            .dialect
            .claim_invocations("id, name, qualifier, payload, attempts");
        let rows = sqlx::query(&sql)
            .bind(now_ms)
            .bind(lease_ms)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .iter()
            .map(AsyncInvocation::from_row)
            .collect::<Result<_, _>>()?)
    }

    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"))]
    async fn settle_invocation(
        &self,
        id: &str,
        outcome: &AsyncOutcome,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        self.writable()?;
        let (status, due, error) = match outcome {
            AsyncOutcome::Succeeded => ("succeeded", now_ms, None),
            AsyncOutcome::Retry { at_ms, error } => ("queued", *at_ms, Some(error.as_str())),
            AsyncOutcome::Failed { error } => ("failed", now_ms, Some(error.as_str())),
        };
        sqlx::query(
            "UPDATE async_invocations SET status = $2, due_at = $3, last_error = COALESCE($4, last_error), \
             lease_until = NULL, updated_at = $5 WHERE id = $1 AND status = 'running'",
        )
        .bind(id)
        .bind(status)
        .bind(due)
        .bind(error)
        .bind(now_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    #[tracing::instrument(level = "debug", skip_all, fields(id = %operation.id), err(level = "debug"))]
    async fn create_operation(
        &self,
        operation: &OperationRecord,
        lease_until_ms: i64,
    ) -> Result<(), StoreError> {
        self.writable()?;
        sqlx::query(
            "INSERT INTO operations (id, kind, name, status, result, error, created_at, updated_at, lease_until) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(operation.id.as_str())
        .bind(operation.kind.as_str())
        .bind(operation.name.as_str())
        .bind(operation.status.as_str())
        .bind(operation.result.as_deref())
        .bind(operation.error.as_deref())
        .bind(operation.created_at_ms)
        .bind(operation.updated_at_ms)
        .bind(lease_until_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"))]
    async fn get_operation(&self, id: &str) -> Result<Option<OperationRecord>, StoreError> {
        self.find(
            "SELECT id, kind, name, status, result, error, created_at, updated_at \
             FROM operations WHERE id = $1",
            id,
        )
        .await
    }

    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"))]
    async fn renew_operation(&self, id: &str, lease_until_ms: i64) -> Result<(), StoreError> {
        self.writable()?;
        sqlx::query("UPDATE operations SET lease_until = $2 WHERE id = $1 AND status = $3")
            .bind(id)
            .bind(lease_until_ms)
            .bind(OperationStatus::Pending.as_str())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"))]
    async fn finish_operation(
        &self,
        id: &str,
        status: OperationStatus,
        result: Option<&str>,
        error: Option<&str>,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        self.writable()?;
        sqlx::query(
            "UPDATE operations SET status = $2, result = $3, error = $4, updated_at = $5 \
             WHERE id = $1 AND status = $6",
        )
        .bind(id)
        .bind(status.as_str())
        .bind(result)
        .bind(error)
        .bind(now_ms)
        .bind(OperationStatus::Pending.as_str())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"))]
    async fn settle_abandoned_operations(
        &self,
        expired_before: i64,
        error: &str,
        now_ms: i64,
    ) -> Result<u64, StoreError> {
        self.writable()?;
        let done = sqlx::query(
            "UPDATE operations SET status = $2, error = $3, updated_at = $4 \
             WHERE status = $5 AND lease_until < $1",
        )
        .bind(expired_before)
        .bind(OperationStatus::Failed.as_str())
        .bind(error)
        .bind(now_ms)
        .bind(OperationStatus::Pending.as_str())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }
}
