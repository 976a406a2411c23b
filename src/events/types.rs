//! The event types the service knows.

use std::fmt;

use serde::Serialize;
use utoipa::ToSchema;

/// Every event type, public or internal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, ToSchema)]
#[allow(clippy::enum_variant_names)]
pub enum EventType {
    #[serde(rename = "TENANT_PROVISIONING")]
    TenantProvisioning,
    #[serde(rename = "TENANT_DEPROVISIONING")]
    TenantDeprovisioning,
    #[serde(rename = "TENANT_PROVISIONING_SUCCESS")]
    TenantProvisioningSuccess,
    #[serde(rename = "TENANT_PROVISIONING_FAILURE")]
    TenantProvisioningFailure,
    #[serde(rename = "TENANT_DEPLOYMENT")]
    TenantDeployment,
    #[serde(rename = "TENANT_DEPLOYMENT_SUCCESS")]
    TenantDeploymentSuccess,
    #[serde(rename = "TENANT_DEPLOYMENT_FAILURE")]
    TenantDeploymentFailure,
    /// Extension: how deprovisioning jobs report back.
    #[serde(rename = "TENANT_DEPROVISIONING_SUCCESS")]
    TenantDeprovisioningSuccess,
    /// Extension: how deprovisioning jobs report back.
    #[serde(rename = "TENANT_DEPROVISIONING_FAILURE")]
    TenantDeprovisioningFailure,
    /// A job finished: CodeBuild's state-change event, which the local runner imitates.
    #[serde(rename = "CodeBuild Build State Change")]
    BuildStateChange,
    /// Internal: deliver the signed provisioning webhook to ARC SaaS tenant management.
    #[serde(rename = "TENANT_CALLBACK")]
    TenantCallback,
    /// sbt-aws: the control plane onboards a tenant (any of `sbt.onboarding_detail_types`).
    #[serde(rename = "sbt_aws_onboardingRequest")]
    SbtOnboardingRequest,
    /// sbt-aws: the control plane offboards a tenant (any of `sbt.offboarding_detail_types`).
    #[serde(rename = "sbt_aws_offboardingRequest")]
    SbtOffboardingRequest,
    /// Extension: how backup jobs (before deprovisioning) report back.
    #[serde(rename = "TENANT_BACKUP_SUCCESS")]
    TenantBackupSuccess,
    /// Extension: how backup jobs (before deprovisioning) report back.
    #[serde(rename = "TENANT_BACKUP_FAILURE")]
    TenantBackupFailure,
    /// sbt-aws: the control plane activates (resumes) a tenant.
    #[serde(rename = "sbt_aws_activateRequest")]
    SbtActivateRequest,
    /// sbt-aws: the control plane deactivates (suspends) a tenant.
    #[serde(rename = "sbt_aws_deactivateRequest")]
    SbtDeactivateRequest,
    /// Internal: put a tenant's outcome on the sbt-aws control plane's bus.
    #[serde(rename = "SBT_REPORT")]
    SbtReport,
    /// Internal: publish a tenant transition or job outcome to one sink of `[notifications]`.
    #[serde(rename = "TENANT_NOTIFY")]
    TenantNotify,
    /// Extension: change a tenant's tier or plan.
    #[serde(rename = "TENANT_UPDATE")]
    TenantUpdate,
    /// Extension: how update jobs report back.
    #[serde(rename = "TENANT_UPDATE_SUCCESS")]
    TenantUpdateSuccess,
    /// Extension: how update jobs report back.
    #[serde(rename = "TENANT_UPDATE_FAILURE")]
    TenantUpdateFailure,
    /// Extension: suspend an ACTIVE tenant.
    #[serde(rename = "TENANT_SUSPEND")]
    TenantSuspend,
    /// Extension: how suspend jobs report back.
    #[serde(rename = "TENANT_SUSPEND_SUCCESS")]
    TenantSuspendSuccess,
    /// Extension: how suspend jobs report back.
    #[serde(rename = "TENANT_SUSPEND_FAILURE")]
    TenantSuspendFailure,
    /// Extension: resume a SUSPENDED tenant.
    #[serde(rename = "TENANT_RESUME")]
    TenantResume,
    /// Extension: how resume jobs report back.
    #[serde(rename = "TENANT_RESUME_SUCCESS")]
    TenantResumeSuccess,
    /// Extension: how resume jobs report back.
    #[serde(rename = "TENANT_RESUME_FAILURE")]
    TenantResumeFailure,
}

