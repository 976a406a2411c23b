//! The queue's decisions, driven by hand with fake workers and explicit
//! instants: no runtime, no process, no clock.

use std::sync::atomic::AtomicUsize;

use super::*;
use crate::functions::FunctionError;

const SCALING: Scaling = Scaling {
    max_workers: 4,
    eager_workers: 2,
    delay: Duration::from_millis(20),
};

const BOUNDS: Bounds = Bounds {
    max_queue: 100,
    max_wait: Duration::from_secs(10),
};

/// A worker that only counts how often it was stopped.
#[derive(Default)]
struct Fake {
    marks: Marks,
    kills: AtomicUsize,
}

impl Member for Fake {
    fn marks(&self) -> &Marks {
        &self.marks
    }

    fn kill(&self) {
        self.kills.fetch_add(1, Ordering::Relaxed);
    }
}

impl Fake {
    fn kills(&self) -> usize {
        self.kills.load(Ordering::Relaxed)
    }
}

fn fake() -> Arc<Fake> {
    Arc::default()
}

/// What a caller waits on.
type Answer = oneshot::Receiver<Result<Vec<u8>, FunctionError>>;

fn invocation(id: &str, at: Instant) -> (Invocation, Answer) {
    let (reply, answer) = oneshot::channel();
    let invocation = Invocation {
        request_id: id.into(),
        event: id.as_bytes().to_vec(),
        reply,
        queued_at: at,
        trace: crate::telemetry::trace::TraceContext::root(),
    };
    (invocation, answer)
}

/// An invocation `id` arrives at `at` and is queued: what the queue decided.
fn queued(queue: &mut Queue, id: &str, at: Instant) -> (Grow, Answer) {
    let (invocation, answer) = invocation(id, at);
    match queue.arrive(invocation) {
        Arrival::Queued(grow) => (grow, answer),
        other => panic!("{id} not queued: {other:?}"),
    }
}

/// `worker` asks for an event and takes one: its request id.
fn takes(queue: &mut Queue, worker: &Arc<Fake>, at: Instant) -> String {
    match queue.next(worker, at) {
        Next::Take(invocation) => invocation.request_id,
        other => panic!("took nothing: {other:?}"),
    }
}

/// `worker` asks for an event and parks.
fn parks(queue: &mut Queue, worker: &Arc<Fake>, at: Instant) -> oneshot::Receiver<Invocation> {
    match queue.next(worker, at) {
        Next::Park(parked) => parked,
        other => panic!("did not park: {other:?}"),
    }
}

/// `n` workers started for `n` invocations, each ran one and parked.
fn warm(
    queue: &mut Queue,
    n: usize,
    at: Instant,
) -> Vec<(Arc<Fake>, oneshot::Receiver<Invocation>)> {
    let answers: Vec<Answer> = (0..n)
        .map(|i| {
            let (grow, answer) = queued(queue, &format!("warm-{i}"), at);
            assert_eq!(grow, Grow::Now, "a worker for each");
            answer
        })
        .collect();
    let workers: Vec<Arc<Fake>> = (0..n).map(|_| fake()).collect();
    for worker in &workers {
        takes(queue, worker, at);
        queue.finished(&**worker);
    }
    drop(answers);
    workers
        .into_iter()
        .map(|worker| {
            let parked = parks(queue, &worker, at);
            (worker, parked)
        })
        .collect()
}

#[test]
fn an_invocation_starts_a_worker_and_one_returning_from_a_result_is_counted_on() {
    let t0 = Instant::now();
    let mut queue = Queue::new(SCALING, BOUNDS);
    let (grow, _a) = queued(&mut queue, "a", t0);
    assert_eq!(grow, Grow::Now, "nobody is coming for it");
    assert_eq!(queue.started(), 1);
    assert_eq!(queue.idle(), 0, "starting is not idle");

    let worker = fake();
    assert_eq!(takes(&mut queue, &worker, t0), "a");
    assert!(worker.marks().is_ready());
    let (grow, _b) = queued(&mut queue, "b", t0);
    assert_eq!(grow, Grow::Now, "its only worker is busy");
    assert_eq!(queue.started(), 2);

    // A result posted; the worker asks again in the same write. With the
    // second worker still starting, "c" needs no other.
    queue.finished(&*worker);
    let (grow, _c) = queued(&mut queue, "c", t0);
    assert_eq!(grow, Grow::No, "one starting, one returning");
    let (grow, _d) = queued(&mut queue, "d", t0);
    assert_eq!(
        grow,
        Grow::After(SCALING.delay),
        "beyond the CPUs a change only arms the recheck"
    );
    assert_eq!(takes(&mut queue, &worker, t0), "b", "oldest first");
    assert_eq!(queue.started(), 2);
}

