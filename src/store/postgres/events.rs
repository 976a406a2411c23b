//! The event inbox in PostgreSQL.

use sqlx::{PgPool, Postgres, QueryBuilder, Row};

use super::rows::{event_from_row, EVENT_COLUMNS};
use crate::store::{Claimed, EventOutcome, EventRecord, EventStatus, NewEvent, StoreError};

/// One plain insert, committed on its own (the fallback of [`super::batch`]
/// when a batch holds a row the database refuses).
pub async fn insert(pool: &PgPool, event: &NewEvent) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "INSERT INTO events (id, event_type, source, payload, status, received_at, updated_at, next_attempt_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $6, $6) ON CONFLICT (id) DO NOTHING",
    )
    .bind(&event.id)
    .bind(&event.event_type)
    .bind(&event.source)
    .bind(&event.payload)
    .bind(EventStatus::Received.as_str())
    .bind(event.received_at_ms)
    .execute(pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Appends a multi-row insert of `events` (existing ids are skipped) to `builder`.
pub fn push_event_values<'a>(builder: &mut QueryBuilder<'a, Postgres>, events: &'a [NewEvent]) {
    builder.push("INSERT INTO events (id, event_type, source, payload, status, received_at, updated_at, next_attempt_at) ");
    builder.push_values(events, |mut row, e| {
        row.push_bind(e.id.as_str())
            .push_bind(e.event_type.as_str())
            .push_bind(e.source.as_deref())
            .push_bind(e.payload.as_str())
            .push_bind(EventStatus::Received.as_str())
            .push_bind(e.received_at_ms)
            .push_bind(e.received_at_ms)
            .push_bind(e.received_at_ms);
    });
    builder.push(" ON CONFLICT (id) DO NOTHING");
}

/// Leases due events in one statement. `FOR UPDATE SKIP LOCKED` lets many
/// replicas claim at once without waiting on each other, and since a locked
/// row is re-checked against the conditions once its locker commits, a row
/// another replica has just claimed (lease now in the future) is never
/// handed out twice. Due means what it means for SQLite: received and
/// `next_attempt_at` reached, or processing with a lease that ended (its
/// replica died or hung).
pub async fn claim(
    pool: &PgPool,
    now_ms: i64,
    lease_ms: i64,
    limit: i64,
) -> Result<Claimed, StoreError> {
    let sql = format!(
        "WITH due AS MATERIALIZED ( \
             SELECT id AS due_id FROM events \
             WHERE status IN ('received', 'processing') \
               AND ((status = 'received' AND next_attempt_at <= $1) \
                OR (status = 'processing' AND lease_until < $1)) \
             ORDER BY next_attempt_at, seq LIMIT $3 \
             FOR UPDATE SKIP LOCKED) \
         UPDATE events SET status = 'processing', attempts = attempts + 1, lease_until = $1 + $2, updated_at = $1 \
         FROM due WHERE id = due.due_id \
         RETURNING seq, {EVENT_COLUMNS}"
    );
    let rows = sqlx::query(&sql)
        .bind(now_ms)
        .bind(lease_ms)
        .bind(limit)
        .fetch_all(pool)
        .await?;
    let mut events = rows
        .iter()
        .map(|row| Ok((row.try_get::<i64, _>("seq")?, event_from_row(row)?)))
        .collect::<Result<Vec<_>, StoreError>>()?;
    events.sort_by_key(|(seq, e)| (e.next_attempt_at_ms, *seq));
    Ok(events.into_iter().map(|(_, e)| e).collect())
}

pub async fn finish(
    pool: &PgPool,
    id: &str,
    outcome: EventOutcome,
    now_ms: i64,
) -> Result<(), StoreError> {
    let (status, error, note, next) = match outcome {
        EventOutcome::Succeeded { note } => (EventStatus::Succeeded, None, note, now_ms),
        EventOutcome::Failed { error } => (EventStatus::Failed, Some(error), None, now_ms),
        EventOutcome::Retry { error, retry_at_ms } => {
            (EventStatus::Received, Some(error), None, retry_at_ms)
        }
        EventOutcome::Dead { error } => (EventStatus::Dead, Some(error), None, now_ms),
    };
    sqlx::query(
        "UPDATE events SET status = $2, last_error = COALESCE($3, last_error), note = $4, \
         next_attempt_at = $5, lease_until = NULL, updated_at = $6 WHERE id = $1",
    )
    .bind(id)
    .bind(status.as_str())
    .bind(error)
    .bind(note)
    .bind(next)
    .bind(now_ms)
    .execute(pool)
    .await?;
    Ok(())
}

/// Re-queues only events whose lease has ended. SQLite re-queues every
/// `processing` event at start because one process owns the file; here other
/// replicas may be working on theirs right now, and the rows do not say which
/// replica holds them. A lease that ended is what a dead replica leaves, and
/// [`claim`] already takes such events, so this only makes them show as
/// `received` sooner.
pub async fn requeue_expired(pool: &PgPool, now_ms: i64) -> Result<u64, StoreError> {
    let done = sqlx::query(
        "UPDATE events SET status = 'received', lease_until = NULL, next_attempt_at = $1, updated_at = $1 \
         WHERE status = 'processing' AND lease_until < $1",
    )
    .bind(now_ms)
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}

pub async fn get(pool: &PgPool, id: &str) -> Result<EventRecord, StoreError> {
    let sql = format!("SELECT {EVENT_COLUMNS} FROM events WHERE id = $1");
    event_from_row(&sqlx::query(&sql).bind(id).fetch_one(pool).await?)
}

/// Newest first (insertion order, as SQLite's rowid).
pub async fn list(
    pool: &PgPool,
    status: Option<EventStatus>,
    limit: i64,
) -> Result<Vec<EventRecord>, StoreError> {
    let rows = match status {
        None => {
            let sql = format!("SELECT {EVENT_COLUMNS} FROM events ORDER BY seq DESC LIMIT $1");
            sqlx::query(&sql).bind(limit).fetch_all(pool).await?
        }
        Some(status) => {
            // The redundant IN terms let PostgreSQL use the partial indexes.
            let filter = match status {
                EventStatus::Received | EventStatus::Processing => {
                    "status IN ('received', 'processing') AND "
                }
                EventStatus::Failed | EventStatus::Dead => "status IN ('failed', 'dead') AND ",
                EventStatus::Succeeded => "",
            };
            let sql = format!(
                "SELECT {EVENT_COLUMNS} FROM events WHERE {filter}status = $2 ORDER BY seq DESC LIMIT $1"
            );
            sqlx::query(&sql)
                .bind(limit)
                .bind(status.as_str())
                .fetch_all(pool)
                .await?
        }
    };
    rows.iter().map(event_from_row).collect()
}

pub async fn retry(pool: &PgPool, id: &str, now_ms: i64) -> Result<EventRecord, StoreError> {
    let sql = format!(
        "UPDATE events SET status = 'received', attempts = 0, next_attempt_at = $2, lease_until = NULL, \
         updated_at = $2 WHERE id = $1 AND status IN ('failed', 'dead', 'succeeded') RETURNING {EVENT_COLUMNS}"
    );
    match sqlx::query(&sql)
        .bind(id)
        .bind(now_ms)
        .fetch_optional(pool)
        .await?
    {
        Some(row) => event_from_row(&row),
        None => {
            let current = get(pool, id).await?;
            Err(StoreError::Conflict(format!(
                "event {id} is {} and cannot be retried now",
                current.status
            )))
        }
    }
}
