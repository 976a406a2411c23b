//! Starting jobs for tenants and the events that follow them.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{json, Map, Value};

use super::common::{tenant_id, transition, write};
use super::{Handled, HandlerError, InboxEvent, Services};
use crate::builder::{BuilderError, JobReporter, JobRequest};
use crate::events::envelope::internal_envelope;
use crate::events::EventType;
use crate::store::{
    Commit, EventId, JobFinish, JobId, JobKind, JobRecord, JobStatus, JsonObject, NewEvent,
    TenantId, TenantRecord, TenantState, TenantWrite,
};
use crate::telemetry::trace::{self, Span, TraceContext};
use crate::tenants::Lifecycle;

/// A job-starting handler's starting point: the tenant as read and the state
/// the event moves it to.
pub struct Step {
    pub tenant_id: TenantId,
    /// The event taking this step.
    pub cause: EventId,
    pub current: Option<TenantRecord>,
    pub state: TenantState,
}

impl Step {
    /// The tenant as read, for events that need one to exist.
    pub fn existing(&self) -> Result<TenantRecord, HandlerError> {
        self.current
            .clone()
            .ok_or_else(|| HandlerError::Permanent(format!("unknown tenant '{}'", self.tenant_id)))
    }

    /// A write of `record` guarded by the version it was read at.
    pub fn write(&self, record: TenantRecord) -> TenantWrite {
        write(record, self.current.as_ref(), &self.cause)
    }

    /// Records the tenant as `record` with no job to run, raising `events`.
    pub async fn settle(
        &self,
        services: &Services,
        record: TenantRecord,
        events: impl IntoIterator<Item = NewEvent>,
    ) -> Result<(), HandlerError> {
        let commit = Commit {
            tenant: Some(self.write(record)),
            events: events.into_iter().collect(),
            ..Commit::default()
        };
        Ok(services.commit(commit).await?)
    }
}

/// Whether a handler goes on.
pub enum Begin {
    Proceed(Box<Step>),
    /// Nothing more to do: the job was resumed, or the event changes nothing.
    Done(Handled),
}

/// Reads the tenant, resumes a job this very event recorded before a crash,
/// and applies `lifecycle` through the state machine.
pub async fn begin(
    services: &Services,
    event: &InboxEvent,
    lifecycle: Lifecycle,
) -> Result<Begin, HandlerError> {
    let tenant_id = tenant_id(&event.detail)?;
    let current = services.store.get_tenant(&tenant_id).await?;
    if let Some(done) = resume(services, event, current.as_ref()).await? {
        return Ok(Begin::Done(done));
    }
    match transition(current.as_ref(), lifecycle) {
        Ok(state) => Ok(Begin::Proceed(Box::new(Step {
            tenant_id,
            cause: event.id.clone(),
            current,
            state,
        }))),
        Err(answer) => answer.map(Begin::Done),
    }
}

/// Finishes `job` and raises its `*_SUCCESS` / `*_FAILURE` event, in one
/// commit. `ran`: the job ran (its backend reported its end), so its
/// duration counts, from its start (or its creation, when its end was
/// reported before its start was recorded).
pub async fn finish(
    services: &Services,
    job: &JobRecord,
    finish: JobFinish,
    output: &Map<String, Value>,
    ran: bool,
) -> Result<(), HandlerError> {
    let success = finish.status == JobStatus::Succeeded;
    let started_under = TraceContext::from_stored(job.traceparent.as_deref());
    let span = started_under.map(|parent| (parent, job_span(parent, &job.id, job.attempt)));
    // What the job's result continues: the job's span if it ran, else the
    // span that tried to start it.
    let trace = span.map(|(parent, own)| if ran { own } else { parent });
    let (status, exit_code, error) = (finish.status, finish.exit_code, finish.error.clone());
    let event = result_event(job, success, output, finish.error.as_deref(), trace);
    let mut events = vec![event];
    events.extend(super::notify::job_outcome(services, job, &finish, trace));
    let commit = Commit {
        finished_jobs: vec![finish],
        events,
        ..Commit::default()
    };
    services.commit(commit).await?;
    let ran = ran.then(|| {
        let started = job.started_at_ms.unwrap_or(job.created_at_ms);
        std::time::Duration::from_millis(
            u64::try_from(crate::support::now_ms() - started).unwrap_or_default(),
        )
    });
    services
        .metrics
        .job_finished(&job.backend, job.kind.as_str(), success, ran);
    if let (Some((parent, own)), Some(_)) = (span, ran) {
        let name = trace::name(|| format!("job {} {}", job.kind, job.job_identifier));
        let mut span = Span::with_context(name, trace::Kind::Internal, own, Some(parent))
            .started_at(job.started_at_ms.unwrap_or(job.created_at_ms));
        span.set("job.id", job.id.to_string());
        span.set("job.backend", job.backend.clone());
        span.set("job.status", status.as_str());
        if let Some(code) = exit_code {
            span.set("process.exit.code", code);
        }
        if let Some(error) = &error {
            span.fail(error);
        }
        span.end();
    }
    Ok(())
}

