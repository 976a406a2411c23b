//! One app's warm workers and the queue they take invocations from.
//!
//! Invocations go to a worker already waiting on `/next` (the most recently
//! used first, so the others go idle and stop), or wait in the app's queue;
//! a worker that posts a result finds the next queued event at once, in the
//! same exchange. A new worker starts only when more invocations are queued
//! than workers are starting or returning, up to the cap. Beyond one worker
//! per CPU it starts only once the queue has stood still for the scale-out
//! delay while those workers run invocations: when the CPUs are busy with
//! short invocations, another process adds memory and no throughput, and a
//! queue that keeps moving says so; handlers that wait (I/O, sleeps) hold
//! the queue up and still get workers up to the cap.

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

/// How much an app's queue may hold, and for how long.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    /// Most invocations waiting for a worker.
    pub max_queue: usize,
    /// Longest one waits for a worker.
    pub max_wait: Duration,
}

/// How far and how fast a pool grows.
#[derive(Debug, Clone, Copy)]
pub struct Scaling {
    /// Most workers (at least 1).
    pub max_workers: usize,
    /// Workers started as soon as the queue needs them (the CPU count).
    pub eager_workers: usize,
    /// Beyond `eager_workers`, how long the queue must stand still (no
    /// invocation taken from it) before another worker starts.
    pub delay: Duration,
}

/// What the pool does about its queue after a change.
#[derive(Debug, PartialEq)]
enum Grow {
    No,
    /// Start a worker (already counted in).
    Now,
    /// Look again after this long (a check is armed).
    After(Duration),
}

/// Who asks whether the pool needs another worker.
#[derive(Clone, Copy, PartialEq)]
enum Asker {
    /// A change to the queue or the workers: beyond a worker per CPU it
    /// only arms the recheck.
    Change,
    /// The recheck, its delay up: beyond a worker per CPU only it starts one.
    Recheck,
    /// The reaper's safety net for a runtime that never asks again: the CPU
    /// rule does not hold it up.
    Reaper,
}

/// What the pool and its workers' Runtime API endpoints share.
pub struct Shared {
    pub spec: WorkerSpec,
    scaling: Scaling,
    bounds: Bounds,
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
    /// Workers this pool has decided to start, ever.
    started: u64,
    /// Workers running an invocation (taken, result not posted yet).
    busy: usize,
    retired: bool,
    /// A timer will look at the queue again (see `Grow::After`).
    recheck_armed: bool,
    /// When a worker last took an invocation from the queue.
    moved_at: Option<Instant>,
}

struct Waiter {
    worker: Arc<Worker>,
    since: Instant,
    hand: oneshot::Sender<Invocation>,
}

impl State {
    /// The oldest queued invocation whose client still waits for it (the
    /// others are dropped: nobody would read their answers).
    fn take_next(&mut self) -> Option<Invocation> {
        while let Some(invocation) = self.queued.pop_front() {
            if !invocation.reply.is_closed() {
                return Some(invocation);
            }
        }
        None
    }

    /// Takes a still-queued invocation out of the queue.
    fn withdraw(&mut self, request_id: &str) -> Option<Invocation> {
        let at = self
            .queued
            .iter()
            .position(|i| i.request_id == request_id)?;
        self.queued.remove(at)
    }

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
    fn wants_worker(&mut self, scaling: &Scaling) -> Grow {
        self.wants_worker_as(scaling, Asker::Change)
    }

    fn wants_worker_as(&mut self, scaling: &Scaling, asker: Asker) -> Grow {
        // A retired pool is no longer reaped, so it cannot wait on them.
        let returning = if self.retired { 0 } else { self.returning() };
        self.wants_worker_counting(scaling, returning, asker)
    }

