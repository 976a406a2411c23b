//! Jobs as AWS CodeBuild builds: `StartBuild` on the project named by the
//! job identifier, every parameter a PLAINTEXT `environmentVariablesOverride`
//! (as the ARC SaaS sandbox does). A build's end arrives either as the
//! `CodeBuild Build State Change` event EventBridge delivers to `/events`, or
//! from polling `BatchGetBuilds` here, whichever comes first: both become the
//! same completion, and the job is finished once.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_codebuild::types::{Build, EnvironmentVariable, EnvironmentVariableType, StatusType};

use super::{
    BuildStatus, BuilderError, BuilderService, JobCompletion, JobHandle, JobReporter, JobRequest,
    Resumed,
};
use crate::aws::{describe, error_code};

/// The backend's name, stored on its jobs: the only jobs a CodeBuild state-change
/// event from outside the service may complete.
pub const NAME: &str = "codebuild";

/// BatchGetBuilds takes at most 100 ids.
const BATCH: usize = 100;

/// Which job a build runs.
struct BuildRef {
    /// The build ARN: the job's external id.
    arn: String,
    job_id: String,
    project: String,
    attempt: i64,
}

/// A build being watched (keyed by build id, `project:uuid`).
struct Watched {
    build: BuildRef,
    reporter: JobReporter,
}

pub struct CodeBuildJobs {
    client: aws_sdk_codebuild::Client,
    watched: Arc<Mutex<HashMap<String, Watched>>>,
}

impl CodeBuildJobs {
    /// Starts the poller (every `poll`) on the current runtime.
    pub fn new(config: &aws_config::SdkConfig, poll: Duration) -> Self {
        let jobs = Self {
            client: aws_sdk_codebuild::Client::new(config),
            watched: Arc::default(),
        };
        tokio::spawn(poll_loop(
            jobs.client.clone(),
            Arc::downgrade(&jobs.watched),
            poll,
        ));
        jobs
    }

    /// Watches a build started earlier (by this process before a restart, or another replica).
    pub fn watch(
        &self,
        build_arn: &str,
        job_id: &str,
        project: &str,
        attempt: i64,
        reporter: JobReporter,
    ) {
        // `arn:aws:codebuild:<region>:<account>:build/<project>:<uuid>` → `<project>:<uuid>`
        let id = build_arn
            .rsplit_once(":build/")
            .map_or(build_arn, |(_, id)| id);
        if let Ok(mut watched) = self.watched.lock() {
            watched.insert(
                id.to_owned(),
                Watched {
                    build: BuildRef {
                        arn: build_arn.to_owned(),
                        job_id: job_id.to_owned(),
                        project: project.to_owned(),
                        attempt,
                    },
                    reporter,
                },
            );
        }
    }
}

