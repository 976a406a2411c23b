//! One worker: a runtime process and the Lambda Runtime API endpoint
//! (`2018-06-01`) it polls: on two inherited pipes for our own runtime
//! clients, on its own loopback port for any other.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::pool::Shared;
use crate::apps::{FunctionConfig, RuntimeKind};
use crate::functions::FunctionError;

/// Lambda's budget for a runtime's initialisation (before its first event).
const INIT_BUDGET: Duration = Duration::from_secs(10);

/// Lambda's synchronous payload limit (as the emulator counts it).
pub const MAX_PAYLOAD: usize = 6 * 1024 * 1024 + 100;

/// The descriptors on which a worker finds its own connection to the
/// Runtime API (see `serve_runtime_connection`): it reads the API's
/// responses from the first and writes its requests to the second.
const RUNTIME_FDS: [i32; 2] = [3, 4];
/// Tells our runtime clients about them, as `read,write` (other clients use
/// the TCP address).
const RUNTIME_FDS_ENV: &str = "ORCHESTRATOR_RUNTIME_API_FDS";

/// Our ends of a worker's connection to the Runtime API, and theirs.
struct RuntimePipes {
    /// Read: the runtime's requests.
    requests: OwnedFd,
    /// Written: the API's responses.
    responses: OwnedFd,
    /// The runtime's ends: it reads the responses and writes the requests.
    theirs: [OwnedFd; 2],
}

impl RuntimePipes {
    fn new() -> std::io::Result<RuntimePipes> {
        let (their_read, responses) = cloexec_pipe()?;
        let (requests, their_write) = cloexec_pipe()?;
        Ok(RuntimePipes {
            requests,
            responses,
            theirs: [their_read, their_write],
        })
    }
}

/// A pipe's read and write ends, closed on exec (passed on by hand).
fn cloexec_pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two descriptors into the array it is given.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: both are new descriptors that nothing else owns.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// The thread that serves our runtimes' connections. A worker that posts a
/// result waits for its next event; on its own thread that answer is not
/// queued behind the proxy's other work.
pub(super) fn runtime_api_thread() -> std::io::Result<tokio::runtime::Handle> {
    // Started once, under the lock. The runtime is built on its own thread
    // and never dropped: tokio panics when a runtime is dropped in async code.
    static HANDLE: Mutex<Option<tokio::runtime::Handle>> = Mutex::new(None);
    let mut slot = HANDLE.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(handle) = slot.as_ref() {
        return Ok(handle.clone());
    }
    let (built, handle) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("runtime-api".into())
        .spawn(move || {
            match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => {
                    let _ = built.send(Ok(runtime.handle().clone()));
                    runtime.block_on(std::future::pending::<()>());
                }
                Err(err) => {
                    let _ = built.send(Err(err));
                }
            }
        })?;
    // A wait of well under a millisecond, once per process.
    let handle = handle
        .recv()
        .map_err(|_| std::io::Error::other("the runtime API thread ended"))??;
    *slot = Some(handle.clone());
    Ok(handle)
}

/// Serves the Runtime API on our ends of the worker's pipes: the same
/// HTTP/1.1 API as the TCP listener, without loopback TCP's cost per message
/// (several times a pipe's here), and reachable by nothing else.
///
/// Two pipes, not one socket pair: reading a message from a Unix socket
/// wakes whoever sleeps on its sender's socket (the kernel reports the
/// sender's buffer space), and a runtime blocked reading its answer sleeps
/// there. Every result it posted woke it once for nothing, and every answer
/// it read woke our thread, about a quarter of the context switches on an
/// invocation's path. A pipe wakes its writers only when it was full.
fn serve_runtime_connection(
    requests: OwnedFd,
    responses: OwnedFd,
    router: Router,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let service = hyper_util::service::TowerToHyperService::new(router);
    runtime_api_thread()?.spawn(async move {
        use tokio::net::unix::pipe;
        // Registered with this thread's reactor, so made here.
        let (Ok(requests), Ok(responses)) = (
            pipe::Receiver::from_owned_fd(requests),
            pipe::Sender::from_owned_fd(responses),
        ) else {
            return;
        };
        let stream = tokio::io::join(requests, responses);
        // Results come pipelined with the next poll: answer both in one write.
        let connection = hyper::server::conn::http1::Builder::new()
            .pipeline_flush(true)
            .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
        tokio::select! {
            _ = connection => {}
            () = stop.cancelled() => {}
        }
    });
    Ok(())
}

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

