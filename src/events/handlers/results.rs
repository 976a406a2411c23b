//! `*_SUCCESS` / `*_FAILURE`: a job's result moves its tenant.

use async_trait::async_trait;
use serde_json::{json, Map, Value};

use super::common::{tenant_id, transition, write};
use super::jobs::{callback_event, follow_up, sbt_report};
use super::{EventHandler, Handled, HandlerError, InboxEvent, Services};
use crate::events::EventType;
use crate::store::{Commit, JobKind, TenantState};
use crate::tenants::sbt::Phase;
use crate::tenants::Lifecycle;

/// Applies the result of a provisioning, deployment or deprovisioning job.
pub struct ResultHandler {
    pub kind: JobKind,
    pub success: bool,
}

impl ResultHandler {
    fn lifecycle(&self) -> Lifecycle {
        match (self.kind, self.success) {
            (JobKind::Provisioning, true) => Lifecycle::ProvisionSucceeded,
            (JobKind::Provisioning, false) => Lifecycle::ProvisionFailed,
            (JobKind::Deployment, true) => Lifecycle::DeploySucceeded,
            (JobKind::Deployment, false) => Lifecycle::DeployFailed,
            (JobKind::Deprovisioning, true) => Lifecycle::DeprovisionSucceeded,
            (JobKind::Deprovisioning, false) => Lifecycle::DeprovisionFailed,
            (JobKind::Update, true) => Lifecycle::UpdateSucceeded,
            (JobKind::Update, false) => Lifecycle::UpdateFailed,
            (JobKind::Suspend, true) => Lifecycle::SuspendSucceeded,
            (JobKind::Suspend, false) => Lifecycle::SuspendFailed,
            (JobKind::Resume, true) => Lifecycle::ResumeSucceeded,
            (JobKind::Resume, false) => Lifecycle::ResumeFailed,
            (JobKind::Backup, true) => Lifecycle::BackupSucceeded,
            (JobKind::Backup, false) => Lifecycle::BackupFailed,
        }
    }
}

/// `detail.jobOutput` as string values.
fn job_output(detail: &Map<String, Value>) -> Map<String, Value> {
    match detail.get("jobOutput") {
        Some(Value::Object(map)) => map
            .iter()
            .map(|(k, v)| (k.clone(), json!(super::common::env_value(v))))
            .collect(),
        _ => Map::new(),
    }
}

