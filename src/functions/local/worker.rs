//! One worker: a runtime process and its connections to the Lambda Runtime
//! API (see `runtime_api`): two inherited pipes for our own runtime
//! clients (see `pipes`), its own loopback port for any other.

use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use super::pipes::{RuntimePipes, RUNTIME_FDS, RUNTIME_FDS_ENV};
use super::pool::Shared;
use super::runtime_api::{watchdog, Api};
use crate::apps::{FunctionConfig, RuntimeKind};
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

fn environment(spec: &WorkerSpec, api_addr: &str) -> Vec<(String, String)> {
    let config = &spec.config;
    let mut env: Vec<(String, String)> = config
        .environment
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let path = std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".into());
    let stream = format!(
        "{}/[{}]{}",
        chrono::Utc::now().format("%Y/%m/%d"),
        spec.version,
        uuid::Uuid::new_v4().simple()
    );
    for (key, value) in [
        ("AWS_LAMBDA_RUNTIME_API", api_addr.to_owned()),
        ("_HANDLER", config.handler.clone()),
        ("LAMBDA_TASK_ROOT", spec.code_dir.display().to_string()),
        (
            "LAMBDA_RUNTIME_DIR",
            spec.runtimes_dir.display().to_string(),
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
        ("PATH", path),
        ("HOME", std::env::temp_dir().display().to_string()),
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
        let listener = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.set_nonblocking(true).map(|()| l))
            .and_then(tokio::net::TcpListener::from_std)
            .map_err(|e| unavailable("binding the runtime API", e))?;
        let addr = listener
            .local_addr()
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

        let (program, args): (PathBuf, Vec<PathBuf>) = match spec.config.kind() {
            // A small young generation keeps each worker near Node's 40 MiB
            // baseline under load (the default lets it grow by tens of MiB).
            RuntimeKind::Node => (
                "node".into(),
                vec![
                    "--max-semi-space-size=1".into(),
                    spec.runtimes_dir.join(super::NODE_BOOTSTRAP),
                ],
            ),
            RuntimeKind::Python => (
                "python3".into(),
                vec![spec.runtimes_dir.join(super::PYTHON_BOOTSTRAP)],
            ),
            RuntimeKind::Provided => (spec.code_dir.join("bootstrap"), Vec::new()),
        };
        let mut command = Command::new(&program);
        command
            .args(&args)
            .env_clear()
            .envs(environment(spec, &addr))
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
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                // A worker woken by its next event then does not preempt the
                // thread that wrote it, which goes on to the next request.
                // Where it is refused, the worker runs as a normal process.
                if batch {
                    let _ = crate::run_as_batch_work();
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
            FunctionError::Failed(format!("could not start {}: {e}", program.display()))
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
                .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Send + Unpin>),
            child.stderr.take().map(|s| Box::new(s) as _),
        ]
        .into_iter()
        .flatten()
        {
            let app = spec.app.clone();
            let current = current.clone();
            tokio::spawn(async move {
                let mut lines = BufReader::new(stream).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    let request = current
                        .lock()
                        .ok()
                        .and_then(|c| c.clone())
                        .unwrap_or_else(|| "-".into());
                    tracing::info!(target: "function", app = %app, request_id = %request, "{line}");
                }
            });
        }
        let app = spec.app.clone();
        tokio::spawn(async move {
            let status = child.wait().await;
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
