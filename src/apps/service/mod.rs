//! The app service: deploy, activate, deactivate, remove; keeps the store,
//! the code on disk and the function backend in step. This file holds
//! [`AppService`]'s state, its errors and the helpers every concern shares
//! (the per-app lock, handing a version to the backend); each concern adds
//! its own `impl AppService` block in a file of its own.

mod abandoned;
mod aliases;
mod async_invocations;
mod domains;
mod follow;
mod lifecycle;
mod misses;
mod operations;
mod reads;
mod reconcile;
mod restore;
mod routing;
mod views;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

pub use self::aliases::{AliasRequest, RollbackRequest};
pub use self::lifecycle::Upload;
use self::misses::Misses;
pub use self::operations::OperationView;
use self::routing::Serving;
pub use self::routing::{Route, Selector};
pub use self::views::{AliasView, AppStatusView, AppVersionView, AppView, DomainView};
use super::archive::{Archive, ArchiveError, COMPLETE_MARKER};
use super::s3::S3Archives;
use crate::function_config::{AppName, FunctionConfig};
use crate::functions::{Deployment, FunctionBackend, FunctionError};
use crate::proxy::PayloadFormat;
use crate::store::{AppRecord, Store, StoreError};

/// Why an app operation failed; mapped to HTTP in `http::error`.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    TooLarge(String),
    #[error("no app named '{0}'")]
    NotFound(String),
    /// Something of an existing app that does not exist (a version, an alias, a domain).
    #[error("{0}")]
    Missing(String),
    #[error("{0}")]
    Conflict(String),
    /// The app's code could not be written to this machine's disk.
    #[error("{0}")]
    Io(String),
    #[error("function backend: {0}")]
    Backend(#[from] FunctionError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<ArchiveError> for AppError {
    fn from(err: ArchiveError) -> Self {
        match err {
            ArchiveError::TooLarge | ArchiveError::TooLargeUnzipped => {
                AppError::TooLarge(err.to_string())
            }
            ArchiveError::Io(_) => AppError::Io(err.to_string()),
            other => AppError::Invalid(other.to_string()),
        }
    }
}

/// Releases the per-app deploy lock.
struct DeployGuard<'a> {
    set: &'a Mutex<HashSet<String>>,
    released: &'a tokio::sync::Notify,
    name: String,
}

impl Drop for DeployGuard<'_> {
    fn drop(&mut self) {
        if let Ok(mut set) = self.set.lock() {
            set.remove(&self.name);
        }
        self.released.notify_waiters();
    }
}

/// Runs the apps.
pub struct AppService {
    store: Arc<dyn Store>,
    backend: Arc<dyn FunctionBackend>,
    code_root: PathBuf,
    base_domain: String,
    /// Where the local backend downloads archives named by an S3 location.
    s3: S3Archives,
    deploying: Mutex<HashSet<String>>,
    /// Signalled whenever an app's lock is released.
    released: tokio::sync::Notify,
    /// Active apps, their aliases and the versions this process runs: what
    /// the proxy serves.
    active: RwLock<HashMap<String, Serving>>,
    /// Custom domains and their apps, as the store had them at the last sync
    /// (and as changed through this process since).
    domains: RwLock<HashMap<String, AppName>>,
    /// Names the proxy asked for that the store had no active app for.
    misses: Mutex<Misses>,
    /// One store lookup for a name the proxy does not serve at a time.
    lookup: tokio::sync::Mutex<()>,
    /// Store lookups made for names the proxy did not serve.
    miss_lookups: AtomicU64,
    /// A deploy renews its heartbeat every third of this; one silent for
    /// longer was interrupted and is settled by whoever takes it.
    deploy_lease: Duration,
    /// One process owns the store (SQLite): every deploy it finds
    /// unsettled at start was interrupted.
    sole_owner: bool,
}

impl AppService {
    /// Every runtime, and whether (and on what) the functions backend runs it.
    pub fn runtimes(&self) -> RuntimesView {
        RuntimesView {
            backend: self.backend.name(),
            runtimes: self.backend.runtimes(),
        }
    }

    pub fn new(
        store: Arc<dyn Store>,
        backend: Arc<dyn FunctionBackend>,
        code_root: PathBuf,
        base_domain: String,
    ) -> Self {
        Self {
            store,
            backend,
            code_root,
            base_domain,
            s3: S3Archives::default(),
            deploying: Mutex::default(),
            released: tokio::sync::Notify::new(),
            active: RwLock::default(),
            domains: RwLock::default(),
            misses: Mutex::default(),
            lookup: tokio::sync::Mutex::new(()),
            miss_lookups: AtomicU64::new(0),
            deploy_lease: Duration::from_secs(30),
            sole_owner: false,
        }
    }

    /// How long a deploy may go without renewing its heartbeat before it
    /// counts as interrupted, and whether this process alone uses the store
    /// (then every deploy found unsettled at start was interrupted).
    pub fn with_deploy_lease(mut self, lease: Duration, sole_owner: bool) -> Self {
        self.deploy_lease = lease;
        self.sole_owner = sole_owner;
        self
    }