/// The span of one run of `job`, started under `parent`: its id is derived
/// from the job and run, so the run's start and end agree on it.
fn job_span(parent: TraceContext, job: &JobId, attempt: i64) -> TraceContext {
    parent.derived(&format!("{job}:{attempt}"))
}

/// When a crash interrupted this very event after its job was recorded, the
/// job to start now (still `pending`), or a note that it already started.
async fn resume(
    services: &Services,
    event: &InboxEvent,
    tenant: Option<&TenantRecord>,
) -> Result<Option<Handled>, HandlerError> {
    let Some(job_id) = tenant.and_then(|t| t.current_job_id.as_ref()) else {
        return Ok(None);
    };
    let job = services
        .store
        .get_job(job_id)
        .await?
        .ok_or(crate::store::StoreError::NotFound)?;
    if job.event_id != event.id {
        return Ok(None);
    }
    if job.status == JobStatus::Pending {
        return start(services, &job).await.map(Some);
    }
    Ok(Some(Handled::note(format!(
        "job {} already {}",
        job.id, job.status
    ))))
}

/// Records a pending job with the tenant's new state, then starts it.
pub async fn launch(
    services: &Services,
    event: &InboxEvent,
    mut tenant: TenantWrite,
    kind: JobKind,
    job_identifier: &str,
    mut params: BTreeMap<String, String>,
) -> Result<Handled, HandlerError> {
    // The operation's correlation id: its trace, which every event it causes continues.
    params.insert("CORRELATION_ID".into(), event.trace.trace_id());
    let job = JobRecord {
        id: JobId::from(uuid::Uuid::new_v4().to_string()),
        tenant_id: tenant.record.id.clone(),
        kind,
        job_identifier: job_identifier.to_owned(),
        backend: services.builder.name().to_owned(),
        status: JobStatus::Pending,
        event_id: event.id.clone(),
        params: params
            .into_iter()
            .map(|(k, v)| (k, Value::String(v)))
            .collect(),
        external_id: None,
        attempt: 0,
        exit_code: None,
        output: JsonObject::default(),
        log_tail: None,
        error: None,
        created_at_ms: crate::support::now_ms(),
        started_at_ms: None,
        finished_at_ms: None,
        traceparent: Some(event.trace.traceparent()),
    };
    tenant.record.current_job_id = Some(job.id.clone());
    let commit = Commit {
        tenant: Some(tenant),
        new_jobs: vec![job.clone()],
        ..Commit::default()
    };
    services.commit(commit).await?;
    start(services, &job).await
}

/// Re-runs a job a previous run of the process left `running`. One that cannot
/// start is finished as failed, so its tenant does not wait forever.
pub async fn rerun(services: &Services, job: &JobRecord) -> Result<Handled, HandlerError> {
    match start(services, job).await {
        Err(err @ HandlerError::Transient { .. }) => {
            let error = format!("could not re-run after a restart: {}", err.to_record());
            fail(services, job, error).await?;
            Err(HandlerError::transient_because(
                "could not re-run after a restart",
                err,
            ))
        }
        // Started, or finished as failed by `start` itself.
        other => other,
    }
}

/// Asks the builder to start a recorded job and marks it running. A job the
/// builder cannot run at all is finished as failed, which reports the failure.
pub async fn start(services: &Services, job: &JobRecord) -> Result<Handled, HandlerError> {
    let params: BTreeMap<String, String> = job
        .params
        .strings()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let attempt = job.attempt + 1;
    let own = TraceContext::from_stored(job.traceparent.as_deref())
        .map(|parent| job_span(parent, &job.id, attempt));
    let request = JobRequest {
        job_id: job.id.to_string(),
        job_identifier: job.job_identifier.clone(),
        params,
        attempt,
        traceparent: own.map(|t| t.traceparent()),
        reporter: JobReporter::new(Arc::new(services.inbox.clone())),
    };
    let mut span = Span::child_of_current(
        trace::name(|| format!("start job {}", job.job_identifier)),
        trace::Kind::Client,
    );
    span.set("job.backend", job.backend.clone());
    let started = services.builder.start_job(request).await;
    span.end_with(&started);
    match started {
        Ok(handle) => {
            services
                .store
                .mark_job_running(
                    &job.id,
                    &handle.external_id,
                    attempt,
                    crate::support::now_ms(),
                    services.lease_end(),
                )
                .await?;
            Ok(Handled::note(format!(
                "started {} job {} ({})",
                job.kind, job.id, job.job_identifier
            )))
        }
        Err(err @ BuilderError::Unavailable { .. }) => Err(HandlerError::transient_because(
            format!("starting job {}", job.job_identifier),
            err,
        )),
        Err(BuilderError::NotFound(msg) | BuilderError::Invalid(msg)) => {
            fail(services, job, msg.clone()).await?;
            Err(HandlerError::Permanent(msg))
        }
    }
}