#[test]
fn an_invocation_goes_to_the_worker_parked_last() {
    let t0 = Instant::now();
    let mut queue = Queue::new(SCALING, BOUNDS);
    let mut parked = warm(&mut queue, 2, t0);
    assert_eq!(queue.idle(), 2);
    let (c, _answer) = invocation("c", t0);
    assert!(matches!(queue.arrive(c), Arrival::Handed));
    let (last, mut hand) = parked.pop().unwrap();
    assert_eq!(
        hand.try_recv().map(|i| i.request_id).ok().as_deref(),
        Some("c")
    );
    assert_eq!(queue.idle(), 1, "the one handed to is busy");
    assert!(parked[0].1.try_recv().is_err(), "the other still waits");

    // A parked worker that went away (its receiver dropped) is passed over.
    drop(parked);
    queue.finished(&*last);
    let (d, _answer) = invocation("d", t0);
    assert!(matches!(queue.arrive(d), Arrival::Queued(_)));
}

#[test]
fn beyond_a_worker_per_cpu_only_the_recheck_starts_one() {
    // Two workers (the CPUs) busy and three invocations queued at `t0`.
    let t0 = Instant::now();
    let busy = |queue: &mut Queue| {
        let answers: Vec<Answer> = ["a", "b", "c", "d", "e"]
            .iter()
            .map(|id| queued(queue, id, t0).1)
            .collect();
        let workers = [fake(), fake()];
        for worker in &workers {
            takes(queue, worker, t0);
        }
        queue.disarm();
        (answers, workers)
    };

    let mut queue = Queue::new(SCALING, BOUNDS);
    let _held = busy(&mut queue);
    let later = t0 + Duration::from_millis(50);
    assert_eq!(
        queue.wants_worker(later),
        Grow::After(Duration::ZERO),
        "the delay is up, but a new invocation only arms the recheck"
    );
    assert_eq!(queue.wants_worker(later), Grow::No, "armed once");
    assert_eq!(
        queue.recheck(later),
        (2, Grow::No),
        "the delay is up for all three queued, up to the cap of 4"
    );
    assert_eq!(queue.started(), 4);

    let mut queue = Queue::new(SCALING, BOUNDS);
    let _held = busy(&mut queue);
    let soon = t0 + Duration::from_millis(5);
    let (start, Grow::After(wait)) = queue.recheck(soon) else {
        panic!("the queue just moved: wait");
    };
    assert_eq!(start, 0);
    assert_eq!(wait, Duration::from_millis(15), "what is left of the delay");

    let mut queue = Queue::new(SCALING, BOUNDS);
    let _held = busy(&mut queue);
    queue.scaling.delay = Duration::ZERO;
    assert_eq!(queue.wants_worker(t0), Grow::Now, "delay 0: at once");
}

#[test]
fn a_queue_that_keeps_moving_gets_no_worker_beyond_the_cpus() {
    let t0 = Instant::now();
    let mut queue = Queue::new(SCALING, BOUNDS);
    let workers = [fake(), fake()];
    let mut answers = Vec::new();
    for (i, worker) in workers.iter().enumerate() {
        let (grow, answer) = queued(&mut queue, &i.to_string(), t0);
        assert_eq!(grow, Grow::Now);
        answers.push(answer);
        takes(&mut queue, worker, t0);
    }
    // Every 10 ms an invocation is queued and a worker takes the one before.
    let (grow, answer) = queued(&mut queue, "first", t0);
    answers.push(answer);
    let Grow::After(mut wait) = grow else {
        panic!("beyond the CPUs a change only arms the recheck: {grow:?}");
    };
    for step in 1..10u32 {
        let now = t0 + Duration::from_millis(10) * step;
        let (grow, answer) = queued(&mut queue, &format!("s{step}"), now);
        assert_eq!(grow, Grow::No, "the recheck is armed");
        answers.push(answer);
        let worker = &workers[step as usize % 2];
        queue.finished(&**worker);
        takes(&mut queue, worker, now);
        if now >= t0 + wait {
            let (start, then) = queue.recheck(now);
            assert_eq!(start, 0, "the queue moved {step}");
            let Grow::After(next) = then else {
                panic!("armed again: {then:?}");
            };
            wait = now - t0 + next;
        }
    }
    assert_eq!(queue.started(), 2);
}

