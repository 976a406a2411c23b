//! The app service: deploy, activate, deactivate, remove; keeps the store,
//! the code on disk and the function backend in step.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use base64::Engine;
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;
use utoipa::ToSchema;

use super::archive::{sweep_unpacking, Unpacked, COMPLETE_MARKER};
use super::{validate, AppName, Archive, ArchiveError, DeployRequest, FunctionConfig};
use crate::functions::{Deployment, FunctionBackend, FunctionError, FunctionInfo};
use crate::proxy::PayloadFormat;
use crate::store::{AppRecord, AppStatus, Store, StoreError};
use crate::support::timestamp;

/// Why an app operation failed; mapped to HTTP in `http::error`.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    TooLarge(String),
    #[error("no app named '{0}'")]
    NotFound(String),
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

/// `{name, status}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct AppStatusView {
    pub name: String,
    pub status: AppStatus,
}

/// One version of an app's code.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AppVersionView {
    pub version: i64,
    pub runtime: String,
    pub handler: String,
    pub code_size: i64,
    pub code_sha256: String,
    pub created_at: String,
}

/// An app.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AppView {
    pub name: String,
    pub status: AppStatus,
    /// Where the proxy serves it (any port of this service).
    pub host: String,
    pub version: i64,
    pub runtime: String,
    pub handler: String,
    pub memory_size: u32,
    pub timeout: u32,
    pub payload_format: PayloadFormat,
    pub environment: std::collections::BTreeMap<String, String>,
    pub last_error: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    /// Every deployed version, newest first (`GET /apps/{name}` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub versions: Option<Vec<AppVersionView>>,
    /// The function as AWS Lambda reports it (`GET /apps/{name}` with the `aws` backend).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub function: Option<FunctionInfo>,
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

/// How long the proxy remembers that the store had no active app by a name
/// (an unknown host, or an app not `ACTIVE`) before it looks again.
const MISS_TTL: Duration = Duration::from_secs(3);
/// Most names remembered as misses; beyond, expired ones go, then all.
const MAX_MISSES: usize = 4096;
/// Most store lookups for names the proxy does not serve, per second, however
/// many distinct unknown hosts are asked for; beyond, they answer 404 at once.
const MISS_LOOKUPS_PER_SEC: u32 = 20;

/// How long a first request waits for a change of its app under way here.
const LOCK_WAIT: Duration = Duration::from_secs(5);

/// Names the store recently had no active app for, and the lookup budget.
struct Misses {
    names: HashMap<String, Instant>,
    window: Instant,
    lookups_in_window: u32,
}

impl Default for Misses {
    fn default() -> Self {
        Self {
            names: HashMap::new(),
            window: Instant::now(),
            lookups_in_window: 0,
        }
    }
}

impl Misses {
    /// Whether the store had no active app by `name` a moment ago.
    fn recent(&self, name: &str) -> bool {
        self.names
            .get(name)
            .is_some_and(|at| at.elapsed() < MISS_TTL)
    }

    /// Whether the lookup budget allows one more lookup now (and takes it).
    fn take_lookup(&mut self) -> bool {
        if self.window.elapsed() >= Duration::from_secs(1) {
            self.window = Instant::now();
            self.lookups_in_window = 0;
        }
        if self.lookups_in_window >= MISS_LOOKUPS_PER_SEC {
            return false;
        }
        self.lookups_in_window += 1;
        true
    }

    fn remember(&mut self, name: &str) {
        if self.names.len() >= MAX_MISSES {
            self.names.retain(|_, at| at.elapsed() < MISS_TTL);
            if self.names.len() >= MAX_MISSES {
                self.names.clear();
            }
        }
        self.names.insert(name.to_owned(), Instant::now());
    }
}

/// Runs the apps.
pub struct AppService {
    store: Arc<dyn Store>,
    backend: Arc<dyn FunctionBackend>,
    code_root: PathBuf,
    base_domain: String,
    deploying: Mutex<HashSet<String>>,
    /// Signalled whenever an app's lock is released.
    released: tokio::sync::Notify,
    /// Active apps, their payload format and the version this process runs:
    /// what the proxy serves.
    active: RwLock<HashMap<String, (PayloadFormat, i64)>>,
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

fn config_of(record: &AppRecord) -> Result<FunctionConfig, AppError> {
    serde_json::from_str(&record.config).map_err(|e| AppError::Store(StoreError::Other(e.into())))
}

impl AppService {
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
            deploying: Mutex::default(),
            released: tokio::sync::Notify::new(),
            active: RwLock::default(),
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