    fn wants_worker_counting(&mut self, scaling: &Scaling, returning: usize, asker: Asker) -> Grow {
        let coming = self.starting + returning;
        if self.queued.len() <= coming || self.workers >= scaling.max_workers {
            return Grow::No;
        }
        let ruled = asker != Asker::Reaper
            && self.workers >= scaling.eager_workers
            && !scaling.delay.is_zero();
        if ruled {
            let wait = self.wait_before_growing(scaling);
            if asker == Asker::Change || wait.is_some() {
                if self.recheck_armed {
                    return Grow::No;
                }
                self.recheck_armed = true;
                return Grow::After(wait.unwrap_or(Duration::ZERO));
            }
        }
        self.workers += 1;
        self.starting += 1;
        self.started += 1;
        Grow::Now
    }

    /// With a worker per CPU already, how much longer the queue must stand
    /// still before another worker starts (`None`: start it now). It only
    /// counts while that many workers run invocations: time spent waiting
    /// for workers to start says nothing about the invocations' length.
    fn wait_before_growing(&self, scaling: &Scaling) -> Option<Duration> {
        let working = self
            .workers
            .saturating_sub(self.starting)
            .saturating_sub(self.waiting.len());
        if working < scaling.eager_workers {
            return Some(scaling.delay);
        }
        let oldest = self.queued.front().map(|i| i.queued_at);
        let still = [oldest, self.moved_at]
            .into_iter()
            .flatten()
            .max()
            .map_or(Duration::ZERO, |since| since.elapsed());
        scaling.delay.checked_sub(still).filter(|d| !d.is_zero())
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
            if state.queued.len() >= self.bounds.max_queue {
                drop(state);
                let why = format!("{} invocations are waiting already", self.bounds.max_queue);
                invocation.fail(&self.spec.app, FunctionError::Throttled(why));
                return;
            }
            state.queued.push_back(invocation);
            state.wants_worker(&self.scaling)
        };
        self.grow(start);
    }

    fn grow(self: &Arc<Self>, grow: Grow) {
        match grow {
            Grow::No => {}
            Grow::Now => self.start_worker(),
            Grow::After(delay) => {
                let Ok(origin) = tokio::runtime::Handle::try_current() else {
                    // Outside a runtime (a pool dropped at shutdown) nothing waits.
                    self.state().recheck_armed = false;
                    return;
                };
                let this = self.clone();
                let home = origin.clone();
                let recheck = async move {
                    tokio::time::sleep(delay).await;
                    // Results the workers posted while this thread was off
                    // the CPU are read first: on a busy machine that wait
                    // alone can make the queue look as if it stood still.
                    tokio::task::yield_now().await;
                    // The delay is up for everything queued that no worker is
                    // coming for, not only for the oldest.
                    let mut grows = Vec::new();
                    {
                        let mut state = this.state();
                        state.recheck_armed = false;
                        loop {
                            let grow = state.wants_worker_as(&this.scaling, Asker::Recheck);
                            let again = grow == Grow::Now;
                            grows.push(grow);
                            if !again {
                                break;
                            }
                        }
                    }
                    // Workers start from the runtime this was armed on (their
                    // process's tasks belong there), not the Runtime API's thread.
                    let _home = home.enter();
                    for grow in grows {
                        this.grow(grow);
                    }
                };
                // On the thread that serves our runtimes' connections (where
                // the queue moves), else where this was armed.
                super::pipes::runtime_api_thread()
                    .unwrap_or(origin)
                    .spawn(recheck);
            }
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
            if let Some(invocation) = state.take_next() {
                state.moved_at = Some(Instant::now());
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
            state.wants_worker(&self.scaling)
        };
        self.grow(start);
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
            (failed, state.wants_worker(&self.scaling))
        };
        if let Some(invocation) = failed {
            invocation.fail(&self.spec.app, FunctionError::Failed(why.to_owned()));
        }
        self.grow(start);
    }
}

