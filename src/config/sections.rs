//! The configuration's sections (`[functions]`, `[builder]`, …) and their defaults.

use std::path::PathBuf;

use serde::Deserialize;

use super::Secret;

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FunctionsConfig {
    /// `local` (this machine, Lambda Runtime API) or `aws`.
    pub backend: String,
    pub role_arn: Option<String>,
    /// Local runtime: most workers per app; more concurrent requests queue.
    pub max_workers: usize,
    /// Local runtime: beyond one worker per CPU, another starts only once the
    /// queue has stood still this long while those workers run invocations
    /// (0: at once).
    pub scale_out_delay_ms: u64,
    /// Local runtime: an idle worker stops after this many seconds.
    pub idle_timeout_secs: u64,
    /// Local runtime: workers, and a process that proxies for them, run as
    /// `SCHED_BATCH` (see [`crate::run_as_batch_work`]).
    pub batch_scheduling: bool,
    /// How often a proxy checks the store for apps changed by other replicas
    /// (deployed, deactivated, removed): the most a change takes to reach every replica.
    pub sync_interval_ms: u64,
    /// A deploy renews its heartbeat in the store every third of this; an app
    /// left `DEPLOYED` whose deploy went silent for longer (its process died)
    /// is deployed again by a proxy replica (at once on SQLite's next start).
    pub deploy_lease_secs: u64,
    /// AWS Lambda: `x86_64` (Lambda's default) or `arm64`.
    pub architecture: Option<String>,
    /// AWS Lambda: how often active apps are checked against their functions.
    pub reconcile_secs: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BuilderConfig {
    /// `local` (processes) or `codebuild`.
    pub backend: String,
    /// Local job `X` runs `<jobs_dir>/X`.
    pub jobs_dir: PathBuf,
    /// A local job running longer is killed and fails.
    pub job_timeout_secs: u64,
    /// A running local job's lease, renewed by its process every third of it;
    /// when the process dies, another replica re-runs the job once it expires.
    pub job_lease_secs: u64,
    /// CodeBuild: how often running builds are polled (`BatchGetBuilds`); the
    /// EventBridge state-change event, when it arrives first, wins.
    pub poll_secs: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TierDetailsConfig {
    /// `config` (the `[tiers.*]` tables) or `dynamodb`.
    pub source: String,
    pub table: Option<String>,
    /// DynamoDB: how long a tier's details are reused before reading them again.
    pub cache_ttl_secs: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CallbacksConfig {
    /// ARC SaaS tenant-management `POST /webhook` URL.
    pub webhook_url: Option<String>,
    pub timeout_secs: u64,
}

#[derive(Debug, Clone, Deserialize)]
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
}

#[derive(Debug, Clone, Deserialize)]
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
            backend: "local".into(),
            role_arn: None,
            max_workers: 4,
            scale_out_delay_ms: 20,
            idle_timeout_secs: 300,
            batch_scheduling: true,
            sync_interval_ms: 1000,
            deploy_lease_secs: 30,
            architecture: None,
            reconcile_secs: 60,
        }
    }
}

impl Default for BuilderConfig {
    fn default() -> Self {
        Self {
            backend: "local".into(),
            jobs_dir: PathBuf::from("./jobs"),
            job_timeout_secs: 3600,
            job_lease_secs: 30,
            poll_secs: 30,
        }
    }
}

impl Default for TierDetailsConfig {
    fn default() -> Self {
        Self {
            source: "config".into(),
            table: None,
            cache_ttl_secs: 60,
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
