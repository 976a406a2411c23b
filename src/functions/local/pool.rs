//! One app's warm workers and the queue they take invocations from.
//!
//! Invocations go to a worker already waiting on `/next` (the most recently
//! used first, so the others go idle and stop), or wait in the app's queue;
//! a worker that posts a result finds the next queued event at once, in the
//! same exchange. A new worker starts only when more invocations are queued
//! than workers are starting or returning, up to the cap.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use super::worker::{Invocation, Worker, WorkerSpec};
use crate::functions::FunctionError;

/// How long the oldest queued invocation may wait for a worker returning
/// from a result before the reaper gives it a worker of its own.
const STUCK_IN_QUEUE: Duration = Duration::from_millis(250);

/// An app's pool; dropping it (redeploy, removal) retires its workers.
pub struct Pool {
    shared: Arc<Shared>,
}

/// What the pool and its workers' Runtime API endpoints share.
pub struct Shared {
    pub spec: WorkerSpec,
    max_workers: usize,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    queued: VecDeque<Invocation>,
    /// Workers parked on `/next`, the most recently parked last.
    waiting: Vec<Waiter>,
    /// Workers alive or starting.
    workers: usize,
    /// Workers started that have not asked for an event yet.
    starting: usize,
    /// Workers running an invocation (taken, result not posted yet).
    busy: usize,
    retired: bool,
}

struct Waiter {
    worker: Arc<Worker>,
    since: Instant,
    hand: oneshot::Sender<Invocation>,
}

impl State {
    fn set_busy(&mut self, worker: &Worker, busy: bool) {
        if worker.busy.swap(busy, Ordering::AcqRel) != busy {
            if busy {
                self.busy += 1;
            } else {
                self.busy -= 1;
            }
        }
    }

    /// Workers that posted a result and have not asked for the next event
    /// yet (it is on its way, usually in the same write).
    fn returning(&self) -> usize {
        self.workers
            .saturating_sub(self.starting)
            .saturating_sub(self.busy)
            .saturating_sub(self.waiting.len())
    }

    /// Counts a new worker in if the queue needs one (the caller starts it):
    /// more invocations are queued than workers starting or returning will
    /// take, so a client calling again as soon as it has its answer does not
    /// start a second worker. A retired pool still serves what was queued
    /// (an invocation racing a redeploy); its workers stop once the queue is
    /// empty.
    fn wants_worker(&mut self, max: usize) -> bool {
        // A retired pool is no longer reaped, so it cannot wait on them.
        let returning = if self.retired { 0 } else { self.returning() };
        self.wants_worker_counting(max, returning)
    }

    fn wants_worker_counting(&mut self, max: usize, returning: usize) -> bool {
        let coming = self.starting + returning;
        let needed = self.queued.len() > coming && self.workers < max;
        if needed {
            self.workers += 1;
            self.starting += 1;
        }
        needed
    }
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        // The state stays consistent under every panic-free path; a poisoned
        // lock only means another thread panicked while holding it.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Hands an invocation to a waiting worker, or queues it (starting a
    /// worker if none is free or starting for it).
    fn dispatch(self: &Arc<Self>, mut invocation: Invocation) {
        let start = {
            let mut state = self.state();
            while let Some(waiter) = state.waiting.pop() {
                match waiter.hand.send(invocation) {
                    Ok(()) => {
                        state.set_busy(&waiter.worker, true);
                        return;
                    }
                    Err(back) => invocation = back,
                }
            }
            state.queued.push_back(invocation);
            state.wants_worker(self.max_workers)
        };
        if start {
            self.start_worker();
        }
    }

    fn start_worker(self: &Arc<Self>) {
        if let Err(err) = Worker::spawn(self) {
            let failed = {
                let mut state = self.state();
                state.workers -= 1;
                state.starting -= 1;
                state.queued.pop_front()
            };
            if let Some(invocation) = failed {
                invocation.fail(&self.spec.app, err);
            }
        }
    }

    /// The next invocation for a worker asking `/next`; `None` tells it to stop.
    /// `None` as well once `stop` is cancelled (the worker is going); an
    /// event handed to it in that moment goes back to the queue.
    pub async fn next_for(
        self: &Arc<Self>,
        worker: &Arc<Worker>,
        stop: &CancellationToken,
    ) -> Option<Invocation> {
        let mut parked = {
            let mut state = self.state();
            if worker.mark_ready() {
                state.starting -= 1;
            }
            if let Some(invocation) = state.queued.pop_front() {
                state.set_busy(worker, true);
                return Some(invocation);
            }
            if state.retired {
                return None;
            }
            let (hand, parked) = oneshot::channel();
            state.waiting.push(Waiter {
                worker: worker.clone(),
                since: Instant::now(),
                hand,
            });
            parked
        };
        tokio::select! {
            // Closed when the worker is reaped or retired.
            handed = &mut parked => handed.ok(),
            () = stop.cancelled() => {
                parked.close();
                if let Ok(invocation) = parked.try_recv() {
                    self.requeue(worker, invocation);
                }
                None
            }
        }
    }

