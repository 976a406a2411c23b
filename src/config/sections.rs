//! The configuration's sections (`[functions]`, `[builder]`, …) and their defaults.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::backends::{BuilderBackend, FunctionsBackend, TierDetailsSource};
use super::Secret;

/// `[functions]`: the backend (with its own settings), then the local
/// runtime's settings, which only the local backend reads.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct FunctionsConfig {
    /// `backend = "local"` (this machine, Lambda Runtime API) or `"aws"` with `role_arn`.
    #[serde(skip)]
    pub backend: FunctionsBackend,
    /// Local runtime: most workers per app; more concurrent requests queue.
    pub max_workers: usize,
    /// Local runtime: beyond one worker per CPU, another starts only once the
    /// queue has stood still this long while those workers run invocations
    /// (0: at once).
    pub scale_out_delay_ms: u64,
    /// Local runtime: an idle worker stops after this many seconds.
    pub idle_timeout_secs: u64,
    /// Local runtime: workers, and a process that proxies for them, run as
    /// `SCHED_BATCH` (see [`crate::support::run_as_batch_work`]).
    pub batch_scheduling: bool,
    /// How often a proxy checks the store for apps changed by other replicas
    /// (deployed, deactivated, removed): the most a change takes to reach every replica.
    pub sync_interval_ms: u64,
    /// A deploy renews its heartbeat in the store every third of this; an app
    /// left `DEPLOYED` whose deploy went silent for longer (its process died)
    /// is deployed again by a proxy replica (at once on SQLite's next start).
    pub deploy_lease_secs: u64,
    /// Backends whose functions live elsewhere (AWS Lambda): how often
    /// active apps are checked against their functions.
    pub reconcile_secs: u64,
    /// Local runtime: how workers are confined (see [`Isolation`]).
    pub isolation: Isolation,
    /// Local runtime, sandboxed: the first of the user ids workers run as
    /// (one per worker, claimed through a lock file, never the service's).
    pub sandbox_uid_base: u32,
    /// Local runtime, sandboxed: how many user ids from `sandbox_uid_base` may be used.
    pub sandbox_uid_count: u32,
    /// Local runtime: most processes and threads one worker may run (Lambda: 1024).
    pub max_processes: u32,
    /// Local runtime, sandboxed: size of a worker's private `/tmp` in MiB
    /// (Lambda's default ephemeral storage: 512).
    pub tmp_size_mb: u64,
    /// Local runtime: most invocations an app may have waiting for a worker;
    /// beyond it the proxy answers `429`, as API Gateway does for a throttled function.
    pub max_queue: usize,
    /// Local runtime: longest an invocation waits for a worker before it is
    /// answered `429` instead.
    pub max_queue_wait_ms: u64,
    /// Local runtime: bytes of output kept per app (`GET /apps/{name}/logs`);
    /// the oldest lines go first; `0` keeps none.
    pub log_retention_bytes: u64,
    /// An asynchronous invocation (`Event`) that failed runs again after
    /// this many milliseconds times the runs made (Lambda: 1, then 2 minutes).
    pub async_retry_delay_ms: u64,
    /// Local runtime: the interpreter a runtime runs on, when it is not the
    /// one found on the search path (`"nodejs22.x" = "/opt/node22/bin/node"`);
    /// each must be the version its runtime names.
    pub runtimes: std::collections::BTreeMap<String, PathBuf>,
}

/// How local workers are confined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Isolation {
    /// Sandboxed where this machine allows it; otherwise one warning at start
    /// and `isolation: "none"` on `/health`.
    #[default]
    Auto,
    /// Sandboxed, or the service refuses to start.
    Sandbox,
    /// Plain child processes of the service (trusted code only).
    None,
}

/// `[builder]`: the backend (with its own settings), then the local jobs' settings.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct BuilderConfig {
    /// `backend = "local"` (processes) or `"codebuild"` with `poll_secs`.
    #[serde(skip)]
    pub backend: BuilderBackend,
    /// Local job `X` runs `<jobs_dir>/X`.
    pub jobs_dir: PathBuf,
    /// A local job running longer is killed and fails.
    pub job_timeout_secs: u64,
    /// A running local job's lease, renewed by its process every third of it;
    /// when the process dies, another replica re-runs the job once it expires.
    pub job_lease_secs: u64,
}