#[test]
fn never_more_workers_than_the_cap() {
    let t0 = Instant::now();
    let two = Scaling {
        max_workers: 2,
        eager_workers: 8,
        delay: Duration::ZERO,
    };
    let mut queue = Queue::new(two, BOUNDS);
    let (grows, _answers): (Vec<Grow>, Vec<Answer>) = (0..5)
        .map(|i| queued(&mut queue, &i.to_string(), t0))
        .unzip();
    assert_eq!(grows, [Grow::Now, Grow::Now, Grow::No, Grow::No, Grow::No]);
    assert_eq!(queue.started(), 2);
    // Nor does the reaper's safety net go beyond it.
    let (_, grow) = queue.reap(Duration::from_secs(60), t0 + Duration::from_secs(1));
    assert_eq!(grow, Grow::No);

    let zero = Scaling {
        max_workers: 0,
        eager_workers: 0,
        delay: Duration::ZERO,
    };
    let mut queue = Queue::new(zero, BOUNDS);
    assert_eq!(queued(&mut queue, "a", t0).0, Grow::Now, "at least one");
}

#[test]
fn a_full_queue_refuses_what_arrives() {
    let t0 = Instant::now();
    let bounds = Bounds {
        max_queue: 2,
        ..BOUNDS
    };
    let mut queue = Queue::new(SCALING, bounds);
    let _a = queued(&mut queue, "a", t0);
    let _b = queued(&mut queue, "b", t0);
    let (c, _answer) = invocation("c", t0);
    let Arrival::Refused(refused) = queue.arrive(c) else {
        panic!("the queue holds 2");
    };
    assert_eq!(refused.request_id, "c");

    let mut queue = Queue::new(
        SCALING,
        Bounds {
            max_queue: 0,
            ..BOUNDS
        },
    );
    let _a = queued(&mut queue, "a", t0);
    assert_eq!(queue.bounds().max_queue, 1, "at least one place");
}

#[test]
fn withdrawn_and_abandoned_invocations_are_not_run() {
    let t0 = Instant::now();
    let mut queue = Queue::new(SCALING, BOUNDS);
    let (_, a) = queued(&mut queue, "a", t0);
    let (_, _b) = queued(&mut queue, "b", t0);
    let (_, _c) = queued(&mut queue, "c", t0);
    assert_eq!(
        queue.withdraw("b").map(|i| i.request_id).as_deref(),
        Some("b")
    );
    assert!(queue.withdraw("b").is_none(), "once");
    drop(a); // its caller went away: nobody would read the answer
    let worker = fake();
    assert_eq!(takes(&mut queue, &worker, t0), "c");
    queue.finished(&*worker);
    drop(parks(&mut queue, &worker, t0));
}

#[test]
fn a_requeued_invocation_goes_first() {
    let t0 = Instant::now();
    let mut queue = Queue::new(SCALING, BOUNDS);
    let (_, _a) = queued(&mut queue, "a", t0);
    let first = fake();
    let Next::Take(a) = queue.next(&first, t0) else {
        panic!("a queued");
    };
    let (_, _b) = queued(&mut queue, "b", t0);
    // The worker is going before it ran "a".
    assert_eq!(
        queue.requeue(&*first, a, t0),
        Grow::No,
        "one starting, one returning"
    );
    assert_eq!(queue.idle(), 1, "no longer busy");
    let second = fake();
    assert_eq!(takes(&mut queue, &second, t0), "a");
}

#[test]
fn retiring_lets_parked_workers_go_and_still_serves_the_queue() {
    let t0 = Instant::now();
    let mut queue = Queue::new(SCALING, BOUNDS);
    let parked = warm(&mut queue, 2, t0);
    let (let_go, grow) = queue.retire(t0);
    assert_eq!(grow, Grow::No, "nothing queued");
    assert_eq!(let_go.len(), 2);
    for waiter in &let_go {
        waiter.kill();
    }
    assert!(parked.iter().all(|(worker, _)| worker.kills() == 1));
    drop(let_go);
    for (_, mut hand) in parked {
        assert!(hand.try_recv().is_err(), "closed: the worker stops");
    }

    // A retired queue no longer counts on a worker returning from a result
    // (it is not reaped any more): what is queued gets a worker of its own.
    let mut queue = Queue::new(SCALING, BOUNDS);
    let (_, _a) = queued(&mut queue, "a", t0);
    let worker = fake();
    takes(&mut queue, &worker, t0);
    queue.finished(&*worker);
    let (grow, _b) = queued(&mut queue, "b", t0);
    assert_eq!(grow, Grow::No, "the returning worker will take it");
    let (let_go, grow) = queue.retire(t0);
    assert!(let_go.is_empty());
    assert_eq!(grow, Grow::Now);
    // What was queued is still served; then the workers go.
    assert_eq!(takes(&mut queue, &worker, t0), "b");
    queue.finished(&*worker);
    assert!(matches!(queue.next(&worker, t0), Next::Stop));
}

