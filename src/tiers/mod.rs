//! Tier details: which job provisions a tier, and the values its jobs receive.
//!
//! The seam is [`TierSource`]; [`config::ConfigTiers`] reads the `[tiers.*]`
//! tables of the configuration file. DynamoDB comes in its own module.

pub mod config;
pub mod dynamodb;

use async_trait::async_trait;
use serde_json::{Map, Value};

/// Keys that name jobs rather than parameters.
pub const JOB_IDENTIFIER: &str = "jobIdentifier";
pub const DEPROVISIONING_JOB_IDENTIFIER: &str = "deprovisioningJobIdentifier";
pub const DEPLOYMENT_JOB_IDENTIFIER: &str = "deploymentJobIdentifier";
pub const UPDATE_JOB_IDENTIFIER: &str = "updateJobIdentifier";
pub const SUSPEND_JOB_IDENTIFIER: &str = "suspendJobIdentifier";
pub const RESUME_JOB_IDENTIFIER: &str = "resumeJobIdentifier";
pub const BACKUP_JOB_IDENTIFIER: &str = "backupJobIdentifier";
/// Every key that names a job.
const JOB_KEYS: [&str; 7] = [
    BACKUP_JOB_IDENTIFIER,
    JOB_IDENTIFIER,
    DEPROVISIONING_JOB_IDENTIFIER,
    DEPLOYMENT_JOB_IDENTIFIER,
    UPDATE_JOB_IDENTIFIER,
    SUSPEND_JOB_IDENTIFIER,
    RESUME_JOB_IDENTIFIER,
];

/// The details of one tier, as stored (any keys; values of any JSON type).
#[derive(Debug, Clone, PartialEq)]
pub struct TierDetails {
    pub tier: String,
    pub values: Map<String, Value>,
}

impl TierDetails {
    fn text(&self, key: &str) -> Option<&str> {
        self.values
            .get(key)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    }

    /// The provisioning job (`jobIdentifier`).
    pub fn job_identifier(&self) -> Option<&str> {
        self.text(JOB_IDENTIFIER)
    }

    /// The deprovisioning job, if the tier has one.
    pub fn deprovisioning_job_identifier(&self) -> Option<&str> {
        self.text(DEPROVISIONING_JOB_IDENTIFIER)
    }

    /// The deployment job, if the tier has one.
    pub fn deployment_job_identifier(&self) -> Option<&str> {
        self.text(DEPLOYMENT_JOB_IDENTIFIER)
    }

    /// The job a tier change to this tier runs (`updateJobIdentifier`, else
    /// `deploymentJobIdentifier`), if the tier has one.
    pub fn update_job_identifier(&self) -> Option<&str> {
        self.text(UPDATE_JOB_IDENTIFIER)
            .or_else(|| self.deployment_job_identifier())
    }

    /// The job that suspends a tenant of this tier, if the tier has one.
    pub fn suspend_job_identifier(&self) -> Option<&str> {
        self.text(SUSPEND_JOB_IDENTIFIER)
    }

    /// The job that resumes a suspended tenant of this tier, if the tier has one.
    pub fn resume_job_identifier(&self) -> Option<&str> {
        self.text(RESUME_JOB_IDENTIFIER)
    }

    /// The job that archives a tenant before it is deprovisioned, if the tier has one.
    pub fn backup_job_identifier(&self) -> Option<&str> {
        self.text(BACKUP_JOB_IDENTIFIER)
    }

    /// Every other key, for the job's parameters.
    pub fn params(&self) -> impl Iterator<Item = (&String, &Value)> {
        self.values
            .iter()
            .filter(|(k, _)| !JOB_KEYS.contains(&k.as_str()))
    }
}

/// Why tier details could not be read.
#[derive(Debug, thiserror::Error)]
pub enum TierError {
    /// No such tier: a permanent error.
    #[error("{0}")]
    NotFound(String),
    /// The source cannot be reached now: retry.
    #[error("{message}")]
    Unavailable {
        message: String,
        #[source]
        cause: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
}

/// Where tier details come from.
#[async_trait]
pub trait TierSource: Send + Sync {
    /// Short name for logs (`config`, `dynamodb`).
    fn name(&self) -> &'static str;
    /// Details of `tier`.
    async fn get(&self, tier: &str) -> Result<TierDetails, TierError>;
}
