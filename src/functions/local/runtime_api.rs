//! The Lambda Runtime API (`2018-06-01`) as one worker's runtime sees it:
//! its routes, what each call does to the invocation the worker runs, and
//! the worker's deadlines. The calls come over HTTP/1.1 on a loopback TCP
//! port (any runtime client, served by axum here) or on two pipes (our own
//! clients, see `pipes`); both hand them to [`Api::answer`].

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use bytes::Bytes;
use serde_json::json;
use tokio::sync::watch;
use tokio::time::Instant;

use super::pool::Shared;
use super::worker::{log_failure, Invocation, Worker};
use crate::functions::FunctionError;

/// Lambda's budget for a runtime's initialisation (before its first event).
pub const INIT_BUDGET: Duration = Duration::from_secs(10);

/// Lambda's synchronous payload limit (as the emulator counts it).
pub const MAX_PAYLOAD: usize = 6 * 1024 * 1024 + 100;

/// The header a runtime names its error's type in.
pub const ERROR_TYPE_HEADER: &str = "lambda-runtime-function-error-type";

/// Where every route of the API starts.
const PREFIX: &str = "/2018-06-01/runtime/";

/// One call of the Runtime API.
#[derive(Debug, PartialEq)]
pub enum Call {
    /// `GET invocation/next`
    Next,
    /// `POST invocation/{id}/response`
    Response(String),
    /// `POST invocation/{id}/error`
    Error(String),
    /// `POST init/error`
    InitError,
}

impl Call {
    /// The call a request line names, or the API's answer to a wrong one.
    pub fn route(method: &str, path: &str) -> Result<Call, Answer> {
        let not_found = || {
            Answer::error(
                StatusCode::NOT_FOUND,
                "NotFound",
                &format!("no Runtime API route {path}"),
            )
        };
        let route = path.strip_prefix(PREFIX).ok_or_else(not_found)?;
        // Up to four segments, without collecting them (two calls an invocation).
        let mut segments = route.split('/');
        let segments = [(); 4].map(|()| segments.next());
        let (call, wants) = match segments {
            [Some("invocation"), Some("next"), None, None] => (Call::Next, Method::GET),
            [Some("init"), Some("error"), None, None] => (Call::InitError, Method::POST),
            [Some("invocation"), Some(id), Some("response"), None] if !id.is_empty() => {
                (Call::Response(id.to_owned()), Method::POST)
            }
            [Some("invocation"), Some(id), Some("error"), None] if !id.is_empty() => {
                (Call::Error(id.to_owned()), Method::POST)
            }
            _ => return Err(not_found()),
        };
        if method != wants.as_str() {
            return Err(Answer::error(
                StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
                &format!("{path} takes {wants}, not {method}"),
            ));
        }
        Ok(call)
    }
}

/// A posted body over the payload limit (not read).
#[derive(Debug)]
pub struct TooLarge;

/// The API's answer to one call: always JSON.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    /// Besides `content-type` and `content-length` (valid values only, for
    /// either transport).
    pub headers: Vec<(&'static str, HeaderValue)>,
    pub body: Bytes,
}

impl Answer {
    pub fn error(status: StatusCode, kind: &str, message: &str) -> Answer {
        let body = json!({"errorType": kind, "errorMessage": message}).to_string();
        Answer {
            status,
            headers: Vec::new(),
            body: body.into(),
        }
    }

    /// `202 {"status":"OK"}` for a posted result or error (a constant body:
    /// it is on every invocation's path).
    fn accepted() -> Answer {
        Answer {
            status: StatusCode::ACCEPTED,
            headers: Vec::new(),
            body: Bytes::from_static(br#"{"status":"OK"}"#),
        }
    }

    /// A result or error posted for no waiting invocation.
    fn unknown_request_id() -> Answer {
        Answer::error(
            StatusCode::BAD_REQUEST,
            "InvalidRequestID",
            "no invocation is waiting for this id",
        )
    }

    /// A posted result over the limit.
    fn too_large() -> Answer {
        let message = format!("Exceeded maximum allowed payload size ({MAX_PAYLOAD} bytes).");
        Answer::error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestEntityTooLarge",
            &message,
        )
    }
}

impl IntoResponse for Answer {
    fn into_response(self) -> Response {
        let mut response = (
            self.status,
            [(header::CONTENT_TYPE, "application/json")],
            Body::from(self.body),
        )
            .into_response();
        for (name, value) in self.headers {
            response.headers_mut().insert(name, value);
        }
        response
    }
}

