//! Plain rows as the store reads and writes them.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::keys::{EventId, JobId, JsonObject, TenantId};
use crate::function_config::{Aliases, AppName, FunctionConfig};

macro_rules! string_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
        // utoipa does not read serde's rename when it comes through this
        // macro; its own spelling puts the wire names in the OpenAPI enum.
        pub enum $name { $(#[serde(rename = $text)] #[schema(rename = $text)] $variant),+ }

        impl $name {
            /// Every value.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The wire and database spelling.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result { f.write_str(self.as_str()) }
        }

        /// Reading the column (see the records' `FromRow`).
        impl TryFrom<String> for $name {
            type Error = String;
            fn try_from(text: String) -> Result<Self, String> {
                text.parse()
            }
        }

        impl FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s {
                    $($text => Ok($name::$variant),)+
                    other => Err(format!(
                        concat!("unknown ", stringify!($name), " '{}' (expected one of: ", $($text, " ",)+ ")"),
                        other
                    )),
                }
            }
        }
    };
}

string_enum!(
    /// Where an inbox event is in its life.
    EventStatus {
        Received => "received",
        Processing => "processing",
        Succeeded => "succeeded",
        Failed => "failed",
        Dead => "dead",
    }
);

string_enum!(
    /// The tenant's internal state. `Deploying` is reported as ARC SaaS's
    /// `PROVISIONING` with `stage: "deploying"`; `Updating` and `Suspending`
    /// as `ACTIVE`, `Resuming` as `SUSPENDED`, `Archiving` as
    /// `DEPROVISIONING`, each with its stage.
    TenantState {
        Provisioning => "PROVISIONING",
        Deploying => "DEPLOYING",
        Active => "ACTIVE",
        ProvisionFailed => "PROVISIONFAILED",
        Deprovisioning => "DEPROVISIONING",
        Inactive => "INACTIVE",
        Updating => "UPDATING",
        Suspending => "SUSPENDING",
        Suspended => "SUSPENDED",
        Resuming => "RESUMING",
        Archiving => "ARCHIVING",
    }
);

string_enum!(
    /// An app's state, as the app-orchestrator API reports it. `DEPLOYED`:
    /// its code is stored and its function is not ready yet (not served);
    /// `ACTIVE`: served (a redeploy keeps it so); `ERROR`: see `lastError`.
    AppStatus {
        Deployed => "DEPLOYED",
        Active => "ACTIVE",
        Inactive => "INACTIVE",
        Removed => "REMOVED",
        Error => "ERROR",
    }
);

string_enum!(
    /// What a job does for its tenant.
    JobKind {
        Provisioning => "provisioning",
        Deprovisioning => "deprovisioning",
        Deployment => "deployment",
        Update => "update",
        Suspend => "suspend",
        Resume => "resume",
        Backup => "backup",
    }
);

string_enum!(
    /// A job's progress. `pending` is recorded before the backend is asked to start it.
    JobStatus {
        Pending => "pending",
        Running => "running",
        Succeeded => "succeeded",
        Failed => "failed",
    }
);

impl JobStatus {
    /// Succeeded or failed: nothing will change it any more.
    pub fn is_terminal(self) -> bool {
        matches!(self, JobStatus::Succeeded | JobStatus::Failed)
    }
}

/// An event to record in the inbox.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub id: EventId,
    pub event_type: String,
    pub source: Option<String>,
    /// The body as received (an envelope or a bare detail), JSON text.
    pub payload: String,
    pub received_at_ms: i64,
    /// The trace it continues (W3C `traceparent`), handed to what it causes.
    pub traceparent: Option<String>,
}

