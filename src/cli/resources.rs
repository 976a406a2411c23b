//! `orchestrator apps|events|tenants|invoke`: one request each, the answer
//! as a table or as the service's JSON.

use reqwest::header::CONTENT_TYPE;
use serde_json::{json, Value};

use super::output::{self, Column, Output};
use super::{CliError, Client};

#[derive(Debug, clap::Subcommand)]
pub enum AppsCommand {
    /// Every app.
    List,
    /// One app: settings, aliases, versions.
    Get { name: String },
    /// An app's status.
    Status { name: String },
    /// Serve the app again.
    Activate { name: String },
    /// Stop serving the app (its versions are kept).
    Deactivate { name: String },
    /// Remove the app and its function.
    Remove { name: String },
    /// Move `live` back to where it was, or to `--version`.
    Rollback {
        name: String,
        #[arg(long)]
        version: Option<i64>,
    },
    /// An app's aliases and the hosts that serve them.
    Aliases { name: String },
}

#[derive(Debug, clap::Subcommand)]
pub enum EventsCommand {
    /// Send a tenant event (e.g. `TENANT_PROVISIONING`).
    Send {
        /// The event type.
        event_type: String,
        /// The event's detail: JSON, `@file`, or `@-` for standard input.
        #[arg(long)]
        detail: String,
    },
    /// The inbox, newest first.
    List {
        /// `received`, `processing`, `succeeded`, `failed` or `dead`.
        #[arg(long)]
        status: Option<String>,
        #[arg(long)]
        limit: Option<u32>,
    },
    /// One event, with its detail.
    Get { id: String },
    /// Process a failed or dead event again now.
    Retry { id: String },
}

#[derive(Debug, clap::Subcommand)]
pub enum TenantsCommand {
    /// Tenants, most recently updated first.
    List {
        /// Only this status (`ACTIVE`, `SUSPENDED`, `INACTIVE`, …).
        #[arg(long)]
        status: Option<String>,
        #[arg(long)]
        limit: Option<u32>,
    },
    /// One tenant: status, tier, jobs.
    Get { id: String },
    /// Why a tenant is where it is: events, transitions and jobs, oldest first.
    Timeline {
        id: String,
        #[arg(long)]
        limit: Option<u32>,
    },
}

#[derive(Debug, clap::Args)]
pub struct InvokeArgs {
    /// The app.
    pub app: String,
    /// The function's payload: JSON, `@file`, or `@-` for standard input (default `{}`).
    #[arg(long)]
    pub payload: Option<String>,
    /// An alias or version number (default: `live`).
    #[arg(long)]
    pub qualifier: Option<String>,
}

const APP_ROWS: &[Column] = &[
    ("NAME", "/name"),
    ("STATUS", "/status"),
    ("VERSION", "/version"),
    ("LATEST", "/latestVersion"),
    ("RUNTIME", "/runtime"),
    ("HOST", "/host"),
    ("UPDATED", "/updatedAt"),
];

const APP_FIELDS: &[Column] = &[
    ("name", "/name"),
    ("status", "/status"),
    ("host", "/host"),
    ("version", "/version"),
    ("latest version", "/latestVersion"),
    ("previous version", "/previousVersion"),
    ("runtime", "/runtime"),
    ("handler", "/handler"),
    ("memory (MB)", "/memorySize"),
    ("timeout (s)", "/timeout"),
    ("payload format", "/payloadFormat"),
    ("environment", "/environment"),
    ("domains", "/domains"),
    ("last error", "/lastError"),
    ("updated", "/updatedAt"),
];

const ALIAS_ROWS: &[Column] = &[
    ("ALIAS", "/name"),
    ("VERSION", "/version"),
    ("ROUTING", "/routing"),
    ("HOST", "/host"),
];

const EVENT_ROWS: &[Column] = &[
    ("ID", "/id"),
    ("TYPE", "/type"),
    ("STATUS", "/status"),
    ("ATTEMPTS", "/attempts"),
    ("RECEIVED", "/receivedAt"),
    ("LAST ERROR", "/lastError"),
];

const TENANT_ROWS: &[Column] = &[
    ("ID", "/id"),
    ("STATUS", "/status"),
    ("STAGE", "/stage"),
    ("TIER", "/tier"),
    ("UPDATED", "/updatedAt"),
    ("LAST ERROR", "/lastError"),
];

