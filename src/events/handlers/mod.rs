//! Event handlers: one trait object per event type, replaceable by embedding
//! programs. The defaults implement the tenant lifecycle on top of the
//! [`Services`] they are given.

mod build_state;
mod callback;
mod changes;
mod common;
mod deployment;
mod jobs;
mod notify;
mod provisioning;
mod results;
mod sbt;

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{Map, Value};

pub use build_state::BuildStateHandler;
pub use callback::CallbackHandler;
pub use changes::ChangeHandler;
pub use common::{check_override_names, tenant_id};
pub use deployment::DeploymentHandler;
pub(crate) use jobs::rerun;
pub use notify::NotifyHandler;
pub use provisioning::{DeprovisioningHandler, ProvisioningHandler};
pub use results::ResultHandler;
pub use sbt::{
    SbtActivationHandler, SbtOffboardingHandler, SbtOnboardingHandler, SbtReportHandler,
};

use super::{EventType, Inbox};
use crate::builder::BuilderService;
use crate::store::{Commit, EventId, JobKind, Store, StoreError};
use crate::tenants::webhook::WebhookClient;
use crate::tiers::{TierError, TierSource};

/// An event taken from the inbox for processing.
#[derive(Debug, Clone)]
pub struct InboxEvent {
    pub id: EventId,
    pub event_type: EventType,
    pub source: Option<String>,
    /// The envelope's `detail`, or the bare body.
    pub detail: Map<String, Value>,
    /// 1 on the first attempt.
    pub attempt: i64,
    /// The span handling it: what it causes (jobs, follow-up events,
    /// webhook deliveries) continues this trace.
    pub trace: crate::telemetry::trace::TraceContext,
}

/// What a handler did, when it did not fail.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Handled {
    /// Shown on the event, e.g. why it changed nothing.
    pub note: Option<String>,
}

impl Handled {
    pub fn done() -> Self {
        Self::default()
    }

    pub fn note(note: impl Into<String>) -> Self {
        Self {
            note: Some(note.into()),
        }
    }
}

/// The error behind a transient failure, kept with its own causes.
pub type Cause = Arc<dyn std::error::Error + Send + Sync>;

/// Why a handler failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum HandlerError {
    /// Retrying cannot help (unknown tier, missing tenant id): the event fails at once.
    #[error("{0}")]
    Permanent(String),
    /// Retrying may help (store or backend unavailable): retried with backoff.
    #[error("{message}")]
    Transient {
        message: String,
        #[source]
        cause: Option<Cause>,
    },
}

impl HandlerError {
    /// A transient failure with nothing behind it (a timeout, a panic).
    pub fn transient(message: impl Into<String>) -> Self {
        HandlerError::Transient {
            message: message.into(),
            cause: None,
        }
    }

    /// A transient failure caused by `cause`.
    pub fn transient_because(
        message: impl Into<String>,
        cause: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        HandlerError::Transient {
            message: message.into(),
            cause: Some(Arc::new(cause)),
        }
    }

    /// What is recorded on the event (`lastError`): the message, then its causes.
    pub fn to_record(&self) -> String {
        let causes = crate::support::error_chain(self);
        match causes.is_empty() {
            true => self.to_string(),
            false => format!("{self}: {causes}"),
        }
    }
}

impl From<StoreError> for HandlerError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::NotFound => {
                HandlerError::Permanent("a record the event refers to does not exist".into())
            }
            other => HandlerError::transient_because("the store failed", other),
        }
    }
}

impl From<TierError> for HandlerError {
    fn from(err: TierError) -> Self {
        match err {
            TierError::NotFound(msg) => HandlerError::Permanent(msg),
            unavailable => HandlerError::transient_because("tier details unavailable", unavailable),
        }
    }
}

/// Handles one event type.
#[async_trait]
pub trait EventHandler: Send + Sync {
    async fn handle(
        &self,
        event: &InboxEvent,
        services: &Services,
    ) -> Result<Handled, HandlerError>;
}

/// What handlers work with.
#[derive(Clone)]
pub struct Services {
    pub store: Arc<dyn Store>,
    pub tiers: Arc<dyn TierSource>,
    pub builder: Arc<dyn BuilderService>,
    pub inbox: Inbox,
    /// Set when `callbacks.webhook_url` is configured.
    pub webhook: Option<WebhookClient>,
    /// How long a started job's lease lasts before it needs renewing.
    pub job_lease: std::time::Duration,
    /// Where events, jobs and deliveries are counted.
    pub metrics: Arc<crate::telemetry::metrics::Metrics>,
    /// The sbt-aws control plane's names and bus (`[sbt]`).
    pub sbt: Arc<crate::tenants::sbt::SbtPlane>,
    /// Where tenant transitions and job outcomes are published (`[notifications]`).
    pub notifier: Arc<crate::tenants::notify::Notifier>,
}

