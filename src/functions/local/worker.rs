//! A worker assembled from the pieces: a runtime process (confined by the
//! sandbox or not) with its layout and environment, its Runtime API (two
//! inherited pipes for our own runtime clients, see `pipes`; its own
//! loopback port for any other, see `tcp`), its output as log lines, and the
//! task that watches it exit. [`Launcher`] is how a pool starts one. The top
//! of `local/` (below `mod.rs` only): imports `pool`, `handle`,
//! `runtime_api`, `pipes`, `tcp` and `sandbox`.

use crate::functions::logs::{self, AppLog};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};

use super::handle::WorkerHandle;
use super::pipes::{self, RuntimePipes, RUNTIME_FDS, RUNTIME_FDS_ENV};
use super::pool::{Launch, Shared};
use super::runtime_api::{watchdog, Api, Deadline, Function};
use super::runtimes::Interpreter;
use super::sandbox::{self, Cell, Sandbox};
use super::tcp::Port;
use crate::function_config::{FunctionConfig, RuntimeKind};
use crate::functions::FunctionError;
use crate::telemetry::metrics::AppFunctionMetrics;

const NODE_BOOTSTRAP: &str = "node-bootstrap.mjs";
const PYTHON_BOOTSTRAP: &str = "python-bootstrap.py";

/// Longest line of function output logged as one; longer ones are split.
const MAX_LINE_BYTES: usize = 16 * 1024;

/// Writes our runtime clients (embedded in the binary) into `dir`.
pub fn install_runtime_clients(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(
        dir.join(NODE_BOOTSTRAP),
        include_str!("bootstraps/node-bootstrap.mjs"),
    )?;
    std::fs::write(
        dir.join(PYTHON_BOOTSTRAP),
        include_str!("bootstraps/python-bootstrap.py"),
    )
}

/// What a worker runs.
pub struct WorkerSpec {
    pub app: String,
    pub version: i64,
    pub config: FunctionConfig,
    /// What runs a Node.js or Python function (`None`: the zip's `bootstrap`).
    pub interpreter: Option<Interpreter>,
    pub code_dir: PathBuf,
    pub runtimes_dir: PathBuf,
    pub region: String,
    pub batch_scheduling: bool,
    /// Confines each worker (`None`: a plain child process).
    pub sandbox: Option<Arc<Sandbox>>,
    pub metrics: AppFunctionMetrics,
    /// Where the app's output is kept.
    pub log: AppLog,
}

/// Starts a deployment's workers for its pool.
pub struct Launcher {
    spec: WorkerSpec,
    function: Arc<Function>,
}

impl Launcher {
    pub fn new(spec: WorkerSpec) -> Launcher {
        let config = &spec.config;
        let function = Function::new(
            &spec.app,
            spec.version,
            config.timeout,
            config.memory_size,
            &spec.region,
            spec.metrics.clone(),
            spec.log.clone(),
        );
        Launcher {
            function: Arc::new(function),
            spec,
        }
    }
}

impl Launch for Launcher {
    fn launch(&self, pool: &Arc<Shared>) -> Result<(), FunctionError> {
        self.spawn(pool)
    }

    fn recheck_runtime(&self) -> Option<tokio::runtime::Handle> {
        pipes::runtime_api_thread().ok()
    }
}

fn unavailable(what: &str, e: std::io::Error) -> FunctionError {
    FunctionError::unavailable_because(what, e)
}

