//! The pool's driver with fake workers: tasks that take events through the
//! same calls as the Runtime API and answer with the event, when let.

use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::Semaphore;

use super::*;
use crate::functions::local::queue::Marks;
use crate::telemetry::metrics::FunctionMetrics;

/// How the fake launcher's workers behave.
#[derive(Clone, Copy, PartialEq)]
enum Mode {
    /// Take events and answer each with itself, once the gate lets them.
    Answer,
    /// Start and never ask for an event.
    Silent,
    /// Fail to start.
    Refuse,
}

/// A worker: a task, stopped through its token.
#[derive(Default)]
struct FakeWorker {
    marks: Marks,
    stop: CancellationToken,
}

impl Member for FakeWorker {
    fn marks(&self) -> &Marks {
        &self.marks
    }

    fn kill(&self) {
        self.stop.cancel();
    }
}

struct Fakes {
    mode: Mode,
    /// A permit per answer.
    gate: Arc<Semaphore>,
    workers: Mutex<Vec<Arc<FakeWorker>>>,
    exited: Arc<AtomicUsize>,
}

impl Fakes {
    fn new(mode: Mode) -> Arc<Fakes> {
        Fakes::with_permits(mode, Semaphore::MAX_PERMITS)
    }

    /// Workers that answer only as the test adds permits.
    fn gated() -> Arc<Fakes> {
        Fakes::with_permits(Mode::Answer, 0)
    }

    fn with_permits(mode: Mode, permits: usize) -> Arc<Fakes> {
        Arc::new(Fakes {
            mode,
            gate: Arc::new(Semaphore::new(permits)),
            workers: Mutex::default(),
            exited: Arc::default(),
        })
    }

    fn workers(&self) -> Vec<Arc<FakeWorker>> {
        self.workers.lock().unwrap().clone()
    }

    fn exited(&self) -> usize {
        self.exited.load(Ordering::Acquire)
    }
}

struct Launcher(Arc<Fakes>);

impl Launch for Launcher {
    fn launch(&self, pool: &Arc<Shared>) -> Result<(), FunctionError> {
        let fakes = &self.0;
        if fakes.mode == Mode::Refuse {
            return Err(FunctionError::unavailable("no room for a worker"));
        }
        let worker = Arc::new(FakeWorker::default());
        fakes.workers.lock().unwrap().push(worker.clone());
        if fakes.mode == Mode::Silent {
            return Ok(());
        }
        let (pool, gate, exited) = (pool.clone(), fakes.gate.clone(), fakes.exited.clone());
        tokio::spawn(async move {
            let stop = worker.stop.clone();
            while let Some(invocation) = pool.next_for(&worker, &stop).await {
                gate.acquire().await.unwrap().forget();
                pool.finished(&*worker);
                let _ = invocation.reply.send(Ok(invocation.event));
            }
            pool.worker_exited(&*worker, "stopped");
            exited.fetch_add(1, Ordering::AcqRel);
        });
        Ok(())
    }
}

const BOUNDS: Bounds = Bounds {
    max_queue: 100,
    max_wait: Duration::from_secs(10),
};

fn pool(fakes: &Arc<Fakes>, scaling: Scaling, bounds: Bounds) -> Pool {
    let launcher = Box::new(Launcher(fakes.clone()));
    Pool::new(
        "app".into(),
        scaling,
        bounds,
        launcher,
        FunctionMetrics::default().app("app", Some(1)),
    )
}

fn eager(max_workers: usize) -> Scaling {
    Scaling {
        max_workers,
        eager_workers: max_workers,
        delay: Duration::from_millis(20),
    }
}

/// Waits (a bounded while) for `done` to hold.
async fn until(what: &str, done: impl Fn() -> bool) {
    for _ in 0..400 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("never: {what}");
}

fn queued_len(pool: &Pool) -> usize {
    pool.shared.queue().queued()
}

#[tokio::test]
async fn invocations_run_on_a_worker_that_stays_warm() {
    let fakes = Fakes::new(Mode::Answer);
    let pool = pool(&fakes, eager(4), BOUNDS);
    assert_eq!(pool.invoke(b"a".to_vec()).await, Ok(b"a".to_vec()));
    assert_eq!(pool.invoke(b"b".to_vec()).await, Ok(b"b".to_vec()));
    assert_eq!(pool.started_count(), 1, "the warm worker took the second");
    until("the worker parks", || pool.idle_count() == 1).await;
    assert_eq!(pool.reap(Duration::ZERO), 1, "idle long enough");
    until("the reaped worker goes", || fakes.exited() == 1).await;
    assert_eq!(pool.idle_count(), 0);
}

