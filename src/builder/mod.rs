//! Build jobs: the [`BuilderService`] seam, and how a finished job reports back.
//!
//! A backend starts a job and later reports its end through the [`JobReporter`]
//! it was given, as a CodeBuild `Build State Change` event recorded in the
//! inbox. One handler completes jobs of every backend.
//!
//! A completion recorded here carries [`COMPLETION_SOURCE`], which ingestion
//! refuses from clients, and an id with a `/`, which client event ids cannot
//! have: a client can neither pass for the service nor take a completion's id
//! first. Clients' `Build State Change` events complete CodeBuild jobs only.

pub mod codebuild;
pub mod local;

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{json, Value};

use crate::events::envelope::internal_envelope;
use crate::events::{EventType, Inbox};
use crate::store::NewEvent;

/// What a backend needs to start one job.
#[derive(Clone)]
pub struct JobRequest {
    /// Our job id (stable across re-runs).
    pub job_id: String,
    /// The job to run: a CodeBuild project, or `<jobs_dir>/<name>` locally.
    pub job_identifier: String,
    /// Environment variables for the job.
    pub params: BTreeMap<String, String>,
    /// 1 for the first run; re-runs after a restart count up.
    pub attempt: i64,
    /// Where the backend reports the job's end.
    pub reporter: JobReporter,
}

/// A started job, as the backend knows it.
#[derive(Debug, Clone)]
pub struct JobHandle {
    /// The backend's id (CodeBuild build ARN, local job id), matched by the completion event.
    pub external_id: String,
}

/// Why a job could not be started.
#[derive(Debug, thiserror::Error)]
pub enum BuilderError {
    /// The job does not exist (no such project or executable): permanent.
    #[error("{0}")]
    NotFound(String),
    /// The request cannot work (bad identifier or parameters): permanent.
    #[error("{0}")]
    Invalid(String),
    /// The backend cannot take the job now: retry.
    #[error("{0}")]
    Unavailable(String),
}

/// Starts build jobs.
#[async_trait]
pub trait BuilderService: Send + Sync {
    /// Short name stored on jobs (`local`, `codebuild`).
    fn name(&self) -> &'static str;
    /// Starts the job and returns at once; the end is reported through `request.reporter`.
    async fn start_job(&self, request: JobRequest) -> Result<JobHandle, BuilderError>;
    /// Job ids whose processes run inside this process, or `None` when jobs
    /// run elsewhere (CodeBuild) and outlive it. With `Some`, the service keeps
    /// these jobs' leases alive and re-runs jobs whose owner died.
    fn jobs_running_here(&self) -> Option<Vec<String>> {
        None
    }
    /// At shutdown: stops the jobs whose processes run inside this process
    /// (`SIGTERM`, then `SIGKILL` after `grace`) without reporting them
    /// finished, so they run again once their lease ends.
    async fn stop_running(&self, _grace: std::time::Duration) {}
    /// Follows a job started before this process (re)started, for backends
    /// whose jobs outlive it (CodeBuild polls the build again).
    fn follow(&self, _job: &crate::store::JobRecord, _reporter: JobReporter) {}
}

/// How a job ended, in CodeBuild's terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BuildStatus {
    Succeeded,
    Failed,
    TimedOut,
    Stopped,
}

impl BuildStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            BuildStatus::Succeeded => "SUCCEEDED",
            BuildStatus::Failed => "FAILED",
            BuildStatus::TimedOut => "TIMED_OUT",
            BuildStatus::Stopped => "STOPPED",
        }
    }
}

/// A finished job, as a backend reports it.
#[derive(Debug, Clone)]
pub struct JobCompletion {
    /// Our job id (from [`JobRequest::job_id`]): lets the completion find its
    /// job even before the backend's id was recorded.
    pub job_id: String,
    pub external_id: String,
    pub job_identifier: String,
    pub attempt: i64,
    pub status: BuildStatus,
    pub exit_code: Option<i64>,
    /// `KEY=VALUE` outputs (CodeBuild: exported environment variables).
    pub output: BTreeMap<String, String>,
    pub log_tail: Option<String>,
    pub error: Option<String>,
}

impl JobCompletion {
    /// The `CodeBuild Build State Change` detail for this completion.
    pub fn to_detail(&self) -> Value {
        let exported: Vec<Value> = self
            .output
            .iter()
            .map(|(name, value)| json!({"name": name, "value": value}))
            .collect();
        json!({
            "build-id": self.external_id,
            "project-name": self.job_identifier,
            "build-status": self.status.as_str(),
            "current-phase": "COMPLETED",
            "orchestrator-job-id": self.job_id,
            "exported-environment-variables": exported,
            "additional-information": {
                "build-complete": true,
                "exit-code": self.exit_code,
                "log-tail": self.log_tail,
                "error": self.error,
            },
        })
    }
}

/// The `source` of the completions [`JobReporter`] records: reserved (see
/// [`crate::events::envelope::is_reserved_source`]), so only the service
/// itself records events with it.
pub const COMPLETION_SOURCE: &str = "orchestrator.builder";

/// The inbox id of a completion: deterministic (a second report of the same
/// run is a duplicate), with a `/` no client event id may contain.
pub fn completion_event_id(external_id: &str, attempt: i64) -> String {
    format!("{external_id}:{attempt}/completed")
}

/// Records job completions in the inbox.
#[derive(Clone)]
pub struct JobReporter {
    inbox: Inbox,
}

impl JobReporter {
    pub fn new(inbox: Inbox) -> Self {
        Self { inbox }
    }

    /// Records the completion, retrying while the store is unavailable.
    pub async fn report(&self, completion: JobCompletion) {
        let id = completion_event_id(&completion.external_id, completion.attempt);
        let event = NewEvent {
            payload: internal_envelope(
                &id,
                EventType::BuildStateChange.as_str(),
                completion.to_detail(),
            ),
            id,
            event_type: EventType::BuildStateChange.as_str().to_owned(),
            source: Some(COMPLETION_SOURCE.to_owned()),
            received_at_ms: crate::now_ms(),
        };
        let mut delay = Duration::from_millis(200);
        loop {
            match self.inbox.submit(event.clone()).await {
                Ok(_) => return,
                Err(err) => {
                    tracing::warn!(job = %completion.external_id, error = %err, "recording job completion failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(10));
                }
            }
        }
    }
}