#[test]
fn the_reaper_lets_idle_workers_go_and_gives_a_stuck_queue_a_worker() {
    let t0 = Instant::now();
    let mut queue = Queue::new(SCALING, BOUNDS);
    let parked = warm(&mut queue, 2, t0);
    let idle = Duration::from_secs(1);
    let (stale, grow) = queue.reap(idle, t0 + idle / 2);
    assert!(stale.is_empty());
    assert_eq!(grow, Grow::No);
    let (stale, _) = queue.reap(idle, t0 + idle);
    assert_eq!(stale.len(), 2);
    assert_eq!(queue.idle(), 2, "counted until their processes end");
    for (worker, _) in &parked {
        queue.exited(&**worker, t0 + idle);
    }
    assert_eq!(queue.idle(), 0);

    // Two workers (the CPUs) ran an invocation each and posted the result,
    // and never asked again: what is queued waits for them only so long,
    // then gets a worker even beyond the CPUs.
    let mut queue = Queue::new(SCALING, BOUNDS);
    let _held: Vec<Answer> = ["a", "b"]
        .iter()
        .map(|id| queued(&mut queue, id, t0).1)
        .collect();
    for worker in [fake(), fake()] {
        takes(&mut queue, &worker, t0);
        queue.finished(&*worker);
    }
    let (grow, _c) = queued(&mut queue, "c", t0);
    assert_eq!(grow, Grow::No, "two workers are returning");
    let (_, grow) = queue.reap(idle, t0 + STUCK_IN_QUEUE / 2);
    assert_eq!(grow, Grow::No, "they may still come");
    let (_, grow) = queue.reap(idle, t0 + STUCK_IN_QUEUE);
    assert_eq!(grow, Grow::Now, "stuck");
}

#[test]
fn a_worker_that_dies_in_its_init_fails_the_oldest_invocation() {
    let t0 = Instant::now();
    let mut queue = Queue::new(SCALING, BOUNDS);
    let (_, _a) = queued(&mut queue, "a", t0);
    let (_, _b) = queued(&mut queue, "b", t0);
    assert_eq!(queue.started(), 2);
    let (first, second) = (fake(), fake());
    let (failed, grow) = queue.exited(&*first, t0);
    assert_eq!(failed.map(|i| i.request_id).as_deref(), Some("a"));
    assert_eq!(grow, Grow::No, "the other one is starting for b");
    let (failed, grow) = queue.exited(&*second, t0);
    assert_eq!(failed.map(|i| i.request_id).as_deref(), Some("b"));
    assert_eq!(grow, Grow::No, "nothing left");
    assert_eq!(queue.idle(), 0);

    // One that had asked fails nothing, and is no longer handed events.
    let mut queue = Queue::new(SCALING, BOUNDS);
    let (worker, _hand) = warm(&mut queue, 1, t0).remove(0);
    let (failed, grow) = queue.exited(&*worker, t0);
    assert!(failed.is_none());
    assert_eq!(grow, Grow::No);
    let (grow, _c) = queued(&mut queue, "c", t0);
    assert_eq!(grow, Grow::Now, "not handed to the worker gone");
}

#[test]
fn a_worker_that_cannot_start_fails_the_oldest_invocation() {
    let t0 = Instant::now();
    let mut queue = Queue::new(SCALING, BOUNDS);
    let (grow, _a) = queued(&mut queue, "a", t0);
    assert_eq!(grow, Grow::Now);
    let failed = queue.launch_failed();
    assert_eq!(failed.map(|i| i.request_id).as_deref(), Some("a"));
    assert_eq!(queue.idle(), 0);
    let (grow, _b) = queued(&mut queue, "b", t0);
    assert_eq!(grow, Grow::Now, "counted out: the next one tries again");
}