/// `[tier_details]`: where tier details come from.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct TierDetailsConfig {
    /// `source = "config"` (the `[tiers.*]` tables) or `"dynamodb"` with `table`.
    #[serde(skip)]
    pub source: TierDetailsSource,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct CallbacksConfig {
    /// ARC SaaS tenant-management `POST /webhook` URL.
    pub webhook_url: Option<String>,
    pub timeout_secs: u64,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Bearer tokens for the management routes (and accepted for events).
    pub api_tokens: Vec<Secret>,
    /// Keys accepted for `POST /events…`.
    pub event_api_keys: Vec<Secret>,
    /// Header carrying an event API key.
    pub event_api_key_header: String,
    /// Allow listening beyond loopback without tokens.
    pub allow_anonymous: bool,
    /// Access keys an AWS client may sign Lambda Invoke API requests with
    /// (SigV4), when `api_tokens` are set; without tokens any signature is accepted.
    pub lambda_access_keys: Vec<LambdaAccessKey>,
}

/// `[[auth.lambda_access_keys]]`: an AWS-style access key for the Invoke API.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LambdaAccessKey {
    pub access_key_id: String,
    pub secret_access_key: Secret,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct InboxConfig {
    /// Attempts before a transiently failing event is `dead`.
    pub max_attempts: i64,
    pub backoff_base_ms: u64,
    pub backoff_max_ms: u64,
    /// Events handled at once.
    pub concurrency: usize,
    /// How long a claimed event is leased before another worker may take it.
    pub lease_secs: u64,
    /// How often due retries are looked for.
    pub poll_ms: u64,
}

impl Default for FunctionsConfig {
    fn default() -> Self {
        Self {
            backend: FunctionsBackend::Local,
            max_workers: 4,
            scale_out_delay_ms: 20,
            idle_timeout_secs: 300,
            batch_scheduling: true,
            sync_interval_ms: 1000,
            deploy_lease_secs: 30,
            reconcile_secs: 60,
            isolation: Isolation::Auto,
            sandbox_uid_base: 3_000_000,
            sandbox_uid_count: 65_536,
            max_processes: 1024,
            tmp_size_mb: 512,
            max_queue: 100,
            max_queue_wait_ms: 10_000,
            log_retention_bytes: 4 * 1024 * 1024,
            async_retry_delay_ms: 60_000,
            runtimes: Default::default(),
        }
    }
}

impl Default for BuilderConfig {
    fn default() -> Self {
        Self {
            backend: BuilderBackend::Local,
            jobs_dir: PathBuf::from("./jobs"),
            job_timeout_secs: 3600,
            job_lease_secs: 30,
        }
    }
}

impl Default for CallbacksConfig {
    fn default() -> Self {
        Self {
            webhook_url: None,
            timeout_secs: 10,
        }
    }
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            api_tokens: Vec::new(),
            event_api_keys: Vec::new(),
            event_api_key_header: "x-api-key".into(),
            allow_anonymous: false,
            lambda_access_keys: Vec::new(),
        }
    }
}

impl Default for InboxConfig {
    fn default() -> Self {
        Self {
            max_attempts: 8,
            backoff_base_ms: 1000,
            backoff_max_ms: 300_000,
            concurrency: 16,
            lease_secs: 120,
            poll_ms: 500,
        }
    }
}

/// `[metrics]`: where `GET /metrics` is served besides the main address.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// `HOST:PORT` of an address serving only `GET /metrics`, without a token
    /// (for a scraper on a private network); none by default.
    pub listen: Option<String>,
}

