//! `TENANT_DEPLOYMENT`: runs the tier's `deploymentJobIdentifier`, if any, then
//! the tenant is `ACTIVE`.

use async_trait::async_trait;

use super::common::{job_params, object, tenant_id, tier_details, transition, write};
use super::jobs::{callback_event, launch, resume};
use super::{EventHandler, Handled, HandlerError, InboxEvent, Services};
use crate::store::{Commit, JobKind, TenantState};
use crate::tenants::Lifecycle;

/// The default deployment handler.
pub struct DeploymentHandler;

#[async_trait]
impl EventHandler for DeploymentHandler {
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
        let state = match transition(current.as_ref(), Lifecycle::Deploy) {
            Ok(state) => state,
            Err(answer) => return answer,
        };
        let Some(mut record) = current.clone() else {
            return Err(HandlerError::Permanent(format!("unknown tenant '{id}'")));
        };
        let tier = tier_details(services, &event.detail, current.as_ref()).await?;
        let Some(job) = tier.deployment_job_identifier().map(str::to_owned) else {
            if state == TenantState::Active {
                return Ok(Handled::note(format!(
                    "tier '{}' has no deploymentJobIdentifier",
                    tier.tier
                )));
            }
            record.state = TenantState::Active;
            record.current_job_id = None;
            let events = callback_event(services, event, &mut record, true)
                .into_iter()
                .collect();
            let commit = Commit {
                tenant: Some(write(record, current.as_ref())),
                events,
                ..Commit::default()
            };
            services.store.commit(commit, crate::now_ms()).await?;
            services.inbox.wake();
            return Ok(Handled::note("no deployment job: tenant is ACTIVE"));
        };
        // The deployment sees what provisioning saw, plus what provisioning produced.
        let overrides = object(&record.params);
        let outputs = object(&record.job_output);
        let params = job_params(
            tier.params().chain(overrides.iter()).chain(outputs.iter()),
            [
                ("TENANT_ID", &id),
                ("TIER", &tier.tier),
                ("EVENT_ID", &event.id),
            ],
        )?;
        record.state = state;
        launch(
            services,
            event,
            write(record, current.as_ref()),
            JobKind::Deployment,
            &job,
            params,
        )
        .await
    }
}
