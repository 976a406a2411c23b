//! One app's pool: its [`Queue`] behind a lock, and the driver that does
//! what the queue decides. Callers invoke through it; workers take their
//! events from it (`next_for`, `finished`, `requeue`, `worker_exited`, called
//! by the Runtime API); it starts workers through the [`Launch`] it was
//! given, and arms the queue's rechecks. It knows nothing of processes or
//! transports. Imports `queue` and `invocation`.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::invocation::Invocation;
use super::queue::{Arrival, Bounds, Grow, Member, Next, Queue, Scaling};
use crate::functions::FunctionError;
use crate::telemetry::metrics::{AppFunctionMetrics, InvocationOutcome};

/// How a pool gets workers (`worker.rs` starts processes; tests start fakes).
pub trait Launch: Send + Sync + 'static {
    /// Starts a worker that takes its events from `pool` through its
    /// Runtime API. The pool has counted it in already; an error is given to
    /// the oldest queued invocation.
    fn launch(&self, pool: &Arc<Shared>) -> Result<(), FunctionError>;

    /// The runtime on which the queue's rechecks run: the one that serves
    /// the workers' calls, where the queue moves (`None`: the one that armed
    /// the recheck).
    fn recheck_runtime(&self) -> Option<tokio::runtime::Handle> {
        None
    }
}

/// An app's pool; dropping it (redeploy, removal) retires its workers.
pub struct Pool {
    shared: Arc<Shared>,
}

/// What the pool and its workers' Runtime API endpoints share.
pub struct Shared {
    app: String,
    metrics: AppFunctionMetrics,
    /// The queue's bounds (as it applies them), for answering outside its lock.
    bounds: Bounds,
    queue: Mutex<Queue>,
    launcher: Box<dyn Launch>,
}

impl Shared {
    fn queue(&self) -> MutexGuard<'_, Queue> {
        // The queue stays consistent under every panic-free path; a poisoned
        // lock only means another thread panicked while holding it.
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Hands an invocation to a waiting worker, or queues it (starting a
    /// worker if none is free or starting for it).
    fn dispatch(self: &Arc<Self>, invocation: Invocation) {
        let arrival = self.queue().arrive(invocation);
        match arrival {
            Arrival::Handed => {}
            Arrival::Queued(grow) => self.grow(grow),
            Arrival::Refused(invocation) => {
                self.metrics.invoked(InvocationOutcome::Throttled, None);
                let why = format!("{} invocations are waiting already", self.bounds.max_queue);
                invocation.fail(&self.app, FunctionError::Throttled(why));
            }
        }
    }

    /// Does what the queue decided about its workers.
    fn grow(self: &Arc<Self>, grow: Grow) {
        match grow {
            Grow::No => {}
            Grow::Now => self.start_worker(),
            Grow::After(delay) => self.arm_recheck(delay),
        }
    }

    fn arm_recheck(self: &Arc<Self>, delay: Duration) {
        let Ok(origin) = tokio::runtime::Handle::try_current() else {
            // Outside a runtime (a pool dropped at shutdown) nothing waits.
            self.queue().disarm();
            return;
        };
        let this = self.clone();
        let home = origin.clone();
        let recheck = async move {
            tokio::time::sleep(delay).await;
            // Results the workers posted while this thread was off the CPU
            // are read first: on a busy machine that wait alone can make the
            // queue look as if it stood still.
            tokio::task::yield_now().await;
            let (start, then) = this.queue().recheck(Instant::now());
            // Workers start from the runtime this was armed on (their
            // process's tasks belong there), not the Runtime API's thread.
            let _home = home.enter();
            for _ in 0..start {
                this.start_worker();
            }
            this.grow(then);
        };
        // On the thread that serves the workers' calls (where the queue
        // moves), else where this was armed.
        self.launcher
            .recheck_runtime()
            .unwrap_or(origin)
            .spawn(recheck);
    }

    fn start_worker(self: &Arc<Self>) {
        if let Err(err) = self.launcher.launch(self) {
            let failed = self.queue().launch_failed();
            if let Some(invocation) = failed {
                self.metrics.invoked(InvocationOutcome::Crash, None);
                invocation.fail(&self.app, err);
            }
        }
    }

    /// The next invocation for a worker asking `/next`; `None` tells it to stop.
    /// `None` as well once `stop` is cancelled (the worker is going); an
    /// event handed to it in that moment goes back to the queue.
    pub async fn next_for<W: Member>(
        self: &Arc<Self>,
        worker: &Arc<W>,
        stop: &CancellationToken,
    ) -> Option<Invocation> {
        let next = self.queue().next(worker, Instant::now());
        let mut parked = match next {
            Next::Take(invocation) => return Some(invocation),
            Next::Stop => return None,
            Next::Park(parked) => parked,
        };
        tokio::select! {
            // Closed when the worker is reaped or retired.
            handed = &mut parked => handed.ok(),
            () = stop.cancelled() => {
                parked.close();
                if let Ok(invocation) = parked.try_recv() {
                    self.requeue(&**worker, invocation);
                }
                None
            }
        }
    }

    /// Puts back, first in line, an invocation handed to a worker that is
    /// going before it could run it.
    pub fn requeue(self: &Arc<Self>, worker: &(impl Member + ?Sized), invocation: Invocation) {
        let grow = self.queue().requeue(worker, invocation, Instant::now());
        self.grow(grow);
    }

    /// A worker posted its invocation's result or error.
    pub fn finished(&self, worker: &(impl Member + ?Sized)) {
        self.queue().finished(worker);
    }

    /// A worker's process ended. One that never asked for an event failed
    /// its init: the oldest queued invocation gets the reason (as the
    /// invocation that caused a cold start does on Lambda).
    pub fn worker_exited(self: &Arc<Self>, worker: &(impl Member + ?Sized), why: &str) {
        let (failed, grow) = self.queue().exited(worker, Instant::now());
        if let Some(invocation) = failed {
            self.metrics.invoked(InvocationOutcome::Crash, None);
            invocation.fail(&self.app, FunctionError::Failed(why.to_owned()));
        }
        self.grow(grow);
    }
}

impl Pool {
    /// An app's pool, with no worker yet; `launcher` starts them.
    pub fn new(
        app: String,
        scaling: Scaling,
        bounds: Bounds,
        launcher: Box<dyn Launch>,
        metrics: AppFunctionMetrics,
    ) -> Self {
        let queue = Queue::new(scaling, bounds);
        Self {
            shared: Arc::new(Shared {
                app,
                metrics,
                bounds: queue.bounds(),
                queue: Mutex::new(queue),
                launcher,
            }),
        }
    }

