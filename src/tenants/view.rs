//! What the API shows of tenants and jobs.

use serde::Serialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;

use crate::store::{
    EventRecord, JobKind, JobRecord, JobStatus, TenantRecord, TenantState, TimelineEntry,
};
use crate::support::timestamp;
use crate::telemetry::trace::TraceContext;

/// A tenant as ARC SaaS sees it, plus what the orchestrator knows.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TenantView {
    pub id: String,
    /// `PROVISIONING`, `ACTIVE`, `PROVISIONFAILED`, `DEPROVISIONING`,
    /// `INACTIVE` or `SUSPENDED`.
    #[schema(example = "ACTIVE")]
    pub status: String,
    /// The step in progress: `provisioning` or `deploying` (while
    /// `PROVISIONING`), `updating` or `suspending` (while `ACTIVE`),
    /// `resuming` (while `SUSPENDED`), `archiving` (while `DEPROVISIONING`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stage: Option<String>,
    pub tier: Option<String>,
    pub last_error: Option<String>,
    /// `KEY=VALUE` outputs of the tenant's jobs, merged.
    #[schema(value_type = Object)]
    pub job_output: Map<String, Value>,
    /// The tenant's jobs, oldest first.
    pub jobs: Vec<JobView>,
    /// The webhook to ARC SaaS tenant management, when one was sent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub callback: Option<CallbackView>,
    pub created_at: String,
    pub updated_at: String,
}

/// Delivery of the provisioning outcome webhook.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CallbackView {
    /// The inbox event delivering it.
    pub event_id: String,
    /// `received` (waiting or retrying), `processing`, `succeeded` (delivered), `failed` (refused) or `dead`.
    pub status: String,
    pub attempts: i64,
    pub last_error: Option<String>,
}

/// A build job.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobView {
    pub id: String,
    pub tenant_id: String,
    pub kind: JobKind,
    pub job_identifier: String,
    /// `local` or `codebuild`.
    pub backend: String,
    pub status: JobStatus,
    /// Runs so far (re-runs after a restart count up).
    pub attempt: i64,
    /// The backend's id for the job (CodeBuild build ARN, local job id).
    pub external_id: Option<String>,
    pub exit_code: Option<i64>,
    pub error: Option<String>,
    #[schema(value_type = Object)]
    pub output: Map<String, Value>,
    /// The names of the environment variables the job received (values are not shown).
    pub params: Vec<String>,
    /// The last 4 KiB of the job's log.
    pub log_tail: Option<String>,
    pub created_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
}

impl JobView {
    /// `log_tail` overrides the stored tail (a running job's live log).
    pub fn new(job: JobRecord, log_tail: Option<String>) -> Self {
        Self {
            params: job.params.0.into_iter().map(|(k, _)| k).collect(),
            output: job.output.0,
            log_tail: log_tail.or(job.log_tail),
            id: job.id.into_string(),
            tenant_id: job.tenant_id.into_string(),
            kind: job.kind,
            job_identifier: job.job_identifier,
            backend: job.backend,
            status: job.status,
            attempt: job.attempt,
            external_id: job.external_id,
            exit_code: job.exit_code,
            error: job.error,
            created_at: timestamp(job.created_at_ms),
            started_at: job.started_at_ms.map(timestamp),
            finished_at: job.finished_at_ms.map(timestamp),
        }
    }
}

/// The ARC SaaS status of a state, and the stage when it is a step of provisioning.
pub fn status_of(state: TenantState) -> (&'static str, Option<&'static str>) {
    match state {
        TenantState::Provisioning => ("PROVISIONING", Some("provisioning")),
        TenantState::Deploying => ("PROVISIONING", Some("deploying")),
        TenantState::Updating => ("ACTIVE", Some("updating")),
        TenantState::Suspending => ("ACTIVE", Some("suspending")),
        TenantState::Resuming => ("SUSPENDED", Some("resuming")),
        TenantState::Archiving => ("DEPROVISIONING", Some("archiving")),
        other => (other.as_str(), None),
    }
}

/// The states reported as `status` (none for a status that is not one).
pub fn states_with_status(status: &str) -> Vec<TenantState> {
    TenantState::ALL
        .iter()
        .copied()
        .filter(|state| status_of(*state).0 == status)
        .collect()
}

