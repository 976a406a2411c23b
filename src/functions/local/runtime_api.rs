//! The Lambda Runtime API (`2018-06-01`) as one worker's runtime sees it:
//! an adapter over the pool's operations (`next_for`, `finished`,
//! `requeue`) that does what each call means for the invocation the worker
//! runs, with the worker's deadlines. Whichever transport brings a call (two
//! pipes for our own clients, see `pipes`; loopback TCP for any other, see
//! `tcp`) hands it to [`Api::answer`]. Imports `pool`, `handle`,
//! `invocation` and `protocol`.

use crate::functions::logs::{self, AppLog};
use crate::telemetry::trace::TraceContext;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::http::{HeaderValue, StatusCode};
use tokio::sync::watch;
use tokio::time::Instant;

use super::handle::WorkerHandle;
use super::invocation::{log_failure, Invocation, Reply};
use super::pool::Shared;
use super::protocol::{Answer, Call, TooLarge};
use crate::functions::FunctionError;
use crate::telemetry::metrics::{AppFunctionMetrics, InvocationOutcome as Outcome};

/// Lambda's budget for a runtime's initialisation (before its first event).
pub const INIT_BUDGET: Duration = Duration::from_secs(10);

/// The invocation a worker's runtime has taken and not answered yet.
struct Running {
    request_id: String,
    reply: Reply,
    started: Instant,
    deadline: Instant,
}

/// What a worker's watchdog waits for.
#[derive(Clone, Copy)]
pub enum Deadline {
    /// The end of the init budget (the runtime has not asked for an event yet).
    Init(Instant),
    /// The function's timeout for the invocation taken last.
    Invocation(Instant),
}

/// The Runtime API's view of one worker. Everything about an invocation
/// once a runtime takes it (its deadline, START/END/REPORT, its answer)
/// happens here, in the calls of the runtime's connection (on the runtime
/// API thread for the pipes, on the main runtime for TCP) and in the
/// worker's watchdog: the caller only waits for the answer.
pub struct Api {
    pub pool: Arc<Shared>,
    pub worker: Arc<WorkerHandle>,
    function: Arc<Function>,
    running: Mutex<Option<Running>>,
    deadline: watch::Sender<Deadline>,
    pub init_error: Mutex<Option<String>>,
    /// The request id of the invocation taken last (for its output lines).
    pub current: Arc<Mutex<Option<String>>>,
    /// When the worker was started, and how long its runtime took to ask
    /// for its first event (its init), until its first invocation counts
    /// the cold start.
    spawned: Instant,
    init: Mutex<Option<Duration>>,
    cold: std::sync::atomic::AtomicBool,
}

/// What the API tells a runtime about its function, and how long an
/// invocation may run: the same for every worker of a deployment.
pub struct Function {
    pub app: String,
    /// The app's function metrics.
    pub metrics: AppFunctionMetrics,
    pub version: i64,
    /// Seconds an invocation may run.
    pub timeout: u32,
    pub memory_size: u32,
    pub arn: String,
    /// Where its lines are kept (`GET /apps/{name}/logs`).
    pub log: AppLog,
}

impl Function {
    pub fn new(
        app: &str,
        version: i64,
        timeout: u32,
        memory_size: u32,
        region: &str,
        metrics: AppFunctionMetrics,
        log: AppLog,
    ) -> Function {
        Function {
            app: app.to_owned(),
            metrics,
            log,
            version,
            timeout,
            memory_size,
            arn: format!("arn:aws:lambda:{region}:000000000000:function:{app}"),
        }
    }
}

impl Api {
    /// The API for a worker that has just been started; its watchdog waits
    /// on the receiver.
    pub fn new(
        pool: Arc<Shared>,
        worker: Arc<WorkerHandle>,
        function: Arc<Function>,
        current: Arc<Mutex<Option<String>>>,
    ) -> (Api, watch::Receiver<Deadline>) {
        // As on Lambda, the runtime has its own budget to initialise.
        let (deadline, armed) = watch::channel(Deadline::Init(Instant::now() + INIT_BUDGET));
        let api = Api {
            pool,
            worker,
            function,
            running: Mutex::default(),
            deadline,
            init_error: Mutex::default(),
            current,
            spawned: Instant::now(),
            init: Mutex::default(),
            cold: std::sync::atomic::AtomicBool::new(true),
        };
        (api, armed)
    }

    /// The function this worker runs.
    pub fn function(&self) -> &Function {
        &self.function
    }

