//! One app's warm workers: reused one invocation at a time, scaled out up
//! to a cap under concurrency, stopped when idle, replaced when they die.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::{oneshot, Semaphore};

use super::worker::{Invocation, Worker, WorkerSpec};
use crate::functions::FunctionError;

/// Lambda's budget for a runtime's initialisation (before its first event).
const INIT_BUDGET: Duration = Duration::from_secs(10);

pub struct Pool {
    spec: WorkerSpec,
    idle: Mutex<Vec<Worker>>,
    slots: Semaphore,
    retired: AtomicBool,
}

impl Pool {
    pub fn new(spec: WorkerSpec, max_workers: usize) -> Self {
        Self {
            spec,
            idle: Mutex::default(),
            slots: Semaphore::new(max_workers.max(1)),
            retired: AtomicBool::new(false),
        }
    }

    fn take_idle(&self) -> Option<Worker> {
        let mut idle = self.idle.lock().ok()?;
        while let Some(worker) = idle.pop() {
            if worker.is_alive() {
                return Some(worker);
            }
        }
        None
    }

    fn put_back(&self, worker: Worker) {
        if worker.is_alive() && !self.retired.load(Ordering::Acquire) {
            worker.touch();
            if let Ok(mut idle) = self.idle.lock() {
                idle.push(worker);
            }
        }
    }

    /// Stops idle workers and makes busy ones stop when they finish (after a redeploy or removal).
    pub fn retire(&self) {
        self.retired.store(true, Ordering::Release);
        if let Ok(mut idle) = self.idle.lock() {
            idle.clear();
        }
    }

    /// Stops workers idle for longer than `max_idle`.
    pub fn reap(&self, max_idle: Duration) -> usize {
        let Ok(mut idle) = self.idle.lock() else {
            return 0;
        };
        let before = idle.len();
        idle.retain(|w| w.is_alive() && w.idle_since().elapsed() < max_idle);
        before - idle.len()
    }

    /// Workers alive and idle now.
    pub fn idle_count(&self) -> usize {
        self.idle.lock().map(|i| i.len()).unwrap_or(0)
    }

    pub async fn invoke(&self, event: Vec<u8>) -> Result<Vec<u8>, FunctionError> {
        let _slot = self
            .slots
            .acquire()
            .await
            .map_err(|_| FunctionError::Unavailable("the function is being removed".into()))?;
        let timeout = Duration::from_secs(u64::from(self.spec.config.timeout));
        let request_id = crate::request_uuid();
        let started = Instant::now();
        let (reply, answer) = oneshot::channel();
        let (delivered_tx, delivered) = oneshot::channel();
        let mut invocation = Invocation {
            request_id: request_id.clone(),
            event,
            timeout_ms: i64::try_from(timeout.as_millis()).unwrap_or(i64::MAX / 2),
            reply,
            delivered: delivered_tx,
        };
        // A worker that died since it went idle gives the invocation back; a fresh one then takes it.
        let worker = loop {
            let (worker, fresh) = match self.take_idle() {
                Some(worker) => (worker, false),
                None => (Worker::spawn(&self.spec).await?, true),
            };
            match worker.send(invocation) {
                Ok(()) => break worker,
                Err(back) if !fresh => invocation = back,
                Err(_) => {
                    return Err(FunctionError::Failed(
                        "the runtime exited before its first invocation".into(),
                    ))
                }
            }
        };
        let app = &self.spec.app;
        tracing::info!(target: "function", app = %app, request_id = %request_id, "START RequestId: {request_id} Version: {}", self.spec.version);
        // As on Lambda, a cold start's init has its own budget: the
        // function's timeout runs from when the runtime takes the event.
        let outcome = match tokio::time::timeout(INIT_BUDGET, delivered).await {
            Err(_) => {
                worker.kill();
                Err(FunctionError::Failed(format!(
                    "the runtime did not finish initialising within {} s",
                    INIT_BUDGET.as_secs()
                )))
            }
            // Taken, or never will be (the runtime died: the reply says why).
            Ok(_) => match tokio::time::timeout(timeout, answer).await {
                Ok(Ok(result)) => result,
                Ok(Err(_)) => Err(FunctionError::Failed("the runtime exited".into())),
                Err(_) => {
                    worker.kill();
                    Err(FunctionError::Timeout(self.spec.config.timeout))
                }
            },
        };
        let duration = started.elapsed().as_secs_f64() * 1000.0;
        tracing::info!(target: "function", app = %app, request_id = %request_id, "END RequestId: {request_id}");
        tracing::info!(
            target: "function", app = %app, request_id = %request_id,
            "REPORT RequestId: {request_id}\tDuration: {duration:.2} ms\tBilled Duration: {} ms\tMemory Size: {} MB",
            duration.ceil() as u64,
            self.spec.config.memory_size
        );
        if let Err(err) = &outcome {
            tracing::warn!(target: "function", app = %app, request_id = %request_id, error = %err, "invocation failed");
        }
        self.put_back(worker);
        outcome
    }
}
