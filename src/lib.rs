//! orchestrator: a control plane for SaaS teams on AWS.
//!
//! Tenant lifecycle events (ARC SaaS compatible) are recorded durably in an
//! inbox and driven to completion by replaceable handlers, build jobs
//! ([`builder::BuilderService`]) and tier details ([`tiers::TierSource`]).
//!
//! Embedding: build an [`Orchestrator`] with [`OrchestratorBuilder`], replace
//! whatever you need, mount [`Orchestrator::router`] in your axum app and run
//! [`Orchestrator::start`] for the background work (see `examples/`).

pub mod apps;
pub mod aws;
pub mod builder;
pub mod cli;
pub mod config;
pub mod envvars;
pub mod events;
pub mod function_config;
pub mod functions;
pub mod http;
pub mod proxy;
pub mod store;
pub mod support;
pub mod telemetry;
pub mod tenants;
pub mod tiers;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::apps::AppService;
use crate::builder::codebuild::CodeBuildJobs;
use crate::builder::local::LocalJobs;
use crate::builder::BuilderService;
use crate::config::{
    Architecture, BuilderBackend, Config, FunctionsBackend, StoreLocation, TierDetailsSource,
};
use crate::events::{
    Dispatcher, EventHandler, EventType, HandlerSet, Inbox, RetryPolicy, Services,
};
use crate::functions::aws::AwsLambda;
use crate::functions::local::runtimes::Runtimes;
use crate::functions::local::{sandbox, LocalFunctions, LocalOptions, Scaling};
use crate::functions::logs::FunctionLogs;
use crate::functions::FunctionBackend;
use crate::store::postgres::PgStore;
use crate::store::sqlite::SqliteStore;
use crate::store::{JobId, Store, TimedStore};
use crate::support::{cpus, now_ms};
use crate::telemetry::metrics::{FunctionMetrics, Metrics};
use crate::tenants::webhook::WebhookClient;
use crate::tiers::config::ConfigTiers;
use crate::tiers::dynamodb::DynamoDbTiers;
use crate::tiers::TierSource;

/// Which parts of the service a process runs. Every role serves `/health`
/// and `/ready`; replicas of any roles share one PostgreSQL store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Role {
    /// Management API, app proxy and event processing.
    #[default]
    All,
    /// Management API only: events are recorded, and processed by `worker` replicas.
    Api,
    /// The app proxy only (`<app>.<base_domain>`); other paths answer 404.
    Proxy,
    /// Event processing and jobs only; no API besides `/health` and `/ready`.
    Worker,
}

impl Role {
    /// As the `--role` flag spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::All => "all",
            Role::Api => "api",
            Role::Proxy => "proxy",
            Role::Worker => "worker",
        }
    }

    /// Serves the management API (events, tenants, apps).
    pub fn serves_api(self) -> bool {
        matches!(self, Role::All | Role::Api)
    }

    /// Serves apps through the proxy.
    pub fn serves_proxy(self) -> bool {
        matches!(self, Role::All | Role::Proxy)
    }

    /// Claims and processes events.
    pub fn processes_events(self) -> bool {
        matches!(self, Role::All | Role::Worker)
    }
}

/// Assembles an [`Orchestrator`], letting the embedding program replace parts.
pub struct OrchestratorBuilder {
    config: Config,
    handlers: HandlerSet,
    builder: Option<Arc<dyn BuilderService>>,
    tiers: Option<Arc<dyn TierSource>>,
    store: Option<Arc<dyn Store>>,
    functions: Option<Arc<dyn FunctionBackend>>,
    sbt: Option<Arc<tenants::sbt::SbtPlane>>,
    notifier: Option<Arc<tenants::notify::Notifier>>,
}

impl OrchestratorBuilder {
    pub fn new(config: Config) -> Self {
        Self {
            config,
            handlers: HandlerSet::default(),
            builder: None,
            tiers: None,
            store: None,
            functions: None,
            sbt: None,
            notifier: None,
        }
    }

    /// Replaces the handler of one event type.
    pub fn handler(mut self, event_type: EventType, handler: Arc<dyn EventHandler>) -> Self {
        self.handlers.set(event_type, handler);
        self
    }

    /// Replaces the build job backend.
    pub fn builder_service(mut self, builder: Arc<dyn BuilderService>) -> Self {
        self.builder = Some(builder);
        self
    }

