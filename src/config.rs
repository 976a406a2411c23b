//! Typed, layered settings: built-in defaults, then the TOML file, then the
//! environment, then CLI flags. Validated once at start.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Map, Value};

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

/// Everything the service can be told.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub listen: String,
    pub data_dir: PathBuf,
    pub database_url: Option<String>,
    pub base_domain: String,
    pub log_format: LogFormat,
    pub functions: FunctionsConfig,
    pub builder: BuilderConfig,
    pub tier_details: TierDetailsConfig,
    /// `[tiers.<name>]`: `jobIdentifier` and any other keys.
    pub tiers: BTreeMap<String, Map<String, Value>>,
    pub callbacks: CallbacksConfig,
    pub auth: AuthConfig,
    pub inbox: InboxConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FunctionsConfig {
    pub backend: String,
    pub role_arn: Option<String>,
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
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TierDetailsConfig {
    /// `config` (the `[tiers.*]` tables) or `dynamodb`.
    pub source: String,
    pub table: Option<String>,
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

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            data_dir: PathBuf::from("./data"),
            database_url: None,
            base_domain: "localhost".into(),
            log_format: LogFormat::Pretty,
            functions: FunctionsConfig::default(),
            builder: BuilderConfig::default(),
            tier_details: TierDetailsConfig::default(),
            tiers: BTreeMap::new(),
            callbacks: CallbacksConfig::default(),
            auth: AuthConfig::default(),
            inbox: InboxConfig::default(),
        }
    }
}

impl Default for FunctionsConfig {
    fn default() -> Self {
        Self {
            backend: "local".into(),
            role_arn: None,
        }
    }
}

impl Default for BuilderConfig {
    fn default() -> Self {
        Self {
            backend: "local".into(),
            jobs_dir: PathBuf::from("./jobs"),
            job_timeout_secs: 3600,
        }
    }
}

impl Default for TierDetailsConfig {
    fn default() -> Self {
        Self {
            source: "config".into(),
            table: None,
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
        let number = |key: &'static str, text: String| {
            text.parse::<u64>()
                .map_err(|_| invalid(key, format!("'{text}' is not a number")))
        };
        if let Some(v) = get("ORCHESTRATOR_LISTEN") {
            self.listen = v;
        }
        if let Some(v) = get("ORCHESTRATOR_DATA_DIR") {
            self.data_dir = v.into();
        }
        if let Some(v) = get("DATABASE_URL") {
            self.database_url = Some(v);
        }
        if let Some(v) = get("ORCHESTRATOR_BASE_DOMAIN") {
            self.base_domain = v;
        }
        if let Some(v) = get("ORCHESTRATOR_LOG_FORMAT") {
            self.log_format = match v.as_str() {
                "json" => LogFormat::Json,
                "pretty" => LogFormat::Pretty,
                other => {
                    return Err(invalid(
                        "ORCHESTRATOR_LOG_FORMAT",
                        format!("'{other}' (expected pretty or json)"),
                    ))
                }
            };
        }
        if let Some(v) = get("ORCHESTRATOR_FUNCTIONS_BACKEND") {
            self.functions.backend = v;
        }
        if let Some(v) = get("AWS_LAMBDA_ROLE_ARN") {
            self.functions.role_arn = Some(v);
        }
        if let Some(v) = get("ORCHESTRATOR_BUILDER_BACKEND") {
            self.builder.backend = v;
        }
        if let Some(v) = get("ORCHESTRATOR_JOBS_DIR") {
            self.builder.jobs_dir = v.into();
        }
        if let Some(v) = get("ORCHESTRATOR_JOB_TIMEOUT_SECS") {
            self.builder.job_timeout_secs = number("ORCHESTRATOR_JOB_TIMEOUT_SECS", v)?;
        }
        if let Some(v) = get("ORCHESTRATOR_TIER_SOURCE") {
            self.tier_details.source = v;
        }
        if let Some(v) = get("TIER_DETAILS_TABLE") {
            self.tier_details.table = Some(v);
        }
        if let Some(v) = get("ORCHESTRATOR_WEBHOOK_URL") {
            self.callbacks.webhook_url = Some(v);
        }
        if let Some(v) = get("ORCHESTRATOR_API_TOKENS") {
            self.auth.api_tokens = list(&v);
        }
        if let Some(v) = get("ORCHESTRATOR_EVENT_API_KEYS") {
            self.auth.event_api_keys = list(&v);
        }
        if let Some(v) = get("ORCHESTRATOR_ALLOW_ANONYMOUS") {
            self.auth.allow_anonymous = matches!(v.as_str(), "1" | "true" | "yes");
        }
        Ok(())
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
                return Err(invalid(
                    "functions.backend",
                    "aws is not available in this version yet; use local",
                ))
            }
            other => {
                return Err(invalid(
                    "functions.backend",
                    format!("'{other}' (expected local or aws)"),
                ))
            }
        }
        match self.builder.backend.as_str() {
            "local" => {}
            "codebuild" => {
                return Err(invalid(
                    "builder.backend",
                    "codebuild is not available in this version yet; use local",
                ))
            }
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
            "dynamodb" => {
                return Err(invalid(
                    "tier_details.source",
                    "dynamodb is not available in this version yet; use config",
                ))
            }
            other => {
                return Err(invalid(
                    "tier_details.source",
                    format!("'{other}' (expected config or dynamodb)"),
                ))
            }
        }
        let url = self.database_url();
        if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            return Err(invalid(
                "database_url",
                "PostgreSQL is not available in this version yet; use sqlite://",
            ));
        }
        if !url.starts_with("sqlite:") {
            return Err(invalid("database_url", "expected sqlite://PATH"));
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
        if self.inbox.max_attempts < 1 || self.inbox.concurrency < 1 || self.inbox.lease_secs < 2 {
            return Err(invalid(
                "inbox",
                "max_attempts and concurrency must be at least 1, lease_secs at least 2",
            ));
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
