//! The local function runtime: each app's code runs in worker processes
//! that speak the Lambda Runtime API, so unmodified Lambda runtime clients
//! work. Node.js and Python use our own small runtime clients (shipped in the
//! binary, see `bootstraps/`); `provided.*` runs the zip's `bootstrap`.

mod handle;
mod invocation;
mod peer;
mod pipes;
mod pool;
mod protocol;
mod queue;
mod runtime_api;
pub mod runtimes;
pub mod sandbox;
mod tcp;
mod worker;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_trait::async_trait;

use self::pool::Pool;
use self::queue::Bounds;
pub use self::queue::Scaling;
use self::worker::{Launcher, WorkerSpec};
use super::{Deployment, FunctionBackend, FunctionError, Invoked, Target};
use crate::function_config::AppName;
use crate::telemetry::metrics::FunctionMetrics;

/// Settings of the local runtime.
#[derive(Debug, Clone)]
pub struct LocalOptions {
    /// Where the runtime clients are written.
    pub runtimes_dir: PathBuf,
    /// How many workers an app may have and how fast it gets them.
    pub scaling: Scaling,
    /// Idle workers stop after this long.
    pub idle_timeout: Duration,
    /// Workers run as `SCHED_BATCH` (see [`crate::support::run_as_batch_work`]).
    pub batch_scheduling: bool,
    /// `AWS_REGION` the functions see.
    pub region: String,
    /// Workers run confined (`None`: as plain child processes).
    pub sandbox: Option<Arc<sandbox::Sandbox>>,
    /// Most invocations waiting for a worker, per app.
    pub max_queue: usize,
    /// Longest an invocation waits for a worker.
    pub max_queue_wait: Duration,
    /// Where invocations, cold starts and workers are counted.
    pub metrics: Arc<FunctionMetrics>,
    /// Where functions' output is kept.
    pub logs: crate::functions::logs::FunctionLogs,
    /// The interpreters runtimes run on.
    pub runtimes: Arc<runtimes::Runtimes>,
}

/// Runs functions on this machine.
pub struct LocalFunctions {
    options: LocalOptions,
    /// Each app's versions running here, by version.
    pools: RwLock<HashMap<String, BTreeMap<i64, Arc<Pool>>>>,
}

impl LocalFunctions {
    /// One invocation on `pool`, its lines also in the task's tail if it keeps one.
    async fn run(&self, pool: &Pool, event: Vec<u8>) -> Result<Vec<u8>, FunctionError> {
        let Some(tail) = crate::functions::logs::tail() else {
            return pool.invoke(event).await;
        };
        let request_id = crate::support::request_uuid();
        let _tap = self.options.logs.tap(&request_id, tail.clone());
        let outcome = pool.invoke_as(event, request_id).await;
        tail.settle().await;
        outcome
    }

    /// Writes the runtime clients and starts the idle reaper.
    pub fn start(options: LocalOptions) -> Result<Arc<Self>, FunctionError> {
        let io = |e| FunctionError::unavailable_because("writing the runtime clients", e);
        worker::install_runtime_clients(&options.runtimes_dir).map_err(io)?;
        if options.sandbox.is_some() {
            sandbox::make_readable(&options.runtimes_dir).map_err(io)?;
        }
        let this = Arc::new(Self {
            options,
            pools: RwLock::default(),
        });
        let weak = Arc::downgrade(&this);
        let every = (this.options.idle_timeout / 2)
            .clamp(Duration::from_millis(100), Duration::from_secs(5));
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let Some(this) = weak.upgrade() else { return };
                let pools: Vec<Arc<Pool>> = this
                    .pools
                    .read()
                    .map(|p| p.values().flat_map(|v| v.values().cloned()).collect())
                    .unwrap_or_default();
                for pool in pools {
                    pool.reap(this.options.idle_timeout);
                }
            }
        });
        Ok(this)
    }

    /// The pool of `version`, else of the newest version running here.
    fn pool(&self, app: &AppName, version: Option<i64>) -> Option<Arc<Pool>> {
        let pools = self.pools.read().ok()?;
        let versions = pools.get(app.as_str())?;
        match version {
            Some(version) => versions.get(&version),
            None => versions.values().next_back(),
        }
        .cloned()
    }

    /// Idle workers of an app's newest version (for tests and diagnostics).
    pub fn idle_workers(&self, app: &AppName) -> usize {
        self.pool(app, None).map_or(0, |p| p.idle_count())
    }

    /// Workers started for an app's newest version, ever (for tests and diagnostics).
    pub fn workers_started(&self, app: &AppName) -> u64 {
        self.pool(app, None).map_or(0, |p| p.started_count())
    }
}