    /// Replaces the tier details source.
    pub fn tier_source(mut self, tiers: Arc<dyn TierSource>) -> Self {
        self.tiers = Some(tiers);
        self
    }

    /// Uses this sbt-aws control plane (names and bus client) instead of
    /// the one `[sbt]` describes with the standard AWS configuration.
    pub fn sbt_plane(mut self, sbt: Arc<tenants::sbt::SbtPlane>) -> Self {
        self.sbt = Some(sbt);
        self
    }

    /// Uses these notification sinks instead of the ones `[notifications]`
    /// describes with the standard AWS configuration.
    pub fn notifier(mut self, notifier: Arc<tenants::notify::Notifier>) -> Self {
        self.notifier = Some(notifier);
        self
    }

    /// Replaces the function backend apps run on.
    pub fn function_backend(mut self, functions: Arc<dyn FunctionBackend>) -> Self {
        self.functions = Some(functions);
        self
    }

    /// Uses this store instead of opening `database_url`.
    pub fn store(mut self, store: Arc<dyn Store>) -> Self {
        self.store = Some(store);
        self
    }

    /// Validates the configuration, opens the store (applying migrations) and
    /// wires the backends. Must run inside a Tokio runtime.
    pub async fn build(self) -> anyhow::Result<Orchestrator> {
        let config = self.config;
        config.validate()?;
        let metrics = Arc::new(Metrics::new());
        let store: Arc<dyn Store> = match self.store {
            Some(store) => store,
            None => open_store(&config, config.migrate_on_start).await?,
        };
        let store: Arc<dyn Store> = Arc::new(TimedStore::new(store, metrics.store_queries()));
        let jobs_work_dir = config.data_dir.join("jobs");
        // Loaded once, by the first backend that runs on AWS.
        let sdk = tokio::sync::OnceCell::new();
        let sdk = || sdk.get_or_init(aws::sdk_config);
        let builder: Arc<dyn BuilderService> = match (self.builder, &config.builder.backend) {
            (Some(builder), _) => builder,
            (None, BuilderBackend::CodeBuild { poll_secs }) => Arc::new(CodeBuildJobs::new(
                sdk().await,
                Duration::from_secs(*poll_secs),
            )),
            (None, BuilderBackend::Local) => Arc::new(LocalJobs::new(
                config.builder.jobs_dir.clone(),
                jobs_work_dir,
                config.job_timeout(),
            )),
        };
        let tiers: Arc<dyn TierSource> = match (self.tiers, &config.tier_details.source) {
            (Some(tiers), _) => tiers,
            (
                None,
                TierDetailsSource::DynamoDb {
                    table,
                    cache_ttl_secs,
                },
            ) => Arc::new(DynamoDbTiers::new(
                sdk().await,
                table.clone(),
                Duration::from_secs(*cache_ttl_secs),
            )),
            (None, TierDetailsSource::Config) => Arc::new(ConfigTiers::new(config.tiers.clone())),
        };
        let webhook = match &config.callbacks.webhook_url {
            Some(url) => Some(WebhookClient::new(
                url.clone(),
                Duration::from_secs(config.callbacks.timeout_secs),
            )?),
            None => None,
        };
        let mut isolation = None;
        let mut log_writer = None;
        let functions: Arc<dyn FunctionBackend> = match (self.functions, &config.functions.backend)
        {
            (Some(functions), _) => functions,
            (None, FunctionsBackend::Aws(aws)) => Arc::new(
                AwsLambda::new(
                    sdk().await,
                    aws.role_arn.clone(),
                    aws.architecture.map(Architecture::as_str),
                )
                .with_metrics(metrics.functions()),
            ),
            (None, FunctionsBackend::Local) => {
                let sandbox = choose_sandbox(&config)?;
                isolation = Some(match sandbox {
                    Some(_) => "sandbox",
                    None => "none",
                });
                let logs = match config.functions.log_retention_bytes {
                    0 => FunctionLogs::off(),
                    retention => {
                        let logs = FunctionLogs::new();
                        log_writer = Some(LogWriter::start(logs.clone(), store.clone(), retention));
                        logs
                    }
                };
                // A sandboxed worker sees the sandbox's PATH, not ours.
                let search = match sandbox {
                    Some(_) => sandbox::PATH.to_owned(),
                    None => std::env::var("PATH").unwrap_or_default(),
                };
                let runtimes = Runtimes::shared(&search, &config.functions.runtimes)
                    .map_err(anyhow::Error::msg)?;
                tracing::info!(available = %runtimes.summary(), "runtimes found");
                let mut options = local_options(&config, sandbox, metrics.functions(), logs);
                options.runtimes = runtimes;
                LocalFunctions::start(options)?
            }
        };
        let apps = Arc::new(
            AppService::new(
                store.clone(),
                functions.clone(),
                config.data_dir.join("apps"),
                config.base_domain.clone(),
            )
            .with_deploy_lease(
                Duration::from_secs(config.functions.deploy_lease_secs),
                !config.uses_postgres(),
            ),
        );
        let restored = apps.restore().await.context("restoring active apps")?;
        tracing::info!(
            store = %config.store()?,
            functions = %functions.name(),
            apps = restored,
            builder = %builder.name(),
            tiers = %tiers.name(),
            webhook = %webhook.as_ref().map(WebhookClient::url).unwrap_or("none"),
            "backends chosen"
        );
        match &config.tier_details.source {
            TierDetailsSource::Config => {
                let names: Vec<&str> = config.tiers.keys().map(String::as_str).collect();
                tracing::info!(count = names.len(), names = %names.join(","), "tiers loaded from the configuration");
            }
            TierDetailsSource::DynamoDb { table, .. } => {
                tracing::info!(table = %table, "tiers read from DynamoDB when events need them");
            }
        }
        tracing::info!(
            isolation = %isolation.unwrap_or("the platform's (AWS Lambda)"),
            "functions isolation"
        );
        let inbox = Inbox::new(store.clone());
        let sbt = match (self.sbt, &config.sbt.event_bus) {
            (Some(sbt), _) => sbt,
            (None, Some(_)) => Arc::new(tenants::sbt::SbtPlane::new(
                config.sbt.clone(),
                Some(sdk().await),
            )),
            (None, None) => Arc::new(tenants::sbt::SbtPlane::new(config.sbt.clone(), None)),
        };
        if let Some(bus) = sbt.event_bus() {
            tracing::info!(event_bus = %bus, "sbt-aws outcomes go to the control plane's bus");
        }
        let notifier = match self.notifier {
            Some(notifier) => notifier,
            None => {
                let sdk = match config.notifications.event_bus {
                    Some(_) => Some(sdk().await),
                    None => None,
                };
                Arc::new(
                    tenants::notify::Notifier::new(&config.notifications, sdk)
                        .map_err(anyhow::Error::msg)?,
                )
            }
        };
        let sinks = notifier.sinks();
        if !sinks.is_empty() {
            tracing::info!(sinks = %sinks.join(", "), "tenant transitions are published");
        }
        let services = Services {
            sbt,
            notifier,
            metrics: metrics.clone(),
            store,
            tiers,
            builder,
            inbox,
            webhook,
            job_lease: Duration::from_secs(config.builder.job_lease_secs),
        };
        Ok(Orchestrator {
            config,
            services,
            handlers: Arc::new(self.handlers),
            apps,
            isolation,
            log_writer,
            stopping: CancellationToken::new(),
        })
    }
}

