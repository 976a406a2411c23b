//! Functions' output: appended in multi-row inserts, read newest first or
//! after a position, trimmed to a size per app.

use async_trait::async_trait;

use super::events::placeholders;
use super::{decode_all, SqlStore};
use crate::function_config::AppName;
use crate::store::{FunctionLogLine, FunctionLogRecord, LogQuery, LogStore, StoreError};

/// Rows per insert statement (7 parameters each, well under every limit).
const ROWS_PER_INSERT: usize = 500;

const COLUMNS: &str = "seq, at, request_id, stream, message";

#[async_trait]
impl LogStore for SqlStore {
    async fn append_logs(&self, lines: &[FunctionLogLine]) -> Result<(), StoreError> {
        self.writable()?;
        for chunk in lines.chunks(ROWS_PER_INSERT) {
            let sql = format!(
                "INSERT INTO function_logs (app, at, request_id, stream, message, bytes) VALUES {}",
                placeholders(chunk.len(), 6)
            );
            let mut query = sqlx::query(&sql);
            for line in chunk {
                query = query
                    .bind(line.app.as_str())
                    .bind(line.at_ms)
                    .bind(line.request_id.as_deref())
                    .bind(line.stream)
                    .bind(line.message.as_str())
                    .bind(i64::try_from(line.message.len()).unwrap_or(i64::MAX));
            }
            query.execute(&self.pool).await?;
        }
        Ok(())
    }

    #[tracing::instrument(level = "debug", skip_all, fields(app = %query.app), err(level = "debug"))]
    async fn logs(&self, query: &LogQuery) -> Result<Vec<FunctionLogRecord>, StoreError> {
        // Absent filters are bound as NULL and let every row through.
        let order = if query.after_seq.is_some() {
            "ASC"
        } else {
            "DESC"
        };
        let sql = format!(
            "SELECT {COLUMNS} FROM function_logs WHERE app = $1 \
             AND ($2 IS NULL OR at >= $2) AND ($3 IS NULL OR at < $3) \
             AND ($4 IS NULL OR request_id = $4) AND ($5 IS NULL OR seq > $5) \
             ORDER BY seq {order} LIMIT $6"
        );
        let rows = sqlx::query(&sql)
            .bind(query.app.as_str())
            .bind(query.since_ms)
            .bind(query.until_ms)
            .bind(query.request_id.as_deref())
            .bind(query.after_seq)
            .bind(query.limit)
            .fetch_all(&self.pool)
            .await?;
        let mut lines: Vec<FunctionLogRecord> = decode_all(&rows)?;
        if query.after_seq.is_none() {
            lines.reverse();
        }
        Ok(lines)
    }

    #[tracing::instrument(level = "debug", skip_all, fields(app = %app), err(level = "debug"))]
    async fn trim_logs(&self, app: &AppName, keep_bytes: i64) -> Result<u64, StoreError> {
        self.writable()?;
        // The newest line that no longer fits (counting from the newest) and
        // everything older go.
        let done = sqlx::query(
            "DELETE FROM function_logs WHERE app = $1 AND seq <= ( \
               SELECT seq FROM ( \
                 SELECT seq, SUM(bytes) OVER (ORDER BY seq DESC) AS newer \
                 FROM function_logs WHERE app = $1 \
               ) ranked WHERE newer > $2 ORDER BY seq DESC LIMIT 1)",
        )
        .bind(app.as_str())
        .bind(keep_bytes)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }
}