type Reply = oneshot::Sender<Result<Vec<u8>, FunctionError>>;

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
fn log_failure(app: &str, request_id: &str, err: &FunctionError) {
    tracing::warn!(target: "function", app = %app, request_id = %request_id, error = %err, "invocation failed");
}

/// The invocation a worker's runtime has taken and not answered yet.
struct Running {
    request_id: String,
    reply: Reply,
    started: Instant,
    deadline: Instant,
}

/// What a worker's watchdog waits for.
#[derive(Clone, Copy)]
enum Deadline {
    /// The end of the init budget (the runtime has not asked for an event yet).
    Init(Instant),
    /// The function's timeout for the invocation taken last.
    Invocation(Instant),
}

/// The Runtime API's view of one worker. Everything about an invocation
/// once a runtime takes it (its deadline, START/END/REPORT, its answer)
/// happens here, in the handlers of the runtime's connection (on the
/// runtime API thread for the pipes, on the main runtime for TCP) and
/// in the worker's watchdog: the caller only waits for the answer.
struct Api {
    pool: Arc<Shared>,
    worker: Arc<Worker>,
    running: Mutex<Option<Running>>,
    deadline: watch::Sender<Deadline>,
    init_error: Mutex<Option<String>>,
    current: Arc<Mutex<Option<String>>>,
    arn: String,
}

impl Api {
    fn running(&self) -> MutexGuard<'_, Option<Running>> {
        // Only plain assignments happen under this lock: a poisoned lock still holds a consistent value.
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a taken invocation and arms its deadline; gives back the
    /// event, the deadline in epoch milliseconds and the request id. A
    /// runtime that asks for another event without answering the last one
    /// abandons it. `None` if the worker is going: the invocation is back in
    /// the queue (or, if the exit path took it first, failed by it).
    fn start(&self, invocation: Invocation) -> Option<(Vec<u8>, i64, String)> {
        let Invocation {
            request_id,
            event,
            reply,
            queued_at,
        } = invocation;
        let now = Instant::now();
        let timeout = Duration::from_secs(u64::from(self.pool.spec.config.timeout));
        let deadline = now + timeout;
        let abandoned = self.running().replace(Running {
            request_id: request_id.clone(),
            reply,
            started: now,
            deadline,
        });
        if let Some(abandoned) = abandoned {
            self.complete(
                abandoned,
                Err(FunctionError::Failed(
                    "the runtime asked for the next event without answering this one".into(),
                )),
            );
        }
        if self.worker.stop.is_cancelled() {
            // The exit path fails what is running after cancelling `stop`; one
            // recorded after that would never be answered, so take it back.
            let orphan = self.running().take();
            if let Some(orphan) = orphan {
                self.pool.requeue(
                    &self.worker,
                    Invocation {
                        request_id: orphan.request_id,
                        event,
                        reply: orphan.reply,
                        queued_at,
                    },
                );
            }
            return None;
        }
        self.deadline.send_replace(Deadline::Invocation(deadline));
        let spec = &self.pool.spec;
        tracing::info!(target: "function", app = %spec.app, request_id = %request_id, "START RequestId: {request_id} Version: {}", spec.version);
        if let Ok(mut current) = self.current.lock() {
            *current = Some(request_id.clone());
        }
        let deadline_ms =
            crate::now_ms() + i64::try_from(timeout.as_millis()).unwrap_or(i64::MAX / 2);
        Some((event, deadline_ms, request_id))
    }

    /// Takes the running invocation if `id` names it, freeing the worker.
    fn finish(&self, id: &str) -> Option<Running> {
        let running = {
            let mut slot = self.running();
            match slot.as_ref() {
                Some(r) if r.request_id == id => slot.take(),
                _ => None,
            }
        }?;
        self.pool.finished(&self.worker);
        Some(running)
    }

