//! Functions: the [`FunctionBackend`] seam apps run on. [`local`] runs them
//! on this machine through the Lambda Runtime API; [`aws`] on AWS Lambda.

pub mod aws;
pub mod local;
pub mod logs;

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;

use crate::function_config::{AliasTarget, AppName, FunctionConfig};

/// What a deploy hands to the backend.
pub struct Deployment<'a> {
    pub app: &'a AppName,
    /// Counts up with each deploy of the app.
    pub version: i64,
    /// The zip as uploaded (for backends that take archives).
    pub zip: &'a [u8],
    /// The zip unpacked (for backends that run files).
    pub code_dir: &'a Path,
    pub config: &'a FunctionConfig,
}

/// Which of an app's functions an invocation runs (Lambda's qualifier).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target<'a> {
    /// One version.
    Version(i64),
    /// An alias, for a backend that routes aliases itself
    /// ([`FunctionBackend::routes_aliases`]).
    Alias(&'a str),
}

/// What an invocation returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invoked {
    pub payload: Vec<u8>,
    /// The version that ran, when the backend says.
    pub version: Option<i64>,
}

/// What made a backend call fail, shared: one failure (a worker that could
/// not start) answers every invocation waiting on it.
pub type Cause = Arc<dyn std::error::Error + Send + Sync>;

/// Why a backend call failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum FunctionError {
    #[error("function not found")]
    NotFound,
    #[error("{0}")]
    Conflict(String),
    /// The backend cannot serve now (throttled, unreachable, out of
    /// resources): retrying later helps.
    #[error("{message}")]
    Unavailable {
        message: String,
        #[source]
        cause: Option<Cause>,
    },
    /// The function raised an error, crashed or failed to initialise (API Gateway: 502).
    #[error("function failed: {0}")]
    Failed(String),
    /// The function ran past its timeout (API Gateway: 504).
    #[error("function timed out after {0} s")]
    Timeout(u32),
    /// Request or response over Lambda's 6 MB.
    #[error("{0}")]
    PayloadTooLarge(String),
    /// Too many invocations waiting, or one waited too long (API Gateway: 429).
    #[error("function throttled: {0}")]
    Throttled(String),
}

/// Equal when they say the same; an `Unavailable`'s cause is not compared.
impl PartialEq for FunctionError {
    fn eq(&self, other: &Self) -> bool {
        use FunctionError::*;
        match (self, other) {
            (NotFound, NotFound) => true,
            (Conflict(a), Conflict(b))
            | (Failed(a), Failed(b))
            | (PayloadTooLarge(a), PayloadTooLarge(b))
            | (Throttled(a), Throttled(b))
            | (Unavailable { message: a, .. }, Unavailable { message: b, .. }) => a == b,
            (Timeout(a), Timeout(b)) => a == b,
            _ => false,
        }
    }
}

impl Eq for FunctionError {}

impl FunctionError {
    /// `Unavailable` with no cause beyond `message`.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::Unavailable {
            message: message.into(),
            cause: None,
        }
    }

    /// `Unavailable` because of `cause`.
    pub fn unavailable_because(
        message: impl Into<String>,
        cause: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Self::Unavailable {
            message: message.into(),
            cause: Some(Arc::new(cause)),
        }
    }
}

/// What the backend knows of an app's function (AWS Lambda: its configuration).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FunctionInfo {
    pub arn: Option<String>,
    /// `Pending`, `Active`, `Inactive`, `Failed`.
    pub state: Option<String>,
    pub state_reason: Option<String>,
    /// `InProgress`, `Successful`, `Failed`.
    pub last_update_status: Option<String>,
    pub version: Option<String>,
    pub code_sha256: Option<String>,
}

impl FunctionInfo {
    /// Why the function cannot serve, if it cannot.
    pub fn problem(&self) -> Option<String> {
        let reason = self.state_reason.as_deref().unwrap_or("no reason given");
        match (self.state.as_deref(), self.last_update_status.as_deref()) {
            (Some("Failed"), _) => Some(format!("the function is in state Failed: {reason}")),
            (Some("Inactive"), _) => Some(format!("the function is Inactive: {reason}")),
            (_, Some("Failed")) => Some(format!("the function's last update failed: {reason}")),
            _ => None,
        }
    }
}

