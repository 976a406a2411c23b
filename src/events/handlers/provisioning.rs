//! `TENANT_PROVISIONING` and `TENANT_DEPROVISIONING`: start the tier's job.

use async_trait::async_trait;

use super::common::{
    callback_credentials, environment_override, job_params, new_tenant, tier_details,
};
use super::jobs::{begin, launch, sbt_report, Begin};
use super::{EventHandler, Handled, HandlerError, InboxEvent, Services};
use crate::store::{JobKind, JsonObject, TenantState};
use crate::tenants::sbt::Phase;
use crate::tenants::Lifecycle;
use serde_json::{Map, Value};

/// Looks up the tier and runs its `jobIdentifier`.
pub struct ProvisioningHandler;

#[async_trait]
impl EventHandler for ProvisioningHandler {
    async fn handle(
        &self,
        event: &InboxEvent,
        services: &Services,
    ) -> Result<Handled, HandlerError> {
        provision(services, event, environment_override(&event.detail), None).await
    }
}

/// Provisions the tenant `event` names with the tier's job, the job getting
/// `variables` besides the tier's parameters; `control_plane`: the tenant's
/// (`None`: ARC SaaS, whose webhook credentials are read from the event).
pub(super) async fn provision(
    services: &Services,
    event: &InboxEvent,
    variables: Map<String, Value>,
    control_plane: Option<&str>,
) -> Result<Handled, HandlerError> {
    let step = match begin(services, event, Lifecycle::Provision).await? {
        Begin::Proceed(step) => step,
        Begin::Done(done) => return Ok(done),
    };
    let id = &step.tenant_id;
    let tier = tier_details(services, &event.detail, step.current.as_ref()).await?;
    let job = tier
        .job_identifier()
        .ok_or_else(|| {
            HandlerError::Permanent(format!("tier '{}' has no jobIdentifier", tier.tier))
        })?
        .to_owned();
    let params = job_params(
        tier.params().chain(variables.iter()),
        [
            ("TENANT_ID", id.as_str()),
            ("TIER", &tier.tier),
            ("EVENT_ID", event.id.as_str()),
        ],
    )?;
    let mut record = step
        .current
        .clone()
        .unwrap_or_else(|| new_tenant(id, step.state));
    record.state = step.state;
    record.tier = Some(tier.tier.clone());
    record.last_error = None;
    record.job_output = JsonObject::default();
    record.params = JsonObject::from(variables.clone());
    record.control_plane = control_plane.map(str::to_owned);
    let credentials = match control_plane {
        None => callback_credentials(&event.detail, &variables),
        Some(_) => None,
    };
    record.callback_secret = credentials.as_ref().map(|(s, _)| s.clone());
    record.callback_context = credentials.map(|(_, c)| c);
    record.callback_event_id = None;
    launch(
        services,
        event,
        step.write(record),
        JobKind::Provisioning,
        &job,
        params,
    )
    .await
}

/// Runs the tier's `deprovisioningJobIdentifier` (the tier remembered from
/// provisioning); a tier without one goes straight to `INACTIVE`.
pub struct DeprovisioningHandler;

#[async_trait]
impl EventHandler for DeprovisioningHandler {
    async fn handle(
        &self,
        event: &InboxEvent,
        services: &Services,
    ) -> Result<Handled, HandlerError> {
        deprovision(services, event, environment_override(&event.detail)).await
    }
}

/// Deprovisions the tenant `event` names with the tier's job, which gets
/// `variables` besides the tier's parameters.
pub(super) async fn deprovision(
    services: &Services,
    event: &InboxEvent,
    variables: Map<String, Value>,
) -> Result<Handled, HandlerError> {
    let step = match begin(services, event, Lifecycle::Deprovision).await? {
        Begin::Proceed(step) => step,
        Begin::Done(done) => return Ok(done),
    };
    let mut record = step.existing()?;
    let tier = tier_details(services, &event.detail, step.current.as_ref()).await?;
    let previous = record.state;
    if previous == TenantState::Archiving {
        // Only the deprovisioning its finished backup raised goes on.
        let backup = event.detail.get("backupJobId").and_then(Value::as_str);
        if backup.is_none() || backup != record.current_job_id.as_ref().map(|j| j.as_str()) {
            return Err(HandlerError::Permanent(
                "tenant is being archived: wait for its backup to finish".into(),
            ));
        }
    } else if let Some(backup) = backup_job(&tier, &event.detail)? {
        // Archive first (keeping where the tenant was, should the backup fail).
        record.state = TenantState::Archiving;
        record.last_error = None;
        let mut params = job_params(
            tier.params().chain(variables.iter()),
            [
                ("TENANT_ID", step.tenant_id.as_str()),
                ("TIER", &tier.tier),
                ("EVENT_ID", event.id.as_str()),
            ],
        )?;
        params.insert("PREVIOUS_STATUS".into(), previous.as_str().to_owned());
        return launch(
            services,
            event,
            step.write(record),
            JobKind::Backup,
            &backup,
            params,
        )
        .await;
    }
    record.state = step.state;
    record.last_error = None;
    let Some(job) = tier.deprovisioning_job_identifier().map(str::to_owned) else {
        record.state = TenantState::Inactive;
        record.current_job_id = None;
        let events = sbt_report(event, &record, Phase::Deprovision, true);
        step.settle(services, record, events).await?;
        return Ok(Handled::note(format!(
            "tier '{}' has no deprovisioningJobIdentifier: tenant is INACTIVE",
            tier.tier
        )));
    };
    let params = job_params(
        tier.params().chain(variables.iter()),
        [
            ("TENANT_ID", step.tenant_id.as_str()),
            ("TIER", &tier.tier),
            ("EVENT_ID", event.id.as_str()),
        ],
    )?;
    launch(
        services,
        event,
        step.write(record),
        JobKind::Deprovisioning,
        &job,
        params,
    )
    .await
}

/// The backup to run before deprovisioning: the tier's `backupJobIdentifier`
/// (always when set), required when the event asks `"archive": true`.
fn backup_job(
    tier: &crate::tiers::TierDetails,
    detail: &Map<String, Value>,
) -> Result<Option<String>, HandlerError> {
    let asked = detail.get("archive").and_then(Value::as_bool) == Some(true);
    match tier.backup_job_identifier() {
        Some(job) => Ok(Some(job.to_owned())),
        None if asked => Err(HandlerError::Permanent(format!(
            "archive asked for, but tier '{}' has no backupJobIdentifier",
            tier.tier
        ))),
        None => Ok(None),
    }
}
