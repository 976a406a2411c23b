//! One invocation on its way from a caller to a worker's runtime: the
//! bottom of the local runtime, shared by the pool, the Runtime API and the
//! workers. It imports no other file of `local/`.

use crate::telemetry::trace::TraceContext;
use std::time::Instant;

use tokio::sync::oneshot;

use crate::functions::FunctionError;

/// Where an invocation's answer goes: the caller waiting in `Pool::invoke`.
pub type Reply = oneshot::Sender<Result<Vec<u8>, FunctionError>>;

/// One event for a worker.
pub struct Invocation {
    pub request_id: String,
    pub event: Vec<u8>,
    pub reply: Reply,
    /// When it was first queued (a requeued one keeps its place in time).
    pub queued_at: Instant,
    /// The span that invoked it: the function's trace (`Lambda-Runtime-Trace-Id`).
    pub trace: TraceContext,
}

impl std::fmt::Debug for Invocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Invocation")
            .field("request_id", &self.request_id)
            .finish_non_exhaustive()
    }
}

impl Invocation {
    /// Fails it before any runtime took it (an init error, say).
    pub fn fail(self, app: &str, err: FunctionError) {
        log_failure(app, &self.request_id, &err);
        let _ = self.reply.send(Err(err));
    }
}

/// The line every failed invocation gets, taken by a runtime or not.
pub fn log_failure(app: &str, request_id: &str, err: &FunctionError) {
    tracing::warn!(target: "function", app = %app, request_id = %request_id, error = %err, "invocation failed");
}
