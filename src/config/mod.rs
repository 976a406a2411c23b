//! Typed, layered settings: built-in defaults, then the TOML file, then the
//! environment, then CLI flags. Validated once at start.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Map, Value};

mod sections;
pub use sections::{
    AuthConfig, BuilderConfig, CallbacksConfig, FunctionsConfig, InboxConfig, Isolation,
    ServerConfig, TierDetailsConfig,
};

/// A value that must never be printed.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"***\"")
    }
}

/// How logs are written.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Pretty,
    Json,
}

impl FromStr for LogFormat {
    type Err = ();

    fn from_str(text: &str) -> Result<Self, ()> {
        match text {
            "pretty" => Ok(LogFormat::Pretty),
            "json" => Ok(LogFormat::Json),
            _ => Err(()),
        }
    }
}

/// Everything the service can be told.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub listen: String,
    pub data_dir: PathBuf,
    pub database_url: Option<String>,
    /// Apply the store's migrations when `serve` starts (else run `orchestrator migrate`).
    pub migrate_on_start: bool,
    pub base_domain: String,
    pub log_format: LogFormat,
    /// Threads of the async runtime; 0 picks them (see [`Config::runtime_threads`]).
    pub worker_threads: usize,
    pub functions: FunctionsConfig,
    pub builder: BuilderConfig,
    pub tier_details: TierDetailsConfig,
    /// `[tiers.<name>]`: `jobIdentifier` and any other keys.
    pub tiers: BTreeMap<String, Map<String, Value>>,
    pub callbacks: CallbacksConfig,
    pub auth: AuthConfig,
    pub inbox: InboxConfig,
    pub server: ServerConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            data_dir: PathBuf::from("./data"),
            database_url: None,
            migrate_on_start: true,
            base_domain: "localhost".into(),
            log_format: LogFormat::Pretty,
            worker_threads: 0,
            functions: FunctionsConfig::default(),
            builder: BuilderConfig::default(),
            tier_details: TierDetailsConfig::default(),
            tiers: BTreeMap::new(),
            callbacks: CallbacksConfig::default(),
            auth: AuthConfig::default(),
            inbox: InboxConfig::default(),
            server: ServerConfig::default(),
        }
    }
}

/// A setting that cannot work.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid value for {key}: {message}")]
    Invalid { key: &'static str, message: String },
}

fn invalid(key: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        message: message.into(),
    }
}

/// Sets `target` when the variable is present.
fn assign<T: From<String>>(value: Option<String>, target: &mut T) {
    if let Some(value) = value {
        *target = value.into();
    }
}

/// Parses and sets `target` when the variable is present.
fn parse_into<T: FromStr>(
    key: &'static str,
    value: Option<String>,
    target: &mut T,
) -> Result<(), ConfigError> {
    if let Some(text) = value {
        *target = text
            .trim()
            .parse()
            .map_err(|_| invalid(key, format!("cannot use '{text}'")))?;
    }
    Ok(())
}

fn list(text: &str) -> Vec<Secret> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| Secret(s.to_owned()))
        .collect()
}

