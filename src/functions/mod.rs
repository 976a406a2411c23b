//! Functions: the [`FunctionBackend`] seam apps run on. [`local`] runs them
//! on this machine through the Lambda Runtime API; AWS Lambda comes next.

pub mod local;

use std::path::Path;

use async_trait::async_trait;

use crate::apps::{AppName, FunctionConfig};

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

/// Why a backend call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FunctionError {
    #[error("function not found")]
    NotFound,
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Unavailable(String),
    /// The function raised an error, crashed or failed to initialise (API Gateway: 502).
    #[error("function failed: {0}")]
    Failed(String),
    /// The function ran past its timeout (API Gateway: 504).
    #[error("function timed out after {0} s")]
    Timeout(u32),
    /// Request or response over Lambda's 6 MB.
    #[error("{0}")]
    PayloadTooLarge(String),
}

/// Runs app code.
#[async_trait]
pub trait FunctionBackend: Send + Sync {
    /// Short name for logs (`local`, `aws`).
    fn name(&self) -> &'static str;
    /// Creates or updates the function; returns once it can be invoked.
    async fn deploy(&self, deployment: Deployment<'_>) -> Result<(), FunctionError>;
    /// Stops and forgets the function.
    async fn remove(&self, app: &AppName) -> Result<(), FunctionError>;
    /// Invokes synchronously (`RequestResponse`): the event in, the raw result out.
    async fn invoke(&self, app: &AppName, event: Vec<u8>) -> Result<Vec<u8>, FunctionError>;
}
