//! Column lists and row decoding, the same for both stores (the tables have
//! the same columns): [`row_decoders!`] writes the decoding functions for
//! one sqlx row type.

use std::str::FromStr;

use anyhow::anyhow;

use crate::store::StoreError;

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

pub(crate) fn parse<T: FromStr<Err = String>>(text: &str) -> Result<T, StoreError> {
    T::from_str(text).map_err(|e| StoreError::Other(anyhow!(e)))
}

/// The `*_from_row` decoders (events, tenants, jobs, apps, app versions) for `$row`.
macro_rules! row_decoders {
    ($row:ty) => {
        use sqlx::Row as _;

        use $crate::store::{
            AppRecord, AppVersionRecord, EventRecord, JobRecord, StoreError, TenantRecord,
        };

        pub(super) fn app_from_row(row: &$row) -> Result<AppRecord, StoreError> {
            Ok(AppRecord {
                name: row.try_get("name")?,
                status: $crate::store::rows::parse(row.try_get::<&str, _>("status")?)?,
                current_version: row.try_get("current_version")?,
                config: row.try_get("config")?,
                last_error: row.try_get("last_error")?,
                created_at_ms: row.try_get("created_at")?,
                updated_at_ms: row.try_get("updated_at")?,
            })
        }

        /// A row of `version, config, code_size, code_sha256, created_at`.
        pub(super) fn app_version_from_row(row: &$row) -> Result<AppVersionRecord, StoreError> {
            Ok(AppVersionRecord {
                version: row.try_get("version")?,
                config: row.try_get("config")?,
                code_size: row.try_get("code_size")?,
                code_sha256: row.try_get("code_sha256")?,
                created_at_ms: row.try_get("created_at")?,
            })
        }

        pub(super) fn event_from_row(row: &$row) -> Result<EventRecord, StoreError> {
            Ok(EventRecord {
                id: row.try_get("id")?,
                event_type: row.try_get("event_type")?,
                source: row.try_get("source")?,
                payload: row.try_get("payload")?,
                status: $crate::store::rows::parse(row.try_get::<&str, _>("status")?)?,
                attempts: row.try_get("attempts")?,
                last_error: row.try_get("last_error")?,
                note: row.try_get("note")?,
                received_at_ms: row.try_get("received_at")?,
                updated_at_ms: row.try_get("updated_at")?,
                next_attempt_at_ms: row.try_get("next_attempt_at")?,
            })
        }

        pub(super) fn tenant_from_row(row: &$row) -> Result<TenantRecord, StoreError> {
            Ok(TenantRecord {
                id: row.try_get("id")?,
                state: $crate::store::rows::parse(row.try_get::<&str, _>("state")?)?,
                tier: row.try_get("tier")?,
                current_job_id: row.try_get("current_job_id")?,
                last_error: row.try_get("last_error")?,
                job_output: row.try_get("job_output")?,
                params: row.try_get("params")?,
                callback_secret: row.try_get("callback_secret")?,
                callback_context: row.try_get("callback_context")?,
                callback_event_id: row.try_get("callback_event_id")?,
                version: row.try_get("version")?,
                created_at_ms: row.try_get("created_at")?,
                updated_at_ms: row.try_get("updated_at")?,
            })
        }

        pub(super) fn job_from_row(row: &$row) -> Result<JobRecord, StoreError> {
            Ok(JobRecord {
                id: row.try_get("id")?,
                tenant_id: row.try_get("tenant_id")?,
                kind: $crate::store::rows::parse(row.try_get::<&str, _>("kind")?)?,
                job_identifier: row.try_get("job_identifier")?,
                backend: row.try_get("backend")?,
                status: $crate::store::rows::parse(row.try_get::<&str, _>("status")?)?,
                event_id: row.try_get("event_id")?,
                params: row.try_get("params")?,
                external_id: row.try_get("external_id")?,
                attempt: row.try_get("attempt")?,
                exit_code: row.try_get("exit_code")?,
                output: row.try_get("output")?,
                log_tail: row.try_get("log_tail")?,
                error: row.try_get("error")?,
                created_at_ms: row.try_get("created_at")?,
                started_at_ms: row.try_get("started_at")?,
                finished_at_ms: row.try_get("finished_at")?,
            })
        }
    };
}
pub(crate) use row_decoders;