    fn lock(&self, name: &AppName) -> Result<DeployGuard<'_>, AppError> {
        let mut set = self
            .deploying
            .lock()
            .map_err(|_| AppError::Conflict("deploy table poisoned".into()))?;
        if !set.insert(name.to_string()) {
            return Err(AppError::Conflict(format!(
                "a deploy or state change of '{name}' is in progress; try again"
            )));
        }
        Ok(DeployGuard {
            set: &self.deploying,
            released: &self.released,
            name: name.to_string(),
        })
    }

    /// The app's lock, waiting up to `wait` for a change under way to end.
    async fn lock_waiting(&self, app: &AppName, wait: Duration) -> Option<DeployGuard<'_>> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let released = self.released.notified();
            let mut released = std::pin::pin!(released);
            released.as_mut().enable();
            if let Ok(guard) = self.lock(app) {
                return Some(guard);
            }
            tokio::time::timeout_at(deadline, released).await.ok()?;
        }
    }

    fn code_dir(&self, name: &AppName, version: i64) -> PathBuf {
        self.code_root
            .join(name.as_str())
            .join(format!("v{version}"))
    }

    /// Unpacks a stored version if this machine does not have it yet, then hands it to the backend.
    async fn run_version(
        &self,
        name: &AppName,
        version: i64,
        config: &FunctionConfig,
        zip: Option<Vec<u8>>,
    ) -> Result<(), AppError> {
        // A function the platform holds (AWS Lambda), shared by every replica,
        // is deployed once, by the deploy; restoring, activating or following
        // the store only recreates it when it is gone. The local runtime
        // reports none: each process deploys what it serves.
        if zip.is_none() && self.backend.describe(name).await?.is_some() {
            return Ok(());
        }
        let dir = self.code_dir(name, version);
        let code_dir = dir.clone();
        if config.code.is_some() {
            // The platform fetches this code itself.
            self.backend
                .deploy(Deployment {
                    app: name,
                    version,
                    zip: &[],
                    code_dir: &code_dir,
                    config,
                })
                .await?;
            return Ok(());
        }
        let zip = match zip {
            Some(zip) => zip,
            None => self.store.app_code(name, version).await?,
        };
        if !dir.join(COMPLETE_MARKER).exists() {
            let root = self.code_root.clone();
            let bytes = zip.clone();
            blocking(move || Archive::check(bytes)?.unpack_temp(&root)?.install(&dir)).await?;
        }
        self.backend
            .deploy(Deployment {
                app: name,
                version,
                zip: &zip,
                code_dir: &code_dir,
                config,
            })
            .await?;
        Ok(())
    }

    /// Runs every version the record's aliases may send a request to that
    /// does not run here yet (nor is in `ran`), adding each to `ran`. Only
    /// the `live` version failing fails it (another alias's version that
    /// cannot run is logged, and its requests fail).
    async fn ensure_running(
        &self,
        app: &AppName,
        record: &AppRecord,
        ran: &mut Vec<(i64, PayloadFormat)>,
    ) -> Result<(), AppError> {
        for version in record.aliases.versions() {
            if self.runs_here(app.as_str(), version) || ran.iter().any(|(v, _)| *v == version) {
                continue;
            }
            let config = if version == record.current_version {
                record.config.clone()
            } else {
                match self.store.app_version(app, version).await? {
                    Some(stored) => stored.config,
                    None => {
                        tracing::warn!(app = %app, version, "an alias names a version the store does not have");
                        continue;
                    }
                }
            };
            match self.run_version(app, version, &config, None).await {
                Ok(()) => ran.push((version, config.payload_format)),
                Err(err) if version == record.current_version => return Err(err),
                Err(err) => {
                    tracing::warn!(app = %app, version, error = %err, "could not run a version an alias names");
                }
            }
        }
        Ok(())
    }

    /// Deletes the app's function; one already gone is fine.
    async fn stop(&self, app: &AppName) -> Result<(), AppError> {
        match self.backend.remove(app).await {
            Ok(()) | Err(FunctionError::NotFound) => Ok(()),
            Err(err) => Err(err.into()),
        }
    }

    async fn record(&self, name: &str) -> Result<(AppName, AppRecord), AppError> {
        let app = AppName::parse(name).map_err(|_| AppError::NotFound(name.to_owned()))?;
        let record = self
            .store
            .get_app(&app)
            .await?
            .ok_or_else(|| AppError::NotFound(name.to_owned()))?;
        Ok((app, record))
    }
}

/// Runs archive work (unpacking, moving, removing trees) off the async threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ArchiveError> + Send + 'static,
) -> Result<T, AppError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| AppError::Io(format!("unpacking stopped: {e}")))?
        .map_err(AppError::from)
}

/// The runtimes a deploy may name here.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct RuntimesView {
    /// The functions backend: `local` or `aws`.
    pub backend: &'static str,
    pub runtimes: Vec<crate::functions::local::runtimes::RuntimeView>,
}