/// `describe`, `problem` and `release` keep the trait's defaults: the pools
/// are this process's (reported as no platform function, so every process
/// deploys what it serves), nothing outside changes them, and an app no
/// longer served here has its workers stopped, as by `remove`.
#[async_trait]
impl FunctionBackend for LocalFunctions {
    fn name(&self) -> &'static str {
        "local"
    }

    fn check_runtime(&self, runtime: &str) -> Result<(), String> {
        self.options.runtimes.interpreter(runtime).map(|_| ())
    }

    fn default_runtime(&self) -> Option<&'static str> {
        self.options.runtimes.default_runtime()
    }

    fn runtimes(&self) -> Vec<runtimes::RuntimeView> {
        self.options.runtimes.views()
    }

    async fn deploy(&self, deployment: Deployment<'_>) -> Result<(), FunctionError> {
        if self.options.sandbox.is_some() {
            // The worker's own user reads the code (whatever modes the zip carried).
            let dir = deployment.code_dir.to_owned();
            tokio::task::spawn_blocking(move || sandbox::make_readable(&dir))
                .await
                .map_err(|e| FunctionError::unavailable_because("preparing the code", e))?
                .map_err(|e| FunctionError::unavailable_because("preparing the code", e))?;
        }
        let metrics = self
            .options
            .metrics
            .app(deployment.app.as_str(), Some(deployment.version));
        let spec = WorkerSpec {
            app: deployment.app.to_string(),
            version: deployment.version,
            config: deployment.config.clone(),
            interpreter: self
                .options
                .runtimes
                .interpreter(&deployment.config.runtime)
                .map_err(FunctionError::unavailable)?
                .cloned(),
            code_dir: std::path::absolute(deployment.code_dir)
                .unwrap_or_else(|_| deployment.code_dir.to_owned()),
            runtimes_dir: std::path::absolute(&self.options.runtimes_dir)
                .unwrap_or_else(|_| self.options.runtimes_dir.clone()),
            region: self.options.region.clone(),
            batch_scheduling: self.options.batch_scheduling,
            sandbox: self.options.sandbox.clone(),
            metrics: metrics.clone(),
            log: self.options.logs.app(deployment.app.as_str()),
        };
        let pool = Arc::new(Pool::new(
            deployment.app.to_string(),
            self.options.scaling,
            Bounds {
                max_queue: self.options.max_queue,
                max_wait: self.options.max_queue_wait,
            },
            Box::new(Launcher::new(spec)),
            metrics,
        ));
        // The version's earlier pool (deployed again) goes; other versions stay.
        let old = self
            .pools
            .write()
            .map_err(|_| FunctionError::unavailable("function table poisoned"))?
            .entry(deployment.app.to_string())
            .or_default()
            .insert(deployment.version, pool);
        if let Some(old) = old {
            old.retire();
        }
        Ok(())
    }

    /// Stops every version of the app.
    async fn remove(&self, app: &AppName) -> Result<(), FunctionError> {
        let old = self
            .pools
            .write()
            .map_err(|_| FunctionError::unavailable("function table poisoned"))?
            .remove(app.as_str());
        match old {
            Some(versions) => {
                versions.values().for_each(|pool| pool.retire());
                Ok(())
            }
            None => Err(FunctionError::NotFound),
        }
    }

    async fn invoke(&self, app: &AppName, event: Vec<u8>) -> Result<Vec<u8>, FunctionError> {
        let pool = self.pool(app, None).ok_or(FunctionError::NotFound)?;
        self.run(&pool, event).await
    }

    /// A version only: aliases are drawn by the app service.
    async fn invoke_target(
        &self,
        app: &AppName,
        target: Target<'_>,
        event: Vec<u8>,
    ) -> Result<Invoked, FunctionError> {
        let Target::Version(version) = target else {
            return Err(FunctionError::NotFound);
        };
        let pool = self
            .pool(app, Some(version))
            .ok_or(FunctionError::NotFound)?;
        Ok(Invoked {
            payload: self.run(&pool, event).await?,
            version: Some(version),
        })
    }
}
