//! `orchestrator dev`: deploy a directory, then redeploy it whenever its
//! files change (debounced; an edit that leaves the archive as it was, such
//! as one to an ignored file, deploys nothing) while following the app's logs.

use std::path::PathBuf;
use std::time::Duration;

use notify::RecursiveMode;
use notify_debouncer_mini::DebounceEventResult;

use tokio::task::JoinHandle;

use super::deploy::{self, Settings};
use super::logs::{self, LogsArgs};
use super::output::Output;
use super::pack::{self, Packed};
use super::{CliError, Client};

#[derive(Debug, clap::Args)]
pub struct DevArgs {
    /// The directory to deploy and watch.
    pub path: PathBuf,
    /// The app's name.
    #[arg(long)]
    pub name: String,
    #[command(flatten)]
    pub settings: Settings,
    /// Quiet time after a change before redeploying, in milliseconds.
    #[arg(long, default_value_t = 300)]
    pub debounce_ms: u64,
}

pub async fn run(client: &Client, args: DevArgs, output: Output) -> Result<(), CliError> {
    if !args.path.is_dir() {
        return Err(CliError::Usage(format!(
            "{} is not a directory",
            args.path.display()
        )));
    }
    // Watch before the first deploy, so that no change is missed between them.
    let (tx, mut changes) = tokio::sync::mpsc::unbounded_channel::<DebounceEventResult>();
    let mut debouncer = notify_debouncer_mini::new_debouncer(
        Duration::from_millis(args.debounce_ms.max(1)),
        move |batch: DebounceEventResult| {
            let _ = tx.send(batch);
        },
    )
    .map_err(|e| CliError::Usage(format!("cannot watch files: {e}")))?;
    debouncer
        .watcher()
        .watch(&args.path, RecursiveMode::Recursive)
        .map_err(|e| CliError::Usage(format!("cannot watch {}: {e}", args.path.display())))?;

    let since = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let mut session = Session {
        client,
        args: &args,
        output,
        deployed: None,
        logs: None,
        since,
    };
    // The first deploy may fail as any later one may: said, and the watch goes on.
    session.deploy(deploy::pack_with_spinner(&args.path)).await;
    eprintln!("watching {} (Ctrl-C to stop)", args.path.display());
    loop {
        tokio::select! {
            batch = changes.recv() => match batch {
                None => return Err(CliError::Usage("the file watcher stopped".into())),
                Some(Err(err)) => eprintln!("warning: watching files: {err}"),
                Some(Ok(_)) => session.deploy(pack::pack(&args.path)).await,
            },
            ended = following(&mut session.logs) => {
                return match ended {
                    Ok(result) => result,
                    Err(err) => Err(CliError::BadAnswer(format!("following the logs: {err}"))),
                };
            }
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}

/// What `dev` keeps between changes.
struct Session<'a> {
    client: &'a Client,
    args: &'a DevArgs,
    output: Output,
    /// The hash of the archive deployed last.
    deployed: Option<String>,
    /// The log follower, once the app exists.
    logs: Option<JoinHandle<Result<(), CliError>>>,
    since: String,
}

impl Session<'_> {
    /// Deploys `packed` unless it is what was deployed last; a failure is
    /// printed and the next change is tried.
    async fn deploy(&mut self, packed: Result<Packed, CliError>) {
        let packed = match packed {
            Ok(packed) if self.deployed.as_deref() == Some(packed.sha256.as_str()) => return,
            Ok(packed) => packed,
            Err(err) => return eprintln!("error: {err}"),
        };
        if self.deployed.is_some() {
            eprintln!("change detected: redeploying {}", self.args.name);
        }
        let (client, args) = (self.client, self.args);
        match deploy::upload(client, &args.name, &packed, &args.settings, true, true).await {
            Ok(app) => {
                self.deployed = Some(packed.sha256);
                deploy::report(client, &app, self.output);
                self.follow_logs();
            }
            Err(err) => eprintln!("error: {err}"),
        }
    }

    /// Starts following the app's logs (once).
    fn follow_logs(&mut self) {
        if self.logs.is_some() {
            return;
        }
        let follow = LogsArgs {
            app: self.args.name.clone(),
            follow: true,
            since: Some(self.since.clone()),
            request_id: None,
            limit: None,
        };
        let (client, output) = (self.client.clone(), self.output);
        self.logs = Some(tokio::spawn(async move {
            logs::run(&client, &follow, output).await
        }));
    }
}

/// The follower's end, or never while there is none.
async fn following(
    logs: &mut Option<JoinHandle<Result<(), CliError>>>,
) -> Result<Result<(), CliError>, tokio::task::JoinError> {
    match logs {
        Some(handle) => handle.await,
        None => std::future::pending().await,
    }
}
