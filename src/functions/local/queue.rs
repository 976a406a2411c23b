//! One app's invocation queue and its workers' count, as a state machine.
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
//!
//! Nothing here starts a task, a timer or a process, or reads the clock:
//! each operation changes the state and says what is to be done (start a
//! worker now, look again after a delay, fail an invocation, stop workers),
//! and the pool (`pool.rs`) does it. Workers are known only as [`Member`]s.
//! Imports only `invocation`.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::invocation::Invocation;

/// How long the oldest queued invocation may wait for a worker returning
/// from a result before the reaper gives it a worker of its own.
const STUCK_IN_QUEUE: Duration = Duration::from_millis(250);

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
pub enum Grow {
    No,
    /// Start a worker (already counted in).
    Now,
    /// Look again after this long ([`Queue::recheck`]; a check is armed).
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

/// The queue's marks on one worker, kept in the worker (see [`Member`]);
/// changed only under the pool's lock.
#[derive(Debug, Default)]
pub struct Marks {
    /// It has asked for an event (its init is over).
    ready: AtomicBool,
    /// It has an invocation whose result is not posted yet.
    busy: AtomicBool,
}

impl Marks {
    /// It has asked for an event (its init is over).
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Marks it as having asked for an event; true the first time.
    fn mark_ready(&self) -> bool {
        !self.ready.swap(true, Ordering::AcqRel)
    }
}

/// A worker as the queue knows it: what it has marked on it, and how to
/// stop it. What a worker is (a process, a fake in tests) is the pool's
/// driver's business.
pub trait Member: Send + Sync + 'static {
    /// The queue's marks on it.
    fn marks(&self) -> &Marks;
    /// Stops it: the queue has no more work for it (idle too long, or its
    /// pool retired).
    fn kill(&self);
}

/// A worker parked on `/next`.
pub struct Waiter {
    worker: Arc<dyn Member>,
    since: Instant,
    hand: oneshot::Sender<Invocation>,
}

impl Waiter {
    /// Stops the worker (it was let go: reaped or retired).
    pub fn kill(&self) {
        self.worker.kill();
    }
}

/// What became of an invocation that arrived.
#[derive(Debug)]
pub enum Arrival {
    /// A parked worker has it.
    Handed,
    /// Queued; the queue may want a worker for it.
    Queued(Grow),
    /// The queue is full (the caller is throttled).
    Refused(Invocation),
}

/// What a worker asking for its next event gets.
#[derive(Debug)]
pub enum Next {
    Take(Invocation),
    /// Nothing queued and the pool is retired: the worker goes.
    Stop,
    /// Parked: an invocation comes on this, or it closes when the worker is
    /// let go.
    Park(oneshot::Receiver<Invocation>),
}

/// An app's queue, its workers' count and its scaling rules.
pub struct Queue {
    scaling: Scaling,
    bounds: Bounds,
    queued: VecDeque<Invocation>,
    /// Workers parked on `/next`, the most recently parked last.
    waiting: Vec<Waiter>,
    /// Workers alive or starting.
    workers: usize,
    /// Workers started that have not asked for an event yet.
    starting: usize,
    /// Workers this queue has decided to start, ever.
    started: u64,
    /// Workers running an invocation (taken, result not posted yet).
    busy: usize,
    retired: bool,
    /// A recheck will look at the queue again (see `Grow::After`).
    recheck_armed: bool,
    /// When a worker last took an invocation from the queue.
    moved_at: Option<Instant>,
}

impl Queue {
    /// An empty queue with no workers (at least one worker and one queue
    /// place are allowed, whatever the settings say).
    pub fn new(scaling: Scaling, bounds: Bounds) -> Queue {
        Queue {
            scaling: Scaling {
                max_workers: scaling.max_workers.max(1),
                eager_workers: scaling.eager_workers.max(1),
                delay: scaling.delay,
            },
            bounds: Bounds {
                max_queue: bounds.max_queue.max(1),
                max_wait: bounds.max_wait,
            },
            queued: VecDeque::new(),
            waiting: Vec::new(),
            workers: 0,
            starting: 0,
            started: 0,
            busy: 0,
            retired: false,
            recheck_armed: false,
            moved_at: None,
        }
    }