impl TenantView {
    pub fn new(tenant: TenantRecord, jobs: Vec<JobView>, callback: Option<EventRecord>) -> Self {
        let (status, stage) = status_of(tenant.state);
        Self {
            id: tenant.id.into_string(),
            status: status.to_owned(),
            stage: stage.map(str::to_owned),
            tier: tenant.tier,
            last_error: tenant.last_error,
            job_output: tenant.job_output.0,
            jobs,
            callback: callback.map(|e| CallbackView {
                event_id: e.id.into_string(),
                status: e.status.to_string(),
                attempts: e.attempts,
                last_error: e.last_error,
            }),
            created_at: timestamp(tenant.created_at_ms),
            updated_at: timestamp(tenant.updated_at_ms),
        }
    }
}

/// A tenant's history, oldest first: the one page that says why a tenant is
/// where it is.
#[derive(Debug, Serialize, ToSchema)]
pub struct TimelineView {
    pub items: Vec<TimelineItem>,
}

/// One step of a tenant's history. `kind` says which fields it has:
/// `event` (a processing attempt: `eventId`, `type`, `status` (`succeeded`,
/// `failed`, `retried`, `dead`), `attempt`, `error`, `note`; webhook
/// deliveries are the attempts of `TENANT_CALLBACK` events), `transition`
/// (`from`, `to`, `eventId`: the event that caused it), `jobStarted` and
/// `jobFinished` (`jobId`, `jobKind`, `jobIdentifier`, `backend`, and when
/// finished `status`, `exitCode`, `error`; `log` is the job's API path).
/// Every item has `traceId`: the trace it belongs to (`null` when unknown).
#[derive(Debug, Serialize, ToSchema)]
pub struct TimelineItem {
    /// RFC 3339, milliseconds.
    pub time: String,
    pub kind: String,
    #[serde(flatten)]
    #[schema(value_type = Object)]
    pub details: Map<String, Value>,
    #[serde(skip)]
    at_ms: i64,
}

impl TimelineView {
    /// The store's entries and the tenant's jobs (a start and, once it
    /// ended, an end each), in order of time.
    pub fn new(entries: Vec<TimelineEntry>, jobs: &[JobRecord]) -> Self {
        // A transition is in the trace of the event that caused it.
        let traces: std::collections::HashMap<Value, Value> = entries
            .iter()
            .filter(|e| e.kind == "event")
            .filter_map(|e| {
                Some((
                    e.detail.get("eventId")?.clone(),
                    e.detail.get("traceId")?.clone(),
                ))
            })
            .collect();
        let mut items: Vec<TimelineItem> = entries
            .into_iter()
            .map(|e| {
                let mut detail = e.detail.0;
                if !detail.contains_key("traceId") {
                    let trace = detail.get("eventId").and_then(|id| traces.get(id));
                    detail.insert("traceId".into(), trace.cloned().unwrap_or(Value::Null));
                }
                TimelineItem::at(e.at_ms, &e.kind, detail)
            })
            .collect();
        for job in jobs {
            let mut about = Map::new();
            let trace = TraceContext::from_stored(job.traceparent.as_deref());
            about.insert("traceId".into(), trace.map(|t| t.trace_id()).into());
            about.insert("jobId".into(), job.id.as_str().into());
            about.insert("jobKind".into(), job.kind.as_str().into());
            about.insert("jobIdentifier".into(), job.job_identifier.as_str().into());
            about.insert("backend".into(), job.backend.as_str().into());
            about.insert("log".into(), format!("/jobs/{}", job.id).into());
            // A job that never started (its backend refused it) has only its
            // end; one that ran so fast its end was recorded before its start
            // started when it was recorded.
            let ran = job.started_at_ms.is_some() || job.exit_code.is_some();
            if ran {
                let started = job.started_at_ms.unwrap_or(job.created_at_ms);
                items.push(TimelineItem::at(started, "jobStarted", about.clone()));
            }
            if let Some(finished) = job.finished_at_ms {
                about.insert("status".into(), job.status.as_str().into());
                about.insert("exitCode".into(), job.exit_code.into());
                about.insert("error".into(), job.error.as_deref().into());
                items.push(TimelineItem::at(finished, "jobFinished", about));
            }
        }
        // Stable: entries of one millisecond keep the order they were written in.
        items.sort_by_key(|item| item.at_ms);
        Self { items }
    }
}

impl TimelineItem {
    fn at(at_ms: i64, kind: &str, details: Map<String, Value>) -> Self {
        Self {
            time: timestamp(at_ms),
            kind: kind.to_owned(),
            details,
            at_ms,
        }
    }
}