/// The invocation a worker's runtime has taken and not answered yet.
struct Running {
    request_id: String,
    reply: super::worker::Reply,
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
    pub worker: Arc<Worker>,
    running: Mutex<Option<Running>>,
    deadline: watch::Sender<Deadline>,
    pub init_error: Mutex<Option<String>>,
    /// The request id of the invocation taken last (for its output lines).
    pub current: Arc<Mutex<Option<String>>>,
    arn: String,
}

impl Api {
    /// The API for a worker that has just been started; its watchdog waits
    /// on the receiver.
    pub fn new(
        pool: Arc<Shared>,
        worker: Arc<Worker>,
        current: Arc<Mutex<Option<String>>>,
    ) -> (Api, watch::Receiver<Deadline>) {
        // As on Lambda, the runtime has its own budget to initialise.
        let (deadline, armed) = watch::channel(Deadline::Init(Instant::now() + INIT_BUDGET));
        let arn = format!(
            "arn:aws:lambda:{}:000000000000:function:{}",
            pool.spec.region, pool.spec.app
        );
        let api = Api {
            pool,
            worker,
            running: Mutex::default(),
            deadline,
            init_error: Mutex::default(),
            current,
            arn,
        };
        (api, armed)
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
                self.complete(running, Err(FunctionError::Failed(error)));
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
        let invocation = self.pool.next_for(&self.worker, &self.worker.stop).await;
        let Some((event, deadline_ms, request_id)) = invocation.and_then(|i| self.start(i)) else {
            // Reaped, retired or killed: the process goes too.
            self.worker.kill();
            return Answer::error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Runtime.ShuttingDown",
                "the worker is stopping",
            );
        };
        let hex = request_id.replace('-', "");
        let trace = match (hex.get(..24), hex.get(..16)) {
            (Some(root), Some(parent)) => Some(format!(
                "Root=1-{:08x}-{root};Parent={parent};Sampled=0",
                deadline_ms / 1000
            )),
            _ => None,
        };
        let headers = [
            ("lambda-runtime-aws-request-id", Some(request_id)),
            ("lambda-runtime-deadline-ms", Some(deadline_ms.to_string())),
            (
                "lambda-runtime-invoked-function-arn",
                Some(self.arn.clone()),
            ),
            ("lambda-runtime-trace-id", trace),
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
                self.complete(running, Ok(result));
                Answer::accepted()
            }
            Err(TooLarge) => {
                self.complete(
                    running,
                    Err(FunctionError::PayloadTooLarge(
                        "the function's response is larger than 6 MB".into(),
                    )),
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
            crate::support::now_ms() + i64::try_from(timeout.as_millis()).unwrap_or(i64::MAX / 2);
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
    pub fn fail_in_flight(&self, why: &str) {
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

/// The API over HTTP on TCP, for runtime clients other than ours.
pub fn router(api: Arc<Api>) -> Router {
    Router::new()
        .fallback(over_http)
        .layer(axum::extract::DefaultBodyLimit::disable())
        .with_state(api)
}

async fn over_http(
    State(api): State<Arc<Api>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Answer {
    let call = match Call::route(method.as_str(), uri.path()) {
        Ok(call) => call,
        Err(answer) => return answer,
    };
    let body = axum::body::to_bytes(body, MAX_PAYLOAD)
        .await
        .map(Vec::from)
        .map_err(|_| TooLarge);
    let error_type = headers.get(ERROR_TYPE_HEADER).and_then(|v| v.to_str().ok());
    api.answer(call, error_type, body).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_name_their_calls_and_wrong_ones_are_answered() {
        let route = |m: &str, p: &str| Call::route(m, p).map_err(|a| a.status);
        assert_eq!(
            route("GET", "/2018-06-01/runtime/invocation/next"),
            Ok(Call::Next)
        );
        assert_eq!(
            route("POST", "/2018-06-01/runtime/invocation/a-1/response"),
            Ok(Call::Response("a-1".into()))
        );
        assert_eq!(
            route("POST", "/2018-06-01/runtime/invocation/a-1/error"),
            Ok(Call::Error("a-1".into()))
        );
        assert_eq!(
            route("POST", "/2018-06-01/runtime/init/error"),
            Ok(Call::InitError)
        );
        assert_eq!(
            route("POST", "/2018-06-01/runtime/invocation/next"),
            Err(StatusCode::METHOD_NOT_ALLOWED)
        );
        for path in [
            "/2018-06-01/runtime/invocation//response",
            "/2018-06-01/runtime/invocation/a/b/response",
            "/2020-01-01/runtime/invocation/next",
            "/",
        ] {
            assert_eq!(route("POST", path), Err(StatusCode::NOT_FOUND), "{path}");
        }
    }

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
