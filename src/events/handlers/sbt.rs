//! sbt-aws's control-plane events (`sbt_aws_onboardingRequest`,
//! `sbt_aws_offboardingRequest`) run the tier's jobs as `TENANT_*` events
//! do, keyed by `tenantRegistrationId`; `SBT_REPORT` (internal) puts the
//! outcome on the control plane's bus. Unlike sbt-aws's own state machine,
//! an event that cannot start its job is reported as a failure too.

use async_trait::async_trait;
use serde_json::{json, Value};

use super::changes::ChangeHandler;
use super::jobs::follow_up;
use super::provisioning::{deprovision, provision};
use super::{EventHandler, Handled, HandlerError, InboxEvent, Services};
use crate::events::EventType;
use crate::store::{Commit, TenantId};
use crate::tenants::sbt::{Phase, PutError, CONTROL_PLANE};

/// `sbt_aws_onboardingRequest`: provisions the tenant.
pub struct SbtOnboardingHandler;

/// `sbt_aws_offboardingRequest`: deprovisions the tenant.
pub struct SbtOffboardingHandler;

/// `sbt_aws_activateRequest` / `sbt_aws_deactivateRequest`: resumes or
/// suspends the tenant (`TENANT_RESUME` / `TENANT_SUSPEND`).
pub struct SbtActivationHandler {
    pub activate: bool,
}

#[async_trait]
impl EventHandler for SbtActivationHandler {
    async fn handle(
        &self,
        event: &InboxEvent,
        services: &Services,
    ) -> Result<Handled, HandlerError> {
        let (change, phase) = match self.activate {
            true => (ChangeHandler::RESUME, Phase::Activate),
            false => (ChangeHandler::SUSPEND, Phase::Deactivate),
        };
        let started = async {
            let (keyed, _) = keyed(event, services)?;
            change.handle(&keyed, services).await
        };
        report_refusal(event, services, phase, started.await).await
    }
}

#[async_trait]
impl EventHandler for SbtOnboardingHandler {
    async fn handle(
        &self,
        event: &InboxEvent,
        services: &Services,
    ) -> Result<Handled, HandlerError> {
        let started = async {
            let (keyed, variables) = keyed(event, services)?;
            provision(services, &keyed, variables, Some(CONTROL_PLANE)).await
        };
        report_refusal(event, services, Phase::Provision, started.await).await
    }
}

#[async_trait]
impl EventHandler for SbtOffboardingHandler {
    async fn handle(
        &self,
        event: &InboxEvent,
        services: &Services,
    ) -> Result<Handled, HandlerError> {
        let started = async {
            let (keyed, variables) = keyed(event, services)?;
            deprovision(services, &keyed, variables).await
        };
        report_refusal(event, services, Phase::Deprovision, started.await).await
    }
}

/// The registration id the event is keyed by.
fn registration_id(event: &InboxEvent) -> Option<&str> {
    event
        .detail
        .get("tenantRegistrationId")
        .and_then(Value::as_str)
        .filter(|id| !id.is_empty())
}

/// The event as the lifecycle handlers read it (its tenant is the
/// registration), and the variables its job gets from the detail.
fn keyed(
    event: &InboxEvent,
    services: &Services,
) -> Result<(InboxEvent, serde_json::Map<String, Value>), HandlerError> {
    let id = registration_id(event).ok_or_else(|| {
        HandlerError::Permanent(
            "missing detail.tenantRegistrationId (sbt-aws keys tenants by it)".into(),
        )
    })?;
    let variables = services
        .sbt
        .job_variables(&event.detail)
        .map_err(HandlerError::Permanent)?;
    let mut keyed = event.clone();
    keyed
        .detail
        .insert("tenantId".into(), Value::String(id.to_owned()));
    Ok((keyed, variables))
}

/// An event refused for good (a missing field, an unknown tier, a tenant in
/// the wrong state) is reported to the control plane as a failure, then
/// fails as it would.
async fn report_refusal(
    event: &InboxEvent,
    services: &Services,
    phase: Phase,
    outcome: Result<Handled, HandlerError>,
) -> Result<Handled, HandlerError> {
    let Err(HandlerError::Permanent(why)) = outcome else {
        return outcome;
    };
    let id = registration_id(event);
    let report = follow_up(
        &format!("{}:sbt", event.id),
        EventType::SbtReport,
        json!({"tenantId": id, "tenantRegistrationId": id, "phase": phase.as_str(),
               "success": false, "error": why}),
        Some(event.trace),
    );
    services
        .commit(Commit {
            events: vec![report],
            ..Commit::default()
        })
        .await?;
    Err(HandlerError::Permanent(why))
}

/// `SBT_REPORT`: puts a tenant's outcome on the control plane's bus
/// (retried by the inbox while EventBridge cannot take it).
pub struct SbtReportHandler;

#[async_trait]
impl EventHandler for SbtReportHandler {
    async fn handle(
        &self,
        event: &InboxEvent,
        services: &Services,
    ) -> Result<Handled, HandlerError> {
        let detail = &event.detail;
        let phase = detail
            .get("phase")
            .and_then(Value::as_str)
            .and_then(Phase::parse)
            .ok_or_else(|| HandlerError::Permanent("SBT_REPORT without a phase".into()))?;
        let success = detail
            .get("success")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let registration = detail.get("tenantRegistrationId").and_then(Value::as_str);
        let output = match (success, registration) {
            (true, Some(id)) => services
                .store
                .get_tenant(&TenantId::from(id))
                .await?
                .map(|t| t.job_output.0)
                .unwrap_or_default(),
            _ => Default::default(),
        };
        let (detail_type, body) = services.sbt.outcome(phase, success, registration, &output);
        match services.sbt.put(&detail_type, &body).await {
            Ok(true) => Ok(Handled::note(format!(
                "put {detail_type} on {}",
                services.sbt.event_bus().unwrap_or_default()
            ))),
            Ok(false) => Ok(Handled::note(format!(
                "{detail_type} not sent: sbt.event_bus is not set"
            ))),
            Err(err @ PutError::Call(_)) => Err(HandlerError::transient_because(
                "putting the outcome on the control plane's bus",
                err,
            )),
            Err(err @ PutError::Refused { .. }) => Err(HandlerError::transient(err.to_string())),
        }
    }
}
