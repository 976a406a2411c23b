//! The ingestion writer: one thread, one connection, group commits.
//!
//! Each batch the inbox hands over is inserted with a cached prepared
//! statement inside one `BEGIN IMMEDIATE` transaction and committed with a
//! single fsync. `ON CONFLICT DO NOTHING` plus the row count tells new events
//! from redeliveries exactly.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use anyhow::anyhow;
use rusqlite::{params, Connection, ErrorCode, TransactionBehavior};
use tokio::sync::oneshot;

use crate::store::{EventStatus, NewEvent, StoreError};

type Reply = oneshot::Sender<Result<Vec<bool>, StoreError>>;

/// Handle to the writer thread; the thread ends when the last handle is dropped.
#[derive(Clone)]
pub struct EventWriter {
    tx: mpsc::Sender<(Vec<NewEvent>, Reply)>,
    closed: Arc<AtomicBool>,
}

fn store_error(err: rusqlite::Error) -> StoreError {
    match err.sqlite_error_code() {
        Some(
            ErrorCode::DatabaseBusy
            | ErrorCode::DatabaseLocked
            | ErrorCode::DiskFull
            | ErrorCode::CannotOpen,
        ) => StoreError::Unavailable(err.into()),
        _ => StoreError::Other(err.into()),
    }
}

fn insert(conn: &mut Connection, events: &[NewEvent]) -> Result<Vec<bool>, rusqlite::Error> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut flags = Vec::with_capacity(events.len());
    {
        let mut statement = tx.prepare_cached(
            "INSERT INTO events (id, event_type, source, payload, status, received_at, updated_at, next_attempt_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6, ?6) ON CONFLICT (id) DO NOTHING",
        )?;
        for e in events {
            let changed = statement.execute(params![
                e.id,
                e.event_type,
                e.source,
                e.payload,
                EventStatus::Received.as_str(),
                e.received_at_ms
            ])?;
            flags.push(changed == 1);
        }
    }
    tx.commit()?;
    Ok(flags)
}

impl EventWriter {
    /// Opens a connection to the (already migrated) database and starts the thread.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let conn = Connection::open(path).map_err(store_error)?;
        conn.busy_timeout(Duration::from_secs(5))
            .map_err(store_error)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(store_error)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(store_error)?;
        let (tx, rx) = mpsc::channel::<(Vec<NewEvent>, Reply)>();
        let closed = Arc::new(AtomicBool::new(false));
        let stop = closed.clone();
        std::thread::Builder::new()
            .name("sqlite-ingest".into())
            .spawn(move || {
                let mut conn = conn;
                while let Ok((events, reply)) = rx.recv() {
                    let result = if stop.load(Ordering::Acquire) {
                        Err(StoreError::Unavailable(anyhow!("the store is closed")))
                    } else {
                        insert(&mut conn, &events).map_err(store_error)
                    };
                    let _ = reply.send(result);
                }
            })
            .map_err(|e| StoreError::Other(e.into()))?;
        Ok(Self { tx, closed })
    }

    /// Inserts `events` in one transaction; per event, whether it was new.
    pub async fn insert(&self, events: Vec<NewEvent>) -> Result<Vec<bool>, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send((events, reply))
            .map_err(|_| StoreError::Unavailable(anyhow!("the ingestion writer stopped")))?;
        answer
            .await
            .map_err(|_| StoreError::Unavailable(anyhow!("the ingestion writer stopped")))?
    }

    /// Refuses every later batch.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
    }
}