    pub fn bounds(&self) -> Bounds {
        self.bounds
    }

    /// An invocation arrives: to a parked worker, else into the queue
    /// (which may want a worker for it), unless the queue is full.
    pub fn arrive(&mut self, mut invocation: Invocation) -> Arrival {
        while let Some(waiter) = self.waiting.pop() {
            match waiter.hand.send(invocation) {
                Ok(()) => {
                    set_busy(&mut self.busy, waiter.worker.marks(), true);
                    return Arrival::Handed;
                }
                Err(back) => invocation = back,
            }
        }
        if self.queued.len() >= self.bounds.max_queue {
            return Arrival::Refused(invocation);
        }
        let now = invocation.queued_at;
        self.queued.push_back(invocation);
        Arrival::Queued(self.wants_worker(now))
    }

    /// A worker asks for its next event: the oldest queued one whose caller
    /// still waits, else it parks (or, the pool retired, goes).
    pub fn next<W: Member>(&mut self, worker: &Arc<W>, now: Instant) -> Next {
        if worker.marks().mark_ready() {
            self.starting -= 1;
        }
        if let Some(invocation) = self.take_next() {
            self.moved_at = Some(now);
            set_busy(&mut self.busy, worker.marks(), true);
            return Next::Take(invocation);
        }
        if self.retired {
            return Next::Stop;
        }
        let (hand, parked) = oneshot::channel();
        self.waiting.push(Waiter {
            worker: worker.clone(),
            since: now,
            hand,
        });
        Next::Park(parked)
    }

    /// Puts back, first in line, an invocation handed to a worker that is
    /// going before it could run it.
    pub fn requeue(
        &mut self,
        worker: &(impl Member + ?Sized),
        invocation: Invocation,
        now: Instant,
    ) -> Grow {
        set_busy(&mut self.busy, worker.marks(), false);
        self.queued.push_front(invocation);
        self.wants_worker(now)
    }

    /// A worker posted its invocation's result or error.
    pub fn finished(&mut self, worker: &(impl Member + ?Sized)) {
        set_busy(&mut self.busy, worker.marks(), false);
    }

    /// A worker's process ended. One that never asked for an event failed
    /// its init: the oldest queued invocation is given back to be failed
    /// with the reason (as the invocation that caused a cold start is on
    /// Lambda).
    pub fn exited(
        &mut self,
        worker: &(impl Member + ?Sized),
        now: Instant,
    ) -> (Option<Invocation>, Grow) {
        self.workers -= 1;
        set_busy(&mut self.busy, worker.marks(), false);
        let mut failed = None;
        if worker.marks().mark_ready() {
            self.starting -= 1;
            failed = self.queued.pop_front();
        }
        let gone: *const _ = worker;
        self.waiting
            .retain(|w| !std::ptr::addr_eq(Arc::as_ptr(&w.worker), gone));
        (failed, self.wants_worker(now))
    }

    /// A worker counted in by [`Grow::Now`] could not be started: it is
    /// counted out, and the oldest queued invocation is given back to be
    /// failed with the reason.
    pub fn launch_failed(&mut self) -> Option<Invocation> {
        self.workers -= 1;
        self.starting -= 1;
        self.queued.pop_front()
    }

    /// The pool is replaced or removed: the parked workers are given back
    /// to be stopped, and busy ones stop once the queue is empty. What is
    /// queued then is still served: no longer counting on workers returning
    /// from a result (a retired pool is not reaped), it gets a worker of its
    /// own if none is starting.
    pub fn retire(&mut self, now: Instant) -> (Vec<Waiter>, Grow) {
        self.retired = true;
        let waiting = std::mem::take(&mut self.waiting);
        (waiting, self.wants_worker(now))
    }