impl Launcher {
    /// Starts a worker for the pool: its Runtime API endpoint and process.
    fn spawn(&self, pool: &Arc<Shared>) -> Result<(), FunctionError> {
        let spec = &self.spec;
        let cell = match &spec.sandbox {
            Some(sandbox) => Some(
                sandbox
                    .cell(spec.config.memory_size)
                    .map_err(|e| unavailable("preparing the sandbox", e))?,
            ),
            None => None,
        };
        let layout = Layout::of(spec, cell.is_some());
        // Only the worker's own user may dial its port (unconfined: the service's user).
        let owner = cell
            .as_ref()
            .map_or_else(|| rustix::process::geteuid().as_raw(), |c| c.uid);
        let port = Port::bind(owner).map_err(|e| unavailable("binding the runtime API", e))?;
        let addr = port.addr.clone();
        let RuntimePipes {
            requests,
            answers,
            theirs,
        } = RuntimePipes::new().map_err(|e| unavailable("creating the runtime API pipes", e))?;
        let mut command = command(spec, &layout, cell.as_ref(), &addr, &theirs)?;
        let worker = Arc::new(WorkerHandle::new());
        let current: Arc<Mutex<Option<String>>> = Arc::default();
        let (api, armed) = Api::new(
            pool.clone(),
            worker.clone(),
            self.function.clone(),
            current.clone(),
        );
        let api = Arc::new(api);
        serve_runtime_api(&api, armed, port, requests, answers)?;
        let (mut child, group) = crate::support::spawn_supervised(&mut command).map_err(|e| {
            worker.stop.cancel();
            let launcher = command.as_std().get_program().to_string_lossy();
            FunctionError::Failed(format!("could not start {launcher}: {e}"))
        })?;
        // The child holds its ends now; ours closing lets the server see the child go.
        drop(theirs);
        worker.started(group);
        spec.metrics.worker_started();
        forward_output(&mut child, &spec.app, &spec.log, &current);
        watch_exit(child, api, cell, spec);
        Ok(())
    }
}

/// Where a worker finds its code and our runtime clients, and what else it
/// sees of the machine: the real paths, or the sandbox's.
struct Layout {
    task_root: PathBuf,
    runtime_dir: PathBuf,
    path: String,
    home: String,
}

impl Layout {
    fn of(spec: &WorkerSpec, confined: bool) -> Layout {
        if confined {
            return Layout {
                task_root: sandbox::TASK_ROOT.into(),
                runtime_dir: sandbox::RUNTIME_DIR.into(),
                path: sandbox::PATH.into(),
                home: "/tmp".into(),
            };
        }
        Layout {
            task_root: spec.code_dir.clone(),
            runtime_dir: spec.runtimes_dir.clone(),
            path: std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".into()),
            home: std::env::temp_dir().display().to_string(),
        }
    }

    /// The program that runs the function, and its arguments.
    fn program(&self, spec: &WorkerSpec) -> (PathBuf, Vec<PathBuf>) {
        let config = &spec.config;
        let interpreter = |name: &str| {
            spec.interpreter
                .as_ref()
                .map_or_else(|| PathBuf::from(name), |i| i.path.clone())
        };
        match config.kind() {
            // A small young generation keeps each worker near Node's 40 MiB
            // baseline under load (the default lets it grow by tens of MiB);
            // the old one stops within memorySize, as Lambda's runtime sets it.
            RuntimeKind::Node => (
                interpreter("node"),
                vec![
                    "--max-semi-space-size=1".into(),
                    format!("--max-old-space-size={}", config.memory_size * 9 / 10).into(),
                    self.runtime_dir.join(NODE_BOOTSTRAP),
                ],
            ),
            RuntimeKind::Python => (
                interpreter("python3"),
                vec![self.runtime_dir.join(PYTHON_BOOTSTRAP)],
            ),
            RuntimeKind::Provided => (self.task_root.join("bootstrap"), Vec::new()),
        }
    }
}

/// The environment a worker's runtime sees: the function's variables, then
/// Lambda's.
fn environment(spec: &WorkerSpec, layout: &Layout, api_addr: &str) -> Vec<(String, String)> {
    let config = &spec.config;
    let mut env: Vec<(String, String)> = config
        .environment
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let stream = format!(
        "{}/[{}]{}",
        chrono::Utc::now().format("%Y/%m/%d"),
        spec.version,
        uuid::Uuid::new_v4().simple()
    );
    for (key, value) in [
        ("AWS_LAMBDA_RUNTIME_API", api_addr.to_owned()),
        ("_HANDLER", config.handler.clone()),
        ("LAMBDA_TASK_ROOT", layout.task_root.display().to_string()),
        (
            "LAMBDA_RUNTIME_DIR",
            layout.runtime_dir.display().to_string(),
        ),
        ("AWS_LAMBDA_FUNCTION_NAME", spec.app.clone()),
        ("AWS_LAMBDA_FUNCTION_VERSION", spec.version.to_string()),
        (
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
            config.memory_size.to_string(),
        ),
        ("AWS_LAMBDA_FUNCTION_TIMEOUT", config.timeout.to_string()),
        (
            "AWS_LAMBDA_LOG_GROUP_NAME",
            format!("/aws/lambda/{}", spec.app),
        ),
        ("AWS_LAMBDA_LOG_STREAM_NAME", stream),
        ("AWS_LAMBDA_INITIALIZATION_TYPE", "on-demand".into()),
        (
            "AWS_EXECUTION_ENV",
            format!("AWS_Lambda_{}", config.runtime),
        ),
        ("AWS_REGION", spec.region.clone()),
        ("AWS_DEFAULT_REGION", spec.region.clone()),
        ("TZ", ":UTC".into()),
        ("LANG", "en_US.UTF-8".into()),
        ("PATH", layout.path.clone()),
        ("HOME", layout.home.clone()),
    ] {
        env.push((key.to_owned(), value));
    }
    env
}

