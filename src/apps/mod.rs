//! Mini-apps: validated deploy requests and archives. The app service, the
//! function backends and the HTTP routes build on these.

pub mod archive;
pub mod spec;

pub use archive::{Archive, ArchiveError};
pub use spec::{validate, AppName, DeployRequest, FunctionConfig, RuntimeKind};