    /// Answers an invocation, with Lambda's END and REPORT lines.
    fn complete(&self, running: Running, outcome: Result<Vec<u8>, FunctionError>) {
        let spec = &self.pool.spec;
        let (app, request_id) = (&spec.app, &running.request_id);
        let duration = running.started.elapsed().as_secs_f64() * 1000.0;
        tracing::info!(target: "function", app = %app, request_id = %request_id, "END RequestId: {request_id}");
        tracing::info!(
            target: "function", app = %app, request_id = %request_id,
            "REPORT RequestId: {request_id}\tDuration: {duration:.2} ms\tBilled Duration: {} ms\tMemory Size: {} MB",
            duration.ceil() as u64,
            spec.config.memory_size
        );
        if let Err(err) = &outcome {
            log_failure(app, request_id, err);
        }
        let _ = running.reply.send(outcome);
    }

    /// Fails the invocation in flight (the process is gone).
    fn fail_in_flight(&self, why: &str) {
        let running = self.running().take();
        if let Some(running) = running {
            self.complete(running, Err(FunctionError::Failed(why.to_owned())));
        }
    }

    /// A deadline passed: an init over budget or an invocation over its
    /// timeout stops the worker (unless it finished in the meantime).
    fn expired(&self, deadline: Deadline) {
        match deadline {
            Deadline::Init(_) => {
                if !self.worker.ready.load(Ordering::Acquire) {
                    self.worker.stop_because(format!(
                        "the runtime did not finish initialising within {} s",
                        INIT_BUDGET.as_secs()
                    ));
                }
            }
            Deadline::Invocation(_) => {
                let timed_out = {
                    let mut slot = self.running();
                    match slot.as_ref() {
                        Some(r) if r.deadline <= Instant::now() => slot.take(),
                        _ => None,
                    }
                };
                if let Some(running) = timed_out {
                    let seconds = self.pool.spec.config.timeout;
                    self.worker
                        .stop_because(format!("the function timed out after {seconds} s"));
                    self.complete(running, Err(FunctionError::Timeout(seconds)));
                }
            }
        }
    }
}

/// Enforces a worker's deadlines until it stops.
async fn watchdog(api: Arc<Api>, mut deadline: watch::Receiver<Deadline>) {
    let stop = api.worker.stop.clone();
    loop {
        let armed = *deadline.borrow_and_update();
        let (Deadline::Init(at) | Deadline::Invocation(at)) = armed;
        tokio::select! {
            changed = deadline.changed() => if changed.is_err() { return },
            () = stop.cancelled() => return,
            () = tokio::time::sleep_until(at) => {
                api.expired(armed);
                // Fired: nothing to wait for until the next deadline.
                tokio::select! {
                    changed = deadline.changed() => if changed.is_err() { return },
                    () = stop.cancelled() => return,
                }
            }
        }
    }
}

fn api_error(status: StatusCode, kind: &str, message: &str) -> Response {
    (
        status,
        Json(json!({"errorType": kind, "errorMessage": message})),
    )
        .into_response()
}

async fn next_invocation(State(api): State<Arc<Api>>) -> Response {
    let invocation = api.pool.next_for(&api.worker, &api.worker.stop).await;
    let Some((event, deadline_ms, request_id)) = invocation.and_then(|i| api.start(i)) else {
        // Reaped, retired or killed: the process goes too.
        api.worker.kill();
        return api_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Runtime.ShuttingDown",
            "the worker is stopping",
        );
    };
    let mut headers = HeaderMap::new();
    let mut set = |name: &'static str, value: String| {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(name, value);
        }
    };
    let hex = request_id.replace('-', "");
    let trace = format!(
        "Root=1-{:08x}-{};Parent={};Sampled=0",
        deadline_ms / 1000,
        &hex[..24],
        &hex[..16]
    );
    set("lambda-runtime-aws-request-id", request_id);
    set("lambda-runtime-deadline-ms", deadline_ms.to_string());
    set("lambda-runtime-invoked-function-arn", api.arn.clone());
    set("lambda-runtime-trace-id", trace);
    set("content-type", "application/json".to_owned());
    (StatusCode::OK, headers, event).into_response()
}

/// The Runtime API's `202 {"status":"OK"}` for a posted result or error
/// (a constant body: it is on every invocation's path).
fn accepted() -> Response {
    (
        StatusCode::ACCEPTED,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        r#"{"status":"OK"}"#,
    )
        .into_response()
}

/// The Runtime API's answer for a result or error posted for no waiting invocation.
fn unknown_request_id() -> Response {
    api_error(
        StatusCode::BAD_REQUEST,
        "InvalidRequestID",
        "no invocation is waiting for this id",
    )
}

