//! Functions' output, one row per chunk (an app's lines written together,
//! a JSON array): appended in one statement, read newest first or after a
//! position, trimmed to a size per app.

use async_trait::async_trait;
use sqlx::Row as _;

use super::events::placeholders;
use super::SqlStore;
use crate::function_config::AppName;
use crate::store::{ChunkQuery, LogChunk, LogStore, StoreError, StoredLogChunk};

/// Chunks per insert statement.
const ROWS_PER_INSERT: usize = 500;

#[async_trait]
impl LogStore for SqlStore {
    async fn append_logs(&self, chunks: &[LogChunk]) -> Result<(), StoreError> {
        self.writable()?;
        let rows: Vec<(&LogChunk, String, i64, i64, i64)> = chunks
            .iter()
            .filter(|c| !c.lines.is_empty())
            .map(|chunk| {
                let body = serde_json::to_string(&chunk.lines).unwrap_or_else(|_| "[]".into());
                // What the row costs, not just its messages: empty lines count too.
                let bytes = body.len();
                let first = chunk
                    .lines
                    .iter()
                    .map(|l| l.at_ms)
                    .min()
                    .unwrap_or_default();
                let last = chunk
                    .lines
                    .iter()
                    .map(|l| l.at_ms)
                    .max()
                    .unwrap_or_default();
                let bytes = i64::try_from(bytes).unwrap_or(i64::MAX);
                (chunk, body, first, last, bytes)
            })
            .collect();
        if rows.is_empty() {
            return Ok(());
        }
        // Well under both databases' parameter limits (5 per row).
        for part in rows.chunks(ROWS_PER_INSERT) {
            let sql = format!(
                "INSERT INTO function_logs (app, first_at, last_at, bytes, body) VALUES {}",
                placeholders(part.len(), 5)
            );
            let mut query = sqlx::query(&sql);
            for (chunk, body, first, last, bytes) in part {
                query = query
                    .bind(chunk.app.as_str())
                    .bind(*first)
                    .bind(*last)
                    .bind(*bytes)
                    .bind(body.as_str());
            }
            query.execute(&self.pool).await?;
        }
        Ok(())
    }

    #[tracing::instrument(level = "debug", skip_all, fields(app = %query.app), err(level = "debug"))]
    async fn log_chunks(&self, query: &ChunkQuery) -> Result<Vec<StoredLogChunk>, StoreError> {
        // Absent filters are bound as NULL and let every row through.
        let order = if query.after_seq.is_some() {
            "ASC"
        } else {
            "DESC"
        };
        let sql = format!(
            "SELECT seq, body FROM function_logs WHERE app = $1 \
             AND ($2 IS NULL OR last_at >= $2) AND ($3 IS NULL OR first_at < $3) \
             AND ($4 IS NULL OR seq < $4) AND ($5 IS NULL OR seq > $5) \
             ORDER BY seq {order} LIMIT $6"
        );
        let rows = sqlx::query(&sql)
            .bind(query.app.as_str())
            .bind(query.since_ms)
            .bind(query.until_ms)
            .bind(query.before_seq)
            .bind(query.after_seq)
            .bind(query.limit)
            .fetch_all(&self.pool)
            .await?;
        let mut chunks = Vec::with_capacity(rows.len());
        for row in rows {
            let seq: i64 = row.try_get(0)?;
            let body: String = row.try_get(1)?;
            match serde_json::from_str(&body) {
                Ok(lines) => chunks.push(StoredLogChunk { seq, lines }),
                Err(err) => {
                    tracing::warn!(app = %query.app, seq, error = %err, "an unreadable chunk of function logs is skipped")
                }
            }
        }
        Ok(chunks)
    }

    #[tracing::instrument(level = "debug", skip_all, fields(app = %app), err(level = "debug"))]
    async fn trim_logs(&self, app: &AppName, keep_bytes: i64) -> Result<u64, StoreError> {
        self.writable()?;
        // The newest chunk that no longer fits (counting from the newest) and
        // everything older go; the newest chunk always stays.
        let done = sqlx::query(
            "DELETE FROM function_logs WHERE app = $1 AND seq <= ( \
               SELECT seq FROM ( \
                 SELECT seq, SUM(bytes) OVER (ORDER BY seq DESC) AS newer, \
                        ROW_NUMBER() OVER (ORDER BY seq DESC) AS place \
                 FROM function_logs WHERE app = $1 \
               ) ranked WHERE newer > $2 AND place > 1 ORDER BY seq DESC LIMIT 1)",
        )
        .bind(app.as_str())
        .bind(keep_bytes)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }
}