impl Config {
    /// Reads a TOML file over the defaults.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.into(),
            source,
        })?;
        Self::from_toml(&text).map_err(|message| ConfigError::Parse {
            path: path.into(),
            message,
        })
    }

    /// Parses TOML text over the defaults.
    pub fn from_toml(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|e| e.message().to_owned())
    }

    /// Applies environment variables (`get` looks one up, so tests need not touch the process environment).
    pub fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        assign(get("ORCHESTRATOR_LISTEN"), &mut self.listen);
        assign(get("ORCHESTRATOR_DATA_DIR"), &mut self.data_dir);
        assign(get("DATABASE_URL"), &mut self.database_url);
        assign(get("ORCHESTRATOR_BASE_DOMAIN"), &mut self.base_domain);
        assign(
            get("ORCHESTRATOR_FUNCTIONS_BACKEND"),
            &mut self.functions.backend,
        );
        assign(get("AWS_LAMBDA_ROLE_ARN"), &mut self.functions.role_arn);
        assign(
            get("ORCHESTRATOR_BUILDER_BACKEND"),
            &mut self.builder.backend,
        );
        assign(get("ORCHESTRATOR_JOBS_DIR"), &mut self.builder.jobs_dir);
        assign(
            get("ORCHESTRATOR_TIER_SOURCE"),
            &mut self.tier_details.source,
        );
        assign(get("TIER_DETAILS_TABLE"), &mut self.tier_details.table);
        assign(
            get("ORCHESTRATOR_WEBHOOK_URL"),
            &mut self.callbacks.webhook_url,
        );
        if let Some(v) = get("ORCHESTRATOR_API_TOKENS") {
            self.auth.api_tokens = list(&v);
        }
        if let Some(v) = get("ORCHESTRATOR_EVENT_API_KEYS") {
            self.auth.event_api_keys = list(&v);
        }
        parse_into(
            "ORCHESTRATOR_LOG_FORMAT",
            get("ORCHESTRATOR_LOG_FORMAT"),
            &mut self.log_format,
        )?;
        parse_into(
            "ORCHESTRATOR_JOB_TIMEOUT_SECS",
            get("ORCHESTRATOR_JOB_TIMEOUT_SECS"),
            &mut self.builder.job_timeout_secs,
        )?;
        parse_into(
            "ORCHESTRATOR_WORKER_THREADS",
            get("ORCHESTRATOR_WORKER_THREADS"),
            &mut self.worker_threads,
        )?;
        parse_into(
            "ORCHESTRATOR_FUNCTIONS_BATCH_SCHEDULING",
            get("ORCHESTRATOR_FUNCTIONS_BATCH_SCHEDULING"),
            &mut self.functions.batch_scheduling,
        )?;
        parse_into(
            "ORCHESTRATOR_FUNCTIONS_ISOLATION",
            get("ORCHESTRATOR_FUNCTIONS_ISOLATION"),
            &mut self.functions.isolation,
        )?;
        parse_into(
            "ORCHESTRATOR_MIGRATE_ON_START",
            get("ORCHESTRATOR_MIGRATE_ON_START"),
            &mut self.migrate_on_start,
        )?;
        parse_into(
            "ORCHESTRATOR_ALLOW_ANONYMOUS",
            get("ORCHESTRATOR_ALLOW_ANONYMOUS"),
            &mut self.auth.allow_anonymous,
        )?;
        Ok(())
    }

    /// Threads for the async runtime: `worker_threads`, or one per CPU; one
    /// fewer when this process proxies to the local function runtime, whose
    /// own thread (serving the workers' Runtime API) is as busy as the proxy
    /// then. On 2 CPUs that one thread fewer served the proxy benchmark
    /// ~14 % faster (fewer threads to wake and switch between).
    pub fn runtime_threads(&self, serves_proxy: bool, cpus: usize) -> usize {
        if self.worker_threads > 0 {
            return self.worker_threads;
        }
        if self.proxies_for_local_runtime(serves_proxy) {
            cpus.saturating_sub(1).max(1)
        } else {
            cpus.max(1)
        }
    }

    /// Whether this process runs as batch work for the scheduler: when it
    /// proxies for the local function runtime and `functions.batch_scheduling`
    /// is on. Its threads and its workers then hand each other every
    /// invocation; none of them preempts the one that woke it.
    pub fn batch_scheduling(&self, serves_proxy: bool) -> bool {
        self.proxies_for_local_runtime(serves_proxy) && self.functions.batch_scheduling
    }

    /// A process in a role that serves the proxy, with the local function runtime.
    fn proxies_for_local_runtime(&self, serves_proxy: bool) -> bool {
        serves_proxy && self.functions.backend == "local"
    }

    /// Whether any backend runs on AWS (then the SDK configuration is loaded).
    pub fn uses_aws(&self) -> bool {
        self.functions.backend == "aws"
            || self.builder.backend == "codebuild"
            || self.tier_details.source == "dynamodb"
    }

    /// Whether the store is PostgreSQL (shared by replicas) rather than SQLite.
    pub fn uses_postgres(&self) -> bool {
        let url = self.database_url();
        url.starts_with("postgres://") || url.starts_with("postgresql://")
    }

    /// The listen address.
    pub fn listen_addr(&self) -> Result<SocketAddr, ConfigError> {
        self.listen
            .parse()
            .map_err(|_| invalid("listen", format!("'{}' is not HOST:PORT", self.listen)))
    }

    /// `database_url`, or the SQLite file under `data_dir`.
    pub fn database_url(&self) -> String {
        self.database_url.clone().unwrap_or_else(|| {
            format!(
                "sqlite://{}",
                self.data_dir.join("orchestrator.db").display()
            )
        })
    }

    pub fn job_timeout(&self) -> Duration {
        Duration::from_secs(self.builder.job_timeout_secs)
    }

    /// Cross-field checks; the first problem found is reported.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.listen_addr()?;
        match self.functions.backend.as_str() {
            "local" => {}
            "aws" if self.functions.role_arn.is_none() => {
                return Err(invalid(
                    "functions.backend",
                    "aws needs functions.role_arn (AWS_LAMBDA_ROLE_ARN)",
                ));
            }
            "aws" => {
                if let Some(arch) = &self.functions.architecture {
                    if arch != "x86_64" && arch != "arm64" {
                        return Err(invalid(
                            "functions.architecture",
                            format!("'{arch}' (expected x86_64 or arm64)"),
                        ));
                    }
                }
            }
            other => {
                return Err(invalid(
                    "functions.backend",
                    format!("'{other}' (expected local or aws)"),
                ))
            }
        }
        let functions = &self.functions;
        if functions.max_processes < 16 {
            return Err(invalid("functions.max_processes", "must be at least 16"));
        }
        if functions.sandbox_uid_base < 1000
            || functions.sandbox_uid_count == 0
            || functions
                .sandbox_uid_base
                .checked_add(functions.sandbox_uid_count)
                .is_none_or(|end| end > u32::MAX - 2)
        {
            return Err(invalid(
                "functions.sandbox_uid_base",
                "the worker user ids must lie between 1000 and 4294967293",
            ));
        }
        if functions.max_queue == 0 || functions.max_queue_wait_ms == 0 {
            return Err(invalid(
                "functions.max_queue",
                "max_queue and max_queue_wait_ms must be at least 1",
            ));
        }
        if self.server.header_timeout_secs == 0 {
            return Err(invalid("server.header_timeout_secs", "must be at least 1"));
        }
        if functions.tmp_size_mb == 0 {
            return Err(invalid("functions.tmp_size_mb", "must be at least 1"));
        }
        match self.builder.backend.as_str() {
            "local" => {}
            "codebuild" if self.builder.poll_secs == 0 => {
                return Err(invalid("builder.poll_secs", "must be at least 1"));
            }
            "codebuild" => {}
            other => {
                return Err(invalid(
                    "builder.backend",
                    format!("'{other}' (expected local or codebuild)"),
                ))
            }
        }
        match self.tier_details.source.as_str() {
            "config" => {}
            "dynamodb" if self.tier_details.table.is_none() => {
                return Err(invalid(
                    "tier_details.source",
                    "dynamodb needs tier_details.table (TIER_DETAILS_TABLE)",
                ));
            }
            "dynamodb" => {}
            other => {
                return Err(invalid(
                    "tier_details.source",
                    format!("'{other}' (expected config or dynamodb)"),
                ))
            }
        }
        let url = self.database_url();
        if !url.starts_with("sqlite:") && !self.uses_postgres() {
            return Err(invalid(
                "database_url",
                "expected sqlite://PATH or postgres://USER@HOST/DATABASE",
            ));
        }
        if let Some(url) = &self.callbacks.webhook_url {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(invalid(
                    "callbacks.webhook_url",
                    format!("'{url}' is not an http(s) URL"),
                ));
            }
        }
        if self
            .auth
            .event_api_key_header
            .parse::<axum::http::HeaderName>()
            .is_err()
        {
            return Err(invalid(
                "auth.event_api_key_header",
                "not a valid header name",
            ));
        }
        if self.functions.max_workers < 1 || self.functions.idle_timeout_secs < 1 {
            return Err(invalid(
                "functions",
                "max_workers and idle_timeout_secs must be at least 1",
            ));
        }
        if self.functions.scale_out_delay_ms > 60_000 {
            return Err(invalid(
                "functions.scale_out_delay_ms",
                "must be at most 60000",
            ));
        }
        if self.worker_threads > 1024 {
            return Err(invalid("worker_threads", "must be at most 1024"));
        }
        if self.functions.reconcile_secs == 0 {
            return Err(invalid("functions.reconcile_secs", "must be at least 1"));
        }
        if self.functions.deploy_lease_secs == 0 {
            return Err(invalid("functions.deploy_lease_secs", "must be at least 1"));
        }
        if self.functions.sync_interval_ms < 50 {
            return Err(invalid("functions.sync_interval_ms", "must be at least 50"));
        }
        if self.base_domain.is_empty()
            || self.base_domain.starts_with('.')
            || self.base_domain.contains(':')
        {
            return Err(invalid(
                "base_domain",
                format!("'{}' is not a domain name", self.base_domain),
            ));
        }
        if self.inbox.max_attempts < 1 || self.inbox.concurrency < 1 || self.inbox.lease_secs < 2 {
            return Err(invalid(
                "inbox",
                "max_attempts and concurrency must be at least 1, lease_secs at least 2",
            ));
        }
        if self.builder.job_lease_secs < 3 {
            return Err(invalid("builder.job_lease_secs", "must be at least 3"));
        }
        if self.builder.job_timeout_secs == 0 {
            return Err(invalid("builder.job_timeout_secs", "must be at least 1"));
        }
        Ok(())
    }

    /// Whether the management routes are open to anyone.
    pub fn is_anonymous(&self) -> bool {
        self.auth.api_tokens.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layers_file_then_env() {
        let mut config = Config::from_toml(
            "listen = \"127.0.0.1:9000\"\n[tiers.basic]\njobIdentifier = \"provision-basic\"\nSIZE = 2\n[auth]\napi_tokens = [\"t1\"]\n",
        )
        .unwrap();
        assert_eq!(config.listen, "127.0.0.1:9000");
        assert_eq!(config.tiers["basic"]["SIZE"], 2);
        let env = |k: &str| match k {
            "ORCHESTRATOR_LISTEN" => Some("127.0.0.1:9001".to_owned()),
            "ORCHESTRATOR_EVENT_API_KEYS" => Some("a, b,".to_owned()),
            _ => None,
        };
        config.apply_env(env).unwrap();
        assert_eq!(config.listen, "127.0.0.1:9001");
        assert_eq!(
            config.auth.event_api_keys,
            vec![Secret("a".into()), Secret("b".into())]
        );
        assert!(config.validate().is_ok());
        assert!(
            !format!("{config:?}").contains("t1"),
            "tokens must not appear in Debug output"
        );
    }

    #[test]
    fn runtime_threads_leave_a_cpu_to_the_local_runtime_when_proxying() {
        let mut config = Config::default();
        assert_eq!(config.runtime_threads(true, 2), 1);
        assert_eq!(config.runtime_threads(true, 8), 7);
        assert_eq!(config.runtime_threads(true, 1), 1);
        assert_eq!(config.runtime_threads(false, 2), 2, "no proxy: one per CPU");
        config.functions.backend = "aws".into();
        assert_eq!(
            config.runtime_threads(true, 2),
            2,
            "no local runtime thread"
        );
        config
            .apply_env(|k| (k == "ORCHESTRATOR_WORKER_THREADS").then(|| "3".to_owned()))
            .unwrap();
        assert_eq!(config.runtime_threads(true, 2), 3, "set explicitly");
        let mut config = Config {
            worker_threads: 5000,
            ..Config::default()
        };
        let err = config.validate().unwrap_err();
        assert!(err.to_string().contains("worker_threads"), "{err}");
        config.worker_threads = 0;
        config.functions.scale_out_delay_ms = 60_001;
        let err = config.validate().unwrap_err();
        assert!(err.to_string().contains("scale_out_delay_ms"), "{err}");
    }

    #[test]
    fn batch_scheduling_when_proxying_for_the_local_runtime_unless_turned_off() {
        let mut config = Config::default();
        assert!(config.batch_scheduling(true));
        assert!(!config.batch_scheduling(false), "no proxy (--role api)");
        config
            .apply_env(|k| {
                (k == "ORCHESTRATOR_FUNCTIONS_BATCH_SCHEDULING").then(|| "false".to_owned())
            })
            .unwrap();
        assert!(!config.batch_scheduling(true), "turned off");
        let config = Config {
            functions: FunctionsConfig {
                backend: "aws".into(),
                ..FunctionsConfig::default()
            },
            ..Config::default()
        };
        assert!(!config.batch_scheduling(true), "no local runtime");
        let err = Config::default()
            .apply_env(|k| {
                (k == "ORCHESTRATOR_FUNCTIONS_BATCH_SCHEDULING").then(|| "often".to_owned())
            })
            .unwrap_err();
        assert!(err.to_string().contains("BATCH_SCHEDULING"), "{err}");
    }

    #[test]
    fn rejects_unparseable_environment_values() {
        for (key, value) in [
            ("ORCHESTRATOR_ALLOW_ANONYMOUS", "maybe"),
            ("ORCHESTRATOR_JOB_TIMEOUT_SECS", "soon"),
            ("ORCHESTRATOR_WORKER_THREADS", "many"),
            ("ORCHESTRATOR_LOG_FORMAT", "xml"),
        ] {
            let err = Config::default()
                .apply_env(|k| (k == key).then(|| value.to_owned()))
                .unwrap_err();
            assert!(err.to_string().contains(key), "{err}");
        }
        let mut config = Config::default();
        config
            .apply_env(|k| (k == "ORCHESTRATOR_ALLOW_ANONYMOUS").then(|| "true".to_owned()))
            .unwrap();
        assert!(config.auth.allow_anonymous);
    }

    #[test]
    fn rejects_unknown_keys_and_bad_combinations() {
        assert!(Config::from_toml("lisen = \"x\"").is_err());
        let mut config = Config::default();
        config.functions.backend = "aws".into();
        assert!(config
            .validate()
            .unwrap_err()
            .to_string()
            .contains("role_arn"));
        let mut config = Config::default();
        config.tier_details.source = "dynamodb".into();
        assert!(config.validate().unwrap_err().to_string().contains("table"));
    }
}
