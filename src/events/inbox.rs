//! The inbox's front door: events are written durably, in group commits, before
//! anyone is told they were accepted.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, Notify};

use crate::store::{NewEvent, Store, StoreError};

/// Most events written in one transaction.
const MAX_BATCH: usize = 256;

/// Result of recording one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Submitted {
    pub event_id: String,
    /// An event with this id was already recorded; nothing new was stored.
    pub duplicate: bool,
}

/// Why an event could not be recorded.
#[derive(Debug, thiserror::Error)]
pub enum InboxError {
    #[error("could not record the event")]
    Store(#[source] Arc<StoreError>),
    #[error("the inbox is shutting down")]
    Closed,
}

type Reply = oneshot::Sender<Result<bool, Arc<StoreError>>>;

/// Handle to the inbox: cheap to clone, shared by HTTP handlers, job runners and handlers.
#[derive(Clone)]
pub struct Inbox {
    tx: mpsc::Sender<(NewEvent, Reply)>,
    wake: Arc<Notify>,
}

impl Inbox {
    /// Starts the batching writer on the current runtime.
    pub fn start(store: Arc<dyn Store>) -> Self {
        let (tx, rx) = mpsc::channel(4096);
        let wake = Arc::new(Notify::new());
        tokio::spawn(write_batches(store, rx, wake.clone()));
        Self { tx, wake }
    }

    /// Records `event`; returns once it is durable.
    pub async fn submit(&self, event: NewEvent) -> Result<Submitted, InboxError> {
        let event_id = event.id.clone();
        let (reply, answer) = oneshot::channel();
        self.tx
            .send((event, reply))
            .await
            .map_err(|_| InboxError::Closed)?;
        match answer.await {
            Ok(Ok(inserted)) => Ok(Submitted {
                event_id,
                duplicate: !inserted,
            }),
            Ok(Err(err)) => Err(InboxError::Store(err)),
            Err(_) => Err(InboxError::Closed),
        }
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

/// Drains whatever is queued, writes it in one transaction, answers every waiter.
async fn write_batches(
    store: Arc<dyn Store>,
    mut rx: mpsc::Receiver<(NewEvent, Reply)>,
    wake: Arc<Notify>,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let (events, replies): (Vec<NewEvent>, Vec<Reply>) = batch.drain(..).unzip();
        let count = events.len();
        match store.insert_events(events).await {
            Ok(flags) => {
                if flags.iter().any(|new| *new) {
                    wake.notify_one();
                }
                for (reply, new) in replies.into_iter().zip(flags) {
                    let _ = reply.send(Ok(new));
                }
            }
            Err(err) => {
                tracing::warn!(error = %err, batch = count, "inbox write failed");
                let err = Arc::new(err);
                for reply in replies {
                    let _ = reply.send(Err(err.clone()));
                }
            }
        }
    }
}
