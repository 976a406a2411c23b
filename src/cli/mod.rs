//! The command-line client in the same binary: `orchestrator deploy ./dir`,
//! `apps`, `logs`, `invoke`, `events`, `tenants`, `dev`. It talks to a
//! running service over its HTTP API and reads only the API's JSON; it
//! shares no state with the server's modules.

mod client;
mod deploy;
mod dev;
mod logs;
mod output;
mod pack;
mod resources;

use std::process::ExitCode;

pub use client::{CliError, Client};
pub use output::Output;

/// Where the service is and how to talk to it (global flags).
#[derive(Debug, Clone, clap::Args)]
pub struct Connection {
    /// The service's URL.
    #[arg(
        long,
        global = true,
        help_heading = "Client options",
        env = "ORCHESTRATOR_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    pub url: String,
    /// A bearer token from `auth.api_tokens`.
    #[arg(
        long,
        global = true,
        help_heading = "Client options",
        env = "ORCHESTRATOR_TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,
    /// `table` for people, `json` for scripts.
    #[arg(long, global = true,
        help_heading = "Client options", value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

/// The client's commands.
#[derive(Debug, clap::Subcommand)]
pub enum ClientCommand {
    /// Zip a directory (or take a zip) and deploy it as an app's new version.
    Deploy(deploy::DeployArgs),
    /// Deploy a directory, then redeploy it on every change and follow its logs.
    Dev(dev::DevArgs),
    /// List, inspect, activate, deactivate, remove and roll back apps.
    #[command(subcommand)]
    Apps(resources::AppsCommand),
    /// An app's function output.
    Logs(logs::LogsArgs),
    /// Invoke an app's function with a raw payload (the Lambda Invoke API).
    Invoke(resources::InvokeArgs),
    /// Send tenant events and read the inbox.
    #[command(subcommand)]
    Events(resources::EventsCommand),
    /// Tenants, their jobs and timelines.
    #[command(subcommand)]
    Tenants(resources::TenantsCommand),
}

/// Runs a client command to the end: `0`, or `1` with `error: …` on standard error.
pub fn run(connection: &Connection, command: ClientCommand) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: starting the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch(connection, command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}

async fn dispatch(connection: &Connection, command: ClientCommand) -> Result<(), CliError> {
    let client = Client::new(connection)?;
    let output = connection.output;
    match command {
        ClientCommand::Deploy(args) => deploy::run(&client, args, output).await,
        ClientCommand::Dev(args) => dev::run(&client, args, output).await,
        ClientCommand::Apps(command) => resources::apps(&client, command, output).await,
        ClientCommand::Logs(args) => logs::run(&client, &args, output).await,
        ClientCommand::Invoke(args) => resources::invoke(&client, args, output).await,
        ClientCommand::Events(command) => resources::events(&client, command, output).await,
        ClientCommand::Tenants(command) => resources::tenants(&client, command, output).await,
    }
}