/// The task writing local functions' output to the store.
struct LogWriter {
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl LogWriter {
    fn start(logs: FunctionLogs, store: Arc<dyn Store>, retention_bytes: u64) -> Self {
        let stop = CancellationToken::new();
        let task = tokio::spawn(logs.run(store, retention_bytes, stop.clone()));
        Self { stop, task }
    }

    /// Writes what is buffered and stops.
    async fn finish(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

/// Opens the store `database_url` names, applying its migrations when `migrate`
/// (SQLite always migrates: one process owns the file).
pub async fn open_store(config: &Config, migrate: bool) -> anyhow::Result<Arc<dyn Store>> {
    let location = config.store()?;
    let context = || format!("opening the store at {location}");
    match &location {
        StoreLocation::Postgres { url } => {
            let store = PgStore::connect(url).await.with_context(context)?;
            if migrate {
                store
                    .migrate()
                    .await
                    .with_context(|| format!("migrating {location}"))?;
            } else {
                let pending = store.pending_migrations().await.with_context(context)?;
                anyhow::ensure!(
                    pending == 0,
                    "{location}: {pending} migration(s) not applied; run `orchestrator migrate` first"
                );
            }
            Ok(Arc::new(store))
        }
        StoreLocation::Sqlite { url } => Ok(Arc::new(
            SqliteStore::connect(url).await.with_context(context)?,
        )),
    }
}

/// A wired service: its router and its background work.
pub struct Orchestrator {
    config: Config,
    services: Services,
    handlers: Arc<HandlerSet>,
    apps: Arc<AppService>,
    /// How local functions run (`None`: not on this machine).
    isolation: Option<&'static str>,
    /// Local functions' output on its way to the store.
    log_writer: Option<LogWriter>,
    /// Cancelled when serving starts to shut down.
    stopping: CancellationToken,
}

/// The sandbox local workers run in, as `functions.isolation` asks: `auto`
/// takes it where this machine allows and warns once where it does not;
/// `sandbox` refuses to start without it.
/// The local runtime's options, from `[functions]`.
fn local_options(
    config: &Config,
    sandbox: Option<Arc<sandbox::Sandbox>>,
    metrics: Arc<FunctionMetrics>,
    logs: FunctionLogs,
) -> LocalOptions {
    let functions = &config.functions;
    LocalOptions {
        metrics,
        logs,
        sandbox,
        max_queue: functions.max_queue,
        max_queue_wait: Duration::from_millis(functions.max_queue_wait_ms),
        runtimes_dir: config.data_dir.join("runtimes"),
        scaling: Scaling {
            max_workers: functions.max_workers,
            eager_workers: cpus(),
            delay: Duration::from_millis(functions.scale_out_delay_ms),
        },
        idle_timeout: Duration::from_secs(functions.idle_timeout_secs),
        batch_scheduling: functions.batch_scheduling,
        region: std::env::var("AWS_REGION").unwrap_or_else(|_| "us-east-1".into()),
        runtimes: Default::default(),
    }
}

fn choose_sandbox(config: &Config) -> anyhow::Result<Option<Arc<sandbox::Sandbox>>> {
    let options = sandbox::SandboxOptions {
        uid_base: config.functions.sandbox_uid_base,
        uid_count: config.functions.sandbox_uid_count,
        max_processes: config.functions.max_processes,
        tmp_size_bytes: config.functions.tmp_size_mb * 1024 * 1024,
    };
    match config.functions.isolation {
        config::Isolation::None => {
            tracing::warn!(
                "functions.isolation = none: app code runs unconfined, as the service's user"
            );
            Ok(None)
        }
        config::Isolation::Auto => match sandbox::Sandbox::probe(options) {
            Ok(sandbox) => Ok(Some(sandbox)),
            Err(why) => {
                tracing::warn!(reason = %why, "functions run WITHOUT a sandbox (functions.isolation = auto): app code can read the service's files and reach its processes");
                Ok(None)
            }
        },
        config::Isolation::Sandbox => sandbox::Sandbox::probe(options)
            .map(Some)
            .map_err(|why| anyhow::anyhow!("functions.isolation = sandbox, but {why}")),
    }
}

impl Orchestrator {
    /// The services handlers run with (store, tiers, builder, inbox).
    pub fn services(&self) -> &Services {
        &self.services
    }

    /// The HTTP API and the proxy, to serve or to mount in another axum app.
    pub fn router(&self) -> axum::Router {
        self.router_for(Role::All)
    }

    /// What the HTTP handlers work with.
    fn app_state(&self) -> http::AppState {
        http::AppState {
            store: self.services.store.clone(),
            apps: self.apps.clone(),
            inbox: self.services.inbox.clone(),
            builder: self.services.builder.clone(),
            isolation: self.isolation,
            metrics: self.services.metrics.clone(),
            stopping: self.stopping.clone(),
            sbt: self.services.sbt.clone(),
        }
    }

    /// The routes a process of `role` serves.
    pub fn router_for(&self, role: Role) -> axum::Router {
        let observe = http::Observe {
            metrics: self.services.metrics.clone(),
            access_log: self.config.access_log,
        };
        let state = self.app_state();
        let proxy = role.serves_proxy().then(|| {
            http::proxy::ProxyState::new(
                self.apps.clone(),
                &self.config.base_domain,
                observe.clone(),
            )
        });
        http::router(
            state,
            observe,
            http::auth::AuthPolicy::new(&self.config.auth),
            proxy,
            role.serves_api(),
        )
    }

    /// Recovers work a previous run left behind, then runs the dispatcher until `shutdown`.
    pub async fn start(&self, shutdown: CancellationToken) -> anyhow::Result<JoinHandle<()>> {
        let store = &self.services.store;
        let requeued = store
            .requeue_abandoned(now_ms())
            .await
            .context("requeueing events left in progress")?;
        // One SQLite process holds every job it finds running; replicas sharing
        // PostgreSQL take only jobs whose holder stopped renewing their lease.
        let expired_before = if self.config.uses_postgres() {
            now_ms()
        } else {
            i64::MAX
        };
        let resumed = self.job_keeper().resume_abandoned(expired_before).await?;
        if requeued > 0 || resumed > 0 {
            tracing::info!(requeued, resumed, "recovered work from the previous run");
        }
        let inbox = &self.config.inbox;
        let dispatcher = Dispatcher {
            services: self.services.clone(),
            handlers: self.handlers.clone(),
            retry: RetryPolicy {
                max_attempts: inbox.max_attempts,
                base_delay: Duration::from_millis(inbox.backoff_base_ms),
                max_delay: Duration::from_millis(inbox.backoff_max_ms),
            },
            concurrency: inbox.concurrency,
            lease: Duration::from_secs(inbox.lease_secs),
            poll: Duration::from_millis(inbox.poll_ms),
        };
        let dispatcher = tokio::spawn(dispatcher.run(shutdown.clone()));
        let leases = tokio::spawn(self.job_keeper().run(shutdown));
        Ok(tokio::spawn(async move {
            let _ = dispatcher.await;
            let _ = leases.await;
        }))
    }

    fn job_keeper(&self) -> JobKeeper {
        JobKeeper {
            services: self.services.clone(),
        }
    }
}

/// Keeps the leases of the jobs this process holds alive, and takes over
/// jobs whose holder stopped (another replica, or this process before a
/// restart): the builder follows them again or says they must run again.
struct JobKeeper {
    services: Services,
}

impl JobKeeper {
    async fn run(self, shutdown: CancellationToken) {
        let every = self.services.job_lease / 3;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
            let ids: Vec<JobId> = self
                .services
                .builder
                .held_here()
                .into_iter()
                .map(JobId::from)
                .collect();
            if !ids.is_empty() {
                if let Err(err) = self
                    .services
                    .store
                    .renew_job_leases(&ids, self.services.lease_end())
                    .await
                {
                    tracing::warn!(error = %err, "could not renew job leases");
                }
            }
            if let Err(err) = self.resume_abandoned(now_ms()).await {
                tracing::warn!(error = %err, "could not check for abandoned jobs");
            }
        }
    }

    /// Takes the running jobs whose lease ended before `expired_before` and
    /// hands each to the builder; those it cannot follow run again from the start.
    async fn resume_abandoned(&self, expired_before: i64) -> anyhow::Result<usize> {
        let Services {
            store,
            builder,
            inbox,
            ..
        } = &self.services;
        let jobs = store
            .take_abandoned_jobs(builder.name(), expired_before, self.services.lease_end())
            .await
            .context("listing interrupted jobs")?;
        for job in &jobs {
            let reporter = builder::JobReporter::new(Arc::new(inbox.clone()));
            if builder.resume(job, reporter) == builder::Resumed::Following {
                tracing::info!(job = %job.id, "following a job whose holder stopped");
                continue;
            }
            match events::handlers::rerun(&self.services, job).await {
                Ok(_) => {
                    tracing::info!(job = %job.id, attempt = job.attempt + 1, "re-running a job whose process stopped")
                }
                Err(err) => {
                    tracing::warn!(job = %job.id, error = %err, "could not re-run an interrupted job; it failed")
                }
            }
        }
        Ok(jobs.len())
    }
}

/// Serves `config` on `listener` until `shutdown` resolves: the testable entry point.
pub async fn run(
    config: Config,
    role: Role,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    OrchestratorBuilder::new(config)
        .build()
        .await?
        .serve(role, listener, shutdown)
        .await
}

impl Orchestrator {
    /// Runs the background work (per `role`) and serves the API on `listener` until `shutdown` resolves.
    pub async fn serve(
        self,
        role: Role,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let addr = listener
            .local_addr()
            .context("reading the listen address")?;
        if !addr.ip().is_loopback()
            && self.config.is_anonymous()
            && !self.config.auth.allow_anonymous
        {
            anyhow::bail!(
                "refusing to listen on {addr} without access tokens: set auth.api_tokens (ORCHESTRATOR_API_TOKENS) or auth.allow_anonymous = true"
            );
        }
        let token = CancellationToken::new();
        // Bound first: a taken address stops the start before any work begins.
        let metrics = match &self.config.metrics.listen {
            Some(listen) => Some(self.serve_metrics(listen, token.clone()).await?),
            None => None,
        };
        let workers = if role.processes_events() {
            Some(self.start(token.clone()).await?)
        } else {
            None
        };
        let reconcile = role.processes_events().then(|| {
            let apps = self.apps.clone();
            let every = Duration::from_secs(self.config.functions.reconcile_secs);
            tokio::spawn(apps.reconcile_periodically(every, token.clone()))
        });
        let sync = role.serves_proxy().then(|| {
            let apps = self.apps.clone();
            let every = Duration::from_millis(self.config.functions.sync_interval_ms);
            tokio::spawn(apps.follow_store(every, token.clone()))
        });
        // Asynchronous invocations run where functions are served.
        let invocations = role.serves_proxy().then(|| {
            let apps = self.apps.clone();
            let every = Duration::from_millis(self.config.functions.sync_interval_ms.min(250));
            let retry = Duration::from_millis(self.config.functions.async_retry_delay_ms);
            tokio::spawn(apps.run_async_invocations(every, retry, token.clone()))
        });
        let router = self.router_for(role);
        self.log_telemetry();
        tracing::info!(role = %role.as_str(), "listening on http://{addr}");
        let cancel = token.clone();
        let server = &self.config.server;
        let limits = http::server::Limits {
            header_timeout: Duration::from_secs(server.header_timeout_secs),
            max_connections: match server.max_connections {
                0 => http::server::default_max_connections(),
                n => n,
            },
            shutdown_timeout: Duration::from_secs(server.shutdown_timeout_secs),
        };
        let stopping = self.stopping.clone();
        http::server::serve(listener, router, limits, async move {
            shutdown.await;
            stopping.cancel();
            cancel.cancel();
        })
        .await;
        token.cancel();
        // Jobs this process runs are stopped, not orphaned: they run again
        // elsewhere or after a restart, when their lease ends.
        self.services
            .builder
            .stop_running(Duration::from_secs(server.job_stop_grace_secs))
            .await;
        if let Some(workers) = workers {
            let _ = workers.await;
        }
        for task in [sync, invocations, reconcile, metrics]
            .into_iter()
            .flatten()
        {
            let _ = task.await;
        }
        if let Some(writer) = self.log_writer {
            writer.finish().await;
        }
        Ok(())
    }

    /// Serves `GET /metrics` alone on `listen` (`metrics.listen`), without a
    /// token, until `stop`.
    /// One start-up line: where metrics, logs, function logs and traces go.
    fn log_telemetry(&self) {
        let config = &self.config;
        let metrics = if !config.is_anonymous() {
            "GET /metrics (bearer token)"
        } else {
            "GET /metrics (open)"
        };
        let traces = std::env::var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            .or_else(|_| std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT"))
            .ok()
            .filter(|_| crate::telemetry::trace::exporting())
            .unwrap_or_else(|| "off".to_owned());
        tracing::info!(
            metrics = %metrics,
            metrics_listen = %config.metrics.listen.as_deref().unwrap_or("none"),
            logs = ?config.log_format,
            function_logs_bytes_per_app = config.functions.log_retention_bytes,
            traces = %traces,
            "telemetry"
        );
    }

    async fn serve_metrics(
        &self,
        listen: &str,
        stop: CancellationToken,
    ) -> anyhow::Result<JoinHandle<()>> {
        let listener = TcpListener::bind(listen)
            .await
            .with_context(|| format!("binding metrics.listen {listen}"))?;
        let addr = listener
            .local_addr()
            .context("reading the metrics address")?;
        let router = http::metrics_router(self.app_state());
        tracing::info!("metrics on http://{addr}/metrics");
        Ok(tokio::spawn(async move {
            let served = axum::serve(listener, router)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await;
            if let Err(err) = served {
                tracing::warn!(error = %err, "the metrics address stopped serving");
            }
        }))
    }
}