    /// Puts back, first in line, an invocation handed to a worker that is
    /// going before it could run it.
    pub fn requeue(self: &Arc<Self>, worker: &Worker, invocation: Invocation) {
        let start = {
            let mut state = self.state();
            state.set_busy(worker, false);
            state.queued.push_front(invocation);
            state.wants_worker(self.max_workers)
        };
        if start {
            self.start_worker();
        }
    }

    /// A worker posted its invocation's result or error.
    pub fn finished(&self, worker: &Worker) {
        self.state().set_busy(worker, false);
    }

    /// A worker's process ended. One that never asked for an event failed
    /// its init: the oldest queued invocation gets the reason (as the
    /// invocation that caused a cold start does on Lambda).
    pub fn worker_exited(self: &Arc<Self>, worker: &Arc<Worker>, why: &str) {
        let (failed, start) = {
            let mut state = self.state();
            state.workers -= 1;
            state.set_busy(worker, false);
            let mut failed = None;
            if worker.mark_ready() {
                state.starting -= 1;
                failed = state.queued.pop_front();
            }
            state.waiting.retain(|w| !Arc::ptr_eq(&w.worker, worker));
            (failed, state.wants_worker(self.max_workers))
        };
        if let Some(invocation) = failed {
            invocation.fail(&self.spec.app, FunctionError::Failed(why.to_owned()));
        }
        if start {
            self.start_worker();
        }
    }
}

impl Pool {
    pub fn new(spec: WorkerSpec, max_workers: usize) -> Self {
        Self {
            shared: Arc::new(Shared {
                spec,
                max_workers: max_workers.max(1),
                state: Mutex::default(),
            }),
        }
    }

    /// Stops waiting workers; busy ones stop once the queue is empty.
    /// What is queued then is still served: no longer counting on workers
    /// returning from a result (a retired pool is not reaped), it gets a
    /// worker of its own if none is starting.
    pub fn retire(&self) {
        let (waiting, start) = {
            let mut state = self.shared.state();
            state.retired = true;
            let waiting = std::mem::take(&mut state.waiting);
            (waiting, state.wants_worker(self.shared.max_workers))
        };
        for waiter in waiting {
            waiter.worker.kill();
        }
        if start {
            self.shared.start_worker();
        }
    }

    /// Stops workers that have waited for longer than `max_idle`.
    /// Also the safety net for a runtime that posts a result and never asks
    /// for its next event: what is still queued by now gets a worker of its
    /// own instead of waiting for it.
    pub fn reap(&self, max_idle: Duration) -> usize {
        let (stale, start) = {
            let mut state = self.shared.state();
            let (stale, keep): (Vec<Waiter>, _) = std::mem::take(&mut state.waiting)
                .into_iter()
                .partition(|w| w.hand.is_closed() || w.since.elapsed() >= max_idle);
            state.waiting = keep;
            // Returning workers poll again within milliseconds; one that has
            // not by now is not counted on.
            let stuck = state
                .queued
                .front()
                .is_some_and(|i| i.queued_at.elapsed() >= STUCK_IN_QUEUE);
            let start = stuck && state.wants_worker_counting(self.shared.max_workers, 0);
            (stale, start)
        };
        for waiter in &stale {
            waiter.worker.kill();
        }
        if start {
            self.shared.start_worker();
        }
        stale.len()
    }

    /// Workers alive and not running an invocation (nor starting) now.
    pub fn idle_count(&self) -> usize {
        let state = self.shared.state();
        state
            .workers
            .saturating_sub(state.starting)
            .saturating_sub(state.busy)
    }

    /// Runs one invocation. The worker that takes it enforces its timeout
    /// and logs it; dropping this future (a client hanging up) leaves the
    /// invocation to run to its end, as API Gateway does.
    pub async fn invoke(&self, event: Vec<u8>) -> Result<Vec<u8>, FunctionError> {
        let (reply, answer) = oneshot::channel();
        self.shared.dispatch(Invocation {
            request_id: crate::request_uuid(),
            event,
            reply,
            queued_at: Instant::now(),
        });
        answer
            .await
            .unwrap_or_else(|_| Err(FunctionError::Failed("the runtime exited".into())))
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.retire();
    }
}