/// Serves the worker's Runtime API: our ends of the pipes and its watchdog
/// on the runtime API thread, the port on this runtime.
fn serve_runtime_api(
    api: &Arc<Api>,
    armed: tokio::sync::watch::Receiver<Deadline>,
    port: Port,
    requests: OwnedFd,
    answers: OwnedFd,
) -> Result<(), FunctionError> {
    let stop = api.worker.stop.clone();
    pipes::serve(requests, answers, api.clone(), stop.clone())
        .map_err(|e| unavailable("serving the runtime API pipes", e))?;
    // Beside the pipes' connection, so arming a deadline wakes nothing on another thread.
    pipes::runtime_api_thread()
        .map_err(|e| unavailable("starting the runtime API thread", e))?
        .spawn(watchdog(api.clone(), armed));
    port.serve(api.clone(), stop);
    Ok(())
}

/// The command that starts the runtime: confined by its cell if it has
/// one, with a clean environment, the pipes on [`RUNTIME_FDS`], its output
/// piped to us.
fn command(
    spec: &WorkerSpec,
    layout: &Layout,
    cell: Option<&Cell>,
    api_addr: &str,
    theirs: &[OwnedFd; 2],
) -> Result<Command, FunctionError> {
    let (program, args) = layout.program(spec);
    let (launcher, launch_args) = match cell {
        Some(cell) => {
            let shown = spec.interpreter.as_ref().and_then(|i| i.prefix.as_deref());
            let arguments =
                cell.arguments(&spec.code_dir, &spec.runtimes_dir, shown, &program, &args);
            (cell.program().to_owned(), arguments)
        }
        None => (
            program,
            args.iter().map(|a| a.as_os_str().to_owned()).collect(),
        ),
    };
    let joiner = cell
        .map(Cell::joiner)
        .transpose()
        .map_err(|e| unavailable("joining the worker's cgroups", e))?;
    let mut command = Command::new(&launcher);
    command
        .args(&launch_args)
        .env_clear()
        .envs(environment(spec, layout, api_addr))
        .env(
            RUNTIME_FDS_ENV,
            format!("{},{}", RUNTIME_FDS[0], RUNTIME_FDS[1]),
        )
        .current_dir(&spec.code_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let their_fds = [theirs[0].as_raw_fd(), theirs[1].as_raw_fd()];
    let batch = spec.batch_scheduling;
    // SAFETY: the closure runs in the child between fork and exec, where only
    // async-signal-safe calls are allowed: the joiner's write and setrlimit,
    // sched_setscheduler, fcntl and dup2 are plain system calls that
    // allocate nothing and touch no memory of the parent. `theirs` stays
    // open until after the spawn (the caller drops it then).
    unsafe {
        command.pre_exec(move || {
            if let Some(joiner) = &joiner {
                joiner.join()?;
            }
            // A worker woken by its next event then does not preempt the
            // thread that wrote it, which goes on to the next request.
            // Where it is refused, the worker runs as a normal process.
            if batch {
                let _ = crate::support::run_as_batch_work();
            }
            // First out of the way (either may sit on 3 or 4), then into
            // place: dup2 clears close-on-exec on the copies it makes.
            let moved = their_fds.map(|fd| libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 10));
            for (fd, target) in moved.into_iter().zip(RUNTIME_FDS) {
                if fd < 0 || libc::dup2(fd, target) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    Ok(command)
}

/// Logs the worker's stdout and stderr and keeps them in the app's log,
/// each line under the request id of the invocation taken last.
fn forward_output(
    child: &mut Child,
    app: &str,
    log: &AppLog,
    current: &Arc<Mutex<Option<String>>>,
) {
    fn forward(
        stream: impl AsyncRead + Send + Unpin + 'static,
        name: &'static str,
        app: &str,
        log: &AppLog,
        current: &Arc<Mutex<Option<String>>>,
    ) {
        let app = app.to_owned();
        let log = log.clone();
        let current = current.clone();
        tokio::spawn(forward_lines(stream, move |line| {
            let request = current.lock().ok().and_then(|c| c.clone());
            let shown = request.as_deref().unwrap_or("-");
            tracing::info!(target: "function", app = %app, request_id = %shown, "{line}");
            log.write(request.as_deref(), name, line);
        }));
    }
    if let Some(stdout) = child.stdout.take() {
        forward(stdout, logs::STDOUT, app, log, current);
    }
    if let Some(stderr) = child.stderr.take() {
        forward(stderr, logs::STDERR, app, log, current);
    }
}

/// Waits for the process to end, then fails what it was running (with the
/// best reason known), tells the pool, and clears its cell.
fn watch_exit(mut child: Child, api: Arc<Api>, cell: Option<Cell>, spec: &WorkerSpec) {
    let app = spec.app.clone();
    let memory_size = spec.config.memory_size;
    tokio::spawn(async move {
        let status = child.wait().await;
        let worker = api.worker.clone();
        if cell.as_ref().is_some_and(Cell::ran_out_of_memory) {
            worker.note_reason(format!(
                "Runtime exited: out of memory (memorySize {memory_size} MB)"
            ));
        }
        let why = worker
            .ended()
            .or_else(|| api.init_error.lock().ok().and_then(|e| e.clone()))
            .unwrap_or_else(|| match status {
                Ok(s) => format!("the runtime exited ({s})"),
                Err(e) => format!("the runtime could not be waited for: {e}"),
            });
        tracing::info!(app = %app, reason = %why, "function worker stopped");
        api.function().metrics.worker_stopped();
        api.fail_in_flight(&why);
        api.pool.worker_exited(&*worker, &why);
        // Whatever the runtime left behind goes with it; then its user id is free.
        if let Some(cell) = cell {
            cell.clear().await;
        }
    });
}

/// Logs a worker's output line by line, whatever it writes: lines longer
/// than [`MAX_LINE_BYTES`] are split, invalid UTF-8 is replaced, and the
/// pipe is read to its end so the worker never blocks on it.
async fn forward_lines(stream: impl AsyncRead + Unpin, mut emit: impl FnMut(&str)) {
    let mut reader = BufReader::with_capacity(MAX_LINE_BYTES, stream);
    let mut line: Vec<u8> = Vec::new();
    loop {
        let buffer = match reader.fill_buf().await {
            Ok(buffer) if !buffer.is_empty() => buffer,
            _ => break,
        };
        let end = buffer.iter().position(|&b| b == b'\n');
        let chunk = &buffer[..end.unwrap_or(buffer.len())];
        let take = chunk.len().min(MAX_LINE_BYTES - line.len());
        line.extend_from_slice(&chunk[..take]);
        let complete = end.is_some() && take == chunk.len();
        reader.consume(if complete { take + 1 } else { take });
        if complete || line.len() >= MAX_LINE_BYTES {
            let text = String::from_utf8_lossy(&line);
            emit(text.trim_end_matches('\r'));
            line.clear();
        }
    }
    if !line.is_empty() {
        emit(&String::from_utf8_lossy(&line));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn lines_of(bytes: &[u8]) -> Vec<String> {
        let mut out = Vec::new();
        forward_lines(bytes, |line| out.push(line.to_owned())).await;
        out
    }

    #[tokio::test]
    async fn output_is_split_into_bounded_lossy_lines() {
        assert_eq!(lines_of(b"a\r\nb\n\nc").await, ["a", "b", "", "c"]);
        assert_eq!(
            lines_of(b"ok \xff\xfe end\nnext\n").await,
            ["ok \u{fffd}\u{fffd} end", "next"]
        );
        let long = vec![b'x'; MAX_LINE_BYTES * 2 + 10];
        let lines = lines_of(&long).await;
        assert_eq!(lines.len(), 3);
        assert!(lines.iter().all(|l| l.len() <= MAX_LINE_BYTES));
        assert_eq!(lines.iter().map(String::len).sum::<usize>(), long.len());
    }
}
