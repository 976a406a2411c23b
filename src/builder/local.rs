//! The local job runner: `<jobs_dir>/<jobIdentifier>` as a child process.
//!
//! Each job gets a clean environment (its parameters, `PATH`, `JOB_ID` and
//! `JOB_OUTPUT`), its own process group so a timeout kills everything it
//! started, and `PR_SET_PDEATHSIG` so it dies with the service (it is re-run on
//! restart rather than left orphaned). Output goes to `<data_dir>/jobs/<id>/log`.

use std::collections::{BTreeMap, HashMap};
use std::io::SeekFrom;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::process::Command;

use super::{BuildStatus, BuilderError, BuilderService, JobCompletion, JobHandle, JobRequest};
use crate::store::{JobRecord, JobStatus};
use crate::support::{spawn_supervised, stop_groups, ProcessGroup};

/// Bytes of log kept on the job record.
pub const LOG_TAIL_BYTES: u64 = 4096;
/// Most bytes of `$JOB_OUTPUT` read back.
const MAX_OUTPUT_BYTES: u64 = 64 * 1024;

/// Running jobs by id, with their process groups.
type RunningSet = HashMap<String, Option<ProcessGroup>>;

/// Runs jobs as local processes.
#[derive(Debug, Clone)]
pub struct LocalJobs {
    jobs_dir: PathBuf,
    work_dir: PathBuf,
    timeout: Duration,
    /// The jobs whose processes are running now, with their process groups.
    running: Arc<Mutex<RunningSet>>,
    /// Set at shutdown: jobs that end now are interrupted, not finished.
    stopping: Arc<AtomicBool>,
}

impl LocalJobs {
    /// `jobs_dir` holds the executables; `work_dir` receives logs and outputs.
    pub fn new(jobs_dir: PathBuf, work_dir: PathBuf, timeout: Duration) -> Self {
        // Jobs run in their own directory, so relative paths must be resolved now.
        let absolute = |dir: PathBuf| std::path::absolute(&dir).unwrap_or(dir);
        Self {
            jobs_dir: absolute(jobs_dir),
            work_dir: absolute(work_dir),
            timeout,
            running: Arc::default(),
            stopping: Arc::default(),
        }
    }

    /// Where a job's log is written.
    pub fn log_path(work_dir: &Path, job_id: &str) -> PathBuf {
        work_dir.join(job_id).join("log")
    }

    fn executable(&self, identifier: &str) -> Result<PathBuf, BuilderError> {
        let valid = !identifier.is_empty()
            && identifier.len() <= 255
            && !identifier.starts_with('.')
            && identifier
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !valid {
            return Err(BuilderError::Invalid(format!(
                "job identifier '{identifier}' is not a valid local job name (letters, digits, '-', '_', '.')"
            )));
        }
        let path = self.jobs_dir.join(identifier);
        if !path.is_file() {
            return Err(BuilderError::NotFound(format!(
                "job '{identifier}' not found: no executable {}",
                path.display()
            )));
        }
        Ok(path)
    }
}

