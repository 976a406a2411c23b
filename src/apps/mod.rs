//! Mini-apps: validated deploy requests and archives, and the service that
//! deploys, activates, deactivates and removes them.

pub mod archive;
pub mod s3;
pub mod service;
pub mod spec;

pub use crate::function_config::{AppName, FunctionConfig, RuntimeKind};
pub use archive::{Archive, ArchiveError};
pub use service::{AppError, AppService, AppStatusView, AppView, Route, Selector};
pub use spec::{validate, DeployRequest, InvalidField};
