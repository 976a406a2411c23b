//! `CodeBuild Build State Change`: finishes the matching job exactly once and
//! raises its `*_SUCCESS` / `*_FAILURE` event. Local jobs report the same way,
//! through the service's own [`JobReporter`](crate::builder::JobReporter).
//!
//! Who sent the event decides which job it may finish. A completion the
//! service recorded itself ([`COMPLETION_SOURCE`], a source clients cannot
//! post) finishes the job it names, on any backend. One from outside (EventBridge
//! forwarding CodeBuild's event, or anyone holding an event key) finishes only a
//! CodeBuild job whose build id is its `build-id`; anything else is ignored, and
//! the event's note says why.

use async_trait::async_trait;
use serde_json::{Map, Value};

use super::jobs::finish;
use super::{EventHandler, Handled, HandlerError, InboxEvent, Services};
use crate::builder::codebuild;
use crate::events::completions::COMPLETION_SOURCE;
use crate::store::{JobFinish, JobId, JobRecord, JobStatus, JsonObject};

/// Completes build jobs.
pub struct BuildStateHandler;

/// The build's exported variables: EventBridge puts them under
/// `additional-information`; our own completions at the top of the detail.
fn exported_variables(detail: &Map<String, Value>) -> Map<String, Value> {
    const KEY: &str = "exported-environment-variables";
    let found = detail.get(KEY).or_else(|| {
        detail
            .get("additional-information")
            .and_then(|info| info.get(KEY))
    });
    let Some(Value::Array(items)) = found else {
        return Map::new();
    };
    items
        .iter()
        .filter_map(|item| {
            let name = item.get("name")?.as_str()?;
            let value = item
                .get("value")
                .map(super::common::env_value)
                .unwrap_or_default();
            Some((name.to_owned(), Value::String(value)))
        })
        .collect()
}

/// The job a completion is for. The service's own completions name our job id
/// (a job may finish before its build id is recorded); any other event is
/// matched by its build id alone.
async fn find_job(
    services: &Services,
    detail: &Map<String, Value>,
    build_id: &str,
    reported_here: bool,
) -> Result<Option<JobRecord>, HandlerError> {
    let own_id = detail.get("orchestrator-job-id").and_then(Value::as_str);
    match own_id.filter(|_| reported_here) {
        Some(id) => Ok(services.store.get_job(&JobId::from(id)).await?),
        None => Ok(services.store.find_job_by_external_id(build_id).await?),
    }
}

#[async_trait]
impl EventHandler for BuildStateHandler {
    async fn handle(
        &self,
        event: &InboxEvent,
        services: &Services,
    ) -> Result<Handled, HandlerError> {
        let detail = &event.detail;
        let build_id = detail
            .get("build-id")
            .and_then(Value::as_str)
            .ok_or_else(|| HandlerError::Permanent("missing detail.build-id".into()))?;
        let status = detail
            .get("build-status")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if !matches!(
            status,
            "SUCCEEDED" | "FAILED" | "FAULT" | "TIMED_OUT" | "STOPPED"
        ) {
            return Ok(Handled::note(format!(
                "ignored: build status '{status}' is not final"
            )));
        }
        let reported_here = event.source.as_deref() == Some(COMPLETION_SOURCE);
        let Some(job) = find_job(services, detail, build_id, reported_here).await? else {
            return Err(HandlerError::Permanent(format!(
                "no job is waiting for build '{build_id}'"
            )));
        };
        if !reported_here && job.backend != codebuild::NAME {
            return Ok(Handled::note(format!(
                "ignored: job {} runs on the {} backend, which reports its own completion; \
                 a CodeBuild event from outside completes CodeBuild jobs only",
                job.id, job.backend
            )));
        }
        if job.status.is_terminal() {
            return Ok(Handled::note(format!(
                "ignored: job {} already {}",
                job.id, job.status
            )));
        }
        let success = status == "SUCCEEDED";
        let info = detail.get("additional-information");
        let field = |key: &str| info.and_then(|i| i.get(key));
        let error = (!success).then(|| {
            field("error")
                .and_then(Value::as_str)
                .map(str::to_owned)
                .unwrap_or_else(|| format!("build {status}"))
        });
        let output = exported_variables(detail);
        let done = JobFinish {
            id: job.id.clone(),
            status: if success {
                JobStatus::Succeeded
            } else {
                JobStatus::Failed
            },
            exit_code: field("exit-code").and_then(Value::as_i64),
            output: JsonObject::from(output.clone()),
            log_tail: field("log-tail").and_then(Value::as_str).map(str::to_owned),
            error: error.clone(),
        };
        finish(services, &job, done, &output, true).await?;
        Ok(Handled::note(format!(
            "job {} {}",
            job.id,
            if success { "succeeded" } else { "failed" }
        )))
    }
}
