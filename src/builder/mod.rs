//! Build jobs: the [`BuilderService`] seam, and how a finished job reports back.
//!
//! A backend starts a job and later reports its end through the [`JobReporter`]
//! it was given. The reporter hands the completion to a [`CompletionSink`]:
//! the events layer records it in the inbox as a CodeBuild `Build State
//! Change` event, and one handler completes jobs of every backend. This
//! module knows nothing of the inbox.

pub mod codebuild;
pub mod local;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{json, Value};

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
    /// The job's span (W3C `traceparent`), given to it as `TRACEPARENT`.
    pub traceparent: Option<String>,
    /// Where the backend reports the job's end.
    pub reporter: JobReporter,
}

/// A started job, as the backend knows it.
#[derive(Debug, Clone)]
pub struct JobHandle {
    /// The backend's id (CodeBuild build ARN, local job id), matched by the completion event.
    pub external_id: String,
}

/// An error behind a failure, kept with its own causes.
pub type Cause = Box<dyn std::error::Error + Send + Sync>;

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
    #[error("{message}")]
    Unavailable {
        message: String,
        #[source]
        cause: Option<Cause>,
    },
}

impl BuilderError {
    /// The backend cannot take the job now, because of `cause`.
    pub fn unavailable(message: impl Into<String>, cause: impl Into<Option<Cause>>) -> Self {
        BuilderError::Unavailable {
            message: message.into(),
            cause: cause.into(),
        }
    }
}

/// Starts build jobs.
#[async_trait]
pub trait BuilderService: Send + Sync {
    /// Short name stored on jobs (`local`, `codebuild`).
    fn name(&self) -> &'static str;
    /// Starts the job and returns at once; the end is reported through `request.reporter`.
    async fn start_job(&self, request: JobRequest) -> Result<JobHandle, BuilderError>;
    /// Jobs this process holds: a local job's process, a CodeBuild build it
    /// polls. Their leases are renewed while they are held; a running job
    /// whose lease ended lost its holder (a crash, kill -9, a replica gone)
    /// and is given to [`BuilderService::resume`] by whoever takes it.
    fn held_here(&self) -> Vec<String> {
        Vec::new()
    }
    /// At shutdown: stops the jobs whose processes run inside this process
    /// (`SIGTERM`, then `SIGKILL` after `grace`) without reporting them
    /// finished, so they run again once their lease ends.
    async fn stop_running(&self, _grace: std::time::Duration) {}
    /// Takes over a running job whose holder stopped. A backend whose jobs
    /// outlive their holder (CodeBuild) follows it again; one whose jobs died
    /// with it (local processes, and by default) answers that it must run again.
    fn resume(&self, _job: &crate::store::JobRecord, _reporter: JobReporter) -> Resumed {
        Resumed::MustRerun
    }
    /// The live tail of a running job's log, where this backend can read it
    /// (local jobs write it on this machine); `None` otherwise, and the API
    /// shows the tail stored with the job.
    async fn live_log(&self, _job: &crate::store::JobRecord) -> Option<String> {
        None
    }
}

/// What [`BuilderService::resume`] did with a job whose holder stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resumed {
    /// It still runs and is followed again; its end is reported as usual.
    Following,
    /// Its work died with its holder: the job must be started again.
    MustRerun,
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

/// Where finished jobs are recorded, durably (the events layer's inbox).
#[async_trait]
pub trait CompletionSink: Send + Sync {
    /// Records the completion; an error means it was not recorded and may be retried.
    async fn record(&self, completion: &JobCompletion) -> anyhow::Result<()>;
}

/// What a backend reports a job's end through: records the completion in
/// its sink, retrying (with backoff) until it is recorded.
#[derive(Clone)]
pub struct JobReporter {
    sink: Arc<dyn CompletionSink>,
}

impl JobReporter {
    pub fn new(sink: Arc<dyn CompletionSink>) -> Self {
        Self { sink }
    }

    /// Records the completion, retrying while the sink cannot take it.
    pub async fn report(&self, completion: JobCompletion) {
        let mut delay = Duration::from_millis(200);
        while let Err(err) = self.sink.record(&completion).await {
            tracing::warn!(job = %completion.external_id, error = %err, "recording job completion failed; retrying");
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(10));
        }
    }
}