#[async_trait]
impl BuilderService for LocalJobs {
    fn name(&self) -> &'static str {
        "local"
    }

    #[tracing::instrument(skip_all, fields(job = %request.job_id, identifier = %request.job_identifier, attempt = request.attempt), err)]
    async fn start_job(&self, request: JobRequest) -> Result<JobHandle, BuilderError> {
        let program = self.executable(&request.job_identifier)?;
        // Checked at ingestion already; a job never starts with a name that could steer it.
        crate::envvars::check_names(request.params.keys().map(String::as_str))
            .map_err(|e| BuilderError::Invalid(e.to_string()))?;
        let dir = self.work_dir.join(&request.job_id);
        let unavailable =
            |what: &str, e: std::io::Error| BuilderError::unavailable(what, Some(e.into()));
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|e| unavailable("creating the job directory", e))?;
        let output_path = dir.join(format!("output-{}.env", request.attempt));
        let _ = tokio::fs::remove_file(&output_path).await;
        let log_path = Self::log_path(&self.work_dir, &request.job_id);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| unavailable("opening the job log", e))?;
        let log_err = log
            .try_clone()
            .map_err(|e| unavailable("opening the job log", e))?;

        let mut command = Command::new(&program);
        command
            .env_clear()
            .envs(&request.params)
            .env(
                "PATH",
                std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into()),
            )
            .env("JOB_ID", &request.job_id)
            .env("JOB_OUTPUT", &output_path)
            .envs(request.traceparent.as_deref().map(|t| ("TRACEPARENT", t)))
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err);
        let (mut child, group) = spawn_supervised(&mut command).map_err(|e| match e.kind() {
            std::io::ErrorKind::PermissionDenied => BuilderError::Invalid(format!(
                "job '{}' is not executable: {e}",
                request.job_identifier
            )),
            _ => BuilderError::Invalid(format!(
                "job '{}' could not start: {e}",
                request.job_identifier
            )),
        })?;
        tracing::info!(pid = child.id(), "local job started");

        let timeout = self.timeout;
        let handle = JobHandle {
            external_id: request.job_id.clone(),
        };
        let running = RunningJob::new(&self.running, &request.job_id, group);
        let stopping = self.stopping.clone();
        tokio::spawn(async move {
            let (status, exit_code, error) = match tokio::time::timeout(timeout, child.wait()).await
            {
                Ok(Ok(exit)) => match exit.code() {
                    Some(0) => (BuildStatus::Succeeded, Some(0), None),
                    Some(code) => (
                        BuildStatus::Failed,
                        Some(i64::from(code)),
                        Some(format!("job exited with code {code}")),
                    ),
                    None => (
                        BuildStatus::Failed,
                        None,
                        Some("job was killed by a signal".to_owned()),
                    ),
                },
                Ok(Err(e)) => (
                    BuildStatus::Failed,
                    None,
                    Some(format!("waiting for the job failed: {e}")),
                ),
                Err(_) => {
                    if let Some(group) = group {
                        group.kill();
                    }
                    let _ = child.wait().await;
                    (
                        BuildStatus::TimedOut,
                        None,
                        Some(format!("job timed out after {}s", timeout.as_secs())),
                    )
                }
            };
            let completion = JobCompletion {
                job_id: request.job_id.clone(),
                external_id: request.job_id.clone(),
                job_identifier: request.job_identifier.clone(),
                attempt: request.attempt,
                status,
                exit_code,
                output: read_output(&output_path).await,
                log_tail: read_tail(&log_path, LOG_TAIL_BYTES).await,
                error,
            };
            if stopping.load(Ordering::Acquire) {
                tracing::warn!(job = %request.job_id, "local job interrupted by shutdown: it runs again when its lease ends");
                drop(running);
                return;
            }
            tracing::info!(job = %request.job_id, status = status.as_str(), exit_code, "local job finished");
            request.reporter.report(completion).await;
            drop(running);
        });
        Ok(handle)
    }

    async fn live_log(&self, job: &JobRecord) -> Option<String> {
        if job.status != JobStatus::Running || job.backend != self.name() {
            return None;
        }
        read_tail(
            &Self::log_path(&self.work_dir, job.id.as_str()),
            LOG_TAIL_BYTES,
        )
        .await
    }

    fn held_here(&self) -> Vec<String> {
        let running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        running.keys().cloned().collect()
    }

    /// A local job's process died with its holder: it runs again.
    fn resume(&self, _job: &JobRecord, _reporter: super::JobReporter) -> super::Resumed {
        super::Resumed::MustRerun
    }

    async fn stop_running(&self, grace: Duration) {
        self.stopping.store(true, Ordering::Release);
        let running = || self.running.lock().unwrap_or_else(|p| p.into_inner());
        for (job, group) in running().iter() {
            if let Some(group) = group {
                tracing::warn!(job = %job, pgid = group.id(), "stopping a running local job (shutdown)");
            }
        }
        let killed = stop_groups(|| running().values().flatten().copied().collect(), grace).await;
        if killed > 0 {
            tracing::warn!(
                jobs = killed,
                "local jobs still running after the grace period were killed"
            );
        }
    }
}

/// A job in the running set until its completion is reported.
struct RunningJob {
    set: Arc<Mutex<RunningSet>>,
    id: String,
}

impl RunningJob {
    fn new(set: &Arc<Mutex<RunningSet>>, id: &str, group: Option<ProcessGroup>) -> Self {
        set.lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.to_owned(), group);
        Self {
            set: set.clone(),
            id: id.to_owned(),
        }
    }
}

impl Drop for RunningJob {
    fn drop(&mut self) {
        self.set
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.id);
    }
}

/// Parses the `KEY=VALUE` lines a job wrote to `$JOB_OUTPUT`.
pub fn parse_output(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .map(|line| line.trim_end_matches('\r'))
        .filter(|line| !line.trim().is_empty() && !line.trim_start().starts_with('#'))
        .filter_map(|line| {
            let line = line.strip_prefix("export ").unwrap_or(line);
            let (key, value) = line.split_once('=')?;
            let key = key.trim();
            let valid = key
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            valid.then(|| (key.to_owned(), value.to_owned()))
        })
        .collect()
}

async fn read_output(path: &Path) -> BTreeMap<String, String> {
    let Ok(file) = tokio::fs::File::open(path).await else {
        return BTreeMap::new();
    };
    let mut bytes = Vec::new();
    if file
        .take(MAX_OUTPUT_BYTES)
        .read_to_end(&mut bytes)
        .await
        .is_err()
    {
        return BTreeMap::new();
    }
    parse_output(&String::from_utf8_lossy(&bytes))
}

/// The last `max` bytes of a file, as text starting on a character boundary.
pub async fn read_tail(path: &Path, max: u64) -> Option<String> {
    let mut file = tokio::fs::File::open(path).await.ok()?;
    let len = file.metadata().await.ok()?.len();
    file.seek(SeekFrom::Start(len.saturating_sub(max)))
        .await
        .ok()?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).await.ok()?;
    let text = String::from_utf8_lossy(&bytes);
    let text = text.trim_start_matches('\u{FFFD}');
    Some(text.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_key_value_lines() {
        let out = parse_output(
            "A=1\n# comment\n\nexport B=x=y\r\nbad line\n1X=no\nappPlaneUrl=https://t\n",
        );
        assert_eq!(out.get("A").map(String::as_str), Some("1"));
        assert_eq!(out.get("B").map(String::as_str), Some("x=y"));
        assert_eq!(
            out.get("appPlaneUrl").map(String::as_str),
            Some("https://t")
        );
        assert_eq!(out.len(), 3);
    }
}
