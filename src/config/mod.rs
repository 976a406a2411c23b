//! Typed, layered settings: built-in defaults, then the TOML file, then the
//! environment (one rule for every key, see [`env`]), then CLI flags.
//! Backends are enums carrying their own settings ([`backends`]); what is
//! left to check across keys is checked once, in [`Config::validate`].

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

mod backends;
pub mod env;
mod flat;
mod sections;
pub use backends::{
    Architecture, AwsLambdaSettings, BuilderBackend, FunctionsBackend, StoreLocation,
    TierDetailsSource,
};
pub use sections::{
    AuthConfig, BuilderConfig, CallbacksConfig, FunctionsConfig, InboxConfig, Isolation,
    LambdaAccessKey, MetricsConfig, NotificationsConfig, SbtConfig, ServerConfig,
    TierDetailsConfig, WebhookSink,
};

/// A value that must never be printed (its `Debug` is `***`). It is
/// serialized as itself: only the environment layering writes one out.
#[derive(Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"***\"")
    }
}

/// How logs are written.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Pretty,
    Json,
}

/// Everything the service can be told.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// `HOST:PORT`; the host may be a name (`localhost:8080`).
    pub listen: String,
    pub data_dir: PathBuf,
    pub database_url: Option<String>,
    /// Apply the store's migrations when `serve` starts (else run `orchestrator migrate`).
    pub migrate_on_start: bool,
    pub base_domain: String,
    pub log_format: LogFormat,
    /// One log line per answered request (method, route, status, duration, request id).
    pub access_log: bool,
    /// Threads of the async runtime; 0 picks them (see [`Config::runtime_threads`]).
    pub worker_threads: usize,
    #[serde(
        deserialize_with = "flat::read_functions",
        serialize_with = "flat::write_functions"
    )]
    pub functions: FunctionsConfig,
    #[serde(
        deserialize_with = "flat::read_builder",
        serialize_with = "flat::write_builder"
    )]
    pub builder: BuilderConfig,
    #[serde(
        deserialize_with = "flat::read_tier_details",
        serialize_with = "flat::write_tier_details"
    )]
    pub tier_details: TierDetailsConfig,
    /// `[tiers.<name>]`: `jobIdentifier` and any other keys.
    pub tiers: BTreeMap<String, Map<String, Value>>,
    pub callbacks: CallbacksConfig,
    pub auth: AuthConfig,
    pub inbox: InboxConfig,
    pub server: ServerConfig,
    pub metrics: MetricsConfig,
    /// `[sbt]`: the sbt-aws application plane.
    pub sbt: SbtConfig,
    /// `[notifications]`: tenant transitions published to EventBridge and webhooks.
    pub notifications: NotificationsConfig,
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
            access_log: true,
            worker_threads: 0,
            functions: FunctionsConfig::default(),
            builder: BuilderConfig::default(),
            tier_details: TierDetailsConfig::default(),
            tiers: BTreeMap::new(),
            callbacks: CallbacksConfig::default(),
            auth: AuthConfig::default(),
            inbox: InboxConfig::default(),
            server: ServerConfig::default(),
            metrics: MetricsConfig::default(),
            sbt: SbtConfig::default(),
            notifications: NotificationsConfig::default(),
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
    /// The file's syntax or a value in it; the message names the line and the key.
    #[error("invalid config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    /// A variable of the environment.
    #[error("invalid environment variable {message}")]
    Env { message: String },
    #[error("invalid value for {key}: {message}")]
    Invalid { key: &'static str, message: String },
}

fn invalid(key: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        message: message.into(),
    }
}

/// Checks that a number is at least `min`.
fn at_least(key: &'static str, value: u64, min: u64) -> Result<(), ConfigError> {
    match value >= min {
        true => Ok(()),
        false => Err(invalid(key, format!("must be at least {min}"))),
    }
}