/// Finishes a job that never ran as failed, with `error`, and reports it.
async fn fail(services: &Services, job: &JobRecord, error: String) -> Result<(), HandlerError> {
    let failed = JobFinish {
        id: job.id.clone(),
        status: JobStatus::Failed,
        exit_code: None,
        output: JsonObject::default(),
        log_tail: None,
        error: Some(error),
    };
    finish(services, job, failed, &Map::new(), false).await
}

/// The `*_SUCCESS` / `*_FAILURE` event that reports a finished job to its tenant.
fn result_event(
    job: &JobRecord,
    success: bool,
    output: &Map<String, Value>,
    error: Option<&str>,
    trace: Option<TraceContext>,
) -> NewEvent {
    let event_type = match (job.kind, success) {
        (JobKind::Provisioning, true) => EventType::TenantProvisioningSuccess,
        (JobKind::Provisioning, false) => EventType::TenantProvisioningFailure,
        (JobKind::Deployment, true) => EventType::TenantDeploymentSuccess,
        (JobKind::Deployment, false) => EventType::TenantDeploymentFailure,
        (JobKind::Deprovisioning, true) => EventType::TenantDeprovisioningSuccess,
        (JobKind::Deprovisioning, false) => EventType::TenantDeprovisioningFailure,
        (JobKind::Update, true) => EventType::TenantUpdateSuccess,
        (JobKind::Update, false) => EventType::TenantUpdateFailure,
        (JobKind::Suspend, true) => EventType::TenantSuspendSuccess,
        (JobKind::Suspend, false) => EventType::TenantSuspendFailure,
        (JobKind::Resume, true) => EventType::TenantResumeSuccess,
        (JobKind::Resume, false) => EventType::TenantResumeFailure,
        (JobKind::Backup, true) => EventType::TenantBackupSuccess,
        (JobKind::Backup, false) => EventType::TenantBackupFailure,
    };
    let detail = json!({
        "tenantId": job.tenant_id,
        "jobId": job.id,
        "jobIdentifier": job.job_identifier,
        "jobOutput": output,
        "error": error,
    });
    follow_up(&format!("{}:result", job.id), event_type, detail, trace)
}

/// An event the service raises itself, with a deterministic id so a retried
/// handler never raises it twice, continuing `trace`.
pub fn follow_up(
    id: &str,
    event_type: EventType,
    detail: Value,
    trace: Option<TraceContext>,
) -> NewEvent {
    NewEvent {
        id: EventId::from(id),
        event_type: event_type.as_str().to_owned(),
        source: Some(crate::events::envelope::INTERNAL_SOURCE.into()),
        payload: internal_envelope(id, event_type.as_str(), detail),
        received_at_ms: crate::support::now_ms(),
        traceparent: trace.map(|t| t.traceparent()),
    }
}

/// The report of an sbt-aws tenant's outcome to its control plane, or
/// `None` for a tenant of another control plane.
pub fn sbt_report(
    cause: &InboxEvent,
    tenant: &TenantRecord,
    phase: crate::tenants::sbt::Phase,
    success: bool,
) -> Option<NewEvent> {
    if tenant.control_plane.as_deref() != Some(crate::tenants::sbt::CONTROL_PLANE) {
        return None;
    }
    Some(follow_up(
        &format!("{}:sbt", cause.id),
        EventType::SbtReport,
        json!({"tenantId": tenant.id, "tenantRegistrationId": tenant.id,
               "phase": phase.as_str(), "success": success}),
        Some(cause.trace),
    ))
}

/// The delivery of a final provisioning outcome: the webhook when the
/// tenant carried ARC SaaS credentials and a receiver is configured, the
/// bus event for an sbt-aws tenant.
pub fn callback_event(
    services: &Services,
    cause: &InboxEvent,
    tenant: &mut TenantRecord,
    success: bool,
) -> Option<NewEvent> {
    if let Some(report) = sbt_report(
        cause,
        tenant,
        crate::tenants::sbt::Phase::Provision,
        success,
    ) {
        return Some(report);
    }
    if tenant.callback_secret.is_none() || tenant.callback_context.is_none() {
        return None;
    }
    if services.webhook.is_none() {
        tracing::debug!(tenant = %tenant.id, "tenant has webhook credentials but callbacks.webhook_url is not set");
        return None;
    }
    let id = format!("{}:callback", cause.id);
    tenant.callback_event_id = Some(EventId::from(id.as_str()));
    Some(follow_up(
        &id,
        EventType::TenantCallback,
        json!({"tenantId": tenant.id, "success": success}),
        Some(cause.trace),
    ))
}
