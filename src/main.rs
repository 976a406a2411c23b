//! The `orchestrator` binary: CLI, configuration, telemetry, then `orchestrator::run`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use orchestrator::config::Config;
use orchestrator::Role;

/// mimalloc instead of glibc's malloc: the proxy allocates and frees small
/// buffers on every request across threads, where glibc's arenas cost ~12 %
/// of the service's CPU (malloc, free and consolidation under perf).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(
    name = "orchestrator",
    version,
    about = "Tenant lifecycle orchestration and mini-apps on Lambda"
)]
struct Cli {
    /// TOML configuration file.
    #[arg(
        long,
        global = true,
        help_heading = "Service options",
        env = "ORCHESTRATOR_CONFIG"
    )]
    config: Option<PathBuf>,
    /// Address to listen on (HOST:PORT; port 0 picks a free one).
    #[arg(long, global = true, help_heading = "Service options")]
    listen: Option<String>,
    /// Directory for the SQLite database and job logs.
    #[arg(long, global = true, help_heading = "Service options")]
    data_dir: Option<PathBuf>,
    #[command(flatten)]
    connection: orchestrator::cli::Connection,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the service (the default).
    Serve {
        /// Which parts to run.
        #[arg(long, value_enum, default_value_t = Role::All)]
        role: Role,
        /// Do not apply the store's migrations at start (run `orchestrator migrate` first).
        #[arg(long)]
        no_migrate: bool,
    },
    /// Apply the store's migrations and exit (safe while other replicas start).
    Migrate,
    /// Print the OpenAPI document.
    Openapi,
    /// Print a shell's completion script (`source <(orchestrator completions bash)`).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    #[command(flatten)]
    Client(orchestrator::cli::ClientCommand),
}

fn load(cli: &Cli) -> anyhow::Result<Config> {
    let mut config = match &cli.config {
        Some(path) => Config::from_file(path)?,
        None => Config::default(),
    };
    config.apply_env(|key| std::env::var(key).ok())?;
    if let Some(listen) = &cli.listen {
        config.listen = listen.clone();
    }
    if let Some(dir) = &cli.data_dir {
        config.data_dir = dir.clone();
    }
    config.validate()?;
    Ok(config)
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    tracing::info!("shutting down");
}

async fn migrate(config: Config) -> anyhow::Result<()> {
    orchestrator::open_store(&config, true).await?;
    tracing::info!("migrations applied");
    Ok(())
}

async fn serve(config: Config, role: Role) -> anyhow::Result<()> {
    // A host name (`localhost:8080`) is resolved here; the first address that binds is used.
    let listener = tokio::net::TcpListener::bind(config.listen.as_str())
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    orchestrator::run(config, role, listener, shutdown_signal()).await
}

fn main() -> ExitCode {
    // Two malloc arenas are plenty for a 2-worker runtime and keep peak RSS
    // low; one arena per thread fragments under load.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Client(command)) => {
            // A client printing into a closed pipe (`| head`) ends quietly, as
            // command-line tools do, rather than panicking on the write.
            #[cfg(unix)]
            // SAFETY: called before any other thread exists.
            unsafe {
                libc::signal(libc::SIGPIPE, libc::SIG_DFL);
            }
            return orchestrator::cli::run(&cli.connection, command);
        }

        Some(Command::Completions { shell }) => {
            use clap::CommandFactory;
            use std::io::Write;
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "orchestrator", &mut script);
            // A closed pipe (`| head`) is the reader's choice, not a failure.
            let _ = std::io::stdout().write_all(&script);
            return ExitCode::SUCCESS;
        }
        _ => {}
    }
    if let Some(Command::Openapi) = cli.command {
        return match orchestrator::http::openapi().to_pretty_json() {
            Ok(json) => {
                println!("{json}");
                ExitCode::SUCCESS
            }
            Err(err) => {
                eprintln!("error: {err}");
                ExitCode::FAILURE
            }
        };
    }
    let result = load(&cli).and_then(|mut config| {
        let _logs = orchestrator::telemetry::init(config.log_format);
        match &cli.config {
            Some(path) => tracing::info!(file = %path.display(), "configuration read (then the environment and flags)"),
            None => tracing::info!("no configuration file: defaults, then the environment and flags"),
        }
        // Before the runtime: the exporter's HTTP client and thread are its own.
        let _traces =
            orchestrator::telemetry::trace::init_export().context("starting the OTLP exporter")?;
        let serves_proxy = match cli.command {
            Some(Command::Serve { role, .. }) => role.serves_proxy(),
            Some(_) => false,
            None => true,
        };
        if config.batch_scheduling(serves_proxy) {
            // Before the runtime starts, so that every thread it starts inherits it.
            if let Err(err) = orchestrator::support::run_as_batch_work() {
                tracing::warn!(error = %err, "could not run as batch work (SCHED_BATCH); running as a normal process");
            }
        }
        orchestrator::http::server::raise_file_limit();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(config.runtime_threads(serves_proxy, orchestrator::support::cpus()))
            .enable_all()
            .build()
            .context("starting the runtime")?;
        match cli.command {
            Some(Command::Migrate) => runtime.block_on(migrate(config)),
            Some(Command::Serve { role, no_migrate }) => {
                config.migrate_on_start &= !no_migrate;
                runtime.block_on(serve(config, role))
            }
            _ => runtime.block_on(serve(config, Role::All)),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