/// Checks that a number is at most `max`.
fn at_most(key: &'static str, value: u64, max: u64) -> Result<(), ConfigError> {
    match value <= max {
        true => Ok(()),
        false => Err(invalid(key, format!("must be at most {max}"))),
    }
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

    /// Parses TOML text over the defaults. The error names the line, shows
    /// it, and says what is wrong with which key.
    pub fn from_toml(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|e| e.to_string().trim_end().to_owned())
    }

    /// Applies the environment ([`env`]'s rule and aliases); `get` looks a
    /// variable up, so tests need not touch the process environment.
    pub fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        let env_error = |message: String| ConfigError::Env { message };
        let as_value = |config: &Config| {
            serde_json::to_value(config).map_err(|e| env_error(format!("(layering): {e}")))
        };
        let template = as_value(&Config::default())?;
        let mut settings = as_value(self)?;
        let applied = env::overlay(&mut settings, &template, &get).map_err(env_error)?;
        if applied.is_empty() {
            return Ok(());
        }
        *self = serde_json::from_value(settings).map_err(|e| {
            // Say which variables could have caused it (the message names the key).
            let from: Vec<String> = applied
                .iter()
                .map(|a| format!("{} ({})", a.variable, a.path))
                .collect();
            env_error(format!("{}: {e}", from.join(", ")))
        })?;
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
        serves_proxy && self.functions.backend == FunctionsBackend::Local
    }

    /// The store `database_url` names (SQLite under `data_dir` by default).
    pub fn store(&self) -> Result<StoreLocation, ConfigError> {
        StoreLocation::from_url(self.database_url.as_deref(), &self.data_dir)
            .map_err(|why| invalid("database_url", why))
    }

    /// Whether the store is PostgreSQL (shared by replicas) rather than SQLite.
    pub fn uses_postgres(&self) -> bool {
        matches!(self.store(), Ok(StoreLocation::Postgres { .. }))
    }

    pub fn job_timeout(&self) -> Duration {
        Duration::from_secs(self.builder.job_timeout_secs)
    }

    /// Checks what the types cannot say; the first problem found is reported.
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_listen(&self.listen)?;
        self.store()?;
        let functions = &self.functions;
        at_least(
            "functions.max_processes",
            functions.max_processes.into(),
            16,
        )?;
        let uid_end =
            u64::from(functions.sandbox_uid_base) + u64::from(functions.sandbox_uid_count);
        if functions.sandbox_uid_base < 1000
            || functions.sandbox_uid_count == 0
            || uid_end > u64::from(u32::MAX - 2)
        {
            return Err(invalid(
                "functions.sandbox_uid_base",
                "the worker user ids must lie between 1000 and 4294967293",
            ));
        }
        at_least("functions.max_queue", functions.max_queue as u64, 1)?;
        at_least(
            "functions.max_queue_wait_ms",
            functions.max_queue_wait_ms,
            1,
        )?;
        at_least("functions.tmp_size_mb", functions.tmp_size_mb, 1)?;
        if functions.log_retention_bytes != 0 {
            at_least(
                "functions.log_retention_bytes",
                functions.log_retention_bytes,
                64 * 1024,
            )
            .map_err(|_| {
                invalid(
                    "functions.log_retention_bytes",
                    "must be 0 (keep no logs) or at least 65536",
                )
            })?;
        }
        at_least("functions.max_workers", functions.max_workers as u64, 1)?;
        at_least(
            "functions.idle_timeout_secs",
            functions.idle_timeout_secs,
            1,
        )?;
        at_most(
            "functions.scale_out_delay_ms",
            functions.scale_out_delay_ms,
            60_000,
        )?;
        at_least("functions.reconcile_secs", functions.reconcile_secs, 1)?;
        at_least(
            "functions.deploy_lease_secs",
            functions.deploy_lease_secs,
            1,
        )?;
        at_least("functions.sync_interval_ms", functions.sync_interval_ms, 50)?;
        at_least(
            "functions.async_retry_delay_ms",
            functions.async_retry_delay_ms,
            10,
        )?;
        at_least(
            "server.header_timeout_secs",
            self.server.header_timeout_secs,
            1,
        )?;
        at_most("worker_threads", self.worker_threads as u64, 1024)?;
        at_least(
            "inbox.max_attempts",
            self.inbox.max_attempts.max(0) as u64,
            1,
        )?;
        at_least("inbox.concurrency", self.inbox.concurrency as u64, 1)?;
        at_least("inbox.lease_secs", self.inbox.lease_secs, 2)?;
        at_least("builder.job_lease_secs", self.builder.job_lease_secs, 3)?;
        at_least("builder.job_timeout_secs", self.builder.job_timeout_secs, 1)?;
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
        if self.base_domain.is_empty()
            || self.base_domain.starts_with('.')
            || self.base_domain.contains(':')
        {
            return Err(invalid(
                "base_domain",
                format!("'{}' is not a domain name", self.base_domain),
            ));
        }
        Ok(())
    }

    /// Whether the management routes are open to anyone.
    pub fn is_anonymous(&self) -> bool {
        self.auth.api_tokens.is_empty()
    }
}