#[tokio::test]
async fn busy_workers_get_company_up_to_the_cpus_then_after_the_delay() {
    let fakes = Fakes::gated();
    let scaling = Scaling {
        max_workers: 3,
        eager_workers: 2,
        delay: Duration::from_millis(30),
    };
    let pool = Arc::new(pool(&fakes, scaling, BOUNDS));
    let calls: Vec<_> = (0..4)
        .map(|i| {
            let pool = pool.clone();
            tokio::spawn(async move { pool.invoke(vec![i]).await })
        })
        .collect();
    until("two take an invocation each", || queued_len(&pool) == 2).await;
    assert_eq!(pool.started_count(), 2, "a worker per CPU at once");
    // The queue stands still while both run: after the delay, the recheck
    // starts a third (the cap), which takes one more.
    until("a third starts", || pool.started_count() == 3).await;
    until("and takes one", || queued_len(&pool) == 1).await;
    fakes.gate.add_permits(4);
    for (i, call) in calls.into_iter().enumerate() {
        assert_eq!(call.await.unwrap(), Ok(vec![i as u8]));
    }
    assert_eq!(pool.started_count(), 3, "never beyond the cap");
}

#[tokio::test]
async fn a_full_queue_and_a_long_wait_are_throttled() {
    let fakes = Fakes::new(Mode::Silent);
    let bounds = Bounds {
        max_queue: 1,
        max_wait: Duration::from_millis(50),
    };
    let pool = pool(&fakes, eager(4), bounds);
    let (waited, refused) = tokio::join!(pool.invoke(b"a".to_vec()), pool.invoke(b"b".to_vec()));
    assert_eq!(
        refused,
        Err(FunctionError::Throttled(
            "1 invocations are waiting already".into()
        ))
    );
    assert_eq!(
        waited,
        Err(FunctionError::Throttled(
            "no worker took it within 50 ms".into()
        ))
    );
    assert_eq!(queued_len(&pool), 0, "withdrawn");
    assert_eq!(pool.started_count(), 1, "one was started for it");
}

#[tokio::test]
async fn a_caller_that_goes_away_takes_its_invocation_out_of_the_queue() {
    let fakes = Fakes::new(Mode::Silent);
    let pool = pool(&fakes, eager(4), BOUNDS);
    let gave_up = tokio::time::timeout(Duration::from_millis(10), pool.invoke(b"a".to_vec())).await;
    assert!(gave_up.is_err());
    assert_eq!(queued_len(&pool), 0);
}

#[tokio::test]
async fn a_worker_that_cannot_start_fails_the_invocation_it_was_for() {
    let fakes = Fakes::new(Mode::Refuse);
    let pool = pool(&fakes, eager(4), BOUNDS);
    assert_eq!(
        pool.invoke(b"a".to_vec()).await,
        Err(FunctionError::unavailable("no room for a worker"))
    );
    assert_eq!(pool.idle_count(), 0);
}

#[tokio::test]
async fn a_worker_gone_in_its_init_fails_the_invocation_it_was_for() {
    let fakes = Fakes::new(Mode::Silent);
    let pool = Arc::new(pool(&fakes, eager(4), BOUNDS));
    let call = tokio::spawn({
        let pool = pool.clone();
        async move { pool.invoke(b"a".to_vec()).await }
    });
    until("a worker starts", || fakes.workers().len() == 1).await;
    let worker = fakes.workers().remove(0);
    pool.shared.worker_exited(&*worker, "init error: boom");
    assert_eq!(
        call.await.unwrap(),
        Err(FunctionError::Failed("init error: boom".into()))
    );
}

#[tokio::test]
async fn a_redeploy_lets_idle_workers_go_and_serves_what_was_queued() {
    let fakes = Fakes::gated();
    let pool = Arc::new(pool(&fakes, eager(1), BOUNDS));
    fakes.gate.add_permits(1);
    assert_eq!(pool.invoke(b"a".to_vec()).await, Ok(b"a".to_vec()));
    until("the worker parks", || pool.idle_count() == 1).await;

    // Busy with "b", with "c" queued behind it (one worker at most).
    let calls: Vec<_> = [b"b", b"c"]
        .into_iter()
        .map(|event| {
            let pool = pool.clone();
            tokio::spawn(async move { pool.invoke(event.to_vec()).await })
        })
        .collect();
    until("c waits", || queued_len(&pool) == 1).await;
    pool.retire();
    assert!(!fakes.workers()[0].stop.is_cancelled(), "busy: not stopped");
    fakes.gate.add_permits(2);
    for (call, event) in calls.into_iter().zip([b"b", b"c"]) {
        assert_eq!(call.await.unwrap(), Ok(event.to_vec()));
    }
    until("then it goes", || fakes.exited() == 1).await;
    assert_eq!(pool.started_count(), 1);

    // A parked worker goes at once.
    let fakes = Fakes::new(Mode::Answer);
    let pool = pool_parked(&fakes).await;
    pool.retire();
    assert!(fakes.workers()[0].stop.is_cancelled());
    until("it goes", || fakes.exited() == 1).await;
}

async fn pool_parked(fakes: &Arc<Fakes>) -> Pool {
    let pool = pool(fakes, eager(1), BOUNDS);
    assert_eq!(pool.invoke(b"a".to_vec()).await, Ok(b"a".to_vec()));
    until("the worker parks", || pool.idle_count() == 1).await;
    pool
}