    /// How many times the proxy looked in the store for an app it did not
    /// serve (bounded by a short negative cache and a rate limit).
    pub fn miss_lookups(&self) -> u64 {
        self.miss_lookups.load(Ordering::Relaxed)
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

    fn set_active(&self, name: &str, running: Option<(PayloadFormat, i64)>) {
        if let Ok(mut active) = self.active.write() {
            match running {
                Some(running) => active.insert(name.to_owned(), running),
                None => active.remove(name),
            };
        }
    }

    fn running_version(&self, name: &str) -> Option<i64> {
        self.active.read().ok()?.get(name).map(|(_, v)| *v)
    }

    /// The payload format of an app this process serves.
    fn served_format(&self, name: &str) -> Option<PayloadFormat> {
        self.active.read().ok()?.get(name).map(|(f, _)| *f)
    }

    /// The payload format of an active app, or `None` (the proxy answers 404).
    ///
    /// An app this process does not serve yet (deployed through another
    /// replica since the last sync) is looked up in the store and, if it is
    /// `ACTIVE`, served from this request on. Names the store has no active
    /// app for are remembered for [`MISS_TTL`], and lookups are rate-limited,
    /// so unknown hosts cannot hammer the store.
    pub async fn route(&self, name: &str) -> Option<PayloadFormat> {
        if let Some(format) = self.served_format(name) {
            return Some(format);
        }
        let app = AppName::parse(name).ok()?;
        if self.recent_miss(name) {
            return None;
        }
        // Concurrent first requests wait for one lookup, then find the app
        // served (or remembered as a miss).
        let _one_at_a_time = self.lookup.lock().await;
        if let Some(format) = self.served_format(name) {
            return Some(format);
        }
        let allowed = self
            .misses
            .lock()
            .map(|mut misses| !misses.recent(name) && misses.take_lookup())
            .unwrap_or(false);
        if !allowed {
            return None;
        }
        self.miss_lookups.fetch_add(1, Ordering::Relaxed);
        let record = match self.store.get_app(name).await {
            Ok(Some(record)) if record.status == AppStatus::Active => record,
            Ok(_) => {
                if let Ok(mut misses) = self.misses.lock() {
                    misses.remember(name);
                }
                return None;
            }
            Err(err) => {
                tracing::warn!(app = name, error = %err, "could not look up an app in the store");
                return None;
            }
        };
        // A change of this app through this process (the store sync
        // following it, an activation) is under way: its outcome stands.
        let Some(_guard) = self.lock_waiting(&app, LOCK_WAIT).await else {
            return self.served_format(name);
        };
        if let Some(format) = self.served_format(name) {
            return Some(format);
        }
        if let Err(err) = self.follow_record(&app, &record, false).await {
            tracing::warn!(app = %app, version = record.current_version, error = %err, "could not serve an app found in the store");
            return None;
        }
        tracing::info!(app = %app, version = record.current_version, "app found in the store on its first request: serving it");
        self.served_format(name)
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

    fn recent_miss(&self, name: &str) -> bool {
        self.misses
            .lock()
            .map(|misses| misses.recent(name))
            .unwrap_or(true)
    }

    /// Invokes an active app.
    pub async fn invoke(&self, name: &AppName, event: Vec<u8>) -> Result<Vec<u8>, FunctionError> {
        self.backend.invoke(name, event).await
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
        // A platform function (AWS Lambda) shared by every replica is deployed
        // once, by the deploy; restoring, activating or following the store
        // only recreates it when it is gone.
        if zip.is_none()
            && self.backend.reconciles()
            && self.backend.describe(name).await?.is_some()
        {
            return Ok(());
        }
        let dir = self.code_dir(name, version);
        let code_dir = dir.clone();
        let zip = match zip {
            Some(zip) => zip,
            None => self.store.app_code(name.as_str(), version).await?,
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

    /// Validates and unpacks the archive, then stores it as a new version
    /// and runs it. An archive refused at any step (including while it
    /// unpacks) leaves nothing behind: no version, no files, the app as it was.
    pub async fn deploy(&self, request: DeployRequest) -> Result<AppView, AppError> {
        let (name, config) = validate(&request).map_err(AppError::Invalid)?;
        let zip = base64::engine::general_purpose::STANDARD
            .decode(request.archive.trim())
            .map_err(|_| AppError::Invalid("archive must be a base64-encoded zip file".into()))?;
        let archive = Archive::check(zip)?;
        let expected = config.handler_files();
        if !expected.iter().any(|f| archive.contains(f)) {
            return Err(ArchiveError::MissingHandler(expected.join(", ")).into());
        }
        let _guard = self.lock(&name)?;
        let config_json = serde_json::to_string(&config)
            .map_err(|e| AppError::Store(StoreError::Other(e.into())))?;
        let sha = hex::encode(Sha256::digest(archive.bytes()));
        // Unpacked and checked before anything is stored.
        let root = self.code_root.clone();
        let (archive, unpacked) = blocking(move || {
            let unpacked = archive.unpack_temp(&root)?;
            Ok((archive, unpacked))
        })
        .await?;
        let zip = archive.bytes().to_vec();
        drop(archive);
        let stored = self
            .store
            .add_app_version(
                name.as_str(),
                &config_json,
                &zip,
                &sha,
                crate::support::now_ms(),
            )
            .await;
        let version = match stored {
            Ok(version) => version,
            Err(err) => {
                discard(unpacked).await;
                return Err(err.into());
            }
        };
        let target = self.code_dir(&name, version);
        if let Err(err) = blocking(move || unpacked.install(&target)).await {
            // `run_version` unpacks it again from the zip.
            tracing::warn!(app = %name, version, error = %err, "could not move the unpacked code into place");
        }
        let ran = self
            .beating(
                &name,
                version,
                self.run_version(&name, version, &config, Some(zip)),
            )
            .await;
        if let Err(err) = ran {
            // A conflict or throttling left the running function as it was:
            // an app being served stays served, with the failure noted.
            let transient = matches!(
                err,
                AppError::Backend(FunctionError::Conflict(_) | FunctionError::Unavailable(_))
            );
            let serving = self.served_format(name.as_str()).is_some();
            let status = if transient && serving {
                AppStatus::Active
            } else {
                self.set_active(name.as_str(), None);
                AppStatus::Error
            };
            let note = format!("deploying version {version} failed: {err}");
            // Unless another replica changed the app meanwhile: its change stands.
            let settled = self
                .store
                .settle_app_deploy(
                    name.as_str(),
                    version,
                    status,
                    Some(&note),
                    crate::support::now_ms(),
                )
                .await?;
            if !settled {
                // The failure is still what the caller learns.
                let _ = self.superseded(&name, version).await;
            }
            return Err(err);
        }
        // A new app (or one not served) is `DEPLOYED` until now.
        let settled = self
            .store
            .settle_app_deploy(
                name.as_str(),
                version,
                AppStatus::Active,
                None,
                crate::support::now_ms(),
            )
            .await?;
        if !settled {
            return Err(self.superseded(&name, version).await);
        }
        self.set_active(name.as_str(), Some((config.payload_format, version)));
        tracing::info!(app = %name, version, runtime = %config.runtime, "app deployed");
        self.view(&name, false).await
    }

    /// Another replica deactivated, removed or redeployed the app while
    /// `version` was deploying here: what it did stands, and this process
    /// follows it now (the caller holds the app's lock). Gives the `409`.
    async fn superseded(&self, name: &AppName, version: i64) -> AppError {
        let record = match self.store.get_app(name.as_str()).await {
            Ok(Some(record)) => record,
            Ok(None) => return AppError::NotFound(name.to_string()),
            Err(err) => return err.into(),
        };
        tracing::warn!(app = %name, version, status = %record.status, current = record.current_version, "app changed elsewhere while it deployed");
        if let Err(err) = self.follow_record(name, &record, true).await {
            tracing::warn!(app = %name, error = %err, "could not follow the change made elsewhere");
        }
        AppError::Conflict(format!(
            "app '{name}' changed while version {version} was deploying: it is now {} at version {}",
            record.status, record.current_version
        ))
    }

    /// Serves what the store says of the app (the caller holds its lock):
    /// its `ACTIVE` version, or nothing. `overtaken`: this process has just
    /// deployed a version the store no longer wants, so a platform function
    /// gets the wanted code again, and is deleted if the app was removed.
    async fn follow_record(
        &self,
        app: &AppName,
        record: &AppRecord,
        overtaken: bool,
    ) -> Result<(), AppError> {
        if let Some(version) = self.wanted_version(record) {
            let config = config_of(record)?;
            let zip = if overtaken {
                Some(self.store.app_code(app.as_str(), version).await?)
            } else {
                None
            };
            self.run_version(app, version, &config, zip).await?;
            self.set_active(app.as_str(), Some((config.payload_format, version)));
            return Ok(());
        }
        self.set_active(app.as_str(), None);
        let removed = record.status == AppStatus::Removed;
        // Workers here stop; a platform function is the business of whoever
        // deactivated or removed the app, unless this process recreated it.
        if !self.backend.reconciles() || (overtaken && removed) {
            self.stop(app).await?;
        }
        if removed {
            let _ = tokio::fs::remove_dir_all(self.code_root.join(app.as_str())).await;
        }
        Ok(())
    }

    async fn record(&self, name: &str) -> Result<(AppName, AppRecord), AppError> {
        let app = AppName::parse(name).map_err(|_| AppError::NotFound(name.to_owned()))?;
        let record = self
            .store
            .get_app(name)
            .await?
            .ok_or_else(|| AppError::NotFound(name.to_owned()))?;
        Ok((app, record))
    }

    /// An app, with its versions when `details`.
    pub async fn view(&self, name: &AppName, details: bool) -> Result<AppView, AppError> {
        let (_, record) = self.record(name.as_str()).await?;
        let versions = if details {
            Some(self.versions(name).await?)
        } else {
            None
        };
        self.to_view(record, versions)
    }

    async fn versions(&self, name: &AppName) -> Result<Vec<AppVersionView>, AppError> {
        let mut views = Vec::new();
        for v in self.store.app_versions(name.as_str()).await? {
            let config: FunctionConfig = serde_json::from_str(&v.config)
                .map_err(|e| AppError::Store(StoreError::Other(e.into())))?;
            views.push(AppVersionView {
                version: v.version,
                runtime: config.runtime,
                handler: config.handler,
                code_size: v.code_size,
                code_sha256: v.code_sha256,
                created_at: timestamp(v.created_at_ms),
            });
        }
        Ok(views)
    }

    fn to_view(
        &self,
        record: AppRecord,
        versions: Option<Vec<AppVersionView>>,
    ) -> Result<AppView, AppError> {
        let config = config_of(&record)?;
        Ok(AppView {
            host: format!("{}.{}", record.name, self.base_domain),
            name: record.name,
            status: record.status,
            version: record.current_version,
            runtime: config.runtime,
            handler: config.handler,
            memory_size: config.memory_size,
            timeout: config.timeout,
            payload_format: config.payload_format,
            environment: config.environment,
            last_error: record.last_error,
            created_at: timestamp(record.created_at_ms),
            updated_at: timestamp(record.updated_at_ms),
            versions,
            function: None,
        })
    }

    pub async fn get(&self, name: &str) -> Result<AppView, AppError> {
        let (app, record) = self.record(name).await?;
        let versions = self.versions(&app).await?;
        let mut view = self.to_view(record, Some(versions))?;
        if self.backend.reconciles() {
            view.function = match self.backend.describe(&app).await {
                Ok(info) => info,
                Err(err) => {
                    tracing::warn!(app = %app, error = %err, "could not describe the function");
                    None
                }
            };
        }
        Ok(view)
    }

    /// Checks the app's function against the platform now (`POST /apps/{name}/sync`).
    pub async fn sync(&self, name: &str) -> Result<AppView, AppError> {
        let (app, record) = self.record(name).await?;
        self.reconcile(&app, &record).await?;
        self.get(name).await
    }

    /// An active app whose function was deleted or failed outside the service
    /// becomes `ERROR`, with the reason; the proxy stops serving it.
    async fn reconcile(&self, app: &AppName, record: &AppRecord) -> Result<(), AppError> {
        if !self.backend.reconciles() || record.status != AppStatus::Active {
            return Ok(());
        }
        let problem = match self.backend.describe(app).await? {
            None => Some("the function was deleted outside the service".to_owned()),
            Some(info) => info.problem(),
        };
        if let Some(problem) = problem {
            tracing::warn!(app = %app, problem = %problem, "app marked ERROR by reconciliation");
            self.set_active(app.as_str(), None);
            self.store
                .set_app_status(
                    app.as_str(),
                    AppStatus::Error,
                    Some(&problem),
                    crate::support::now_ms(),
                )
                .await?;
        }
        Ok(())
    }

    /// Reconciles every active app every `every` until `shutdown` (backends that reconcile only).
    pub async fn reconcile_periodically(
        self: Arc<Self>,
        every: Duration,
        shutdown: CancellationToken,
    ) {
        if !self.backend.reconciles() {
            return;
        }
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
            let apps = match self.store.list_apps().await {
                Ok(apps) => apps,
                Err(err) => {
                    tracing::warn!(error = %err, "reconciliation could not list apps");
                    continue;
                }
            };
            for record in apps.iter().filter(|r| r.status == AppStatus::Active) {
                let Ok(app) = AppName::parse(&record.name) else {
                    continue;
                };
                if let Err(err) = self.reconcile(&app, record).await {
                    tracing::warn!(app = %app, error = %err, "could not reconcile the app");
                }
            }
        }
    }

    pub async fn list(&self) -> Result<Vec<AppView>, AppError> {
        self.store
            .list_apps()
            .await?
            .into_iter()
            .map(|r| self.to_view(r, None))
            .collect()
    }

    pub async fn status(&self, name: &str) -> Result<AppStatusView, AppError> {
        let (_, record) = self.record(name).await?;
        Ok(AppStatusView {
            name: record.name,
            status: record.status,
        })
    }

    async fn set_status(
        &self,
        app: &AppName,
        status: AppStatus,
    ) -> Result<AppStatusView, AppError> {
        self.store
            .set_app_status(app.as_str(), status, None, crate::support::now_ms())
            .await?;
        Ok(AppStatusView {
            name: app.to_string(),
            status,
        })
    }

    /// Serves the current version again.
    pub async fn activate(&self, name: &str) -> Result<AppStatusView, AppError> {
        let (app, record) = self.record(name).await?;
        if record.status == AppStatus::Removed {
            return Err(AppError::Conflict(format!(
                "app '{name}' was removed; deploy it again"
            )));
        }
        let _guard = self.lock(&app)?;
        let config = config_of(&record)?;
        self.run_version(&app, record.current_version, &config, None)
            .await?;
        self.set_active(name, Some((config.payload_format, record.current_version)));
        self.set_status(&app, AppStatus::Active).await
    }

    /// Stops serving (the proxy answers 404) and stops the app's workers.
    pub async fn deactivate(&self, name: &str) -> Result<AppStatusView, AppError> {
        let (app, record) = self.record(name).await?;
        if record.status == AppStatus::Removed {
            return Err(AppError::Conflict(format!("app '{name}' was removed")));
        }
        let _guard = self.lock(&app)?;
        self.set_active(name, None);
        // Local workers stop; a platform function stays (as the seed leaves its Lambda).
        if !self.backend.reconciles() {
            self.stop(&app).await?;
        }
        self.set_status(&app, AppStatus::Inactive).await
    }

    /// Stops serving and deletes the function; the record and versions stay.
    pub async fn remove(&self, name: &str) -> Result<AppStatusView, AppError> {
        let (app, _) = self.record(name).await?;
        let _guard = self.lock(&app)?;
        self.set_active(name, None);
        self.stop(&app).await?;
        let _ = tokio::fs::remove_dir_all(self.code_root.join(app.as_str())).await;
        self.set_status(&app, AppStatus::Removed).await
    }

    async fn stop(&self, app: &AppName) -> Result<(), AppError> {
        match self.backend.remove(app).await {
            Ok(()) | Err(FunctionError::NotFound) => Ok(()),
            Err(err) => Err(err.into()),
        }
    }

    /// At start: runs every app left `ACTIVE` (its code comes from the store).
    /// One left `DEPLOYED` is settled by [`AppService::follow_store`] once its
    /// deploy counts as interrupted (see [`AppService::settle_interrupted`]).
    pub async fn restore(&self) -> Result<usize, AppError> {
        let root = self.code_root.clone();
        let swept = blocking(move || {
            std::fs::create_dir_all(&root).map_err(|e| ArchiveError::Io(e.to_string()))?;
            Ok(sweep_unpacking(&root))
        })
        .await?;
        if swept > 0 {
            tracing::info!(swept, "removed code a stopped process was unpacking");
        }
        let mut restored = 0;
        for record in self.store.list_apps().await? {
            if record.status == AppStatus::Deployed {
                tracing::info!(app = %record.name, version = record.current_version, "app left DEPLOYED: settled once its deploy counts as interrupted");
            }
            if record.status != AppStatus::Active {
                continue;
            }
            let Ok(app) = AppName::parse(&record.name) else {
                continue;
            };
            let config = config_of(&record)?;
            match self
                .run_version(&app, record.current_version, &config, None)
                .await
            {
                Ok(()) => {
                    self.set_active(
                        app.as_str(),
                        Some((config.payload_format, record.current_version)),
                    );
                    restored += 1;
                }
                Err(err) => {
                    tracing::warn!(app = %app, error = %err, "could not restore app");
                    self.store
                        .set_app_status(
                            app.as_str(),
                            AppStatus::Error,
                            Some(&err.to_string()),
                            crate::support::now_ms(),
                        )
                        .await?;
                }
            }
        }
        Ok(restored)
    }

    /// Keeps this process in step with apps changed by other replicas sharing
    /// the store, checking every `every` until `shutdown`.
    /// Also settles deploys that were interrupted (see
    /// [`AppService::settle_interrupted`]), the first time at once.
    pub async fn follow_store(self: Arc<Self>, every: Duration, shutdown: CancellationToken) {
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut first = true;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = ticks.tick() => {}
            }
            let deploying = match self.sync_listed().await {
                Ok((_, deploying)) => deploying,
                Err(err) => {
                    tracing::warn!(error = %err, "could not check the store for app changes");
                    continue;
                }
            };
            if !deploying {
                first = false;
                continue;
            }
            // The sole user of the store finds every unsettled deploy at
            // start interrupted; replicas only those whose heartbeat stopped.
            let expired_before = if first && self.sole_owner {
                i64::MAX
            } else {
                crate::support::now_ms().saturating_sub(millis(self.deploy_lease))
            };
            first = false;
            match self
                .store
                .take_abandoned_deploys(expired_before, crate::support::now_ms())
                .await
            {
                Ok(records) => {
                    for record in records {
                        tokio::spawn(self.clone().settle_interrupted(record, shutdown.clone()));
                    }
                }
                Err(err) => {
                    tracing::warn!(error = %err, "could not check the store for interrupted deploys");
                }
            }
        }
    }

    /// Settles an app left `DEPLOYED` by a deploy that was interrupted (its
    /// process died: kill -9, a crash): deploys its stored version again and
    /// serves it (`ACTIVE`), or marks it `ERROR` with the reason in
    /// `lastError`. Its heartbeat is this process's while it runs.
    pub async fn settle_interrupted(
        self: Arc<Self>,
        record: AppRecord,
        shutdown: CancellationToken,
    ) {
        let Ok(app) = AppName::parse(&record.name) else {
            return;
        };
        // A deploy through this process is under way: it settles the app itself.
        let Ok(_guard) = self.lock(&app) else {
            return;
        };
        let version = record.current_version;
        // Read again under the lock: a local deploy may have settled it since.
        match self.store.get_app(app.as_str()).await {
            Ok(Some(now))
                if now.status == AppStatus::Deployed && now.current_version == version => {}
            Ok(_) => return,
            Err(err) => {
                tracing::warn!(app = %app, error = %err, "could not read an app whose deploy was interrupted");
                return;
            }
        }
        tracing::warn!(app = %app, version, "the deploy of this version was interrupted: deploying it again");
        let run = async {
            let config = config_of(&record)?;
            let zip = self.store.app_code(app.as_str(), version).await?;
            self.run_version(&app, version, &config, Some(zip)).await?;
            Ok::<_, AppError>(config)
        };
        let outcome = tokio::select! {
            _ = shutdown.cancelled() => return,
            outcome = self.beating(&app, version, run) => outcome,
        };
        let (status, note, serve) = match outcome {
            Ok(config) => (AppStatus::Active, None, Some(config.payload_format)),
            Err(err) => {
                let note = format!("deploying version {version} was interrupted, and deploying it again failed: {err}");
                tracing::warn!(app = %app, version, error = %err, "could not settle an interrupted deploy: app marked ERROR");
                (AppStatus::Error, Some(note), None)
            }
        };
        match self
            .store
            .settle_app_deploy(
                app.as_str(),
                version,
                status,
                note.as_deref(),
                crate::support::now_ms(),
            )
            .await
        {
            Ok(true) => {
                self.set_active(app.as_str(), serve.map(|format| (format, version)));
                if serve.is_some() {
                    tracing::info!(app = %app, version, "interrupted deploy settled: app served");
                }
            }
            Ok(false) => {
                let _ = self.superseded(&app, version).await;
            }
            Err(err) => {
                tracing::warn!(app = %app, error = %err, "could not record the outcome of an interrupted deploy");
            }
        }
    }

    /// Runs `work` (a deploy of `version`) while renewing the app's deploy
    /// heartbeat every third of the lease, so no other process takes it as
    /// interrupted.
    async fn beating<T>(&self, app: &AppName, version: i64, work: impl Future<Output = T>) -> T {
        let mut work = std::pin::pin!(work);
        let every = self.deploy_lease / 3;
        loop {
            tokio::select! {
                out = &mut work => return out,
                _ = tokio::time::sleep(every) => {
                    if let Err(err) = self.store.renew_app_deploy(app.as_str(), version, crate::support::now_ms()).await {
                        tracing::warn!(app = %app, version, error = %err, "could not renew the deploy's heartbeat");
                    }
                }
            }
        }
    }

    /// Serves what the store says: runs apps made active (or redeployed)
    /// elsewhere, stops those deactivated or removed elsewhere. Returns how
    /// many apps changed here.
    pub async fn sync_from_store(&self) -> Result<usize, AppError> {
        Ok(self.sync_listed().await?.0)
    }

    /// [`AppService::sync_from_store`], also saying whether some app is `DEPLOYED`.
    async fn sync_listed(&self) -> Result<(usize, bool), AppError> {
        let mut changed = 0;
        let listed = self.store.list_apps().await?;
        let deploying = listed.iter().any(|r| r.status == AppStatus::Deployed);
        for listed in listed {
            if self.wanted_version(&listed) == self.running_version(&listed.name) {
                continue;
            }
            let Ok(app) = AppName::parse(&listed.name) else {
                continue;
            };
            // A change through this process is under way: it settles the app itself.
            let Ok(_guard) = self.lock(&app) else {
                continue;
            };
            // Read again under the lock: a local change may have landed since the listing.
            let Some(record) = self.store.get_app(app.as_str()).await? else {
                continue;
            };
            let wanted = self.wanted_version(&record);
            if wanted == self.running_version(app.as_str()) {
                continue;
            }
            if let Err(err) = self.follow_record(&app, &record, false).await {
                tracing::warn!(app = %app, status = %record.status, version = record.current_version, error = %err, "could not follow an app changed by another replica");
                continue;
            }
            match wanted {
                Some(version) => {
                    tracing::info!(app = %app, version, "app changed by another replica: serving it");
                }
                None => {
                    tracing::info!(app = %app, status = %record.status, "app changed by another replica: not serving it");
                }
            }
            changed += 1;
        }
        Ok((changed, deploying))
    }

    fn wanted_version(&self, record: &AppRecord) -> Option<i64> {
        (record.status == AppStatus::Active).then_some(record.current_version)
    }
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
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

/// Removes unpacked code that will not be used, off the async threads.
async fn discard(unpacked: Unpacked) {
    let _ = tokio::task::spawn_blocking(move || drop(unpacked)).await;
}
