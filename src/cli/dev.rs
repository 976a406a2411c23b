//! `orchestrator dev`: deploy a directory, then redeploy it whenever its
//! files change (debounced; an edit that leaves the archive as it was, such
//! as one to an ignored file, deploys nothing) while following the app's logs.

use std::path::PathBuf;
use std::time::Duration;

use notify::RecursiveMode;
use notify_debouncer_mini::DebounceEventResult;

use super::deploy::{self, Settings};
use super::logs::{self, LogsArgs};
use super::output::Output;
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
    let packed = deploy::pack_with_spinner(&args.path)?;
    let app = deploy::upload(client, &args.name, &packed, &args.settings, true, true).await?;
    deploy::report(client, &app, output);
    let mut deployed = packed.sha256;

    let follow = LogsArgs {
        app: args.name.clone(),
        follow: true,
        since: Some(since),
        request_id: None,
        limit: None,
    };
    let logs_client = client.clone();
    let mut logs = tokio::spawn(async move { logs::run(&logs_client, &follow, output).await });
    eprintln!("watching {} (Ctrl-C to stop)", args.path.display());
    loop {
        tokio::select! {
            batch = changes.recv() => match batch {
                None => return Err(CliError::Usage("the file watcher stopped".into())),
                Some(Err(err)) => eprintln!("warning: watching files: {err}"),
                Some(Ok(_)) => {
                    let packed = match crate::cli::pack::pack(&args.path) {
                        Ok(packed) => packed,
                        Err(err) => {
                            eprintln!("error: {err}");
                            continue;
                        }
                    };
                    if packed.sha256 == deployed {
                        continue;
                    }
                    eprintln!("change detected: redeploying {}", args.name);
                    match deploy::upload(client, &args.name, &packed, &args.settings, true, true).await {
                        Ok(app) => {
                            deployed = packed.sha256;
                            deploy::report(client, &app, output);
                        }
                        // A broken edit is reported; the next one is tried.
                        Err(err) => eprintln!("error: {err}"),
                    }
                }
            },
            ended = &mut logs => {
                return match ended {
                    Ok(result) => result,
                    Err(err) => Err(CliError::BadAnswer(format!("following the logs: {err}"))),
                };
            }
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}