pub async fn apps(client: &Client, command: AppsCommand, output: Output) -> Result<(), CliError> {
    use AppsCommand::*;
    let (answer, shape): (Value, fn(&Value)) = match &command {
        List => (client.json(client.get(&["apps"])).await?, |v| {
            output::rows(v, APP_ROWS)
        }),
        Get { name } => (client.json(client.get(&["apps", name])).await?, print_app),
        Status { name } => (
            client.json(client.get(&["apps", name, "status"])).await?,
            print_status,
        ),
        Activate { name } | Deactivate { name } | Remove { name } => {
            let action = match command {
                Activate { .. } => "activate",
                Deactivate { .. } => "deactivate",
                _ => "remove",
            };
            (
                client.json(client.post(&["apps", name, action])).await?,
                print_status,
            )
        }
        Rollback { name, version } => {
            let body = match version {
                Some(version) => json!({ "version": version }),
                None => json!({}),
            };
            let app = client
                .json(client.post(&["apps", name, "rollback"]).json(&body))
                .await?;
            (app, |app| {
                println!(
                    "{} live is version {} (was {})",
                    output::cell(app.get("name")),
                    output::cell(app.get("version")),
                    output::cell(app.get("previousVersion"))
                )
            })
        }
        Aliases { name } => (
            client.json(client.get(&["apps", name, "aliases"])).await?,
            |v| output::rows(v, ALIAS_ROWS),
        ),
    };
    show(&answer, output, shape);
    Ok(())
}

fn print_app(app: &Value) {
    output::fields(app, APP_FIELDS);
    println!();
    output::rows(app.get("aliases").unwrap_or(&Value::Null), ALIAS_ROWS);
    if let Some(versions) = app.get("versions") {
        println!();
        output::rows(
            versions,
            &[
                ("VERSION", "/version"),
                ("RUNTIME", "/runtime"),
                ("HANDLER", "/handler"),
                ("SIZE", "/codeSize"),
                ("CREATED", "/createdAt"),
            ],
        );
    }
}

fn print_status(status: &Value) {
    println!(
        "{} {}",
        output::cell(status.get("name")),
        output::cell(status.get("status"))
    );
}

fn show(answer: &Value, output: Output, table: fn(&Value)) {
    match output {
        Output::Json => output::json(answer),
        Output::Table => table(answer),
    }
}

pub async fn events(
    client: &Client,
    command: EventsCommand,
    output: Output,
) -> Result<(), CliError> {
    match command {
        EventsCommand::Send { event_type, detail } => {
            let detail = argument_text(&detail)?;
            let answer = client
                .json(
                    client
                        .post(&["events", &event_type])
                        .header(CONTENT_TYPE, "application/json")
                        .body(detail),
                )
                .await?;
            show(&answer, output, |a| {
                let duplicate = a.get("duplicate").and_then(Value::as_bool) == Some(true);
                println!(
                    "{} event {}",
                    if duplicate {
                        "Already recorded:"
                    } else {
                        "Recorded"
                    },
                    output::cell(a.get("eventId"))
                );
            });
        }
        EventsCommand::List { status, limit } => {
            let answer = client
                .json(client.get(&["events"]).query(&filters(status, limit)))
                .await?;
            show(&answer, output, |v| output::rows(v, EVENT_ROWS));
        }
        EventsCommand::Get { id } => {
            let answer = client.json(client.get(&["events", &id])).await?;
            show(&answer, output, |e| {
                output::fields(
                    e,
                    &[
                        ("id", "/id"),
                        ("type", "/type"),
                        ("source", "/source"),
                        ("status", "/status"),
                        ("attempts", "/attempts"),
                        ("received", "/receivedAt"),
                        ("updated", "/updatedAt"),
                        ("next attempt", "/nextAttemptAt"),
                        ("last error", "/lastError"),
                        ("note", "/note"),
                        ("trace", "/traceId"),
                        ("detail", "/detail"),
                    ],
                )
            });
        }
        EventsCommand::Retry { id } => {
            let answer = client.json(client.post(&["events", &id, "retry"])).await?;
            show(&answer, output, |e| {
                println!(
                    "{} {}",
                    output::cell(e.get("id")),
                    output::cell(e.get("status"))
                )
            });
        }
    }
    Ok(())
}

