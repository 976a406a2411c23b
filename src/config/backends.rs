//! Which backend each family uses, as enums carrying the settings only that
//! backend has: "aws without a role" or "dynamodb without a table" cannot be
//! built, and each family is chosen in one exhaustive `match`.
//!
//! How the file's flat sections become these enums: [`super::flat`].

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Where apps' functions run.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum FunctionsBackend {
    /// This machine: the embedded Lambda runtime (its settings are the local
    /// runtime's keys of [`FunctionsConfig`]).
    #[default]
    Local,
    /// AWS Lambda.
    Aws(AwsLambdaSettings),
}

/// `functions.backend = "aws"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsLambdaSettings {
    /// The functions' execution role.
    pub role_arn: String,
    /// `None`: Lambda's default (`x86_64`).
    pub architecture: Option<Architecture>,
}

/// A Lambda instruction set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Architecture {
    #[serde(rename = "x86_64")]
    X86_64,
    #[serde(rename = "arm64")]
    Arm64,
}

impl Architecture {
    pub fn as_str(self) -> &'static str {
        match self {
            Architecture::X86_64 => "x86_64",
            Architecture::Arm64 => "arm64",
        }
    }
}

/// Where build jobs run.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum BuilderBackend {
    /// Processes on this machine: `<jobs_dir>/<jobIdentifier>`.
    #[default]
    Local,
    /// AWS CodeBuild: the job identifier names the project.
    CodeBuild {
        /// How often running builds are polled (`BatchGetBuilds`), in seconds;
        /// the EventBridge state-change event, when it arrives first, wins.
        poll_secs: u64,
    },
}

/// Where tier details come from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum TierDetailsSource {
    /// The `[tiers.<name>]` tables of the configuration.
    #[default]
    Config,
    /// A DynamoDB table, partition key `tier` (string).
    DynamoDb {
        table: String,
        /// How long a tier read from the table is reused.
        cache_ttl_secs: u64,
    },
}

/// The store `database_url` names.
#[derive(Clone, PartialEq, Eq)]
pub enum StoreLocation {
    /// One process owns the file.
    Sqlite { url: String },
    /// Shared by replicas.
    Postgres { url: String },
}

impl StoreLocation {
    /// Reads `database_url`, or the SQLite file under `data_dir`.
    pub fn from_url(url: Option<&str>, data_dir: &std::path::Path) -> Result<Self, String> {
        let Some(url) = url else {
            let path: PathBuf = data_dir.join("orchestrator.db");
            return Ok(StoreLocation::Sqlite {
                url: format!("sqlite://{}", path.display()),
            });
        };
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(StoreLocation::Postgres {
                url: url.to_owned(),
            })
        } else if url.starts_with("sqlite:") {
            Ok(StoreLocation::Sqlite {
                url: url.to_owned(),
            })
        } else {
            Err("expected sqlite://PATH or postgres://USER@HOST/DATABASE".to_owned())
        }
    }

    pub fn url(&self) -> &str {
        match self {
            StoreLocation::Sqlite { url } | StoreLocation::Postgres { url } => url,
        }
    }
}

/// The URL without its password, for logs.
impl fmt::Display for StoreLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let url = self.url();
        match (url.find("://"), url.rfind('@')) {
            (Some(scheme), Some(at)) if at > scheme => {
                write!(f, "{}://***{}", &url[..scheme], &url[at..])
            }
            _ => f.write_str(url),
        }
    }
}

impl fmt::Debug for StoreLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{self}\"")
    }
}
