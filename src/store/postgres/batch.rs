//! Group insert for the inbox: concurrent `insert_event` calls are gathered
//! into multi-row `INSERT … ON CONFLICT DO NOTHING RETURNING id` statements,
//! a few in flight at once. Each caller still gets its answer only after its
//! row is committed; under load the batches grow, so one commit (one WAL
//! flush) acknowledges many events.

use std::collections::HashSet;
use std::sync::Arc;

use sqlx::{AnyPool, Row};
use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::store::sql::events::{insert_events, insert_one};
use crate::store::sql::Ingestion;
use crate::store::{NewEvent, StoreError};

/// Most rows per statement (8 parameters each, far below PostgreSQL's 65 535).
const MAX_BATCH: usize = 512;
/// Statements in flight at once; while they are, new events queue and batch up.
const IN_FLIGHT: usize = 4;
/// Waiting inserts beyond which callers wait for room (backpressure).
const QUEUE: usize = 8192;

struct Pending {
    event: NewEvent,
    reply: oneshot::Sender<Result<bool, StoreError>>,
}

/// The handle callers insert through; the gathering task stops when it is dropped.
pub struct Batcher {
    queue: mpsc::Sender<Pending>,
}

impl Batcher {
    /// Starts the gathering task on the current Tokio runtime.
    pub fn start(pool: AnyPool) -> Self {
        let (queue, rx) = mpsc::channel(QUEUE);
        tokio::spawn(gather(pool, rx));
        Self { queue }
    }
}

#[async_trait::async_trait]
impl Ingestion for Batcher {
    /// Inserts one event; `false` when its id was already stored.
    async fn insert(&self, event: NewEvent) -> Result<bool, StoreError> {
        let (reply, answer) = oneshot::channel();
        let gone = || StoreError::Unavailable(anyhow::anyhow!("the store is shutting down"));
        self.queue
            .send(Pending { event, reply })
            .await
            .map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }
}

async fn gather(pool: AnyPool, mut rx: mpsc::Receiver<Pending>) {
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    while let Some(first) = rx.recv().await {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        // Everything that queued while the slot was taken goes in this batch.
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(pending) => batch.push(pending),
                Err(_) => break,
            }
        }
        let pool = pool.clone();
        tokio::spawn(async move {
            flush(&pool, batch).await;
            drop(slot);
        });
    }
}

async fn flush(pool: &AnyPool, batch: Vec<Pending>) {
    let (events, replies): (Vec<NewEvent>, Vec<_>) =
        batch.into_iter().map(|p| (p.event, p.reply)).unzip();
    match insert_many(pool, &events).await {
        Ok(mut inserted) => {
            for (event, reply) in events.iter().zip(replies) {
                // A repeated id within the batch: the first one is the insert.
                let _ = reply.send(Ok(inserted.remove(event.id.as_str())));
            }
        }
        Err(StoreError::Unavailable(err)) => {
            let why = format!("{err:#}");
            for reply in replies {
                let _ = reply.send(Err(StoreError::Unavailable(anyhow::anyhow!(why.clone()))));
            }
        }
        // One row the database refuses must not fail its neighbours: one by one.
        Err(_) => {
            for (event, reply) in events.iter().zip(replies) {
                let _ = reply.send(insert_one(pool, event).await);
            }
        }
    }
}

/// The ids this statement inserted.
async fn insert_many(pool: &AnyPool, events: &[NewEvent]) -> Result<HashSet<String>, StoreError> {
    let (sql, bind) = insert_events(events, " RETURNING id");
    let rows = bind(sqlx::query(&sql)).fetch_all(pool).await?;
    rows.iter()
        .map(|row| row.try_get::<String, _>("id").map_err(StoreError::from))
        .collect()
}