/// `[server]`: how the HTTP server treats its connections.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// A connection that has not sent a whole request head this long after
    /// it opened or after its last response (idle keep-alive) is closed.
    pub header_timeout_secs: u64,
    /// Most connections open at once; 0: half the process's file descriptor
    /// limit. Beyond it new connections wait in the listen backlog.
    pub max_connections: usize,
    /// At shutdown, how long open requests may take before their connections are dropped.
    pub shutdown_timeout_secs: u64,
    /// At shutdown, how long running local jobs have between `SIGTERM` and `SIGKILL`.
    pub job_stop_grace_secs: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            header_timeout_secs: 10,
            max_connections: 0,
            shutdown_timeout_secs: 10,
            job_stop_grace_secs: 5,
        }
    }
}

/// `[sbt]`: this service as an application plane of AWS's SaaS Builder
/// Toolkit (sbt-aws): which control-plane events it takes, what their jobs
/// get, and where and how it answers.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct SbtConfig {
    /// The control plane's bus (ARN or name) the outcomes are put on with
    /// `PutEvents`; none: outcomes are only recorded.
    pub event_bus: Option<String>,
    /// Sources accepted on incoming events (sbt-aws 0.9: `sbt.control.plane`;
    /// 0.8: `controlPlaneEventSource`).
    pub control_plane_sources: Vec<String>,
    /// The source of the events this service puts.
    pub application_plane_source: String,
    /// Prefixed to outgoing detail-types (`sbt_aws_provisionSuccess`; 0.8: empty).
    pub detail_type_prefix: String,
    /// Detail-types that onboard a tenant (0.9 and 0.8 names).
    pub onboarding_detail_types: Vec<String>,
    /// Detail-types that offboard a tenant.
    pub offboarding_detail_types: Vec<String>,
    /// Detail-types that activate (resume) a tenant.
    pub activate_detail_types: Vec<String>,
    /// Detail-types that deactivate (suspend) a tenant.
    pub deactivate_detail_types: Vec<String>,
    /// Detail fields a job gets as they are (ScriptJob's `environmentStringVariablesFromIncomingEvent`).
    pub string_variables: Vec<String>,
    /// Detail fields a job gets as JSON text (`environmentJSONVariablesFromIncomingEvent`).
    pub json_variables: Vec<String>,
    /// Job outputs reported as `jobOutput.tenantData`.
    pub tenant_data: Vec<String>,
    /// Job outputs reported as `jobOutput.tenantRegistrationData`.
    pub tenant_registration_data: Vec<String>,
}

impl Default for SbtConfig {
    fn default() -> Self {
        let names = |list: &[&str]| list.iter().map(|s| (*s).to_owned()).collect();
        Self {
            event_bus: None,
            control_plane_sources: names(&["sbt.control.plane", "controlPlaneEventSource"]),
            application_plane_source: "sbt.application.plane".into(),
            detail_type_prefix: "sbt_aws_".into(),
            onboarding_detail_types: names(&["sbt_aws_onboardingRequest", "onboardingRequest"]),
            offboarding_detail_types: names(&["sbt_aws_offboardingRequest", "offboardingRequest"]),
            activate_detail_types: names(&["sbt_aws_activateRequest", "activateRequest"]),
            deactivate_detail_types: names(&["sbt_aws_deactivateRequest", "deactivateRequest"]),
            string_variables: names(&["tenantId", "tier", "tenantName", "email"]),
            json_variables: Vec::new(),
            tenant_data: Vec::new(),
            tenant_registration_data: Vec::new(),
        }
    }
}

/// `[notifications]`: where every tenant transition and final job outcome
/// is published (each delivered at least once through the inbox).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct NotificationsConfig {
    /// An EventBridge bus (ARN or name): `PutEvents`, detail-type
    /// `orchestrator.tenant.<transition>`.
    pub event_bus: Option<String>,
    /// Receivers of Standard Webhooks (`webhook-id`, `webhook-timestamp`,
    /// `webhook-signature`).
    pub webhooks: Vec<WebhookSink>,
}

/// `[[notifications.webhooks]]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSink {
    pub url: String,
    /// `whsec_` and the base64 of the signing key, as Standard Webhooks spells it.
    pub secret: Secret,
}