/// Runs app code.
///
/// The two backends differ in where a function lives. The local runtime's
/// functions are worker pools of this process: every process deploys what
/// it serves, nothing outside changes them, and they stop when the app
/// stops being served here. A Lambda function lives on the platform, shared
/// by every replica: it is deployed once, by the deploy, stays when an app
/// is deactivated, and can be deleted or broken behind our back. The
/// methods below with defaults say so; the defaults are what suits
/// functions that run in this process (the local runtime keeps them).
#[async_trait]
pub trait FunctionBackend: Send + Sync {
    /// Short name for logs (`local`, `aws`).
    fn name(&self) -> &'static str;
    /// Creates or updates the function; returns once it can be invoked.
    async fn deploy(&self, deployment: Deployment<'_>) -> Result<(), FunctionError>;
    /// Stops and forgets the function (Lambda: deletes it).
    async fn remove(&self, app: &AppName) -> Result<(), FunctionError>;
    /// Invokes synchronously (`RequestResponse`): the event in, the raw
    /// result out. Runs the version deployed last (Lambda: `$LATEST`).
    async fn invoke(&self, app: &AppName, event: Vec<u8>) -> Result<Vec<u8>, FunctionError>;
    /// Invokes `target`: a version, or an alias on a backend that routes
    /// aliases itself. The default runs [`FunctionBackend::invoke`].
    async fn invoke_target(
        &self,
        app: &AppName,
        target: Target<'_>,
        event: Vec<u8>,
    ) -> Result<Invoked, FunctionError> {
        let version = match target {
            Target::Version(version) => Some(version),
            Target::Alias(_) => None,
        };
        Ok(Invoked {
            payload: self.invoke(app, event).await?,
            version,
        })
    }
    /// Whether this backend can run `runtime`, or why not (the local
    /// runtime needs an interpreter of its version; Lambda runs them all).
    fn check_runtime(&self, _runtime: &str) -> Result<(), String> {
        Ok(())
    }
    /// The runtime a new app gets when its deploy names none (`None`: `nodejs20.x`).
    fn default_runtime(&self) -> Option<&'static str> {
        None
    }
    /// Every runtime and whether (and on what) this backend runs it.
    fn runtimes(&self) -> Vec<local::runtimes::RuntimeView> {
        crate::function_config::runtime_names()
            .map(|runtime| local::runtimes::RuntimeView {
                runtime,
                available: true,
                interpreter: None,
            })
            .collect()
    }
    /// Whether the backend fetches code from a [`crate::function_config::CodeLocation`]
    /// itself (Lambda: S3 objects and container images); otherwise the app
    /// service downloads S3 archives and refuses images.
    fn fetches_code(&self) -> bool {
        false
    }
    /// Whether the backend keeps aliases and draws their routing shares
    /// itself (Lambda), so invocations name the alias; otherwise the app
    /// service draws and names a version.
    fn routes_aliases(&self) -> bool {
        false
    }
    /// Points the function's alias `alias` at `target` (Lambda:
    /// `CreateAlias`/`UpdateAlias`). The default keeps none.
    async fn set_alias(
        &self,
        _app: &AppName,
        _alias: &str,
        _target: &AliasTarget,
    ) -> Result<(), FunctionError> {
        Ok(())
    }
    /// Deletes the function's alias `alias`; one that does not exist is fine.
    async fn remove_alias(&self, _app: &AppName, _alias: &str) -> Result<(), FunctionError> {
        Ok(())
    }
    /// The function the platform holds for the app, outside this process;
    /// `None` when it holds none. A function reported here was deployed by
    /// the deploy that made its version, for every replica: restoring at
    /// start, activating and following the store do not deploy it again.
    ///
    /// Local (the default): always `None`, so every process deploys what it
    /// serves. Lambda: the function's configuration, `None` when it does
    /// not exist.
    async fn describe(&self, _app: &AppName) -> Result<Option<FunctionInfo>, FunctionError> {
        Ok(None)
    }
    /// Why the app's function cannot serve because of a change made outside
    /// the service, `None` when it can; reconciliation marks an active app
    /// with a problem `ERROR`.
    ///
    /// Local (the default): never a problem, and no work (nothing outside
    /// changes a pool). Lambda: the function was deleted, is `Failed` or
    /// `Inactive`, or its last update failed ([`FunctionInfo::problem`]).
    async fn problem(&self, _app: &AppName) -> Result<Option<String>, FunctionError> {
        Ok(None)
    }
    /// Stops what runs on this machine for an app no longer served here
    /// (deactivated, here or by another replica); an app with nothing
    /// running is fine.
    ///
    /// Local (the default): stops its workers and forgets the function, as
    /// [`FunctionBackend::remove`]. Lambda: nothing; the function stays on
    /// the platform, ready for the app's activation.
    async fn release(&self, app: &AppName) -> Result<(), FunctionError> {
        match self.remove(app).await {
            Ok(()) | Err(FunctionError::NotFound) => Ok(()),
            Err(err) => Err(err),
        }
    }
}
