//! Prometheus metrics (`GET /metrics`), through `prometheus-client`.
//!
//! One [`Metrics`] per running service (tests run several in one process),
//! handed to what records: HTTP, the inbox and dispatcher, job completion,
//! webhook deliveries, the function backends. Counters are recorded where
//! the thing happens, once; gauges that describe shared state (the inbox,
//! apps, running jobs) are read from the store when scraped, so every
//! replica of a PostgreSQL deployment reports the same figures for them and
//! its own process for the rest. Label values are bounded: route templates,
//! known methods, event types, backends, app names; never paths or ids.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Metric, Registry};

/// Content types of the two text formats served.
pub const PROMETHEUS_TEXT: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;
pub const OPENMETRICS_TEXT: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    route: String,
    method: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabel {
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TypeLabel {
    r#type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TypeOutcome {
    r#type: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabel {
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct JobLabels {
    backend: String,
    kind: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BackendKind {
    backend: String,
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BackendLabel {
    backend: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AppLabel {
    app: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AppOutcome {
    app: String,
    /// The version that ran (empty when the backend did not say).
    version: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabel {
    version: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OpLabel {
    op: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolLabel {
    state: &'static str,
}

type Seconds = Family<RouteLabel, Histogram>;

/// Registers `metric` as `name` (prefixed `orchestrator_`; counters also get
/// `_total`) and gives it back for recording.
fn registered<M: Metric + Clone>(registry: &mut Registry, name: &str, help: &str, metric: M) -> M {
    registry.register(name, help, metric.clone());
    metric
}

/// A family of histograms with the buckets `make` gives.
fn histograms<S: Clone + std::hash::Hash + Eq>(make: fn() -> Histogram) -> Family<S, Histogram> {
    Family::new_with_constructor(make)
}

fn seconds_histogram() -> Histogram {
    // 0.5 ms to ~65 s.
    Histogram::new(exponential_buckets(0.0005, 2.0, 18))
}

fn long_histogram() -> Histogram {
    // 1 s to ~9 h (jobs run for minutes).
    Histogram::new(exponential_buckets(1.0, 2.0, 16))
}

/// How a processed event ended, as `orchestrator_events_processed_total` says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventOutcome {
    Succeeded,
    Failed,
    Dead,
    Retried,
}

impl EventOutcome {
    fn label(self) -> &'static str {
        match self {
            EventOutcome::Succeeded => "succeeded",
            EventOutcome::Failed => "failed",
            EventOutcome::Dead => "dead",
            EventOutcome::Retried => "retried",
        }
    }
}

/// How an invocation ended, as Lambda's metrics tell them apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InvocationOutcome {
    Success,
    /// The function reported an error.
    Error,
    Timeout,
    /// The runtime died under it.
    Crash,
    /// Refused for want of room (429).
    Throttled,
}

impl InvocationOutcome {
    fn label(self) -> &'static str {
        match self {
            InvocationOutcome::Success => "success",
            InvocationOutcome::Error => "error",
            InvocationOutcome::Timeout => "timeout",
            InvocationOutcome::Crash => "crash",
            InvocationOutcome::Throttled => "throttled",
        }
    }
}

/// What the store says of shared state when scraped.
#[derive(Debug, Default, Clone)]
pub struct StoreGauges {
    /// Inbox events by status, every status.
    pub events: Vec<(String, i64)>,
    /// Age of the oldest event still waiting or being processed.
    pub oldest_waiting: Option<Duration>,
    /// Apps by status, every status.
    pub apps: Vec<(String, i64)>,
    /// Running jobs by backend.
    pub running_jobs: Vec<(String, i64)>,
    /// The connection pool: open connections and idle ones.
    pub pool_size: u32,
    pub pool_idle: u32,
}

/// Every metric the service reports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    http_requests: Family<HttpLabels, Counter>,
    http_duration: Seconds,
    events_received: Family<TypeLabel, Counter>,
    events_processed: Family<TypeOutcome, Counter>,
    inbox_events: Family<StatusLabel, Gauge>,
    inbox_oldest_age: Gauge<f64, AtomicU64>,
    jobs: Family<JobLabels, Counter>,
    jobs_running: Family<BackendLabel, Gauge>,
    job_duration: Family<BackendKind, Histogram>,
    webhook_deliveries: Family<OutcomeLabel, Counter>,
    apps: Family<StatusLabel, Gauge>,
    store_pool: Family<PoolLabel, Gauge>,
    store_queries: StoreQueries,
    scrape_failures: Counter,
    functions: Arc<FunctionMetrics>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("orchestrator");
        let build = Family::<VersionLabel, Gauge>::default();
        build
            .get_or_create(&VersionLabel {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        registry.register("build_info", "The running build", build);
        let r = &mut registry;
        let http_requests = registered(
            r,
            "http_requests",
            "HTTP requests answered, by route template, method and status",
            Family::default(),
        );
        let http_duration = registered(
            r,
            "http_request_duration_seconds",
            "Time to answer an HTTP request, by route template",
            histograms(seconds_histogram),
        );
        let events_received = registered(
            r,
            "events_received",
            "Events accepted into the inbox, by type",
            Family::default(),
        );
        let events_processed = registered(
            r,
            "events_processed",
            "Processing attempts of inbox events, by type and outcome",
            Family::default(),
        );
        let inbox_events = registered(
            r,
            "inbox_events",
            "Inbox events by status (from the store)",
            Family::default(),
        );
        let inbox_oldest_age = registered(
            r,
            "inbox_oldest_age_seconds",
            "Age of the oldest event waiting or being processed (from the store)",
            Gauge::<f64, AtomicU64>::default(),
        );
        let jobs = registered(
            r,
            "jobs",
            "Finished build jobs, by backend, kind and outcome",
            Family::default(),
        );
        let jobs_running = registered(
            r,
            "jobs_running",
            "Running build jobs, by backend (from the store)",
            Family::default(),
        );
        let job_duration = registered(
            r,
            "job_duration_seconds",
            "How long finished jobs ran, by backend and kind",
            histograms(long_histogram),
        );
        let webhook_deliveries = registered(
            r,
            "webhook_deliveries",
            "ARC SaaS webhook delivery attempts, by outcome",
            Family::default(),
        );
        let apps = registered(
            r,
            "apps",
            "Apps by status (from the store)",
            Family::default(),
        );
        let store_pool = registered(
            r,
            "store_pool_connections",
            "This process's store connections, open and idle",
            Family::default(),
        );
        let store_queries = StoreQueries(registered(
            r,
            "store_query_duration_seconds",
            "Time of each store call (a statement or a transaction), by operation",
            histograms(seconds_histogram),
        ));
        let scrape_failures = registered(
            r,
            "metrics_store_read_failures",
            "Scrapes whose store-backed gauges could not be read (they kept their last values)",
            Counter::default(),
        );
        let functions = Arc::new(FunctionMetrics::register(r));
        Self {
            registry,
            http_requests,
            http_duration,
            events_received,
            events_processed,
            inbox_events,
            inbox_oldest_age,
            jobs,
            jobs_running,
            job_duration,
            webhook_deliveries,
            apps,
            store_pool,
            store_queries,
            scrape_failures,
            functions,
        }
    }

    /// One answered HTTP request. `route` is a template
    /// (`/events/{event}`) or one of a few fixed names (`proxy`, `unmatched`).
    pub fn http_request(
        &self,
        route: &str,
        method: &axum::http::Method,
        status: u16,
        took: Duration,
    ) {
        self.http_requests
            .get_or_create(&HttpLabels {
                route: route.to_owned(),
                method: method_label(method),
                status,
            })
            .inc();
        self.http_duration
            .get_or_create(&RouteLabel {
                route: route.to_owned(),
            })
            .observe(took.as_secs_f64());
    }

    pub fn event_received(&self, event_type: &str) {
        self.events_received
            .get_or_create(&TypeLabel {
                r#type: event_type.to_owned(),
            })
            .inc();
    }

    pub fn event_processed(&self, event_type: &str, outcome: EventOutcome) {
        self.events_processed
            .get_or_create(&TypeOutcome {
                r#type: event_type.to_owned(),
                outcome: outcome.label(),
            })
            .inc();
    }

    /// A job finished (`succeeded` or `failed`) after running for `ran`, if it ran.
    pub fn job_finished(
        &self,
        backend: &str,
        kind: &'static str,
        succeeded: bool,
        ran: Option<Duration>,
    ) {
        self.jobs
            .get_or_create(&JobLabels {
                backend: backend.to_owned(),
                kind,
                outcome: if succeeded { "succeeded" } else { "failed" },
            })
            .inc();
        if let Some(ran) = ran {
            self.job_duration
                .get_or_create(&BackendKind {
                    backend: backend.to_owned(),
                    kind,
                })
                .observe(ran.as_secs_f64());
        }
    }

    /// A webhook delivery attempt: `delivered`, `refused` (permanent) or `failed` (retried).
    pub fn webhook_delivery(&self, outcome: &'static str) {
        self.webhook_deliveries
            .get_or_create(&OutcomeLabel { outcome })
            .inc();
    }

    /// What the store's calls are timed through.
    pub fn store_queries(&self) -> StoreQueries {
        self.store_queries.clone()
    }

    /// What the function backends record through.
    pub fn functions(&self) -> Arc<FunctionMetrics> {
        self.functions.clone()
    }

    /// Sets the store-backed gauges (`None`: the store could not be read).
    pub fn set_store_gauges(&self, gauges: Option<StoreGauges>) {
        let Some(gauges) = gauges else {
            self.scrape_failures.inc();
            return;
        };
        set_all(&self.inbox_events, &gauges.events);
        self.inbox_oldest_age
            .set(gauges.oldest_waiting.map_or(0.0, |age| age.as_secs_f64()));
        set_all(&self.apps, &gauges.apps);
        self.jobs_running.clear();
        for (backend, count) in &gauges.running_jobs {
            self.jobs_running
                .get_or_create(&BackendLabel {
                    backend: backend.clone(),
                })
                .set(*count);
        }
        for (state, count) in [("open", gauges.pool_size), ("idle", gauges.pool_idle)] {
            self.store_pool
                .get_or_create(&PoolLabel { state })
                .set(i64::from(count));
        }
    }

    /// The metrics in the Prometheus text format, or OpenMetrics when `openmetrics`.
    pub fn encode(&self, openmetrics: bool) -> String {
        let mut out = String::with_capacity(16 * 1024);
        // Writing into a String cannot fail.
        let _ = if openmetrics {
            prometheus_client::encoding::text::encode(&mut out, &self.registry)
        } else {
            prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)
        };
        out
    }
}

/// Sets each status's gauge (the caller lists every status, zeros too: a
/// family is never cleared, so a concurrent scrape never finds it empty).
fn set_all(family: &Family<StatusLabel, Gauge>, counts: &[(String, i64)]) {
    for (status, count) in counts {
        family
            .get_or_create(&StatusLabel {
                status: status.clone(),
            })
            .set(*count);
    }
}

/// Known methods by name; anything else is `other` (label values stay bounded).
fn method_label(method: &axum::http::Method) -> &'static str {
    match *method {
        axum::http::Method::GET => "GET",
        axum::http::Method::POST => "POST",
        axum::http::Method::PUT => "PUT",
        axum::http::Method::DELETE => "DELETE",
        axum::http::Method::PATCH => "PATCH",
        axum::http::Method::HEAD => "HEAD",
        axum::http::Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// The store's call times, by operation (`get_event`, `commit`, …).
#[derive(Debug, Clone)]
pub struct StoreQueries(Family<OpLabel, Histogram>);

impl StoreQueries {
    pub fn observe(&self, op: &'static str, took: Duration) {
        self.0
            .get_or_create(&OpLabel { op })
            .observe(took.as_secs_f64());
    }
}

/// The per-app function metrics, as Lambda reports them.
#[derive(Debug)]
pub struct FunctionMetrics {
    invocations: Family<AppOutcome, Counter>,
    duration: Family<AppLabel, Histogram>,
    cold_starts: Family<AppLabel, Counter>,
    init_duration: Family<AppLabel, Histogram>,
    concurrent: Family<AppLabel, Gauge>,
    workers: Family<AppLabel, Gauge>,
}

/// Function metrics no registry reports (a backend made on its own, in tests).
impl Default for FunctionMetrics {
    fn default() -> Self {
        Self::register(&mut Registry::default())
    }
}

impl FunctionMetrics {
    fn register(r: &mut Registry) -> Self {
        Self {
            invocations: registered(
                r,
                "function_invocations",
                "Function invocations, by app, version and outcome",
                Family::default(),
            ),
            duration: registered(
                r,
                "function_duration_seconds",
                "How long invocations ran in the function, by app",
                histograms(seconds_histogram),
            ),
            cold_starts: registered(
                r,
                "function_cold_starts",
                "Invocations that started a new worker (cold starts), by app",
                Family::default(),
            ),
            init_duration: registered(
                r,
                "function_init_duration_seconds",
                "How long new workers took to initialise, by app",
                histograms(seconds_histogram),
            ),
            concurrent: registered(
                r,
                "function_concurrent_executions",
                "Invocations running now, by app",
                Family::default(),
            ),
            workers: registered(
                r,
                "function_workers",
                "Workers (warm runtimes) running now, by app",
                Family::default(),
            ),
        }
    }

    /// The handles of one version of an app (`None`: the version is not
    /// known), resolved once (recording is then atomics only).
    pub fn app(&self, app: &str, version: Option<i64>) -> AppFunctionMetrics {
        let label = AppLabel {
            app: app.to_owned(),
        };
        let version = version.map(|v| v.to_string()).unwrap_or_default();
        let outcome = |outcome: InvocationOutcome| {
            self.invocations.get_or_create_owned(&AppOutcome {
                app: app.to_owned(),
                version: version.clone(),
                outcome: outcome.label(),
            })
        };
        AppFunctionMetrics {
            success: outcome(InvocationOutcome::Success),
            error: outcome(InvocationOutcome::Error),
            timeout: outcome(InvocationOutcome::Timeout),
            crash: outcome(InvocationOutcome::Crash),
            throttled: outcome(InvocationOutcome::Throttled),
            duration: self.duration.get_or_create_owned(&label),
            cold_starts: self.cold_starts.get_or_create_owned(&label),
            init_duration: self.init_duration.get_or_create_owned(&label),
            concurrent: self.concurrent.get_or_create_owned(&label),
            workers: self.workers.get_or_create_owned(&label),
        }
    }
}

/// One app's function metrics.
#[derive(Clone)]
pub struct AppFunctionMetrics {
    success: Counter,
    error: Counter,
    timeout: Counter,
    crash: Counter,
    throttled: Counter,
    duration: Histogram,
    cold_starts: Counter,
    init_duration: Histogram,
    concurrent: Gauge,
    workers: Gauge,
}

impl AppFunctionMetrics {
    /// An invocation ended; `ran` is how long it ran in the function (none
    /// when it never reached one).
    pub fn invoked(&self, outcome: InvocationOutcome, ran: Option<Duration>) {
        match outcome {
            InvocationOutcome::Success => &self.success,
            InvocationOutcome::Error => &self.error,
            InvocationOutcome::Timeout => &self.timeout,
            InvocationOutcome::Crash => &self.crash,
            InvocationOutcome::Throttled => &self.throttled,
        }
        .inc();
        if let Some(ran) = ran {
            self.duration.observe(ran.as_secs_f64());
        }
    }

    /// A new worker's first invocation, after `init` to initialise.
    pub fn cold_start(&self, init: Duration) {
        self.cold_starts.inc();
        self.init_duration.observe(init.as_secs_f64());
    }

    pub fn started_running(&self) {
        self.concurrent.inc();
    }

    pub fn stopped_running(&self) {
        self.concurrent.dec();
    }

    pub fn worker_started(&self) {
        self.workers.inc();
    }

    pub fn worker_stopped(&self) {
        self.workers.dec();
    }
}