    /// Gives back the workers that have waited for `max_idle` (to be
    /// stopped). Also the safety net for a runtime that posts a result and
    /// never asks for its next event: what is still queued by now gets a
    /// worker of its own instead of waiting for it.
    pub fn reap(&mut self, max_idle: Duration, now: Instant) -> (Vec<Waiter>, Grow) {
        let (stale, keep): (Vec<Waiter>, _) = std::mem::take(&mut self.waiting)
            .into_iter()
            .partition(|w| {
                w.hand.is_closed() || now.saturating_duration_since(w.since) >= max_idle
            });
        self.waiting = keep;
        // Returning workers poll again within milliseconds; one that has
        // not by now is not counted on.
        let stuck = self
            .queued
            .front()
            .is_some_and(|i| now.saturating_duration_since(i.queued_at) >= STUCK_IN_QUEUE);
        let grow = if stuck {
            self.wants_worker_counting(0, Asker::Reaper, now)
        } else {
            Grow::No
        };
        (stale, grow)
    }

    /// The recheck armed by [`Grow::After`], its delay up: the delay is up
    /// for everything queued that no worker is coming for, not only for the
    /// oldest. Gives back how many workers to start now, then what else to
    /// do (nothing, or look again later).
    pub fn recheck(&mut self, now: Instant) -> (usize, Grow) {
        self.recheck_armed = false;
        let mut start = 0;
        loop {
            match self.wants_worker_as(Asker::Recheck, now) {
                Grow::Now => start += 1,
                then => return (start, then),
            }
        }
    }

    /// A recheck could not be armed after all (no runtime to run it on).
    pub fn disarm(&mut self) {
        self.recheck_armed = false;
    }

    /// Takes a still-queued invocation out of the queue (its caller gave up).
    pub fn withdraw(&mut self, request_id: &str) -> Option<Invocation> {
        let at = self
            .queued
            .iter()
            .position(|i| i.request_id == request_id)?;
        self.queued.remove(at)
    }

    /// Invocations waiting for a worker.
    #[cfg(test)]
    pub fn queued(&self) -> usize {
        self.queued.len()
    }

    /// Workers this queue has started (or decided to start), ever. A worker
    /// is counted when the queue asks for it, so once every invocation has
    /// been answered and the queue is empty, no later start can change it.
    pub fn started(&self) -> u64 {
        self.started
    }

    /// Workers alive and not running an invocation (nor starting) now.
    pub fn idle(&self) -> usize {
        self.workers
            .saturating_sub(self.starting)
            .saturating_sub(self.busy)
    }

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
    fn wants_worker(&mut self, now: Instant) -> Grow {
        self.wants_worker_as(Asker::Change, now)
    }

    fn wants_worker_as(&mut self, asker: Asker, now: Instant) -> Grow {
        // A retired pool is no longer reaped, so it cannot wait on them.
        let returning = if self.retired { 0 } else { self.returning() };
        self.wants_worker_counting(returning, asker, now)
    }

    fn wants_worker_counting(&mut self, returning: usize, asker: Asker, now: Instant) -> Grow {
        let coming = self.starting + returning;
        if self.queued.len() <= coming || self.workers >= self.scaling.max_workers {
            return Grow::No;
        }
        let ruled = asker != Asker::Reaper
            && self.workers >= self.scaling.eager_workers
            && !self.scaling.delay.is_zero();
        if ruled {
            let wait = self.wait_before_growing(now);
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
    fn wait_before_growing(&self, now: Instant) -> Option<Duration> {
        let working = self
            .workers
            .saturating_sub(self.starting)
            .saturating_sub(self.waiting.len());
        if working < self.scaling.eager_workers {
            return Some(self.scaling.delay);
        }
        let oldest = self.queued.front().map(|i| i.queued_at);
        let still = [oldest, self.moved_at]
            .into_iter()
            .flatten()
            .max()
            .map_or(Duration::ZERO, |since| now.saturating_duration_since(since));
        self.scaling
            .delay
            .checked_sub(still)
            .filter(|d| !d.is_zero())
    }
}

/// Marks a worker busy or not, keeping the count of busy workers.
fn set_busy(count: &mut usize, marks: &Marks, busy: bool) {
    if marks.busy.swap(busy, Ordering::AcqRel) != busy {
        if busy {
            *count += 1;
        } else {
            *count -= 1;
        }
    }
}

#[cfg(test)]
mod tests;