/// An inbox row.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct EventRecord {
    pub id: EventId,
    pub event_type: String,
    pub source: Option<String>,
    pub payload: String,
    #[sqlx(try_from = "String")]
    pub status: EventStatus,
    pub attempts: i64,
    pub last_error: Option<String>,
    pub note: Option<String>,
    #[sqlx(rename = "received_at")]
    pub received_at_ms: i64,
    #[sqlx(rename = "updated_at")]
    pub updated_at_ms: i64,
    #[sqlx(rename = "next_attempt_at")]
    pub next_attempt_at_ms: i64,
    /// The trace it continues (W3C `traceparent`).
    pub traceparent: Option<String>,
}

/// A tenant row.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TenantRecord {
    pub id: TenantId,
    #[sqlx(try_from = "String")]
    pub state: TenantState,
    pub tier: Option<String>,
    pub current_job_id: Option<JobId>,
    pub last_error: Option<String>,
    /// Outputs of the tenant's jobs, merged.
    pub job_output: JsonObject,
    /// Environment overrides given at provisioning, reused by later jobs.
    pub params: JsonObject,
    pub callback_secret: Option<String>,
    pub callback_context: Option<String>,
    pub callback_event_id: Option<EventId>,
    /// `sbt` for a tenant of an sbt-aws control plane (its outcomes are put
    /// on the control plane's bus); `None`: ARC SaaS.
    pub control_plane: Option<String>,
    pub version: i64,
    #[sqlx(rename = "created_at")]
    pub created_at_ms: i64,
    #[sqlx(rename = "updated_at")]
    pub updated_at_ms: i64,
}

/// A job row.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct JobRecord {
    pub id: JobId,
    pub tenant_id: TenantId,
    #[sqlx(try_from = "String")]
    pub kind: JobKind,
    pub job_identifier: String,
    pub backend: String,
    #[sqlx(try_from = "String")]
    pub status: JobStatus,
    /// The event that asked for this job.
    pub event_id: EventId,
    /// String parameters (the job's environment).
    pub params: JsonObject,
    pub external_id: Option<String>,
    pub attempt: i64,
    pub exit_code: Option<i64>,
    /// The job's `KEY=VALUE` outputs (empty until it finishes).
    pub output: JsonObject,
    pub log_tail: Option<String>,
    pub error: Option<String>,
    #[sqlx(rename = "created_at")]
    pub created_at_ms: i64,
    #[sqlx(rename = "started_at")]
    pub started_at_ms: Option<i64>,
    #[sqlx(rename = "finished_at")]
    pub finished_at_ms: Option<i64>,
    /// The span that started it (W3C `traceparent`); the job's own span id
    /// is derived from its id and run ([`crate::telemetry::trace::TraceContext::derived`]).
    pub traceparent: Option<String>,
}

/// How a job ended.
#[derive(Debug, Clone)]
pub struct JobFinish {
    pub id: JobId,
    pub status: JobStatus,
    pub exit_code: Option<i64>,
    pub output: JsonObject,
    pub log_tail: Option<String>,
    pub error: Option<String>,
}

/// One entry of a tenant's timeline: an event's processing attempt
/// (`event`) or a change of state (`transition`), with what it says.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TimelineEntry {
    pub tenant_id: TenantId,
    #[sqlx(rename = "at")]
    pub at_ms: i64,
    pub kind: String,
    pub detail: JsonObject,
}

/// A line of a function's output.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LogLine {
    /// When it was read (epoch ms).
    #[serde(rename = "t")]
    pub at_ms: i64,
    /// The invocation it belongs to (none before the first, e.g. init output).
    #[serde(rename = "r")]
    pub request_id: Option<String>,
    /// `stdout`, `stderr`, or `platform` (START, END, REPORT and failures).
    #[serde(rename = "s")]
    pub stream: std::borrow::Cow<'static, str>,
    #[serde(rename = "m")]
    pub message: String,
}

/// Lines of one app written together, in order (one row of the store).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogChunk {
    pub app: AppName,
    pub lines: Vec<LogLine>,
}

/// A kept chunk of an app's lines.
#[derive(Debug, Clone)]
pub struct StoredLogChunk {
    /// Order of arrival in the store.
    pub seq: i64,
    pub lines: Vec<LogLine>,
}