#[async_trait]
impl BuilderService for CodeBuildJobs {
    fn name(&self) -> &'static str {
        NAME
    }

    #[tracing::instrument(level = "debug", skip_all, fields(job = %request.job_id, project = %request.job_identifier, attempt = request.attempt), err(level = "debug"))]
    async fn start_job(&self, request: JobRequest) -> Result<JobHandle, BuilderError> {
        let trace = request
            .traceparent
            .as_ref()
            .map(|t| ("TRACEPARENT".to_owned(), t.clone()));
        let traced = trace.is_some();
        let overrides = request
            .params
            .iter()
            .filter(|(name, _)| !traced || name.as_str() != "TRACEPARENT")
            .map(|(name, value)| (name.clone(), value.clone()))
            .chain(trace)
            .map(|(name, value)| {
                EnvironmentVariable::builder()
                    .name(name.as_str())
                    .value(value)
                    .r#type(EnvironmentVariableType::Plaintext)
                    .build()
                    .map_err(|e| BuilderError::Invalid(format!("parameter '{name}': {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let started = self
            .client
            .start_build()
            .project_name(&request.job_identifier)
            .set_environment_variables_override(Some(overrides))
            .send()
            .await
            .map_err(|err| match error_code(&err) {
                Some("ResourceNotFoundException") => BuilderError::NotFound(format!(
                    "CodeBuild project '{}' does not exist",
                    request.job_identifier
                )),
                Some("InvalidInputException") => BuilderError::Invalid(format!(
                    "CodeBuild refused the build of '{}': {}",
                    request.job_identifier,
                    describe(&err)
                )),
                _ => BuilderError::unavailable(
                    format!(
                        "starting the CodeBuild build of '{}'",
                        request.job_identifier
                    ),
                    Some(super::Cause::from(err)),
                ),
            })?;
        let build = started.build_value().ok_or_else(|| {
            BuilderError::unavailable("CodeBuild answered StartBuild without a build", None)
        })?;
        let arn = build
            .arn()
            .or(build.id())
            .ok_or_else(|| BuilderError::unavailable("CodeBuild build without an id", None))?
            .to_owned();
        tracing::info!(job = %request.job_id, build = %arn, project = %request.job_identifier, "CodeBuild build started");
        self.watch(
            &arn,
            &request.job_id,
            &request.job_identifier,
            request.attempt,
            request.reporter,
        );
        Ok(JobHandle { external_id: arn })
    }

    /// The builds this process polls.
    fn held_here(&self) -> Vec<String> {
        match self.watched.lock() {
            Ok(watched) => watched.values().map(|w| w.build.job_id.clone()).collect(),
            Err(_) => Vec::new(),
        }
    }

    /// The build still runs on AWS: it is polled again. A job with no build
    /// id recorded never started one, so it must start.
    fn resume(&self, job: &crate::store::JobRecord, reporter: JobReporter) -> Resumed {
        match &job.external_id {
            Some(arn) => {
                self.watch(
                    arn,
                    job.id.as_str(),
                    &job.job_identifier,
                    job.attempt,
                    reporter,
                );
                Resumed::Following
            }
            None => Resumed::MustRerun,
        }
    }
}

/// Polls the watched builds until the builder is dropped.
async fn poll_loop(
    client: aws_sdk_codebuild::Client,
    watched: std::sync::Weak<Mutex<HashMap<String, Watched>>>,
    every: Duration,
) {
    loop {
        tokio::time::sleep(every).await;
        let Some(watched) = watched.upgrade() else {
            return;
        };
        let ids: Vec<String> = match watched.lock() {
            Ok(w) => w.keys().cloned().collect(),
            Err(_) => return,
        };
        for chunk in ids.chunks(BATCH) {
            let answer = match client
                .batch_get_builds()
                .set_ids(Some(chunk.to_vec()))
                .send()
                .await
            {
                Ok(answer) => answer,
                Err(err) => {
                    tracing::warn!(error = %describe(&err), "polling CodeBuild builds failed");
                    continue;
                }
            };
            for build in answer.builds() {
                let Some(status) = finished(build) else {
                    continue;
                };
                let Some(id) = build.id() else {
                    continue;
                };
                let entry = watched.lock().ok().and_then(|mut w| w.remove(id));
                if let Some(entry) = entry {
                    entry
                        .reporter
                        .report(completion(&entry.build, build, status))
                        .await;
                }
            }
        }
    }
}

/// How a build ended, or `None` while it runs.
fn finished(build: &Build) -> Option<BuildStatus> {
    match build.build_status()? {
        StatusType::Succeeded => Some(BuildStatus::Succeeded),
        StatusType::Failed | StatusType::Fault => Some(BuildStatus::Failed),
        StatusType::TimedOut => Some(BuildStatus::TimedOut),
        StatusType::Stopped => Some(BuildStatus::Stopped),
        _ => None,
    }
}

fn completion(watched: &BuildRef, build: &Build, status: BuildStatus) -> JobCompletion {
    let output: BTreeMap<String, String> = build
        .exported_environment_variables()
        .iter()
        .filter_map(|v| {
            Some((
                v.name()?.to_owned(),
                v.value().unwrap_or_default().to_owned(),
            ))
        })
        .collect();
    let error = (status != BuildStatus::Succeeded).then(|| {
        let failed_phase = build.phases().iter().rev().find(|p| {
            p.phase_status()
                .is_some_and(|s| s != &StatusType::Succeeded)
        });
        match failed_phase {
            Some(phase) => format!(
                "CodeBuild build {} in phase {}",
                status.as_str(),
                phase.phase_type().map(|t| t.as_str()).unwrap_or("?")
            ),
            None => format!("CodeBuild build {}", status.as_str()),
        }
    });
    JobCompletion {
        job_id: watched.job_id.clone(),
        external_id: watched.arn.clone(),
        job_identifier: watched.project.clone(),
        attempt: watched.attempt,
        status,
        exit_code: None,
        output,
        log_tail: None,
        error,
    }
}

#[cfg(test)]
mod tests {
    use aws_sdk_codebuild::types::{BuildPhase, BuildPhaseType, ExportedEnvironmentVariable};

    use super::*;

    fn watched() -> BuildRef {
        BuildRef {
            arn: "arn:aws:codebuild:us-east-1:1:build/p:1".into(),
            job_id: "job-1".into(),
            project: "p".into(),
            attempt: 2,
        }
    }

    #[test]
    fn running_builds_are_not_finished_and_ended_ones_are() {
        let build = |s: StatusType| Build::builder().build_status(s).build();
        assert_eq!(finished(&build(StatusType::InProgress)), None);
        assert_eq!(
            finished(&build(StatusType::Succeeded)),
            Some(BuildStatus::Succeeded)
        );
        assert_eq!(
            finished(&build(StatusType::Fault)),
            Some(BuildStatus::Failed)
        );
        assert_eq!(
            finished(&build(StatusType::TimedOut)),
            Some(BuildStatus::TimedOut)
        );
        assert_eq!(
            finished(&build(StatusType::Stopped)),
            Some(BuildStatus::Stopped)
        );
    }

    #[test]
    fn a_failed_build_names_its_phase_and_exports_become_output() {
        let build = Build::builder()
            .build_status(StatusType::Failed)
            .phases(
                BuildPhase::builder()
                    .phase_type(BuildPhaseType::Install)
                    .phase_status(StatusType::Succeeded)
                    .build(),
            )
            .phases(
                BuildPhase::builder()
                    .phase_type(BuildPhaseType::Build)
                    .phase_status(StatusType::Failed)
                    .build(),
            )
            .exported_environment_variables(
                ExportedEnvironmentVariable::builder()
                    .name("DB_HOST")
                    .value("db.internal")
                    .build(),
            )
            .build();
        let done = completion(&watched(), &build, BuildStatus::Failed);
        assert_eq!(
            done.error.as_deref(),
            Some("CodeBuild build FAILED in phase BUILD")
        );
        assert_eq!(
            done.output.get("DB_HOST").map(String::as_str),
            Some("db.internal")
        );
        assert_eq!((done.job_id.as_str(), done.attempt), ("job-1", 2));
        assert_eq!(done.external_id, "arn:aws:codebuild:us-east-1:1:build/p:1");
    }
}
