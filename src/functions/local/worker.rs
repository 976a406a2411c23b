//! One worker: a runtime process and its connections to the Lambda Runtime
//! API (see `runtime_api`): two inherited pipes for our own runtime
//! clients (see `pipes`), its own loopback port for any other.

use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::Command;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use super::peer::OwnedBy;
use super::pipes::{RuntimePipes, RUNTIME_FDS, RUNTIME_FDS_ENV};
use super::pool::Shared;
use super::runtime_api::{watchdog, Api};
use super::sandbox::{self, Cell, Sandbox};
use crate::function_config::{FunctionConfig, RuntimeKind};
use crate::functions::FunctionError;

/// What a worker runs.
pub struct WorkerSpec {
    pub app: String,
    pub version: i64,
    pub config: FunctionConfig,
    pub code_dir: PathBuf,
    pub runtimes_dir: PathBuf,
    pub region: String,
    pub batch_scheduling: bool,
    /// Confines each worker (`None`: a plain child process).
    pub sandbox: Option<Arc<Sandbox>>,
}

/// Longest line of function output logged as one; longer ones are split.
const MAX_LINE_BYTES: usize = 16 * 1024;

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

    /// The interpreter `name`: the sandbox's own, or the first on `PATH`.
    fn interpreter(&self, name: &str, confined: bool) -> PathBuf {
        match confined {
            true => sandbox::interpreter(name).unwrap_or_else(|| name.into()),
            false => name.into(),
        }
    }
}

pub(super) type Reply = oneshot::Sender<Result<Vec<u8>, FunctionError>>;

/// One event for a worker.
pub struct Invocation {
    pub request_id: String,
    pub event: Vec<u8>,
    pub reply: Reply,
    /// When it was first queued (a requeued one keeps its place in time).
    pub queued_at: std::time::Instant,
}

impl Invocation {
    /// Fails it before any runtime took it (an init error, say).
    pub fn fail(self, app: &str, err: FunctionError) {
        log_failure(app, &self.request_id, &err);
        let _ = self.reply.send(Err(err));
    }
}

/// The line every failed invocation gets, taken by a runtime or not.
pub(super) fn log_failure(app: &str, request_id: &str, err: &FunctionError) {
    tracing::warn!(target: "function", app = %app, request_id = %request_id, error = %err, "invocation failed");
}

/// A running worker: its process and Runtime API endpoint, kept by the
/// endpoint's tasks until the process ends.
pub struct Worker {
    pgid: std::sync::OnceLock<i32>,
    alive: AtomicBool,
    /// It has asked for an event (its init is over).
    pub(super) ready: AtomicBool,
    /// It has an invocation whose result is not posted yet (kept by the pool).
    pub busy: AtomicBool,
    pub(super) stop: CancellationToken,
    /// Why it was stopped, when the process exit alone would not say.
    stopped_because: Mutex<Option<String>>,
}

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

