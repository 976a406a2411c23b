//! `TENANT_PROVISIONING` and `TENANT_DEPROVISIONING`: start the tier's job.

use async_trait::async_trait;
use serde_json::Value;

use super::common::{
    callback_credentials, environment_override, job_params, new_tenant, tenant_id, tier_details,
    transition, write,
};
use super::jobs::{launch, resume};
use super::{EventHandler, Handled, HandlerError, InboxEvent, Services};
use crate::store::{Commit, JobKind, TenantState};
use crate::tenants::Lifecycle;

/// Looks up the tier and runs its `jobIdentifier`.
pub struct ProvisioningHandler;

#[async_trait]
impl EventHandler for ProvisioningHandler {
    async fn handle(
        &self,
        event: &InboxEvent,
        services: &Services,
    ) -> Result<Handled, HandlerError> {
        let id = tenant_id(&event.detail)?;
        let current = services.store.get_tenant(&id).await?;
        if let Some(done) = resume(services, event, current.as_ref()).await? {
            return Ok(done);
        }
        let state = match transition(current.as_ref(), Lifecycle::Provision) {
            Ok(state) => state,
            Err(answer) => return answer,
        };
        let tier = tier_details(services, &event.detail, current.as_ref()).await?;
        let job = tier.job_identifier().ok_or_else(|| {
            HandlerError::Permanent(format!("tier '{}' has no jobIdentifier", tier.tier))
        })?;
        let overrides = environment_override(&event.detail);
        let params = job_params(
            tier.params().chain(overrides.iter()),
            [
                ("TENANT_ID", &id),
                ("TIER", &tier.tier),
                ("EVENT_ID", &event.id),
            ],
        )?;
        let mut record = current.clone().unwrap_or_else(|| new_tenant(&id, state));
        record.state = state;
        record.tier = Some(tier.tier.clone());
        record.last_error = None;
        record.job_output = "{}".into();
        record.params = Value::Object(overrides.clone()).to_string();
        let credentials = callback_credentials(&event.detail, &overrides);
        record.callback_secret = credentials.as_ref().map(|(s, _)| s.clone());
        record.callback_context = credentials.map(|(_, c)| c);
        record.callback_event_id = None;
        let job = job.to_owned();
        launch(
            services,
            event,
            write(record, current.as_ref()),
            JobKind::Provisioning,
            &job,
            params,
        )
        .await
    }
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
        let id = tenant_id(&event.detail)?;
        let current = services.store.get_tenant(&id).await?;
        if let Some(done) = resume(services, event, current.as_ref()).await? {
            return Ok(done);
        }
        let state = match transition(current.as_ref(), Lifecycle::Deprovision) {
            Ok(state) => state,
            Err(answer) => return answer,
        };
        let Some(mut record) = current.clone() else {
            return Err(HandlerError::Permanent(format!("unknown tenant '{id}'")));
        };
        let tier = tier_details(services, &event.detail, current.as_ref()).await?;
        record.state = state;
        record.last_error = None;
        let Some(job) = tier.deprovisioning_job_identifier().map(str::to_owned) else {
            record.state = TenantState::Inactive;
            record.current_job_id = None;
            let commit = Commit {
                tenant: Some(write(record, current.as_ref())),
                ..Commit::default()
            };
            services.store.commit(commit, crate::now_ms()).await?;
            return Ok(Handled::note(format!(
                "tier '{}' has no deprovisioningJobIdentifier: tenant is INACTIVE",
                tier.tier
            )));
        };
        let overrides = environment_override(&event.detail);
        let params = job_params(
            tier.params().chain(overrides.iter()),
            [
                ("TENANT_ID", &id),
                ("TIER", &tier.tier),
                ("EVENT_ID", &event.id),
            ],
        )?;
        launch(
            services,
            event,
            write(record, current.as_ref()),
            JobKind::Deprovisioning,
            &job,
            params,
        )
        .await
    }
}