impl Pool {
    pub fn new(spec: WorkerSpec, scaling: Scaling, bounds: Bounds) -> Self {
        Self {
            shared: Arc::new(Shared {
                spec,
                bounds: Bounds {
                    max_queue: bounds.max_queue.max(1),
                    max_wait: bounds.max_wait,
                },
                scaling: Scaling {
                    max_workers: scaling.max_workers.max(1),
                    eager_workers: scaling.eager_workers.max(1),
                    delay: scaling.delay,
                },
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
            (waiting, state.wants_worker(&self.shared.scaling))
        };
        for waiter in waiting {
            waiter.worker.kill();
        }
        self.shared.grow(start);
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
            let start = if stuck {
                state.wants_worker_counting(&self.shared.scaling, 0, Asker::Reaper)
            } else {
                Grow::No
            };
            (stale, start)
        };
        for waiter in &stale {
            waiter.worker.kill();
        }
        self.shared.grow(start);
        stale.len()
    }

    /// Workers this pool has started (or decided to start), ever. A worker
    /// is counted when the queue asks for it, so once every invocation has
    /// been answered and the queue is empty, no later start can change it.
    pub fn started_count(&self) -> u64 {
        self.shared.state().started
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
    /// and logs it. One still queued after the queue's longest wait is
    /// answered as throttled; dropping this future (a client hanging up)
    /// takes it out of the queue, but one a worker has taken runs to its
    /// end, as API Gateway does.
    pub async fn invoke(&self, event: Vec<u8>) -> Result<Vec<u8>, FunctionError> {
        let (reply, mut answer) = oneshot::channel();
        let request_id = crate::support::request_uuid();
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
        });
        let gone = |_| Err(FunctionError::Failed("the runtime exited".into()));
        let result = match tokio::time::timeout(self.shared.bounds.max_wait, &mut answer).await {
            Ok(result) => result.unwrap_or_else(gone),
            Err(_) => match queued.withdraw() {
                Some(_) => Err(FunctionError::Throttled(format!(
                    "no worker took it within {} ms",
                    self.shared.bounds.max_wait.as_millis()
                ))),
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
        self.shared.state().withdraw(&self.request_id)
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
mod tests {
    use super::*;

    const SCALING: Scaling = Scaling {
        max_workers: 4,
        eager_workers: 2,
        delay: Duration::from_millis(20),
    };

    /// Two workers busy, three invocations queued, the queue still since `still` ago.
    fn busy_pool(still: Duration) -> State {
        let since = Instant::now() - still;
        let queued = (0..3)
            .map(|i| Invocation {
                request_id: i.to_string(),
                event: Vec::new(),
                reply: oneshot::channel().0,
                queued_at: since,
            })
            .collect();
        State {
            queued,
            workers: 2,
            busy: 2,
            moved_at: Some(since),
            ..State::default()
        }
    }

    #[test]
    fn beyond_a_worker_per_cpu_only_the_recheck_starts_one() {
        let mut state = busy_pool(Duration::from_millis(50));
        assert_eq!(
            state.wants_worker(&SCALING),
            Grow::After(Duration::ZERO),
            "the delay is up, but a new invocation only arms the recheck"
        );
        assert_eq!(state.wants_worker(&SCALING), Grow::No, "armed once");
        state.recheck_armed = false;
        assert_eq!(state.wants_worker_as(&SCALING, Asker::Recheck), Grow::Now);
        assert_eq!((state.workers, state.starting), (3, 1));

        let mut state = busy_pool(Duration::ZERO);
        let Grow::After(wait) = state.wants_worker_as(&SCALING, Asker::Recheck) else {
            panic!("the queue just moved: wait");
        };
        assert!(
            wait > Duration::from_millis(10) && wait <= SCALING.delay,
            "{wait:?}"
        );

        let mut state = busy_pool(Duration::ZERO);
        let at_once = Scaling {
            delay: Duration::ZERO,
            ..SCALING
        };
        assert_eq!(state.wants_worker(&at_once), Grow::Now, "delay 0: at once");
    }
}
