//! `TENANT_UPDATE`, `TENANT_SUSPEND`, `TENANT_RESUME` (extensions): a change
//! to an existing tenant that runs the tier's job for it when the tier names
//! one (`updateJobIdentifier` else `deploymentJobIdentifier`,
//! `suspendJobIdentifier`, `resumeJobIdentifier`), else takes effect at once.
//! The job's result (`TENANT_<CHANGE>_SUCCESS`/`_FAILURE`) settles it through
//! the state machine: an update keeps the tenant `ACTIVE` whatever happens
//! (the new tier only on success), a failed suspension leaves it `ACTIVE`, a
//! failed resumption `SUSPENDED`.

use async_trait::async_trait;

use super::common::{environment_override, job_params, tier_details, tier_of};
use super::jobs::{begin, launch, sbt_report, Begin};
use super::{EventHandler, Handled, HandlerError, InboxEvent, Services};
use crate::store::{JobKind, TenantState};
use crate::telemetry::trace::{self, Span};
use crate::tenants::sbt::Phase;
use crate::tenants::Lifecycle;

/// One kind of change.
pub struct ChangeHandler {
    lifecycle: Lifecycle,
    kind: JobKind,
    /// Where the tenant goes when the tier has no job for the change.
    settled: TenantState,
}

impl ChangeHandler {
    pub const UPDATE: Self = Self {
        lifecycle: Lifecycle::Update,
        kind: JobKind::Update,
        settled: TenantState::Active,
    };
    pub const SUSPEND: Self = Self {
        lifecycle: Lifecycle::Suspend,
        kind: JobKind::Suspend,
        settled: TenantState::Suspended,
    };
    pub const RESUME: Self = Self {
        lifecycle: Lifecycle::Resume,
        kind: JobKind::Resume,
        settled: TenantState::Active,
    };
}

#[async_trait]
impl EventHandler for ChangeHandler {
    async fn handle(
        &self,
        event: &InboxEvent,
        services: &Services,
    ) -> Result<Handled, HandlerError> {
        let step = match begin(services, event, self.lifecycle).await? {
            Begin::Proceed(step) => step,
            Begin::Done(done) => return Ok(done),
        };
        let mut record = step.existing()?;
        let previous_tier = record.tier.clone().unwrap_or_default();
        let tier = match self.kind {
            // An update names its new tier; the others act on the tenant's own.
            JobKind::Update => {
                let name = tier_of(&event.detail).ok_or_else(|| {
                    HandlerError::Permanent(
                        "TENANT_UPDATE needs the new tier: detail.planConfig.tier, detail.subscription.plan.tier or detail.tier".into(),
                    )
                })?;
                let span = Span::child_of_current("tier details", trace::Kind::Client);
                let details = services.tiers.get(&name).await;
                span.end_with(&details);
                details?
            }
            _ => tier_details(services, &Default::default(), Some(&record)).await?,
        };
        let job = match self.kind {
            JobKind::Update => tier.update_job_identifier(),
            JobKind::Suspend => tier.suspend_job_identifier(),
            _ => tier.resume_job_identifier(),
        }
        .map(str::to_owned);
        record.state = step.state;
        record.last_error = None;
        let Some(job) = job else {
            record.state = self.settled;
            record.current_job_id = None;
            if self.kind == JobKind::Update {
                record.tier = Some(tier.tier.clone());
            }
            let now = record.state;
            let phase = match self.kind {
                JobKind::Suspend => Some(Phase::Deactivate),
                JobKind::Resume => Some(Phase::Activate),
                _ => None,
            };
            let events = phase.and_then(|phase| sbt_report(event, &record, phase, true));
            step.settle(services, record, events).await?;
            return Ok(Handled::note(format!(
                "tier '{}' has no job for a {}: tenant is {now}",
                tier.tier, self.kind
            )));
        };
        // The tier's values, the tenant's override from provisioning, then this event's.
        let overrides = environment_override(&event.detail);
        let mut params = job_params(
            tier.params()
                .chain(record.params.0.iter())
                .chain(overrides.iter()),
            [
                ("TENANT_ID", step.tenant_id.as_str()),
                ("TIER", &tier.tier),
                ("EVENT_ID", event.id.as_str()),
            ],
        )?;
        if self.kind == JobKind::Update {
            params.insert("PREVIOUS_TIER".into(), previous_tier);
        }
        launch(services, event, step.write(record), self.kind, &job, params).await
    }
}