    /// Stops waiting workers; busy ones stop once the queue is empty.
    /// What is queued then is still served (see [`Queue::retire`]).
    pub fn retire(&self) {
        let (waiting, grow) = self.shared.queue().retire(Instant::now());
        for waiter in waiting {
            waiter.kill();
        }
        self.shared.grow(grow);
    }

    /// Stops workers that have waited for longer than `max_idle`, and gives
    /// a stuck queue a worker (see [`Queue::reap`]).
    pub fn reap(&self, max_idle: Duration) -> usize {
        let (stale, grow) = self.shared.queue().reap(max_idle, Instant::now());
        for waiter in &stale {
            waiter.kill();
        }
        self.shared.grow(grow);
        stale.len()
    }

    /// Workers this pool has started (or decided to start), ever.
    pub fn started_count(&self) -> u64 {
        self.shared.queue().started()
    }

    /// Workers alive and not running an invocation (nor starting) now.
    pub fn idle_count(&self) -> usize {
        self.shared.queue().idle()
    }

    /// Runs one invocation. The worker that takes it enforces its timeout
    /// and logs it. One still queued after the queue's longest wait is
    /// answered as throttled; dropping this future (a client hanging up)
    /// takes it out of the queue, but one a worker has taken runs to its
    /// end, as API Gateway does.
    pub async fn invoke(&self, event: Vec<u8>) -> Result<Vec<u8>, FunctionError> {
        self.invoke_as(event, crate::support::request_uuid()).await
    }

    /// [`Pool::invoke`] under the request id `request_id`.
    pub async fn invoke_as(
        &self,
        event: Vec<u8>,
        request_id: String,
    ) -> Result<Vec<u8>, FunctionError> {
        let (reply, mut answer) = tokio::sync::oneshot::channel();
        let mut queued = Queued {
            shared: &self.shared,
            request_id: request_id.clone(),
            armed: true,
        };
        self.shared.dispatch(Invocation {
            request_id,
            event,
            reply,
            queued_at: Instant::now(),
            trace: crate::telemetry::trace::current()
                .unwrap_or_else(crate::telemetry::trace::TraceContext::root),
        });
        let gone = |_| {
            self.shared.metrics.invoked(InvocationOutcome::Crash, None);
            Err(FunctionError::Failed("the runtime exited".into()))
        };
        let max_wait = self.shared.bounds.max_wait;
        let result = match tokio::time::timeout(max_wait, &mut answer).await {
            Ok(result) => result.unwrap_or_else(gone),
            Err(_) => match queued.withdraw() {
                Some(_) => {
                    self.shared
                        .metrics
                        .invoked(InvocationOutcome::Throttled, None);
                    Err(FunctionError::Throttled(format!(
                        "no worker took it within {} ms",
                        max_wait.as_millis()
                    )))
                }
                None => answer.await.unwrap_or_else(gone),
            },
        };
        queued.armed = false;
        result
    }
}

/// An invocation this pool's caller waits for; if the caller goes first,
/// it leaves the queue with it.
struct Queued<'a> {
    shared: &'a Arc<Shared>,
    request_id: String,
    armed: bool,
}

impl Queued<'_> {
    fn withdraw(&mut self) -> Option<Invocation> {
        self.armed = false;
        self.shared.queue().withdraw(&self.request_id)
    }
}

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        if self.armed {
            // Dropped outside the lock: its reply channel is closed already.
            let withdrawn = self.withdraw();
            drop(withdrawn);
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.retire();
    }
}

#[cfg(test)]
mod tests;