/// `HOST:PORT`, where the host is an IP address (IPv6 in brackets) or a name.
fn check_listen(listen: &str) -> Result<(), ConfigError> {
    let bad = || invalid("listen", format!("'{listen}' is not HOST:PORT"));
    let (host, port) = listen.rsplit_once(':').ok_or_else(bad)?;
    port.parse::<u16>().map_err(|_| bad())?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let name_ok = !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty() && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    match name_ok || host.parse::<std::net::IpAddr>().is_ok() {
        true => Ok(()),
        false => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn aws() -> FunctionsBackend {
        FunctionsBackend::Aws(AwsLambdaSettings {
            role_arn: "arn:aws:iam::1:role/r".into(),
            architecture: None,
        })
    }

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
            "ORCHESTRATOR_INBOX__CONCURRENCY" => Some("3".to_owned()),
            "ORCHESTRATOR_FUNCTIONS__MAX_WORKERS" => Some("7".to_owned()),
            _ => None,
        };
        config.apply_env(env).unwrap();
        assert_eq!(config.listen, "127.0.0.1:9001");
        assert_eq!(
            config.auth.event_api_keys,
            vec![Secret("a".into()), Secret("b".into())]
        );
        assert_eq!(
            config.auth.api_tokens,
            vec![Secret("t1".into())],
            "kept from the file"
        );
        assert_eq!(config.tiers["basic"]["jobIdentifier"], "provision-basic");
        assert_eq!(config.inbox.concurrency, 3, "every key has a variable");
        assert_eq!(config.functions.max_workers, 7);
        assert!(config.validate().is_ok());
        assert!(
            !format!("{config:?}").contains("t1"),
            "tokens must not appear in Debug output"
        );
    }

    #[test]
    fn backends_are_chosen_with_their_own_settings() {
        let config = Config::from_toml(
            "[functions]\nbackend = \"aws\"\nrole_arn = \"arn:r\"\narchitecture = \"arm64\"\n\
             [builder]\nbackend = \"codebuild\"\npoll_secs = 5\n\
             [tier_details]\nsource = \"dynamodb\"\ntable = \"tiers\"\n",
        )
        .unwrap();
        assert_eq!(
            config.functions.backend,
            FunctionsBackend::Aws(AwsLambdaSettings {
                role_arn: "arn:r".into(),
                architecture: Some(Architecture::Arm64)
            })
        );
        assert_eq!(
            config.builder.backend,
            BuilderBackend::CodeBuild { poll_secs: 5 }
        );
        assert_eq!(
            config.tier_details.source,
            TierDetailsSource::DynamoDb {
                table: "tiers".into(),
                cache_ttl_secs: 60
            }
        );
        // The same from the environment, by the old names.
        let mut from_env = Config::default();
        from_env
            .apply_env(|k| match k {
                "ORCHESTRATOR_FUNCTIONS_BACKEND" => Some("aws".to_owned()),
                "AWS_LAMBDA_ROLE_ARN" => Some("arn:r".to_owned()),
                "ORCHESTRATOR_TIER_SOURCE" => Some("dynamodb".to_owned()),
                "TIER_DETAILS_TABLE" => Some("tiers".to_owned()),
                _ => None,
            })
            .unwrap();
        assert!(
            matches!(from_env.functions.backend, FunctionsBackend::Aws(ref a) if a.role_arn == "arn:r")
        );
        // A role in the environment does not stop a local run.
        let mut local = Config::default();
        local
            .apply_env(|k| (k == "AWS_LAMBDA_ROLE_ARN").then(|| "arn:r".to_owned()))
            .unwrap();
        assert_eq!(local.functions.backend, FunctionsBackend::Local);
    }

    #[test]
    fn a_backend_without_its_settings_cannot_be_built_and_the_error_names_the_line() {
        let err = Config::from_toml("listen = \"127.0.0.1:1\"\n\n[functions]\nbackend = \"aws\"\n")
            .unwrap_err();
        assert!(err.contains("role_arn"), "{err}");
        assert!(
            err.contains("line 3"),
            "the [functions] table's line: {err}"
        );
        let err = Config::from_toml("[tier_details]\nsource = \"dynamodb\"\n").unwrap_err();
        assert!(err.contains("table"), "{err}");
        let err = Config::from_toml("[builder]\nbackend = \"lambda\"\n").unwrap_err();
        assert!(err.contains("local or codebuild"), "{err}");
        let err = Config::from_toml("[inbox]\nconcurrency = \"many\"\n").unwrap_err();
        assert!(err.contains("concurrency") && err.contains("line"), "{err}");
        let err = Config::from_toml("worker_threads = \"x\"\n").unwrap_err();
        assert!(
            err.contains("line 1") && err.contains("worker_threads"),
            "{err}"
        );
        let err = Config::from_toml("listen = \n").unwrap_err();
        assert!(err.contains("line 1"), "syntax: {err}");
        let err = Config::from_toml("[functions]\nmax_wokers = 3\n").unwrap_err();
        assert!(err.contains("max_wokers"), "{err}");
        let err = Config::default()
            .apply_env(|k| (k == "ORCHESTRATOR_FUNCTIONS_BACKEND").then(|| "aws".to_owned()))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("ORCHESTRATOR_FUNCTIONS_BACKEND") && err.contains("role_arn"),
            "{err}"
        );
    }

    #[test]
    fn listen_takes_host_names() {
        for ok in [
            "localhost:8080",
            "0.0.0.0:80",
            "[::1]:8080",
            "api.internal:9000",
        ] {
            let config = Config {
                listen: ok.into(),
                ..Config::default()
            };
            assert!(config.validate().is_ok(), "{ok}");
        }
        for bad in ["localhost", ":8080", "host:port", "a b:1", "host:70000"] {
            let config = Config {
                listen: bad.into(),
                ..Config::default()
            };
            let err = config.validate().unwrap_err().to_string();
            assert!(err.contains("listen"), "{bad}: {err}");
        }
    }

    #[test]
    fn runtime_threads_leave_a_cpu_to_the_local_runtime_when_proxying() {
        let mut config = Config::default();
        assert_eq!(config.runtime_threads(true, 2), 1);
        assert_eq!(config.runtime_threads(true, 8), 7);
        assert_eq!(config.runtime_threads(true, 1), 1);
        assert_eq!(config.runtime_threads(false, 2), 2, "no proxy: one per CPU");
        config.functions.backend = aws();
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
        let mut config = Config::default();
        config.functions.backend = aws();
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
            ("ORCHESTRATOR_FUNCTIONS_ISOLATION", "often"),
            ("ORCHESTRATOR_INBOX__MAX_ATTEMPTS", "-"),
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
    fn rejects_unknown_keys_and_bad_stores() {
        assert!(Config::from_toml("lisen = \"x\"").is_err());
        let config = Config {
            database_url: Some("mysql://x".into()),
            ..Config::default()
        };
        assert!(config
            .validate()
            .unwrap_err()
            .to_string()
            .contains("database_url"));
        let config = Config {
            database_url: Some("postgres://u:secret@db/x".into()),
            ..Config::default()
        };
        assert!(config.uses_postgres());
        assert_eq!(config.store().unwrap().to_string(), "postgres://***@db/x");
    }

    #[test]
    fn log_retention_is_off_or_at_least_64_kib() {
        for (bytes, ok) in [(0, true), (65_536, true), (1_000, false)] {
            let mut config = Config::default();
            config.functions.log_retention_bytes = bytes;
            let checked = config.validate();
            assert_eq!(checked.is_ok(), ok, "{bytes}: {checked:?}");
        }
    }
}