impl Worker {
    /// Starts a worker for the pool: its Runtime API endpoint and process.
    pub fn spawn(pool: &Arc<Shared>) -> Result<Arc<Worker>, FunctionError> {
        let spec = &pool.spec;
        let unavailable =
            |what: &str, e: std::io::Error| FunctionError::Unavailable(format!("{what}: {e}"));
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
        // SAFETY: no arguments, no memory.
        let owner = cell
            .as_ref()
            .map_or_else(|| unsafe { libc::geteuid() }, |c| c.uid);
        let listener = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.set_nonblocking(true).map(|()| l))
            .and_then(tokio::net::TcpListener::from_std)
            .and_then(|l| OwnedBy::new(l, owner))
            .map_err(|e| unavailable("binding the runtime API", e))?;
        let addr = axum::serve::Listener::local_addr(&listener)
            .map_err(|e| unavailable("binding the runtime API", e))?
            .to_string();
        let RuntimePipes {
            requests,
            answers,
            theirs,
        } = RuntimePipes::new().map_err(|e| unavailable("creating the runtime API pipes", e))?;
        let worker = Arc::new(Worker {
            pgid: std::sync::OnceLock::new(),
            alive: AtomicBool::new(true),
            ready: AtomicBool::new(false),
            busy: AtomicBool::new(false),
            stop: CancellationToken::new(),
            stopped_because: Mutex::default(),
        });
        let current: Arc<Mutex<Option<String>>> = Arc::default();
        let (api, armed) = Api::new(pool.clone(), worker.clone(), current.clone());
        let api = Arc::new(api);
        let stop = worker.stop.clone();
        super::pipes::serve(requests, answers, api.clone(), stop.clone())
            .map_err(|e| unavailable("serving the runtime API pipes", e))?;
        // Beside the pipes' connection, so arming a deadline wakes nothing on another thread.
        super::pipes::runtime_api_thread()
            .map_err(|e| unavailable("starting the runtime API thread", e))?
            .spawn(watchdog(api.clone(), armed));
        // Small responses back to back (the 202 of a result, then the next
        // event): without TCP_NODELAY, Nagle and delayed ACKs stall them 40 ms.
        let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
            let _ = tcp.set_nodelay(true);
        });
        let server_stop = stop.clone();
        let router = super::runtime_api::router(api.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, router)
                .with_graceful_shutdown(server_stop.cancelled_owned())
                .await;
        });

        let confined = cell.is_some();
        let (program, args): (PathBuf, Vec<PathBuf>) = match spec.config.kind() {
            // A small young generation keeps each worker near Node's 40 MiB
            // baseline under load (the default lets it grow by tens of MiB);
            // the old one stops within memorySize, as Lambda's runtime sets it.
            RuntimeKind::Node => (
                layout.interpreter("node", confined),
                vec![
                    "--max-semi-space-size=1".into(),
                    format!("--max-old-space-size={}", spec.config.memory_size * 9 / 10).into(),
                    layout.runtime_dir.join(super::NODE_BOOTSTRAP),
                ],
            ),
            RuntimeKind::Python => (
                layout.interpreter("python3", confined),
                vec![layout.runtime_dir.join(super::PYTHON_BOOTSTRAP)],
            ),
            RuntimeKind::Provided => (layout.task_root.join("bootstrap"), Vec::new()),
        };
        let (launcher, launch_args) = match &cell {
            Some(cell) => (
                cell.program().to_owned(),
                cell.arguments(&spec.code_dir, &spec.runtimes_dir, &program, &args),
            ),
            None => (
                program.clone(),
                args.iter().map(|a| a.as_os_str().to_owned()).collect(),
            ),
        };
        let joiner = cell
            .as_ref()
            .map(Cell::joiner)
            .transpose()
            .map_err(|e| unavailable("joining the worker's cgroups", e))?;
        let mut command = Command::new(&launcher);
        command
            .args(&launch_args)
            .env_clear()
            .envs(environment(spec, &layout, &addr))
            .env(
                RUNTIME_FDS_ENV,
                format!("{},{}", RUNTIME_FDS[0], RUNTIME_FDS[1]),
            )
            .current_dir(&spec.code_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        let their_fds = [theirs[0].as_raw_fd(), theirs[1].as_raw_fd()];
        let batch = spec.batch_scheduling;
        // SAFETY: prctl, sched_setscheduler, dup2 and fcntl are
        // async-signal-safe and touch no memory of the parent; `theirs`
        // stays open until after the spawn.
        unsafe {
            command.pre_exec(move || {
                if let Some(joiner) = &joiner {
                    joiner.join()?;
                }
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
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
        let mut child = command.spawn().map_err(|e| {
            stop.cancel();
            FunctionError::Failed(format!("could not start {}: {e}", launcher.display()))
        })?;
        // The child holds its ends now; ours closing lets the server see the child go.
        drop(theirs);
        if let Some(pgid) = child.id().and_then(|p| i32::try_from(p).ok()) {
            let _ = worker.pgid.set(pgid);
        }
        for stream in [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn AsyncRead + Send + Unpin>),
            child.stderr.take().map(|s| Box::new(s) as _),
        ]
        .into_iter()
        .flatten()
        {
            let app = spec.app.clone();
            let current = current.clone();
            tokio::spawn(forward_lines(stream, move |line| {
                let request = current
                    .lock()
                    .ok()
                    .and_then(|c| c.clone())
                    .unwrap_or_else(|| "-".into());
                tracing::info!(target: "function", app = %app, request_id = %request, "{line}");
            }));
        }
        let app = spec.app.clone();
        let memory_size = spec.config.memory_size;
        tokio::spawn(async move {
            let status = child.wait().await;
            let out_of_memory = cell.as_ref().is_some_and(Cell::ran_out_of_memory);
            if out_of_memory {
                if let Ok(mut slot) = api.worker.stopped_because.lock() {
                    slot.get_or_insert(format!(
                        "Runtime exited: out of memory (memorySize {memory_size} MB)"
                    ));
                }
            }
            let worker = api.worker.clone();
            worker.alive.store(false, Ordering::Release);
            worker.stop.cancel();
            let why = worker
                .stopped_because
                .lock()
                .ok()
                .and_then(|r| r.clone())
                .or_else(|| api.init_error.lock().ok().and_then(|e| e.clone()))
                .unwrap_or_else(|| match status {
                    Ok(s) => format!("the runtime exited ({s})"),
                    Err(e) => format!("the runtime could not be waited for: {e}"),
                });
            tracing::info!(app = %app, reason = %why, "function worker stopped");
            api.fail_in_flight(&why);
            api.pool.worker_exited(&worker, &why);
            // Whatever the runtime left behind goes with it; then its user id is free.
            if let Some(cell) = cell {
                cell.clear().await;
            }
        });
        Ok(worker)
    }

    /// Marks it as having asked for an event; true the first time.
    pub fn mark_ready(&self) -> bool {
        !self.ready.swap(true, Ordering::AcqRel)
    }

    /// Kills it, saying why (reported to what it was running or about to run).
    pub(super) fn stop_because(&self, why: String) {
        if let Ok(mut slot) = self.stopped_because.lock() {
            slot.get_or_insert(why);
        }
        self.kill();
    }

    /// Kills the process group and the Runtime API endpoint.
    pub fn kill(&self) {
        if let Some(pgid) = self.pgid.get() {
            if self.alive.swap(false, Ordering::AcqRel) {
                // SAFETY: signalling our own child's process group.
                unsafe { libc::kill(-pgid, libc::SIGKILL) };
            }
        }
        self.stop.cancel();
    }
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
