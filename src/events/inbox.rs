//! The inbox's front door: an event is recorded durably before anyone is told
//! it was accepted. The store groups concurrent submissions into shared commits.

use std::sync::Arc;

use tokio::sync::Notify;

use crate::store::{EventId, NewEvent, Store, StoreError};

/// Result of recording one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Submitted {
    pub event_id: EventId,
    /// An event with this id was already recorded; nothing new was stored.
    pub duplicate: bool,
}

/// Why an event could not be recorded.
#[derive(Debug, thiserror::Error)]
#[error("could not record the event")]
pub struct InboxError(#[from] pub StoreError);

/// Handle to the inbox: cheap to clone, shared by HTTP handlers, job runners and handlers.
#[derive(Clone)]
pub struct Inbox {
    store: Arc<dyn Store>,
    wake: Arc<Notify>,
}

impl Inbox {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self {
            store,
            wake: Arc::new(Notify::new()),
        }
    }

    /// Records `event`; returns once it is durable, and wakes the dispatcher.
    pub async fn submit(&self, event: NewEvent) -> Result<Submitted, InboxError> {
        let event_id = event.id.clone();
        let new = self.store.insert_event(event).await?;
        if new {
            self.wake();
        }
        Ok(Submitted {
            event_id,
            duplicate: !new,
        })
    }

    /// Tells the dispatcher new work is waiting (also used after commits that add events).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// What the dispatcher waits on.
    pub(crate) fn waker(&self) -> Arc<Notify> {
        self.wake.clone()
    }
}
