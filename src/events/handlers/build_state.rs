//! `CodeBuild Build State Change`: finishes the matching job exactly once and
//! raises its `*_SUCCESS` / `*_FAILURE` event. Local jobs report the same way.

use async_trait::async_trait;
use serde_json::{Map, Value};

use super::jobs::finish;
use super::{EventHandler, Handled, HandlerError, InboxEvent, Services};
use crate::store::{JobFinish, JobStatus};

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
        // Our own id when the backend reported it (it may finish before its
        // build id is recorded); else CodeBuild's build id.
        let job = match detail.get("orchestrator-job-id").and_then(Value::as_str) {
            Some(id) => match services.store.get_job(id).await {
                Ok(job) => Some(job),
                Err(crate::store::StoreError::NotFound) => None,
                Err(err) => return Err(err.into()),
            },
            None => services.store.find_job_by_external_id(build_id).await?,
        };
        let Some(job) = job else {
            return Err(HandlerError::Permanent(format!(
                "no job is waiting for build '{build_id}'"
            )));
        };
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
            output: Some(Value::Object(output.clone()).to_string()),
            log_tail: field("log-tail").and_then(Value::as_str).map(str::to_owned),
            error: error.clone(),
        };
        finish(services, &job, done, &output).await?;
        Ok(Handled::note(format!(
            "job {} {}",
            job.id,
            if success { "succeeded" } else { "failed" }
        )))
    }
}