impl EventType {
    /// All types, in a stable order.
    pub const ALL: [EventType; 28] = [
        EventType::TenantProvisioning,
        EventType::TenantDeprovisioning,
        EventType::TenantProvisioningSuccess,
        EventType::TenantProvisioningFailure,
        EventType::TenantDeployment,
        EventType::TenantDeploymentSuccess,
        EventType::TenantDeploymentFailure,
        EventType::TenantDeprovisioningSuccess,
        EventType::TenantDeprovisioningFailure,
        EventType::BuildStateChange,
        EventType::TenantCallback,
        EventType::SbtOnboardingRequest,
        EventType::SbtOffboardingRequest,
        EventType::SbtActivateRequest,
        EventType::SbtDeactivateRequest,
        EventType::SbtReport,
        EventType::TenantBackupSuccess,
        EventType::TenantBackupFailure,
        EventType::TenantNotify,
        EventType::TenantUpdate,
        EventType::TenantUpdateSuccess,
        EventType::TenantUpdateFailure,
        EventType::TenantSuspend,
        EventType::TenantSuspendSuccess,
        EventType::TenantSuspendFailure,
        EventType::TenantResume,
        EventType::TenantResumeSuccess,
        EventType::TenantResumeFailure,
    ];

    /// The wire name (EventBridge `detail-type`).
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::TenantProvisioning => "TENANT_PROVISIONING",
            EventType::TenantDeprovisioning => "TENANT_DEPROVISIONING",
            EventType::TenantProvisioningSuccess => "TENANT_PROVISIONING_SUCCESS",
            EventType::TenantProvisioningFailure => "TENANT_PROVISIONING_FAILURE",
            EventType::TenantDeployment => "TENANT_DEPLOYMENT",
            EventType::TenantDeploymentSuccess => "TENANT_DEPLOYMENT_SUCCESS",
            EventType::TenantDeploymentFailure => "TENANT_DEPLOYMENT_FAILURE",
            EventType::TenantDeprovisioningSuccess => "TENANT_DEPROVISIONING_SUCCESS",
            EventType::TenantDeprovisioningFailure => "TENANT_DEPROVISIONING_FAILURE",
            EventType::BuildStateChange => "CodeBuild Build State Change",
            EventType::TenantCallback => "TENANT_CALLBACK",
            EventType::SbtOnboardingRequest => "sbt_aws_onboardingRequest",
            EventType::SbtOffboardingRequest => "sbt_aws_offboardingRequest",
            EventType::SbtActivateRequest => "sbt_aws_activateRequest",
            EventType::SbtDeactivateRequest => "sbt_aws_deactivateRequest",
            EventType::SbtReport => "SBT_REPORT",
            EventType::TenantBackupSuccess => "TENANT_BACKUP_SUCCESS",
            EventType::TenantBackupFailure => "TENANT_BACKUP_FAILURE",
            EventType::TenantNotify => "TENANT_NOTIFY",
            EventType::TenantUpdate => "TENANT_UPDATE",
            EventType::TenantUpdateSuccess => "TENANT_UPDATE_SUCCESS",
            EventType::TenantUpdateFailure => "TENANT_UPDATE_FAILURE",
            EventType::TenantSuspend => "TENANT_SUSPEND",
            EventType::TenantSuspendSuccess => "TENANT_SUSPEND_SUCCESS",
            EventType::TenantSuspendFailure => "TENANT_SUSPEND_FAILURE",
            EventType::TenantResume => "TENANT_RESUME",
            EventType::TenantResumeSuccess => "TENANT_RESUME_SUCCESS",
            EventType::TenantResumeFailure => "TENANT_RESUME_FAILURE",
        }
    }

    /// Any known type, including internal ones (for rows read back from the inbox).
    pub fn from_name(name: &str) -> Option<EventType> {
        EventType::ALL.into_iter().find(|t| t.as_str() == name)
    }

    /// Types a client may POST. Matching is exact and case-sensitive, as in ARC SaaS.
    pub fn accepted_from_clients(name: &str) -> Option<EventType> {
        EventType::from_name(name).filter(|t| {
            !matches!(
                t,
                EventType::TenantCallback | EventType::SbtReport | EventType::TenantNotify
            )
        })
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