    fn running(&self) -> MutexGuard<'_, Option<Running>> {
        // Only plain assignments happen under this lock: a poisoned lock still holds a consistent value.
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Answers one call. A posted body comes read (or too large to read):
    /// a result's upload is inside its invocation's timeout.
    pub async fn answer(
        &self,
        call: Call,
        error_type: Option<&str>,
        body: Result<Vec<u8>, TooLarge>,
    ) -> Answer {
        match call {
            Call::Next => self.next().await,
            Call::Response(id) => self.post_response(&id, body),
            Call::Error(id) => {
                let Some(running) = self.finish(&id) else {
                    return Answer::unknown_request_id();
                };
                let error = describe_error(error_type, &body.unwrap_or_default());
                self.complete(running, Err(FunctionError::Failed(error)), Outcome::Error);
                Answer::accepted()
            }
            Call::InitError => {
                let error = describe_error(error_type, &body.unwrap_or_default());
                if let Ok(mut slot) = self.init_error.lock() {
                    *slot = Some(format!("init error: {error}"));
                }
                Answer::accepted()
            }
        }
    }

    /// The next event, with Lambda's headers; waits for one.
    async fn next(&self) -> Answer {
        if self.cold.load(std::sync::atomic::Ordering::Relaxed) {
            if let Ok(mut init) = self.init.lock() {
                init.get_or_insert_with(|| self.spawned.elapsed());
            }
        }
        let invocation = self.pool.next_for(&self.worker, &self.worker.stop).await;
        let Some((event, deadline_ms, request_id, trace)) = invocation.and_then(|i| self.start(i))
        else {
            // Reaped, retired or killed: the process goes too.
            self.worker.kill();
            return Answer::error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Runtime.ShuttingDown",
                "the worker is stopping",
            );
        };
        let headers = [
            ("lambda-runtime-aws-request-id", Some(request_id)),
            ("lambda-runtime-deadline-ms", Some(deadline_ms.to_string())),
            (
                "lambda-runtime-invoked-function-arn",
                Some(self.function.arn.clone()),
            ),
            ("lambda-runtime-trace-id", Some(trace.xray())),
        ];
        // A value that is not a valid header (none of ours should be) is left out.
        let headers = headers
            .into_iter()
            .filter_map(|(name, value)| Some((name, HeaderValue::try_from(value?).ok()?)))
            .collect();
        Answer {
            status: StatusCode::OK,
            headers,
            body: event.into(),
        }
    }

    fn post_response(&self, id: &str, body: Result<Vec<u8>, TooLarge>) -> Answer {
        let Some(running) = self.finish(id) else {
            return Answer::unknown_request_id();
        };
        match body {
            Ok(result) => {
                self.complete(running, Ok(result), Outcome::Success);
                Answer::accepted()
            }
            Err(TooLarge) => {
                self.complete(
                    running,
                    Err(FunctionError::PayloadTooLarge(
                        "the function's response is larger than 6 MB".into(),
                    )),
                    Outcome::Error,
                );
                Answer::too_large()
            }
        }
    }

    /// Records a taken invocation and arms its deadline; gives back the
    /// event, the deadline in epoch milliseconds and the request id. A
    /// runtime that asks for another event without answering the last one
    /// abandons it. `None` if the worker is going: the invocation is back in
    /// the queue (or, if the exit path took it first, failed by it).
    fn start(&self, invocation: Invocation) -> Option<(Vec<u8>, i64, String, TraceContext)> {
        let Invocation {
            request_id,
            event,
            reply,
            queued_at,
            trace,
        } = invocation;
        let now = Instant::now();
        let timeout = Duration::from_secs(u64::from(self.function.timeout));
        let deadline = now + timeout;
        // Counted running from the moment it is in the slot: whoever takes it
        // out (its answer, a timeout, the exit path, or the requeue below)
        // counts it stopped.
        self.function.metrics.started_running();
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
                Outcome::Error,
            );
        }
        if self.worker.stop.is_cancelled() {
            // The exit path fails what is running after cancelling `stop`; one
            // recorded after that would never be answered, so take it back.
            let orphan = self.running().take();
            if let Some(orphan) = orphan {
                self.function.metrics.stopped_running();
                self.pool.requeue(
                    &*self.worker,
                    Invocation {
                        request_id: orphan.request_id,
                        event,
                        reply: orphan.reply,
                        queued_at,
                        trace,
                    },
                );
            }
            return None;
        }
        self.deadline.send_replace(Deadline::Invocation(deadline));
        let function = &*self.function;
        if self.cold.swap(false, std::sync::atomic::Ordering::Relaxed) {
            let init = self.init.lock().ok().and_then(|mut i| i.take());
            function
                .metrics
                .cold_start(init.unwrap_or_else(|| self.spawned.elapsed()));
        }
        let start = format!(
            "START RequestId: {request_id} Version: {}",
            function.version
        );
        tracing::info!(target: "function", app = %function.app, request_id = %request_id, "{start}");
        function
            .log
            .write(Some(&request_id), logs::PLATFORM, &start);
        if let Ok(mut current) = self.current.lock() {
            *current = Some(request_id.clone());
        }
        let deadline_ms =
            crate::support::now_ms() + i64::try_from(timeout.as_millis()).unwrap_or(i64::MAX / 2);
        Some((event, deadline_ms, request_id, trace))
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
        self.pool.finished(&*self.worker);
        Some(running)
    }

    /// Answers an invocation, with Lambda's END and REPORT lines, and counts
    /// it as `kind` (a success when it has a result).
    fn complete(&self, running: Running, outcome: Result<Vec<u8>, FunctionError>, kind: Outcome) {
        let function = &*self.function;
        let (app, request_id) = (&function.app, &running.request_id);
        let ran = running.started.elapsed();
        function.metrics.stopped_running();
        function.metrics.invoked(
            if outcome.is_ok() {
                Outcome::Success
            } else {
                kind
            },
            Some(ran),
        );
        let duration = ran.as_secs_f64() * 1000.0;
        if let Err(err) = &outcome {
            log_failure(app, request_id, err);
            function
                .log
                .write(Some(request_id), logs::PLATFORM, &err.to_string());
        }
        let end = format!("END RequestId: {request_id}");
        let report = format!(
            "REPORT RequestId: {request_id}\tDuration: {duration:.2} ms\tBilled Duration: {} ms\tMemory Size: {} MB",
            duration.ceil() as u64,
            function.memory_size
        );
        tracing::info!(target: "function", app = %app, request_id = %request_id, "{end}");
        tracing::info!(target: "function", app = %app, request_id = %request_id, "{report}");
        function.log.write(Some(request_id), logs::PLATFORM, &end);
        function
            .log
            .write(Some(request_id), logs::PLATFORM, &report);
        let _ = running.reply.send(outcome);
    }

    /// Fails the invocation in flight (the process is gone).
    pub fn fail_in_flight(&self, why: &str) {
        let running = self.running().take();
        if let Some(running) = running {
            self.complete(
                running,
                Err(FunctionError::Failed(why.to_owned())),
                Outcome::Crash,
            );
        }
    }

    /// A deadline passed: an init over budget or an invocation over its
    /// timeout stops the worker (unless it finished in the meantime).
    fn expired(&self, deadline: Deadline) {
        match deadline {
            Deadline::Init(_) => {
                if !self.worker.is_ready() {
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
                    let seconds = self.function.timeout;
                    self.worker
                        .stop_because(format!("the function timed out after {seconds} s"));
                    self.complete(
                        running,
                        Err(FunctionError::Timeout(seconds)),
                        Outcome::Timeout,
                    );
                }
            }
        }
    }
}

/// Enforces a worker's deadlines until it stops.
pub async fn watchdog(api: Arc<Api>, mut deadline: watch::Receiver<Deadline>) {
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

/// The error a runtime reported: its message, or the error type header.
fn describe_error(error_type: Option<&str>, body: &[u8]) -> String {
    let parsed: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    let field = |k: &str| {
        parsed
            .as_ref()
            .and_then(|v| v.get(k))
            .and_then(|v| v.as_str())
            .map(str::to_owned)
    };
    let kind = field("errorType")
        .or_else(|| error_type.map(str::to_owned))
        .unwrap_or_else(|| "Unhandled".into());
    match field("errorMessage") {
        Some(message) => format!("{kind}: {message}"),
        None => kind,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reported_error_is_its_type_and_message() {
        let body = br#"{"errorType":"TypeError","errorMessage":"x is undefined"}"#;
        assert_eq!(
            describe_error(Some("Other"), body),
            "TypeError: x is undefined"
        );
        assert_eq!(describe_error(Some("Custom"), b"not json"), "Custom");
        assert_eq!(describe_error(None, b""), "Unhandled");
    }
}