pub async fn tenants(
    client: &Client,
    command: TenantsCommand,
    output: Output,
) -> Result<(), CliError> {
    match command {
        TenantsCommand::List { status, limit } => {
            let answer = client
                .json(client.get(&["tenants"]).query(&filters(status, limit)))
                .await?;
            show(&answer, output, |v| output::rows(v, TENANT_ROWS));
        }
        TenantsCommand::Get { id } => {
            let answer = client.json(client.get(&["tenants", &id])).await?;
            show(&answer, output, |t| {
                output::fields(
                    t,
                    &[
                        ("id", "/id"),
                        ("status", "/status"),
                        ("stage", "/stage"),
                        ("tier", "/tier"),
                        ("last error", "/lastError"),
                        ("job output", "/jobOutput"),
                        ("created", "/createdAt"),
                        ("updated", "/updatedAt"),
                    ],
                );
                println!();
                output::rows(
                    t.get("jobs").unwrap_or(&Value::Null),
                    &[
                        ("JOB", "/id"),
                        ("KIND", "/kind"),
                        ("STATUS", "/status"),
                        ("EXIT", "/exitCode"),
                        ("STARTED", "/startedAt"),
                    ],
                );
            });
        }
        TenantsCommand::Timeline { id, limit } => {
            let answer = client
                .json(
                    client
                        .get(&["tenants", &id, "timeline"])
                        .query(&filters(None, limit)),
                )
                .await?;
            show(&answer, output, print_timeline);
        }
    }
    Ok(())
}

/// A list's query: `status` and `limit` when given.
fn filters(status: Option<String>, limit: Option<u32>) -> Vec<(&'static str, String)> {
    let limit = limit.map(|l| ("limit", l.to_string()));
    status
        .map(|s| ("status", s))
        .into_iter()
        .chain(limit)
        .collect()
}

/// A timeline, a line per step: time, kind, and what the step says.
fn print_timeline(timeline: &Value) {
    let empty = Vec::new();
    for item in timeline
        .get("items")
        .and_then(Value::as_array)
        .unwrap_or(&empty)
    {
        let text = |key| output::cell(item.get(key));
        let kind = item.get("kind").and_then(Value::as_str).unwrap_or_default();
        let what = match kind {
            "transition" => format!("{} -> {}", text("from"), text("to")),
            "event" => {
                let mut what = format!(
                    "{} {} (attempt {})",
                    text("type"),
                    text("status"),
                    text("attempt")
                );
                if item.get("error").is_some_and(|e| !e.is_null()) {
                    what.push_str(&format!(": {}", text("error")));
                }
                what
            }
            "jobStarted" => format!("{} {}", text("jobKind"), text("jobIdentifier")),
            "jobFinished" => format!(
                "{} {} exit {}",
                text("jobKind"),
                text("status"),
                text("exitCode")
            ),
            _ => String::new(),
        };
        println!("{} {kind:<12} {what}", text("time"));
    }
}

pub async fn invoke(client: &Client, args: InvokeArgs, output: Output) -> Result<(), CliError> {
    let payload = match &args.payload {
        Some(payload) => argument_text(payload)?,
        None => "{}".to_owned(),
    };
    let mut request = client.post(&["2015-03-31", "functions", &args.app, "invocations"]);
    if let Some(qualifier) = &args.qualifier {
        request = request.query(&[("Qualifier", qualifier)]);
    }
    let response = client.send(request.body(payload)).await?;
    let header = |name| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let (function_error, version) = (
        header("x-amz-function-error"),
        header("x-amz-executed-version"),
    );
    let body = response
        .bytes()
        .await
        .map_err(|e| CliError::BadAnswer(e.to_string()))?;
    let text = String::from_utf8_lossy(&body);
    match (output, serde_json::from_slice::<Value>(&body)) {
        (Output::Table, Ok(value)) => output::json(&value),
        _ => println!("{text}"),
    }
    if output == Output::Table {
        eprintln!("(version {})", version.as_deref().unwrap_or("-"));
    }
    match function_error {
        Some(kind) => Err(CliError::Server {
            status: 200,
            code: format!("function_error_{}", kind.to_lowercase()),
            message: "the function failed (its error is printed above)".into(),
        }),
        None => Ok(()),
    }
}

/// A JSON argument: given inline, `@file`, or `@-` (standard input).
pub fn argument_text(value: &str) -> Result<String, CliError> {
    match value.strip_prefix('@') {
        Some("-") => std::io::read_to_string(std::io::stdin())
            .map_err(CliError::io("reading standard input")),
        Some(path) => {
            std::fs::read_to_string(path).map_err(CliError::io(format!("reading {path}")))
        }
        None => Ok(value.to_owned()),
    }
}
