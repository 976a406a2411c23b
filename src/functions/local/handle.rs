//! A running worker as the pool and its Runtime API endpoint hold it: its
//! process group, the token that stops its endpoint, why it was stopped.
//! The pool knows it as a [`Member`]. Imports only `queue`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};

use tokio_util::sync::CancellationToken;

use super::queue::{Marks, Member};
use crate::support::ProcessGroup;

/// One worker, kept by its endpoint's tasks until its process ends.
#[derive(Default)]
pub struct WorkerHandle {
    group: OnceLock<ProcessGroup>,
    alive: AtomicBool,
    marks: Marks,
    /// Cancelled when the worker goes: its endpoint and watchdog stop.
    pub stop: CancellationToken,
    /// Why it was stopped, when the process exit alone would not say.
    stopped_because: Mutex<Option<String>>,
}

impl WorkerHandle {
    /// A worker whose process has not started yet.
    pub fn new() -> WorkerHandle {
        WorkerHandle::default()
    }

    /// Its process started, leading `group`.
    pub fn started(&self, group: Option<ProcessGroup>) {
        if let Some(group) = group {
            let _ = self.group.set(group);
            self.alive.store(true, Ordering::Release);
        }
    }

    /// It has asked for an event (its init is over).
    pub fn is_ready(&self) -> bool {
        self.marks.is_ready()
    }

    /// Records why it stops, unless a reason is recorded already.
    pub fn note_reason(&self, why: String) {
        if let Ok(mut slot) = self.stopped_because.lock() {
            slot.get_or_insert(why);
        }
    }

    /// Kills it, saying why (reported to what it was running or about to run).
    pub fn stop_because(&self, why: String) {
        self.note_reason(why);
        self.kill();
    }

    /// Kills the process group and the Runtime API endpoint.
    pub fn kill(&self) {
        if let Some(group) = self.group.get() {
            if self.alive.swap(false, Ordering::AcqRel) {
                group.kill();
            }
        }
        self.stop.cancel();
    }

    /// Its process ended: nothing is left to kill, the endpoint stops.
    /// Gives back the reason recorded, if any.
    pub fn ended(&self) -> Option<String> {
        self.alive.store(false, Ordering::Release);
        self.stop.cancel();
        self.stopped_because.lock().ok().and_then(|r| r.clone())
    }
}

impl Member for WorkerHandle {
    fn marks(&self) -> &Marks {
        &self.marks
    }

    fn kill(&self) {
        WorkerHandle::kill(self);
    }
}