async fn read_body(body: Body) -> Result<Vec<u8>, ()> {
    axum::body::to_bytes(body, MAX_PAYLOAD)
        .await
        .map(|b| b.to_vec())
        .map_err(|_| ())
}

async fn post_response(
    State(api): State<Arc<Api>>,
    Path(id): Path<String>,
    body: Body,
) -> Response {
    // Read while the invocation still runs: its timeout covers the upload.
    let body = read_body(body).await;
    let Some(running) = api.finish(&id) else {
        return unknown_request_id();
    };
    match body {
        Ok(result) => {
            api.complete(running, Ok(result));
            accepted()
        }
        Err(()) => {
            api.complete(
                running,
                Err(FunctionError::PayloadTooLarge(
                    "the function's response is larger than 6 MB".into(),
                )),
            );
            let message = format!("Exceeded maximum allowed payload size ({MAX_PAYLOAD} bytes).");
            api_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "RequestEntityTooLarge",
                &message,
            )
        }
    }
}

/// The error a runtime reported: its message, or the error type header.
fn describe_error(headers: &HeaderMap, body: &[u8]) -> String {
    let parsed: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    let field = |k: &str| {
        parsed
            .as_ref()
            .and_then(|v| v.get(k))
            .and_then(|v| v.as_str())
            .map(str::to_owned)
    };
    let kind = field("errorType")
        .or_else(|| {
            headers
                .get("lambda-runtime-function-error-type")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        })
        .unwrap_or_else(|| "Unhandled".into());
    match field("errorMessage") {
        Some(message) => format!("{kind}: {message}"),
        None => kind,
    }
}

async fn post_error(
    State(api): State<Arc<Api>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let body = read_body(body).await.unwrap_or_default();
    let Some(running) = api.finish(&id) else {
        return unknown_request_id();
    };
    api.complete(
        running,
        Err(FunctionError::Failed(describe_error(&headers, &body))),
    );
    accepted()
}

async fn post_init_error(State(api): State<Arc<Api>>, headers: HeaderMap, body: Body) -> Response {
    let body = read_body(body).await.unwrap_or_default();
    let error = format!("init error: {}", describe_error(&headers, &body));
    if let Ok(mut slot) = api.init_error.lock() {
        *slot = Some(error);
    }
    accepted()
}

/// A running worker: its process and Runtime API endpoint, kept by the
/// endpoint's tasks until the process ends.
pub struct Worker {
    pgid: std::sync::OnceLock<i32>,
    alive: AtomicBool,
    /// It has asked for an event (its init is over).
    ready: AtomicBool,
    /// It has an invocation whose result is not posted yet (kept by the pool).
    pub busy: AtomicBool,
    stop: CancellationToken,
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
            responses,
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
        // As on Lambda, the runtime has its own budget to initialise.
        let (deadline, armed) = watch::channel(Deadline::Init(Instant::now() + INIT_BUDGET));
        let api = Arc::new(Api {
            pool: pool.clone(),
            worker: worker.clone(),
            running: Mutex::default(),
            deadline,
            init_error: Mutex::default(),
            current: current.clone(),
            arn: format!(
                "arn:aws:lambda:{}:000000000000:function:{}",
                spec.region, spec.app
            ),
        });
        let router = Router::new()
            .route("/2018-06-01/runtime/invocation/next", get(next_invocation))
            .route(
                "/2018-06-01/runtime/invocation/{id}/response",
                post(post_response),
            )
            .route(
                "/2018-06-01/runtime/invocation/{id}/error",
                post(post_error),
            )
            .route("/2018-06-01/runtime/init/error", post(post_init_error))
            .layer(axum::extract::DefaultBodyLimit::disable())
            .with_state(api.clone());
        let stop = worker.stop.clone();
        serve_runtime_connection(requests, responses, router.clone(), stop.clone())
            .map_err(|e| unavailable("serving the runtime API pipes", e))?;
        // Beside the socket's connection, so arming a deadline wakes nothing on another thread.
        runtime_api_thread()
            .map_err(|e| unavailable("starting the runtime API thread", e))?
            .spawn(watchdog(api.clone(), armed));
        // Small responses back to back (the 202 of a result, then the next
        // event): without TCP_NODELAY, Nagle and delayed ACKs stall them 40 ms.
        let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
            let _ = tcp.set_nodelay(true);
        });
        let server_stop = stop.clone();
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
    fn stop_because(&self, why: String) {
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
