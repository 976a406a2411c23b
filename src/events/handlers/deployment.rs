//! `TENANT_DEPLOYMENT`: runs the tier's `deploymentJobIdentifier`, if any, then
//! the tenant is `ACTIVE`.

use async_trait::async_trait;

use super::common::{job_params, tier_details};
use super::jobs::{begin, callback_event, launch, Begin};
use super::{EventHandler, Handled, HandlerError, InboxEvent, Services};
use crate::store::{JobKind, TenantState};
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
        let step = match begin(services, event, Lifecycle::Deploy).await? {
            Begin::Proceed(step) => step,
            Begin::Done(done) => return Ok(done),
        };
        let mut record = step.existing()?;
        let tier = tier_details(services, &event.detail, step.current.as_ref()).await?;
        let Some(job) = tier.deployment_job_identifier().map(str::to_owned) else {
            if step.state == TenantState::Active {
                return Ok(Handled::note(format!(
                    "tier '{}' has no deploymentJobIdentifier",
                    tier.tier
                )));
            }
            record.state = TenantState::Active;
            record.current_job_id = None;
            let events = callback_event(services, event, &mut record, true);
            step.settle(services, record, events).await?;
            return Ok(Handled::note("no deployment job: tenant is ACTIVE"));
        };
        // The deployment sees what provisioning saw, plus what provisioning produced.
        let params = job_params(
            tier.params()
                .chain(record.params.iter())
                .chain(record.job_output.iter()),
            [
                ("TENANT_ID", step.tenant_id.as_str()),
                ("TIER", &tier.tier),
                ("EVENT_ID", event.id.as_str()),
            ],
        )?;
        record.state = step.state;
        launch(
            services,
            event,
            step.write(record),
            JobKind::Deployment,
            &job,
            params,
        )
        .await
    }
}
