//! The event inbox.

use sqlx::any::AnyArguments;
use sqlx::query::Query;
use sqlx::AnyPool;
use sqlx::{Any, FromRow, Row};

use super::{decode_all, SqlStore, EVENT_COLUMNS};
use async_trait::async_trait;

use crate::store::{
    Claimed, EventId, EventOutcome, EventRecord, EventStatus, EventStore, NewEvent, StoreError,
};

/// `($1, …, $cols), ($cols+1, …), …` for `rows` rows. sqlx's `QueryBuilder`
/// writes `Any`'s placeholders as `?`, which PostgreSQL does not take.
pub(crate) fn placeholders(rows: usize, cols: usize) -> String {
    let mut out = String::with_capacity(rows * cols * 5);
    for row in 0..rows {
        out.push_str(if row == 0 { "(" } else { ", (" });
        for col in 0..cols {
            if col > 0 {
                out.push_str(", ");
            }
            out.push('$');
            out.push_str(&(row * cols + col + 1).to_string());
        }
        out.push(')');
    }
    out
}

/// A multi-row insert of `events` (existing ids are skipped), with `suffix`
/// appended (`RETURNING id`, or nothing).
pub(crate) fn insert_events<'a>(
    events: &'a [NewEvent],
    suffix: &str,
) -> (
    String,
    impl FnOnce(Query<'a, Any, AnyArguments<'a>>) -> Query<'a, Any, AnyArguments<'a>>,
) {
    let sql = format!(
        "INSERT INTO events (id, event_type, source, payload, status, received_at, updated_at, next_attempt_at, traceparent) \
         VALUES {} ON CONFLICT (id) DO NOTHING{suffix}",
        placeholders(events.len(), 9)
    );
    let bind = move |mut query: Query<'a, Any, AnyArguments<'a>>| {
        for e in events {
            query = query
                .bind(e.id.as_str())
                .bind(e.event_type.as_str())
                .bind(e.source.as_deref())
                .bind(e.payload.as_str())
                .bind(EventStatus::Received.as_str())
                .bind(e.received_at_ms)
                .bind(e.received_at_ms)
                .bind(e.received_at_ms)
                .bind(e.traceparent.as_deref());
        }
        query
    };
    (sql, bind)
}

/// One plain insert, committed on its own.
pub(crate) async fn insert_one(pool: &AnyPool, event: &NewEvent) -> Result<bool, StoreError> {
    let done = sqlx::query(
            "INSERT INTO events (id, event_type, source, payload, status, received_at, updated_at, next_attempt_at, traceparent) \
             VALUES ($1, $2, $3, $4, $5, $6, $6, $6, $7) ON CONFLICT (id) DO NOTHING",
        )
        .bind(&event.id)
        .bind(&event.event_type)
        .bind(&event.source)
        .bind(&event.payload)
        .bind(EventStatus::Received.as_str())
        .bind(event.received_at_ms)
        .bind(&event.traceparent)
        .execute(pool)
        .await?;
    Ok(done.rows_affected() == 1)
}

#[async_trait]
impl EventStore for SqlStore {
    // Not instrumented: the ingestion hot path.
    async fn insert_event(&self, event: NewEvent) -> Result<bool, StoreError> {
        self.ingestion.insert(event).await
    }

    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"))]
    async fn claim_events(
        &self,
        now_ms: i64,
        lease_ms: i64,
        limit: i64,
    ) -> Result<Claimed, StoreError> {
        self.writable()?;
        let rows = sqlx::query(&self.dialect.claim_events(EVENT_COLUMNS))
            .bind(now_ms)
            .bind(lease_ms)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        let mut events = rows
            .iter()
            .map(|row| Ok((row.try_get::<i64, _>("seq")?, EventRecord::from_row(row)?)))
            .collect::<Result<Vec<_>, StoreError>>()?;
        events.sort_by_key(|(seq, e)| (e.next_attempt_at_ms, *seq));
        Ok(events.into_iter().map(|(_, e)| e).collect())
    }

    #[tracing::instrument(level = "debug", skip_all, fields(id = %id), err(level = "debug"))]
    async fn finish_event(
        &self,
        id: &EventId,
        outcome: EventOutcome,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        self.writable()?;
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
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"))]
    async fn requeue_abandoned(&self, now_ms: i64) -> Result<u64, StoreError> {
        self.writable()?;
        let sql = format!(
            "UPDATE events SET status = 'received', lease_until = NULL, next_attempt_at = $1, updated_at = $1 \
             WHERE {}",
            self.dialect.abandoned_events()
        );
        let done = sqlx::query(&sql).bind(now_ms).execute(&self.pool).await?;
        Ok(done.rows_affected())
    }

    #[tracing::instrument(level = "debug", skip_all, fields(id = %id), err(level = "debug"))]
    async fn get_event(&self, id: &EventId) -> Result<Option<EventRecord>, StoreError> {
        let sql = format!("SELECT {EVENT_COLUMNS} FROM events WHERE id = $1");
        self.find(&sql, id.as_str()).await
    }

    /// Newest first.
    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"))]
    async fn list_events(
        &self,
        status: Option<EventStatus>,
        limit: i64,
    ) -> Result<Vec<EventRecord>, StoreError> {
        // The redundant IN terms let the database use the partial indexes.
        let filter = match status {
            None => "",
            Some(EventStatus::Received | EventStatus::Processing) => {
                "WHERE status IN ('received', 'processing') AND status = $2"
            }
            Some(EventStatus::Failed | EventStatus::Dead) => {
                "WHERE status IN ('failed', 'dead') AND status = $2"
            }
            Some(EventStatus::Succeeded) => "WHERE status = $2",
        };
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM events {filter} ORDER BY {} DESC LIMIT $1",
            self.dialect.event_order()
        );
        let mut query = sqlx::query(&sql).bind(limit);
        if let Some(status) = status {
            query = query.bind(status.as_str());
        }
        decode_all(&query.fetch_all(&self.pool).await?)
    }

    #[tracing::instrument(level = "debug", skip_all, fields(id = %id), err(level = "debug"))]
    async fn retry_event(&self, id: &EventId, now_ms: i64) -> Result<EventRecord, StoreError> {
        self.writable()?;
        let sql = format!(
            "UPDATE events SET status = 'received', attempts = 0, next_attempt_at = $2, lease_until = NULL, \
             updated_at = $2 WHERE id = $1 AND status IN ('failed', 'dead', 'succeeded') RETURNING {EVENT_COLUMNS}"
        );
        match sqlx::query(&sql)
            .bind(id)
            .bind(now_ms)
            .fetch_optional(&self.pool)
            .await?
        {
            Some(row) => Ok(EventRecord::from_row(&row)?),
            None => match self.get_event(id).await? {
                Some(current) => Err(StoreError::Conflict(format!(
                    "event {id} is {} and cannot be retried now",
                    current.status
                ))),
                None => Err(StoreError::NotFound),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn placeholders_number_rows_and_columns_in_order() {
        assert_eq!(super::placeholders(1, 2), "($1, $2)");
        assert_eq!(super::placeholders(2, 3), "($1, $2, $3), ($4, $5, $6)");
    }
}
