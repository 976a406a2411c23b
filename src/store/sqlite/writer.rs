//! The ingestion writer: one thread, one connection, group commits.
//!
//! Requests queue on a channel; the thread takes everything waiting (up to
//! [`MAX_BATCH`]), inserts it with a cached prepared statement inside one
//! `BEGIN IMMEDIATE` transaction, commits with a single fsync and answers each
//! caller. While it commits, the next batch gathers, so batches grow with the
//! load and latency stays at about two commits. `ON CONFLICT DO NOTHING` plus
//! the row count tells new events from redeliveries exactly. Each batch is
//! refused (`Unavailable`) unless the database files are still the ones a
//! restart reads ([`FileGuard`]), before the insert and again after the
//! commit: an event is acknowledged only once it is in those files.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use anyhow::anyhow;
use rusqlite::{params, Connection, ErrorCode, TransactionBehavior};
use tokio::sync::oneshot;

use super::guard::FileGuard;
use crate::store::sql::Ingestion;
use crate::store::{EventStatus, NewEvent, StoreError};

/// Most events in one commit.
const MAX_BATCH: usize = 512;

type Reply = oneshot::Sender<Result<bool, StoreError>>;

/// Handle to the writer thread; the thread ends when the last handle is dropped.
#[derive(Clone)]
pub struct EventWriter {
    tx: mpsc::Sender<(NewEvent, Reply)>,
    closed: Arc<AtomicBool>,
}

/// One failed commit answers many callers, so the error is taken by reference
/// and each caller gets its own value.
fn store_error(err: &rusqlite::Error) -> StoreError {
    let cause = anyhow!("{err}");
    match err.sqlite_error_code() {
        Some(
            ErrorCode::DatabaseBusy
            | ErrorCode::DatabaseLocked
            | ErrorCode::OutOfMemory
            | ErrorCode::ReadOnly
            | ErrorCode::SystemIoFailure
            | ErrorCode::DatabaseCorrupt
            | ErrorCode::DiskFull
            | ErrorCode::CannotOpen
            | ErrorCode::FileLockingProtocolFailed
            | ErrorCode::NotADatabase,
        ) => StoreError::Unavailable(cause),
        _ => StoreError::Other(cause),
    }
}

fn insert(conn: &mut Connection, events: &[NewEvent]) -> Result<Vec<bool>, rusqlite::Error> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut flags = Vec::with_capacity(events.len());
    {
        let mut statement = tx.prepare_cached(
            "INSERT INTO events (id, event_type, source, payload, status, received_at, updated_at, next_attempt_at, traceparent) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6, ?6, ?7) ON CONFLICT (id) DO NOTHING",
        )?;
        for e in events {
            let changed = statement.execute(params![
                e.id.as_str(),
                e.event_type,
                e.source,
                e.payload,
                EventStatus::Received.as_str(),
                e.received_at_ms,
                e.traceparent
            ])?;
            flags.push(changed == 1);
        }
    }
    tx.commit()?;
    Ok(flags)
}

impl EventWriter {
    /// Opens a connection to the (already migrated) database and starts the thread.
    pub fn open(path: &Path, files: Arc<FileGuard>) -> Result<Self, StoreError> {
        let conn = Connection::open(path).map_err(|e| store_error(&e))?;
        conn.busy_timeout(Duration::from_secs(5))
            .map_err(|e| store_error(&e))?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(|e| store_error(&e))?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(|e| store_error(&e))?;
        let (tx, rx) = mpsc::channel::<(NewEvent, Reply)>();
        let closed = Arc::new(AtomicBool::new(false));
        let stop = closed.clone();
        std::thread::Builder::new()
            .name("sqlite-ingest".into())
            .spawn(move || {
                let mut conn = conn;
                let mut events = Vec::with_capacity(MAX_BATCH);
                let mut replies = Vec::with_capacity(MAX_BATCH);
                while let Ok(first) = rx.recv() {
                    let mut next = Some(first);
                    while let Some((event, reply)) = next {
                        events.push(event);
                        replies.push(reply);
                        next = if events.len() < MAX_BATCH { rx.try_recv().ok() } else { None };
                    }
                    if stop.load(Ordering::Acquire) {
                        for reply in replies.drain(..) {
                            let _ = reply.send(Err(StoreError::Unavailable(anyhow!("the store is closed"))));
                        }
                    } else {
                        let recorded = files.check().and_then(|()| {
                            let flags = insert(&mut conn, &events).map_err(|e| {
                                tracing::warn!(error = %e, batch = events.len(), "recording events failed");
                                store_error(&e)
                            })?;
                            files.check().map(|()| flags)
                        });
                        match recorded {
                            Ok(flags) => {
                                for (reply, new) in replies.drain(..).zip(flags) {
                                    let _ = reply.send(Ok(new));
                                }
                            }
                            Err(err) => {
                                let cause = crate::support::error_chain(&err);
                                tracing::warn!(error = %cause, batch = events.len(), "events refused: the store cannot record them");
                                for reply in replies.drain(..) {
                                    let _ = reply.send(Err(StoreError::Unavailable(anyhow!("{cause}"))));
                                }
                            }
                        }
                    }
                    events.clear();
                }
            })
            .map_err(|e| StoreError::Other(e.into()))?;
        Ok(Self { tx, closed })
    }
}

#[async_trait::async_trait]
impl Ingestion for EventWriter {
    /// Records `event` in the next group commit; whether it was new.
    async fn insert(&self, event: NewEvent) -> Result<bool, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send((event, reply))
            .map_err(|_| StoreError::Unavailable(anyhow!("the ingestion writer stopped")))?;
        answer
            .await
            .map_err(|_| StoreError::Unavailable(anyhow!("the ingestion writer stopped")))?
    }

    /// Refuses every later batch.
    fn close(&self) {
        self.closed.store(true, Ordering::Release);
    }
}