impl Services {
    /// When a job lease taken now ends (ms since the epoch).
    pub fn lease_end(&self) -> i64 {
        crate::support::now_ms() + i64::try_from(self.job_lease.as_millis()).unwrap_or(i64::MAX / 2)
    }

    /// Applies `commit` and wakes the dispatcher for the events it raised;
    /// a change of the tenant's state is published to every sink too.
    pub async fn commit(&self, mut commit: Commit) -> Result<(), StoreError> {
        if let Some(write) = &commit.tenant {
            commit.events.extend(notify::transition(self, write));
        }
        let raised = !commit.events.is_empty();
        self.store.commit(commit, crate::support::now_ms()).await?;
        if raised {
            self.inbox.wake();
        }
        Ok(())
    }
}

/// The handler for each event type.
#[derive(Clone)]
pub struct HandlerSet {
    handlers: HashMap<EventType, Arc<dyn EventHandler>>,
}

impl Default for HandlerSet {
    /// The built-in tenant lifecycle.
    fn default() -> Self {
        use EventType as E;
        let mut set = Self {
            handlers: HashMap::new(),
        };
        set.set(E::TenantProvisioning, Arc::new(ProvisioningHandler));
        set.set(E::TenantDeprovisioning, Arc::new(DeprovisioningHandler));
        set.set(E::TenantDeployment, Arc::new(DeploymentHandler));
        for (event, kind, success) in [
            (E::TenantProvisioningSuccess, JobKind::Provisioning, true),
            (E::TenantProvisioningFailure, JobKind::Provisioning, false),
            (E::TenantDeploymentSuccess, JobKind::Deployment, true),
            (E::TenantDeploymentFailure, JobKind::Deployment, false),
            (
                E::TenantDeprovisioningSuccess,
                JobKind::Deprovisioning,
                true,
            ),
            (
                E::TenantDeprovisioningFailure,
                JobKind::Deprovisioning,
                false,
            ),
            (E::TenantUpdateSuccess, JobKind::Update, true),
            (E::TenantUpdateFailure, JobKind::Update, false),
            (E::TenantSuspendSuccess, JobKind::Suspend, true),
            (E::TenantSuspendFailure, JobKind::Suspend, false),
            (E::TenantResumeSuccess, JobKind::Resume, true),
            (E::TenantResumeFailure, JobKind::Resume, false),
            (E::TenantBackupSuccess, JobKind::Backup, true),
            (E::TenantBackupFailure, JobKind::Backup, false),
        ] {
            set.set(event, Arc::new(ResultHandler { kind, success }));
        }
        set.set(E::BuildStateChange, Arc::new(BuildStateHandler));
        set.set(E::TenantCallback, Arc::new(CallbackHandler));
        set.set(E::SbtOnboardingRequest, Arc::new(SbtOnboardingHandler));
        set.set(E::SbtOffboardingRequest, Arc::new(SbtOffboardingHandler));
        set.set(E::SbtReport, Arc::new(SbtReportHandler));
        set.set(
            E::SbtActivateRequest,
            Arc::new(SbtActivationHandler { activate: true }),
        );
        set.set(
            E::SbtDeactivateRequest,
            Arc::new(SbtActivationHandler { activate: false }),
        );
        set.set(E::TenantNotify, Arc::new(NotifyHandler));
        set.set(E::TenantUpdate, Arc::new(ChangeHandler::UPDATE));
        set.set(E::TenantSuspend, Arc::new(ChangeHandler::SUSPEND));
        set.set(E::TenantResume, Arc::new(ChangeHandler::RESUME));
        set
    }
}

impl HandlerSet {
    /// Replaces the handler of `event_type`.
    pub fn set(&mut self, event_type: EventType, handler: Arc<dyn EventHandler>) -> &mut Self {
        self.handlers.insert(event_type, handler);
        self
    }

    /// The handler of `event_type`.
    pub fn get(&self, event_type: EventType) -> Option<&Arc<dyn EventHandler>> {
        self.handlers.get(&event_type)
    }
}