/// Which kept chunks of an app to read: those with lines in
/// `[since_ms, until_ms)`, newest first before `before_seq`, or oldest
/// first after `after_seq`.
#[derive(Debug, Clone)]
pub struct ChunkQuery {
    pub app: AppName,
    pub since_ms: Option<i64>,
    pub until_ms: Option<i64>,
    pub before_seq: Option<i64>,
    pub after_seq: Option<i64>,
    pub limit: i64,
}

string_enum!(
    /// Where an operation (a deploy that did not wait) is.
    OperationStatus {
        Pending => "pending",
        Succeeded => "succeeded",
        Failed => "failed",
    }
);

/// An operation row: a deploy asked not to wait, and what became of it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct OperationRecord {
    pub id: String,
    /// What it does (`deploy`).
    pub kind: String,
    /// The app it is about.
    pub name: String,
    #[sqlx(try_from = "String")]
    pub status: OperationStatus,
    /// Its outcome (JSON): the app, once it succeeded.
    pub result: Option<String>,
    /// Its error (JSON), once it failed.
    pub error: Option<String>,
    #[sqlx(rename = "created_at")]
    pub created_at_ms: i64,
    #[sqlx(rename = "updated_at")]
    pub updated_at_ms: i64,
}

/// An asynchronous invocation (`X-Amz-Invocation-Type: Event`), queued.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AsyncInvocation {
    pub id: String,
    /// The app.
    pub name: String,
    pub qualifier: Option<String>,
    pub payload: Vec<u8>,
    /// Runs made so far (counted when one is claimed).
    pub attempts: i64,
}

/// What became of one run of an asynchronous invocation.
#[derive(Debug, Clone)]
pub enum AsyncOutcome {
    Succeeded,
    /// Run again at `at_ms`.
    Retry {
        at_ms: i64,
        error: String,
    },
    /// Given up.
    Failed {
        error: String,
    },
}

/// An app row.
#[derive(Debug, Clone)]
pub struct AppRecord {
    pub name: AppName,
    pub status: AppStatus,
    /// The version `live` points at.
    pub current_version: i64,
    /// The newest version stored (`live` may point at an older one).
    pub latest_version: i64,
    /// The configuration of the version `live` points at.
    pub config: FunctionConfig,
    pub aliases: Aliases,
    pub last_error: Option<String>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

impl<'r, R: sqlx::Row> sqlx::FromRow<'r, R> for AppRecord
where
    &'r str: sqlx::ColumnIndex<R>,
    String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    Option<String>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    fn from_row(row: &'r R) -> Result<Self, sqlx::Error> {
        let decode = |column: &str, err: String| sqlx::Error::ColumnDecode {
            index: column.to_owned(),
            source: err.into(),
        };
        let current_version: i64 = row.try_get("current_version")?;
        let latest_version: i64 = row.try_get("latest_version")?;
        let aliases: String = row.try_get("aliases")?;
        Ok(Self {
            name: AppName::try_from(row.try_get::<String, _>("name")?)
                .map_err(|e| decode("name", e))?,
            status: AppStatus::try_from(row.try_get::<String, _>("status")?)
                .map_err(|e| decode("status", e))?,
            current_version,
            latest_version: latest_version.max(current_version),
            config: FunctionConfig::try_from(row.try_get::<String, _>("config")?)
                .map_err(|e| decode("config", e.to_string()))?,
            aliases: Aliases::from_text(&aliases, current_version),
            last_error: row.try_get("last_error")?,
            created_at_ms: row.try_get("created_at")?,
            updated_at_ms: row.try_get("updated_at")?,
        })
    }
}

/// One deployed version of an app's code (without the code itself).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AppVersionRecord {
    pub version: i64,
    #[sqlx(try_from = "String")]
    pub config: FunctionConfig,
    pub code_size: i64,
    pub code_sha256: String,
    #[sqlx(rename = "created_at")]
    pub created_at_ms: i64,
}