#[async_trait]
impl EventHandler for ResultHandler {
    async fn handle(
        &self,
        event: &InboxEvent,
        services: &Services,
    ) -> Result<Handled, HandlerError> {
        let id = tenant_id(&event.detail)?;
        let current = services.store.get_tenant(&id).await?;
        if let (Some(job), Some(tenant)) = (
            event.detail.get("jobId").and_then(Value::as_str),
            current.as_ref(),
        ) {
            if tenant.current_job_id.as_ref().map(|id| id.as_str()) != Some(job) {
                return Ok(Handled::note(format!(
                    "ignored: job {job} is not the tenant's current job"
                )));
            }
        }
        let state = match transition(current.as_ref(), self.lifecycle()) {
            Ok(state) => state,
            Err(answer) => return answer,
        };
        let Some(mut record) = current.clone() else {
            return Err(HandlerError::Permanent(format!("unknown tenant '{id}'")));
        };
        record.job_output.extend(job_output(&event.detail));
        record.state = state;
        record.last_error = if self.success {
            None
        } else {
            let error = event
                .detail
                .get("error")
                .and_then(Value::as_str)
                .unwrap_or("job failed");
            Some(format!("{} failed: {error}", self.kind))
        };
        let mut events = Vec::new();
        match self.lifecycle() {
            Lifecycle::ProvisionSucceeded => events.push(follow_up(
                &format!("{}:deployment", event.id),
                EventType::TenantDeployment,
                json!({"tenantId": id, "tier": record.tier, "jobOutput": record.job_output}),
                Some(event.trace),
            )),
            Lifecycle::ProvisionFailed | Lifecycle::DeployFailed => {
                events.extend(callback_event(services, event, &mut record, false));
            }
            Lifecycle::DeploySucceeded => {
                events.extend(callback_event(services, event, &mut record, true))
            }
            Lifecycle::DeprovisionSucceeded | Lifecycle::DeprovisionFailed => {
                events.extend(sbt_report(event, &record, Phase::Deprovision, self.success))
            }
            Lifecycle::SuspendSucceeded | Lifecycle::SuspendFailed => {
                events.extend(sbt_report(event, &record, Phase::Deactivate, self.success))
            }
            Lifecycle::ResumeSucceeded | Lifecycle::ResumeFailed => {
                events.extend(sbt_report(event, &record, Phase::Activate, self.success))
            }
            // Archived: the deprovisioning itself, naming the backup that finished.
            // Its job gets what the backup got (an sbt-aws tenant's variables too).
            Lifecycle::BackupSucceeded => {
                let given = job_params(services, &event.detail).await?;
                events.push(follow_up(
                    &format!("{}:deprovision", event.id),
                    EventType::TenantDeprovisioning,
                    json!({"tenantId": id, "backupJobId": record.current_job_id,
                           "builderConfig": {"config": {"environmentOverride": given}}}),
                    Some(event.trace),
                ));
            }
            // A failed backup stops the deprovisioning: the tenant is back
            // where it was (the backup job's PREVIOUS_STATUS).
            Lifecycle::BackupFailed => {
                let previous = job_param(services, &event.detail, "PREVIOUS_STATUS").await?;
                if let Some(state) = previous.and_then(|p| TenantState::try_from(p).ok()) {
                    record.state = state;
                }
                if let Some(error) = record.last_error.as_mut() {
                    error.push_str("; the tenant was not deprovisioned");
                }
                events.extend(sbt_report(event, &record, Phase::Deprovision, false));
            }
            // The new tier is the one the update job ran with (its TIER).
            Lifecycle::UpdateSucceeded => {
                if let Some(tier) = job_param(services, &event.detail, "TIER").await? {
                    record.tier = Some(tier);
                }
            }
            _ => {}
        }
        let new_state = record.state;
        let commit = Commit {
            tenant: Some(write(record, current.as_ref(), &event.id)),
            events,
            ..Commit::default()
        };
        services.commit(commit).await?;
        Ok(Handled::note(format!("tenant {id} is now {new_state}")))
    }
}

/// The parameters the result's job ran with, but the ones the service
/// sets itself for each job.
async fn job_params(
    services: &Services,
    detail: &Map<String, Value>,
) -> Result<Map<String, Value>, HandlerError> {
    let Some(job) = detail.get("jobId").and_then(Value::as_str) else {
        return Ok(Map::new());
    };
    let job = services
        .store
        .get_job(&crate::store::JobId::from(job))
        .await?;
    let own = [
        "TENANT_ID",
        "TIER",
        "EVENT_ID",
        "CORRELATION_ID",
        "PREVIOUS_STATUS",
    ];
    Ok(job
        .map(|j| j.params.0)
        .unwrap_or_default()
        .into_iter()
        .filter(|(name, _)| !own.contains(&name.as_str()))
        .collect())
}

/// A parameter the result's job ran with (`TIER` of an update,
/// `PREVIOUS_STATUS` of a backup).
async fn job_param(
    services: &Services,
    detail: &Map<String, Value>,
    name: &str,
) -> Result<Option<String>, HandlerError> {
    let Some(job) = detail.get("jobId").and_then(Value::as_str) else {
        return Ok(None);
    };
    let job = services
        .store
        .get_job(&crate::store::JobId::from(job))
        .await?;
    Ok(job.and_then(|j| {
        j.params
            .0
            .get(name)
            .and_then(Value::as_str)
            .map(str::to_owned)
    }))
}
